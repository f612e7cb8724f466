"""Model adapters: where "layer 12, residual stream" lives in each transformers architecture.

An intervention names a site as ``(layer, point)`` (docs/design.md §3). ``adapter_for(model)`` picks the adapter
of the model's family from ``config.model_type``; ``adapter.locate(layer, point)`` resolves the site to
a module and says whether the activation is that module's first input or its output;
``install_hook`` attaches a function that reads or replaces the activation there.

Points, for decoder layer ``L``:

* ``resid_pre``: the residual stream entering layer ``L`` (the layer's ``hidden_states`` input). This
  equals ``output_hidden_states[L]``.
* ``resid_post``: the residual stream leaving layer ``L`` (the layer's output). This equals
  ``output_hidden_states[L + 1]``, except for the last layer: transformers puts the *final-normed*
  state there, while ``resid_post`` of the last layer is the state before the final norm.
* ``attn_out``: what the attention branch adds to the residual stream: the attention module's
  output, or, in families that normalize it before adding it (Gemma 2/3, OLMo 2), the output of
  that norm (``post_attention_layernorm``).
* ``mlp_out``: what the MLP branch adds: the MLP's output, or the output of its post-norm
  (``post_feedforward_layernorm``) in those families. In GPT-NeoX's parallel residual, each branch.
* ``mlp_act``: the MLP's post-activation neurons, the input of its down projection: ``act(gate) * up``
  for the gated families (``mlp.down_proj``), ``act(c_fc(x))`` for GPT-2 (``mlp.c_proj``) and
  ``act(dense_h_to_4h(x))`` for GPT-NeoX (``mlp.dense_4h_to_h``). Its width is the MLP size.

Every other point has width ``hidden_size``.

Families: llama, mistral, qwen2, qwen3, gemma, gemma2, gemma3_text, phi3, olmo2 (``model.layers``,
``self_attn``, ``mlp.down_proj``, ``model.norm``, ``lm_head``), gpt2 (``transformer.h``, ``attn``, ``mlp.c_proj``, ``transformer.ln_f``)
and gpt_neox (``gpt_neox.layers``, ``attention``, ``mlp.dense_4h_to_h``, ``gpt_neox.final_layer_norm``).
Adapters accept the causal-LM model or its bare base model (``logit_lens`` needs the LM head).
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle
from transformers import PretrainedConfig

__all__ = [
    "ADAPTERS",
    "POINTS",
    "SUPPORTED_MODEL_TYPES",
    "GPT2Adapter",
    "GPTNeoXAdapter",
    "Gemma2Adapter",
    "Gemma3TextAdapter",
    "GemmaAdapter",
    "HookKind",
    "LlamaAdapter",
    "MistralAdapter",
    "ModelAdapter",
    "ModelShape",
    "Olmo2Adapter",
    "Phi3Adapter",
    "Point",
    "Qwen2Adapter",
    "Qwen3Adapter",
    "SiteRef",
    "UnsupportedArchitecture",
    "adapter_for",
    "install_hook",
    "shape_from_config",
]

POINTS: tuple[str, ...] = ("resid_pre", "resid_post", "attn_out", "mlp_out", "mlp_act")
Point = Literal["resid_pre", "resid_post", "attn_out", "mlp_out", "mlp_act"]
HookKind = Literal["input", "output"]


@dataclass(frozen=True)
class SiteRef:
    """A resolved intervention site.

    Args:
        layer: Decoder layer index, normalized (>= 0).
        point: One of ``POINTS``.
        module: The module whose input or output carries the activation.
        hook: ``"input"``: the module's first input (``hidden_states``); ``"output"``: its output (the first
            element when the output is a tuple).
        width: Size of the activation's last dimension: ``hidden_size``, or the MLP size for ``mlp_act``.
    """

    layer: int
    point: str
    module: nn.Module
    hook: HookKind
    width: int


@dataclass(frozen=True)
class ModelShape:
    """What a registry needs to know about a model's geometry.

    Args:
        model_type: ``config.model_type``, e.g. ``"llama"``.
        num_layers: Number of decoder layers.
        hidden_size: Width of the residual stream.
        mlp_size: Width of the MLP's post-activation neurons (``mlp_act``).
        vocab_size: Size of the unembedding's output.
    """

    model_type: str
    num_layers: int
    hidden_size: int
    mlp_size: int
    vocab_size: int


class UnsupportedArchitecture(ValueError):
    """The model's family has no adapter; the message names it and lists the supported ones.

    Args:
        model_type: The model's ``config.model_type``, or None when it has none.
    """

    def __init__(self, model_type: str | None) -> None:
        self.model_type = model_type
        what = f"model_type {model_type!r}" if model_type else "a model without config.model_type"
        super().__init__(
            f"unsupported architecture: {what}; supported model types: {', '.join(SUPPORTED_MODEL_TYPES)}"
        )


class ModelAdapter:
    """Where the intervention points live in one family of models.

    Subclasses only name the family's submodules; the lookups are shared.

    Args:
        model: A causal-LM model of the family (or its bare base model), as built by transformers.
    """

    model_type: ClassVar[str] = ""
    # Attribute of the causal-LM wrapper holding the base model (transformers' ``base_model_prefix``).
    _base_attr: ClassVar[str] = "model"
    _layers_attr: ClassVar[str] = "layers"
    _final_norm_attr: ClassVar[str] = "norm"
    _attn_attr: ClassVar[str] = "self_attn"
    _mlp_attr: ClassVar[str] = "mlp"
    # The MLP's down projection; its input is ``mlp_act``.
    _down_attr: ClassVar[str] = "down_proj"
    # Families that normalize a branch's output before adding it to the residual stream: the norms
    # whose outputs are ``attn_out`` / ``mlp_out`` (what the branch adds).
    _attn_out_norm: ClassVar[str | None] = None
    _mlp_out_norm: ClassVar[str | None] = None
    # Unembedding attribute names on the causal-LM wrapper, tried in order.
    _unembed_attrs: ClassVar[tuple[str, ...]] = ("lm_head",)

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        # getattr: nn.Module's typing says attributes are tensors or modules; a config is neither.
        self.config: PretrainedConfig = getattr(model, "config")  # noqa: B009
        self._shape = shape_from_config(self.config)
        inner = getattr(model, self._base_attr, None)
        if isinstance(inner, nn.Module) and hasattr(inner, self._layers_attr):
            self.base: nn.Module = inner
        elif hasattr(model, self._layers_attr):
            self.base = model
        else:
            raise ValueError(
                f"{type(model).__name__} (model_type {self.model_type!r}) has neither "
                f"'{self._base_attr}.{self._layers_attr}' nor '{self._layers_attr}'"
            )

    @staticmethod
    def mlp_size_from_config(config: PretrainedConfig) -> int:
        """Width of the MLP's post-activation neurons, read from the config.

        Args:
            config: The model's config.
        """
        return int(config.intermediate_size)

    def shape(self) -> ModelShape:
        """The model's geometry (from its config)."""
        return self._shape

    def normalize_layer(self, layer: int) -> int:
        """Map a layer index (negative counts from the end) to ``0..num_layers-1``.

        Args:
            layer: Layer index; ``-1`` is the last layer.
        """
        if isinstance(layer, bool):
            # bool is an int subclass: ``True`` as a layer is always a caller bug.
            raise TypeError(f"layer must be an int, not {layer!r}")
        index = operator.index(layer)
        n = self._shape.num_layers
        if not -n <= index < n:
            raise ValueError(f"layer {index} out of range for a {n}-layer model (valid: {-n}..{n - 1})")
        return index + n if index < 0 else index

    def layers(self) -> Sequence[nn.Module]:
        """The decoder layers, in order."""
        layers: nn.ModuleList = getattr(self.base, self._layers_attr)
        # Llama-likes run ``layers[: config.num_hidden_layers]``; keep exactly what the forward runs.
        return list(layers)[: self._shape.num_layers]

    def width(self, point: str) -> int:
        """Size of the activation's last dimension at ``point``.

        Args:
            point: One of ``POINTS``.
        """
        _check_point(point)
        return self._shape.mlp_size if point == "mlp_act" else self._shape.hidden_size

    def locate(self, layer: int, point: str) -> SiteRef:
        """Resolve ``(layer, point)`` to the module and hook kind that carry the activation.

        Args:
            layer: Layer index; negative counts from the end.
            point: One of ``POINTS``.
        """
        _check_point(point)
        index = self.normalize_layer(layer)
        block = self.layers()[index]
        module: nn.Module
        hook: HookKind
        if point == "resid_pre":
            module, hook = block, "input"
        elif point == "resid_post":
            module, hook = block, "output"
        elif point == "attn_out":
            module, hook = getattr(block, self._attn_out_norm or self._attn_attr), "output"
        elif point == "mlp_out":
            module, hook = getattr(block, self._mlp_out_norm or self._mlp_attr), "output"
        else:  # mlp_act
            module, hook = getattr(getattr(block, self._mlp_attr), self._down_attr), "input"
        return SiteRef(layer=index, point=point, module=module, hook=hook, width=self.width(point))

    def final_norm(self) -> nn.Module:
        """The norm applied to the residual stream after the last layer."""
        norm: nn.Module = getattr(self.base, self._final_norm_attr)
        return norm

    def unembedding(self) -> nn.Module:
        """The LM head (hidden -> vocab logits); ValueError for a bare base model."""
        for name in self._unembed_attrs:
            head = getattr(self.model, name, None)
            if isinstance(head, nn.Module):
                return head
        raise ValueError(f"{type(self.model).__name__} has no LM head ({', '.join(self._unembed_attrs)})")

    def logit_lens(self, h: Tensor) -> Tensor:
        """Decode residual-stream rows into logits the way the model decodes its last layer.

        Args:
            h: Residual-stream activations ``[..., hidden]`` (pre-final-norm, e.g. any ``resid_post``).

        Returns:
            Logits ``[..., vocab]``: final norm, then unembedding (then Gemma2's softcap).
        """
        return self.unembedding()(self.final_norm()(h))


