"""The model registry from Python (checkpoints/_registry.py) against a real server: register a
hand-written checkpoint (data objects + one commit object) as NAME@1, NAME@2; aliases resolve and
move atomically; a pull writes the exact bytes and verifies them, also after the checkpoint's
objects are deleted; a damaged checkpoint leaves no directory; the commit is tagged
``model=NAME@N`` and the metadata query finds it; deleting a version is refused while aliased and
then releases its pins; ``lineage`` follows model -> checkpoint -> datasets -> their sources."""

from __future__ import annotations

import random
import sqlite3
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ServerProcess
from tierstore.checkpoints import (
    Commit,
    CommitFile,
    ModelPullError,
    checkpoint_name,
    crc64nvme,
    lineage,
    pull_model,
    register_model,
)
from tierstore.checkpoints._objects import crc_b64
from tierstore.checkpoints._registry import model_rows
from tierstore.client import TierstoreClient, TierstoreClientError

MiB = 1 << 20


@pytest.fixture
def name() -> str:
    return f"m-{uuid.uuid4().hex[:10]}"


def write_checkpoint(
    s3: Any,
    bucket: str,
    prefix: str,
    step: int,
    files: dict[str, bytes],
    *,
    run: str = "run1",
    datasets: list[str] | None = None,
    metrics: dict[str, float] | None = None,
    tags: dict[str, str] | None = None,
    damage: str | None = None,
) -> tuple[str, bytes]:
    """PUT ``files`` under PREFIX/data/<name>/ and then the commit object; returns (commit key,
    commit bytes). ``damage``: a path whose CRC the commit records wrongly."""
    name = checkpoint_name(step, run)
    entries = []
    for path, data in files.items():
        key = f"{prefix}/data/{name}/{path}"
        resp = s3.put_object(Bucket=bucket, Key=key, Body=data)
        version_id = resp.get("VersionId")
        crc = crc_b64(crc64nvme(data) ^ (1 if path == damage else 0))
        entries.append(CommitFile(path, key, None if version_id in (None, "null") else version_id, len(data), crc))
    commit = Commit(step=step, run=run, kind="state_dict", created_ns=time.time_ns(), files=entries,
                    metrics=metrics or {}, tags=tags or {}, datasets=datasets or [], body={"tensors": {}})  # fmt: skip
    body = commit.to_json()
    key = f"{prefix}/commits/{name}.json"
    s3.put_object(Bucket=bucket, Key=key, Body=body, Tagging="&".join(f"{k}={v}" for k, v in (tags or {}).items()))
    return key, body


def files_of(rng: random.Random) -> dict[str, bytes]:
    return {
        "000000.bin": rng.randbytes(3 * MiB + 17),  # several rows at split_bytes=1 MiB; blob-backed
        "nested/model.json": b'{"layers": 3}',  # small: an inline body
        "empty.bin": b"",
    }


def read_tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def blob_count(server: ServerProcess) -> int:
    with sqlite3.connect(server.data_dir / "catalog.db") as conn:
        return int(conn.execute("SELECT count(*) FROM blobs").fetchone()[0])


