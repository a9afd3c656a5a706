"""Attention-edge knockout: in which layers does the model read the audio, and through which positions?

    result = edge_knockout(model, wb.preset("librispeech", lang="en"), "clip.flac")
    result.to_pandas()      # one row per layer(s) × edge: score, delta (score − intact)
    result.plot()           # heatmap layer(s) × edge
    edge_knockout_many(model, [(prompt, clip_a), (prompt, clip_b)]).plot()   # means with bootstrap CIs

An edge (rows, cols) blocks every position of group `rows` from attending to any position of group
`cols`, in the chosen layers of the token sequence (the LLM, or Whisper's decoder), by masking those
attention scores (−inf before the softmax, as the causal mask does). Groups (`label_positions`):
"audio" (the clip's positions, `<audio>`/`</audio>` included), "tags", "text" (the prompt's free
text), "answer" (the scored continuation, or the tokens generated under the knockout), "last" (the
prompt's last position: it predicts the first answer token, and is itself a tag in a tag prompt),
"all"; as cols also "audio>window": audio positions more than `window_s` seconds away from the
row's own audio time (rows must be "audio"; same clip only), to ask how local the LLM's reading of
the audio is. Where the audio has no positions in the sequence (Whisper), cols "audio" blocks the
rows' cross-attention instead, and "audio>window" does not exist.

No row is ever fully masked, so nothing turns NaN: a position always keeps itself (the diagonal)
and position 0 (the first position, the attention sink every row may fall back to; it attends only
to itself, so it carries nothing from the positions blocked). A cross-attention row blocked from all
of the audio reads nothing: its cross-attention output is zero (before the output projection's bias).

Layers (`layers=`): a list of specs, each an int (that layer alone), a sequence of ints (those layers
together, e.g. `range(0, 2)` for a window), "each" (every layer alone) or "all" (every layer
together); default ("each", "all").

Scores as `patch_sweep` scores (its `Scorer`): "logprob" (default) is log p of the intact model's
greedy answer (or `continuation`), "wer" / "cer" re-decode greedily under the knockout and compare
with `reference`, a callable scores the re-decoded text. `delta` = knocked-out − intact.

How: a custom attention function registered with transformers' `AttentionInterface` (as
`analysis.capture` does for eager capture, under its own name), to which the model's configs point
only during the call. Layers without a block, and blocks that mask nothing, go to transformers' SDPA
function unchanged (so blocking nothing gives the intact score exactly); blocked layers go to the
same SDPA function with the block folded into their attention mask.
Families: those with the interventions part (native Qwen-Audio v1 and nano, Whisper).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn
from transformers import AttentionInterface
from transformers.integrations import sdpa_attention  # read at call time: a replaced SDPA function is seen
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from workbench.analysis.capabilities import require
from workbench.analysis.capture import attention_implementation
from workbench.analysis.interventions import answer_rows, check_layer, logprob, prompt_inputs
from workbench.analysis.patching import Scorer, _scorer, _strip_stop
from workbench.analysis.positions import label_positions
from workbench.analysis.stats import mean_ci
from workbench.errors import PatchingError
from workbench.figures.edges import plot_edges
from workbench.models.adapter import Adapter

__all__ = ["DEFAULT_EDGES", "EDGE_GROUPS", "EdgeKnockoutResult", "edge_knockout", "edge_knockout_many"]

EDGE_ATTENTION = "workbench_edges"
EDGE_GROUPS = ("audio", "tags", "text", "answer", "last", "all")
WINDOW = "audio>window"
DEFAULT_EDGES = (("answer", "audio"), ("tags", "audio"), ("answer", "tags"), ("audio", WINDOW))


# ---------------------------------------------------------------------------------------------
# The mask: which (row, col) pairs an edge blocks


@dataclass
class _Block:
    """One module's block. `matrix[r, c]`: row position r may not read key c (self-attention), or
    `matrix[r, 0]`: row r reads nothing of the audio (cross-attention). `seen` counts the query rows
    this module has run so far in the call, so a cached generation's rows get their positions."""

    matrix: torch.Tensor
    cross: bool
    seen: int = 0


_BLOCKS: dict[nn.Module, _Block] = {}


