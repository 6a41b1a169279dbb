"""What the ML pages share (datasets, checkpoints, models): raw extension calls (a manifest, a
move's progress lines), dataset records and their derivation, and the lineage graph
model -> checkpoint -> dataset versions -> sources (laid out by ``_graph.layered``)."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from tierstore.console._app import Web, _xml_error, console_url
from tierstore.console._dispatch import S3Error
from tierstore.console._graph import Graph, Node, layered
from tierstore.types import DatasetRef
from tierstore.types import dataset_source_text as source_text

__all__ = ["dataset_path", "derivation", "ext_raw", "lineage_graph", "model_path", "set_alias", "source_text"]

LINEAGE_DEPTH = 16  # derived datasets followed back at most this far (as tierstore.checkpoints.lineage)


async def ext_raw(web: Web, method: str, path: str, query: str = "", body: bytes = b"") -> bytes:
    """A ``/_tierstore/`` call through the dispatcher whose answer is not one JSON document."""
    status, data = await web.app.dispatch.extension(
        web.endpoint, web.creds, method, path, web.client_addr, query=query, body=body
    )
    if status >= 300:
        raise _xml_error(status, data)
    return data


def dataset_path(name: str, version: int | str | None = None) -> str:
    return f"/_tierstore/datasets/{quote(name, safe='')}" + (f"/{version}" if version is not None else "")


def model_path(name: str, ref: int | str | None = None) -> str:
    return f"/_tierstore/models/{quote(name, safe='')}" + (f"/{quote(str(ref), safe='')}" if ref is not None else "")


async def set_alias(web: Web, name: str, alias: str, version: int) -> dict[str, Any]:
    """Point ``name@alias`` at ``version`` (create or move it: one catalog statement)."""
    body = json.dumps({"version": version}).encode()
    path = model_path(name) + f"/aliases/{quote(alias, safe='')}"
    answer: dict[str, Any] = await web.extension("PUT", path, body=body)
    return answer


async def dataset_record(web: Web, ref: str) -> dict[str, Any] | S3Error:
    """The record of dataset version ``ref`` (``NAME@N``), or why it cannot be read."""
    try:
        parsed = DatasetRef.parse(ref)
    except ValueError as exc:
        return S3Error("InvalidArgument", str(exc), 400)
    try:
        rec: dict[str, Any] = await web.extension("GET", dataset_path(parsed.name, parsed.version))
        return rec
    except S3Error as exc:
        return exc


async def derivation(web: Web, rec: dict[str, Any], depth: int = LINEAGE_DEPTH) -> list[dict[str, Any]]:
    """The datasets ``rec`` was derived from, nearest first: ``{"ref", "record"?, "error"?,
    "transform"}`` each, ending at a dataset made from the store (or one that is gone)."""
    chain: list[dict[str, Any]] = []
    while depth > 0:
        lineage = rec.get("lineage") or {}
        src = lineage.get("source")
        if not isinstance(src, str):
            break
        found = await dataset_record(web, src)
        step: dict[str, Any] = {"ref": src, "transform": str(lineage.get("transform") or "")}
        if isinstance(found, S3Error):
            chain.append({**step, "error": f"{found.code}: {found.message}"})
            break
        chain.append({**step, "record": found})
        rec = found
        depth -= 1
    return chain


def _dataset_href(ref: str) -> str:
    name, _, version = ref.partition("@")
    return console_url(f"datasets/{name}/{version}") if version.isdigit() else ""


async def _dataset_nodes(web: Web, graph: Graph, parent: Node, ref: str, depth: int) -> None:
    """``ref``'s node under ``parent``, then what it was derived from, down to its source."""
    found = await dataset_record(web, ref)
    if isinstance(found, S3Error):
        node = graph.add(Node(f"dataset:{ref}", "missing", ref, f"{found.code}"))
        graph.link(parent, node)
        return
    node = graph.add(Node(f"dataset:{found['ref']}", "dataset", str(found["ref"]),
                          f"{found.get('rows', 0)} samples", _dataset_href(str(found["ref"]))))  # fmt: skip
    graph.link(parent, node)
    lineage = found.get("lineage") or {}
    src = lineage.get("source")
    if isinstance(src, str) and depth > 0:
        await _dataset_nodes(web, graph, node, src, depth - 1)
        return
    text = source_text(found)
    source = graph.add(Node(f"source:{text}", "source", text, "source"))
    graph.link(node, source)


async def lineage_graph(web: Web, model: dict[str, Any]) -> Graph:
    """Model version -> its checkpoint -> the dataset versions it trained on -> their sources
    (following derived datasets), laid out for the SVG."""
    graph = Graph()
    ref = str(model.get("ref", ""))
    name, _, version = ref.partition("@")
    root = graph.add(Node(f"model:{ref}", "model", ref, ", ".join(model.get("aliases") or []) or "model version",
                          console_url(f"models/{name}/{version}")))  # fmt: skip
    ckpt = model.get("checkpoint") or {}
    uri = str(ckpt.get("uri", ""))
    metrics = ckpt.get("metrics") or {}
    detail = f"step {ckpt.get('step', '?')}" + "".join(f", {k} {_num(v)}" for k, v in list(metrics.items())[:1])
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    href = console_url(f"object/{bucket}", key=key) if bucket and key else ""
    point = graph.add(Node(f"checkpoint:{uri}", "checkpoint", uri.rpartition("/")[2] or uri, detail, href))
    graph.link(root, point)
    for d in ckpt.get("datasets") or []:
        await _dataset_nodes(web, graph, point, str(d), LINEAGE_DEPTH)
    return layered(graph)


def _num(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, (int, float)) else json.dumps(v)
