"""Page 2, the object browser: a prefix at a time, uploads through presigned URLs, an object's
metadata, tags, versions, preview and share links. Every listing is one page of a delimiter
listing (``MaxKeys`` 200, continuation tokens), so a bucket of any size opens at once."""

from __future__ import annotations

import io
import json
import math
import time
from typing import Any
from urllib.parse import quote

from tierstore._parquet import SeekableReader
from tierstore.console._app import Refused, Reply, Web, console_url, route
from tierstore.console._dispatch import S3Error, sync_call

__all__: list[str] = []

PAGE_KEYS = 200  # entries per listing page
PART_BYTES = 8 * 1024 * 1024  # browser multipart: files above this go up in parts of this size
UPLOAD_URL_S = 3600  # presigned upload URLs last an hour (or the session, if it ends first)
PREVIEW_BYTES = 64 * 1024  # a text preview shows the first 64 KiB
PREVIEW_ROWS = 20  # a Parquet preview shows the first rows
SHARE_CHOICES_S = (900, 3600, 86_400, 7 * 86_400)
_TEXT_SUFFIXES = (".txt", ".json", ".jsonl", ".csv", ".tsv", ".md", ".log", ".yaml", ".yml", ".toml", ".py", ".xml")
# raster images only (an SVG is a document that may carry script)
_IMAGE_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
}


@route("GET", "browse")
async def browse_any(web: Web) -> Reply:
    return web.redirect(console_url("buckets"))


@route("GET", "browse/{bucket}")
async def browse(web: Web) -> Reply:
    """A page of the prefix: ``ListObjectsV2``, or with ``versions=1`` ``ListObjectVersions``
    (every key with versions, deleted ones included, so a deleted key can be found and restored)."""
    bucket = web.params["bucket"]
    prefix = web.query.get("prefix", "")
    versions = web.query.get("versions") == "1"
    params: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, "Delimiter": "/", "MaxKeys": PAGE_KEYS}
    more: dict[str, str] = {}  # the next page's query
    if versions:
        if web.query.get("key_marker"):
            params.update(KeyMarker=web.query["key_marker"], VersionIdMarker=web.query.get("version_marker", ""))
        answer = await web.s3("list_object_versions", **params)
        objects = _by_key(answer)
        if answer.get("IsTruncated"):
            more = {
                "key_marker": answer.get("NextKeyMarker", ""),
                "version_marker": answer.get("NextVersionIdMarker", ""),
            }
    else:
        if web.query.get("token"):
            params["ContinuationToken"] = web.query["token"]
        answer = await web.s3("list_objects_v2", **params)
        objects = [
            {"key": o["Key"], "size": o.get("Size", 0), "modified": o.get("LastModified"),
             "class": o.get("StorageClass", ""), "deleted": False, "versions": 0}
            for o in answer.get("Contents", [])
        ]  # fmt: skip
        if answer.get("IsTruncated"):
            more = {"token": answer.get("NextContinuationToken", "")}
    crumbs: list[tuple[str, str]] = []  # (label, prefix)
    acc = ""
    for part in prefix.split("/")[:-1] if prefix else []:
        acc += part + "/"
        crumbs.append((part, acc))
    mode = "1" if versions else ""
    return web.render(
        "browse.html",
        page="browse",
        title=f"{bucket}/{prefix}",
        bucket=bucket,
        prefix=prefix,
        versions=versions,
        mode=mode,
        crumbs=crumbs,
        folders=[p["Prefix"] for p in answer.get("CommonPrefixes", [])],
        objects=objects,
        next_url=console_url(f"browse/{bucket}", prefix=prefix, versions=mode, **more) if more else None,
        first_url=console_url(f"browse/{bucket}", prefix=prefix, versions=mode)
        if web.query.get("token") or web.query.get("key_marker")
        else None,
        ok=web.query.get("ok", ""),
    )


def _by_key(answer: dict[str, Any]) -> list[dict[str, Any]]:
    """A ``ListObjectVersions`` page as one row per key: its newest entry, whether that is a
    delete marker (the key is deleted), and how many versions and markers it has here."""
    rows: dict[str, dict[str, Any]] = {}
    entries = [(v, False) for v in answer.get("Versions", [])] + [(m, True) for m in answer.get("DeleteMarkers", [])]
    for entry, marker in entries:
        row = rows.setdefault(entry["Key"], {"key": entry["Key"], "versions": 0, "deleted": False, "size": None,
                                             "modified": None, "class": ""})  # fmt: skip
        row["versions"] += 1
        if entry.get("IsLatest"):
            row.update(deleted=marker, modified=entry.get("LastModified"), size=None if marker else entry.get("Size"),
                       **{"class": "" if marker else entry.get("StorageClass", "")})  # fmt: skip
    return sorted(rows.values(), key=lambda r: str(r["key"]))


