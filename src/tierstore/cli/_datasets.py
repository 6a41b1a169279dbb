"""``tierstore dataset create|ls|show|diff|rm|derive|archive|pin|unpin``, ``tierstore jobs`` and
``tierstore stage|unstage``.

Datasets are immutable, versioned manifests kept by the server (docs/datasets.md); these
commands talk to it through ``TierstoreClient``. Expected failures end with one line on stderr
and exit code 1 (2 for bad usage), never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Callable, Iterable
from typing import Any

from tierstore.cli._client import _connection_options
from tierstore.cli._duration import duration_arg
from tierstore.client import S3Settings, TierstoreClient, TierstoreClientError, resolve_settings
from tierstore.types import MANIFEST_HEAD_ROWS_MAX, dataset_source_text

__all__ = ["add_dataset_commands", "follow_move", "parse_size"]

_SIZE_RE = re.compile(r"(\d+(?:\.\d+)?)\s*([kmgt]?)(i?)b?", re.IGNORECASE)


class _Usage(Exception):
    pass


def parse_size(text: str) -> int:
    """``65536``, ``64KiB``, ``64MB``, ``1.5GiB``... in bytes (K/M/G/T: powers of 1000, KiB...: of 1024)."""
    m = _SIZE_RE.fullmatch(text.strip())
    if not m:
        raise _Usage(f"bad size {text!r}: a number with an optional unit (KB, MiB, GB...)")
    number, unit, binary = float(m.group(1)), m.group(2).lower(), m.group(3)
    base = 1024 if binary else 1000
    return int(number * base ** "kmgt".find(unit) * base) if unit else int(number)


def _human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def _s3_uri(text: str) -> tuple[str, str]:
    if not text.startswith("s3://") or len(text) <= 5:
        raise _Usage(f"expected s3://BUCKET[/PREFIX], got {text!r}")
    bucket, _, prefix = text[5:].partition("/")
    return bucket, prefix


def add_dataset_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    conn = _connection_options()
    ds = sub.add_parser(
        "dataset",
        help="versioned dataset manifests: create, ls, show, diff, rm, derive, archive, pin, unpin (docs/datasets.md)",
        description="Datasets are immutable, numbered versions (NAME@N) of a list of samples, kept by the "
        "server as Parquet manifests that pin the bytes they name: a training job opens one without any LIST, "
        "and overwriting or deleting the keys later does not change it.",
    )
    dsub = ds.add_subparsers(dest="dataset_command", required=True)

    p = dsub.add_parser("create", parents=[conn], help="make the next version of NAME from a prefix or a query")
    p.add_argument("name", metavar="NAME")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--from", dest="from_uri", metavar="s3://BUCKET/PREFIX", help="every current object under it")
    src.add_argument("--query", metavar="FILTER", help="the objects a metadata query matches (needs --bucket)")
    p.add_argument("--bucket", help="the bucket --query runs over")
    p.add_argument("--label", metavar="SPEC", help="each sample's label: meta:NAME, tag:NAME or dir (parent directory)")
    p.add_argument("--column", action="append", default=[], metavar="SPEC", help="copy meta:NAME or tag:NAME (repeat)")
    p.add_argument("--json", action="store_true", help="print the new version's record as JSON")
    p.set_defaults(func=_entry(_cmd_create))

    p = dsub.add_parser("ls", parents=[conn], help="list datasets and their versions")
    p.add_argument("name", metavar="NAME", nargs="?")
    p.add_argument("--json", action="store_true", help="one JSON record per line")
    p.set_defaults(func=_entry(_cmd_ls))

    p = dsub.add_parser("show", parents=[conn], help="a version's record, its lineage and first samples")
    p.add_argument("ref", metavar="NAME[@N]")
    p.add_argument("--head", type=int, default=5, metavar="K", help="print the first K samples (default 5)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_entry(_cmd_show))

    p = dsub.add_parser("diff", parents=[conn], help="samples added, removed and changed between two versions")
    p.add_argument("a", metavar="NAME@N")
    p.add_argument("b", metavar="NAME@M")
    p.add_argument("--limit", type=int, default=20, metavar="K", help="list at most K samples per kind (default 20)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_entry(_cmd_diff))

    p = dsub.add_parser("rm", parents=[conn], help="delete a version (what only it pinned is released)")
    p.add_argument("ref", metavar="NAME@N")
    p.set_defaults(func=_entry(_cmd_rm))

    p = _move_parser(
        dsub, conn, "archive", "move every sample of a version to a tier (resumable)",
        "Move the bytes of every sample of NAME@N to the tier CLASS (a storage class of `tierstore admin tier ls`), in "
        "parallel on the server: copied, verified, switched in the catalog, then freed locally. The dataset keeps "
        "reading them, through the tier. Run it again after an interruption: what moved is skipped.",
    )  # fmt: skip
    p.add_argument("--to", required=True, metavar="CLASS", help="the tier")
    p.set_defaults(func=_entry(_cmd_archive))

    p = _move_parser(
        dsub, conn, "pin", "make every sample of a version local for a job, until unpin or --ttl (resumable)",
        "Copy onto the server's local drives every sample of NAME@N that is in a tier, in parallel, and keep it there "
        "for JOB until `tierstore dataset unpin` or the TTL: batch reads and loaders then read the local copies. Run "
        "it again to renew the TTL or to resume an interrupted copy.",
    )  # fmt: skip
    p.add_argument("--job", required=True, help="the job holding the pin")
    p.add_argument("--ttl", type=duration_arg, metavar="DURATION", help="drop the pin after this long (24h, 7d...)")
    p.set_defaults(func=_entry(_cmd_pin))

    p = dsub.add_parser("unpin", parents=[conn], help="drop a job's pin (its local copies are freed)")
    p.add_argument("ref", metavar="NAME@N")
    p.add_argument("--job", required=True)
    p.set_defaults(func=_entry(_cmd_unpin))

    p = dsub.add_parser(
        "derive",
        parents=[conn],
        help="run a transform over a dataset into a new one (objects or WebDataset shards)",
        description="Run FUNCTION of MODULE over every sample of SRC@N in a process pool and write the outputs as "
        "objects, or as WebDataset tar shards of about --shards bytes, then create NEW from them with a lineage "
        "record pointing at SRC@N. The function gets {index, key, data, label, member} and returns bytes, a dict "
        "{data, key?, label?, ext?}, a list of those, or None (drop the sample).",
    )
    p.add_argument("src", metavar="SRC@N")
    p.add_argument("--transform", required=True, metavar="MODULE:FUNCTION")
    p.add_argument("--to", required=True, metavar="NEW", help="the new dataset's name")
    p.add_argument("--bucket", help="where outputs go (default: the source's bucket, if it has one)")
    p.add_argument("--prefix", help="key prefix of the outputs (default derived/NEW/)")
    p.add_argument("--shards", metavar="SIZE", help="write WebDataset tar shards of about SIZE (e.g. 64MiB)")
    p.add_argument("--workers", type=int, default=None, help="transform processes (default: one per core)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_entry(_cmd_derive))

    p = sub.add_parser("jobs", parents=[conn], help="the jobs' dataset pins: dataset, blobs, bytes, expiry")
    p.add_argument("--json", action="store_true", help="one JSON record per line")
    p.set_defaults(func=_entry(_cmd_jobs))

    p = sub.add_parser(
        "stage",
        parents=[conn],
        help="pre-fetch a dataset version into a local directory for a job (resumable)",
        description="Copy every sample of NAME@N into DIR (checked, resumable: verified files are kept), with the "
        "manifest. Loaders given cache_dir=DIR then read only from DIR.",
    )
    p.add_argument("ref", metavar="NAME[@N]")
    p.add_argument("--to", required=True, metavar="DIR")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_entry(_cmd_stage))

    p = sub.add_parser("unstage", help="remove a staged dataset directory")
    p.add_argument("dir", metavar="DIR")
    p.set_defaults(func=_cmd_unstage)


def _move_parser(
    dsub: argparse._SubParsersAction[argparse.ArgumentParser],
    conn: argparse.ArgumentParser,
    name: str,
    summary: str,
    description: str,
) -> argparse.ArgumentParser:
    """``dataset archive|pin NAME@N``: the options every move of a version's bytes has."""
    p = dsub.add_parser(name, parents=[conn], help=summary, description=description)
    p.add_argument("ref", metavar="NAME@N")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--json", action="store_true", help="print the final record as JSON")
    return p


