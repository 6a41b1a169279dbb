"""``tierstore ls``, ``cp``, ``rm``, ``mb``, ``rb`` and ``uploads ls|abort``: move objects to,
from and within any S3 endpoint, and manage its buckets and multipart uploads.

Semantics follow ``aws s3`` where it has any: ``PRE`` lines and names relative to the
listed "directory", recursive operations treat ``s3://b/p`` as the prefix ``p/``, a
destination ending in ``/`` (or an existing local directory) receives the source's base name.
Expected failures (missing file, key or bucket, refused credentials, unreachable endpoint)
end with one line on stderr and a non-zero exit code, never a traceback.
"""

from __future__ import annotations

import argparse
import io
import json
import mimetypes
import os
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from tierstore.cli._duration import duration_arg
from tierstore.client import DEFAULT_REGION, S3Client, make_s3_client, resolve_settings

__all__ = ["add_client_commands"]

MIB = 1024 * 1024
MULTIPART_THRESHOLD_BYTES = 8 * MIB  # below it one PUT/GET; above it boto3's managed multipart transfer
DOWNLOAD_CHUNK_BYTES = 1 * MIB
GET_ATTEMPTS = 3  # for a single-GET download whose body is cut short
DELETE_BATCH_KEYS = 1000  # the DeleteObjects limit
DEFAULT_JOBS = 8
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class CommandError(Exception):
    """An expected failure, reported as one line: ``tierstore CMD: message``."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class S3Uri:
    bucket: str
    key: str = ""

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    @property
    def name(self) -> str:
        """The last path segment of the key (the part after the last ``/``)."""
        return self.key.rsplit("/", 1)[-1]

    def as_dir(self) -> S3Uri:
        """This location as a "directory": the key with a trailing ``/`` unless empty."""
        if self.key and not self.key.endswith("/"):
            return S3Uri(self.bucket, self.key + "/")
        return self


Location = S3Uri | Path


def parse_location(text: str) -> Location:
    """``s3://bucket[/key]`` -> :class:`S3Uri` (the key taken verbatim); anything else is a local path."""
    if not text.startswith("s3://"):
        return Path(text)
    bucket, _, key = text[len("s3://") :].partition("/")
    if not bucket:
        raise CommandError(f"expected s3://BUCKET[/KEY], got {text!r}", EXIT_USAGE)
    return S3Uri(bucket, key)


def _s3_uri(text: str) -> S3Uri:
    loc = parse_location(text)
    if not isinstance(loc, S3Uri):
        raise CommandError(f"expected s3://BUCKET[/KEY], got {text!r}", EXIT_USAGE)
    return loc


# --- errors ------------------------------------------------------------------------------------

_STATUS_CODES = {"400": "BadRequest", "403": "AccessDenied", "404": "NotFound", "412": "PreconditionFailed"}


def describe(exc: BaseException) -> str:
    """One line for an expected error from botocore, s3transfer or the local filesystem."""
    import urllib3.exceptions
    from boto3.exceptions import Boto3Error, S3UploadFailedError
    from botocore.exceptions import ClientError, NoCredentialsError
    from s3transfer.exceptions import RetriesExceededError

    if isinstance(exc, S3UploadFailedError):  # boto3 wraps the ClientError while handling it
        inner = exc.__cause__ or exc.__context__
        if isinstance(inner, Exception):
            exc = inner
    # s3transfer's and boto3's RetriesExceededError both keep the last underlying failure.
    last = getattr(exc, "last_exception", None)
    if isinstance(exc, RetriesExceededError | Boto3Error) and isinstance(last, Exception):
        exc = last
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code") or "")
        code = _STATUS_CODES.get(code, code)
        message = str(error.get("Message") or "")
        text = f"{code}: {message}" if message else code or str(exc)
    elif isinstance(exc, urllib3.exceptions.HTTPError):  # TierstoreClient's transport
        text = str(exc)
        if text.startswith(("HTTPConnection(", "HTTPSConnection(")):  # "HTTPConnection(host=..): Failed to..."
            text = text.partition("): ")[2] or text
        text = f"cannot reach the server: {text}"
    elif isinstance(exc, NoCredentialsError):
        text = "no credentials: give --access-key/--secret-key or set TIERSTORE_ACCESS_KEY/TIERSTORE_SECRET_KEY"
    elif isinstance(exc, OSError) and exc.strerror:
        text = f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    else:
        text = str(exc) or type(exc).__name__
    return " ".join(text.split())


