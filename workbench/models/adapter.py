"""What a model family is made of, declared once by the family, read by every analysis.

TransformerLens keeps one adapter per architecture for the same reason: the analyses (trace,
lens, patching, knockouts, alignment, scoring) never ask which family they hold; they read its
`Adapter`. A family builds its adapter in its own module (`AudioLM._adapter`) from its live
modules; `model.adapter` builds it once.

    adapter.points["llm.layers.3.attn.pattern"]   # a capture point: module, how it is taken, axes
    adapter.sequence.layers[3]                     # the token sequence's layer 3 (LLM / Whisper decoder)
    adapter.encoder.head_inputs[0]                 # the module whose input holds encoder block 0's heads
    adapter.interventions.run(inputs, audio)       # logits, with the audio encoded once (or None)

The optional parts (`interventions`, `splice`, `chat`) are None for a family that lacks them; the
family also lists the parts it declares (`AudioLM.parts`), from which the capability table
(`workbench.analysis.capabilities`) is written. Callables take and return the base types of
`workbench.models.base` (`ModelInputs`; ids as lists of ints); they are typed loosely here only so
that this module depends on nothing else.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

# The axes a point's tensor has (batch dropped). "rows"/"cols" are positions of the token sequence
# (the LLM's input, or Whisper's decoder input), "frames" encoder frames of one audio.
PATTERN_AXES = ("heads", "rows", "cols")
CROSS_AXES = ("heads", "rows", "frames")
ENCODER_PATTERN_AXES = ("heads", "frames", "frames")
SEQUENCE_AXES = ("rows", "width")
ENCODER_AXES = ("frames", "width")
# Per-head vectors: q and z (the heads' outputs before the output projection) per query position,
# k and v per key position (repeated to every query head where keys and values are shared).
HEAD_AXES = ("heads", "rows", "head_dim")
KEY_AXES = ("heads", "cols", "head_dim")
ENCODER_HEAD_AXES = ("heads", "frames", "head_dim")

# The parts a family may declare, and what each one is.
PARTS = {
    "capture": "named capture points on its stacks, final norm and unembedding, frame geometry, text encoding",
    "interventions": "the audio encoded once; the token sequence run and greedily decoded from it, under hooks",
    "splice": "audio spliced into the LLM's input embeddings, so a shared audio prefix runs once (scoring)",
    "chat": "ChatML with `Audio N:` references, as the official Qwen-Audio-Chat `chat()`",
}


@dataclass(frozen=True)
class Point:
    """One capturable tensor: where it is and how it is taken."""

    name: str
    module: nn.Module
    how: str                    # "attention", "encoder_attention", "output" (forward hook), "input" (pre-hook),
                                # "attention.q" / ".k" / ".v", "encoder_attention.q" / …, "heads_input" (z)
    axes: tuple[str, ...]
    n_heads: int = 0            # for patterns and per-head vectors
    width: int = 0              # for residual streams and attention outputs; head_dim for per-head vectors
    per_audio: bool = False     # stored as a list, one tensor per audio

    @property
    def is_pattern(self) -> bool:
        return self.how in ("attention", "encoder_attention")


@dataclass(frozen=True)
class Stack:
    """One stack of layers: the modules whose output is the residual stream, the modules whose
    input holds the heads' outputs side by side (the attention's output projection), the heads."""

    name: str                       # "llm", "decoder" or "encoder"
    layers: tuple[nn.Module, ...]
    head_inputs: tuple[nn.Module, ...]
    n_heads: int
    # Per layer, the module whose output is the MLP's whole contribution to the residual stream
    # (Qwen2 `mlp`, Whisper `fc2`); and the cross-attention's output projection (Whisper's
    # decoder: heads side by side in its input). Empty: not declared (direct logit attribution).
    mlps: tuple[nn.Module, ...] = ()
    cross_inputs: tuple[nn.Module, ...] = ()


@dataclass(frozen=True)
class Interventions:
    """How to run the token sequence with the audio encoded once (patching, knockouts)."""

    encode: Callable[[Any], Any]                     # ModelInputs → the audio, as `run` and `greedy` read it
    run: Callable[..., torch.Tensor]                 # (inputs, audio, keep=slice(None)) → logits (kept rows, vocab), float32
    greedy: Callable[[Any, Any, int], list[int]]     # (inputs, audio, max_new_tokens) → new ids, stop token included
    # (inputs, layer, encoder layer `layer`'s output) → the audio as `encode` gives it, only the encoder's
    # layers after `layer` run (causal tracing restores frames there); None: re-encode under a hook
    encode_after: Callable[[Any, int, torch.Tensor], Any] | None = None


@dataclass(frozen=True)
class Splice:
    """Audio that enters the LLM as input embeddings, in a span of the prompt: the shared audio
    prefix of many prompts can be run once and its keys and values reused (`analysis.scoring`)."""

    encode_audio: Callable[[Any], list[torch.Tensor]]            # ModelInputs → per audio (n_positions, d)
    embed: Callable[[Any, Any], torch.Tensor]                    # (inputs, audio embeds) → (L, d), audio spliced in
    body: nn.Module             # the LLM without its head: inputs_embeds, attention_mask, position_ids, cache
    head: nn.Module             # hidden states → logits
    new_cache: Callable[..., Any]       # (layers=()) → a KV cache for `body` holding those (keys, values)
    with_text: Callable[[Any, str], Any]    # (prompt up to its audio, text) → one prompt, the audio reused
    max_positions: int          # the longest sequence the family computes exactly


@dataclass(frozen=True)
class Adapter:
    """Everything an analysis needs to know about one model family (module docstring)."""

    family: str
    # -- capture: what `trace` records, by stable dotted names
    points: dict[str, Point]
    root: nn.Module                     # its transformers configs are switched during capture
    sequence: Stack                     # the token sequence: the LLM, or Whisper's decoder
    encoder: Stack                      # the audio encoder
    norm: nn.Module                     # final norm and unembedding, for the logit lens
    unembed: nn.Module
    patterns: dict[str, str]            # "self", "cross", "encoder" → name template of that pattern, "{}" = layer
    audio_attention: str                # "self": audio tokens sit in the sequence; "cross": reached by cross-attention
    # -- frame geometry
    encoder_frames: Callable[[Any], list[int]]   # ModelInputs → encoder frames per audio, on the encoder axes
    frame_seconds: float                # seconds per encoder frame
    step_seconds: float                 # seconds per time step of the attention that reaches the audio
    # -- text
    encode_text: Callable[[str], list[int]]      # plain text → ids, nothing added around it
    first_special_id: int               # ids from here on are tags, timestamps, stop tokens (word pieces below)
    transcript_lead: str                # what a transcript starts with after the prompt (Whisper: a space)
    audio_marks: tuple[str, ...]        # text that puts an audio into a prompt (`<audio>`, `<|AUDIO|>`)
    alignment_heads: tuple[tuple[int, int], ...] = ()   # (layer, head) pairs that the checkpoint names
    # -- optional parts (None: the family does not have them)
    interventions: Interventions | None = None
    splice: Splice | None = None
    chat: Any = None                    # the tokenizer that writes the official ChatML context (`chat_context`)

    @property
    def parts(self) -> frozenset[str]:
        """The parts this adapter declares (keys of `PARTS`)."""
        optional = {"interventions": self.interventions, "splice": self.splice, "chat": self.chat}
        return frozenset({"capture"} | {name for name, part in optional.items() if part is not None})


# --- the capture points of the common shapes ------------------------------------------------


def sequence_points(prefix: str, layers: nn.ModuleList, attn: str, n_heads: int, width: int,
                    attn_name: str = "attn", mlp: str = "mlp", out_proj: str = "o_proj") -> dict[str, Point]:
    """`{prefix}.embed` (what the first layer receives) and, per layer, the residual stream before
    and after it, the attention's pattern, per-head q / k / v / z and output, and the MLP's output.
    `mlp`: the layer's MLP module (its output is the MLP's contribution to the stream); `out_proj`:
    the attention's output projection, whose input is z."""
    points = {f"{prefix}.embed": Point(f"{prefix}.embed", layers[0], "input", SEQUENCE_AXES, width=width)}
    for i, layer in enumerate(layers):
        base = f"{prefix}.layers.{i}"
        module = getattr(layer, attn)
        points[f"{base}.resid_pre"] = Point(f"{base}.resid_pre", layer, "input", SEQUENCE_AXES, width=width)
        points[f"{base}.{attn_name}.pattern"] = Point(f"{base}.{attn_name}.pattern", module, "attention",
                                                      PATTERN_AXES, n_heads=n_heads)
        points.update(head_points(f"{base}.{attn_name}", module, getattr(module, out_proj), n_heads,
                                  width // n_heads, "attention", HEAD_AXES, KEY_AXES))
        points[f"{base}.{attn_name}.out"] = Point(f"{base}.{attn_name}.out", module, "output", SEQUENCE_AXES,
                                                  width=width)
        points[f"{base}.mlp.out"] = Point(f"{base}.mlp.out", getattr(layer, mlp), "output", SEQUENCE_AXES,
                                          width=width)
        points[f"{base}.resid_post"] = Point(f"{base}.resid_post", layer, "output", SEQUENCE_AXES, width=width)
    return points


def encoder_points(prefix: str, layers: nn.ModuleList, attn: str, how: str, n_heads: int,
                   width: int, mlp: str = "mlp", out_proj: str = "out_proj") -> dict[str, Point]:
    """Per encoder block, one tensor per audio: the residual stream before and after it, its
    self-attention pattern, per-head q / k / v / z and output, and its MLP's output."""
    points = {}
    for i, layer in enumerate(layers):
        base = f"{prefix}.{i}"
        module = getattr(layer, attn)
        points[f"{base}.resid_pre"] = Point(f"{base}.resid_pre", layer, "input", ENCODER_AXES, width=width,
                                            per_audio=True)
        points[f"{base}.attn.pattern"] = Point(f"{base}.attn.pattern", module, how,
                                               ENCODER_PATTERN_AXES, n_heads=n_heads, per_audio=True)
        points.update(head_points(f"{base}.attn", module, getattr(module, out_proj), n_heads, width // n_heads,
                                  how, ENCODER_HEAD_AXES, ENCODER_HEAD_AXES, per_audio=True))
        points[f"{base}.attn.out"] = Point(f"{base}.attn.out", module, "output", ENCODER_AXES, width=width,
                                           per_audio=True)
        points[f"{base}.mlp.out"] = Point(f"{base}.mlp.out", getattr(layer, mlp), "output", ENCODER_AXES,
                                          width=width, per_audio=True)
        points[f"{base}.resid_post"] = Point(f"{base}.resid_post", layer, "output", ENCODER_AXES,
                                             width=width, per_audio=True)
    return points


def head_points(base: str, attn: nn.Module, out_proj: nn.Module, n_heads: int, head_dim: int, how: str,
                q_axes: tuple[str, ...], kv_axes: tuple[str, ...], per_audio: bool = False) -> dict[str, Point]:
    """`{base}.q`, `.k`, `.v` (taken where the attention computes, so q and k carry rotary
    embeddings where the family applies them) and `{base}.z` (the input of `out_proj`, split by head)."""
    axes = {"q": q_axes, "k": kv_axes, "v": kv_axes}
    points = {f"{base}.{part}": Point(f"{base}.{part}", attn, f"{how}.{part}", axes[part], n_heads=n_heads,
                                      width=head_dim, per_audio=per_audio) for part in ("q", "k", "v")}
    points[f"{base}.z"] = Point(f"{base}.z", out_proj, "heads_input", q_axes, n_heads=n_heads, width=head_dim,
                                per_audio=per_audio)
    return points


def natural(name: str) -> tuple:
    """Sort key that puts layer 2 before layer 10."""
    return tuple(int(part) if part.isdigit() else part for part in name.split("."))
