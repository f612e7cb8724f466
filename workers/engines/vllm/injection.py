"""Intervention sites traced into vLLM's graph: module hooks on the decoder layers, found by structure.

vLLM compiles the model once (Dynamo + Inductor; CUDA graphs on a GPU) and then drops Dynamo's
guards, so Python state read in the forward is frozen at the first trace and hooks added afterwards
never run (``docs/vllm-notes.md``). So the sites are put in place when the model is created, before
its first forward, and they hold only tensor code: ``ops.apply_site`` over the tables of a
``BatchPlan`` allocated there at its maximum sizes. Dynamo traces the hooks into the model's graph;
between steps the runtime changes only the tables' contents.

The plan's sizes and the points compiled in travel in vLLM's ``additional_config`` (``engine_config``),
which vLLM hashes into its compile-cache key together with a hash of this code.

Sites, for decoder layer ``L`` (found by structure, not by class):

* ``resid_pre`` / ``resid_post``: the layer's input / output. vLLM carries the residual stream as
  ``(hidden, residual)`` with ``resid = hidden + residual`` (a fused add-norm adds them next); the
  hooks read their sum and pass on ``(new resid, 0)``, which the add-norm turns back into exactly
  the same values for rows no lane changed (``x + 0 == x``).
* ``attn_out`` / ``mlp_out``: what the attention / MLP branch adds to the residual stream: the
  module's output, or the output of its post-norm where the layer has one (Gemma 2/3, OLMo 2).
* ``mlp_act``: the input of the MLP's down projection.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

import interventions.plan as plan_module
from interventions import ops
from interventions.compiler import Site
from interventions.plan import BatchPlan, Capacity
from interventions.sites import shape_from_config

CONFIG_KEY = "steerlab"
_ATTENTION = ("self_attn", "attn", "attention")
_MLP = ("mlp", "feed_forward")
_DOWN = ("down_proj", "c_proj", "dense_4h_to_h", "fc2")


def _code_hash() -> str:
    # The compiled graph depends on this code and the ops it traces: part of vLLM's cache key.
    h = hashlib.sha256()
    for module in (ops, plan_module):
        h.update(Path(module.__file__ or "").read_bytes())
    h.update(Path(__file__).read_bytes())
    return h.hexdigest()[:16]


def engine_config(capacity: Capacity) -> dict[str, Any]:
    """The ``additional_config`` entry that makes vLLM build a model with sites (msgpack/JSON-safe)."""
    fields = dataclasses.asdict(capacity)
    fields["points"] = list(capacity.points)
    return {CONFIG_KEY: {"capacity": fields, "code": _code_hash()}}


def plan_of(model: nn.Module) -> BatchPlan:
    """The plan whose tables ``model``'s sites read (set when the model was created)."""
    plan = getattr(model, "steerlab_plan", None)
    if not isinstance(plan, BatchPlan):
        raise RuntimeError("this vLLM model was built without Steerlab's sites (install() before the engine)")
    for module in model.modules():
        if isinstance(module, SiteBuffers):
            module.check()
            break
    return plan


def install() -> None:
    """Instrument every model vLLM creates in this process whose config asks for it (idempotent)."""
    from vllm.model_executor.model_loader.base_loader import BaseModelLoader

    original = BaseModelLoader.create_model
    if getattr(original, "_steerlab", False):
        return

    def create_model(self: Any, vllm_config: Any, model_config: Any, prefix: str = "") -> nn.Module:
        model = original(self, vllm_config, model_config, prefix)
        extra = vllm_config.additional_config
        settings = extra.get(CONFIG_KEY) if isinstance(extra, dict) else None
        if settings is not None:
            instrument(model, vllm_config, settings)
        return model

    create_model._steerlab = True  # type: ignore[attr-defined]
    BaseModelLoader.create_model = create_model