def _expected_errors() -> tuple[type[BaseException], ...]:
    from boto3.exceptions import Boto3Error
    from botocore.exceptions import BotoCoreError, ClientError
    from s3transfer.exceptions import RetriesExceededError

    return (ClientError, BotoCoreError, Boto3Error, RetriesExceededError, OSError)


def _status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return None
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return int(status) if status is not None else None


def _head_object(client: S3Client, uri: S3Uri) -> int:
    """The object's size; a missing object or bucket becomes a clear :class:`CommandError`."""
    from botocore.exceptions import ClientError

    try:
        head = client.head_object(Bucket=uri.bucket, Key=uri.key)
    except ClientError as exc:
        if _status(exc) != 404:
            raise
        # HEAD carries no error body, so ask which of the two is missing.
        try:
            client.head_bucket(Bucket=uri.bucket)
        except ClientError as bucket_exc:
            if _status(bucket_exc) == 404:
                raise CommandError(f"NoSuchBucket: s3://{uri.bucket} does not exist") from None
            raise
        raise CommandError(f"NoSuchKey: {uri} does not exist") from None
    return int(head["ContentLength"])


def _list(client: S3Client, uri: S3Uri, *, delimiter: str = "") -> Iterator[dict[str, Any]]:
    """ListObjectsV2 pages under ``uri.key`` (the paginator follows continuation tokens)."""
    kwargs: dict[str, str] = {"Bucket": uri.bucket, "Prefix": uri.key}
    if delimiter:
        kwargs["Delimiter"] = delimiter
    yield from client.get_paginator("list_objects_v2").paginate(**kwargs)


# --- progress and output --------------------------------------------------------------------------


class _Progress:
    """A byte-count bar on stderr and per-object lines on stdout; safe to call from any thread."""

    def __init__(self, total_bytes: int, *, show_bar: bool, echo: bool) -> None:
        from tqdm import tqdm

        self._lock = threading.Lock()
        self._echo = echo
        self._bar = tqdm(
            total=total_bytes,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            file=sys.stderr,
            disable=not show_bar,
            dynamic_ncols=True,
            leave=False,
        )

    def add(self, n_bytes: int) -> None:
        with self._lock:
            self._bar.update(n_bytes)

    def note(self, line: str) -> None:
        if self._echo:
            with self._lock:
                self._bar.write(line, file=sys.stdout)

    def close(self) -> None:
        with self._lock:
            self._bar.close()


def _safe_stdout() -> None:
    # A key that the terminal's encoding cannot show must not abort a listing.
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(errors="backslashreplace")


def _local_time(ts: datetime) -> str:
    return ts.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _iso(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat().replace("+00:00", "Z")


# --- ls -----------------------------------------------------------------------------------------------


def _cmd_ls(args: argparse.Namespace, client: S3Client) -> int:
    if args.uri in (None, "s3://", "s3:"):
        for b in client.list_buckets().get("Buckets", []):
            if args.json:
                print(json.dumps({"type": "bucket", "name": b["Name"], "created": _iso(b["CreationDate"])}))
            else:
                print(f"{_local_time(b['CreationDate'])} {b['Name']}")
        return 0
    uri = _s3_uri(args.uri)
    # Names are shown relative to the listed "directory", like ``aws s3 ls``; -r shows full keys.
    base = "" if args.recursive else uri.key[: uri.key.rfind("/") + 1]
    for page in _list(client, uri, delimiter="" if args.recursive else "/"):
        for cp in page.get("CommonPrefixes", []):
            if args.json:
                print(json.dumps({"type": "prefix", "prefix": cp["Prefix"]}))
            else:
                print(f"{'PRE':>30} {cp['Prefix'][len(base) :]}")
        for obj in page.get("Contents", []):
            if args.json:
                record = {
                    "type": "object",
                    "key": obj["Key"],
                    "size": obj["Size"],
                    "last_modified": _iso(obj["LastModified"]),
                    "etag": obj.get("ETag", ""),
                    "storage_class": obj.get("StorageClass", "STANDARD"),
                }
                print(json.dumps(record))
            else:
                print(f"{_local_time(obj['LastModified'])} {obj['Size']:>10} {obj['Key'][len(base) :]}")
    return 0


# --- cp -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Copy:
    src: Location
    dst: Location
    size_bytes: int

    @property
    def verb(self) -> str:
        if isinstance(self.src, Path):
            return "upload"
        return "download" if isinstance(self.dst, Path) else "copy"


def _local_files(root: Path) -> Iterator[tuple[str, Path]]:
    """(relative posix path, path) of every regular file under ``root``, in sorted order."""

    def fail(exc: OSError) -> None:
        raise exc

    for dirpath, dirnames, filenames in os.walk(root, onerror=fail):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath, name)
            if path.is_file():  # skips sockets, fifos, dangling symlinks
                yield path.relative_to(root).as_posix(), path


