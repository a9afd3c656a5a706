"""The nano v2 model: build (Whisper-initialised), export (official layout + the v2 encoder keys), load,
and greedy generation from cached or live audio features.

The LLM and tokenizer are the workbench's own classes (`QwenAudio`, transformers' Qwen2, the
tiktoken-format BPE with every Qwen-Audio tag as a special token); only the encoder's layer mix and
adapter (encoder_v2.py) are new, and the workbench loader cannot read them yet (see encoder_v2.py).
"""
from __future__ import annotations

import inspect
import json
import shutil
import sys
from dataclasses import replace
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn
from transformers import DynamicCache, Qwen2ForCausalLM
from transformers.models.qwen2.modeling_qwen2 import Qwen2Model

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # recipes/: nano_data
from encoder_v2 import LayerMixEncoder  # noqa: E402
from nano_data import whisper_encoder_state  # noqa: E402

from workbench.models import registry  # noqa: E402
from workbench.models.qwen_audio import QwenAudio  # noqa: E402
from workbench.models.qwen_audio.config import QwenAudioConfig, weight_targets  # noqa: E402
from workbench.models.qwen_audio.encoder import AudioEncoder  # noqa: E402
from workbench.models.qwen_audio.nano import N_SPECIAL, WHISPER_SOURCE  # noqa: E402
from workbench.models.qwen_audio.official_layout import generation_config, official_config, save_qwen_audio  # noqa: E402
from workbench.tokenizer import TIKTOKEN_FILE, QwenAudioTokenizer  # noqa: E402

# hidden 256 × 4 layers with 4,096 BPE ranks: 16.8 M parameters, 34.8 MB in float16 (the gate is 40 MB);
# 6 layers measured 38.2 MB and ~25 % slower a token (recipes/v2/README.md: the time budget).
SIZES = dict(hidden=256, layers=4, heads=8, intermediate=1536, mixed_layers=(1, 2, 3, 4), adapter_layers=1)
WHISPER = dict(audio_state=384, audio_layers=4, audio_heads=6)
# transformers renamed past_key_values to cache; pass whichever this version takes
_CACHE_ARG = "cache" if "cache" in inspect.signature(Qwen2Model.forward).parameters else "past_key_values"


def v2_config(n_ranks: int, sizes: dict) -> dict:
    config = official_config(hidden=sizes["hidden"], layers=sizes["layers"], heads=sizes["heads"],
                             intermediate=sizes["intermediate"], **WHISPER, vocab_size=n_ranks + N_SPECIAL,
                             n_ranks=n_ranks)
    config.update(use_dynamic_ntk=False, use_logn_attn=False, max_position_embeddings=2048, torch_dtype="float16")
    config["audio"].update(mixed_layers=list(sizes["mixed_layers"]), adapter_layers=sizes["adapter_layers"])
    return config


def _network(config: QwenAudioConfig) -> nn.ModuleDict:
    llm_config = config.llm
    llm_config._attn_implementation = "sdpa"
    # The mix lives in `LayerMixEncoder` around a plain encoder while training (its frozen part is
    # cached); the exported config declares it, and the workbench's encoder then holds it itself.
    plain = replace(config.encoder, mixed_layers=(), adapter_layers=0)
    return nn.ModuleDict({"encoder": AudioEncoder(plain), "llm": Qwen2ForCausalLM(llm_config)})


def build_model(tokenizer_dir: Path, sizes: dict = SIZES, seed: int = 0) -> tuple[QwenAudio, LayerMixEncoder]:
    """A fresh v2 model: Whisper tiny.en stem and 4 blocks, random mix/adapter/projection and LLM."""
    tokenizer = QwenAudioTokenizer.from_dir(tokenizer_dir)
    config = QwenAudioConfig.from_official(v2_config(tokenizer.n_ranks, sizes), generation_config(n_ranks=tokenizer.n_ranks))
    torch.manual_seed(seed)
    network = _network(config)
    whisper = whisper_encoder_state(registry.ensure_converted(WHISPER_SOURCE), WHISPER["audio_layers"])
    missing, unexpected = network["encoder"].load_state_dict(whisper, strict=False)
    if set(missing) != {"proj.weight", "proj.bias", "audio_bos_eos_token.weight"} or unexpected:
        raise RuntimeError(f"Whisper → encoder mapping left {missing} unset and {unexpected} unused")
    nn.init.normal_(network["encoder"].audio_bos_eos_token.weight, std=0.02)
    model = QwenAudio(network, tokenizer, config, path=tokenizer_dir)
    mix = LayerMixEncoder(model.encoder, tuple(sizes["mixed_layers"]), sizes["adapter_layers"])
    return model, mix


