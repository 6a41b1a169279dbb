"""Datasets: named, immutable, versioned manifests of samples that pin the bytes they name.

``NAME@N`` is a Parquet manifest stored as a blob and registered in the catalog's ``datasets``
table (docs/datasets.md). Creating a version reads the source (a prefix, a metadata query or
explicit rows), writes the manifest, then in one catalog transaction checks that every pinned
blob and inline body still exists, counts a reference on each and publishes the version. So a
dataset keeps reading the bytes it was built from after its keys are overwritten or deleted,
and reads through it address the bytes directly: no key lookup, no LIST.
"""

from __future__ import annotations

import asyncio
import builtins
import io
import json
import logging
from collections import OrderedDict
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Coroutine, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from tierstore.catalog import BlobRef, Catalog, DatasetRecord, HoldInfo, PinGone, VersionTaken
from tierstore.engine._dataset_tiers import (
    MoveProgress,
    NoSuchPin,
    archive_version,
    parse_holder,
    pin_holder,
    pin_version,
)
from tierstore.engine._encryption import Streams, check_read_key, open_data_key, open_range
from tierstore.engine._manifest_reads import ManifestReads
from tierstore.engine._service import ObjectService
from tierstore.errors import (
    AccessDenied,
    InternalError,
    InvalidRequest,
    NoSuchDataset,
    TierstoreError,
)
from tierstore.runtime import new_blob_id
from tierstore.types import MANIFEST_COLUMNS, MANIFEST_META_KEY, DatasetRef, ObjectKey

if TYPE_CHECKING:
    from tierstore.engine._gateway_pins import GatewayPins

# DatasetRecord: the catalog's, for api/
__all__ = ["DatasetRecord", "DatasetService", "DatasetSpec", "MayRead", "MoveProgress", "NoSuchPin", "RowRead"]

# The caller's read rights, asked by create before a source is looked at: (bucket, None, None)
# before a bucket is listed (a prefix or a query), (bucket, key, version_id) before a row's
# object is; it raises AccessDenied. api/ checks them through its authorizer (docs/security.md).
MayRead = Callable[[str, str | None, str | None], Awaitable[None]]

log = logging.getLogger("tierstore.datasets")

MAX_ROWS = 50_000_000
MAX_COLUMNS = 64
_PAGE = 10_000
_CHUNK_ROWS = 65_536  # manifest rows per Arrow chunk while building, and per Parquet row group
_MANIFEST_CHUNK = 1 << 20
_CREATE_ATTEMPTS = 5
_CACHED_MANIFESTS = 8
_ENC = "enc"
_Opened = tuple[bytes, Streams, int]  # an encrypted row's data key, stream layout, package size


class Rows(Protocol):
    """Explicit rows: a list, or the API's lazily parsed JSON array (iterable more than once)."""

    def __len__(self) -> int: ...
    def __iter__(self) -> Iterator[Any]: ...


@dataclass(slots=True)
class DatasetSpec:
    """What a new dataset version is made of: exactly one of ``prefix`` (with ``bucket``),
    ``query`` (with ``bucket``) or ``rows`` (dicts: bucket, key, version_id?, offset?, size?,
    member?, label?, columns?). ``label``: ``meta:NAME``, ``tag:NAME`` or ``dir`` (the key's
    parent directory name); ``columns``: ``meta:NAME`` / ``tag:NAME`` copied into the manifest."""

    bucket: str | None = None
    prefix: str | None = None
    query: str | None = None
    rows: Rows | None = None
    label: str | None = None
    columns: list[str] = field(default_factory=list)
    lineage: dict[str, Any] | None = None

    def validate(self) -> None:
        given = [x is not None for x in (self.prefix, self.query, self.rows)]
        if sum(given) != 1:
            raise InvalidRequest("A dataset is made from exactly one of: a prefix, a query, rows.")
        if self.rows is None and not self.bucket:
            raise InvalidRequest("A dataset from a prefix or a query needs a bucket.")
        for spec in ([self.label] if self.label else []) + self.columns:
            kind, _, name = spec.partition(":")
            if not (spec == "dir" and spec is self.label) and (kind not in ("meta", "tag") or not name):
                raise InvalidRequest(f"Bad column {spec!r}: use meta:NAME or tag:NAME (or dir for the label).")
        if len(self.columns) > MAX_COLUMNS:
            raise InvalidRequest(f"At most {MAX_COLUMNS} metadata columns.")
        if self.lineage is not None and not isinstance(self.lineage, dict):
            raise InvalidRequest("lineage is a JSON object.")

    def source(self) -> dict[str, Any]:
        if self.rows is not None:
            return {"rows": len(self.rows)}
        if self.query is not None:
            return {"bucket": self.bucket, "query": self.query}
        return {"bucket": self.bucket, "prefix": self.prefix}


