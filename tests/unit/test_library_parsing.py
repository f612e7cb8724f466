"""Upload parsing for the library (no database): vectors, probes and datasets."""

from __future__ import annotations

import io
import json
import pickle
import struct

import numpy as np
import pytest
import torch
from safetensors.torch import save as st_save

from interventions.probes import LinearProbe
from interventions.probes import to_safetensors_bytes as probe_bytes
from interventions.vectors import SteeringVector, to_gguf_bytes, to_safetensors_bytes
from webapp.library.datasets import CONTRASTIVE, LABELLED, DatasetError, parse_dataset
from webapp.library.uploads import UploadError, parse_probe_upload, parse_vector_upload

LAYERS, HIDDEN = 4, 64


def _vector(layers: tuple[int, ...] = (1, 2), hidden: int = HIDDEN) -> SteeringVector:
    g = torch.Generator().manual_seed(0)
    return SteeringVector({layer: torch.randn(hidden, generator=g) for layer in layers}, method="mean_diff")


def _parse(data: bytes, filename: str, **kwargs: object) -> SteeringVector:
    return parse_vector_upload(data, filename, num_layers=LAYERS, hidden_size=HIDDEN, **kwargs)  # type: ignore[arg-type]


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


# ----------------------------------------------------------------------------- round trips
def test_safetensors_vector_round_trips_bit_exactly() -> None:
    v = _vector()
    got = _parse(to_safetensors_bytes(v), "honesty.safetensors")
    assert got.layers == (1, 2)
    for layer in v.layers:
        assert torch.equal(got.directions[layer], v.directions[layer])
    assert got.content_hash() == v.content_hash()


def test_gguf_vector_round_trips_bit_exactly() -> None:
    v = _vector((1, 3))
    got = _parse(to_gguf_bytes(v), "control.GGUF")
    assert got.layers == (1, 3)
    assert all(torch.equal(got.directions[k], v.directions[k]) for k in v.layers)


def test_npy_vector_needs_and_normalises_its_layer() -> None:
    row = np.arange(HIDDEN, dtype=np.float32) / 7
    got = _parse(_npy(row), "v.npy", layer=-1)
    assert got.layers == (3,)
    assert torch.equal(got.directions[3], torch.from_numpy(row))
    with pytest.raises(UploadError, match="pass layer="):
        _parse(_npy(row), "v.npy")


def test_probe_round_trips_bit_exactly() -> None:
    probe = LinearProbe(torch.randn(HIDDEN, generator=torch.Generator().manual_seed(1)), 0.25, ("no", "yes"))
    got, layer = parse_probe_upload(
        probe_bytes(probe), "p.safetensors", num_layers=LAYERS, width=HIDDEN, layer=-2
    )
    assert layer == 2
    assert torch.equal(got.weight, probe.weight)
    assert got.bias == probe.bias
    assert got.labels == ("no", "yes")


# ----------------------------------------------------------------------------- pickles
def test_pickle_dumps_payload_is_refused_whatever_its_name() -> None:
    payload = pickle.dumps({"layer.1": np.zeros(HIDDEN, dtype=np.float32)})
    for name in ("v.pkl", "v.safetensors", "v.npy", "v.gguf"):
        with pytest.raises(UploadError, match="pickle"):
            _parse(payload, name)


def test_torch_save_payload_is_refused_by_extension_and_by_content() -> None:
    buf = io.BytesIO()
    torch.save({"layer.1": torch.zeros(HIDDEN)}, buf)
    payload = buf.getvalue()
    with pytest.raises(UploadError, match=r"\.pt files are refused"):
        _parse(payload, "vector.pt")
    with pytest.raises(UploadError, match=r"torch\.save"):
        _parse(payload, "vector.safetensors")
    with pytest.raises(UploadError, match="pickle"):
        parse_probe_upload(payload, "probe.safetensors", num_layers=LAYERS, width=HIDDEN, layer=0)


@pytest.mark.parametrize("ext", [".pth", ".bin", ".ckpt", ".pkl"])
def test_pickle_extensions_are_refused(ext: str) -> None:
    with pytest.raises(UploadError, match="arbitrary code"):
        _parse(to_safetensors_bytes(_vector()), f"v{ext}")


def test_safetensors_header_that_looks_like_a_pickle_header_is_accepted() -> None:
    # A 640-byte header starts with 0x80 0x02, like a pickle protocol-2 header: must not be refused.
    v = _vector((1,))
    tensors = {"layer.1": v.directions[1]}
    for pad in range(0, 800):
        raw = st_save(tensors, metadata={"steerlab_format": "steering_vector/1", "note": "x" * pad})
        if raw[:2] == b"\x80\x02":
            break
    assert struct.unpack("<Q", raw[:8])[0] == 640, "no padding produced a 640-byte header"
    assert torch.equal(_parse(raw, "v.safetensors").directions[1], v.directions[1])


