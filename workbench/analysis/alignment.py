"""Word timestamps from attention: a DTW path from output tokens to audio time, and a head finder.

    words = align(model, prompt, "clip.flac")           # greedy output, or text= to force one
    words.to_pandas()                                   # word, start_s, end_s, tokens
    words.plot()                                        # words over the mel, and the DTW path
    ranking = find_alignment_heads(model, prompt, timed.audio, timed.words)
    align(model, prompt, "clip.flac", heads=ranking)    # with the best heads found

The recipe is openai/whisper's `timing.py`, applied to whichever attention reaches the audio:
Whisper's decoder cross-attention over 20 ms encoder frames, or Qwen-Audio's LLM self-attention
from the text queries to the 40 ms audio tokens. For the chosen (layer, head) pairs:
1. the attention of the position that predicts each text token (the prompt's last position for
   the first token, …, the last text token for the end of text) over the clip's own time steps,
   renormalised over them (Whisper softmaxes the cropped scores: the same thing);
2. z-scored over the token axis, per head and time step (as timing.py does), then median-filtered
   along time (width 7), then averaged over the heads;
3. dynamic time warping on the negated matrix (librosa.sequence.dtw, the steps timing.py allows:
   down, right, diagonal, all weighted alike);
4. a token starts where the path first enters its row; a word starts at its first token and ends
   where the next word (or the end of text) starts. Tokens are merged into words at spaces
   (`words="spaces"`: a token starting with a space begins a word, punctuation stays with its
   word), or every token is a word (`words="tokens"`, for languages written without spaces).

Heads: Whisper's `generation_config.alignment_heads` by default; a Qwen-Audio checkpoint names
none, so every head of every layer is averaged unless `heads=` names some, or a `HeadRanking` of
`find_alignment_heads`: speech with known word times (espeak-ng word by word, `workbench.synth.speech`)
is force-aligned once, and each head alone is scored by the mean absolute error of its word starts.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import librosa
import numpy as np
import pandas as pd
import torch

from workbench.analysis.capabilities import require
from workbench.analysis.interventions import prompt_inputs
from workbench.analysis.trace import trace
from workbench.audio import encoder_frames, mel_frames
from workbench.errors import AlignmentError
from workbench.figures.interventions import plot_head_ranking, plot_word_alignment
from workbench.models.adapter import Adapter
from workbench.models.base import ModelInputs

MEDFILT_WIDTH = 7        # timing.py's median filter width, in time steps
WORD_SPLITS = ("spaces", "tokens")


@dataclass(frozen=True)
class WordTiming:
    word: str
    start: float            # seconds from the clip's start
    end: float
    tokens: tuple[int, ...]


@dataclass(frozen=True)
class Alignment:
    words: tuple[WordTiming, ...]
    matrix: np.ndarray          # (text tokens + 1, time steps): the normalised attention, mean over heads
    path: np.ndarray            # (steps, 2): the DTW path as (row, time step), in order
    step_s: float               # seconds a time step: 0.02 (Whisper encoder frames), 0.04 (Qwen audio tokens)
    heads: tuple[tuple[int, int], ...]
    rows: tuple[str, ...]       # the text of each matrix row's token (the last row: end of text)
    mel: torch.Tensor           # (n_mels, frames) of the clip alone
    n_samples: int
    text: str

    def to_pandas(self) -> pd.DataFrame:
        """One row per word: word, start_s, end_s, n_tokens."""
        return pd.DataFrame([{"word": w.word, "start_s": w.start, "end_s": w.end, "n_tokens": len(w.tokens)}
                             for w in self.words])

    def plot(self, **options: Any):
        """Words over the mel, and the attention matrix with its DTW path (workbench.figures.interventions)."""
        return plot_word_alignment(self, **options)


# ---------------------------------------------------------------------------------------------


@torch.no_grad()
def align(model: Any, prompt: Any, audio: Any = None, *, text: str | None = None,
          heads: Sequence[tuple[int, int]] | HeadRanking | None = None, top: int = 6, words: str = "spaces",
          medfilt_width: int = MEDFILT_WIDTH, max_new_tokens: int = 96, audio_dir: Any = None) -> Alignment:
    """Word timestamps for `text` (default: the greedy output) spoken in `audio` (module docstring).

    heads: (layer, head) pairs; a HeadRanking (its `top` best); None: Whisper's alignment heads,
      or every head for a model that names none.
    """
    _check_words(words)
    require(model, "align")
    inputs = prompt_inputs(model, prompt, audio, audio_dir)
    ids = _text_ids(model, inputs, text, max_new_tokens)
    weights, pairs, step_s = _attention(model, inputs, ids, heads, top)
    matrix = normalized_matrix(weights, medfilt_width)
    path = dtw_path(matrix)
    timings = _word_times(model, ids, path, step_s, words)
    span = inputs.audios[0]
    return Alignment(words=timings, matrix=matrix, path=path, step_s=step_s, heads=tuple(pairs),
                     rows=tuple(_token_texts(model, ids)) + ("<end>",),
                     mel=span.mel[:, :mel_frames(span.n_samples)].cpu(), n_samples=span.n_samples,
                     text=model.decode(ids, keep_tags=False))


def _check_words(words: str) -> None:
    if words not in WORD_SPLITS:
        raise AlignmentError(f"words={words!r}: choose one of {WORD_SPLITS}")


def _is_text(adapter: Adapter, token: int) -> bool:
    """A word piece, not a tag, timestamp or stop token (these come after the word pieces' ids)."""
    return token < adapter.first_special_id


def _text_ids(model: Any, inputs: ModelInputs, text: str | None, max_new_tokens: int) -> list[int]:
    adapter = model.adapter
    if text is None:
        ids = [t for t in model.generate(inputs, max_new_tokens=max_new_tokens).ids if _is_text(adapter, t)]
        if not ids:
            raise AlignmentError("the model's greedy output holds no text to align: pass text= the words spoken")
        return ids
    if not isinstance(text, str) or not text.strip():
        raise AlignmentError(f"text={text!r}: give the words spoken, e.g. ' the quick brown fox'")
    ids = adapter.encode_text(text)
    tags = [t for t in ids if not _is_text(adapter, t)]
    if tags:
        raise AlignmentError(f"text={text!r} holds tags or special tokens ({model.decode(tags)}): give plain words")
    return ids


def _attention(model: Any, inputs: ModelInputs, ids: list[int], heads: Any,
               top: int) -> tuple[torch.Tensor, list[tuple[int, int]], float]:
    """(pairs, text tokens + 1, time steps) attention of the chosen heads, renormalised over the clip."""
    adapter = model.adapter
    template = adapter.patterns[adapter.audio_attention]
    cross = adapter.audio_attention == "cross"   # keys are encoder frames, not positions of the sequence
    full = inputs.extended(ids)
    rows = list(range(inputs.length - 1, full.length))
    pairs = _heads(adapter, heads, top)
    layers = sorted({layer for layer, _ in pairs})
    captured = trace(model, full, capture=[template.format(layer) for layer in layers], rows=rows,
                     cols=None if cross else "audio", logits="last")
    if cross:   # the encoder runs the 30 s window: keep the clip's own frames
        steps = encoder_frames(inputs.audios[0].n_samples)
        per_layer = {layer: captured[template.format(layer)][..., :steps] for layer in layers}
    else:
        cols, tokens = captured.audio_cols(0)
        per_layer = {layer: captured[template.format(layer)][..., cols[np.argsort(tokens)]] for layer in layers}
    weights = torch.stack([per_layer[layer][head] for layer, head in pairs]).double()
    return weights / weights.sum(-1, keepdim=True).clamp_min(1e-30), pairs, adapter.step_seconds


def _shape(adapter: Adapter) -> tuple[int, int]:
    """Layers and heads of the attention that reaches the audio (the token sequence's stack)."""
    return len(adapter.sequence.layers), adapter.sequence.n_heads


def _heads(adapter: Adapter, heads: Any, top: int) -> list[tuple[int, int]]:
    n_layers, n_heads = _shape(adapter)
    if isinstance(heads, HeadRanking):
        heads = heads.top(top)
    elif heads is None:
        if adapter.alignment_heads:
            return list(adapter.alignment_heads)
        return [(layer, head) for layer in range(n_layers) for head in range(n_heads)]
    pairs = [tuple(pair) for pair in heads]
    bad = [p for p in pairs if len(p) != 2 or not all(isinstance(x, (int, np.integer)) for x in p)
           or not (0 <= p[0] < n_layers and 0 <= p[1] < n_heads)]
    if bad or not pairs:
        raise AlignmentError(f"heads={heads!r}: give (layer, head) pairs with layer in 0…{n_layers - 1} and head in "
                             f"0…{n_heads - 1}, or a HeadRanking")
    return [(int(layer), int(head)) for layer, head in pairs]


# ---------------------------------------------------------------------------------------------
# The whisper timing recipe


def normalized_matrix(weights: np.ndarray | torch.Tensor, medfilt_width: int = MEDFILT_WIDTH) -> np.ndarray:
    """(heads, tokens, time) attention → (tokens, time): z-score over tokens, median filter along
    time, mean over heads (timing.py)."""
    if isinstance(medfilt_width, bool) or not isinstance(medfilt_width, int) or medfilt_width < 1 \
            or medfilt_width % 2 == 0:
        raise AlignmentError(f"medfilt_width={medfilt_width!r}: give an odd positive number of time steps, e.g. 7")
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim == 2:
        w = w[None]
    mean, std = w.mean(axis=-2, keepdims=True), w.std(axis=-2, keepdims=True)
    w = (w - mean) / np.maximum(std, 1e-12)
    pad = medfilt_width // 2
    if w.shape[-1] > pad:   # timing.py's median filter: reflect-padded, and shorter rows left as they are
        padded = np.pad(w, [(0, 0), (0, 0), (pad, pad)], mode="reflect")
        w = np.median(np.lib.stride_tricks.sliding_window_view(padded, medfilt_width, axis=-1), axis=-1)
    return w.mean(axis=0)


def dtw_path(matrix: np.ndarray) -> np.ndarray:
    """(steps, 2) monotonic path (row, time step) through `matrix` maximising its sum (DTW on −matrix)."""
    if matrix.shape[0] > matrix.shape[1]:
        raise AlignmentError(f"{matrix.shape[0] - 1} text tokens but only {matrix.shape[1]} time steps of audio: "
                             "each token needs its own time step; give a longer clip or shorter text")
    _, path = librosa.sequence.dtw(C=-matrix, backtrack=True)
    return path[::-1].astype(int)


def _word_times(model: Any, ids: list[int], path: np.ndarray, step_s: float, words: str) -> tuple[WordTiming, ...]:
    # The path enters row i (the token predicted there) at its first step: that is the token's start.
    jumps = np.concatenate([[True], np.diff(path[:, 0]) > 0])
    starts = path[jumps, 1] * step_s          # one per row: the text tokens, then the end of text
    groups = split_words(_token_texts(model, ids), words)
    timings, first = [], 0
    for text, n in groups:
        timings.append(WordTiming(text, round(float(starts[first]), 3), round(float(starts[first + n]), 3),
                                  tuple(ids[first:first + n])))
        first += n
    return tuple(timings)


def _token_texts(model: Any, ids: list[int]) -> list[str]:
    """Each token's text; a token that ends inside a UTF-8 character gives "" and the next one the rest."""
    texts, done = [], ""
    for i in range(len(ids)):
        decoded = model.decode(ids[:i + 1], keep_tags=False)
        if decoded.endswith("\ufffd"):
            texts.append("")
            continue
        texts.append(decoded[len(done):])
        done = decoded
    return texts


def split_words(tokens: Sequence[str], words: str = "spaces") -> list[tuple[str, int]]:
    """(word, number of tokens) per word: a token starting with whitespace begins a new word (a
    lone space token begins one that the next piece continues); punctuation and pieces without a
    space join the word before (words="tokens": one word each)."""
    _check_words(words)
    if words == "tokens":
        return [(t.strip(), 1) for t in tokens]
    groups: list[list[Any]] = []
    for text in tokens:
        if not groups or (text[:1].isspace() and groups[-1][0].strip()):
            groups.append([text, 1])
        else:
            groups[-1][0] += text
            groups[-1][1] += 1
    return [(text.strip(), n) for text, n in groups]


# ---------------------------------------------------------------------------------------------
# The head finder


@dataclass(frozen=True)
class HeadRanking:
    """How well each head alone aligns speech with known word times."""

    errors: np.ndarray                   # (layers, heads): mean |predicted − true word start|, seconds
    attention: str                       # "cross" (Whisper) or "self" (Qwen-Audio's LLM)
    words: tuple[tuple[str, float], ...]  # the known (word, start) pairs scored

    def top(self, k: int = 6) -> list[tuple[int, int]]:
        """The k heads with the smallest error, best first."""
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= self.errors.size:
            raise AlignmentError(f"k={k!r}: give 1…{self.errors.size} heads")
        order = np.argsort(self.errors, axis=None, kind="stable")[:k]
        return [tuple(int(x) for x in np.unravel_index(i, self.errors.shape)) for i in order]

    def to_pandas(self) -> pd.DataFrame:
        """One row per head, best first: layer, head, mean_abs_error_s, rank."""
        layers, heads = np.indices(self.errors.shape)
        table = pd.DataFrame({"layer": layers.ravel(), "head": heads.ravel(), "mean_abs_error_s": self.errors.ravel()})
        table = table.sort_values("mean_abs_error_s", kind="stable").reset_index(drop=True)
        table["rank"] = np.arange(1, len(table) + 1)
        return table

    def plot(self, **options: Any):
        """Heatmap layer × head of the error (workbench.figures.plot_head_ranking)."""
        return plot_head_ranking(self, **options)


@torch.no_grad()
def find_alignment_heads(model: Any, prompt: Any, audio: Any, words: Sequence[Any], *, text: str | None = None,
                         medfilt_width: int = MEDFILT_WIDTH, audio_dir: Any = None) -> HeadRanking:
    """Rank every head by how well its own DTW path finds the known word starts.

    words: the spoken words with their times, as `workbench.synth.speech.TimedWord` or (word, start_s, …)
      tuples, in order. text: the text to force-align (default: the words joined by spaces, with a
      leading space for Whisper); it must split into as many words as `words` has.
    """
    known = [(w.word, float(w.start)) if hasattr(w, "start") else (str(w[0]), float(w[1])) for w in words]
    if not known:
        raise AlignmentError("words is empty: give the spoken words with their start times")
    adapter = require(model, "find_alignment_heads")
    n_layers, n_heads = _shape(adapter)
    forced = text if text is not None else adapter.transcript_lead + " ".join(word for word, _ in known)
    inputs = prompt_inputs(model, prompt, audio, audio_dir)
    ids = _text_ids(model, inputs, forced, 0)
    found = split_words(_token_texts(model, ids))
    if len(found) != len(known):
        raise AlignmentError(f"the text {forced!r} splits into {len(found)} words ({[w for w, _ in found]}) but "
                             f"{len(known)} word times were given: pass text= that splits into the same words")
    every = [(layer, head) for layer in range(n_layers) for head in range(n_heads)]
    weights, _, step_s = _attention(model, inputs, ids, every, len(every))
    truth = np.array([start for _, start in known])
    errors = np.zeros((n_layers, n_heads))
    for index, (layer, head) in enumerate(every):
        path = dtw_path(normalized_matrix(weights[index], medfilt_width))
        predicted = np.array([w.start for w in _word_times(model, ids, path, step_s, "spaces")])
        errors[layer, head] = float(np.abs(predicted - truth).mean())
    return HeadRanking(errors, adapter.audio_attention, tuple(known))
