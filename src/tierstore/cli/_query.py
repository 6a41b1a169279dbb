"""``tierstore query BUCKET "<filter>"``: the metadata query, as a table or JSON lines."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from tierstore.cli._client import _connection_options
from tierstore.client import TierstoreClient, TierstoreClientError, resolve_settings

__all__ = ["add_query_command"]


def add_query_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "query",
        parents=[_connection_options()],
        help="find objects by metadata and tags (docs/query.md)",
        description="Run a metadata query over the current objects of BUCKET, e.g. "
        "\"tag.status = 'tested' AND meta.dataset = 'imagenet@3' ORDER BY meta.loss LIMIT 5\". "
        "LIMIT is the page size; --all follows the cursor through every page.",
    )
    p.add_argument("bucket", metavar="BUCKET")
    p.add_argument("query", metavar="QUERY", help="filter [ORDER BY ...] [LIMIT n]")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--all", action="store_true", help="every page, not just the first")
    p.add_argument("--cursor", help="continue from a cursor printed by an earlier page")
    p.set_defaults(func=_cmd_query)


def _row(obj: dict[str, Any]) -> list[str]:
    attrs = [f"meta.{k}={v}" for k, v in sorted(obj["meta"].items())]
    attrs += [f"tag.{k}={v}" for k, v in sorted(obj["tags"].items())]
    return [obj["last_modified"][:19].replace("T", " "), str(obj["size"]), obj["key"], " ".join(attrs)]


def _print_table(rows: list[list[str]]) -> None:
    header = ["LAST MODIFIED (UTC)", "SIZE", "KEY", "METADATA AND TAGS"]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(3)]
    for r in [header, *rows]:
        print(f"{r[0]:<{widths[0]}}  {r[1]:>{widths[1]}}  {r[2]:<{widths[2]}}  {r[3]}".rstrip())


def _cmd_query(args: argparse.Namespace) -> int:
    try:
        settings = resolve_settings(
            args.endpoint, access_key=args.access_key, secret_key=args.secret_key, region=args.region
        )
        client = TierstoreClient(settings)
    except (ValueError, TierstoreClientError) as exc:
        print(f"tierstore query: {exc}", file=sys.stderr)
        return 2
    cursor = args.cursor
    rows: list[list[str]] = []
    try:
        while True:
            page = client.query(args.bucket, args.query, cursor=cursor)
            for obj in page.objects:
                if args.json:
                    print(json.dumps(obj, ensure_ascii=False))
                else:
                    rows.append(_row(obj))
            cursor = page.next_cursor
            if cursor is None or not args.all:
                break
    except TierstoreClientError as exc:
        print(f"tierstore query: {exc.code}: {exc.message}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        raise  # the reader of stdout went away: main() ends quietly
    except OSError as exc:
        print(f"tierstore query: cannot reach {settings.endpoint_url}: {exc}", file=sys.stderr)
        return 1
    if not args.json:
        if rows:
            _print_table(rows)
        else:
            print("(no matches)")
        if cursor is not None:
            print(f"more: --cursor {cursor}", file=sys.stderr)
    return 0