def _entry(
    command: Callable[[argparse.Namespace, TierstoreClient], int],
    *,
    expected: Callable[[], tuple[type[BaseException], ...]] = tuple,
) -> Callable[[argparse.Namespace], int]:
    """A subcommand that talks to a server: expected failures (a server error, bad input, a
    file problem, and ``expected()``'s types) end with one line on stderr and exit 1, bad usage
    2, Ctrl-C 130 — never a traceback. Shared by ``tierstore dataset|stage|models|lineage``."""

    def run(args: argparse.Namespace) -> int:
        group = getattr(args, f"{args.command}_command", None)
        name = f"tierstore {args.command}" + (f" {group}" if group else "")
        try:
            settings = resolve_settings(
                args.endpoint, access_key=args.access_key, secret_key=args.secret_key, region=args.region
            )
            args.settings = settings
            return command(args, TierstoreClient(settings))
        except _Usage as exc:
            print(f"{name}: {exc}", file=sys.stderr)
            return 2
        except TierstoreClientError as exc:
            print(f"{name}: {exc.code}: {exc.message}", file=sys.stderr)
            return 1
        except BrokenPipeError:
            raise  # the reader of stdout went away: main() ends quietly
        except (ValueError, KeyError, OSError) as exc:
            print(f"{name}: {exc}", file=sys.stderr)
            return 1
        except expected() as exc:
            print(f"{name}: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print(f"{name}: interrupted", file=sys.stderr)
            return 130

    return run


def _cmd_create(args: argparse.Namespace, client: TierstoreClient) -> int:
    if args.from_uri is not None:
        if args.bucket:
            raise _Usage("--bucket goes with --query; --from names its bucket")
        bucket, prefix = _s3_uri(args.from_uri)
        rec = client.create_dataset(args.name, bucket=bucket, prefix=prefix, label=args.label, columns=args.column)
    else:
        if not args.bucket:
            raise _Usage("--query needs --bucket")
        rec = client.create_dataset(args.name, bucket=args.bucket, query=args.query, label=args.label,
                                    columns=args.column)  # fmt: skip
    if args.json:
        print(json.dumps(rec))
    else:
        print(f"created {rec['ref']}: {rec['rows']} samples, {_human(rec['bytes'])}")
    return 0


def _cmd_ls(args: argparse.Namespace, client: TierstoreClient) -> int:
    records = client.list_datasets(args.name)
    if _listed(records, args.json, "(no datasets)"):
        return 0
    rows = [[r["ref"], str(r["rows"]), _human(r["bytes"]), r["created"][:19].replace("T", " "), dataset_source_text(r)]
            for r in records]  # fmt: skip
    header = ["DATASET", "SAMPLES", "SIZE", "CREATED (UTC)", "SOURCE"]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
    for r in [header, *rows]:
        print(f"{r[0]:<{widths[0]}}  {r[1]:>{widths[1]}}  {r[2]:>{widths[2]}}  {r[3]:<{widths[3]}}  {r[4]}".rstrip())
    return 0


def _listed(records: list[dict[str, Any]], as_json: bool, empty: str) -> bool:
    """Print ``records`` one JSON line each (``as_json``), or ``empty`` if there are none: True
    when that was all (else the caller prints its table)."""
    if as_json:
        for rec in records:
            print(json.dumps(rec))
        return True
    if not records:
        print(empty)
        return True
    return False


def _lineage_chain(client: TierstoreClient, rec: dict[str, Any], depth: int = 8) -> list[str]:
    """The derivation chain of ``rec``: each source in turn, to a dataset made from the store."""
    lines: list[str] = []
    while depth > 0:
        lineage = rec.get("lineage") or {}
        if "source" not in lineage:
            break
        how = f" by {lineage['transform']}" if lineage.get("transform") else ""
        lines.append(f"{rec['ref']} <- {lineage['source']}{how}")
        try:
            rec = client.dataset_info(lineage["source"])
        except TierstoreClientError:
            lines.append(f"{lineage['source']} (deleted)")
            return lines
        depth -= 1
    lines.append(f"{rec['ref']} <- {dataset_source_text(rec)}")
    return lines


def _cmd_show(args: argparse.Namespace, client: TierstoreClient) -> int:
    from tierstore.datasets import Manifest

    rec = client.dataset_info(args.ref)
    if args.json:
        print(json.dumps(rec))
        return 0
    print(f"dataset   {rec['ref']}")
    print(f"created   {rec['created']}")
    print(f"samples   {rec['rows']}")
    print(f"size      {_human(rec['bytes'])} ({rec['bytes']} bytes); manifest {_human(rec['manifest_bytes'])}")
    print(f"source    {dataset_source_text(rec)}")
    if rec.get("label"):
        print(f"label     {rec['label']}")
    if rec.get("columns"):
        print(f"columns   {', '.join(rec['columns'])}")
    lineage = rec.get("lineage")
    if lineage:
        print("lineage   " + json.dumps(lineage, sort_keys=True))
        for line in _lineage_chain(client, rec):
            print(f"          {line}")
    if args.head > 0 and rec["rows"]:
        if args.head <= MANIFEST_HEAD_ROWS_MAX:  # the server reads only the rows' row groups
            rows = client.dataset_head(rec["ref"], args.head)["head"]
        else:
            rows = Manifest.from_parquet(client.dataset_manifest(rec["ref"])).table.slice(0, args.head).to_pylist()
        print(f"first {len(rows)} samples:")
        for i, row in enumerate(rows):
            where = f"s3://{row['bucket']}/{row['key']}"
            if row["member"]:
                where += f" [{row['member']}]"
            label = f"  label={row['label']}" if row["label"] is not None else ""
            print(f"  {i:>8}  {row['size']:>10}  {where}{label}")
    return 0


def _cmd_diff(args: argparse.Namespace, client: TierstoreClient) -> int:
    from tierstore.datasets import Manifest

    a = Manifest.from_parquet(client.dataset_manifest(args.a))
    b = Manifest.from_parquet(client.dataset_manifest(args.b))
    d = a.diff(b)
    added, removed, changed, same = d.added, d.removed, d.changed, d.unchanged

    def name(k: tuple[str, str, str]) -> str:
        return f"s3://{k[0]}/{k[1]}" + (f" [{k[2]}]" if k[2] else "")

    if args.json:
        print(json.dumps({"a": str(a.ref), "b": str(b.ref), "added": [name(k) for k in added],
                          "removed": [name(k) for k in removed], "changed": [name(k) for k in changed],
                          "unchanged": same}))  # fmt: skip
        return 0
    print(f"{a.ref} -> {b.ref}: {len(added)} added, {len(removed)} removed, {len(changed)} changed, {same} unchanged")
    for sign, keys in (("+", added), ("-", removed), ("~", changed)):
        for k in keys[: args.limit]:
            print(f"{sign} {name(k)}")
        if len(keys) > args.limit:
            print(f"{sign} ... {len(keys) - args.limit} more")
    return 0


def _cmd_rm(args: argparse.Namespace, client: TierstoreClient) -> int:
    if "@" not in args.ref:
        raise _Usage("rm deletes one version: NAME@N")
    client.delete_dataset(args.ref)
    print(f"deleted {args.ref}")
    return 0


def follow_move(lines: Iterable[dict[str, Any]], desc: str, *, progress: bool) -> dict[str, Any]:
    """Drive a tqdm bar of bytes (stderr) from a move's progress lines; the final line."""
    from tqdm import tqdm

    last: dict[str, Any] = {}
    with tqdm(total=0, desc=desc, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr,
              disable=not progress) as bar:  # fmt: skip
        for doc in lines:
            last = doc
            bar.total = doc["bytes"]
            bar.update(doc["done_bytes"] - bar.n)
    if not last:
        raise ValueError("the server sent no progress")
    return last


def _cmd_archive(args: argparse.Namespace, client: TierstoreClient) -> int:
    if "@" not in args.ref:
        raise _Usage("archive moves one version: NAME@N")
    summary = "archived {ref} to {tier}: {items} blobs and bodies, {size} ({moved} moved, {skipped} already there)"
    return _run_move(args, client.archive_dataset(args.ref, args.to), "archive", summary)


def _cmd_pin(args: argparse.Namespace, client: TierstoreClient) -> int:
    summary = "pinned {ref} for {tier}: {items} blobs from tiers, {size} ({moved} copied, {skipped} already local)"
    return _run_move(args, client.pin_dataset(args.ref, args.job, ttl_s=args.ttl), "pin", summary)


def _run_move(args: argparse.Namespace, lines: Iterable[dict[str, Any]], verb: str, summary: str) -> int:
    """Follow a move with a bar; print its final record (``--json``) or ``summary`` filled from it."""
    r = follow_move(lines, f"{verb} {args.ref}", progress=not args.no_progress)
    if args.json:
        print(json.dumps(r))
    else:
        print(summary.format(size=_human(r["bytes"]), moved=r["items"] - r["skipped"], **r))
    return 0


def _cmd_unpin(args: argparse.Namespace, client: TierstoreClient) -> int:
    client.unpin_dataset(args.ref, args.job)
    print(f"unpinned {args.ref} for {args.job}")
    return 0


def _cmd_jobs(args: argparse.Namespace, client: TierstoreClient) -> int:
    pins = client.jobs()
    if _listed(pins, args.json, "(no pins)"):
        return 0
    rows = [[p["job"], p["dataset"], str(p["blobs"]), _human(p["bytes"]), p["state"],
             (p.get("expires") or "unpin")[:19].replace("T", " ")] for p in pins]  # fmt: skip
    header = ["JOB", "DATASET", "BLOBS", "SIZE", "STATE", "EXPIRES (UTC)"]
    if any("gateways" in p for p in pins):  # --store: each gateway's cache, copied/total
        header.append("GATEWAYS (CACHED/TOTAL)")
        for row, p in zip(rows, pins, strict=True):
            row.append(" ".join(f"{g['host']}:{g['gateway'][:6]}={g['copied']}/{g['total']}"
                                for g in p.get("gateways", [])) or "-")  # fmt: skip
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows]:
        print("  ".join(f"{v:<{w}}" for v, w in zip(r, widths, strict=True)).rstrip())
    return 0


