"""captum attribution of a target's log-probability over tag slots and over audio time.

    tags = attribute_tags(model, "clip.flac", preset("librispeech"), target="mister quilting")
    tags.plot()                     # one bar per slot and method
    audio = attribute_audio(model, "clip.flac", preset("librispeech"), method="occlusion", window=5)
    audio.plot()                    # per-token scores under the mel, seconds on a shared axis

The score is log p(target | audio, tags), summed over the target's tokens; without a target,
the prompt's greedy output (stop token included) is the target.

Tag slots (`attribute_tags`): each present slot of the TagPrompt is one feature. A feature is
absent when its slot is dropped (baseline="drop"), replaced by a neutral tag (baseline="neutral":
`<|unknown|>` for the two language slots; slots without a neutral value are dropped), or replaced
by values you choose ({slot: value}, other slots dropped). Methods: captum `FeatureAblation`
("ablation": f(all tags) − f(slot absent)) and `ShapleyValueSampling` ("shapley"). Every
perturbed prompt is scored on the shared audio prefix (workbench.analysis.scoring), one batch per captum
call, and a coalition seen before is not scored again.

Audio time (`attribute_audio`): the audio enters the LLM after the embedding layer, so the
attribution is taken at the spliced audio-token embeddings, one per 40 ms (bos/eos and every text
position held fixed):
- "occlusion": windows of `window` tokens (window × 40 ms) replaced by zeros or by the clip's mean
  token embedding (`fill`); score = f(audio) − f(window occluded), so positive means the segment
  supports the target. Computed by captum `FeatureAblation` over a window mask, which is
  occlusion with non-overlapping windows; captum's `Occlusion` slides full windows only and
  would leave a clip's last, shorter window unscored.
- "integrated_gradients": captum `IntegratedGradients` from the zero (or mean) embeddings to the
  audio's, summed over the hidden dimension; `convergence_delta` reports how far the scores'
  sum is from f(audio) − f(baseline).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from captum.attr import FeatureAblation, IntegratedGradients, ShapleyValueSampling
from matplotlib.figure import Figure

from workbench.analysis import scoring
from workbench.analysis.capabilities import require
from workbench.audio import SECONDS_PER_TOKEN, mel_frames
from workbench.errors import TagPromptError
from workbench.figures.attribution import plot_audio_attribution, plot_tag_attribution
from workbench.models.adapter import Splice
from workbench.models.base import ModelInputs
from workbench.tags import TagPrompt

TAG_METHODS = ("ablation", "shapley")
AUDIO_METHODS = ("occlusion", "integrated_gradients")
FILLS = ("zeros", "mean")
NEUTRAL_TAGS = {"audio_lang": "unknown", "text_lang": "unknown"}
_BLANK = dict(start=None, audio_lang=None, task=None, text_lang=None, timestamps=None, instructions=())


# --------------------------------------------------------------------------------------------
# Over tag slots

@dataclass(frozen=True)
class TagAttribution:
    slots: tuple[tuple[str, str], ...]   # (slot, tag text): the features, in prompt order
    baselines: dict[str, str]            # slot → what absent means: "drop", or the replacement tag text
    target: str                          # the target scored (decoded ids when it is the greedy output)
    logprob: float                       # log p(target | audio, all tags)
    scores: dict[str, np.ndarray]        # method → (slots,) attribution in nats

    def to_pandas(self):
        """One row per slot × method: slot, tags, baseline, method, attribution."""
        return pd.DataFrame.from_records(
            [{"slot": slot, "tags": text, "baseline": self.baselines[slot], "method": method,
              "attribution": float(scores[i])}
             for method, scores in self.scores.items() for i, (slot, text) in enumerate(self.slots)])

    def plot(self) -> Figure:
        """One group of bars per slot, one bar per method (`workbench.figures.plot_tag_attribution`)."""
        return plot_tag_attribution(self)


def attribute_tags(model, audio: Any, prompt: TagPrompt | str, target: str | None = None, *,
                   methods: Sequence[str] = TAG_METHODS, baseline: str | Mapping[str, Any] = "drop",
                   n_samples: int = 25, seed: int = 0, max_new_tokens: int = 16, audio_dir: Any = None,
                   batch_size: int = scoring.BATCH_SIZE) -> TagAttribution:
    """Attribute log p(target) to the prompt's tag slots with captum (module docstring).

    audio: a path, a 16 kHz array, or a prompt string with `<audio>PATH</audio>`; prompt: a
    TagPrompt or its tag string. baseline: "drop", "neutral" or {slot: value}. n_samples: the
    permutations ShapleyValueSampling draws (seeded by `seed`, the global RNG left untouched).
    """
    require(model, "attribute_tags")
    unknown = [m for m in methods if m not in TAG_METHODS]
    if unknown or not methods:
        raise ValueError(f"methods={list(methods)!r}: choose one or more of {TAG_METHODS}")
    tag_prompt = prompt if isinstance(prompt, TagPrompt) else _parse(prompt)
    slots = tag_prompt.slots()
    absent = _absent_texts(slots, baseline)
    prefix_inputs = scoring.audio_prefix(model, audio, audio_dir)
    full = scoring.with_tags(model, prefix_inputs, tag_prompt.render())
    prefix = scoring.shared_prefix(model, [full, scoring.with_tags(model, prefix_inputs, "")])
    target_text, target_ids = _target(model, full, target, max_new_tokens, prefix)
    seen: dict[tuple[bool, ...], float] = {}

    def forward(mask: torch.Tensor) -> torch.Tensor:
        keys = [tuple(v > 0.5 for v in row) for row in mask.tolist()]
        new = [k for k in dict.fromkeys(keys) if k not in seen]
        if new:
            prompts = [scoring.with_tags(model, prefix_inputs, "".join(
                text if kept else absent[slot] for kept, (slot, text) in zip(key, slots))) for key in new]
            scores = scoring.score_targets(model, prompts, [target_ids] * len(new), prefix=prefix,
                                           batch_size=batch_size, next_token=False)
            seen.update({key: s.logprob for key, s in zip(new, scores)})
        return torch.tensor([seen[k] for k in keys], dtype=torch.float64)

    everything = torch.ones(1, len(slots), dtype=torch.float64)
    features = torch.arange(len(slots))[None]
    results = {}
    for method in methods:
        if method == "ablation":
            attr = FeatureAblation(forward).attribute(everything, baselines=0.0, feature_mask=features,
                                                      perturbations_per_eval=batch_size)
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                attr = ShapleyValueSampling(forward).attribute(everything, baselines=0.0, feature_mask=features,
                                                               n_samples=n_samples, perturbations_per_eval=batch_size)
        results[method] = attr[0].numpy()
    return TagAttribution(slots=slots, baselines={s: absent[s] or "drop" for s, _ in slots}, target=target_text,
                          logprob=seen[(True,) * len(slots)], scores=results)


def _parse(prompt: Any) -> TagPrompt:
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a TagPrompt or a tag string, not {type(prompt).__name__}")
    try:
        return TagPrompt.parse(prompt)
    except TagPromptError as error:
        raise TagPromptError(f"attribute_tags needs a prompt made of tag slots: {error}") from None


def _absent_texts(slots: Sequence[tuple[str, str]], baseline: Any) -> dict[str, str]:
    """slot → the text standing in for it when absent ("" drops it)."""
    present = [slot for slot, _ in slots]
    if baseline == "drop":
        return {slot: "" for slot in present}
    if baseline == "neutral":
        chosen = {slot: NEUTRAL_TAGS[slot] for slot in present if slot in NEUTRAL_TAGS}
    elif isinstance(baseline, Mapping):
        chosen = dict(baseline)
        extra = [slot for slot in chosen if slot not in present]
        if extra:
            raise ValueError(f"baseline names slot(s) {extra} that the prompt does not have; its slots: {present}")
    else:
        raise ValueError(f"baseline={baseline!r}: give 'drop', 'neutral' or a dict slot → replacement value")
    return {slot: _slot_text(slot, chosen[slot]) if slot in chosen else "" for slot in present}


def _slot_text(slot: str, value: Any) -> str:
    """The text a slot renders to with `value`, e.g. ('audio_lang', 'unknown') → '<|unknown|>'."""
    fields = {**_BLANK, slot: value}
    if slot == "question":
        fields["task"] = "question"
    return dict(TagPrompt(**fields).slots())[slot]


def _target(model, full: ModelInputs, target: str | None, max_new_tokens: int,
            prefix: scoring.SharedPrefix | None = None) -> tuple[str, list[int]]:
    if target is None:
        ids = scoring.greedy_batch(model, [full], max_new_tokens=max_new_tokens, prefix=prefix)[0]
        return model.decode(ids), ids
    if not isinstance(target, str) or not target:
        raise ValueError(f"target={target!r}: give non-empty text, or None for the greedy output")
    return target, model.tokenizer.encode(target)


# --------------------------------------------------------------------------------------------
# Over audio time

@dataclass(frozen=True)
class AudioAttribution:
    method: str                # "occlusion" or "integrated_gradients"
    scores: np.ndarray         # (audio tokens,): one score per 40 ms token
    window: int                # tokens per occluded segment (1 for integrated gradients)
    fill: str                  # "zeros" or "mean": the occluded / baseline embedding
    target: str
    logprob: float             # log p(target | audio, tags)
    mel: torch.Tensor          # (n_mels, frames) of the clip alone (the 30 s padding cut off)
    n_samples: int
    convergence_delta: float | None = None   # integrated gradients: sum(scores) − (f(audio) − f(baseline))

    @property
    def seconds(self) -> np.ndarray:
        """Start of each audio token, in seconds from the clip's start."""
        return np.arange(len(self.scores)) * SECONDS_PER_TOKEN

    def to_pandas(self):
        """One row per audio token: token, start_s, end_s, score."""
        return pd.DataFrame({"token": np.arange(len(self.scores)), "start_s": self.seconds,
                             "end_s": self.seconds + SECONDS_PER_TOKEN, "score": self.scores})

    def plot(self) -> Figure:
        """The clip's mel with the per-token scores as a strip under it, seconds on one shared axis
        (`workbench.figures.plot_audio_attribution`)."""
        return plot_audio_attribution(self)


