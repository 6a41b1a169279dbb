"""``tierstore dataset create|ls|show|diff|rm`` and ``tierstore stage|unstage`` as real
subprocesses against a real server; results checked through the client and on disk."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.cli.test_client_commands import cli, ok, one_line_error
from tests.conftest import ACCESS_KEY, SECRET_KEY, ServerProcess
from tierstore.client import TierstoreClient, resolve_settings
from tierstore.datasets import Manifest, RemoteSource, is_staged
from tierstore.datasets._cache import MARKER


@pytest.fixture
def name() -> str:
    return f"cli-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> TierstoreClient:
    return TierstoreClient(resolve_settings(server.endpoint, access_key=ACCESS_KEY, secret_key=SECRET_KEY))


def _put(s3: Any, bucket: str, n: int) -> dict[str, bytes]:
    bodies = {f"imgs/{'ab'[i % 2]}/{i:03d}.jpg": bytes([i]) * (100 + i) for i in range(n)}
    for key, body in bodies.items():
        s3.put_object(Bucket=bucket, Key=key, Body=body, Metadata={"label": str(i % 3) if (i := len(body)) else ""})
    return bodies


def test_create_ls_show_diff_rm(s3: Any, bucket: str, server: ServerProcess, name: str) -> None:
    bodies = _put(s3, bucket, 6)
    out = ok(cli(server, "dataset", "create", name, "--from", f"s3://{bucket}/imgs/", "--label", "dir"))
    assert out.strip() == f"created {name}@1: 6 samples, {sum(map(len, bodies.values()))} B"

    s3.put_object(Bucket=bucket, Key="imgs/a/000.jpg", Body=b"changed")  # changed
    s3.delete_object(Bucket=bucket, Key="imgs/b/001.jpg")  # removed
    s3.put_object(Bucket=bucket, Key="imgs/c/new.jpg", Body=b"new")  # added
    rec = json.loads(ok(cli(server, "dataset", "create", name, "--from", f"s3://{bucket}/imgs/", "--json")))
    assert rec["ref"] == f"{name}@2" and rec["rows"] == 6

    listing = ok(cli(server, "dataset", "ls", name)).splitlines()
    assert listing[0].split()[:3] == ["DATASET", "SAMPLES", "SIZE"]
    assert [line.split()[0] for line in listing[1:]] == [f"{name}@1", f"{name}@2"]
    assert all(f"s3://{bucket}/imgs/" in line for line in listing[1:])
    as_json = [json.loads(line) for line in ok(cli(server, "dataset", "ls", name, "--json")).splitlines()]
    assert [r["version"] for r in as_json] == [1, 2]

    shown = ok(cli(server, "dataset", "show", f"{name}@1", "--head", "2"))
    assert f"dataset   {name}@1" in shown and "samples   6" in shown and "label     dir" in shown
    assert f"s3://{bucket}/imgs/a/000.jpg  label=a" in shown and "first 2 samples:" in shown
    latest = json.loads(ok(cli(server, "dataset", "show", name, "--json")))
    assert latest["ref"] == f"{name}@2"

    diff = json.loads(ok(cli(server, "dataset", "diff", f"{name}@1", f"{name}@2", "--json")))
    assert diff["added"] == [f"s3://{bucket}/imgs/c/new.jpg"]
    assert diff["removed"] == [f"s3://{bucket}/imgs/b/001.jpg"]
    assert diff["changed"] == [f"s3://{bucket}/imgs/a/000.jpg"]
    assert diff["unchanged"] == 4
    text = ok(cli(server, "dataset", "diff", f"{name}@1", f"{name}@2"))
    assert text.splitlines()[0] == f"{name}@1 -> {name}@2: 1 added, 1 removed, 1 changed, 4 unchanged"

    ok(cli(server, "dataset", "rm", f"{name}@1"))
    listing = ok(cli(server, "dataset", "ls", name, "--json")).splitlines()
    assert [json.loads(line)["version"] for line in listing] == [2]


def test_create_from_query_and_show_lineage(
    s3: Any, bucket: str, server: ServerProcess, client: TierstoreClient, name: str
) -> None:
    _put(s3, bucket, 6)
    out = ok(cli(server, "dataset", "create", name, "--bucket", bucket, "--query", "meta.label = '1'",
                 "--label", "meta:label"))  # fmt: skip
    assert out.startswith(f"created {name}@1: 2 samples")
    derived = client.create_dataset(
        f"{name}-chips",
        rows=[{"bucket": bucket, "key": "imgs/a/000.jpg", "offset": 0, "size": 10}],
        lineage={"source": f"{name}@1", "transform": "chips:cut"},
    )
    shown = ok(cli(server, "dataset", "show", derived["ref"], "--head", "0"))
    assert f"{derived['ref']} <- {name}@1 by chips:cut" in shown
    assert f"{name}@1 <- query on {bucket}: meta.label = '1'" in shown


def test_stage_and_unstage(s3: Any, bucket: str, server: ServerProcess, name: str, tmp_path: Path) -> None:
    bodies = _put(s3, bucket, 20)
    ok(cli(server, "dataset", "create", name, "--from", f"s3://{bucket}/imgs/"))
    dest = tmp_path / "staged"
    out = ok(cli(server, "stage", f"{name}@1", "--to", str(dest), "--no-progress"))
    assert out.strip().startswith(f"staged {name}@1 in {dest}: 20 samples") and "(20 fetched, 0 already there)" in out
    assert is_staged(dest, f"{name}@1", verify=True)
    out = ok(cli(server, "stage", name, "--to", str(dest), "--no-progress"))  # resumable: nothing to fetch
    assert "(0 fetched, 20 already there)" in out
    staged = Manifest.from_parquet((dest / "manifests" / f"{name}@1.parquet").read_bytes())
    assert sorted(staged.column("key")) == sorted(bodies)
    assert (dest / MARKER).is_file()
    proc = cli(server, "unstage", str(tmp_path))  # not a stage directory: refused, nothing removed
    assert proc.returncode == 1 and "not removing it" in proc.stderr and dest.exists()
    ok(cli(server, "unstage", str(dest)))
    assert not dest.exists()


def test_errors_are_one_line(s3: Any, bucket: str, server: ServerProcess, name: str) -> None:
    one_line_error(cli(server, "dataset", "show", f"{name}@1"), "NoSuchDataset")
    one_line_error(cli(server, "dataset", "create", name, "--from", "s3://no-such-bucket-qq/"), "NoSuchBucket")
    proc = cli(server, "dataset", "create", name, "--from", "not-a-uri")
    assert proc.returncode == 2 and "expected s3://BUCKET" in proc.stderr
    proc = cli(server, "dataset", "create", name, "--query", "meta.a = '1'")
    assert proc.returncode == 2 and "--query needs --bucket" in proc.stderr
    proc = cli(server, "dataset", "rm", name)
    assert proc.returncode == 2 and "NAME@N" in proc.stderr
    one_line_error(cli(server, "dataset", "show", "bad name!"), "bad dataset name")
    one_line_error(cli(server, "stage", f"{name}@3", "--to", "/tmp/nowhere-" + name, "--no-progress"), "NoSuchDataset")
    source = RemoteSource(server.endpoint, access_key=ACCESS_KEY, secret_key=SECRET_KEY)
    assert source.settings.endpoint_url == server.endpoint


def test_derive_to_shards_and_show_its_lineage(s3: Any, bucket: str, server: ServerProcess, name: str) -> None:
    _put(s3, bucket, 9)
    ok(cli(server, "dataset", "create", name, "--from", f"s3://{bucket}/imgs/", "--label", "dir"))
    out = ok(cli(server, "dataset", "derive", f"{name}@1", "--transform", "tests.datasets.transforms:chip",
                 "--to", f"{name}-chips", "--shards", "1KiB", "--workers", "2", "--no-progress"))  # fmt: skip
    assert out.startswith(f"created {name}-chips@1: 27 samples from 9") and " shards" in out
    shown = ok(cli(server, "dataset", "show", f"{name}-chips@1", "--head", "1"))
    assert f"{name}-chips@1 <- {name}@1 by tests.datasets.transforms:chip" in shown
    assert f"{name}@1 <- s3://{bucket}/imgs/" in shown
    assert "shard-000000.tar [" in shown  # a sample is a member of a shard
    one_line_error(
        cli(server, "dataset", "derive", f"{name}@1", "--transform", "no_such_module:f", "--to", f"{name}-x"),
        "no_such_module",
    )


def test_derive_imports_the_transform_from_the_current_directory(
    s3: Any, bucket: str, server: ServerProcess, name: str, tmp_path: Path
) -> None:
    _put(s3, bucket, 4)
    ok(cli(server, "dataset", "create", name, "--from", f"s3://{bucket}/imgs/"))
    module = f"my_chips_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text("def cut(sample):\n    return bytes(sample['data'][:7])\n")
    # as the installed script runs it: the cwd is on sys.path only because derive puts it there
    out = ok(cli(server, "dataset", "derive", f"{name}@1", "--transform", f"{module}:cut", "--to", f"{name}-cut",
                 "--workers", "2", "--no-progress", cwd=tmp_path, as_script=True))  # fmt: skip
    assert out.startswith(f"created {name}-cut@1: 4 samples from 4, 28 B"), out
    # and from elsewhere the module is not found: one line naming it
    elsewhere = cli(server, "dataset", "derive", f"{name}@1", "--transform", f"{module}:cut", "--to", f"{name}-x",
                    "--no-progress", as_script=True)  # fmt: skip
    one_line_error(elsewhere, module)
