"""The PostgreSQL catalog's schema: ordered migration steps, applied at open under an advisory
lock (docs/scale-out.md "Schema on PostgreSQL", "Migrations under an advisory lock").

Each gateway process opens one connection outside its pool, takes
``pg_advisory_lock(MIGRATION_LOCK)``, reads ``meta.schema_version`` and applies the missing steps,
each in its own transaction (PostgreSQL's DDL is transactional: a step is all or nothing), then
unlocks and closes. Whoever starts first migrates; the others wait on the lock and find the
schema current. Steps never say ``IF NOT EXISTS``: one applied twice fails loudly. A schema newer
than the code refuses with one line. Steps are additive, so gateways one release apart run side
by side during a rolling upgrade.

Keys are ``bytea`` (their UTF-8 bytes), so byte order is S3's order with no collation to get
wrong; names and ids are ``text COLLATE "C"``. Documents (metadata, blob lists, properties) are
``json``, not ``jsonb``: kept as written, compact and in their keys' order, the same text SQLite
holds (the engine spots an encrypted row by ``"e":{`` in it before parsing; ``jsonb`` would
respace and reorder it, and refuses an escaped NUL); nothing queries inside them in SQL but a
version read's ``props->>'versioning'``. Buckets have a ``bigint`` id from a sequence. No
hot counter rows: a version's ``seq`` is per key (``max + 1`` under the key's advisory lock).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import asyncpg

from tierstore.catalog.postgres._hot import HOT_DDL
from tierstore.catalog.postgres._identity import DDL as _IDENTITY
from tierstore.catalog.postgres._kms import DDL as _KMS
from tierstore.catalog.postgres._leases import LEASES_DDL, OWNER_FENCE_DDL
from tierstore.catalog.postgres._lifecycle import DDL as _LIFECYCLE
from tierstore.catalog.postgres._pool import connect_error, translate
from tierstore.catalog.postgres._query import QUERY_DDL
from tierstore.catalog.postgres._tier_progress import TIER_PROGRESS_DDL
from tierstore.catalog.postgres._tiers import DDL as _TIERS
from tierstore.errors import InternalError

__all__ = ["MIGRATION_LOCK", "SCHEMA_VERSION", "STEPS", "migrate"]

MIGRATION_LOCK = 0x7469_6572  # "tier": the advisory lock id of migrations (tests/test_postgres.py)


@dataclass(frozen=True, slots=True)
class Step:
    version: int  # the schema version once this step is applied
    what: str
    statements: tuple[str, ...]


# Publish a version as its key's latest, the tail of PUT and of a delete marker in one round trip,
# after the caller decided everything (catalog/postgres/_versions.py): the new inline body, the
# new blob references (first: a copy onto itself shares the blobs it replaces), the replaced null
# version dropped, the old latest demoted, the row inserted with seq one past the key's highest.
# Step 1 wrote it with an unconditional ``tierstore_ref`` call; step 7 replaces it (same
# signature) so that a PUT without blob references (an inline body, a delete marker) skips that
# nested PL/pgSQL call (docs/benchmarks.md "a small PUT's PostgreSQL CPU").
_REF = "@REF@"
_PUBLISH = """FUNCTION tierstore_publish(
        p_bucket bigint, p_key bytea, p_version text, p_marker boolean, p_size bigint, p_etag text,
        p_modified bigint, p_class text, p_meta json, p_blobs json,
        p_inline text, p_inline_crc bigint, p_inline_data bytea,
        p_ref_ids text[], p_ref_sizes bigint[], p_ref_tiers text[],
        p_drop_version text, p_drop_inline text, p_drop_ids text[], p_demote boolean
    ) RETURNS void LANGUAGE plpgsql AS $$
    BEGIN
        IF p_inline_data IS NOT NULL THEN
            INSERT INTO inline_blobs(blob_id, crc32c, data) VALUES(p_inline, p_inline_crc, p_inline_data);
        END IF;
        @REF@
        IF p_drop_version IS NOT NULL THEN
            PERFORM tierstore_drop_version(p_bucket, p_key, p_drop_version, p_drop_inline, p_drop_ids);
        END IF;
        IF p_demote THEN
            UPDATE versions SET is_latest = false WHERE bucket_id = p_bucket AND key = p_key AND is_latest;
        END IF;
        INSERT INTO versions(bucket_id, key, version_id, is_latest, is_delete_marker, size, etag, modified_ns,
                             storage_class, meta, blobs, seq, inline_id)
        VALUES(p_bucket, p_key, p_version, true, p_marker, p_size, p_etag, p_modified, p_class, p_meta, p_blobs,
               (SELECT COALESCE(MAX(seq), 0) + 1 FROM versions WHERE bucket_id = p_bucket AND key = p_key),
               p_inline);
    END $$"""
_PUBLISH_V7 = "CREATE OR REPLACE " + _PUBLISH.replace(
    _REF,
    """IF cardinality(p_ref_ids) > 0 THEN
            PERFORM tierstore_ref(p_ref_ids, p_ref_sizes, p_ref_tiers);
        END IF;""",
)

# The common PUT in one statement, in autocommit (step 8; docs/scale-out.md "The PUT path"): the
# bucket's lock shared and the key's (``lock_keys``' order), the bucket's properties, the
# caller's expectations of them (``p_expect``: name -> value, as ``check_expected``), the
# versioning state (``check_version_kind``, ``writes_null``), the null version it replaces, and
# the publish (``tierstore_publish``'s order: body, references, drop, demote, insert) — one round
# trip instead of four (BEGIN + locks, the read, the publish, COMMIT). It answers the version id,
# or why it wrote nothing: ``!bucket`` (no such bucket), ``!changed`` (``p_expect`` differs),
# ``!versioning`` (``p_fixed`` and the state wants the other kind of id), ``!general`` (what the
# Python path decides: a lifecycle configuration, an object-lock configuration with a null version
# to replace, a locked null version); the caller runs the general path then.
_PUT = """CREATE OR REPLACE FUNCTION tierstore_put(
        p_bucket text, p_key bytea, p_bucket_lock bigint, p_key_lock bigint, p_expect json, p_fixed boolean,
        p_version text, p_marker boolean, p_size bigint, p_etag text, p_modified bigint, p_class text,
        p_meta json, p_blobs json, p_inline text, p_inline_crc bigint, p_inline_data bytea,
        p_ref_ids text[], p_ref_sizes bigint[], p_ref_tiers text[]
    ) RETURNS text LANGUAGE plpgsql AS $$
    DECLARE
        b_id bigint;
        b_props json;
        name text;
        to_null boolean;
        old_meta json;
        old_inline text;
        old_blobs json;
    BEGIN
        PERFORM pg_advisory_xact_lock_shared(p_bucket_lock);
        PERFORM pg_advisory_xact_lock(p_key_lock);
        SELECT id, props INTO b_id, b_props FROM buckets WHERE buckets.name = p_bucket;
        IF NOT FOUND THEN
            RETURN '!bucket';
        END IF;
        IF p_expect IS NOT NULL THEN
            FOR name IN SELECT json_object_keys(p_expect) LOOP
                IF coalesce((b_props -> name)::jsonb, 'null') <> coalesce((p_expect -> name)::jsonb, 'null') THEN
                    RETURN '!changed';
                END IF;
            END LOOP;
        END IF;
        IF coalesce(b_props ->> 'lifecycle', 'null') <> 'null' THEN
            RETURN '!general';
        END IF;
        to_null := (b_props ->> 'versioning') IS DISTINCT FROM 'Enabled';
        IF p_fixed AND to_null <> (p_version = 'null') THEN
            RETURN '!versioning';
        END IF;
        IF to_null THEN  -- decided before anything is written: a RETURN leaves nothing behind
            p_version := 'null';
            SELECT meta, inline_id, blobs INTO old_meta, old_inline, old_blobs FROM versions
                WHERE bucket_id = b_id AND key = p_key AND version_id = 'null';
            IF FOUND AND (old_meta -> 'l' IS NOT NULL OR coalesce(b_props ->> 'object_lock', 'null') <> 'null') THEN
                RETURN '!general';  -- the engine's guard decides whether it may go
            END IF;
        END IF;
        IF p_inline_data IS NOT NULL THEN
            INSERT INTO inline_blobs(blob_id, crc32c, data) VALUES(p_inline, p_inline_crc, p_inline_data);
        END IF;
        IF cardinality(p_ref_ids) > 0 THEN  -- new references first, as tierstore_publish
            PERFORM tierstore_ref(p_ref_ids, p_ref_sizes, p_ref_tiers);
        END IF;
        IF old_meta IS NOT NULL THEN
            PERFORM tierstore_drop_version(b_id, p_key, 'null', old_inline,
                ARRAY(SELECT e ->> 0 FROM json_array_elements(old_blobs) AS e));
        END IF;
        UPDATE versions SET is_latest = false WHERE bucket_id = b_id AND key = p_key AND is_latest;
        INSERT INTO versions(bucket_id, key, version_id, is_latest, is_delete_marker, size, etag, modified_ns,
                             storage_class, meta, blobs, seq, inline_id)
        VALUES(b_id, p_key, p_version, true, p_marker, p_size, p_etag, p_modified, p_class, p_meta, p_blobs,
               (SELECT COALESCE(MAX(seq), 0) + 1 FROM versions WHERE bucket_id = b_id AND key = p_key),
               p_inline);
        RETURN p_version;
    END $$"""

_CORE = (
    'CREATE TABLE meta(name text COLLATE "C" PRIMARY KEY, value text NOT NULL)',
    # Which steps ran, when: a step applied twice would show here (and fail on its DDL first).
    "CREATE TABLE migrations(version integer PRIMARY KEY, applied_ns bigint NOT NULL, what text NOT NULL)",
    "CREATE SEQUENCE bucket_ids",
    """CREATE TABLE buckets(
        id bigint PRIMARY KEY DEFAULT nextval('bucket_ids'),
        name text COLLATE "C" NOT NULL UNIQUE,
        created_ns bigint NOT NULL,
        region text COLLATE "C" NOT NULL,
        props json NOT NULL DEFAULT '{}'
    )""",
    """CREATE TABLE versions(
        bucket_id bigint NOT NULL,
        key bytea NOT NULL,
        version_id text COLLATE "C" NOT NULL,
        is_latest boolean NOT NULL,
        is_delete_marker boolean NOT NULL DEFAULT false,
        size bigint NOT NULL,
        etag text NOT NULL,
        modified_ns bigint NOT NULL,
        storage_class text COLLATE "C" NOT NULL DEFAULT 'STANDARD',  -- meta's "sc", for index-only listings
        meta json NOT NULL,
        blobs json NOT NULL,  -- [[blob_id, size], ...] in order
        seq bigint NOT NULL,  -- order of the versions of one key (newest = highest)
        inline_id text COLLATE "C",  -- the body is in inline_blobs; NULL: in the blob store
        PRIMARY KEY(bucket_id, key, version_id)
    )""",
    # At most one latest version per key; also the backstop of If-None-Match: * and of the key lock.
    "CREATE UNIQUE INDEX versions_latest ON versions(bucket_id, key) WHERE is_latest",
    # A ListObjects page is an index-only range scan of this.
    "CREATE INDEX versions_listing ON versions(bucket_id, key) INCLUDE (size, etag, modified_ns, storage_class)"
    " WHERE is_latest AND NOT is_delete_marker",
    # ListObjectVersions (key ASC, newest first) and the next seq of a key.
    "CREATE INDEX versions_seq ON versions(bucket_id, key, seq DESC)",
    """CREATE TABLE blobs(
        blob_id text COLLATE "C" PRIMARY KEY,
        size bigint NOT NULL,
        refs integer NOT NULL,
        tier text COLLATE "C",  -- NULL: on the local drives (or the store); else the remote tier holding it
        cached boolean  -- a remote blob with a verified local copy; else NULL
    )""",
    'CREATE TABLE trash(blob_id text COLLATE "C" PRIMARY KEY)',
    """CREATE TABLE inline_blobs(
        blob_id text COLLATE "C" PRIMARY KEY,
        crc32c bigint NOT NULL,
        data bytea NOT NULL,
        pins integer NOT NULL DEFAULT 0,  -- dataset versions that pin this body
        released boolean NOT NULL DEFAULT false  -- its version is gone; the row lives on for the pins
    )""",
    """CREATE TABLE uploads(
        upload_id text COLLATE "C" PRIMARY KEY,
        bucket_id bigint NOT NULL,
        key bytea NOT NULL,
        initiated_ns bigint NOT NULL,
        meta json NOT NULL
    )""",
    "CREATE INDEX uploads_by_key ON uploads(bucket_id, key, upload_id)",
    "CREATE INDEX uploads_age ON uploads(initiated_ns)",
    """CREATE TABLE completed_uploads(  -- answers a retried CompleteMultipartUpload (kept a day)
        upload_id text COLLATE "C" PRIMARY KEY,
        bucket_id bigint NOT NULL,
        key bytea NOT NULL,
        completed_ns bigint NOT NULL,
        parts text NOT NULL,  -- fingerprint of the part list that completed it
        result json NOT NULL  -- version id, ETag, size, checksums, part sizes
    )""",
    "CREATE INDEX completed_uploads_age ON completed_uploads(completed_ns)",
    # One more reference to each blob (new: with its size and tier); a local blob queued for
    # deletion is saved from the trash, a moved blob's local copy stays queued (``_ref``).
    """CREATE FUNCTION tierstore_ref(ids text[], sizes bigint[], tiers text[]) RETURNS void
    LANGUAGE plpgsql AS $$
    DECLARE
        i integer;
        in_tier text;
    BEGIN
        FOR i IN 1 .. coalesce(array_length(ids, 1), 0) LOOP
            INSERT INTO blobs(blob_id, size, refs, tier) VALUES(ids[i], sizes[i], 1, tiers[i])
                ON CONFLICT(blob_id) DO UPDATE SET refs = blobs.refs + 1 RETURNING tier INTO in_tier;
            IF in_tier IS NULL THEN
                DELETE FROM trash WHERE blob_id = ids[i];
            END IF;
        END LOOP;
    END $$""",
    # One reference less to each blob (an id listed twice loses two); a blob no one references
    # goes: a local one to the trash, a remote one to its tier's outbox (``tier_outbox``, step 3:
    # PL/pgSQL resolves tables when it runs) and its local copy, if any, to the trash. One round
    # trip for any number of blobs, with SQLite's semantics (catalog/sqlite/_blobs.py ``_unref_all``).
    """CREATE FUNCTION tierstore_unref(ids text[]) RETURNS void LANGUAGE plpgsql AS $$
    DECLARE
        one text;
        left_refs integer;
        in_tier text;
        copy boolean;
    BEGIN
        FOREACH one IN ARRAY ids LOOP
            UPDATE blobs SET refs = refs - 1 WHERE blob_id = one RETURNING refs, tier, cached
                INTO left_refs, in_tier, copy;
            IF FOUND AND left_refs > 0 THEN
                CONTINUE;
            END IF;
            IF FOUND THEN
                DELETE FROM blobs WHERE blob_id = one;
                IF in_tier IS NOT NULL THEN
                    INSERT INTO tier_outbox(tier, blob_id, queued_ns, attempts, next_ns)
                        VALUES(in_tier, one, (extract(epoch FROM clock_timestamp()) * 1e9)::bigint, 0, 0)
                        ON CONFLICT DO NOTHING;
                    IF copy IS NULL THEN
                        CONTINUE;
                    END IF;
                END IF;
            END IF;
            INSERT INTO trash(blob_id) VALUES(one) ON CONFLICT DO NOTHING;
        END LOOP;
    END $$""",
    # A version goes: its row, its inline body (unless a dataset pins it: then marked released)
    # and one reference to each of its blobs.
    """CREATE FUNCTION tierstore_drop_version(b bigint, k bytea, v text, inline text, ids text[])
    RETURNS void LANGUAGE plpgsql AS $$
    BEGIN
        DELETE FROM versions WHERE bucket_id = b AND key = k AND version_id = v;
        IF inline IS NOT NULL THEN
            DELETE FROM inline_blobs WHERE blob_id = inline AND pins = 0;
            IF NOT FOUND THEN
                UPDATE inline_blobs SET released = true WHERE blob_id = inline;
            END IF;
        END IF;
        PERFORM tierstore_unref(ids);
    END $$""",
    # The publish function as step 1 wrote it (``_PUBLISH`` above; step 7 replaces it).
    "CREATE " + _PUBLISH.replace(_REF, "PERFORM tierstore_ref(p_ref_ids, p_ref_sizes, p_ref_tiers);"),
    """CREATE TABLE parts(
        upload_id text COLLATE "C" NOT NULL,
        part_number integer NOT NULL,
        size bigint NOT NULL,
        etag text NOT NULL,
        modified_ns bigint NOT NULL,
        checksums json NOT NULL,
        blob_id text COLLATE "C" NOT NULL,
        PRIMARY KEY(upload_id, part_number)
    )""",
)

_DATASETS = (
    *(
        f"""CREATE TABLE {table}(
            name text COLLATE "C" NOT NULL,
            version integer NOT NULL,
            manifest_blob text COLLATE "C" NOT NULL,  -- the Parquet manifest, a blob counted in blobs.refs
            manifest_bytes bigint NOT NULL,
            created_ns bigint NOT NULL,
            rows bigint NOT NULL,
            bytes bigint NOT NULL,
            info text NOT NULL,  -- JSON as written
            PRIMARY KEY(name, version)
        )"""
        for table in ("datasets", "models")
    ),
    """CREATE TABLE model_aliases(
        name text COLLATE "C" NOT NULL,
        alias text COLLATE "C" NOT NULL,
        version integer NOT NULL,
        updated_ns bigint NOT NULL,
        PRIMARY KEY(name, alias)
    )""",
)

STEPS = (
    Step(1, "buckets, versions, blobs, trash, inline bodies, multipart uploads", _CORE),
    Step(2, "datasets, models and model aliases", _DATASETS),
    Step(
        3,
        "identities, KMS keys, tiers and the tier outbox, the lifecycle due index",
        (*_IDENTITY, *_KMS, *_TIERS, *_LIFECYCLE),
    ),
    Step(4, "hot copies, the mover's progress, the metadata query", (*HOT_DDL, *TIER_PROGRESS_DDL, *QUERY_DDL)),
    Step(5, "the gateway registry, named jobs, trash and outbox leases", LEASES_DDL),
    # Assigned step 8 (steps 6 and 7 are other branches'): renumber to keep the steps contiguous at merge.
    Step(6, "owner-fenced lifecycle and pending-write leases", OWNER_FENCE_DDL),
    # Assigned step 7 (helper pgput18); the lead renumbers at merge.
    Step(7, "a PUT without blob references calls no tierstore_ref", (_PUBLISH_V7,)),
    # Assigned step 8 (helper pgput18b).
    Step(8, "the common PUT in one statement (tierstore_put)", (_PUT,)),
)
SCHEMA_VERSION = STEPS[-1].version
assert [s.version for s in STEPS] == list(range(1, len(STEPS) + 1))


async def schema_version(conn: asyncpg.Connection) -> int:
    """The database's schema version; 0 for an empty database."""
    if await conn.fetchval("SELECT to_regclass('meta')") is None:
        return 0
    value = await conn.fetchval("SELECT value FROM meta WHERE name = 'schema_version'")
    return int(value) if value is not None else 0


