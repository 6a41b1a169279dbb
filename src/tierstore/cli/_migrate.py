"""``tierstore admin migrate --data DIR|--drives ... --to postgresql://...``: move an embedded
catalog into PostgreSQL (docs/scale-out.md "Migrating"); the copy itself is
``catalog/postgres/_from_sqlite.py``. Runs with no server on the store (it takes the server's
lock), leaves the embedded store as it was, and prints a progress bar and a summary."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tierstore.blob import BlobStore, S3BlobStore
    from tierstore.blob._copy import BlobCopyReport
    from tierstore.catalog.postgres._from_sqlite import SourceCatalog

__all__ = ["add_migrate_command", "migrate_store"]

EXIT_FAILED = 1
EXIT_USAGE = 2


def add_migrate_command(asub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = asub.add_parser(
        "migrate",
        help="copy an embedded catalog into PostgreSQL (resumable, verified)",
        description="Copy the embedded catalog of a stopped server (--data or --drives) into a PostgreSQL "
        "database, table by table with COPY, resumable (rerun after an interruption: it continues), then verify "
        "every table (row count and digest on both sides). The embedded store is left as it was. Afterwards "
        "serve it with `tierstore serve --data DIR --catalog URL` (the master key and credentials stay in DIR). "
        "Exit status: 0 copied and verified, 1 refused, failed or not verified, 2 bad options.",
    )
    where = p.add_mutually_exclusive_group()
    where.add_argument("--data", default="./tierstore-data", help="the data directory of the embedded store")
    where.add_argument("--drives", nargs="+", metavar="DIR", help="the drives of an embedded erasure set")
    p.add_argument("--to", required=True, metavar="URL", help="the target, postgresql://USER[:PASSWORD]@HOST:PORT/DB")
    p.add_argument("--store", default="", metavar="URL",
                   help="also copy the blobs into this object store: s3://BUCKET/PREFIX?endpoint=URL[&region=R], "
                   "as `tierstore serve --store` takes it")  # fmt: skip
    p.add_argument("--store-access-key", default="", metavar="KEY",
                   help="the store's access key (with --store-secret-key; neither: the AWS credential chain)")
    p.add_argument("--store-secret-key", default="", metavar="SECRET", help="the store's secret key")
    p.add_argument("--batch-rows", type=int, default=5000, help="rows per COPY and per committed step (default 5000)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the report as JSON instead of a summary")
    p.set_defaults(func=_cmd_migrate, command="admin migrate")


def _cmd_migrate(args: argparse.Namespace) -> int:
    from tierstore.server import ServeError, ServerConfig, lock_store

    name = "tierstore admin migrate"
    if not args.to.startswith(("postgresql://", "postgres://")):
        print(f"{name}: --to expects postgresql://USER[:PASSWORD]@HOST:PORT/DB", file=sys.stderr)
        return EXIT_USAGE
    object_store = None
    if bool(args.store_access_key) != bool(args.store_secret_key):
        print(f"{name}: --store-access-key and --store-secret-key go together", file=sys.stderr)
        return EXIT_USAGE
    if args.store:
        from tierstore.blob import S3BlobStore, parse_store_url

        try:
            url = parse_store_url(args.store)
        except ValueError as exc:
            print(f"{name}: --store: {exc}", file=sys.stderr)
            return EXIT_USAGE
        keys = (args.store_access_key, args.store_secret_key) if args.store_secret_key else (None, None)
        object_store = (S3BlobStore(url.config(*keys)), url.location)
    elif args.store_access_key:
        print(f"{name}: --store-access-key needs --store", file=sys.stderr)
        return EXIT_USAGE
    if args.batch_rows < 1:
        print(f"{name}: --batch-rows must be at least 1", file=sys.stderr)
        return EXIT_USAGE
    try:
        from tierstore.catalog.postgres._from_sqlite import MigrateError
    except ImportError:
        print(f"{name}: needs the PostgreSQL driver: pip install 'tierstore[postgres]'", file=sys.stderr)
        return EXIT_FAILED
    # The catalog modules log a warning before raising what the summary line says anyway.
    logging.getLogger("tierstore").addHandler(logging.NullHandler())
    config = ServerConfig(data_dir=args.data, drives=list(args.drives or []))
    try:
        claim = lock_store(config)  # no server may run on the store meanwhile, nor start
    except ServeError as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    try:
        return _migrate(args, config, name, object_store)
    except (MigrateError, ServeError) as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        claim.release()


def _source(config: Any) -> tuple[Path, str]:
    """The embedded catalog's file (schema brought current, as a server start would) and the
    store's master key id (created, as a server start would, if the store never had one)."""
    from tierstore.catalog import SqliteCatalog
    from tierstore.catalog.postgres._from_sqlite import MigrateError
    from tierstore.server import open_drive_set, prepare_master_key

    if config.drives:
        drive_set = open_drive_set(config, format_new=False)
        SqliteCatalog.reconcile(drive_set)
        catalog = SqliteCatalog.on_drives(drive_set)
    else:
        path = Path(config.data_dir) / "catalog.db"
        if not path.is_file():
            raise MigrateError(f"no embedded catalog at {path}")
        catalog = SqliteCatalog(path)
    try:
        key = asyncio.run(prepare_master_key(config, catalog))
        if config.drives:
            live = [c for c in catalog.copies_state() if c["state"] == "live"]
            if not live:
                raise MigrateError("no live catalog copy on the drives")
            path = Path(live[0]["path"])
    finally:
        catalog.close()
    return path, key.key_id


