"""Direct logit attribution: how much each layer's attention, MLP and head writes the answer's logit.

    result = direct_logit_attribution(model, wb.preset("librispeech", lang="en"), "clip.flac")
    result.to_pandas()          # one row per position × component (embed, attn, mlp, bias; heads=True: heads)
    result.plot()               # bars per layer (attention, MLP) and a layer × head heatmap
    direct_logit_attribution(model, prompt, clip, target=" yes", versus=" no")   # a logit difference
    direct_logit_attribution(model, prompt, clip, position="audio")   # what each audio position predicts

The final residual stream x (what the final norm receives) is a sum of what wrote it: the embedding
(with the audio spliced in, or Whisper's token + position embeddings), each layer's attention output
(its heads' z @ W_O slices plus the projection's bias; Whisper's decoder also its cross-attention) and
each layer's MLP output. The logit of token t is unembed(norm(x))[t]. The norm is not linear, so, as
TransformerLens does, its scale is frozen at the value the real x gives (RMSNorm: rms(x) =
sqrt(mean(x²) + eps); LayerNorm: std(x) with its eps, each component centred first): with that
scale each component c contributes (c / scale) * w · W_U[t] (w: the norm's weight), and the norm's
and unembedding's biases contribute a constant "bias". The components then sum to the real logit
exactly (up to float rounding; `tests/test_dla.py`); the approximation is in reading each one alone,
as if the others did not set the scale. With `versus`, W_U[t] − W_U[versus]: a logit difference.

Positions (`position=`): "last" (the prompt's last position: it predicts the first answer token),
an int (negative from the end) or a list of ints, "answer" (the prompt's last position and the greedy
answer's tokens, each attributed to the next answer token), or a group selector of
`label_positions` ("audio", "tags", "text", "all"). Target: `None` (each position's own greedy
prediction: the argmax of its logits, or the next answer token), a text (its first token, written as
the model writes it: Whisper's words start with a space) or a token id.

Families: every family whose sequence stack declares its MLPs (`Stack.mlps`): Qwen-Audio v1 and nano,
Qwen2-Audio (the LLM), Whisper (the decoder).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from workbench.analysis.capabilities import require
from workbench.analysis.interventions import answer_rows, prompt_inputs
from workbench.analysis.positions import decode_ids, label_positions, select_positions
from workbench.errors import NotSupportedError, PatchingError
from workbench.figures.dla import plot_dla
from workbench.models.adapter import Adapter, Stack

__all__ = ["DLAResult", "direct_logit_attribution", "frozen_norm"]


@dataclass(frozen=True)
class DLAResult:
    """Each component's direct contribution to the target logit (or logit difference), per position."""

    positions: tuple[int, ...]
    labels: tuple[str, ...]             # the positions' labels (token, or audio time)
    target_ids: tuple[int, ...]
    targets: tuple[str, ...]
    versus_ids: tuple[int, ...] | None
    embed: np.ndarray                   # (P,)
    attn: np.ndarray                    # (P, layers): self-attention, its output projection's bias included
    mlp: np.ndarray                     # (P, layers)
    heads: np.ndarray                   # (P, layers, heads): self-attention heads (bias excluded)
    attn_bias: np.ndarray               # (P, layers): the output projection's bias (0 without one)
    bias: np.ndarray                    # (P,): the final norm's and the unembedding's biases
    logits: np.ndarray                  # (P,): the model's own logit (or logit difference)
    scale: np.ndarray                   # (P,): the frozen norm scale
    stack: str
    prompt: str
    cross: np.ndarray | None = None         # (P, layers): Whisper's cross-attention
    cross_heads: np.ndarray | None = None   # (P, layers, heads)

    @property
    def measure(self) -> str:
        return "logit" if self.versus_ids is None else "logit difference"

    @property
    def total(self) -> np.ndarray:
        """The components summed, per position: equals `logits` (module docstring)."""
        total = self.embed + self.attn.sum(-1) + self.mlp.sum(-1) + self.bias
        return total + self.cross.sum(-1) if self.cross is not None else total

    def to_pandas(self, heads: bool = False) -> pd.DataFrame:
        """One row per position × component: position, label, target, component ("embed", "attn",
        "cross_attn", "mlp", "bias"; with heads=True also "head" and "cross_head"), layer, head, value."""
        rows = []
        for p, position in enumerate(self.positions):
            base = {"position": position, "label": self.labels[p], "target": self.targets[p]}
            rows.append({**base, "component": "embed", "layer": pd.NA, "head": pd.NA, "value": self.embed[p]})
            for kind, values, per_head in (("attn", self.attn, self.heads), ("cross_attn", self.cross, self.cross_heads),
                                           ("mlp", self.mlp, None)):
                if values is None:
                    continue
                for layer, value in enumerate(values[p]):
                    rows.append({**base, "component": kind, "layer": layer, "head": pd.NA, "value": value})
                    if heads and per_head is not None:
                        rows += [{**base, "component": kind.replace("attn", "head"), "layer": layer, "head": h,
                                  "value": v} for h, v in enumerate(per_head[p, layer])]
            rows.append({**base, "component": "bias", "layer": pd.NA, "head": pd.NA, "value": self.bias[p]})
        table = pd.DataFrame(rows)
        return table.astype({"layer": "Int64", "head": "Int64", "value": float})

    def plot(self, **options: Any):
        """Bars per layer (attention, MLP) and a layer × head heatmap, at one position or the mean
        over the positions (workbench.figures.plot_dla)."""
        return plot_dla(self, **options)


