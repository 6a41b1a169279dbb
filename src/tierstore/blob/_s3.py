"""S3BlobStore: a BlobStore over one bucket (and prefix) of any S3-compatible service, a remote tier.

Blob ``ID`` is the object ``prefix/ID``. The client is obstore (Rust ``object_store``), chosen by
measurement (docs/tiers.md "The remote blob store", benchmarks/tier_client.py): 2-6x less client
CPU per request than botocore and streamed both ways.

Integrity, as far as a plain object allows (docs/tiers.md):

- every object carries ``x-amz-meta-tierstore-size``; a whole object that is not that long (or has
  no such field: not ours) is ``CorruptBlob``, on every read, verified or not;
- a body of at most ``part_size_bytes`` is one PUT (``If-None-Match: *``) whose metadata also holds
  ``tierstore-crc32c`` of the bytes; the ETag the service answers must be their MD5;
- a larger body is a multipart upload of ``part_size_bytes`` parts (bounded memory; aborted on
  failure), recording ``tierstore-part-size``; the ETag answered at completion must be the MD5 of
  the parts' MD5s. Its metadata is written when the upload is created, before the bytes are read,
  so it holds ``tierstore-crc32c`` only if the caller gave it in ``meta`` (one that knows it, e.g.
  from the local blob's block CRCs combined); the bytes must then match it (``BadDigest`` if not);
- ``get(verify=True)`` of the *whole* blob checks the CRC32C (cheap), or recomputes a multipart
  ETag when there is none (MD5: ~2.5 s of CPU per GB), and holds back the last chunk until the
  check passed, so a damaged body never reaches a caller complete. Ranged reads cannot be
  checked per block: the remote object has no block table. Encrypted bodies are authenticated
  by their GCM tags (docs/encryption.md) whatever the range.

Failures: a connection that cannot be made, a timeout (connect or read: never a hang), a 5xx or an
access refusal after the bounded retries is ``TierUnavailable`` (503 with Retry-After); a missing or
damaged object is ``CorruptBlob`` (the catalog said it exists).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
import urllib.parse
from collections.abc import AsyncIterable, AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import obstore
from obstore.exceptions import AlreadyExistsError, BaseError, NotFoundError, PreconditionError

from tierstore.blob._protocol import BlobInfo, check_range, crc32c, validate_blob_id
from tierstore.errors import BadDigest, CorruptBlob, InvalidRange, TierUnavailable

if TYPE_CHECKING:
    from obstore import GetResult
    from obstore.store import S3Store

__all__ = ["META_PREFIX", "S3BlobStore", "S3StoreConfig", "StoreRefused", "StoreUrl", "parse_store_url"]

MIB = 1024 * 1024
META_PREFIX = "tierstore-"
"""User metadata names this store writes and reads (as ``x-amz-meta-tierstore-*`` on the wire)."""
_SIZE, _CRC, _PART = "tierstore-size", "tierstore-crc32c", "tierstore-part-size"
_RESERVED = frozenset({_SIZE, _PART})
_CRC_RE = re.compile(r"[0-9a-f]{8}")
_META_NAME_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,127}")
_RANGE_NOT_SATISFIABLE_RE = re.compile(r"status code: 416\b")  # how obstore reports S3's InvalidRange
_MULTIPART_ETAG_RE = re.compile(r"[0-9a-f]{32}-([1-9][0-9]{0,4})")
_META_BYTES_MAX = 2048  # S3 allows 2 KiB of user metadata (names + values)
_MIN_PART_BYTES = 5 * MIB  # S3's minimum part size (all parts but the last)
_READ_CHUNK_BYTES = 1 * MIB
_NOT_FOUND = (NotFoundError, FileNotFoundError)  # obstore raises the builtin for a 404
_TRANSPORT = (BaseError, OSError)  # obstore's errors, and builtins it raises (timeouts, refusals)
_OFFLOAD_HASH_BYTES = 256 * 1024  # MD5 of chunks this big runs in a thread (hashlib drops the GIL)


@dataclass(frozen=True, slots=True)
class S3StoreConfig:
    """Where one remote tier lives and how to talk to it.

    ``access_key``/``secret_key`` both or neither: without them the standard AWS credential chain of
    this process (environment, shared config files, SSO, instance/container roles) is used, through
    boto3. ``prefix`` is a folder: blob ``ID`` is the object ``prefix/ID`` (``ID`` with no prefix).
    """

    endpoint: str
    bucket: str
    prefix: str = ""
    access_key: str | None = None
    secret_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)
    region: str = "us-east-1"
    path_style: bool = True
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 30.0
    max_retries: int = 2
    retry_timeout_s: float = 10.0
    part_size_bytes: int = 8 * MIB
    part_concurrency: int = 4
    retry_after_s: int = 5

    def __post_init__(self) -> None:
        if not self.endpoint.startswith(("http://", "https://")):
            raise ValueError(f"endpoint must be an http(s) URL, not {self.endpoint!r}")
        if not self.bucket:
            raise ValueError("bucket is required")
        if (self.access_key is None) != (self.secret_key is None):
            raise ValueError("give both access_key and secret_key, or neither (the AWS credential chain)")
        if any(part in ("", ".", "..") for part in self.prefix.strip("/").split("/")) and self.prefix.strip("/"):
            raise ValueError(f"invalid prefix {self.prefix!r}")
        if self.part_size_bytes < _MIN_PART_BYTES:
            raise ValueError(f"part_size_bytes must be at least {_MIN_PART_BYTES} (S3's minimum part)")
        if self.connect_timeout_s <= 0 or self.read_timeout_s <= 0:
            raise ValueError("timeouts must be positive")
        if self.part_concurrency < 1 or self.max_retries < 0:
            raise ValueError("part_concurrency must be >= 1 and max_retries >= 0")


class StoreRefused(Exception):
    """The store answered and refused us for a reason retrying will not fix (no such bucket, an
    unknown access key, a bad signature, access denied): the operator must change the settings."""


_REFUSALS = ("NoSuchBucket", "InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "InvalidBucketName")
_STORE_URL_PARAMS = frozenset({"endpoint", "region"})
_NO_CREDENTIALS = "no credentials for the remote tier (no keys given, none in the AWS credential chain)"


@dataclass(frozen=True, slots=True)
class StoreUrl:
    """``s3://BUCKET/PREFIX?endpoint=URL&region=R`` (``--store``, docs/scale-out.md). It holds no
    secret (credentials are refused in it), so it may be logged and recorded as it is."""

    bucket: str
    prefix: str
    endpoint: str
    region: str

    @property
    def location(self) -> str:
        """``s3://BUCKET/PREFIX``: which blobs, whatever endpoint a gateway reaches them through."""
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    def config(self, access_key: str | None = None, secret_key: str | None = None) -> S3StoreConfig:
        """The store's client settings; no keys: the standard AWS credential chain."""
        return S3StoreConfig(
            endpoint=self.endpoint,
            bucket=self.bucket,
            prefix=self.prefix,
            access_key=access_key,
            secret_key=secret_key,
            region=self.region,
        )


