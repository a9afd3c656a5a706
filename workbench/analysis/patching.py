"""Activation patching: where in the network a tag's effect lives.

    result = patch_sweep(model, "<|startoftranscript|><|de|><|transcribe|><|notimestamps|>",   # source A
                         "<|startoftranscript|><|de|><|translate|><|notimestamps|>",           # target B
                         "speech_de.flac", what="resid")
    result.to_pandas()      # one row per layer × position group: score, delta, recovery
    result.plot()           # heatmap layer × group (what="head": layer × head)

Patching runs the source prompt A once and records, at every layer, the residual stream (the
layer's output) or each head's output (the slice of the attention's output projection input that
belongs to the head). The target prompt B is then run once per (layer, positions) or (layer, head)
with B's activations at the chosen positions overwritten by A's. Nothing else changes, so the
score moves only through what the patched activations carry.

Which source position patches which target position (the prompts may differ in length):
- "audio": the k-th audio position of A ↔ the k-th of B. Both prompts carry the same clip, so the
  audio spans have the same length (checked). In a decoder-only LLM the audio comes before the
  tags, so its residual stream is the same in A and B and patching it changes nothing: a check.
- "tags": slot by slot (the TagPrompt slot each tag fills: start, audio_lang, task, …); within a
  slot, and among tags without a slot, aligned from the end. A slot only one prompt has is not
  patched.
- "text": aligned from the end. The scored continuation (below) is text appended to both prompts,
  so its positions pair 1:1 and free text before it pairs from its own end.
- a slot name ("task", "timestamps", …): that slot's tokens; "answer": the continuation only;
  "last": the prompt's last position (the one that predicts the first answer token); "all":
  audio + tags + text.
- or explicit `positions`: target positions (the same index in A) or (source, target) pairs.

Scores (`score=`): "logprob" (default) is log p(continuation | prompt), summed over its tokens,
with `continuation` (text) appended to both prompts; without one, A's greedy output (stop token
included) is the continuation, so the score asks "how much of A's answer does the patch bring into
B". "wer" / "cer" decode B greedily under the patch (patched prompt positions, the rest computed as
usual) and compare with `reference` through jiwer (lower-cased, punctuation removed). A callable
text → float scores the greedy output any other way. `recovery` is (patched − B) / (A − B).

Head knockouts (`knockout_sweep`, `knockout_logits`) are in `workbench.analysis.knockout`; they return the
same `PatchingResult`.

Families: native Qwen-Audio v1 (and nano) and Whisper (`workbench.analysis.interventions` names the modules).
The audio is encoded once per prompt and reused by every patched run.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import jiwer
import numpy as np
import pandas as pd
import torch

from workbench.analysis.capabilities import require
from workbench.analysis.interventions import (
    answer_rows,
    check_head,
    check_layer,
    check_layers,
    encode_text,
    head_columns,
    hooks,
    logprob,
    patcher,
    prompt_inputs,
    recorder,
    short_text,
)
from workbench.analysis.positions import GROUPS, aligned_positions, decode_ids, label_positions
from workbench.errors import PatchingError
from workbench.figures.interventions import plot_patching
from workbench.models.adapter import Adapter, Stack
from workbench.models.base import ModelInputs

__all__ = ["PatchRun", "PatchingError", "PatchingResult", "aligned_positions", "patch", "patch_sweep"]

WHAT = ("resid", "head")
METRICS = ("logprob", "wer", "cer")
_NORMALIZE = jiwer.Compose([jiwer.ToLowerCase(), jiwer.RemovePunctuation(), jiwer.RemoveMultipleSpaces(),
                            jiwer.Strip()])


def _explicit(positions: Sequence[Any], n_source: int, n_target: int) -> np.ndarray:
    array = np.asarray(positions)
    if array.ndim == 1:
        array = np.stack([array, array], axis=1)
    if array.ndim != 2 or array.shape[1] != 2 or array.size == 0 or not np.issubdtype(array.dtype, np.integer):
        raise PatchingError(f"positions={positions!r}: give target position ints, or (source, target) int pairs")
    if (array < 0).any() or (array[:, 0] >= n_source).any() or (array[:, 1] >= n_target).any():
        raise PatchingError(f"positions {array.tolist()[:6]} fall outside the source ({n_source} positions) or the "
                            f"target ({n_target})")
    return array


# ---------------------------------------------------------------------------------------------
# Scores


@dataclass(frozen=True)
class Scorer:
    """How a run is scored: "logprob" of `continuation` ids, or a metric on the greedy output."""

    kind: str
    continuation: tuple[int, ...] = ()
    metric: Callable[[str], float] | None = None
    max_new_tokens: int = 48
    label: str = ""


def _scorer(model: Any, score: Any, continuation: str | None, reference: str | None, max_new_tokens: int,
            default_ids: Callable[[], list[int]]) -> Scorer:
    if callable(score):
        return Scorer("metric", metric=score, max_new_tokens=max_new_tokens,
                      label=getattr(score, "__name__", "score") + "(greedy output)")
    if score not in METRICS:
        raise PatchingError(f"score={score!r}: choose one of {METRICS}, or pass a function text → float")
    if score == "logprob":
        ids = encode_text(model, continuation) if continuation is not None else default_ids()
        if not ids:
            raise PatchingError("the continuation to score is empty: pass continuation= some text")
        return Scorer("logprob", tuple(ids), label=f"log p({short_text(decode_ids(model, ids))})")
    if not isinstance(reference, str) or not reference.strip():
        raise PatchingError(f"score={score!r} compares the greedy output with a reference: pass reference= its text")
    measure = jiwer.wer if score == "wer" else jiwer.cer
    return Scorer("metric", metric=lambda text: float(measure(_NORMALIZE(reference), _NORMALIZE(text) or "∅")),
                  max_new_tokens=max_new_tokens, label=f"{score.upper()} vs {short_text(reference)}")


# ---------------------------------------------------------------------------------------------
# One patched run


@dataclass(frozen=True)
class PatchRun:
    """A single patch: the target's logits with and without it, and the source's."""

    logits: torch.Tensor            # (L_target, vocab): target run with the patch
    target_logits: torch.Tensor     # (L_target, vocab): target run without it
    source_logits: torch.Tensor     # (L_source, vocab)
    pairs: np.ndarray               # (n, 2): (source position, target position) patched
    positions: pd.DataFrame         # the target's labelled positions (continuation: part "output")


@torch.no_grad()
def patch(model: Any, source: Any, target: Any, audio: Any = None, *, layer: int, what: str = "resid",
          head: int | None = None, group: str = "all", positions: Sequence[Any] | None = None,
          continuation: str | None = None, audio_dir: Any = None) -> PatchRun:
    """Run `target` with `layer`'s residual stream (what="resid") or one head's output (what="head",
    head=h) at `group`'s positions (or explicit `positions`) taken from the `source` run. Prompts are
    strings or TagPrompts with the same `audio`; `continuation` (text) is appended to both."""
    if what not in WHAT:
        raise PatchingError(f"what={what!r}: choose one of {WHAT}")
    if what == "resid" and head is not None:
        raise PatchingError("head= is for what='head'; the residual stream has no heads")
    adapter = require(model, "patch_sweep")
    stack = adapter.sequence
    layer = check_layer(stack, layer)
    columns = slice(None) if what == "resid" else head_columns(stack.head_inputs[layer], check_head(stack, head),
                                                              stack.n_heads)
    runs = _Runs.build(model, adapter, source, target, audio, audio_dir,
                       encode_text(model, continuation) if continuation is not None else [])
    pairs = runs.pairs(group, positions)
    recorded = runs.record(stack, what == "head", [layer])
    logits = runs.patched(stack, what == "head", layer, recorded[layer], pairs, columns)
    return PatchRun(logits, runs.target_logits, runs.source_logits, pairs, runs.target_table)


@dataclass
class _Runs:
    """Source and target inputs (continuation appended), their encoded audio, clean logits, tables."""

    model: Any
    adapter: Adapter
    source_prompt: ModelInputs
    target_prompt: ModelInputs
    source: ModelInputs             # the prompt + continuation
    target: ModelInputs
    source_audio: Any
    target_audio: Any
    source_table: pd.DataFrame
    target_table: pd.DataFrame
    source_logits: torch.Tensor
    target_logits: torch.Tensor

    @classmethod
    def build(cls, model: Any, adapter: Adapter, source: Any, target: Any, audio: Any, audio_dir: Any,
              continuation: Sequence[int]) -> _Runs:
        prompts = [prompt_inputs(model, p, audio, audio_dir) for p in (source, target)]
        return cls._run(model, adapter, prompts, [adapter.interventions.encode(p) for p in prompts], continuation)

    @classmethod
    def _run(cls, model: Any, adapter: Adapter, prompts: list[ModelInputs], audios: list[Any],
             continuation: Sequence[int]) -> _Runs:
        extended = [p.extended(continuation) for p in prompts]
        tables = [label_positions(model, e, n_prompt=p.length) for e, p in zip(extended, prompts)]
        logits = [adapter.interventions.run(e, a) for e, a in zip(extended, audios)]
        return cls(model, adapter, *prompts, *extended, *audios, *tables, *logits)

    def continued(self, continuation: Sequence[int]) -> _Runs:
        """The same prompts and encoded audio with `continuation` appended to both."""
        return self._run(self.model, self.adapter, [self.source_prompt, self.target_prompt],
                         [self.source_audio, self.target_audio], continuation)

    def pairs(self, group: str, positions: Sequence[Any] | None) -> np.ndarray:
        if positions is not None:
            return _explicit(positions, self.source.length, self.target.length)
        pairs = aligned_positions(self.source_table, self.target_table, group)
        if len(pairs) == 0:
            raise PatchingError(f"group {group!r} picks no position of both prompts; the target's groups: "
                                f"{sorted(set(self.target_table['group']))} (slots: "
                                f"{[s for s in dict.fromkeys(self.target_table['slot']) if s]})")
        return pairs

    def record(self, stack: Stack, heads: bool, layers: Sequence[int]) -> dict[int, torch.Tensor]:
        store: dict[int, torch.Tensor] = {}
        modules = stack.head_inputs if heads else stack.layers
        with hooks([(modules[i], recorder(store, i, heads), heads) for i in layers]):
            self.adapter.interventions.run(self.source, self.source_audio)
        return store

    def patched(self, stack: Stack, heads: bool, layer: int, recorded: torch.Tensor, pairs: np.ndarray,
                columns: slice, keep: slice = slice(None)) -> torch.Tensor:
        module = (stack.head_inputs if heads else stack.layers)[layer]
        with hooks([(module, patcher(recorded, pairs, heads, columns), heads)]):
            return self.adapter.interventions.run(self.target, self.target_audio, keep)

    def generate_patched(self, stack: Stack, heads: bool, layer: int, recorded: torch.Tensor, pairs: np.ndarray,
                         columns: slice, max_new_tokens: int) -> list[int]:
        module = (stack.head_inputs if heads else stack.layers)[layer]
        with hooks([(module, patcher(recorded, pairs, heads, columns), heads)]):
            return self.adapter.interventions.greedy(self.target, self.target_audio, max_new_tokens)


# ---------------------------------------------------------------------------------------------
# Sweeps


@dataclass(frozen=True)
class PatchingResult:
    """Scores of a sweep: one per layer × column (a position group, or a head)."""

    kind: str                        # "resid", "head" (patching) or "knockout:zero" / "knockout:mean"
    stack: str                       # "llm", "decoder" or "encoder"
    layers: tuple[int, ...]
    columns: tuple[str, ...]         # group names, or "head 0", "head 1", …
    scores: np.ndarray               # (layers, columns)
    clean: float                     # the target run without any patch (knockouts: the intact model)
    source: float | None             # the source run's own score (patching only)
    measure: str                     # what was scored, e.g. "log p(' Heute scheint…')" or "WER vs '…'"
    outputs: np.ndarray | None = None   # (layers, columns) greedy texts when a metric scored them
    prompts: tuple[str, ...] = ()     # (source, target) for patching, (prompt,) for knockouts

    @property
    def delta(self) -> np.ndarray:
        """scores − clean: what each patch or knockout changed."""
        return self.scores - self.clean

    @property
    def recovery(self) -> np.ndarray | None:
        """(patched − target) / (source − target): 0 = no effect, 1 = the source's score (patching only)."""
        if self.source is None or self.source == self.clean:
            return None
        return (self.scores - self.clean) / (self.source - self.clean)

    def to_pandas(self) -> pd.DataFrame:
        """One row per layer × column: layer, column, score, delta, recovery (patching), output (metrics)."""
        rows = []
        recovery = self.recovery
        for (i, j), value in np.ndenumerate(self.scores):
            row = {"layer": self.layers[i], "column": self.columns[j], "score": float(value),
                   "delta": float(value - self.clean)}
            if recovery is not None:
                row["recovery"] = float(recovery[i, j])
            if self.outputs is not None:
                row["output"] = self.outputs[i, j]
            rows.append(row)
        return pd.DataFrame(rows)

    def best(self, k: int = 5) -> pd.DataFrame:
        """The k cells that moved the score most (largest |delta|)."""
        table = self.to_pandas()
        return table.reindex(table["delta"].abs().sort_values(ascending=False).index).head(k).reset_index(drop=True)

    def plot(self, **options: Any):
        """Heatmap of delta, layer × column (workbench.figures.plot_patching)."""
        return plot_patching(self, **options)