@torch.no_grad()
def direct_logit_attribution(model: Any, prompt: Any, audio: Any = None, *, target: str | int | None = None,
                             versus: str | int | None = None, position: Any = "last", max_new_tokens: int = 48,
                             audio_dir: Any = None) -> DLAResult:
    """Direct logit attribution of the target token (or target − versus) at `position` (module docstring)."""
    adapter = require(model, "direct_logit_attribution")
    stack = adapter.sequence
    if not stack.mlps:
        raise NotSupportedError(f"direct_logit_attribution needs the {stack.name}'s MLP modules, which the "
                                f"{adapter.family} adapter does not declare (Stack.mlps)")
    inputs = prompt_inputs(model, prompt, audio, audio_dir)
    answer: list[int] = []
    if isinstance(position, str) and position == "answer":
        if target is not None:
            raise PatchingError("position='answer' attributes each answer token at the position that predicts it: "
                                "leave target=None (or choose another position for a fixed target)")
        answer = model.generate(inputs, max_new_tokens=max_new_tokens).ids
        if not answer:
            raise PatchingError("the greedy answer is empty (the model stopped at once): nothing to attribute")
    full = inputs.extended(answer)
    table = label_positions(model, full, n_prompt=inputs.length)
    rows = _rows(position, full.length, inputs.length, answer, table)
    record, logits = _record(model, adapter, full)
    targets = answer if answer else [_token(model, target, "target")] * len(rows) if target is not None else \
        [int(logits[r].argmax()) for r in rows]
    other = None if versus is None else [_token(model, versus, "versus")] * len(rows)
    if other is not None and any(t == v for t, v in zip(targets, other)):
        raise PatchingError(f"target and versus are the same token ({decode_ids(model, [targets[0]])!r}): "
                            "their logit difference is 0; give two labels that start with different tokens")
    index = torch.as_tensor(rows)
    direction = _direction(adapter.unembed, targets, other)
    fold, bias, scale = frozen_norm(adapter.norm, adapter.unembed, record["final"][index], direction, targets, other)
    per_layer = {kind: np.stack([fold(record[kind][i][index]) for i in range(len(stack.layers))], axis=1)
                 for kind in ("attn", "mlp", "cross") if kind in record}
    heads = _heads(stack.head_inputs, record["z"], index, stack.n_heads, fold)
    cross_heads = _heads(stack.cross_inputs, record["cross_z"], index, stack.n_heads, fold) if "cross" in record else None
    real = logits[index, torch.as_tensor(targets)]
    if other is not None:
        real = real - logits[index, torch.as_tensor(other)]
    return DLAResult(
        tuple(rows), tuple(table["label"][r] for r in rows), tuple(targets),
        tuple(decode_ids(model, [t]) for t in targets), None if other is None else tuple(other),
        fold(record["embed"][index]), per_layer["attn"], per_layer["mlp"], heads[0], heads[1], bias,
        real.double().numpy(), scale, stack.name, inputs.text,
        per_layer.get("cross"), None if cross_heads is None else cross_heads[0])


def frozen_norm(norm: nn.Module, unembed: nn.Module, final: torch.Tensor, direction: torch.Tensor,
                targets: Sequence[int], versus: Sequence[int] | None) -> tuple[Any, np.ndarray, np.ndarray]:
    """The final norm with its scale frozen at the real final residual `final` (P, d), folded with
    the unembedding `direction` (P, d): a function component (P, …, d) → its logit share (P, …),
    the biases' share (P,), and the scales (P,). float64 throughout."""
    x = final.double()
    weight = norm.weight.double() if getattr(norm, "weight", None) is not None else torch.ones(x.shape[-1])
    center = isinstance(norm, nn.LayerNorm)
    eps = float(getattr(norm, "variance_epsilon", getattr(norm, "eps", 0.0)) or 0.0)
    spread = x - x.mean(-1, keepdim=True) if center else x
    scale = (spread.pow(2).mean(-1) + eps).sqrt()                       # (P,)
    read = (weight * direction.double()) / scale[:, None]               # (P, d): what one unit of each dim adds

    def fold(component: torch.Tensor) -> np.ndarray:
        c = component.double()
        if center:
            c = c - c.mean(-1, keepdim=True)
        shape = (read.shape[0],) + (1,) * (c.dim() - 2) + (read.shape[1],)
        return (c * read.view(shape)).sum(-1).numpy()

    bias = torch.zeros(x.shape[0], dtype=torch.float64)
    if getattr(norm, "bias", None) is not None:
        bias += (norm.bias.double() * direction.double()).sum(-1)
    if getattr(unembed, "bias", None) is not None:
        b = unembed.bias.double()
        bias += b[list(targets)] - (b[list(versus)] if versus is not None else 0.0)
    return fold, bias.numpy(), scale.numpy()


