"""Score many prompts that share their audio: encode the audio once, run the shared prefix once.

Tag ablation and tag attribution ask the same question of dozens of prompts that differ only in
the few tags after `<audio>…</audio>`. The audio (752 positions for 30 s) dominates the cost, so:

1. `shared_prefix`: the longest token prefix every prompt shares (the audio span, for prompts
   built on one audio) is run through the LLM once; its per-layer keys and values are kept.
2. `score_targets`: every prompt + target continuation is one row; the rows are packed end to
   end after the prefix into a single sequence (batch 1), with a block-causal attention mask
   (each position sees the prefix and its own row up to itself) and position ids that continue
   from the prefix length within each row, so no row's rotary phases move. No padding, and the
   prefix's keys and values are shared by all rows rather than copied once per row. (A right-
   padded batch over a batch-expanded prefix cache computes the same numbers, but the cache then
   concatenates B copies of the 752 prefix positions in every layer, at every call and every
   decoding step; on a shared 2-core CPU that copying cost more than the arithmetic: the
   whole `ablate()` of benchmarks/ablation.py ran 5.7× faster than independent forwards that
   way, 7.8× packed, under the same load.)
3. `greedy_batch`: greedy decoding of every prompt from the same prefix cache, packed the same
   way: each step appends one token per row, which sees the prefix and its own row.

`audio_prefix` and `with_tags` build such prompts: the audio decoded and its mel computed once,
each variant's tags appended to the same prefix text.

Each number equals what a plain `model.forward` / `model.generate` of the full prompt gives, up
to float rounding (tests/test_ablation.py checks 1e-4). Works with every family whose adapter
declares a `splice` (the audio spliced into the LLM's input embeddings): Qwen-Audio v1.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from transformers.cache_utils import DynamicCache

from workbench.analysis.capabilities import require
from workbench.errors import SharedAudioError
from workbench.models.adapter import Splice
from workbench.models.base import ModelInputs, audio_references, is_audio_pair
from workbench.models.cache import cache_kwarg

BATCH_SIZE = 16  # rows packed into one LLM call (bounds the mask and the logits kept at once)


@dataclass(frozen=True)
class SharedPrefix:
    """The LLM state after the tokens every prompt shares, computed once."""

    length: int                                          # prefix positions P
    ids: tuple[int, ...]                                 # its token ids
    layers: tuple[tuple[torch.Tensor, torch.Tensor], ...]  # per LLM layer: keys, values (1, heads, P, head_dim)
    audio_embeds: tuple[torch.Tensor, ...]               # per audio: (n_positions, d), spliced into every row


@dataclass(frozen=True)
class TargetScore:
    """One prompt + target: log-probabilities under the full-vocabulary softmax."""

    next_logprobs: torch.Tensor | None   # (vocab,) float32: the next-token log-softmax at the first answer position
    token_logprobs: torch.Tensor  # (T,) float32: log p(target[t] | prompt, target[:t])

    @property
    def logprob(self) -> float:
        return float(self.token_logprobs.double().sum())


def audio_prefix(model, audio, audio_dir=None) -> ModelInputs:
    """The prompt up to its tags, with the audio decoded and its mel computed once.

    `audio`: a path (→ `<audio>PATH</audio>`), an (array, rate) pair or a 16 kHz array (→ `<audio>audio_0</audio>`), or
    a prompt string holding `<audio>PATH</audio>` (kept as written, e.g. a ChatML opening;
    relative paths are read against `audio_dir`).
    """
    require(model, "ablate")
    if isinstance(audio, str) and "<audio>" in audio:
        return model.inputs(audio, audio_dir=audio_dir)
    if isinstance(audio, (str, Path)):
        return model.inputs(audio_references([audio]), audio=[audio], audio_dir=audio_dir)
    if isinstance(audio, (np.ndarray, torch.Tensor)) or is_audio_pair(audio):
        return model.inputs(audio_references([audio]), audio=[audio])
    raise TypeError(f"audio must be a path, an (array, rate) pair, a 16 kHz float array or a prompt string with "
                    f"<audio>PATH</audio>, "
                    f"not {type(audio).__name__}")


def with_tags(model, prefix: ModelInputs, tags: str) -> ModelInputs:
    """`prefix` followed by `tags` as one prompt, reusing the prefix's decoded audio and mel."""
    if not isinstance(tags, str):
        raise TypeError(f"tags must be a str (the text after the audio), not {type(tags).__name__}")
    if "<audio>" in tags or "</audio>" in tags:
        raise ValueError(f"tags {tags!r} contain <audio>…</audio>: the audio is given once, pass only the text "
                         "that follows it")
    return require(model, "ablate").splice.with_text(prefix, tags)


