"""torch.distributed.checkpoint through TierstoreWriter/TierstoreReader (tierstore/torch/_dcp.py)
against the real session server.

4 ranks on gloo (forked processes, DTensors sharded ``Shard(0)`` on a 1-D CPU mesh, plus a
replicated tensor and plain Python values) save one checkpoint; it loads on 2 and 3 ranks (DCP
reshards) and in one process without a process group. Saves that never commit, and a second
save of the same step and run, are driven through the StorageWriter protocol by hand.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import traceback
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import DefaultSavePlanner, FileSystemReader
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import DTensor, Shard, distribute_tensor

from tests.conftest import ACCESS_KEY, SECRET_KEY, ServerProcess, free_port
from tierstore.checkpoints import Commit, crc64nvme
from tierstore.checkpoints._objects import crc_b64
from tierstore.client._s3 import S3Settings
from tierstore.torch._dcp import CheckpointExistsError, CheckpointNotFoundError
from tierstore.torch.checkpoints import TierstoreReader, TierstoreWriter

ROWS = 10  # not a multiple of 3 or 4: uneven shards on every world size used
SEED = 1234
STEP = 300
RUN = "dcp-test"
NO_DIST = pytest.mark.filterwarnings("ignore:torch.distributed is disabled:UserWarning")


def full_state(seed: int) -> dict[str, Any]:
    """The model as every rank knows it whole: sharded weights, a replicated tensor, values."""
    g = torch.Generator().manual_seed(seed)
    return {
        "model": {
            "w": torch.randn(ROWS, 6, generator=g),
            "b": torch.randn(ROWS, generator=g),
            "ids": torch.randint(0, 1 << 40, (ROWS, 3), generator=g),
        },
        "bias": torch.randn(5, generator=g),
        "extra": {"epoch": seed % 7, "note": f"seed {seed}"},
    }


def blank_state() -> dict[str, Any]:
    full = full_state(0)
    return {
        "model": {k: torch.zeros_like(v) for k, v in full["model"].items()},
        "bias": torch.zeros(5),
        "extra": {"epoch": -1, "note": ""},
    }


def shard(state: dict[str, Any], mesh: Any) -> dict[str, Any]:
    """The model's tensors as DTensors sharded by rows over ``mesh``; the rest as it is."""
    return {**state, "model": {k: distribute_tensor(v, mesh, [Shard(0)]) for k, v in state["model"].items()}}


def assert_state(got: dict[str, Any], seed: int) -> None:
    want = full_state(seed)
    for k, v in want["model"].items():
        assert torch.equal(got["model"][k], v), k
    assert torch.equal(got["bias"], want["bias"])
    assert got["extra"] == want["extra"]


@dataclass(frozen=True)
class Job:
    settings: S3Settings
    uri: str
    out: str


def _rank(rank: int, world: int, port: int, action: str, job: Job) -> None:
    out = Path(job.out) / f"rank{rank}"
    try:
        torch.set_num_threads(1)
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
        try:
            mesh = init_device_mesh("cpu", (world,))
            if action.startswith("save"):
                run = None if action == "save-default-run" else RUN
                writer = TierstoreWriter(job.uri, step=STEP, run=run, settings=job.settings, thread_count=2)
                dcp.save(shard(full_state(SEED), mesh), storage_writer=writer)
                result = writer.name
            else:
                state = shard(blank_state(), mesh)
                dcp.load(state, storage_reader=TierstoreReader(job.uri, settings=job.settings))
                want = shard(full_state(SEED), mesh)
                for k, dt in state["model"].items():
                    assert isinstance(dt, DTensor)
                    assert torch.equal(dt.to_local(), want["model"][k].to_local()), f"rank {rank}: {k} shard"
                    assert torch.equal(dt.full_tensor(), full_state(SEED)["model"][k]), f"rank {rank}: {k}"
                assert torch.equal(state["bias"], want["bias"])
                assert state["extra"] == want["extra"]
                result = "loaded"
            dist.barrier()
        finally:
            dist.destroy_process_group()
        out.write_text(result)
    except BaseException:
        out.write_text("FAILED\n" + traceback.format_exc())
        raise