def test_register_versions_aliases_and_pull(
    s3: Any, bucket: str, client: TierstoreClient, name: str, rng: random.Random, tmp_path: Path
) -> None:
    files1, files2 = files_of(rng), files_of(rng)
    _, commit1 = write_checkpoint(s3, bucket, "ck", 10, files1, metrics={"loss": 0.5})
    key2, commit2 = write_checkpoint(s3, bucket, "ck", 20, files2, metrics={"loss": 0.25})
    first = register_model(client, name, f"s3://{bucket}/ck@10", split_bytes=MiB, alias="staging")
    assert first["ref"] == f"{name}@1" and first["aliases"] == ["staging"]
    assert first["rows"] == 4 + 1 + 1 + 1  # 3 MiB + 17 in 1 MiB rows, the two small files, the commit
    assert first["bytes"] == sum(map(len, files1.values())) + len(commit1)
    assert first["checkpoint"]["step"] == 10 and first["checkpoint"]["metrics"] == {"loss": 0.5}
    second = register_model(client, name, f"s3://{bucket}/ck")  # the latest checkpoint: step 20
    assert second["ref"] == f"{name}@2" and second["checkpoint"]["uri"] == f"s3://{bucket}/{key2}"
    third = register_model(client, name, f"s3://{bucket}/{key2}")  # the commit object by key
    assert third["version"] == 3 and third["checkpoint"]["step"] == 20

    assert client.model_info(f"{name}@staging")["version"] == 1
    assert client.set_model_alias(name, "production", 2)["previous"] is None
    assert client.model_info(f"{name}@production")["ref"] == f"{name}@2"
    assert client.model_info(name)["version"] == 3  # NAME alone: the latest
    assert client.set_model_alias(name, "production", 1)["previous"] == 2  # moved
    assert client.model_aliases(name) == {"production": 1, "staging": 1}
    assert [m["aliases"] for m in client.list_models(name)] == [["production", "staging"], [], []]

    out = pull_model(client, f"{name}@production", tmp_path / "serve", progress=False)
    assert read_tree(out) == {**files1, "COMMIT.json": commit1}
    assert not (tmp_path / "serve.partial").exists()
    with pytest.raises(FileExistsError):
        pull_model(client, f"{name}@2", out, progress=False)
    pull_model(client, f"{name}@2", out, progress=False, replace=True, batch_bytes=MiB)  # many small batches
    assert read_tree(out) == {**files2, "COMMIT.json": commit2}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["serve"]

    client.delete_model_alias(name, "staging")
    assert client.model_aliases(name) == {"production": 1}
    with pytest.raises(TierstoreClientError) as info:
        client.model_info(f"{name}@staging")
    assert (info.value.status, info.value.code) == (404, "NoSuchModel")


def test_a_registered_model_survives_the_deletion_of_its_checkpoint(
    s3: Any, bucket: str, client: TierstoreClient, name: str, rng: random.Random, tmp_path: Path
) -> None:
    files = files_of(rng)
    key, commit = write_checkpoint(s3, bucket, "gone", 5, files)
    register_model(client, name, f"s3://{bucket}/gone", split_bytes=MiB)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="gone/")["Contents"]]
    assert key in keys and len(keys) == len(files) + 1
    s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys]})
    for k in keys:  # overwrite the data files too: the pinned bytes are the old ones
        if k.endswith(".bin"):
            s3.put_object(Bucket=bucket, Key=k, Body=b"replaced")
    out = pull_model(client, name, tmp_path / "m", progress=False)
    assert read_tree(out) == {**files, "COMMIT.json": commit}


def test_a_checksum_mismatch_fails_the_pull_and_leaves_nothing(
    s3: Any, bucket: str, client: TierstoreClient, name: str, rng: random.Random, tmp_path: Path
) -> None:
    key, body = write_checkpoint(s3, bucket, "bad", 1, files_of(rng), damage="000000.bin")
    # register_model compares every file with the commit first, and refuses this one
    with pytest.raises(ValueError, match=r"000000\.bin changed since it was committed"):
        register_model(client, name, f"s3://{bucket}/bad", split_bytes=MiB)
    assert client.list_models(name) == []
    # the same rows through the bare API (no such check): pull's own verification catches it
    commit = Commit.from_json(body)
    client.create_model(name, model_rows(bucket, key, None, commit, MiB), {"step": 1})
    with pytest.raises(ModelPullError, match=r"000000\.bin: CRC64NVME"):
        pull_model(client, f"{name}@1", tmp_path / "out", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_the_commit_is_tagged_and_found_by_the_metadata_query(
    s3: Any, bucket: str, client: TierstoreClient, name: str, rng: random.Random
) -> None:
    key, _ = write_checkpoint(s3, bucket, "q", 3, {"a.bin": rng.randbytes(100)}, tags={"status": "tested"})
    register_model(client, name, f"s3://{bucket}/q")
    tags = {t["Key"]: t["Value"] for t in s3.get_object_tagging(Bucket=bucket, Key=key)["TagSet"]}
    assert tags == {"status": "tested", "model": f"{name}@1"}  # existing tags kept
    found = list(client.query_all(bucket, f"tag.model = '{name}@1'"))
    assert [o["key"] for o in found] == [key]

    # A commit with the 10 tags S3 allows already: registered all the same, not tagged.
    full = {f"t{i}": "x" for i in range(10)}
    key10, _ = write_checkpoint(s3, bucket, "q10", 3, {"a.bin": b"abc"}, tags=full)
    rec = register_model(client, name, f"s3://{bucket}/q10")
    assert rec["version"] == 2
    assert len(s3.get_object_tagging(Bucket=bucket, Key=key10)["TagSet"]) == 10


def test_delete_is_refused_while_aliased_then_releases_the_pins(
    s3: Any, bucket: str, client: TierstoreClient, server: ServerProcess, name: str, rng: random.Random
) -> None:
    write_checkpoint(s3, bucket, "del", 1, files_of(rng))
    register_model(client, name, f"s3://{bucket}/del", split_bytes=MiB, alias="production")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="del/")["Contents"]]
    s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys]})
    with pytest.raises(TierstoreClientError) as info:
        client.delete_model(f"{name}@1")
    assert (info.value.status, info.value.code) == (400, "InvalidRequest") and "production" in info.value.message
    assert client.model_info(f"{name}@1")["version"] == 1
    before = blob_count(server)
    client.delete_model_alias(name, "production")
    client.delete_model(f"{name}@1")
    assert blob_count(server) < before  # the 3 MiB file's blobs (and the manifest) are collected
    with pytest.raises(TierstoreClientError) as info:
        client.model_info(f"{name}@1")
    assert (info.value.status, info.value.code) == (404, "NoSuchModel")


