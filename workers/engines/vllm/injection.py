"""Intervention sites compiled into vLLM's decoder layers: torch custom ops placed before the build.

vLLM compiles the model once (Dynamo + Inductor; CUDA graphs on a GPU) and never re-checks guards,
so forward hooks registered afterwards silently never run (``docs/vllm-notes.md``). Instead,
``patch_model_classes`` replaces the forward of the supported decoder-layer and MLP classes *before*
a model is built, with versions that call two custom ops at every site of every layer:

* ``steerlab::resid(hidden, residual, engine, layer, point)`` at ``resid_pre`` / ``resid_post``.
  vLLM carries the residual stream as ``(hidden, residual)`` with ``resid = hidden + residual`` (the
  fused add-norm adds them later); the op reads their sum and, on the rows a lane changed, writes
  ``(new_resid, 0)`` so the split stays consistent and untouched rows keep their exact values.
* ``steerlab::act(x, engine, layer, point)`` at ``attn_out``, ``mlp_act``, ``mlp_out`` (and at
  layer 0's ``resid_pre``, where vLLM has no residual yet).

The ops mutate their inputs in place and return nothing: the compiled graph keeps them as opaque
calls (Inductor does not trace into them), and when no request has work at a site the call returns at
once without touching memory. What they do is decided per step by the engine's runtime
(``runtime.Runtime``), found by ``engine`` (an integer key baked into the graph).

Only layers built while ``building(key)`` is active are instrumented; other vLLM models in the process
keep the original code path.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol

import torch
from torch import Tensor

POINTS = ("resid_pre", "attn_out", "mlp_act", "mlp_out", "resid_post")
RESID_PRE, ATTN_OUT, MLP_ACT, MLP_OUT, RESID_POST = range(5)

# The decoder-layer and MLP classes whose forward is replaced: families whose layers share Llama's
# structure (input norm -> attention -> post-attention fused add-norm -> gate/up MLP).
SUPPORTED = (
    ("vllm.model_executor.models.llama", "LlamaDecoderLayer", "LlamaMLP"),
    ("vllm.model_executor.models.qwen2", "Qwen2DecoderLayer", "Qwen2MLP"),
)


class SiteHandler(Protocol):
    def resid(self, hidden: Tensor, residual: Tensor, layer: int, point: int) -> None: ...

    def act(self, x: Tensor, layer: int, point: int) -> None: ...


_HANDLERS: dict[int, SiteHandler] = {}
_lock = threading.Lock()
_building: list[int] = []
_next_key = [1]
_patched: dict[type, Callable[..., Any]] = {}


def new_engine_key() -> int:
    with _lock:
        key = _next_key[0]
        _next_key[0] += 1
        return key


def register(key: int, handler: SiteHandler) -> None:
    _HANDLERS[key] = handler


def unregister(key: int) -> None:
    _HANDLERS.pop(key, None)


@torch.library.custom_op("steerlab::resid", mutates_args=("hidden", "residual"))
def resid_site(hidden: Tensor, residual: Tensor, engine: int, layer: int, point: int) -> None:
    handler = _HANDLERS.get(engine)
    if handler is not None:
        handler.resid(hidden, residual, layer, point)


@resid_site.register_fake
def _(hidden: Tensor, residual: Tensor, engine: int, layer: int, point: int) -> None:
    return None


@torch.library.custom_op("steerlab::act", mutates_args=("x",))
def act_site(x: Tensor, engine: int, layer: int, point: int) -> None:
    handler = _HANDLERS.get(engine)
    if handler is not None:
        handler.act(x, layer, point)


@act_site.register_fake
def _(x: Tensor, engine: int, layer: int, point: int) -> None:
    return None


@contextmanager
def building(key: int) -> Iterator[None]:
    """Layers constructed inside this block call the ops with engine key ``key``."""
    patch_model_classes()
    with _lock:
        _building.append(key)
    try:
        yield
    finally:
        with _lock:
            _building.remove(key)


def _layer_index(args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    from vllm.model_executor.models.utils import extract_layer_index

    prefix = kwargs.get("prefix")
    if prefix is None:
        prefix = next(a for a in args if isinstance(a, str))
    return extract_layer_index(prefix)


def _decoder_forward(
    self: Any, positions: Tensor, hidden_states: Tensor, residual: Tensor | None, **kwargs: Any
) -> tuple[Tensor, Tensor]:
    site = getattr(self, "_steerlab", None)
    if site is None:
        return _original(self)(self, positions, hidden_states, residual, **kwargs)
    key, layer = site
    # Llama's decoder layer, with a site call at each point. `key` and `layer` are Python ints: the
    # compiled graph holds them as constants.
    if residual is None:
        torch.ops.steerlab.act(hidden_states, key, layer, RESID_PRE)
        residual = hidden_states
        hidden_states = self.input_layernorm(hidden_states)
    else:
        torch.ops.steerlab.resid(hidden_states, residual, key, layer, RESID_PRE)
        hidden_states, residual = self.input_layernorm(hidden_states, residual)
    hidden_states = self.self_attn(positions=positions, hidden_states=hidden_states)
    torch.ops.steerlab.act(hidden_states, key, layer, ATTN_OUT)
    hidden_states, residual = self.post_attention_layernorm(hidden_states, residual)
    hidden_states = self.mlp(hidden_states)
    torch.ops.steerlab.act(hidden_states, key, layer, MLP_OUT)
    torch.ops.steerlab.resid(hidden_states, residual, key, layer, RESID_POST)
    return hidden_states, residual


def _mlp_forward(self: Any, x: Tensor) -> Tensor:
    site = getattr(self, "_steerlab", None)
    if site is None:
        return _original(self)(self, x)
    key, layer = site
    x, _ = self.gate_up_proj(x)
    x = self.act_fn(x)
    torch.ops.steerlab.act(x, key, layer, MLP_ACT)
    x, _ = self.down_proj(x)
    return x


def _original(obj: Any) -> Callable[..., Any]:
    # The replaced forward of the nearest patched class (subclasses such as Mistral's inherit it).
    return _patched[next(c for c in type(obj).__mro__ if c in _patched)]


def _wrap_init(cls: type) -> None:
    original = cls.__init__  # type: ignore[misc]

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        if not _building:
            return
        site = (_building[-1], _layer_index(args, kwargs))
        self._steerlab = site
        self.mlp._steerlab = site

    cls.__init__ = __init__  # type: ignore[misc]


def patch_model_classes() -> None:
    """Replace the supported classes' forwards (idempotent; before any model is built)."""
    import importlib

    with _lock:
        for module_name, layer_name, mlp_name in SUPPORTED:
            module = importlib.import_module(module_name)
            layer_cls, mlp_cls = getattr(module, layer_name), getattr(module, mlp_name)
            if layer_cls in _patched:
                continue
            _patched[layer_cls] = layer_cls.forward
            _patched[mlp_cls] = mlp_cls.forward
            layer_cls.forward = _decoder_forward
            mlp_cls.forward = _mlp_forward
            _wrap_init(layer_cls)


def check_instrumented(model: torch.nn.Module, key: int, num_layers: int) -> None:
    """Raise unless every decoder layer of ``model`` runs the site ops for engine ``key``.

    A family whose layers override ``forward`` (or are not built from a supported class) would
    silently skip every intervention; this turns that into an error at load time.
    """
    seen = set()
    for name, module in model.named_modules():
        site = getattr(module, "_steerlab", None)
        if site is None or site[0] != key or not hasattr(module, "self_attn"):
            continue
        if type(module).forward is not _decoder_forward or type(module.mlp).forward is not _mlp_forward:
            raise RuntimeError(
                f"{name} ({type(module).__name__}) overrides forward: interventions cannot run"
            )
        seen.add(site[1])
    if seen != set(range(num_layers)):
        families = ", ".join(layer for _, layer, _ in SUPPORTED)
        raise RuntimeError(
            f"the vLLM engine instruments only models built from {families}; "
            f"this model has instrumented layers {sorted(seen)} of {num_layers}"
        )
