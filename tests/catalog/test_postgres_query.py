"""The metadata query's PostgreSQL dialect (catalog/_query.py ``compile_postgres``) against a real
PostgreSQL, checked against the same pure-Python reference evaluator and data as the SQLite
dialect (tests/catalog/test_query.py): every operator, NOT as the exact complement, sort orders
and pages through cursors, queries sorted by an attribute, random queries, hostile input; the
SQL twin of ``attr_num``; ``PostgresCatalog.query`` end to end.

PostgreSQL's text and jsonb cannot hold U+0000, so the data set here leaves out the attribute
values that hold one (keys, ``bytea``, keep theirs)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.catalog.test_query import (
    DATA_SEED,
    EPOCHS,
    HOSTILE,
    LEAD_QUERIES,
    MIDNIGHT,
    OPERATOR_QUERIES,
    ORDER_QUERIES,
    OTHER,
    X_VALUES,
    Obj,
    all_keys,
    expected,
    keys,
    lead_queries,
    make_lead_objects,
    make_objects,
    queries,
)
from tests.postgres import PostgreSQL
from tierstore.catalog import BlobRef, VersionRecord
from tierstore.catalog._query import InvalidQuery, Not, Query, attr_num, compile_postgres, next_cursor, parse, render
from tierstore.catalog.postgres import PostgresCatalog
from tierstore.types import BucketInfo, ObjectMeta

pytestmark = pytest.mark.peer

BUCKET = "ml"
LEAD = "lead"


def doc_of(o: Obj) -> dict[str, Any]:
    """The metadata document a version with ``o``'s attributes has (catalog/_rules.py meta_doc)."""
    doc: dict[str, Any] = {"h": {"content-type": o.attrs.get("content_type", "binary/octet-stream")}}
    user = {n[5:]: v for n, v in o.attrs.items() if n.startswith("meta.")}
    tags = {n[4:]: v for n, v in o.attrs.items() if n.startswith("tag.")}
    if user:
        doc["u"] = user
    if tags:
        doc["t"] = tags
    if o.attrs.get("storage_class", "STANDARD") != "STANDARD":
        doc["sc"] = o.attrs["storage_class"]
    return doc


def storable(objs: list[Obj]) -> list[Obj]:
    """``objs`` without the attribute values PostgreSQL cannot hold (U+0000)."""
    return [dataclasses.replace(o, attrs={n: v for n, v in o.attrs.items() if "\x00" not in v}) for o in objs]


class Db:
    """The module's PostgreSQL connection, its event loop and the objects stored (a plain class:
    Hypothesis prints the arguments of a failing example, dataclasses in full)."""

    def __init__(self, runner: asyncio.Runner, conn: asyncpg.Connection, objs: list[Obj], lead: list[Obj]) -> None:
        self.runner, self.conn, self.objs, self.lead_objs = runner, conn, objs, lead

    def run(self, coro: Any) -> Any:
        return self.runner.run(coro)

    def __repr__(self) -> str:  # Hypothesis prints the arguments of a failing example
        return "Db(...)"