def _edge_attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                    attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                    is_causal: bool | None = None, **kwargs: Any) -> tuple[torch.Tensor, None]:
    """SDPA, with the module's block (if any) folded into its mask."""
    def sdpa(mask: torch.Tensor | None, causal: bool | None) -> tuple[torch.Tensor, None]:
        return sdpa_attention.sdpa_attention_forward(module, query, key, value, mask, dropout=dropout,
                                                     scaling=scaling, is_causal=causal, **kwargs)

    block = _BLOCKS.get(module)
    if block is None:
        return sdpa(attention_mask, is_causal)
    if query.shape[0] != 1:
        raise PatchingError("edge knockouts run one prompt at a time (batch of 1)")
    q_length, kv_length = query.shape[2], key.shape[2]
    start = block.seen
    block.seen += q_length
    if start + q_length > block.matrix.shape[0]:
        raise PatchingError(f"the run reached position {start + q_length}, beyond the {block.matrix.shape[0]} "
                            "positions the edge masks were built for")
    if block.cross:
        output, weights = sdpa(attention_mask, is_causal)
        cut = block.matrix[start:start + q_length, 0].to(output.device)
        return (output.masked_fill(cut[None, :, None, None], 0.0) if bool(cut.any()) else output), weights
    if start + q_length != kv_length:   # the query rows are the last of the keys (no padding, no sliding window)
        raise PatchingError(f"cannot place {q_length} query rows among {kv_length} keys after {start} rows run")
    blocked = block.matrix[start:start + q_length, :kv_length].to(query.device)
    if not bool(blocked.any()):
        return sdpa(attention_mask, is_causal)
    if attention_mask is None:   # SDPA's is_causal: the mask function left it out
        causal = getattr(module, "is_causal", True) if is_causal is None else is_causal
        rows = torch.arange(start, start + q_length, device=query.device)[:, None]
        allowed = rows >= torch.arange(kv_length, device=query.device)[None, :] if causal else \
            torch.ones(q_length, kv_length, dtype=torch.bool, device=query.device)
        mask = (allowed & ~blocked)[None, None]
    elif attention_mask.dtype == torch.bool:
        mask = attention_mask & ~blocked
    else:
        mask = attention_mask.masked_fill(blocked, float("-inf"))
    return sdpa(mask, False)


def _members(table: pd.DataFrame, n_prompt: int, n: int, group: str) -> np.ndarray:
    """Whether each of `n` positions belongs to `group`; positions past the prompt are the answer."""
    if group not in EDGE_GROUPS:
        raise PatchingError(f"position group {group!r}: choose one of {', '.join(EDGE_GROUPS)} (cols also {WINDOW!r})")
    keep = np.zeros(n, dtype=bool)
    labelled = table["group"].to_numpy()[:n_prompt]
    if group == "all":
        keep[:] = True
    elif group == "answer":
        keep[n_prompt:] = True
    elif group == "last":
        keep[n_prompt - 1] = True
    else:
        keep[:n_prompt] = labelled == group
    return keep


def _block_matrix(table: pd.DataFrame, n_prompt: int, n: int, rows: str, cols: str, window_s: float,
                  cross: bool) -> torch.Tensor:
    """The (n, n) blocked pairs of one edge (or (n, 1) blocked rows for cross-attention), with the
    diagonal and position 0 always readable."""
    row = _members(table, n_prompt, n, rows)
    if cross:
        return torch.from_numpy(row[:, None].copy())
    if cols == WINDOW:
        kind = np.array(list(table["kind"][:n_prompt]) + ["answer"] * (n - n_prompt))
        audio = np.array(list(table["audio"].fillna(-1).astype(int)[:n_prompt]) + [-1] * (n - n_prompt))
        start = np.array(list(table["start_s"][:n_prompt]) + [np.nan] * (n - n_prompt), dtype=float)
        token = kind == "audio"
        far = np.abs(start[:, None] - start[None, :]) > window_s + 1e-9
        matrix = row[:, None] & token[:, None] & token[None, :] & (audio[:, None] == audio[None, :]) & far
    else:
        matrix = row[:, None] & _members(table, n_prompt, n, cols)[None, :]
    np.fill_diagonal(matrix, False)
    matrix[:, 0] = False
    return torch.from_numpy(matrix)