def run_ranks(world: int, action: str, job: Job) -> list[str]:
    """``world`` forked ranks in a gloo group doing ``action``; what each rank reported."""
    ctx = multiprocessing.get_context("fork")
    port = free_port()
    procs = [ctx.Process(target=_rank, args=(r, world, port, action, job)) for r in range(world)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    for p in procs:
        if p.is_alive() and p.pid is not None:
            os.kill(p.pid, signal.SIGKILL)
            p.join()
    outs = [Path(job.out) / f"rank{r}" for r in range(world)]
    reports = [o.read_text() if o.exists() else f"rank {r}: no report" for r, o in enumerate(outs)]
    assert all(p.exitcode == 0 for p in procs) and not any(r.startswith("FAILED") for r in reports), reports
    for o in outs:
        o.unlink()
    return reports


@dataclass(frozen=True)
class Saved:
    job: Job
    bucket: str
    name: str


@pytest.fixture(scope="module")
def settings(server: ServerProcess) -> S3Settings:
    return S3Settings(server.endpoint, ACCESS_KEY, SECRET_KEY)


@pytest.fixture(scope="module")
def saved(settings: S3Settings, s3: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Saved]:
    """One checkpoint saved by 4 ranks, shared by the tests that read it."""
    bucket = f"t-{uuid.uuid4().hex[:16]}"
    s3.create_bucket(Bucket=bucket)
    job = Job(settings, f"s3://{bucket}/ckpts/dcp", str(tmp_path_factory.mktemp("dcp")))
    names = run_ranks(4, "save", job)
    assert len(set(names)) == 1, names
    yield Saved(job, bucket, names[0])
    keys = [
        o["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
        for o in page.get("Contents", [])
    ]
    if keys:
        s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys]})
    s3.delete_bucket(Bucket=bucket)


def list_keys(s3: Any, bucket: str, prefix: str) -> list[str]:
    return [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
            for o in page.get("Contents", [])]  # fmt: skip


def test_four_ranks_commit_once(saved: Saved, s3: Any) -> None:
    """Exactly one commit object; it names every data file the 4 ranks wrote (and nothing
    else), with the size and CRC64NVME of the bytes stored."""
    assert saved.name == f"{STEP:012d}-{RUN}"
    commits = list_keys(s3, saved.bucket, "ckpts/dcp/commits/")
    assert commits == [f"ckpts/dcp/commits/{saved.name}.json"]
    obj = s3.get_object(Bucket=saved.bucket, Key=commits[0])
    commit = Commit.from_json(obj["Body"].read())
    assert (commit.step, commit.run, commit.kind) == (STEP, RUN, "dcp")
    assert commit.body["metadata"] == ".metadata" and commit.body["world_size"] == 4
    meta = dict(obj["Metadata"])
    # datasets: what loaders opened in rank 0's process (forked from this one: whatever it opened)
    assert meta.pop("datasets", "") == " ".join(commit.datasets)
    assert meta == {"step": str(STEP), "run": RUN, "kind": "dcp"}
    data = list_keys(s3, saved.bucket, f"ckpts/dcp/data/{saved.name}/")
    assert sorted(f.key for f in commit.files) == sorted(data)
    paths = {f.path for f in commit.files}
    assert ".metadata" in paths
    for rank in range(4):  # every rank holds shards, so every rank wrote files
        assert any(p.startswith(f"__{rank}_") and p.endswith(".distcp") for p in paths), (rank, paths)
    for f in commit.files:
        body = s3.get_object(Bucket=saved.bucket, Key=f.key)["Body"].read()
        assert (len(body), crc_b64(crc64nvme(body))) == (f.size, f.crc64nvme), f.path


@pytest.mark.parametrize("world", [2, 3])
def test_load_on_fewer_ranks(saved: Saved, world: int) -> None:
    """DCP reshards the 4-rank checkpoint onto 2 and 3 ranks: each rank's local shard is the
    expected row slice, and the gathered tensors are the originals."""
    assert run_ranks(world, "load", saved.job) == ["loaded"] * world