async def _fill(conn: asyncpg.Connection, bucket: str, objs: list[Obj], *, noise: bool) -> None:
    bucket_id = await conn.fetchval(
        "INSERT INTO buckets(name, created_ns, region) VALUES($1, 1, 'us-east-1') RETURNING id", bucket
    )
    other_id = await conn.fetchval(
        "INSERT INTO buckets(name, created_ns, region) VALUES($1, 1, 'us-east-1') RETURNING id", f"{bucket}-{OTHER}"
    )
    rows = []

    def row(bid: int, key: bytes, vid: str, latest: bool, dm: bool, size: int, etag: str, mod: int, doc: Any) -> None:
        sc = doc.get("sc", "STANDARD")
        rows.append((bid, key, vid, latest, dm, size, etag, mod, sc, json.dumps(doc), "[]", len(rows) + 1))

    for o in objs:
        key = o.key.encode()
        row(bucket_id, key, o.version_id, True, False, o.size, o.etag, o.modified_ns, doc_of(o))
        if noise:  # an older version, and the same key in another bucket with other values
            row(bucket_id, key, "v0", False, False, o.size + 1, '"old"', o.modified_ns - 1, {"u": {"epoch": "1"}})
            other = {"u": {"dataset": "tested"}, "t": {"status": "tested"}}
            row(other_id, key, o.version_id, True, False, 7, '"other"', MIDNIGHT, other)
    if noise:  # keys whose latest version is a delete marker
        for i in range(5):
            row(bucket_id, f"deleted/{i}".encode(), "dm", True, True, 0, '"dm"', MIDNIGHT, {"t": {"status": "tested"}})
            row(bucket_id, f"deleted/{i}".encode(), "v0", False, False, 5, '"x"', MIDNIGHT, {})
    await conn.executemany(
        "INSERT INTO versions(bucket_id, key, version_id, is_latest, is_delete_marker, size, etag, modified_ns,"
        " storage_class, meta, blobs, seq) VALUES($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::jsonb, $11::jsonb, $12)",
        rows,
    )


@pytest.fixture(scope="module")
def db(postgres: PostgreSQL) -> Iterator[Db]:
    dsn = postgres.create_database("pgquery")
    objs, lead_objs = storable(make_objects(DATA_SEED)), storable(make_lead_objects(DATA_SEED + 1))
    with asyncio.Runner() as runner:
        runner.run(_migrate(dsn))
        conn = runner.run(asyncpg.connect(dsn))
        runner.run(_fill(conn, BUCKET, objs, noise=True))
        runner.run(_fill(conn, LEAD, lead_objs, noise=False))
        try:
            yield Db(runner, conn, objs, lead_objs)
        finally:
            runner.run(conn.close())


async def _migrate(dsn: str) -> None:
    await (await PostgresCatalog.open(dsn)).close()


def page(db: Db, q: Query, cursor: str | None = None, bucket: str = BUCKET) -> list[tuple[Any, ...]]:
    sql, params = compile_postgres(q, bucket, cursor)
    assert all(type(p) in (str, bytes, int, float) for p in params), params
    return [tuple(r) for r in db.run(db.conn.fetch(sql, *params))]


def walk(db: Db, q: Query, bucket: str = BUCKET) -> list[bytes]:
    """Every page of ``q``, following cursors (test_query.py's ``walk``, on PostgreSQL)."""
    pages = [page(db, q, None, bucket)]
    while len(pages) < 10_000 and len(pages[-1]) > q.limit:
        pages.append(page(db, q, next_cursor(q, pages[-1][q.limit - 1]), bucket))
    assert all(len(rows) <= q.limit + 1 for rows in pages) and len(pages[-1]) <= q.limit, "pagination did not end"
    return [k for rows in pages for k in keys(rows[: q.limit])]


def check(db: Db, text: str, *, bucket: str = BUCKET, pages: bool = True) -> list[bytes]:
    q = parse(text)
    want = expected(db.objs if bucket == BUCKET else db.lead_objs, q)
    got = keys(page(db, q, bucket=bucket))
    assert got[: q.limit] == want[: q.limit], text
    assert len(got) == min(len(want), q.limit + 1), text
    if pages:
        assert walk(db, q, bucket) == want, text
    return want


@pytest.mark.parametrize("text", OPERATOR_QUERIES)
def test_operators_match_reference(db: Db, text: str) -> None:
    check(db, text + " LIMIT 1000", pages=False)
    check(db, text + " LIMIT 7")
    yes = set(keys(page(db, parse(f"{text} LIMIT 1000"))))
    no = set(keys(page(db, parse(f"NOT ({text}) LIMIT 1000"))))
    assert not yes & no and yes | no == all_keys(db.objs), text


