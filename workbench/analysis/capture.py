"""Where each named activation lives in a model, and the hooks that record it during one call.

Names are stable and dotted (TransformerLens style); each family declares them in its adapter
(`workbench.models.adapter`), and `capture_names(model)` lists them:

    Qwen-Audio v1 (and nano)         Qwen2-Audio                       Whisper
    encoder.blocks.{i}.attn.pattern  encoder.layers.{i}.attn.pattern   encoder.layers.{i}.attn.pattern
    encoder.blocks.{i}.resid_post    encoder.layers.{i}.resid_post     encoder.layers.{i}.resid_post
    llm.embed                        llm.embed                         decoder.embed
    llm.layers.{i}.attn.pattern      llm.layers.{i}.attn.pattern       decoder.layers.{i}.self_attn.pattern
    llm.layers.{i}.attn.out          llm.layers.{i}.attn.out           decoder.layers.{i}.self_attn.out
    llm.layers.{i}.resid_post        llm.layers.{i}.resid_post         decoder.layers.{i}.cross_attn.pattern
                                                                       decoder.layers.{i}.cross_attn.out
                                                                       decoder.layers.{i}.resid_post

and on every layer of every stack (Whisper's attention named `self_attn` / `cross_attn`):

    ….resid_pre            the residual stream the layer receives (= resid_post of the layer before)
    ….mlp.out              the MLP's output, before it is added to the stream
    ….attn.q / .k / .v     per head, (heads, rows | cols | frames, head_dim): q over query positions,
                           k and v over key positions, repeated to every query head where heads share
                           them (grouped-query attention). Scaled so that the scores are q·kᵀ/√head_dim
                           for every family (Whisper scales q inside its projection: undone here). q and
                           k are after rotary embeddings where the family applies them (the Qwen LLMs);
                           Whisper and the audio encoders add positions to their input instead.
    ….attn.z               per head, (heads, rows | frames, head_dim): the heads' outputs before the output
                           projection, so z (heads concatenated) @ W_Oᵀ + b_O is attn.out

`*.embed` is what the first layer receives: token embeddings with the audio already spliced in
(v1, Qwen2-Audio), or token + position embeddings (Whisper's decoder).

Nothing here changes a module. Three ways a tensor is taken:
- forward hooks and pre-hooks for residual streams, attention and MLP outputs, and z (the input of
  the output projection, split by head);
- attention inside transformers (the Qwen2 LLM, Whisper, Qwen2-Audio's tower): a custom attention
  function, registered with transformers' `AttentionInterface` as CAPTURE_ATTENTION, to which the
  model's configs point only during the call. It hands q / k / v to the modules being captured;
  where a pattern is captured it computes the softmax probabilities with eager math; every other
  layer goes to transformers' SDPA function unchanged. Its mask function is SDPA's own, so those
  layers get exactly the fast path's inputs;
- our own `EncoderAttention` (v1): a forward pre-hook recomputes q·kᵀ from the block's input with
  the module's own weights and scaling (q and k each by head_dim^-0.25), as its eager path does;
  its q / k / v the same way, unscaled.
"""
from __future__ import annotations

import contextlib
import fnmatch
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
from torch import nn
from transformers import AttentionInterface, PreTrainedConfig
from transformers.integrations import sdpa_attention  # read at call time: a replaced SDPA function is seen
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from workbench.errors import TraceRequestError
from workbench.models.adapter import Adapter, Point

CAPTURE_ATTENTION = "workbench_capture"
_LAYER = re.compile(r"\.(?:layers|blocks)\.(\d+)\.")

# ---------------------------------------------------------------------------------------------
# Which points