def _version_params(web: Web, bucket: str, key: str, version: str) -> dict[str, Any]:
    params: dict[str, Any] = {"Bucket": bucket, "Key": key}
    if version:
        params["VersionId"] = version
    return params


def _key_of(values: dict[str, str]) -> tuple[str, str]:
    key = values.get("key", "")
    if not key:
        raise Refused(400, "Which object? (no key given)")
    return key, values.get("version", "")


@route("GET", "object/{bucket}")
async def show(web: Web) -> Reply:
    bucket = web.params["bucket"]
    key, version = _key_of(web.query)
    params = _version_params(web, bucket, key, version)
    head: dict[str, Any] | None = None
    head_error = ""
    try:
        head = await web.s3("head_object", **params)
    except S3Error as exc:  # e.g. the current version is a delete marker: the versions still show
        if exc.status == 404 and not exc.code:  # a HEAD's 404 has no body to name its code
            head_error = "No current version: the key is deleted (see its versions below) or never existed."
        else:
            head_error = f"{exc.code or exc.status}: {exc.message}"
    tags: list[dict[str, str]] = []
    tags_error = ""
    if head is not None:
        try:
            tags = (await web.s3("get_object_tagging", **params)).get("TagSet", [])
        except S3Error as exc:
            tags_error = f"{exc.code}: {exc.message}"
    versions, versions_error = await _versions(web, bucket, key)
    preview = await _preview(web, bucket, key, version, head) if head is not None else None
    return web.render(
        "object.html",
        page="browse",
        title=key,
        bucket=bucket,
        key=key,
        version=version,
        parent=key.rpartition("/")[0] + "/" if "/" in key else "",
        head=head,
        head_error=head_error,
        metadata=sorted((head or {}).get("Metadata", {}).items()),
        tags=tags,
        tags_text="\n".join(f"{t['Key']}={t['Value']}" for t in tags),
        tags_error=tags_error,
        versions=versions,
        versions_error=versions_error,
        preview=preview,
        share=None,
        share_choices=SHARE_CHOICES_S,
        ok=web.query.get("ok", ""),
    )


async def _versions(web: Web, bucket: str, key: str) -> tuple[list[dict[str, Any]], str]:
    """Every version and delete marker of ``key``, newest first (versions of other keys that
    share its prefix are skipped; they sort after it)."""
    out: list[dict[str, Any]] = []
    params: dict[str, Any] = {"Bucket": bucket, "Prefix": key, "MaxKeys": 1000}
    try:
        for _ in range(10):  # at most 10,000 entries of this key
            answer = await web.s3("list_object_versions", **params)
            entries = [{**v, "marker": False} for v in answer.get("Versions", [])]
            entries += [{**m, "marker": True} for m in answer.get("DeleteMarkers", [])]
            mine = [v for v in entries if v["Key"] == key]
            out += mine
            if not answer.get("IsTruncated") or answer.get("NextKeyMarker") != key:
                break
            params.update(KeyMarker=answer["NextKeyMarker"], VersionIdMarker=answer.get("NextVersionIdMarker", ""))
    except S3Error as exc:
        return out, f"{exc.code}: {exc.message}"
    # Newest first: the current one, then by time (stable: S3 lists each kind newest first).
    out.sort(key=lambda v: (bool(v.get("IsLatest")), v.get("LastModified") or 0), reverse=True)
    return out, ""


