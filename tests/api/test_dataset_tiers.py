"""A dataset version's bytes moved as a whole (docs/tiers.md "Dataset archive"): ``tierstore
dataset archive NAME@N --to CLASS`` against a real server and a real SeaweedFS tier — blobs,
inline and encrypted samples, reads through the tier afterwards, a second run that skips
everything, the errors, and the IAM action.

One tierstore server for the module (its tier holds data); the session's SeaweedFS is the tier."""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.api.test_tier_data import PREFIX, _add_tier, _catalog, _local_files, _wait
from tests.cli.test_client_commands import cli, ok
from tests.conftest import ACCESS_KEY, SECRET_KEY, ServerProcess, make_client
from tests.seaweed import SeaweedFS
from tierstore.client import TierstoreClient, TierstoreClientError, resolve_settings
from tierstore.datasets import DatasetRef, Manifest, RemoteSource

TIER = "ARCH"
REMOTE_BUCKET = "tdata-arch"  # _add_tier's name for it


@pytest.fixture(scope="module")
def tsrv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The module's own server (its tier holds data); ``s3t`` and ``admin`` talk to it."""
    with contextlib.ExitStack() as stack:
        srv = ServerProcess(tmp_path_factory.mktemp("dstiers") / "data")
        srv.start()
        stack.callback(srv.stop)
        yield srv


@pytest.fixture(scope="module")
def clients(tsrv: ServerProcess) -> tuple[Any, TierstoreClient]:
    """boto3 and the extensions' client, as the root."""
    settings = resolve_settings(tsrv.endpoint, access_key=ACCESS_KEY, secret_key=SECRET_KEY)
    return make_client(tsrv.endpoint), TierstoreClient(settings)


@pytest.fixture(scope="module")
def s3t(clients: tuple[Any, TierstoreClient]) -> Any:
    return clients[0]


@pytest.fixture(scope="module")
def admin(clients: tuple[Any, TierstoreClient]) -> TierstoreClient:
    return clients[1]


@pytest.fixture(scope="module")
def arch(admin: TierstoreClient, seaweedfs: SeaweedFS) -> Any:
    """Tier ARCH on the session SeaweedFS; its boto3 client (to read the remote objects directly)."""
    return _add_tier(admin, seaweedfs, TIER)


@pytest.fixture
def bkt(s3t: Any) -> str:
    name = f"dt-{uuid.uuid4().hex[:12]}"
    s3t.create_bucket(Bucket=name)
    return name


def _locs(admin: TierstoreClient, ref: str) -> list[str]:
    return [str(x) for x in Manifest.from_parquet(admin.dataset_manifest(ref)).column("loc")]


def _blob_ids(locs: list[str]) -> list[str]:
    return [piece.rpartition(":")[0] for loc in locs if loc.startswith("b:") for piece in loc[2:].split(",")]