@torch.no_grad()
def patch_sweep(model: Any, source: Any, target: Any, audio: Any = None, *, what: str = "resid",
                groups: Sequence[str] | None = None, positions: Sequence[Any] | None = None,
                layers: Sequence[int] | None = None, score: Any = "logprob", continuation: str | None = None,
                reference: str | None = None, max_new_tokens: int = 48, audio_dir: Any = None) -> PatchingResult:
    """Patch every layer (or `layers`) of the LLM / Whisper decoder from `source` into `target`.

    what="resid": one column per position group (default: those of "audio", "tags", "text" that
      pick positions in both prompts; any group of `aligned_positions`), or one column for
      explicit `positions`. what="head": one column per head, each patched at the positions of
      `groups` together (default: all aligned positions).
    score: "logprob" (of `continuation`, default the source's greedy output), "wer" / "cer"
      (against `reference`, on the patched target's greedy output), or a function text → float.
    """
    if what not in WHAT:
        raise PatchingError(f"what={what!r}: choose one of {WHAT}")
    adapter = require(model, "patch_sweep")
    stack = adapter.sequence
    chosen_layers = check_layers(stack, layers)
    probe = _Runs.build(model, adapter, source, target, audio, audio_dir, [])
    scorer = _scorer(model, score, continuation, reference, max_new_tokens,
                     lambda: adapter.interventions.greedy(probe.source, probe.source_audio, max_new_tokens))
    runs = probe.continued(scorer.continuation) if scorer.kind == "logprob" else probe
    names = _group_names(runs, groups, positions, what)
    pair_sets = [runs.pairs(name, positions if name == "positions" else None) for name in names]
    heads = what == "head"
    if heads:
        pair_sets = [np.unique(np.concatenate(pair_sets), axis=0)]
        columns = [head_columns(stack.head_inputs[0], h, stack.n_heads) for h in range(stack.n_heads)]
        labels = [f"head {h}" for h in range(stack.n_heads)]
    else:
        columns, labels = [slice(None)] * len(names), list(names)
    recorded = runs.record(stack, heads, chosen_layers)
    answer = answer_rows(probe.target.length, scorer.continuation)
    scores = np.zeros((len(chosen_layers), len(labels)))
    outputs = np.empty(scores.shape, dtype=object) if scorer.kind == "metric" else None
    for i, layer in enumerate(chosen_layers):
        for j in range(len(labels)):
            pairs, cols = (pair_sets[0], columns[j]) if heads else (pair_sets[j], columns[j])
            if scorer.kind == "logprob":
                logits = runs.patched(stack, heads, layer, recorded[layer], pairs, cols, answer)
                scores[i, j] = logprob(logits, scorer.continuation)
            else:
                ids = runs.generate_patched(stack, heads, layer, recorded[layer], pairs, cols, scorer.max_new_tokens)
                outputs[i, j] = _strip_stop(model, runs.target, ids)
                scores[i, j] = scorer.metric(outputs[i, j])
    clean, source_score = _clean_scores(model, runs, probe, scorer)
    return PatchingResult(what, stack.name, tuple(chosen_layers), tuple(labels), scores, clean, source_score,
                          scorer.label, outputs, (runs.source.text, runs.target.text))


