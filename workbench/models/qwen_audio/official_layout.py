"""Qwen-Audio (v1) checkpoints written in the published layout, at any size.

What a published Qwen-Audio / Qwen-Audio-Chat directory holds, and what is written here:
`config.json` (model_type "qwen" with the `"audio"` block, the official keys), `generation_config.json`,
`tokenizer_config.json`, `qwen.tiktoken`, and the weights under the official names
(`transformer.audio.*`, `transformer.h.{i}.attn.c_attn` with q, k, v fused, `mlp.w1/w2/c_proj`,
`transformer.wte`, `lm_head`) as safetensors, split into `model-0000i-of-0000n.safetensors` plus
`model.safetensors.index.json` once they pass `shard_bytes` (the published checkpoint: 9 shards).

Two writers share that code:
- `write_random_checkpoint(dir, official_config(...))`: seeded random weights, from a tiny test
  model up to `REAL_CONFIG` (the published 8.4 B sizes) for load and speed measurements;
- `save_qwen_audio(model, dir)`: a loaded or trained `QwenAudio` back to disk, through
  `to_official_state_dict`, the inverse of the loader's weight mapping.

The tokenizer file. The real `qwen.tiktoken` is not ours to ship: pass `tokenizer=` the path of one
(a user's checkpoint) and it is copied. Without it a *synthetic* ranks file is written: the same
151,643 ranks, the 256 single bytes first, then filler byte pairs and ASCII triples, so any text
encodes and decodes losslessly, but into other ids than the real tokenizer gives. The special
tokens (`<|endoftext|>` 151643, ChatML, every tag, `<audio>` 155163) are numbered after the ranks,
so their ids are the real ones. Good for tests and timings; a model trained on the real
vocabulary reads nonsense through it.
"""
from __future__ import annotations

import base64
import itertools
import json
import math
import re
import shutil
import string
import zlib
from pathlib import Path
from typing import Callable

import torch
from safetensors.torch import save_file

from workbench.errors import CheckpointError
from workbench.models.checkpoint import CONFIG_FILE, INDEX_FILE, SINGLE_FILE, placeholder, resolve_dtype
from workbench.models.qwen_audio.config import QwenAudioConfig, weight_targets
from workbench.models.qwen_audio.model import QwenAudio
from workbench.tags import AUDIO_START_ID, ENDOFTEXT_ID, N_BPE_RANKS
from workbench.tokenizer import MAX_WINDOW, TIKTOKEN_FILE

__all__ = ["REAL_CONFIG", "SHARD_BYTES", "generation_config", "official_config", "official_part",
           "official_shapes", "save_qwen_audio", "sinusoids", "to_official_state_dict",
           "write_random_checkpoint", "write_synthetic_tiktoken"]

SHARD_BYTES = 2 * 10**9   # the most tensor bytes in one shard, as `save_pretrained(max_shard_size="2GB")`
GENERATION_FILE = "generation_config.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
TOKENIZER_CONFIG = {"model_max_length": 8192, "tokenizer_class": "QWenTokenizer",
                    "auto_map": {"AutoTokenizer": ["tokenization_qwen.QWenTokenizer", None]}}
_DTYPE_NAMES = {torch.float16: "float16", torch.bfloat16: "bfloat16", torch.float32: "float32"}
_SPECIALS_BEFORE_AUDIO = AUDIO_START_ID - N_BPE_RANKS   # 3,520 special tokens precede <audio>


# --- config -------------------------------------------------------------------------------------