@contextlib.contextmanager
def blocking(adapter: Adapter, blocks: dict[nn.Module, torch.Tensor], cross: set[nn.Module]) -> Iterator[None]:
    """Run the block with `blocks` (attention module → blocked matrix) in force."""
    AttentionInterface.register(EDGE_ATTENTION, _edge_attention)
    AttentionMaskInterface.register(EDGE_ATTENTION, sdpa_mask)
    for module, matrix in blocks.items():
        _BLOCKS[module] = _Block(matrix, module in cross)
    try:
        with attention_implementation(adapter.root, EDGE_ATTENTION):
            yield
    finally:
        for module in blocks:
            _BLOCKS.pop(module, None)


# ---------------------------------------------------------------------------------------------
# Layers and edges asked for


def _layer_sets(adapter: Adapter, layers: Any) -> list[tuple[str, tuple[int, ...]]]:
    stack = adapter.sequence
    n = len(stack.layers)
    specs = [layers] if isinstance(layers, (str, int, np.integer)) else list(layers)
    if not specs:
        raise PatchingError(f"layers={layers!r}: give layer specs: ints, sequences of ints, 'each' or 'all'")
    out: list[tuple[str, tuple[int, ...]]] = []
    for spec in specs:
        if spec == "each":
            out += [(str(i), (i,)) for i in range(n)]
        elif spec == "all":
            out.append(("all", tuple(range(n))))
        elif isinstance(spec, str):
            raise PatchingError(f"layer spec {spec!r}: give an int, a sequence of ints, 'each' or 'all'")
        elif isinstance(spec, (int, np.integer)) and not isinstance(spec, bool):
            i = check_layer(stack, spec)
            out.append((str(i), (i,)))
        else:
            chosen = sorted({check_layer(stack, i) for i in spec})
            if not chosen:
                raise PatchingError(f"layer spec {spec!r} is empty")
            contiguous = chosen == list(range(chosen[0], chosen[-1] + 1))
            label = f"{chosen[0]}–{chosen[-1]}" if contiguous and len(chosen) > 1 else ",".join(map(str, chosen))
            out.append((label, tuple(chosen)))
    return out


def _edges(adapter: Adapter, edges: Any) -> list[tuple[str, str]]:
    cross = adapter.audio_attention == "cross"
    if edges is None:
        return [e for e in DEFAULT_EDGES if not (cross and WINDOW in e)]
    if isinstance(edges, tuple) and len(edges) == 2 and all(isinstance(g, str) for g in edges):
        edges = [edges]
    chosen = []
    for edge in edges:
        if not (isinstance(edge, (tuple, list)) and len(edge) == 2 and all(isinstance(g, str) for g in edge)):
            raise PatchingError(f"edge {edge!r}: give (rows, cols) group names, e.g. ('answer', 'audio')")
        rows, cols = edge
        for group in (rows, cols if cols != WINDOW else "audio"):
            if group not in EDGE_GROUPS:
                raise PatchingError(f"edge {edge!r}: unknown position group {group!r}; choose from "
                                    f"{', '.join(EDGE_GROUPS)} (cols also {WINDOW!r})")
        if cols == WINDOW and (rows != "audio" or cross):
            raise PatchingError(f"edge {edge!r}: {WINDOW!r} blocks audio positions from far-away audio positions, "
                                "so rows must be 'audio'" if not cross else
                                f"edge {edge!r}: this model's audio has no positions in its {adapter.sequence.name} "
                                "(it is read through cross-attention), so there is no audio-to-audio edge there")
        if cross and rows == "audio":
            raise PatchingError(f"edge {edge!r}: this model's audio has no positions in its {adapter.sequence.name}: "
                                "use 'audio' as cols only (its cross-attention)")
        chosen.append((rows, cols))
    if not chosen or len(set(chosen)) != len(chosen):
        raise PatchingError(f"edges={edges!r}: give a non-empty list of distinct (rows, cols) pairs")
    return chosen


# ---------------------------------------------------------------------------------------------
# The verbs


