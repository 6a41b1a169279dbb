"""The lifecycle due index on PostgreSQL (docs/tiers.md "Lifecycle"), as catalog/sqlite/_lifecycle.py:
one row per version (or multipart upload) with a pending action and when it falls due.

The rows are the SQLite catalog's, with the bucket's id for its name (a bucket dropped takes
its rows along: ``ON DELETE CASCADE``). The catalog does not know the rules: the engine hands
it a ``LifecyclePlanner`` (pure), as on SQLite.

Every transaction here that reads a key's versions to plan or act on them holds that key's lock
(``lock_keys``), as every write of the key does, so rows are never computed from versions a
concurrent write is replacing. Any number of gateways share the work: ``lifecycle_claim`` takes
due rows ``FOR UPDATE SKIP LOCKED`` and pushes them ``lease_ns`` ahead in the same statement (a
worker that dies leaves them to be taken again when the lease runs out), and
``lifecycle_recompute_page`` takes a queued bucket the same way, so two gateways recompute two
buckets at once and one bucket's pages one at a time.

The writes of other modules keep the rows in their own transactions, as catalog/sqlite/'s writes
do: a write of a key's versions calls ``self._lifecycle_key``, creating an upload
``self._lifecycle_upload`` (both need the planner), completing or aborting one ``upload_gone``,
changing a bucket's rules ``rules_changed``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from tierstore.catalog._protocol import LifecyclePlanner
from tierstore.catalog._records import DueRow, KeyVersion, Outcome, PlannedAction
from tierstore.catalog._rules import ABORT_UPLOAD, ever_versioned, meta_doc, upload_abort_due, writes_null
from tierstore.catalog.postgres._buckets import drop_upload, lock_keys, rules_changed, upload_gone
from tierstore.catalog.postgres._codec import dumps, key_lock, sorted_locks
from tierstore.catalog.postgres._pool import Pool
from tierstore.catalog.postgres._versions import (
    Guard,
    _current,
    _null_to_drop,
    _promote_newest,
    _publish,
    _remove_version,
    version_in,
)
from tierstore.types import NULL_VERSION, ObjectMeta

from tierstore.catalog import VersionRecord  # isort: skip

__all__ = ["DDL", "LifecycleTables", "rules_changed", "upload_gone"]

DDL = (
    """CREATE TABLE lifecycle_due(  -- the next lifecycle action of a version or upload
        due_ns bigint NOT NULL,
        bucket_id bigint NOT NULL REFERENCES buckets(id) ON DELETE CASCADE,
        key bytea NOT NULL,
        version_id text COLLATE "C" NOT NULL,  -- the upload id for abort-upload
        action text COLLATE "C" NOT NULL,  -- engine/_lifecycle.py: expire, expire-noncurrent, ...
        storage_class text COLLATE "C",  -- a transition's target (the mover's backlog)
        PRIMARY KEY(bucket_id, key, version_id, action)
    )""",
    # The worker takes due rows by this index; every write replaces a key's rows by the
    # (bucket_id, key) prefix of the primary key (catalog/sqlite/_lifecycle.py: measured on SQLite).
    "CREATE INDEX lifecycle_due_at ON lifecycle_due(due_ns)",
    """CREATE TABLE lifecycle_recompute(  -- buckets whose rules changed: rows to recompute
        bucket_id bigint PRIMARY KEY REFERENCES buckets(id) ON DELETE CASCADE,
        after_key bytea NOT NULL  -- keys up to here are done (each page is one transaction)
    )""",
)

_DUE_ROW = "UPDATE lifecycle_due SET due_ns = $1 WHERE bucket_id = $2 AND key = $3 AND version_id = $4 AND action = $5"


class LifecycleTables:
    """The lifecycle calls of the catalog protocol and the hooks the writes call."""

    _pool: Pool
    lifecycle_planner: LifecyclePlanner | None = None

    if TYPE_CHECKING:

        async def _reindex(self, c: Any, bucket: str, bucket_id: int, key_b: bytes) -> None: ...

    # --- maintained by the writes (inside their transactions) ---------------------------
    async def _lifecycle_key(self, c: Any, bucket_id: int, key_b: bytes, props: dict[str, Any]) -> None:
        """Recompute the due rows of one key's versions. Free for a bucket without rules."""
        rules = props.get("lifecycle")
        planner = self.lifecycle_planner
        if rules and planner is not None and planner.may_apply(rules, key_b.decode()):
            await self._plan_key(c, bucket_id, key_b, rules)

    async def _plan_key(
        self, c: Any, bucket_id: int, key_b: bytes, rules: dict[str, Any] | None
    ) -> list[PlannedAction]:
        versions = [
            KeyVersion(vid, bool(dm), size, modified_ns, json.loads(meta_s))
            for vid, dm, size, modified_ns, meta_s in await c.fetch(
                "SELECT version_id, is_delete_marker, size, modified_ns, meta FROM versions"
                " WHERE bucket_id = $1 AND key = $2 ORDER BY seq DESC",
                bucket_id,
                key_b,
            )
        ]
        planned: list[PlannedAction] = []
        if rules and versions and self.lifecycle_planner is not None:
            planned = self.lifecycle_planner.versions(rules, key_b.decode(), versions)
        await c.execute(
            "DELETE FROM lifecycle_due WHERE bucket_id = $1 AND key = $2 AND action <> $3",
            bucket_id,
            key_b,
            ABORT_UPLOAD,
        )
        if planned:
            await c.executemany(
                "INSERT INTO lifecycle_due(due_ns, bucket_id, key, version_id, action, storage_class)"
                " VALUES($1, $2, $3, $4, $5, $6) ON CONFLICT(bucket_id, key, version_id, action)"
                " DO UPDATE SET due_ns = excluded.due_ns, storage_class = excluded.storage_class",
                [(p.due_ns, bucket_id, key_b, p.version_id, p.action, p.storage_class) for p in planned],
            )
        return planned

    async def _lifecycle_upload(
        self, c: Any, bucket_id: int, key_b: bytes, upload_id: str, initiated_ns: int, props: dict[str, Any]
    ) -> None:
        """An upload created (or its bucket's rules recomputed): its abort row, if a rule has one."""
        due = upload_abort_due(self.lifecycle_planner, props, key_b, initiated_ns)
        if due is not None:
            await c.execute(
                "INSERT INTO lifecycle_due(due_ns, bucket_id, key, version_id, action) VALUES($1, $2, $3, $4, $5)"
                " ON CONFLICT(bucket_id, key, version_id, action)"
                " DO UPDATE SET due_ns = excluded.due_ns, lease_owner = NULL",
                due, bucket_id, key_b, upload_id, ABORT_UPLOAD,
            )  # fmt: skip

    # --- the worker's side ----------------------------------------------------------------
    async def lifecycle_due_count(self, now_ns: int | None = None) -> int:
        """Rows in the index (due by ``now_ns``, when given)."""
        if now_ns is None:
            return int(await self._pool.fetchval("SELECT count(*) FROM lifecycle_due"))
        return int(await self._pool.fetchval("SELECT count(*) FROM lifecycle_due WHERE due_ns <= $1", now_ns))

    async def lifecycle_pending(self, now_ns: int) -> bool:
        """Whether a recompute is queued or a row is due: one statement of two index probes, so
        an idle worker pass costs no write transaction."""
        return bool(
            await self._pool.fetchval(
                "SELECT EXISTS(SELECT 1 FROM lifecycle_recompute)"
                " OR EXISTS(SELECT 1 FROM lifecycle_due WHERE due_ns <= $1)",
                now_ns,
            )
        )

    async def lifecycle_rows(self, bucket: str) -> list[DueRow]:
        """A bucket's rows, in key order (tests, ``admin`` views)."""
        rows = await self._pool.fetch(
            "SELECT d.due_ns, d.key, d.version_id, d.action FROM lifecycle_due d JOIN buckets b ON b.id = d.bucket_id"
            " WHERE b.name = $1 ORDER BY d.key, d.version_id, d.action",
            bucket,
        )
        return [DueRow(d, bucket, bytes(k).decode(), v, a) for d, k, v, a in rows]

    async def lifecycle_claim(
        self, now_ns: int, limit: int, lease_ns: int, *, owner: str | None = None
    ) -> list[DueRow]:
        """Take up to ``limit`` rows due by ``now_ns``, earliest first, and push them to
        ``now_ns + lease_ns`` in the same statement: no other worker of any gateway sees them
        until then (``SKIP LOCKED``: claimers never wait on each other), and a worker that dies
        leaves them to be taken again. They are leased to ``owner``: the fenced calls act only on
        rows still its."""

        async def fn(c: Any) -> list[DueRow]:
            rows = await c.fetch(
                "WITH t AS (SELECT due_ns, bucket_id, key, version_id, action FROM lifecycle_due WHERE due_ns <= $1"
                " ORDER BY due_ns LIMIT $2 FOR UPDATE SKIP LOCKED),"
                " u AS (UPDATE lifecycle_due d SET due_ns = $3, lease_owner = $4 FROM t WHERE d.bucket_id = t.bucket_id"
                " AND d.key = t.key AND d.version_id = t.version_id AND d.action = t.action"
                " RETURNING t.due_ns, d.bucket_id, d.key, d.version_id, d.action)"
                " SELECT u.due_ns, b.name, u.key, u.version_id, u.action FROM u JOIN buckets b ON b.id = u.bucket_id"
                " ORDER BY u.due_ns, b.name, u.key, u.version_id",
                now_ns, limit, now_ns + lease_ns, owner,
            )  # fmt: skip
            return [DueRow(d, b, bytes(k).decode(), v, a) for d, b, k, v, a in rows]

        return await self._pool.write(fn)

    async def lifecycle_renew(self, rows: Sequence[DueRow], owner: str, until_ns: int) -> int:
        """The heartbeat of a long action (a transition): the rows still ``owner``'s stay claimed
        until ``until_ns``; how many are."""
        found = await self._pool.fetch(
            "UPDATE lifecycle_due d SET due_ns = $1 FROM buckets b,"
            " unnest($2::text[], $3::bytea[], $4::text[], $5::text[]) AS r(bucket, key, version_id, action)"
            " WHERE b.name = r.bucket AND d.bucket_id = b.id AND d.key = r.key AND d.version_id = r.version_id"
            " AND d.action = r.action AND d.lease_owner = $6 RETURNING 1",
            until_ns, [r.bucket for r in rows], [r.key.encode() for r in rows], [r.version_id for r in rows],
            [r.action for r in rows], owner,
        )  # fmt: skip
        return len(found)

    async def lifecycle_defer(self, row: DueRow, due_ns: int, *, owner: str | None = None) -> bool:
        """Put a claimed row back for ``due_ns`` (a transition that failed: backed off, never
        dropped), with no owner; with ``owner``, only while the row is still its (False if not)."""
        found = await self._pool.fetchrow(
            "UPDATE lifecycle_due SET due_ns = $1, lease_owner = NULL"
            " WHERE bucket_id = (SELECT id FROM buckets WHERE name = $2)"
            " AND key = $3 AND version_id = $4 AND action = $5 AND ($6::text IS NULL OR lease_owner = $6) RETURNING 1",
            due_ns, row.bucket, row.key.encode(), row.version_id, row.action, owner,
        )  # fmt: skip
        return found is not None

    async def lifecycle_apply(
        self,
        row: DueRow,
        now_ns: int,
        marker: ObjectMeta,
        guard: Guard,
        lease_ns: int = 600 * 10**9,
        *,
        owner: str | None = None,
    ) -> Outcome:
        """Re-check one claimed row against the key's state and the bucket's rules, take the
        action if it is still due, and recompute the key's rows; one transaction, under the
        key's lock. ``marker``: the delete marker an expiration adds on a versioned bucket;
        ``guard``: object lock, called with every version about to be destroyed (it raises;
        nothing changes). A due transition stays claimed for ``lease_ns`` while the mover runs.
        With ``owner`` (fenced): nothing happens unless the row is still ``owner``'s."""
        key_b = row.key.encode()
        marker_id = marker.version_id

        async def fn(c: Any) -> Outcome:
            marker.version_id = marker_id  # a transaction run again starts from the caller's marker
            found = await c.fetchrow("SELECT id, props FROM buckets WHERE name = $1", row.bucket)
            if found is None:
                return Outcome()  # the bucket's rows went with it
            bucket_id, props = int(found[0]), json.loads(found[1])
            if owner is not None:
                held = await c.fetchval(
                    "SELECT lease_owner FROM lifecycle_due"
                    " WHERE bucket_id = $1 AND key = $2 AND version_id = $3 AND action = $4 FOR UPDATE",
                    bucket_id, key_b, row.version_id, row.action,
                )  # fmt: skip
                if held != owner:
                    return Outcome()  # taken over, or re-planned by a write: not ours to act on
            rules = props.get("lifecycle")
            if row.action == ABORT_UPLOAD:
                return await self._apply_abort(c, row, bucket_id, key_b, now_ns, rules)
            planned = await self._plan_key(c, bucket_id, key_b, rules)
            due = next((p for p in planned if p.version_id == row.version_id), None)
            if due is None or due.action != row.action or due.due_ns > now_ns:
                return Outcome()
            if due.storage_class is not None:  # a transition: the mover acts, outside
                # claimed until the mover is done (the worker then defers or recomputes it)
                await c.execute(_DUE_ROW, now_ns + lease_ns, bucket_id, key_b, row.version_id, row.action)
                return Outcome(transition=due.storage_class)
            target = await version_in(c, row.bucket, bucket_id, key_b, row.version_id)
            assert target is not None, "planned from the versions just read"
            new_marker = None
            if row.action == "expire" and ever_versioned(props):
                guard(target, props)  # AWS only adds a marker; here a locked version is left alone
                record = VersionRecord(meta=marker, blobs=[], is_delete_marker=True)
                _id, _props, current = await _current(c, row.bucket, key_b)
                drop = None
                if writes_null(props):
                    marker.version_id = NULL_VERSION
                    drop = await _null_to_drop(c, row.bucket, bucket_id, key_b, props, guard, current, known=True)
                await _publish(c, bucket_id, key_b, record, dumps(meta_doc(marker)), current=current, drop=drop)
                new_marker = marker.version_id
            else:  # expire (never versioned), expire-noncurrent, remove-delete-marker: the version goes
                guard(target, props)
                await _remove_version(c, bucket_id, key_b, target)
                if row.action != "expire-noncurrent":
                    await _promote_newest(c, bucket_id, key_b)
            await self._reindex(c, row.bucket, bucket_id, key_b)
            await self._plan_key(c, bucket_id, key_b, rules)
            return Outcome(done=row.action, marker_id=new_marker)

        return await self._pool.write(fn, first=lock_keys(row.bucket, (key_b,)))

    async def _apply_abort(
        self, c: Any, row: DueRow, bucket_id: int, key_b: bytes, now_ns: int, rules: dict[str, Any] | None
    ) -> Outcome:
        initiated = await c.fetchval(
            "SELECT initiated_ns FROM uploads WHERE upload_id = $1 AND bucket_id = $2 AND key = $3 FOR UPDATE",
            row.version_id, bucket_id, key_b,
        )  # fmt: skip
        due = None
        if initiated is not None and rules and self.lifecycle_planner is not None:
            due = self.lifecycle_planner.upload(rules, row.key, int(initiated))
        if due is not None and due <= now_ns:
            await drop_upload(c, row.version_id)  # its abort row with it
            return Outcome(done=ABORT_UPLOAD)
        args = (bucket_id, key_b, row.version_id, ABORT_UPLOAD)
        if due is None:
            await c.execute(
                "DELETE FROM lifecycle_due WHERE bucket_id = $1 AND key = $2 AND version_id = $3 AND action = $4", *args
            )
        else:
            await c.execute(_DUE_ROW, due, *args)
        return Outcome()

    async def lifecycle_recompute_page(self, keys: int) -> tuple[str, int, bool] | None:
        """One page of a queued recompute: the rows of up to ``keys`` keys (and, on the first
        page, of the bucket's uploads) under the bucket's current rules. Returns (bucket, keys
        done, finished) or None when no recompute is queued (or every queued bucket is being
        recomputed by another worker right now). Each page is one transaction."""

        async def fn(c: Any) -> tuple[str, int, bool] | None:
            job = await c.fetchrow(
                "SELECT r.bucket_id, r.after_key, b.name FROM lifecycle_recompute r"
                " JOIN buckets b ON b.id = r.bucket_id"
                " LIMIT 1 FOR UPDATE OF r SKIP LOCKED"
            )
            if job is None:
                return None
            bucket_id, after, bucket = int(job[0]), bytes(job[1]), str(job[2])
            page = [
                bytes(r[0])
                for r in await c.fetch(
                    "SELECT DISTINCT key FROM versions WHERE bucket_id = $1 AND key > $2 ORDER BY key LIMIT $3",
                    bucket_id,
                    after,
                    keys,
                )
            ]
            # The keys' locks (their writers wait), not the bucket's: a rule change holds that one
            # while it re-queues this row, which waits for this transaction; it then restarts the
            # recompute under the new rules, so the rules read below may be replaced, never lost.
            for lock_id in sorted_locks(key_lock(bucket, k) for k in page):
                await c.execute("SELECT pg_advisory_xact_lock($1)", lock_id)
            props = json.loads(await c.fetchval("SELECT props FROM buckets WHERE id = $1", bucket_id))
            rules = props.get("lifecycle")
            if not after:
                await self._replan_uploads(c, bucket_id, props)
            last = page[-1] if len(page) == keys else None
            for key_b in page:
                await self._plan_key(c, bucket_id, key_b, rules)
            if last is None:
                await c.execute("DELETE FROM lifecycle_recompute WHERE bucket_id = $1", bucket_id)
            else:
                await c.execute("UPDATE lifecycle_recompute SET after_key = $1 WHERE bucket_id = $2", last, bucket_id)
            return bucket, len(page), last is None

        return await self._pool.write(fn)

    async def _replan_uploads(self, c: Any, bucket_id: int, props: dict[str, Any]) -> None:
        for upload_id, key_b, initiated_ns in await c.fetch(
            "SELECT upload_id, key, initiated_ns FROM uploads WHERE bucket_id = $1", bucket_id
        ):
            await c.execute(
                "DELETE FROM lifecycle_due WHERE bucket_id = $1 AND key = $2 AND version_id = $3 AND action = $4",
                bucket_id, key_b, upload_id, ABORT_UPLOAD,
            )  # fmt: skip
            await self._lifecycle_upload(c, bucket_id, bytes(key_b), upload_id, int(initiated_ns), props)
