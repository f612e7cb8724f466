"""A run's streamed text (``webapp.playground.textstream``), on the tiny model's byte-level tokenizer:
random byte sequences (multi-byte characters split over tokens, invalid bytes too) and ordinary text.

The properties: the deltas joined with the end's tail are the stored text; that text is the
tokenizer's decode of every token (NUL aside); valid UTF-8 never streams a U+FFFD; and with stop
strings, no prefix of the stream shows one and the text ends before the first.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st
from support.tokens import byte_tokens as support_byte_tokens

from interventions.tiny import load_tiny
from webapp.playground import stops
from webapp.playground.textstream import TextStream, text_of

MULTIBYTE = "aé€😀中\n ñ"  # 1, 2, 3, 4 and 3 bytes, a newline, a space, 2 bytes


@cache
def tokenizer() -> Any:
    return load_tiny()[1]


@cache
def byte_tokens() -> list[int]:
    return support_byte_tokens(tokenizer())


def _ids(segments: list[tuple[str, Any]]) -> list[int]:
    out: list[int] = []
    for kind, value in segments:
        if kind == "bytes":  # one token per byte: every multi-byte character split
            out += [byte_tokens()[b] for b in value]
        else:  # the tokenizer's own merges
            out += tokenizer()(value, add_special_tokens=False)["input_ids"]
    return out


SEGMENTS = st.lists(
    st.one_of(
        st.tuples(st.just("bytes"), st.binary(max_size=12)),
        st.tuples(st.just("bytes"), st.text(MULTIBYTE, max_size=6).map(str.encode)),
        st.tuples(st.just("text"), st.text(MULTIBYTE + "the cat", max_size=12)),
    ),
    max_size=6,
)


def _stream(ids: list[int], stop: tuple[str, ...] = ()) -> tuple[TextStream, list[str], str]:
    stream = TextStream(tokenizer(), stop)
    deltas = [stream.push(i) for i in ids]
    return stream, deltas, stream.end()


@settings(max_examples=300)
@given(segments=SEGMENTS)
@example(segments=[("bytes", "é".encode())])  # one character in two tokens
@example(segments=[("bytes", "😀".encode()[:3])])  # a run that ends mid-character
@example(segments=[("bytes", b"\x80a\xe2\x82")])  # invalid bytes, then an incomplete character
@example(segments=[("bytes", b"a\x00b")])  # NUL, which the database cannot store
def test_the_deltas_join_to_the_stored_text_which_is_the_tokenizer_s(segments: list[tuple[str, Any]]) -> None:
    ids = _ids(segments)
    stream, deltas, tail = _stream(ids)
    assert "".join(deltas) + tail == stream.text == text_of(tokenizer(), ids)[0]
    decoded = tokenizer().decode(ids, skip_special_tokens=True).replace("\x00", "\ufffd")
    assert stream.text == decoded


@settings(max_examples=200)
@given(text=st.text(MULTIBYTE + "xyz", max_size=20), split=st.booleans())
def test_valid_text_never_streams_a_replacement_character(text: str, split: bool) -> None:
    ids = _ids([("bytes", text.encode())] if split else [("text", text)])
    _, deltas, tail = _stream(ids)
    assert "\ufffd" not in "".join(deltas) + tail
    assert "".join(deltas) + tail == text


@settings(max_examples=200)
@given(
    segments=SEGMENTS,
    stop=st.lists(st.text("é😀a\n", min_size=1, max_size=3), min_size=1, max_size=3).map(tuple),
)
@example(segments=[("bytes", "aé😀".encode())], stop=("é😀",))  # a stop string of split characters
def test_with_stop_strings_the_stream_never_shows_one_and_ends_before_the_first(
    segments: list[tuple[str, Any]], stop: tuple[str, ...]
) -> None:
    ids = _ids(segments)
    stream, deltas, tail = _stream(ids, stop)
    shown = ""
    for delta in deltas:
        shown += delta
        assert not any(s in shown for s in stop)
    assert shown + tail == stream.text
    whole = text_of(tokenizer(), ids)[0]
    cut = stops.cut(whole, stop)
    # The text is the whole text before its first stop string; the tokens up to the one that
    # completed it are what a run keeps.
    assert stream.text == (whole if cut is None else whole[:cut])
    kept = text_of(tokenizer(), ids, stop)[1]
    assert (kept is None) == (cut is None) and stream.stopped == (cut is not None)
    if kept is not None:
        assert stops.cut(text_of(tokenizer(), ids[:kept])[0], stop) is not None
        assert stops.cut(text_of(tokenizer(), ids[: kept - 1])[0], stop) is None
