"""Wildcard patterns (``*``, ``?``) and policy variables (``${aws:username}``), compiled once.

A pattern without variables becomes one regex at parse time. A pattern with variables keeps its
pieces; at evaluation the variables are substituted (their values are literal text, never
wildcards) and the resulting regex is cached by its source text.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence

__all__ = ["Lookup", "Pattern", "compile_glob"]

# A request-context lookup: a lowercased condition key -> its values, or None when absent.
Lookup = Callable[[str], "Sequence[str] | None"]

_VARIABLE = re.compile(r"\$\{([^}]*)\}")
_DEFAULT = re.compile(r"^\s*([^,\s]+)\s*,\s*'([^']*)'\s*$")
_LITERALS = {"*": "*", "?": "?", "$": "$"}

WILD, EXACT, VAR = 0, 1, 2


def _glob_regex(pieces: Sequence[tuple[int, str]], *, arn: bool) -> str:
    """Regex source for ``pieces`` (WILD text has wildcards; EXACT text is literal).

    With ``arn`` the pattern is matched per ARN component: a wildcard in the first five
    colon-separated components does not cross a ``:``; in the sixth (the resource) it does.
    """
    out: list[str] = []
    colons = 0
    for kind, text in pieces:
        for ch in text:
            if ch == ":":
                colons += 1
            if kind == WILD and ch == "*":
                out.append("[^:]*" if arn and colons < 5 else ".*")
            elif kind == WILD and ch == "?":
                out.append("[^:]" if arn and colons < 5 else ".")
            else:
                out.append(re.escape(ch))
    return "".join(out)


@functools.lru_cache(maxsize=65536)
def compile_glob(source: str, flags: int) -> re.Pattern[str]:
    return re.compile(source, flags | re.DOTALL)


class Pattern:
    """A wildcard pattern; ``variables`` names the context keys it substitutes (lowercased)."""

    __slots__ = ("arn", "flags", "pieces", "regex", "static_text", "text", "variables")

    def __init__(self, text: str, *, variables_allowed: bool, ignore_case: bool = False, arn: bool = False,
                 check_variable: Callable[[str], None] | None = None) -> None:
        self.text = text
        self.arn = arn
        self.flags = re.IGNORECASE if ignore_case else 0
        pieces: list[tuple[int, str, str]] = []  # (kind, text-or-key, default)
        pos = 0
        if variables_allowed:
            for m in _VARIABLE.finditer(text):
                if m.start() > pos:
                    pieces.append((WILD, text[pos:m.start()], ""))
                inner = m.group(1).strip()
                if inner in _LITERALS:
                    pieces.append((EXACT, _LITERALS[inner], ""))
                else:
                    default = ""
                    dm = _DEFAULT.match(inner)
                    if dm:
                        inner, default = dm.group(1), dm.group(2)
                        pieces.append((VAR, inner.lower(), "\x00" + default))
                    else:
                        pieces.append((VAR, inner.lower(), ""))
                    if check_variable is not None:
                        check_variable(inner)
                pos = m.end()
        if pos < len(text):
            pieces.append((WILD, text[pos:], ""))
        self.variables = tuple(p[1] for p in pieces if p[0] == VAR)
        self.pieces = tuple(pieces)
        self.regex: re.Pattern[str] | None = None
        # the text for exact-match operators: ${*} ${?} ${$} unescaped, no variables
        self.static_text = None if self.variables else "".join(t for _, t, _ in pieces)
        if not self.variables:
            self.regex = compile_glob(_glob_regex([(k, t) for k, t, _ in pieces], arn=arn), self.flags)

    @property
    def is_static(self) -> bool:
        return self.regex is not None

    def resolve(self, lookup: Lookup) -> re.Pattern[str] | None:
        """The regex with variables substituted; None when a variable has no single value."""
        if self.regex is not None:
            return self.regex
        parts: list[tuple[int, str]] = []
        for kind, text, default in self.pieces:
            if kind != VAR:
                parts.append((kind, text))
                continue
            values = lookup(text)
            if values is not None and len(values) == 1:
                parts.append((EXACT, values[0]))
            elif default:
                parts.append((EXACT, default[1:]))
            else:
                return None  # an unresolved variable: this pattern matches nothing
        return compile_glob(_glob_regex(parts, arn=self.arn), self.flags)

    def literal(self, lookup: Lookup) -> str | None:
        """The text with variables substituted (for exact-match operators); None if unresolved."""
        if self.static_text is not None:
            return self.static_text
        out: list[str] = []
        for kind, text, default in self.pieces:
            if kind != VAR:
                out.append(text)
                continue
            values = lookup(text)
            if values is not None and len(values) == 1:
                out.append(values[0])
            elif default:
                out.append(default[1:])
            else:
                return None
        return "".join(out)

    def over_prefix(self, prefix: str) -> bool | None:
        """How this pattern matches the strings that start with ``prefix`` (e.g. every object ARN
        of a bucket, ``arn:aws:s3:::b/``): True: every one of them; False: none; None: some, or
        not known for sure (a policy variable, a wildcard that is not a trailing ``*`` crossing
        every character). Never True or False unless it is so for every such string."""
        fold = str.lower if self.flags & re.IGNORECASE else str
        head: list[str] = []  # the literal text before the first wildcard or variable
        literal = True
        for kind, text, _ in self.pieces:
            if kind == EXACT:
                head.append(text)
                continue
            if kind == VAR:
                literal = False
                break
            cut = min((i for i in (text.find("*"), text.find("?")) if i >= 0), default=-1)
            if cut < 0:
                head.append(text)
                continue
            head.append(text[:cut])
            literal = False
            break
        start, want = fold("".join(head)), fold(prefix)
        if literal:  # one string: at most one of them
            return None if start.startswith(want) else False
        if not (start.startswith(want) or want.startswith(start)):
            return False  # the literal head leaves the prefix: no string with that prefix matches
        last = self.pieces[-1]
        if self.variables or last[0] != WILD or not last[1].endswith("*"):
            return None
        # ``H*``: every string with the prefix matches if H matches some prefix of it (the trailing
        # ``*`` takes the rest) — unless that ``*`` stops at a ``:`` (an ARN pattern's first fields).
        rest = [(k, t) for k, t, _ in self.pieces[:-1]] + [(WILD, last[1].rstrip("*"))]
        if self.arn and "".join(t for _, t in rest).count(":") < 5:
            return None
        if compile_glob(_glob_regex(rest, arn=self.arn), self.flags).match(prefix) is not None:
            return True
        return None

    def matches(self, value: str, lookup: Lookup) -> bool:
        regex = self.resolve(lookup)
        return regex is not None and regex.fullmatch(value) is not None

    def __repr__(self) -> str:
        return f"Pattern({self.text!r})"