def instrument(model: nn.Module, vllm_config: Any, settings: dict[str, Any]) -> BatchPlan:
    """Allocate the plan's tables and hook every decoder layer's sites (before the first forward)."""
    fields = dict(settings["capacity"])
    fields["points"] = tuple(fields["points"])
    model_config = vllm_config.model_config
    shape = shape_from_config(model_config.hf_text_config)
    param = next(model.parameters())
    plan = BatchPlan(shape, Capacity(**fields), device=param.device, dtype=model_config.dtype)
    buffers = SiteBuffers(plan)
    for index, layer in enumerate(decoder_layers(model, shape.num_layers)):
        for module in _hook_layer(layer, index, plan):
            module.steerlab_sites = buffers
    setattr(model, "steerlab_plan", plan)  # noqa: B010 (a plain attribute, not a module)
    return plan


def decoder_layers(model: nn.Module, num_layers: int) -> list[nn.Module]:
    """The model's decoder layers: the module list of ``num_layers`` blocks that hold an attention."""
    for module in model.modules():
        if (
            isinstance(module, nn.ModuleList)
            and len(module) == num_layers
            and all(_child(block, _ATTENTION) is not None for block in module)
        ):
            return list(module)
    raise RuntimeError(
        f"{type(model).__name__}: no list of {num_layers} decoder layers with an attention module "
        f"({', '.join(_ATTENTION)}); interventions cannot run on this model"
    )


_FINAL_NORMS = ("norm", "ln_f", "final_layer_norm", "final_norm")


def final_norm(model: nn.Module) -> nn.Module:
    """The norm applied after the last decoder layer: the last module of the model with such a name."""
    found = [m for name, m in model.named_modules() if name.rsplit(".", 1)[-1] in _FINAL_NORMS]
    if not found:
        raise RuntimeError(f"{type(model).__name__}: no final norm ({', '.join(_FINAL_NORMS)}) found")
    return found[-1]


def _child(module: nn.Module, names: tuple[str, ...]) -> nn.Module | None:
    for name in names:
        child = getattr(module, name, None)
        if isinstance(child, nn.Module):
            return child
    return None


class SiteBuffers(nn.Module):
    """The plan's tables as non-persistent buffers of every hooked module.

    The hooks reach the tables through the module they run on, so the traced graph takes them as
    the model's buffers: inputs that vLLM passes on every call (also to a graph it loads from its
    compile cache), never constants captured at trace time.
    """

    def __init__(self, plan: BatchPlan) -> None:
        super().__init__()
        self.plan = [plan]  # a list: not a submodule, not traced
        for name, tensor in _plan_tensors(plan):
            self.register_buffer(name, tensor, persistent=False)

    def step_tables(self) -> ops.StepTables:
        return ops.StepTables(**{name: getattr(self, f"step_{name}") for name in _STEP_FIELDS})

    def width_tables(self, width: str) -> ops.WidthTables:
        return ops.WidthTables(**{name: getattr(self, f"{width}_{name}") for name in _WIDTH_FIELDS})

    def check(self) -> None:
        """Raise if a buffer is no longer the plan's tensor (e.g. a dtype cast copied it)."""
        for name, tensor in _plan_tensors(self.plan[0]):
            if getattr(self, name) is not tensor:
                raise RuntimeError(f"the site table {name} was replaced after the model was built")


# Field names read once here: the traced hooks only look them up (Dynamo does not trace fields()).
_STEP_FIELDS = tuple(f.name for f in dataclasses.fields(ops.StepTables))
_WIDTH_FIELDS = tuple(f.name for f in dataclasses.fields(ops.WidthTables))


def _plan_tensors(plan: BatchPlan) -> list[tuple[str, Tensor]]:
    out = [(f"step_{name}", getattr(plan.step, name)) for name in _STEP_FIELDS]
    for width, tables in (("hidden", plan.hidden.tables), ("mlp", plan.mlp.tables)):
        out += [(f"{width}_{name}", getattr(tables, name)) for name in _WIDTH_FIELDS]
    return out


def _site_op(plan: BatchPlan, site: Site) -> Callable[[nn.Module, Tensor], Tensor]:
    index, _ = plan.tables_of(site)
    width = "mlp" if site[1] == "mlp_act" else "hidden"

    def op(module: nn.Module, x: Tensor) -> Tensor:
        buffers: SiteBuffers = module.steerlab_sites  # type: ignore[assignment]
        tables, step = buffers.width_tables(width), buffers.step_tables()
        return ops.apply_site(x.reshape(-1, x.shape[-1]), tables, index, step).reshape(x.shape)

    return op