def common_prefix_length(prompts: Sequence[ModelInputs]) -> int:
    """Tokens all prompts share, leaving every prompt at least its last token to run as a row
    (the first answer position's logits come from that token)."""
    ids = [p.input_ids[0].tolist() for p in prompts]
    shortest = min(len(i) for i in ids)
    length = 0
    while length < shortest - 1 and all(i[length] == ids[0][length] for i in ids[1:]):
        length += 1
    return length


def _check_same_audio(prompts: Sequence[ModelInputs]) -> None:
    first = prompts[0].audios
    for p in prompts[1:]:
        same = len(p.audios) == len(first) and all(
            a.start == b.start and a.n_positions == b.n_positions
            and (a.mel is b.mel or (a.mel is not None and b.mel is not None and torch.equal(a.mel, b.mel)))
            for a, b in zip(p.audios, first))
        if not same:
            raise SharedAudioError(f"prompt {p.text[:80]!r} does not carry the same audio (clips, positions) as "
                                   f"{prompts[0].text[:80]!r}: prompts scored together must differ only after "
                                   "the audio; build them from one audio")


def _check_length(splice: Splice, positions: int, what: str) -> None:
    limit = splice.max_positions
    if positions > limit:
        raise ValueError(f"{what} needs {positions} positions, more than the {limit} up to which this model equals "
                         "the official one: use a shorter clip, a shorter target or fewer new tokens")


def _check_extends(prompts: Sequence[ModelInputs], prefix: SharedPrefix) -> None:
    for p in prompts:
        if tuple(p.input_ids[0, :prefix.length].tolist()) != prefix.ids or p.length <= prefix.length:
            raise ValueError(f"prompt {p.text[:80]!r} does not extend the shared prefix of {prefix.length} tokens "
                             "by at least one token: build the prefix from these prompts (shared_prefix)")


def _check_batch_size(batch_size: int) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r}: give a positive number of rows per LLM call")


@torch.no_grad()
def shared_prefix(model, prompts: Sequence[ModelInputs]) -> SharedPrefix:
    """Encode the prompts' audio once and run their common prefix through the LLM once."""
    splice = require(model, "ablate").splice
    if not prompts:
        raise ValueError("shared_prefix got no prompts: pass at least one ModelInputs")
    _check_same_audio(prompts)
    audio_embeds = tuple(splice.encode_audio(prompts[0]))
    length = common_prefix_length(prompts)
    if length == 0:
        return SharedPrefix(0, (), (), audio_embeds)
    embeds = splice.embed(prompts[0], audio_embeds)[:length]
    cache = splice.new_cache()
    splice.body(inputs_embeds=embeds[None], position_ids=torch.arange(length, device=embeds.device)[None],
                use_cache=True, **cache_kwarg(splice.body, cache))
    layers = tuple((layer.keys, layer.values) for layer in cache.layers)
    return SharedPrefix(length, tuple(prompts[0].input_ids[0, :length].tolist()), layers, audio_embeds)


def _prefix_cache(splice: Splice, prefix: SharedPrefix) -> DynamicCache:
    """A fresh cache holding the prefix (batch 1). The LLM's update concatenates onto copies,
    so the prefix's own tensors are never modified and serve every call."""
    if prefix.length == 0:
        return splice.new_cache()
    return splice.new_cache(prefix.layers)


def _row_embeds(splice: Splice, prompt: ModelInputs, ids: list[int], prefix: SharedPrefix) -> torch.Tensor:
    """Embeddings of the row's positions after the prefix (audio spliced where the row has it)."""
    row = ModelInputs(text=prompt.text, input_ids=torch.tensor([ids]), audios=prompt.audios)
    return splice.embed(row, prefix.audio_embeds)[prefix.length:]


