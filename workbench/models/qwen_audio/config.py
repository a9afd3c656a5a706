"""Qwen-Audio's configuration and weights: config.json → our configs, the network, and where
each published tensor goes in it.

`QwenAudioConfig` reads config.json (and generation_config.json) into an `EncoderConfig` and the
transformers `Qwen2Config` that computes the official LLM; `build_network` makes the modules
(encoder + Qwen2ForCausalLM, on any device, `meta` included); `weight_targets` maps each official
tensor name onto them — `c_attn` split into q/k/v rows, `mlp.w2` → `gate_proj`, `mlp.w1` →
`up_proj`. The loader itself (`load_qwen_audio`) and the model are in qwen_audio.py.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch import nn
from transformers import Qwen2Config, Qwen2ForCausalLM

from workbench.errors import CheckpointError
from workbench.models.checkpoint import TensorInfo
from workbench.models.qwen_audio.encoder import AudioEncoder, EncoderConfig
from workbench.tags import AUDIO_START_ID, ENDOFTEXT_ID, N_BPE_RANKS

__all__ = ["QwenAudioConfig", "build_network", "check_values", "check_vocabulary", "is_ignored", "network_parts",
           "parameter_counts", "qwen2_config", "weight_targets"]


# --- config -------------------------------------------------------------------------------

@dataclass(frozen=True)
class QwenAudioConfig:
    encoder: EncoderConfig
    llm: Qwen2Config
    chat: bool
    max_positions: int          # beyond this the official model computes differently (module docstring)
    official: dict = field(repr=False)      # config.json as published
    generation: dict = field(repr=False)    # generation_config.json ({} when absent)

    @classmethod
    def from_official(cls, official: dict, generation: dict | None = None, chat: bool | None = None) -> QwenAudioConfig:
        generation = generation or {}
        check_values(official)
        encoder, llm = EncoderConfig.from_official(_audio_block(official)), qwen2_config(official)
        if encoder.output_dim != llm.hidden_size:
            raise CheckpointError(f"audio output_dim {encoder.output_dim} differs from the LLM hidden_size "
                                  f"{llm.hidden_size}: the audio embeddings cannot be spliced into the prompt")
        if encoder.audio_start_id < AUDIO_START_ID - N_BPE_RANKS + 256:
            raise CheckpointError(f"audio_start_id {encoder.audio_start_id} leaves room for fewer than the 256 "
                                  f"single-byte ranks before the special tokens (<audio> is special token "
                                  f"{AUDIO_START_ID - N_BPE_RANKS}): this is not a Qwen-Audio vocabulary")
        chat = generation.get("chat_format") == "chatml" if chat is None else bool(chat)
        scaled = official.get("use_dynamic_ntk", False) or official.get("use_logn_attn", False)
        max_positions = official.get("seq_length", 2048) if scaled else llm.max_position_embeddings
        return cls(encoder, llm, chat, int(max_positions), official, generation)


_POSITIVE_INTS = ("hidden_size", "num_attention_heads", "num_hidden_layers", "intermediate_size", "vocab_size",
                  "kv_channels", "max_position_embeddings", "seq_length")
_AUDIO_POSITIVE_INTS = ("n_mels", "n_ctx", "n_state", "n_head", "n_layer", "output_dim", "audio_start_id")
_POSITIVE_FLOATS = ("layer_norm_epsilon", "rotary_emb_base")


def check_values(official: dict) -> None:
    """Every size in config.json a positive int and every float positive and finite, so that a damaged
    or hand-edited config fails here, by key, rather than as a ZeroDivisionError or a silent NaN."""
    def bad(key: str, value: object, want: str) -> CheckpointError:
        return CheckpointError(f"config.json: {key} is {value!r}, but it must be {want}: the config is damaged or "
                               "was edited; restore config.json from the original checkpoint")

    audio = official.get("audio") if isinstance(official.get("audio"), dict) else {}
    sizes = [(key, official[key]) for key in _POSITIVE_INTS if key in official]
    sizes += [(f"audio.{key}", audio[key]) for key in _AUDIO_POSITIVE_INTS if key in audio]
    for key, value in sizes:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise bad(key, value, "a positive integer")
    for key in _POSITIVE_FLOATS:
        value = official.get(key, 1.0)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
            raise bad(key, value, "a positive finite number")
    if official.get("intermediate_size", 2) % 2:
        raise bad("intermediate_size", official["intermediate_size"], "even (the official MLP uses half of it)")


def _audio_block(official: dict) -> dict:
    if official.get("model_type") != "qwen" or not isinstance(official.get("audio"), dict):
        raise CheckpointError(
            f"config.json has model_type {official.get('model_type')!r} and "
            f"{'an' if 'audio' in official else 'no'} 'audio' block: Qwen-Audio v1 needs model_type 'qwen' "
            "with an 'audio' encoder block (Qwen2-Audio and Whisper load through workbench.load)")
    return official["audio"]


def qwen2_config(official: dict) -> Qwen2Config:
    """transformers' Qwen2 config that computes the official Qwen(-7B) LLM."""
    required = ("hidden_size", "num_attention_heads", "num_hidden_layers", "intermediate_size", "vocab_size")
    missing = [key for key in required if key not in official]
    if missing:
        raise CheckpointError(f"config.json lacks {missing}: not a Qwen-Audio LLM config")
    hidden, heads = official["hidden_size"], official["num_attention_heads"]
    if hidden % heads or official.get("kv_channels", hidden // heads) * heads != hidden:
        raise CheckpointError(f"config.json: kv_channels {official.get('kv_channels')} × {heads} heads ≠ hidden_size "
                              f"{hidden}; only the published layout (projection size = hidden size) is supported")
    if official.get("rotary_pct", 1.0) != 1.0 or not official.get("no_bias", True):
        raise CheckpointError("config.json: rotary_pct ≠ 1 or no_bias false; only the published layout is supported")
    audio_start = (official.get("audio") or {}).get("audio_start_id", AUDIO_START_ID)
    n_ids = n_token_ids(audio_start)
    if official["vocab_size"] < n_ids:
        raise CheckpointError(f"config.json vocab_size {official['vocab_size']} is smaller than the tokenizer's "
                              f"{n_ids} ids (<audio> is {audio_start}): the embedding cannot hold the "
                              "audio tags; this is not a Qwen-Audio checkpoint")
    return Qwen2Config(
        vocab_size=official["vocab_size"], hidden_size=hidden, num_hidden_layers=official["num_hidden_layers"],
        num_attention_heads=heads, num_key_value_heads=heads,
        intermediate_size=official["intermediate_size"] // 2,   # the official MLP halves the config value
        hidden_act="silu", rms_norm_eps=official.get("layer_norm_epsilon", 1e-6),
        rope_parameters={"rope_type": "default", "rope_theta": float(official.get("rotary_emb_base", 10000))},
        max_position_embeddings=official.get("max_position_embeddings", 8192), tie_word_embeddings=False,
        use_sliding_window=False, eos_token_id=audio_start - (AUDIO_START_ID - ENDOFTEXT_ID))


def n_token_ids(audio_start_id: int) -> int:
    """Token ids of the tokenizer whose `<audio>` is `audio_start_id`: `</audio>`, the last, follows it."""
    return audio_start_id + 2


def parameter_counts(official: dict) -> dict[str, int]:
    """Parameters per part (encoder, projector, llm) from config.json alone: modules built on meta."""
    config = QwenAudioConfig.from_official(official)
    with torch.device("meta"):
        network = build_network(config, "sdpa")
    return {name: sum(p.numel() for p in part.parameters()) for name, part in network_parts(network).items()}


def build_network(config: QwenAudioConfig, attn: str) -> nn.ModuleDict:
    llm_config = copy.deepcopy(config.llm)
    llm_config._attn_implementation = attn
    return nn.ModuleDict({"encoder": AudioEncoder(config.encoder, attn), "llm": Qwen2ForCausalLM(llm_config)})


def network_parts(network: nn.ModuleDict) -> dict[str, nn.Module]:
    encoder = network["encoder"]
    stem = [encoder.conv1, encoder.conv2, encoder.blocks, encoder.ln_post]
    if encoder.config.mixed_layers:   # nano v2's layer mix belongs to the encoder
        stem += [encoder.adapter, nn.ParameterList([encoder.layer_logits])]
    return {"encoder": nn.ModuleList(stem),
            "projector": nn.ModuleList([encoder.proj, encoder.audio_bos_eos_token]),
            "llm": network["llm"]}


# --- weights ------------------------------------------------------------------------------

_LAYER_RENAMES = {"ln_1": "input_layernorm", "ln_2": "post_attention_layernorm", "attn.c_proj": "self_attn.o_proj",
                  "mlp.w1": "mlp.up_proj", "mlp.w2": "mlp.gate_proj", "mlp.c_proj": "mlp.down_proj"}
_TOP_RENAMES = {"transformer.wte.weight": "llm.model.embed_tokens.weight",
                "transformer.ln_f.weight": "llm.model.norm.weight", "lm_head.weight": "llm.lm_head.weight"}


def weight_targets(name: str, hidden_size: int) -> list[tuple[str, slice | None]]:
    """Where official tensor `name` goes in the network: [(target, rows of the source)], [] if unknown."""
    if name.startswith("transformer.audio."):
        return [("encoder." + name.removeprefix("transformer.audio."), None)]
    if name in _TOP_RENAMES:
        return [(_TOP_RENAMES[name], None)]
    prefix, _, rest = name.partition(".h.")
    layer, _, leaf = rest.partition(".")
    module, _, kind = leaf.rpartition(".")
    if prefix != "transformer" or not layer.isdigit() or kind not in ("weight", "bias"):
        return []
    base = f"llm.model.layers.{layer}"
    if module == "attn.c_attn":  # fused [q; k; v] along the output dimension
        return [(f"{base}.self_attn.{part}_proj.{kind}", slice(i * hidden_size, (i + 1) * hidden_size))
                for i, part in enumerate("qkv")]
    return [(f"{base}.{_LAYER_RENAMES[module]}.{kind}", None)] if module in _LAYER_RENAMES else []


def is_ignored(name: str) -> bool:
    # Non-persistent buffers some exports include; recomputed here, never weights.
    return name.endswith((".rotary_emb.inv_freq", ".attn.masked_bias", ".attn.bias"))


def check_vocabulary(index: dict[str, TensorInfo], n_ids: int, audio_start_id: int) -> None:
    for name in ("transformer.wte.weight", "lm_head.weight"):
        if name in index and index[name].shape[0] < n_ids:
            raise CheckpointError(f"{name} has {index[name].shape[0]} rows, fewer than the tokenizer's {n_ids} "
                                  f"ids (<audio> is {audio_start_id}): this is not a Qwen-Audio checkpoint")