def resolve_capture(capture: str | Sequence[str], points: dict[str, Point],
                    layers: int | Sequence[int] | None = None) -> list[Point]:
    """The points that the names / glob patterns pick, in the model's order, filtered by layer."""
    if isinstance(capture, bytes) or not isinstance(capture, (str, Iterable)):
        raise TypeError(f"capture={capture!r}: capture takes a name pattern string or a list of them, e.g. "
                        "'llm.layers.*.attn.pattern' or ['llm.layers.*.attn.pattern', 'llm.layers.*.resid_post'] "
                        "(capture_names(model) lists every name)")
    patterns = [capture] if isinstance(capture, str) else list(capture)
    chosen: set[str] = set()
    for pattern in patterns:
        if not isinstance(pattern, str):
            raise TraceRequestError(f"capture={pattern!r}: give names or glob patterns as strings")
        matched = [name for name in points if fnmatch.fnmatchcase(name, pattern)]
        if not matched:
            examples = ", ".join(list(points)[:3] + [n for n in points if n.endswith("pattern")][-1:])
            raise TraceRequestError(f"capture {pattern!r} matches no name this model offers; examples: {examples} "
                                    "(see capture_names(model) for all)")
        chosen.update(matched)
    if layers is not None:
        chosen = {name for name in chosen if _layer_kept(name, layers, points)}
        if not chosen and patterns:
            raise TraceRequestError(f"layers={layers!r} keeps none of the names {patterns} picks")
    return [point for name, point in points.items() if name in chosen]


def _layer_kept(name: str, layers: int | Sequence[int], points: dict[str, Point]) -> bool:
    match = _LAYER.search(name)
    if match is None:
        return False
    stack = name[:match.start()]            # e.g. "llm", "encoder", "decoder": layers count per stack
    count = 1 + max(int(_LAYER.search(n).group(1)) for n in points if n.startswith(stack + ".") and _LAYER.search(n))
    wanted = [layers] if isinstance(layers, int) else list(layers)
    for layer in wanted:
        if isinstance(layer, bool) or not isinstance(layer, int):
            raise TraceRequestError(f"layers={layers!r}: give layer indices as ints")
        if not -count <= layer < count:
            raise TraceRequestError(f"layer {layer} does not exist in {stack} ({count} layers: 0…{count - 1}, "
                                    "or negative from the end)")
    return int(match.group(1)) in {layer % count for layer in wanted}


def check_heads(heads: int | Sequence[int] | None, points: list[Point]) -> np.ndarray | None:
    if heads is None:
        return None
    wanted = [heads] if isinstance(heads, int) and not isinstance(heads, bool) else list(heads)
    fewest = min((p.n_heads for p in points if "heads" in p.axes), default=None)
    if fewest is None:
        raise TraceRequestError(f"heads={heads!r} but nothing with heads is captured (an attention pattern, or "
                                "q / k / v / z): add one to capture=")
    bad = [h for h in wanted if isinstance(h, bool) or not isinstance(h, int) or not 0 <= h < fewest]
    if bad or not wanted or len(set(wanted)) != len(wanted):
        raise TraceRequestError(f"heads={heads!r}: give distinct head indices in 0…{fewest - 1} (the captured "
                                f"per-head tensors have {fewest} heads or more)")
    return np.array(wanted, dtype=int)


# ---------------------------------------------------------------------------------------------
# What to keep of each tensor


@dataclass(frozen=True)
class Selection:
    """Which rows, columns and heads to keep (None: all), in which dtype (None: as computed)."""

    rows: torch.Tensor | None = None     # long, positions of the token sequence
    cols: torch.Tensor | None = None
    heads: torch.Tensor | None = None
    dtype: torch.dtype | None = None

    def keep(self, x: torch.Tensor, axes: tuple[str, ...], fresh: bool = False) -> torch.Tensor:
        """Select along named axes (batch already removed). The result never shares memory with the
        model's tensors; `fresh`: x is ours alone (computed here), so it is kept without a copy."""
        copy = not fresh
        for dim, axis in enumerate(axes):
            index = {"heads": self.heads, "rows": self.rows, "cols": self.cols}.get(axis)
            if index is not None:
                x, copy = x.index_select(dim, index.to(x.device)), False
        return x.to(dtype=self.dtype or x.dtype, copy=copy).detach().cpu()


