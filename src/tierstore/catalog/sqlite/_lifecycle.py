"""The lifecycle due index (schema v11): which version or upload has a lifecycle action due when.

``lifecycle_due`` holds one row per version (or multipart upload) with a pending action: its
next action and when it falls due (docs/tiers.md "Lifecycle"). Rows are written where the state
changes, in the write's own transaction, and only in buckets with a lifecycle configuration: a
version written, made noncurrent, deleted, re-tagged or re-locked recomputes the rows of its key;
an upload created gets its abort row, dropped when the upload completes or is aborted. A change
of a bucket's rules queues the bucket in ``lifecycle_recompute``; the worker recomputes its rows
key by key, in pages (``lifecycle_recompute_page``), never in the request.

The catalog does not know the rules: the engine hands it a ``LifecyclePlanner`` (pure: the
stored rules, one key's versions -> their due rows), so catalog/ stays below engine/.

The worker finds due rows through the ``due_ns`` index (``lifecycle_claim``: a page of rows with
``due_ns <= now``, pushed ``lease_ns`` ahead in the same transaction so that another worker does
not take them) and acts in one transaction per row (``lifecycle_apply``): the key's versions are
read again, the planner re-run with the bucket's current rules, and only an action the planner
still finds due is taken; the key's rows are then recomputed. Object lock is the planner's
business too: an expiration of a locked version is due only once its retention ends, and a
version under legal hold has none (lifting the hold recomputes the key).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from tierstore.catalog._protocol import LifecyclePlanner
from tierstore.catalog._records import DueRow, KeyVersion, Outcome, PlannedAction
from tierstore.catalog._rules import ABORT_UPLOAD, ever_versioned, upload_abort_due, writes_null
from tierstore.catalog.sqlite._index import reindex
from tierstore.catalog.sqlite._tables import Tables
from tierstore.types import NULL_VERSION, ObjectMeta

__all__ = ["LIFECYCLE_DDL", "LifecycleTables"]

T = TypeVar("T")

# due_ns leads an index of its own (not the key): every write replaces a key's rows by the
# (bucket, key) prefix of the primary key, and the worker takes due rows by the index, which
# covers the whole row. Measured against a WITHOUT ROWID table keyed by due_ns first:
# benchmarks/lifecycle_due.py, docs/benchmarks.md.
LIFECYCLE_DDL = """
CREATE TABLE IF NOT EXISTS lifecycle_due(  -- v11: the next lifecycle action of a version or upload
    due_ns INTEGER NOT NULL,
    bucket TEXT NOT NULL,
    key BLOB NOT NULL,
    version_id TEXT NOT NULL,  -- the upload id for abort-upload
    action TEXT NOT NULL,  -- engine/_lifecycle.py: expire, expire-noncurrent, remove-delete-marker, ...
    storage_class TEXT,  -- v13: a transition's target (the mover's backlog, _tier_progress.py)
    PRIMARY KEY(bucket, key, version_id, action)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS lifecycle_due_at ON lifecycle_due(due_ns);
