"""Attribution patching: activation patching's first-order estimate, for every head at once.

    result = attribution_patch(model, clean_prompt, corrupt_prompt, audio, what="head")
    result.to_pandas()       # one row per layer × head: effect, estimated score, recovery
    result.plot()            # heatmap layer × head (workbench.figures.plot_patching)
    agreement(result, wb.patch_sweep(model, clean_prompt, corrupt_prompt, audio, what="head"))

Activation patching (`workbench.analysis.patching`) runs the corrupted prompt once per layer × head
with that head's clean output patched in: 32 × 32 = 1,024 forward passes on Qwen-Audio's 7B LLM.
Attribution patching (Nanda, "Attribution patching", 2023; Syed et al., arXiv:2310.10348) replaces
each of them with the linear term of a Taylor expansion around the corrupted run:

    metric(patched) − metric(corrupt)  ≈  (a_clean − a_corrupt) · ∂metric/∂a |corrupt

summed over the patched positions and over the head's columns (or the whole width of the residual
stream). Every a_clean comes from ONE clean forward pass; every a_corrupt and every gradient from
ONE corrupted forward + backward pass (torch.autograd.grad), so the whole layer × head grid, and
the layer × position-group grid, cost about three forward passes: the 32 × 32 heads of the 7B fit
one GPU in seconds.

The patched positions, the head slices and the score are those of `patch_sweep` (the same
`aligned_positions`, `head_columns`, `answer_rows`), so the two results compare cell by cell:
`clean` here is `patch_sweep`'s source, `corrupt` its target, and `effects` estimates its `delta`.
The estimate is exact for a metric linear in the activation; log p is not, and big effects (a head
that carries the answer) saturate, so the estimate ranks cells rather than predicts them: patch the
top cells for real (`top()`, `agreement()`).

Measured on nano (speech_en, the English transcription prompt, log p of its greedy answer, against
`patch_sweep`), Pearson r over the 4 × 6 heads / over the 4 × 3 layer × group cells, one tag
corrupted: text language en→de 0.95 / 0.94 (`tests/test_attribution_patching.py` asserts ≥ 0.9),
<|wo_itn|>→<|itn|> 0.91 / 0.96, <|notimestamps|>→<|timestamps|> 0.91 / 0.95,
<|startoftranscript|>→<|startofanalysis|> 0.91 / 0.99, <|transcribe|>→<|translate|> 0.82 / 0.83;
two tags (translate into German) 0.70 / 0.73, where one head's effect is overestimated 4×.

Families: those with interventions (the capability table); Whisper's decoder as well as the LLM.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
import torch
from scipy import stats

from workbench.analysis.capabilities import require
from workbench.analysis.interventions import (
    answer_rows,
    check_layers,
    encode_text,
    head_columns,
    hooks,
    prompt_inputs,
    recorder,
    short_text,
)
from workbench.analysis.positions import GROUPS, aligned_positions, decode_ids, label_positions
from workbench.errors import PatchingError
from workbench.figures.attribution_patching import plot_attribution_agreement
from workbench.figures.interventions import plot_patching
from workbench.models.adapter import Stack

__all__ = ["Agreement", "AttributionResult", "agreement", "attribution_patch"]

WHAT = ("head", "resid")


@dataclass(frozen=True)
class AttributionResult:
    """Estimated patching effects: one per layer × column (a head, or a position group). It reads
    as a `PatchingResult` (`delta`, `scores`, `recovery`, `plot`), estimated instead of run."""

    kind: str                        # "head" or "resid"
    stack: str                       # "llm" or "decoder"
    layers: tuple[int, ...]
    columns: tuple[str, ...]         # "head 0", "head 1", … or group names
    effects: np.ndarray              # (layers, columns): estimated patched − corrupt
    clean: float                     # the clean run's score (patch_sweep's source)
    corrupt: float                   # the corrupted run's score (patch_sweep's target)
    measure: str                     # e.g. "log p('the happy cow…')"
    prompts: tuple[str, str] = ()    # (clean, corrupt)

    @property
    def delta(self) -> np.ndarray:
        """The estimated effect of each patch (patch_sweep's `delta`)."""
        return self.effects

    @property
    def scores(self) -> np.ndarray:
        """corrupt + effect: the estimated score of each patched run."""
        return self.corrupt + self.effects

    @property
    def recovery(self) -> np.ndarray | None:
        """effect / (clean − corrupt): 1 = the patch would bring back the clean score."""
        return None if self.clean == self.corrupt else self.effects / (self.clean - self.corrupt)

    def to_pandas(self) -> pd.DataFrame:
        """One row per layer × column: layer, column, effect, score (estimated), recovery."""
        recovery = self.recovery
        rows = [{"layer": self.layers[i], "column": self.columns[j], "effect": float(v),
                 "score": float(self.corrupt + v), "recovery": np.nan if recovery is None else float(recovery[i, j])}
                for (i, j), v in np.ndenumerate(self.effects)]
        return pd.DataFrame(rows)

    def top(self, k: int = 10) -> pd.DataFrame:
        """The k cells with the largest |effect|: the heads (or groups) worth patching for real."""
        table = self.to_pandas()
        return table.reindex(table["effect"].abs().sort_values(ascending=False).index).head(k).reset_index(drop=True)

    def plot(self, **options: Any):
        """Heatmap of the estimated effect, layer × column (workbench.figures.plot_patching)."""
        what = "head outputs" if self.kind == "head" else "residual stream"
        options.setdefault("title", f"attribution patching ({what}, first-order estimate) · score {self.measure}\n"
                                    f"clean {self.prompts[0]}\ncorrupt {self.prompts[1]}" if self.prompts else None)
        return plot_patching(self, **options)


@dataclass(frozen=True)
class Agreement:
    """How well the estimates track real patching, over the cells both have."""

    pearson: float
    spearman: float
    n: int
    table: pd.DataFrame              # layer, column, estimated, patched

    def plot(self, **options: Any):
        """Estimated vs patched effect, one dot per cell (workbench.figures.plot_attribution_agreement)."""
        return plot_attribution_agreement(self, **options)


def agreement(estimate: AttributionResult, patched: Any) -> Agreement:
    """Pearson and Spearman correlation between `estimate.effects` and a `PatchingResult`'s `delta`
    (a `patch_sweep` over the same prompts, audio, layers, columns and score)."""
    if tuple(estimate.layers) != tuple(patched.layers) or tuple(estimate.columns) != tuple(patched.columns):
        raise PatchingError(f"the results cover different cells: layers {estimate.layers} × {estimate.columns} vs "
                            f"{tuple(patched.layers)} × {tuple(patched.columns)}; run patch_sweep with the same "
                            "what=, layers= and groups=")
    x, y = np.asarray(estimate.effects, float).ravel(), np.asarray(patched.delta, float).ravel()
    if x.size < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        raise PatchingError(f"{x.size} cells, estimated or patched effects all equal: no correlation to measure")
    table = pd.DataFrame({"layer": np.repeat(estimate.layers, len(estimate.columns)),
                          "column": np.tile(estimate.columns, len(estimate.layers)), "estimated": x, "patched": y})
    return Agreement(float(stats.pearsonr(x, y)[0]), float(stats.spearmanr(x, y)[0]), int(x.size), table)


# ---------------------------------------------------------------------------------------------
# The two runs


def _logprob(logits: torch.Tensor, ids: Sequence[int]) -> torch.Tensor:
    """`interventions.logprob`, kept as a tensor so that it can be differentiated."""
    rows = logits.log_softmax(-1)
    return rows[torch.arange(len(ids)), torch.tensor(list(ids))].double().sum()


def _tap(store: dict[int, torch.Tensor], layer: int, pre: bool) -> Callable:
    """A hook that keeps its module's input (pre) or output itself, still in the autograd graph."""
    if pre:
        return lambda module, args: store.__setitem__(layer, args[0])
    return lambda module, args, output: store.__setitem__(layer, output[0] if isinstance(output, (tuple, list))
                                                          else output)


def _into_graph(module: Any, args: tuple) -> tuple:
    """Pre-hook on the first layer: its input becomes a leaf that needs a gradient, so every
    activation after it is in the graph even when no weight requires a gradient."""
    return (args[0].detach().requires_grad_(True), *args[1:])


def _corrupt_pass(adapter: Any, stack: Stack, heads: bool, layers: list[int], inputs: Any, audio: Any,
                  rows: slice, metric: Callable[[torch.Tensor], torch.Tensor]
                  ) -> tuple[float, dict[int, torch.Tensor], dict[int, torch.Tensor]]:
    """One forward + one backward of the corrupted run: its score, activations and their gradients."""
    store: dict[int, torch.Tensor] = {}
    modules = stack.head_inputs if heads else stack.layers
    taps = [(modules[i], _tap(store, i, heads), heads) for i in layers]
    with torch.enable_grad(), hooks([(stack.layers[0], _into_graph, True), *taps]):
        score = metric(adapter.interventions.run(inputs, audio, rows))
        if not score.requires_grad:
            raise PatchingError("the metric does not depend on the model's activations: it must be computed "
                                "from the logits it is given, with torch operations")
        grads = torch.autograd.grad(score, [store[i] for i in layers], allow_unused=True)
    activations = {i: store[i].detach() for i in layers}
    gradients = {i: torch.zeros_like(activations[i]) if g is None else g.detach() for i, g in zip(layers, grads)}
    return float(score.detach()), activations, gradients


def _group_names(source: pd.DataFrame, target: pd.DataFrame, groups: Sequence[str] | None, what: str) -> list[str]:
    """patch_sweep's columns: heads patch all aligned positions; groups default to those both prompts have."""
    if groups is None:
        names = ["all"] if what == "head" else [g for g in GROUPS if len(aligned_positions(source, target, g))]
        if not names:
            raise PatchingError("no position group (audio, tags, text) has positions in both prompts")
        return names
    if isinstance(groups, str) or not groups:
        raise PatchingError(f"groups={groups!r}: give a non-empty list of group names, e.g. ['tags', 'text']")
    return list(dict.fromkeys(groups))


def attribution_patch(model: Any, clean: Any, corrupt: Any, audio: Any = None, *, what: str = "head",
                      groups: Sequence[str] | None = None, layers: Sequence[int] | None = None,
                      metric: str | Callable[[torch.Tensor], torch.Tensor] = "logprob",
                      continuation: str | None = None, max_new_tokens: int = 48,
                      audio_dir: Any = None) -> AttributionResult:
    """Estimate `patch_sweep(model, clean, corrupt, audio, what=…)` from one clean forward pass and
    one corrupted forward + backward pass.

    what="head": one column per head of the LLM (Whisper: decoder), each patched at the positions of
      `groups` together (default: every aligned position). what="resid": one column per position
      group (default: those of audio, tags, text both prompts have).
    metric: "logprob" (default): log p(continuation), summed, where `continuation` defaults to the
      clean run's greedy output (stop token included), as `patch_sweep`; or a function of the logits
      of the positions that predict the continuation ((tokens, vocab) tensor) → a scalar tensor.
    """
    if what not in WHAT:
        raise PatchingError(f"what={what!r}: choose one of {WHAT}")
    if not (metric == "logprob" or callable(metric)):
        raise PatchingError(f"metric={metric!r}: use 'logprob' or a function logits (tokens, vocab) → scalar tensor")
    adapter = require(model, "attribution_patch")
    stack = adapter.sequence
    chosen = check_layers(stack, layers)
    prompts = [prompt_inputs(model, p, audio, audio_dir) for p in (clean, corrupt)]
    audios = [adapter.interventions.encode(p) for p in prompts]
    if continuation is None:
        with torch.no_grad():
            ids = adapter.interventions.greedy(prompts[0], audios[0], max_new_tokens)
    else:
        ids = encode_text(model, continuation)
    if not ids:
        raise PatchingError("the continuation to score is empty: pass continuation= some text")
    runs = [p.extended(ids) for p in prompts]
    tables = [label_positions(model, r, n_prompt=p.length) for r, p in zip(runs, prompts)]
    rows = [answer_rows(p.length, ids) for p in prompts]
    score = (lambda logits: _logprob(logits, ids)) if metric == "logprob" else metric
    measure = f"log p({short_text(decode_ids(model, ids))})" if metric == "logprob" else getattr(metric, "__name__",
                                                                                                  "metric")
    names = _group_names(*tables, groups, what)
    pair_sets = [aligned_positions(*tables, name) for name in names]
    for name, pairs in zip(names, pair_sets):
        if len(pairs) == 0:
            raise PatchingError(f"group {name!r} picks no position of both prompts; the corrupted prompt's groups: "
                                f"{sorted(set(tables[1]['group']))}")
    heads = what == "head"
    clean_acts: dict[int, torch.Tensor] = {}
    modules = stack.head_inputs if heads else stack.layers
    with torch.no_grad(), hooks([(modules[i], recorder(clean_acts, i, heads), heads) for i in chosen]):
        clean_score = float(score(adapter.interventions.run(runs[0], audios[0], rows[0])))
    corrupt_score, corrupt_acts, grads = _corrupt_pass(adapter, stack, heads, chosen, runs[1], audios[1], rows[1],
                                                       score)
    if heads:
        pairs = np.unique(np.concatenate(pair_sets), axis=0)
        columns = [(pairs, head_columns(stack.head_inputs[0], h, stack.n_heads)) for h in range(stack.n_heads)]
        labels = [f"head {h}" for h in range(stack.n_heads)]
    else:
        columns, labels = [(pairs, slice(None)) for pairs in pair_sets], names
    effects = np.zeros((len(chosen), len(labels)))
    for i, layer in enumerate(chosen):
        for j, (pairs, cols) in enumerate(columns):
            src, tgt = torch.as_tensor(pairs[:, 0]), torch.as_tensor(pairs[:, 1])
            difference = clean_acts[layer][0, src, cols].double() - corrupt_acts[layer][0, tgt, cols].double()
            effects[i, j] = float((difference * grads[layer][0, tgt, cols].double()).sum())
    return AttributionResult(what, stack.name, tuple(chosen), tuple(labels), effects, clean_score, corrupt_score,
                             measure, (runs[0].text, runs[1].text))
