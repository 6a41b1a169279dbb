"""``tierstore models register|ls|show|alias|unalias|pull|rm`` and ``tierstore lineage`` as real
subprocesses against a real server; results checked through the client and on disk."""

from __future__ import annotations

import json
import random
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.checkpoints.test_registry import read_tree, write_checkpoint
from tests.cli.test_client_commands import cli, ok, one_line_error
from tests.conftest import ServerProcess
from tierstore.client import TierstoreClient


@pytest.fixture
def name() -> str:
    return f"cli-m-{uuid.uuid4().hex[:8]}"


def test_register_ls_show_alias_pull_rm(
    s3: Any, bucket: str, server: ServerProcess, client: TierstoreClient, name: str, rng: random.Random,
    tmp_path: Path,
) -> None:  # fmt: skip
    files = {"000000.bin": rng.randbytes(100_000), "cfg/config.json": b"{}"}
    key, commit = write_checkpoint(s3, bucket, "ck", 100, files, metrics={"loss": 0.5})
    write_checkpoint(s3, bucket, "ck", 200, {"000000.bin": b"later"})
    out = ok(cli(server, "models", "register", name, "--from", f"s3://{bucket}/ck@100", "--alias", "staging"))
    assert out.startswith(f"registered {name}@1 as {name}@staging: step 100 of s3://{bucket}/{key}")
    rec = json.loads(ok(cli(server, "models", "register", name, "--from", f"s3://{bucket}/ck", "--json")))
    assert rec["ref"] == f"{name}@2" and rec["checkpoint"]["step"] == 200

    assert ok(cli(server, "models", "alias", name, "production", "1")).strip() == f"{name}@production -> {name}@1"
    moved = ok(cli(server, "models", "alias", name, "production", f"{name}@2")).strip()
    assert moved == f"{name}@production -> {name}@2 (was {name}@1)"
    listing = ok(cli(server, "models", "ls", name)).splitlines()
    assert listing[0].split()[:2] == ["MODEL", "SIZE"]
    assert [line.split()[0] for line in listing[1:]] == [f"{name}@1", f"{name}@2"]
    assert "staging" in listing[1] and "production" in listing[2]

    shown = ok(cli(server, "models", "show", f"{name}@staging"))
    assert f"model       {name}@1" in shown and "aliases     staging" in shown
    assert f"checkpoint  s3://{bucket}/{key}" in shown and "step        100" in shown and "loss=0.5" in shown
    assert "000000.bin" in shown and "cfg/config.json" in shown and "COMMIT.json" in shown
    assert json.loads(ok(cli(server, "models", "show", name, "--json")))["ref"] == f"{name}@2"

    dest = tmp_path / "serving"
    pulled = ok(cli(server, "models", "pull", f"{name}@staging", str(dest), "--no-progress"))
    assert pulled.startswith(f"pulled {name}@1 ({name}@staging) into {dest}")
    assert read_tree(dest) == {**files, "COMMIT.json": commit}
    one_line_error(cli(server, "models", "pull", f"{name}@2", str(dest), "--no-progress"), "exists")
    ok(cli(server, "models", "pull", f"{name}@production", str(dest), "--no-progress", "--replace"))
    assert read_tree(dest)["000000.bin"] == b"later"

    err = cli(server, "models", "rm", f"{name}@2")
    assert err.returncode == 1
    one_line_error(err, "InvalidRequest", "production")
    assert ok(cli(server, "models", "unalias", name, "production")).strip() == f"removed {name}@production"
    assert ok(cli(server, "models", "rm", f"{name}@2")).strip() == f"deleted {name}@2"
    assert [m["ref"] for m in client.list_models(name)] == [f"{name}@1"]


def test_expected_failures_are_one_line(server: ServerProcess, name: str, bucket: str) -> None:
    for args, code, fragment in [
        (("models", "show", "no-such-model-zz"), 1, "NoSuchModel"),
        (("models", "show", "bad name"), 1, "bad model name"),
        (("models", "alias", name, "123", "1"), 1, "bad model alias"),
        (("models", "alias", name, "production", "x"), 2, "VERSION"),
        (("models", "rm", name), 2, "NAME@N"),
        (("models", "register", name, "--from", "not-s3"), 2, "s3://"),
        (("models", "register", name, "--from", f"s3://{bucket}/nothing-here"), 1, "no checkpoint"),
        (("models", "pull", "no-such-model-zz", "/tmp/never-made-zz"), 1, "NoSuchModel"),
        (("lineage", "no-such-model-zz"), 1, "NoSuchModel"),
    ]:
        proc = cli(server, *args)
        assert proc.returncode == code, (args, proc.stderr)
        one_line_error(proc, fragment)
    assert cli(server, "models", "alias", name).returncode == 2  # argparse: missing arguments


def test_lineage_prints_the_chain(
    s3: Any, bucket: str, server: ServerProcess, client: TierstoreClient, name: str, rng: random.Random
) -> None:
    for i in range(2):
        s3.put_object(Bucket=bucket, Key=f"raw/{i}.jpg", Body=rng.randbytes(40))
    base = client.create_dataset(f"{name}-raw", bucket=bucket, prefix="raw/")
    rows = [{"bucket": bucket, "key": "raw/1.jpg", "offset": 5, "size": 10}]
    chips = client.create_dataset(f"{name}-chips", rows=rows, lineage={"source": base["ref"], "transform": "m:chip"})
    key, _ = write_checkpoint(s3, bucket, "lin", 9, {"w.bin": b"w"}, datasets=[chips["ref"]], metrics={"loss": 0.25})
    ok(cli(server, "models", "register", name, "--from", f"s3://{bucket}/lin", "--alias", "production"))
    lines = ok(cli(server, "lineage", f"{name}@production")).splitlines()
    assert lines[0] == f"model {name}@1  (aliases: production)"
    assert lines[1] == f"└─ checkpoint s3://{bucket}/{key}  step 9, run run1, kind state_dict"
    assert lines[2] == "   metrics: loss=0.25"
    assert lines[3].startswith(f"   └─ dataset {chips['ref']}  1 samples")
    assert lines[3].endswith(f"<- derived from {base['ref']} by m:chip")
    assert lines[4].startswith(f"      └─ dataset {base['ref']}  2 samples") and f"s3://{bucket}/raw/" in lines[4]
    doc = json.loads(ok(cli(server, "lineage", name, "--json")))
    assert doc["datasets"][0]["derived_from"]["ref"] == base["ref"] and "record" not in doc["datasets"][0]
