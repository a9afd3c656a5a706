"""Where each named activation lives in a model, and the hooks that record it during one call.

Names are stable and dotted (TransformerLens style); `anatomy(model).points` lists them:

    Qwen-Audio v1 (and nano)         Qwen2-Audio                       Whisper
    encoder.blocks.{i}.attn.pattern  encoder.layers.{i}.attn.pattern   encoder.layers.{i}.attn.pattern
    encoder.blocks.{i}.resid_post    encoder.layers.{i}.resid_post     encoder.layers.{i}.resid_post
    llm.embed                        llm.embed                         decoder.embed
    llm.layers.{i}.attn.pattern      llm.layers.{i}.attn.pattern       decoder.layers.{i}.self_attn.pattern
    llm.layers.{i}.attn.out          llm.layers.{i}.attn.out           decoder.layers.{i}.self_attn.out
    llm.layers.{i}.resid_post        llm.layers.{i}.resid_post         decoder.layers.{i}.cross_attn.pattern
                                                                       decoder.layers.{i}.cross_attn.out
                                                                       decoder.layers.{i}.resid_post

`*.embed` is what the first layer receives: token embeddings with the audio already spliced in
(v1, Qwen2-Audio), or token + position embeddings (Whisper's decoder).

Nothing here changes a module. Three ways a tensor is taken:
- forward hooks and pre-hooks for residual streams and attention outputs;
- attention inside transformers (the Qwen2 LLM, Whisper, Qwen2-Audio's tower): a custom attention
  function, registered with transformers' `AttentionInterface` as CAPTURE_ATTENTION, to which the
  model's configs point only during the call. For the modules being captured it computes the
  softmax probabilities with eager math; every other layer goes to transformers' SDPA function
  unchanged. Its mask function is SDPA's own, so those layers get exactly the fast path's inputs;
- our own `EncoderAttention` (v1): a forward pre-hook recomputes q·kᵀ from the block's input with
  the module's own weights and scaling (q and k each by head_dim^-0.25), as its eager path does.
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
from workbench.errors import TraceRequestError, UnsupportedModelError

CAPTURE_ATTENTION = "workbench_capture"
_LAYER = re.compile(r"\.(?:layers|blocks)\.(\d+)\.")

# The axes a point's tensor has (batch dropped). "rows"/"cols" are positions of the token sequence
# (the LLM's input, or Whisper's decoder input), "frames" encoder frames of one audio.
PATTERN_AXES = ("heads", "rows", "cols")
CROSS_AXES = ("heads", "rows", "frames")
ENCODER_PATTERN_AXES = ("heads", "frames", "frames")
SEQUENCE_AXES = ("rows", "width")
ENCODER_AXES = ("frames", "width")


@dataclass(frozen=True)
class Point:
    """One capturable tensor: where it is and how it is taken."""

    name: str
    module: nn.Module
    how: str                    # "attention", "encoder_attention", "output" (forward hook), "input" (pre-hook)
    axes: tuple[str, ...]
    n_heads: int = 0            # for patterns
    width: int = 0              # for residual streams and attention outputs
    per_audio: bool = False     # stored as a list, one tensor per audio

    @property
    def is_pattern(self) -> bool:
        return self.how in ("attention", "encoder_attention")


@dataclass(frozen=True)
class Anatomy:
    """What the trace needs to know about one model family."""

    points: dict[str, Point]
    root: nn.Module                     # its transformers configs are switched during capture
    sequence: str                       # "llm" or "decoder": the prefix of the token-sequence names
    norm: nn.Module                     # final norm and unembedding, for the logit lens
    unembed: nn.Module
    encoder_frames: Callable[[Any], list[int]]   # ModelInputs → frames kept per audio
    patterns: dict[str, str]            # "self", "cross", "encoder" → name template of that pattern, "{}" = layer
    audio_attention: str                # the pattern through which the token sequence sees the audio
    alignment_heads: tuple[tuple[int, int], ...] = ()   # Whisper's (layer, head) pairs that align words


def anatomy(model: Any) -> Anatomy:
    """The capture points of a workbench model (Qwen-Audio v1 / nano, Qwen2-Audio, Whisper)."""
    from workbench.models.qwen2_audio import Qwen2AudioLM
    from workbench.models.qwen_audio.model import QwenAudio
    from workbench.models.whisper import WhisperLM

    if isinstance(model, QwenAudio):    # also the nano model, which is a QwenAudio
        return _qwen_audio(model)
    if isinstance(model, WhisperLM):
        return _whisper(model)
    if isinstance(model, Qwen2AudioLM):
        return _qwen2_audio(model)
    raise UnsupportedModelError(
        f"cannot trace a {type(model).__name__}: trace works on the models workbench.load returns "
        "(Qwen-Audio v1 / nano, Qwen2-Audio, Whisper)")


def _sequence_points(prefix: str, layers: nn.ModuleList, attn: str, n_heads: int, width: int,
                     attn_name: str = "attn") -> dict[str, Point]:
    points = {f"{prefix}.embed": Point(f"{prefix}.embed", layers[0], "input", SEQUENCE_AXES, width=width)}
    for i, layer in enumerate(layers):
        base = f"{prefix}.layers.{i}"
        module = getattr(layer, attn)
        points[f"{base}.{attn_name}.pattern"] = Point(f"{base}.{attn_name}.pattern", module, "attention",
                                                      PATTERN_AXES, n_heads=n_heads)
        points[f"{base}.{attn_name}.out"] = Point(f"{base}.{attn_name}.out", module, "output", SEQUENCE_AXES,
                                                  width=width)
        points[f"{base}.resid_post"] = Point(f"{base}.resid_post", layer, "output", SEQUENCE_AXES, width=width)
    return points


def _encoder_points(prefix: str, layers: nn.ModuleList, attn: str, how: str, n_heads: int,
                    width: int) -> dict[str, Point]:
    points = {}
    for i, layer in enumerate(layers):
        base = f"{prefix}.{i}"
        points[f"{base}.attn.pattern"] = Point(f"{base}.attn.pattern", getattr(layer, attn), how,
                                               ENCODER_PATTERN_AXES, n_heads=n_heads, per_audio=True)
        points[f"{base}.resid_post"] = Point(f"{base}.resid_post", layer, "output", ENCODER_AXES,
                                             width=width, per_audio=True)
    return points


def _qwen_audio(model: Any) -> Anatomy:
    from workbench.audio import encoder_frames

    encoder, llm = model.encoder, model.llm
    config = llm.config
    points = _encoder_points("encoder.blocks", encoder.blocks, "attn", "encoder_attention",
                             encoder.config.n_head, encoder.config.n_state)
    points.update(_sequence_points("llm", llm.model.layers, "self_attn", config.num_attention_heads,
                                   config.hidden_size))
    return Anatomy(points, model.network, "llm", llm.model.norm, llm.lm_head,
                   lambda inputs: [encoder_frames(a.n_samples) for a in inputs.audios],
                   {"self": "llm.layers.{}.attn.pattern", "encoder": "encoder.blocks.{}.attn.pattern"}, "self")


def _qwen2_audio(model: Any) -> Anatomy:
    from workbench.audio import HOP_LENGTH, N_FRAMES

    core = model.model.model
    tower, language = core.audio_tower, core.language_model
    audio_config, text_config = model.config.audio_config, model.config.text_config
    points = _encoder_points("encoder.layers", tower.layers, "self_attn", "attention",
                             audio_config.encoder_attention_heads, audio_config.d_model)
    points.update(_sequence_points("llm", language.layers, "self_attn", text_config.num_attention_heads,
                                   text_config.hidden_size))

    def frames(inputs: Any) -> list[int]:   # the tower always runs 30 s; keep each clip's own frames
        return [(min(-(-a.n_samples // HOP_LENGTH), N_FRAMES) - 1) // 2 + 1 for a in inputs.audios]

    return Anatomy(points, model.model, "llm", language.norm, model.model.lm_head, frames,
                   {"self": "llm.layers.{}.attn.pattern", "encoder": "encoder.layers.{}.attn.pattern"}, "self")


def _whisper(model: Any) -> Anatomy:
    whisper, config = model.model, model.config
    encoder, decoder = whisper.model.encoder, whisper.model.decoder
    points = _encoder_points("encoder.layers", encoder.layers, "self_attn", "attention",
                             config.encoder_attention_heads, config.d_model)
    points.update(_sequence_points("decoder", decoder.layers, "self_attn", config.decoder_attention_heads,
                                   config.d_model, attn_name="self_attn"))
    for i, layer in enumerate(decoder.layers):
        base = f"decoder.layers.{i}.cross_attn"
        points[f"{base}.pattern"] = Point(f"{base}.pattern", layer.encoder_attn, "attention", CROSS_AXES,
                                          n_heads=config.decoder_attention_heads)
        points[f"{base}.out"] = Point(f"{base}.out", layer.encoder_attn, "output", SEQUENCE_AXES,
                                      width=config.d_model)
    heads = getattr(whisper.generation_config, "alignment_heads", None) or ()
    return Anatomy(dict(sorted(points.items(), key=lambda item: _natural(item[0]))), whisper, "decoder",
                   decoder.layer_norm, whisper.proj_out,
                   lambda inputs: [config.max_source_positions] * len(inputs.audios),
                   {"self": "decoder.layers.{}.self_attn.pattern", "cross": "decoder.layers.{}.cross_attn.pattern",
                    "encoder": "encoder.layers.{}.attn.pattern"}, "cross",
                   alignment_heads=tuple((int(layer), int(head)) for layer, head in heads))


def _natural(name: str) -> tuple:
    """Sort key that puts layer 2 before layer 10."""
    return tuple(int(part) if part.isdigit() else part for part in name.split("."))


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
    fewest = min((p.n_heads for p in points if p.is_pattern), default=None)
    if fewest is None:
        raise TraceRequestError(f"heads={heads!r} but no attention pattern is captured: add one to capture=")
    bad = [h for h in wanted if isinstance(h, bool) or not isinstance(h, int) or not 0 <= h < fewest]
    if bad or not wanted or len(set(wanted)) != len(wanted):
        raise TraceRequestError(f"heads={heads!r}: give distinct head indices in 0…{fewest - 1} (the captured "
                                f"patterns have {fewest} heads or more)")
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

_SINKS: dict[nn.Module, Callable[[torch.Tensor], None]] = {}   # attention modules being captured


def _capture_attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                       attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                       is_causal: bool | None = None, **kwargs: Any) -> tuple[torch.Tensor, None]:
    """SDPA for every module not being captured; eager math (and a copy of the probabilities) for the rest."""
    from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward

    sink = _SINKS.get(module)
    if sink is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, is_causal=is_causal, **kwargs)
    groups = query.shape[1] // key.shape[1]     # grouped-query attention shares key/value heads
    key, value = repeat_kv(key, groups), repeat_kv(value, groups)
    scale = query.shape[-1] ** -0.5 if scaling is None else scaling
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
    sink(probs)
    return torch.matmul(probs, value).transpose(1, 2).contiguous(), None


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

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


def _first(output: Any) -> torch.Tensor:
    return output[0] if isinstance(output, (tuple, list)) else output


@contextlib.contextmanager
def recording(model_anatomy: Anatomy, points: list[Point], selection: Selection,
              frames: list[int]) -> Iterator[dict[str, Any]]:
    """Record `points` during the `with` block into the yielded dict (name → tensor, or list per audio).

    `frames`: encoder frames kept per audio, in the order the encoder sees the audios.
    """
    store: dict[str, Any] = {p.name: [] for p in points if p.per_audio}
    handles: list[Any] = []

    def keep_per_audio(point: Point, x: torch.Tensor) -> None:
        for item in x:   # one batch row per audio (the encoder may batch the clips of a prompt)
            n = frames[len(store[point.name])]
            item = item[:, :n, :n] if point.axes == ENCODER_PATTERN_AXES else item[:n]
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
        if point.how == "attention":
            _SINKS[point.module] = sink
        elif point.how == "encoder_attention":
            handles.append(point.module.register_forward_pre_hook(
                lambda module, args, sink=sink: sink(_encoder_attention_probs(module, args[0], args[1]))))
        elif point.how == "output":
            handles.append(point.module.register_forward_hook(
                lambda module, args, output, sink=sink: sink(_first(output))))
        else:   # "input": the hidden states a layer receives
            handles.append(point.module.register_forward_pre_hook(
                lambda module, args, kwargs, sink=sink: sink(args[0] if args else kwargs["hidden_states"]),
                with_kwargs=True))
    try:
        with _attention_switched(model_anatomy.root, any(p.how == "attention" for p in points)):
            yield store
    finally:
        for handle in handles:
            handle.remove()
        for point in points:
            _SINKS.pop(point.module, None)


@contextlib.contextmanager
def _attention_switched(root: nn.Module, needed: bool) -> Iterator[None]:
    """Point every transformers config under `root` at CAPTURE_ATTENTION for the block, then restore."""
    from transformers import PreTrainedConfig

    if not needed:
        yield
        return
    _register()
    configs: dict[int, PreTrainedConfig] = {}
    for module in root.modules():   # pre-order: a parent config comes before its sub-configs
        config = getattr(module, "config", None)
        if isinstance(config, PreTrainedConfig):
            configs.setdefault(id(config), config)
    before = [(config, config._attn_implementation) for config in configs.values()]
    try:
        for config, _ in before:
            config._attn_implementation = CAPTURE_ATTENTION
        yield
    finally:
        # Restoring a parent resets its sub-configs too; parents come first, so each ends as it was.
        for config, implementation in before:
            if config._attn_implementation != implementation:
                config._attn_implementation = implementation