def _migrate(
    args: argparse.Namespace, config: Any, name: str, object_store: tuple[S3BlobStore, str] | None = None
) -> int:
    """The catalog (copied, verified), then with ``object_store`` (the store and its
    ``s3://BUCKET/PREFIX``, from ``--store``) the blobs."""
    from tqdm import tqdm

    from tierstore.catalog.postgres._from_sqlite import SourceCatalog, migrate_catalog
    from tierstore.drives import DriveSetError

    try:
        path, store = _source(config)
    except DriveSetError as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    source = SourceCatalog(path)
    bar = tqdm(total=0, unit=" rows", file=sys.stderr, disable=True, dynamic_ncols=True, leave=False)

    def on_phase(what: str, n: int) -> None:  # the target answered: from here on a bar (unless --quiet)
        nonlocal bar
        bar.refresh()  # its last count shown, however fast it went
        bar.close()
        bar = tqdm(total=n, desc=what, unit=" rows", file=sys.stderr, disable=args.quiet, dynamic_ncols=True,
                   leave=False)  # fmt: skip

    def on_rows(n: int) -> None:
        bar.update(n)

    try:
        report = asyncio.run(
            migrate_catalog(source, args.to, store, batch_rows=args.batch_rows, on_phase=on_phase, on_rows=on_rows)
        )
    finally:
        bar.refresh()
        bar.close()
    try:
        blobs = _blobs(args, config, source, object_store) if object_store and not report.mismatched else None
    finally:
        source.close()
    if args.json:
        print(json.dumps({
            "store": report.store, "resumed": report.resumed, "copied": report.copied,
            "copy_s": report.copy_s, "verify_s": report.verify_s,
            "verified": not report.mismatched,
            "blobs": None if blobs is None else {"copied": blobs.copied, "present": blobs.present,
                                                 "bytes_copied": blobs.bytes_copied, "failed": blobs.failed},
            "tables": [{"name": t.name, "source_rows": t.source_rows, "target_rows": t.target_rows,
                        "copied": t.copied, "skipped": t.skipped, "digest": t.digest, "verified": t.verified}
                       for t in report.tables],
        }))  # fmt: skip
    else:
        _summary(report, args, path)
    if report.mismatched:
        print(f"{name}: verification FAILED for {', '.join(report.mismatched)}: the target differs from the source "
              "(see the table above); do not serve it", file=sys.stderr)  # fmt: skip
        return EXIT_FAILED
    if blobs is not None and blobs.failed:
        print(f"{name}: {len(blobs.failed)} blobs not copied, the store not recorded (first: {blobs.failed[0][0]}: "
              f"{blobs.failed[0][1]}); heal the local copies, then rerun", file=sys.stderr)  # fmt: skip
        return EXIT_FAILED
    return 0


