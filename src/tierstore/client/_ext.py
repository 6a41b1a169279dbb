"""The tierstore extensions under ``/_tierstore/``: signed like any S3 request, JSON in and out."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from tierstore.client._s3 import S3Settings, credentials_of, resolve_settings
from tierstore.types import BATCH_FRAME, BATCH_TRAILER, DatasetRef, ModelRef, check_alias

__all__ = ["BatchItem", "QueryPage", "TierstoreClient", "TierstoreClientError"]


class TierstoreClientError(Exception):
    """An error answered by the server: S3 error ``code`` and HTTP ``status``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{code} ({status}): {message}")
        self.status = status
        self.code = code
        self.message = message


@dataclass(slots=True)
class BatchItem:
    """One entry of ``read_many``: its position in the request, an HTTP-style status, and the
    bytes (status 200/206) or the S3 error (``error``: ``{"code", "message", "key"}``)."""

    index: int
    status: int
    data: bytes = b""
    error: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return self.status in (200, 206)


@dataclass(slots=True)
class QueryPage:
    objects: list[dict[str, Any]] = field(default_factory=list)
    next_cursor: str | None = None


def _frames(chunks: Iterator[bytes]) -> Iterator[tuple[int, int, bytes]]:
    """(index, status, bytes) of each ``BATCH_FRAME`` in a stream of chunks. A frame inside one
    chunk is one slice of it (a sample is copied once); only a frame that spans chunks is
    gathered from pieces, and only a header cut by a chunk boundary is carried over."""
    header = BATCH_FRAME.size
    unpack = BATCH_FRAME.unpack_from
    carry = b""  # the start of a header cut by the end of the previous chunk
    pending: tuple[int, int, int] | None = None  # a frame whose bytes span chunks...
    parts: list[bytes] = []  # ...and the pieces of it seen so far
    have = 0
    for piece in chunks:
        chunk, pos = piece, 0
        if pending is not None:
            take = min(len(chunk), pending[2] - have)
            parts.append(chunk[:take])
            have += take
            if have < pending[2]:
                continue
            yield pending[0], pending[1], b"".join(parts)
            pending, parts, have, pos = None, [], 0, take
        if carry:
            chunk, pos, carry = carry + chunk[pos:], 0, b""
        end = len(chunk)
        while True:
            if end - pos < header:
                carry = chunk[pos:]
                break
            index, status, length = unpack(chunk, pos)
            pos += header
            if end - pos >= length:
                yield index, status, chunk[pos : pos + length]
                pos += length
                continue
            pending, parts, have = (index, status, length), [chunk[pos:]], end - pos
            break


def error_fields(data: bytes, default_code: str) -> tuple[str, str]:
    """(Code, Message) of an S3 error document; ``default_code`` and the body's start if it is not one."""
    code, message = default_code, data[:200].decode("utf-8", "replace")
    try:
        root = ET.fromstring(data)  # noqa: S314 - an S3 endpoint's error document, small
    except ET.ParseError:
        return code, message
    return root.findtext("Code") or code, root.findtext("Message") or message


def _dataset_path(ref: str) -> str:
    """``/_tierstore/datasets/NAME[/N]`` for ``NAME[@N]`` (checked here: a bad name is a ValueError)."""
    parsed = DatasetRef.parse(ref)
    return f"/_tierstore/datasets/{parsed.name}" + (f"/{parsed.version}" if parsed.version is not None else "")


def _model_path(ref: str) -> str:
    """``/_tierstore/models/NAME[/N | /ALIAS]`` for ``NAME[@N | @ALIAS]`` (a bad ref is a ValueError)."""
    parsed = ModelRef.parse(ref)
    at = parsed.version if parsed.version is not None else parsed.alias
    return f"/_tierstore/models/{parsed.name}" + (f"/{at}" if at is not None else "")


