"""Page 5, Checkpoints by run: the checkpoints of a bucket (commit objects, docs/checkpoints.md)
grouped by store prefix and run; a run's steps with their metrics, a metric plotted against the
step (SVG drawn on the server, ``_graph.line_chart``), tags, what retention keeps, and "register
as model". Listing is the metadata query over the commit objects (their metrics and run are user
metadata), so no commit object is read until one is registered."""

from __future__ import annotations

import asyncio
import json
import math
from typing import Any

from tierstore.checkpoints import (
    COMMITS_DIR,
    Commit,
    CommitFormatError,
    CommitLocation,
    file_changed,
    model_info,
    model_rows,
)
from tierstore.console._app import Refused, Reply, Web, console_url, route
from tierstore.console._graph import line_chart
from tierstore.console._ml import set_alias
from tierstore.console._query import quoted, run_query
from tierstore.engine._models import MODEL_TAG

__all__: list[str] = []

MAX_PAGES = 5  # query pages (1,000 commits each) a listing reads
# user metadata of a commit object that is not a metric (Commit.user_metadata and the writers)
_NOT_METRICS = frozenset({"step", "run", "kind", "datasets", "bytes", "created-ns"})
_COMMITS = f"%{COMMITS_DIR}/%.json"


def _store_prefix(key: str) -> str:
    """The checkpoint store's prefix of a commit object's key (``PREFIX/commits/NAME.json``)."""
    head, sep, _ = key.rpartition(f"{COMMITS_DIR}/")
    return head.removesuffix("/") if sep else ""


async def _commits(web: Web, bucket: str, text: str) -> tuple[list[dict[str, Any]], bool]:
    """Every commit object ``text`` matches, up to ``MAX_PAGES`` pages; whether there were more."""
    found: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(MAX_PAGES):
        answer = await run_query(web, bucket, text, cursor)
        found += answer.get("objects", [])
        cursor = answer.get("next_cursor")
        if not cursor:
            return found, False
    return found, True


