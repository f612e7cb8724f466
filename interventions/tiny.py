"""A tiny random-weight Llama with a byte-level BPE tokenizer, built offline and deterministically.

Tests, the engines' CI and the demo fallback need a real ``LlamaForCausalLM`` directory that
``AutoModelForCausalLM`` / ``AutoTokenizer`` (and vLLM) load like any hub checkpoint, without network
access. ``build_tiny`` trains a byte-level BPE on the small corpus embedded below, creates the model
with explicitly seeded weights and saves both with ``save_pretrained``. The same ``TinySpec`` always
gives byte-identical ``model.safetensors`` and ``tokenizer.json``.

Example:
    ```python
    from interventions.tiny import BENCH, build_tiny, load_tiny

    path = build_tiny()  # ~/.cache/steerlab/tiny/llama-<key>, built once
    model, tokenizer = load_tiny()
    ```

CLI: ``python -m interventions.tiny [--bench]`` builds the model and prints its directory.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)

__all__ = [
    "BENCH",
    "BOS_TOKEN",
    "CHAT_TEMPLATE",
    "DEFAULT",
    "EOS_TOKEN",
    "FAMILIES",
    "IM_START_TOKEN",
    "INIT_SCALE",
    "PAD_TOKEN",
    "SPECIAL_TOKENS",
    "TinySpec",
    "build_tiny",
    "cache_root",
    "load_tiny",
    "main",
]

# Bump whenever the recipe (corpus, tokenizer settings, init) changes: it is part of the cache key,
# so a changed recipe never silently reuses a directory built by an older one.
RECIPE_VERSION = 2

# Std of the normal init of every matrix is INIT_SCALE / sqrt(hidden_size): 0.2 for DEFAULT, 0.05 for
# BENCH. The HF default (0.02) leaves a 64-wide model's logits within ~0.2 of each other, so greedy
# decoding sits on near-ties and loops on a few tokens; 0.2 spreads them (logit std ~1.6, top-2 gaps
# rarely below 1e-3) and greedy text varies. A fixed 0.2 would blow the 1024-wide BENCH residual stream
# up to ~4e3 after one layer (each projection multiplies by std * sqrt(fan_in)); scaling by the width
# keeps logit spreads alike across sizes and activations small enough for bf16/fp16.
INIT_SCALE = 1.6
# The projections that write into the residual stream start smaller (as GPT-2 scales them): with the
# full std the MLP alone pushes the residual norm from ~1.5 to ~35 in layer 0, and absolute fp32
# round-off (which differs with the batch's shape in the BLAS kernels) grows with it. Small writes
# keep activations O(1), so logits and probe reads of one request agree across batch mixes to ~1e-6.
RESIDUAL_WRITE_SCALE = 0.25
# fp32 matmuls on the CPU round differently with the batch's shape (MKL picks other kernels), so one
# request's logits move by ~2e-6 *relative* when its neighbours change. docs/design.md §4 compares logits
# within 1e-5 absolute: a smaller unembedding (logit std ~0.5 instead of ~1.6) keeps that round-off
# at ~4e-6 (measured over mixed batches), while greedy text stays varied and top-2 gaps rarely fall
# below 1e-3.
UNEMBED_SCALE = 0.3

BOS_TOKEN = "<|endoftext|>"
IM_START_TOKEN = "<|im_start|>"
EOS_TOKEN = "<|im_end|>"
PAD_TOKEN = "<|pad|>"
# Order fixes the ids: 0 bos, 1 im_start, 2 eos (im_end), 3 pad.
SPECIAL_TOKENS: tuple[str, ...] = (BOS_TOKEN, IM_START_TOKEN, EOS_TOKEN, PAD_TOKEN)

CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- endif %}"
)

# Training text for the BPE: varied prose, dialogue, numbers, punctuation and a little code, so
# that common English pieces get merged. Any text still round-trips: the tokenizer is byte-level.
_CORPUS = """\
The quick brown fox jumps over the lazy dog. A journey of a thousand miles begins with a single step.
It was a bright cold day in April, and the clocks were striking thirteen. The old man sat by the window
and watched the rain fall on the garden, where the roses had bloomed early that year.

Language models predict the next token from the tokens that came before it. Each layer reads the
residual stream, adds what its attention and its feed-forward network computed, and passes it on.
Steering adds a vector to that stream; a probe reads a direction out of it; an ablation removes one.
If you change the activations at layer twelve, the model may answer in a different tone or topic.

