"""Metadata queries over the current object versions of one bucket.

``tag.status = 'tested' AND meta.dataset = 'imagenet@3' ORDER BY meta.loss LIMIT 5``

This module is the whole language: a lexer, a recursive-descent parser into a small frozen AST
(:class:`Query`), a renderer back to canonical text, and a compiler to one SQLite ``SELECT``
over ``versions`` and the ``obj_attrs`` side table (:data:`INDEX_DDL`); its second dialect,
:func:`compile_postgres`, reads PostgreSQL's ``versions.meta`` json in place (at the end).
The reference for users is ``docs/query.md``; the semantics in brief:

* Two-valued logic. A comparison on an attribute the object does not have is false, whatever
  the operator (``!=``, ``NOT IN``, ``NOT LIKE``, ``NOT STARTS WITH`` included: they mean
  "present and ..."). ``NOT x`` is the exact complement of ``x``. ``IS NULL`` means absent.
* Numbers: when the literal is a number (or a quoted string that :func:`attr_num` accepts) and
  the stored value is one too, they compare as IEEE doubles; otherwise both compare as text,
  in UTF-8 byte order (a number literal as written). ``size`` and ``modified`` are integers and
  compare exactly.
* ``ORDER BY`` an attribute: numbers, then text, then objects without it, in both directions;
  ``DESC`` reverses the order inside numbers and inside text. ``key`` is the last tie-breaker.

Values never reach SQL text: every literal and every attribute name is a ``?`` parameter,
and the SQL text is assembled from fixed fragments only.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import decimal
import hashlib
import json
import math
import re
import sys
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final

from tierstore.errors import InvalidQuery

__all__ = [
    "DEFAULT_LIMIT",
    "INDEX_DDL",
    "MAX_DEPTH",
    "MAX_IN_VALUES",
    "MAX_LIMIT",
    "MAX_ORDER_TERMS",
    "MAX_PREDICATES",
    "MAX_QUERY_CHARS",
    "PG_ATTR_NUM_DDL",
    "And",
    "Compare",
    "Expr",
    "In",
    "InvalidQuery",
    "IsNull",
    "Like",
    "Literal",
    "Not",
    "Num",
    "Or",
    "Query",
    "StartsWith",
    "Str",
    "attr_num",
    "compile_postgres",
    "compile_sqlite",
    "next_cursor",
    "parse",
    "render",
]

INDEX_DDL: Final = """
CREATE TABLE IF NOT EXISTS obj_attrs(
    bucket TEXT NOT NULL,
    key BLOB NOT NULL,
    name TEXT NOT NULL,
    value TEXT NOT NULL,
    num REAL,
    PRIMARY KEY(bucket, key, name)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS obj_attrs_value ON obj_attrs(bucket, name, value);
CREATE INDEX IF NOT EXISTS obj_attrs_num ON obj_attrs(bucket, name, num) WHERE num IS NOT NULL;
"""

MAX_QUERY_CHARS: Final = 4096
MAX_PREDICATES: Final = 64
MAX_DEPTH: Final = 32
MAX_IN_VALUES: Final = 1000
MAX_ORDER_TERMS: Final = 8
MAX_LIMIT: Final = 1000
DEFAULT_LIMIT: Final = 100
MAX_CURSOR_CHARS: Final = 65536
_MAX_TAG_NAME: Final = 128
_MAX_META_NAME: Final = 1024

_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1


# --- numbers ---------------------------------------------------------------------------------
_NUM_RE: Final = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
# Exact arithmetic for the integer columns: literals are at most MAX_QUERY_CHARS digits long.
_EXACT: Final = decimal.Context(prec=2 * MAX_QUERY_CHARS + 32, Emax=decimal.MAX_EMAX, Emin=decimal.MIN_EMIN)


def attr_num(value: str) -> float | None:
    """The number an attribute value stands for, or None: the one rule for ``obj_attrs.num``.

    ASCII decimal only: optional sign, digits with an optional fraction, optional exponent
    (``-1``, ``2.5``, ``.5``, ``5.``, ``1e-3``). No whitespace, ``_``, hex, ``inf`` or ``nan``,
    and a value that overflows a double is not a number.
    """
    if len(value) > MAX_QUERY_CHARS or not _NUM_RE.fullmatch(value):
        return None
    f = float(value)
    return f if math.isfinite(f) else None


# --- AST -------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Str:
    """A string literal (its value, quotes and ``''`` escapes removed)."""

    value: str


@dataclass(frozen=True, slots=True)
class Num:
    """A number literal, kept as written so text comparison and exact integer maths can use it."""

    text: str

    @property
    def value(self) -> float:
        return float(self.text)

    @property
    def decimal(self) -> Decimal:
        return Decimal(self.text)


Literal = Str | Num


@dataclass(frozen=True, slots=True)
class Compare:
    name: str
    op: str  # one of = != < <= > >=
    value: Literal


@dataclass(frozen=True, slots=True)
class In:
    name: str
    values: tuple[Literal, ...]
    negated: bool = False


@dataclass(frozen=True, slots=True)
class Like:
    name: str
    pattern: str  # as written: % _ wildcards, \% \_ \\ escapes
    negated: bool = False


@dataclass(frozen=True, slots=True)
class StartsWith:
    name: str
    prefix: str
    negated: bool = False


@dataclass(frozen=True, slots=True)
class IsNull:
    name: str
    negated: bool = False  # IS NOT NULL


@dataclass(frozen=True, slots=True)
class Not:
    operand: Expr


@dataclass(frozen=True, slots=True)
class And:
    operands: tuple[Expr, ...]


@dataclass(frozen=True, slots=True)
class Or:
    operands: tuple[Expr, ...]


Expr = Compare | In | Like | StartsWith | IsNull | Not | And | Or


@dataclass(frozen=True, slots=True)
class Query:
    """A parsed query. ``order`` is ``((name, descending), ...)`` as written (no tie-breaker)."""

    where: Expr | None = None
    order: tuple[tuple[str, bool], ...] = ()
    limit: int = DEFAULT_LIMIT


# Names. Attribute names are the obj_attrs.name values; the rest are versions columns.
_COLUMNS: Final = ("key", "size", "modified", "etag")
_PLAIN_ATTRS: Final = ("content_type", "storage_class")
_NAMES_HELP: Final = "key, size, modified, etag, content_type, storage_class, meta.<name> or tag.<name>"
_META_BARE_RE: Final = re.compile(r"[a-z0-9_.\-]+")
_META_LEX_RE: Final = re.compile(r"[A-Za-z0-9_.\-]*")  # lower-cased after lexing
_TAG_BARE_EXTRA: Final = frozenset("_.-:/@+")
_ASCII_LOWER: Final = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def _is_attr(name: str) -> bool:
    return name not in _COLUMNS


def _tag_bare_char(ch: str) -> bool:
    return ch.isalnum() or ch in _TAG_BARE_EXTRA


# --- lexer -----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Tok:
    kind: str  # word name str num op ( ) , eof
    text: str  # word: as written; name: canonical; str: value; num: as written; op: normalized
    start: int  # 0-based offsets into the query text
    end: int


_WORD_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_LEX_NUM_RE: Final = re.compile(r"-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_OPS: Final = ("<=", ">=", "<>", "!=", "=", "<", ">")


def _snippet(text: str, pos: int) -> str:
    before = text[:pos]
    lead = ""
    if len(before) > 40:
        before, lead = before[-40:], "..."
    shown = "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in before)
    return f"{lead}{shown}^"


def _error(text: str, pos: int, message: str) -> InvalidQuery:
    return InvalidQuery(f"{message} at column {pos + 1}: {_snippet(text, pos)}", column=pos + 1)


def _quoted(text: str, i: int, quote: str, what: str) -> tuple[str, int]:
    """Read a ``quote``-delimited run starting at ``text[i] == quote``; doubled quotes escape."""
    out: list[str] = []
    j = i + 1
    while True:
        k = text.find(quote, j)
        if k < 0:
            raise _error(text, i, f"unterminated {what}")
        out.append(text[j:k])
        if text.startswith(quote * 2, k):
            out.append(quote)
            j = k + 2
            continue
        return "".join(out), k + 1


def _attr_name(text: str, prefix: str, i: int, start: int) -> tuple[str, int]:
    """Lex the ``<name>`` of ``meta.<name>``/``tag.<name>``; ``text[i]`` follows the dot."""
    if i < len(text) and text[i] == '"':
        raw, j = _quoted(text, i, '"', "quoted name")
    else:
        j = i
        if prefix == "meta":
            m = _META_LEX_RE.match(text, i)
            assert m is not None
            j = m.end()
        else:
            while j < len(text) and _tag_bare_char(text[j]):
                j += 1
        raw = text[i:j]
    if not raw:
        raise _error(text, i, f"expected a name after '{text[start:i]}'")
    if any(not ch.isprintable() and ch != " " for ch in raw):
        raise _error(text, i, "control character in name")
    if prefix == "meta":
        if len(raw) > _MAX_META_NAME:
            raise _error(text, i, f"meta name longer than {_MAX_META_NAME} characters")
        return "meta." + raw.translate(_ASCII_LOWER), j
    if len(raw) > _MAX_TAG_NAME:
        raise _error(text, i, f"tag name longer than {_MAX_TAG_NAME} characters")
    return "tag." + raw, j


def _lex(text: str) -> list[_Tok]:
    toks: list[_Tok] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch in " \t\r\n":
            i += 1
            continue
        if ch == "'":
            value, j = _quoted(text, i, "'", "string")
            toks.append(_Tok("str", value, i, j))
        elif ch.isascii() and (ch.isdigit() or ch in "-."):
            m = _LEX_NUM_RE.match(text, i)
            if m is None:
                raise _error(text, i, f"unexpected character {ch!r}")
            j = m.end()
            if j < n and (text[j].isalnum() or text[j] in "_.'\""):
                raise _error(text, j, "unexpected character after number")
            if not math.isfinite(float(m.group())):
                raise _error(text, i, "number out of range")
            toks.append(_Tok("num", m.group(), i, j))
        elif ch.isascii() and (ch.isalpha() or ch == "_"):
            m = _WORD_RE.match(text, i)
            assert m is not None
            j = m.end()
            word = m.group()
            prefix = word.lower()
            if prefix in ("meta", "tag"):
                if j >= n or text[j] != ".":
                    raise _error(text, j, f"expected '.' and a name after '{word}'")
                name, j = _attr_name(text, prefix, j + 1, i)
                toks.append(_Tok("name", name, i, j))
            else:
                toks.append(_Tok("word", word, i, j))
        elif ch in "(),":
            toks.append(_Tok(ch, ch, i, i + 1))
        else:
            op = next((o for o in _OPS if text.startswith(o, i)), None)
            if op is None:
                raise _error(text, i, f"unexpected character {ch!r}")
            toks.append(_Tok("op", "!=" if op == "<>" else op, i, i + len(op)))
            i += len(op)
            continue
        i = toks[-1].end
    toks.append(_Tok("eof", "", n, n))
    return toks


# --- time ------------------------------------------------------------------------------------
_ISO_RE: Final = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})"
    r"(?:[Tt ]([0-9]{2}):([0-9]{2})(?::([0-9]{2})(?:[.,]([0-9]{1,9}))?)?"
    r"(?:([Zz])|([+-])([0-9]{2}):?([0-9]{2}))?)?"
)
_EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def _iso_ns(text: str) -> int | None:
    """ISO-8601 date or date-time (no zone = UTC) as integer nanoseconds since the epoch."""
    m = _ISO_RE.fullmatch(text)
    if m is None:
        return None
    y, mo, d, hh, mi, ss, frac, _zulu, sign, oh, om = m.groups()
    try:
        offset = dt.timedelta(0)
        if sign:
            if int(om) >= 60:
                return None
            offset = dt.timedelta(hours=int(oh), minutes=int(om))
            if sign == "-":
                offset = -offset
        when = dt.datetime(
            int(y), int(mo), int(d), int(hh or 0), int(mi or 0), int(ss or 0), tzinfo=dt.timezone(offset)
        )
    except ValueError:
        return None
    delta = when - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + int((frac or "").ljust(9, "0"))


def _lit_decimal(lit: Literal) -> Decimal | None:
    """The exact number a literal stands for under the numeric rule, else None."""
    if isinstance(lit, Num):
        return lit.decimal
    return Decimal(lit.value) if attr_num(lit.value) is not None else None


def _modified_ns(lit: Literal) -> Decimal | None:
    """A ``modified`` literal as exact nanoseconds: a quoted ISO-8601 time, or a number of epoch
    seconds (unquoted, so that ``'2026'`` is an error rather than 2026 seconds after 1970)."""
    if isinstance(lit, Str):
        ns = _iso_ns(lit.value)
        return None if ns is None else Decimal(ns)
    return lit.decimal.scaleb(9, context=_EXACT)


# --- LIKE patterns ---------------------------------------------------------------------------
def _like_parts(pattern: str) -> list[tuple[str, str]]:
    """``[(kind, char)]`` with kind ``lit``, ``one`` (``_``) or ``any`` (``%``). Raises ValueError."""
    parts: list[tuple[str, str]] = []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\":
            if i + 1 >= len(pattern) or pattern[i + 1] not in "%_\\":
                raise ValueError("a backslash in a LIKE pattern must be followed by %, _ or \\")
            parts.append(("lit", pattern[i + 1]))
            i += 2
            continue
        if ch == "\x00":
            raise ValueError("a LIKE pattern must not contain U+0000")
        parts.append(("any" if ch == "%" else "one" if ch == "_" else "lit", ch))
        i += 1
    return parts


# --- parser ----------------------------------------------------------------------------------
class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.toks = _lex(text)
        self.i = 0
        self.predicates = 0

    # tokens
    def peek(self) -> _Tok:
        return self.toks[self.i]

    def take(self) -> _Tok:
        tok = self.toks[self.i]
        if tok.kind != "eof":
            self.i += 1
        return tok

    def is_kw(self, tok: _Tok, *words: str) -> bool:
        return tok.kind == "word" and tok.text.upper() in words

    def after(self) -> str:
        if self.i == 0:
            return ""
        prev = self.toks[self.i - 1]
        src = self.text[prev.start : prev.end]
        if len(src) > 24:
            src = src[:21] + "..."
        src = "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in src)
        quote = '"' if "'" in src else "'"
        return f" after {quote}{src}{quote}"

    def fail(self, tok: _Tok, message: str) -> InvalidQuery:
        return _error(self.text, tok.start, message)

    def expect_kw(self, word: str) -> None:
        tok = self.peek()
        if not self.is_kw(tok, word):
            raise self.fail(tok, f"expected {word}{self.after()}")
        self.take()

    # grammar
    def query(self) -> Query:
        where: Expr | None = None
        tok = self.peek()
        if tok.kind != "eof" and not self.is_kw(tok, "ORDER", "LIMIT"):
            where = self.disjunction(0)
            tok = self.peek()
            if tok.kind != "eof" and not self.is_kw(tok, "ORDER", "LIMIT"):
                raise self.fail(tok, f"expected AND, OR, ORDER BY, LIMIT or the end of the query{self.after()}")
        order: list[tuple[str, bool]] = []
        if self.is_kw(self.peek(), "ORDER"):
            self.take()
            self.expect_kw("BY")
            while True:
                name_tok = self.peek()
                name = self.name()
                desc = False
                if self.is_kw(self.peek(), "ASC", "DESC"):
                    desc = self.take().text.upper() == "DESC"
                order.append((name, desc))
                if len(order) > MAX_ORDER_TERMS:
                    raise self.fail(name_tok, f"more than {MAX_ORDER_TERMS} ORDER BY terms")
                if self.peek().kind != ",":
                    break
                self.take()
            tok = self.peek()
            if tok.kind != "eof" and not self.is_kw(tok, "LIMIT"):
                raise self.fail(tok, f"expected ',', ASC, DESC, LIMIT or the end of the query{self.after()}")
        limit = DEFAULT_LIMIT
        if self.is_kw(self.peek(), "LIMIT"):
            self.take()
            tok = self.peek()
            if tok.kind != "num" or not tok.text.isdigit() or not 1 <= int(tok.text) <= MAX_LIMIT:
                raise self.fail(tok, f"expected a whole number from 1 to {MAX_LIMIT}{self.after()}")
            limit = int(self.take().text)
        tok = self.peek()
        if tok.kind != "eof":
            raise self.fail(tok, f"expected the end of the query{self.after()}")
        return Query(where, tuple(order), limit)

    def disjunction(self, depth: int) -> Expr:
        items = [self.conjunction(depth)]
        while self.is_kw(self.peek(), "OR"):
            self.take()
            items.append(self.conjunction(depth))
        return items[0] if len(items) == 1 else Or(tuple(items))

    def conjunction(self, depth: int) -> Expr:
        items = [self.negation(depth)]
        while self.is_kw(self.peek(), "AND"):
            self.take()
            items.append(self.negation(depth))
        return items[0] if len(items) == 1 else And(tuple(items))

    def nest(self, tok: _Tok, depth: int) -> int:
        if depth + 1 > MAX_DEPTH:
            raise self.fail(tok, f"nesting deeper than {MAX_DEPTH} levels")
        return depth + 1

    def negation(self, depth: int) -> Expr:
        tok = self.peek()
        if self.is_kw(tok, "NOT"):
            self.take()
            return Not(self.negation(self.nest(tok, depth)))
        if tok.kind == "(":
            self.take()
            inner = self.disjunction(self.nest(tok, depth))
            close = self.peek()
            if close.kind != ")":
                raise self.fail(close, f"expected ')'{self.after()}")
            self.take()
            return inner
        return self.predicate()

    def name(self) -> str:
        tok = self.peek()
        if tok.kind == "name":
            self.take()
            return tok.text
        if tok.kind == "word":
            word = tok.text.lower()
            if word in _COLUMNS or word in _PLAIN_ATTRS:
                self.take()
                return word
            if tok.text.upper() not in _KEYWORDS:
                raise self.fail(tok, f"unknown name {tok.text!r} (expected {_NAMES_HELP})")
        raise self.fail(tok, f"expected a name{self.after()}")

    def predicate(self) -> Expr:
        name_tok = self.peek()
        name = self.name()
        self.predicates += 1
        if self.predicates > MAX_PREDICATES:
            raise self.fail(name_tok, f"more than {MAX_PREDICATES} predicates")
        tok = self.peek()
        if tok.kind == "op":
            self.take()
            lit = self.literal(name)
            return Compare(name, tok.text, lit)
        negated = False
        if self.is_kw(tok, "NOT"):
            self.take()
            negated = True
            tok = self.peek()
            if not self.is_kw(tok, "IN", "LIKE", "STARTS"):
                raise self.fail(tok, f"expected IN, LIKE or STARTS WITH{self.after()}")
        if self.is_kw(tok, "IN"):
            self.take()
            return In(name, self.in_list(name), negated)
        if self.is_kw(tok, "LIKE"):
            self.take()
            pat_tok = self.text_operand(name, "LIKE")
            try:
                _like_parts(pat_tok.text)
            except ValueError as exc:
                raise self.fail(pat_tok, str(exc)) from None
            return Like(name, pat_tok.text, negated)
        if self.is_kw(tok, "STARTS"):
            self.take()
            self.expect_kw("WITH")
            return StartsWith(name, self.text_operand(name, "STARTS WITH").text, negated)
        if self.is_kw(tok, "IS"):
            self.take()
            neg = False
            if self.is_kw(self.peek(), "NOT"):
                self.take()
                neg = True
            self.expect_kw("NULL")
            return IsNull(name, neg)
        raise self.fail(tok, f"expected an operator (=, !=, <, <=, >, >=, IN, LIKE, STARTS WITH, IS){self.after()}")

    def text_operand(self, name: str, op: str) -> _Tok:
        tok = self.peek()
        if name in ("size", "modified"):
            raise self.fail(tok, f"{op} does not apply to {name}")
        if tok.kind != "str":
            raise self.fail(tok, f"expected a quoted string{self.after()}")
        return self.take()

    def in_list(self, name: str) -> tuple[Literal, ...]:
        tok = self.peek()
        if tok.kind != "(":
            raise self.fail(tok, f"expected '('{self.after()}")
        self.take()
        values: list[Literal] = []
        while True:
            values.append(self.literal(name))
            if len(values) > MAX_IN_VALUES:
                raise self.fail(self.toks[self.i - 1], f"more than {MAX_IN_VALUES} values in an IN list")
            tok = self.peek()
            if tok.kind == ")":
                self.take()
                return tuple(values)
            if tok.kind != ",":
                raise self.fail(tok, f"expected ',' or ')'{self.after()}")
            self.take()

    def literal(self, name: str) -> Literal:
        tok = self.peek()
        if tok.kind not in ("str", "num"):
            raise self.fail(tok, f"expected a value{self.after()}")
        self.take()
        lit: Literal = Str(tok.text) if tok.kind == "str" else Num(tok.text)
        if name in ("key", "etag") and isinstance(lit, Num):
            raise self.fail(tok, f"expected a quoted string for {name}")
        if name == "size" and _lit_decimal(lit) is None:
            raise self.fail(tok, "expected a number for size")
        if name == "modified" and _modified_ns(lit) is None:
            raise self.fail(tok, "expected an ISO-8601 time ('2026-11-01T12:00:00Z') or epoch seconds for modified")
        return lit


_KEYWORDS: Final = frozenset(
    {"AND", "OR", "NOT", "IN", "LIKE", "STARTS", "WITH", "IS", "NULL", "ORDER", "BY", "ASC", "DESC", "LIMIT"}
)


def parse(text: str) -> Query:
    """Parse query text. Raises :class:`InvalidQuery` naming the column and what was expected."""
    if len(text) > MAX_QUERY_CHARS:
        raise _error(text, MAX_QUERY_CHARS, f"query longer than {MAX_QUERY_CHARS} characters")
    for i, ch in enumerate(text):
        if 0xD800 <= ord(ch) <= 0xDFFF:
            raise _error(text, i, "invalid character (lone surrogate)")
    return _Parser(text).query()


# --- rendering -------------------------------------------------------------------------------
def _render_name(name: str) -> str:
    if name.startswith("meta."):
        raw = name[5:]
        if _META_BARE_RE.fullmatch(raw):
            return name
        return 'meta."' + raw.replace('"', '""') + '"'
    if name.startswith("tag."):
        raw = name[4:]
        if raw and all(_tag_bare_char(ch) for ch in raw):
            return name
        return 'tag."' + raw.replace('"', '""') + '"'
    return name


def _render_str(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def _render_lit(lit: Literal) -> str:
    return lit.text if isinstance(lit, Num) else _render_str(lit.value)


def _render_expr(e: Expr) -> str:
    def wrap(x: Expr) -> str:
        return f"({_render_expr(x)})" if isinstance(x, And | Or) else _render_expr(x)

    match e:
        case Compare(name, op, value):
            return f"{_render_name(name)} {op} {_render_lit(value)}"
        case In(name, values, negated):
            inner = ", ".join(_render_lit(v) for v in values)
            return f"{_render_name(name)} {'NOT ' if negated else ''}IN ({inner})"
        case Like(name, pattern, negated):
            return f"{_render_name(name)} {'NOT ' if negated else ''}LIKE {_render_str(pattern)}"
        case StartsWith(name, prefix, negated):
            return f"{_render_name(name)} {'NOT ' if negated else ''}STARTS WITH {_render_str(prefix)}"
        case IsNull(name, negated):
            return f"{_render_name(name)} IS {'NOT ' if negated else ''}NULL"
        case Not(operand):
            return f"NOT {wrap(operand)}"
        case And(operands):
            return " AND ".join(wrap(x) for x in operands)
        case Or(operands):
            return " OR ".join(wrap(x) for x in operands)
    raise AssertionError(e)


def _render_order(order: tuple[tuple[str, bool], ...]) -> str:
    return ", ".join(_render_name(n) + (" DESC" if d else "") for n, d in order)


def render(q: Query) -> str:
    """Canonical text for ``q``; ``parse(render(q)) == q``."""
    parts = []
    if q.where is not None:
        parts.append(_render_expr(q.where))
    if q.order:
        parts.append("ORDER BY " + _render_order(q.order))
    parts.append(f"LIMIT {q.limit}")
    return " ".join(parts)


# --- compiler --------------------------------------------------------------------------------
_Frag = tuple[str, list[object]]
_TRUE: Final[_Frag] = ("1", [])
_FALSE: Final[_Frag] = ("0", [])
_ETAG_SQL: Final = "trim(v.etag, '\"')"
_FLOAT_MAX: Final = sys.float_info.max
_PLAIN_SQL: Final = {"key": "v.key", "size": "v.size", "modified": "v.modified_ns", "etag": _ETAG_SQL}


def _glob(parts: list[tuple[str, str]]) -> str:
    out = []
    for kind, ch in parts:
        if kind == "any":
            out.append("*")
        elif kind == "one":
            out.append("?")
        else:
            out.append(f"[{ch}]" if ch in "*?[" else ch)
    return "".join(out)


def _str_successor(prefix: str) -> str | None:
    """The least string above every string that starts with ``prefix`` (code point = byte order)."""
    chars = list(prefix)
    while chars:
        c = ord(chars.pop()) + 1
        if c == 0xD800:
            c = 0xE000
        if c <= 0x10FFFF:
            return "".join(chars) + chr(c)
    return None


def _prefix_range(col: str, prefix: str, blob: bool) -> _Frag:
    if blob:
        p = prefix.encode()
        bounds: list[object] = [p, p + b"\xff"]  # no UTF-8 byte is 0xff
        return f"{col} >= ? AND {col} < ?", bounds
    upper = _str_successor(prefix)
    if upper is None:
        return f"{col} >= ?", [prefix]
    return f"{col} >= ? AND {col} < ?", [prefix, upper]


def _like_sql(col: str, pattern: str, blob: bool) -> _Frag:
    """Positive LIKE: case-sensitive; a value containing U+0000 never matches (documented)."""
    parts = _like_parts(pattern)
    n_lit = next((i for i, (k, _) in enumerate(parts) if k != "lit"), len(parts))
    prefix = "".join(ch for _, ch in parts[:n_lit])
    if n_lit == len(parts):  # no wildcard: equality (the literal has no U+0000)
        return f"{col} = ?", [prefix.encode() if blob else prefix]
    nul = f"instr({col}, x'00') = 0" if blob else f"instr({col}, char(0)) = 0"
    sql, params = nul, []
    if prefix:
        rsql, rparams = _prefix_range(col, prefix, blob)
        sql += " AND " + rsql
        params += rparams
    if parts[n_lit:] != [("any", "%")] * (len(parts) - n_lit):  # more than trailing %s
        sql += f" AND {f'CAST({col} AS TEXT)' if blob else col} GLOB ?"
        params.append(_glob(parts))
    return sql, params


def _int_compare(col: str, op: str, d: Decimal) -> _Frag:
    """``col op d`` for a NOT NULL int64 column and an exact decimal, with integer-only params."""
    floor = int(d.to_integral_value(rounding=decimal.ROUND_FLOOR, context=_EXACT))
    ceil = int(d.to_integral_value(rounding=decimal.ROUND_CEILING, context=_EXACT))
    if op in ("=", "!="):
        if floor != ceil or not _INT64_MIN <= floor <= _INT64_MAX:
            return _FALSE if op == "=" else _TRUE
        return f"{col} {op} ?", [floor]
    bound = ceil if op in ("<", ">=") else floor
    if bound > _INT64_MAX:
        return _TRUE if op in ("<", "<=") else _FALSE
    if bound < _INT64_MIN:
        return _FALSE if op in ("<", "<=") else _TRUE
    return f"{col} {op} ?", [bound]


def _int_values(name: str, values: tuple[Literal, ...]) -> list[object]:
    out: list[object] = []
    for lit in values:
        d = _modified_ns(lit) if name == "modified" else _lit_decimal(lit)
        assert d is not None, "parse validated the literal"
        if d == d.to_integral_value(context=_EXACT) and _INT64_MIN <= d <= _INT64_MAX:
            out.append(int(d))
    return out


def _in_sql(col: str, params: list[object]) -> _Frag:
    if not params:
        return _FALSE
    return f"{col} IN ({', '.join('?' * len(params))})", params


def _column_positive(e: Compare | In | Like | StartsWith, name: str) -> _Frag:
    """A positive predicate on a NOT NULL versions column (two-valued)."""
    col = _PLAIN_SQL[name]
    if name in ("size", "modified"):
        if isinstance(e, Compare):
            d = _modified_ns(e.value) if name == "modified" else _lit_decimal(e.value)
            assert d is not None, "parse validated the literal"
            return _int_compare(col, e.op, d)
        assert isinstance(e, In), "parse rejects LIKE/STARTS WITH on integers"
        return _in_sql(col, _int_values(name, e.values))

    def conv(lit: Literal) -> object:
        assert isinstance(lit, Str), "parse rejects numbers for key and etag"
        return lit.value.encode() if name == "key" else lit.value

    blob = name == "key"
    if isinstance(e, Compare):
        return f"{col} {e.op} ?", [conv(e.value)]
    if isinstance(e, In):
        return _in_sql(col, [conv(v) for v in e.values])
    if isinstance(e, StartsWith):
        return _prefix_range(col, e.prefix, blob)
    return _like_sql(col, e.pattern, blob)


# A branch is a condition on one obj_attrs row, tagged with the rows it can hold for: "num" only
# numbers (``num < ?``), "text" only text, under the text rule (``value < ?``, true of some numbers
# too, so it needs a guard), "textonly" only text by itself (``value = 'abc'``: no number is
# written that way), "any" any row (a text comparison numbers take part in, LIKE, STARTS WITH).
_Branch = tuple[str, _Frag]


def _attr_branches(e: Compare | In | Like | StartsWith, p: str = "") -> list[_Branch]:
    """Conditions on one obj_attrs row (columns ``{p}num``, ``{p}value``); the predicate holds if
    any does. Each is two-valued (never NULL), so ``NOT`` of their disjunction is the exact
    complement among present rows."""
    num, value = f"{p}num", f"{p}value"
    if isinstance(e, Compare):
        lit = e.value
        n = attr_num(lit.value) if isinstance(lit, Str) else lit.value
        text = lit.value if isinstance(lit, Str) else lit.text
        if n is None:
            return [("textonly" if e.op == "=" else "any", (f"{value} {e.op} ?", [text]))]
        if e.op == "=":  # a text row can never equal a numeric text
            return [("num", (f"{num} = ?", [n]))]
        return [("num", (f"{num} {e.op} ?", [n])), ("text", (f"{value} {e.op} ?", [text]))]
    if isinstance(e, In):
        nums: list[object] = []
        texts: list[object] = []
        for lit in e.values:
            n = attr_num(lit.value) if isinstance(lit, Str) else lit.value
            if n is None:
                assert isinstance(lit, Str)
                texts.append(lit.value)
            else:
                nums.append(n)
        out: list[_Branch] = []
        if nums:
            out.append(("num", _in_sql(num, nums)))
        if texts:
            out.append(("textonly", _in_sql(value, texts)))
        return out
    if isinstance(e, StartsWith):
        return [("any", _prefix_range(value, e.prefix, blob=False))]
    return [("any", _like_sql(value, e.pattern, blob=False))]


# A value that is surely a number, judged from the value alone: [-]digit, then digits and at most
# one dot, under 300 characters (so finite). Lets a list of text rows in a value range skip the
# numbers without reading each row (obj_attrs_value holds value and key, not num). GLOB and
# length() stop at a NUL character, so a value holding one is never "surely" anything.
_SURELY_NUM: Final = (
    "((value GLOB ? OR value GLOB ?) AND NOT value GLOB ? AND NOT value GLOB ? AND length(value) < 300"
    " AND instr(CAST(value AS BLOB), x'00') = 0)",
    ["[0-9]*", "-[0-9]*", "?*[^0-9.]*", "*.*.*"],
)
_NUM_OF_ROW: Final = "(SELECT r.num FROM obj_attrs r WHERE r.bucket = i.bucket AND r.key = i.key AND r.name = i.name)"


def _guarded(branches: list[_Branch], known: str | None, p: str = "", *, listing: bool = False) -> list[_Frag]:
    """The branches as plain conditions for rows of any class (``known`` None), or for rows known
    to be numbers (``"num"``) or text (``"text"``), dropping those that cannot hold. ``listing``:
    for :func:`_attr_in`, which reads obj_attrs_value and should look up ``num`` only when the
    value does not tell."""
    out: list[_Frag] = []
    for kind, (cond, cparams) in branches:
        sql, params = cond, cparams
        if known == "num":
            if kind in ("text", "textonly"):
                continue
        elif kind == "num":
            if known == "text":
                continue
            sql = f"{p}num IS NOT NULL AND {cond}"
        elif kind == "text" and listing:
            sql = f"NOT {_SURELY_NUM[0]} AND {_NUM_OF_ROW} IS NULL AND {cond}"
            params = [*_SURELY_NUM[1], *cparams]
        elif kind == "text":
            sql = f"{p}num IS NULL AND {cond}"
        out.append((sql, params))
    return out


def _attr_in(bucket: str, name: str, branches: list[_Frag]) -> _Frag:
    """``v.key IN (keys of rows matching any branch)``: the planner may drive from the index."""
    sqls = []
    params: list[object] = []
    for cond, cparams in branches:
        where = "bucket = ? AND name = ?" + (f" AND {cond}" if cond else "")
        sqls.append(f"SELECT key FROM obj_attrs i WHERE {where}")  # noqa: S608 - fixed fragments only
        params += [bucket, name, *cparams]
    return f"v.key IN ({' UNION ALL '.join(sqls)})", params


def _attr_exists(name: str, cond: _Frag, owner: str = "v") -> _Frag:
    """A primary-key probe per candidate row: cheap when something else drives, streams under LIMIT."""
    where = f"a.bucket = {owner}.bucket AND a.key = {owner}.key AND a.name = ?"
    where += f" AND ({cond[0]})" if cond[0] else ""
    return f"EXISTS (SELECT 1 FROM obj_attrs a WHERE {where})", [name, *cond[1]]  # noqa: S608 - fixed fragments


def _or(branches: list[_Frag]) -> _Frag:
    return " OR ".join(f"({s})" for s, _ in branches), [p for _, ps in branches for p in ps]


def _join(parts: list[_Frag], joiner: str) -> _Frag:
    """``AND``/``OR`` of two-valued parts, folding the constants ``1`` and ``0``."""
    absorbing, neutral = (_FALSE, _TRUE) if joiner == "AND" else (_TRUE, _FALSE)
    if absorbing in parts:
        return absorbing
    parts = [x for x in parts if x != neutral]
    if len(parts) <= 1:
        return parts[0] if parts else neutral
    return "(" + f" {joiner} ".join(s for s, _ in parts) + ")", [p for _, ps in parts for p in ps]


def _not(frag: _Frag) -> _Frag:
    if frag in (_TRUE, _FALSE):
        return _FALSE if frag == _TRUE else _TRUE
    return f"NOT ({frag[0]})", frag[1]


@dataclass(frozen=True, slots=True)
class _Ctx:
    """How to compile a condition, in one arm of a query sorted by an attribute first (``lead``).

    ``mode`` says what is known of the object's lead row, and how to test the lead: ``"num"``,
    it is ``s0`` and a number; ``"row"``, it is ``s0`` (LEFT JOINed: maybe absent); ``"text"``,
    it is text or absent (tests stay key lists and probes, for text); None, nothing. ``probe``:
    the alias whose ``(bucket, key)`` attribute tests probe by primary key (the arm walks an
    index in order and must not materialize key lists), or None for the general plan.
    """

    bucket: str
    lead: str | None = None
    mode: str | None = None
    probe: str | None = None


def _compile_expr(e: Expr, ctx: _Ctx, positive: bool = True) -> _Frag:
    """SQL for ``e``, two-valued (never NULL), so SQL ``NOT`` is the exact complement.

    ``positive`` is False under an odd number of NOTs. An attribute test that selects rows
    (``=``, ``<``, ``IN``, ``IS NOT NULL``... where it counts positively) becomes
    ``v.key IN (SELECT key FROM obj_attrs ...)`` so the planner can drive the query from
    ``obj_attrs_value``/``obj_attrs_num``; one that mostly rejects (``!=``, ``NOT IN``,
    ``IS NULL``, anything under NOT) becomes a correlated ``EXISTS`` probe, which does not
    materialize every key with the attribute and streams under ``ORDER BY key LIMIT``.
    """
    if isinstance(e, And | Or):
        parts = [_compile_expr(x, ctx, positive) for x in e.operands]
        return _join(parts, "AND" if isinstance(e, And) else "OR")
    if isinstance(e, Not):
        return _not(_compile_expr(e.operand, ctx, not positive))
    owner = ctx.probe or "v"
    on_s0 = e.name == ctx.lead and ctx.mode in ("num", "row")
    if isinstance(e, IsNull):
        if not _is_attr(e.name):
            return _TRUE if e.negated else _FALSE
        if on_s0:
            if ctx.mode == "num":
                return _TRUE if e.negated else _FALSE
            return f"s0.value IS {'NOT ' if e.negated else ''}NULL", []
        present = positive == e.negated and ctx.probe is None
        sql, params = _attr_in(ctx.bucket, e.name, [("", [])]) if present else _attr_exists(e.name, ("", []), owner)
        return (sql if e.negated else f"NOT ({sql})"), params
    # Normalize to (positive predicate, negated): != is NOT = among present values.
    negated = e.negated if isinstance(e, In | Like | StartsWith) else e.op == "!="
    if isinstance(e, Compare) and e.op == "!=":
        e = Compare(e.name, "=", e.value)
    if not _is_attr(e.name):
        frag = _column_positive(e, e.name)
        return _not(frag) if negated else frag
    if on_s0:  # a condition on the row s0 itself, present for sure ("num") or if value is set
        conds = _guarded(_attr_branches(e, "s0."), "num" if ctx.mode == "num" else None, "s0.")
        frag = _join([(f"({s})", p) for s, p in conds], "OR")
        if negated:
            frag = _not(frag)
        return frag if ctx.mode == "num" else _join([("s0.value IS NOT NULL", []), frag], "AND")
    known = "text" if e.name == ctx.lead else None
    branches = _guarded(_attr_branches(e), known)
    if negated:  # present, and no branch holds (each branch is two-valued on a row)
        return _attr_exists(e.name, _not(_or(branches)) if branches else ("", []), owner)
    if not branches:
        return _FALSE
    if positive and ctx.probe is None:
        return _attr_in(ctx.bucket, e.name, _guarded(_attr_branches(e), known, listing=True))
    return _attr_exists(e.name, _or(branches), owner)


# Sort terms. A plain term is one column; an attribute term is three: class (0 number, 1 text,
# 2 absent; always ascending), the number (class 0) and the text (class 1).
def _effective_order(q: Query) -> list[tuple[str, bool]]:
    out: list[tuple[str, bool]] = []
    for name, desc in q.order:
        out.append((name, desc))
        if name == "key":
            return out
    out.append(("key", False))
    return out


def _query_hash(q: Query) -> str:
    text = (
        (_render_expr(q.where) if q.where is not None else "")
        + " ORDER BY "
        + _render_order(tuple(_effective_order(q)))
    )
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def _cursor_sql(
    terms: list[tuple[str, bool]],
    values: list[Any],
    key: bytes,
    key_col: str = "v.key",
    *,
    coll: str = "",
    false: str = _FALSE[0],
    plain: dict[str, str] = _PLAIN_SQL,
) -> _Frag:
    """Rows strictly after the cursor row in the (total) sort order. ``coll``, ``false`` and
    ``plain``: the PostgreSQL dialect's text collation, false and plain sort columns."""
    sql = f"{key_col} < ?" if terms[-1][1] else f"{key_col} > ?"
    params: list[object] = [key]
    for i in range(len(terms) - 2, -1, -1):
        name, desc = terms[i]
        value = values[i]
        cmp = "<" if desc else ">"
        if _is_attr(name):
            cls, num, text = value
            a = f"s{i}"
            if cls == 0:
                gt: _Frag = (f"({a}.num IS NULL OR {a}.num {cmp} ?)", [num])
                eq: _Frag = (f"{a}.num = ?", [num])
            elif cls == 1:
                gt = (f"({a}.value IS NULL OR ({a}.num IS NULL AND {a}.value{coll} {cmp} ?))", [text])
                eq = (f"{a}.num IS NULL AND {a}.value{coll} = ?", [text])
            else:
                gt, eq = (false, []), (f"{a}.value IS NULL", [])
        else:
            col = plain[name]
            gt, eq = (f"{col} {cmp} ?", [value]), (f"{col} = ?", [value])
        sql = f"({gt[0]} OR ({eq[0]} AND {sql}))"
        params = [*gt[1], *eq[1], *params]
    return sql, params


# A query sorted by an attribute first (the "lead") runs in arms, concatenated by UNION ALL in sort
# order: the lead's numbers, then its text and absent values. SQLite runs the arms of a UNION ALL
# without ORDER BY one after the other and stops at the LIMIT, so a later arm only runs when the
# earlier ones did not fill the page. The numbers arm walks obj_attrs_num, whose entries are in
# (bucket, name, num, key) order (key is the rest of the primary key), so the page is the first
# matches of the walk: no sort of every match. When other conditions may reject most of the
# walk, it is bounded: the walk covers the first _WALK_* entries (whole groups of equal numbers,
# so that the two parts cannot interleave under other sort terms), and the second arm finds the
# numbers beyond them and the text and absent values the general way (conditions first, then a
# sort), should the walk not fill the page.
_WALK_MIN: Final = 4096
_WALK_PER_ROW: Final = 32
_WALK_MAX: Final = 32768


def _conjuncts(e: Expr | None) -> list[Expr]:
    if e is None:
        return []
    if isinstance(e, And):
        return [c for x in e.operands for c in _conjuncts(x)]
    return [e]


def _lead_bounds(where: Expr | None, lead: str) -> tuple[list[_Frag], bool, bool]:
    """Bounds on the lead's number (``num < ?``, ``num IN (...)``) from the top-level conjuncts
    that say no more than that among numbers, whether one pins it (``=``, ``IN``), and whether
    any other condition is left."""
    bounds: list[_Frag] = []
    pinned = residual = False
    for c in _conjuncts(where):
        if isinstance(c, Compare) and c.name == lead and c.op != "!=":
            n = _lit_num(c.value)
            if n is not None:
                bounds.append((f"num {c.op} ?", [n]))
                pinned = pinned or c.op == "="
                continue
        elif isinstance(c, In) and c.name == lead and not c.negated:
            bounds.append(_in_sql("num", [n for v in c.values if (n := _lit_num(v)) is not None]))
            pinned = True
            continue
        elif isinstance(c, IsNull) and c.name == lead and c.negated:
            continue
        residual = True
    return bounds, pinned, residual


def _lit_num(lit: Literal) -> float | None:
    return attr_num(lit.value) if isinstance(lit, Str) else lit.value


def _arm(terms: list[tuple[str, bool]], bucket: str, shape: str, where: list[_Frag], limit: int) -> _Frag:
    """``SELECT ... ORDER BY ... LIMIT ?`` over the bucket's current versions. ``shape``:
    ``plain``, versions drive and every attribute sort term is a LEFT JOIN (the general plan);
    ``walk``, the lead's numbers (``s0``) drive, in obj_attrs_num order."""
    select = ["v.key", "v.version_id", "v.size", "v.etag", "v.modified_ns"]
    joins: list[str] = []
    params: list[object] = []
    order_sql: list[str] = []
    for i, (name, desc) in enumerate(terms):
        d = " DESC" if desc else ""
        if i == 0 and shape == "walk":
            select += ["0 AS o0c", "s0.num AS o0n", "NULL AS o0t"]
            order_sql.append(f"s0.num{d}")
        elif name == "key":
            order_sql.append(f"{'s0' if shape == 'walk' else 'v'}.key{d}")
        elif _is_attr(name):
            a = f"s{i}"
            joins.append(f" LEFT JOIN obj_attrs {a} ON {a}.bucket = v.bucket AND {a}.key = v.key AND {a}.name = ?")
            params.append(name)
            select += [
                f"CASE WHEN {a}.num IS NOT NULL THEN 0 WHEN {a}.value IS NOT NULL THEN 1 ELSE 2 END AS o{i}c",
                f"{a}.num AS o{i}n",
                f"CASE WHEN {a}.num IS NULL THEN {a}.value END AS o{i}t",
            ]
            order_sql += [f"o{i}c", f"o{i}n{d}", f"o{i}t{d}"]
        else:
            select.append(f"{_PLAIN_SQL[name]} AS o{i}")
            order_sql.append(f"o{i}{d}")
    if shape == "walk":
        head = "obj_attrs s0 INDEXED BY obj_attrs_num CROSS JOIN versions v ON v.bucket = s0.bucket AND v.key = s0.key"
        base: list[_Frag] = [("s0.bucket = ? AND s0.name = ? AND s0.num IS NOT NULL", [bucket, terms[0][0]])]
    else:
        head = "versions v"
        base = [("v.bucket = ?", [bucket])]
    conds = [*base, ("v.is_latest = 1 AND v.is_delete_marker = 0", []), *(w for w in where if w != _TRUE)]
    params += [p for _, ps in conds for p in ps]
    params.append(limit)
    text = (
        f"SELECT {', '.join(select)} FROM {head}{''.join(joins)}"  # noqa: S608 - fixed fragments only
        f" WHERE {' AND '.join(s for s, _ in conds)} ORDER BY {', '.join(order_sql)} LIMIT ?"
    )
    return text, params


def _lead_arms(
    q: Query, bucket: str, terms: list[tuple[str, bool]], pos: tuple[list[Any], bytes] | None
) -> list[_Frag]:
    """The arms of a query whose first sort term is an attribute; ``pos`` is the cursor's sort
    values and key."""
    lead, desc = terms[0]
    n = q.limit + 1
    after = [] if pos is None else [_cursor_sql(terms, *pos)]
    cls, at_num = (0, None) if pos is None else (pos[0][0][0], pos[0][0][1])

    def where(mode: str, probe: str | None = None) -> _Frag:
        return _TRUE if q.where is None else _compile_expr(q.where, _Ctx(bucket, lead, mode, probe))

    rest_where = where("text")
    rest = [] if rest_where == _FALSE else [("s0.num IS NULL", []), rest_where, *(after if cls else [])]
    walk_where = where("num", "s0") if cls == 0 else _FALSE
    if walk_where == _FALSE:
        return [_arm(terms, bucket, "plain", rest or [_FALSE], n)]
    bounds, pinned, residual = _lead_bounds(q.where, lead)
    # The cursor as a test on the index entry (s0.key, not v.key), so skipped entries cost no lookup.
    conds = [walk_where, *([] if pos is None else [_cursor_sql(terms, *pos, key_col="s0.key")])]
    if at_num is not None and not pinned:  # sargable: the walk starts at the cursor's number
        bounds.append((f"num {'<=' if desc else '>='} ?", [at_num]))
        conds.append((f"s0.num {'<=' if desc else '>='} ?", [at_num]))
    if not residual:  # every entry the walk meets is a match: no bound needed
        return [_arm(terms, bucket, "walk", conds, n), *([_arm(terms, bucket, "plain", rest, n)] if rest else [])]
    window = min(max(_WALK_MIN, _WALK_PER_ROW * n), _WALK_MAX)
    bsql, bparams = _join(bounds, "AND")
    win = (
        "(SELECT num FROM obj_attrs INDEXED BY obj_attrs_num WHERE bucket = ? AND name = ? AND num IS NOT NULL"  # noqa: S608
        f" AND {bsql} ORDER BY num{' DESC' if desc else ''} LIMIT 1 OFFSET ?)"
    )
    wparams: list[object] = [bucket, lead, *bparams, window - 1]
    inside = (f"s0.num {'>=' if desc else '<='} coalesce({win}, ?)", [*wparams, -_FLOAT_MAX if desc else _FLOAT_MAX])
    beyond = (f"(s0.num IS NULL OR s0.num {'<' if desc else '>'} {win})", wparams)
    return [
        _arm(terms, bucket, "walk", [inside, *conds], n),
        _arm(terms, bucket, "plain", [beyond, where("row"), *after], n),
    ]


def compile_sqlite(q: Query, bucket: str, cursor: str | None = None) -> tuple[str, list[object]]:
    """One ``SELECT`` for ``q`` over ``bucket``, returning up to ``q.limit + 1`` rows of
    ``(key, version_id, size, etag, modified_ns, <sort values...>)``; a last, extra row means
    there is another page: call :func:`next_cursor` with row ``q.limit - 1``."""
    terms = _effective_order(q)
    pos = None if cursor is None else _decode_cursor(q, terms, cursor)
    if not _is_attr(terms[0][0]):
        where = [] if q.where is None else [_compile_expr(q.where, _Ctx(bucket))]
        return _arm(terms, bucket, "plain", [*where, *([] if pos is None else [_cursor_sql(terms, *pos)])], q.limit + 1)
    arms = _lead_arms(q, bucket, terms, pos)
    if len(arms) == 1:
        return arms[0]
    sql = " UNION ALL ".join(f"SELECT * FROM ({s})" for s, _ in arms) + " LIMIT ?"  # noqa: S608 - fixed fragments
    return sql, [*(p for _, ps in arms for p in ps), q.limit + 1]


# --- cursors ---------------------------------------------------------------------------------
def _digest(doc: dict[str, Any]) -> str:
    blob = json.dumps(doc, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(b"tierstore-query-cursor\x00" + blob.encode()).hexdigest()[:16]


def next_cursor(q: Query, last_row: tuple[Any, ...]) -> str:
    """Opaque token (base64url JSON) for the page that starts right after ``last_row``.

    It carries the row's sort values and key, a hash of the normalized query (WHERE and ORDER
    BY; not LIMIT, so the page size may change between pages) and a checksum of the whole.
    The checksum catches corruption and casual edits, not forgery; a forged cursor can only
    choose where a page of the same query starts.
    """
    terms = _effective_order(q)
    values: list[Any] = []
    col = 5
    for name, _ in terms[:-1]:
        if _is_attr(name):
            values.append(list(last_row[col : col + 3]))
            col += 3
        else:
            values.append(last_row[col])
            col += 1
    key = bytes(last_row[0])
    doc: dict[str, Any] = {"q": _query_hash(q), "s": values, "k": base64.urlsafe_b64encode(key).decode()}
    doc["h"] = _digest(doc)
    raw = json.dumps(doc, separators=(",", ":"), allow_nan=False).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(q: Query, terms: list[tuple[str, bool]], cursor: str) -> tuple[list[Any], bytes]:
    bad = InvalidQuery("invalid cursor: not one this server issued for this query")
    if len(cursor) > MAX_CURSOR_CHARS or not re.fullmatch(r"[A-Za-z0-9_-]*", cursor):
        raise bad
    try:
        doc = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, binascii.Error):
        raise bad from None
    if not isinstance(doc, dict) or set(doc) != {"q", "s", "k", "h"}:
        raise bad
    h = doc.pop("h")
    try:
        ok = h == _digest(doc)
    except ValueError:  # NaN/Infinity smuggled in
        ok = False
    if not ok:
        raise bad
    if doc["q"] != _query_hash(q):
        raise InvalidQuery("invalid cursor: it belongs to a different query")
    values, key_s = doc["s"], doc["k"]
    if not isinstance(values, list) or len(values) != len(terms) - 1 or not isinstance(key_s, str):
        raise bad
    try:
        key = base64.urlsafe_b64decode(key_s.encode("ascii"))
    except (ValueError, binascii.Error):
        raise bad from None
    for (name, _), value in zip(terms, values, strict=False):
        if not _cursor_value_ok(name, value):
            raise bad
    return values, key


def _cursor_value_ok(name: str, value: Any) -> bool:
    if name in ("size", "modified"):
        return type(value) is int and _INT64_MIN <= value <= _INT64_MAX
    if name == "etag":
        return isinstance(value, str)
    if not (isinstance(value, list) and len(value) == 3):
        return False
    cls, num, text = value
    if cls == 0:
        return type(num) is float and math.isfinite(num) and text is None
    if cls == 1:
        return num is None and isinstance(text, str)
    return cls == 2 and num is None and text is None


# --- the PostgreSQL dialect ------------------------------------------------------------------
# PostgreSQL's catalog (catalog/postgres/) keeps no side table: each current version's metadata
# document (``versions.meta``, json as written) is read in place, so no write has to maintain an index of
# attributes. An attribute is ``s<i>.value`` (its text; NULL: absent) and ``s<i>.num`` (the number
# ``tierstore_attr_num``, the SQL twin of :func:`attr_num`, makes of it) of a LATERAL row per
# attribute named; the semantics are the SQLite dialect's, leaf by leaf, with every text comparison
# under ``COLLATE "C"`` (byte order, as SQLite's BINARY). A positive equality on a meta or tag
# string is also tested by ``@>`` containment, which the GIN index on ``versions.meta`` answers
# (docs/query.md "On PostgreSQL"). Parameters are ``$n``; values never reach SQL text.
PG_ATTR_NUM_DDL: Final = (
    # The slow path of tierstore_attr_num: an exponent, or a value too long for the fast path. A
    # double's range is what Python's float() gives: beyond it, not a number; below it, zero.
    r"""CREATE FUNCTION tierstore_attr_num_edge(value text) RETURNS double precision
    LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $f$
    BEGIN
        IF length(value) > 4096 THEN
            RETURN NULL;
        END IF;
        RETURN value::double precision;
    EXCEPTION WHEN numeric_value_out_of_range THEN
        BEGIN
            RETURN CASE WHEN abs(value::numeric) < 1 THEN 0 END;
        EXCEPTION WHEN numeric_value_out_of_range OR invalid_text_representation THEN
            RETURN CASE WHEN value ~ '[eE]-' THEN 0 END;
        END;
    END $f$""",
    # attr_num in SQL: ASCII decimal only (sign, digits, fraction, exponent), finite.
    r"""CREATE FUNCTION tierstore_attr_num(value text) RETURNS double precision
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN CASE WHEN value !~ '^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?$' THEN NULL
        WHEN length(value) <= 24 AND strpos(lower(value), 'e') = 0 THEN value::double precision
        ELSE tierstore_attr_num_edge(value) END""",
)

_PG_TRUE: Final = "true"
_PG_FALSE: Final = "false"
_PG_C: Final = ' COLLATE "C"'
_PG_ETAG: Final = "btrim(v.etag, '\"')"
_PG_PLAIN: Final = {"key": "v.key", "size": "v.size", "modified": "v.modified_ns", "etag": _PG_ETAG}
_PG_KEY_NUL: Final = "position('\\x00'::bytea IN v.key) = 0"


def _pg_const(frag: _Frag) -> _Frag:
    """The SQLite dialect's constants ``1``/``0`` as PostgreSQL booleans."""
    return (_PG_TRUE, []) if frag == _TRUE else (_PG_FALSE, []) if frag == _FALSE else frag


def _pg_join(parts: list[_Frag], joiner: str) -> _Frag:
    absorbing, neutral = (_PG_FALSE, _PG_TRUE) if joiner == "AND" else (_PG_TRUE, _PG_FALSE)
    if any(s == absorbing for s, _ in parts):
        return absorbing, []
    parts = [x for x in parts if x[0] != neutral]
    if len(parts) <= 1:
        return parts[0] if parts else (neutral, [])
    return "(" + f" {joiner} ".join(s for s, _ in parts) + ")", [p for _, ps in parts for p in ps]


def _pg_not(frag: _Frag) -> _Frag:
    if frag[0] in (_PG_TRUE, _PG_FALSE):
        return (_PG_FALSE if frag[0] == _PG_TRUE else _PG_TRUE), []
    return f"NOT ({frag[0]})", frag[1]


def _pg_numbered(sql: str) -> str:
    """``?`` placeholders as ``$1``, ``$2``... (no SQL text fragment holds a ``?`` of its own)."""
    parts = sql.split("?")
    return parts[0] + "".join(f"${i}{part}" for i, part in enumerate(parts[1:], 1))


def _pg_like(col: str, pattern: str) -> str:
    """A query LIKE pattern as PostgreSQL's (``\\`` escapes), for ``col LIKE ? COLLATE "C"``."""
    out = []
    for kind, ch in _like_parts(pattern):
        if kind == "any":
            out.append("%")
        elif kind == "one":
            out.append("_")
        else:
            out.append("\\" + ch if ch in "%_\\" else ch)
    return "".join(out)


def _pg_text_cmp(col: str, op: str, text: str) -> _Frag:
    """``col op text`` in byte order. PostgreSQL text (and jsonb) cannot hold U+0000, so no stored
    value equals a literal holding one, and an order comparison with one compares UTF-8 bytes."""
    if "\x00" not in text:
        return f"{col}{_PG_C} {op} ?", [text]
    if op == "=":
        return _PG_FALSE, []
    return f"convert_to({col}, 'UTF8') {op} ?", [text.encode()]


def _pg_text_in(col: str, texts: list[str]) -> _Frag:
    texts = [t for t in texts if "\x00" not in t]  # never stored (see _pg_text_cmp)
    if not texts:
        return _PG_FALSE, []
    return f"{col}{_PG_C} IN ({', '.join('?' * len(texts))})", list(texts)


def _pg_prefix_range(col: str, prefix: str) -> _Frag:
    if "\x00" in prefix:  # no stored value holds U+0000 (see _pg_text_cmp)
        return _PG_FALSE, []
    upper = _str_successor(prefix)
    if upper is None:
        return f"{col}{_PG_C} >= ?", [prefix]
    return f"{col}{_PG_C} >= ? AND {col}{_PG_C} < ?", [prefix, upper]


def _pg_like_sql(col: str, pattern: str, *, key: bool) -> _Frag:
    """Positive LIKE, case-sensitive, by character. ``key`` (bytea): read as UTF-8, and a key
    holding U+0000 never matches (as on SQLite; a jsonb string cannot hold one)."""
    parts = _like_parts(pattern)
    if all(kind == "lit" for kind, _ in parts):  # no wildcard: equality
        literal = "".join(ch for _, ch in parts)
        return (f"{col} = ?", [literal.encode()]) if key else (f"{col}{_PG_C} = ?", [literal])
    if key:
        return f"CASE WHEN {_PG_KEY_NUL} THEN convert_from(v.key, 'UTF8') LIKE ?{_PG_C} ELSE false END", [
            _pg_like(col, pattern)
        ]
    return f"{col} LIKE ?{_PG_C}", [_pg_like(col, pattern)]


def _pg_column(e: Compare | In | Like | StartsWith, name: str) -> _Frag:
    """A positive predicate on a NOT NULL versions column (two-valued)."""
    col = _PG_PLAIN[name]
    if name in ("size", "modified"):
        return _pg_const(_column_positive(e, name))  # integers: the same SQL in both dialects
    key = name == "key"

    def conv(lit: Literal) -> object:
        assert isinstance(lit, Str), "parse rejects numbers for key and etag"
        return lit.value.encode() if key else lit.value

    if isinstance(e, Compare):
        if key:
            return f"{col} {e.op} ?", [conv(e.value)]
        return _pg_text_cmp(col, e.op, str(conv(e.value)))
    if isinstance(e, In):
        values = [conv(v) for v in e.values]
        if key:
            return f"{col} IN ({', '.join('?' * len(values))})", values
        return _pg_text_in(col, [str(v) for v in values])
    if isinstance(e, StartsWith):
        if key:
            p = e.prefix.encode()
            return f"{col} >= ? AND {col} < ?", [p, p + b"\xff"]  # no UTF-8 byte is 0xff
        return _pg_prefix_range(col, e.prefix)
    return _pg_like_sql(col, e.pattern, key=key)


def _pg_contains(name: str, value: str) -> _Frag | None:
    """``v.meta::jsonb @> {"u": {name: value}}`` for a meta or tag string (the GIN index's test:
    an expression index on ``meta::jsonb``, the column being json kept as written)."""
    if "\x00" in value:  # jsonb holds no U+0000: the equality is false anyway
        return None
    if name.startswith("meta."):
        doc = {"u": {name[5:]: value}}
    elif name.startswith("tag."):
        doc = {"t": {name[4:]: value}}
    else:
        return None
    return "v.meta::jsonb @> ?::jsonb", [json.dumps(doc, ensure_ascii=False, separators=(",", ":"))]


def _pg_attr_positive(e: Compare | In | Like | StartsWith, a: str) -> _Frag:
    """A positive predicate on attribute alias ``a``, true only where it is present (never NULL)."""
    value, num = f"{a}.value", f"{a}.num"
    branches: list[_Frag] = []
    if isinstance(e, Compare):
        lit = e.value
        n = attr_num(lit.value) if isinstance(lit, Str) else lit.value
        text = lit.value if isinstance(lit, Str) else lit.text
        if n is None:
            branches.append(_pg_text_cmp(value, e.op, text))
        elif e.op == "=":  # a text value can never equal a numeric text
            branches.append((f"{num} = ?", [n]))
        else:  # a numeric literal holds no U+0000
            cond = f"CASE WHEN {num} IS NOT NULL THEN {num} {e.op} ? ELSE {value}{_PG_C} {e.op} ? END"
            branches.append((cond, [n, text]))
    elif isinstance(e, In):
        nums = [n for lit in e.values if (n := _lit_num(lit)) is not None]
        texts = [lit.value for lit in e.values if isinstance(lit, Str) and attr_num(lit.value) is None]
        if nums:
            branches.append((f"{num} IN ({', '.join('?' * len(nums))})", list(nums)))
        if texts:
            branches.append(_pg_text_in(value, texts))
    elif isinstance(e, StartsWith):
        branches.append(_pg_prefix_range(value, e.prefix))
    else:
        branches.append(_pg_like_sql(value, e.pattern, key=False))
    branches = [b for b in branches if b[0] != _PG_FALSE]
    if not branches:
        return _PG_FALSE, []
    sql, params = _or(branches)
    return f"coalesce({sql}, false)", params


@dataclass
class _PgAttrs:
    """The attributes a query names, each read by a LATERAL row: ``s<i>`` for sort term ``i``
    (the name ``_cursor_sql`` uses), ``w<j>`` for one only the condition names. ``rows`` lists
    (alias, name) in join order; ``names`` is the alias a condition on a name uses."""

    rows: list[tuple[str, str]]
    names: dict[str, str]

    @classmethod
    def for_terms(cls, terms: list[tuple[str, bool]]) -> _PgAttrs:
        rows = [(f"s{i}", name) for i, (name, _) in enumerate(terms) if _is_attr(name)]
        names: dict[str, str] = {}
        for alias, name in rows:
            names.setdefault(name, alias)
        return cls(rows, names)

    def alias(self, name: str) -> str:
        if name not in self.names:
            self.names[name] = f"w{len(self.rows)}"
            self.rows.append((self.names[name], name))
        return self.names[name]


def _pg_expr(e: Expr, attrs: _PgAttrs, positive: bool = True) -> _Frag:
    """SQL for ``e``, two-valued (never NULL), so ``NOT`` is the exact complement."""
    if isinstance(e, And | Or):
        return _pg_join([_pg_expr(x, attrs, positive) for x in e.operands], "AND" if isinstance(e, And) else "OR")
    if isinstance(e, Not):
        return _pg_not(_pg_expr(e.operand, attrs, not positive))
    if isinstance(e, IsNull):
        if not _is_attr(e.name):
            return (_PG_TRUE if e.negated else _PG_FALSE), []
        return f"{attrs.alias(e.name)}.value IS {'NOT ' if e.negated else ''}NULL", []
    negated = e.negated if isinstance(e, In | Like | StartsWith) else e.op == "!="
    if isinstance(e, Compare) and e.op == "!=":
        e = Compare(e.name, "=", e.value)
    if not _is_attr(e.name):
        frag = _pg_column(e, e.name)
        return _pg_not(frag) if negated else frag
    a = attrs.alias(e.name)
    frag = _pg_attr_positive(e, a)
    if negated:  # present, and the positive form does not hold
        return _pg_join([(f"{a}.value IS NOT NULL", []), _pg_not(frag)], "AND")
    if positive:  # an index may find the candidates: equality on a string, by containment
        texts: list[str] = []
        if isinstance(e, Compare) and e.op == "=" and isinstance(e.value, Str) and attr_num(e.value.value) is None:
            texts = [e.value.value]
        elif isinstance(e, In) and all(isinstance(v, Str) and attr_num(v.value) is None for v in e.values):
            texts = [v.value for v in e.values if isinstance(v, Str)]
        tests = [c for t in texts if (c := _pg_contains(e.name, t)) is not None]
        if tests and len(tests) == len(texts):
            return _pg_join([_pg_join(tests, "OR"), frag], "AND")
    return frag


def _pg_attr_value(name: str) -> _Frag:
    """The text of attribute ``name`` of version ``v`` (NULL: absent), as index_attrs defines it."""
    if name.startswith("meta."):
        return "v.meta->'u'->>(?::text)", [name[5:]]
    if name.startswith("tag."):
        return "v.meta->'t'->>(?::text)", [name[4:]]
    if name == "content_type":
        return "coalesce(v.meta->'h'->>'content-type', 'binary/octet-stream')", []
    assert name == "storage_class", name
    return "v.storage_class", []


def compile_postgres(q: Query, bucket: str, cursor: str | None = None) -> tuple[str, list[object]]:
    """:func:`compile_sqlite` for PostgreSQL's catalog: one ``SELECT`` over the current versions
    of ``bucket`` with ``$n`` parameters, returning rows of the same shape (so :func:`next_cursor`
    and cursors work alike; a cursor of one dialect is valid in the other)."""
    terms = _effective_order(q)
    pos = None if cursor is None else _decode_cursor(q, terms, cursor)
    values = [] if pos is None else [x for v in pos[0] for x in (v if isinstance(v, list) else [v])]
    if any(isinstance(x, str) and "\x00" in x for x in values):  # no PostgreSQL text holds U+0000
        raise InvalidQuery("invalid cursor: not one this server issued for this query")
    attrs = _PgAttrs.for_terms(terms)
    select = ["v.key", "v.version_id", "v.size", "v.etag", "v.modified_ns"]
    order_sql: list[str] = []
    for i, (name, desc) in enumerate(terms):
        d = " DESC" if desc else ""
        if _is_attr(name):
            a = f"s{i}"
            select += [
                f"CASE WHEN {a}.num IS NOT NULL THEN 0 WHEN {a}.value IS NOT NULL THEN 1 ELSE 2 END AS o{i}c",
                f"{a}.num AS o{i}n",
                f"(CASE WHEN {a}.num IS NULL THEN {a}.value END){_PG_C} AS o{i}t",
            ]
            order_sql += [f"o{i}c", f"o{i}n{d}", f"o{i}t{d}"]
        elif name == "key":  # always the last term: no column of its own (next_cursor reads v.key)
            order_sql.append(f"v.key{d}")
        else:
            select.append(f"{_PG_PLAIN[name]}{_PG_C if name == 'etag' else ''} AS o{i}")
            order_sql.append(f"o{i}{d}")
    conds: list[_Frag] = [
        ("v.bucket_id = (SELECT id FROM buckets WHERE name = ?) AND v.is_latest AND NOT v.is_delete_marker", [bucket])
    ]
    if q.where is not None:
        conds.append(_pg_expr(q.where, attrs))
    if pos is not None:
        # Sort terms compare as they sort: etag and attribute text in byte order.
        plain = {**_PG_PLAIN, "etag": _PG_ETAG + _PG_C}
        conds.append(_cursor_sql(terms, *pos, coll=_PG_C, false=_PG_FALSE, plain=plain))
    joins: list[_Frag] = []
    for a, name in attrs.rows:
        expr, eparams = _pg_attr_value(name)
        # OFFSET 0 keeps the row a row: the planner would otherwise inline tierstore_attr_num at
        # every reference (sort key, output, conditions), ~3x its cost (benchmarks/pg_query.py).
        lateral = " CROSS JOIN LATERAL (SELECT x.value, tierstore_attr_num(x.value) AS num FROM (SELECT "
        joins.append((f"{lateral}{expr} AS value) x OFFSET 0) {a}", eparams))
    where_sql, where_params = _pg_join(conds, "AND")
    text = (
        f"SELECT {', '.join(select)} FROM versions v{''.join(s for s, _ in joins)}"  # noqa: S608 - fixed fragments only
        f" WHERE {where_sql} ORDER BY {', '.join(order_sql)} LIMIT ?"
    )
    return _pg_numbered(text), [*(p for _, ps in joins for p in ps), *where_params, q.limit + 1]
