"""Tag ablation: how each change to the tags moves what the decoder says.

    result = ablate(model, "clip.flac", preset("librispeech"), variants="all",
                    targets="mister quilting is the apostle of the middle classes")
    result.to_pandas(wide=True)     # one row per variant
    result.plot()                   # heatmap of variants × measures, label bars

Every variant (a slot dropped, swapped for another value, or moved) is run on the same audio.
Per variant: the greedy output, the log-probability of each target continuation (summed and per
token), the next-token distribution at the first answer position with its KL and JS divergence
from the base prompt's, and the tokens that gain and lose the most probability there.

The audio is encoded once and the shared prefix (`<audio>`…`</audio>`) run once; every variant ×
target is a row, and the rows run packed into one sequence on top of that cache
(`workbench.analysis.scoring`). The numbers equal plain forwards of each full prompt (tests/test_ablation.py).
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from workbench.analysis import scoring
from workbench.analysis.capabilities import require
from workbench.errors import TagPromptError
from workbench.figures.ablation import plot_ablation
from workbench.tags import SLOTS, TagPrompt, TagVariant, drop_variants, permute_variants, swap_variants

VARIANT_SETS = ("drop", "swap", "permute", "all")
BASE_OUTPUT = "base output"  # the target's name when none is given: the base prompt's greedy output


@dataclass(frozen=True)
class TokenShift:
    """One token's probability at the first answer position, base prompt vs variant."""

    token: str
    id: int
    p_base: float
    p_variant: float

    @property
    def delta(self) -> float:
        return self.p_variant - self.p_base


@dataclass(frozen=True)
class VariantResult:
    label: str                     # e.g. "task: transcribe → caption", "drop task", "base"
    kind: str                      # base, drop, swap, permute, custom
    tags: str                      # the tag text after the audio
    output: str                    # greedy output, tags kept, stop token not shown
    output_ids: tuple[int, ...]    # greedy ids, stop token included when hit
    token_logprobs: dict[str, tuple[float, ...]]   # target name → log p of each target token
    kl: float                      # KL(base ‖ variant) at the first answer position, nats
    js: float                      # Jensen–Shannon divergence there, nats (at most ln 2)
    gains: tuple[TokenShift, ...]  # top-k tokens whose probability rose most
    losses: tuple[TokenShift, ...]  # top-k tokens whose probability fell most

    def logprob(self, target: str) -> float:
        return float(np.sum(self.token_logprobs[target], dtype=np.float64))


@dataclass(frozen=True)
class AblationResult:
    base: VariantResult
    variants: tuple[VariantResult, ...]
    targets: dict[str, str]              # target name → text scored
    next_logprobs: torch.Tensor          # (1 + variants, vocab): log-softmax at the first answer position, base first

    @property
    def rows(self) -> tuple[VariantResult, ...]:
        return (self.base, *self.variants)

    def label_shares(self) -> np.ndarray:
        """(rows, targets): each target's share among the targets (softmax of the summed log-probs):
        the probability of each label given that the answer is one of them."""
        logprobs = np.array([[row.logprob(name) for name in self.targets] for row in self.rows])
        shifted = np.exp(logprobs - logprobs.max(axis=1, keepdims=True))
        return shifted / shifted.sum(axis=1, keepdims=True)

    def to_pandas(self, wide: bool = False):
        """Long (default): one row per variant × measure, columns variant, kind, tags, target,
        measure, value. Measures: `kl`, `js` (target empty); per target `logprob` (summed),
        `mean_logprob` (per token), `delta_logprob` (variant − base) and, with two or more
        targets, `label_share`. wide=True: one row per variant (base first), with its greedy
        `output` and a column per measure, named `measure[target]` for per-target measures."""
        shares = self.label_shares() if len(self.targets) > 1 else None
        records = []
        for r, row in enumerate(self.rows):
            measures: list[tuple[str, str, float]] = [("", "kl", row.kl), ("", "js", row.js)]
            for t, name in enumerate(self.targets):
                per_token = row.token_logprobs[name]
                measures += [(name, "logprob", row.logprob(name)), (name, "mean_logprob", float(np.mean(per_token))),
                             (name, "delta_logprob", row.logprob(name) - self.base.logprob(name))]
                if shares is not None:
                    measures.append((name, "label_share", float(shares[r, t])))
            records += [{"variant": row.label, "kind": row.kind, "tags": row.tags, "output": row.output,
                         "target": target, "measure": measure, "value": value} for target, measure, value in measures]
        long = pd.DataFrame.from_records(records)
        if not wide:
            return long.drop(columns="output")
        long["column"] = [f"{m}[{t}]" if t else m for m, t in zip(long["measure"], long["target"])]
        table = long.pivot(index="variant", columns="column", values="value")
        info = long.drop_duplicates("variant").set_index("variant")[["kind", "tags", "output"]]
        order = list(dict.fromkeys(long["column"]))
        return info.join(table[order]).loc[[row.label for row in self.rows]]

    def shifts(self):
        """The top-k gains and losses per variant as a table: variant, direction, rank, token, id,
        p_base, p_variant, delta."""
        return pd.DataFrame.from_records(
            [{"variant": row.label, "direction": direction, "rank": rank, **{f.name: getattr(s, f.name)
              for f in fields(s)}, "delta": s.delta}
             for row in self.variants for direction, shifts in (("gain", row.gains), ("loss", row.losses))
             for rank, s in enumerate(shifts, start=1)])

    def plot(self) -> Figure:
        """Heatmap of rows (base, then variants) × measures — KL, JS and Δ log p of each target —
        and the targets' label shares or per-token probability (`workbench.figures.plot_ablation`)."""
        return plot_ablation(self)