def attribute_audio(model, audio: Any, prompt: TagPrompt | str, target: str | None = None, *,
                    method: str = "occlusion", window: int = 1, fill: str = "zeros", n_steps: int = 50,
                    audio_index: int = 0, max_new_tokens: int = 16, audio_dir: Any = None,
                    batch_size: int = scoring.BATCH_SIZE) -> AudioAttribution:
    """Attribute log p(target) to the audio's 40 ms tokens (module docstring).

    audio: a path, a 16 kHz array, or a prompt string with `<audio>PATH</audio>` (audio_index picks
    the clip when it holds several); prompt: a TagPrompt or the text after the audio.
    """
    splice = require(model, "attribute_audio").splice
    if method not in AUDIO_METHODS:
        raise ValueError(f"method={method!r}: choose one of {AUDIO_METHODS}")
    if fill not in FILLS:
        raise ValueError(f"fill={fill!r}: choose 'zeros' or 'mean' (the clip's mean token embedding)")
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ValueError(f"window={window!r}: give a positive number of 40 ms audio tokens")
    prefix_inputs = scoring.audio_prefix(model, audio, audio_dir)
    if not 0 <= audio_index < len(prefix_inputs.audios):
        raise ValueError(f"audio_index={audio_index} but the prompt has {len(prefix_inputs.audios)} audio(s)")
    tags = prompt.render() if isinstance(prompt, TagPrompt) else prompt
    full = scoring.with_tags(model, prefix_inputs, tags)
    target_text, target_ids = _target(model, full, target, max_new_tokens)
    span = full.audios[audio_index]
    n_tokens = span.n_positions - 2
    if window > n_tokens:
        raise ValueError(f"window={window} tokens is longer than the clip's {n_tokens} audio tokens")
    forward, audio_tokens = _audio_forward(splice, full, target_ids, span.start + 1, n_tokens)
    base = audio_tokens.mean(0, keepdim=True).expand_as(audio_tokens) if fill == "mean" \
        else torch.zeros_like(audio_tokens)
    x, baseline = audio_tokens[None], base[None]
    delta = None
    if method == "occlusion":
        mask = (torch.arange(n_tokens) // window)[None, :, None].expand_as(x)
        with torch.no_grad():
            attr = FeatureAblation(forward).attribute(x, baselines=baseline, feature_mask=mask,
                                                      perturbations_per_eval=batch_size)
        scores = attr[0, :, 0]   # every element of a window carries that window's difference
    else:
        attr, deltas = IntegratedGradients(forward).attribute(x, baselines=baseline, n_steps=n_steps,
                                                              internal_batch_size=batch_size,
                                                              return_convergence_delta=True)
        scores, delta = attr[0].sum(-1), float(deltas[0])
    with torch.no_grad():
        logprob = float(forward(x)[0])
    return AudioAttribution(method=method, scores=scores.detach().double().cpu().numpy(),
                            window=window if method == "occlusion" else 1, fill=fill, target=target_text,
                            logprob=logprob, mel=span.mel[:, :mel_frames(span.n_samples)].cpu(),
                            n_samples=span.n_samples, convergence_delta=delta)


def _audio_forward(splice: Splice, full: ModelInputs, target_ids: list[int], first: int, n_tokens: int):
    """f(audio-token embeddings (k, n_tokens, d)) → log p(target) (k,), with every other
    position of prompt + target fixed; and the audio's own token embeddings."""
    row = ModelInputs(text=full.text, input_ids=torch.tensor([full.input_ids[0].tolist() + target_ids]),
                      audios=full.audios)
    with torch.no_grad():
        embeds = splice.embed(row, splice.encode_audio(full))
    before, audio_tokens, after = embeds[:first], embeds[first:first + n_tokens], embeds[first + n_tokens:]
    answer, length = full.length - 1, row.length
    ids = torch.tensor(target_ids, device=embeds.device)

    def forward(x: torch.Tensor) -> torch.Tensor:
        k = x.shape[0]
        inputs = torch.cat([before.expand(k, -1, -1), x.to(embeds.dtype), after.expand(k, -1, -1)], dim=1)
        positions = torch.arange(length, device=embeds.device).expand(k, -1)
        hidden = splice.body(inputs_embeds=inputs, position_ids=positions, use_cache=False).last_hidden_state
        logprobs = splice.head(hidden[:, answer:answer + len(target_ids)]).float().log_softmax(-1)
        return logprobs.gather(-1, ids.expand(k, -1)[..., None])[..., 0].sum(-1)

    return forward, audio_tokens.float()