def _key_to_path(root: Path, rel_key: str) -> Path | None:
    """Where ``rel_key`` lands under ``root``; ``None`` if it cannot be a path inside ``root``."""
    parts = rel_key.split("/")
    if any(p in ("", ".", "..") or "\0" in p or (os.sep != "/" and os.sep in p) for p in parts):
        return None
    return root.joinpath(*parts)


def _plan_copies(client: S3Client, args: argparse.Namespace) -> tuple[list[_Copy], list[str]]:
    """Every (source, destination, size) to transfer, and warnings for keys that were skipped."""
    src, dst = parse_location(args.src), parse_location(args.dst)
    if isinstance(src, Path) and isinstance(dst, Path):
        raise CommandError("one of SRC and DST must be an s3:// URI", EXIT_USAGE)
    skipped: list[str] = []

    if not args.recursive:
        if isinstance(src, Path):
            if src.is_dir():
                raise CommandError(f"{src} is a directory (use -r to copy a tree)")
            size = src.stat().st_size
            name = src.name
        else:
            if not src.key or src.key.endswith("/"):
                raise CommandError(f"{src} names no object (use -r to copy a prefix)", EXIT_USAGE)
            size = _head_object(client, src)
            name = src.name
        if isinstance(dst, S3Uri):
            into_dir = not dst.key or dst.key.endswith("/")
            target: Location = S3Uri(dst.bucket, dst.key + name) if into_dir else dst
        else:
            target = dst / name if dst.is_dir() or args.dst.endswith(("/", os.sep)) else dst
        return [_Copy(src, target, size)], skipped

    copies: list[_Copy] = []
    if isinstance(src, Path):
        if not src.is_dir():
            if not src.exists():
                raise CommandError(f"No such file or directory: {src}")
            raise CommandError(f"{src} is not a directory")
        assert isinstance(dst, S3Uri)
        base = dst.as_dir()
        for rel, path in _local_files(src):
            copies.append(_Copy(path, S3Uri(base.bucket, base.key + rel), path.stat().st_size))
        return copies, skipped

    prefix = src.as_dir()
    for page in _list(client, prefix):
        for obj in page.get("Contents", []):
            key: str = obj["Key"]
            rel = key[len(prefix.key) :]
            if not rel or rel.endswith("/"):
                continue  # "directory" marker objects
            source = S3Uri(src.bucket, key)
            size = int(obj["Size"])
            if isinstance(dst, S3Uri):
                base = dst.as_dir()
                copies.append(_Copy(source, S3Uri(base.bucket, base.key + rel), size))
                continue
            local = _key_to_path(dst, rel)
            if local is None:
                skipped.append(f"skipping {source}: the key is not a safe relative path")
            else:
                copies.append(_Copy(source, local, size))
    return copies, skipped


