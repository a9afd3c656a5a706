"""`trace()`: one forward pass with every input position labelled and chosen tensors captured.

    t = trace(model, prompt, audio, capture="llm.layers.*.attn.pattern", rows="output", cols="audio",
              generate=20, dtype=torch.float16)
    t.positions                            # one row per position: kind, group, audio time, tag slot…
    t["llm.layers.1.attn.pattern"]         # (heads, rows, cols)
    t["encoder.blocks.0.attn.pattern"][0]  # encoder names hold a list, one tensor per audio
    t.names()                              # every name this model offers

What a name holds (batch dimension dropped; each family's adapter declares its names,
`capture_names(model)` lists them):
- `*.attn.pattern` of the token sequence: (heads, rows, cols) softmax probabilities; rows are the
  query positions `t.rows`, cols the key positions `t.cols`;
- Whisper's `decoder.layers.{i}.cross_attn.pattern`: (heads, rows, 1500 encoder frames of 20 ms);
- `encoder.*.attn.pattern`: a list per audio of (heads, T, T) over that audio's encoder frames
  (Qwen-Audio: the clip's own T frames; Whisper: always the 1500 frames of the 30 s window);
- `*.resid_pre`, `*.resid_post`, `*.attn.out`, `*.mlp.out`, `*.embed`: (rows, width); the encoder's: a
  list per audio of (T, width);
- `*.attn.q`, `*.attn.z`: (heads, rows, head_dim); `*.attn.k`, `*.attn.v`: (heads, cols, head_dim) (the
  encoder's: a list per audio of (heads, T, head_dim); Whisper's cross_attn k / v: 1500 frames). q·kᵀ/√head_dim
  are the scores; q and k carry rotary embeddings in the Qwen LLMs (`workbench.analysis.capture`).

rows / cols select positions of the token sequence: None or "all", "last", a group ("audio",
"tags", "text"), a part ("prompt", "output"), a list of these (their union), an int, a slice, a
sequence of ints, or a boolean mask. A tag prompt has no "text" of its own (its positions are audio
and tags): the model's answer is the text, so trace it with generate=N and rows="output". `heads`
selects heads of every pattern and per-head tensor. What the request would keep, plus one layer's full pattern while it
is computed, is checked against `max_bytes` (default 2 GiB) before anything runs; a request over it
fails with its size and how to narrow it.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch

from workbench.analysis.capabilities import require
from workbench.analysis.capture import Point, Selection, check_heads, recording, resolve_capture
from workbench.analysis.positions import GROUPS, label_positions, select_positions
from workbench.audio import ENCODER_FRAME_SECONDS
from workbench.errors import TraceRequestError, TraceTooLargeError
from workbench.figures.attention import (
    plot_attention_mass,
    plot_attention_over_time,
    plot_attention_pattern,
    plot_audio_attention,
    plot_encoder_attention,
)
from workbench.models.base import Generation, ModelInputs

DEFAULT_MAX_BYTES = 2 * 1024 ** 3     # 2 GiB of captured tensors
PATTERN_KINDS = ("self", "cross", "encoder")

__all__ = ["Trace", "trace", "capture_names", "TraceRequestError", "TraceTooLargeError", "DEFAULT_MAX_BYTES"]


@dataclass
class Trace:
    family: str
    inputs: ModelInputs                 # as run: the prompt, plus the generated tokens when generate > 0
    positions: pd.DataFrame             # one row per position of the token sequence
    logits: torch.Tensor                # (L, vocab), or (1, vocab) with logits="last"
    rows: np.ndarray                    # sequence positions on the query axis of patterns and streams
    cols: np.ndarray                    # sequence positions on the key axis of self-attention patterns
    heads: np.ndarray | None            # heads kept in every pattern (None: all)
    activations: dict[str, Any]
    offered: tuple[str, ...] = field(repr=False)
    sequence: str = "llm"               # "llm" or "decoder" (Whisper): the prefix of the sequence's names
    patterns: dict[str, str] = field(default_factory=dict)   # "self"/"cross"/"encoder" → name template
    audio_attention: str = "self"       # the pattern through which the sequence sees the audio
    encoder_frames: tuple[int, ...] = ()    # per audio, on the encoder axes
    frame_seconds: float = ENCODER_FRAME_SECONDS
    alignment_heads: tuple[tuple[int, int], ...] = ()
    generation: Generation | None = None

    # -- the captured tensors, like a dict --------------------------------------------------
    def __getitem__(self, name: str) -> Any:
        if name not in self.activations:
            hint = (f"it was not captured: pass capture=[{name!r}, …]" if name in self.offered else
                    "this model offers no such name (see .names())")
            raise KeyError(f"{name!r}: {hint}; captured: {', '.join(self.activations) or 'nothing'}")
        return self.activations[name]

    def __contains__(self, name: object) -> bool:
        return name in self.activations

    def keys(self) -> list[str]:
        """The names captured in this trace."""
        return list(self.activations)

    def names(self) -> list[str]:
        """Every name the model offers (capture any of them, or glob them, e.g. 'llm.layers.*.resid_post')."""
        return list(self.offered)

    def to_pandas(self) -> pd.DataFrame:
        return self.positions.copy()

    def plot(self, what: str = "audio", *args: Any, **options: Any) -> Any:
        """A figure of `workbench.figures.attention`: "audio" (attention over the audio under the mel), "time"
        (token × time map), "encoder", "mass" (per layer) or "pattern"; arguments go to that function."""
        figures = {"audio": plot_audio_attention, "time": plot_attention_over_time,
                   "encoder": plot_encoder_attention, "mass": plot_attention_mass, "pattern": plot_attention_pattern}
        if what not in figures:
            raise ValueError(f"what={what!r}: choose one of {', '.join(figures)}")
        return figures[what](self, *args, **options)

    def __repr__(self) -> str:
        kept = sum(_nbytes(v) for v in self.activations.values())
        return (f"<Trace {self.family}: {len(self.positions)} positions, {len(self.activations)} tensors "
                f"({kept / 2 ** 20:.1f} MiB), rows {len(self.rows)} × cols {len(self.cols)}>")

    # -- helpers for plots and analyses ------------------------------------------------------
    def layers(self, what: str = "self") -> list[int]:
        """Captured layers of "self" (the token sequence's self-attention), "cross" (Whisper's
        cross-attention) or "encoder" patterns; [] for a kind this model does not have."""
        if what not in PATTERN_KINDS:
            raise ValueError(f"what={what!r}: choose one of {', '.join(PATTERN_KINDS)}")
        if what not in self.patterns:
            return []
        name = re.compile(re.escape(self.patterns[what]).replace(re.escape("{}"), r"(\d+)"))
        return sorted(int(match.group(1)) for match in map(name.fullmatch, self.activations) if match)

    def pattern(self, layer: int, what: str = "self") -> torch.Tensor | list[torch.Tensor]:
        """The captured pattern of one layer ("self", "cross" or "encoder", as in `layers`)."""
        if layer not in self.layers(what):
            raise KeyError(f"no {what} attention pattern of layer {layer} was captured (captured layers: "
                           f"{self.layers(what) or 'none'}): add it to capture=, see .names()")
        return self.activations[self.patterns[what].format(layer)]

    def select(self, selector: Any) -> np.ndarray:
        """Sequence positions that `selector` picks (see the module docstring)."""
        return select_positions(self.positions, selector)

    def row_index(self, selector: Any = None) -> np.ndarray:
        """Indices into `rows` of the positions `selector` picks; all of them must have been captured."""
        wanted = self.rows if selector is None else self.select(selector)
        where = {int(p): i for i, p in enumerate(self.rows)}
        missing = [int(p) for p in wanted if int(p) not in where]
        if missing:
            raise TraceRequestError(f"positions {missing[:8]} were not captured as rows (rows: {_span(self.rows)}): "
                                    "trace again with rows= covering them")
        return np.array([where[int(p)] for p in wanted], dtype=int)

    def audio_cols(self, audio: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """(indices into `cols`, audio token numbers k) of audio `audio`'s tokens among the key columns."""
        if not 0 <= audio < len(self.inputs.audios):
            raise TraceRequestError(f"audio={audio}: the prompt has {len(self.inputs.audios)} audio(s)")
        table = self.positions.iloc[self.cols]
        keep = ((table["kind"] == "audio") & (table["audio"] == audio)).to_numpy()
        return np.flatnonzero(keep), table["audio_token"].to_numpy()[keep].astype(int)

    def attention_mass(self, rows: Any = None) -> pd.DataFrame:
        """Per captured self-attention layer, the share of attention on each group (audio, tags, text),
        averaged over heads and the chosen query rows. Needs cols='all' (every key captured)."""
        if len(self.cols) != len(self.positions) or not np.array_equal(self.cols, np.arange(len(self.positions))):
            raise TraceRequestError("attention_mass needs every key position: trace with cols=None (all)")
        index = torch.as_tensor(self.row_index(rows))
        groups = self.positions["group"].to_numpy()
        table = []
        for layer in self.layers("self"):
            per_key = self.pattern(layer).float().index_select(1, index).mean(dim=(0, 1)).numpy()
            table.append({"layer": layer, **{g: float(per_key[groups == g].sum()) for g in GROUPS}})
        if not table:
            raise TraceRequestError(f"no self-attention pattern captured: capture {self.patterns['self'].format('*')!r}")
        return pd.DataFrame(table)


