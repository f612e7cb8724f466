"""The Engine protocol and the request/event types every engine speaks (docs/design.md §5).

An engine serves many requests at once from one shared model. A request carries its prompt
tokens, sampling parameters and its *compiled* recipe (``interventions.compiler.compile_recipe``
checks the recipe against the model before anything reaches the engine). The engine answers with
a stream of events per request: reads for every processed position (prompt tokens and generated
ones, the last generated token included), tokens as they are sampled, acknowledgements of live
adjustments with the step they took effect at, and exactly one ``Finished`` event.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol

from torch import Tensor

from interventions.compiler import EMPTY_RECIPE, CompiledRecipe, Site
from interventions.spec import Adjustment


class RequestError(ValueError):
    """A request the engine refuses before any forward pass (bad recipe, positions, sizes, ids)."""


MAX_TOP_LOGPROBS = 20  # as OpenAI


@dataclass(frozen=True)
class SamplingParams:
    """How tokens are chosen. ``temperature == 0`` is greedy.

    Sampling draws from a counter-based generator keyed by ``(seed, position)``, so a request's
    tokens do not depend on which other requests share its batch.
    """

    max_new_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    stop_token_ids: tuple[int, ...] = ()
    top_logprobs: int = 0  # the most likely tokens to report at each step, with their logprobs

    def __post_init__(self) -> None:
        if not 1 <= self.max_new_tokens <= 1 << 20:
            raise RequestError("max_new_tokens must be between 1 and 1048576")
        if not (0.0 <= self.temperature <= 100.0):
            raise RequestError("temperature must be between 0 and 100")
        if not (0.0 < self.top_p <= 1.0):
            raise RequestError("top_p must be in (0, 1]")
        if not 0 <= self.seed < 1 << 31:
            raise RequestError("seed must be in [0, 2**31)")
        if not 0 <= self.top_logprobs <= MAX_TOP_LOGPROBS:
            raise RequestError(f"top_logprobs must be between 0 and {MAX_TOP_LOGPROBS}")


Reduce = Literal["last", "mean", "none"]
MAX_COLLECT_SITES = 256


@dataclass(frozen=True)
class Collect:
    """Collect the prompt's activations instead of generating (building vectors, training and
    evaluating probes). The forward is unsteered; the request ends after one ``CollectedEvent``.

    Args:
        sites: ``(layer, point)`` pairs, 1 to ``MAX_COLLECT_SITES`` of them.
        reduce: ``last`` (the last prompt token's row), ``mean`` (over the prompt's tokens) or
            ``none`` (every row, ``[prompt, width]``).
    """

    sites: tuple[Site, ...]
    reduce: Reduce = "last"


@dataclass(frozen=True)
class GenerationRequest:
    """One generation.

    Args:
        request_id: unique among the engine's live requests.
        prompt_tokens: the prompt, tokenized (chat template already applied).
        recipe: the compiled recipe (``EMPTY_RECIPE`` for none).
        sampling: sampling parameters.
        overrides: adjustments applied before the first step (per-turn slider positions).
        scheduled: ``(generated_token_index, adjustment)`` pairs applied when that many tokens
            have been generated: a run's adjustment log, replayed.
        forced_tokens: if given, these tokens are emitted instead of sampled ones (teacher forcing;
            the reads and logits are still those of the forced sequence).
        record_logits: attach the full next-token logits to each token event (tests, analysis).
        collect: if given, no generation: the prompt's activations at its sites (see ``Collect``).
    """

    request_id: str
    prompt_tokens: tuple[int, ...]
    recipe: CompiledRecipe = EMPTY_RECIPE
    sampling: SamplingParams = field(default_factory=SamplingParams)
    overrides: tuple[Adjustment, ...] = ()
    scheduled: tuple[tuple[int, Adjustment], ...] = ()
    forced_tokens: tuple[int, ...] | None = None
    record_logits: bool = False
    collect: Collect | None = None


@dataclass(frozen=True)
class ReadEvent:
    """Reads at one token position: probe scores and logit-lens top-k, by intervention index."""

    request_id: str
    position: int
    probes: Mapping[int, float]
    lens: Mapping[int, tuple[tuple[int, ...], tuple[float, ...]]]  # index -> (token ids, probs)


@dataclass(frozen=True)
class TokenEvent:
    """A generated token; ``index`` counts generated tokens from 0, ``position`` is absolute."""

    request_id: str
    index: int
    position: int
    token_id: int
    logprob: float
    logits: tuple[float, ...] | None = None
    top: tuple[tuple[int, float], ...] = ()  # (token id, logprob), most likely first: top_logprobs


@dataclass(frozen=True)
class AdjustedEvent:
    """A live adjustment took effect from generated token ``index`` on (the engine's step)."""

    request_id: str
    index: int
    adjustment: Adjustment


@dataclass(frozen=True)
class CollectedEvent:
    """A collect request's activations by site, float32 on the CPU: ``[width]`` for ``last`` and
    ``mean``, ``[prompt, width]`` for ``none``."""

    request_id: str
    activations: Mapping[Site, Tensor]


FinishReason = Literal["stop", "length", "aborted", "error"]


@dataclass(frozen=True)
class FinishedEvent:
    request_id: str
    reason: FinishReason
    tokens: tuple[int, ...]
    error: str | None = None


Event = ReadEvent | TokenEvent | AdjustedEvent | CollectedEvent | FinishedEvent


@dataclass(frozen=True)
class EngineInfo:
    model: str
    engine: str
    num_layers: int
    hidden_size: int
    mlp_size: int
    vocab_size: int
    capabilities: tuple[str, ...]
    version: str = ""  # the engine library's version (transformers or vllm), recorded with each run


class Engine(Protocol):
    """What the worker host needs from an engine (the HF and vLLM engines implement it)."""

    def info(self) -> EngineInfo: ...

    def submit(self, request: GenerationRequest) -> AsyncIterator[Event]:
        """Start a request; iterate its events until (and including) its ``FinishedEvent``."""
        ...

    def adjust(self, request_id: str, adjustment: Adjustment) -> None:
        """Change a live request's scale/enabled flag from its next step on."""
        ...

    def abort(self, request_id: str) -> None:
        """Stop a live request after the current step; it finishes with reason ``aborted``."""
        ...

    def finish(self, request_id: str, after: int) -> None:
        """End a live request with reason ``stop`` once its generated token ``after`` is read (its
        reads come as for any last token): the caller found a stop sequence there. Tokens sampled
        past ``after`` before this took effect are in the events and ``FinishedEvent.tokens``;
        the caller drops them."""
        ...