def test_archive_moves_every_sample_and_the_dataset_reads_through(
    tsrv: ServerProcess, s3t: Any, admin: TierstoreClient, arch: Any, bkt: str
) -> None:
    bodies = {
        "ds/a.bin": b"a" * 40_000,
        "ds/b.bin": bytes(range(256)) * 400,
        "ds/c.txt": b"inline sample " * 50,
        "ds/d.txt": b"tiny",
        "ds/e.bin": b"sealed " * 5_000,  # encrypted, a blob
        "ds/f.txt": b"sealed small",  # encrypted, inline
    }
    for key, body in bodies.items():
        extra = {"ServerSideEncryption": "AES256"} if key in ("ds/e.bin", "ds/f.txt") else {}
        s3t.put_object(Bucket=bkt, Key=key, Body=body, **extra)
    name = f"arch-{uuid.uuid4().hex[:8]}"
    ref = f"{name}@1"
    admin.create_dataset(name, bucket=bkt, prefix="ds/")
    before = _locs(admin, ref)
    blobs = _blob_ids(before)
    assert len(blobs) == 3 and sum(loc.startswith("i:") for loc in before) == 3

    final = json.loads(ok(cli(tsrv, "dataset", "archive", ref, "--to", TIER, "--json", "--no-progress")))
    assert (final["state"], final["items"], final["done"], final["skipped"]) == ("done", 6, 6, 0)
    assert final["done_bytes"] == final["bytes"] >= sum(map(len, bodies.values()))  # ciphertext is longer

    after = _locs(admin, ref)
    assert not any(loc.startswith("i:") for loc in after), "every inline body became a remote blob"
    moved = _blob_ids(after)
    assert set(blobs) <= set(moved) and len(moved) == 6
    for blob_id in moved:
        assert _catalog(tsrv, "SELECT tier FROM blobs WHERE blob_id=?", blob_id) == [(TIER,)]
        assert not _local_files(tsrv, blob_id), "the local copy is freed after the switch"
        meta = arch.head_object(Bucket=REMOTE_BUCKET, Key=PREFIX + blob_id)["Metadata"]
        assert meta["tierstore-bucket"] == bkt and meta["tierstore-key"].startswith("ds%2F")
    sealed = [m for m in moved if arch.head_object(Bucket=REMOTE_BUCKET, Key=PREFIX + m)["Metadata"].get(
        "tierstore-encrypted")]  # fmt: skip
    assert len(sealed) == 2, "both encrypted samples moved as ciphertext, marked so"
    for blob_id in sealed:
        raw = arch.get_object(Bucket=REMOTE_BUCKET, Key=PREFIX + blob_id)["Body"].read()
        assert b"sealed" not in raw

    source = RemoteSource(tsrv.endpoint, access_key=ACCESS_KEY, secret_key=SECRET_KEY)
    expect = [bodies[str(k)] for k in Manifest.from_parquet(admin.dataset_manifest(ref)).column("key")]
    assert [d for _, d in source.read_rows(DatasetRef(name, 1), list(range(6)))] == expect
    # the objects' own versions share the moved blobs: they read through the tier, class unchanged
    got = s3t.get_object(Bucket=bkt, Key="ds/b.bin")
    assert got["Body"].read() == bodies["ds/b.bin"] and got.get("StorageClass", "STANDARD") == "STANDARD"
    assert s3t.get_object(Bucket=bkt, Key="ds/c.txt")["Body"].read() == bodies["ds/c.txt"]  # its inline body stays

    again = list(admin.archive_dataset(ref, TIER))[-1]
    assert (again["state"], again["skipped"], again["done"]) == ("done", 6, 6), "a second run moves nothing"
    assert _locs(admin, ref) == after

    # Deleting the keys and then the dataset: the remote objects go through the outbox.
    for key in bodies:
        s3t.delete_object(Bucket=bkt, Key=key)
    assert [d for _, d in source.read_rows(DatasetRef(name, 1), [0, 5])] == [expect[0], expect[5]]
    admin.delete_dataset(ref)

    def gone() -> bool:
        listed = arch.list_objects_v2(Bucket=REMOTE_BUCKET, Prefix=PREFIX).get("Contents", [])
        return not {o["Key"][len(PREFIX) :] for o in listed} & set(moved)

    _wait(gone)


