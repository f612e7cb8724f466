"""Model adapters: each family's sites carry exactly the activations docs/design.md §3 names."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import cache

import pytest
import torch
from torch import Tensor, nn
from transformers import (
    AutoModelForCausalLM,
    BertConfig,
    BertModel,
    Gemma2Config,
    Gemma3TextConfig,
    GemmaConfig,
    GPT2Config,
    GPTNeoXConfig,
    LlamaConfig,
    MistralConfig,
    Olmo2Config,
    Phi3Config,
    PretrainedConfig,
    Qwen2Config,
    Qwen3Config,
)

from interventions.sites import (
    POINTS,
    SUPPORTED_MODEL_TYPES,
    Gemma2Adapter,
    ModelShape,
    SiteRef,
    UnsupportedArchitecture,
    adapter_for,
    install_hook,
    shape_from_config,
)

NUM_LAYERS = 3
HIDDEN = 64
MLP = 96
VOCAB = 128
SOFTCAP = 2.0  # small, so Gemma2's final softcapping visibly bends the tiny model's logits

_COMMON = {
    "hidden_size": HIDDEN,
    "num_hidden_layers": NUM_LAYERS,
    "vocab_size": VOCAB,
    "initializer_range": 0.2,
}
_LLAMA_LIKE = {
    **_COMMON,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "head_dim": 32,
    "intermediate_size": MLP,
}

CONFIGS: dict[str, Callable[[], PretrainedConfig]] = {
    "llama": lambda: LlamaConfig(**_LLAMA_LIKE),
    "mistral": lambda: MistralConfig(**_LLAMA_LIKE),
    "qwen2": lambda: Qwen2Config(**_LLAMA_LIKE),
    "qwen3": lambda: Qwen3Config(**_LLAMA_LIKE),
    "gemma": lambda: GemmaConfig(**_LLAMA_LIKE),
    "gemma2": lambda: Gemma2Config(**_LLAMA_LIKE, final_logit_softcapping=SOFTCAP),
    "gemma3_text": lambda: Gemma3TextConfig(**_LLAMA_LIKE),
    "phi3": lambda: Phi3Config(**_LLAMA_LIKE, pad_token_id=0),
    "olmo2": lambda: Olmo2Config(**_LLAMA_LIKE),
    "gpt2": lambda: GPT2Config(
        n_embd=HIDDEN,
        n_layer=NUM_LAYERS,
        n_head=2,
        vocab_size=VOCAB,
        initializer_range=0.2,
        bos_token_id=0,
        eos_token_id=0,
    ),
    "gpt_neox": lambda: GPTNeoXConfig(**_COMMON, num_attention_heads=2, intermediate_size=MLP),
    "gpt_neox_sequential": lambda: GPTNeoXConfig(
        **_COMMON, num_attention_heads=2, intermediate_size=MLP, use_parallel_residual=False
    ),
}
FAMILIES = tuple(CONFIGS)
EXPECTED_MLP = {name: 4 * HIDDEN if name == "gpt2" else MLP for name in FAMILIES}
INPUT_IDS = torch.tensor([[5, 17, 3, 99, 42, 7, 64, 1]])


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    # Forwards of 64-wide models are far too small to gain from intra-op threads, and with another
    # process on the 2 cores OpenMP's spinning makes each one ~100x slower (0.4 s instead of 4 ms).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@cache
def tiny(name: str) -> nn.Module:
    """A tiny random causal LM of the family, fp32, eval mode (built once per session)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(CONFIGS[name](), dtype=torch.float32)
    return model.eval()


@cache
def baseline_logits(name: str) -> Tensor:
    with torch.no_grad():
        logits: Tensor = tiny(name)(INPUT_IDS).logits
    return logits


def run_logits(model: nn.Module) -> Tensor:
    with torch.no_grad():
        logits: Tensor = model(INPUT_IDS).logits
    return logits


def recorder(store: list[Tensor]) -> Callable[[Tensor], None]:
    def record(t: Tensor) -> None:
        store.append(t.detach().clone())

    return record


def test_all_families_are_supported() -> None:
    assert SUPPORTED_MODEL_TYPES == (
        "llama",
        "mistral",
        "qwen2",
        "qwen3",
        "gemma",
        "gemma2",
        "gemma3_text",
        "phi3",
        "olmo2",
        "gpt2",
        "gpt_neox",
    )
    assert POINTS == ("resid_pre", "resid_post", "attn_out", "mlp_out", "mlp_act")


