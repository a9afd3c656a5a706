"""Logit lens: read each layer's residual stream through the final norm and the unembedding.

    result = logit_lens(model, prompt, audio, targets=["<|en|>", " mister"])
    result.to_pandas()      # per layer: top-k decoded tokens, probability and rank of each target
    result.plot()

At which layer does the model settle on its answer? Each layer's `resid_post` at one position is
put through the model's own final norm and lm_head (Whisper: the decoder's layer_norm and
proj_out), so the last layer reproduces the model's logits exactly; "embed" is what the first
layer receives. Targets are token strings or ids: a label, the next tag, a reference word. A
string that the tokenizer splits into several pieces is scored by its first piece, and the table
says which piece and how many there were.

    audio = logit_lens(model, prompt, clip, position="audio", targets=[" dog"])
    audio.to_pandas()       # per layer × audio token: time in seconds, top-k tokens, p(target)
    audio.plot()            # layer × time (s): the top token's probability, or p(target=…)

position="audio" reads every audio token of the prompt (40 ms each in Qwen-Audio and Qwen2-Audio):
what the LLM's stream at that slice of the clip already says in its vocabulary. Whisper's decoder
has no audio positions (it reads the audio by cross-attention), so it is refused there.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from workbench.analysis.capabilities import require
from workbench.analysis.trace import trace
from workbench.errors import TraceRequestError
from workbench.figures.attention import plot_logit_lens
from workbench.figures.lens import plot_audio_lens


@dataclass(frozen=True)
class LensTarget:
    text: str           # as asked (or the decoded id)
    token_id: int       # the token scored
    token: str          # its text
    pieces: int         # how many tokens the text encodes to (1 for ids)


@dataclass
class LensResult:
    family: str
    position: int               # the sequence position read
    query: str                  # its token
    layers: list[str]           # "embed", "0", "1", …
    targets: list[LensTarget]
    probs: np.ndarray           # (layers, targets)
    ranks: np.ndarray           # (layers, targets), 1 = the top token
    top_ids: np.ndarray         # (layers, k)
    top_probs: np.ndarray       # (layers, k)
    top_tokens: list[list[str]]

    def to_pandas(self) -> pd.DataFrame:
        """One row per layer: the top-k tokens, then probability and rank of every target."""
        table = pd.DataFrame({"layer": self.layers,
                              "top_k": [", ".join(f"{t!r} {p:.3f}" for t, p in zip(tokens, probs))
                                        for tokens, probs in zip(self.top_tokens, self.top_probs)]})
        for j, target in enumerate(self.targets):
            table[f"p({target.token})"] = self.probs[:, j]
            table[f"rank({target.token})"] = self.ranks[:, j]
        return table

    def targets_table(self) -> pd.DataFrame:
        return pd.DataFrame([vars(t) for t in self.targets])

    def plot(self, **options: Any) -> Figure:
        return plot_logit_lens(self, **options)


@dataclass
class AudioLensResult:
    """The logit lens at every audio token: layers × audio positions."""

    family: str
    positions: np.ndarray       # (P,) sequence positions of the audio tokens
    audio: np.ndarray           # (P,) which audio of the prompt
    start_s: np.ndarray         # (P,) where the token's slice of its clip starts, seconds
    step_s: float               # seconds per audio token
    layers: list[str]           # "embed", "0", "1", …
    targets: list[LensTarget]
    probs: np.ndarray           # (layers, P, targets)
    ranks: np.ndarray           # (layers, P, targets), 1 = the top token
    top_ids: np.ndarray         # (layers, P, k)
    top_probs: np.ndarray       # (layers, P, k)
    top_tokens: list[list[list[str]]]   # [layer][position][k]

    def to_pandas(self) -> pd.DataFrame:
        """One row per (layer, audio token): its time, top-k tokens, and each target's probability and rank."""
        n_layers, n_positions = len(self.layers), len(self.positions)
        table = pd.DataFrame({
            "layer": np.repeat(self.layers, n_positions), "position": np.tile(self.positions, n_layers),
            "audio": np.tile(self.audio, n_layers), "start_s": np.tile(self.start_s, n_layers),
            "top_1": [tokens[0] for layer in self.top_tokens for tokens in layer],
            "p_top_1": self.top_probs[:, :, 0].ravel(),
            "top_k": [", ".join(f"{t!r} {p:.3f}" for t, p in zip(tokens, probs))
                      for layer, layer_probs in zip(self.top_tokens, self.top_probs)
                      for tokens, probs in zip(layer, layer_probs)]})
        for j, target in enumerate(self.targets):
            table[f"p({target.token})"] = self.probs[:, :, j].ravel()
            table[f"rank({target.token})"] = self.ranks[:, :, j].ravel()
        return table

    def plot(self, *, target: str | int | None = None, audio: int = 0, **options: Any) -> Figure:
        """Layer × time (s) of audio `audio`: the top token's probability, or a target's (its token or index)."""
        return plot_audio_lens(self, target=target, audio=audio, **options)