# ---------------------------------------------------------------------------------------------


def trace(model: Any, prompt: Any, audio: Any = None, *, capture: str | Sequence[str] = (),
          rows: Any = None, cols: Any = None, heads: int | Sequence[int] | None = None,
          layers: int | Sequence[int] | None = None, dtype: torch.dtype | None = None,
          max_bytes: int = DEFAULT_MAX_BYTES, generate: int = 0, logits: str = "all",
          audio_dir: Any = None) -> Trace:
    """Run `model` once on (prompt, audio) and return a labelled `Trace`.

    prompt, audio: as `model.inputs` takes them; audio is a path, an (array, rate) pair, an array of
      16 kHz samples, or a list of these.
    capture: names or glob patterns (`trace.names()`; e.g. "llm.layers.*.attn.pattern").
    layers: keep only these layer indices (negative counts from the last) among the matched names.
    heads / rows / cols / dtype: what to keep of each tensor (module docstring); dtype=torch.float16 halves it.
    generate: greedy-generate up to this many tokens first, then trace prompt + output in one pass
      (a causal model computes the same thing for them either way), labelled part="output".
    logits: "all" keeps (L, vocab), "last" only the last position's.
    max_bytes: the bound on the memory the capture may take (module docstring).
    """
    adapter = require(model, "trace")
    inputs = model.inputs(prompt, audio, audio_dir=audio_dir)
    points = resolve_capture(capture, adapter.points, layers)
    head_index = check_heads(heads, points)
    if isinstance(generate, bool) or not isinstance(generate, int) or generate < 0:
        raise TraceRequestError(f"generate={generate!r}: give a whole number of new tokens ≥ 0")
    if logits not in ("all", "last"):
        raise TraceRequestError(f"logits={logits!r}: choose 'all' or 'last'")
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise TraceRequestError(f"dtype={dtype!r}: give a floating torch dtype such as torch.float16")
    frames = adapter.encoder_frames(inputs)
    prompt_positions = label_positions(model, inputs)
    vocab = adapter.unembed.weight.shape[0]
    check_size(points, prompt_positions, rows, cols, head_index, frames, generate, logits, vocab,
               dtype or adapter.unembed.weight.dtype, max_bytes)

    generation = None
    if generate:
        generation = model.generate(inputs, max_new_tokens=generate)
        inputs = inputs.extended(generation.ids)
    positions = label_positions(model, inputs, n_prompt=len(prompt_positions))
    row_positions, col_positions = select_positions(positions, rows), select_positions(positions, cols)
    selection = Selection(rows=None if rows is None else torch.as_tensor(row_positions),
                          cols=None if cols is None else torch.as_tensor(col_positions),
                          heads=None if head_index is None else torch.as_tensor(head_index), dtype=dtype)
    with recording(adapter, points, selection, frames) as store:
        out = model.forward(inputs, logits_to_keep=1 if logits == "last" else None)
    missing = [p.name for p in points if p.name not in store or (p.per_audio and len(store[p.name]) != len(frames))]
    if missing:
        raise RuntimeError(f"the hooks for {missing[:4]} did not fire as expected during the forward pass: the "
                           f"{type(model).__name__} modules changed; its family's adapter needs updating")
    return Trace(family=model.family, inputs=inputs, positions=positions, logits=out.logits[0].detach(),
                 rows=row_positions, cols=col_positions, heads=head_index,
                 activations={p.name: store[p.name] for p in points}, offered=tuple(adapter.points),
                 sequence=adapter.sequence.name, patterns=adapter.patterns, audio_attention=adapter.audio_attention,
                 encoder_frames=tuple(frames), frame_seconds=adapter.frame_seconds,
                 alignment_heads=adapter.alignment_heads,
                 generation=generation)