@pytest.mark.parametrize("name", FAMILIES)
def test_shape_from_config_matches_adapter(name: str) -> None:
    config = CONFIGS[name]()
    expected = ModelShape(
        model_type=config.model_type,
        num_layers=NUM_LAYERS,
        hidden_size=HIDDEN,
        mlp_size=EXPECTED_MLP[name],
        vocab_size=VOCAB,
    )
    assert shape_from_config(config) == expected
    adapter = adapter_for(tiny(name))
    assert adapter.shape() == expected
    assert len(adapter.layers()) == NUM_LAYERS
    assert [adapter.width(point) for point in POINTS] == [HIDDEN, HIDDEN, HIDDEN, HIDDEN, EXPECTED_MLP[name]]


@pytest.mark.parametrize("name", FAMILIES)
def test_residual_points_see_hidden_states(name: str) -> None:
    model = tiny(name)
    adapter = adapter_for(model)
    pre: list[list[Tensor]] = [[] for _ in range(NUM_LAYERS)]
    post: list[list[Tensor]] = [[] for _ in range(NUM_LAYERS)]
    final_norm_in: list[Tensor] = []
    handles = [
        install_hook(adapter.locate(layer, "resid_pre"), recorder(pre[layer])) for layer in range(NUM_LAYERS)
    ]
    handles += [
        install_hook(adapter.locate(layer, "resid_post"), recorder(post[layer]))
        for layer in range(NUM_LAYERS)
    ]
    handles.append(
        adapter.final_norm().register_forward_pre_hook(lambda _m, args: final_norm_in.append(args[0].clone()))
    )
    try:
        with torch.no_grad():
            out = model(INPUT_IDS, output_hidden_states=True)
    finally:
        for handle in handles:
            handle.remove()
    hidden_states = out.hidden_states
    assert len(hidden_states) == NUM_LAYERS + 1
    for layer in range(NUM_LAYERS):
        assert len(pre[layer]) == 1 and len(post[layer]) == 1
        assert pre[layer][0].shape == (1, INPUT_IDS.shape[1], HIDDEN)
        assert torch.equal(pre[layer][0], hidden_states[layer])
    for layer in range(NUM_LAYERS - 1):
        assert torch.equal(post[layer][0], hidden_states[layer + 1])
    # hidden_states[-1] is after the final norm; resid_post of the last layer is what enters it.
    assert torch.equal(post[-1][0], final_norm_in[0])
    assert not torch.equal(post[-1][0], hidden_states[-1])


@pytest.mark.parametrize("point", POINTS)
@pytest.mark.parametrize("name", FAMILIES)
def test_write_points_change_logits_and_zero_is_a_noop(name: str, point: str) -> None:
    model = tiny(name)
    adapter = adapter_for(model)
    baseline = baseline_logits(name)
    for layer in (0, -1):
        site = adapter.locate(layer, point)
        seen: list[int] = []

        def add_zero(t: Tensor, site: SiteRef = site, seen: list[int] = seen) -> Tensor:
            seen.append(t.shape[-1])
            return t + torch.zeros(site.width)

        handle = install_hook(site, add_zero)
        try:
            assert torch.equal(run_logits(model), baseline)
        finally:
            handle.remove()
        assert seen == [adapter.width(point)]

        # Not a constant: LayerNorm families would subtract a uniform shift away again.
        direction = torch.linspace(-1.0, 1.0, site.width)

        def add_direction(t: Tensor, direction: Tensor = direction) -> Tensor:
            return t + direction

        handle = install_hook(site, add_direction)
        try:
            steered = run_logits(model)
        finally:
            handle.remove()
        assert (steered - baseline).abs().max().item() > 1e-3
        # Removing the handle restores the model exactly.
        assert torch.equal(run_logits(model), baseline)


@pytest.mark.parametrize("name", FAMILIES)
def test_in_place_write_returning_none_takes_effect(name: str) -> None:
    model = tiny(name)
    site = adapter_for(model).locate(1, "mlp_act")

    def zero_neurons(t: Tensor) -> None:
        t[..., :8] = 0.0

    handle = install_hook(site, zero_neurons)
    try:
        ablated = run_logits(model)
    finally:
        handle.remove()
    assert not torch.equal(ablated, baseline_logits(name))


