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


def load_vllm_model(
    name: str,
    source: str,
    *,
    revision: str = "",
    max_requests: int = 32,
    min_step_time: float = 0.0,
    kv_cache_bytes: int | None = None,
    enforce_eager: bool = False,
) -> HostedModel:
    """The vLLM engine on ``source`` (compiled; float32 on the CPU, the checkpoint's dtype on a GPU).

    Args:
        kv_cache_bytes: KV cache size; default 256 MiB on the CPU (vLLM's own default would claim
            92% of RAM) and vLLM's sizing from free GPU memory on a GPU
            (``STEERLAB_VLLM_KV_CACHE_BYTES`` sets it for a deployment's workers).
    """
    import torch
    from transformers import AutoTokenizer

    from workers.engines.threaded import ThreadedEngine
    from workers.engines.vllm.core import VLLMEngineCore

    gpu = torch.cuda.is_available()
    tokenizer = AutoTokenizer.from_pretrained(source, revision=revision or None)
    core = VLLMEngineCore(
        source,
        tokenizer,
        model_name=name,
        revision=revision,
        max_requests=max_requests,
        kv_cache_bytes=kv_cache_bytes or (None if gpu else 256 << 20),
        enforce_eager=enforce_eager,
        # vLLM's "auto" turns a float32 checkpoint into bfloat16, which the CPU runs slowly and
        # which no longer matches the transformers engine.
        dtype="auto" if gpu else "float32",
        min_step_time=min_step_time,
    )
    return HostedModel(name=name, engine=ThreadedEngine(core, name="vllm-engine"), tokenizer=tokenizer)


ENGINES = {"hf": load_hf_model, "vllm": load_vllm_model}


def load_model(engine: str, name: str, source: str, **kwargs: Any) -> HostedModel:
    """Load ``source`` into the deployment's engine (``hf`` or ``vllm``); same keyword arguments."""
    loader = ENGINES.get(engine)
    if loader is None:
        raise ValueError(f"unknown engine {engine!r}: use {' or '.join(ENGINES)}")
    return loader(name, source, **kwargs)