# ----------------------------------------------------------------------------- bad content
def test_nan_and_inf_are_refused() -> None:
    for bad in (float("nan"), float("inf")):
        t = torch.zeros(HIDDEN)
        t[5] = bad
        raw = st_save({"layer.2": t})
        with pytest.raises(UploadError, match=r"layer 2: direction contains .*(NaN|Inf)"):
            _parse(raw, "v.safetensors")
    weight = torch.zeros(HIDDEN)
    weight[0] = float("nan")
    raw = st_save({"weight": weight, "bias": torch.zeros(1)}, metadata={"steerlab.kind": "linear_probe"})
    with pytest.raises(UploadError, match="NaN"):
        parse_probe_upload(raw, "p.safetensors", num_layers=LAYERS, width=HIDDEN, layer=0)


def test_wrong_width_is_refused_naming_the_layer() -> None:
    with pytest.raises(
        UploadError, match="layer 1: direction width 32 does not match the deployment's hidden size 64"
    ):
        _parse(to_safetensors_bytes(_vector(hidden=32)), "v.safetensors")
    probe = LinearProbe(torch.ones(32), 0.0)
    with pytest.raises(UploadError, match="probe width 32 does not match the site's width 64"):
        parse_probe_upload(probe_bytes(probe), "p.safetensors", num_layers=LAYERS, width=HIDDEN, layer=0)


def test_layer_out_of_range_is_refused_naming_the_layer() -> None:
    with pytest.raises(UploadError, match=r"layer 7 is out of range for this deployment \(4 layers: 0..3\)"):
        _parse(to_safetensors_bytes(_vector((1, 7))), "v.safetensors")
    with pytest.raises(UploadError, match="layer 4 is out of range"):
        _parse(to_gguf_bytes(_vector((4,))), "v.gguf")
    with pytest.raises(UploadError, match="layer -5 is out of range"):
        _parse(_npy(np.ones(HIDDEN, dtype=np.float32)), "v.npy", layer=-5)
    with pytest.raises(UploadError, match="layer 4 is out of range"):
        parse_probe_upload(
            probe_bytes(LinearProbe(torch.ones(HIDDEN), 0.0)),
            "p.safetensors",
            num_layers=LAYERS,
            width=HIDDEN,
            layer=4,
        )


def test_oversized_upload_is_refused_before_parsing() -> None:
    raw = to_safetensors_bytes(_vector())
    with pytest.raises(UploadError, match=f"{len(raw)} bytes, over the upload limit of 100 bytes"):
        _parse(raw, "v.safetensors", max_bytes=100)
    assert _parse(raw, "v.safetensors", max_bytes=len(raw)).layers == (1, 2)


def test_truncated_files_are_refused() -> None:
    st = to_safetensors_bytes(_vector())
    gguf = to_gguf_bytes(_vector())
    with pytest.raises(UploadError, match="not a valid safetensors file"):
        _parse(st[:-10], "v.safetensors")
    with pytest.raises(UploadError, match="truncated"):
        _parse(gguf[:-10], "v.gguf")
    with pytest.raises(UploadError, match="not a valid GGUF file"):
        _parse(gguf[:20], "v.gguf")
    with pytest.raises(UploadError, match="truncated"):
        _parse(_npy(np.ones(HIDDEN, dtype=np.float32))[:-4], "v.npy", layer=0)
    probe = probe_bytes(LinearProbe(torch.ones(HIDDEN), 0.0))
    with pytest.raises(UploadError, match="truncated"):
        parse_probe_upload(probe[:-3], "p.safetensors", num_layers=LAYERS, width=HIDDEN, layer=0)


def test_unknown_extension_and_empty_file_are_refused() -> None:
    with pytest.raises(UploadError, match=r"'\.txt' is not a steering-vector format"):
        _parse(b"hello", "v.txt")
    with pytest.raises(UploadError, match="is empty"):
        _parse(b"", "v.safetensors")
    with pytest.raises(UploadError, match="not a probe format"):
        parse_probe_upload(b"GGUF", "p.gguf", num_layers=LAYERS, width=HIDDEN, layer=0)


def test_a_probe_file_is_not_a_vector() -> None:
    raw = probe_bytes(LinearProbe(torch.ones(HIDDEN), 0.0))
    with pytest.raises(UploadError, match="probe file"):
        _parse(raw, "p.safetensors")