class LlamaAdapter(ModelAdapter):
    """Llama: ``model.layers[i].{self_attn, mlp.down_proj}``, ``model.norm``, ``lm_head``."""

    model_type = "llama"


class MistralAdapter(LlamaAdapter):
    """Mistral: laid out like Llama."""

    model_type = "mistral"


class Qwen2Adapter(LlamaAdapter):
    """Qwen2: laid out like Llama (biased q/k/v projections do not matter here)."""

    model_type = "qwen2"


class Qwen3Adapter(LlamaAdapter):
    """Qwen3: laid out like Llama (q/k norms live inside ``self_attn``)."""

    model_type = "qwen3"


class GemmaAdapter(LlamaAdapter):
    """Gemma: laid out like Llama (GELU-gated MLP; the final norm scales by ``1 + weight``)."""

    model_type = "gemma"


class Gemma2Adapter(LlamaAdapter):
    """Gemma2: Llama layout plus post-attention/post-MLP norms and final logit softcapping.

    ``attn_out`` / ``mlp_out`` are what the branches add to the residual stream: the outputs of
    ``post_attention_layernorm`` / ``post_feedforward_layernorm`` (as in vLLM's Gemma2).
    """

    model_type = "gemma2"
    _attn_out_norm = "post_attention_layernorm"
    _mlp_out_norm = "post_feedforward_layernorm"

    def logit_lens(self, h: Tensor) -> Tensor:
        """Final norm, unembedding, then ``final_logit_softcapping`` when the config sets it.

        Args:
            h: Residual-stream activations ``[..., hidden]`` (pre-final-norm).
        """
        logits = super().logit_lens(h)
        cap = getattr(self.config, "final_logit_softcapping", None)
        if cap is not None:
            # Same op order as Gemma2ForCausalLM, so the result matches its logits bit for bit.
            logits = torch.tanh(logits / cap) * cap
        return logits