@NO_DIST
def test_load_in_one_process_without_process_group(saved: Saved, s3: Any, tmp_path: Path) -> None:
    """No process group: the sharded checkpoint loads into whole plain tensors — through the
    reader, pinned by a commit URI as ``checkpoint_id``, and (its committed files copied to a
    directory, as a pull does) through torch's own FileSystemReader."""
    assert not dist.is_initialized()
    state = blank_state()
    reader = TierstoreReader(saved.job.uri, settings=saved.job.settings)
    dcp.load(state, storage_reader=reader, no_dist=True)
    assert_state(state, SEED)
    assert reader.checkpoint_id == f"s3://{saved.bucket}/ckpts/dcp/commits/{saved.name}.json"
    pinned = blank_state()
    dcp.load(
        pinned,
        checkpoint_id=reader.checkpoint_id,
        storage_reader=TierstoreReader("s3://elsewhere/x", settings=saved.job.settings),
    )
    assert_state(pinned, SEED)

    assert reader.commit is not None
    for f in reader.commit.files:
        (tmp_path / f.path).write_bytes(s3.get_object(Bucket=saved.bucket, Key=f.key)["Body"].read())
    local = blank_state()
    dcp.load(local, storage_reader=FileSystemReader(tmp_path), no_dist=True)
    assert_state(local, SEED)


def save_by_hand(state: dict[str, Any], writer: TierstoreWriter) -> Callable[[], None]:
    """One rank's save up to and including write_data; returns the ``finish`` call still to make."""
    planner = DefaultSavePlanner()
    planner.set_up_planner(state, storage_meta=writer.storage_meta(), is_coordinator=True)
    writer.set_up_storage_writer(True, rank=0, use_collectives=True)
    local = writer.prepare_local_plan(planner.create_local_plan())
    plans, metadata = planner.create_global_plan([local])
    plans = writer.prepare_global_plan(plans)
    results = writer.write_data(planner.finish_plan(plans[0]), planner).wait()
    return lambda: writer.finish(metadata, [results])


@NO_DIST
def test_uncommitted_save_is_invisible(bucket: str, settings: S3Settings, s3: Any) -> None:
    """Step 2's data files are all there but its commit was never written: the reader sees step 1."""
    uri = f"s3://{bucket}/m"
    dcp.save(full_state(1), storage_writer=TierstoreWriter(uri, step=1, run="a", settings=settings), no_dist=True)
    writer = TierstoreWriter(uri, step=2, run="a", settings=settings)
    save_by_hand(full_state(2), writer)  # finish never called: as if rank 0 died before it
    assert list_keys(s3, bucket, f"m/data/{writer.name}/"), "step 2's data files were written"
    assert list_keys(s3, bucket, "m/commits/") == [f"m/commits/{1:012d}-a.json"]

    state = blank_state()
    dcp.load(state, storage_reader=TierstoreReader(uri, settings=settings), no_dist=True)
    assert_state(state, 1)
    with pytest.raises(CheckpointNotFoundError, match="no committed checkpoint step 2"):
        TierstoreReader(uri, step=2, settings=settings).resolve()