@dataclass(slots=True)
class RowRead:
    """One manifest row as a batch read serves it: its bytes in memory (``data``: inline bodies),
    or streamed (``body``: blobs), or the error that stopped it."""

    length: int = 0
    data: bytes | None = None
    body: AsyncIterator[bytes] | None = None
    error: TierstoreError | None = None
    status: int = 200  # 206 for a range of an object read by key
    key: str = ""  # for error reports


def _label_of(spec: str | None, key: str, user_meta: dict[str, str], tags: dict[str, str]) -> str | None:
    if spec is None:
        return None
    if spec == "dir":
        parent = key.rpartition("/")[0]
        return parent.rpartition("/")[2] or None
    kind, _, name = spec.partition(":")
    return (user_meta if kind == "meta" else tags).get(name)


# How an encrypted version's metadata JSON shows it (catalog/_rules.py ``meta_doc``: compact JSON,
# and no other value of the document is an object under the key "e").
_ENCRYPTED = '"e":{'


def _loc(blobs: Sequence[BlobRef] | Sequence[Sequence[Any]], inline_id: str | None) -> str:
    """The opaque location of a version's bytes: ``i:<inline id>`` or ``b:<id>:<size>,...``."""
    if inline_id is not None:
        return f"i:{inline_id}"
    refs = [(b.blob_id, b.size_bytes) if isinstance(b, BlobRef) else (b[0], b[1]) for b in blobs]
    return "b:" + ",".join(f"{blob_id}:{size}" for blob_id, size in refs)


def _enc(doc: dict[str, Any] | None, parts: list[int] | None) -> str | None:
    """The ``enc`` column of an encrypted row (None: stored in clear)."""
    if not doc:
        return None
    return json.dumps({"e": doc, "p": parts or []}, separators=(",", ":"))


def _parse_loc(loc: str) -> tuple[str | None, list[BlobRef]]:
    kind, _, rest = loc.partition(":")
    if kind == "i":
        return rest, []
    if kind == "b":
        if not rest:
            return None, []
        refs = []
        for piece in rest.split(","):
            blob_id, _, size = piece.rpartition(":")
            refs.append(BlobRef(blob_id, int(size)))
        return None, refs
    raise InternalError(f"bad manifest location {loc[:40]!r}")


def _collect_pins(loc: str, blobs: dict[str, None], inline: dict[str, None]) -> None:
    if loc.startswith("i:"):
        inline[loc[2:]] = None
    elif len(loc) > 2:
        for piece in loc[2:].split(","):
            blobs[piece.rpartition(":")[0]] = None


def pins_of(locs: Iterable[str]) -> tuple[list[str], list[str]]:
    """The distinct blob ids and inline ids the locations ``locs`` read (what a version pins)."""
    blobs: dict[str, None] = {}
    inline: dict[str, None] = {}
    for loc in locs:
        _collect_pins(loc, blobs, inline)
    return list(blobs), list(inline)