class _Copier:
    """Runs one :class:`_Copy`; shared by the worker threads (botocore clients are thread-safe)."""

    def __init__(self, client: S3Client, *, jobs: int, progress: _Progress) -> None:
        from boto3.s3.transfer import TransferConfig

        self.client = client
        self.progress = progress
        self.config = TransferConfig(
            multipart_threshold=MULTIPART_THRESHOLD_BYTES,
            multipart_chunksize=MULTIPART_THRESHOLD_BYTES,
            max_concurrency=jobs,
            use_threads=True,
            preferred_transfer_client="classic",
        )
        umask = os.umask(0)  # read it once, before any worker thread creates files
        os.umask(umask)
        self.file_mode = 0o666 & ~umask

    def run(self, copy: _Copy) -> None:
        try:
            if isinstance(copy.src, Path):
                assert isinstance(copy.dst, S3Uri)
                self._upload(copy.src, copy.dst, copy.size_bytes)
            elif isinstance(copy.dst, Path):
                self._download(copy.src, copy.dst, copy.size_bytes)
            else:
                self.client.copy_object(
                    Bucket=copy.dst.bucket,
                    Key=copy.dst.key,
                    CopySource={"Bucket": copy.src.bucket, "Key": copy.src.key},
                )
                self.progress.add(copy.size_bytes)
        except CommandError:
            raise
        except _expected_errors() as exc:
            raise CommandError(f"{copy.verb} failed: {copy.src} to {copy.dst}: {describe(exc)}") from exc
        self.progress.note(f"{copy.verb}: {copy.src} to {copy.dst}")

    def _upload(self, path: Path, uri: S3Uri, size_bytes: int) -> None:
        content_type, _ = mimetypes.guess_type(path.name)
        extra = {"ContentType": content_type} if content_type else {}
        if size_bytes < MULTIPART_THRESHOLD_BYTES:
            with path.open("rb") as f:
                self.client.put_object(Bucket=uri.bucket, Key=uri.key, Body=f, **extra)
            self.progress.add(size_bytes)
        else:
            self.client.upload_file(
                str(path), uri.bucket, uri.key, ExtraArgs=extra, Config=self.config, Callback=self.progress.add
            )

    def _download(self, uri: S3Uri, path: Path, size_bytes: int) -> None:
        # Atomic: bytes go to a hidden temp file next to the destination, renamed into place
        # only when complete, so the final name never holds a partial object.
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tierstore-part")
        try:
            if size_bytes < MULTIPART_THRESHOLD_BYTES:
                with os.fdopen(fd, "wb") as f:
                    self._get_into(uri, f)
            else:
                os.close(fd)
                self.client.download_file(uri.bucket, uri.key, tmp_name, Config=self.config, Callback=self.progress.add)
            os.chmod(tmp_name, self.file_mode)  # mkstemp creates 0600; give the mode a plain create would
            os.replace(tmp_name, path)
        except BaseException:
            with suppress(FileNotFoundError):
                os.unlink(tmp_name)
            raise

    def _get_into(self, uri: S3Uri, f: BinaryIO) -> None:
        """One GET into ``f``; a body cut short is retried from the start (botocore retries
        only until the response headers arrive, s3transfer does this for large files)."""
        from botocore.exceptions import (
            ConnectionClosedError,
            IncompleteReadError,
            ReadTimeoutError,
            ResponseStreamingError,
        )

        for attempt in range(1, GET_ATTEMPTS + 1):
            received = 0
            try:
                body = self.client.get_object(Bucket=uri.bucket, Key=uri.key)["Body"]
                # botocore raises if fewer bytes arrive than Content-Length announced.
                for chunk in body.iter_chunks(DOWNLOAD_CHUNK_BYTES):
                    f.write(chunk)
                    received += len(chunk)
                    self.progress.add(len(chunk))
                return
            except (ResponseStreamingError, IncompleteReadError, ReadTimeoutError, ConnectionClosedError):
                self.progress.add(-received)
                if attempt == GET_ATTEMPTS:
                    raise
                f.seek(0)
                f.truncate()


def _run_all(copier: _Copier, copies: list[_Copy], jobs: int) -> None:
    """Run every copy on ``jobs`` threads; stop at the first failure and raise it."""
    if len(copies) == 1:
        copier.run(copies[0])
        return
    pool = ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="tierstore-cp")
    try:
        pending: set[Future[None]] = {pool.submit(copier.run, c) for c in copies}
        while pending:
            done, pending = wait(pending, return_when=FIRST_EXCEPTION)
            failed = [f for f in done if f.exception() is not None]
            if failed:
                for f in pending:
                    f.cancel()
                exc = failed[0].exception()
                assert exc is not None
                raise exc
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _cmd_cp(args: argparse.Namespace, client: S3Client) -> int:
    copies, skipped = _plan_copies(client, args)
    for warning in skipped:
        print(f"tierstore cp: {warning}", file=sys.stderr)
    total = sum(c.size_bytes for c in copies)
    show_bar = not args.quiet and (args.recursive or total >= MULTIPART_THRESHOLD_BYTES)
    progress = _Progress(total, show_bar=show_bar, echo=not args.quiet)
    try:
        _run_all(_Copier(client, jobs=args.jobs, progress=progress), copies, args.jobs)
    finally:
        progress.close()
    return EXIT_FAILED if skipped else 0


# --- rm -----------------------------------------------------------------------------------------------