def test_upload_limit_defaults_to_64_mib_without_settings() -> None:
    from webapp.library.uploads import DEFAULT_MAX_UPLOAD_BYTES, max_upload_bytes

    assert DEFAULT_MAX_UPLOAD_BYTES == 64 * 1024 * 1024
    assert max_upload_bytes() > 0


# ----------------------------------------------------------------------------- datasets
def test_labelled_csv_and_contrastive_jsonl_parse() -> None:
    csv_data = b'text,label\n"Hello, world",happy\n\nI am sad,sad\n'
    parsed = parse_dataset(csv_data, "d.csv")
    assert parsed.kind == LABELLED
    assert parsed.rows == [{"text": "Hello, world", "label": "happy"}, {"text": "I am sad", "label": "sad"}]
    jsonl = "\n".join(json.dumps({"positive": f"p{i}", "negative": f"n{i}"}) for i in range(3)).encode()
    parsed = parse_dataset(jsonl, "pairs.jsonl")
    assert parsed.kind == CONTRASTIVE
    assert parsed.rows[2] == {"positive": "p2", "negative": "n2"}
    assert len(parsed.content_hash) == 64


def test_jsonl_integer_labels_become_strings() -> None:
    parsed = parse_dataset(b'{"text": "a", "label": 1}\n{"text": "b", "label": 0}\n', "d.jsonl")
    assert [row["label"] for row in parsed.rows] == ["1", "0"]


def test_dataset_errors_name_the_line() -> None:
    lines = [json.dumps({"text": f"t{i}", "label": "x"}) for i in range(6)] + [json.dumps({"text": "t"})]
    with pytest.raises(DatasetError, match="line 7: missing 'label'"):
        parse_dataset("\n".join(lines).encode(), "d.jsonl")
    with pytest.raises(DatasetError, match="line 2: not valid JSON"):
        parse_dataset(b'{"text": "a", "label": "b"}\n{oops\n', "d.jsonl")
    with pytest.raises(DatasetError, match="line 3: 'label' is empty"):
        parse_dataset(b"text,label\na,b\nc,\n", "d.csv")
    with pytest.raises(DatasetError, match="line 2: 3 fields, but the header has 2 columns"):
        parse_dataset(b"text,label\na,b,c\n", "d.csv")
    with pytest.raises(DatasetError, match=r"missing column\(s\) \['negative'\]"):
        parse_dataset(b"positive\na\n", "d.csv")
    with pytest.raises(DatasetError, match="unexpected column"):
        parse_dataset(b'{"text": "a", "label": "b", "extra": 1}\n', "d.jsonl")
    with pytest.raises(DatasetError, match="cannot tell the dataset kind"):
        parse_dataset(b"prompt,answer\na,b\n", "d.csv")
    with pytest.raises(DatasetError, match="no rows"):
        parse_dataset(b"text,label\n", "d.csv")
    with pytest.raises(DatasetError, match="line 2: 'negative' must be a string"):
        parse_dataset(b'{"positive": "a", "negative": "b"}\n{"positive": "a", "negative": 3}\n', "d.jsonl")


def test_dataset_must_be_utf8_and_within_limits() -> None:
    with pytest.raises(DatasetError, match="line 2: not UTF-8"):
        parse_dataset("text,label\ncaf\u00e9,x\n".encode("latin-1"), "d.csv")
    assert parse_dataset("\ufefftext,label\ncaf\u00e9,x\n".encode(), "d.csv").rows[0]["text"] == "caf\u00e9"
    from webapp.library import datasets

    long_text = "a" * (datasets.MAX_TEXT_CHARS + 1)
    with pytest.raises(DatasetError, match="line 1: 'text' is 8193 characters, over the limit of 8192"):
        parse_dataset(json.dumps({"text": long_text, "label": "x"}).encode(), "d.jsonl")
    many = "\n".join(json.dumps({"text": "t", "label": "x"}) for _ in range(datasets.MAX_ROWS + 1))
    with pytest.raises(DatasetError, match=f"more than {datasets.MAX_ROWS} rows"):
        parse_dataset(many.encode(), "d.jsonl")
    with pytest.raises(DatasetError, match="over the upload limit of 10 bytes"):
        parse_dataset(b"text,label\na,b\n", "d.csv", max_bytes=10)
    with pytest.raises(DatasetError, match="not a dataset format"):
        parse_dataset(b"x", "d.xlsx")
    with pytest.raises(DatasetError, match="unknown dataset kind"):
        parse_dataset(b"text,label\na,b\n", "d.csv", kind="weird")


def test_requested_kind_must_match_the_columns() -> None:
    with pytest.raises(DatasetError, match="line 1: missing 'positive'"):
        parse_dataset(b'{"text": "a", "label": "b"}\n', "d.jsonl", kind=CONTRASTIVE)