async def migrate(dsn: str, shown_dsn: str, *, timeout_s: float) -> int:
    """Bring the database at ``dsn`` to ``SCHEMA_VERSION`` under the migration lock (see the
    module docstring); returns how many steps this call applied. ``InternalError`` if the
    database's schema is newer than this code."""
    try:
        conn = await asyncpg.connect(dsn, timeout=timeout_s)
    except BaseException as exc:
        raise connect_error(exc, shown_dsn) from None
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
        try:
            return await _apply(conn)
        finally:
            if not conn.is_closed():
                await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)
    except BaseException as exc:
        out = translate(exc, shown_dsn)
        if out is exc:
            raise
        raise out from exc
    finally:
        if conn.is_closed():
            conn.terminate()
        else:
            await conn.close()


async def _apply(conn: asyncpg.Connection) -> int:
    found = await schema_version(conn)
    if found > SCHEMA_VERSION:
        raise InternalError(f"catalog schema {found} is newer than this tierstore's ({SCHEMA_VERSION}): upgrade it")
    applied = 0
    for step in STEPS[found:]:
        async with conn.transaction():
            for statement in step.statements:
                await conn.execute(statement)
            await conn.execute(
                "INSERT INTO meta(name, value) VALUES('schema_version', $1)"
                " ON CONFLICT(name) DO UPDATE SET value = excluded.value",
                str(step.version),
            )
            await conn.execute(
                "INSERT INTO migrations(version, applied_ns, what) VALUES($1, $2, $3)",
                step.version, time.time_ns(), step.what,
            )  # fmt: skip
        applied += 1
    return applied