def capture_names(model: Any) -> list[str]:
    """Every name `trace` can capture on this model, without running it."""
    return list(require(model, "trace").points)


# ---------------------------------------------------------------------------------------------
# Size


def check_size(points: list[Point], positions: pd.DataFrame, rows: Any, cols: Any, heads: np.ndarray | None,
               frames: list[int], generate: int, logits: str, vocab: int, dtype: torch.dtype | None,
               max_bytes: int) -> int:
    """Peak bytes of the request (an upper bound when generating): the tensors kept plus, while one
    layer is captured, its full scores and probabilities in float32; raise if above `max_bytes`."""
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, (int, float)) or max_bytes <= 0:
        raise TraceRequestError(f"max_bytes={max_bytes!r}: give a positive number of bytes, e.g. 2 * 1024**3")
    n_rows, n_cols = (_count_upper(positions, s, generate) for s in (rows, cols))
    length = len(positions) + generate
    item = torch.finfo(dtype).bits // 8 if dtype is not None else 4
    stored, transient = 0, 0
    for p in points:
        h = len(heads) if heads is not None and "heads" in p.axes else p.n_heads
        sizes = {"heads": h, "rows": n_rows, "cols": n_cols, "width": p.width, "head_dim": p.width, "frames": None}
        if p.per_audio:
            stored += sum(math.prod(t if s is None else s for s in (sizes[a] for a in p.axes)) for t in frames)
        else:
            stored += math.prod(max(frames, default=0) if sizes[a] is None else sizes[a] for a in p.axes)
        if p.is_pattern:   # the full probabilities of one layer exist while it is being captured
            keys = max(frames, default=0) if "frames" in p.axes else length
            queries = max(frames, default=0) if p.axes[1] == "frames" else length
            transient = max(transient, 2 * 4 * p.n_heads * queries * keys)
    total = stored * item + (length if logits == "all" else 1) * vocab * 4
    if total + transient > max_bytes:
        raise TraceTooLargeError(
            f"this capture would keep about {_mib(total)} (plus {_mib(transient)} while one layer's full pattern "
            f"is computed), more than max_bytes={_mib(max_bytes)}: capture fewer layers (layers=[…]) or heads "
            "(heads=[…]), narrow the positions (e.g. rows='output', cols='audio', or index lists), store "
            "dtype=torch.float16, keep logits='last', or raise max_bytes")
    return total + transient