# ---------------------------------------------------------------------------------------------
# The attention function and the hooks

# attention modules being captured → what to hand over: "pattern", "q", "k", "v" → sink
_SINKS: dict[nn.Module, dict[str, Callable[[torch.Tensor], None]]] = {}


def _capture_attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                       attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                       is_causal: bool | None = None, **kwargs: Any) -> tuple[torch.Tensor, None]:
    """SDPA for every module not being captured; eager math (and a copy of the probabilities) for the rest."""
    sinks = _SINKS.get(module, {})
    head_dim = query.shape[-1]
    scale = head_dim ** -0.5 if scaling is None else scaling
    if "q" in sinks:   # the same scores q·kᵀ/√head_dim for every family (Whisper passes a pre-scaled q)
        sinks["q"](query if scale == head_dim ** -0.5 else query * (scale * head_dim ** 0.5))
    groups = query.shape[1] // key.shape[1]     # grouped-query attention shares key/value heads
    for part, x in (("k", key), ("v", value)):
        if part in sinks:
            sinks[part](sdpa_attention.repeat_kv(x, groups))
    if "pattern" not in sinks:
        return sdpa_attention.sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                                     scaling=scaling, is_causal=is_causal, **kwargs)
    key, value = sdpa_attention.repeat_kv(key, groups), sdpa_attention.repeat_kv(value, groups)
    # In place where possible: the scores and the probabilities are the only (heads, L, L) tensors alive.
    scores = torch.matmul(query, key.transpose(2, 3)).mul_(scale)
    q_length, kv_length = query.shape[2], key.shape[2]
    causal = getattr(module, "is_causal", True) if is_causal is None else is_causal
    if attention_mask is None and causal and q_length > 1:
        # What SDPA's is_causal means (upper-left aligned): the mask function returned None for it.
        allowed = torch.ones(q_length, kv_length, dtype=torch.bool, device=scores.device).tril()
        scores.masked_fill_(~allowed, float("-inf"))
    elif attention_mask is not None and attention_mask.dtype == torch.bool:
        scores.masked_fill_(~attention_mask, float("-inf"))
    elif attention_mask is not None:
        scores.add_(attention_mask)
    probs = scores.softmax(dim=-1, dtype=torch.float32).to(query.dtype)
    del scores
    sinks["pattern"](probs)
    return torch.matmul(probs, value).transpose(1, 2).contiguous(), None


def _register() -> None:
    AttentionInterface.register(CAPTURE_ATTENTION, _capture_attention)
    AttentionMaskInterface.register(CAPTURE_ATTENTION, sdpa_mask)