class Gemma3TextAdapter(Gemma2Adapter):
    """Gemma 3 (text): laid out like Gemma2 (post-norms, optional final softcapping)."""

    model_type = "gemma3_text"


class Phi3Adapter(LlamaAdapter):
    """Phi-3: laid out like Llama (fused ``qkv_proj`` and ``gate_up_proj`` inside the modules)."""

    model_type = "phi3"


class Olmo2Adapter(LlamaAdapter):
    """OLMo 2: Llama layout with post-norms only (no input norms): ``attn_out`` / ``mlp_out`` are the
    outputs of ``post_attention_layernorm`` / ``post_feedforward_layernorm``."""

    model_type = "olmo2"
    _attn_out_norm = "post_attention_layernorm"
    _mlp_out_norm = "post_feedforward_layernorm"


class GPT2Adapter(ModelAdapter):
    """GPT-2: ``transformer.h[i].{attn, mlp.c_proj}``, ``transformer.ln_f``, ``lm_head``."""

    model_type = "gpt2"
    _base_attr = "transformer"
    _layers_attr = "h"
    _final_norm_attr = "ln_f"
    _attn_attr = "attn"
    _down_attr = "c_proj"

    @staticmethod
    def mlp_size_from_config(config: PretrainedConfig) -> int:
        """``n_inner``, or ``4 * hidden_size`` when it is None (GPT-2's default).

        Args:
            config: The model's config.
        """
        n_inner = getattr(config, "n_inner", None)
        return int(n_inner) if n_inner is not None else 4 * int(config.hidden_size)


class GPTNeoXAdapter(ModelAdapter):
    """GPT-NeoX: ``gpt_neox.layers[i].{attention, mlp.dense_4h_to_h}``, ``gpt_neox.final_layer_norm``.

    The LM head is ``lm_head`` in transformers 5.x (``embed_out`` in older releases). With
    ``use_parallel_residual`` (the default) attention and MLP both read ``resid_pre``.
    """

    model_type = "gpt_neox"
    _base_attr = "gpt_neox"
    _final_norm_attr = "final_layer_norm"
    _attn_attr = "attention"
    _down_attr = "dense_4h_to_h"
    _unembed_attrs = ("lm_head", "embed_out")