def test_archive_from_one_tier_to_another_counts_cached_blobs_in_their_tier(
    tsrv: ServerProcess, s3t: Any, admin: TierstoreClient, arch: Any, seaweedfs: SeaweedFS, bkt: str
) -> None:
    """Two tiers, two buckets of one SeaweedFS. A blob in ARCH with a local copy (a job's pin)
    counts as in ARCH (``blob_tiers``): an archive to ARCH skips it. Then the archive to ARCH2
    moves every blob tier -> tier, verified (the remote metadata of the first tier's objects), the
    old remote copies deleted through the outbox, the pin's local copy kept; resumable."""
    _add_tier(admin, seaweedfs, "ARCH2")
    bodies = {"t/a": b"a" * 40_000, "t/b": bytes(range(256)) * 200, "t/c": b"c" * 30_000}
    for key, body in bodies.items():
        s3t.put_object(Bucket=bkt, Key=key, Body=body, **({} if key == "t/a" else {"StorageClass": TIER}))
    name, pinned = f"tt-{uuid.uuid4().hex[:8]}", f"ttp-{uuid.uuid4().hex[:8]}"
    ref = f"{name}@1"
    admin.create_dataset(name, bucket=bkt, prefix="t/")
    admin.create_dataset(pinned, bucket=bkt, prefix="t/c")
    assert list(admin.pin_dataset(f"{pinned}@1", "tt-job"))[-1]["state"] == "done"
    blobs = _blob_ids(_locs(admin, ref))
    tier_of = "SELECT tier, cached FROM blobs WHERE blob_id=?"
    assert len(blobs) == 3 and {_catalog(tsrv, tier_of, b)[0] for b in blobs} == {(None, None), (TIER, None), (TIER, 1)}
    (cached,) = [b for b in blobs if _catalog(tsrv, tier_of, b) == [(TIER, 1)]]

    first = list(admin.archive_dataset(ref, TIER))[-1]
    assert (first["state"], first["skipped"], first["done"]) == ("done", 2, 3), "the pinned blob is in ARCH"
    assert {_catalog(tsrv, tier_of, b)[0] for b in blobs} == {(TIER, None), (TIER, 1)}

    final = list(admin.archive_dataset(ref, "ARCH2"))[-1]
    assert (final["state"], final["items"], final["skipped"], final["done"]) == ("done", 3, 0, 3)
    assert final["done_bytes"] == final["bytes"] == sum(map(len, bodies.values()))
    for blob_id in blobs:
        assert _catalog(tsrv, tier_of, blob_id) == [("ARCH2", 1 if blob_id == cached else None)]
        meta = arch.head_object(Bucket="tdata-arch2", Key=PREFIX + blob_id)["Metadata"]
        assert meta["tierstore-bucket"] == bkt and meta["tierstore-key"].startswith("t%2F")
    assert _local_files(tsrv, cached), "the pin's local copy stays"

    def old_copies_gone() -> bool:
        listed = arch.list_objects_v2(Bucket=REMOTE_BUCKET, Prefix=PREFIX).get("Contents", [])
        return not {o["Key"][len(PREFIX) :] for o in listed} & set(blobs)

    _wait(old_copies_gone)
    source = RemoteSource(tsrv.endpoint, access_key=ACCESS_KEY, secret_key=SECRET_KEY)
    expect = [bodies[str(k)] for k in Manifest.from_parquet(admin.dataset_manifest(ref)).column("key")]
    assert [d for _, d in source.read_rows(DatasetRef(name, 1), [0, 1, 2])] == expect
    assert all(s3t.get_object(Bucket=bkt, Key=k)["Body"].read() == v for k, v in bodies.items())
    again = list(admin.archive_dataset(ref, "ARCH2"))[-1]
    assert (again["state"], again["skipped"], again["done"]) == ("done", 3, 3), "a second run moves nothing"

    admin.unpin_dataset(f"{pinned}@1", "tt-job")
    assert _catalog(tsrv, tier_of, cached) == [("ARCH2", None)]
    assert [d for _, d in source.read_rows(DatasetRef(name, 1), [0, 1, 2])] == expect  # all through ARCH2
    for ds in (ref, f"{pinned}@1"):
        admin.delete_dataset(ds)