def _hook_layer(layer: nn.Module, index: int, plan: BatchPlan) -> list[nn.Module]:
    """Hook the layer's compiled-in sites; returns the modules hooked."""
    points = set(plan.capacity.points)
    where = f"decoder layer {index} ({type(layer).__name__})"
    attn = _child(layer, _ATTENTION)
    mlp = _child(layer, _MLP)
    down = _child(mlp, _DOWN) if mlp is not None else None
    if mlp is None or down is None:
        raise RuntimeError(f"{where}: no MLP with a down projection ({', '.join(_DOWN)})")
    # Layers that normalize a branch's output before adding it (Gemma 2/3: pre_feedforward_layernorm
    # beside post-norms; OLMo 2: post-norms only) add the normed output: that is attn_out / mlp_out.
    post_norms = hasattr(layer, "pre_feedforward_layernorm") or (
        hasattr(layer, "post_feedforward_layernorm") and not hasattr(layer, "input_layernorm")
    )
    attn_point = getattr(layer, "post_attention_layernorm", None) if post_norms else attn
    mlp_point = getattr(layer, "post_feedforward_layernorm", None) if post_norms else mlp
    if attn_point is None or mlp_point is None:
        raise RuntimeError(f"{where}: its branches' post-norms were not found")
    params = [p for p in inspect.signature(layer.forward).parameters if p != "self"]
    split = "residual" in params
    hidden_at = params.index("hidden_states") if "hidden_states" in params else 0
    residual_at = params.index("residual") if split else -1

    if "resid_pre" in points:
        layer.register_forward_pre_hook(
            _resid_pre(_site_op(plan, (index, "resid_pre")), hidden_at, residual_at), with_kwargs=True
        )
    if "resid_post" in points:
        layer.register_forward_hook(_resid_post(_site_op(plan, (index, "resid_post")), split))
    for point, module in (("attn_out", attn_point), ("mlp_out", mlp_point)):
        if point in points:
            module.register_forward_hook(_output(_site_op(plan, (index, point))))
    if "mlp_act" in points:
        down.register_forward_pre_hook(_first_input(_site_op(plan, (index, "mlp_act"))))
    return [layer, attn_point, mlp_point, down]


SiteOp = Callable[[nn.Module, Tensor], Tensor]


def _resid_pre(op: SiteOp, hidden_at: int, residual_at: int) -> Callable[..., Any]:
    def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        args_ = list(args)
        hidden = _get(args_, kwargs, hidden_at, "hidden_states")
        residual = _get(args_, kwargs, residual_at, "residual") if residual_at >= 0 else None
        if residual is None:  # no split residual (or vLLM's first layer): the input is the stream
            _put(args_, kwargs, hidden_at, "hidden_states", op(module, hidden))
        else:
            _put(args_, kwargs, hidden_at, "hidden_states", op(module, hidden + residual))
            _put(args_, kwargs, residual_at, "residual", torch.zeros_like(residual))
        return tuple(args_), kwargs

    return hook


def _resid_post(op: SiteOp, split: bool) -> Callable[..., Any]:
    def hook(module: nn.Module, args: Any, output: Any) -> Any:
        if split:
            hidden, residual = output[0], output[1]
            return (op(module, hidden + residual), torch.zeros_like(residual), *output[2:])
        if isinstance(output, tuple):
            return (op(module, output[0]), *output[1:])
        return op(module, output)

    return hook


def _output(op: SiteOp) -> Callable[..., Any]:
    def hook(module: nn.Module, args: Any, output: Any) -> Any:
        if isinstance(output, tuple):
            return (op(module, output[0]), *output[1:])
        return op(module, output)

    return hook


def _first_input(op: SiteOp) -> Callable[..., Any]:
    def hook(module: nn.Module, args: tuple[Any, ...]) -> Any:
        return (op(module, args[0]), *args[1:])

    return hook


def _get(args: list[Any], kwargs: dict[str, Any], at: int, name: str) -> Any:
    return args[at] if at < len(args) else kwargs.get(name)


def _put(args: list[Any], kwargs: dict[str, Any], at: int, name: str, value: Any) -> None:
    if at < len(args):
        args[at] = value
    else:
        kwargs[name] = value
