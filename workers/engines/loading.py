"""Load a deployment's model into an engine (one per model per worker process)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from workers.engines.base import Engine, EngineInfo
from workers.engines.hf import HFEngine, HFEngineCore


@dataclass(frozen=True)
class HostedModel:
    """A model a worker serves: its engine and the tokenizer that frames and decodes its text."""

    name: str
    engine: Engine
    tokenizer: Any

    @property
    def info(self) -> EngineInfo:
        return self.engine.info()

    def shutdown(self) -> None:
        shutdown = getattr(self.engine, "shutdown", None)
        if shutdown is not None:
            shutdown()


def load_hf_model(
    name: str,
    source: str,
    *,
    revision: str = "",
    max_requests: int = 32,
    min_step_time: float = 0.0,
) -> HostedModel:
    """The transformers engine on ``source`` (a local path, or a Hugging Face id where the hub is reachable).

    Args:
        name: the deployment name (resolved tensors must belong to it).
        source: local directory or Hugging Face id.
        revision: model revision for hub ids.
        max_requests: concurrent requests in the shared batch.
        min_step_time: seconds; the minimum duration of a decode step (tests).
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(source, revision=revision or None, dtype=dtype)
    model.to(device)  # type: ignore[arg-type]  # transformers types .to() oddly
    tokenizer = AutoTokenizer.from_pretrained(source, revision=revision or None)
    # Every live request holds at least one KV page: size the cache for max_requests.
    core = HFEngineCore(
        model,
        tokenizer,
        model_name=name,
        max_requests=max_requests,
        num_blocks=max(256, 4 * max_requests),
        min_step_time=min_step_time,
    )
    return HostedModel(name=name, engine=HFEngine(core), tokenizer=tokenizer)