@dataclass
class _Packed:
    """Rows laid end to end after the prefix, as one sequence: which row owns each packed
    position and its place within that row. A position sees the prefix and the positions of its
    own row up to itself (block-causal), so each row computes exactly what it would alone."""

    prefix_length: int
    owner: torch.Tensor   # (n,) row of each packed position
    local: torch.Tensor   # (n,) index within its row: the position id is prefix_length + local

    def extend(self, owner: torch.Tensor, local: torch.Tensor) -> None:
        self.owner, self.local = torch.cat([self.owner, owner]), torch.cat([self.local, local])

    def mask(self, queries: int, dtype: torch.dtype) -> torch.Tensor:
        """(1, 1, queries, prefix + n) additive mask for the last `queries` packed positions."""
        owner_q, local_q = self.owner[-queries:], self.local[-queries:]
        own = (owner_q[:, None] == self.owner[None, :]) & (self.local[None, :] <= local_q[:, None])
        allowed = torch.cat([own.new_ones(queries, self.prefix_length), own], dim=1)
        additive = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
        return additive.masked_fill_(~allowed, torch.finfo(dtype).min)[None, None]

    def positions(self, queries: int) -> torch.Tensor:
        return (self.prefix_length + self.local[-queries:])[None]


def _run_packed(splice: Splice, embeds: list[torch.Tensor], prefix: SharedPrefix):
    """Run the rows' embeddings packed after the prefix; returns hidden states (n, d), the cache
    and the packing (to decode further), and each row's slice of the packed positions."""
    device = embeds[0].device
    lengths = [e.shape[0] for e in embeds]
    owner = torch.repeat_interleave(torch.arange(len(embeds), device=device), torch.tensor(lengths, device=device))
    packed = _Packed(prefix.length, owner, torch.cat([torch.arange(n, device=device) for n in lengths]))
    cache = _prefix_cache(splice, prefix)
    n = sum(lengths)
    hidden = splice.body(inputs_embeds=torch.cat(embeds)[None], attention_mask=packed.mask(n, embeds[0].dtype),
                             position_ids=packed.positions(n), use_cache=True,
                         **cache_kwarg(splice.body, cache)).last_hidden_state[0]
    starts = np.cumsum([0] + lengths)
    return hidden, cache, packed, [slice(int(a), int(b)) for a, b in zip(starts[:-1], starts[1:])]


@torch.no_grad()
def score_targets(model, prompts: Sequence[ModelInputs], targets: Sequence[Sequence[int]], *,
                  prefix: SharedPrefix | None = None, batch_size: int = BATCH_SIZE,
                  next_token: bool | Sequence[bool] = True) -> list[TargetScore]:
    """Score `targets[i]` (token ids, possibly empty) as the continuation of `prompts[i]`.

    All prompts must carry the same audio. Returns, per pair, the log-probability of each target
    token and (where `next_token` is true: one flag for all, or one per pair) the full next-token
    log-softmax at the first answer position, 4 bytes × 155,947 a row, else None.
    """
    splice = require(model, "ablate").splice
    if len(prompts) != len(targets):
        raise ValueError(f"{len(prompts)} prompts but {len(targets)} targets: give one target (a list of ids, "
                         "possibly empty) per prompt")
    _check_batch_size(batch_size)
    prefix = prefix if prefix is not None else shared_prefix(model, prompts)
    _check_same_audio(prompts)
    rows = [p.input_ids[0].tolist() + list(t) for p, t in zip(prompts, targets)]
    keep = [bool(next_token)] * len(rows) if isinstance(next_token, bool) else [bool(k) for k in next_token]
    if len(keep) != len(rows):
        raise ValueError(f"next_token has {len(keep)} flags for {len(rows)} prompts: give one bool, or one per prompt")
    _check_extends(prompts, prefix)
    for p, row in zip(prompts, rows):
        _check_length(splice, len(row), f"prompt + target ({p.text[:60]!r}…)")
    scores: list[TargetScore] = []
    for start in range(0, len(rows), batch_size):
        chunk = range(start, min(start + batch_size, len(rows)))
        scores += _score_chunk(splice, [prompts[i] for i in chunk], [rows[i] for i in chunk],
                               [list(targets[i]) for i in chunk], [keep[i] for i in chunk], prefix)
    return scores