def _blobs(
    args: argparse.Namespace, config: Any, source: SourceCatalog, object_store: tuple[S3BlobStore, str]
) -> BlobCopyReport:
    """``migrate_store`` from the store's own blobs (the data dir's files, or the drive set)."""
    from tierstore.blob import ErasureBlobStore, LocalBlobStore
    from tierstore.server import open_drive_set

    blobs = (
        ErasureBlobStore(open_drive_set(config, format_new=False))
        if config.drives
        else LocalBlobStore(Path(config.data_dir))
    )
    store, location = object_store
    report = migrate_store(blobs, source, store, location, args.to, quiet=args.quiet)
    if not args.json:
        done = "" if report.failed else f"; the catalog's blobs are now in {location}"
        print(f"blobs: {report.copied} copied ({report.bytes_copied / 2**20:,.1f} MiB), {report.present} already "
              f"there, {len(report.failed)} failed{done}")  # fmt: skip
    return report


def migrate_store(
    blobs: BlobStore, source: SourceCatalog, store: S3BlobStore, location: str, dsn: str, *, quiet: bool
) -> BlobCopyReport:
    """``--store``: every local blob the catalog references copied by id into ``store``
    (blob/_copy.py), then ``location`` recorded as where the target keeps its blobs, only when
    none failed. The embedded blobs stay (the operator deletes them after checking)."""
    from tqdm import tqdm

    from tierstore.blob._copy import copy_blobs
    from tierstore.catalog.postgres._from_sqlite import record_blob_store

    local = source.local_blobs()
    bar = tqdm(total=sum(size for _id, size in local), unit="B", unit_scale=True, unit_divisor=1024,
               file=sys.stderr, disable=quiet, dynamic_ncols=True, leave=False)  # fmt: skip

    async def run() -> BlobCopyReport:
        report = await copy_blobs(blobs, store, local, on_blob=bar.update)
        if not report.failed:
            await record_blob_store(dsn, location)
        return report

    try:
        return asyncio.run(run())
    finally:
        bar.close()


def _summary(report: Any, args: argparse.Namespace, path: Path) -> None:
    from tierstore.catalog.postgres import redact_dsn

    rate = report.copied / report.copy_s if report.copy_s > 0 else 0.0
    print(f"migrated {path} -> {redact_dsn(args.to)}" + (" (resumed)" if report.resumed else ""))
    print(f"{'table':<22}{'source':>10}{'target':>10}{'skipped':>9}  verified")
    for t in report.tables:
        if t.source_rows or t.target_rows:
            print(
                f"{t.name:<22}{t.source_rows:>10}{t.target_rows:>10}{t.skipped:>9}  {'ok' if t.verified else 'DIFFERS'}"
            )
    verdict = "verified" if not report.mismatched else "NOT verified"
    print(f"{report.copied} rows copied in {report.copy_s:.1f} s ({rate:,.0f} rows/s); every table {verdict} "
          f"(count and digest, {report.verify_s:.1f} s)")  # fmt: skip
    where = "each drive's .tierstore/" if args.drives else f"{args.data}/"
    print(f"master key {report.store} and the root credentials stay in {where}: serve with "
          f"`tierstore serve {'--drives ...' if args.drives else '--data ' + args.data} --catalog URL`; "
          "a gateway elsewhere needs a copy of master.key (mode 0600)")  # fmt: skip
