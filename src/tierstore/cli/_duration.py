"""Durations on the command line: ``90``, ``2s``, ``30m``, ``12h``, ``7d``, ``1w``, ``0.5s``."""

from __future__ import annotations

import argparse
import re

__all__ = ["duration_arg", "parse_duration"]

_UNITS_S = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86_400.0, "w": 604_800.0}
_DURATION_RE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*([smhdw]?)", re.IGNORECASE)


def parse_duration(text: str) -> float:
    """Seconds in ``text``: a non-negative number with an optional unit s, m, h, d or w (none: seconds)."""
    m = _DURATION_RE.fullmatch(text.strip())
    if not m:
        raise ValueError(f"bad duration {text!r}: a number with an optional unit s, m, h, d or w (e.g. 30m, 7d)")
    return float(m.group(1)) * _UNITS_S[m.group(2).lower()]


def duration_arg(text: str) -> float:
    """``parse_duration`` as an argparse ``type``."""
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