def export(model: QwenAudio, mix: LayerMixEncoder, tokenizer_dir: Path, out: Path, log: Path | None = None) -> int:
    """Write the checkpoint (float16 weights, official layout + the mix keys) and return its size in bytes.

    The workbench's encoder holds the mix itself when the config declares it, so the export builds
    that encoder from the plain one and the mix, and writes it with the workbench's own writer."""
    encoder = AudioEncoder(model.config.encoder)
    encoder.load_state_dict(model.encoder.state_dict() | {"layer_logits": mix.layer_logits.detach()}
                            | {f"adapter.{name}": t for name, t in mix.adapter.state_dict().items()})
    full = QwenAudio(nn.ModuleDict({"encoder": encoder, "llm": model.llm}), model.tokenizer, model.config)
    save_qwen_audio(full, out, dtype=torch.float16, tokenizer=tokenizer_dir / TIKTOKEN_FILE)
    (out / "tokenizer_config.json").write_text(json.dumps(
        {"model_max_length": 2048, "tokenizer_class": "QWenTokenizer", "n_bpe_ranks": model.tokenizer.n_ranks},
        indent=2) + "\n")
    if log is not None and log.exists():
        shutil.copyfile(log, out / "train_log.jsonl")
    return (out / "model.safetensors").stat().st_size


def load_v2(directory: Path) -> tuple[QwenAudio, LayerMixEncoder]:
    """A v2 checkpoint written by `export`, in float32."""
    official = json.loads((directory / "config.json").read_text())
    tokenizer = QwenAudioTokenizer.from_dir(directory)
    config = QwenAudioConfig.from_official(official, json.loads((directory / "generation_config.json").read_text()))
    network = _network(config)
    model = QwenAudio(network, tokenizer, config, path=directory)
    audio = official["audio"]
    mix = LayerMixEncoder(model.encoder, tuple(audio["mixed_layers"]), audio["adapter_layers"])
    params = dict(network.named_parameters()) | dict(network.named_buffers())
    state = load_file(directory / "model.safetensors")
    with torch.no_grad():
        for name, tensor in state.items():
            if name == "transformer.audio.layer_logits":
                mix.layer_logits.copy_(tensor.float())
            elif name.startswith("transformer.audio.adapter."):
                mix.adapter.get_parameter(name.removeprefix("transformer.audio.adapter.")).copy_(tensor.float())
            elif name != "transformer.audio.mixed_layers":   # an int copy of config.json's, in early exports
                for target, rows in weight_targets(name, config.llm.hidden_size):
                    params[target].copy_((tensor if rows is None else tensor[rows]).float())
    network.eval(), mix.eval()
    return model, mix


@torch.no_grad()
def generate(model: QwenAudio, mix: LayerMixEncoder, prompt: str, features: list[torch.Tensor],
             max_new_tokens: int = 64) -> str:
    """Greedy continuation of `prompt` (its `<audio>…</audio>` spans filled from `features`, one
    tensor per audio, in order), stopping at `<|endoftext|>` or `<|im_end|>`; tags kept."""
    tokenizer, llm = model.tokenizer, model.llm
    embeds_audio = [mix.embeds(f) for f in features]
    ids = tokenizer.encode_with_audio(prompt, [e.shape[0] for e in embeds_audio])
    x = llm.model.embed_tokens(torch.tensor([ids]))
    starts = [i for i, t in enumerate(ids) if t == tokenizer.audio_start_id]
    for start, audio in zip(starts, embeds_audio):
        x[0, start: start + audio.shape[0]] = audio
    stops = {tokenizer.endoftext_id, tokenizer.special_id("<|im_end|>"), tokenizer.special_id("<|im_start|>")}
    out, cache = [], DynamicCache(config=llm.config)
    for _ in range(max_new_tokens):
        hidden = llm.model(inputs_embeds=x, use_cache=True, **{_CACHE_ARG: cache}).last_hidden_state
        token = int(llm.lm_head(hidden[0, -1]).argmax())
        if token in stops:
            break
        out.append(token)
        x = llm.model.embed_tokens(torch.tensor([[token]]))
    return tokenizer.decode(out).strip()