def test_archive_errors_and_its_iam_action(tsrv: ServerProcess, s3t: Any, admin: TierstoreClient, arch: Any,
                                           bkt: str) -> None:  # fmt: skip
    s3t.put_object(Bucket=bkt, Key="x/1", Body=b"one")
    name = f"arche-{uuid.uuid4().hex[:8]}"
    admin.create_dataset(name, bucket=bkt, prefix="x/")

    def code(ref: str, tier: str, client: TierstoreClient = admin) -> tuple[int, str]:
        with pytest.raises(TierstoreClientError) as caught:
            list(client.archive_dataset(ref, tier))
        return caught.value.status, caught.value.code

    assert code(f"{name}@1", "NOPE") == (404, "NoSuchTier")
    assert code(f"{name}@2", TIER) == (404, "NoSuchDataset")
    assert code(f"{name}@1", "") == (400, "InvalidRequest")
    with pytest.raises(TierstoreClientError) as caught:
        admin._send("GET", f"/_tierstore/datasets/{name}/1/archive", None)
    assert (caught.value.status, caught.value.code) == (405, "MethodNotAllowed")

    def user(*actions: str) -> TierstoreClient:
        """A new user (no policy cache to wait out) allowed ``actions``, and its client."""
        name = f"arch-{uuid.uuid4().hex[:8]}"
        admin.create_user(name)
        statement = {"Effect": "Allow", "Action": list(actions), "Resource": "*"}
        admin.put_user_policy(name, "p", {"Version": "2012-10-17", "Statement": [statement]})
        key = admin.create_access_key(name)
        return TierstoreClient(resolve_settings(tsrv.endpoint, access_key=key["access_key_id"],
                                                secret_key=key["secret_key"]))  # fmt: skip

    reader = user("tierstore:GetDataset", "tierstore:ListDatasets")
    assert reader.dataset_info(f"{name}@1")["rows"] == 1
    assert code(f"{name}@1", TIER, reader) == (403, "AccessDenied")
    other = user("tierstore:ArchiveDataset")
    assert list(other.archive_dataset(f"{name}@1", TIER))[-1]["state"] == "done"
    for denied in (lambda: list(other.pin_dataset(f"{name}@1", "j")), other.jobs):
        with pytest.raises(TierstoreClientError) as caught:
            denied()
        assert (caught.value.status, caught.value.code) == (403, "AccessDenied")
    assert code(f"{name}@1", "") == (400, "InvalidRequest")


def test_keep_last_archives_older_checkpoints_instead_of_deleting(tsrv: ServerProcess, s3t: Any, arch: Any,
                                                                  bkt: str) -> None:  # fmt: skip
    """``CheckpointStore(keep_last=1, archive_to=TIER)``: the older checkpoints' data files and
    commit objects move to the tier (same version ids), still listed and loadable; the newest
    stays local; a later pass does not move them again."""
    import torch

    from tierstore.torch.checkpoints import CheckpointStore

    settings = resolve_settings(tsrv.endpoint, access_key=ACCESS_KEY, secret_key=SECRET_KEY)
    with pytest.raises(ValueError, match="keep_last"):
        CheckpointStore(f"s3://{bkt}/c", settings=settings, archive_to=TIER)
    with CheckpointStore(f"s3://{bkt}/c", settings=settings, run="r1", keep_last=1, archive_to=TIER,
                         file_bytes=256) as store:  # fmt: skip
        for step in range(1, 4):
            store.save({"w": torch.full((100,), step)}, step=step)  # 800 bytes: 4 data files
        store.wait()  # retention runs in the background after each commit
        infos = store.list()
        assert [(i.step, i.storage_class) for i in infos] == [(1, TIER), (2, TIER), (3, "STANDARD")]
        for step in (1, 2, 3):
            assert store.load(step)["w"][0] == step
    classes: dict[str, set[str]] = {}
    for obj in s3t.list_objects_v2(Bucket=bkt, Prefix="c/")["Contents"]:
        classes.setdefault(obj["Key"].split("/")[2].removesuffix(".json"), set()).add(obj["StorageClass"])
    assert classes == {"000000000001-r1": {TIER}, "000000000002-r1": {TIER}, "000000000003-r1": {"STANDARD"}}
    assert len(s3t.list_objects_v2(Bucket=bkt, Prefix="c/data/")["Contents"]) == 3 * 4, "nothing deleted"


