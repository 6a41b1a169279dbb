"""The whole path of issue 7 through real torch, a real server and the real CLI: a model trains
on a tierstore dataset, checkpoints with metrics, the tested one is registered and aliased
``production``, retention and a cleanup delete every checkpoint object, and an inference
process still pulls ``NAME@production`` byte-exact and loads it; ``tierstore lineage`` names
the model, the checkpoint and the dataset it trained on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.conftest import ACCESS_KEY, SECRET_KEY, ServerProcess
from tests.torch.sources import create_served
from tierstore.checkpoints import lineage, pull_model, register_model
from tierstore.client import TierstoreClient, resolve_settings
from tierstore.torch import MapDataset, ShuffleSampler
from tierstore.torch.checkpoints import CheckpointCorrupt, CheckpointNotFound, CheckpointStore, load_pulled


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))


def _features(batch: list[dict[str, Any]]) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.tensor([list(s["data"][:16]) for s in batch], dtype=torch.float32) / 255
    y = torch.tensor([int(s["label"]) for s in batch])
    return x, y


def _cli(server: ServerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, TIERSTORE_ENDPOINT=server.endpoint, TIERSTORE_ACCESS_KEY=ACCESS_KEY,
               TIERSTORE_SECRET_KEY=SECRET_KEY)  # fmt: skip
    return subprocess.run([sys.executable, "-m", "tierstore", *args], capture_output=True, text=True, env=env,
                          timeout=120, check=False)  # fmt: skip


def test_train_register_retain_pull_load(server: ServerProcess, s3: Any, bucket: str, tmp_path: Path) -> None:
    settings = resolve_settings(server.endpoint, access_key=ACCESS_KEY, secret_key=SECRET_KEY)
    client = TierstoreClient(settings)
    served = create_served(server, s3, 64)
    ds = MapDataset(served.ref.name, served.source)  # opening it records the lineage
    loader = torch.utils.data.DataLoader(ds, batch_size=16, sampler=ShuffleSampler(ds, seed=1), collate_fn=_features)
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    uri = f"s3://{bucket}/runs/mlp"
    with CheckpointStore(uri, settings=settings, run="run1", keep_last=1) as store:
        for step, (x, y) in enumerate(loader, 1):
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            store.save({"model": model.state_dict(), "opt": opt.state_dict()}, step=step,
                       metrics={"loss": loss.item()})  # fmt: skip
            if step == 2:
                store.tag(2, status="tested")
                tested = {k: v.clone() for k, v in model.state_dict().items()}
        store.wait()
        assert [i.step for i in store.list()] == [2, 4], "keep_last=1 spares the tagged checkpoint"
        assert store.latest(tag="status=tested").step == 2  # type: ignore[union-attr]

    name = f"mlp-{uuid.uuid4().hex[:8]}"
    record = register_model(client, name, f"{uri}@2", alias="production")
    assert record["ref"] == f"{name}@1"
    assert str(served.ref) in record["checkpoint"]["datasets"]  # automatic lineage (and whatever else this
    # process opened before: the record is "every dataset version a loader opened in the process")
    commit_key = record["checkpoint"]["uri"].removeprefix(f"s3://{bucket}/")
    tags = s3.get_object_tagging(Bucket=bucket, Key=commit_key)["TagSet"]
    assert {t["Key"]: t["Value"] for t in tags} == {"status": "tested", "model": f"{name}@1"}

    # every checkpoint object goes (a cleanup job, a lifecycle rule): the model keeps its bytes
    listed = s3.list_objects_v2(Bucket=bucket, Prefix="runs/")
    s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": o["Key"]} for o in listed["Contents"]]})
    assert s3.list_objects_v2(Bucket=bucket, Prefix="runs/")["KeyCount"] == 0

    out = pull_model(client, f"{name}@production", tmp_path / "serve", progress=False)
    state = load_pulled(out)
    for k, v in tested.items():
        assert torch.equal(state["model"][k], v), k
    serving = _model()
    serving.load_state_dict(state["model"])
    x = torch.rand(4, 16)
    assert torch.equal(serving(x), _reference(tested)(x))

    # the CLI does the same pull; lineage walks model -> checkpoint -> dataset -> its source
    pulled = _cli(server, "models", "pull", f"{name}@production", str(tmp_path / "cli"))
    assert pulled.returncode == 0, pulled.stderr
    assert torch.equal(load_pulled(tmp_path / "cli")["model"]["0.weight"], tested["0.weight"])
    shown = _cli(server, "lineage", f"{name}@production")
    assert shown.returncode == 0, shown.stderr
    for needle in (f"{name}@1", "step 2", str(served.ref), "s/"):
        assert needle in shown.stdout, (needle, shown.stdout)
    tree = lineage(client, f"{name}@production")
    assert json.dumps(tree).count(str(served.ref)) >= 1


def _reference(state: dict[str, torch.Tensor]) -> torch.nn.Module:
    m = _model()
    m.load_state_dict(state)
    return m


def test_load_pulled_refuses_what_is_not_a_good_checkpoint(tmp_path: Path, server: ServerProcess, bucket: str) -> None:
    with pytest.raises(CheckpointNotFound):
        load_pulled(tmp_path)
    settings = resolve_settings(server.endpoint, access_key=ACCESS_KEY, secret_key=SECRET_KEY)
    with CheckpointStore(f"s3://{bucket}/p", settings=settings, run="r") as store:
        store.save({"w": torch.arange(1000.0)}, step=1)
    client = TierstoreClient(settings)
    name = f"m-{uuid.uuid4().hex[:8]}"
    register_model(client, name, f"s3://{bucket}/p")
    out = pull_model(client, name, tmp_path / "m", progress=False)
    assert torch.equal(load_pulled(out)["w"], torch.arange(1000.0))
    data = next(p for p in out.rglob("*.bin"))
    raw = bytearray(data.read_bytes())
    raw[100] ^= 1
    data.write_bytes(bytes(raw))  # bitrot on the inference server's disk
    with pytest.raises(CheckpointCorrupt, match=data.name):
        load_pulled(out)
    with pytest.raises(FileExistsError):
        pull_model(client, name, out, progress=False)  # it exists: no silent overwrite
    again = pull_model(client, name, out, progress=False, replace=True)  # swapped in, verified
    assert torch.equal(load_pulled(again)["w"], torch.arange(1000.0))


def test_retention_asks_the_registry_too(server: ServerProcess, bucket: str) -> None:
    """A registered checkpoint whose ``model`` tag was removed (by hand, or never set) is still
    not deleted by keep_last: retention asks the registry which commits models came from."""
    settings = resolve_settings(server.endpoint, access_key=ACCESS_KEY, secret_key=SECRET_KEY)
    client = TierstoreClient(settings)
    name = f"kept-{uuid.uuid4().hex[:8]}"
    with CheckpointStore(f"s3://{bucket}/r", settings=settings, run="r1", keep_last=1) as store:
        store.save({"w": torch.zeros(4)}, step=1)
        register_model(client, name, f"s3://{bucket}/r@1")
        assert store.list()[0].tags == {"model": f"{name}@1"}
        store.untag(1, "model")
        for step in (2, 3):
            store.save({"w": torch.full((4,), float(step))}, step=step)
        store.wait()
        assert [i.step for i in store.list()] == [1, 3], "2 went; 1 is registered, 3 is the newest"
        assert torch.equal(store.load(1)["w"], torch.zeros(4))


def test_register_refuses_a_checkpoint_whose_data_changed(server: ServerProcess, s3: Any, bucket: str) -> None:
    """On an unversioned bucket a data file overwritten after the save (same size, other bytes)
    would be pinned as the model: registration compares every file with the commit and refuses."""
    settings = resolve_settings(server.endpoint, access_key=ACCESS_KEY, secret_key=SECRET_KEY)
    client = TierstoreClient(settings)
    with CheckpointStore(f"s3://{bucket}/c", settings=settings, run="r1", file_bytes=1 << 20) as store:
        store.save({"w": torch.arange(600_000, dtype=torch.float32)}, step=1)  # 2.3 MiB: 3 files
    data = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="c/data/")["Contents"])
    victim = data[1]
    body = bytearray(s3.get_object(Bucket=bucket, Key=victim)["Body"].read())
    body[10] ^= 0xFF
    s3.put_object(Bucket=bucket, Key=victim, Body=bytes(body))
    name = f"changed-{uuid.uuid4().hex[:8]}"
    with pytest.raises(ValueError, match=f"{victim}.*changed since it was committed"):
        register_model(client, name, f"s3://{bucket}/c")
    assert client.list_models(name) == []
    bad = _cli(server, "models", "register", name, "--from", f"s3://{bucket}/c")
    assert bad.returncode == 1 and "changed since it was committed" in bad.stderr and not bad.stdout, bad
