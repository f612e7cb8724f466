"""Stop sequences (OpenAI's ``stop``): a run ends at the first occurrence of any of its strings.

The executor (``cut``) ends the run at the token that completes a stop string; the answer's text
ends before the match. The tokens that made the match stay in the transcript: they were
generated, and a replay regenerates them. No stream ever shows a stop string: token frames hold
back any tail that could still become one (``held_back``) and give it out once it cannot
(``webapp.playground.textstream``).

Matching is on the decoded text, not on tokens: a stop string may span several tokens, and a
token may hold a stop string and more.
"""

from __future__ import annotations

from collections.abc import Sequence

MAX_STOPS = 4  # as OpenAI
MAX_STOP_CHARS = 64


def problem(stops: Sequence[object]) -> str | None:
    """Why ``stops`` cannot be a run's stop sequences, or None when they can."""
    if len(stops) > MAX_STOPS:
        return f"stop takes at most {MAX_STOPS} strings"
    for s in stops:
        if not isinstance(s, str) or not 1 <= len(s) <= MAX_STOP_CHARS or "\x00" in s:
            return f"each stop string must be 1 to {MAX_STOP_CHARS} characters (no NUL)"
    return None


def cut(text: str, stops: Sequence[str]) -> int | None:
    """Where ``text`` ends before its first stop string; None when it holds none."""
    found = [i for s in stops if (i := text.find(s)) >= 0]
    return min(found) if found else None


def held_back(text: str, stops: Sequence[str]) -> int:
    """How many characters at the end of ``text`` could still begin a stop string."""
    longest = 0
    for s in stops:
        for n in range(min(len(s) - 1, len(text)), longest, -1):
            if text.endswith(s[:n]):
                longest = n
                break
    return longest
