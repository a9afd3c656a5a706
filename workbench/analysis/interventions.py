"""Intervening in a forward pass: the hooks that record, overwrite or knock out activations, and
the prompt, continuation and score helpers that `patching`, `knockout` and `alignment` share.

    adapter = require(model, "patch_sweep")            # the family's declaration (models.adapter)
    audio = adapter.interventions.encode(inputs)       # once per prompt
    with hooks([(adapter.sequence.head_inputs[3], knockout(head_columns(...), "zero"), True)]):
        logits = adapter.interventions.run(inputs, audio)   # (positions, vocab)

The residual stream of layer i is that layer's output; a head's output is its slice of the input
of the attention's output projection (each family's adapter names those modules: `o_proj` in
Qwen2, `out_proj` in Whisper, `out` in the Qwen-Audio encoder), where the heads sit side by side,
head_dim columns each.
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from workbench.errors import PatchingError
from workbench.models.adapter import Stack
from workbench.models.base import ModelInputs, audio_references

__all__ = ["answer_rows", "check_head", "check_layer", "check_layers", "encode_text", "head_columns",
           "hooks", "knockout", "logprob", "patcher", "prompt_inputs", "recorder", "short_text"]


# ---------------------------------------------------------------------------------------------
# Hooks: record, patch, knock out


def _first(output: Any) -> torch.Tensor:
    return output[0] if isinstance(output, (tuple, list)) else output


def _with_first(output: Any, hidden: torch.Tensor) -> Any:
    return (hidden, *output[1:]) if isinstance(output, tuple) else hidden


@contextlib.contextmanager
def hooks(pairs: Sequence[tuple[nn.Module, Callable, bool]]) -> Iterator[None]:
    """Register (module, hook, is_pre) for the block, then remove them."""
    handles = [module.register_forward_pre_hook(hook) if pre else module.register_forward_hook(hook)
               for module, hook, pre in pairs]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def head_columns(module: nn.Module, head: int, n_heads: int) -> slice:
    """The columns of the output projection's input that hold `head`'s output."""
    width = module.in_features // n_heads
    return slice(head * width, (head + 1) * width)


def recorder(store: dict[int, torch.Tensor], layer: int, pre: bool) -> Callable:
    """A hook that keeps a copy of its module's input (pre) or output in `store[layer]`."""
    if pre:
        return lambda module, args: store.__setitem__(layer, args[0].detach().clone())
    return lambda module, args, output: store.__setitem__(layer, _first(output).detach().clone())


def patcher(source: torch.Tensor, pairs: np.ndarray, pre: bool, columns: slice = slice(None)) -> Callable:
    """A hook that overwrites target positions pairs[:, 1] (and `columns` of the width) with the
    source's pairs[:, 0], on its first call only: later calls of a cached generation hold new
    positions, which are not patched."""
    armed = [True]
    src, tgt = torch.as_tensor(pairs[:, 0]), torch.as_tensor(pairs[:, 1])

    def patched(x: torch.Tensor) -> torch.Tensor:
        if int(tgt.max()) >= x.shape[1]:
            raise PatchingError(f"target position {int(tgt.max())} is beyond the {x.shape[1]} positions run")
        x = x.clone()
        x[:, tgt.to(x.device), columns] = source[:, src.to(source.device), columns].to(x.device, x.dtype)
        return x

    if pre:
        def hook(module, args):
            if armed[0]:
                armed[0] = False
                return (patched(args[0]), *args[1:])
    else:
        def hook(module, args, output):
            if armed[0]:
                armed[0] = False
                return _with_first(output, patched(_first(output)))
    return hook


def knockout(columns: slice, method: str) -> Callable:
    """A pre-hook that zeroes `columns` of its input at every position ("zero"), or sets them to
    their mean over the positions of the same call ("mean")."""
    def hook(module, args):
        x = args[0].clone()
        x[..., columns] = 0.0 if method == "zero" else x[..., columns].mean(dim=-2, keepdim=True)
        return (x, *args[1:])
    return hook


# ---------------------------------------------------------------------------------------------
# Prompts, continuations, scores


def encode_text(model: Any, text: str) -> list[int]:
    """Token ids of plain `text` as the model's tokenizer gives them (no special tokens added)."""
    if not isinstance(text, str) or not text:
        raise PatchingError(f"continuation={text!r}: give non-empty text")
    return model.adapter.encode_text(text)


def short_text(text: str, limit: int = 32) -> str:
    """`repr` of `text`, cut to `limit` characters with an ellipsis (for labels and titles)."""
    return repr(text if len(text) <= limit else text[:limit - 1] + "…")


def prompt_inputs(model: Any, prompt: Any, audio: Any, audio_dir: Any) -> ModelInputs:
    """Model inputs; a string with no place for the audio (`adapter.audio_marks`) gets one
    `<audio>…</audio>` per audio in front of it, as a TagPrompt does."""
    if isinstance(prompt, str) and audio is not None and not any(m in prompt for m in model.adapter.audio_marks):
        items = list(audio) if isinstance(audio, (list, tuple)) else [audio]
        prompt = audio_references(items) + prompt
    return model.inputs(prompt, audio, audio_dir=audio_dir)


def answer_rows(prompt_length: int, ids: Sequence[int]) -> slice:
    """The positions whose logits predict the continuation: the prompt's last, then all but its last."""
    return slice(prompt_length - 1, prompt_length - 1 + len(ids))


def logprob(logits: torch.Tensor, ids: Sequence[int]) -> float:
    """Summed log p of `ids` from the logits of the positions that predict them (`answer_rows`)."""
    rows = logits.log_softmax(-1)
    return float(rows[torch.arange(len(ids)), torch.tensor(list(ids))].double().sum())


def check_layer(stack: Stack, layer: Any) -> int:
    """`layer` as a non-negative index into `stack` (negative counts from the end)."""
    n = len(stack.layers)
    if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)) or not -n <= layer < n:
        raise PatchingError(f"layer={layer!r}: the {stack.name} has {n} layers (0…{n - 1}, or negative from the end)")
    return int(layer) % n


def check_head(stack: Stack, head: Any) -> int:
    if isinstance(head, bool) or not isinstance(head, (int, np.integer)) or not 0 <= head < stack.n_heads:
        raise PatchingError(f"head={head!r}: the {stack.name} has {stack.n_heads} heads a layer (0…{stack.n_heads - 1})")
    return int(head)


def check_layers(stack: Stack, layers: Sequence[int] | None) -> list[int]:
    """Distinct layer indices of `stack` (None: all of them)."""
    chosen = range(len(stack.layers)) if layers is None else layers
    picked = [check_layer(stack, layer) for layer in chosen]
    if not picked or len(set(picked)) != len(picked):
        raise PatchingError(f"layers={layers!r}: give distinct layer indices of the {stack.name} "
                            f"(0…{len(stack.layers) - 1})")
    return picked
