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


def logit_lens(model: Any, prompt: Any, audio: Any = None, *, position: int | str = "last",
               targets: Sequence[str | int] = (), top_k: int = 5, generate: int = 0,
               audio_dir: Any = None) -> LensResult:
    """The logit lens at one position of the prompt (or of prompt + `generate` output tokens).

    targets: tokens to follow across layers (strings or ids); the model's final prediction at the
    position is always followed first (a target that is the same token is listed once).
    """
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise TraceRequestError(f"top_k={top_k!r}: give a positive int")
    if not (isinstance(position, str) and position == "last") and (
            isinstance(position, bool) or not isinstance(position, int)):
        raise TraceRequestError(f"position={position!r}: give a sequence position (int, negative from the end) "
                                "or 'last'")
    adapter = require(model, "logit_lens")
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
