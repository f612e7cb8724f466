"""Uploaded CSV / JSONL datasets -> validated rows (pure: no ORM).

Two kinds of dataset:

* ``labelled``: prompts with a class label, columns ``text`` and ``label`` (probe training and
  evaluation);
* ``contrastive``: pairs, columns ``positive`` and ``negative`` (steering-vector training).

CSV files need a header row naming the columns; JSONL files hold one JSON object per line (blank
lines are skipped). The kind is taken from the columns unless the caller names it. Files must be
UTF-8 (a leading byte-order mark is accepted). Errors name the line: ``line 7: missing 'label'``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

from webapp import untrusted_json
from webapp.library.uploads import UploadError, max_upload_bytes

__all__ = [
    "COLUMNS",
    "CONTRASTIVE",
    "LABELLED",
    "MAX_LABEL_CHARS",
    "MAX_ROWS",
    "MAX_TEXT_CHARS",
    "DatasetError",
    "ParsedDataset",
    "dataset_content_hash",
    "parse_dataset",
]

LABELLED = "labelled"
CONTRASTIVE = "contrastive"
COLUMNS: dict[str, tuple[str, str]] = {LABELLED: ("text", "label"), CONTRASTIVE: ("positive", "negative")}
MAX_ROWS = 10_000
MAX_TEXT_CHARS = 8_192
MAX_LABEL_CHARS = 100
# A CSV field may not exceed this (the csv module's own default is 128 KiB, far above our limits).
_CSV_FIELD_LIMIT = 4 * MAX_TEXT_CHARS


class DatasetError(UploadError):
    """A dataset upload that cannot be accepted; the message names the line when there is one."""


@dataclass(frozen=True)
class ParsedDataset:
    """A validated dataset.

    Args:
        kind: ``labelled`` or ``contrastive``.
        rows: one dict per row, with exactly the kind's two columns (str values).
    """

    kind: str
    rows: list[dict[str, str]]

    @property
    def content_hash(self) -> str:
        return dataset_content_hash(self.kind, self.rows)


def dataset_content_hash(kind: str, rows: list[dict[str, str]]) -> str:
    """Hex SHA-256 of the dataset's canonical JSON (kind and rows, keys sorted)."""
    canonical = json.dumps(
        {"kind": kind, "rows": rows}, sort_keys=True, ensure_ascii=False, separators=(",", ":")
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _decode(raw: bytes, filename: str) -> str:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DatasetError(
            f"{filename!r}: line {line}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start}); "
            "save the file as UTF-8"
        ) from exc


def _kind_of(columns: set[str], kind: str | None, where: str) -> str:
    if kind is not None:
        if kind not in COLUMNS:
            raise DatasetError(f"unknown dataset kind {kind!r}: expected {LABELLED!r} or {CONTRASTIVE!r}")
        return kind
    for candidate, names in COLUMNS.items():
        if columns & set(names):
            return candidate
    raise DatasetError(
        f"{where}: cannot tell the dataset kind from the columns {sorted(columns)}: "
        "use 'text' and 'label' (labelled prompts) or 'positive' and 'negative' (contrastive pairs)"
    )


def _value(value: object, column: str, line: int) -> str:
    if column == "label" and isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise DatasetError(f"line {line}: {column!r} must be a string, got {type(value).__name__}")
    if not value.strip():
        raise DatasetError(f"line {line}: {column!r} is empty")
    limit = MAX_LABEL_CHARS if column == "label" else MAX_TEXT_CHARS
    if len(value) > limit:
        raise DatasetError(f"line {line}: {column!r} is {len(value)} characters, over the limit of {limit}")
    return value


def _row(record: dict[str, Any], kind: str, line: int) -> dict[str, str]:
    names = COLUMNS[kind]
    for column in names:
        if column not in record or record[column] is None:
            raise DatasetError(f"line {line}: missing {column!r}")
    unexpected = sorted(set(record) - set(names))
    if unexpected:
        raise DatasetError(
            f"line {line}: unexpected column(s) {unexpected}: a {kind} dataset has {names[0]!r} and {names[1]!r}"
        )
    return {column: _value(record[column], column, line) for column in names}


def _check_count(count: int) -> None:
    if count > MAX_ROWS:
        raise DatasetError(f"the dataset has more than {MAX_ROWS} rows, the limit")


def _parse_jsonl(text: str, kind: str | None) -> ParsedDataset:
    rows: list[dict[str, str]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = untrusted_json.loads(line)
        except untrusted_json.UntrustedJsonError as exc:
            raise DatasetError(f"line {number}: {exc}") from None
        if not isinstance(record, dict):
            raise DatasetError(f"line {number}: expected a JSON object, got {type(record).__name__}")
        if kind is None:
            kind = _kind_of(set(record), None, f"line {number}")
        rows.append(_row(record, kind, number))
        _check_count(len(rows))
    if kind is None or not rows:
        raise DatasetError("the dataset has no rows")
    return ParsedDataset(kind, rows)


def _parse_csv(text: str, kind: str | None) -> ParsedDataset:
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    rows: list[dict[str, str]] = []
    header: list[str] | None = None
    try:
        for record in reader:
            if not record or all(not cell.strip() for cell in record):
                continue
            number = reader.line_num
            if any(len(cell) > _CSV_FIELD_LIMIT for cell in record):
                raise DatasetError(f"line {number}: a field is over {_CSV_FIELD_LIMIT} characters")
            if header is None:
                header = [cell.strip() for cell in record]
                if len(set(header)) != len(header):
                    raise DatasetError(f"line {number}: the header names a column twice: {header}")
                kind = _kind_of(set(header), kind, f"line {number} (header)")
                missing = [name for name in COLUMNS[kind] if name not in header]
                if missing:
                    raise DatasetError(f"line {number} (header): missing column(s) {missing}")
                continue
            if len(record) != len(header):
                raise DatasetError(
                    f"line {number}: {len(record)} fields, but the header has {len(header)} columns"
                )
            rows.append(_row(dict(zip(header, record, strict=True)), kind or LABELLED, number))
            _check_count(len(rows))
    except csv.Error as exc:
        raise DatasetError(f"line {reader.line_num}: malformed CSV ({exc})") from exc
    if header is None or kind is None or not rows:
        raise DatasetError("the dataset has no rows (a CSV file needs a header row and at least one row)")
    return ParsedDataset(kind, rows)


def parse_dataset(
    data: bytes, filename: str, *, kind: str | None = None, max_bytes: int | None = None
) -> ParsedDataset:
    """Parse and validate an uploaded dataset.

    Args:
        data: the uploaded bytes (UTF-8).
        filename: its name: ``.csv`` or ``.jsonl`` (``.ndjson``) picks the parser.
        kind: ``labelled`` or ``contrastive``; None: taken from the columns.
        max_bytes: size limit; ``max_upload_bytes()`` when None.

    Raises:
        DatasetError: (an :class:`UploadError`) naming the line at fault.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise DatasetError(f"expected the uploaded file as bytes, got {type(data).__name__}")
    raw = bytes(data)
    limit = max_upload_bytes() if max_bytes is None else max_bytes
    if len(raw) > limit:
        raise DatasetError(f"{filename!r} is {len(raw)} bytes, over the upload limit of {limit} bytes")
    if kind is not None and kind not in COLUMNS:
        raise DatasetError(f"unknown dataset kind {kind!r}: expected {LABELLED!r} or {CONTRASTIVE!r}")
    ext = PurePath(filename or "").suffix.lower()
    if ext not in (".csv", ".jsonl", ".ndjson"):
        shown = repr(ext) if ext else "no extension"
        raise DatasetError(f"{filename!r}: {shown} is not a dataset format; upload .csv or .jsonl")
    text = _decode(raw, filename)
    if "\x00" in text:
        raise DatasetError(f"{filename!r}: the file contains NUL characters; it is not a text file")
    try:
        return _parse_csv(text, kind) if ext == ".csv" else _parse_jsonl(text, kind)
    except DatasetError as exc:
        raise DatasetError(f"{filename!r}: {exc}") from exc