@pytest.mark.parametrize("name", FAMILIES)
def test_sites_resolve_to_the_family_modules(name: str) -> None:
    adapter = adapter_for(tiny(name))
    block = adapter.layers()[1]
    attn_name, down_name = {
        "gpt2": ("attn", "c_proj"),
        "gpt_neox": ("attention", "dense_4h_to_h"),
        "gpt_neox_sequential": ("attention", "dense_4h_to_h"),
    }.get(name, ("self_attn", "down_proj"))
    # Families with post-norms add the normed branch outputs: those are attn_out / mlp_out.
    post_norms = name in ("gemma2", "gemma3_text", "olmo2")
    attn_out = block.post_attention_layernorm if post_norms else getattr(block, attn_name)
    expected = {
        "resid_pre": (block, "input"),
        "resid_post": (block, "output"),
        "attn_out": (attn_out, "output"),
        "mlp_out": (block.post_feedforward_layernorm if post_norms else block.mlp, "output"),
        "mlp_act": (getattr(block.mlp, down_name), "input"),
    }
    for point, (module, hook) in expected.items():
        site = adapter.locate(1, point)
        assert site.module is module
        assert (site.layer, site.point, site.hook, site.width) == (1, point, hook, adapter.width(point))


@pytest.mark.parametrize("name", FAMILIES)
def test_logit_lens_of_last_resid_post_equals_model_logits(name: str) -> None:
    model = tiny(name)
    adapter = adapter_for(model)
    captured: list[Tensor] = []
    handle = install_hook(adapter.locate(-1, "resid_post"), recorder(captured))
    try:
        logits = run_logits(model)
    finally:
        handle.remove()
    with torch.no_grad():
        lens = adapter.logit_lens(captured[0])
    assert lens.shape == (1, INPUT_IDS.shape[1], VOCAB)
    torch.testing.assert_close(lens, logits, atol=1e-5, rtol=0.0)
    with torch.no_grad():
        lens_rows = adapter.logit_lens(captured[0][0, 2:4])
    torch.testing.assert_close(lens_rows, logits[0, 2:4], atol=1e-5, rtol=0.0)


def test_gemma2_logit_lens_applies_final_softcapping() -> None:
    model = tiny("gemma2")
    adapter = adapter_for(model)
    assert isinstance(adapter, Gemma2Adapter)
    h = torch.randn(4, HIDDEN, generator=torch.Generator().manual_seed(1)) * 10
    with torch.no_grad():
        raw = adapter.unembedding()(adapter.final_norm()(h))
        lens = adapter.logit_lens(h)
    assert raw.abs().max().item() > SOFTCAP
    assert lens.abs().max().item() < SOFTCAP
    torch.testing.assert_close(lens, torch.tanh(raw / SOFTCAP) * SOFTCAP, atol=0.0, rtol=0.0)


def test_logit_lens_needs_an_lm_head() -> None:
    base = tiny("llama").model
    adapter = adapter_for(base)
    assert adapter.locate(0, "resid_pre").module is base.layers[0]
    with pytest.raises(ValueError, match="LlamaModel has no LM head"):
        adapter.logit_lens(torch.zeros(1, HIDDEN))


@pytest.mark.parametrize("name", ["llama", "gpt2", "gpt_neox"])
def test_negative_layers_count_from_the_end(name: str) -> None:
    adapter = adapter_for(tiny(name))
    assert [adapter.normalize_layer(i) for i in (-3, -2, -1, 0, 1, 2)] == [0, 1, 2, 0, 1, 2]
    last = adapter.locate(-1, "resid_post")
    assert last.layer == 2
    assert last.module is adapter.layers()[2]
    assert adapter.locate(-3, "mlp_act").layer == 0


