"""CheckpointStore (tierstore/torch/_checkpoints.py) with real torch on CPU against a real server:
round trips byte-exact, commits last (kill -9 at random points of a save), retention that spares
tagged and registered checkpoints, save_async, 8 concurrent writer processes, lineage, and
damage detected on load."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from random import Random
from typing import Any

import pytest
import torch

from tests.conftest import ACCESS_KEY, REPO, SECRET_KEY, ServerProcess
from tests.torch.ckpt_writer import MiB, make_state
from tests.torch.sources import create_served
from tierstore.checkpoints import S3Objects
from tierstore.client import S3Settings, TierstoreClient, resolve_settings
from tierstore.torch import MapDataset
from tierstore.torch._checkpoints import CheckpointCorrupt, CheckpointExists, CheckpointNotFound
from tierstore.torch.checkpoints import CheckpointInfo, CheckpointStore, opened_datasets


@pytest.fixture(scope="module")
def settings(server: ServerProcess) -> S3Settings:
    return resolve_settings(server.endpoint, access_key=ACCESS_KEY, secret_key=SECRET_KEY)


@pytest.fixture
def store(settings: S3Settings, bucket: str) -> Iterator[CheckpointStore]:
    with CheckpointStore(f"s3://{bucket}/ckpt", settings=settings, run="r1") as s:
        yield s


def child_env() -> dict[str, str]:
    return dict(os.environ, TIERSTORE_ACCESS_KEY=ACCESS_KEY, TIERSTORE_SECRET_KEY=SECRET_KEY)


def keys(s3: Any, bucket: str, prefix: str = "") -> list[str]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


def assert_same(got: Any, want: Any, path: str = "") -> None:
    """Equal structure and types; tensors equal byte for byte (dtype, shape, values, nan)."""
    if isinstance(want, torch.Tensor):
        assert isinstance(got, torch.Tensor), path
        assert got.dtype == want.dtype and got.shape == want.shape and got.device.type == "cpu", path
        assert torch.equal(got.view(-1).view(torch.uint8), want.contiguous().view(-1).view(torch.uint8)), path
    elif isinstance(want, dict):
        assert isinstance(got, dict) and list(got) == list(want), path
        for k in want:
            assert_same(got[k], want[k], f"{path}/{k}")
    elif isinstance(want, list | tuple):
        assert type(got) is type(want) and len(got) == len(want), path
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            assert_same(g, w, f"{path}[{i}]")
    elif isinstance(want, float) and math.isnan(want):
        assert isinstance(got, float) and math.isnan(got), path
    else:
        assert type(got) is type(want) and got == want, path


def realistic_state(gen: torch.Generator) -> dict[str, Any]:
    """A small model's and its Adam optimizer's state_dicts after one step, and awkward extras."""
    torch.manual_seed(int(torch.randint(0, 2**31, (1,), generator=gen)))
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.BatchNorm1d(32), torch.nn.Linear(32, 4))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.randn(8, 16)).square().mean().backward()
    opt.step()
    shared = torch.randn(3 << 18, generator=gen)  # 3 MiB, stored once
    return {
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),  # int keys, tuples (betas), floats, 0-d step tensors
        "embed": shared,
        "lm_head": shared,  # tied weights
        "bf16": torch.randn(1000, generator=gen).to(torch.bfloat16),
        "i64": torch.randint(-(2**62), 2**62, (333,), generator=gen),
        "mask": torch.rand(77, generator=gen) > 0.5,
        "transposed": torch.randn(300, 700, generator=gen).t(),  # non-contiguous
        "row": torch.randn(50, 60, generator=gen)[7],
        "scalar": torch.tensor(2.5),
        "empty": torch.zeros(0, 3),
        "nested": [1, [2.5, None, "x"], (True, b"\x00\xff"), {"k": float("nan"), 3: float("-inf")}],
        "dtype": torch.float16,
        "size": torch.Size([2, 3]),
        "ints": {1: "one", (2, 3): "pair"},
    }


def test_round_trip_byte_exact_across_files_and_multipart(settings: S3Settings, bucket: str, s3: Any) -> None:
    """Files of 1 MiB (tensors span them), multipart above 5 MiB parts (one file of 12 MiB):
    every tensor comes back byte-exact with its dtype, the structure and types too, tied weights
    as one tensor, the model and optimizer load their state back."""
    gen = torch.Generator().manual_seed(1)
    state = realistic_state(gen)
    objects = S3Objects(settings, part_bytes=5 * MiB)
    with CheckpointStore(f"s3://{bucket}/rt", run="r1", objects=objects, file_bytes=MiB) as store:
        info = store.save(state, step=7)
        files = keys(s3, bucket, "rt/data/")
        assert len(files) == math.ceil(info.size_bytes / MiB) >= 4
        back = store.load(7)
    assert_same(back, state)
    assert back["embed"] is back["lm_head"], "tied weights come back as one tensor"
    assert back["optimizer"]["state"][0]["step"].dim() == 0
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.BatchNorm1d(32), torch.nn.Linear(32, 4))
    model.load_state_dict(back["model"])
    torch.optim.Adam(model.parameters()).load_state_dict(back["optimizer"])

    big = {"w": torch.randn(3 * MiB, generator=gen), "b": torch.randn(5, generator=gen)}  # 12 MiB
    with CheckpointStore(f"s3://{bucket}/mp", run="r1", objects=objects, file_bytes=64 * MiB) as store:
        store.save(big, step=1)
        (only,) = keys(s3, bucket, "mp/data/")
        assert s3.head_object(Bucket=bucket, Key=only)["ETag"].endswith('-3"'), "one file, uploaded in three parts"
        assert_same(store.load(), big)


def test_pickled_values_follow_weights_only(store: CheckpointStore) -> None:
    """A value JSON cannot hold goes through torch.save: weights_only=True (the default) refuses an
    arbitrary class, as torch.load does; weights_only=False brings it back."""
    store.save({"w": torch.ones(2), "extra": Random(5), "c": complex(1, 2)}, step=1)
    with pytest.raises(Exception, match="Weights only load failed"):
        store.load()
    back = store.load(weights_only=False)
    assert back["extra"].random() == Random(5).random() and back["c"] == complex(1, 2)


def test_list_latest_load_by_step_and_tag_and_metadata_query(
    store: CheckpointStore, s3: Any, bucket: str, settings: S3Settings
) -> None:
    """Metrics are the commit object's metadata and tags its tags (seen by boto3); list and
    latest read them through one query; load(step=)/load(tag=) pick the right one; the metadata
    query over the commits finds the lowest loss among the tested ones."""
    assert store.list() == [] and store.latest() is None
    with pytest.raises(CheckpointNotFound):
        store.load()
    losses = {1: 0.9, 2: 0.4, 3: 0.2, 4: 0.3}
    for step, loss in losses.items():
        tags = {"status": "tested"} if step in (2, 4) else {}
        info = store.save({"w": torch.full((10,), float(step))}, step=step, metrics={"loss": loss}, tags=tags)
        assert info.step == step and info.run == "r1" and info.metrics == {"loss": loss}
    store.tag(1, tested="yes")

    infos = store.list()
    assert [i.step for i in infos] == [1, 2, 3, 4]
    assert all(isinstance(i, CheckpointInfo) and i.size_bytes == 40 for i in infos)
    assert infos[1].tags == {"status": "tested"} and infos[0].tags == {"tested": "yes"}
    assert store.latest() == infos[-1] and store.latest(tag="tested") == infos[0]

    head = s3.head_object(Bucket=bucket, Key=infos[2].key)
    assert head["Metadata"]["loss"] == "0.2" and head["Metadata"]["step"] == "3" and head["Metadata"]["run"] == "r1"
    tagging = s3.get_object_tagging(Bucket=bucket, Key=infos[3].key)["TagSet"]
    assert tagging == [{"Key": "status", "Value": "tested"}]

    assert store.load()["w"][0] == 4 and store.load(2)["w"][0] == 2
    assert store.load(tag="status=tested")["w"][0] == 4 and store.load(tag="tested")["w"][0] == 1
    with pytest.raises(CheckpointNotFound):
        store.load(tag="status=failed")

    client = TierstoreClient(settings)
    query = "key STARTS WITH 'ckpt/commits/' AND tag.status = 'tested' ORDER BY meta.loss LIMIT 1"
    best = client.query(bucket, query).objects[0]
    assert best["key"] == infos[3].key, "loss 0.3 is the lowest among the tested"
    assert store.best("loss") == infos[2] and store.best("loss", tag="status=tested") == infos[3]
    assert store.best("loss", mode="max") == infos[0]
    assert store.untag(1, "tested") == {} and store.latest(tag="tested") is None


def test_same_step_and_run_twice_is_refused(store: CheckpointStore, s3: Any, bucket: str) -> None:
    first = store.save({"w": torch.arange(100)}, step=5, metrics={"loss": 1.0})
    with pytest.raises(CheckpointExists, match="000000000005-r1"):
        store.save({"w": torch.arange(100) * 2}, step=5, metrics={"loss": 2.0})
    assert store.list() == [first]
    assert torch.equal(store.load(5)["w"], torch.arange(100)), "the first checkpoint is untouched"
    assert s3.head_object(Bucket=bucket, Key=first.key)["Metadata"]["loss"] == "1.0"


def test_racing_saves_of_one_step_commit_once(settings: S3Settings, bucket: str, s3: Any) -> None:
    """4 stores of the same run save the same step at once: exactly one commits (the conditional
    PUT decides), the others get CheckpointExists, the checkpoint is the winner's; gc then removes
    the losers' uploaded data and keeps the winner's."""
    uri = f"s3://{bucket}/race"
    stores = [CheckpointStore(uri, settings=settings, run="same", file_bytes=1024) for _ in range(4)]

    def save(i: int) -> CheckpointInfo | CheckpointExists:
        try:
            return stores[i].save({"w": torch.full((1000,), i)}, step=9)  # 8000 bytes: 8 files
        except CheckpointExists as exc:
            return exc

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(save, range(4)))
    winners = [i for i, r in enumerate(results) if isinstance(r, CheckpointInfo)]
    assert len(winners) == 1, results
    store = stores[0]
    assert [i.step for i in store.list()] == [9] and store.load(9)["w"][0] == winners[0]
    counts = store.gc(older_than_s=0)
    print(f"losers refused at the commit, after uploading: {counts['saves']}")
    assert len(keys(s3, bucket, "race/data/")) == 8, "only the winner's files are left"
    assert torch.equal(store.load(9)["w"], torch.full((1000,), winners[0]))
    for s in stores:
        s.close()


def test_keep_last_spares_tagged_and_registered(settings: S3Settings, bucket: str, s3: Any) -> None:
    """keep_last=2 over 6 saves: untagged checkpoints beyond the newest two lose their commit and
    their data files; one tagged at save time and one registered later (tag ``model``) stay."""
    with CheckpointStore(f"s3://{bucket}/k", settings=settings, run="r1", keep_last=2, file_bytes=256) as store:
        for step in range(1, 7):
            tags = {"keep": "yes"} if step == 2 else {}
            store.save({"w": torch.full((100,), step)}, step=step, tags=tags)  # 800 bytes: 4 files
            if step == 3:
                store.tag(3, model="resnet@1")  # what the model registry does on registration
        store.wait()  # retention runs in the background after each commit
        assert [i.step for i in store.list()] == [2, 3, 5, 6]
        for step in (2, 3, 5, 6):
            assert store.load(step)["w"][0] == step
    names = {k.split("/")[2].removesuffix(".json") for k in keys(s3, bucket, "k/")}
    assert names == {f"{s:012d}-r1" for s in (2, 3, 5, 6)}, "commit and data of 1 and 4 are gone"
    assert len(keys(s3, bucket, "k/data/")) == 4 * 4


def test_save_async_copies_before_returning(store: CheckpointStore) -> None:
    """Mutating the tensors right after save_async returns does not reach the checkpoint; a
    second save_async waits for the first; the future's result is the CheckpointInfo."""
    w = torch.arange(MiB, dtype=torch.float32)
    state = {"w": w, "view": w[::2], "n": [1]}
    first = store.save_async(state, step=1, metrics={"loss": 0.5})
    w.add_(1)
    state["n"].append(2)
    second = store.save_async(state, step=2)
    assert first.done(), "the second save_async started only after the first finished"
    w.mul_(0)
    info = first.result()
    assert isinstance(info, CheckpointInfo) and info.step == 1 and info.metrics == {"loss": 0.5}
    assert store.wait() == second.result() and second.result().step == 2
    assert store.wait() is None, "nothing in flight any more"
    one, two = store.load(1), store.load(2)
    assert torch.equal(one["w"], torch.arange(MiB, dtype=torch.float32)) and one["n"] == [1]
    assert torch.equal(one["view"], torch.arange(MiB, dtype=torch.float32)[::2])
    assert torch.equal(two["w"], torch.arange(MiB, dtype=torch.float32) + 1) and two["n"] == [1, 2]
    failed = store.save_async({"w": w}, step=2)
    with pytest.raises(CheckpointExists):
        failed.result()