def _cmd_rm(args: argparse.Namespace, client: S3Client) -> int:
    uri = _s3_uri(args.uri)
    if not args.recursive:
        if not uri.key:
            raise CommandError(f"{uri} names no object (use -r to delete a prefix)", EXIT_USAGE)
        client.delete_object(Bucket=uri.bucket, Key=uri.key)
        if not args.quiet:
            print(f"delete: {uri}")
        return 0

    prefix = uri.as_dir()
    failures = 0

    def delete(keys: list[str]) -> None:
        nonlocal failures
        resp = client.delete_objects(Bucket=uri.bucket, Delete={"Objects": [{"Key": k} for k in keys], "Quiet": True})
        errors = {e["Key"]: e for e in resp.get("Errors", [])}
        for key in keys:
            if key in errors:
                failures += 1
                err = errors[key]
                print(
                    f"tierstore rm: delete failed: {S3Uri(uri.bucket, key)}: {err.get('Code')}: {err.get('Message')}",
                    file=sys.stderr,
                )
            elif not args.quiet:
                print(f"delete: {S3Uri(uri.bucket, key)}")

    batch: list[str] = []
    # Deleting behind the listing is safe: the continuation token resumes after the last key listed.
    for page in _list(client, prefix):
        for obj in page.get("Contents", []):
            batch.append(obj["Key"])
            if len(batch) == DELETE_BATCH_KEYS:
                delete(batch)
                batch = []
    if batch:
        delete(batch)
    return EXIT_FAILED if failures else 0


# --- mb, rb ------------------------------------------------------------------------------------------


def _bucket_only(text: str) -> str:
    uri = _s3_uri(text)
    if uri.key.strip("/"):
        raise CommandError(f"expected s3://BUCKET, got {text!r}", EXIT_USAGE)
    return uri.bucket


def _cmd_mb(args: argparse.Namespace, client: S3Client) -> int:
    bucket = _bucket_only(args.uri)
    kwargs: dict[str, Any] = {"Bucket": bucket}
    if args.region != DEFAULT_REGION:
        kwargs["CreateBucketConfiguration"] = {"LocationConstraint": args.region}
    client.create_bucket(**kwargs)
    print(f"make_bucket: {bucket}")
    return 0


def _abort_upload(client: S3Client, bucket: str, upload: dict[str, Any]) -> bool:
    """Abort one upload; False if it was already gone (completed or aborted meanwhile)."""
    from botocore.exceptions import ClientError

    try:
        client.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "NoSuchUpload":
            return False
        raise
    return True


def _uploads(client: S3Client, bucket: str, prefix: str = "") -> Iterator[dict[str, Any]]:
    for page in client.get_paginator("list_multipart_uploads").paginate(Bucket=bucket, Prefix=prefix):
        yield from page.get("Uploads", [])


def _empty_bucket(client: S3Client, bucket: str, *, quiet: bool) -> None:
    """Delete every object version and delete marker, then abort every upload. Each round lists
    the first page again (what it deleted is gone), so it needs no version-id marker to stay
    valid while its version is deleted; a round that could not delete something stops it."""
    from tqdm import tqdm

    bar = tqdm(unit=" versions", desc=f"emptying {bucket}", file=sys.stderr, disable=quiet, leave=False)
    try:
        while True:
            page = client.list_object_versions(Bucket=bucket, MaxKeys=DELETE_BATCH_KEYS)
            items = [*page.get("Versions", []), *page.get("DeleteMarkers", [])]
            if not items:
                break
            objects = [{"Key": v["Key"], "VersionId": v["VersionId"]} for v in items]
            for i in range(0, len(objects), DELETE_BATCH_KEYS):
                batch = objects[i : i + DELETE_BATCH_KEYS]
                resp = client.delete_objects(Bucket=bucket, Delete={"Objects": batch, "Quiet": True})
                errors = resp.get("Errors", [])
                if errors:
                    first = errors[0]
                    raise CommandError(
                        f"{len(errors)} object versions could not be deleted, the bucket stays; first: "
                        f"{S3Uri(bucket, first.get('Key', ''))} ({first.get('VersionId')}): "
                        f"{first.get('Code')}: {first.get('Message')}"
                    )
                bar.update(len(batch))
        aborted = 0
        for upload in _uploads(client, bucket):
            aborted += _abort_upload(client, bucket, upload)
    finally:
        bar.close()
    if not quiet:
        print(f"emptied {bucket}: {bar.n:,} object versions and delete markers deleted, {aborted:,} uploads aborted")