def official_config(*, hidden: int = 4096, layers: int = 32, heads: int = 32, intermediate: int = 22016,
                    audio_state: int = 1280, audio_layers: int = 32, audio_heads: int = 20,
                    vocab_size: int = 155947, n_ranks: int = N_BPE_RANKS) -> dict:
    """config.json of a Qwen-Audio with these sizes, with every key the published one has.

    `intermediate` is the config value, which the official MLP halves (22016 → 11008 a branch).
    The audio encoder's output width is the LLM's hidden size (the audio is spliced into it).
    `n_ranks`: BPE ranks of the tokenizer file (Qwen's 151,643). The special tokens are numbered
    after the ranks, so a smaller ranks file moves `audio_start_id` (`workbench.tokenizer`).
    Defaults: the published sizes (`REAL_CONFIG`).
    """
    for name, value in (("hidden", hidden), ("layers", layers), ("heads", heads), ("intermediate", intermediate),
                        ("audio_state", audio_state), ("audio_layers", audio_layers),
                        ("audio_heads", audio_heads), ("vocab_size", vocab_size), ("n_ranks", n_ranks)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}={value!r}: give a positive int")
    if hidden % heads or audio_state % audio_heads:
        raise ValueError(f"hidden {hidden} / heads {heads} and audio_state {audio_state} / audio_heads "
                         f"{audio_heads} must divide evenly: every head gets the same width")
    if intermediate % 2:
        raise ValueError(f"intermediate={intermediate}: give an even number (the official MLP uses half of it)")
    return {
        "architectures": ["QWenLMHeadModel"],
        "attn_dropout_prob": 0.0,
        "audio": {"add_audio_bos_eos_token": True, "audio_start_id": n_ranks + _SPECIALS_BEFORE_AUDIO,
                  "avg_pool": True,
                  "n_ctx": 1500, "n_head": audio_heads, "n_layer": audio_layers, "n_mels": 80,
                  "n_state": audio_state, "output_dim": hidden},
        "auto_map": {"AutoConfig": "configuration_qwen.QWenConfig",
                     "AutoModelForCausalLM": "modeling_qwen.QWenLMHeadModel"},
        # bf16/fp16/fp32 all false: the remote code then picks the precision for the device
        "bf16": False, "emb_dropout_prob": 0.0, "fp16": False, "fp32": False,
        "hidden_size": hidden, "initializer_range": 0.02, "intermediate_size": intermediate,
        "kv_channels": hidden // heads, "layer_norm_epsilon": 1e-05, "max_position_embeddings": 8192,
        "model_type": "qwen", "no_bias": True, "num_attention_heads": heads, "num_hidden_layers": layers,
        "onnx_safe": None, "rotary_emb_base": 10000, "rotary_pct": 1.0, "scale_attn_weights": True,
        "seq_length": 2048, "softmax_in_fp32": False, "tie_word_embeddings": False,
        "tokenizer_type": "QWenTokenizer", "torch_dtype": "bfloat16", "transformers_version": "4.32.0",
        "use_cache": True, "use_cache_kernel": False, "use_cache_quantization": False,
        "use_dynamic_ntk": True, "use_flash_attn": False, "use_logn_attn": True, "vocab_size": vocab_size,
    }


REAL_CONFIG = official_config()  # Qwen-Audio as published: 640,119,808 + 7,754,182,656 parameters


def generation_config(chat: bool = False, n_ranks: int = N_BPE_RANKS) -> dict:
    """generation_config.json of the base model (raw prompts, top_p 0.8) or of Qwen-Audio-Chat
    (ChatML, top_p 0.5, history window 6144). The loader reads `chat_format` to pick the family.
    `<|endoftext|>` is the first special token, numbered `n_ranks` (151643 for Qwen's ranks)."""
    eos = n_ranks + ENDOFTEXT_ID - N_BPE_RANKS
    if chat:
        return {"chat_format": "chatml", "eos_token_id": eos, "pad_token_id": eos,
                "max_window_size": MAX_WINDOW, "max_new_tokens": 512, "do_sample": True, "top_k": 0,
                "top_p": 0.5, "transformers_version": "4.31.0"}
    return {"chat_format": "raw", "eos_token_id": eos, "pad_token_id": eos, "stop_words_ids": [[eos]],
            "max_new_tokens": 512, "do_sample": True, "top_k": 0, "top_p": 0.8, "transformers_version": "4.31.0"}


def _n_ranks(config: dict) -> int:
    """The BPE ranks of the tokenizer that `config` was written for (from its `<audio>` id)."""
    return config["audio"]["audio_start_id"] - _SPECIALS_BEFORE_AUDIO


# --- the tensors --------------------------------------------------------------------------------

