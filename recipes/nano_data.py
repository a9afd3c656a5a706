"""What the nano recipe trains on: a Whisper-initialised encoder, frozen features, token sequences.

The speed trick. The Whisper blocks stay frozen, so their output for a clip never changes: each
clip runs conv1 → conv2 → blocks → 2× average pool once, and the pooled frames (n_tok, 384) are
kept in float16. Training then runs only what learns — `ln_post` → `proj` → [bos, …, eos] and the
LLM — which on two CPU cores is the difference between hours and minutes. `check_features` proves
that features + ln_post + proj equal what `AudioEncoder.forward` gives at inference.

A training sequence is the prompt as the model sees it at inference (`<audio>` + pads + `</audio>` +
tags, or the whole ChatML prompt) followed by the reference and its stop token (`<|endoftext|>`
after tags, `<|im_end|>` after ChatML); the loss is taken on the reference and stop tokens only.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from tqdm import tqdm

from workbench.audio import encoder_frames, log_mel
from workbench.models.qwen_audio.encoder import AudioEncoder
from workbench.tokenizer import QwenAudioTokenizer

# --- Whisper → AudioEncoder -------------------------------------------------------------------

_BLOCK_NAMES = {"self_attn.q_proj": "attn.query", "self_attn.k_proj": "attn.key", "self_attn.v_proj": "attn.value",
                "self_attn.out_proj": "attn.out", "self_attn_layer_norm": "attn_ln", "fc1": "mlp.0",
                "fc2": "mlp.2", "final_layer_norm": "mlp_ln"}


def whisper_encoder_state(whisper_dir: str | Path, n_layer: int) -> dict[str, torch.Tensor]:
    """Whisper's encoder weights (transformers layout) under `AudioEncoder` names, first `n_layer` blocks.

    Whisper's final `layer_norm` sits before the pool and ours (`ln_post`) after it; it initialises
    ours anyway (the pool averages neighbours, so the statistics it normalises barely move)."""
    whisper = load_file(Path(whisper_dir) / "model.safetensors")
    state = {"conv1.weight": "conv1.weight", "conv1.bias": "conv1.bias", "conv2.weight": "conv2.weight",
             "conv2.bias": "conv2.bias", "positional_embedding": "embed_positions.weight",
             "ln_post.weight": "layer_norm.weight", "ln_post.bias": "layer_norm.bias"}
    for i in range(n_layer):
        for theirs, ours in _BLOCK_NAMES.items():
            for kind in ("weight", "bias"):
                if f"model.encoder.layers.{i}.{theirs}.{kind}" in whisper:
                    state[f"blocks.{i}.{ours}.{kind}"] = f"layers.{i}.{theirs}.{kind}"
    return {ours: whisper[f"model.encoder.{theirs}"].float() for ours, theirs in state.items()}


# --- frozen features ---------------------------------------------------------------------------

def read_clip(path: str | Path) -> np.ndarray:
    samples, rate = sf.read(path, dtype="float32")
    if rate != 16000 or samples.ndim != 1:
        raise ValueError(f"{path}: {rate} Hz, {samples.ndim} channel axes; the corpus is 16 kHz mono")
    return samples


@torch.no_grad()
def pooled_frames(encoder: AudioEncoder, samples: np.ndarray) -> torch.Tensor:
    """conv1 → conv2 → positions → blocks → 2× pool of one clip alone: (n_tok, n_state), before ln_post."""
    frames = encoder_frames(len(samples))
    x = log_mel(samples)[None, :, : 2 * frames].to(encoder.conv1.weight.dtype)
    x = F.gelu(encoder.conv1(x))
    x = F.gelu(encoder.conv2(x)).transpose(1, 2) + encoder.positional_embedding[:frames]
    for block in encoder.blocks:
        x, _ = block(x, None, False)
    x = encoder.avg_pooler(x.transpose(1, 2)).transpose(1, 2)
    return x[0, : encoder.tokens_for(frames)]


def audio_embeds(encoder: AudioEncoder, features: torch.Tensor) -> torch.Tensor:
    """What the encoder splices in: [bos, proj(ln_post(features)), eos] (the trained part)."""
    x = encoder.proj(encoder.ln_post(features.to(encoder.proj.weight.dtype)))
    bos, eos = encoder.audio_bos_eos_token.weight[:1], encoder.audio_bos_eos_token.weight[1:]
    return torch.cat([bos, x, eos])


def check_features(encoder: AudioEncoder, samples: np.ndarray) -> float:
    """Largest difference between the cached path and `AudioEncoder.encode` on one clip."""
    with torch.no_grad():
        cached = audio_embeds(encoder, pooled_frames(encoder, samples))
        full = encoder.encode(log_mel(samples)[None], [encoder_frames(len(samples))]).embeds[0]
    return float((cached - full).abs().max())


def encoder_fingerprint(encoder: AudioEncoder) -> str:
    """What the cached features depend on: the frozen stem and blocks (count, shapes, values)."""
    digest = hashlib.sha1()
    for name, tensor in encoder.state_dict().items():
        if name.startswith(("conv", "positional_embedding", "blocks.")):
            digest.update(f"{name}{tuple(tensor.shape)}".encode())
            digest.update(tensor.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()


def compute_features(encoder: AudioEncoder, paths: list[str], cache: Path) -> dict[str, torch.Tensor]:
    """Pooled frames of every clip (float16), by path. The cache file `cache` keeps them by the
    sha1 of the audio file's bytes, so a regenerated or grown corpus reuses every unchanged clip,
    and is used only by the encoder it was computed with."""
    fingerprint = encoder_fingerprint(encoder)
    saved = torch.load(cache) if cache.exists() else {"encoder": fingerprint, "features": {}}
    if saved.get("encoder") != fingerprint:
        raise ValueError(f"{cache} holds features of another encoder (other blocks or weights): "
                         "delete it, or pass another --work folder")
    stored: dict[str, torch.Tensor] = saved["features"]
    digests = {p: hashlib.sha1(Path(p).read_bytes()).hexdigest() for p in dict.fromkeys(paths)}
    todo = [p for p, digest in digests.items() if digest not in stored]
    for i, path in enumerate(tqdm(todo, desc="whisper features", unit="clip", mininterval=5)):
        stored[digests[path]] = pooled_frames(encoder, read_clip(path)).half()
        if (i + 1) % 2000 == 0:
            torch.save(saved, cache)   # partial progress survives an interruption
    if todo:
        torch.save(saved, cache)
    return {p: stored[digest] for p, digest in digests.items()}


# --- token sequences ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Sequence:
    ids: list[int]               # prompt then target
    n_prompt: int                # the loss starts here
    audio: list[tuple[int, str]]  # (position of <audio>, clip path), in order
    task: str


def item_paths(row: dict) -> list[str]:
    return row.get("audio_paths", [row["audio_path"]])


def build_sequence(tokenizer: QwenAudioTokenizer, row: dict, features: dict[str, torch.Tensor]) -> Sequence:
    """The prompt of a manifest row (audio spans sized from its cached features) and its target."""
    paths = item_paths(row)
    spans = [features[p].shape[0] + 2 for p in paths]
    text = row["prompt"] if row["task"] == "chat" else f"<audio>{row['audio']}</audio>{row['prompt']}"
    if row["task"] == "chat":   # the manifest's prompt names the audios relative to the manifest
        for name, path in zip(row["audios"], paths):
            text = text.replace(f"<audio>{name}</audio>", f"<audio>{path}</audio>", 1)
    prompt = tokenizer.encode_with_audio(text, spans)
    target = tokenizer.encode(row["reference"]) + [tokenizer.special_id(row["stop"])]
    starts = [i for i, t in enumerate(prompt) if t == tokenizer.audio_start_id]
    return Sequence(prompt + target, len(prompt), list(zip(starts, paths)), row["task"])


def batches(sequences: list[Sequence], max_tokens: int, rng: np.random.Generator) -> list[list[Sequence]]:
    """Shuffled batches of similar length, each at most `max_tokens` (padded) tokens."""
    order = sorted(rng.permutation(len(sequences)), key=lambda i: len(sequences[i].ids))
    out, current, longest = [], [], 0
    for i in order:
        length = len(sequences[i].ids)
        if current and max(longest, length) * (len(current) + 1) > max_tokens:
            out.append(current)
            current, longest = [], 0
        current.append(sequences[i])
        longest = max(longest, length)
    if current:
        out.append(current)
    return [out[i] for i in rng.permutation(len(out))]


def batch_loss(encoder: AudioEncoder, llm, batch: list[Sequence], features: dict[str, torch.Tensor],
               pad_id: int) -> tuple[torch.Tensor, int]:
    """Mean cross-entropy over the batch's target tokens, and how many there were."""
    longest = max(len(s.ids) for s in batch)
    ids = torch.full((len(batch), longest), pad_id, dtype=torch.long)
    mask = torch.zeros(len(batch), longest, dtype=torch.long)
    for row, s in enumerate(batch):
        ids[row, : len(s.ids)] = torch.tensor(s.ids)
        mask[row, : len(s.ids)] = 1
    embeds = llm.model.embed_tokens(ids)
    rows, positions, targets = [], [], []
    clips = [(row, start, path) for row, s in enumerate(batch) for start, path in s.audio]
    spliced = [audio_embeds(encoder, features[path]) for _, _, path in clips]
    embeds = embeds.clone()
    for (row, start, _), audio in zip(clips, spliced):
        embeds[row, start: start + audio.shape[0]] = audio
    for row, s in enumerate(batch):
        for t in range(s.n_prompt, len(s.ids)):
            rows.append(row)
            positions.append(t - 1)     # the hidden state before a token predicts it
            targets.append(s.ids[t])
    hidden = llm.model(inputs_embeds=embeds, attention_mask=mask, use_cache=False).last_hidden_state
    logits = llm.lm_head(hidden[torch.tensor(rows), torch.tensor(positions)])
    return F.cross_entropy(logits.float(), torch.tensor(targets)), len(targets)
