"""``tierstore admin migrate --to postgresql://...`` (issue 18, docs/scale-out.md "Migrating"): an
embedded store populated through the S3 API (versions, delete markers, multipart, tags, a policy,
an IAM user, a dataset, an SSE object) moved into a real PostgreSQL, then served from it by
``tierstore serve --catalog`` byte-identical; a migration killed half way and rerun; a tampered
target found by the verification; the refusals (a running server, another store's target)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.blob import test_s3 as s3t
from tests.conftest import ACCESS_KEY, REPO, SECRET_KEY, ServerProcess, make_client
from tests.ports import free_port
from tests.postgres import PostgreSQL
from tests.seaweed import SeaweedFS
from tierstore.client import TierstoreClient, resolve_settings

BUCKET, DATA_BUCKET = "mig", "mig-data"
MIB = 1 << 20
remote = s3t.remote  # a bucket on the session's SeaweedFS (the --store test)


def migrate(data: Path, dsn: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "tierstore", "admin", "migrate", "--data", str(data), "--to", dsn, "-q", *args]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=300, check=False,
                          env={**os.environ, **(env or {})})  # fmt: skip


def _client(srv: ServerProcess) -> TierstoreClient:
    return TierstoreClient(resolve_settings(srv.endpoint, access_key=ACCESS_KEY, secret_key=SECRET_KEY))


def _populate(srv: ServerProcess) -> dict[str, Any]:
    s3, client = make_client(srv.endpoint), _client(srv)
    s3.create_bucket(Bucket=BUCKET)
    s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    for body in (b"one", os.urandom(300_000), b"three"):  # inline and blob-file bodies
        s3.put_object(Bucket=BUCKET, Key="a.txt", Body=body)
    s3.put_object(Bucket=BUCKET, Key="gone.txt", Body=b"soon deleted")
    s3.delete_object(Bucket=BUCKET, Key="gone.txt")  # a delete marker over a version
    s3.put_object(Bucket=BUCKET, Key="dir/ünï cödé ☃", Body=b"non-ascii key", Tagging="team=ml&tier=hot")
    s3.put_object(Bucket=BUCKET, Key="secret.bin", Body=os.urandom(70_000), ServerSideEncryption="AES256")
    up = s3.create_multipart_upload(Bucket=BUCKET, Key="big.bin")["UploadId"]
    parts = [s3.upload_part(Bucket=BUCKET, Key="big.bin", UploadId=up, PartNumber=n, Body=os.urandom(size))["ETag"]
             for n, size in ((1, 5 * MIB), (2, 12_345))]  # fmt: skip
    s3.complete_multipart_upload(Bucket=BUCKET, Key="big.bin", UploadId=up, MultipartUpload={
        "Parts": [{"PartNumber": i + 1, "ETag": e} for i, e in enumerate(parts)]})  # fmt: skip
    open_up = s3.create_multipart_upload(Bucket=BUCKET, Key="pending.bin")["UploadId"]  # left open
    s3.upload_part(Bucket=BUCKET, Key="pending.bin", UploadId=open_up, PartNumber=1, Body=b"p" * 1000)
    policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
              "Resource": f"arn:aws:s3:::{BUCKET}/dir/*"}]}  # fmt: skip
    s3.put_bucket_policy(Bucket=BUCKET, Policy=json.dumps(policy))
    s3.create_bucket(Bucket=DATA_BUCKET)
    for i in range(4):
        s3.put_object(
            Bucket=DATA_BUCKET, Key=f"train/{i:03d}.bin", Body=bytes([i]) * (100 + i), Metadata={"label": str(i % 2)}
        )
    dataset = client.create_dataset("digits", bucket=DATA_BUCKET, prefix="train/", label="meta:label")
    client.create_user("alice")
    key = client.create_access_key("alice")
    client.put_user_policy("alice", "read", {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": ["s3:GetObject", "s3:ListBucket"], "Resource": ["arn:aws:s3:::*"]}]})  # fmt: skip
    return {"alice": (key["access_key_id"], key["secret_key"]), "dataset": dataset["ref"], "open_upload": open_up}


def _state(srv: ServerProcess, facts: dict[str, Any]) -> dict[str, Any]:
    """Everything a client can see of the populated store, bodies as digests."""
    s3, client = make_client(srv.endpoint), _client(srv)
    out: dict[str, Any] = {"buckets": sorted(b["Name"] for b in s3.list_buckets()["Buckets"])}
    for bucket in (BUCKET, DATA_BUCKET):
        listing = s3.list_object_versions(Bucket=bucket)
        versions = [
            (v["Key"], v["VersionId"], v["IsLatest"], v["ETag"], v["Size"]) for v in listing.get("Versions", [])
        ]
        markers = [(m["Key"], m["VersionId"], m["IsLatest"]) for m in listing.get("DeleteMarkers", [])]
        bodies = {}
        for key, vid, *_ in versions:
            got = s3.get_object(Bucket=bucket, Key=key, VersionId=vid)
            bodies[f"{key}@{vid}"] = (hashlib.sha256(got["Body"].read()).hexdigest(), got.get("ServerSideEncryption"))
        out[bucket] = {"versions": versions, "markers": markers, "bodies": bodies}
    out["tags"] = s3.get_object_tagging(Bucket=BUCKET, Key="dir/ünï cödé ☃")["TagSet"]
    out["policy"] = json.loads(s3.get_bucket_policy(Bucket=BUCKET)["Policy"])
    out["uploads"] = [(u["Key"], u["UploadId"]) for u in s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", [])]
    out["parts"] = [(p["PartNumber"], p["ETag"], p["Size"]) for p in s3.list_parts(
        Bucket=BUCKET, Key="pending.bin", UploadId=facts["open_upload"])["Parts"]]  # fmt: skip
    out["datasets"] = [(d["ref"], d["rows"]) for d in client.list_datasets()]
    out["rows"] = [(item.index, item.data) for item in client.read_rows(facts["dataset"], [0, 1, 2, 3])]
    out["users"] = [u["name"] for u in client.list_users()]
    ak, sk = facts["alice"]
    alice = make_client(srv.endpoint, access_key=ak, secret_key=sk)
    out["alice"] = alice.get_object(Bucket=BUCKET, Key="a.txt")["Body"].read()
    return out


@pytest.fixture(scope="module")
def populated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, Any], dict[str, Any]]]:
    """An embedded store (stopped), what was put in it, and what a client saw of it."""
    data = tmp_path_factory.mktemp("migrate") / "data"
    srv = ServerProcess(data)
    srv.start()
    try:
        facts = _populate(srv)
        seen = _state(srv, facts)
    finally:
        srv.stop()
    yield data, facts, seen


def _copy(data: Path, tmp_path: Path) -> Path:
    out = tmp_path / "data"
    shutil.copytree(data, out)
    return out


def test_migrated_store_is_served_from_postgresql_byte_identical(
    populated: tuple[Path, dict[str, Any], dict[str, Any]], postgres: PostgreSQL, tmp_path: Path
) -> None:
    data, facts, seen = populated
    data = _copy(data, tmp_path)
    dsn = postgres.create_database("migrate_serve")
    before = {
        p.relative_to(data): p.read_bytes() for p in data.rglob("*") if p.is_file() and "catalog.db" not in p.name
    }
    proc = migrate(data, dsn)
    assert proc.returncode == 0, proc.stderr
    assert "every table verified (count and digest" in proc.stdout and "(resumed)" not in proc.stdout
    assert "master key" in proc.stdout and "master.key" in proc.stdout
    after = {p.relative_to(data): p.read_bytes() for p in data.rglob("*") if p.is_file() and "catalog.db" not in p.name}
    assert {k: v for k, v in after.items() if k.name != "server.lock"} == {
        k: v for k, v in before.items() if k.name != "server.lock"
    }
    srv = ServerProcess(data, extra_args=["--catalog", dsn])
    srv.start()
    try:
        assert _state(srv, facts) == seen
        s3 = make_client(srv.endpoint)  # and it keeps working: a new version after the migrated ones
        s3.put_object(Bucket=BUCKET, Key="a.txt", Body=b"four")
        assert [v["VersionId"] for v in s3.list_object_versions(Bucket=BUCKET, Prefix="a.txt")["Versions"]][1:] == [
            v[1] for v in seen[BUCKET]["versions"] if v[0] == "a.txt"
        ]
        refused = migrate(data, dsn)  # the server holds the store: no migration meanwhile
        assert refused.returncode == 1 and "in use by another tierstore server" in refused.stderr, refused.stderr
    finally:
        srv.stop()
    assert "catalog postgresql://" in srv.log() or "PostgreSQL" in srv.log()


def _count(postgres: PostgreSQL, db: str, table: str) -> int:
    return int(postgres.psql(f"SELECT count(*) FROM {table}", database=db).strip())


def test_killed_half_way_then_rerun_continues_and_verifies(
    populated: tuple[Path, dict[str, Any], dict[str, Any]], postgres: PostgreSQL, tmp_path: Path
) -> None:
    data = _copy(populated[0], tmp_path)
    dsn = postgres.create_database("migrate_kill")
    killed = migrate(data, dsn, "--batch-rows", "2", env={"TIERSTORE_TEST_KILL_MIGRATE_AT": "versions"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert _count(postgres, "migrate_kill", "buckets") == 2
    assert _count(postgres, "migrate_kill", "versions") == 2  # one page of the versions, then the crash
    assert _count(postgres, "migrate_kill", "blobs") == 0
    rerun = migrate(data, dsn, "--batch-rows", "2", "--json")
    assert rerun.returncode == 0, rerun.stderr
    report = json.loads(rerun.stdout)
    assert report["resumed"] and report["verified"]
    tables = {t["name"]: t for t in report["tables"]}
    assert all(t["verified"] and t["source_rows"] == t["target_rows"] for t in tables.values())
    assert tables["versions"]["source_rows"] == tables["versions"]["copied"] + 2  # the first page was not copied again
    assert tables["buckets"]["copied"] == 0 and tables["iam_users"]["target_rows"] == 1


def test_a_tampered_target_fails_verification_and_another_store_is_refused(
    populated: tuple[Path, dict[str, Any], dict[str, Any]], postgres: PostgreSQL, tmp_path: Path
) -> None:
    data = _copy(populated[0], tmp_path)
    db = "migrate_tamper"
    dsn = postgres.create_database(db)
    assert migrate(data, dsn).returncode == 0
    again = migrate(data, dsn)  # a finished migration rerun: nothing copied, verified again
    assert again.returncode == 0 and "0 rows copied" in again.stdout and "(resumed)" in again.stdout, again.stdout
    postgres.psql(
        "UPDATE versions SET etag = '\"0\"' WHERE key = convert_to('a.txt', 'UTF8') AND is_latest", database=db
    )
    tampered = migrate(data, dsn)
    assert tampered.returncode == 1
    assert "verification FAILED for versions:" in tampered.stderr, tampered.stderr
    assert "versions" in tampered.stdout and "DIFFERS" in tampered.stdout
    postgres.psql("UPDATE meta SET value = 'another-store' WHERE name = 'migrate:store'", database=db)
    other = migrate(data, dsn)
    assert other.returncode == 1 and "holds the catalog of another store" in other.stderr, other.stderr
    db2 = "migrate_foreign"  # data no migration wrote: a bucket made by a gateway
    dsn2 = postgres.create_database(db2)
    assert migrate(data, dsn2, "--batch-rows", "1", env={"TIERSTORE_TEST_KILL_MIGRATE_AT": "buckets"}).returncode != 0
    postgres.psql("DELETE FROM meta WHERE name LIKE 'migrate:%'", database=db2)
    foreign = migrate(data, dsn2)
    assert foreign.returncode == 1 and "already holds data (table buckets)" in foreign.stderr, foreign.stderr
    assert _count(postgres, db2, "versions") == 0


def test_bad_options_are_one_line(tmp_path: Path) -> None:
    proc = migrate(tmp_path / "nothing", "mysql://u:pw@127.0.0.1/db")
    assert proc.returncode == 2 and "--to expects postgresql://" in proc.stderr and "pw" not in proc.stderr
    proc = migrate(tmp_path / "nothing", "postgresql://u:pw@127.0.0.1:1/db")
    assert proc.returncode == 1 and "no embedded catalog at" in proc.stderr, proc.stderr
    from tierstore.catalog import SqliteCatalog

    SqliteCatalog(tmp_path / "empty" / "catalog.db").close()
    proc = migrate(tmp_path / "empty", f"postgresql://u:s3cr3t-pa55@127.0.0.1:{free_port()}/db")
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr  # one line
    assert "is unreachable (or starting)" in proc.stderr and "u:***@" in proc.stderr
    assert "s3cr3t-pa55" not in proc.stdout + proc.stderr


def test_every_table_of_both_schemas_is_copied_or_named_as_not(postgres: PostgreSQL, tmp_path: Path) -> None:
    """A table a later schema step adds must be copied by the migration or named here as not."""
    import asyncio
    import sqlite3

    from tierstore.catalog import SqliteCatalog
    from tierstore.catalog.postgres._from_sqlite import TABLES
    from tierstore.catalog.postgres._schema import migrate as migrate_schema

    copied = {t.name for t in TABLES}
    SqliteCatalog(tmp_path / "catalog.db").close()
    conn = sqlite3.connect(tmp_path / "catalog.db")
    in_sqlite = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    conn.close()
    # each engine's own; SQLite's query side index; the registry and leases of running processes
    assert in_sqlite - copied == {"meta", "obj_attrs", "gateways", "jobs"}
    dsn = postgres.create_database("migrate_tables")
    asyncio.run(migrate_schema(dsn, dsn, timeout_s=30))
    in_pg = set(
        postgres.psql("SELECT tablename FROM pg_tables WHERE schemaname = 'public'", database="migrate_tables").split()
    )
    assert in_pg - copied == {"meta", "migrations", "gateways", "jobs"} and copied <= in_pg


def test_store_migration_copies_every_local_blob_and_records_the_store(
    populated: tuple[Path, dict[str, Any], dict[str, Any]], postgres: PostgreSQL, remote: SeaweedFS, tmp_path: Path
) -> None:
    """``admin migrate --store s3://...`` against the session SeaweedFS: the catalog, then every
    local blob, then the store recorded; ``serve --catalog --store`` then serves the migrated store
    byte-identical from PostgreSQL and the object store."""
    import asyncio

    from tierstore.blob import LocalBlobStore
    from tierstore.catalog.postgres._from_sqlite import SourceCatalog

    data, facts, seen = populated
    data = _copy(data, tmp_path)
    db = "migrate_store"
    dsn = postgres.create_database(db)
    store = s3t.make_store(remote)
    location = f"s3://{store.config.bucket}/{store.config.prefix}"
    keys = ["--store-access-key", remote.access_key, "--store-secret-key", remote.secret_key]
    url = f"{location}?endpoint={remote.endpoint}"
    source = SourceCatalog(data / "catalog.db")
    local = source.local_blobs()
    source.close()
    assert len(local) >= 5  # the 300 kB version, the SSE object, two parts, the dataset's manifest, ...
    bad = migrate(data, dsn, "--store", "s3://b/p?endpoint=http://user:pw@127.0.0.1:1", *keys)
    assert bad.returncode == 2 and "pw" not in bad.stderr, bad.stderr
    assert migrate(data, dsn, "--store-access-key", "k").returncode == 2
    proc = migrate(data, dsn, "--store", url, *keys)
    assert proc.returncode == 0, proc.stderr
    assert remote.secret_key not in proc.stdout + proc.stderr
    out = proc.stdout
    assert "every table verified" in out and f"blobs: {len(local)} copied" in out and "0 already there" in out, out
    assert f"the catalog's blobs are now in {location}" in out
    assert postgres.psql("SELECT value FROM meta WHERE name = 'blob_store'", database=db).strip() == location

    async def check() -> None:
        blobs = LocalBlobStore(data)
        for blob_id, size in local:
            body = await store.read(blob_id)
            assert len(body) == size and body == await blobs.read(blob_id)

    asyncio.run(check())
    again = migrate(data, dsn, "--store", url, *keys)  # rerun: nothing copied twice
    assert again.returncode == 0, again.stderr
    assert f"blobs: 0 copied (0.0 MiB), {len(local)} already there, 0 failed" in again.stdout
    postgres.psql("UPDATE meta SET value = '' WHERE name = 'blob_store'", database=db)  # served without --store
    refused = migrate(data, dsn, "--store", url, *keys)
    assert refused.returncode == 1 and "keeps its blobs on a gateway's local drives" in refused.stderr, refused.stderr
    postgres.psql(f"UPDATE meta SET value = '{location}' WHERE name = 'blob_store'", database=db)
    srv = ServerProcess(data, extra_args=["--catalog", dsn, "--store", url, *keys])
    srv.start()
    try:
        assert _state(srv, facts) == seen  # every version, tag, policy, user, dataset row and SSE body
    finally:
        srv.stop()


def test_a_drive_set_is_migrated_from_its_mirrored_catalog(postgres: PostgreSQL, tmp_path: Path) -> None:
    """``--drives``: the catalog mirrored on the drives is read from a live copy; the set then
    serves with ``--catalog`` (blobs erasure-coded on the same drives, master key on each)."""
    drives = [str(tmp_path / f"d{i}") for i in range(4)]
    srv = ServerProcess(tmp_path / "data", extra_args=["--drives", *drives])
    srv.start()
    bodies = {"small": b"tiny", "big": os.urandom(200_000)}
    try:
        s3 = make_client(srv.endpoint)
        s3.create_bucket(Bucket="set")
        for key, body in bodies.items():
            s3.put_object(Bucket="set", Key=key, Body=body)
    finally:
        srv.stop()
    dsn = postgres.create_database("migrate_drives")
    cmd = [sys.executable, "-m", "tierstore", "admin", "migrate", "--drives", *drives, "--to", dsn]  # with its bars
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "copying: 100%" in proc.stderr and "verifying: 100%" in proc.stderr, proc.stderr
    assert "every table verified" in proc.stdout and "each drive's .tierstore/" in proc.stdout
    srv = ServerProcess(tmp_path / "data", extra_args=["--drives", *drives, "--catalog", dsn])
    srv.start()
    try:
        s3 = make_client(srv.endpoint)
        assert {key: s3.get_object(Bucket="set", Key=key)["Body"].read() for key in bodies} == bodies
    finally:
        srv.stop()


_JSON = {"props", "meta", "blobs", "result", "checksums", "tags", "client_ids", "thumbprints", "config"}


def test_every_table_round_trips_with_its_conversions(postgres: PostgreSQL, tmp_path: Path) -> None:
    """Two rows in every table of an embedded catalog, written straight into SQLite (one of them
    naming a bucket that is gone where a bucket is named), migrated in-process and verified: each
    table's conversion (flags, jsonb, bucket ids, the mover's slot, the listing's storage class)
    is checked by the digest against what PostgreSQL then holds."""
    import asyncio
    import sqlite3

    from tierstore.catalog import SqliteCatalog
    from tierstore.catalog.postgres._from_sqlite import TABLES, SourceCatalog, migrate_catalog

    path = tmp_path / "catalog.db"
    SqliteCatalog(path).close()
    conn = sqlite3.connect(path)
    with conn:
        for table in TABLES:
            types = {r[1]: r[2] for r in conn.execute(f"PRAGMA table_info({table.name})")}
            for n in (1, 2):
                row: list[object] = []
                for col in table.columns:
                    if col == "bucket":
                        row.append("b1" if n == 1 or table.name == "tier_pending" else "gone")
                    elif col == "meta" and table.name == "versions":
                        row.append('{"h": {"content-type": "a/b"}, "sc": "GLACIER"}' if n == 1 else "{}")
                    elif col in _JSON:
                        row.append(
                            f'{{"z": {n}, "a": [1, "two"]}}'
                            if col not in ("client_ids", "thumbprints")
                            else '["x", "y"]'
                        )
                    elif types[col] == "BLOB":
                        row.append(bytes([0, 255, n]))
                    elif types[col] in ("INTEGER", "REAL"):
                        row.append(n)
                    else:
                        row.append(f"{col}-{n}")
                if table.name == "buckets":
                    row[0] = f"b{n}"
                conn.execute(
                    f"INSERT INTO {table.name}({', '.join(table.columns)}) VALUES({', '.join('?' * len(row))})", row
                )
    conn.close()
    db = "migrate_round_trip"
    dsn = postgres.create_database(db)
    source = SourceCatalog(path)
    try:
        report = asyncio.run(migrate_catalog(source, dsn, "round-trip-store", batch_rows=1))
    finally:
        source.close()
    by_name = {t.name: t for t in report.tables}
    assert report.mismatched == [], [(t.name, t.source_rows, t.target_rows) for t in report.tables if not t.verified]
    for table in TABLES:
        t = by_name[table.name]
        gone = 1 if "bucket_id" in table.pg_columns and table.name != "buckets" else 0  # the vanished bucket's row
        assert (t.source_rows, t.target_rows, t.skipped) == (2, 2 - gone, gone), table.name
    q = "SELECT storage_class FROM versions ORDER BY storage_class"
    assert postgres.psql(q, database=db).split() == ["GLACIER"]
    assert postgres.psql("SELECT slot, cached FROM tier_stats, blobs LIMIT 1", database=db).strip().startswith("0|t")
