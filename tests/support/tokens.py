"""Token ids of single bytes in a byte-level BPE vocabulary (the tiny model's): a text's UTF-8
bytes as one token each, so every multi-byte character is split over tokens."""

from __future__ import annotations

from typing import Any


def _byte_alphabet() -> dict[int, str]:
    """GPT-2's byte-level alphabet (what ``tokenizers``' ByteLevel uses): each byte's character."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    table, extra = {b: chr(b) for b in printable}, 0
    for b in range(256):
        if b not in table:
            table[b], extra = chr(256 + extra), extra + 1
    return table


def byte_tokens(tokenizer: Any) -> list[int]:
    """The token id of each byte 0..255 (a byte-level vocabulary holds all 256)."""
    table = _byte_alphabet()
    ids = [int(i) for i in tokenizer.convert_tokens_to_ids([table[b] for b in range(256)])]
    assert len(set(ids)) == 256
    return ids