def _count_upper(positions: pd.DataFrame, selector: Any, generate: int) -> int:
    """Positions a selector can pick once `generate` tokens are added (output tokens can be any group)."""
    if selector is None or (isinstance(selector, str) and selector == "all"):
        return len(positions) + generate
    names = [selector] if isinstance(selector, str) else selector
    if isinstance(names, (list, tuple)) and names and all(isinstance(s, str) for s in names):
        in_prompt = [s for s in names if s != "output"]
        prompt = len(select_positions(positions, in_prompt, empty_ok=True)) if in_prompt else 0
        grows = any(s in ("output", "all", "last", *GROUPS) for s in names)
        return min(prompt + (generate if grows else 0), len(positions) + generate)
    # Indices may point into the output that does not exist yet: count them; they are checked
    # against the real sequence once it is known (still before the traced forward pass).
    if isinstance(selector, slice):
        return len(range(len(positions) + generate)[selector])
    array = np.asarray(selector.cpu() if isinstance(selector, torch.Tensor) else selector)
    return int(array.sum()) if array.dtype == bool else int(array.size)


def _mib(n: float) -> str:
    return f"{n / 2 ** 30:.2f} GiB" if n >= 2 ** 30 else f"{n / 2 ** 20:.1f} MiB"


def _nbytes(value: Any) -> int:
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    return sum(_nbytes(v) for v in value)


def _span(index: np.ndarray) -> str:
    return "none" if len(index) == 0 else f"{len(index)} positions, {int(index.min())}…{int(index.max())}"