"Where are you going?" she asked. "To the market," he said, "and then to the library, if it is open."
"Don't forget the bread!" she called after him. He laughed, waved, and walked down the hill.
Q: What is the capital of France? A: Paris. Q: How many legs does a spider have? A: Eight.
Q: What is two plus three? A: Five. Q: Who wrote Hamlet? A: William Shakespeare.

Recipe for a simple soup: chop two onions, three carrots and a stalk of celery. Warm some olive oil
in a large pot, add the vegetables and cook them slowly for ten minutes. Pour in one litre of stock,
add salt, pepper and a bay leaf, and let it simmer for half an hour. Serve hot with fresh bread.

The weather today will be mostly sunny, with a few clouds in the afternoon and a light breeze from
the west. Temperatures will reach 21 degrees, falling to 12 overnight. Tomorrow: rain, 15 mm expected.
In 1969, people walked on the Moon for the first time. The distance to the Moon is about 384,400 km.
Water boils at 100 degrees Celsius at sea level; it freezes at 0. Light travels 299,792 km per second.

Dear team, thank you for your hard work this quarter. Sales grew by 12% and we shipped three new
features. Please send your notes before Friday, 5 p.m., so we can plan the next sprint. Best regards,
Anna. P.S. The meeting on Monday moves to room 4B.

def greet(name: str) -> str:
    return f"Hello, {name}!"

for i in range(10):
    if i % 2 == 0:
        print(i, greet("world"))

{"user": "alice", "id": 42, "tags": ["admin", "editor"], "active": true}
SELECT name, email FROM users WHERE age >= 18 ORDER BY name;

I think that we should try again. Maybe it will work this time, maybe it will not; either way we will
learn something. Why do birds sing in the morning? Because they are happy, or because they are
calling to each other across the trees. Nobody knows for sure, but it is a lovely sound.

Once upon a time there was a small village at the edge of a great forest. The people there were kind
and worked hard. Every autumn they gathered apples, pears and nuts, and every winter they told stories
by the fire. One night a stranger knocked at the door of the baker's house and asked for shelter.

The cat slept on the warm stone. The dog barked at the postman. The children ran to school, their bags
bouncing on their backs. Teachers opened the windows; the day smelled of cut grass and coffee.
Yes, no, maybe. Always, never, sometimes. Here, there, everywhere. Good morning! Good night! Thanks.
Please, sorry, excuse me, you're welcome. I am, you are, he is, she is, it is, we are, they are.
I was, you were, they had been, we will be, she would have, it could be, they might have been.