def test_pin_makes_a_version_local_and_it_reads_with_the_tier_stopped(
    tsrv: ServerProcess, s3t: Any, admin: TierstoreClient, tmp_path: Path, bkt: str
) -> None:
    """``dataset pin NAME@N --job J --ttl``: the version's remote blobs are copied locally and
    held; ``jobs`` lists the pin; batch reads (what loaders use) and GETs read the copies with the
    tier stopped; pinning again needs no tier; ``unpin`` frees the copies; a TTL drops a pin."""
    weed = SeaweedFS(tmp_path / "weed")
    weed.start()
    try:
        _add_tier(admin, weed, "PINT")
        bodies = {"p/a": b"A" * 60_000, "p/b": bytes(range(200)) * 150, "p/c": b"inline", "p/d": b"D" * 50_000}
        for key, body in bodies.items():
            s3t.put_object(Bucket=bkt, Key=key, Body=body, **({"StorageClass": "PINT"} if key < "p/c" else {}))
        s3t.put_object(Bucket=bkt, Key="far", Body=b"f" * 40_000, StorageClass="PINT")  # not pinned
        name = f"pin-{uuid.uuid4().hex[:8]}"
        ref = f"{name}@1"
        admin.create_dataset(name, bucket=bkt, prefix="p/")
        tier_of = "SELECT tier FROM blobs WHERE blob_id=?"
        remote_ids = [m for m in _blob_ids(_locs(admin, ref)) if _catalog(tsrv, tier_of, m) == [("PINT",)]]
        assert len(remote_ids) == 2

        final = json.loads(ok(cli(tsrv, "dataset", "pin", ref, "--job", "train-1", "--ttl", "1h", "--json",
                                  "--no-progress")))  # fmt: skip
        assert (final["state"], final["items"], final["done"], final["skipped"]) == ("done", 2, 2, 0)
        assert final["done_bytes"] == final["bytes"] == 60_000 + 30_000
        (job,) = [json.loads(line) for line in ok(cli(tsrv, "jobs", "--json")).splitlines()]
        assert (job["job"], job["dataset"], job["blobs"], job["bytes"], job["cached_blobs"], job["state"]) == (
            "train-1", ref, 2, 90_000, 2, "pinned")
        assert job["expires"] > "2000"
        assert "train-1" in ok(cli(tsrv, "jobs")).splitlines()[1]
        for blob_id in remote_ids:
            assert _catalog(tsrv, "SELECT cached FROM blobs WHERE blob_id=?", blob_id) == [(1,)]
            assert _local_files(tsrv, blob_id)

        weed.stop()
        with pytest.raises(ClientError) as info:
            s3t.get_object(Bucket=bkt, Key="far")
        assert info.value.response["Error"]["Code"] == "ServiceUnavailable", "the tier is really down"
        source = RemoteSource(tsrv.endpoint, access_key=ACCESS_KEY, secret_key=SECRET_KEY)
        keys = [str(k) for k in Manifest.from_parquet(admin.dataset_manifest(ref)).column("key")]
        assert [d for _, d in source.read_rows(DatasetRef(name, 1), [3, 2, 1, 0])] == [bodies[k] for k in keys[::-1]]
        assert s3t.get_object(Bucket=bkt, Key="p/a")["Body"].read() == bodies["p/a"]
        again = list(admin.pin_dataset(ref, "train-1"))[-1]
        assert (again["state"], again["skipped"]) == ("done", 2), "a second pin copies nothing"
        list(admin.pin_dataset(ref, "brief", ttl_s=1))
        _wait(lambda: [j["job"] for j in admin.jobs()] == ["train-1"])  # the TTL ran out: the worker dropped it

        weed.start()
        ok(cli(tsrv, "dataset", "unpin", ref, "--job", "train-1"))
        assert admin.jobs() == []
        for blob_id in remote_ids:
            assert _catalog(tsrv, "SELECT cached FROM blobs WHERE blob_id=?", blob_id) == [(None,)]
            _wait(lambda blob_id=blob_id: not _local_files(tsrv, blob_id))
        with pytest.raises(TierstoreClientError) as caught:
            admin.unpin_dataset(ref, "train-1")
        assert (caught.value.status, caught.value.code) == (404, "NoSuchPin")
        assert [d for _, d in source.read_rows(DatasetRef(name, 1), [0])] == [bodies[keys[0]]]  # through the tier
    finally:
        weed.stop()