def _metrics(obj: dict[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    for k, v in (obj.get("meta") or {}).items():
        if k in _NOT_METRICS:
            continue
        try:
            out[k] = float(v)
        except ValueError:
            continue
    return out


def _step(obj: dict[str, Any]) -> int:
    try:
        return int((obj.get("meta") or {}).get("step", "-1"))
    except ValueError:
        return -1


@route("GET", "checkpoints")
async def checkpoints(web: Web) -> Reply:
    bucket, prefix = web.query.get("bucket", ""), web.query.get("prefix", "")
    buckets = [b["Name"] for b in (await web.s3("list_buckets")).get("Buckets", [])] if not bucket else []
    runs: list[dict[str, Any]] = []
    more = False
    if bucket:
        text = f"key LIKE {quoted(_COMMITS)} AND meta.run IS NOT NULL AND meta.step IS NOT NULL"
        if prefix:
            text += f" AND key STARTS WITH {quoted(prefix)}"
        found, more = await _commits(web, bucket, text + " LIMIT 1000")
        groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for obj in found:
            groups.setdefault((_store_prefix(obj["key"]), obj["meta"]["run"]), []).append(obj)
        for (store, run), objs in sorted(groups.items()):
            last = max(objs, key=_step)
            runs.append({"prefix": store, "run": run, "count": len(objs), "last_step": _step(last),
                         "metrics": _metrics(last), "modified": last.get("last_modified", "")})  # fmt: skip
    return web.render(
        "checkpoints.html", page="checkpoints", title="Checkpoints", buckets=buckets, bucket=bucket,
        prefix=prefix, runs=runs, more=more,
    )  # fmt: skip


@route("GET", "checkpoints/{bucket}")
async def run_page(web: Web) -> Reply:
    bucket = web.params["bucket"]
    prefix, run = web.query.get("prefix", ""), web.query.get("run", "")
    if not run:
        return web.redirect(console_url("checkpoints", bucket=bucket, prefix=prefix))
    commits = f"{prefix}/{COMMITS_DIR}/" if prefix else f"{COMMITS_DIR}/"
    text = f"key STARTS WITH {quoted(commits)} AND meta.run = {quoted(run)} ORDER BY key LIMIT 1000"
    found, more = await _commits(web, bucket, text)
    steps = []
    for obj in found:
        tags = obj.get("tags") or {}
        keep = "registered as " + tags[MODEL_TAG] if MODEL_TAG in tags else ("tagged" if tags else "")
        steps.append({"key": obj["key"], "step": _step(obj), "metrics": _metrics(obj), "tags": tags, "keep": keep,
                      "size": obj.get("size", 0), "class": obj.get("storage_class", ""),
                      "datasets": (obj.get("meta") or {}).get("datasets", ""),
                      "modified": obj.get("last_modified", "")})  # fmt: skip
    steps.sort(key=lambda s: s["step"])
    names = sorted({m for s in steps for m in s["metrics"]})
    metric = web.query.get("metric") or ("loss" if "loss" in names else (names[0] if names else ""))
    chart = line_chart([(s["step"], s["metrics"][metric]) for s in steps if metric in s["metrics"]])
    return web.render(
        "checkpoint_run.html", page="checkpoints", title=f"{run} · checkpoints", bucket=bucket, prefix=prefix,
        run=run, steps=steps, names=names, metric=metric, chart=chart, more=more, ok=web.query.get("ok", ""),
        fmt=_fmt,
    )  # fmt: skip


def _fmt(v: float) -> str:
    return f"{v:.6g}" if math.isfinite(v) else str(v)


def _back(bucket: str, form: dict[str, str], ok: str) -> str:
    return console_url(f"checkpoints/{bucket}", prefix=form.get("prefix", ""), run=form.get("run", ""), ok=ok)


@route("POST", "checkpoints/{bucket}/tag")
async def tag(web: Web) -> Reply:
    """Add ``NAME=VALUE`` (or ``NAME``, an empty value) to a commit object's tags, keeping the
    others; a tagged checkpoint is kept by ``keep_last`` retention."""
    bucket, form = web.params["bucket"], await web.form()
    key, text = form.get("key", ""), form.get("tag", "").strip()
    name, _, value = text.partition("=")
    if not name.strip():
        raise Refused(400, "A tag is NAME=VALUE (or NAME).")
    tags = {t["Key"]: t["Value"] for t in (await web.s3("get_object_tagging", Bucket=bucket, Key=key))["TagSet"]}
    tags[name.strip()] = value.strip()
    tag_set = [{"Key": k, "Value": v} for k, v in tags.items()]
    await web.s3("put_object_tagging", Bucket=bucket, Key=key, Tagging={"TagSet": tag_set})
    return web.redirect(_back(bucket, form, f"Tagged {key.rpartition('/')[2]} {text}."))


@route("POST", "checkpoints/{bucket}/untag")
async def untag(web: Web) -> Reply:
    bucket, form = web.params["bucket"], await web.form()
    key, name = form.get("key", ""), form.get("tag", "")
    tags = {t["Key"]: t["Value"] for t in (await web.s3("get_object_tagging", Bucket=bucket, Key=key))["TagSet"]}
    tags.pop(name, None)
    tag_set = [{"Key": k, "Value": v} for k, v in tags.items()]
    await web.s3("put_object_tagging", Bucket=bucket, Key=key, Tagging={"TagSet": tag_set})
    return web.redirect(_back(bucket, form, f"Removed tag {name} from {key.rpartition('/')[2]}."))


@route("POST", "checkpoints/{bucket}/register")
async def register(web: Web) -> Reply:
    """Register a checkpoint as the next version of a model, as ``tierstore models register``
    does: read its commit, check every data file is still what it recorded (size and CRC64NVME
    by HEAD), send the manifest rows; the server pins the bytes and tags the commit."""
    bucket, form = web.params["bucket"], await web.form()
    key, name, alias = form.get("key", ""), form.get("name", "").strip(), form.get("alias", "").strip()
    if not name:
        raise Refused(400, "Name the model to register this checkpoint as.")
    got = await web.s3("get_object", Bucket=bucket, Key=key)
    version_id = got.get("VersionId")
    version_id = None if version_id in (None, "null") else version_id
    try:
        commit = Commit.from_json(got["Body"].read())
    except CommitFormatError as exc:
        raise Refused(400, f"s3://{bucket}/{key} is not a checkpoint commit: {exc}") from None

    async def check(f: Any) -> str | None:
        params = {"VersionId": f.version_id} if f.version_id else {}
        head = await web.s3("head_object", Bucket=bucket, Key=f.key, ChecksumMode="ENABLED", **params)
        crc = head.get("ChecksumCRC64NVME")
        if crc is None:
            return (f"s3://{bucket}/{f.key} has no stored CRC64NVME to check it against the commit: "
                    "register it with `tierstore models register`, which reads it once.")  # fmt: skip
        return file_changed(commit, bucket, f, int(head["ContentLength"]), crc)

    problems = [p for p in await asyncio.gather(*(check(f) for f in commit.files)) if p]
    if problems:
        raise Refused(409, problems[0])
    rows = model_rows(bucket, key, version_id, commit)
    info = model_info(CommitLocation(bucket, key), version_id, commit)
    body = json.dumps({"name": name, "rows": rows, "info": info}).encode()
    record = await web.extension("POST", "/_tierstore/models", body=body)
    if alias:
        await set_alias(web, name, alias, int(record["version"]))
    ok = f"Registered {record['ref']}" + (f" as {name}@{alias}" if alias else "") + "."
    return web.redirect(console_url(f"models/{name}/{record['version']}", ok=ok))
