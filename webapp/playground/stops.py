"""Stop sequences (OpenAI's ``stop``): a run ends at the first occurrence of any of its strings.

The executor (``cut``) ends the run at the token that completes a stop string; the answer's text
ends before the match. The tokens that made the match stay in the transcript: they were
generated, and a replay regenerates them. Token frames carry each token's text up to the cut, so
a stream that must never show a stop string (the OpenAI API's) holds back any tail that could
still become one (``Release``) and gives it out once it cannot.

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


class Release:
    """What of a run's streamed text may be shown: everything but a tail that may begin a stop."""

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = tuple(stops)
        self.text = ""  # the token frames' texts, joined
        self.shown = 0  # characters of ``text`` given out

    def push(self, delta: str) -> str:
        """Take a token frame's text; what may be shown now (often all of it, maybe nothing)."""
        self.text += delta
        end = len(self.text) - held_back(self.text, self.stops)
        out = self.text[self.shown : end] if end > self.shown else ""
        self.shown = max(self.shown, end)
        return out

    def end(self, final: str) -> str:
        """The rest of the run's final text (its ``finished`` frame's, cut before any stop)."""
        shown = self.text[: self.shown]
        # The executor's final decode can differ from its per-token deltas (a multi-byte
        # character split over tokens): nothing shown can be taken back, so only a tail is added.
        return final[len(shown) :] if final.startswith(shown) else ""