def _remote(settings: S3Settings) -> Any:
    from tierstore.datasets import RemoteSource

    return RemoteSource(settings)


def _cmd_derive(args: argparse.Namespace, client: TierstoreClient) -> int:
    from tierstore.client import make_s3_client
    from tierstore.datasets import DeriveError, derive

    # ``--transform mod:fn`` imports from the current directory, as ``python -m mod`` would: the
    # ``tierstore`` script's own sys.path starts with its bin/ directory. Pool workers inherit it.
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        report = derive(
            _remote(args.settings),
            client,
            make_s3_client(args.settings),
            args.src,
            args.transform,
            args.to,
            bucket=args.bucket,
            prefix=args.prefix,
            shards_bytes=parse_size(args.shards) if args.shards else None,
            workers=args.workers,
            progress=not args.no_progress,
            mp_context="forkserver",  # the parent has threads (tqdm, connection pools): do not fork it
        )
    except DeriveError as exc:
        raise ValueError(str(exc)) from exc
    print(f"created {report.ref}: {report.samples_out} samples from {report.samples_in}, {_human(report.bytes_out)}"
          + (f" in {report.shards} shards" if report.shards else ""))  # fmt: skip
    return 0


def _cmd_stage(args: argparse.Namespace, client: TierstoreClient) -> int:
    from tierstore.datasets import stage

    r = stage(_remote(args.settings), args.ref, args.to, progress=not args.no_progress)
    print(f"staged {r.ref} in {r.directory}: {r.rows} samples, {_human(r.bytes_total)}"
          f" ({r.rows_fetched} fetched, {r.rows_skipped} already there)")  # fmt: skip
    return 0


def _cmd_unstage(args: argparse.Namespace) -> int:
    from tierstore.datasets import unstage

    try:
        unstage(args.dir)
    except (OSError, ValueError) as exc:
        print(f"tierstore unstage: {exc}", file=sys.stderr)
        return 1
    print(f"removed {args.dir}")
    return 0