@pytest.mark.parametrize("limit", [1, 3, 1000])
@pytest.mark.parametrize("text", ORDER_QUERIES)
def test_order_and_pages(db: Db, text: str, limit: int) -> None:
    got = check(db, f"{text} LIMIT {limit}")
    assert len(set(got)) == len(got)


@pytest.mark.parametrize("limit", [1, 10])
@pytest.mark.parametrize("text", LEAD_QUERIES)
def test_sorted_by_attribute_matches_reference(db: Db, text: str, limit: int) -> None:
    check(db, f"{text} LIMIT {limit}", bucket=LEAD)


def test_a_cursor_of_one_dialect_serves_the_other(db: Db) -> None:
    """Rows have the same shape in both dialects, so a cursor carries over (a catalog migrated
    from SQLite to PostgreSQL keeps its clients' pages)."""
    q = parse("ORDER BY meta.loss DESC, size LIMIT 5")
    rows = page(db, q)
    cursor = next_cursor(q, rows[4])
    assert (
        keys(rows[:5]) + keys(page(db, parse("ORDER BY meta.loss DESC, size LIMIT 50"), cursor))[:50]
        == (expected(db.objs, parse("ORDER BY meta.loss DESC, size LIMIT 55"))[:55])
    )


def test_a_cursor_no_postgresql_row_can_have_is_refused() -> None:
    """A cursor whose text holds U+0000 (a SQLite row's, or forged) is a bad cursor, not a 500."""
    q = parse("ORDER BY meta.note LIMIT 5")
    cursor = next_cursor(q, (b"k", "v", 1, '"e"', 1, 1, None, "x\x00y"))
    with pytest.raises(InvalidQuery, match="invalid cursor"):
        compile_postgres(q, BUCKET, cursor)
    compile_postgres(q, BUCKET, next_cursor(q, (b"k", "v", 1, '"e"', 1, 1, None, "xy")))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(q=queries)
def test_random_queries_match_reference(db: Db, q: Query) -> None:
    text = render(q)
    want = expected(db.objs, q)
    assert keys(page(db, q))[: q.limit] == want[: q.limit], text
    if q.limit >= 4:
        assert walk(db, q) == want, text
    if q.where is not None:
        yes = set(keys(page(db, Query(q.where, (), 1000))))
        no = set(keys(page(db, Query(Not(q.where), (), 1000))))
        assert not yes & no and yes | no == all_keys(db.objs), text


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(q=lead_queries)
def test_random_sorted_by_attribute_match_reference(db: Db, q: Query) -> None:
    want = expected(db.lead_objs, q)
    assert keys(page(db, q, bucket=LEAD))[: q.limit] == want[: q.limit], render(q)
    if q.limit >= 3:
        assert walk(db, q, LEAD) == want, render(q)


ATTR_NUM_CASES = [*EPOCHS, *X_VALUES, "1e-400", "-1e-400", "1e99999", "1e-99999", "0e99999", "1" * 400,
                  "0." + "0" * 400 + "1", "1" * 4097, "4.9e-324", "2.5e-324", "1.7976931348623157e308", "1.8e308",
                  "٣", "1,5", "1e", "e1"]  # fmt: skip


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=st.one_of(st.sampled_from(ATTR_NUM_CASES), st.text(alphabet="0123456789.-+eE x", max_size=12)))
def test_attr_num_in_sql_is_attr_num(db: Db, value: str) -> None:
    """``tierstore_attr_num`` (the SQL twin) says what ``attr_num`` says, on the edges of a double too."""
    got = db.run(db.conn.fetchval("SELECT tierstore_attr_num(x) FROM (SELECT $1::text AS x) s", value))
    assert got == attr_num(value), value


