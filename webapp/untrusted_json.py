"""JSON from people: parsed with a bound on nesting, so hostile input is a clear refusal.

A 60 KB frame of brackets is small enough to pass every size limit, yet ``json.loads`` answers it
with ``RecursionError`` (not a ``ValueError``): it dropped websockets and gave 500s. And nesting
that Python *can* parse still reaches code that recurses (validation, rendering, storing). Every
entry point that reads JSON from a person (socket frames, ``/v1`` and ``/api`` bodies, JSONL
uploads) reads it through :func:`loads`: a ``ValueError`` for anything that is not JSON or nests
deeper than :data:`MAX_DEPTH` — far deeper than any request of ours needs.
"""

from __future__ import annotations

import json
from typing import Any

MAX_DEPTH = 32


class UntrustedJsonError(ValueError):
    """Not JSON, or JSON nested deeper than ``MAX_DEPTH``; the message says which."""


def loads(data: str | bytes | bytearray, *, max_depth: int = MAX_DEPTH) -> Any:
    """``json.loads`` that refuses, with :class:`UntrustedJsonError`, what is not JSON or nests too deeply."""
    try:
        value = json.loads(data)
    except RecursionError:
        raise UntrustedJsonError(too_deep(max_depth)) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise UntrustedJsonError(f"not valid JSON: {exc}") from None
    if depth_exceeds(value, max_depth):
        raise UntrustedJsonError(too_deep(max_depth))
    return value


def too_deep(max_depth: int = MAX_DEPTH) -> str:
    return f"the JSON nests deeper than {max_depth} levels"


def depth_exceeds(value: Any, max_depth: int = MAX_DEPTH) -> bool:
    """Whether ``value``'s lists and objects nest deeper than ``max_depth`` (walked without recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > max_depth:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False
