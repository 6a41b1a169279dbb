"""The few S3 calls checkpoints and model pulls need, thread-safe, against any S3 endpoint.

Data moves straight between memory and the socket: a PUT body is a list of buffers (tensor
memory, no join), a GET is read into a caller's buffer (a tensor's memory, no intermediate
``bytes``). Data requests go through urllib3, signed with SigV4 and ``UNSIGNED-PAYLOAD`` plus an
``x-amz-checksum-crc64nvme`` header, so the server verifies every byte without the client
hashing twice (a SHA-256 payload signature would cost a second pass). Control calls (list,
delete, tagging, multipart bookkeeping) go through botocore.
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from functools import cache
from typing import Any
from urllib.parse import quote, urlencode

from tierstore.client._ext import error_fields
from tierstore.client._s3 import S3Settings, credentials_of, make_s3_client, resolve_settings

__all__ = [
    "Buffer",
    "ListedObject",
    "ObjectError",
    "PreconditionFailed",
    "PutResult",
    "S3Objects",
    "StoreUri",
    "crc64nvme",
]

log = logging.getLogger("tierstore.checkpoints")

Buffer = bytes | bytearray | memoryview
PART_BYTES = 64 << 20  # a body above this goes up as a multipart upload, in parts of this size
_ATTEMPTS = 3


def crc64nvme(data: Buffer | Sequence[Buffer], crc: int = 0) -> int:
    """CRC64NVME (the S3 default full-object checksum) of a buffer or of buffers back to back."""
    from awscrt import checksums

    if isinstance(data, bytes | bytearray | memoryview):
        return int(checksums.crc64nvme(data, crc))
    for piece in data:
        crc = checksums.crc64nvme(piece, crc)
    return crc


def crc_b64(crc: int) -> str:
    return base64.b64encode(crc.to_bytes(8, "big")).decode()


@dataclass(frozen=True, slots=True)
class StoreUri:
    """``s3://BUCKET/PREFIX``: where a checkpoint store lives. The prefix is kept without a
    trailing slash; ``key("a/b")`` joins below it."""

    bucket: str
    prefix: str = ""

    @classmethod
    def parse(cls, uri: str) -> StoreUri:
        if not uri.startswith("s3://"):
            raise ValueError(f"expected s3://BUCKET[/PREFIX], got {uri!r}")
        bucket, _, prefix = uri[5:].partition("/")
        if not bucket:
            raise ValueError(f"no bucket in {uri!r}")
        return cls(bucket, prefix.strip("/"))

    def key(self, rel: str) -> str:
        return f"{self.prefix}/{rel}" if self.prefix else rel

    def rel(self, key: str) -> str:
        """The inverse of ``key``."""
        if not self.prefix:
            return key
        assert key.startswith(self.prefix + "/"), (key, self.prefix)
        return key[len(self.prefix) + 1 :]

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"


class ObjectError(Exception):
    """An S3 error answer: ``status``, S3 ``code`` and message."""

    def __init__(self, status: int, code: str, message: str, key: str = "") -> None:
        super().__init__(f"{code} ({status}) {key}: {message}".replace(" : ", ": "))
        self.status = status
        self.code = code
        self.message = message
        self.key = key
        self.retried = False  # answered to a retry (an earlier attempt may have landed)

    def __reduce__(self) -> tuple[Any, ...]:  # picklable across processes
        return (type(self), (self.status, self.code, self.message, self.key))


class PreconditionFailed(ObjectError):
    """A conditional PUT (``If-None-Match: *``) found the key already there."""


@dataclass(frozen=True, slots=True)
class PutResult:
    key: str
    size: int
    etag: str
    version_id: str | None
    crc64nvme: str  # base64, as S3 reports it (the whole object's, also for multipart)


@dataclass(frozen=True, slots=True)
class ListedObject:
    key: str
    size: int
    etag: str
    modified_ns: int


class S3Objects:
    """Object calls for one endpoint. Thread-safe: a connection pool of ``max_connections``."""

    def __init__(
        self,
        settings: S3Settings | None = None,
        *,
        max_connections: int = 8,
        part_bytes: int = PART_BYTES,
        timeout_s: float = 600.0,
    ) -> None:
        import urllib3

        self.settings = settings or resolve_settings()
        self._credentials = credentials_of(self.settings)
        if self._credentials is None:
            raise ObjectError(0, "NoCredentials", "set TIERSTORE_ACCESS_KEY/_SECRET_KEY or AWS credentials")
        self.part_bytes = part_bytes
        self.max_connections = max_connections
        self._http = urllib3.PoolManager(
            maxsize=max_connections, block=True, timeout=urllib3.Timeout(connect=10.0, read=timeout_s), retries=False
        )
        self._s3: Any = None
        self._base = self.settings.endpoint_url.rstrip("/")

    def __getstate__(self) -> dict[str, Any]:  # a store crosses into DataLoader/DCP processes
        return {"settings": self.settings, "part_bytes": self.part_bytes, "max_connections": self.max_connections}

    def __setstate__(self, state: dict[str, Any]) -> None:
        S3Objects.__init__(
            self, state["settings"], max_connections=state["max_connections"], part_bytes=state["part_bytes"]
        )

    @property
    def s3(self) -> Any:
        """A botocore client for the control calls (made on first use)."""
        if self._s3 is None:
            self._s3 = make_s3_client(self.settings, max_pool_connections=self.max_connections)
        return self._s3

    # --- signed raw requests --------------------------------------------------------
    def _url(self, bucket: str, key: str, query: dict[str, str] | None = None) -> str:
        url = f"{self._base}/{bucket}/{quote(key, safe='/~')}"
        if query:
            url += "?" + urlencode(sorted(query.items()), quote_via=quote)
        return url

    def _signed(self, method: str, url: str, headers: dict[str, str]) -> dict[str, str]:
        from botocore.awsrequest import AWSRequest

        req = AWSRequest(method=method, url=url, headers=headers)
        _unsigned_auth()(self._credentials, "s3", self.settings.region).add_auth(req)
        return dict(req.headers.items())

    def _request(
        self,
        method: str,
        bucket: str,
        key: str,
        *,
        query: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        body: Sequence[Buffer] | None = None,
        size: int = 0,
        preload: bool = True,
    ) -> Any:
        url = self._url(bucket, key, query)
        hdrs = dict(headers or {})
        if method in ("PUT", "POST"):
            hdrs["Content-Length"] = str(size)
        last: Exception | None = None
        for attempt in range(_ATTEMPTS):
            signed = self._signed(method, url, hdrs)
            try:
                send: Any = None
                if body is not None:
                    send = body[0] if len(body) == 1 else _Pieces(body)
                resp = self._http.request(method, url, body=send, headers=signed, preload_content=preload)
            except Exception as exc:
                last = exc
                log.warning("%s %s/%s failed (attempt %d): %s", method, bucket, key, attempt + 1, exc)
                time.sleep(0.2 * (attempt + 1))
                continue
            if resp.status in (500, 502, 503) and attempt + 1 < _ATTEMPTS:
                resp.drain_conn()
                resp.release_conn()
                time.sleep(0.2 * (attempt + 1))
                continue
            if resp.status >= 300:
                err = _error(resp, key)
                err.retried = attempt > 0
                raise err
            return resp
        raise ObjectError(0, "ConnectionError", str(last), key)

    # --- data -----------------------------------------------------------------------
    def put(
        self,
        bucket: str,
        key: str,
        body: Buffer | Sequence[Buffer],
        *,
        if_none_match: bool = False,
        metadata: dict[str, str] | None = None,
        tags: dict[str, str] | None = None,
        content_type: str = "application/octet-stream",
        pool: Executor | None = None,
    ) -> PutResult:
        """PUT ``body`` (one buffer, or buffers sent back to back without joining them).

        Above ``part_bytes`` it goes as a multipart upload whose parts run on ``pool`` (in
        this thread without one). ``if_none_match``: only if the key does not exist yet
        (``PreconditionFailed`` otherwise) — single PUT only, so a conditional body must fit
        one part. The server verifies the CRC64NVME sent with each request."""
        raw = [body] if isinstance(body, bytes | bytearray | memoryview) else list(body)
        pieces = [_flat(b) for b in raw]
        size = sum(p.nbytes for p in pieces)
        headers = {"Content-Type": content_type}
        for name, value in (metadata or {}).items():
            headers[f"x-amz-meta-{name}"] = value
        if tags:
            headers["x-amz-tagging"] = urlencode(tags, quote_via=quote)
        if size > self.part_bytes:
            if if_none_match:
                raise ValueError(f"a conditional PUT must fit one request ({self.part_bytes} bytes)")
            return self._multipart(bucket, key, pieces, size, headers, pool)
        crc = crc64nvme(pieces)
        headers["x-amz-checksum-crc64nvme"] = crc_b64(crc)
        if if_none_match:
            headers["If-None-Match"] = "*"
        try:
            resp = self._request("PUT", bucket, key, headers=headers, body=pieces, size=size)
        except PreconditionFailed as exc:
            if if_none_match and exc.retried and self._same(bucket, key, crc, size):
                # an earlier attempt of this very request landed before its answer was lost
                return self.head(bucket, key, crc=crc)
            raise
        return PutResult(key, size, resp.headers.get("ETag", ""), resp.headers.get("x-amz-version-id"), crc_b64(crc))

    def _same(self, bucket: str, key: str, crc: int, size: int) -> bool:
        try:
            info = self.s3.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
        except Exception:
            return False
        return bool(info.get("ChecksumCRC64NVME") == crc_b64(crc) and info.get("ContentLength") == size)

    def head(self, bucket: str, key: str, *, crc: int | None = None) -> PutResult:
        info = self.s3.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
        return PutResult(
            key,
            int(info["ContentLength"]),
            info.get("ETag", ""),
            info.get("VersionId"),
            info.get("ChecksumCRC64NVME") or (crc_b64(crc) if crc is not None else ""),
        )

    def _multipart(
        self,
        bucket: str,
        key: str,
        pieces: list[memoryview],
        size: int,
        headers: dict[str, str],
        pool: Executor | None,
    ) -> PutResult:
        meta = {k[len("x-amz-meta-") :]: v for k, v in headers.items() if k.startswith("x-amz-meta-")}
        create: dict[str, Any] = {"Bucket": bucket, "Key": key, "ContentType": headers["Content-Type"],
                                  "ChecksumAlgorithm": "CRC64NVME", "ChecksumType": "FULL_OBJECT"}  # fmt: skip
        if meta:
            create["Metadata"] = meta
        if "x-amz-tagging" in headers:
            create["Tagging"] = headers["x-amz-tagging"]
        upload_id = self.s3.create_multipart_upload(**create)["UploadId"]
        parts = list(_split(pieces, self.part_bytes))

        def send(number: int, part: list[memoryview]) -> dict[str, Any]:
            n = sum(p.nbytes for p in part)
            crc = crc64nvme(part)
            resp = self._request(
                "PUT",
                bucket,
                key,
                query={"partNumber": str(number), "uploadId": upload_id},
                # tierstore: the part's ETag from this (verified) CRC, not an MD5 of the bytes — the
                # costliest per-byte work of an upload; other S3 endpoints ignore the header
                headers={"x-amz-checksum-crc64nvme": crc_b64(crc), "x-tierstore-etag": "checksum"},
                body=part,
                size=n,
            )
            return {"PartNumber": number, "ETag": resp.headers["ETag"], "crc": crc, "size": n}

        try:
            if pool is None:
                done = [send(i + 1, p) for i, p in enumerate(parts)]
            else:
                futures = [pool.submit(send, i + 1, p) for i, p in enumerate(parts)]
                done = [f.result() for f in futures]
            whole = 0
            for d in done:
                whole = crc64nvme_combine(whole, d["crc"], d["size"])
            resp = self.s3.complete_multipart_upload(
                Bucket=bucket,
                Key=key,
                UploadId=upload_id,
                ChecksumCRC64NVME=crc_b64(whole),
                ChecksumType="FULL_OBJECT",
                MultipartUpload={"Parts": [{"PartNumber": d["PartNumber"], "ETag": d["ETag"]} for d in done]},
            )
        except BaseException:
            try:
                self.s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
            except Exception:
                log.warning("could not abort upload %s of %s/%s", upload_id, bucket, key, exc_info=True)
            raise
        return PutResult(key, size, resp.get("ETag", ""), resp.get("VersionId"), crc_b64(whole))

    def get(
        self, bucket: str, key: str, *, version_id: str | None = None, byte_range: tuple[int, int] | None = None
    ) -> bytes:
        """The object's bytes (``byte_range``: (offset, length))."""
        resp = self._get(bucket, key, version_id, byte_range, preload=True)
        data: bytes = resp.data
        if byte_range is not None and len(data) != byte_range[1]:
            raise ObjectError(0, "IncompleteBody", f"got {len(data)} of {byte_range[1]} bytes at {byte_range[0]}", key)
        return data

    def get_into(
        self, bucket: str, key: str, dest: memoryview, *, version_id: str | None = None, offset: int = 0
    ) -> None:
        """Read ``len(dest)`` bytes of the object from ``offset`` straight into ``dest``."""
        dest = _flat(dest)
        n = dest.nbytes
        if n == 0:
            return
        resp = self._get(bucket, key, version_id, (offset, n), preload=False)
        # urllib3's readinto reads into a temporary bytes and copies it over (a second copy, and
        # fresh pages to fault in: a 2 GiB load faulted 1M pages instead of 0.5M); http.client's
        # response under it receives straight into dest
        raw = getattr(resp, "_fp", None)
        readinto = raw.readinto if raw is not None and hasattr(raw, "readinto") else resp.readinto
        complete = False
        try:
            got = 0
            while got < n:
                k = readinto(dest[got:])
                if not k:
                    break
                got += k
            if got != n:
                raise ObjectError(0, "IncompleteBody", f"got {got} of {n} bytes at {offset}", key)
            complete = True
        finally:
            if not complete:
                resp.close()  # never hand a connection with unread body back to the pool
            resp.release_conn()

    def _get(
        self, bucket: str, key: str, version_id: str | None, byte_range: tuple[int, int] | None, *, preload: bool
    ) -> Any:
        headers = {}
        if byte_range is not None:
            start, length = byte_range
            headers["Range"] = f"bytes={start}-{start + length - 1}"
        query = {"versionId": version_id} if version_id else None
        return self._request("GET", bucket, key, query=query, headers=headers, preload=preload)

    # --- control --------------------------------------------------------------------
    def list(self, bucket: str, prefix: str) -> Iterator[ListedObject]:
        """Every object under ``prefix``, in key order."""
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                modified = obj["LastModified"]
                yield ListedObject(obj["Key"], int(obj["Size"]), obj.get("ETag", ""), int(modified.timestamp() * 1e9))

    def delete(self, bucket: str, keys: Sequence[str]) -> None:
        """Delete ``keys`` (1,000 per request); a key already gone is not an error."""
        for i in range(0, len(keys), 1000):
            batch = [{"Key": k} for k in keys[i : i + 1000]]
            resp = self.s3.delete_objects(Bucket=bucket, Delete={"Objects": batch, "Quiet": True})
            errors = resp.get("Errors") or []
            if errors:
                first = errors[0]
                raise ObjectError(0, first.get("Code", "DeleteFailed"), first.get("Message", ""), first.get("Key", ""))

    def get_tags(self, bucket: str, key: str) -> dict[str, str]:
        resp = self.s3.get_object_tagging(Bucket=bucket, Key=key)
        return {t["Key"]: t["Value"] for t in resp.get("TagSet", [])}

    def put_tags(self, bucket: str, key: str, tags: dict[str, str]) -> None:
        self.s3.put_object_tagging(
            Bucket=bucket, Key=key, Tagging={"TagSet": [{"Key": k, "Value": v} for k, v in tags.items()]}
        )

    def abort_uploads(self, bucket: str, prefix: str, *, older_than_ns: int) -> int:
        """Abort multipart uploads under ``prefix`` started before ``older_than_ns``; how many."""
        aborted = 0
        for page in self.s3.get_paginator("list_multipart_uploads").paginate(Bucket=bucket, Prefix=prefix):
            for up in page.get("Uploads", []):
                if int(up["Initiated"].timestamp() * 1e9) < older_than_ns:
                    self.s3.abort_multipart_upload(Bucket=bucket, Key=up["Key"], UploadId=up["UploadId"])
                    aborted += 1
        return aborted