@pytest.mark.parametrize("name", ["llama", "gpt2"])
def test_out_of_range_layers_are_rejected_with_a_clear_message(name: str) -> None:
    adapter = adapter_for(tiny(name))
    with pytest.raises(ValueError) as excinfo:
        adapter.normalize_layer(9)
    assert str(excinfo.value) == "layer 9 out of range for a 3-layer model (valid: -3..2)"
    with pytest.raises(ValueError) as excinfo:
        adapter.locate(-4, "resid_pre")
    assert str(excinfo.value) == "layer -4 out of range for a 3-layer model (valid: -3..2)"
    with pytest.raises(ValueError, match="out of range"):
        adapter.locate(3, "mlp_act")
    with pytest.raises(TypeError):
        adapter.normalize_layer(True)


def test_unknown_point_is_rejected() -> None:
    adapter = adapter_for(tiny("llama"))
    with pytest.raises(ValueError) as excinfo:
        adapter.locate(0, "resid_mid")
    assert str(excinfo.value) == (
        "unknown point 'resid_mid'; valid points: resid_pre, resid_post, attn_out, mlp_out, mlp_act"
    )
    with pytest.raises(ValueError, match="unknown point"):
        adapter.width("logits")


_SUPPORTED_TEXT = "supported model types: llama, mistral, qwen2, qwen3, gemma, gemma2, gemma3_text, phi3, olmo2, gpt2, gpt_neox"


def test_bert_is_an_unsupported_architecture() -> None:
    config = BertConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, vocab_size=64
    )
    with pytest.raises(UnsupportedArchitecture) as excinfo:
        adapter_for(BertModel(config))
    assert str(excinfo.value) == f"unsupported architecture: model_type 'bert'; {_SUPPORTED_TEXT}"
    assert excinfo.value.model_type == "bert"
    assert isinstance(excinfo.value, ValueError)


class _MambaConfig(PretrainedConfig):
    model_type = "mamba"


def test_unknown_model_types_are_unsupported() -> None:
    class Fake(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.config = _MambaConfig()

    with pytest.raises(UnsupportedArchitecture, match="model_type 'mamba'") as excinfo:
        adapter_for(Fake())
    assert _SUPPORTED_TEXT in str(excinfo.value)
    with pytest.raises(UnsupportedArchitecture, match="model_type 'mamba'"):
        shape_from_config(_MambaConfig())
    with pytest.raises(UnsupportedArchitecture) as excinfo:
        adapter_for(nn.Linear(2, 2))
    assert (
        str(excinfo.value)
        == f"unsupported architecture: a model without config.model_type; {_SUPPORTED_TEXT}"
    )


class _KeywordLayer(nn.Module):
    """Stands in for a decoder layer called as ``layer(hidden_states=..., ...)``; returns a tuple."""

    def forward(self, hidden_states: Tensor, scale: float = 1.0) -> tuple[Tensor, None]:
        return hidden_states * scale, None


def test_input_hook_handles_keyword_hidden_states() -> None:
    layer = _KeywordLayer()
    site = SiteRef(layer=0, point="resid_pre", module=layer, hook="input", width=4)
    x = torch.arange(8.0).reshape(2, 4)
    seen: list[Tensor] = []

    def plus_one(t: Tensor) -> Tensor:
        seen.append(t)
        return t + 1

    handle = install_hook(site, plus_one)
    try:
        by_keyword, _ = layer(hidden_states=x, scale=2.0)
        positional, _ = layer(x, scale=2.0)
    finally:
        handle.remove()
    assert seen[0] is x and seen[1] is x
    assert torch.equal(by_keyword, (x + 1) * 2)
    assert torch.equal(positional, (x + 1) * 2)
    assert torch.equal(layer(hidden_states=x)[0], x)


def test_output_hook_replaces_only_the_first_tuple_element() -> None:
    layer = _KeywordLayer()
    site = SiteRef(layer=0, point="resid_post", module=layer, hook="output", width=4)
    x = torch.ones(2, 4)
    handle = install_hook(site, lambda t: t * 3)
    try:
        out = layer(x)
    finally:
        handle.remove()
    assert isinstance(out, tuple) and len(out) == 2
    assert torch.equal(out[0], x * 3)
    assert out[1] is None


def test_replacements_must_keep_the_shape() -> None:
    model = tiny("llama")
    site = adapter_for(model).locate(0, "mlp_out")
    handle = install_hook(site, lambda t: t[..., :10])
    try:
        with pytest.raises(
            ValueError, match=r"hook at mlp_out of layer 0 returned shape \(1, 8, 10\), expected"
        ):
            run_logits(model)
    finally:
        handle.remove()