def _direction(unembed: nn.Module, targets: Sequence[int], versus: Sequence[int] | None) -> torch.Tensor:
    weight = unembed.weight.detach().double()
    direction = weight[list(targets)]
    return direction - weight[list(versus)] if versus is not None else direction


def _heads(modules: Sequence[nn.Module], z: dict[int, torch.Tensor], index: torch.Tensor, n_heads: int,
           fold: Any) -> tuple[np.ndarray, np.ndarray]:
    """Per layer, each head's z @ W_O slice folded (P, layers, heads), and the projection's bias (P, layers)."""
    per_head, biases = [], []
    for i, module in enumerate(modules):
        zs = z[i][index].double().view(len(index), n_heads, -1)                              # (P, H, hd)
        w_o = module.weight.detach().double().view(module.out_features, n_heads, -1)           # (d, H, hd)
        per_head.append(fold(torch.einsum("phk,dhk->phd", zs, w_o)))
        bias = module.bias.detach() if module.bias is not None else torch.zeros(module.out_features)
        biases.append(fold(bias.double().expand(len(index), -1)))
    return np.stack(per_head, axis=1), np.stack(biases, axis=1)


def _record(model: Any, adapter: Adapter, inputs: Any) -> tuple[dict[str, Any], torch.Tensor]:
    """One forward pass, recording what writes the residual stream (batch row 0, on the CPU)."""
    stack: Stack = adapter.sequence
    record: dict[str, Any] = {"attn": {}, "mlp": {}, "z": {}}
    if stack.cross_inputs:
        record.update(cross={}, cross_z={})
    handles = []

    def keep(name: str, layer: int | None, x: torch.Tensor) -> None:
        value = x[0].detach().float().cpu()
        if layer is None:
            record[name] = value
        else:
            record[name][layer] = value

    def pre(name: str, layer: int | None) -> Any:
        return lambda module, args, kwargs: keep(name, layer, args[0] if args else kwargs["hidden_states"])

    def post(name: str, layer: int) -> Any:
        return lambda module, args, output: keep(name, layer, output[0] if isinstance(output, tuple) else output)

    handles.append(stack.layers[0].register_forward_pre_hook(pre("embed", None), with_kwargs=True))
    handles.append(adapter.norm.register_forward_pre_hook(pre("final", None), with_kwargs=True))
    for i in range(len(stack.layers)):
        for name, module in (("attn", stack.head_inputs[i]), ("mlp", stack.mlps[i])) + \
                ((("cross", stack.cross_inputs[i]),) if stack.cross_inputs else ()):
            handles.append(module.register_forward_hook(post(name, i)))
        handles.append(stack.head_inputs[i].register_forward_pre_hook(pre("z", i), with_kwargs=True))
        if stack.cross_inputs:
            handles.append(stack.cross_inputs[i].register_forward_pre_hook(pre("cross_z", i), with_kwargs=True))
    try:
        logits = model.forward(inputs).logits[0].float().cpu()
    finally:
        for handle in handles:
            handle.remove()
    return record, logits


def _rows(position: Any, length: int, n_prompt: int, answer: list[int], table: pd.DataFrame) -> list[int]:
    if answer:
        return list(range(length)[answer_rows(n_prompt, answer)])
    if isinstance(position, str) and position == "last":
        return [n_prompt - 1]
    if isinstance(position, (int, np.integer)) and not isinstance(position, bool):
        if not -length <= position < length:
            raise PatchingError(f"position={position}: the prompt has {length} positions (0…{length - 1}, or "
                                "negative from the end)")
        return [int(position) % length]
    if isinstance(position, str) or (isinstance(position, (list, tuple)) and position):
        picked = select_positions(table, position)
        return [int(p) for p in picked]
    raise PatchingError(f"position={position!r}: give 'last', 'answer', an int, a list of ints or a group "
                        "('audio', 'tags', 'text', 'all')")


def _token(model: Any, label: Any, name: str) -> int:
    if isinstance(label, (int, np.integer)) and not isinstance(label, bool):
        if not 0 <= label < model.adapter.unembed.weight.shape[0]:
            raise PatchingError(f"{name}={label}: not a token id of this model (0…{model.adapter.unembed.weight.shape[0] - 1})")
        return int(label)
    if not isinstance(label, str) or not label:
        raise PatchingError(f"{name}={label!r}: give a label text (its first token is scored) or a token id")
    ids = model.adapter.encode_text(label)
    if not ids:
        raise PatchingError(f"{name}={label!r} encodes to no token")
    return int(ids[0])
