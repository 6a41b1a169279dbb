"""The metadata query language (catalog/_query.py) against a real SQLite database.

Every result is checked against a pure-Python reference evaluator over the same objects (the
dict model below), which implements docs/query.md directly and shares no code with the
compiler except ``attr_num``, the documented rule for what counts as a number.
The data set is generated from a fixed seed (DATA_SEED); Hypothesis prints its own seeds.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import operator
import random
import re
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tierstore.catalog import _query as query_mod
from tierstore.catalog._query import (
    INDEX_DDL,
    MAX_QUERY_CHARS,
    And,
    Compare,
    Expr,
    In,
    InvalidQuery,
    IsNull,
    Like,
    Literal,
    Not,
    Num,
    Or,
    Query,
    StartsWith,
    Str,
    attr_num,
    compile_sqlite,
    next_cursor,
    parse,
    render,
)
from tierstore.errors import InvalidArgument

DATA_SEED = 20261101
BUCKET = "ml"
OTHER = "ml-other"

VERSIONS_DDL = """
CREATE TABLE versions(
    bucket TEXT NOT NULL, key BLOB NOT NULL, version_id TEXT NOT NULL, is_latest INTEGER NOT NULL,
    is_delete_marker INTEGER NOT NULL DEFAULT 0, size INTEGER NOT NULL, etag TEXT NOT NULL,
    modified_ns INTEGER NOT NULL, PRIMARY KEY(bucket, key, version_id)
) WITHOUT ROWID;
CREATE UNIQUE INDEX versions_latest ON versions(bucket, key) WHERE is_latest = 1;
"""


# --- the dict model ----------------------------------------------------------------------------
@dataclass
class Obj:
    key: str
    size: int
    etag: str
    modified_ns: int
    attrs: dict[str, str] = field(default_factory=dict)
    version_id: str = "v1"


def ns(iso: str) -> int:
    """Test-side ISO-8601 -> ns (independent of the module's parser; microsecond precision)."""
    when = dt.datetime.fromisoformat(iso)
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    delta = when - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    return ((delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds) * 1_000


ODD_KEYS = ["a", "A", "ab", "abc", "a%b", "a_b", "a\\b", "a*b", "a?b", "a[b]", "a]b", "it's", 'quote"d', "sp ace",
            "tab\tkey", "nul\x00byte", "nul", "ctl\x01", "del\x7f", "é", "e\u0301", "日本語/データ", "🙂/emoji",
            "\U0010ffff", "\U0010ffffz", "%", "_", "\\", "*", "data", "data/", "Data/train/x"]  # fmt: skip
EPOCHS = ["9", "10", "9.5", "abc", "10.0", "-1", "1e1", " 10", "0x10", "NaN", "inf", "", "\u0661\u0660", "1_0", "+3",
          ".5", "5.", "1e400", "-0", "1E1"]  # fmt: skip
DATASETS = ["imagenet@3", "imagenet@2", "ImageNet@3", "cifar10", "imagenet@3 ", "imagenet"]
STATUSES = ["tested", "untested", "Tested", "failed"]
TEAMS = ["vision", "nlp", "speech", "o'brien", "10", "9"]
NOTES = ["", "a%b", "a_b", "x\x00y", "naïve", "🙂", "it's", "A", "a", "abc", "ab", "a\\b", "*", "[x]", "é",
         "e\u0301", "\U0010ffff", "\U0010ffffa"]  # fmt: skip
CTYPES = ["application/x-tar", "image/jpeg", "text/plain; charset=utf-8", "application/octet-stream"]
CLASSES = ["STANDARD", "STANDARD_IA", "GLACIER_IR"]
MIDNIGHT = ns("2026-11-01T00:00:00")
NOON = ns("2026-11-01T12:00:00")


def make_objects(seed: int) -> list[Obj]:
    rng = random.Random(seed)
    keys = list(ODD_KEYS)
    keys += [f"data/{split}/shard-{i:05d}.tar" for split in ("train", "val") for i in range(80)]
    keys += [f"ckpt/run-{r}/step-{s}.pt" for r in range(6) for s in range(0, 150, 10)]
    etags = [f'"{rng.getrandbits(128):032x}"' for _ in range(len(keys) - 20)] + ['"abc-3"', '"abc"'] * 10
    rng.shuffle(etags)
    objs = []
    for key, etag in zip(keys, etags, strict=True):
        size = rng.choice([0, 1, 10, 100, 1023, 1024, 2**62, rng.randrange(2**40), rng.randrange(5000)])
        some_time = ns("2026-10-25") + rng.randrange(14 * 86_400 * 10**9)
        modified = rng.choice([MIDNIGHT, NOON, MIDNIGHT - 1, MIDNIGHT + 1_000, some_time])
        attrs: dict[str, str] = {
            "content_type": rng.choice(CTYPES),
            "storage_class": rng.choice(CLASSES),
        }

        def maybe(name: str, values: list[str], p: float = 0.75) -> None:
            if rng.random() < p:
                attrs[name] = rng.choice(values)  # noqa: B023 - called immediately

        maybe("meta.epoch", EPOCHS)
        maybe("meta.loss", ["0.25", "0.5", "n/a", "1e-3", *(repr(round(rng.random(), 3)) for _ in range(5))])
        maybe("meta.dataset", DATASETS)
        maybe("meta.note", NOTES, 0.5)
        maybe("tag.status", STATUSES)
        maybe("tag.team name", TEAMS, 0.5)
        objs.append(Obj(key, size, etag, modified, attrs))
    return objs


def fill(conn: sqlite3.Connection, objs: list[Obj], bucket: str = BUCKET, *, noise: bool = True) -> None:
    rows = []
    attr_rows = []
    for o in objs:
        rows.append((bucket, o.key.encode(), o.version_id, 1, 0, o.size, o.etag, o.modified_ns))
        attr_rows += [(bucket, o.key.encode(), n, v, attr_num(v)) for n, v in o.attrs.items()]
        if noise:  # an older version, and the same key in another bucket with other values
            rows.append((bucket, o.key.encode(), "v0", 0, 0, o.size + 1, '"old"', o.modified_ns - 1))
            rows.append((OTHER, o.key.encode(), o.version_id, 1, 0, 7, '"other"', MIDNIGHT))
            attr_rows += [(OTHER, o.key.encode(), n, "tested", None) for n in ("tag.status", "meta.dataset")]
    if noise:  # keys whose latest version is a delete marker (no obj_attrs rows)
        for i in range(5):
            rows.append((bucket, f"deleted/{i}".encode(), "dm", 1, 1, 0, '"dm"', MIDNIGHT))
            rows.append((bucket, f"deleted/{i}".encode(), "v0", 0, 0, 5, '"x"', MIDNIGHT))
    conn.executemany("INSERT INTO versions VALUES(?,?,?,?,?,?,?,?)", rows)
    conn.executemany("INSERT INTO obj_attrs VALUES(?,?,?,?,?)", attr_rows)


def new_db(objs: list[Obj], *, noise: bool = True) -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.executescript(VERSIONS_DDL + INDEX_DDL)
    fill(conn, objs, noise=noise)
    return conn


@pytest.fixture(scope="module")
def data() -> Iterator[tuple[sqlite3.Connection, list[Obj]]]:
    objs = make_objects(DATA_SEED)
    conn = new_db(objs)
    yield conn, objs
    conn.close()


# --- the reference evaluator -----------------------------------------------------------------
CMP: dict[str, Callable[[Any, Any], bool]] = {
    "=": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


def lit_number(lit: Literal) -> float | None:
    return float(lit.text) if isinstance(lit, Num) else attr_num(lit.value)


def lit_text(lit: Literal) -> str:
    return lit.text if isinstance(lit, Num) else lit.value


def lit_exact(name: str, lit: Literal) -> Decimal:
    if name == "modified":
        return Decimal(ns(lit.value)) if isinstance(lit, Str) else Decimal(lit.text) * 10**9
    return Decimal(lit_text(lit))


def like_regex(pattern: str) -> re.Pattern[str]:
    out = []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\":
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        out.append(".*" if ch == "%" else "." if ch == "_" else re.escape(ch))
        i += 1
    return re.compile("".join(out), re.DOTALL)


def plain_value(o: Obj, name: str) -> Any:
    return {"key": o.key.encode(), "size": o.size, "modified": o.modified_ns, "etag": o.etag.strip('"').encode()}[name]


def ref_compare(o: Obj, name: str, op: str, lit: Literal) -> bool:
    if name in ("size", "modified"):
        return CMP[op](Decimal(plain_value(o, name)), lit_exact(name, lit))
    if name in ("key", "etag"):
        return CMP[op](plain_value(o, name), lit_text(lit).encode())
    value = o.attrs.get(name)
    if value is None:
        return False
    a, b = attr_num(value), lit_number(lit)
    if a is not None and b is not None:
        return CMP[op](a, b)
    return CMP[op](value.encode(), lit_text(lit).encode())


def text_of(o: Obj, name: str) -> str | None:
    if name == "key":
        return o.key
    if name == "etag":
        return o.etag.strip('"')
    return o.attrs.get(name)


def holds(o: Obj, e: Expr) -> bool:
    match e:
        case Compare(name, op, lit):
            return ref_compare(o, name, op, lit)
        case In(name, values, negated):
            if name not in ("key", "size", "modified", "etag") and name not in o.attrs:
                return False
            return any(ref_compare(o, name, "=", v) for v in values) != negated
        case Like(name, pattern, negated):
            value = text_of(o, name)
            if value is None:
                return False
            return ("\x00" not in value and like_regex(pattern).fullmatch(value) is not None) != negated
        case StartsWith(name, prefix, negated):
            value = text_of(o, name)
            if value is None:
                return False
            return value.startswith(prefix) != negated
        case IsNull(name, negated):
            present = name in ("key", "size", "modified", "etag") or name in o.attrs
            return present == negated
        case Not(inner):
            return not holds(o, inner)
        case And(items):
            return all(holds(o, x) for x in items)
        case Or(items):
            return any(holds(o, x) for x in items)
    raise AssertionError(e)


def ref_order(objs: list[Obj], order: tuple[tuple[str, bool], ...]) -> list[Obj]:
    terms: list[tuple[str, bool]] = []
    for name, desc in order:
        terms.append((name, desc))
        if name == "key":
            break
    else:
        terms.append(("key", False))
    out = list(objs)
    for name, desc in reversed(terms):  # stable sorts, least significant first
        if name in ("key", "size", "modified", "etag"):
            out.sort(key=lambda o, n=name: plain_value(o, n), reverse=desc)  # type: ignore[misc]
            continue

        def within(o: Obj, n: str = name) -> tuple[float, bytes]:
            v = o.attrs.get(n)
            num = None if v is None else attr_num(v)
            return (num if num is not None else 0.0, v.encode() if v is not None and num is None else b"")

        def cls(o: Obj, n: str = name) -> int:
            v = o.attrs.get(n)
            return 2 if v is None else 0 if attr_num(v) is not None else 1

        out.sort(key=within, reverse=desc)
        out.sort(key=cls)  # numbers, text, absent in both directions
    return out


def expected(objs: list[Obj], q: Query) -> list[bytes]:
    hits = [o for o in objs if q.where is None or holds(o, q.where)]
    return [o.key.encode() for o in ref_order(hits, q.order)]


# --- running compiled queries ----------------------------------------------------------------
def page(conn: sqlite3.Connection, q: Query, cursor: str | None = None) -> list[tuple[Any, ...]]:
    sql, params = compile_sqlite(q, BUCKET, cursor)
    assert all(type(p) in (str, bytes, int, float) for p in params), params
    return conn.execute(sql, params).fetchall()


def keys(rows: list[tuple[Any, ...]]) -> list[bytes]:
    return [bytes(r[0]) for r in rows]


def walk(conn: sqlite3.Connection, q: Query) -> list[bytes]:
    """Every page of ``q``, following cursors."""
    out: list[bytes] = []
    cursor = None
    for _ in range(10_000):
        rows = page(conn, q, cursor)
        assert len(rows) <= q.limit + 1
        out += keys(rows[: q.limit])
        if len(rows) <= q.limit:
            return out
        cursor = next_cursor(q, rows[q.limit - 1])
    raise AssertionError("pagination did not end")


def check(conn: sqlite3.Connection, objs: list[Obj], text: str, *, pages: bool = True) -> list[bytes]:
    q = parse(text)
    want = expected(objs, q)
    got = keys(page(conn, q))
    assert got[: q.limit] == want[: q.limit], text
    assert len(got) == min(len(want), q.limit + 1), text
    if pages:
        assert walk(conn, q) == want, text
    return want


def all_keys(objs: list[Obj]) -> set[bytes]:
    return {o.key.encode() for o in objs}


# --- operators, one by one ---------------------------------------------------------------------
OPERATOR_QUERIES = [
    "tag.status = 'tested'",
    "tag.status != 'tested'",
    "tag.status <> 'tested'",
    "tag.status < 'tested'",
    "tag.status <= 'tested'",
    "tag.status > 'Tested'",
    "tag.status >= 'tested'",
    "tag.status IN ('tested', 'failed')",
    "tag.status NOT IN ('tested', 'failed')",
    "tag.status IS NULL",
    "tag.status IS NOT NULL",
    "tag.status LIKE 'test%'",
    "tag.status LIKE '%test%'",
    "tag.status NOT LIKE '%test%'",
    "tag.status STARTS WITH 'un'",
    "tag.status NOT STARTS WITH 'un'",
    "meta.dataset = 'imagenet@3'",
    "meta.dataset = 'imagenet@3 '",
    "meta.dataset LIKE 'imagenet@_'",
    "meta.dataset LIKE 'ImageNet%'",
    "tag.\"team name\" = 'vision'",
    "tag.\"team name\" = 'o''brien'",
    'tag."team name" = 10',
    'tag."team name" < 10',
    "tag.\"team name\" IN (9, 'nlp')",
    "tag.\"team name\" NOT IN (9, 'nlp')",
    "meta.epoch = 10",
    "meta.epoch = '10'",
    "meta.epoch = '10.0'",
    "meta.epoch != 10",
    "meta.epoch < 10",
    "meta.epoch <= 10",
    "meta.epoch > 9",
    "meta.epoch >= 1e1",
    "meta.epoch < 'abc'",
    "meta.epoch > ''",
    "meta.epoch = ''",
    "meta.epoch IN (9, 10, 'abc', '')",
    "meta.epoch NOT IN (9, 10, 'abc')",
    "meta.epoch = -0",
    "meta.epoch < 0.5",
    "meta.epoch < -1e308",
    "meta.epoch > 1e-300",
    "meta.loss < 0.3",
    "meta.loss >= 0.5",
    "meta.loss = 'n/a'",
    "meta.note = 'x\x00y'",
    "meta.note LIKE 'x%'",
    "meta.note NOT LIKE 'x%'",
    "meta.note LIKE '%'",
    "meta.note NOT LIKE '%'",
    "meta.note LIKE ''",
    "meta.note LIKE '\\%'",
    "meta.note LIKE 'a\\_b'",
    "meta.note LIKE 'a_b'",
    "meta.note LIKE 'a\\\\b'",
    "meta.note LIKE '*'",
    "meta.note LIKE '[x]'",
    "meta.note LIKE '[%'",
    "meta.note LIKE '_'",
    "meta.note LIKE '__'",
    "meta.note LIKE 'e_'",
    "meta.note STARTS WITH '\U0010ffff'",
    "meta.note STARTS WITH 'a'",
    "meta.note STARTS WITH ''",
    "meta.note >= 'a' AND meta.note < 'b'",
    "content_type = 'image/jpeg'",
    "content_type STARTS WITH 'application/'",
    "content_type LIKE '%charset=%'",
    "storage_class IN ('STANDARD_IA', 'GLACIER_IR')",
    "storage_class != 'STANDARD'",
    "key = 'a'",
    "key != 'a'",
    "key < 'a'",
    "key >= 'data/'",
    "key > '\U0010ffff'",
    "key IN ('a', 'A', 'nul\x00byte', 'missing')",
    "key NOT IN ('a', 'A')",
    "key STARTS WITH 'data/train/'",
    "key STARTS WITH 'nul'",
    "key STARTS WITH '\U0010ffff'",
    "key NOT STARTS WITH 'data/'",
    "key LIKE 'a%'",
    "key LIKE 'A%'",
    "key LIKE 'a_b'",
    "key LIKE 'a\\%b'",
    "key LIKE 'a\\_b'",
    "key LIKE 'a*b'",
    "key LIKE 'a?b'",
    "key LIKE 'a[b]'",
    "key LIKE '%]%'",
    "key LIKE 'a\\\\b'",
    "key LIKE '\\\\'",
    "key LIKE 'nul%'",
    "key NOT LIKE 'nul%'",
    "key LIKE '_'",
    "key LIKE '_/%'",
    "key LIKE 'e_'",
    "key LIKE 'data/%/shard-0000_.tar'",
    "key LIKE '%.pt'",
    "key LIKE 'ckpt/run-_/step-1%0.pt'",
    "key LIKE '%\\%%'",
    "key LIKE 'it''s'",
    "key IS NULL",
    "key IS NOT NULL",
    "size = 1024",
    "size = '1024'",
    "size = 1024.0",
    "size = 1023.5",
    "size != 1023.5",
    "size < 1023.5",
    "size <= 1023.5",
    "size > 1023.5",
    "size >= 1023.5",
    "size > 1e3",
    "size >= 4611686018427387904",
    "size < 99999999999999999999999",
    "size > -99999999999999999999999",
    "size IN (0, 1, 10.5, 2e0, 99999999999999999999999)",
    "size NOT IN (0, 1)",
    "size IS NULL",
    "etag = 'abc'",
    "etag IN ('abc', 'abc-3')",
    "etag LIKE '%-3'",
    "etag STARTS WITH 'ab'",
    "etag > 'f'",
]


@pytest.mark.parametrize("text", OPERATOR_QUERIES)
def test_operators_match_reference(data: tuple[sqlite3.Connection, list[Obj]], text: str) -> None:
    conn, objs = data
    check(conn, objs, text + " LIMIT 1000", pages=False)
    check(conn, objs, text + " LIMIT 7")


@pytest.mark.parametrize("text", OPERATOR_QUERIES)
def test_not_is_exact_complement(data: tuple[sqlite3.Connection, list[Obj]], text: str) -> None:
    conn, objs = data
    yes = set(keys(page(conn, parse(f"{text} LIMIT 1000"))))
    no = set(keys(page(conn, parse(f"NOT ({text}) LIMIT 1000"))))
    assert not yes & no
    assert yes | no == all_keys(objs)
    assert set(keys(page(conn, parse(f"NOT NOT ({text}) LIMIT 1000")))) == yes


def test_absent_attribute_never_matches_a_comparison(data: tuple[sqlite3.Connection, list[Obj]]) -> None:
    conn, objs = data
    eq = set(keys(page(conn, parse("tag.status = 'tested' LIMIT 1000"))))
    ne = set(keys(page(conn, parse("tag.status != 'tested' LIMIT 1000"))))
    absent = set(keys(page(conn, parse("tag.status IS NULL LIMIT 1000"))))
    assert absent and eq and ne
    assert eq | ne | absent == all_keys(objs)
    assert not (eq & ne) and not (eq & absent) and not (ne & absent)
    not_eq = set(keys(page(conn, parse("NOT tag.status = 'tested' LIMIT 1000"))))
    assert not_eq == ne | absent


def test_precedence_and_parentheses(data: tuple[sqlite3.Connection, list[Obj]]) -> None:
    conn, objs = data
    a, b, c = "tag.status = 'tested'", "meta.dataset = 'imagenet@3'", "size < 1000"
    k = lambda t: set(check(conn, objs, t + " LIMIT 1000", pages=False))  # noqa: E731
    sa, sb, sc = k(a), k(b), k(c)
    assert k(f"{a} OR {b} AND {c}") == sa | (sb & sc)
    assert k(f"({a} OR {b}) AND {c}") == (sa | sb) & sc
    assert k(f"NOT {a} AND {b}") == (all_keys(objs) - sa) & sb
    assert k(f"NOT ({a} AND {b})") == all_keys(objs) - (sa & sb)
    assert k(f"{a} and {b} oR NOT {c}") == (sa & sb) | (all_keys(objs) - sc)
    assert k(f"((({a})))") == sa


def test_keywords_are_case_insensitive() -> None:
    assert parse("key like 'a%' and size is not null Order By meta.loss desc limit 5") == parse(
        "key LIKE 'a%' AND size IS NOT NULL ORDER BY meta.loss DESC LIMIT 5"
    )
    assert parse("KEY = 'a' or SIZE > 1") == parse("key = 'a' OR size > 1")
    assert parse("META.X = 1") == parse("meta.x = 1")  # meta names are lower-case in S3
    assert parse('meta."Any Name" = 1').where == Compare("meta.any name", "=", Num("1"))
    assert parse("tag.Status = 1") != parse("tag.status = 1")  # tag keys are case-sensitive


# --- the numeric rule -------------------------------------------------------------------------
def tiny(values: dict[str, str | None], name: str = "meta.epoch") -> sqlite3.Connection:
    objs = [Obj(k, 1, '"e"', 0, {} if v is None else {name: v}) for k, v in values.items()]
    return new_db(objs, noise=False)


def run_keys(conn: sqlite3.Connection, text: str) -> list[str]:
    return [k.decode() for k in keys(page(conn, parse(text)))]


def test_numeric_when_both_sides_are_numbers() -> None:
    conn = tiny({"nine": "9", "ten": "10", "nine.5": "9.5", "abc": "abc", "none": None})
    assert run_keys(conn, "meta.epoch < 10") == ["nine", "nine.5"]  # 'abc' < '10' is false as text
    assert run_keys(conn, "meta.epoch < '10'") == ["nine", "nine.5"]  # a quoted number is a number
    assert run_keys(conn, "meta.epoch > 9") == ["abc", "nine.5", "ten"]  # 'abc' > '9' as text
    assert run_keys(conn, "meta.epoch >= 'a'") == ["abc"]  # text literal: everything is text
    assert run_keys(conn, "meta.epoch < 'a'") == ["nine", "nine.5", "ten"]
    assert run_keys(conn, "meta.epoch = 10.0") == ["ten"]
    assert run_keys(conn, "meta.epoch != 10") == ["abc", "nine", "nine.5"]  # absent never matches
    assert run_keys(conn, "NOT meta.epoch = 10") == ["abc", "nine", "nine.5", "none"]
    assert run_keys(conn, "meta.epoch IN (9, 'abc')") == ["abc", "nine"]
    assert run_keys(conn, "ORDER BY meta.epoch") == ["nine", "nine.5", "ten", "abc", "none"]
    assert run_keys(conn, "ORDER BY meta.epoch DESC") == ["ten", "nine.5", "nine", "abc", "none"]


def test_numbers_that_are_not_numbers() -> None:
    arabic_10 = "\u0661\u0660"
    conn = tiny({"sp": " 10", "hex": "0x10", "inf": "inf", "nan": "NaN", "big": "1e400", "ar": arabic_10, "us": "1_0"})
    # none of these is a number, so they compare as text with the literal as written
    assert run_keys(conn, "meta.epoch < 10") == ["hex", "sp"]
    assert run_keys(conn, "meta.epoch = 'inf'") == ["inf"]
    by_text = ["sp", "hex", "us", "big", "nan", "inf", "ar"]  # byte order: ' ' < '0' < '1_' < '1e' < 'N' < 'i'
    assert run_keys(conn, "meta.epoch IS NOT NULL ORDER BY meta.epoch") == by_text


@pytest.mark.parametrize(
    ("value", "number"),
    [
        ("0", 0.0), ("-1", -1.0), ("+3", 3.0), ("9.5", 9.5), (".5", 0.5), ("5.", 5.0), ("1e1", 10.0),
        ("1E-3", 0.001), ("-0", -0.0), ("1e308", 1e308), ("007", 7.0),
        ("", None), (" 1", None), ("1 ", None), ("1_0", None), ("0x10", None), ("inf", None), ("-inf", None),
        ("nan", None), ("NaN", None), ("1e400", None), ("-1e400", None), ("\u0661\u0660", None), ("1e", None),
        (".", None), ("-", None), ("e5", None), ("1.2.3", None), ("++1", None), ("1e+", None),
    ],
)  # fmt: skip
def test_attr_num(value: str, number: float | None) -> None:
    assert attr_num(value) == number


# --- modified ----------------------------------------------------------------------------------
MODIFIED_QUERIES = [
    "modified >= '2026-11-01'",
    "modified < '2026-11-01'",
    "modified = '2026-11-01'",
    "modified = '2026-11-01T00:00:00Z'",
    "modified = '2026-11-01T00:00:00.000001Z'",
    "modified <= '2026-11-01T12:00:00Z'",
    "modified > '2026-11-01T12:00:00+02:00'",
    "modified > '2026-11-01 10:00'",
    "modified < '2026-10-30T23:59:59.5-01:30'",
    "modified IN ('2026-11-01', '2026-11-01T12:00:00Z')",
    "modified NOT IN ('2026-11-01')",
    "modified > 1793491200",
    "modified >= 1793491200.000001",
    "modified < 1.7934912e9",
    "modified > -1",
    "modified < 1e300",
    "modified = 1793534400",
]


@pytest.mark.parametrize("text", MODIFIED_QUERIES)
def test_modified(data: tuple[sqlite3.Connection, list[Obj]], text: str) -> None:
    conn, objs = data
    check(conn, objs, text + " ORDER BY modified DESC LIMIT 9")


def test_modified_nanoseconds_and_zones() -> None:
    objs = [Obj("a", 1, '"e"', MIDNIGHT + 1), Obj("b", 1, '"e"', MIDNIGHT), Obj("c", 1, '"e"', MIDNIGHT - 1)]
    conn = new_db(objs, noise=False)
    assert run_keys(conn, "modified = '2026-11-01T00:00:00.000000001Z'") == ["a"]
    assert run_keys(conn, "modified = '2026-11-01T01:00:00+01:00'") == ["b"]
    assert run_keys(conn, "modified < '2026-11-01'") == ["c"]
    assert run_keys(conn, "modified < 1793491200.0000000005") == ["b", "c"]
    assert run_keys(conn, "modified = 1793491200.0000000005") == []
    assert run_keys(conn, "modified IN (1793491200, 1793491200.0000000005)") == ["b"]


# --- ordering and pagination ---------------------------------------------------------------------
ORDER_QUERIES = [
    "ORDER BY meta.loss",
    "ORDER BY meta.loss DESC",
    "ORDER BY meta.epoch, key DESC",
    "ORDER BY meta.epoch DESC, meta.loss",
    "ORDER BY tag.status DESC, meta.dataset, size DESC",
    "ORDER BY size",
    "ORDER BY size DESC, modified",
    "ORDER BY modified DESC",
    "ORDER BY etag",
    "ORDER BY etag DESC, meta.note",
    "ORDER BY key DESC",
    "ORDER BY key DESC, size",
    "ORDER BY content_type, storage_class DESC, meta.note DESC",
    'ORDER BY tag."team name"',
    "meta.loss IS NOT NULL ORDER BY meta.loss DESC",
    "tag.status = 'tested' OR meta.epoch < 10 ORDER BY meta.epoch, meta.loss DESC",
    "key STARTS WITH 'data/' ORDER BY meta.note, meta.epoch DESC",
]


@pytest.mark.parametrize("limit", [1, 3, 10, 1000])
@pytest.mark.parametrize("text", ORDER_QUERIES)
def test_order_and_pages(data: tuple[sqlite3.Connection, list[Obj]], text: str, limit: int) -> None:
    conn, objs = data
    q = parse(f"{text} LIMIT {limit}")
    want = expected(objs, q)
    assert keys(page(conn, q))[:limit] == want[:limit]
    got = walk(conn, q)
    assert got == want
    assert len(set(got)) == len(got)


def test_limit_default_and_bounds(data: tuple[sqlite3.Connection, list[Obj]]) -> None:
    conn, objs = data
    assert parse("").limit == 100
    assert len(page(conn, parse(""))) == 101
    assert keys(page(conn, parse("")))[:100] == sorted(all_keys(objs))[:100]
    assert parse("LIMIT 1000").limit == 1000
    for bad in ("LIMIT 0", "LIMIT 1001", "LIMIT -1", "LIMIT 1.5", "LIMIT 'x'", "LIMIT", "LIMIT 1e2"):
        with pytest.raises(InvalidQuery, match="column"):
            parse(bad)


def test_page_size_may_change_between_pages(data: tuple[sqlite3.Connection, list[Obj]]) -> None:
    conn, objs = data
    q5, q50 = parse("ORDER BY meta.loss DESC LIMIT 5"), parse("ORDER BY meta.loss DESC LIMIT 50")
    rows = page(conn, q5)
    rest = keys(page(conn, q50, next_cursor(q5, rows[4])))[:50]
    assert keys(rows[:5]) + rest == expected(objs, q50)[:55]


def test_pages_stay_consistent_across_writes(data: tuple[sqlite3.Connection, list[Obj]]) -> None:
    """Keyset pages: an object added before the cursor is not seen, nor is any other repeated."""
    _, objs = data
    conn = new_db(objs)
    q = parse("ORDER BY meta.loss LIMIT 10")
    rows = page(conn, q)
    cursor = next_cursor(q, rows[9])
    conn.execute("INSERT INTO versions VALUES(?,?,?,1,0,1,'\"e\"',0)", (BUCKET, b"new-first", "v1"))
    conn.execute("INSERT INTO obj_attrs VALUES(?,?,?,?,?)", (BUCKET, b"new-first", "meta.loss", "-5", -5.0))
    rest = walk_from(conn, q, cursor)
    assert b"new-first" not in rest
    assert keys(rows[:10]) + rest == expected(objs, q)
    conn.close()


def walk_from(conn: sqlite3.Connection, q: Query, cursor: str) -> list[bytes]:
    out: list[bytes] = []
    while True:
        rows = page(conn, q, cursor)
        out += keys(rows[: q.limit])
        if len(rows) <= q.limit:
            return out
        cursor = next_cursor(q, rows[q.limit - 1])


# --- sorting by an attribute: index walks ------------------------------------------------------------
# A query sorted by an attribute first walks obj_attrs_num for its numbers, bounded by a window
# when other conditions may reject the walk; the rest goes the general way. These run the walk,
# the window boundary (tiny windows, so ties and both sides of it are exercised) and the text and
# absent arms against the reference, with cursors across every page.
X_VALUES = ["-2", "-1", "-1.0", "-0", "0", "0.0", "1e-3", ".5", "0.5", "-.5", "5", "5.0", "+5", "5.", "50", "-50",
            "1e2", "100", "1e400", "abc", "", " 5", "-", "0x10", "9", "Z", "1.2.3", "--1"]  # fmt: skip
LEAD_QUERIES = [
    "ORDER BY meta.x",
    "ORDER BY meta.x DESC",
    "meta.x < 5 ORDER BY meta.x",
    "meta.x < 5 ORDER BY meta.x DESC",
    "meta.x >= -1 AND meta.x <= 5 ORDER BY meta.x DESC",
    "meta.x > -1e9 ORDER BY meta.x",
    "meta.x < '5' ORDER BY meta.x DESC",
    "meta.x = 5 ORDER BY meta.x DESC",
    "meta.x = -0 ORDER BY meta.x",
    "meta.x IN (-1, 5, 'abc', 100) ORDER BY meta.x",
    "meta.x IN (-1, 5) ORDER BY meta.x DESC",
    "meta.x NOT IN (-1, 5) ORDER BY meta.x DESC",
    "meta.x != 5 ORDER BY meta.x",
    "meta.x IS NOT NULL ORDER BY meta.x DESC",
    "meta.x IS NULL ORDER BY meta.x",
    "NOT meta.x < 0 ORDER BY meta.x",
    "meta.x < 5 AND tag.t = 'a' ORDER BY meta.x",
    "meta.x < 5 AND tag.t = 'a' ORDER BY meta.x DESC",
    "tag.t = 'b' ORDER BY meta.x DESC",
    "tag.t IN ('a', 'b') OR meta.y = 2 ORDER BY meta.x",
    "tag.t != 'a' ORDER BY meta.x DESC, size",
    "meta.x < 5 ORDER BY meta.x, size DESC",
    "meta.x >= 0 ORDER BY meta.x DESC, meta.y, key DESC",
    "ORDER BY meta.x, key DESC",
    "meta.x LIKE '%5%' ORDER BY meta.x",
    "meta.x STARTS WITH '-' ORDER BY meta.x DESC",
    "meta.x = 'abc' ORDER BY meta.x",
    "meta.x < 'a' AND meta.x > 0 ORDER BY meta.x",
    "key STARTS WITH 'k/1' ORDER BY meta.x DESC",
    "size = 2 AND meta.x < 10 ORDER BY meta.x",
    "meta.x < 5 AND meta.x > -1 AND NOT tag.t = 'c' ORDER BY meta.x DESC",
    "(meta.x < 5 AND tag.t = 'a') OR meta.x IS NULL ORDER BY meta.x",
    "meta.x = 5 AND meta.x = 'abc' ORDER BY meta.x",
    "ORDER BY tag.t, meta.x DESC",
    "meta.absent < 5 ORDER BY meta.absent DESC",
]


def make_lead_objects(seed: int) -> list[Obj]:
    rng = random.Random(seed)
    objs = []
    for i in range(240):
        attrs: dict[str, str] = {}
        if rng.random() < 0.8:
            attrs["meta.x"] = rng.choice(X_VALUES)
        if rng.random() < 0.7:
            attrs["tag.t"] = rng.choice(["a", "b", "c", "5"])
        if rng.random() < 0.5:
            attrs["meta.y"] = rng.choice(["1", "2", "x"])
        key = f"k/{rng.randrange(100):02d}-{i}"
        objs.append(Obj(key, rng.choice([1, 2, 3]), '"e"', MIDNIGHT + rng.randrange(3), attrs))
    return objs


@pytest.fixture(scope="module")
def lead_data() -> Iterator[tuple[sqlite3.Connection, list[Obj]]]:
    objs = make_lead_objects(DATA_SEED + 1)
    conn = new_db(objs)
    yield conn, objs
    conn.close()


def set_window(mp: pytest.MonkeyPatch, window: int | None) -> None:
    if window is not None:
        mp.setattr(query_mod, "_WALK_MIN", window)
        mp.setattr(query_mod, "_WALK_PER_ROW", 0)
        mp.setattr(query_mod, "_WALK_MAX", window)


@pytest.mark.parametrize("window", [None, 1, 3])
@pytest.mark.parametrize("limit", [1, 3, 10, 1000])
@pytest.mark.parametrize("text", LEAD_QUERIES)
def test_sorted_by_attribute_matches_reference(
    lead_data: tuple[sqlite3.Connection, list[Obj]], monkeypatch: pytest.MonkeyPatch, text: str, limit: int,
    window: int | None,
) -> None:  # fmt: skip
    conn, objs = lead_data
    set_window(monkeypatch, window)
    got = check(conn, objs, f"{text} LIMIT {limit}")
    assert len(set(got)) == len(got)


@pytest.mark.parametrize("window", [None, 2])
@pytest.mark.parametrize("text", ORDER_QUERIES[:5] + ORDER_QUERIES[-3:])
def test_order_queries_with_a_small_window(
    data: tuple[sqlite3.Connection, list[Obj]], monkeypatch: pytest.MonkeyPatch, text: str, window: int | None
) -> None:
    conn, objs = data
    set_window(monkeypatch, window)
    for limit in (1, 4, 25):
        check(conn, objs, f"{text} LIMIT {limit}")


def test_sorted_by_attribute_pages_survive_ties_at_the_window(monkeypatch: pytest.MonkeyPatch) -> None:
    """Many equal numbers: the window ends inside a group of ties, in both directions."""
    objs = [Obj(f"t{i:03d}", 1, '"e"', 0, {"meta.x": ["1", "1.0", "2", "-3", "x"][i % 5], "tag.t": "ab"[i % 2]})
            for i in range(60)]  # fmt: skip
    conn = new_db(objs, noise=False)
    for window in (1, 2, 7):
        set_window(monkeypatch, window)
        for text in (
            "tag.t = 'a' ORDER BY meta.x",
            "tag.t = 'b' ORDER BY meta.x DESC",
            "tag.t = 'a' ORDER BY meta.x DESC, key DESC",
        ):
            for limit in (1, 2, 5, 13):
                check(conn, objs, f"{text} LIMIT {limit}")


lead_literals = st.one_of(
    st.sampled_from(X_VALUES).map(Str),
    st.sampled_from(["-2", "-1", "0", "0.5", "5", "1e2", "-0", "1e-3", "100"]).map(Num),
)
lead_predicates = st.one_of(
    st.builds(Compare, st.just("meta.x"), st.sampled_from(["=", "!=", "<", "<=", ">", ">="]), lead_literals),
    st.builds(In, st.just("meta.x"), st.lists(lead_literals, min_size=1, max_size=3).map(tuple), st.booleans()),
    st.builds(IsNull, st.just("meta.x"), st.booleans()),
    st.builds(Like, st.just("meta.x"), st.sampled_from(["%5%", "-%", "_"]), st.booleans()),
    st.builds(
        Compare,
        st.sampled_from(["tag.t", "meta.y", "key"]),
        st.sampled_from(["=", "!=", "<", ">="]),
        st.sampled_from(["a", "b", "1", "2", "x", "5", "k/5"]).map(Str),
    ),
)
lead_expressions = st.recursive(
    lead_predicates,
    lambda inner: st.one_of(
        inner.map(Not),
        st.lists(inner, min_size=2, max_size=3).map(lambda xs: And(tuple(xs))),
        st.lists(inner, min_size=2, max_size=3).map(lambda xs: Or(tuple(xs))),
    ),
    max_leaves=5,
)
lead_queries = st.builds(
    Query,
    where=st.one_of(st.none(), lead_expressions, lead_expressions),
    order=st.tuples(
        st.sampled_from(["meta.x", "meta.x", "meta.y", "tag.t"]),
        st.booleans(),
        st.lists(st.tuples(st.sampled_from(["size", "meta.y", "key", "meta.x"]), st.booleans()), max_size=2),
    ).map(lambda t: ((t[0], t[1]), *t[2])),
    limit=st.sampled_from([1, 3, 7, 1000]),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(q=lead_queries, window=st.sampled_from([None, 1, 2, 5]))
def test_random_sorted_by_attribute_match_reference(
    lead_data: tuple[sqlite3.Connection, list[Obj]], q: Query, window: int | None
) -> None:
    conn, objs = lead_data
    with pytest.MonkeyPatch.context() as mp:
        set_window(mp, window)
        want = expected(objs, q)
        assert keys(page(conn, q))[: q.limit] == want[: q.limit], render(q)
        if q.limit >= 3:
            assert walk(conn, q) == want, render(q)


@settings(max_examples=500, deadline=None)
@given(value=st.one_of(st.text(alphabet="0123456789.-+eE x", max_size=8), st.text(max_size=4)))
def test_surely_a_number_is_a_number(value: str) -> None:
    """The value-only test that lets a text range skip numbers never skips a text value."""
    sql, params = query_mod._SURELY_NUM
    with sqlite3.connect(":memory:") as conn:
        (surely,) = conn.execute(f"SELECT {sql} FROM (SELECT ? AS value)", [*params, value]).fetchone()
    if surely:
        assert attr_num(value) is not None, value


def test_surely_a_number_knows_the_common_forms() -> None:
    sql, params = query_mod._SURELY_NUM
    with sqlite3.connect(":memory:") as conn:
        cases = [("0.123456", 1), ("-1.5", 1), ("42", 1), ("5.", 1), ("1" * 299, 1), ("1" * 300, 0), ("-", 0),
                 ("1.2.3", 0), ("1e5", 0), ("", 0), (" 1", 0), ("1-", 0), ("--1", 0)]  # fmt: skip
        for value, surely in cases:
            got = conn.execute(f"SELECT {sql} FROM (SELECT ? AS value)", [*params, value]).fetchone()[0]
            assert got == surely, value


# --- cursors ---------------------------------------------------------------------------------------
def test_cursor_is_bound_to_the_query(data: tuple[sqlite3.Connection, list[Obj]]) -> None:
    conn, _ = data
    q = parse("tag.status = 'tested' ORDER BY meta.loss LIMIT 3")
    cursor = next_cursor(q, page(conn, q)[2])
    assert re.fullmatch(r"[A-Za-z0-9_-]+", cursor)
    page(conn, parse("tag.status = 'tested' ORDER BY meta.loss LIMIT 30"), cursor)  # LIMIT may change
    page(conn, parse("tag.status='tested' order by meta.loss asc"), cursor)  # same normalized query
    for other in ("tag.status = 'Tested' ORDER BY meta.loss", "tag.status = 'tested' ORDER BY meta.loss DESC", ""):
        with pytest.raises(InvalidQuery, match="different query"):
            compile_sqlite(parse(other), BUCKET, cursor)


def _tamper(cursor: str, fn: Callable[[dict[str, Any]], None], *, rehash: bool = False) -> str:
    doc = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    fn(doc)
    if rehash:  # a forger who read the source; the query hash still binds the cursor
        body = {k: v for k, v in doc.items() if k != "h"}
        blob = json.dumps(body, sort_keys=True, separators=(",", ":"))
        doc["h"] = hashlib.sha256(b"tierstore-query-cursor\x00" + blob.encode()).hexdigest()[:16]
    return base64.urlsafe_b64encode(json.dumps(doc).encode()).decode().rstrip("=")


def test_bad_cursors_are_rejected(data: tuple[sqlite3.Connection, list[Obj]]) -> None:
    conn, _ = data
    q = parse("ORDER BY meta.loss, size DESC LIMIT 3")
    good = next_cursor(q, page(conn, q)[2])
    bad = [
        "",
        "!!!!",
        "a" * 70_000,
        "e30",  # {}
        base64.urlsafe_b64encode(b"\xff\xfe").decode(),
        base64.urlsafe_b64encode(b"[1,2]").decode(),
        good[:-4],
        good + "AAAA",
        _tamper(good, lambda d: d["s"].__setitem__(1, 5)),  # edited without the checksum
        _tamper(good, lambda d: d.__setitem__("k", "%%%")),
        _tamper(good, lambda d: d["s"][0].__setitem__(0, 7), rehash=True),  # bad class
        _tamper(good, lambda d: d["s"].__setitem__(1, "x"), rehash=True),  # size must be an int
        _tamper(good, lambda d: d["s"].__setitem__(1, True), rehash=True),
        _tamper(good, lambda d: d["s"].__setitem__(1, 2**64), rehash=True),
        _tamper(good, lambda d: d["s"].append(1), rehash=True),
        _tamper(good, lambda d: d.__setitem__("k", 5), rehash=True),
        _tamper(good, lambda d: d.__setitem__("extra", 1), rehash=True),
        _tamper(good, lambda d: d.__setitem__("q", "0" * 16), rehash=True),
    ]
    for cursor in bad:
        with pytest.raises(InvalidQuery, match="cursor"):
            compile_sqlite(q, BUCKET, cursor)
    # within the same query, a well-formed cursor can only choose where the page starts
    moved = _tamper(good, lambda d: d["s"].__setitem__(0, [0, 0.0, None]), rehash=True)
    page(conn, q, moved)


# --- random queries against the reference ------------------------------------------------------
STR_POOL = ["", "a", "A", "abc", "9", "10", "9.5", "1e1", "tested", "Tested", "imagenet@3", "it's", "a%b", "x\x00y",
            "é", "🙂", "0.25", " 10", "n/a", "vision", "STANDARD", "image/jpeg", "data/", "ckpt/run-1/", "\U0010ffff",
            "nul\x00byte", "'; DROP TABLE versions; --"]  # fmt: skip
NUM_POOL = ["0", "1", "9", "10", "9.5", "-1", "1e1", ".5", "5.", "0.25", "-0", "1e308", "1e-300", "1024", "0.5",
            "4611686018427387904", "99999999999999999999999", "1.5", "-99999999999999999999999"]  # fmt: skip
ISO_POOL = ["2026-11-01", "2026-11-01T12:00:00Z", "2026-11-01T00:00:00.000001Z", "2026-10-30T23:59:59+02:00",
            "2026-11-03 06:30", "2026-10-25", "1970-01-01"]  # fmt: skip
EPOCH_POOL = ["1793491200", "1793491200.5", "0", "-1", "1e12", "1793534400"]
PATTERNS = ["%", "", "a%", "a_b", "a\\%b", "%b", "data/%/shard-_____.tar", "%\\_%", "_", "__", "%é%", "[%", "*",
            "%?%", "A%", "tested", "image/%", "\\\\%", "%0.pt", "imagenet@_", "%]", "e_", "%-3"]  # fmt: skip
PREFIXES = ["", "a", "data/", "ckpt/run-1", "é", "imagenet", "te", "\U0010ffff", "nul", "ab"]
ATTR_NAMES = ["meta.epoch", "meta.loss", "meta.dataset", "meta.note", "tag.status", "tag.team name", "content_type",
              "storage_class", "meta.absent"]  # fmt: skip
NAMES = ["key", "size", "modified", "etag", *ATTR_NAMES]


VALUES_OF = {
    "key": [*ODD_KEYS, "data/train/shard-00007.tar", "data/val/", "ckpt/run-3/step-70.pt", "ckpt/run-9"],
    "etag": ["abc", "abc-3", "0", "f", "abd"],
    "meta.epoch": EPOCHS,
    "meta.loss": ["0.25", "0.5", "n/a", "1e-3", "0.1", "0.9"],
    "meta.dataset": DATASETS,
    "meta.note": NOTES,
    "tag.status": STATUSES,
    "tag.team name": TEAMS,
    "content_type": CTYPES,
    "storage_class": CLASSES,
    "meta.absent": ["x"],
}


def literal_for(name: str) -> st.SearchStrategy[Literal]:
    if name == "size":
        return st.one_of(st.sampled_from(NUM_POOL).map(Num), st.sampled_from(["10", "1e3", "-0"]).map(Str))
    if name == "modified":
        return st.one_of(st.sampled_from(ISO_POOL).map(Str), st.sampled_from(EPOCH_POOL).map(Num))
    strings = st.one_of(st.sampled_from(VALUES_OF[name]), st.sampled_from(STR_POOL), st.text(max_size=3)).map(Str)
    if name in ("key", "etag"):
        return strings
    return st.one_of(strings, st.sampled_from(NUM_POOL).map(Num))


@st.composite
def predicates(draw: st.DrawFn) -> Expr:
    name = draw(st.sampled_from(NAMES))
    kinds = ["cmp", "in", "null"] + ([] if name in ("size", "modified") else ["like", "starts"])
    kind = draw(st.sampled_from(kinds))
    negated = draw(st.booleans())
    if kind == "cmp":
        return Compare(name, draw(st.sampled_from(["=", "!=", "<", "<=", ">", ">="])), draw(literal_for(name)))
    if kind == "in":
        return In(name, tuple(draw(st.lists(literal_for(name), min_size=1, max_size=4))), negated)
    if kind == "like":
        return Like(name, draw(st.sampled_from(PATTERNS)), negated)
    if kind == "starts":
        return StartsWith(name, draw(st.one_of(st.sampled_from(PREFIXES), st.text(max_size=2))), negated)
    return IsNull(name, negated)


expressions = st.recursive(
    predicates(),
    lambda inner: st.one_of(
        inner.map(Not),
        st.lists(inner, min_size=2, max_size=3).map(lambda xs: And(tuple(xs))),
        st.lists(inner, min_size=2, max_size=3).map(lambda xs: Or(tuple(xs))),
    ),
    max_leaves=8,
)
queries = st.builds(
    Query,
    where=st.one_of(expressions, expressions, expressions, st.none()),  # mostly filtered
    order=st.lists(st.tuples(st.sampled_from(NAMES), st.booleans()), max_size=3).map(tuple),
    limit=st.sampled_from([1, 4, 25, 1000]),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(q=queries)
def test_random_queries_match_reference(data: tuple[sqlite3.Connection, list[Obj]], q: Query) -> None:
    conn, objs = data
    text = render(q)
    assert parse(text) == q, text
    want = expected(objs, q)
    assert keys(page(conn, q))[: q.limit] == want[: q.limit], text
    if q.limit >= 4:
        assert walk(conn, q) == want, text


@settings(max_examples=200, deadline=None)
@given(q=queries)
def test_random_not_is_complement(data: tuple[sqlite3.Connection, list[Obj]], q: Query) -> None:
    conn, objs = data
    if q.where is None:
        return
    yes = set(keys(page(conn, Query(q.where, (), 1000))))
    no = set(keys(page(conn, Query(Not(q.where), (), 1000))))
    assert not yes & no and yes | no == all_keys(objs), render(q)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(q=queries, window=st.sampled_from([1, 3]))
def test_random_queries_match_reference_small_window(
    data: tuple[sqlite3.Connection, list[Obj]], q: Query, window: int
) -> None:
    conn, objs = data
    with pytest.MonkeyPatch.context() as mp:
        set_window(mp, window)
        want = expected(objs, q)
        assert keys(page(conn, q))[: q.limit] == want[: q.limit], render(q)
        if q.limit >= 4:
            assert walk(conn, q) == want, render(q)


# --- hostile input -----------------------------------------------------------------------------------
HOSTILE = [
    "key = '''; DROP TABLE versions; --'",
    "key = ''; DROP TABLE versions; --",
    "key = 'x'; DELETE FROM obj_attrs",
    "meta.x = 'a' UNION SELECT * FROM versions",
    'tag."x" = 1 OR 1=1',
    'tag."x\'); DROP TABLE versions; --" = 1',
    'meta."x"" OR 1=1 --" = \'y\'',
    'tag."" = 1',
    "meta. = 1",
    "meta.",
    "meta = 1",
    "tag",
    "key = '\x00'",
    "key = 'a\x00' OR meta.\"\x00\" IS NULL",
    "key = \x00",
    "\x00",
    "key = 'é🙂\U0010ffff'",
    "key = \u2018curly\u2019",
    'key = "double"',
    "key = 'unterminated",
    "key = 'unterminated''",
    "meta.x = '" + "x" * 4000 + "'",
    "meta.x = '" + "x" * 10_000 + "'",
    "size > 1e400",
    "size > -1e400",
    "meta.x = 1e309",
    "size > 99999999999999999999999999999999999999999",
    "size > 0." + "0" * 3000 + "1",
    "modified > 1e-999999999",
    "(" * 40 + "key = 'a'" + ")" * 40,
    "(" * 32 + "key = 'a'" + ")" * 32,
    "NOT " * 33 + "key = 'a'",
    "NOT " * 32 + "key = 'a'",
    "(" * 5000,
    "unknown = 1",
    "keys = 'a'",
    "key == 'a'",
    "key = 'a' -- comment",
    "key = 'a' /* c */",
    "key = 'a';",
    "key = 'a' AND",
    "key = 'a' OR OR key = 'b'",
    "key IN ()",
    "key IN ('a',)",
    "key IN 'a'",
    "size LIKE '1%'",
    "modified STARTS WITH '2026'",
    "modified > '2026'",
    "modified > '2026-13-01'",
    "modified > '2026-02-30'",
    "modified > 'yesterday'",
    "key LIKE 'a\\b'",
    "key LIKE 'a\\'",
    "key LIKE 'nul\x00%'",
    "key = 5",
    "etag = 5",
    "size = 'abc'",
    "key IS 'a'",
    "key IS NOT 'a'",
    "ORDER BY",
    "ORDER BY bogus",
    "ORDER key",
    "ORDER BY key LIMIT 5 LIMIT 6",
    "LIMIT 5 ORDER BY key",
    "ORDER BY " + ", ".join(["size"] * 9),
    "key = 'a' " + " OR key = 'a'" * 64,
    "key IN (" + ",".join(["'a'"] * 1001) + ")",
    "key = '\ud800'",
    "-",
    "1 = key",
    "key = 1abc",
    "key = 'a' ORDER BY key DESC DESC",
    "meta.x = .",
    "tag.a=b",
    "\u202ekey = 'a'",
]


def _db_digest(conn: sqlite3.Connection) -> str:
    h = hashlib.sha256()
    for line in conn.iterdump():
        h.update(line.encode("utf-8", "surrogatepass"))
    return h.hexdigest()


@pytest.mark.parametrize("text", HOSTILE, ids=lambda t: repr(t[:40]))
def test_hostile_input(data: tuple[sqlite3.Connection, list[Obj]], text: str) -> None:
    conn, objs = data
    before = _db_digest(conn)
    try:
        q = parse(text)
    except InvalidQuery as exc:
        assert re.search(r"column \d+", exc.message), exc.message
        assert isinstance(exc, InvalidArgument) and exc.code == "InvalidQuery"
        assert exc.column is not None and 1 <= exc.column <= len(text) + 1
    else:
        sql, params = compile_sqlite(q, BUCKET)
        fixed = sql.replace("trim(v.etag, '\"')", "").replace("x'00'", "")
        assert "'" not in fixed and ";" not in sql and "--" not in sql
        for lit in re.findall(r"'((?:[^']|'')*)'", text):
            if len(lit) >= 4:
                assert lit.replace("''", "'") not in sql
        assert keys(conn.execute(sql, params).fetchall())[: q.limit] == expected(objs, q)[: q.limit]
    assert _db_digest(conn) == before


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("tag.status = ", "expected a value after '=' at column 14: tag.status = ^"),
        ("meta. = 1", "expected a name after 'meta.' at column 6: meta.^"),
        ("key = 'abc", "unterminated string at column 7: key = ^"),
        ('tag."x" = 1 OR 1=1', "expected a name after 'OR' at column 16: tag.\"x\" = 1 OR ^"),
        ("size LIKE 'a%'", "LIKE does not apply to size at column 11: size LIKE ^"),
        ("key = 5", "expected a quoted string for key at column 7: key = ^"),
        ("(key = 'a'", "expected ')' after \"'a'\" at column 11: (key = 'a'^"),
        ("key = 'a' AND", "expected a name after 'AND' at column 14: key = 'a' AND^"),
        ("LIMIT 0", "expected a whole number from 1 to 1000 after 'LIMIT' at column 7: LIMIT ^"),
        ("key LIKE 'a\\b'", "a backslash in a LIKE pattern must be followed by %, _ or \\ at column 10: key LIKE ^"),
        ("size ~ 1", "unexpected character '~' at column 6: size ^"),
        ("key\x00", "unexpected character '\\x00' at column 4: key^"),
        (
            "tag.status = 'tested' AND meta.dataset = 'imagenet@3' AND bogus = 1",
            "unknown name 'bogus' (expected key, size, modified, etag, content_type, storage_class, meta.<name> or"
            " tag.<name>) at column 59: ...ed' AND meta.dataset = 'imagenet@3' AND ^",
        ),
        (
            "key = 'a' key",
            "expected AND, OR, ORDER BY, LIMIT or the end of the query after \"'a'\" at column 11: key = 'a' ^",
        ),
        ("key IS NOT 'a'", "expected NULL after 'NOT' at column 12: key IS NOT ^"),
        (
            "modified > '2026'",
            "expected an ISO-8601 time ('2026-11-01T12:00:00Z') or epoch seconds for modified"
            " at column 12: modified > ^",
        ),
    ],
)  # fmt: skip
def test_error_messages(text: str, message: str) -> None:
    with pytest.raises(InvalidQuery) as info:
        parse(text)
    assert info.value.message == message


def test_limits() -> None:
    ok = [
        "key = 'a'" + " OR key = 'a'" * 63,
        "(" * 32 + "key = 'a'" + ")" * 32,
        "key IN (" + ",".join(["1"] * 1000).replace("1", "'1'") + ")",
        "ORDER BY " + ", ".join(["size"] * 8),
        "meta.x = '" + "x" * (MAX_QUERY_CHARS - 12) + "'",
    ]
    for text in ok:
        parse(text)
    bad = {
        "key = 'a'" + " OR key = 'a'" * 64: "more than 64 predicates",
        "(" * 33 + "key = 'a'" + ")" * 33: "nesting deeper than 32",
        "NOT " * 33 + "key = 'a'": "nesting deeper than 32",
        "key IN (" + ",".join(["'1'"] * 1001) + ")": "more than 1000 values",
        "ORDER BY " + ", ".join(["size"] * 9): "more than 8 ORDER BY terms",
        "meta.x = '" + "x" * (MAX_QUERY_CHARS - 10) + "'": "longer than 4096",
    }
    for text, msg in bad.items():
        with pytest.raises(InvalidQuery, match=msg):
            parse(text)


def test_values_never_reach_sql_text() -> None:
    q = parse("tag.\"t'x\" = 'v1' AND meta.\"m\"\"y\" IN ('v2', 3) OR key LIKE 'v3%' ORDER BY tag.\"o'k\"")
    sql, params = compile_sqlite(q, "bucket'name")
    for value in ("t'x", "v1", 'm"y', "v2", "v3", "o'k", "bucket'name"):
        assert value not in sql
    assert {"tag.t'x", 'meta.m"y', "tag.o'k", "bucket'name", "v1", "v2", b"v3"} <= set(params)


# --- plans ------------------------------------------------------------------------------------------
def plan(conn: sqlite3.Connection, text: str) -> str:
    sql, params = compile_sqlite(parse(text), BUCKET)
    return "\n".join(r[3] for r in conn.execute("EXPLAIN QUERY PLAN " + sql, params))


def test_plan_equality_uses_value_index(data: tuple[sqlite3.Connection, list[Obj]]) -> None:
    conn, _ = data
    p = plan(conn, "meta.dataset = 'imagenet@3'")
    assert "obj_attrs_value (bucket=? AND name=? AND value=?)" in p, p
    p = plan(conn, "tag.status = 'tested' AND meta.dataset = 'imagenet@3' ORDER BY meta.loss LIMIT 5")
    assert p.count("obj_attrs_value (bucket=? AND name=? AND value=?)") == 2, p


def test_plan_numeric_range_with_order_uses_num_index(data: tuple[sqlite3.Connection, list[Obj]]) -> None:
    conn, _ = data
    p = plan(conn, "meta.loss < 0.5 ORDER BY meta.loss LIMIT 10")
    assert re.search(r"obj_attrs_num \(bucket=\? AND name=\? AND num.*<\?\)", p), p
    p = plan(conn, "meta.loss >= 0.25 AND meta.loss < 0.5 ORDER BY meta.loss DESC")
    assert "obj_attrs_num" in p, p


def first_arm_plan(conn: sqlite3.Connection, q: Query, cursor: str | None = None) -> str:
    """The plan of the part that runs first: the left-most arm of a UNION ALL, or the whole."""
    sql, params = compile_sqlite(q, BUCKET, cursor)
    rows = conn.execute("EXPLAIN QUERY PLAN " + sql, params).fetchall()
    roots = [r[0] for r in rows if r[3] == "LEFT-MOST SUBQUERY"]
    if not roots:
        return "\n".join(r[3] for r in rows)
    inside, out = {roots[0]}, []
    for node, parent, _, detail in rows:
        if parent in inside:
            inside.add(node)
            out.append(detail)
    return "\n".join(out)


@pytest.mark.parametrize(
    "text",
    [
        "meta.loss < 0.5 ORDER BY meta.loss LIMIT 10",
        "meta.loss < 0.5 ORDER BY meta.loss DESC LIMIT 10",
        "meta.loss >= 0.25 AND meta.loss < 0.5 ORDER BY meta.loss DESC",
        "meta.loss < 0.3 ORDER BY meta.loss",
        "meta.epoch IN (9, 10) ORDER BY meta.epoch DESC LIMIT 3",
        "meta.epoch = 10 ORDER BY meta.epoch LIMIT 3",
        "tag.status = 'tested' AND meta.dataset = 'imagenet@3' ORDER BY meta.loss LIMIT 5",
        "meta.epoch >= 9 AND tag.status = 'tested' ORDER BY meta.loss DESC LIMIT 3",
        "ORDER BY meta.loss LIMIT 10",
        "ORDER BY meta.loss DESC LIMIT 10",
        "meta.loss < 0.5 ORDER BY meta.loss, size DESC LIMIT 3",
    ],
)
def test_plan_sorted_by_attribute_walks_the_num_index(data: tuple[sqlite3.Connection, list[Obj]], text: str) -> None:
    """The first arm (the only one that runs while numbers fill the page) reads obj_attrs_num in
    order and never sorts every match, on the first page and on a later one."""
    conn, _ = data
    q = parse(text)
    rows = page(conn, q)
    cursor = next_cursor(q, rows[min(2, len(rows) - 1)])
    for c in (None, cursor):
        p = first_arm_plan(conn, q, c)
        assert re.search(r"SEARCH s0 USING COVERING INDEX obj_attrs_num \(bucket=\? AND name=\? AND num", p), p
        assert "USE TEMP B-TREE FOR ORDER BY" not in p, p
        assert "LIST SUBQUERY" not in p, p  # no key list to materialize before the first row
        if not q.order[0][1] and len(q.order) == 1:
            assert "TEMP B-TREE" not in p, p


def test_plan_sorted_by_attribute_cursor_resumes_in_the_index(data: tuple[sqlite3.Connection, list[Obj]]) -> None:
    conn, _ = data
    q = parse("meta.loss < 0.5 ORDER BY meta.loss LIMIT 3")
    p = first_arm_plan(conn, q, next_cursor(q, page(conn, q)[2]))
    assert "obj_attrs_num (bucket=? AND name=? AND num>? AND num<?)" in p, p


def test_plan_key_prefix_uses_key_range(data: tuple[sqlite3.Connection, list[Obj]]) -> None:
    conn, _ = data
    for text in ("key STARTS WITH 'data/'", "key LIKE 'data/%/shard-_.tar'"):
        p = plan(conn, text)
        assert "key>? AND key<?" in p, p


# --- docs ----------------------------------------------------------------------------------------
def test_examples_in_docs_parse() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "query.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```sql\n(.*?)```", doc, re.DOTALL)
    examples = [ln for b in blocks for ln in b.splitlines() if ln.strip() and not ln.lstrip().startswith("--")]
    assert len(examples) >= 10
    for text in examples:
        q = parse(text)
        assert parse(render(q)) == q
        compile_sqlite(q, BUCKET)
