"""Intervening in a forward pass: which modules hold a family's residual stream and heads, how to
run its token sequence with the audio encoded once, and the hooks that record, overwrite or knock
out activations. `workbench.analysis.patching` (activation patching), `workbench.analysis.knockout` (head knockouts)
and `workbench.analysis.alignment` build on it.

    net = network(model)                  # Stack per part: layers, the modules fed the heads' outputs
    audio = net.encode(inputs)            # once per prompt
    with hooks([(net.sequence.head_inputs[3], knockout(head_columns(...), "zero"), True)]):
        logits = net.run(inputs, audio)   # (positions, vocab)

The residual stream of layer i is that layer's output; a head's output is its slice of the input
of the attention's output projection (`o_proj` in Qwen2, `out_proj` in Whisper, `out` in the
Qwen-Audio encoder), where the heads sit side by side, head_dim columns each.

Families: native Qwen-Audio v1 (and nano) — LLM layers `llm.model.layers[i]`, heads at
`self_attn.o_proj`, encoder heads at `blocks[i].attn.out` — and Whisper — decoder layers,
`self_attn.out_proj`, encoder `layers[i].self_attn.out_proj`. Whisper's cross-attention keys and
values depend only on the audio, so `encode` computes them once too and every run reuses them
(a decoder pass over 1500 frames then costs ~10x less).
"""
from __future__ import annotations

import contextlib
import inspect
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from torch import nn
from transformers.cache_utils import DynamicCache, EncoderDecoderCache
from transformers.models.whisper.modeling_whisper import WhisperDecoder

from workbench.models.base import ModelInputs, audio_references
from workbench.errors import PatchingError

# transformers renamed `past_key_values` to `cache` during 5.x; pass whichever this version takes.
_CACHE_ARG = "cache" if "cache" in inspect.signature(WhisperDecoder.forward).parameters else "past_key_values"

__all__ = ["Network", "PatchingError", "Stack", "answer_rows", "check_head", "check_layer", "check_layers",
           "decode_ids", "encode_text", "greedy_ids", "head_columns", "hooks", "knockout", "logprob",
           "network", "patcher", "prompt_inputs", "recorder", "short_text"]


# ---------------------------------------------------------------------------------------------
# The network as interventions see it


@dataclass(frozen=True)
class Stack:
    """One stack of layers: the modules whose output is the residual stream, the modules whose
    input holds the heads' outputs side by side, and how many heads there are."""

    name: str                       # "llm", "decoder" or "encoder"
    layers: tuple[nn.Module, ...]
    head_inputs: tuple[nn.Module, ...]
    n_heads: int


@dataclass(frozen=True)
class Network:
    """A model as interventions see it: its token-sequence stack (LLM or Whisper decoder), its audio
    encoder stack, and how to encode the audio once, run the sequence and decode greedily."""

    sequence: Stack
    encoder: Stack
    encode: Callable[[ModelInputs], Any]                      # the audio, as the sequence reads it
    run: Callable[[ModelInputs, Any, slice], torch.Tensor]    # → logits (kept rows, vocab), float32
    generate: Callable[[ModelInputs, Any, int], list[int]]    # greedy ids, stop token included


def network(model: Any) -> Network:
    """The `Network` of a native Qwen-Audio v1 (or nano) or a Whisper model."""
    if hasattr(model, "llm") and hasattr(model, "encode_audio") and hasattr(model, "embed"):
        return _qwen_audio(model)
    if getattr(model, "family", None) == "whisper":
        return _whisper(model)
    raise PatchingError(f"patching supports native Qwen-Audio v1 (workbench.load(CHECKPOINT_DIR) or 'nano') and "
                        f"Whisper; {type(model).__name__} ({getattr(model, 'family', '?')}) is neither")


def _qwen_audio(model: Any) -> Network:
    llm, encoder = model.llm, model.encoder
    layers = tuple(llm.model.layers)
    sequence = Stack("llm", layers, tuple(layer.self_attn.o_proj for layer in layers),
                     llm.config.num_attention_heads)
    blocks = tuple(encoder.blocks)
    audio = Stack("encoder", blocks, tuple(block.attn.out for block in blocks), encoder.config.n_head)

    def run(inputs: ModelInputs, audio_embeds: Any, keep: slice = slice(None)) -> torch.Tensor:
        limit = getattr(model.config, "max_positions", None)
        if limit is not None and inputs.length > limit:
            raise PatchingError(f"{inputs.length} positions exceed the {limit} up to which this model equals the "
                                "official one: use a shorter clip or continuation")
        embeds = model.embed(inputs, audio_embeds)[None]
        positions = torch.arange(embeds.shape[1], device=embeds.device)[None]
        hidden = llm.model(inputs_embeds=embeds, position_ids=positions, use_cache=False).last_hidden_state
        return llm.lm_head(hidden[0, keep]).float()

    def generate(inputs: ModelInputs, audio_embeds: Any, max_new_tokens: int) -> list[int]:
        # The model's own greedy loop (it encodes the audio again: cheap next to the LLM).
        return greedy_ids(model, inputs, max_new_tokens)

    return Network(sequence, audio, lambda inputs: model.encode_audio(inputs).embeds, run, generate)