def logit_lens(model: Any, prompt: Any, audio: Any = None, *, position: int | str = "last",
               targets: Sequence[str | int] = (), top_k: int = 5, generate: int = 0,
               audio_dir: Any = None) -> LensResult | AudioLensResult:
    """The logit lens at one position of the prompt (or of prompt + `generate` output tokens), or
    with position="audio" at every audio token (an `AudioLensResult`).

    targets: tokens to follow across layers (strings or ids); at one position the model's final
    prediction there is always followed first (a target that is the same token is listed once).
    """
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise TraceRequestError(f"top_k={top_k!r}: give a positive int")
    if not (isinstance(position, str) and position in ("last", "audio")) and (
            isinstance(position, bool) or not isinstance(position, int)):
        raise TraceRequestError(f"position={position!r}: give a sequence position (int, negative from the end), "
                                "'last', or 'audio' (every audio token)")
    adapter = require(model, "logit_lens")
    if position == "audio":
        return _audio_lens(model, adapter, prompt, audio, targets, top_k, generate, audio_dir)
    seq = adapter.sequence.name
    result = trace(model, prompt, audio, capture=[f"{seq}.embed", f"{seq}.layers.*.resid_post"],
                   rows=position if isinstance(position, str) else [position], logits="all",
                   generate=generate, audio_dir=audio_dir)
    at = int(result.rows[0])
    names = [f"{seq}.embed"] + [f"{seq}.layers.{i}.resid_post" for i in range(len(result.keys()) - 1)]
    stream = torch.cat([result[name] for name in names])                 # (layers + 1, width)
    weight = adapter.unembed.weight
    with torch.no_grad():
        logits = adapter.unembed(adapter.norm(stream.to(weight.device, weight.dtype))).float().cpu()
    probs = logits.softmax(-1)
    decodable = _decodable(model, probs.shape[-1])
    final = int(result.logits[at][:decodable].argmax())
    chosen = [_target(model, final)]
    for target in (_target(model, t) for t in targets):   # the prediction itself is listed once
        if target.token_id not in {c.token_id for c in chosen}:
            chosen.append(target)
    ids = torch.tensor([t.token_id for t in chosen])
    target_logits = logits[:, ids]
    ranks = 1 + (logits[:, None, :decodable] > target_logits[:, :, None]).sum(-1)
    top = probs[:, :decodable].topk(min(top_k, decodable), dim=-1)
    return LensResult(family=model.family, position=at, query=str(result.positions["token"][at]),
                      layers=["embed"] + [str(i) for i in range(len(names) - 1)], targets=chosen,
                      probs=probs[:, ids].numpy(), ranks=ranks.numpy(), top_ids=top.indices.numpy(),
                      top_probs=top.values.numpy(),
                      top_tokens=[[_text(model, int(i)) for i in row] for row in top.indices])