class _Columns:
    """A manifest being built, column by column: rows gather in Python lists that become Arrow
    chunks every ``_CHUNK_ROWS`` rows (a million rows as Python objects would hold ~1 GiB), and
    the bytes the rows read are collected for pinning as they come."""

    def __init__(self, extra: list[str]) -> None:
        import pyarrow as pa

        self.extra = {spec: spec.replace(":", ".", 1) for spec in extra}
        # ``enc``: an encrypted row's "e" document and part sizes (JSON), what reading it needs
        # even after its version is gone (docs/encryption.md "Datasets"); only in manifests
        # that have an encrypted row.
        names = [*MANIFEST_COLUMNS, *self.extra.values(), _ENC]
        self.cols: dict[str, list[Any]] = {name: [] for name in names}
        self.types = {name: pa.int64() if name in ("offset", "size") else pa.string() for name in names}
        self.chunks: dict[str, list[Any]] = {name: [] for name in names}
        self.rows = 0
        self.bytes = 0
        self.blob_pins: dict[str, None] = {}
        self.inline_pins: dict[str, None] = {}
        self.encrypted = 0

    def add(
        self,
        *,
        bucket: str,
        key: str,
        version_id: str,
        etag: str,
        offset: int | None,
        size: int,
        member: str | None,
        label: str | None,
        loc: str,
        user_meta: dict[str, str],
        tags: dict[str, str],
        enc: str | None = None,
    ) -> None:
        c = self.cols
        c["bucket"].append(bucket)
        c["key"].append(key)
        c["version_id"].append(version_id)
        c["etag"].append(etag)
        c["offset"].append(offset)
        c["size"].append(size)
        c["member"].append(member)
        c["label"].append(label)
        c["loc"].append(loc)
        c[_ENC].append(enc)
        self.encrypted += enc is not None
        for spec, name in self.extra.items():
            kind, _, attr = spec.partition(":")
            c[name].append((user_meta if kind == "meta" else tags).get(attr))
        _collect_pins(loc, self.blob_pins, self.inline_pins)
        self.bytes += size
        self.rows += 1
        if self.rows > MAX_ROWS:
            raise InvalidRequest(f"A dataset holds at most {MAX_ROWS} samples.")
        if len(c["key"]) >= _CHUNK_ROWS:
            self._flush()

    def _flush(self) -> None:
        import pyarrow as pa

        for name, values in self.cols.items():
            if values:
                self.chunks[name].append(pa.array(values, type=self.types[name]))
                values.clear()

    def __len__(self) -> int:
        return self.rows

    def parquet(self, info: dict[str, Any]) -> bytes:
        import pyarrow as pa
        import pyarrow.parquet as pq

        self._flush()
        arrays = {
            name: pa.chunked_array(chunks, type=self.types[name])
            for name, chunks in self.chunks.items()
            if name != _ENC or self.encrypted
        }
        table = pa.table(arrays)
        table = table.replace_schema_metadata({MANIFEST_META_KEY: json.dumps(info).encode()})
        buf = io.BytesIO()
        pq.write_table(table, buf, compression="zstd", row_group_size=_CHUNK_ROWS)
        return buf.getvalue()


@dataclass(slots=True)
class _Locations:
    """What a batch read needs of a manifest, as Python lists (built once per process); the
    keys stay an Arrow column, read only to name a row in an error."""

    locs: list[str]
    offsets: list[int | None]
    sizes: list[int]
    keys: Any
    buckets: Any
    versions: Any
    encs: list[str | None] | None  # the ``enc`` column, when the manifest has encrypted rows

    def key(self, row: int) -> str:
        return str(self.keys[row].as_py())

    def bucket(self, row: int) -> str:
        return str(self.buckets[row].as_py())


