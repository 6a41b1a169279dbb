"""``Tables``: the base of every part of ``SqliteCatalog`` (``_catalog.py``), for the type checker.

A part reads through ``_reader()`` and writes through ``_write(fn)`` (``SqliteDb``, ``_db.py``),
so on a drive set every write changes every catalog copy; inside a write job it calls the helpers
other parts own (a version removed releases its blobs, a key written recomputes its lifecycle rows).
Those are declared here once, with their owners' signatures; at run time the class is empty and
every name resolves to its owner in ``SqliteCatalog``'s bases.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from tierstore.catalog._records import Guard, VersionRecord
    from tierstore.catalog.sqlite._mirror import CatalogMirror
    from tierstore.types import ObjectMeta

__all__ = ["Tables"]

T = TypeVar("T")


class Tables:
    """Declarations only (see the module docstring); no state, no behaviour."""

    if TYPE_CHECKING:
        _mirror: CatalogMirror | None
        _damaged_lock: threading.Lock  # inline ids a read found damaged (_blobs.py), set up by _db.py
        _damaged_inline: set[str]

        # _db.py
        def _reader(self) -> sqlite3.Connection: ...

        async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T: ...

        # _buckets.py
        @staticmethod
        def _props(c: sqlite3.Connection, bucket: str) -> dict[str, Any]: ...

        # _versions.py
        @staticmethod
        def _latest_in(c: sqlite3.Connection, bucket: str, key_b: bytes) -> VersionRecord | None: ...

        @staticmethod
        def _version_in(c: sqlite3.Connection, bucket: str, key_b: bytes, version_id: str) -> VersionRecord | None: ...

        def _remove_version(self, c: sqlite3.Connection, bucket: str, key_b: bytes, record: VersionRecord) -> None: ...

        def _drop_null_version(
            self,
            c: sqlite3.Connection,
            bucket: str,
            key_b: bytes,
            props: dict[str, Any],
            guard: Guard | None,
            latest: tuple[VersionRecord | None] | None = None,
        ) -> None: ...

        @staticmethod
        def _insert_version(
            c: sqlite3.Connection,
            record: VersionRecord,
            key_b: bytes,
            *,
            first: bool = False,
            meta_s: str | None = None,
        ) -> None: ...

        @staticmethod
        def _new_marker(meta: ObjectMeta) -> VersionRecord: ...

        @staticmethod
        def _promote_newest(c: sqlite3.Connection, bucket: str, key_b: bytes) -> None: ...

        async def put_version(
            self,
            record: VersionRecord,
            *,
            check: Callable[[VersionRecord | None], None] | None = None,
            extra: Callable[[sqlite3.Connection], None] | None = None,
            guard: Guard | None = None,
            shared_gone: Callable[[], Exception] | None = None,
            done: Callable[[sqlite3.Connection], None] | None = None,
            fixed_version_id: bool = False,
            expect: Mapping[str, Any] | None = None,
        ) -> str: ...

        # _blobs.py
        @staticmethod
        def _ref(c: sqlite3.Connection, blob_id: str, size: int, tier: str | None = None) -> None: ...

        @staticmethod
        def _unref_all(c: sqlite3.Connection, blob_ids: Iterable[str]) -> None: ...

        def _verified_inline(self, blob_id: str, crc: int | None, data: bytes | None, what: str) -> bytes: ...

        # _uploads.py
        def _drop_upload(self, c: sqlite3.Connection, upload_id: str) -> None: ...

        # _lifecycle.py
        def _lifecycle_key(self, c: sqlite3.Connection, bucket: str, key_b: bytes, props: dict[str, Any]) -> None: ...

        def _lifecycle_upload(
            self,
            c: sqlite3.Connection,
            bucket: str,
            key_b: bytes,
            upload_id: str,
            initiated_ns: int,
            props: dict[str, Any],
        ) -> None: ...

        @staticmethod
        def _lifecycle_upload_gone(c: sqlite3.Connection, upload_id: str) -> None: ...

        @staticmethod
        def _lifecycle_rules_changed(c: sqlite3.Connection, bucket: str, old: Any, new: Any) -> None: ...

        @staticmethod
        def _lifecycle_bucket_gone(c: sqlite3.Connection, bucket: str) -> None: ...