# --------------------------------------------------------------------------------------------
def ablate(model, audio: Any, base_prompt: TagPrompt | str,
           variants: str | Sequence[TagVariant | TagPrompt | str] = "drop",
           targets: str | Sequence[str] | Mapping[str, str] | None = None, *, top_k: int = 10,
           max_new_tokens: int = 10, audio_dir: Any = None, batch_size: int = scoring.BATCH_SIZE) -> AblationResult:
    """Run the base prompt and each variant on one audio and measure what changes.

    audio: a path, a 16 kHz array, or a prompt string with `<audio>PATH</audio>` (the text the
      tags follow). base_prompt: a TagPrompt or the tag string after the audio.
    variants: "drop", "swap", "permute" or "all" (generated slot by slot from the base prompt),
      or a list of TagVariant / TagPrompt / tag strings (labels describe the change to the base).
    targets: continuations to score — a str, a list of str (e.g. the labels of a label set) or
      {name: text}; tokenized as written (tags allowed; add "<|endoftext|>" to score the end).
      None scores the base prompt's greedy output (ids as generated, stop token included).
    top_k: tokens listed per variant as gaining / losing the most probability at the first
      answer position. max_new_tokens: length of each greedy output. batch_size: rows (variant ×
      target) per LLM call; each row holds a copy of the audio prefix's keys and values.
    """
    require(model, "ablate")
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"top_k={top_k!r}: give a positive number of tokens")
    base, base_tags = _base(base_prompt)
    chosen = _variants(base, base_tags, variants)
    labels = ["base"] + [label for label, _, _ in chosen]
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:
        raise ValueError(f"variant label(s) {repeated} occur more than once ('base' is the base prompt's): "
                         "give each variant distinct tags, or TagVariant objects with distinct labels")
    prefix_inputs = scoring.audio_prefix(model, audio, audio_dir)
    prompts = [scoring.with_tags(model, prefix_inputs, base_tags)]
    prompts += [scoring.with_tags(model, prefix_inputs, tags) for _, _, tags in chosen]
    prefix = scoring.shared_prefix(model, prompts)
    outputs = scoring.greedy_batch(model, prompts, max_new_tokens=max_new_tokens, prefix=prefix,
                                   batch_size=batch_size)
    texts, target_ids = _targets(model, targets, outputs[0])
    rows = [(p, ids) for p in prompts for ids in target_ids.values()]
    n = len(target_ids)
    scores = scoring.score_targets(model, [p for p, _ in rows], [ids for _, ids in rows], prefix=prefix,
                                   batch_size=batch_size, next_token=[r % n == 0 for r in range(len(rows))])
    next_logprobs = torch.stack([scores[i * n].next_logprobs for i in range(len(prompts))])
    results = []
    for i, (label, kind, tags) in enumerate([("base", "base", base_tags), *chosen]):
        stop = outputs[i][-1] in model.stop_ids(prompts[i]) if outputs[i] else False
        kl, js = _divergences(next_logprobs[0], next_logprobs[i])
        gains, losses = _shifts(model, next_logprobs[0], next_logprobs[i], top_k)
        results.append(VariantResult(
            label=label, kind=kind, tags=tags, output=model.decode(outputs[i][:-1] if stop else outputs[i]),
            output_ids=tuple(outputs[i]),
            token_logprobs={name: tuple(scores[i * n + t].token_logprobs.tolist()) for t, name in enumerate(texts)},
            kl=kl, js=js, gains=gains, losses=losses))
    return AblationResult(results[0], tuple(results[1:]), texts, next_logprobs)


def _base(base_prompt: TagPrompt | str) -> tuple[TagPrompt | None, str]:
    if isinstance(base_prompt, TagPrompt):
        return base_prompt, base_prompt.render()
    if not isinstance(base_prompt, str):
        raise TypeError(f"base_prompt must be a TagPrompt or the tag string after the audio, "
                        f"not {type(base_prompt).__name__}")
    try:
        return TagPrompt.parse(base_prompt), base_prompt
    except TagPromptError:
        return None, base_prompt  # free text (a question, ChatML…): only hand-written variants apply


