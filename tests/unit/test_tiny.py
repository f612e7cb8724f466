"""The tiny offline model: deterministic bytes, loadable by the Auto classes, a usable tokenizer."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM, PreTrainedTokenizerBase

from interventions.sites import adapter_for
from interventions.tiny import (
    BENCH,
    DEFAULT,
    EOS_TOKEN,
    SPECIAL_TOKENS,
    TinySpec,
    build_tiny,
    cache_root,
    load_tiny,
    main,
)

# Small enough to build in well under a second; head_dim 64 / 2 = 32.
SMALL = TinySpec(num_layers=2, intermediate_size=64, vocab_size=300, max_position_embeddings=256, seed=7)
FILES = [
    "chat_template.jinja",
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
]


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    # A 64-wide model gains nothing from intra-op threads; contended OpenMP threads slow it down ~100x.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def default_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny(DEFAULT, root=tmp_path_factory.mktemp("tiny-cache"))


@pytest.fixture(scope="module")
def tokenizer(default_dir: Path) -> PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(default_dir)


def test_build_is_deterministic(tmp_path: Path) -> None:
    rng_before = torch.get_rng_state()
    first = build_tiny(SMALL, root=tmp_path / "a")
    second = build_tiny(SMALL, root=tmp_path / "b")
    # Seeding is scoped: the caller's global RNG stream is untouched.
    assert torch.equal(torch.get_rng_state(), rng_before)
    assert first.name == second.name == f"llama-{SMALL.key()}"
    assert sorted(p.name for p in first.iterdir()) == FILES
    for name in FILES:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    other_seed = build_tiny(TinySpec(**{**SMALL.__dict__, "seed": 8}), root=tmp_path / "a")
    assert (other_seed / "model.safetensors").read_bytes() != (first / "model.safetensors").read_bytes()
    assert (other_seed / "tokenizer.json").read_bytes() == (first / "tokenizer.json").read_bytes()


def test_build_is_idempotent_and_leaves_no_temporaries(tmp_path: Path) -> None:
    path = build_tiny(SMALL, root=tmp_path)
    mtime = (path / "model.safetensors").stat().st_mtime_ns
    assert build_tiny(SMALL, root=tmp_path) == path
    assert (path / "model.safetensors").stat().st_mtime_ns == mtime
    assert [p.name for p in path.parent.iterdir()] == [path.name]
    assert oct((path / "model.safetensors").stat().st_mode & 0o777) == "0o644"


def test_concurrent_builders_agree(tmp_path: Path) -> None:
    results: list[Path] = []
    errors: list[BaseException] = []

    def build() -> None:
        try:
            results.append(build_tiny(SMALL, root=tmp_path))
        except BaseException as exc:  # surfaced below; a thread would swallow it
            errors.append(exc)

    threads = [threading.Thread(target=build) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert results[0] == results[1]
    assert [p.name for p in results[0].parent.iterdir()] == [results[0].name]
    assert sorted(p.name for p in results[0].iterdir()) == FILES


def test_key_is_stable_and_distinguishes_specs() -> None:
    assert DEFAULT.key() == TinySpec().key()
    assert len(DEFAULT.key()) == 12
    assert int(DEFAULT.key(), 16) >= 0
    assert len({DEFAULT.key(), BENCH.key(), SMALL.key(), TinySpec(seed=1).key()}) == 4


def test_specs_have_head_dim_32() -> None:
    assert DEFAULT.head_dim == 32
    assert BENCH.head_dim == 32
    assert (DEFAULT.init_std, BENCH.init_std) == (0.2, 0.05)


def test_invalid_specs_are_rejected() -> None:
    with pytest.raises(ValueError, match="not a multiple of num_heads"):
        TinySpec(hidden_size=65)
    with pytest.raises(ValueError, match="not a multiple of num_kv_heads"):
        TinySpec(num_heads=2, num_kv_heads=3)
    with pytest.raises(ValueError, match="vocab_size 200 must exceed"):
        TinySpec(vocab_size=200)


def test_cache_root_honours_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("STEERLAB_CACHE_DIR", str(tmp_path))
    assert cache_root() == tmp_path
    monkeypatch.delenv("STEERLAB_CACHE_DIR")
    assert cache_root() == Path.home() / ".cache" / "steerlab"


def test_loads_with_auto_classes(default_dir: Path) -> None:
    model = AutoModelForCausalLM.from_pretrained(default_dir)
    assert isinstance(model, LlamaForCausalLM)
    config = model.config
    assert (config.hidden_size, config.num_hidden_layers, config.vocab_size) == (64, 4, 512)
    assert (config.num_attention_heads, config.num_key_value_heads, config.head_dim) == (2, 1, 32)
    assert model.model.layers[0].self_attn.q_proj.out_features == 64
    assert config.tie_word_embeddings is False
    assert not torch.equal(model.lm_head.weight, model.model.embed_tokens.weight)
    assert (config.bos_token_id, config.eos_token_id, config.pad_token_id) == (0, 2, 3)
    generation = model.generation_config
    assert (generation.bos_token_id, generation.eos_token_id, generation.pad_token_id) == (0, 2, 3)
    assert adapter_for(model).shape().mlp_size == 128


def test_tokenizer_special_tokens(tokenizer: PreTrainedTokenizerBase) -> None:
    tok = tokenizer
    assert [tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS] == [0, 1, 2, 3]
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (0, 2, 3)
    assert tok.eos_token == EOS_TOKEN
    assert len(tok) == 512
    # The corpus taught it some English: common words are single tokens, text needs fewer tokens than bytes.
    assert tok.tokenize(" the time and") == ["Ġthe", "Ġtime", "Ġand"]
    text = "the quick brown fox jumps over the lazy dog"
    assert len(tok(text, add_special_tokens=False)["input_ids"]) < len(text.encode())


@given(st.text(max_size=200))
def test_tokenizer_round_trips_any_text(tokenizer: PreTrainedTokenizerBase, text: str) -> None:
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert all(0 <= i < 512 for i in ids)
    assert tokenizer.decode(ids) == text


@pytest.mark.parametrize(
    "text",
    [
        "",
        "Hello, world! It's  spaced   out .",
        "naïve café, 中文, 🤗🚀, \u200b zero-width, \t tabs\nand\r\nnewlines",
        "<|im_start|>user\nliteral special tokens<|im_end|>",
    ],
)
def test_tokenizer_round_trips_examples(tokenizer: PreTrainedTokenizerBase, text: str) -> None:
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert tokenizer.decode(ids) == text


def test_chat_template(tokenizer: PreTrainedTokenizerBase) -> None:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi!"}]
    rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert rendered == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n"
    )
    assert rendered.endswith("<|im_start|>assistant\n")
    closed = tokenizer.apply_chat_template(messages, tokenize=False)
    assert closed == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n"
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    ids = ids["input_ids"] if not isinstance(ids, list) else ids
    assert ids[0] == 1  # <|im_start|> is one special token, not its characters
    assert ids.count(2) == 2


def test_greedy_generation_is_not_degenerate(default_dir: Path, tokenizer: PreTrainedTokenizerBase) -> None:
    model = AutoModelForCausalLM.from_pretrained(default_dir).eval()
    prompt = tokenizer("Once upon a time", return_tensors="pt")
    with torch.no_grad():
        out = model.generate(
            **prompt,
            max_new_tokens=20,
            min_new_tokens=20,
            do_sample=False,
            output_scores=True,
            return_dict_in_generate=True,
        )
    new = out.sequences[0, prompt["input_ids"].shape[1] :].tolist()
    assert len(new) == 20
    assert len(set(new)) >= 8
    # No near-ties at the greedy choice: the top-2 gap is well above the 1e-4 isolation threshold.
    gaps = [float(s[0].topk(2).values.diff().abs()) for s in out.scores]
    assert min(gaps) > 1e-3


def test_load_tiny_uses_the_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("STEERLAB_CACHE_DIR", str(tmp_path))
    model, tok = load_tiny(SMALL, dtype=torch.bfloat16)
    assert (tmp_path / "tiny" / f"llama-{SMALL.key()}" / "model.safetensors").is_file()
    assert not model.training
    assert model.dtype == torch.bfloat16
    assert model.config.num_hidden_layers == 2
    assert tok.eos_token_id == 2


def test_cli_builds_and_prints_the_path(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("STEERLAB_CACHE_DIR", str(tmp_path))
    main([])
    printed = capsys.readouterr().out.strip()
    assert printed == str(tmp_path / "tiny" / f"llama-{DEFAULT.key()}")
    assert os.path.isfile(Path(printed) / "config.json")