@NO_DIST
def test_second_save_of_a_step_and_run_fails_and_keeps_the_first(bucket: str, settings: S3Settings, s3: Any) -> None:
    """A save of a committed step+run fails before writing data; two saves racing past that
    check both write their data, one commits, the other fails at the conditional commit — and
    the commit and its files are the winner's."""
    uri = f"s3://{bucket}/m"
    dcp.save(full_state(5), storage_writer=TierstoreWriter(uri, step=5, run="r", settings=settings), no_dist=True)
    before = list_keys(s3, bucket, "m/")
    with pytest.raises(CheckpointException, match="already committed"):
        dcp.save(full_state(6), storage_writer=TierstoreWriter(uri, step=5, run="r", settings=settings), no_dist=True)
    assert list_keys(s3, bucket, "m/") == before, "nothing written"

    first = TierstoreWriter(uri, step=7, run="r", settings=settings)
    second = TierstoreWriter(uri, step=7, run="r", settings=settings)
    finish_first = save_by_hand(full_state(7), first)
    finish_second = save_by_hand(full_state(8), second)
    finish_first()
    with pytest.raises(CheckpointExistsError, match="already committed"):
        finish_second()
    for step, seed in ((5, 5), (7, 7)):
        state = blank_state()
        dcp.load(state, storage_reader=TierstoreReader(uri, step=step, run="r", settings=settings), no_dist=True)
        assert_state(state, seed)
    reader = TierstoreReader(uri, settings=settings)
    commit = reader.resolve()
    assert commit.step == 7
    data = list_keys(s3, bucket, f"m/data/{first.name}/")
    committed = {f.key for f in commit.files}
    assert committed < set(data), "the loser's data files are there, outside the commit"


def test_default_run_is_chosen_once_for_all_ranks(bucket: str, settings: S3Settings, s3: Any, tmp_path: Path) -> None:
    """Without ``run=``, rank 0 picks the run id and every rank writes under the same name."""
    job = Job(settings, f"s3://{bucket}/p", str(tmp_path))
    names = run_ranks(2, "save-default-run", job)
    assert len(set(names)) == 1 and names[0].startswith(f"{STEP:012d}-"), names
    assert list_keys(s3, bucket, "p/commits/") == [f"p/commits/{names[0]}.json"]
    paths = {k.rsplit("/", 1)[1] for k in list_keys(s3, bucket, f"p/data/{names[0]}/")}
    assert any(p.startswith("__0_") for p in paths) and any(p.startswith("__1_") for p in paths), paths


class _RacedWriter(TierstoreWriter):
    """A writer whose look for an existing commit comes too late to see it: what a duplicate
    save racing the winner looks like in the instant between that look and its commit."""

    def _check_not_committed(self, name: str) -> None:
        return None


@NO_DIST
def test_conditional_commit_stops_a_raced_duplicate(bucket: str, settings: S3Settings, s3: Any) -> None:
    """Both saves get past every look-up; the commit's If-None-Match lets only the first in.
    On a versioned bucket the loser's ``.metadata`` is a new version, and the committed
    checkpoint still loads, from the versions its commit names."""
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    uri = f"s3://{bucket}/m"
    first = TierstoreWriter(uri, step=9, run="r", settings=settings)
    second = _RacedWriter(uri, step=9, run="r", settings=settings)
    finish_first = save_by_hand(full_state(9), first)
    finish_second = save_by_hand(full_state(10), second)
    finish_first()
    with pytest.raises(CheckpointExistsError, match="committed by another save"):
        finish_second()
    versions = s3.list_object_versions(Bucket=bucket, Prefix=f"m/data/{first.name}/.metadata")["Versions"]
    assert len(versions) == 2, "the loser wrote its .metadata over the winner's"
    state = blank_state()
    dcp.load(state, storage_reader=TierstoreReader(uri, settings=settings), no_dist=True)
    assert_state(state, 9)


@NO_DIST
def test_changed_bytes_fail_the_load(bucket: str, settings: S3Settings, s3: Any) -> None:
    """A data file overwritten with other bytes of the same length (unversioned bucket) is
    caught by the commit's CRC64NVME when read whole."""
    uri = f"s3://{bucket}/m"
    writer = TierstoreWriter(uri, step=1, run="a", settings=settings, thread_count=1)
    dcp.save(full_state(1), storage_writer=writer, no_dist=True)
    (key,) = [k for k in list_keys(s3, bucket, f"m/data/{writer.name}/") if k.endswith(".distcp")]
    body = bytearray(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    body[-100] ^= 0xFF
    s3.put_object(Bucket=bucket, Key=key, Body=bytes(body))
    with pytest.raises(CheckpointException, match="ChecksumMismatch"):
        dcp.load(blank_state(), storage_reader=TierstoreReader(uri, settings=settings), no_dist=True)
