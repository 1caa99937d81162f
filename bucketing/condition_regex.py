"""Regular expressions in targeting conditions (``$regex`` and friends) run on RE2 (google-re2).

RE2's matching time is linear in the pattern and the text: no pattern can backtrack for seconds,
as ``(a+)+$`` does in Python's ``re`` or JavaScript. Compiled programs are cached, each is capped
at ``_RE2_MAX_MEM`` bytes, patterns longer than ``MAX_REGEX_LENGTH`` never compile and attributes
longer than ``MAX_REGEX_SUBJECT_LENGTH`` are never searched.
"""

from __future__ import annotations

from typing import Any

import re2

_REGEX_CACHE: dict[tuple[Any, bool], Any] = {}
_REGEX_CACHE_MAX = 1024
# Longest pattern accepted at save time, and longest attribute a pattern is applied to: with RE2's
# linear-time matching these bound every regex evaluation to well under a millisecond.
MAX_REGEX_LENGTH = 500
MAX_REGEX_SUBJECT_LENGTH = 8192
_RE2_MAX_MEM = 1 << 20  # bytes per compiled pattern; larger programs are refused


def _re2_options(insensitive: bool) -> Any:
    options = re2.Options()
    options.log_errors = False
    options.max_mem = _RE2_MAX_MEM
    options.case_sensitive = not insensitive
    return options


def re2_compile(pattern: str, insensitive: bool = False) -> Any:
    """The RE2 program of ``pattern`` (raises ``re2.error`` when RE2 cannot compile it)."""
    return re2.compile(pattern, _re2_options(insensitive))


def re2_error_text(exc: Exception) -> str:
    detail = exc.args[0] if exc.args else exc
    return detail.decode(errors="replace") if isinstance(detail, bytes) else str(detail)


def _regex(pattern: Any, insensitive: bool) -> Any:
    key = (pattern, insensitive)
    try:
        return _REGEX_CACHE[key]
    except KeyError:
        pass
    except TypeError:  # an unhashable pattern never compiles
        return None
    compiled: Any = None
    if isinstance(pattern, str) and len(pattern) <= MAX_REGEX_LENGTH:
        try:
            compiled = re2_compile(pattern, insensitive)
        except Exception:
            compiled = None
    if len(_REGEX_CACHE) >= _REGEX_CACHE_MAX:
        _REGEX_CACHE.clear()
    _REGEX_CACHE[key] = compiled
    return compiled


def _regex_search(pattern: Any, insensitive: bool, value: Any) -> bool | None:
    """Whether ``pattern`` matches in ``value``; None when it cannot be applied (a non-string or
    over-long attribute, a pattern RE2 cannot compile)."""
    if not isinstance(value, str) or len(value) > MAX_REGEX_SUBJECT_LENGTH:
        return None
    compiled = _regex(pattern, insensitive)
    if compiled is None:
        return None
    try:
        return compiled.search(value) is not None
    except Exception:  # a lone surrogate cannot be encoded as UTF-8
        return None