async def _preview(web: Web, bucket: str, key: str, version: str, head: dict[str, Any]) -> dict[str, Any] | None:
    """What the page shows of the object's bytes: ``{"kind": "text"|"json"|"image"|"parquet", ...}``."""
    content_type = str(head.get("ContentType", "")).split(";")[0].strip().lower()
    lower = key.lower()
    params = _version_params(web, bucket, key, version)
    suffix = "." + lower.rpartition(".")[2] if "." in lower else ""
    if suffix in _IMAGE_TYPES:  # raster images only: an <img> of the object through a presigned GET
        url = web.presign("get_object", 900, ResponseContentType=_IMAGE_TYPES[suffix], **params)
        return {"kind": "image", "url": url}
    if suffix == ".parquet":
        try:
            return {"kind": "parquet", **await _parquet_head(web, params, int(head.get("ContentLength", 0)))}
        except S3Error as exc:
            return {"kind": "error", "message": f"{exc.code}: {exc.message}"}
        except Exception as exc:  # not Parquet after all (pyarrow's error says why)
            return {"kind": "error", "message": f"not a readable Parquet file: {exc}"}
    textual = content_type.startswith("text/") or content_type in ("application/json", "application/x-ndjson")
    if not (textual or lower.endswith(_TEXT_SUFFIXES)):
        return None
    try:
        answer = await web.s3("get_object", Range=f"bytes=0-{PREVIEW_BYTES - 1}", **params)
        data = answer["Body"].read()
    except S3Error as exc:
        return {"kind": "error", "message": f"{exc.code}: {exc.message}"}
    text = data.decode("utf-8", "replace")
    truncated = int(head.get("ContentLength", 0)) > len(data)
    if (content_type == "application/json" or lower.endswith(".json")) and not truncated:
        try:
            return {"kind": "json", "text": json.dumps(json.loads(text), indent=2), "truncated": False}
        except ValueError:
            pass
    return {"kind": "text", "text": text, "truncated": truncated}


class _RangeReader(SeekableReader):
    """A read-only file over ranged GETs (through the dispatcher) for pyarrow, which reads a
    Parquet footer and then the row groups it needs: the preview never downloads the file."""

    def __init__(self, client: Any, params: dict[str, Any], size: int) -> None:
        super().__init__(size)
        self._client, self._params = client, params

    def readinto(self, buffer: Any) -> int:
        n = min(len(buffer), self._size - self._pos)
        if n <= 0:
            return 0
        answer = sync_call(self._client, "get_object", Range=f"bytes={self._pos}-{self._pos + n - 1}", **self._params)
        data = answer["Body"].read()
        buffer[: len(data)] = data
        self._pos += len(data)
        return len(data)


async def _parquet_head(web: Web, params: dict[str, Any], size: int) -> dict[str, Any]:
    client = web.app.dispatch.client("s3", web.endpoint, web.creds)

    def read() -> dict[str, Any]:
        import pyarrow.parquet as pq

        f = pq.ParquetFile(io.BufferedReader(_RangeReader(client, params, size), buffer_size=1024 * 1024))
        batch = next(f.iter_batches(batch_size=PREVIEW_ROWS), None)
        columns = list(f.schema_arrow.names)
        rows = [[_cell(v) for v in row.values()] for row in batch.to_pylist()] if batch is not None else []
        return {"columns": columns, "rows": rows, "total_rows": f.metadata.num_rows}

    return await web.app.dispatch.in_thread(read, web.client_addr)


def _cell(value: Any) -> str:
    text = repr(value) if isinstance(value, bytes) else str(value)
    return text if len(text) <= 200 else text[:200] + "…"


@route("GET", "object/{bucket}/download")
async def download(web: Web) -> Reply:
    """A presigned GET (as an attachment) the browser follows: the bytes never pass the console."""
    bucket = web.params["bucket"]
    key, version = _key_of(web.query)
    name = key.rpartition("/")[2] or "download"
    disposition = f"attachment; filename*=UTF-8''{quote(name, safe='')}"
    url = web.presign(
        "get_object", 300, ResponseContentDisposition=disposition, **_version_params(web, bucket, key, version)
    )
    return web.redirect(url.removeprefix(web.endpoint))


@route("POST", "object/{bucket}/delete")
async def delete(web: Web) -> Reply:
    bucket = web.params["bucket"]
    key, version = _key_of(await web.form())
    await web.s3("delete_object", **_version_params(web, bucket, key, version))
    if version:
        return web.redirect(console_url(f"object/{bucket}", key=key, ok=f"Deleted version {version}."))
    parent = key.rpartition("/")[0] + "/" if "/" in key else ""
    return web.redirect(console_url(f"browse/{bucket}", prefix=parent, ok=f"Deleted {key}."))


@route("POST", "object/{bucket}/tags")
async def tags(web: Web) -> Reply:
    bucket = web.params["bucket"]
    form = await web.form()
    key, version = _key_of(form)
    tag_set = []
    for line in form.get("tags", "").splitlines():
        if not line.strip():
            continue
        name, sep, value = line.partition("=")
        if not sep:
            raise Refused(400, f"A tag is NAME=VALUE, one a line; not {line!r}.")
        tag_set.append({"Key": name.strip(), "Value": value.strip()})
    params = _version_params(web, bucket, key, version)
    if tag_set:
        await web.s3("put_object_tagging", Tagging={"TagSet": tag_set}, **params)
    else:
        await web.s3("delete_object_tagging", **params)
    return web.redirect(console_url(f"object/{bucket}", key=key, version=version, ok="Tags saved."))