def _audio_lens(model: Any, adapter: Any, prompt: Any, audio: Any, targets: Sequence[str | int], top_k: int,
                generate: int, audio_dir: Any) -> AudioLensResult:
    if adapter.audio_attention != "self":
        raise TraceRequestError(f"position='audio': the {model.family} family has no audio positions in its token "
                                "sequence (its decoder reads the audio by cross-attention), so there is nothing to "
                                "read there; use position=<int> or 'last', or a Qwen-Audio / Qwen2-Audio model")
    seq = adapter.sequence.name
    result = trace(model, prompt, audio, capture=[f"{seq}.embed", f"{seq}.layers.*.resid_post"], rows="audio",
                   logits="last", generate=generate, audio_dir=audio_dir)
    table = result.positions.iloc[result.rows]
    keep = (table["kind"] == "audio").to_numpy()     # the audio tokens, not the bos / eos around them
    names = [f"{seq}.embed"] + [f"{seq}.layers.{i}.resid_post" for i in range(len(result.keys()) - 1)]
    chosen: list[LensTarget] = []
    for target in (_target(model, t) for t in targets):
        if target.token_id not in {c.token_id for c in chosen}:
            chosen.append(target)
    ids = torch.tensor([t.token_id for t in chosen], dtype=torch.long)
    weight = adapter.unembed.weight
    decodable = _decodable(model, weight.shape[0])
    probs, ranks, top_ids, top_probs = [], [], [], []
    for name in names:   # one layer at a time: (audio tokens, vocab) is the largest tensor alive
        with torch.no_grad():
            stream = result[name][torch.as_tensor(np.flatnonzero(keep))].to(weight.device, weight.dtype)
            logits = adapter.unembed(adapter.norm(stream)).float().cpu()
        p = logits.softmax(-1)
        top = p[:, :decodable].topk(min(top_k, decodable), dim=-1)
        probs.append(p[:, ids].numpy())
        ranks.append(np.stack([(1 + (logits[:, :decodable] > logits[:, [i]]).sum(-1)).numpy() for i in ids], -1)
                     if len(ids) else np.zeros((len(logits), 0), dtype=np.int64))
        top_ids.append(top.indices.numpy())
        top_probs.append(top.values.numpy())
    top_ids_array = np.stack(top_ids)
    return AudioLensResult(
        family=model.family, positions=result.rows[keep], audio=table["audio"].to_numpy()[keep].astype(int),
        start_s=table["start_s"].to_numpy(dtype=float)[keep], step_s=adapter.step_seconds,
        layers=["embed"] + [str(i) for i in range(len(names) - 1)], targets=chosen,
        probs=np.stack(probs), ranks=np.stack(ranks), top_ids=top_ids_array, top_probs=np.stack(top_probs),
        top_tokens=[[[_text(model, int(i)) for i in row] for row in layer] for layer in top_ids_array])


def _decodable(model: Any, vocab: int) -> int:
    """Ids the tokenizer has text for: Qwen-Audio's embedding has 782 padding rows past its tokens."""
    return min(vocab, len(model.tokenizer))


def _target(model: Any, target: str | int) -> LensTarget:
    if isinstance(target, bool) or not isinstance(target, (str, int, np.integer)):
        raise TraceRequestError(f"target {target!r}: give a token string or a token id")
    if not isinstance(target, str):
        token_id = int(target)
        if not 0 <= token_id < len(model.tokenizer):
            raise TraceRequestError(f"target id {token_id} is outside the tokenizer's 0…{len(model.tokenizer) - 1}")
        return LensTarget(_text(model, token_id), token_id, _text(model, token_id), 1)
    ids = model.adapter.encode_text(target)
    if not ids:
        raise TraceRequestError(f"target {target!r} encodes to no token: give a non-empty string")
    return LensTarget(target, ids[0], _text(model, ids[0]), len(ids))


def _text(model: Any, token_id: int) -> str:
    return model.decode([token_id])