Mathematics: 3 + 4 = 7, 12 * 12 = 144, 2^10 = 1024, the square root of 81 is 9, pi is about 3.14159.
History, science, art and music: each tells us something about the world and about ourselves.
"""


# The decoder families a tiny model can be built in (docs/design.md §5: the engines instrument
# each by structure), with what their configs need beyond the common sizes.
FAMILIES: dict[str, dict[str, object]] = {
    "llama": {},
    "mistral": {"sliding_window": None},
    "qwen2": {},
    "qwen3": {},
    # No attention softcapping: transformers runs continuous batching on SDPA, which ignores it (vLLM
    # applies it), so the two engines differ on a Gemma 2 that sets it (docs/vllm-notes.md).
    "gemma2": {
        "query_pre_attn_scalar": 32,
        "sliding_window": 16,
        "final_logit_softcapping": 30.0,
        "attn_logit_softcapping": None,
    },
    "gemma3_text": {"query_pre_attn_scalar": 32, "sliding_window": 16},
    "phi3": {},
    "olmo2": {},
    "gpt2": {},
    "gpt_neox": {"use_parallel_residual": True, "rotary_pct": 0.5},
}
# Names of the projections that write into the residual stream, in every family.
_RESIDUAL_WRITERS = (
    "o_proj.weight",
    "down_proj.weight",
    "c_proj.weight",
    "dense.weight",
    "dense_4h_to_h.weight",
)


@dataclass(frozen=True)
class TinySpec:
    """Shape and seed of a tiny Llama.

    Args:
        hidden_size: Width of the residual stream; ``hidden_size // num_heads`` must be 32 (vLLM's CPU
            attention rejects head_dim 16).
        num_layers: Number of decoder layers.
        num_heads: Attention heads.
        num_kv_heads: Key/value heads (grouped-query attention when smaller than ``num_heads``).
        intermediate_size: Width of the MLP (``mlp_act``).
        vocab_size: Embedding size and target size of the BPE vocabulary (special tokens included); the
            embedded corpus yields at most 581 tokens, so a larger value only adds unused rows.
        max_position_embeddings: Longest sequence the model accepts.
        seed: Seed of the weight init.
        family: ``config.model_type`` of the architecture (``FAMILIES``): the same sizes in another
            decoder family, for the per-family engine tests.
    """

    hidden_size: int = 64
    num_layers: int = 4
    num_heads: int = 2
    num_kv_heads: int = 1
    intermediate_size: int = 128
    vocab_size: int = 512
    max_position_embeddings: int = 2048
    seed: int = 0
    family: str = "llama"

    def __post_init__(self) -> None:
        if self.num_heads <= 0 or self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not a multiple of num_heads {self.num_heads}"
            )
        if self.num_kv_heads <= 0 or self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"num_heads {self.num_heads} is not a multiple of num_kv_heads {self.num_kv_heads}"
            )
        if self.family not in FAMILIES:
            raise ValueError(f"unknown family {self.family!r}; known: {', '.join(FAMILIES)}")
        if self.vocab_size <= 256 + len(SPECIAL_TOKENS):
            raise ValueError(
                f"vocab_size {self.vocab_size} must exceed the 256 byte tokens + {len(SPECIAL_TOKENS)} special tokens"
            )

    @property
    def head_dim(self) -> int:
        """Width of one attention head."""
        return self.hidden_size // self.num_heads

    @property
    def init_std(self) -> float:
        """Std of the normal init of every weight matrix (see ``INIT_SCALE``)."""
        return INIT_SCALE / math.sqrt(self.hidden_size)

    def key(self) -> str:
        """Short stable hash of the fields and of the build recipe, used in the cache path."""
        fields = dataclasses.asdict(self)
        if self.family == "llama":
            del fields["family"]  # the keys of Llama directories built before families existed
        payload = json.dumps({"recipe": RECIPE_VERSION, **fields}, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(payload.encode()).hexdigest()[:12]


DEFAULT = TinySpec()
# For benchmarks: big enough that per-op overhead is not noise; head_dim 1024 / 32 = 32.
BENCH = TinySpec(hidden_size=1024, num_layers=8, num_heads=32, num_kv_heads=8, intermediate_size=2816)


def cache_root() -> Path:
    """Root of Steerlab's caches: ``$STEERLAB_CACHE_DIR``, else ``~/.cache/steerlab``."""
    env = os.environ.get("STEERLAB_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "steerlab"


def _model_dir(spec: TinySpec, root: Path | None) -> Path:
    return (root if root is not None else cache_root()) / "tiny" / f"{spec.family}-{spec.key()}"


def _train_tokenizer(vocab_size: int) -> PreTrainedTokenizerFast:
    """Train the byte-level BPE on the embedded corpus and wrap it for transformers.

    Args:
        vocab_size: Final vocabulary size, the 256 byte symbols and the special tokens included.
    """
    tokenizer = Tokenizer(models.BPE())
    # No normalizer and no prefix space: encode/decode must round-trip any string byte for byte.
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=list(SPECIAL_TOKENS),
        # The whole byte alphabet, so that unseen characters still encode (as bytes).
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_CORPUS.splitlines(keepends=True), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        additional_special_tokens=[IM_START_TOKEN],
        # transformers' clean-up rewrites " ." to "." on decode, which breaks the round trip.
        clean_up_tokenization_spaces=False,
        chat_template=CHAT_TEMPLATE,
    )


def _config(spec: TinySpec, bos_id: int, eos_id: int, pad_id: int) -> PretrainedConfig:
    special = {
        "bos_token_id": bos_id,
        "eos_token_id": eos_id,
        "pad_token_id": pad_id,
        "tie_word_embeddings": False,
    }
    if spec.family == "gpt2":
        return AutoConfig.for_model(
            "gpt2",
            vocab_size=spec.vocab_size,
            n_embd=spec.hidden_size,
            n_inner=spec.intermediate_size,
            n_layer=spec.num_layers,
            n_head=spec.num_heads,
            n_positions=spec.max_position_embeddings,
            initializer_range=spec.init_std,
            **special,
        )
    # GPT-NeoX has neither grouped-query attention nor a head_dim setting.
    heads = (
        {}
        if spec.family == "gpt_neox"
        else {"num_key_value_heads": spec.num_kv_heads, "head_dim": spec.head_dim}
    )
    return AutoConfig.for_model(
        spec.family,
        vocab_size=spec.vocab_size,
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        **heads,
        max_position_embeddings=spec.max_position_embeddings,
        initializer_range=spec.init_std,
        **FAMILIES[spec.family],
        **special,
    )


