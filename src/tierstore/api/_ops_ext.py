"""The operator's read-only extensions the console's health and tiers pages use (docs/console.md):

- ``GET /_tierstore/admin/metrics``  -> the ``/metrics`` exposition text (``Metrics.render``: the
  same families Prometheus scrapes), behind the dispatcher's authorization (``tierstore:Admin``)
  rather than the scrape's optional bearer token
- ``GET /_tierstore/admin/audit?principal=&action=&resource=&decision=&limit=`` -> ``{"lines":
  [audit line, ...], "scanned", "complete"}``: the newest lines of the audit log (``--audit-log``;
  501 without one) that match every filter given (a case-insensitive substring of the access key,
  user, parent user or role session; of the IAM action or S3 API name; of the resource ARN; the
  decision's exact reason), newest first, at most ``limit`` (1-1000, default 200). It reads the
  last ``AUDIT_TAIL_BYTES`` of the current file only (``complete`` false when the file is longer):
  older lines are for ``grep`` and the rotated files
- ``GET /_tierstore/admin/restores`` -> ``{"restores": [{"holder", "ongoing", "created", "expires",
  "blobs", "bytes", "cached_blobs", "cached_bytes"}, ...]}``: the hot copies of RestoreObject
  (holders ``restore:...``), ongoing ones first

Each route needs ``tierstore:Admin`` on ``*``, checked by the dispatcher before these handlers run.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from typing import Any

from tierstore import errors as e
from tierstore.api._request import Context, Request, Response
from tierstore.api._xml import iso8601

__all__ = ["AUDIT_TAIL_BYTES", "ENDPOINTS", "audit", "metrics", "restores"]

ENDPOINTS = {"admin/metrics": "tierstore:AdminMetrics", "admin/audit": "tierstore:AdminAudit",
             "admin/restores": "tierstore:AdminRestores"}  # fmt: skip
AUDIT_TAIL_BYTES = 8 * 1024 * 1024
_MAX_LINES = 1000
_WHO = ("access_key", "user", "parent_user", "role_session")
_RESTORE = "restore:"
_BLOCK = 256 * 1024


async def metrics(req: Request, ctx: Context) -> Response:
    body = await ctx.metrics.render(ctx.service, ctx.admin)
    return Response(200, [("content-type", "text/plain; version=0.0.4; charset=utf-8")], body)


async def restores(req: Request, ctx: Context) -> Response:
    holds = await ctx.service.list_holds(_RESTORE)
    rows = []
    for h in sorted(holds, key=lambda h: (not h.ongoing, -h.created_ns)):
        rows.append({
            "holder": h.holder, "ongoing": h.ongoing, "created": iso8601(h.created_ns),
            "expires": iso8601(h.expires_ns) if h.expires_ns is not None else None,
            "blobs": h.blobs, "bytes": h.bytes, "cached_blobs": h.cached_blobs, "cached_bytes": h.cached_bytes,
        })  # fmt: skip
    return Response(200, [("content-type", "application/json")], json.dumps({"restores": rows}).encode())


async def audit(req: Request, ctx: Context) -> Response:
    if ctx.audit is None:
        raise e.NotImplementedOperation("This server writes no audit log (serve --audit-log FILE).")
    try:
        limit = int(req.query.get("limit") or 200)
    except ValueError:
        limit = 0
    if not 1 <= limit <= _MAX_LINES:
        raise e.InvalidArgument(f"limit must be 1-{_MAX_LINES}.")
    want = {k: req.query.get(k, "").strip().lower() for k in ("principal", "action", "resource")}
    decision = req.query.get("decision", "").strip()
    ctx.audit.flush()  # this worker's buffered lines; the others flush theirs every metrics tick
    lines, scanned, complete = await asyncio.to_thread(_search, ctx.audit.path, want, decision, limit)
    body = json.dumps({"lines": lines, "scanned": scanned, "complete": complete}).encode()
    return Response(200, [("content-type", "application/json")], body)


def _search(path: str, want: dict[str, str], decision: str, limit: int) -> tuple[list[dict[str, Any]], int, bool]:
    """The newest ``limit`` lines matching, read backwards a block at a time (an unfiltered view
    reads one block); a line is parsed only if its bytes contain every filter's text (each line's
    fields are JSON strings: a filter with a character JSON escapes is checked after parsing only)."""
    needles = [v.encode() for v in want.values() if v and v.isascii() and '"' not in v and "\\" not in v]
    if decision:
        needles.append(f'"decision": {json.dumps(decision)}'.lower().encode())
    out: list[dict[str, Any]] = []
    scanned = 0
    reader = _Backwards(path, needles)
    for raw in reader:
        scanned += 1
        low = raw.lower()
        if not all(n in low for n in needles):
            continue
        try:
            line = json.loads(raw)
        except ValueError:
            continue
        if isinstance(line, dict) and _matches(line, want, decision):
            out.append(line)
            if len(out) >= limit:
                return out, scanned, False
    return out, scanned, reader.whole


def _matches(line: dict[str, Any], want: dict[str, str], decision: str) -> bool:
    if decision and line.get("decision") != decision:
        return False
    if want["principal"] and not any(want["principal"] in str(line.get(k) or "").lower() for k in _WHO):
        return False
    if want["action"] and not any(want["action"] in str(line.get(k) or "").lower() for k in ("action", "api")):
        return False
    return not want["resource"] or want["resource"] in str(line.get("resource") or "").lower()


class _Backwards:
    """The whole lines of ``path``'s last ``AUDIT_TAIL_BYTES``, newest first, read in blocks from
    the end, but none of a block that lacks one of the (lowercase) ``needles``; ``whole`` once
    iterated: whether that reached the file's start."""

    def __init__(self, path: str, needles: list[bytes]) -> None:
        self.path = path
        self.needles = needles
        self.whole = False

    def __iter__(self) -> Iterator[bytes]:
        with open(self.path, "rb") as f:
            end = os.fstat(f.fileno()).st_size
            stop = max(0, end - AUDIT_TAIL_BYTES)
            rest = b""  # the start of a line whose beginning is in the block before
            while end > stop:
                start = max(stop, end - _BLOCK)
                f.seek(start)
                data = f.read(end - start) + rest
                end = start
                cut = data.find(b"\n")
                rest = data[:cut] if cut >= 0 else data  # cut at the block's start (or the file's first line)
                if cut < 0:
                    continue
                low = data.lower()
                if not all(n in low for n in self.needles):  # no line here can match: skip the block
                    continue
                for line in reversed(data[cut + 1 :].split(b"\n")):
                    if line.strip():
                        yield line
            self.whole = stop == 0
            if self.whole and rest.strip():
                yield rest