def _cmd_rb(args: argparse.Namespace, client: S3Client) -> int:
    bucket = _bucket_only(args.uri)
    if args.force:
        _empty_bucket(client, bucket, quiet=args.quiet)
    client.delete_bucket(Bucket=bucket)
    print(f"remove_bucket: {bucket}")
    return 0


# --- uploads ------------------------------------------------------------------------------------------


def _cmd_uploads_ls(args: argparse.Namespace, client: S3Client) -> int:
    uri = _s3_uri(args.uri)
    for up in _uploads(client, uri.bucket, uri.key):
        if args.json:
            record = {"key": up["Key"], "upload_id": up["UploadId"], "initiated": _iso(up["Initiated"])}
            print(json.dumps(record))
        else:
            print(f"{_local_time(up['Initiated'])} {up['UploadId']} {up['Key']}")
    return 0


def _cmd_uploads_abort(args: argparse.Namespace, client: S3Client) -> int:
    uri = _s3_uri(args.uri)
    cutoff = datetime.now(UTC).timestamp() - args.older_than
    aborted = 0
    for up in _uploads(client, uri.bucket, uri.key):
        if up["Initiated"].timestamp() >= cutoff:
            continue
        if _abort_upload(client, uri.bucket, up):
            aborted += 1
            if not args.quiet:
                print(f"abort: {S3Uri(uri.bucket, up['Key'])} {up['UploadId']}")
    if not args.quiet:
        print(f"aborted {aborted} uploads")
    return 0


# --- wiring -------------------------------------------------------------------------------------------


def _positive_int(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}")
    return n


def _connection_options() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    g = parent.add_argument_group("connection")
    g.add_argument(
        "--endpoint",
        metavar="URL",
        help="S3 endpoint (default: $TIERSTORE_ENDPOINT, else $AWS_ENDPOINT_URL, else http://127.0.0.1:9000)",
    )
    g.add_argument(
        "--access-key", metavar="KEY", help="access key id (default: $TIERSTORE_ACCESS_KEY, else the AWS chain)"
    )
    g.add_argument(
        "--secret-key", metavar="KEY", help="secret key (default: $TIERSTORE_SECRET_KEY; prefer the env var)"
    )
    g.add_argument("--region", default=DEFAULT_REGION, help="signing region (default: %(default)s)")
    return parent