def _encoder_attention_probs(module: nn.Module, x: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
    """Qwen-Audio v1's encoder attention probabilities, exactly as EncoderAttention's eager path."""
    batch, frames, width = x.shape
    head_dim = width // module.n_head
    scale = head_dim ** -0.25
    q = (module.query(x) * scale).view(batch, frames, module.n_head, head_dim).transpose(1, 2)
    k = (module.key(x) * scale).view(batch, frames, module.n_head, head_dim).transpose(1, 2)
    scores = q @ k.transpose(-1, -2)
    if key_mask is not None:
        scores = scores.masked_fill(~key_mask[:, None, None, :], float("-inf"))
    return scores.softmax(dim=-1)


def _encoder_heads(module: nn.Module, x: torch.Tensor, part: str) -> torch.Tensor:
    """Qwen-Audio v1's encoder q, k or v (batch, heads, frames, head_dim), from the block's attention input."""
    projection = {"q": module.query, "k": module.key, "v": module.value}[part]
    return _split_heads(projection(x), module.n_head)


def _split_heads(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    """(batch, L, heads · head_dim) → (batch, heads, L, head_dim)."""
    return x.unflatten(-1, (n_heads, -1)).transpose(1, 2)


def _first(output: Any) -> torch.Tensor:
    return output[0] if isinstance(output, (tuple, list)) else output


@contextlib.contextmanager
def recording(adapter: Adapter, points: list[Point], selection: Selection,
              frames: list[int]) -> Iterator[dict[str, Any]]:
    """Record `points` during the `with` block into the yielded dict (name → tensor, or list per audio).

    `frames`: encoder frames kept per audio, in the order the encoder sees the audios.
    """
    store: dict[str, Any] = {p.name: [] for p in points if p.per_audio}
    handles: list[Any] = []

    def keep_per_audio(point: Point, x: torch.Tensor) -> None:
        for item in x:   # one batch row per audio (the encoder may batch the clips of a prompt)
            n = frames[len(store[point.name])]
            item = item[tuple(slice(None, n) if axis == "frames" else slice(None) for axis in point.axes)]
            store[point.name].append(selection.keep(item, point.axes))   # frames axes: only heads select

    def sink_for(point: Point) -> Callable[[torch.Tensor], None]:
        def sink(x: torch.Tensor) -> None:
            if point.per_audio:
                keep_per_audio(point, x)
            else:   # attention probabilities are computed here for us: no copy needed
                store[point.name] = selection.keep(x[0], point.axes, fresh=point.how == "attention")
        return sink

    for point in points:
        sink = sink_for(point)
        kind, _, part = point.how.partition(".")
        if kind == "attention":
            _SINKS.setdefault(point.module, {})[part or "pattern"] = sink
        elif point.how == "encoder_attention":
            handles.append(point.module.register_forward_pre_hook(
                lambda module, args, sink=sink: sink(_encoder_attention_probs(module, args[0], args[1]))))
        elif kind == "encoder_attention":
            handles.append(point.module.register_forward_pre_hook(
                lambda module, args, sink=sink, part=part: sink(_encoder_heads(module, args[0], part))))
        elif point.how == "heads_input":   # z: the output projection's input, split by head
            handles.append(point.module.register_forward_pre_hook(
                lambda module, args, sink=sink, n=point.n_heads: sink(_split_heads(args[0], n))))
        elif point.how == "output":
            handles.append(point.module.register_forward_hook(
                lambda module, args, output, sink=sink: sink(_first(output))))
        else:   # "input": the hidden states a layer receives
            handles.append(point.module.register_forward_pre_hook(
                lambda module, args, kwargs, sink=sink: sink(args[0] if args else kwargs["hidden_states"]),
                with_kwargs=True))
    try:
        with _attention_switched(adapter.root, any(p.how.partition(".")[0] == "attention" for p in points)):
            yield store
    finally:
        for handle in handles:
            handle.remove()
        for point in points:
            _SINKS.pop(point.module, None)


@contextlib.contextmanager
def _attention_switched(root: nn.Module, needed: bool) -> Iterator[None]:
    """Point every transformers config under `root` at CAPTURE_ATTENTION for the block, then restore."""
    if not needed:
        yield
        return
    _register()
    with attention_implementation(root, CAPTURE_ATTENTION):
        yield


@contextlib.contextmanager
def attention_implementation(root: nn.Module, name: str) -> Iterator[None]:
    """Every transformers config under `root` computes attention with the registered function `name`
    for the block, then is restored (capture's eager copy, edge knockout's masked SDPA)."""
    configs: dict[int, PreTrainedConfig] = {}
    for module in root.modules():   # pre-order: a parent config comes before its sub-configs
        config = getattr(module, "config", None)
        if isinstance(config, PreTrainedConfig):
            configs.setdefault(id(config), config)
    before = [(config, config._attn_implementation) for config in configs.values()]
    try:
        for config, _ in before:
            config._attn_implementation = name
        yield
    finally:
        # Restoring a parent resets its sub-configs too; parents come first, so each ends as it was.
        for config, implementation in before:
            if config._attn_implementation != implementation:
                config._attn_implementation = implementation