def official_shapes(config: dict) -> dict[str, tuple[int, ...]]:
    """Every tensor of the published layout for `config`, in the order they are written."""
    a, h, v = config["audio"], config["hidden_size"], config["vocab_size"]
    s, ffn = a["n_state"], config["intermediate_size"] // 2
    shapes = {"transformer.wte.weight": (v, h),
              "transformer.audio.conv1.weight": (s, a["n_mels"], 3), "transformer.audio.conv1.bias": (s,),
              "transformer.audio.conv2.weight": (s, s, 3), "transformer.audio.conv2.bias": (s,),
              "transformer.audio.positional_embedding": (a["n_ctx"], s)}
    for i in range(a["n_layer"]):
        block = f"transformer.audio.blocks.{i}"
        for name in ("query", "value", "out"):
            shapes |= {f"{block}.attn.{name}.weight": (s, s), f"{block}.attn.{name}.bias": (s,)}
        shapes |= {f"{block}.attn.key.weight": (s, s),   # the key projection has no bias
                   f"{block}.mlp.0.weight": (4 * s, s), f"{block}.mlp.0.bias": (4 * s,),
                   f"{block}.mlp.2.weight": (s, 4 * s), f"{block}.mlp.2.bias": (s,)}
        for norm in ("attn_ln", "mlp_ln"):
            shapes |= {f"{block}.{norm}.weight": (s,), f"{block}.{norm}.bias": (s,)}
    shapes |= {"transformer.audio.ln_post.weight": (s,), "transformer.audio.ln_post.bias": (s,),
               "transformer.audio.proj.weight": (a["output_dim"], s), "transformer.audio.proj.bias": (a["output_dim"],),
               "transformer.audio.audio_bos_eos_token.weight": (2, a["output_dim"])}
    if a.get("mixed_layers"):   # nano v2's layer mix (workbench.models.qwen_audio.encoder)
        shapes["transformer.audio.layer_logits"] = (len(a["mixed_layers"]),)
        for j in range(a.get("adapter_layers", 0)):
            block = f"transformer.audio.adapter.{j}"
            for name in ("query", "value", "out"):
                shapes |= {f"{block}.attn.{name}.weight": (s, s), f"{block}.attn.{name}.bias": (s,)}
            shapes |= {f"{block}.attn.key.weight": (s, s), f"{block}.mlp.0.weight": (4 * s, s),
                       f"{block}.mlp.0.bias": (4 * s,), f"{block}.mlp.2.weight": (s, 4 * s), f"{block}.mlp.2.bias": (s,)}
            for norm in ("attn_ln", "mlp_ln"):
                shapes |= {f"{block}.{norm}.weight": (s,), f"{block}.{norm}.bias": (s,)}
    for i in range(config["num_hidden_layers"]):
        layer = f"transformer.h.{i}"
        shapes |= {f"{layer}.ln_1.weight": (h,), f"{layer}.attn.c_attn.weight": (3 * h, h),
                   f"{layer}.attn.c_attn.bias": (3 * h,), f"{layer}.attn.c_proj.weight": (h, h),
                   f"{layer}.ln_2.weight": (h,), f"{layer}.mlp.w1.weight": (ffn, h),
                   f"{layer}.mlp.w2.weight": (ffn, h), f"{layer}.mlp.c_proj.weight": (h, ffn)}
    shapes |= {"transformer.ln_f.weight": (h,), "lm_head.weight": (v, h)}
    return shapes


_PARTS = (("transformer.audio.conv", "encoder: conv stem"),
          ("transformer.audio.positional_embedding", "encoder: positions (fixed sinusoids)"),
          ("transformer.audio.blocks.", "encoder: transformer blocks"),
          ("transformer.audio.ln_post.", "encoder: ln_post"),
          ("transformer.audio.layer_logits", "encoder: layer mix weights (nano v2)"),
          ("transformer.audio.adapter.", "encoder: adapter blocks (nano v2)"),
          ("transformer.audio.proj.", "projector: proj"),
          ("transformer.audio.audio_bos_eos_token.", "projector: audio bos/eos"),
          ("transformer.wte.", "LLM: token embedding"),
          ("transformer.h.", "LLM: transformer blocks"),
          ("transformer.ln_f.", "LLM: final RMSNorm"),
          ("lm_head.", "LLM: lm_head"))


def _template(name: str) -> str:
    return re.sub(r"\.\d+\.", ".{i}.", name)