def test_moving_an_alias_is_atomic(
    s3: Any, bucket: str, client: TierstoreClient, name: str, rng: random.Random
) -> None:
    write_checkpoint(s3, bucket, "atom", 1, {"a.bin": rng.randbytes(64)})
    for _ in range(3):
        register_model(client, name, f"s3://{bucket}/atom")
    client.set_model_alias(name, "production", 1)
    written: set[int] = {1}
    seen: list[int] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def mover(seed: int) -> None:
        r = random.Random(seed)
        try:
            for _ in range(40):
                v = r.randint(1, 3)
                written.add(v)
                client.set_model_alias(name, "production", v)
        except BaseException as exc:
            errors.append(exc)

    def reader() -> None:
        try:
            while not stop.is_set():
                seen.append(client.model_info(f"{name}@production")["version"])
        except BaseException as exc:
            errors.append(exc)

    movers = [threading.Thread(target=mover, args=(rng.randrange(2**32),)) for _ in range(4)]
    readers = [threading.Thread(target=reader) for _ in range(2)]
    for t in movers + readers:
        t.start()
    for t in movers:
        t.join()
    stop.set()
    for t in readers:
        t.join()
    assert not errors, errors
    assert seen and set(seen) <= {1, 2, 3}
    assert client.model_aliases(name)["production"] in written


def test_lineage_follows_checkpoint_datasets_and_their_sources(
    s3: Any, bucket: str, client: TierstoreClient, name: str, rng: random.Random
) -> None:
    for i in range(3):
        s3.put_object(Bucket=bucket, Key=f"raw/{i}.jpg", Body=rng.randbytes(50))
    base = client.create_dataset(f"{name}-raw", bucket=bucket, prefix="raw/")
    rows = [{"bucket": bucket, "key": "raw/0.jpg", "offset": 0, "size": 10}]
    chips = client.create_dataset(f"{name}-chips", rows=rows, lineage={"source": base["ref"], "transform": "m:chip"})
    write_checkpoint(s3, bucket, "lin", 7, {"a.bin": b"w"}, datasets=[chips["ref"], f"{name}-gone@4"],
                     metrics={"loss": 0.125})  # fmt: skip
    register_model(client, name, f"s3://{bucket}/lin", alias="production")
    doc = lineage(client, f"{name}@production")
    assert doc["model"]["ref"] == f"{name}@1" and doc["model"]["aliases"] == ["production"]
    assert doc["checkpoint"]["step"] == 7 and doc["checkpoint"]["metrics"] == {"loss": 0.125}
    derived, gone = doc["datasets"]
    assert derived["ref"] == chips["ref"] and derived["found"]
    assert derived["lineage"] == {"source": base["ref"], "transform": "m:chip"}
    assert derived["derived_from"]["ref"] == base["ref"]
    assert derived["derived_from"]["source"] == {"bucket": bucket, "prefix": "raw/"}
    assert "derived_from" not in derived["derived_from"]
    assert gone["ref"] == f"{name}-gone@4" and not gone["found"]