def _entry(command: Callable[[argparse.Namespace, S3Client], int]) -> Callable[[argparse.Namespace], int]:
    """Resolve the connection, run ``command``, and turn expected failures into one line + exit code."""

    def run(args: argparse.Namespace) -> int:
        group = getattr(args, f"{args.command}_command", None)
        name = f"tierstore {args.command}" + (f" {group}" if group else "")
        try:
            settings = resolve_settings(
                args.endpoint, access_key=args.access_key, secret_key=args.secret_key, region=args.region
            )
            jobs = getattr(args, "jobs", DEFAULT_JOBS)
            # Tree workers each run a managed transfer of up to ``jobs`` parts.
            client = make_s3_client(settings, max_pool_connections=max(10, min(jobs * jobs, 256)))
        except ValueError as exc:
            print(f"{name}: {exc}", file=sys.stderr)
            return EXIT_USAGE
        _safe_stdout()
        try:
            return command(args, client)
        except CommandError as exc:
            print(f"{name}: {exc}", file=sys.stderr)
            return exc.exit_code
        except KeyboardInterrupt:
            print(f"{name}: interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED
        except BrokenPipeError:
            # The reader went away (``| head``): quiet exit, and no second error at flush time.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            return EXIT_FAILED
        except _expected_errors() as exc:
            where = getattr(args, "uri", None) or getattr(args, "src", None)
            suffix = f" ({where})" if where and not isinstance(exc, OSError) else ""
            print(f"{name}: {describe(exc)}{suffix}", file=sys.stderr)
            return EXIT_FAILED

    return run


def add_client_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``ls``, ``cp``, ``rm``, ``mb``, ``rb`` and ``uploads`` on the ``tierstore`` parser."""
    common = _connection_options()

    ls = sub.add_parser(
        "ls",
        parents=[common],
        help="list buckets, or objects under s3://BUCKET[/PREFIX]",
        description="Without an argument list buckets; otherwise list like `aws s3 ls`: PRE lines for "
        "common prefixes (delimiter /), then DATE TIME SIZE NAME.",
    )
    ls.add_argument("uri", nargs="?", metavar="s3://BUCKET[/PREFIX]")
    ls.add_argument("-r", "--recursive", action="store_true", help="list every key under the prefix")
    ls.add_argument("--json", action="store_true", help="print one JSON object per line (full keys, UTC times)")
    ls.set_defaults(func=_entry(_cmd_ls))

    cp = sub.add_parser(
        "cp",
        parents=[common],
        help="copy local->s3, s3->local or s3->s3",
        description="Copy one file/object, or with -r a directory tree/key prefix (relative paths kept). "
        "A destination ending in / or an existing directory receives the source's base name. "
        "Downloads are atomic (temp file + rename).",
    )
    cp.add_argument("src", metavar="SRC", help="local path or s3://BUCKET/KEY")
    cp.add_argument("dst", metavar="DST", help="local path or s3://BUCKET/KEY")
    cp.add_argument("-r", "--recursive", action="store_true", help="copy a directory tree or key prefix")
    cp.add_argument(
        "-j",
        "--jobs",
        type=_positive_int,
        default=DEFAULT_JOBS,
        help="parallel files, and parts per large file (default: %(default)s)",
    )
    cp.add_argument("-q", "--quiet", action="store_true", help="no progress bar, no per-file lines")
    cp.set_defaults(func=_entry(_cmd_cp))

    rm = sub.add_parser(
        "rm",
        parents=[common],
        help="delete an object, or with -r every key under a prefix",
        description="Delete s3://BUCKET/KEY, or with -r every key under s3://BUCKET/PREFIX/ "
        "(DeleteObjects, 1000 keys per request).",
    )
    rm.add_argument("uri", metavar="s3://BUCKET/KEY")
    rm.add_argument("-r", "--recursive", action="store_true", help="delete every key under the prefix")
    rm.add_argument("-q", "--quiet", action="store_true", help="do not print deleted keys")
    rm.set_defaults(func=_entry(_cmd_rm))

    mb = sub.add_parser("mb", parents=[common], help="make a bucket", description="Create s3://BUCKET.")
    mb.add_argument("uri", metavar="s3://BUCKET")
    mb.set_defaults(func=_entry(_cmd_mb))

    rb = sub.add_parser(
        "rb",
        parents=[common],
        help="remove a bucket (--force: with everything in it)",
        description="Delete s3://BUCKET, which must be empty; with --force first delete every object version "
        "and delete marker and abort every multipart upload in it. Versions under object lock stay, and so "
        "does the bucket.",
    )
    rb.add_argument("uri", metavar="s3://BUCKET")
    rb.add_argument("--force", action="store_true", help="empty the bucket first (every version, every upload)")
    rb.add_argument("-q", "--quiet", action="store_true", help="no progress bar, no summary")
    rb.set_defaults(func=_entry(_cmd_rb))

    up = sub.add_parser("uploads", help="multipart uploads in progress: ls, abort")
    usub = up.add_subparsers(dest="uploads_command", required=True)
    uls = usub.add_parser(
        "ls",
        parents=[common],
        help="list uploads in progress under s3://BUCKET[/PREFIX]",
        description="List multipart uploads in progress: INITIATED UPLOAD_ID KEY.",
    )
    uls.add_argument("uri", metavar="s3://BUCKET[/PREFIX]")
    uls.add_argument("--json", action="store_true", help="one JSON object per line (UTC times)")
    uls.set_defaults(func=_entry(_cmd_uploads_ls))
    uab = usub.add_parser(
        "abort",
        parents=[common],
        help="abort uploads under s3://BUCKET[/PREFIX] started before some time",
        description="Abort the multipart uploads under s3://BUCKET[/PREFIX] started longer ago than --older-than "
        "(0 aborts them all); their parts' space is freed. The server does this by itself after "
        "--stale-uploads-expiry (default 7d).",
    )
    uab.add_argument("uri", metavar="s3://BUCKET[/PREFIX]")
    uab.add_argument(
        "--older-than", type=duration_arg, required=True, metavar="DURATION", help="e.g. 30m, 12h, 7d; 0: every upload"
    )
    uab.add_argument("-q", "--quiet", action="store_true", help="do not print aborted uploads")
    uab.set_defaults(func=_entry(_cmd_uploads_abort))