@dataclass(frozen=True)
class EdgeKnockoutResult:
    """Scores of every (layer set, edge) knockout, per clip: `scores[k, i, j]` is clip k with edge j
    blocked in layer set i; `clean[k]` clip k intact."""

    layers: tuple[str, ...]                 # labels of the layer sets: "3", "0–1", "all"
    layer_sets: tuple[tuple[int, ...], ...]
    edges: tuple[str, ...]                  # "answer→audio", …
    scores: np.ndarray                      # (clips, layer sets, edges)
    clean: np.ndarray                       # (clips,)
    measure: str                            # e.g. "log p(' the happy cow')" or "WER vs '…'"
    stack: str
    window_s: float
    outputs: np.ndarray | None = None       # (clips, layer sets, edges) re-decoded texts (metric scores)
    prompts: tuple[str, ...] = ()

    @property
    def n(self) -> int:
        return int(self.scores.shape[0])

    @property
    def delta(self) -> np.ndarray:
        """scores − clean, per clip: (clips, layer sets, edges)."""
        return self.scores - self.clean[:, None, None]

    def to_pandas(self) -> pd.DataFrame:
        """One row per layer set × edge: layer, layers, edge, score, delta (means over clips), and
        with several clips delta_low / delta_high (bootstrap 95 % CI of the mean delta) and n; with
        one clip and a metric score, the re-decoded output."""
        rows = []
        for i, j in np.ndindex(self.scores.shape[1:]):
            row = {"layer": self.layers[i], "layers": self.layer_sets[i], "edge": self.edges[j],
                   "score": float(self.scores[:, i, j].mean()), "delta": float(self.delta[:, i, j].mean())}
            if self.n > 1:
                ci = mean_ci(self.delta[:, i, j])
                row.update(delta_low=ci.low, delta_high=ci.high, n=ci.n)
            elif self.outputs is not None:
                row["output"] = self.outputs[0, i, j]
            rows.append(row)
        return pd.DataFrame(rows)

    def per_clip(self) -> pd.DataFrame:
        """One row per clip × layer set × edge: clip, layer, edge, score, delta."""
        return pd.DataFrame([{"clip": k, "layer": self.layers[i], "edge": self.edges[j],
                              "score": float(self.scores[k, i, j]), "delta": float(self.delta[k, i, j])}
                             for k, i, j in np.ndindex(self.scores.shape)])

    def plot(self, **options: Any):
        """Heatmap of the mean delta, layer set × edge; with several clips, beside it each edge's
        mean delta per layer set with its bootstrap CI (workbench.figures.plot_edges)."""
        return plot_edges(self, **options)


@torch.no_grad()
def edge_knockout(model: Any, prompt: Any, audio: Any = None, *, edges: Sequence[tuple[str, str]] | None = None,
                  layers: Any = ("each", "all"), window_s: float = 1.0, score: Any = "logprob",
                  continuation: str | None = None, reference: str | None = None, max_new_tokens: int = 48,
                  audio_dir: Any = None) -> EdgeKnockoutResult:
    """Block each edge (rows → cols position groups) in each layer set of the LLM / Whisper decoder
    and score the task (module docstring). Default edges: answer→audio, tags→audio, answer→tags and
    audio→audio beyond `window_s` seconds (where the audio sits in the sequence)."""
    return edge_knockout_many(model, [(prompt, audio, reference)], edges=edges, layers=layers, window_s=window_s,
                              score=score, continuation=continuation, max_new_tokens=max_new_tokens,
                              audio_dir=audio_dir)


@torch.no_grad()
def edge_knockout_many(model: Any, items: Sequence[tuple], *, edges: Sequence[tuple[str, str]] | None = None,
                       layers: Any = ("each", "all"), window_s: float = 1.0, score: Any = "logprob",
                       continuation: str | None = None, max_new_tokens: int = 48,
                       audio_dir: Any = None) -> EdgeKnockoutResult:
    """`edge_knockout` over several clips: `items` are (prompt, audio) or (prompt, audio, reference)
    tuples (the reference for score="wer"/"cer"). The result holds every clip's scores; its table and
    figure give the mean delta with a bootstrap CI (`workbench.analysis.stats.mean_ci`)."""
    adapter = require(model, "edge_knockout")
    if isinstance(items, (str, tuple)) or not items:
        raise PatchingError("items: give a non-empty list of (prompt, audio) or (prompt, audio, reference) tuples")
    if isinstance(window_s, bool) or not isinstance(window_s, (int, float)) or not window_s >= 0:
        raise PatchingError(f"window_s={window_s!r}: give the window in seconds, a number ≥ 0")
    sets, chosen = _layer_sets(adapter, layers), _edges(adapter, edges)
    runs = []
    for item in items:
        if not isinstance(item, (tuple, list)) or len(item) not in (2, 3):
            raise PatchingError(f"item {item!r}: give (prompt, audio) or (prompt, audio, reference)")
        prompt, audio, reference = (*item, None)[:3]
        runs.append(_one(model, adapter, prompt, audio, reference, sets, chosen, float(window_s), score,
                         continuation, max_new_tokens, audio_dir))
    outputs = np.stack([r[2] for r in runs]) if runs[0][2] is not None else None
    measures = list(dict.fromkeys(r[3] for r in runs))   # each clip scores its own answer / reference
    measure = measures[0] if len(measures) == 1 else \
        f"{score if isinstance(score, str) else 'score'} of each clip's own answer or reference"
    return EdgeKnockoutResult(tuple(label for label, _ in sets), tuple(layer for _, layer in sets),
                              tuple(f"{rows}→{cols}" for rows, cols in chosen), np.stack([r[0] for r in runs]),
                              np.array([r[1] for r in runs]), measure, adapter.sequence.name, float(window_s),
                              outputs, tuple(r[4] for r in runs))


