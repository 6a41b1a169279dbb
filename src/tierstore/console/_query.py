"""Page 3, Query: the metadata query language (docs/query.md) over one bucket, its matches as a
table a page at a time; a bad query's error (``InvalidQuery`` names the column) is shown above
the form. Each page is one ``POST /_tierstore/query`` through the dispatcher, as the session's
principal: it needs ``s3:ListBucket`` and shows only what it may ``s3:GetObject``."""

from __future__ import annotations

import contextlib
import json
from typing import Any

from tierstore.console._app import Reply, Web, route
from tierstore.console._dispatch import S3Error

__all__ = ["quoted", "run_query"]

# Shown under the form; each opens the page with the query filled in.
EXAMPLES = (
    "tag.status = 'tested' ORDER BY meta.loss LIMIT 10",
    "key LIKE '%/commits/%.json' AND meta.datasets IS NOT NULL ORDER BY meta.step",
    "meta.datasets LIKE '%imagenet@3%' ORDER BY meta.loss",
    "tag.model IS NOT NULL",
    "key STARTS WITH 'data/' ORDER BY size DESC LIMIT 20",
)


def quoted(text: str) -> str:
    """``text`` as a string literal of the query language (a quote inside doubled)."""
    return "'" + text.replace("'", "''") + "'"


async def run_query(web: Web, bucket: str, text: str, cursor: str | None = None) -> dict[str, Any]:
    """One page of ``text`` over ``bucket``: ``{"objects", "next_cursor"}``; ``S3Error`` on refusal."""
    body = json.dumps({"bucket": bucket, "query": text, "cursor": cursor or None}).encode()
    answer: dict[str, Any] = await web.extension("POST", "/_tierstore/query", body=body)
    return answer


@route("GET", "query")
async def query(web: Web) -> Reply:
    bucket = web.query.get("bucket", "")
    text = web.query.get("q", "")
    cursor = web.query.get("cursor", "")
    buckets: list[str] = []
    with contextlib.suppress(S3Error):  # a principal without ListAllMyBuckets types the bucket's name
        buckets = [b["Name"] for b in (await web.s3("list_buckets")).get("Buckets", [])]
    objects: list[dict[str, Any]] = []
    next_cursor = None
    error = ""
    ran = bool(bucket)
    if ran:
        try:
            answer = await run_query(web, bucket, text, cursor)
            objects, next_cursor = answer.get("objects", []), answer.get("next_cursor")
        except S3Error as exc:
            error = f"{exc.code}: {exc.message}"
    meta_cols = sorted({k for o in objects for k in (o.get("meta") or {})})
    return web.render(
        "query.html", page="query", title="Query", buckets=buckets, bucket=bucket, q=text, ran=ran,
        error=error, objects=objects, meta_cols=meta_cols, next_cursor=next_cursor, cursor=cursor,
        examples=EXAMPLES,
    )  # fmt: skip