@route("POST", "object/{bucket}/restore")
async def restore(web: Web) -> Reply:
    """ "Restore this version": copy it over the key (S3's way), so it becomes the current version
    and every other version stays."""
    bucket = web.params["bucket"]
    key, version = _key_of(await web.form())
    if not version:
        raise Refused(400, "Restore needs the version to restore.")
    await web.s3("copy_object", Bucket=bucket, Key=key, CopySource={"Bucket": bucket, "Key": key, "VersionId": version})
    return web.redirect(console_url(f"object/{bucket}", key=key, ok=f"Restored version {version}."))


@route("POST", "object/{bucket}/share")
async def share(web: Web) -> Reply:
    """A share link: a presigned GET. It works without a session, until its expiry or the end
    of the console session that signed it, whichever comes first (STS credentials)."""
    bucket = web.params["bucket"]
    form = await web.form()
    key, version = _key_of(form)
    try:
        expires_s = int(form.get("expires_s", "3600"))
    except ValueError:
        raise Refused(400, "The expiry is a number of seconds.") from None
    if expires_s not in SHARE_CHOICES_S:
        raise Refused(400, "Choose one of the offered expiries.")
    assert web.session is not None
    session_left_s = max(0, web.session.expires_s - int(time.time()))
    url = web.presign("get_object", expires_s, **_version_params(web, bucket, key, version))
    return web.render(
        "share.html",
        page="browse",
        title=f"Share {key}",
        bucket=bucket,
        key=key,
        version=version,
        link=url,
        expires_s=expires_s,
        works_s=min(expires_s, session_left_s),
    )


# --- uploads: the browser sends the bytes to presigned URLs (console.js) -------------------
@route("POST", "upload/{bucket}")
async def upload_start(web: Web) -> Reply:
    """``{"key", "size", "type"}`` -> ``{"url"}`` (one presigned PUT) or, above PART_BYTES,
    ``{"upload_id", "part_bytes", "parts": [url, ...]}`` (a multipart upload started through the
    dispatcher, and a presigned URL per part)."""
    bucket = web.params["bucket"]
    doc = await web.json()
    try:
        key, size, content_type = str(doc["key"]), int(doc["size"]), str(doc.get("type") or "application/octet-stream")
    except (KeyError, TypeError, ValueError):
        raise Refused(400, "An upload names key, size and type.") from None
    if not key or size < 0:
        raise Refused(400, "An upload needs a key and a size.")
    if size <= PART_BYTES:
        url = web.presign("put_object", UPLOAD_URL_S, Bucket=bucket, Key=key, ContentType=content_type)
        return _json({"url": url})
    parts = math.ceil(size / PART_BYTES)
    if parts > 10_000:
        raise Refused(400, "The file is too large for a browser upload (10,000 parts of 8 MiB).")
    started = await web.s3("create_multipart_upload", Bucket=bucket, Key=key, ContentType=content_type)
    upload_id = started["UploadId"]
    urls = [
        web.presign("upload_part", UPLOAD_URL_S, Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=n)
        for n in range(1, parts + 1)
    ]
    return _json({"upload_id": upload_id, "part_bytes": PART_BYTES, "parts": urls})


@route("POST", "upload/{bucket}/complete")
async def upload_complete(web: Web) -> Reply:
    """``{"key", "upload_id", "etags": [etag of part 1, ...]}``: CompleteMultipartUpload."""
    bucket = web.params["bucket"]
    doc = await web.json()
    try:
        key, upload_id, etags = str(doc["key"]), str(doc["upload_id"]), [str(t) for t in doc["etags"]]
    except (KeyError, TypeError, ValueError):
        raise Refused(400, "Completing an upload names key, upload_id and etags.") from None
    parts = [{"PartNumber": n, "ETag": etag} for n, etag in enumerate(etags, start=1)]
    await web.s3(
        "complete_multipart_upload", Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
    )
    return _json({"ok": True})


@route("POST", "upload/{bucket}/abort")
async def upload_abort(web: Web) -> Reply:
    bucket = web.params["bucket"]
    doc = await web.json()
    try:
        key, upload_id = str(doc["key"]), str(doc["upload_id"])
    except (KeyError, TypeError):
        raise Refused(400, "Aborting an upload names key and upload_id.") from None
    await web.s3("abort_multipart_upload", Bucket=bucket, Key=key, UploadId=upload_id)
    return _json({"ok": True})


def _json(doc: Any) -> Reply:
    return Reply(200, json.dumps(doc).encode(), "application/json")