def _one(model: Any, adapter: Adapter, prompt: Any, audio: Any, reference: str | None,
         sets: list[tuple[str, tuple[int, ...]]], edges: list[tuple[str, str]], window_s: float, score: Any,
         continuation: str | None, max_new_tokens: int, audio_dir: Any) -> tuple:
    inputs = prompt_inputs(model, prompt, audio, audio_dir)
    audio_out = adapter.interventions.encode(inputs)
    scorer = _scorer(model, score, continuation, reference, max_new_tokens,
                     lambda: adapter.interventions.greedy(inputs, audio_out, max_new_tokens))
    full = inputs.extended(scorer.continuation)
    n = full.length if scorer.kind == "logprob" else inputs.length + max_new_tokens
    table = label_positions(model, full, n_prompt=inputs.length)
    run = _run(model, adapter, inputs, full, audio_out, scorer)
    self_modules, cross_modules = _attention_modules(adapter)
    scores = np.zeros((len(sets), len(edges)))
    outputs = np.empty(scores.shape, dtype=object) if scorer.kind == "metric" else None
    for j, (rows, cols) in enumerate(edges):
        cross = adapter.audio_attention == "cross" and cols == "audio"
        matrix = _block_matrix(table, inputs.length, n, rows, cols, window_s, cross)
        modules = cross_modules if cross else self_modules
        for i, (_, chosen) in enumerate(sets):
            with blocking(adapter, {modules[layer]: matrix for layer in chosen}, set(cross_modules)):
                scores[i, j], text = run()
            if outputs is not None:
                outputs[i, j] = text
    clean, _ = run()
    return scores, clean, outputs, scorer.label, inputs.text


def _run(model: Any, adapter: Adapter, inputs: Any, full: Any, audio: Any,
         scorer: Scorer) -> Callable[[], tuple[float, str | None]]:
    """One scored run of the prompt as the model stands (under whatever block is in force)."""
    def run() -> tuple[float, str | None]:
        if scorer.kind == "logprob":
            ids = scorer.continuation
            # double: a float32 log_softmax saturates at 0 for a confident token, hiding its change
            return logprob(adapter.interventions.run(full, audio, answer_rows(inputs.length, ids)).double(), ids), None
        text = _strip_stop(model, inputs, adapter.interventions.greedy(inputs, audio, scorer.max_new_tokens))
        return float(scorer.metric(text)), text
    return run


def _attention_modules(adapter: Adapter) -> tuple[list[nn.Module], list[nn.Module]]:
    """Per layer of the sequence, its self-attention module and (Whisper) its cross-attention module:
    the modules whose attention the pattern capture points take through transformers' interface."""
    n = len(adapter.sequence.layers)

    def modules(kind: str) -> list[nn.Module]:
        if kind not in adapter.patterns:
            return []
        points = [adapter.points[adapter.patterns[kind].format(i)] for i in range(n)]
        if any(p.how != "attention" for p in points):
            raise PatchingError(f"the {adapter.family} {kind}-attention is not computed through transformers' "
                                "attention interface, so its edges cannot be masked")
        return [p.module for p in points]

    return modules("self"), modules("cross")