def parse_store_url(url: str) -> StoreUrl:
    """``s3://BUCKET[/PREFIX][?endpoint=URL][&region=R]``; ``ValueError`` naming what is wrong.
    Without ``endpoint`` the store is AWS S3 in ``region`` (default us-east-1)."""
    if "@" in url:  # userinfo, in the URL or its endpoint: not echoed, it may be a secret
        raise ValueError("no credentials in the store URL: give --store-access-key and --store-secret-key")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc:
        raise ValueError(f"expected s3://BUCKET/PREFIX?endpoint=URL, got {url!r}")
    if parts.fragment:
        raise ValueError(f"unexpected '#' in the store URL {url!r}")
    try:
        query = urllib.parse.parse_qs(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError:
        raise ValueError(f"the store URL's query is not NAME=VALUE pairs: {parts.query!r}") from None
    unknown = sorted(set(query) - _STORE_URL_PARAMS)
    if unknown:
        raise ValueError(f"unknown store URL parameter {unknown[0]!r} (known: endpoint, region)")
    if any(len(v) != 1 for v in query.values()):
        raise ValueError("each store URL parameter may be given once")
    region = query.get("region", ["us-east-1"])[0] or "us-east-1"
    endpoint = query.get("endpoint", [f"https://s3.{region}.amazonaws.com"])[0].rstrip("/")
    prefix = parts.path.strip("/")
    S3StoreConfig(endpoint=endpoint, bucket=parts.netloc, prefix=prefix, region=region)  # its checks
    return StoreUrl(parts.netloc, prefix, endpoint, region)


class S3BlobStore:
    """BlobStore over ``config.bucket``/``config.prefix`` of an S3-compatible service.

    ``endpoint_guard(endpoint)`` (the tier registry's SSRF check) runs before the first connection
    and again after any transport failure, before the store reconnects; whatever it raises
    propagates. Nothing connects (or looks up credentials) until the first operation.
    """

    def __init__(self, config: S3StoreConfig, *, endpoint_guard: Callable[[str], None] | None = None) -> None:
        self.config = config
        self._guard = endpoint_guard
        self._store: S3Store | None = None
        self._lock = asyncio.Lock()
        self._prefix = config.prefix.strip("/")
        self.unavailable = 0  # operations that failed as TierUnavailable (metrics)

    def __repr__(self) -> str:
        c = self.config
        return f"S3BlobStore({c.endpoint!r}, bucket={c.bucket!r}, prefix={self._prefix!r})"

    # --- the protocol -------------------------------------------------------------------------
    async def put(
        self, blob_id: str, chunks: AsyncIterable[bytes], *, meta: Mapping[str, str] | None = None
    ) -> BlobInfo:
        """Stream ``chunks`` into the object ``prefix/blob_id``; ``meta`` becomes its user metadata.

        ``meta`` names are ``tierstore-*`` (lowercase letters, digits, ``-``), values printable
        ASCII, 2 KiB in all; the store adds ``tierstore-size``/``-part-size``, which callers cannot
        set. ``tierstore-crc32c`` (8 hex digits), if given, must be the CRC32C of the body
        (``BadDigest`` and nothing stored otherwise); it is recorded for every single PUT anyway,
        and is what lets a multipart object be verified without MD5.
        """
        validate_blob_id(blob_id)
        user_meta = _check_meta(meta)
        store = await self._connected()
        part_bytes = self.config.part_size_bytes
        iterator = aiter(chunks)
        first = bytearray()
        exhausted = True
        async for chunk in iterator:
            first += chunk
            if len(first) > part_bytes:
                exhausted = False
                break
        if exhausted:
            return await self._put_single(store, blob_id, bytes(first), user_meta)
        return await self._put_multipart(store, blob_id, first, iterator, user_meta)

    async def get(
        self, blob_id: str, offset: int = 0, length: int | None = None, *, verify: bool = True
    ) -> AsyncIterator[bytes]:
        return (await self.get_sized(blob_id, offset, length, verify=verify))[1]

    async def read(self, blob_id: str, offset: int = 0, length: int | None = None, *, verify: bool = True) -> bytes:
        """One response body in one buffer: what small objects and ranged sample reads want
        (no per-chunk iteration: half the client CPU of ``get`` for a 64 KiB range)."""
        return (await self.read_sized(blob_id, offset, length, verify=verify))[1]

    async def get_sized(
        self, blob_id: str, offset: int = 0, length: int | None = None, *, verify: bool = True
    ) -> tuple[int, AsyncIterator[bytes]]:
        """``get``, and the whole blob's size from the answer's headers (no HEAD): a caller that
        does not know it can tell whether the read covers the whole blob (``CachedBlobStore``'s
        fill: a whole read with ``verify`` is checked against the blob's CRC32C or ETag)."""
        opened, size_bytes = await self._open(blob_id, offset, length, verify)
        if opened is None:
            return size_bytes, _empty()
        result, expected_bytes, checker = opened
        chunks = self._iter(blob_id, result.stream(min_chunk_size=_READ_CHUNK_BYTES), expected_bytes, checker)
        return size_bytes, chunks

    async def read_sized(
        self, blob_id: str, offset: int = 0, length: int | None = None, *, verify: bool = True
    ) -> tuple[int, bytes]:
        """``read``, and the whole blob's size (as ``get_sized``)."""
        opened, size_bytes = await self._open(blob_id, offset, length, verify)
        if opened is None:
            return size_bytes, b""
        result, expected_bytes, checker = opened
        try:
            data = (await result.bytes_async()).to_bytes()
        except _TRANSPORT as exc:
            raise self._unavailable(exc) from None
        if len(data) != expected_bytes:
            raise CorruptBlob(f"blob {blob_id}: {len(data)} of {expected_bytes} bytes arrived", resource=blob_id)
        if checker is not None:
            await checker.update(data)
            checker.finish()
        return size_bytes, data

    async def delete(self, blob_id: str) -> None:
        validate_blob_id(blob_id)
        store = await self._connected()
        try:
            await obstore.delete_async(store, blob_id)
        except _NOT_FOUND:
            pass
        except _TRANSPORT as exc:
            raise self._unavailable(exc) from None

    async def stat(self, blob_id: str) -> BlobInfo | None:
        validate_blob_id(blob_id)
        store = await self._connected()
        try:
            meta = await obstore.head_async(store, blob_id)
        except _NOT_FOUND:
            return None
        except _TRANSPORT as exc:
            raise self._unavailable(exc) from None
        return BlobInfo(blob_id, meta["size"])

    async def head_meta(self, blob_id: str) -> Mapping[str, str] | None:
        validate_blob_id(blob_id)
        store = await self._connected()
        try:
            result = await obstore.get_async(store, blob_id, options={"head": True})
        except _NOT_FOUND:
            return None
        except _TRANSPORT as exc:
            raise self._unavailable(exc) from None
        attributes: Mapping[str, Any] = result.attributes
        return {k: str(v) for k, v in attributes.items() if k.startswith(META_PREFIX)}

    async def scan(self) -> AsyncIterator[BlobInfo]:
        """ListObjectsV2 of the prefix; keys that are not blob ids (foreign objects) are skipped."""
        store = await self._connected()
        try:
            async for batch in obstore.list(store, chunk_size=1000):
                for meta in batch:
                    blob_id = meta["path"]
                    if "/" not in blob_id and _is_blob_id(blob_id):
                        yield BlobInfo(blob_id, meta["size"])
        except _TRANSPORT as exc:
            raise self._unavailable(exc) from None

    async def verify(self, blob_id: str) -> bool:
        """Whole verified read: False if missing or damaged; ``TierUnavailable`` if it cannot tell."""
        try:
            async for _ in await self.get(blob_id):
                pass
        except CorruptBlob:
            return False
        return True

    async def check(self) -> None:
        """One ListObjectsV2 of at most one key under the prefix: the store answers and lets us in.
        ``TierUnavailable`` while it cannot be reached (retry); ``StoreRefused`` when it answers no
        (no such bucket, bad keys, access denied, no credentials at all)."""
        try:
            store = await self._connected()
        except TierUnavailable as exc:
            if exc.message == _NO_CREDENTIALS:
                raise StoreRefused(_NO_CREDENTIALS) from None
            raise
        try:
            async for _ in obstore.list(store, chunk_size=1):
                break
        except _TRANSPORT as exc:
            refusal = next((code for code in _REFUSALS if f"<Code>{code}</Code>" in str(exc)), None)
            if refusal is not None:
                self._store = None
                raise StoreRefused(
                    f"{self.config.endpoint} bucket {self.config.bucket} refused the store's check: {refusal}"
                ) from None
            raise self._unavailable(exc) from None

    # --- put ----------------------------------------------------------------------------------
    async def _put_single(self, store: S3Store, blob_id: str, body: bytes, meta: dict[str, str]) -> BlobInfo:
        crc = f"{crc32c(body):08x}"
        if meta.get(_CRC, crc) != crc:
            raise BadDigest(f"the body of blob {blob_id} does not match the CRC32C it was given")
        attributes = {**meta, _SIZE: str(len(body)), _CRC: crc}
        try:
            result = await obstore.put_async(
                store, blob_id, body, attributes=attributes, mode="create", use_multipart=False
            )
        except (AlreadyExistsError, PreconditionError):
            raise ValueError(f"blob {blob_id} already exists") from None
        except _TRANSPORT as exc:
            raise self._unavailable(exc) from None
        expected = hashlib.md5(body, usedforsecurity=False).hexdigest()
        verified = await self._check_etag(store, blob_id, result.get("e_tag"), expected)
        return BlobInfo(blob_id, len(body), verified)

    async def _put_multipart(
        self, store: S3Store, blob_id: str, first: bytearray, rest: AsyncIterator[bytes], meta: dict[str, str]
    ) -> BlobInfo:
        # A multipart upload cannot be conditional everywhere: look first (ids are random; the
        # check is for a caller's mistake, not a race).
        if await self.stat(blob_id) is not None:
            raise ValueError(f"blob {blob_id} already exists")
        part_bytes = self.config.part_size_bytes
        part_md5s: list[bytes] = []
        source_error: list[BaseException] = []
        total = crc = 0

        async def parts() -> AsyncIterator[bytes]:
            """Exactly ``part_bytes`` per item (object_store uploads each as one part), MD5 on the way."""
            nonlocal total, crc
            buf = first
            try:
                while True:
                    while len(buf) >= part_bytes:
                        part = bytes(memoryview(buf)[:part_bytes])
                        del buf[:part_bytes]
                        part_md5s.append(await _md5(part))
                        total, crc = total + len(part), crc32c(part, crc)
                        yield part
                    try:
                        chunk = await anext(rest)
                    except StopAsyncIteration:
                        break
                    except BaseException as exc:  # the source's failure, not the tier's
                        source_error.append(exc)
                        raise
                    buf += chunk
                if buf or not part_md5s:
                    part = bytes(buf)
                    part_md5s.append(await _md5(part))
                    total, crc = total + len(part), crc32c(part, crc)
                    yield part
            finally:
                buf = bytearray()

        # The size is known only at the end: reads bound it by the ETag's part count and this.
        attributes = {**meta, _PART: str(part_bytes)}
        try:
            result = await obstore.put_async(
                store, blob_id, parts(), attributes=attributes, chunk_size=part_bytes,
                max_concurrency=self.config.part_concurrency,
            )  # fmt: skip
        except _TRANSPORT as exc:
            if source_error:
                raise source_error[0] from None
            raise self._unavailable(exc) from None
        composite = hashlib.md5(b"".join(part_md5s), usedforsecurity=False).hexdigest()
        verified = await self._check_etag(store, blob_id, result.get("e_tag"), f"{composite}-{len(part_md5s)}")
        if meta.get(_CRC, f"{crc:08x}") != f"{crc:08x}":
            with contextlib.suppress(*_TRANSPORT):
                await obstore.delete_async(store, blob_id)
            raise BadDigest(f"the body of blob {blob_id} does not match the CRC32C it was given")
        return BlobInfo(blob_id, total, verified)

    async def _check_etag(self, store: S3Store, blob_id: str, etag: str | None, expected: str) -> bool:
        """The service must have stored what we sent: its ETag is the MD5 (of the part MD5s).
        True when it said so (``BlobInfo.verified``); False when it sent no ETag (unproven)."""
        if etag is not None and etag.strip('"') != expected:
            with contextlib.suppress(*_TRANSPORT):
                await obstore.delete_async(store, blob_id)
            raise CorruptBlob(f"the remote tier stored blob {blob_id} with ETag {etag}, expected {expected}")
        return etag is not None

    # --- get ----------------------------------------------------------------------------------
    async def _open(
        self, blob_id: str, offset: int, length: int | None, verify: bool
    ) -> tuple[tuple[GetResult, int, _Checker | None] | None, int]:
        """Send the GET and check what its headers say (size, range): (the answer, the bytes it
        must carry, the whole-body check if any) or None for an empty read; and the blob's size.

        Raises (before any byte is read) ValueError for a bad id, ``InvalidRange`` past the end,
        ``CorruptBlob`` if the blob is missing or not the length it was stored with."""
        validate_blob_id(blob_id)
        if offset < 0 or (length is not None and length < 0):
            raise InvalidRange(f"negative range: offset={offset} length={length}")
        if length == 0:
            size = await self._checked_size(blob_id)
            check_range(size, offset, 0)
            return None, size
        store = await self._connected()
        options: dict[str, Any] = {}
        if length is not None:
            options["range"] = (offset, offset + length)
        elif offset:
            options["range"] = {"offset": offset}
        try:
            result = await obstore.get_async(store, blob_id, options=options or None)  # type: ignore[arg-type]
        except _NOT_FOUND:
            raise CorruptBlob(f"blob {blob_id} is missing from the remote tier", resource=blob_id) from None
        except _TRANSPORT as exc:
            if _RANGE_NOT_SATISFIABLE_RE.search(str(exc)) is None:
                raise self._unavailable(exc) from None
            # Past the end (InvalidRange), exactly at it (a valid empty read), or the object is
            # shorter than it should be (CorruptBlob): the HEAD tells which.
            size = await self._checked_size(blob_id)
            if check_range(size, offset, length) != offset:
                raise self._unavailable(exc) from None  # not a 416 after all
            return None, size
        attributes: Mapping[str, Any] = result.attributes
        size = result.meta["size"]
        etag = result.meta.get("e_tag")
        _check_size(blob_id, attributes, size, etag)
        end = check_range(size, offset, length)
        whole = offset == 0 and end == size
        return (result, end - offset, _Checker.of(blob_id, attributes, etag) if verify and whole else None), size

    async def _iter(
        self, blob_id: str, stream: AsyncIterator[Any], expected_bytes: int, checker: _Checker | None
    ) -> AsyncIterator[bytes]:
        got = 0
        held: bytes | None = None  # the last chunk waits for the whole-body check
        try:
            async for raw in stream:
                chunk = bytes(raw)
                if not chunk:
                    continue
                got += len(chunk)
                if got > expected_bytes:
                    raise CorruptBlob(f"blob {blob_id} is longer than its recorded size", resource=blob_id)
                if checker is not None:
                    await checker.update(chunk)
                if held is not None:
                    yield held
                held = chunk
        except _TRANSPORT as exc:
            raise self._unavailable(exc) from None
        if got != expected_bytes:
            raise CorruptBlob(f"blob {blob_id} ended after {got} of {expected_bytes} bytes", resource=blob_id)
        if checker is not None:
            checker.finish()
        if held is not None:
            yield held

    async def _checked_size(self, blob_id: str) -> int:
        """The object's size, checked against what was stored (HEAD); CorruptBlob if missing."""
        store = await self._connected()
        try:
            result = await obstore.get_async(store, blob_id, options={"head": True})
        except _NOT_FOUND:
            raise CorruptBlob(f"blob {blob_id} is missing from the remote tier", resource=blob_id) from None
        except _TRANSPORT as exc:
            raise self._unavailable(exc) from None
        size = result.meta["size"]
        _check_size(blob_id, result.attributes, size, result.meta.get("e_tag"))
        return size

    # --- connection ---------------------------------------------------------------------------
    async def _connected(self) -> S3Store:
        store = self._store
        if store is not None:
            return store
        async with self._lock:
            if self._store is None:
                self._store = await asyncio.to_thread(self._connect)
            return self._store

    def _connect(self) -> S3Store:
        """Run the endpoint guard, resolve credentials, build the client (in a thread: both may do I/O)."""
        from obstore.store import S3Store

        c = self.config
        if self._guard is not None:
            self._guard(c.endpoint)
        provider: Any = None
        if c.access_key is None:
            import boto3
            from obstore.auth.boto3 import Boto3CredentialProvider

            try:
                provider = Boto3CredentialProvider(boto3.Session())
            except ValueError:
                raise TierUnavailable(
                    _NO_CREDENTIALS,
                    headers={"Retry-After": str(c.retry_after_s)},
                ) from None
        else:
            key, secret, token = c.access_key, c.secret_key, c.session_token

            def provider() -> dict[str, Any]:  # explicit keys win over any AWS_* in the environment
                return {"access_key_id": key, "secret_access_key": secret, "token": token, "expires_at": None}

        return S3Store(
            c.bucket,
            prefix=self._prefix or None,
            endpoint=c.endpoint,
            region=c.region,
            virtual_hosted_style_request=not c.path_style,
            credential_provider=provider,
            client_options={
                "allow_http": c.endpoint.startswith("http://"),
                "connect_timeout": timedelta(seconds=c.connect_timeout_s),
                "read_timeout": timedelta(seconds=c.read_timeout_s),
            },
            retry_config={
                "max_retries": c.max_retries,
                "retry_timeout": timedelta(seconds=c.retry_timeout_s),
                "backoff": {
                    "init_backoff": timedelta(milliseconds=100),
                    "max_backoff": timedelta(seconds=2),
                    "base": 2,
                },
            },
        )

    def _unavailable(self, exc: Exception) -> TierUnavailable:
        """Transport failure, timeout, 5xx, refusal: the tier cannot serve us now. The next
        operation reconnects, through the endpoint guard again. The message names the tier's
        endpoint and bucket, never its credentials (obstore's messages carry URLs, not keys)."""
        self._store = None
        self.unavailable += 1
        kind = type(exc).__name__.removesuffix("Error") or "error"
        detail = str(exc).split("\n", 1)[0][:300]
        return TierUnavailable(
            f"remote tier {self.config.endpoint} bucket {self.config.bucket} is unavailable ({kind}): {detail}",
            headers={"Retry-After": str(self.config.retry_after_s)},
        )


# --- helpers --------------------------------------------------------------------------------


async def _empty() -> AsyncIterator[bytes]:
    return
    yield b""  # pragma: no cover - makes this an async generator


def _is_blob_id(name: str) -> bool:
    try:
        validate_blob_id(name)
    except ValueError:
        return False
    return True


async def _md5(data: bytes) -> bytes:
    if len(data) >= _OFFLOAD_HASH_BYTES:
        return await asyncio.to_thread(lambda: hashlib.md5(data, usedforsecurity=False).digest())
    return hashlib.md5(data, usedforsecurity=False).digest()


def _check_meta(meta: Mapping[str, str] | None) -> dict[str, str]:
    if not meta:
        return {}
    out: dict[str, str] = {}
    for name, value in meta.items():
        if not name.startswith(META_PREFIX) or _META_NAME_RE.fullmatch(name) is None:
            raise ValueError(f"metadata name {name!r}: need tierstore-[a-z0-9-]")
        if name in _RESERVED:
            raise ValueError(f"metadata name {name!r} is the store's own")
        if name == _CRC and _CRC_RE.fullmatch(value) is None:
            raise ValueError(f"metadata {name!r}: 8 lowercase hex digits (the CRC32C of the body)")
        if not value.isascii() or not value.isprintable():
            raise ValueError(f"metadata {name!r}: the value must be printable ASCII (percent-encode it)")
        out[name] = value
    if sum(len(k) + len(v) for k, v in out.items()) > _META_BYTES_MAX - 128:  # room for our fields
        raise ValueError("metadata too large for a remote object (2 KiB with the store's fields)")
    return out


def _check_size(blob_id: str, attributes: Mapping[str, Any], size: int, etag: str | None) -> None:
    """The object's length against what was stored: the recorded size of a single PUT; for a
    multipart object (whose size was unknown when its metadata was written) the part count of its
    ETag and the recorded part size bound it: ``(N-1)*P < size <= N*P``."""
    recorded = attributes.get(_SIZE)
    if recorded is not None:
        if str(size) != recorded:
            raise CorruptBlob(f"blob {blob_id} is {size} bytes, {recorded} were stored", resource=blob_id)
        return
    part = attributes.get(_PART)
    match = _MULTIPART_ETAG_RE.fullmatch((etag or "").strip('"'))
    if part is None or not part.isdigit() or match is None:
        message = f"object {blob_id} has no tierstore size record (ETag {etag}): overwritten?"
        raise CorruptBlob(message, resource=blob_id)
    parts, part_bytes = int(match.group(1)), int(part)
    if not (parts - 1) * part_bytes < size <= parts * part_bytes:
        raise CorruptBlob(f"blob {blob_id} is {size} bytes, not {parts} parts of {part_bytes}", resource=blob_id)


class _Checker:
    """The whole-body check: CRC32C from the metadata, else the (multipart) ETag recomputed."""

    def __init__(self, blob_id: str, *, crc: int | None, etag: str | None, part_bytes: int | None) -> None:
        self.blob_id = blob_id
        self.expected_crc = crc
        self.etag = etag
        self.part_bytes = part_bytes
        self.crc = 0
        self.md5s: list[bytes] = []
        self.part = hashlib.md5(usedforsecurity=False)
        self.part_fill = 0

    @classmethod
    def of(cls, blob_id: str, attributes: Mapping[str, Any], etag: str | None) -> _Checker:
        crc = attributes.get(_CRC)
        if crc is not None:
            try:
                return cls(blob_id, crc=int(crc, 16), etag=None, part_bytes=None)
            except ValueError:
                raise CorruptBlob(f"blob {blob_id} has a malformed checksum field", resource=blob_id) from None
        # _check_size has seen a multipart ETag and a part size
        return cls(blob_id, crc=None, etag=(etag or "").strip('"'), part_bytes=int(attributes[_PART]))

    async def update(self, chunk: bytes) -> None:
        if self.expected_crc is not None:
            self.crc = crc32c(chunk, self.crc)
            return
        assert self.part_bytes is not None
        view = memoryview(chunk)
        while view:
            take = min(len(view), self.part_bytes - self.part_fill)
            piece = view[:take]
            if take >= _OFFLOAD_HASH_BYTES:
                await asyncio.to_thread(self.part.update, piece)
            else:
                self.part.update(piece)
            self.part_fill += take
            view = view[take:]
            if self.part_fill == self.part_bytes:
                self._close_part()

    def _close_part(self) -> None:
        self.md5s.append(self.part.digest())
        self.part = hashlib.md5(usedforsecurity=False)
        self.part_fill = 0

    def finish(self) -> None:
        if self.expected_crc is not None:
            if self.crc != self.expected_crc:
                raise CorruptBlob(f"blob {self.blob_id} fails its CRC32C", resource=self.blob_id)
            return
        if self.part_fill:
            self._close_part()
        composite = hashlib.md5(b"".join(self.md5s), usedforsecurity=False).hexdigest()
        if f"{composite}-{len(self.md5s)}" != self.etag:
            raise CorruptBlob(f"blob {self.blob_id} does not match its multipart ETag", resource=self.blob_id)
