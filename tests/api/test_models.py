"""The model registry over HTTP (``/_tierstore/models``, api/_models.py): what a request gets
wrong is a 400 InvalidArgument/InvalidRequest, an unknown model, version or alias a 404
NoSuchModel, and none of them changes the registry. The happy paths are in
tests/checkpoints/test_registry.py (Python) and tests/cli/test_model_commands.py (CLI)."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from tests.checkpoints.test_registry import write_checkpoint
from tests.conftest import ServerProcess
from tests.s3http import signed_request
from tierstore.checkpoints import register_model
from tierstore.client import TierstoreClient, TierstoreClientError
from tierstore.datasets import Manifest


@pytest.fixture
def name() -> str:
    return f"api-{uuid.uuid4().hex[:10]}"


def test_bad_requests_and_unknown_models(
    s3: Any, bucket: str, client: TierstoreClient, server: ServerProcess, name: str
) -> None:
    key, _ = write_checkpoint(s3, bucket, "ck", 1, {"a.bin": b"abc"})
    register_model(client, name, f"s3://{bucket}/ck", alias="production")
    data_key = key.replace("commits/", "data/").removesuffix(".json") + "/a.bin"
    commit_row = {"bucket": bucket, "key": key, "member": "COMMIT.json"}
    post = "/_tierstore/models"
    cases: list[tuple[str, str, Any, int, str]] = [
        ("POST", post, {"name": "bad name", "rows": [commit_row]}, 400, "InvalidArgument"),
        ("POST", post, {"name": f"{name}@2", "rows": [commit_row]}, 400, "InvalidRequest"),
        ("POST", post, {"name": name, "rows": []}, 400, "InvalidRequest"),
        ("POST", post, {"name": name, "rows": [{"bucket": bucket, "key": data_key}]}, 400, "InvalidRequest"),
        ("POST", post, {"name": name, "rows": [commit_row, commit_row]}, 400, "InvalidRequest"),
        ("POST", post, {"name": name, "rows": [{**commit_row, "key": "no/such/commit.json"}]}, 400, "InvalidRequest"),
        (
            "POST",
            post,
            {"name": name, "rows": [commit_row, {"bucket": bucket, "key": "nope", "member": "x"}]},
            400,
            "InvalidRequest",
        ),  # a row whose object does not exist
        ("POST", post, {"name": name, "rows": [commit_row], "info": {"nonsense": 1}}, 400, "InvalidRequest"),
        ("POST", post, {"name": name, "rows": [commit_row], "info": {"step": "ten"}}, 400, "InvalidRequest"),
        ("GET", "/_tierstore/models/no-such-model", None, 404, "NoSuchModel"),
        ("GET", f"/_tierstore/models/{name}/9", None, 404, "NoSuchModel"),
        ("GET", f"/_tierstore/models/{name}/staging", None, 404, "NoSuchModel"),
        ("GET", f"/_tierstore/models/{name}/0", None, 400, "InvalidArgument"),
        ("GET", f"/_tierstore/models/{name}/Prod", None, 400, "InvalidArgument"),
        ("GET", f"/_tierstore/models/{name}/9/manifest", None, 404, "NoSuchModel"),
        ("PUT", f"/_tierstore/models/{name}/aliases/123", {"version": 1}, 400, "InvalidArgument"),
        ("PUT", f"/_tierstore/models/{name}/aliases/latest", {"version": 1}, 400, "InvalidArgument"),
        ("PUT", f"/_tierstore/models/{name}/aliases/staging", {"version": 9}, 404, "NoSuchModel"),
        ("PUT", f"/_tierstore/models/{name}/aliases/staging", {"version": "1"}, 400, "InvalidRequest"),
        ("DELETE", f"/_tierstore/models/{name}/aliases/staging", None, 404, "NoSuchModel"),
        ("DELETE", f"/_tierstore/models/{name}/production", None, 400, "InvalidRequest"),  # an alias, not N
        ("DELETE", f"/_tierstore/models/{name}/1", None, 400, "InvalidRequest"),  # aliased
        ("DELETE", f"/_tierstore/models/{name}/2", None, 404, "NoSuchModel"),
        ("PUT", f"/_tierstore/models/{name}/1", None, 405, "MethodNotAllowed"),
        ("DELETE", "/_tierstore/models", None, 405, "MethodNotAllowed"),
        ("GET", f"/_tierstore/models/{name}/1/other", None, 501, "NotImplemented"),
        ("POST", "/_tierstore/batch", {"model": f"{name}@production", "rows": [0]}, 400, "InvalidRequest"),
        ("POST", "/_tierstore/batch", {"model": f"{name}@1", "rows": [5]}, 400, "InvalidRequest"),
        ("POST", "/_tierstore/batch", {"model": f"{name}@7", "rows": [0]}, 404, "NoSuchModel"),
    ]
    for method, path, doc, status, code in cases:
        body = b"" if doc is None else json.dumps(doc).encode()
        resp = signed_request(server, method, path, body=body)
        assert (resp.status, f"<Code>{code}</Code>".encode() in resp.body) == (status, True), (method, path, resp)
    with pytest.raises(TierstoreClientError) as info:
        client.list_models("bad name")
    assert (info.value.status, info.value.code) == (400, "InvalidArgument")
    # Nothing above changed the registry.
    assert [(m["ref"], m["aliases"]) for m in client.list_models(name)] == [(f"{name}@1", ["production"])]
    assert client.model_aliases(name) == {"production": 1}


def test_records_aliases_and_batch_reads(
    s3: Any, bucket: str, client: TierstoreClient, server: ServerProcess, name: str
) -> None:
    key, commit = write_checkpoint(s3, bucket, "ck", 4, {"a.bin": b"abc", "b.bin": b"defg"}, metrics={"acc": 0.9})
    rec = register_model(client, name, f"s3://{bucket}/ck")
    assert rec["checkpoint"]["uri"] == f"s3://{bucket}/{key}" and rec["checkpoint"]["run"] == "run1"
    assert rec["checkpoint"]["version_id"]  # the commit version pinned (and tagged)
    assert rec["source"] == {"rows": 3} and rec["aliases"] == []
    assert name in {m["name"] for m in client.list_models()}
    items = list(client.read_model_rows(rec["ref"], [2, 0, 1]))
    assert [i.data for i in items] == [commit, b"abc", b"defg"]
    assert client.set_model_alias(name, "prod-1_a", 1) == {"name": name, "alias": "prod-1_a", "version": 1,
                                                            "previous": None}  # fmt: skip
    assert client.model_info(f"{name}@prod-1_a")["aliases"] == ["prod-1_a"]
    assert client.model_manifest(f"{name}@prod-1_a") == client.model_manifest(f"{name}@1")
    whole = Manifest.from_parquet(client.model_manifest(f"{name}@1")).table.to_pylist()
    head = signed_request(server, "GET", f"/_tierstore/models/{name}/prod-1_a/manifest", query=[("head", "2")])
    assert json.loads(head.body) == {"ref": f"{name}@1", "rows": 3, "head": whole[:2]}  # as a dataset's head
