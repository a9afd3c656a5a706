"""What the v2 stages train on: cached layer features, token sequences, the BPE texts, the loss.

Sequences are v1's (recipes/nano_data.py): the prompt as the model sees it at inference, then the
reference and its stop token; the loss counts the target tokens only. Audio positions carry the
sha1 of the clip file, which keys the feature cache (encoder_v2.FeatureCache).
"""
from __future__ import annotations

import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from encoder_v2 import FeatureCache, LayerMixEncoder  # noqa: E402
from nano_data import Sequence, read_clip  # noqa: E402

from workbench.synth import grammar, text  # noqa: E402
from workbench.tokenizer import QwenAudioTokenizer  # noqa: E402


def item_paths(row: dict) -> list[str]:
    return row.get("audio_paths", [row["audio_path"]])


# --- features -----------------------------------------------------------------------------------
_WORKER: dict = {}


def _init_worker(tokenizer_dir: str, sizes: dict, cache_root: str, threads: int) -> None:
    from model_v2 import build_model
    torch.set_num_threads(threads)
    _, mix = build_model(Path(tokenizer_dir), sizes)
    _WORKER.update(mix=mix, cache=FeatureCache(Path(cache_root), mix))


def _feature_job(pairs: list[tuple[str, str]]) -> int:
    for path, digest in pairs:
        if not _WORKER["cache"].has(digest):
            _WORKER["cache"].put(digest, _WORKER["mix"].layer_features(read_clip(path)))
    return len(pairs)


def compute_features(mix: LayerMixEncoder, paths: list[str], cache_root: Path, tokenizer_dir: Path, sizes: dict,
                     workers: int = 1, chunk: int = 32) -> dict[str, str]:
    """Fill the cache for `paths` (resumable: done clips are skipped) and return path → digest."""
    cache = FeatureCache(cache_root, mix)
    digests = {p: FeatureCache.digest(p) for p in dict.fromkeys(paths)}
    todo = [(p, d) for p, d in digests.items() if not cache.has(d)]
    jobs = [todo[i:i + chunk] for i in range(0, len(todo), chunk)]
    progress = tqdm(total=len(todo), desc="encoder features", unit="clip", mininterval=10)
    if workers <= 1:
        _WORKER.update(mix=mix, cache=cache)
        for job in jobs:
            progress.update(_feature_job(job))
    else:
        with ProcessPoolExecutor(workers, initializer=_init_worker,
                                 initargs=(str(tokenizer_dir), sizes, str(cache_root), 1)) as pool:
            for done in pool.map(_feature_job, jobs):
                progress.update(done)
    progress.close()
    return digests


class LazyFeatures:
    """Cached features by digest, read from disk when a batch needs them (the full corpus's ~2.8 GB per
    10 h of audio with 4 mixed blocks would not fit beside the other jobs of a 24 GB machine; the
    page cache keeps the hot part in memory). `preload` holds small sets (validation) in memory."""

    def __init__(self, mix: LayerMixEncoder, cache_root: Path, preload: set[str] = frozenset()):
        self.cache = FeatureCache(cache_root, mix)
        self.held = {d: self.cache.get(d) for d in preload}

    def __getitem__(self, digest: str) -> torch.Tensor:
        held = self.held.get(digest)
        return held if held is not None else self.cache.get(digest)

    def n_tokens(self, digest: str) -> int:
        held = self.held.get(digest)
        if held is not None:
            return held.shape[1]
        return int(np.load(self.cache.file(digest), mmap_mode="r").shape[1])


# --- texts --------------------------------------------------------------------------------------
def lm_texts(seed: int = 0, grammar_sentences: int = 20000, limit: int = 0) -> list[str]:
    """Text for LM pretraining and the BPE, from the train split only (test sentences stay unseen):
    each real sentence as written and as its lowercase transcript, plus v1 grammar sentences in all
    five languages, written and as transcripts. `limit` caps the real sentences per language (smoke tests)."""
    out = []
    for language in ("en", "es"):
        train = text.by_split(text.real_sentences(language))["train"]
        for s in train[:limit] if limit else train:
            out += [s.written, s.transcript]
    rng = np.random.default_rng([seed, 99])
    for _ in range(min(grammar_sentences, limit) if limit else grammar_sentences):
        g = grammar.sample_sentence(rng)
        if text.split_of(g.key) == "train":
            language = grammar.LANGUAGES[int(rng.integers(len(grammar.LANGUAGES)))]
            out += [g.text(language), g.transcript(language)]
    return out