ADAPTERS: Mapping[str, type[ModelAdapter]] = {
    cls.model_type: cls
    for cls in (
        LlamaAdapter,
        MistralAdapter,
        Qwen2Adapter,
        Qwen3Adapter,
        GemmaAdapter,
        Gemma2Adapter,
        Gemma3TextAdapter,
        Phi3Adapter,
        Olmo2Adapter,
        GPT2Adapter,
        GPTNeoXAdapter,
    )
}
SUPPORTED_MODEL_TYPES: tuple[str, ...] = tuple(ADAPTERS)


def _check_point(point: str) -> None:
    if point not in POINTS:
        raise ValueError(f"unknown point {point!r}; valid points: {', '.join(POINTS)}")


def _adapter_class(model_type: str | None) -> type[ModelAdapter]:
    cls = ADAPTERS.get(model_type) if isinstance(model_type, str) else None
    if cls is None:
        raise UnsupportedArchitecture(model_type)
    return cls


def shape_from_config(config: PretrainedConfig) -> ModelShape:
    """A model's geometry from its config alone, without building the model.

    Args:
        config: A transformers config of a supported family.
    """
    model_type = getattr(config, "model_type", None)
    cls = _adapter_class(model_type)
    return ModelShape(
        model_type=str(model_type),
        num_layers=int(config.num_hidden_layers),
        hidden_size=int(config.hidden_size),
        mlp_size=cls.mlp_size_from_config(config),
        vocab_size=int(config.vocab_size),
    )


def adapter_for(model: nn.Module) -> ModelAdapter:
    """The adapter of ``model``'s family, chosen by ``model.config.model_type``.

    Args:
        model: A transformers model (causal LM or bare base model).

    Raises:
        UnsupportedArchitecture: The family has no adapter (the message lists the supported ones).
    """
    config = getattr(model, "config", None)
    return _adapter_class(getattr(config, "model_type", None))(model)


def _replaced(old: Tensor, new: Tensor | None, site: SiteRef) -> Tensor | None:
    """Validate a hook function's result: None (keep ``old``) or a tensor of ``old``'s shape."""
    if new is None:
        return None
    if not isinstance(new, Tensor):
        raise TypeError(
            f"hook at {site.point} of layer {site.layer} returned {type(new).__name__}, not a Tensor"
        )
    if new.shape != old.shape:
        # Shapes are metadata: checking costs no device sync and stops a wrong width early.
        raise ValueError(
            f"hook at {site.point} of layer {site.layer} returned shape {tuple(new.shape)}, "
            f"expected {tuple(old.shape)}"
        )
    return new


def install_hook(site: SiteRef, fn: Callable[[Tensor], Tensor | None]) -> RemovableHandle:
    """Attach ``fn`` at ``site``: it receives the activation ``[..., width]`` and may replace it.

    ``fn`` returns a tensor of the same shape to replace the activation, or None to keep it (after
    modifying it in place, or only reading it). For an ``"output"`` site that returns a tuple only the
    first element is replaced; a plain tensor output (transformers 5.x decoder layers) is replaced
    whole. For an ``"input"`` site ``fn`` gets the first positional argument or, when the module was
    called with keywords only, the ``hidden_states`` keyword. Several hooks on one module run in the
    order they were installed.

    Args:
        site: Where to hook, from ``ModelAdapter.locate``.
        fn: Reads and optionally replaces the activation.

    Returns:
        The handle; ``handle.remove()`` detaches the hook.
    """
    if site.hook == "output":

        def output_hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> Any:
            if isinstance(output, Tensor):
                return _replaced(output, fn(output), site)
            if isinstance(output, (tuple, list)) and output and isinstance(output[0], Tensor):
                new = _replaced(output[0], fn(output[0]), site)
                if new is None:
                    return None
                rest = tuple(output[1:])
                return (new, *rest) if isinstance(output, tuple) else [new, *rest]
            raise TypeError(
                f"{type(module).__name__} at {site.point} of layer {site.layer} returned "
                f"{type(output).__name__}; expected a Tensor or a tuple starting with one"
            )

        return site.module.register_forward_hook(output_hook)

    def input_hook(
        module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]] | None:
        if args and isinstance(args[0], Tensor):
            new = _replaced(args[0], fn(args[0]), site)
            return None if new is None else ((new, *args[1:]), kwargs)
        hidden = kwargs.get("hidden_states")
        if isinstance(hidden, Tensor):
            new = _replaced(hidden, fn(hidden), site)
            return None if new is None else (args, {**kwargs, "hidden_states": new})
        raise TypeError(
            f"{type(module).__name__} at {site.point} of layer {site.layer} was called without a tensor "
            "as first positional argument or as hidden_states="
        )

    return site.module.register_forward_pre_hook(input_hook, with_kwargs=True)