def _variants(base: TagPrompt | None, base_tags: str, variants: Any) -> list[tuple[str, str, str]]:
    """(label, kind, tags) per variant."""
    if isinstance(variants, str):
        if variants not in VARIANT_SETS:
            raise ValueError(f"variants={variants!r}: choose one of {VARIANT_SETS} or pass a list of TagVariant, "
                             "TagPrompt or tag strings")
        if base is None:
            raise ValueError(f"variants={variants!r} are generated slot by slot, but the base prompt "
                             f"{base_tags!r} is not a tag sequence TagPrompt can parse: pass the variants as a "
                             "list of tag strings")
        kinds = ("drop", "swap", "permute") if variants == "all" else (variants,)
        make = {"drop": drop_variants, "swap": swap_variants, "permute": permute_variants}
        seen, chosen = {base_tags}, []
        for kind in kinds:
            for v in make[kind](base):
                if v.prompt_text not in seen:  # "all" would otherwise repeat prompts reached two ways
                    seen.add(v.prompt_text)
                    chosen.append((v.label, kind, v.prompt_text))
        return chosen
    if not isinstance(variants, Sequence) or not variants:
        raise ValueError(f"variants={variants!r}: give {' / '.join(VARIANT_SETS)} or a non-empty list")
    chosen = []
    for v in variants:
        if isinstance(v, TagVariant):
            chosen.append((v.label, _kind_of(v.label), v.prompt_text))
        elif isinstance(v, (TagPrompt, str)):
            tags = v.render() if isinstance(v, TagPrompt) else v
            chosen.append((describe_change(base, tags), "custom", tags))
        else:
            raise TypeError(f"variant {v!r} is a {type(v).__name__}: give TagVariant, TagPrompt or tag strings")
    return chosen


def _kind_of(label: str) -> str:
    """The generator behind a TagVariant label of workbench.tags."""
    if label.startswith("drop "):
        return "drop"
    if label.startswith("order: "):
        return "permute"
    return "swap" if " → " in label else "custom"


def describe_change(base: TagPrompt | None, tags: str) -> str:
    """A readable label for a hand-written variant: `task: transcribe → caption`, `drop task`,
    `add question`, joined by `; ` (the tag text itself when either side is not a tag sequence)."""
    try:
        variant = TagPrompt.parse(tags)
    except TagPromptError:
        return tags
    if base is None:
        return tags
    changes = []
    for slot in SLOTS:
        old, new = getattr(base, slot), getattr(variant, slot)
        show = (lambda v: ",".join(v)) if slot == "instructions" else str
        if old == new:
            continue
        if old in (None, ()):
            changes.append(f"add {slot} {show(new)}")
        elif new in (None, ()):
            changes.append(f"drop {slot}")
        else:
            changes.append(f"{slot}: {show(old)} → {show(new)}")
    return "; ".join(changes) or "same tags as base"


def _targets(model, targets: Any, base_output: list[int]) -> tuple[dict[str, str], dict[str, list[int]]]:
    if targets is None:
        return {BASE_OUTPUT: model.decode(base_output)}, {BASE_OUTPUT: list(base_output)}
    if isinstance(targets, str):
        targets = {"target": targets}
    elif isinstance(targets, Mapping):
        targets = dict(targets)
    elif isinstance(targets, Sequence) and targets:
        targets = {t: t for t in targets}
    else:
        raise TypeError(f"targets={targets!r}: give a str, a non-empty list of str, a dict name → str, or None")
    for name, text in targets.items():
        if not isinstance(text, str) or not text:
            raise ValueError(f"target {name!r} is {text!r}: each target must be non-empty text")
    return targets, {name: model.tokenizer.encode(text) for name, text in targets.items()}


def _divergences(base: torch.Tensor, variant: torch.Tensor) -> tuple[float, float]:
    """KL(base ‖ variant) and Jensen–Shannon, in nats, from log-probabilities (float64)."""
    log_p, log_q = base.double(), variant.double()
    p, q = log_p.exp(), log_q.exp()
    log_m = torch.logaddexp(log_p, log_q) - np.log(2.0)
    kl = float((p * (log_p - log_q)).sum())
    js = float(0.5 * (p * (log_p - log_m)).sum() + 0.5 * (q * (log_q - log_m)).sum())
    return kl, js


def _shifts(model, base: torch.Tensor, variant: torch.Tensor, k: int) -> tuple[tuple[TokenShift, ...], ...]:
    p, q = base.double().exp(), variant.double().exp()
    delta = q - p
    k = min(k, delta.numel())

    def shift(i: int) -> TokenShift:
        return TokenShift(token=token_text(model, i), id=i, p_base=float(p[i]), p_variant=float(q[i]))

    gains = tuple(shift(i) for i in delta.topk(k).indices.tolist() if delta[i] > 0)
    losses = tuple(shift(i) for i in (-delta).topk(k).indices.tolist() if delta[i] < 0)
    return gains, losses


def token_text(model, i: int) -> str:
    """A token's text; ids past the tokenizer (the embedding's padding rows, which the official
    model can still emit, untrained ones in particular) show as `<unused id N>`."""
    return model.tokenizer.convert_ids_to_tokens(i) if i < model.tokenizer.vocab_size else f"<unused id {i}>"
