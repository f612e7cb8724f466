"""Steering vectors: training from contrastive pairs, content hashing, and the file formats."""

from __future__ import annotations

import copy
import hashlib
import io
import json
import os
import pickle
import struct
import tempfile
from collections.abc import Callable
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from safetensors.torch import save as st_save
from torch import Tensor

from interventions.vectors import (
    FORMAT,
    IMPORTED,
    METHODS,
    SteeringVector,
    VectorError,
    from_contrastive,
    from_gguf_bytes,
    from_npy_bytes,
    from_safetensors_bytes,
    mean_difference,
    pca_direction,
    to_gguf_bytes,
    to_safetensors_bytes,
    validate_direction,
)

HIDDEN = 16


def _randn(*shape: int, seed: int) -> Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _vector(**kwargs: object) -> SteeringVector:
    """Layers 1 and 5, width 16 (so float32 tensor data is a multiple of GGUF's 32-byte alignment)."""
    args: dict[str, object] = {
        "directions": {5: _randn(HIDDEN, seed=5), 1: _randn(HIDDEN, seed=1)},
        "method": "pca_center",
        "model": "meta-llama/Llama-3.1-8B-Instruct",
        "metadata": {"dataset": "happy-vs-sad", "n_pairs": "64"},
    }
    args.update(kwargs)
    return SteeringVector(**args)  # type: ignore[arg-type]


def _assert_same(a: SteeringVector, b: SteeringVector) -> None:
    assert a.layers == b.layers
    for layer in a.layers:
        assert b.directions[layer].dtype == torch.float32
        assert torch.equal(a.directions[layer], b.directions[layer])
    assert (a.method, a.model, dict(a.metadata)) == (b.method, b.model, dict(b.metadata))
    assert a == b
    assert a.content_hash() == b.content_hash()


def _planted(*, seed: int, strengths: Tensor | float, n: int = 48) -> tuple[Tensor, Tensor, Tensor]:
    """pos = base + s·d + noise, neg = base - s·d + noise, with a planted unit direction d."""
    d = _randn(HIDDEN, seed=seed)
    d = d / d.norm()
    base = 2 * _randn(n, HIDDEN, seed=seed + 1)
    s = strengths if isinstance(strengths, Tensor) else torch.full((n, 1), strengths)
    pos = base + s * d + 0.1 * _randn(n, HIDDEN, seed=seed + 2)
    neg = base - s * d + 0.1 * _randn(n, HIDDEN, seed=seed + 3)
    return pos, neg, d


def _varying_strengths(n: int = 48) -> Tensor:
    # Strength 3 on average, varying per pair: pca_diff centres the differences (as repeng does),
    # so it sees the planted direction only through this variation.
    return 1.0 + 4.0 * torch.rand(n, 1, generator=torch.Generator().manual_seed(99))


def _read_with_gguf_package(data: bytes, tmp_path: Path) -> gguf.GGUFReader:
    # Only for files we wrote ourselves: GGUFReader is not safe on untrusted bytes (see below).
    path = tmp_path / "v.gguf"
    path.write_bytes(data)
    return gguf.GGUFReader(path)