def _group_names(runs: _Runs, groups: Sequence[str] | None, positions: Any, what: str) -> list[str]:
    if positions is not None:
        if groups is not None:
            raise PatchingError("give either groups= or positions=, not both")
        return ["positions"]
    if groups is None:
        if what == "head":
            return ["all"]
        found = [g for g in GROUPS if len(aligned_positions(runs.source_table, runs.target_table, g))]
        if not found:
            raise PatchingError("no position group (audio, tags, text) has positions in both prompts")
        return found
    if isinstance(groups, str) or not groups:
        raise PatchingError(f"groups={groups!r}: give a non-empty list of group names, e.g. ['tags', 'text']")
    return list(dict.fromkeys(groups))


def _strip_stop(model: Any, inputs: ModelInputs, ids: list[int]) -> str:
    ids = ids[:-1] if ids and ids[-1] in model.stop_ids(inputs) else ids
    return model.decode(ids, keep_tags=False)


def _clean_scores(model: Any, runs: _Runs, probe: _Runs, scorer: Scorer) -> tuple[float, float]:
    if scorer.kind == "logprob":
        ids = scorer.continuation
        return (logprob(runs.target_logits[answer_rows(runs.target_prompt.length, ids)], ids),
                logprob(runs.source_logits[answer_rows(runs.source_prompt.length, ids)], ids))
    texts = [_strip_stop(model, p, runs.adapter.interventions.greedy(p, a, scorer.max_new_tokens))
             for p, a in ((runs.target, runs.target_audio), (runs.source, runs.source_audio))]
    return scorer.metric(texts[0]), scorer.metric(texts[1])