def test_kill_9_mid_save_leaves_the_previous_checkpoint(
    settings: S3Settings, server: ServerProcess, bucket: str, s3: Any, rng: Random
) -> None:
    """A child saves step 1, then is SIGKILLed after a random number of PUTs of step 2 (a random
    moment later). Either step 2 committed and loads byte-exact, or latest() is step 1 and loads
    byte-exact; gc(0) then removes step 2's data and aborts its uploads, and step 2 saves again."""
    for round_ in range(4):
        seed = rng.randrange(1 << 20)
        uri = f"s3://{bucket}/kill{round_}"
        cmd = [sys.executable, "-m", "tests.torch.ckpt_writer", "kill", server.endpoint, uri, str(seed)]
        proc = subprocess.Popen(cmd, cwd=REPO, env=child_env(), stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        kill_after = rng.randint(1, 7)  # 4 parts, 1 whole file, the commit: 7 never kills
        puts, step1 = 0, False
        for line in proc.stdout:
            if line.startswith("committed 1"):
                step1 = True
            elif step1 and line.startswith("put "):
                puts += 1
                if puts == kill_after:
                    if rng.random() < 0.5:  # a random moment into the request, not just before it
                        time.sleep(rng.uniform(0, 0.05))
                    proc.send_signal(signal.SIGKILL)
                    break
        proc.stdout.close()
        proc.wait(timeout=120)
        assert step1, f"round {round_}: the child did not save step 1 (exit {proc.returncode})"

        with CheckpointStore(uri, settings=settings, run="killed") as store:
            before = [i.step for i in store.list()]
            counts = store.gc(older_than_s=0)
            steps = [i.step for i in store.list()]
            print(f"round {round_}: killed after PUT {puts} of step 2 (exit {proc.returncode}): {steps}, gc {counts}")
            assert set(before) <= set(steps), "gc never removes a committed checkpoint"
            assert_same(store.load(1), make_state(seed, 1))
            if steps == [1, 2]:  # the commit landed: the checkpoint is complete
                assert_same(store.load(2), make_state(seed, 2, mib=15))
                continue
            assert steps == [1] and store.latest() == store.list()[0], f"round {round_}: {counts}"
            if puts >= 2:  # a part was on its way: its upload (or a finished file) was there to collect
                assert counts["uploads"] + counts["objects"] > 0, counts
            prefix = f"kill{round_}/data/000000000002-killed/"
            assert keys(s3, bucket, prefix) == [], f"gc left step 2's data ({counts})"
            assert s3.list_multipart_uploads(Bucket=bucket, Prefix=prefix).get("Uploads", []) == []
            again = make_state(seed, 2, mib=15)
            store.save(again, step=2)
            assert_same(store.load(2), again)


def test_eight_concurrent_writers(server: ServerProcess, settings: S3Settings, bucket: str, tmp_path: Path) -> None:
    """8 processes save steps 1-3 each (different runs, the same steps) to one store at the same
    time: all finish, all 24 checkpoints are listed, each loads byte-exact."""
    uri = f"s3://{bucket}/shared"
    go = tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.torch.ckpt_writer", "writer", server.endpoint, uri, f"w{i}", str(i), str(go)],
            cwd=REPO,
            env=child_env(),
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(8)
    ]
    try:
        for p in procs:
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        go.touch()
        outs = [p.communicate(timeout=240)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert [p.returncode for p in procs] == [0] * 8 and all(o.strip() == "done" for o in outs)
    with CheckpointStore(uri, settings=settings) as store:
        infos = store.list()
        assert sorted((i.step, i.run) for i in infos) == sorted((s, f"w{w}") for w in range(8) for s in (1, 2, 3))
        for info in infos:
            seed = int(info.run[1:])
            assert info.metrics == {"loss": seed + info.step / 10}
            assert_same(store.load(info.step, run=info.run), make_state(seed, info.step, mib=1.5))
        assert store.best("loss") == next(i for i in infos if i.run == "w0" and i.step == 1)


def test_lineage_records_opened_datasets(
    server: ServerProcess, s3: Any, store: CheckpointStore, settings: S3Settings, bucket: str
) -> None:
    """A MapDataset opened in this process is in the commit's datasets, with the explicit ones."""
    served = create_served(server, s3, 12)
    ds = MapDataset(served.ref.name, served.source)
    assert str(ds.ref) in opened_datasets()
    info = store.save({"w": torch.ones(3)}, step=1, datasets=["extra@4"])
    assert str(ds.ref) in info.datasets and "extra@4" in info.datasets and info.datasets == sorted(info.datasets)
    assert store.list()[0].datasets == info.datasets
    assert s3.head_object(Bucket=bucket, Key=info.key)["Metadata"]["datasets"] == " ".join(info.datasets)


def test_damaged_data_file_is_an_error_naming_it(settings: S3Settings, bucket: str, s3: Any) -> None:
    """One data file overwritten with other bytes of the same size: load raises, naming the file."""
    gen = torch.Generator().manual_seed(3)
    state = {"big": torch.randn(MiB // 2, generator=gen), "small": [torch.randn(5, generator=gen) for _ in range(9)]}
    with CheckpointStore(f"s3://{bucket}/bad", settings=settings, run="r1", file_bytes=MiB) as store:
        store.save(state, step=1)
        files = keys(s3, bucket, "bad/data/")
        assert len(files) == 3
        for victim in (files[0], files[2]):
            good = s3.get_object(Bucket=bucket, Key=victim)["Body"].read()
            bad = bytearray(good)
            bad[len(bad) // 2] ^= 0x01
            s3.put_object(Bucket=bucket, Key=victim, Body=bytes(bad))
            with pytest.raises(CheckpointCorrupt, match=victim):
                store.load()
            s3.put_object(Bucket=bucket, Key=victim, Body=good)
            assert_same(store.load(), state)


def test_a_closed_store_says_so(settings: S3Settings, bucket: str) -> None:
    store = CheckpointStore(f"s3://{bucket}/closed", settings=settings, run="r1")
    store.save({"w": torch.ones(2)}, step=1)
    store.close()
    for call in (lambda: store.save({"w": torch.ones(2)}, step=2), lambda: store.load(1),
                 lambda: store.save_async({"w": torch.ones(2)}, step=2)):  # fmt: skip
        with pytest.raises(RuntimeError, match="is closed"):
            call()
    assert [i.step for i in store.list()] == [1]  # listing needs no threads


def test_server_killed_mid_save(fresh_server: ServerProcess, rng: Random) -> None:
    """SIGKILL the server (every worker) while a save uploads: the save raises, and after a
    restart the previous checkpoint is the latest and loads byte-exact; gc clears the dead
    save's leftovers and the same step saves again."""
    settings = resolve_settings(fresh_server.endpoint, access_key=ACCESS_KEY, secret_key=SECRET_KEY)
    S3Objects(settings).s3.create_bucket(Bucket="crash")
    objects = S3Objects(settings, part_bytes=5 * MiB)
    gen = torch.Generator().manual_seed(rng.randrange(2**32))
    first = {"w": torch.randn(2 * MiB, generator=gen)}
    second = {"w": torch.randn(24 * MiB, generator=gen)}  # 96 MiB: many parts, time to be killed in
    with CheckpointStore("s3://crash/p", settings=settings, objects=objects, run="r1", file_bytes=16 * MiB) as store:
        store.save(first, step=1)
        with ThreadPoolExecutor(1) as pool:
            saving = pool.submit(store.save, second, step=2)
            time.sleep(rng.uniform(0.0, 0.4))
            fresh_server.stop(signal.SIGKILL)
            try:
                saving.result(timeout=120)
                returned = True
            except Exception:  # the connection died: any error of the S3 calls
                returned = False
    fresh_server.start()
    with CheckpointStore("s3://crash/p", settings=settings, run="r1") as store:
        steps = [i.step for i in store.list()]
        print(f"save {'returned' if returned else 'raised'}; committed: {steps}")
        # a save that returned is committed; one that raised may be too (its commit landed, the
        # answer was lost): either way a listed checkpoint is whole
        assert steps == [1, 2] if returned else steps in ([1], [1, 2]), steps
        assert torch.equal(store.load(1)["w"], first["w"])
        if steps == [1, 2]:
            assert torch.equal(store.load(2)["w"], second["w"])
            return
        store.gc(older_than_s=0)
        leftovers = [o.key for o in store.objects.list("crash", "p/data/") if "000000000002-r1" in o.key]
        assert leftovers == []
        store.save(second, step=2)
        assert torch.equal(store.load(2)["w"], second["w"])