def _write_gguf(
    tensors: dict[str, np.ndarray], arch: str = "controlvector", **raw_dtypes: gguf.GGMLQuantizationType
) -> bytes:
    """A GGUF written with the gguf package the way repeng's export_gguf writes it."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "v.gguf")
        writer = gguf.GGUFWriter(path, arch)
        writer.add_string(f"{arch}.model_hint", "mistral")
        writer.add_uint32(f"{arch}.layer_count", len(tensors))
        for name, array in tensors.items():
            writer.add_tensor(name, array, raw_dtype=raw_dtypes.get(name.replace(".", "_")))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        return Path(path).read_bytes()


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=True)
    return buf.getvalue()


def _torch_save_bytes() -> bytes:
    buf = io.BytesIO()
    torch.save({"layer.1": torch.ones(HIDDEN)}, buf)
    return buf.getvalue()


# --------------------------------------------------------------------------------------------
# training
# --------------------------------------------------------------------------------------------


def test_mean_difference_equals_hand_computed_value() -> None:
    pos = torch.tensor([[1.0, 2.0, -3.0], [3.0, 4.0, 5.0]])
    neg = torch.tensor([[0.0, 1.0, 1.0], [1.0, 1.0, 1.0], [2.0, 1.0, 4.0]])
    # mean(pos) = [2, 3, 1]; mean(neg) = [1, 1, 2]
    result = mean_difference(pos, neg)
    assert result.dtype == torch.float32
    assert torch.equal(result, torch.tensor([1.0, 2.0, -1.0]))


def test_mean_difference_converts_half_precision_inputs() -> None:
    pos = torch.tensor([[0.5, 1.5]], dtype=torch.bfloat16)
    neg = torch.tensor([[0.25, -1.0]], dtype=torch.float16)
    assert torch.equal(mean_difference(pos, neg), torch.tensor([0.25, 2.5]))


@pytest.mark.parametrize("method", ["pca_diff", "pca_center"])
def test_pca_recovers_planted_direction_with_positive_sign(method: str) -> None:
    pos, neg, d = _planted(seed=10, strengths=_varying_strengths())
    direction = pca_direction(pos, neg, centre=method == "pca_center")
    assert direction.dtype == torch.float32
    assert direction.shape == (HIDDEN,)
    assert abs(float(direction.norm()) - 1.0) < 1e-6
    assert float(direction @ d) > 0.99
    # The sign: positives project higher than negatives, on average and in every pair here.
    assert float((pos @ direction).mean()) > float((neg @ direction).mean())
    assert bool(((pos - neg) @ direction > 0).all())
    # Deterministic: the same inputs give bit-identical output.
    assert torch.equal(direction, pca_direction(pos, neg, centre=method == "pca_center"))


def test_pca_diff_centres_differences_so_a_constant_shift_is_invisible_to_it() -> None:
    # pos = base + 3d + noise, neg = base - 3d + noise: every pair differs by 6d + noise. Centring
    # the differences (repeng's sklearn PCA) removes 6d, leaving only noise for pca_diff; pca_center
    # (uncentred in the differences) and mean_diff still find d.
    pos, neg, d = _planted(seed=20, strengths=3.0)
    assert float(pca_direction(pos, neg, centre=True) @ d) > 0.99
    assert abs(float(pca_direction(pos, neg, centre=False) @ d)) < 0.5
    mean = mean_difference(pos, neg)
    assert float(mean @ d) / float(mean.norm()) > 0.99


@pytest.mark.parametrize("method", ["pca_diff", "pca_center"])
def test_pca_matches_repengs_computation(method: str) -> None:
    pos, neg, _ = _planted(seed=30, strengths=_varying_strengths())
    # repeng.extract.read_representations in substance: interleaved [pos, neg, ...] float32 rows,
    # PCA(n_components=1).fit(train).components_ (which is: centre the columns, take the first right
    # singular vector; done here with numpy, because importing sklearn alone takes seconds), then
    # repeng's sign rule.
    h = np.empty((2 * len(pos), HIDDEN), dtype=np.float32)
    h[::2], h[1::2] = pos.numpy(), neg.numpy()
    if method == "pca_diff":
        train = h[::2] - h[1::2]
    else:
        center = (h[::2] + h[1::2]) / 2
        train = h.copy()
        train[::2] -= center
        train[1::2] -= center
    ref = np.linalg.svd(train - train.mean(axis=0), full_matrices=False)[2][0].astype(np.float32)
    proj = h @ ref / np.linalg.norm(ref)
    smaller = np.mean([proj[i] < proj[i + 1] for i in range(0, len(h), 2)])
    larger = np.mean([proj[i] > proj[i + 1] for i in range(0, len(h), 2)])
    if smaller > larger:
        ref = -ref
    ours = pca_direction(pos, neg, centre=method == "pca_center")
    assert float((ours - torch.from_numpy(ref)).abs().max()) < 1e-5


def test_pca_sign_follows_the_majority_of_pairs_like_repeng() -> None:
    # Three pairs say +x a little, one says -x a lot: the majority (repeng) wins over the mean.
    neg = torch.zeros(4, 2)
    pos = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [-10.0, 0.0]])
    direction = pca_direction(pos, neg, centre=True)
    assert torch.equal(direction, torch.tensor([1.0, 0.0]))


def test_pca_refuses_degenerate_inputs() -> None:
    x = _randn(4, HIDDEN, seed=40)
    with pytest.raises(VectorError, match="identical in every pair"):
        pca_direction(x, x.clone(), centre=True)
    with pytest.raises(VectorError, match="pca_diff needs at least 2 pairs"):
        pca_direction(x[:1], x[:1] + 1, centre=False)
    shift = _randn(HIDDEN, seed=41)
    with pytest.raises(VectorError, match="differences do not vary"):
        pca_direction(x + shift, x, centre=False)
    with pytest.raises(VectorError, match="PCA methods need paired examples: pos has 4 rows but neg has 3"):
        pca_direction(x, x[:3], centre=True)


@pytest.mark.parametrize("method", METHODS)
def test_from_contrastive_builds_one_direction_per_layer(method: str) -> None:
    pos2, neg2, d2 = _planted(seed=50, strengths=_varying_strengths())
    pos7, neg7, d7 = _planted(seed=60, strengths=_varying_strengths())
    pos_acts = {7: pos7, 2: pos2}
    neg_acts = {2: neg2, 7: neg7}
    before = {k: t.clone() for k, t in pos_acts.items()}
    v = from_contrastive(pos_acts, neg_acts, method, model="gpt2", metadata={"dataset": "toy"})
    assert v.layers == (2, 7)
    assert v.hidden_size == HIDDEN
    assert (v.method, v.model, dict(v.metadata)) == (method, "gpt2", {"dataset": "toy"})
    for layer, d in ((2, d2), (7, d7)):
        t = v.directions[layer]
        assert float(t @ d) / float(t.norm()) > 0.99
    # Inputs are left as they were (repeng's pca_center edits its array in place; we must not).
    assert all(torch.equal(before[k], pos_acts[k]) for k in before)


def test_from_contrastive_refuses_bad_inputs_naming_the_layer() -> None:
    pos, neg, _ = _planted(seed=70, strengths=3.0, n=4)
    with pytest.raises(VectorError, match=r"unknown method 'pca'"):
        from_contrastive({1: pos}, {1: neg}, "pca")
    with pytest.raises(VectorError, match=r"only in pos \[3\], only in neg \[4\]"):
        from_contrastive({1: pos, 3: pos}, {1: neg, 4: neg})
    with pytest.raises(VectorError, match="no layers: pos_acts is empty"):
        from_contrastive({}, {})
    bad = pos.clone()
    bad[2, 5] = float("nan")
    with pytest.raises(
        VectorError,
        match=r"layer 3: pos activations contain 1 NaN and 0 Inf values \(first at index \(2, 5\)\)",
    ):
        from_contrastive({1: pos, 3: bad}, {1: neg, 3: neg})
    with pytest.raises(VectorError, match="layer 1: pos and neg have different widths: 16 vs 8"):
        from_contrastive({1: pos}, {1: neg[:, :8]})
    with pytest.raises(VectorError, match="mismatched widths: layer 2 has width 8 but layer 1 has width 16"):
        from_contrastive({1: pos, 2: pos[:, :8]}, {1: neg, 2: neg[:, :8]})
    with pytest.raises(VectorError, match="layer index -1 is out of range"):
        from_contrastive({-1: pos}, {-1: neg})
    with pytest.raises(VectorError, match=r"neg has unsupported dtype torch\.int64"):
        mean_difference(pos, neg.long())


# --------------------------------------------------------------------------------------------
# SteeringVector and content_hash
# --------------------------------------------------------------------------------------------


def test_steering_vector_canonicalises_and_does_not_alias_its_inputs() -> None:
    source = torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64)
    v = SteeringVector({4: source, 0: torch.tensor([0.5, 0.5, 0.5], dtype=torch.bfloat16)})
    assert v.layers == (0, 4)
    assert v.hidden_size == 3
    assert all(t.dtype == torch.float32 and t.is_contiguous() for t in v.directions.values())
    source[0] = 100.0
    assert torch.equal(v.directions[4], torch.tensor([1.0, -2.0, 3.0]))
    with pytest.raises(TypeError):
        v.directions[4] = torch.zeros(3)  # type: ignore[index]
    assert copy.deepcopy(v) == v
    assert pickle.loads(pickle.dumps(v)) == v


def test_content_hash_is_sha256_of_the_documented_layout() -> None:
    v = SteeringVector({3: torch.tensor([1.0, -0.0]), 1: torch.tensor([0.5, 2.0])}, metadata={"k": "v"})
    expected = hashlib.sha256(
        b"steerlab.steering_vector.v1\x00"
        + struct.pack("<QQ", 2, 2)
        + struct.pack("<Q", 1)
        + struct.pack("<2f", 0.5, 2.0)
        + struct.pack("<Q", 3)
        + struct.pack("<2f", 1.0, 0.0)  # -0.0 hashes as 0.0: they compare equal
    ).hexdigest()
    assert v.content_hash() == expected
    assert (
        v.content_hash()
        == SteeringVector({1: torch.tensor([0.5, 2.0]), 3: torch.tensor([1.0, 0.0])}).content_hash()
    )


def test_content_hash_ignores_metadata_and_changes_with_any_value() -> None:
    v = _vector()
    same_tensors = _vector(metadata={"other": "notes"}, method="mean_diff", model=None)
    assert v.content_hash() == same_tensors.content_hash()
    assert v != same_tensors
    nudged = dict(v.directions)
    nudged[5] = nudged[5].clone()
    nudged[5][7] = torch.nextafter(nudged[5][7], torch.tensor(float("inf")))
    assert _vector(directions=nudged).content_hash() != v.content_hash()
    moved = {2 if k == 1 else k: t for k, t in v.directions.items()}
    assert _vector(directions=moved).content_hash() != v.content_hash()


def test_steering_vector_refuses_bad_directions() -> None:
    nan = torch.ones(HIDDEN)
    nan[3] = float("nan")
    inf = torch.ones(HIDDEN)
    inf[9] = float("-inf")
    cases: list[tuple[object, str]] = [
        ({}, "needs at least one layer, got 0"),
        ({2: nan}, r"layer 2: direction contains 1 NaN and 0 Inf values \(first at index 3\)"),
        ({6: inf}, r"layer 6: direction contains 0 NaN and 1 Inf values \(first at index 9\)"),
        (
            {1: torch.ones(4), 3: torch.ones(5)},
            "mismatched widths: layer 3 has width 5 but layer 1 has width 4",
        ),
        ({1: torch.ones(0)}, "layer 1: a direction must not be empty"),
        ({1: torch.ones(2, 4)}, r"layer 1: a direction must be 1-D \[hidden\], got shape \(2, 4\)"),
        ({1: torch.ones(4, dtype=torch.int32)}, "layer 1: direction has unsupported dtype torch.int32"),
        ({1: torch.tensor([1e300, 0.0], dtype=torch.float64)}, "layer 1: direction overflows float32"),
        ({1: [1.0, 2.0]}, "layer 1: direction must be a torch.Tensor, got list"),
        ({True: torch.ones(4)}, "layer indices must be ints"),
        ([torch.ones(4)], "directions must be a mapping"),
    ]
    for directions, message in cases:
        with pytest.raises(VectorError, match=message):
            SteeringVector(directions)  # type: ignore[arg-type]
    with pytest.raises(VectorError, match="unknown method 'magic'"):
        SteeringVector({1: torch.ones(4)}, method="magic")
    with pytest.raises(VectorError, match="model must be a non-empty str or None"):
        SteeringVector({1: torch.ones(4)}, model="")
    with pytest.raises(VectorError, match="metadata key 'method' is reserved"):
        SteeringVector({1: torch.ones(4)}, metadata={"method": "x"})
    with pytest.raises(VectorError, match="direction width 4 does not match hidden size 5"):
        validate_direction(torch.ones(4), 5)


# --------------------------------------------------------------------------------------------
# safetensors
# --------------------------------------------------------------------------------------------


def test_safetensors_round_trip_is_bit_exact_with_metadata() -> None:
    v = _vector()
    data = to_safetensors_bytes(v)
    back = from_safetensors_bytes(data)
    _assert_same(v, back)
    assert from_safetensors_bytes(data).content_hash() == v.content_hash()
    no_model = _vector(model=None, metadata={})
    _assert_same(no_model, from_safetensors_bytes(to_safetensors_bytes(no_model)))


def test_safetensors_layout_and_metadata_keys() -> None:
    from safetensors.torch import load

    data = to_safetensors_bytes(_vector())
    assert sorted(load(data)) == ["layer.1", "layer.5"]
    (header_len,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + header_len])
    assert header["__metadata__"] == {
        "steerlab_format": FORMAT,
        "method": "pca_center",
        "model": "meta-llama/Llama-3.1-8B-Instruct",
        "dataset": "happy-vs-sad",
        "n_pairs": "64",
    }


def test_safetensors_single_foreign_tensor() -> None:
    rows = _randn(3, HIDDEN, seed=80).to(torch.bfloat16)
    v = from_safetensors_bytes(st_save({"control": rows}))
    assert v.layers == (0, 1, 2)
    assert v.method == IMPORTED
    assert all(torch.equal(v.directions[i], rows[i].float()) for i in range(3))
    one = _randn(HIDDEN, seed=81).double()
    v1 = from_safetensors_bytes(st_save({"vector": one}), layer=12)
    assert v1.layers == (12,)
    assert torch.equal(v1.directions[12], one.float())
    with pytest.raises(VectorError, match=r"tensor 'vector' is 1-D \[hidden\]: pass layer="):
        from_safetensors_bytes(st_save({"vector": one}))
    with pytest.raises(VectorError, match=r"is 2-D .* do not pass layer="):
        from_safetensors_bytes(st_save({"control": rows}), layer=1)
    with pytest.raises(VectorError, match=r"unexpected tensor names \['bias', 'weight'\]"):
        from_safetensors_bytes(st_save({"weight": one, "bias": one[:1].clone()}))
    with pytest.raises(VectorError, match="unsupported steerlab_format 'steering_vector/9'"):
        from_safetensors_bytes(st_save({"layer.1": one}, metadata={"steerlab_format": "steering_vector/9"}))


# --------------------------------------------------------------------------------------------
# GGUF
# --------------------------------------------------------------------------------------------


def test_gguf_round_trip_is_bit_exact() -> None:
    v = _vector()
    _assert_same(v, from_gguf_bytes(to_gguf_bytes(v)))
    no_model = _vector(model=None, metadata={})
    _assert_same(no_model, from_gguf_bytes(to_gguf_bytes(no_model)))
    assert to_gguf_bytes(v) == to_gguf_bytes(v)


def test_gguf_file_follows_the_llama_cpp_layer_convention(tmp_path: Path) -> None:
    # Our layer L (output of 0-based block L) is tensor direction.L: llama.cpp adds tensors[k]
    # (= direction.k) after block k, and repeng writes direction.{layer} for model.layers[layer].
    reader = _read_with_gguf_package(to_gguf_bytes(_vector()), tmp_path)
    assert [t.name for t in reader.tensors] == ["direction.1", "direction.5"]
    assert all(t.tensor_type == gguf.GGMLQuantizationType.F32 for t in reader.tensors)
    assert [tuple(int(x) for x in t.shape) for t in reader.tensors] == [(HIDDEN,), (HIDDEN,)]
    assert reader.fields["general.architecture"].contents() == "controlvector"
    assert reader.fields["controlvector.model_hint"].contents() == "meta-llama/Llama-3.1-8B-Instruct"
    assert reader.fields["controlvector.layer_count"].types == [gguf.GGUFValueType.UINT32]
    assert reader.fields["controlvector.layer_count"].contents() == 2
    assert torch.equal(torch.from_numpy(np.array(reader.tensors[1].data)), _vector().directions[5])


def test_gguf_layer_zero_needs_an_explicit_opt_in(tmp_path: Path) -> None:
    v = _vector(directions={0: torch.ones(HIDDEN), 3: torch.zeros(HIDDEN)})
    with pytest.raises(VectorError, match=r"llama\.cpp rejects direction\.0"):
        to_gguf_bytes(v)
    data = to_gguf_bytes(v, allow_layer_zero=True)
    assert [t.name for t in _read_with_gguf_package(data, tmp_path).tensors] == ["direction.0", "direction.3"]
    _assert_same(v, from_gguf_bytes(data))


def test_gguf_reads_repeng_style_files_and_converts_half_precision() -> None:
    d3 = _randn(HIDDEN, seed=90)
    d4 = _randn(HIDDEN, seed=91)
    bf16_bits = d4.to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    data = _write_gguf(
        {"direction.3": d3.numpy().astype(np.float16), "direction.4": bf16_bits},
        direction_4=gguf.GGMLQuantizationType.BF16,
    )
    v = from_gguf_bytes(data)
    assert v.layers == (3, 4)
    assert (v.method, v.model, dict(v.metadata)) == (IMPORTED, "mistral", {})
    assert torch.equal(v.directions[3], d3.half().float())
    assert torch.equal(v.directions[4], d4.to(torch.bfloat16).float())


def test_gguf_refuses_files_that_are_not_control_vectors() -> None:
    ones = np.ones(HIDDEN, dtype=np.float32)
    with pytest.raises(VectorError, match="GGUF architecture is 'llama', not 'controlvector'"):
        from_gguf_bytes(_write_gguf({"direction.1": ones}, arch="llama"))
    with pytest.raises(VectorError, match=r"unexpected GGUF tensor 'blk\.0\.attn_q\.weight'"):
        from_gguf_bytes(_write_gguf({"blk.0.attn_q.weight": ones}))
    with pytest.raises(VectorError, match=r"GGUF tensor 'direction\.2' must be 1-D \[hidden\]"):
        from_gguf_bytes(_write_gguf({"direction.2": np.ones((2, HIDDEN), dtype=np.float32)}))
    with pytest.raises(VectorError, match=r"GGUF tensor 'direction\.2' has unsupported ggml type 26"):
        from_gguf_bytes(_write_gguf({"direction.2": np.ones(HIDDEN, dtype=np.int32)}))
    with pytest.raises(VectorError, match="the GGUF file holds no direction tensors"):
        from_gguf_bytes(_write_gguf({}))


def test_gguf_crafted_array_length_fails_fast() -> None:
    # One metadata array claiming 2**62 uint8 items and no data: gguf.GGUFReader loops on this
    # forever (its reads past the end return empty arrays); ours is one bounds check.
    crafted = (
        b"GGUF"
        + struct.pack("<IQQ", 3, 0, 1)
        + struct.pack("<Q", 1)
        + b"x"
        + struct.pack("<IIQ", 9, 0, 2**62)
    )
    with pytest.raises(VectorError, match=r"truncated while reading value of 'x' at byte 49"):
        from_gguf_bytes(crafted)


# --------------------------------------------------------------------------------------------
# .npy
# --------------------------------------------------------------------------------------------


def test_npy_import_1d_with_layer_and_2d() -> None:
    one = _randn(HIDDEN, seed=100).numpy()
    v = from_npy_bytes(_npy(one), layer=9)
    assert v.layers == (9,)
    assert v.method == IMPORTED
    assert torch.equal(v.directions[9], torch.from_numpy(one))
    rows = _randn(2, HIDDEN, seed=101).numpy().astype(">f8")  # big-endian float64 on purpose
    v2 = from_npy_bytes(_npy(rows))
    assert v2.layers == (0, 1)
    assert torch.equal(v2.directions[1], torch.from_numpy(rows[1].astype(np.float32)))
    with pytest.raises(VectorError, match=r"\.npy array is 1-D \[hidden\]: pass layer="):
        from_npy_bytes(_npy(one))
    with pytest.raises(VectorError, match=r"\.npy array has unsupported dtype int64"):
        from_npy_bytes(_npy(np.arange(4)), layer=1)


def test_npy_refuses_pickled_object_arrays() -> None:
    data = _npy(np.array([{"a": 1}, None], dtype=object))
    with pytest.raises(ValueError, match="allow_pickle=False"):
        np.load(io.BytesIO(data), allow_pickle=False)  # what numpy itself says
    with pytest.raises(VectorError, match=r"refusing a \.npy array of Python objects.*allow_pickle=False"):
        from_npy_bytes(data, layer=1)


# --------------------------------------------------------------------------------------------
# bad bytes, for every reader
# --------------------------------------------------------------------------------------------

Reader = Callable[[bytes], SteeringVector]
READERS: list[tuple[str, Reader]] = [
    ("safetensors", lambda b: from_safetensors_bytes(b, layer=None)),
    ("gguf", from_gguf_bytes),
    ("npy", lambda b: from_npy_bytes(b, layer=1)),
]


def test_every_truncation_of_a_safetensors_file_is_refused() -> None:
    data = to_safetensors_bytes(_vector())
    for cut in range(len(data)):
        with pytest.raises(VectorError, match="not a valid safetensors file"):
            from_safetensors_bytes(data[:cut])


def test_every_truncation_of_a_gguf_file_is_refused() -> None:
    data = to_gguf_bytes(_vector())
    for cut in range(len(data)):
        with pytest.raises(VectorError, match="GGUF"):
            from_gguf_bytes(data[:cut])
    with pytest.raises(VectorError, match=r"truncated: tensor 'direction\.5' ends at byte"):
        from_gguf_bytes(data[:-1])
    with pytest.raises(VectorError, match="truncated while reading"):
        from_gguf_bytes(data[:40])


def test_truncated_npy_is_refused() -> None:
    data = _npy(np.ones(HIDDEN, dtype=np.float32))
    with pytest.raises(VectorError, match=r"not a valid \.npy file: .*\(truncated\)"):
        from_npy_bytes(data[:-1], layer=1)
    with pytest.raises(VectorError, match=r"not a valid \.npy file: .*\(trailing data\)"):
        from_npy_bytes(data + b"\x00", layer=1)


@pytest.mark.parametrize(("kind", "reader"), READERS, ids=[kind for kind, _ in READERS])
@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (pickle.dumps({"layer.1": np.ones(HIDDEN)}), "it looks like a Python pickle"),
        (_torch_save_bytes(), "it looks like a zip archive, e.g. torch.save"),
        (os.urandom(256), "not a valid"),
        (b"", "it is empty"),
    ],
    ids=["pickle", "torch.save", "random", "empty"],
)
def test_foreign_bytes_are_refused_by_every_reader(
    kind: str, reader: Reader, payload: bytes, message: str
) -> None:
    with pytest.raises(VectorError, match=message):
        reader(payload)


def test_max_bytes_and_non_bytes_are_refused() -> None:
    data = to_safetensors_bytes(_vector())
    assert from_safetensors_bytes(data, max_bytes=len(data)) == _vector()
    with pytest.raises(
        VectorError, match=f"safetensors file is {len(data)} bytes, over the limit of 100 bytes"
    ):
        from_safetensors_bytes(data, max_bytes=100)
    with pytest.raises(VectorError, match=r"GGUF file is \d+ bytes, over the limit of 10 bytes"):
        from_gguf_bytes(to_gguf_bytes(_vector()), max_bytes=10)
    with pytest.raises(VectorError, match=r"\.npy file is \d+ bytes, over the limit of 10 bytes"):
        from_npy_bytes(_npy(np.ones(HIDDEN, dtype=np.float32)), layer=1, max_bytes=10)
    with pytest.raises(VectorError, match="expected the GGUF file as bytes, got str"):
        from_gguf_bytes("GGUF")  # type: ignore[arg-type]


def test_nan_inside_a_file_is_refused_naming_the_layer() -> None:
    bad = torch.ones(HIDDEN)
    bad[4] = float("inf")
    with pytest.raises(
        VectorError, match=r"layer 2: direction contains 0 NaN and 1 Inf values \(first at index 4\)"
    ):
        from_safetensors_bytes(st_save({"layer.2": bad, "layer.3": torch.ones(HIDDEN)}))
    with pytest.raises(
        VectorError, match=r"layer 7: direction contains 16 NaN and 0 Inf values \(first at index 0\)"
    ):
        from_gguf_bytes(_write_gguf({"direction.7": np.full(HIDDEN, np.nan, dtype=np.float32)}))
    with pytest.raises(VectorError, match="mismatched widths: layer 3 has width 8 but layer 2 has width 16"):
        from_safetensors_bytes(st_save({"layer.2": torch.ones(HIDDEN), "layer.3": torch.ones(8)}))
