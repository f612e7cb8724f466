"""Picking a stop string from a reference answer (the tiny model's texts are random)."""

from __future__ import annotations


def pick_stop(token_texts: list[str]) -> tuple[str, int]:
    """Two characters generated after the third token and in the first half of the answer whose
    text is ``token_texts`` joined, where they occur first; and how many tokens come up to them
    (a run stopping on them ends well before its length)."""
    text = "".join(token_texts)
    ends = [len("".join(token_texts[: k + 1])) for k in range(len(token_texts))]
    for start in range(ends[2], ends[len(token_texts) // 2 - 1] - 1):
        stop = text[start : start + 2]
        if stop.isprintable() and "\ufffd" not in stop and text.find(stop) == start:
            return stop, next(k + 1 for k, end in enumerate(ends) if end >= start + 2)
    raise AssertionError(f"no stop string to pick in {text!r}")
