"""``--master-key-file`` (issue 18, docs/scale-out.md "Deploying on several hosts"): gateways read
one master key from a file of the operator's (a mounted secret) instead of each data dir's
``master.key``; a shared catalog records the key's id (a hash) at its first start and refuses, in
one line, a gateway with another key or none, before any sealed secret exists and after."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ACCESS_KEY, REPO, SECRET_KEY, ServerProcess, make_client
from tests.ports import free_port
from tests.postgres import PostgreSQL
from tierstore.crypto import MasterKey

SERVE = [sys.executable, "-m", "tierstore", "serve"]


def _key_file(path: Path, key: bytes, mode: int = 0o600) -> Path:
    path.write_bytes(key)
    path.chmod(mode)
    return path


def _refused(args: list[str], **env_extra: str) -> str:
    """``tierstore serve`` that must stop at start: its last stderr line (and no traceback)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIERSTORE_")}
    env.update(TIERSTORE_ACCESS_KEY=ACCESS_KEY, TIERSTORE_SECRET_KEY=SECRET_KEY, **env_extra)
    proc = subprocess.run(
        [*SERVE, "--address", f"127.0.0.1:{free_port()}", *args],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    return [line for line in proc.stderr.splitlines() if line.strip()][-1]


def test_gateways_share_a_key_file_and_the_catalog_refuses_another(tmp_path: Path, postgres: PostgreSQL) -> None:
    dsn = postgres.create_database("master_key_file")
    key = os.urandom(32)
    key_id = MasterKey(key).key_id
    (tmp_path / "secret").mkdir()
    shared = _key_file(tmp_path / "secret" / "master.key", key, 0o640)
    a = ServerProcess(tmp_path / "a", extra_args=["--catalog", dsn, "--workers", "1", "--master-key-file", str(shared)])
    a.start(timeout_s=120)
    try:
        log_a = a.log()
        # group-readable (a Secret mounted for an fsGroup): served, with a warning naming the mode
        assert f"the master key file {shared} is open to its group (mode 0640" in log_a
        assert key.hex() not in log_a and key_id in postgres.psql(
            "SELECT value FROM meta WHERE name = 'master_key_id'", "master_key_file"
        )
        assert not (tmp_path / "a" / "master.key").exists()  # never created next to the data
        # The catalog records the key before any secret is sealed: another key, or none, is refused.
        other = _key_file(tmp_path / "other.key", os.urandom(32))
        line = _refused(["--data", str(tmp_path / "b"), "--catalog", dsn, "--master-key-file", str(other)])
        assert line == (
            f"tierstore serve: this gateway's master key ({other}, key id {MasterKey(other.read_bytes()).key_id}) "
            f"is not the catalog's (key id {key_id}): give every gateway the same key (--master-key-file)"
        )
        line = _refused(["--data", str(tmp_path / "c"), "--catalog", dsn])
        missing = tmp_path / "c" / "master.key"
        assert line.startswith(f"tierstore serve: no master key in {missing}: the catalog's is key id {key_id};")
        assert not (tmp_path / "c" / "master.key").exists()  # no silent new key
        # B: the same file through the env var form; it creates a KMS key (sealed under the key)
        shared.chmod(0o600)
        b = ServerProcess(tmp_path / "b", extra_args=["--catalog", dsn, "--workers", "1", "--kms-create-keys", "k1"])
        os.environ["TIERSTORE_MASTER_KEY_FILE"] = str(shared)
        try:
            b.start(timeout_s=120)
        finally:
            del os.environ["TIERSTORE_MASTER_KEY_FILE"]
        try:
            assert "open to its group" not in b.log()
            cb, ca = make_client(b.endpoint), make_client(a.endpoint)
            cb.create_bucket(Bucket="mkf")
            cb.put_object(Bucket="mkf", Key="k", Body=b"sealed", ServerSideEncryption="aws:kms", SSEKMSKeyId="k1")
            assert ca.get_object(Bucket="mkf", Key="k")["Body"].read() == b"sealed"  # A opens B's data key
        finally:
            b.stop()
        # Now with sealed secrets too: another key is named against them
        line = _refused(["--data", str(tmp_path / "d"), "--catalog", dsn, "--master-key-file", str(other)])
        assert line.startswith(f"tierstore serve: the master key file {other} (key id ") and key_id in line
    finally:
        a.stop()
    assert key.hex() not in a.log() + b.log()


@pytest.mark.parametrize(
    ("mode", "content", "says"),
    [
        (0o644, 32, "is open to other users (mode 0644): chmod 600 it"),
        (0o600, 31, "is damaged (31 bytes, expected 32)"),
        (None, 0, "is missing: make one once with `(umask 077; head -c 32 /dev/urandom >"),
    ],
)
def test_a_bad_key_file_is_one_line(tmp_path: Path, mode: int | None, content: int, says: str) -> None:
    """Refused before anything is created: a key other users may read, a damaged one, none (never
    made here: each gateway making its own would split the deployment)."""
    path = tmp_path / "master.key"
    if mode is not None:
        _key_file(path, os.urandom(content), mode)
    line = _refused(["--data", str(tmp_path / "data")], TIERSTORE_MASTER_KEY_FILE=str(path))
    assert line.startswith(f"tierstore serve: the master key file {path} ") and says in line, line
    assert not path.exists() or mode is not None
    assert not (tmp_path / "data" / "master.key").exists()


def test_the_key_file_on_sqlite_must_be_the_key_that_sealed_the_store(tmp_path: Path) -> None:
    """One gateway on the embedded catalog may take its key from a file too; a store whose secrets
    a data-dir key sealed refuses another file's key."""
    data = tmp_path / "data"
    srv = ServerProcess(data, extra_args=["--workers", "1", "--kms-create-keys", "k1"])
    srv.start(timeout_s=120)
    srv.stop()
    line = _refused(["--data", str(data), "--master-key-file", str(_key_file(tmp_path / "k", os.urandom(32)))])
    assert "is not the key that sealed the catalog's secrets" in line
    copy = _key_file(tmp_path / "copy", (data / "master.key").read_bytes())
    srv = ServerProcess(data, extra_args=["--workers", "1", "--master-key-file", str(copy)])
    srv.start(timeout_s=120)
    try:
        client = make_client(srv.endpoint)
        client.create_bucket(Bucket="mkf-sqlite")
        client.put_object(Bucket="mkf-sqlite", Key="k", Body=b"x", ServerSideEncryption="aws:kms", SSEKMSKeyId="k1")
        assert client.get_object(Bucket="mkf-sqlite", Key="k")["Body"].read() == b"x"
    finally:
        srv.stop()


def test_a_migrated_catalog_expects_its_source_s_key(tmp_path: Path, postgres: PostgreSQL) -> None:
    """A catalog ``admin migrate`` filled records its source's key id (``migrate:store``); the first
    gateway is held to it, and ``claim_master_key`` records it as the catalog's."""
    import asyncio

    from tierstore.catalog.postgres import PostgresCatalog

    dsn = postgres.create_database("master_key_migrated")
    source = MasterKey(os.urandom(32))

    async def migrated() -> tuple[str, str]:
        cat = await PostgresCatalog.open(dsn)
        try:  # the row admin migrate writes (catalog/postgres/_from_sqlite.py STORE_NAME)
            await cat._pool.write(lambda c: c.execute("INSERT INTO meta VALUES('migrate:store', $1)", source.key_id))
            return await cat.master_key_id(), await cat.claim_master_key("00000000")
        finally:
            await cat.close()

    assert asyncio.run(migrated()) == (source.key_id, source.key_id)
    other = _key_file(tmp_path / "other.key", os.urandom(32))
    line = _refused(["--data", str(tmp_path / "data"), "--catalog", dsn, "--master-key-file", str(other)])
    assert f"is not the catalog's (key id {source.key_id})" in line, line
