"""Picking a stop string from a reference answer (the tiny model's texts are random)."""

from __future__ import annotations


def _usable(text: str, start: int) -> str | None:
    """The two characters at ``start`` when they make a stop string one can type and match: printable,
    no replacement character or backslash (the chat page reads escapes), first there."""
    stop = text[start : start + 2]
    if stop.isprintable() and not {"\\", "\ufffd"} & set(stop) and text.find(stop) == start:
        return stop
    return None


def stop_in(text: str) -> str:
    """Two characters from the second quarter of ``text``, where they occur first."""
    found = (s for i in range(len(text) // 4, len(text) // 2) if (s := _usable(text, i)) is not None)
    stop = next(found, None)
    assert stop is not None, f"no stop string to pick in {text!r}"
    return stop


def pick_stop(token_texts: list[str]) -> tuple[str, int]:
    """Two characters generated after the third token and in the first half of the answer whose
    text is ``token_texts`` joined, where they occur first; and how many tokens come up to them
    (a run stopping on them ends well before its length)."""
    text = "".join(token_texts)
    ends = [len("".join(token_texts[: k + 1])) for k in range(len(token_texts))]
    for start in range(ends[2], ends[len(token_texts) // 2 - 1] - 1):
        if (stop := _usable(text, start)) is not None:
            return stop, next(k + 1 for k, end in enumerate(ends) if end >= start + 2)
    raise AssertionError(f"no stop string to pick in {text!r}")