CREATE TABLE IF NOT EXISTS lifecycle_recompute(  -- v11: buckets whose rules changed: rows to recompute
    bucket TEXT PRIMARY KEY,
    after_key BLOB NOT NULL  -- keys up to here are done (each page is one transaction)
) WITHOUT ROWID;
"""


_Guard = Callable[[Any, dict[str, Any]], None]


class LifecycleTables(Tables):
    """The lifecycle part of ``SqliteCatalog`` (a mixin: ``_tables.py``; the version helpers it
    calls are ``_versions.py``'s)."""

    lifecycle_planner: LifecyclePlanner | None = None

    # --- maintained by the writes (inside their transactions) ---------------------------
    def _lifecycle_key(self, c: sqlite3.Connection, bucket: str, key_b: bytes, props: dict[str, Any]) -> None:
        """Recompute the due rows of one key's versions. Free for a bucket without rules."""
        rules = props.get("lifecycle")
        planner = self.lifecycle_planner
        if rules and planner is not None and planner.may_apply(rules, key_b.decode()):
            self._plan_key(c, bucket, key_b, rules)

    def _plan_key(
        self, c: sqlite3.Connection, bucket: str, key_b: bytes, rules: dict[str, Any] | None
    ) -> list[PlannedAction]:
        versions = [
            KeyVersion(vid, bool(dm), size, modified_ns, json.loads(meta_s))
            for vid, dm, size, modified_ns, meta_s in c.execute(
                "SELECT version_id, is_delete_marker, size, modified_ns, meta FROM versions"
                " WHERE bucket=? AND key=? ORDER BY seq DESC",
                (bucket, key_b),
            )
        ]
        planned: list[PlannedAction] = []
        if rules and versions and self.lifecycle_planner is not None:
            planned = self.lifecycle_planner.versions(rules, key_b.decode(), versions)
        c.execute("DELETE FROM lifecycle_due WHERE bucket=? AND key=? AND action<>?", (bucket, key_b, ABORT_UPLOAD))
        c.executemany(
            "INSERT OR REPLACE INTO lifecycle_due(due_ns, bucket, key, version_id, action, storage_class)"
            " VALUES(?,?,?,?,?,?)",
            [(p.due_ns, bucket, key_b, p.version_id, p.action, p.storage_class) for p in planned],
        )
        return planned

    def _lifecycle_upload(
        self, c: sqlite3.Connection, bucket: str, key_b: bytes, upload_id: str, initiated_ns: int, props: dict[str, Any]
    ) -> None:
        due = upload_abort_due(self.lifecycle_planner, props, key_b, initiated_ns)
        if due is not None:
            c.execute(
                "INSERT OR REPLACE INTO lifecycle_due(due_ns, bucket, key, version_id, action) VALUES(?,?,?,?,?)",
                (due, bucket, key_b, upload_id, ABORT_UPLOAD),
            )

    @staticmethod
    def _lifecycle_upload_gone(c: sqlite3.Connection, upload_id: str) -> None:
        c.execute(
            "DELETE FROM lifecycle_due WHERE (bucket, key) IN (SELECT bucket, key FROM uploads WHERE upload_id=?)"
            " AND version_id=? AND action=?",
            (upload_id, upload_id, ABORT_UPLOAD),
        )

    @staticmethod
    def _lifecycle_rules_changed(c: sqlite3.Connection, bucket: str, old: Any, new: Any) -> None:
        """In the transaction that changes a bucket's rules: queue its recompute (from the start,
        also when one is under way)."""
        if old != new:
            c.execute("INSERT OR REPLACE INTO lifecycle_recompute(bucket, after_key) VALUES(?, x'')", (bucket,))

    @staticmethod
    def _lifecycle_bucket_gone(c: sqlite3.Connection, bucket: str) -> None:
        c.execute("DELETE FROM lifecycle_due WHERE bucket=?", (bucket,))
        c.execute("DELETE FROM lifecycle_recompute WHERE bucket=?", (bucket,))

    # --- the worker's side ----------------------------------------------------------------
    async def lifecycle_due_count(self, now_ns: int | None = None) -> int:
        """Rows in the index (due by ``now_ns``, when given)."""
        if now_ns is None:
            return int(self._reader().execute("SELECT count(*) FROM lifecycle_due").fetchone()[0])
        sql = "SELECT count(*) FROM lifecycle_due WHERE due_ns<=?"
        return int(self._reader().execute(sql, (now_ns,)).fetchone()[0])

    async def lifecycle_pending(self, now_ns: int) -> bool:
        """Whether a recompute is queued or a row is due: one read of each index, so an idle
        worker pass costs no write transaction."""
        c = self._reader()
        if c.execute("SELECT 1 FROM lifecycle_recompute LIMIT 1").fetchone() is not None:
            return True
        return c.execute("SELECT 1 FROM lifecycle_due WHERE due_ns<=? LIMIT 1", (now_ns,)).fetchone() is not None

    async def lifecycle_rows(self, bucket: str) -> list[DueRow]:
        """A bucket's rows, in key order (tests, ``admin`` views)."""
        sql = "SELECT due_ns, bucket, key, version_id, action FROM lifecycle_due WHERE bucket=? ORDER BY key"
        return [DueRow(d, b, bytes(k).decode(), v, a) for d, b, k, v, a in self._reader().execute(sql, (bucket,))]

    async def lifecycle_claim(
        self, now_ns: int, limit: int, lease_ns: int, *, owner: str | None = None
    ) -> list[DueRow]:
        """Take up to ``limit`` rows due by ``now_ns``, earliest first, and push them to
        ``now_ns + lease_ns`` in the same transaction, leased to ``owner`` (the gateway id): no
        other worker sees them until then (a worker that dies leaves them to be taken again),
        and the calls fenced by ``owner`` act only while the row is still ``owner``'s."""

        def fn(c: sqlite3.Connection) -> list[DueRow]:
            rows = c.execute(
                "SELECT due_ns, bucket, key, version_id, action FROM lifecycle_due WHERE due_ns<=?"
                " ORDER BY due_ns LIMIT ?",
                (now_ns, limit),
            ).fetchall()
            c.executemany(
                "UPDATE lifecycle_due SET due_ns=?, lease_owner=?"
                " WHERE bucket=? AND key=? AND version_id=? AND action=?",
                [(now_ns + lease_ns, owner, b, k, v, a) for _, b, k, v, a in rows],
            )
            return [DueRow(d, b, bytes(k).decode(), v, a) for d, b, k, v, a in rows]

        return await self._write(fn)

    async def lifecycle_renew(self, rows: Sequence[DueRow], owner: str, until_ns: int) -> int:
        """The heartbeat of a long action (a transition): the rows still ``owner``'s stay claimed
        until ``until_ns``; how many are."""

        def fn(c: sqlite3.Connection) -> int:
            sql = (
                "UPDATE lifecycle_due SET due_ns=?"
                " WHERE bucket=? AND key=? AND version_id=? AND action=? AND lease_owner=?"
            )
            return sum(
                c.execute(sql, (until_ns, r.bucket, r.key.encode(), r.version_id, r.action, owner)).rowcount
                for r in rows
            )

        return await self._write(fn)

    async def lifecycle_defer(self, row: DueRow, due_ns: int, *, owner: str | None = None) -> bool:
        """Put a claimed row back for ``due_ns`` (a transition that failed: backed off, never
        dropped), with no owner; with ``owner``, only while the row is still its (False if not)."""

        def fn(c: sqlite3.Connection) -> bool:
            sql = (
                "UPDATE lifecycle_due SET due_ns=?, lease_owner=NULL"
                " WHERE bucket=? AND key=? AND version_id=? AND action=?"
            )
            args: tuple[object, ...] = (due_ns, row.bucket, row.key.encode(), row.version_id, row.action)
            if owner is not None:
                sql, args = sql + " AND lease_owner=?", (*args, owner)
            return c.execute(sql, args).rowcount > 0

        return await self._write(fn)

    async def lifecycle_apply(
        self,
        row: DueRow,
        now_ns: int,
        marker: ObjectMeta,
        guard: _Guard,
        lease_ns: int = 600 * 10**9,
        *,
        owner: str | None = None,
    ) -> Outcome:
        """Re-check one claimed row against the key's state and the bucket's rules, take the
        action if it is still due, and recompute the key's rows; one transaction. ``marker``: the
        delete marker an expiration adds on a versioned bucket; ``guard``: object lock, called
        with every version about to be destroyed (it raises; nothing changes). A due transition
        stays claimed for ``lease_ns`` while the mover runs. With ``owner`` (fenced): nothing
        happens unless the row is still ``owner``'s (a holder whose lease was taken over, or whose
        row a write re-planned, acts on nothing)."""
        key_b = row.key.encode()

        def fn(c: sqlite3.Connection) -> Outcome:
            if owner is not None:
                held = c.execute(
                    "SELECT lease_owner FROM lifecycle_due WHERE bucket=? AND key=? AND version_id=? AND action=?",
                    (row.bucket, key_b, row.version_id, row.action),
                ).fetchone()
                if held is None or held[0] != owner:
                    return Outcome()
            found = c.execute("SELECT props FROM buckets WHERE name=?", (row.bucket,)).fetchone()
            if found is None:
                self._lifecycle_bucket_gone(c, row.bucket)
                return Outcome()
            props = json.loads(found[0])
            rules = props.get("lifecycle")
            if row.action == ABORT_UPLOAD:
                return self._apply_abort(c, row, key_b, now_ns, rules)
            planned = self._plan_key(c, row.bucket, key_b, rules)
            due = next((p for p in planned if p.version_id == row.version_id), None)
            if due is None or due.action != row.action or due.due_ns > now_ns:
                return Outcome()
            if due.storage_class is not None:  # a transition: the mover acts, outside
                c.execute(
                    "UPDATE lifecycle_due SET due_ns=? WHERE bucket=? AND key=? AND version_id=? AND action=?",
                    (now_ns + lease_ns, row.bucket, key_b, row.version_id, row.action),
                )  # claimed until the mover is done (the worker then defers or recomputes it)
                return Outcome(transition=due.storage_class)
            target = self._version_in(c, row.bucket, key_b, row.version_id)
            assert target is not None, "planned from the versions just read"
            marker_id = None
            if row.action == "expire" and ever_versioned(props):
                guard(target, props)  # AWS only adds a marker; here a locked version is left alone
                record = self._new_marker(marker)
                if writes_null(props):
                    marker.version_id = NULL_VERSION
                    self._drop_null_version(c, row.bucket, key_b, props, guard)
                self._insert_version(c, record, key_b)
                marker_id = marker.version_id
            else:  # expire (never versioned), expire-noncurrent, remove-delete-marker: the version goes
                guard(target, props)
                self._remove_version(c, row.bucket, key_b, target)
                if row.action != "expire-noncurrent":
                    self._promote_newest(c, row.bucket, key_b)
            reindex(c, row.bucket, key_b)
            self._plan_key(c, row.bucket, key_b, rules)
            return Outcome(done=row.action, marker_id=marker_id)

        return await self._write(fn)

    def _apply_abort(
        self, c: sqlite3.Connection, row: DueRow, key_b: bytes, now_ns: int, rules: dict[str, Any] | None
    ) -> Outcome:
        found = c.execute(
            "SELECT initiated_ns FROM uploads WHERE upload_id=? AND bucket=? AND key=?",
            (row.version_id, row.bucket, key_b),
        ).fetchone()
        due = None
        if found is not None and rules and self.lifecycle_planner is not None:
            due = self.lifecycle_planner.upload(rules, row.key, int(found[0]))
        if due is not None and due <= now_ns:
            self._lifecycle_upload_gone(c, row.version_id)
            self._drop_upload(c, row.version_id)
            return Outcome(done=ABORT_UPLOAD)
        args = (row.bucket, key_b, row.version_id, ABORT_UPLOAD)
        if due is None:
            c.execute("DELETE FROM lifecycle_due WHERE bucket=? AND key=? AND version_id=? AND action=?", args)
        else:
            c.execute(
                "UPDATE lifecycle_due SET due_ns=? WHERE bucket=? AND key=? AND version_id=? AND action=?", (due, *args)
            )
        return Outcome()

    async def lifecycle_recompute_page(self, keys: int) -> tuple[str, int, bool] | None:
        """One page of a queued recompute: the rows of up to ``keys`` keys (and, on the first
        page, of the bucket's uploads) under the bucket's current rules. Returns (bucket, keys
        done, finished) or None when no recompute is queued. Each page is one transaction, so
        several workers take turns on a bucket without a lease."""

        def fn(c: sqlite3.Connection) -> tuple[str, int, bool] | None:
            job = c.execute("SELECT bucket, after_key FROM lifecycle_recompute LIMIT 1").fetchone()
            if job is None:
                return None
            bucket, after = job[0], bytes(job[1])
            found = c.execute("SELECT props FROM buckets WHERE name=?", (bucket,)).fetchone()
            if found is None:
                self._lifecycle_bucket_gone(c, bucket)
                return bucket, 0, True
            props = json.loads(found[0])
            rules = props.get("lifecycle")
            if not after:
                self._replan_uploads(c, bucket, props)
            page = [
                bytes(k)
                for (k,) in c.execute(
                    "SELECT DISTINCT key FROM versions WHERE bucket=? AND key>? ORDER BY key LIMIT ?",
                    (bucket, after, keys),
                )
            ]
            last = page[-1] if len(page) == keys else None
            for key_b in page:
                self._plan_key(c, bucket, key_b, rules)
            if last is None:
                c.execute("DELETE FROM lifecycle_recompute WHERE bucket=?", (bucket,))
            else:
                c.execute("UPDATE lifecycle_recompute SET after_key=? WHERE bucket=?", (last, bucket))
            return bucket, len(page), last is None

        return await self._write(fn)

    def _replan_uploads(self, c: sqlite3.Connection, bucket: str, props: dict[str, Any]) -> None:
        for upload_id, key_b, initiated_ns in c.execute(
            "SELECT upload_id, key, initiated_ns FROM uploads WHERE bucket=?", (bucket,)
        ).fetchall():
            args = (bucket, key_b, upload_id, ABORT_UPLOAD)
            c.execute("DELETE FROM lifecycle_due WHERE bucket=? AND key=? AND version_id=? AND action=?", args)
            self._lifecycle_upload(c, bucket, bytes(key_b), upload_id, int(initiated_ns), props)