def official_part(name: str) -> str:
    """Which part of the model the official tensor `name` belongs to, e.g. 'encoder: conv stem'."""
    if _template(name) in _TEMPLATES:
        return next(part for prefix, part in _PARTS if name.startswith(prefix))
    raise ValueError(f"{name!r} is not a tensor name of the published Qwen-Audio layout (see official_shapes)")


def _templates() -> frozenset[str]:
    config = official_config(hidden=8, layers=1, heads=1, intermediate=8, audio_state=8, audio_layers=1, audio_heads=1)
    config["audio"] |= {"mixed_layers": [1], "adapter_layers": 1}   # the published names and nano v2's
    return frozenset(_template(name) for name in official_shapes(config))


_TEMPLATES = _templates()


def sinusoids(length: int, channels: int, max_timescale: float = 10000) -> torch.Tensor:
    """Whisper's fixed positional embedding (length, channels): sines in the first half, cosines after."""
    if channels % 2 or channels < 4:
        raise ValueError(f"channels={channels}: the sinusoids need an even width of at least 4")
    log_timescale_increment = math.log(max_timescale) / (channels // 2 - 1)
    inv_timescales = torch.exp(-log_timescale_increment * torch.arange(channels // 2))
    scaled_time = torch.arange(length)[:, None] * inv_timescales[None, :]
    return torch.cat([torch.sin(scaled_time), torch.cos(scaled_time)], dim=1)


_NORMS = (".attn_ln.", ".mlp_ln.", ".ln_post.", ".ln_1.", ".ln_2.", ".ln_f.")
_RANDOM_BLOCK = 2**24  # elements drawn at once: the float32 scratch stays at 64 MB whatever the tensor


def _random_tensor(name: str, shape: tuple[int, ...], config: dict, seed: int, dtype: torch.dtype) -> torch.Tensor:
    """Norm weights 1 and biases 0, sinusoidal positions, the rest N(0, initializer_range²).

    Each tensor has its own generator, seeded from `seed` and its name, so its values do not depend
    on the shard size or on which other tensors exist.
    """
    if any(norm in name for norm in _NORMS):
        return (torch.ones if name.endswith(".weight") else torch.zeros)(shape, dtype=dtype)
    if name.endswith("positional_embedding"):
        return sinusoids(*shape).to(dtype)
    generator = torch.Generator().manual_seed(zlib.crc32(f"{seed}:{name}".encode()))  # mt19937: 32 bits
    out = torch.empty(shape, dtype=dtype)
    rows = out.view(shape[0], -1)
    step = max(1, _RANDOM_BLOCK // max(1, rows.shape[1]))
    for start in range(0, rows.shape[0], step):
        block = rows[start:start + step]
        block.copy_(torch.randn(block.shape, generator=generator) * config.get("initializer_range", 0.02))
    return out


def to_official_state_dict(model: QwenAudio) -> dict[str, torch.Tensor]:
    """The model's weights under the official names: the loader's mapping run backwards.

    q, k, v → `attn.c_attn` (concatenated, in that order), `up_proj` → `mlp.w1`, `gate_proj` →
    `mlp.w2`, `down_proj` → `mlp.c_proj`, `o_proj` → `attn.c_proj`, … (`weight_targets` says where
    each official tensor goes; this gathers it back). Tensors are the model's own (no copy), except
    `c_attn`, which is a new concatenation.
    """
    if not isinstance(model, QwenAudio):
        raise TypeError(f"to_official_state_dict takes a QwenAudio (Qwen-Audio v1), not {type(model).__name__}")
    hidden = model.config.llm.hidden_size
    state = {}
    for name, shape in official_shapes(model.config.official).items():
        parts = [placeholder(model.network, target) for target, _ in weight_targets(name, hidden)]
        tensor = parts[0] if len(parts) == 1 else torch.cat(parts)
        if tuple(tensor.shape) != shape:
            raise CheckpointError(f"{name}: the model holds shape {tuple(tensor.shape)} but its config.json "
                                  f"describes {shape}: the network was changed after loading")
        state[name] = tensor.detach()
    return state


# --- the tokenizer file -------------------------------------------------------------------------

# ASCII roughly by frequency in English text, then the rest of the printable characters.
_FREQUENT = " etaoinsrhldcumfpgwybvkxjqzETAOINSRHLDCUMFPGWYBVKXJQZ0123456789.,'\"-?!:;()\n"
_ALPHABET = _FREQUENT + "".join(c for c in string.printable if c not in _FREQUENT)
_MAX_SYNTHETIC_RANKS = 256 + 256**2 + len(_ALPHABET) ** 3


def _synthetic_tokens(n_ranks: int) -> list[bytes]:
    """`n_ranks` distinct byte strings: every single byte, every byte pair (printable ones first),
    then printable triples. Each pair merges from two bytes and each triple from a pair and a
    byte, so BPE reaches every token, and with the single bytes first any text encodes."""
    printable = [c.encode() for c in _ALPHABET]
    singles = [bytes([b]) for b in range(256)]
    pairs = [a + b for a in printable for b in printable]
    seen = set(pairs)
    pairs += [a + b for a in singles for b in singles if a + b not in seen]
    needed = max(0, n_ranks - len(singles) - len(pairs))
    triples = [a + b + c for a, b, c in itertools.islice(itertools.product(printable, repeat=3), needed)]
    return (singles + pairs + triples)[:n_ranks]


def write_synthetic_tiktoken(path: str | Path, n_ranks: int = N_BPE_RANKS) -> Path:
    """Write a synthetic `qwen.tiktoken` (module docstring): by default the real file's rank count,
    hence its special-token ids, with other ids for text. Deterministic: the same bytes every time."""
    if isinstance(n_ranks, bool) or not isinstance(n_ranks, int) or not 256 <= n_ranks <= _MAX_SYNTHETIC_RANKS:
        raise ValueError(f"n_ranks={n_ranks!r}: a synthetic ranks file holds the 256 single bytes first, so give "
                         f"an int in [256, {_MAX_SYNTHETIC_RANKS}] (Qwen's is {N_BPE_RANKS})")
    path = Path(path)
    tokens = _synthetic_tokens(n_ranks)
    path.write_bytes(b"".join(base64.b64encode(token) + b" %d\n" % rank for rank, token in enumerate(tokens)))
    return path


def _tokenizer_file(source: str | Path, n_ranks: int) -> Path:
    """The qwen.tiktoken that `source` names (a file, or a checkpoint directory), with `n_ranks` ranks."""
    source = Path(source).expanduser()
    file = source / TIKTOKEN_FILE if source.is_dir() else source
    if not file.is_file():
        raise FileNotFoundError(f"tokenizer={str(source)!r}: no such file (nor a directory holding {TIKTOKEN_FILE}); "
                                "pass the qwen.tiktoken of a Qwen-Audio checkpoint, or None for a synthetic one")
    with file.open("rb") as handle:
        ranks = sum(1 for line in handle if line.strip())
    if ranks != n_ranks:
        raise ValueError(f"tokenizer {file} has {ranks} ranks but the config's audio_start_id is written for "
                         f"{n_ranks} (Qwen's: {N_BPE_RANKS}): pass the tokenizer file the model was trained with, "
                         "or None for a synthetic one")
    return file


# --- writing ------------------------------------------------------------------------------------

def write_random_checkpoint(directory: str | Path, config: dict, *, seed: int = 0,
                            dtype: str | torch.dtype = torch.float16, shard_bytes: int = SHARD_BYTES,
                            tokenizer: str | Path | None = None, chat: bool = False) -> Path:
    """A Qwen-Audio checkpoint of `config`'s sizes with seeded random weights (see `_random_tensor`).

    dtype: float16, bfloat16 or float32 on disk. shard_bytes: above this many tensor bytes the
    weights are split into shards plus an index. tokenizer: a qwen.tiktoken to copy (or the
    checkpoint directory holding one); None writes the synthetic file (module docstring).
    chat: write Qwen-Audio-Chat's generation config (ChatML) instead of the base model's.
    Same arguments, same bytes. Returns the directory.
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**31:
        raise ValueError(f"seed={seed!r}: give an int in [0, 2**31)")
    dtype = resolve_dtype(dtype, torch.device("cpu"))
    shapes = official_shapes(config)
    return _write(directory, config, generation_config(chat, _n_ranks(config)), shapes,
                  lambda name: _random_tensor(name, shapes[name], config, seed, dtype),
                  dtype=dtype, shard_bytes=shard_bytes, tokenizer=tokenizer)


def save_qwen_audio(model: QwenAudio, directory: str | Path, *, dtype: str | torch.dtype | None = None,
                    shard_bytes: int = SHARD_BYTES, tokenizer: str | Path | None = None) -> Path:
    """Write `model` in the published layout: its config.json and generation config as loaded,
    its weights (in `dtype`, default the model's) under the official names. tokenizer: default the
    qwen.tiktoken of the directory the model was loaded from."""
    state = to_official_state_dict(model)
    dtype = model.dtype if dtype is None else resolve_dtype(dtype, torch.device("cpu"))
    if tokenizer is None:
        if model.path is None or not (model.path / TIKTOKEN_FILE).is_file():
            raise FileNotFoundError(f"the model was not loaded from a directory with {TIKTOKEN_FILE} "
                                    f"(path {model.path}): pass tokenizer= a qwen.tiktoken file")
        tokenizer = model.path / TIKTOKEN_FILE
    generation = model.config.generation or generation_config(model.config.chat, _n_ranks(model.config.official))
    return _write(directory, model.config.official, generation, {n: tuple(t.shape) for n, t in state.items()},
                  lambda name: state[name].to("cpu", dtype), dtype=dtype, shard_bytes=shard_bytes,
                  tokenizer=tokenizer)


def _write(directory: str | Path, config: dict, generation: dict, shapes: dict[str, tuple[int, ...]],
           make: Callable[[str], torch.Tensor], *, dtype: torch.dtype, shard_bytes: int,
           tokenizer: str | Path | None) -> Path:
    """Shard plan from the shapes, then one shard at a time in memory: `make(name)` gives a tensor."""
    if isinstance(shard_bytes, bool) or not isinstance(shard_bytes, int) or shard_bytes < 1:
        raise ValueError(f"shard_bytes={shard_bytes!r}: give a positive number of bytes")
    QwenAudioConfig.from_official(config)  # the loader's checks, before anything is written
    n_ranks = _n_ranks(config)
    tokenizer_file = None if tokenizer is None else _tokenizer_file(tokenizer, n_ranks)
    directory = Path(directory).expanduser()
    if directory.exists() and any(directory.iterdir()):
        raise FileExistsError(f"{directory} is not empty: write a checkpoint into a new or empty directory "
                              "(old shards or an old index left beside new ones would be read instead)")
    directory.mkdir(parents=True, exist_ok=True)
    shards: list[list[str]] = [[]]
    filled = 0
    for name, shape in shapes.items():
        size = math.prod(shape) * dtype.itemsize
        if shards[-1] and filled + size > shard_bytes:   # a tensor larger than a shard gets its own
            shards.append([])
            filled = 0
        shards[-1].append(name)
        filled += size
    weight_map, total = {}, 0
    for i, names in enumerate(shards):
        file = SINGLE_FILE if len(shards) == 1 else f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        tensors = {name: make(name).contiguous() for name in names}
        save_file(tensors, directory / file, metadata={"format": "pt"})
        weight_map |= dict.fromkeys(names, file)
        total += sum(t.numel() * t.element_size() for t in tensors.values())
        del tensors
    if len(shards) > 1:
        (directory / INDEX_FILE).write_text(json.dumps({"metadata": {"total_size": total},
                                                        "weight_map": weight_map}, indent=2))
    (directory / CONFIG_FILE).write_text(json.dumps({**config, "torch_dtype": _DTYPE_NAMES[dtype]}, indent=2))
    (directory / GENERATION_FILE).write_text(json.dumps(generation, indent=2))
    (directory / TOKENIZER_CONFIG_FILE).write_text(json.dumps(TOKENIZER_CONFIG, indent=2))
    if tokenizer_file is None:
        write_synthetic_tiktoken(directory / TIKTOKEN_FILE, n_ranks)
    else:
        shutil.copyfile(tokenizer_file, directory / TIKTOKEN_FILE)
    return directory
