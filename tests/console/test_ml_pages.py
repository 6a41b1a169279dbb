"""Pages 3-6 in a real browser against the session's server: a metadata query and its error, a
dataset's versions, derivation, samples and diff, a run's loss chart (the plotted points are the
saved metrics), tagging and registering a checkpoint, a model's lineage graph, moving an alias.
One module fixture writes the data once: checkpoints as the checkpoint writers lay them out
(data files with their CRC64NVME, then commit objects), two dataset versions (the second derived
from the first), and names, keys and lineage text carrying HTML that must stay inert."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass

import boto3
import pytest

from tests.conftest import ACCESS_KEY, SECRET_KEY, ServerProcess, make_client
from tests.console.conftest import sign_in
from tierstore.checkpoints import Commit, CommitFile, checkpoint_name, crc64nvme, register_model
from tierstore.checkpoints._objects import crc_b64
from tierstore.client import TierstoreClient, resolve_settings

XSS_KEY = "data/<img src=x onerror=alert('key')>.txt"
XSS_TRANSFORM = "<script>alert('transform')</script>"
XSS_DATASET = "<img src=x onerror=alert('dataset')>@1"
LOSSES = {1: 2.5, 2: 1.75, 3: 1.2, 4: 0.9}


@dataclass(frozen=True)
class World:
    bucket: str
    prefix: str
    run: str
    dataset: str
    model: str
    client: TierstoreClient
    s3: object


def _commit(s3: object, bucket: str, prefix: str, run: str, step: int, datasets: list[str]) -> None:
    """A checkpoint as CheckpointStore writes one: its data file, then the commit object."""
    data = f"weights at step {step}".encode() * 100
    name = checkpoint_name(step, run)
    key = f"{prefix}/data/{name}/a1/000000.bin"
    put = s3.put_object(Bucket=bucket, Key=key, Body=data, ChecksumAlgorithm="CRC64NVME")  # type: ignore[attr-defined]
    crc = crc_b64(crc64nvme(data))
    assert put["ChecksumCRC64NVME"] == crc
    commit = Commit(step=step, run=run, kind="state_dict", created_ns=time.time_ns(),
                    files=[CommitFile("000000.bin", key, put.get("VersionId"), len(data), crc)],
                    metrics={"loss": LOSSES[step], "acc": step / 10}, datasets=datasets)  # fmt: skip
    s3.put_object(Bucket=bucket, Key=f"{prefix}/commits/{name}.json", Body=commit.to_json(),  # type: ignore[attr-defined]
                  Metadata=commit.user_metadata())  # fmt: skip


@pytest.fixture(scope="module")
def world(server: ServerProcess) -> World:
    s3 = make_client(server.endpoint)
    tag = uuid.uuid4().hex[:10]
    bucket, dataset, model = f"ml-{tag}", f"imgs-{tag}", f"clf-{tag}"
    s3.create_bucket(Bucket=bucket)
    for i in range(3):
        s3.put_object(Bucket=bucket, Key=f"data/{i:03d}.txt", Body=f"sample {i}".encode())
    s3.put_object(Bucket=bucket, Key=XSS_KEY, Body=b"<b>inert</b>")
    client = TierstoreClient(resolve_settings(server.endpoint, access_key=ACCESS_KEY, secret_key=SECRET_KEY))
    first = client.create_dataset(dataset, bucket=bucket, prefix="data/")
    rows = [{"bucket": bucket, "key": f"data/{i:03d}.txt"} for i in (0, 2)]
    client.create_dataset(dataset, rows=rows, lineage={"source": first["ref"], "transform": XSS_TRANSFORM})
    run = "run-a"
    for step in LOSSES:
        _commit(s3, bucket, "runs/demo", run, step, [f"{dataset}@2", XSS_DATASET])
    s3.put_object_tagging(Bucket=bucket, Key=f"runs/demo/commits/{checkpoint_name(3, run)}.json",
                          Tagging={"TagSet": [{"Key": "status", "Value": "tested"}]})  # fmt: skip
    register_model(client, model, f"s3://{bucket}/runs/demo@2", alias="production")
    return World(bucket, "runs/demo", run, dataset, model, client, s3)


def _user(server: ServerProcess, kind: str, statements: list[dict[str, object]]) -> dict[str, str]:
    """A new IAM user with ``statements`` as its policy: its access key."""
    iam = boto3.client(
        "iam", endpoint_url=server.endpoint, aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
        region_name="us-east-1",
    )  # fmt: skip
    user = f"{kind}-{uuid.uuid4().hex[:8]}"
    iam.create_user(UserName=user)
    key: dict[str, str] = iam.create_access_key(UserName=user)["AccessKey"]
    policy = {"Version": "2012-10-17", "Statement": statements}
    iam.put_user_policy(UserName=user, PolicyName="main", PolicyDocument=json.dumps(policy))
    return key


def _inert(page) -> None:  # type: ignore[no-untyped-def]
    assert page.dialogs == []
    assert page.locator("img[src=x]").count() == 0


def test_run_a_query_and_see_a_bad_one_explained(page, server: ServerProcess, world: World) -> None:  # type: ignore[no-untyped-def]
    sign_in(page, server)
    page.click("nav a:text('Query')")
    page.select_option("#query-form select[name=bucket]", world.bucket)
    page.fill("#query-form textarea[name=q]", "key LIKE '%/commits/%' AND meta.loss < 2 ORDER BY meta.loss")
    page.click("#query-form button")
    keys = page.locator("#results tbody tr td:first-child").all_inner_texts()
    want = sorted((s for s in LOSSES if LOSSES[s] < 2), key=lambda s: LOSSES[s])
    assert keys == [f"runs/demo/commits/{checkpoint_name(s, world.run)}.json" for s in want]
    tested = page.locator(f"#results tbody tr:has-text('{checkpoint_name(3, world.run)}')")
    assert "status=tested" in tested.inner_text()
    page.fill("#query-form textarea[name=q]", "meta.loss <")
    page.click("#query-form button")
    error = page.locator("#query-error").inner_text()
    assert error.startswith("InvalidQuery: ") and "column" in error
    assert page.locator("#results").count() == 0


def test_open_a_dataset_its_lineage_samples_and_diff(page, server: ServerProcess, world: World) -> None:  # type: ignore[no-untyped-def]
    sign_in(page, server)
    page.goto(f"{server.endpoint}/console/datasets")
    page.click(f"#datasets a:text-is('{world.dataset}')")
    versions = page.locator("#versions tbody tr")
    assert versions.count() == 2
    assert versions.nth(0).locator("td").nth(1).inner_text() == "2"  # newest first: 2 samples
    assert versions.nth(1).locator("td").nth(1).inner_text() == "4"
    page.click("#diff-form button")
    assert page.locator("#diff-summary").inner_text() == "0 added, 2 removed, 0 changed, 2 unchanged"
    assert XSS_KEY in page.locator("ul.diff[data-kind=removed]").inner_text()
    page.goto(f"{server.endpoint}/console/datasets/{world.dataset}/2")
    chain = page.locator("#derivation").inner_text()
    assert f"{world.dataset}@1" in chain and XSS_TRANSFORM in chain and f"s3://{world.bucket}/data/" in chain
    second = page.locator("#samples tbody tr").nth(1).locator("td").nth(1)
    assert second.inner_text() == f"s3://{world.bucket}/data/002.txt"
    page.goto(f"{server.endpoint}/console/datasets/{world.dataset}/1")
    assert XSS_KEY in page.locator("#samples").inner_text()
    assert page.locator("#no-pins").count() == 1
    page.fill("#pin input[name=job]", "train-1")
    page.click("#pin button")  # every sample is local already: held, nothing to copy
    assert page.locator(".ok").inner_text().startswith(f"Pinned {world.dataset}@1 for train-1")
    assert [p["job"] for p in world.client.jobs() if p["dataset"] == f"{world.dataset}@1"] == ["train-1"]
    assert page.locator("#pins tbody tr td").first.inner_text() == "train-1"
    page.click("#pins button:text('Unpin')")
    assert page.locator(".ok").inner_text() == f"Unpinned {world.dataset}@1 for train-1."
    assert page.locator("#no-pins").count() == 1
    _inert(page)


def test_a_runs_loss_chart_tag_and_register(page, server: ServerProcess, world: World) -> None:  # type: ignore[no-untyped-def]
    sign_in(page, server)
    page.goto(f"{server.endpoint}/console/checkpoints?bucket={world.bucket}")
    page.click(f"#runs a:text-is('{world.run}')")
    chart = page.locator("svg#metric-chart")
    assert chart.get_attribute("data-metric") == "loss"
    points = chart.locator("circle.point")
    plotted = [(int(points.nth(i).get_attribute("data-step")), float(points.nth(i).get_attribute("data-value")))
               for i in range(points.count())]  # fmt: skip
    assert plotted == sorted(LOSSES.items())
    ys = [float(points.nth(i).get_attribute("cy")) for i in range(points.count())]
    assert ys == sorted(ys)  # the loss falls: each point lower on the chart (SVG y grows downwards)
    row = page.locator("#steps tr[data-step='4']")
    assert "keep_last may delete it" in row.inner_text()
    row.locator("input[name=tag]").fill("status=tested")
    row.locator("button:text('Tag')").click()
    assert "Tagged" in page.locator(".ok").inner_text()
    assert "kept: tagged" in page.locator("#steps tr[data-step='4']").inner_text()
    key = f"runs/demo/commits/{checkpoint_name(4, world.run)}.json"
    tags = world.s3.get_object_tagging(Bucket=world.bucket, Key=key)["TagSet"]  # type: ignore[attr-defined]
    assert tags == [{"Key": "status", "Value": "tested"}]
    row = page.locator("#steps tr[data-step='4']")
    row.locator(".register input[name=name]").fill(world.model)
    row.locator(".register button").click()
    assert page.locator(".ok").inner_text() == f"Registered {world.model}@2."
    rec = world.client.model_info(f"{world.model}@2")
    assert rec["checkpoint"]["step"] == 4 and rec["checkpoint"]["uri"] == f"s3://{world.bucket}/{key}"


def test_a_models_lineage_graph(page, server: ServerProcess, world: World) -> None:  # type: ignore[no-untyped-def]
    sign_in(page, server)
    page.goto(f"{server.endpoint}/console/models")
    page.click(f"#models a:text-is('{world.model}')")
    page.click(f"#versions a:text-is('{world.model}@1')")
    assert (
        page.locator("#pull-command").inner_text() == f"tierstore models pull {world.model}@production ./{world.model}"
    )
    graph = page.locator("svg#lineage-graph")
    nodes = {g.get_attribute("data-id"): g.get_attribute("data-kind") for g in graph.locator("g.node").all()}
    ckpt = f"checkpoint:s3://{world.bucket}/runs/demo/commits/{checkpoint_name(2, world.run)}.json"
    assert nodes == {
        f"model:{world.model}@1": "model",
        ckpt: "checkpoint",
        f"dataset:{world.dataset}@2": "dataset",
        f"dataset:{world.dataset}@1": "dataset",
        f"source:s3://{world.bucket}/data/": "source",
        f"dataset:{XSS_DATASET}": "missing",
    }
    edges = {(e.get_attribute("data-from"), e.get_attribute("data-to")) for e in graph.locator("path.edge").all()}
    assert edges == {
        (f"model:{world.model}@1", ckpt),
        (ckpt, f"dataset:{world.dataset}@2"),
        (ckpt, f"dataset:{XSS_DATASET}"),
        (f"dataset:{world.dataset}@2", f"dataset:{world.dataset}@1"),
        (f"dataset:{world.dataset}@1", f"source:s3://{world.bucket}/data/"),
    }
    assert XSS_DATASET in page.locator("#record").inner_text()
    _inert(page)


def test_move_the_production_alias(page, server: ServerProcess, world: World) -> None:  # type: ignore[no-untyped-def]
    client = world.client
    if len(client.list_models(world.model)) < 2:  # this test alone: register a second version
        register_model(client, world.model, f"s3://{world.bucket}/runs/demo@3")
    sign_in(page, server)
    page.goto(f"{server.endpoint}/console/models/{world.model}")
    page.select_option("#move-alias select[name=version]", "2")
    page.click("#move-alias button")
    assert page.locator(".ok").inner_text() == (
        f"{world.model}@production now points at {world.model}@2 (was {world.model}@1)."
    )
    assert client.model_aliases(world.model) == {"production": 2}
    assert page.locator("#versions tr[data-version='2'] .aliases").inner_text().strip() == "production"
    # a forged POST without the session's CSRF token moves nothing
    answer = page.request.post(f"{server.endpoint}/console/models/{world.model}/alias",
                               form={"alias": "production", "version": "1"})  # fmt: skip
    assert answer.status == 403
    assert client.model_aliases(world.model) == {"production": 2}
    assert client.model_info(f"{world.model}@production")["version"] == 2


def test_a_user_who_may_read_models_cannot_move_an_alias(page, server: ServerProcess, world: World) -> None:  # type: ignore[no-untyped-def]
    """The ML pages act through the dispatcher as the signed-in key: reading models is allowed,
    moving an alias and querying a bucket are refused, as with the SDK."""
    allow = ["tierstore:ListModels", "tierstore:GetModel", "tierstore:ListModelAliases", "tierstore:GetDataset"]
    key = _user(server, "reader", [{"Effect": "Allow", "Action": allow, "Resource": "*"}])
    before = world.client.model_aliases(world.model)
    sign_in(page, server, key["AccessKeyId"], key["SecretAccessKey"])
    page.goto(f"{server.endpoint}/console/models/{world.model}")
    assert page.locator("h1").inner_text() == world.model
    page.click("#move-alias button")
    assert page.locator("h1").inner_text() == "AccessDenied"
    assert world.client.model_aliases(world.model) == before
    page.goto(f"{server.endpoint}/console/query?bucket={world.bucket}&q=")
    assert page.locator("#query-error").inner_text().startswith("AccessDenied: ")


def test_a_version_page_for_its_shown_samples_a_diff_for_all(page, server: ServerProcess, world: World) -> None:  # type: ignore[no-untyped-def]
    """A version's page reads the head of its manifest (``manifest?head=20``), authorized for the
    objects those rows name only; its diff reveals every sample of both versions, so a user who
    may not read them all gets AccessDenied in place of the diff, and the page still answers."""
    s3, client = world.s3, world.client
    keys = [f"shown/{i:03d}.txt" for i in range(20)] + ["hidden/x.txt"]
    for k in keys:
        s3.put_object(Bucket=world.bucket, Key=k, Body=k.encode())  # type: ignore[attr-defined]
    name = f"head-{uuid.uuid4().hex[:8]}"
    client.create_dataset(name, rows=[{"bucket": world.bucket, "key": k} for k in keys[:3]])
    ref = client.create_dataset(name, rows=[{"bucket": world.bucket, "key": k} for k in keys])["ref"]
    datasets = ["tierstore:ListDatasets", "tierstore:GetDataset", "tierstore:GetDatasetManifest", "tierstore:ListJobs"]
    key = _user(server, "viewer", [
        {"Effect": "Allow", "Action": datasets, "Resource": "*"},
        {"Effect": "Allow", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{world.bucket}/shown/*"},
    ])  # fmt: skip
    sign_in(page, server)  # the root sees the diff: the 18 samples added (the first 3 are in both)
    page.goto(f"{server.endpoint}/console/datasets/{name}/diff?a=1&b=2")
    assert page.locator("#diff-summary").inner_text() == "18 added, 0 removed, 0 changed, 3 unchanged"
    assert page.locator("ul.diff[data-kind=added] li").count() == 18
    page.context.clear_cookies()
    sign_in(page, server, key["AccessKeyId"], key["SecretAccessKey"])
    page.goto(f"{server.endpoint}/console/datasets/{name}/2")
    assert page.locator("h1").inner_text() == ref
    assert page.locator("#rows").inner_text() == "21"
    shown = page.locator("#samples tbody tr td:nth-child(2)").all_inner_texts()
    assert shown == [f"s3://{world.bucket}/{k}" for k in keys[:20]]
    page.goto(f"{server.endpoint}/console/datasets/{name}")
    page.click("#diff-form button")
    assert page.locator("#diff-error").inner_text().startswith("AccessDenied: ")
    assert page.locator("#diff-summary").count() == 0
    for v in (1, 2):
        client.delete_dataset(f"{name}@{v}")