@pytest.mark.parametrize("text", HOSTILE, ids=lambda t: repr(t[:40]))
def test_hostile_input(db: Db, text: str) -> None:
    digest = "SELECT md5(string_agg(t::text, ',' ORDER BY t::text)) FROM versions t"
    before = db.run(db.conn.fetchval(digest))
    try:
        q = parse(text)
    except InvalidQuery:
        return  # the messages are the parser's, tested with the SQLite dialect
    sql, _params = compile_postgres(q, BUCKET)
    fixed = sql.replace("btrim(v.etag, '\"')", "").replace("'\\x00'::bytea", "")
    for fragment in ("'u'", "'t'", "'h'", "'content-type'", "'binary/octet-stream'", "'UTF8'"):
        fixed = fixed.replace(fragment, "")
    assert "'" not in fixed and ";" not in sql and "--" not in sql, sql
    assert keys(page(db, q))[: q.limit] == expected(db.objs, q)[: q.limit]
    assert db.run(db.conn.fetchval(digest)) == before


def test_values_never_reach_sql_text() -> None:
    q = parse("tag.\"t'x\" = 'v1' AND meta.\"m\"\"y\" IN ('v2', 3) OR key LIKE 'v3%' ORDER BY tag.\"o'k\"")
    sql, params = compile_postgres(q, "bucket'name")
    for value in ("t'x", "v1", 'm"y', "v2", "v3", "o'k", "bucket'name"):
        assert value not in sql
    assert {"t'x", 'm"y', "o'k", "bucket'name", "v1", "v2"} <= set(params)


def test_equality_on_a_string_can_use_the_gin_index(db: Db) -> None:
    """A selective string equality is found through ``versions_meta`` (the plan, on analyzed
    statistics), not by reading every current version of the bucket."""
    q = parse("meta.dataset = 'never stored' AND tag.status IN ('tested', 'failed')")
    sql, params = compile_postgres(q, BUCKET)

    async def plan() -> str:
        await db.conn.execute("ANALYZE versions")
        return "\n".join(r[0] for r in await db.conn.fetch("EXPLAIN " + sql, *params))

    assert "versions_meta" in db.run(plan())


def test_catalog_query_end_to_end(postgres: PostgreSQL) -> None:
    """``PostgresCatalog.query``: records of the current versions in query order, the next page's
    cursor, a tag change seen at once (no index to maintain), an unknown bucket empty."""
    dsn = postgres.create_database("pgquery_e2e")

    async def main() -> None:
        cat = await PostgresCatalog.open(dsn)
        try:
            await cat.create_bucket(BucketInfo("b", 1, "us-east-1"))
            for i, loss in enumerate(["0.5", "0.25", "n/a", "1e-3"]):
                m = ObjectMeta(bucket="b", key=f"k{i}", version_id="null", size_bytes=i, etag=f'"e{i}"',
                               modified_ns=1, user_meta={"loss": loss}, tags={"status": "tested"})  # fmt: skip
                await cat.put_version(VersionRecord(meta=m, blobs=[BlobRef(f"blob-{i}", i)]))
            records, cursor = await cat.query("b", "tag.status = 'tested' ORDER BY meta.loss LIMIT 2")
            assert [r.meta.key for r in records] == ["k3", "k1"] and cursor is not None
            assert records[0].meta.user_meta == {"loss": "1e-3"} and [b.blob_id for b in records[0].blobs] == ["blob-3"]
            records, cursor = await cat.query("b", "tag.status = 'tested' ORDER BY meta.loss LIMIT 2", cursor)
            assert [r.meta.key for r in records] == ["k0", "k2"] and cursor is None

            def untag(r: VersionRecord) -> None:
                r.meta.tags = {}

            await cat.update_version_meta("b", "k1", None, untag)
            records, _ = await cat.query("b", "tag.status = 'tested'")
            assert [r.meta.key for r in records] == ["k0", "k2", "k3"]
            assert await cat.query("nobucket", "tag.status = 'tested'") == ([], None)
            with pytest.raises(InvalidQuery):
                await cat.query("b", "tag.status = ")
        finally:
            await cat.close()

    asyncio.run(main())