def _split(pieces: list[memoryview], part_bytes: int) -> Iterator[list[memoryview]]:
    """The buffers cut into consecutive parts of ``part_bytes`` (the last may be shorter)."""
    part: list[memoryview] = []
    room = part_bytes
    for piece in pieces:
        rest = piece
        while rest.nbytes:
            take = rest[:room] if rest.nbytes > room else rest
            part.append(take)
            room -= take.nbytes
            rest = rest[take.nbytes :]
            if room == 0:
                yield part
                part, room = [], part_bytes
    if part:
        yield part


def _flat(buf: Buffer) -> memoryview:
    """A 1-d byte view of any contiguous buffer (numpy arrays of any dtype, tensors' bytes)."""
    view = memoryview(buf)
    return view if view.format == "B" and view.ndim == 1 else view.cast("B")


def crc64nvme_combine(crc1: int, crc2: int, len2: int) -> int:
    """crc64nvme(A || B) from crc64nvme(A), crc64nvme(B) and len(B)."""
    from awscrt import checksums

    return int(checksums.combine_crc64nvme(crc1, crc2, len2)) if len2 else crc1


class _Pieces:
    """A request body of several buffers sent one after the other (http.client iterates it)."""

    def __init__(self, pieces: Sequence[Buffer]) -> None:
        self._pieces = pieces

    def __iter__(self) -> Iterator[Buffer]:
        return iter(self._pieces)


@cache
def _unsigned_auth() -> Any:
    """SigV4 with ``UNSIGNED-PAYLOAD`` (botocore signs S3 payloads over plain HTTP otherwise)."""
    from botocore.auth import S3SigV4Auth

    class Auth(S3SigV4Auth):  # type: ignore[misc]  # botocore is untyped
        def _should_sha256_sign_payload(self, request: Any) -> bool:
            return False

    return Auth


def _error(resp: Any, key: str) -> ObjectError:
    data = resp.data if resp.data is not None else resp.read()
    code, message = error_fields(data, f"HTTP{resp.status}")
    cls = PreconditionFailed if resp.status == 412 or code == "PreconditionFailed" else ObjectError
    return cls(resp.status, code, message, key)