def _build_model(spec: TinySpec, bos_id: int, eos_id: int, pad_id: int) -> PreTrainedModel:
    """Create the model and give it seeded weights.

    Args:
        spec: Shape, family and seed.
        bos_id: Begin-of-sequence token id.
        eos_id: End-of-sequence token id (``<|im_end|>``, so chats stop after the assistant's turn).
        pad_id: Padding token id.
    """
    config = _config(spec, bos_id, eos_id, pad_id)
    config.tie_word_embeddings = spec.family.startswith("gemma")  # some configs drop the keyword
    # Gemma's norms scale by (1 + weight): their neutral weight is 0.
    neutral_norm = 0.0 if spec.family.startswith("gemma") else 1.0
    # fork_rng: seeding must not disturb the caller's global RNG state (tests, samplers).
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        model = AutoModelForCausalLM.from_config(config)
        # Overwrite every parameter ourselves, in name order, from one generator: the bytes then
        # depend only on the spec, never on how a transformers release happens to order its init.
        generator = torch.Generator().manual_seed(spec.seed)
        with torch.no_grad():
            for name, param in sorted(model.named_parameters()):
                if name.endswith(".bias"):
                    param.zero_()
                elif param.ndim == 1:  # a norm's weight
                    param.fill_(neutral_norm)
                else:
                    std = spec.init_std * (RESIDUAL_WRITE_SCALE if name.endswith(_RESIDUAL_WRITERS) else 1.0)
                    std *= UNEMBED_SCALE if name in ("lm_head.weight", "embed_out.weight") else 1.0
                    param.normal_(0.0, std, generator=generator)
    model.generation_config = GenerationConfig(bos_token_id=bos_id, eos_token_id=eos_id, pad_token_id=pad_id)
    return model.eval()


def build_tiny(spec: TinySpec = DEFAULT, root: Path | None = None) -> Path:
    """Build the tiny model directory unless it exists; return its path.

    The build goes to a private temporary directory that is renamed into place at the end, so a
    concurrent builder or a crash never leaves a half-written directory under the final name.

    Args:
        spec: Shape and seed of the model.
        root: Cache root; defaults to ``cache_root()``.
    """
    final = _model_dir(spec, root)
    if final.is_dir():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.tmp-{os.getpid()}-{uuid.uuid4().hex}"
    try:
        tokenizer = _train_tokenizer(spec.vocab_size)
        vocab = tokenizer.get_vocab()
        bos_id, _, eos_id, pad_id = (vocab[token] for token in SPECIAL_TOKENS)
        tokenizer.model_max_length = spec.max_position_embeddings
        model = _build_model(spec, bos_id=bos_id, eos_id=eos_id, pad_id=pad_id)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        for file in tmp.iterdir():
            # safetensors writes 0600; a shared cache (vLLM workers, other users) must be readable.
            file.chmod(0o644)
        try:
            os.rename(tmp, final)
        except OSError:
            # Another builder renamed its (identical) directory first: keep theirs.
            if not final.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def load_tiny(
    spec: TinySpec = DEFAULT, dtype: torch.dtype = torch.float32
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Build (if needed) and load the tiny model in eval mode, with its tokenizer.

    Args:
        spec: Shape and seed of the model.
        dtype: Parameter dtype to load the weights in.
    """
    path = build_tiny(spec)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    tokenizer = AutoTokenizer.from_pretrained(path)
    return model.eval(), tokenizer


def main(argv: list[str] | None = None) -> None:
    """Build the default (or benchmark) tiny model and print its directory.

    Args:
        argv: Command-line arguments; ``sys.argv[1:]`` when None.
    """
    parser = argparse.ArgumentParser(prog="python -m interventions.tiny", description="Build the tiny model.")
    parser.add_argument("--bench", action="store_true", help="build the benchmark-sized model (hidden 1024)")
    parser.add_argument("--root", type=Path, default=None, help="cache root (default: cache_root())")
    args = parser.parse_args(argv)
    print(build_tiny(BENCH if args.bench else DEFAULT, root=args.root))


if __name__ == "__main__":
    main()