def _whisper(model: Any) -> Network:
    whisper = model.model
    decoder, encoder = whisper.model.decoder, whisper.model.encoder
    sequence = Stack("decoder", tuple(decoder.layers), tuple(layer.self_attn.out_proj for layer in decoder.layers),
                     model.config.decoder_attention_heads)
    audio = Stack("encoder", tuple(encoder.layers), tuple(layer.self_attn.out_proj for layer in encoder.layers),
                  model.config.encoder_attention_heads)

    def encode(inputs: ModelInputs) -> tuple[torch.Tensor, DynamicCache]:
        """The encoder's output and every decoder layer's cross-attention keys and values: computed
        once here, they make a patched decoder run ~10x cheaper (they do not depend on the prompt)."""
        features = inputs.extra["input_features"].to(model.device, whisper.dtype)
        hidden = encoder(input_features=features).last_hidden_state
        cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
        decoder(input_ids=inputs.input_ids[:, :1].to(model.device), encoder_hidden_states=hidden, use_cache=True,
                **{_CACHE_ARG: cache})
        return hidden, cache.cross_attention_cache

    def step(ids: torch.Tensor, audio: tuple[torch.Tensor, DynamicCache], cache: EncoderDecoderCache) -> torch.Tensor:
        return decoder(input_ids=ids.to(model.device), encoder_hidden_states=audio[0], use_cache=True,
                       **{_CACHE_ARG: cache}).last_hidden_state

    def run(inputs: ModelInputs, audio: tuple[torch.Tensor, DynamicCache], keep: slice = slice(None)) -> torch.Tensor:
        hidden = step(inputs.input_ids, audio, EncoderDecoderCache(DynamicCache(), audio[1]))
        return whisper.proj_out(hidden[0, keep]).float()

    def generate(inputs: ModelInputs, audio: tuple[torch.Tensor, DynamicCache], max_new_tokens: int) -> list[int]:
        limit = model.config.max_target_positions
        if inputs.length + max_new_tokens - 1 > limit:
            raise PatchingError(f"a decoder prefix of {inputs.length} tokens with max_new_tokens={max_new_tokens} "
                                f"exceeds Whisper's {limit} decoder positions: lower max_new_tokens")
        cache, ids, new = EncoderDecoderCache(DynamicCache(), audio[1]), inputs.input_ids, []
        for _ in range(max_new_tokens):
            token = int(whisper.proj_out(step(ids, audio, cache)[0, -1]).argmax())
            new.append(token)
            if token in model.stop_ids(inputs):
                break
            ids = torch.tensor([[token]])
        return new

    return Network(sequence, audio, encode, run, generate)


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
    if getattr(model, "family", None) == "whisper":
        return model.tokenizer.encode(text, add_special_tokens=False)
    return model.tokenizer.encode(text)


def decode_ids(model: Any, ids: Sequence[int]) -> str:
    """Text of `ids`, tags kept; ids the tokenizer has no text for are shown as `<id N>`."""
    try:
        return model.decode(list(ids))
    except (ValueError, KeyError, IndexError, TypeError):   # a random model's embedding-padding ids
        return "".join(decode_ids(model, [i]) if len(ids) > 1 else f"<id {i}>" for i in ids)


def short_text(text: str, limit: int = 32) -> str:
    """`repr` of `text`, cut to `limit` characters with an ellipsis (for labels and titles)."""
    return repr(text if len(text) <= limit else text[:limit - 1] + "…")


def greedy_ids(model: Any, inputs: ModelInputs, max_new_tokens: int) -> list[int]:
    """`model.generate`'s new ids, with the stop token when it ended the output."""
    generation = model.generate(inputs, max_new_tokens=max_new_tokens)
    return generation.ids + ([generation.stop_token] if generation.stop_token is not None else [])


def prompt_inputs(model: Any, prompt: Any, audio: Any, audio_dir: Any) -> ModelInputs:
    """Model inputs; a tag string without `<audio>…</audio>` gets the audio in front of it, as a
    TagPrompt does (Whisper takes its decoder prefix either way)."""
    if isinstance(prompt, str) and "<audio>" not in prompt and audio is not None \
            and getattr(model, "family", None) != "whisper":
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