class DatasetService:
    """Create, list, show, delete dataset versions and read their rows; built on ObjectService's
    catalog and blob store (the engine layer), reached by api/ as ``service.datasets``.

    Model versions (engine/_models.py) are the same thing in another table: a manifest that pins
    the bytes of a checkpoint. ``ModelService`` subclasses this and changes the class attributes."""

    table = "datasets"  # the catalog's table (catalog.PINNING_TABLES)
    kind = "dataset"  # in messages and logs
    missing: type[TierstoreError] = NoSuchDataset

    def __init__(self, service: ObjectService) -> None:
        self.service = service
        self._locations: OrderedDict[tuple[str, int, str], _Locations] = OrderedDict()
        # moves of a version's bytes running in this process (archive): joined, not started twice
        self._moves: dict[tuple[str, str, int, str], tuple[asyncio.Task[MoveProgress], MoveProgress]] = {}
        # With --store: this gateway's fill of every live pin (engine/_gateway_pins.py; server.py sets it)
        self.gateway_pins: GatewayPins | None = None
        # a manifest's head, chosen columns and diffs, by ranged reads of its blob
        self.reads = ManifestReads(service)

    @property
    def catalog(self) -> Catalog:
        return self.service.catalog

    # --- metadata ------------------------------------------------------------------
    def check_name(self, name: str) -> None:
        """``InvalidArgument`` unless ``name`` is a valid name (no version)."""
        DatasetRef.parse(name)

    async def get(self, name: str, version: int | None = None) -> DatasetRecord:
        self.check_name(name)
        record = await self.catalog.get_dataset(name, version, table=self.table)
        if record is None:
            raise self.missing(resource=name if version is None else f"{name}@{version}")
        return record

    async def list(self, name: str | None = None) -> list[DatasetRecord]:
        return await self.catalog.list_datasets(name, table=self.table)

    async def manifest_bytes(self, record: DatasetRecord) -> bytes:
        chunks = [c async for c in await self.service.blobs.get(record.manifest_blob, 0, record.manifest_bytes)]
        return b"".join(chunks)

    # --- create --------------------------------------------------------------------
    async def create(self, name: str, spec: DatasetSpec, *, may_read: MayRead | None = None) -> DatasetRecord:
        """Make the next version of ``name`` from ``spec``. Retries (rebuilding the manifest)
        when a pinned object changed or another version was published meanwhile. ``may_read``:
        the caller's read rights on every source, asked before the source is looked at."""
        ref = DatasetRef.parse(name)
        if ref.version is not None:
            raise InvalidRequest("Name a dataset to create without a version: the catalog numbers them.")
        spec.validate()
        columns = [c.replace(":", ".", 1) for c in spec.columns]  # as _Columns names them
        extra = {"label": spec.label, "columns": columns, "lineage": spec.lineage}
        return await self._publish(name, spec, extra, may_read)

    async def _publish(
        self, name: str, spec: DatasetSpec, extra: dict[str, Any], may_read: MayRead | None = None
    ) -> DatasetRecord:
        """Build, store and publish the next version of ``name`` from ``spec`` (validated) in
        ``self.table``; ``extra``: what the record says besides name, version, created, source."""
        for attempt in range(_CREATE_ATTEMPTS):
            version = await self.catalog.next_dataset_version(name, table=self.table)
            cols = await self._collect(spec, may_read)  # seconds for a million rows: it yields per page
            created_ns = self.service.clock.now_ns()
            info = {"name": name, "version": version, "created_ns": created_ns, "source": spec.source(), **extra}
            data = await asyncio.to_thread(cols.parquet, info)
            blob_id = new_blob_id()

            async def chunks(data: bytes = data) -> AsyncIterator[bytes]:
                for start in range(0, len(data), _MANIFEST_CHUNK):
                    yield data[start : start + _MANIFEST_CHUNK]

            await self.service.blobs.put(blob_id, chunks())
            record = DatasetRecord(
                name, version, blob_id, len(data), created_ns, len(cols), cols.bytes,
                {k: v for k, v in info.items() if k not in ("name", "version", "created_ns")},
            )  # fmt: skip
            blobs, inline = list(cols.blob_pins), list(cols.inline_pins)
            try:
                await self.catalog.create_dataset(record, blobs, inline, table=self.table)
            except (PinGone, VersionTaken) as exc:
                await self.service.blobs.delete(blob_id)
                log.info("%s %s@%d: %r changed meanwhile (try %d); rebuilding", self.kind, name, version, exc,
                         attempt + 1)  # fmt: skip
                continue
            except BaseException:
                await self.service.blobs.delete(blob_id)
                raise
            log.info("%s %s@%d created: %d rows, %d bytes", self.kind, name, version, record.rows, record.bytes)
            return record
        raise InvalidRequest(f"The source of {name} kept changing while its manifest was built; try again.")

    async def _collect(self, spec: DatasetSpec, may_read: MayRead | None = None) -> _Columns:
        """The manifest's columns. On the event loop (the catalog's reads are awaitable), which it
        gives to other requests after each page of ``_PAGE`` rows."""
        cols = _Columns(spec.columns)
        need_meta = spec.label not in (None, "dir") or bool(spec.columns)
        if spec.bucket is not None and spec.rows is None and may_read is not None:
            await may_read(spec.bucket, None, None)  # before the bucket's existence shows
        if spec.prefix is not None:
            assert spec.bucket is not None
            await self.service.head_bucket(spec.bucket)
            after: bytes | None = None
            while True:
                page = await self.catalog.manifest_rows(spec.bucket, spec.prefix.encode(), after, _PAGE)
                for key_b, version_id, size, etag, meta_s, blobs_s, inline_id in page:
                    key = bytes(key_b).decode()
                    if may_read is not None:
                        await may_read(spec.bucket, key, None)
                    # a JSON parse per row only where needed: the text test is cheap
                    doc = json.loads(meta_s) if need_meta or _ENCRYPTED in meta_s else {}
                    loc = _loc(json.loads(blobs_s), inline_id)
                    user_meta, tags = doc.get("u", {}), doc.get("t", {})
                    label = _label_of(spec.label, key, user_meta, tags)
                    cols.add(bucket=spec.bucket, key=key, version_id=version_id, etag=etag, offset=None, size=size,
                             member=None, label=label, loc=loc, user_meta=user_meta, tags=tags,
                             enc=_enc(doc.get("e"), doc.get("p")))  # fmt: skip
                if len(page) < _PAGE:
                    return cols
                after = bytes(page[-1][0])
                await asyncio.sleep(0)
        if spec.query is not None:
            assert spec.bucket is not None
            cursor: str | None = None
            while True:
                records, cursor = await self.catalog.query(spec.bucket, spec.query, cursor)
                for r in records:
                    m = r.meta
                    if may_read is not None:
                        await may_read(spec.bucket, m.key, None)
                    label = _label_of(spec.label, m.key, m.user_meta, m.tags)
                    cols.add(bucket=spec.bucket, key=m.key, version_id=m.version_id, etag=m.etag, offset=None,
                             size=m.size_bytes, member=None, label=label, loc=_loc(r.blobs, r.inline_id),
                             user_meta=m.user_meta, tags=m.tags, enc=_enc(m.encryption, m.parts))  # fmt: skip
                if cursor is None:
                    return cols
                await asyncio.sleep(0)
        assert spec.rows is not None
        for i, row in enumerate(spec.rows):
            await self._add_row(cols, i, row, spec, may_read)
            if i % _PAGE == _PAGE - 1:
                await asyncio.sleep(0)
        return cols

    async def _add_row(self, cols: _Columns, i: int, row: Any, spec: DatasetSpec, may_read: MayRead | None) -> None:
        if not isinstance(row, dict):
            raise InvalidRequest(f"Row {i} is not an object.")
        bucket, key, version_id = row.get("bucket"), row.get("key"), row.get("version_id")
        offset, size, member, label = row.get("offset"), row.get("size"), row.get("member"), row.get("label")
        if not isinstance(bucket, str) or not isinstance(key, str):
            raise InvalidRequest(f"Row {i} needs a bucket and a key.")
        ObjectKey(key)
        if not all(isinstance(v, (str, type(None))) for v in (version_id, member, label)):
            raise InvalidRequest(f"Row {i}: version_id, member and label are strings.")
        if not all(v is None or (isinstance(v, int) and not isinstance(v, bool) and v >= 0) for v in (offset, size)):
            raise InvalidRequest(f"Row {i}: offset and size are integers >= 0.")
        if may_read is not None:
            await may_read(bucket, key, version_id)  # before the row's existence shows
        try:
            record = await self.service.version_record(bucket, key, version_id)
        except TierstoreError as exc:  # missing bucket, key or version; a delete marker
            raise InvalidRequest(f"Row {i} ({bucket}/{key}): {exc}") from exc
        m = record.meta
        if offset is None and size is None:
            size = m.size_bytes
        elif offset is None or size is None or offset + size > m.size_bytes:
            raise InvalidRequest(f"Row {i}: offset and size go together and must lie within the object.")
        if label is None:
            label = _label_of(spec.label, m.key, m.user_meta, m.tags)
        cols.add(bucket=bucket, key=m.key, version_id=m.version_id, etag=m.etag, offset=offset, size=size,
                 member=member, label=label, loc=_loc(record.blobs, record.inline_id), user_meta=m.user_meta,
                 tags=m.tags, enc=_enc(m.encryption, m.parts))  # fmt: skip

    # --- delete --------------------------------------------------------------------
    async def delete(self, name: str, version: int) -> None:
        """Remove ``name@version`` and release what it pinned (bytes no longer referenced by any
        version or dataset are collected)."""
        record = await self.get(name, version)
        locations = await self._load(record)
        blobs, inline = pins_of(locations.locs)
        await self.catalog.delete_dataset(name, version, blobs, inline, table=self.table)
        self._locations.pop((record.name, record.version, record.manifest_blob), None)
        await self.service.drain_trash()

    # --- moving a version's bytes (docs/tiers.md "Dataset archive") ----------------------
    async def archive(self, name: str, version: int, tier: str) -> tuple[asyncio.Task[MoveProgress], MoveProgress]:
        """Start moving every blob and inline body ``name@version`` names to ``tier`` (or join
        the same move already running in this process): the task and its live progress. A
        missing version or tier raises here, before anything starts."""
        record = await self.get(name, version)
        await self.service.tiers.get(tier)
        running = self._moves.get(("archive", name, version, tier))
        if running is not None and not running[0].done():
            return running
        progress = MoveProgress(f"{name}@{version}", "archive", tier)
        data = await self.manifest_bytes(record)
        return self._start(("archive", name, version, tier), progress,
                           archive_version(self.service, self.table, record, data, tier, progress))  # fmt: skip

    def _start(
        self, key: tuple[str, str, int, str], progress: MoveProgress, work: Coroutine[Any, Any, MoveProgress]
    ) -> tuple[asyncio.Task[MoveProgress], MoveProgress]:
        task = asyncio.create_task(work)
        self._moves[key] = (task, progress)
        task.add_done_callback(lambda t: self._moves.pop(key) if self._moves.get(key, (None,))[0] is t else None)
        return task, progress

    async def pin(
        self, name: str, version: int, job: str, *, ttl_s: float | None = None
    ) -> tuple[asyncio.Task[MoveProgress], MoveProgress]:
        """Hold every blob ``name@version`` names for job ``job`` (until ``unpin`` or ``ttl_s``
        from now) and start copying the remote ones locally (or join the copy running in this
        process): the task and its live progress. Pinning again renews the TTL and resumes."""
        record = await self.get(name, version)
        ref = f"{name}@{version}"
        holder = pin_holder(job, ref)
        if ttl_s is not None and not 0 < ttl_s <= 366 * 86_400:
            raise InvalidRequest("A pin's TTL is from 1 second to 366 days.")
        blobs, _ = pins_of((await self._load(record)).locs)  # inline bodies live in the catalog: local
        expires_ns = None if ttl_s is None else self.service.clock.now_ns() + int(ttl_s * 1e9)
        await self.service.hold_blobs(holder, blobs, expires_ns=expires_ns)
        running = self._moves.get(("pin", name, version, job))
        if running is not None and not running[0].done():
            return running
        # the worker keeps off it from now on while this request copies (it takes over if the request dies)
        await self.catalog.hot_renew(holder, self.service.clock.now_ns() + int(self.service.hot.lease_s * 1e9))
        progress = MoveProgress(ref, "pin", job)
        return self._start(("pin", name, version, job), progress, pin_version(self.service, holder, progress))

    async def unpin(self, name: str, version: int, job: str) -> None:
        """Drop job ``job``'s pin of ``name@version``: copies no other hold needs are freed."""
        ref = f"{name}@{version}"
        if not await self.service.release_hold(pin_holder(job, ref)):
            raise NoSuchPin(f"Job {job} holds no pin of {ref}.", resource=ref)

    async def gateway_blobs(self, name: str, version: int) -> builtins.list[str]:
        """What a gateway caches for a pin of ``name@version``: its blobs and its manifest."""
        record = await self.get(name, version)
        blobs, _ = pins_of((await self._load(record)).locs)
        return [*blobs, record.manifest_blob]

    async def jobs(self) -> builtins.list[tuple[str, str, HoldInfo]]:
        """Every pin: (job, NAME@N, its hold: remote blobs and bytes, copied, expiry), by job."""
        out = []
        for info in await self.service.list_holds("pin:"):
            parsed = parse_holder(info.holder)
            if parsed is not None:
                out.append((*parsed, info))
        return out

    # --- reads ---------------------------------------------------------------------
    async def _load(self, record: DatasetRecord) -> _Locations:
        cache_key = (record.name, record.version, record.manifest_blob)
        found = self._locations.get(cache_key)
        if found is not None:
            self._locations.move_to_end(cache_key)
            return found
        from tierstore._parquet import read_parquet

        data = await self.manifest_bytes(record)
        names = ["loc", "offset", "size", "key", "bucket", "version_id"]
        try:
            table = read_parquet(data, [*names, _ENC])
        except (KeyError, ValueError):  # a manifest without encrypted rows has no such column
            table = read_parquet(data, names)
        found = _Locations(
            table.column("loc").to_pylist(),
            table.column("offset").to_pylist(),
            table.column("size").to_pylist(),
            table.column("key"),
            table.column("bucket"),
            table.column("version_id"),
            table.column(_ENC).to_pylist() if _ENC in table.column_names else None,
        )
        self._locations[cache_key] = found
        while len(self._locations) > _CACHED_MANIFESTS:
            self._locations.popitem(last=False)
        return found

    async def open_rows(
        self,
        name: str,
        version: int,
        rows: Sequence[int],
        *,
        may_read: Callable[[str, str], Awaitable[bool]] | None = None,
    ) -> AsyncIterator[RowRead]:
        """Rows ``rows`` of ``name@version``, in request order. Raises before the first row if
        the dataset is missing or a row number is out of range; after that, a row that cannot
        be read is a ``RowRead`` with ``error`` (the caller decides whether to go on).
        ``may_read(bucket, key)``: whether the caller may read the object a row came from; a row
        it may not is an ``AccessDenied`` row, its bytes never read."""
        record = await self.get(name, version)
        loc = await self._load(record)
        n = len(loc.locs)
        for r in rows:
            if not 0 <= r < n:
                raise InvalidRequest(f"Row {r} is out of range: {name}@{version} has {n} rows.")
        if may_read is not None:
            denied = {r for r in rows if not await may_read(loc.bucket(r), loc.key(r))}
            if denied:
                return self._rows(loc, rows, denied)
        return self._rows(loc, rows)

    async def source_columns(self, record: DatasetRecord) -> tuple[Any, Any]:
        """The bucket and key of every row of ``record``: two Arrow columns in row order
        (duplicates included), nothing decoded."""
        loc = await self._load(record)
        return loc.buckets, loc.keys

    async def _rows(
        self, loc: _Locations, rows: Sequence[int], denied: frozenset[int] | set[int] = frozenset()
    ) -> AsyncIterator[RowRead]:
        inline_ids = {r: loc.locs[r][2:] for r in rows if loc.locs[r].startswith("i:") and r not in denied}
        opened: dict[tuple[str, str, str, str], _Opened] = {}  # data keys of this batch's rows
        bodies: dict[str, bytes] | None = None
        for r in rows:
            if r in denied:
                yield RowRead(error=AccessDenied("Access Denied"), key=loc.key(r))
                continue
            offset, size = loc.offsets[r], loc.sizes[r]
            start = offset or 0
            inline_id = inline_ids.get(r)
            if inline_id is not None:
                if bodies is None:  # all of the batch's inline bodies in one query
                    try:
                        bodies = await self.catalog.inline_bodies(list(inline_ids.values()))
                    except TierstoreError:  # one damaged body: read them one by one below
                        bodies = {}
                data = bodies.get(inline_id)
                if data is None:
                    try:
                        data = (await self.catalog.inline_bodies([inline_id])).get(inline_id)
                    except TierstoreError as exc:
                        yield RowRead(error=exc, key=loc.key(r))
                        continue
                if data is None:
                    missing = InternalError(f"The pinned bytes of {loc.key(r)!r} are missing.")
                    yield RowRead(error=missing, key=loc.key(r))
                    continue
                if loc.encs is not None and loc.encs[r] is not None:
                    yield await self._encrypted_row(loc, r, start, size, opened, data=data)
                    continue
                yield RowRead(size, data=data[start : start + size])
                continue
            _, refs = _parse_loc(loc.locs[r])
            if loc.encs is not None and loc.encs[r] is not None:
                yield await self._encrypted_row(loc, r, start, size, opened, refs=refs)
                continue
            try:
                body = await self.service.read_refs(refs, start, size, what=loc.key(r))
            except TierstoreError as exc:  # e.g. in an archive tier: this row only
                yield RowRead(error=exc, key=loc.key(r))
                continue
            yield RowRead(size, body=body)

    async def _encrypted_row(
        self,
        loc: _Locations,
        r: int,
        start: int,
        size: int,
        opened: dict[tuple[str, str, str, str], _Opened],
        *,
        data: bytes | None = None,
        refs: Sequence[BlobRef] = (),
    ) -> RowRead:
        """Row ``r`` of an encrypted object: its data key unwrapped and the row binding checked
        (the ``enc`` column keeps the version's "e" document and part sizes) once per batch
        (``opened``: rows of one object, e.g. members of an archive, share it), then only the
        packages ``[start, start+size)`` touches, each verified. SSE-S3/KMS read transparently;
        an SSE-C row cannot be read without its key, which a batch does not carry: a per-row 400."""
        key, bucket, version_id = loc.key(r), loc.bucket(r), str(loc.versions[r].as_py())
        assert loc.encs is not None
        enc_s = loc.encs[r] or "{}"
        found = opened.get((bucket, key, version_id, enc_s))
        if found is None:
            enc = json.loads(enc_s)
            doc, parts = enc.get("e", {}), enc.get("p", [])
            try:
                check_read_key(doc, None)
                data_key, streams = await open_data_key(
                    self.service.kms, doc, bucket=bucket, key=key, version_id=version_id, size=int(doc.get("n", -1)),
                    part_sizes=parts, customer_key=None,
                )  # fmt: skip
            except TierstoreError as exc:
                return RowRead(error=exc, key=key)
            found = opened[(bucket, key, version_id, enc_s)] = (data_key, streams, int(doc["ps"]))
        data_key, streams, package_bytes = found
        service = self.service

        async def read(offset: int, length: int, verify: bool) -> AsyncGenerator[bytes, None]:
            if data is not None:
                yield data[offset : offset + length]
                return
            async for chunk in await service.read_refs(list(refs), offset, length, verify=verify, what=key):
                yield chunk

        name = (bucket, key, version_id)
        body = open_range(read, data_key, streams, start, size, package_bytes=package_bytes, name=name)
        return RowRead(size, body=body)
