"""A run's text as it streams: each token frame carries what the token adds, never half a character
and never any part of a stop string, so the frames' texts joined (with the ``finished`` frame's
``tail``) are exactly the text the run stores.

Decoding is incremental (the method of vLLM's and Hugging Face's streamers): each new token is
decoded with a few tokens of context before it, and the text is given out only once it does not end
in U+FFFD — a character whose UTF-8 bytes span tokens is held back until its last byte arrives.
Stop strings are matched on the whole text so far; a tail that could still begin one is held back
until it cannot (``webapp.playground.stops``). At the end whatever is held is given out, decoded
as the stored text is (an incomplete character becomes U+FFFD).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from webapp.playground import stops

INCOMPLETE = "\ufffd"  # what a decoder gives for bytes that do not (yet) make a character


def clean(text: str) -> str:
    # PostgreSQL's text and jsonb refuse NUL: it becomes U+FFFD, like an undecodable byte.
    return text.replace("\x00", INCOMPLETE)


class IncrementalDecoder:
    """Token ids in, complete text out: ``push`` returns what the new token adds (maybe nothing yet)."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.prefix_offset = 0  # context tokens start here...
        self.read_offset = 0  # ...and end here: everything before is given out

    def _decode(self, ids: Sequence[int]) -> str:
        return str(self.tokenizer.decode(list(ids), skip_special_tokens=True))

    def _added(self) -> str:
        """The text of the tokens after ``read_offset``, decoded after their context."""
        context = self._decode(self.ids[self.prefix_offset : self.read_offset])
        whole = self._decode(self.ids[self.prefix_offset :])
        return whole[len(context) :] if len(whole) > len(context) else ""

    def push(self, token_id: int) -> str:
        self.ids.append(token_id)
        added = self._added()
        if not added or added.endswith(INCOMPLETE):
            return ""  # nothing yet, or a character still waiting for its last bytes
        self.prefix_offset, self.read_offset = self.read_offset, len(self.ids)
        return clean(added)

    def end(self) -> str:
        """Whatever is held back, as a final decode gives it (incomplete bytes as U+FFFD)."""
        added = self._added()
        self.prefix_offset = self.read_offset = len(self.ids)
        return clean(added)


class TextStream:
    """A run's text: ``push`` each token, send the delta it returns; ``end`` gives the last piece.

    ``text`` is the run's text so far (cut before a stop string once one is generated), ``shown``
    how much of it the deltas gave out; ``stopped`` says a stop string was generated.
    """

    def __init__(self, tokenizer: Any, stop: Sequence[str] = ()) -> None:
        self.decoder = IncrementalDecoder(tokenizer)
        self.stops = tuple(stop)
        self.text = ""
        self.shown = 0
        self.stopped = False

    def push(self, token_id: int) -> str:
        """Take the next token; the text it lets out (often its own, maybe none, maybe more)."""
        if self.stopped:
            return ""
        return self._take(self.decoder.push(token_id), final=False)

    def end(self) -> str:
        """The run ended: the rest of its text, held back until now."""
        return "" if self.stopped else self._take(self.decoder.end(), final=True)

    def _take(self, piece: str, *, final: bool) -> str:
        self.text += piece
        if (cut := stops.cut(self.text, self.stops)) is not None:
            self.text, self.stopped, final = self.text[:cut], True, True
        end = len(self.text) if final else len(self.text) - stops.held_back(self.text, self.stops)
        delta = self.text[self.shown : end] if end > self.shown else ""
        self.shown = max(self.shown, end)
        return delta


def text_of(tokenizer: Any, ids: Sequence[int], stop: Sequence[str] = ()) -> tuple[str, int | None]:
    """The text a run that generated ``ids`` stores (its stream's, joined), and how many tokens came
    up to the one that completed a stop string (None: no stop string was generated)."""
    stream = TextStream(tokenizer, stop)
    for n, token in enumerate(ids, start=1):
        stream.push(token)
        if stream.stopped:
            return stream.text, n
    stream.end()
    return stream.text, None