def _ndjson(resp: Any) -> Iterator[dict[str, Any]]:
    """The JSON lines of a streamed response (heal, a dataset's move), as they come."""
    try:
        buf = b""
        for chunk in resp.stream(64 * 1024):
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for line in lines:
                if line.strip():
                    yield json.loads(line)
        if buf.strip():
            yield json.loads(buf)
    finally:
        resp.release_conn()


class TierstoreClient:
    """Client for the extensions of a tierstore server (the S3 API itself: use boto3).

    >>> c = TierstoreClient(resolve_settings("http://127.0.0.1:9000"))
    >>> c.query("ckpts", "tag.status = 'tested' ORDER BY meta.loss LIMIT 5").objects
    """

    def __init__(self, settings: S3Settings | None = None, *, timeout_s: float = 60.0) -> None:
        import urllib3

        self.settings = settings or resolve_settings()
        self._credentials = credentials_of(self.settings)
        if self._credentials is None:
            raise TierstoreClientError(0, "NoCredentials", "no credentials: set TIERSTORE_ACCESS_KEY/_SECRET_KEY")
        self._http = urllib3.PoolManager(timeout=urllib3.Timeout(total=timeout_s), retries=False)

    def _send(
        self,
        method: str,
        path: str,
        payload: dict[str, Any] | None,
        *,
        stream: bool = False,
        raw: bytes | None = None,
        timeout: Any = None,
    ) -> Any:
        from botocore.auth import S3SigV4Auth
        from botocore.awsrequest import AWSRequest

        body = raw if raw is not None else b"" if payload is None else json.dumps(payload).encode()
        url = self.settings.endpoint_url.rstrip("/") + path
        req = AWSRequest(method=method, url=url, data=body, headers={"Content-Type": "application/json"})
        S3SigV4Auth(self._credentials, "s3", self.settings.region).add_auth(req)
        resp = self._http.request(
            method, url, body=body, headers=dict(req.headers.items()), preload_content=not stream,
            **({"timeout": timeout} if timeout is not None else {}),
        )  # fmt: skip
        if resp.status >= 300:
            data = resp.read() if stream else resp.data  # a streamed response has no .data once read
            raise TierstoreClientError(resp.status, *error_fields(data, "HTTP"))
        return resp

    def _call(self, method: str, path: str, payload: dict[str, Any] | None) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self._send(method, path, payload).data)
        return result

    def admin_info(self) -> dict[str, Any]:
        """Drives, their state and capacity, catalog copies and the last heal (``tierstore admin info``)."""
        return self._call("GET", "/_tierstore/admin/info", None)

    def bucket_usage(self) -> dict[str, Any]:
        """Objects, versions and bytes of each bucket this key may list (refreshed at most every
        30 s): ``{"buckets": [{"bucket", "objects", "object_bytes", "versions", "delete_markers",
        "stored_bytes"}], "complete"}`` (the web console's Buckets page shows it)."""
        return self._call("GET", "/_tierstore/usage", None)

    # --- identities (the root, or the iam: actions; docs/identities.md) ---------------------
    def create_user(self, name: str, *, tags: dict[str, str] | None = None) -> dict[str, Any]:
        return self._call("POST", "/_tierstore/admin/users", {"name": name, "tags": tags or {}})

    def list_users(self) -> list[dict[str, Any]]:
        users: list[dict[str, Any]] = self._call("GET", "/_tierstore/admin/users", None)["users"]
        return users

    def user_info(self, name: str) -> dict[str, Any]:
        """The user, its keys (no secrets) and its groups."""
        return self._call("GET", f"/_tierstore/admin/users/{quote(name, safe='')}", None)

    def set_user_enabled(self, name: str, enabled: bool) -> dict[str, Any]:
        return self._call("PUT", f"/_tierstore/admin/users/{quote(name, safe='')}", {"enabled": enabled})

    def delete_user(self, name: str) -> None:
        self._send("DELETE", f"/_tierstore/admin/users/{quote(name, safe='')}", None)

    def create_access_key(
        self,
        user: str,
        *,
        service: bool = False,
        policy: str | None = None,
        expires_s: float | None = None,
        name: str = "",
    ) -> dict[str, Any]:
        """A new key of ``user`` (or a service account acting as it); the answer carries
        ``secret_key``, which the server never shows again."""
        payload: dict[str, Any] = {"user": user, "service": service, "policy": policy, "expires_s": expires_s}
        payload["name"] = name
        return self._call("POST", "/_tierstore/admin/keys", payload)

    def list_access_keys(self, user: str) -> list[dict[str, Any]]:
        keys: list[dict[str, Any]] = self._call("GET", f"/_tierstore/admin/keys?user={quote(user, safe='')}", None)[
            "keys"
        ]
        return keys

    def set_access_key_status(self, access_key_id: str, *, active: bool) -> dict[str, Any]:
        status = "Active" if active else "Inactive"
        return self._call("PUT", f"/_tierstore/admin/keys/{quote(access_key_id, safe='')}", {"status": status})

    def delete_access_key(self, access_key_id: str) -> None:
        self._send("DELETE", f"/_tierstore/admin/keys/{quote(access_key_id, safe='')}", None)

    def _policy_path(self, user: str, name: str = "") -> str:
        path = f"/_tierstore/admin/users/{quote(user, safe='')}/policies"
        return f"{path}/{quote(name, safe='')}" if name else path

    def put_user_policy(self, user: str, name: str, document: str | dict[str, Any]) -> dict[str, Any]:
        """Set ``user``'s inline policy ``name`` (an IAM policy document: JSON text or a dict);
        ``TierstoreClientError`` ``MalformedPolicyDocument`` when the server refuses it."""
        text = document if isinstance(document, str) else json.dumps(document)
        resp = self._send("PUT", self._policy_path(user, name), None, raw=text.encode())
        result: dict[str, Any] = json.loads(resp.data)
        return result

    def user_policies(self, user: str) -> dict[str, str]:
        """``user``'s inline policies: name -> document."""
        policies: dict[str, str] = self._call("GET", self._policy_path(user), None)["policies"]
        return policies

    def user_policy(self, user: str, name: str) -> str:
        document: str = self._call("GET", self._policy_path(user, name), None)["document"]
        return document

    def delete_user_policy(self, user: str, name: str) -> None:
        self._send("DELETE", self._policy_path(user, name), None)

    # --- the key service (the root, or the kms: actions; docs/security.md "Key service") ------
    def _kms_path(self, key_id: str = "", verb: str = "") -> str:
        path = "/_tierstore/admin/kms/keys" + (f"/{quote(key_id, safe='')}" if key_id else "")
        return f"{path}/{verb}" if verb else path

    def kms_list_keys(self) -> list[dict[str, Any]]:
        """Every key of the server's key service: id, ARN, state, versions (never key material)."""
        keys: list[dict[str, Any]] = self._call("GET", self._kms_path(), None)["keys"]
        return keys

    def kms_create_key(self, key_id: str, *, description: str = "") -> dict[str, Any]:
        return self._call("POST", self._kms_path(), {"key_id": key_id, "description": description})

    def kms_key_status(self, key_id: str) -> dict[str, Any]:
        return self._call("GET", self._kms_path(key_id), None)

    def kms_set_key_enabled(self, key_id: str, enabled: bool) -> dict[str, Any]:
        """Enable or disable a key (a disabled key wraps and unwraps no data key)."""
        return self._call("POST", self._kms_path(key_id, "enable" if enabled else "disable"), {})

    def kms_rotate_key(self, key_id: str) -> dict[str, Any]:
        """Add a key version: new data keys use it; those wrapped by older versions still open."""
        return self._call("POST", self._kms_path(key_id, "rotate"), {})

    def kms_rewrap_key(self, key_id: str, *, after: str | None = None, limit: int = 200) -> dict[str, Any]:
        """One page of the re-wrap walk: the data keys of up to ``limit`` versions under the key
        (after cursor ``after``) moved to its newest version; counts and ``next`` (None: done)."""
        body: dict[str, Any] = {"limit": limit} if after is None else {"after": after, "limit": limit}
        return self._call("POST", self._kms_path(key_id, "rewrap"), body)

    # --- tiers (the root, or the tierstore:*Tier* actions; docs/tiers.md) ----------------------
    def tier_add(
        self,
        name: str,
        endpoint: str,
        bucket: str,
        *,
        prefix: str = "",
        region: str = "us-east-1",
        access_key_id: str | None = None,
        secret_key: str | None = None,
        restore_required: bool = False,
        allow_private: bool = False,
    ) -> dict[str, Any]:
        """Register a remote tier: ``name`` becomes a storage class. The server checks the
        endpoint (no metadata or link-local addresses; private ones only with ``allow_private``)
        and keeps the secret key sealed; the answer shows whether keys are set, never the secret."""
        body: dict[str, Any] = {
            "name": name,
            "endpoint": endpoint,
            "bucket": bucket,
            "prefix": prefix,
            "region": region,
            "restore_required": restore_required,
            "allow_private": allow_private,
        }
        if access_key_id is not None or secret_key is not None:
            body["access_key_id"], body["secret_key"] = access_key_id, secret_key
        return self._call("POST", "/_tierstore/admin/tiers", body)

    def tier_list(self) -> list[dict[str, Any]]:
        tiers: list[dict[str, Any]] = self._call("GET", "/_tierstore/admin/tiers", None)["tiers"]
        return tiers

    def tier_transition(self, name: str, bucket: str, key: str, version_id: str | None = None) -> dict[str, Any]:
        """Move an object's version (default: the current one) to tier ``name`` now, as the
        lifecycle mover does: ``{"moved": bool, "version_id"}`` (``moved`` false: already there)."""
        query = f"bucket={quote(bucket, safe='')}&key={quote(key, safe='')}"
        if version_id is not None:
            query += f"&versionId={quote(version_id, safe='')}"
        return self._call("POST", f"/_tierstore/admin/tiers/{quote(name, safe='')}/transition?{query}", None)

    def tier_transition_many(
        self, name: str, objects: Sequence[tuple[str, str] | tuple[str, str, str | None]]
    ) -> list[dict[str, Any]]:
        """Move many versions (``(bucket, key)`` or ``(bucket, key, version_id)``; at most 1,000)
        to tier ``name`` in one request, as the lifecycle worker moves a page: one answer each, in
        order, ``{"bucket", "key", "version_id", "moved"}`` or ``{"bucket", "key", "error":
        {"code", "message"}}`` (a denied or missing object, a move that failed)."""
        body = [
            {"bucket": o[0], "key": o[1], **({"version_id": o[2]} if len(o) > 2 and o[2] is not None else {})}
            for o in objects
        ]
        path = f"/_tierstore/admin/tiers/{quote(name, safe='')}/transitions"
        results: list[dict[str, Any]] = self._call("POST", path, {"objects": body})["results"]
        return results

    def tier_remove(self, name: str) -> None:
        """Remove a tier; refused (409 TierInUse) while any data is in it."""
        self._send("DELETE", f"/_tierstore/admin/tiers/{quote(name, safe='')}", None)

    def tier_status(self, name: str | None = None) -> list[dict[str, Any]]:
        """What each tier (or the one named) holds: blobs, bytes, outbox backlog, uploads."""
        path = f"/_tierstore/admin/tiers/{quote(name, safe='')}/status" if name else "/_tierstore/admin/tiers/status"
        tiers: list[dict[str, Any]] = self._call("GET", path, None)["tiers"]
        return tiers

    def heal(self, *, verify_encryption: bool = False) -> Iterator[dict[str, Any]]:
        """Start (or join) a heal pass on the server; yields its progress, the final report last.
        ``verify_encryption``: also open every package of every SSE-S3/SSE-KMS object."""
        body = {"verify_encryption": True} if verify_encryption else {}
        return _ndjson(self._send("POST", "/_tierstore/admin/heal", body, stream=True))

    def read_many(
        self, entries: list[dict[str, str]], *, fail_fast: bool = False, chunk_bytes: int = 1 << 20
    ) -> Iterator[BatchItem]:
        """Read many objects in one request (``POST /_tierstore/batch``), yielded in request order
        as they stream in. Each entry: ``{"bucket", "key", "version_id"?, "range"?: "bytes=a-b"}``.
        A missing object is an item with ``ok`` False, not an exception; ``fail_fast`` ends the
        batch at the first one. Memory holds one entry's bytes at a time."""
        return self._frames({"entries": entries, "fail_fast": fail_fast}, chunk_bytes)

    def read_rows(
        self, ref: str, rows: list[int], *, fail_fast: bool = False, chunk_bytes: int = 1 << 20
    ) -> Iterator[BatchItem]:
        """Read rows ``rows`` of dataset version ``ref`` (``NAME@N``) in one request, through the
        bytes the dataset pinned; yielded like ``read_many`` (``index``: position in ``rows``)."""
        return self._frames({"dataset": ref, "rows": rows, "fail_fast": fail_fast}, chunk_bytes)

    def _frames(self, payload: dict[str, Any], chunk_bytes: int) -> Iterator[BatchItem]:
        resp = self._send("POST", "/_tierstore/batch", payload, stream=True)
        return self._parse_frames(resp, chunk_bytes)

    @staticmethod
    def _parse_frames(resp: Any, chunk_bytes: int) -> Iterator[BatchItem]:
        complete = False
        try:
            for index, status, data in _frames(resp.stream(chunk_bytes)):
                if index == BATCH_TRAILER:
                    complete = True
                    continue  # read on to the end of the HTTP body, so the connection is reusable
                if status in (200, 206):
                    yield BatchItem(index, status, data)
                else:
                    yield BatchItem(index, status, error=json.loads(data))
            if not complete:
                raise TierstoreClientError(0, "IncompleteBatch", "the batch response ended before its trailer")
        finally:
            if not complete:
                resp.close()  # stopped early or cut short: never hand back a connection mid-body
            resp.release_conn()

    # --- datasets (docs/datasets.md) --------------------------------------------------
    def create_dataset(
        self,
        name: str,
        *,
        bucket: str | None = None,
        prefix: str | None = None,
        query: str | None = None,
        rows: list[dict[str, Any]] | None = None,
        label: str | None = None,
        columns: list[str] | None = None,
        lineage: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Make the next version of dataset ``name`` from ``bucket`` + ``prefix``, ``bucket`` +
        ``query`` (the metadata query), or explicit ``rows``; returns its record (``ref``: NAME@N)."""
        doc = {"name": name, "bucket": bucket, "prefix": prefix, "query": query, "rows": rows, "label": label,
               "columns": columns or [], "lineage": lineage}  # fmt: skip
        return self._call("POST", "/_tierstore/datasets", doc)

    def list_datasets(self, name: str | None = None) -> list[dict[str, Any]]:
        """Every dataset version (or every version of ``name``), oldest first per name."""
        path = "/_tierstore/datasets" + (f"?name={quote(name, safe='')}" if name else "")
        found: list[dict[str, Any]] = self._call("GET", path, None)["datasets"]
        return found

    def dataset_info(self, ref: str) -> dict[str, Any]:
        """The record of ``NAME@N`` (``NAME``: the latest version)."""
        return self._call("GET", _dataset_path(ref), None)

    def dataset_manifest(self, ref: str) -> bytes:
        """The Parquet manifest of ``NAME@N`` (``NAME``: the latest version)."""
        if "@" not in ref:
            ref = self.dataset_info(ref)["ref"]
        data: bytes = self._send("GET", _dataset_path(ref) + "/manifest", None).data
        return data

    def dataset_head(self, ref: str, rows: int = 20) -> dict[str, Any]:
        """The first ``rows`` (at most 1000) rows of ``NAME@N``'s manifest as JSON, without its
        whole manifest: ``{"ref", "rows" (the total), "head": [row, ...]}``."""
        if "@" not in ref:
            ref = self.dataset_info(ref)["ref"]
        return self._call("GET", _dataset_path(ref) + f"/manifest?head={int(rows)}", None)

    def dataset_diff(self, name: str, a: int, b: int, *, limit: int = 200) -> dict[str, Any]:
        """What changed from ``name@a`` to ``name@b``, computed by the server: exact counts
        (``added``, ``removed``, ``changed``, ``unchanged``) and up to ``limit`` (at most 1000)
        samples of each kind (``added_keys``, ...: ``{"bucket", "key", "member"}``)."""
        path = _dataset_path(name) + f"/diff?a={int(a)}&b={int(b)}&limit={int(limit)}"
        return self._call("GET", path, None)

    def archive_dataset(self, ref: str, tier: str) -> Iterator[dict[str, Any]]:
        """Move every sample of ``NAME@N`` to tier ``tier`` on the server (resumable: run again
        after a failure, what moved is skipped). Yields its progress (``items``, ``done``,
        ``bytes``, ``done_bytes``, ``skipped``, ``state``), the final record last; raises
        ``TierstoreClientError`` if it failed. A client that goes away does not stop it."""
        if "@" not in ref:
            raise TierstoreClientError(0, "InvalidRequest", "archive names one version: NAME@N")
        return self._move(_dataset_path(ref) + f"/archive?to={quote(tier, safe='')}")

    def pin_dataset(self, ref: str, job: str, *, ttl_s: float | None = None) -> Iterator[dict[str, Any]]:
        """Make every sample of ``NAME@N`` local on the server and hold it for ``job`` until
        ``unpin_dataset`` or ``ttl_s`` from now (pinning again renews it and resumes a copy cut
        short). Yields the copy's progress as ``archive_dataset`` does (``items``: the remote
        blobs; ``skipped``: already local), the final record last; raises if it failed."""
        if "@" not in ref:
            raise TierstoreClientError(0, "InvalidRequest", "pin names one version: NAME@N")
        ttl = f"&ttl={ttl_s:g}" if ttl_s is not None else ""
        return self._move(_dataset_path(ref) + f"/pin?job={quote(job, safe='')}{ttl}")

    def unpin_dataset(self, ref: str, job: str) -> None:
        """Drop ``job``'s pin of ``NAME@N`` (404 ``NoSuchPin`` if it holds none)."""
        if "@" not in ref:
            raise TierstoreClientError(0, "InvalidRequest", "unpin names one version: NAME@N")
        self._send("DELETE", _dataset_path(ref) + f"/pin?job={quote(job, safe='')}", None)

    def jobs(self) -> list[dict[str, Any]]:
        """Every job's pins: ``{"job", "dataset", "blobs", "bytes", "cached_blobs", "cached_bytes",
        "state", "expires"?}`` (blobs and bytes: those in a tier, held locally for the job)."""
        pins: list[dict[str, Any]] = self._call("GET", "/_tierstore/jobs", None)["pins"]
        return pins

    def _move(self, path: str) -> Iterator[dict[str, Any]]:
        import urllib3

        # progress comes every half second: a read timeout, no total one (a move takes hours)
        resp = self._send("POST", path, None, stream=True, timeout=urllib3.Timeout(connect=10.0, read=120.0))
        state = None
        for doc in _ndjson(resp):
            state = doc.get("state")
            if state == "failed":
                err = doc.get("error") or {}
                raise TierstoreClientError(200, err.get("code", "InternalError"), err.get("message", "failed"))
            yield doc
        if state != "done":
            raise TierstoreClientError(200, "IncompleteBody", "the server stopped answering before the move ended")

    def delete_dataset(self, ref: str) -> None:
        """Delete ``NAME@N``; what only it pinned is released (and collected)."""
        if "@" not in ref:
            raise TierstoreClientError(0, "InvalidRequest", "delete names one version: NAME@N")
        self._send("DELETE", _dataset_path(ref), None)

    # --- models (docs/checkpoints.md; tierstore.checkpoints.register_model builds the rows) ---
    def create_model(self, name: str, rows: list[dict[str, Any]], info: dict[str, Any]) -> dict[str, Any]:
        """Register the next version of model ``name``: ``rows`` name the checkpoint's files (byte
        ranges, ``member``: the file's path) and its commit object (``member`` ``COMMIT.json``);
        the server pins their bytes. Returns the record (``ref``: NAME@N)."""
        return self._call("POST", "/_tierstore/models", {"name": name, "rows": rows, "info": info})

    def list_models(self, name: str | None = None) -> list[dict[str, Any]]:
        """Every model version (or every version of ``name``), with its aliases, oldest first per name."""
        path = "/_tierstore/models" + (f"?name={quote(name, safe='')}" if name else "")
        found: list[dict[str, Any]] = self._call("GET", path, None)["models"]
        return found

    def model_info(self, ref: str) -> dict[str, Any]:
        """The record of ``NAME@N``, ``NAME@ALIAS`` or ``NAME`` (the latest version)."""
        return self._call("GET", _model_path(ref), None)

    def model_manifest(self, ref: str) -> bytes:
        """The Parquet manifest of a model version. Resolve an alias first (``model_info``) when
        the manifest must match a record read before: an alias can move in between."""
        if "@" not in ref:
            ref = self.model_info(ref)["ref"]
        data: bytes = self._send("GET", _model_path(ref) + "/manifest", None).data
        return data

    def model_aliases(self, name: str) -> dict[str, int]:
        """{alias: version} of model ``name``."""
        ModelRef.parse(name)
        found: dict[str, int] = self._call("GET", f"/_tierstore/models/{name}/aliases", None)["aliases"]
        return found

    def set_model_alias(self, name: str, alias: str, version: int) -> dict[str, Any]:
        """Point ``name@alias`` at ``version`` (create or move it, atomically); returns
        ``{"name", "alias", "version", "previous"}``."""
        ModelRef.parse(name)
        check_alias(alias)
        return self._call("PUT", f"/_tierstore/models/{name}/aliases/{alias}", {"version": version})

    def delete_model_alias(self, name: str, alias: str) -> None:
        ModelRef.parse(name)
        check_alias(alias)
        self._send("DELETE", f"/_tierstore/models/{name}/aliases/{alias}", None)

    def delete_model(self, ref: str) -> None:
        """Delete ``NAME@N`` (refused while an alias points at it); its pins are released."""
        if ModelRef.parse(ref).version is None:
            raise TierstoreClientError(0, "InvalidRequest", "delete names one version: NAME@N")
        self._send("DELETE", _model_path(ref), None)

    def read_model_rows(
        self, ref: str, rows: list[int], *, fail_fast: bool = False, chunk_bytes: int = 1 << 20
    ) -> Iterator[BatchItem]:
        """Read rows ``rows`` of model version ``ref`` (``NAME@N``) in one request, through the
        bytes it pinned; yielded like ``read_rows``."""
        return self._frames({"model": ref, "rows": rows, "fail_fast": fail_fast}, chunk_bytes)

    def query(self, bucket: str, query: str, *, cursor: str | None = None) -> QueryPage:
        """One page of a metadata query (docs/query.md) over the current objects of ``bucket``."""
        doc = self._call("POST", "/_tierstore/query", {"bucket": bucket, "query": query, "cursor": cursor})
        return QueryPage(objects=doc["objects"], next_cursor=doc.get("next_cursor"))

    def query_all(self, bucket: str, query: str) -> Iterator[dict[str, Any]]:
        """Every match, following cursors page by page."""
        cursor: str | None = None
        while True:
            page = self.query(bucket, query, cursor=cursor)
            yield from page.objects
            if page.next_cursor is None:
                return
            cursor = page.next_cursor