def lm_sequences(tokenizer: QwenAudioTokenizer, texts: list[str], length: int, rng: np.random.Generator) -> list[Sequence]:
    """Shuffled texts joined by <|endoftext|> and cut into sequences of `length` tokens."""
    stream: list[int] = []
    for i in rng.permutation(len(texts)):
        stream += tokenizer.encode(texts[i]) + [tokenizer.endoftext_id]
    return [Sequence(stream[i:i + length], 1, [], "lm") for i in range(0, len(stream) - length + 1, length)]


# --- sequences and loss -------------------------------------------------------------------------
def build_sequence(tokenizer: QwenAudioTokenizer, row: dict, n_tokens: dict[str, int], digests: dict[str, str]) -> Sequence:
    paths = item_paths(row)
    spans = [n_tokens[digests[p]] + 2 for p in paths]
    if row["task"] == "chat":
        prompt_text = row["prompt"]
        for name, path in zip(row["audios"], paths):
            prompt_text = prompt_text.replace(f"<audio>{name}</audio>", f"<audio>{path}</audio>", 1)
    else:
        prompt_text = f"<audio>{row['audio']}</audio>{row['prompt']}"
    prompt = tokenizer.encode_with_audio(prompt_text, spans)
    target = tokenizer.encode(row["reference"]) + [tokenizer.special_id(row["stop"])]
    starts = [i for i, t in enumerate(prompt) if t == tokenizer.audio_start_id]
    return Sequence(prompt + target, len(prompt), [(s, digests[p]) for s, p in zip(starts, paths)], row["task"])


def batch_loss(mix: LayerMixEncoder, llm, batch: list[Sequence], features: dict[str, torch.Tensor],
               pad_id: int, audio_out: list | None = None) -> tuple[torch.Tensor, int]:
    """Mean cross-entropy over the batch's target tokens, and how many there were. `audio_out`, when
    given, receives (sequence, audio embeddings) for every clip, for the CTC objective below."""
    longest = max(len(s.ids) for s in batch)
    ids = torch.full((len(batch), longest), pad_id, dtype=torch.long)
    mask = torch.zeros(len(batch), longest, dtype=torch.long)
    for row, s in enumerate(batch):
        ids[row, : len(s.ids)] = torch.tensor(s.ids)
        mask[row, : len(s.ids)] = 1
    embeds = llm.model.embed_tokens(ids).clone()
    for row, s in enumerate(batch):
        for start, digest in s.audio:
            audio = mix.embeds(features[digest])
            embeds[row, start: start + audio.shape[0]] = audio
            if audio_out is not None:
                audio_out.append((s, audio))
    rows, positions, targets = [], [], []
    for row, s in enumerate(batch):
        for t in range(s.n_prompt, len(s.ids)):
            rows.append(row)
            positions.append(t - 1)  # the hidden state before a token predicts it
            targets.append(s.ids[t])
    hidden = llm.model(inputs_embeds=embeds, attention_mask=mask, use_cache=False).last_hidden_state
    logits = llm.lm_head(hidden[torch.tensor(rows), torch.tensor(positions)])
    return F.cross_entropy(logits.float(), torch.tensor(targets)), len(targets)


def ctc_loss(head: torch.nn.Linear, clips: list[tuple[Sequence, torch.Tensor]], n_ranks: int) -> torch.Tensor | None:
    """CTC from the audio embeddings the LLM reads to the transcript's BPE tokens (blank = the last
    class), on one-clip ASR items (noise-only clips too: their target is empty, all blanks).

    Why: with the LLM frozen (stage 1) the only signal reaching the encoder head is the LLM's loss
    through soft prompts a small LLM barely uses (the first run's held-out loss moved 6.26 → 5.72), so
    the head learned almost nothing and stage 2 had to read raw features. CTC gives every audio position
    a direct target — the standard aid of joint CTC/attention ASR — and the head is training-only:
    the checkpoint keeps Qwen-Audio's layout. None when the batch has no ASR clip."""
    logits, targets, frames, lengths = [], [], [], []
    for sequence, audio in clips:
        if sequence.task != "asr" or len(sequence.audio) != 1:
            continue
        target = [t for t in sequence.ids[sequence.n_prompt: -1] if t < n_ranks]
        logits.append(head(audio[1:-1]))  # without the audio bos/eos
        targets += target
        frames.append(audio.shape[0] - 2)
        lengths.append(len(target))
    if not logits:
        return None
    padded = torch.nn.utils.rnn.pad_sequence(logits).float().log_softmax(-1)  # (T, batch, n_ranks + 1)
    return F.ctc_loss(padded, torch.tensor(targets, dtype=torch.long), torch.tensor(frames), torch.tensor(lengths),
                      blank=n_ranks, zero_infinity=True)


def default_workers() -> int:
    return max(1, min(2, os.cpu_count() or 1))