def _score_chunk(splice: Splice, prompts: list[ModelInputs], rows: list[list[int]], targets: list[list[int]],
                 keep: list[bool], prefix: SharedPrefix) -> list[TargetScore]:
    embeds = [_row_embeds(splice, p, row, prefix) for p, row in zip(prompts, rows)]
    hidden, _, _, spans = _run_packed(splice, embeds, prefix)
    # Only the positions that predict something go through lm_head: the answer position and
    # each target token but the last (all positions × 155,947 logits would be large).
    picks = []
    for p, target, span in zip(prompts, targets, spans):
        answer = span.start + p.length - 1 - prefix.length
        picks.append(hidden[answer:answer + max(len(target), 1)])
    logits = splice.head(torch.cat(picks)).float()
    normaliser = logits.logsumexp(-1)   # log-softmax = logits − this; only the rows kept are built
    scores, offset = [], 0
    for target, pick, keep_next in zip(targets, picks, keep):
        block, lse = logits[offset:offset + pick.shape[0]], normaliser[offset:offset + pick.shape[0]]
        offset += pick.shape[0]
        ids = torch.tensor(target, dtype=torch.long, device=block.device)
        token_logprobs = block[torch.arange(len(target), device=block.device), ids] - lse[:len(target)]
        scores.append(TargetScore(next_logprobs=(block[0] - lse[0]).cpu() if keep_next else None,
                                  token_logprobs=token_logprobs.cpu()))
    return scores


@torch.no_grad()
def greedy_batch(model, prompts: Sequence[ModelInputs], *, max_new_tokens: int,
                 prefix: SharedPrefix | None = None, batch_size: int = BATCH_SIZE) -> list[list[int]]:
    """Greedy new ids of every prompt (stop token included when hit), decoded from the shared
    prefix. Equals `model.generate` on each prompt alone."""
    splice = require(model, "ablate").splice
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens={max_new_tokens!r}: give a positive int")
    _check_batch_size(batch_size)
    prefix = prefix if prefix is not None else shared_prefix(model, prompts)
    _check_same_audio(prompts)
    _check_extends(prompts, prefix)
    for p in prompts:
        _check_length(splice, p.length + max_new_tokens - 1,
                      f"prompt {p.text[:60]!r}… with {max_new_tokens} new tokens")
    new: list[list[int]] = []
    for start in range(0, len(prompts), batch_size):
        new += _greedy_chunk(model, splice, list(prompts[start:start + batch_size]), max_new_tokens, prefix)
    return new


def _greedy_chunk(model, splice: Splice, prompts: list[ModelInputs], max_new_tokens: int, prefix: SharedPrefix) -> list[list[int]]:
    embeds = [_row_embeds(splice, p, p.input_ids[0].tolist(), prefix) for p in prompts]
    hidden, cache, packed, spans = _run_packed(splice, embeds, prefix)
    last = hidden[[span.stop - 1 for span in spans]]            # each row's last prompt token
    rows = torch.arange(len(prompts), device=hidden.device)
    lengths = torch.tensor([span.stop - span.start for span in spans], device=hidden.device)
    stops = [model.stop_ids(p) for p in prompts]
    new: list[list[int]] = [[] for _ in prompts]
    for step in range(max_new_tokens):
        next_ids = splice.head(last).argmax(-1)
        for ids, stop, token in zip(new, stops, next_ids.tolist()):
            if not (ids and ids[-1] in stop):
                ids.append(token)
        if step == max_new_tokens - 1 or all(ids[-1] in stop for ids, stop in zip(new, stops)):
            break
        packed.extend(rows, lengths + step)   # every row's new token, after the row's earlier ones
        last = splice.body(input_ids=next_ids[None], attention_mask=packed.mask(len(prompts), hidden.dtype),
                               position_ids=packed.positions(len(prompts)), use_cache=True,
                           **cache_kwarg(splice.body, cache)).last_hidden_state[0]
    return new
