"""Word timestamps through attention (DTW, whisper's timing recipe) and the alignment-head finder.

The recipe is checked on a synthetic attention matrix whose boundaries are known exactly, the
mechanics on the tiny random models, and the accuracy on real Whisper base with espeak-ng speech
whose word times are exact (`workbench.synth.speech.speak_words`).
"""
from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
from matplotlib.figure import Figure
from tiny_models import WHISPER_PREFIX

import workbench
from workbench.analysis.alignment import (
    HeadRanking,
    align,
    dtw_path,
    find_alignment_heads,
    normalized_matrix,
    split_words,
)
from workbench.audio import audio_tokens, encoder_frames
from workbench.errors import AlignmentError
from workbench.models import registry
from workbench.tags import preset

ASR = preset("librispeech")

# Measured on Whisper base (float32, CPU) with the three sentences of measure_alignment below:
# mean |word start error| 0.148, 0.149, 0.130 s with the config's 8 alignment heads; 0.114,
# 0.091, 0.103 s with the finder's 6 best heads. The first word always starts at 0 (the DTW path
# starts at the clip's start, as in timing.py), which adds its leading silence to the error.
MAX_MEAN_START_ERROR_S = 0.20
MAX_MEAN_START_ERROR_TOP_HEADS_S = 0.15


@pytest.fixture(scope="module")
def qwen(tiny_qwen):
    return tiny_qwen


@pytest.fixture(scope="module")
def clip(tiny_clip) -> str:
    return tiny_clip


@pytest.fixture(scope="module")
def whisper(tiny_whisper):
    return tiny_whisper


# --- the recipe ---------------------------------------------------------------------------------

def test_dtw_recovers_known_boundaries_from_a_staircase():
    """Each row attends to its own block of frames (plus noise): the path enters row i at its block."""
    rng = np.random.default_rng(0)
    boundaries = [0, 12, 20, 41, 55, 70]                     # 5 rows over 70 frames
    weights = 0.05 * rng.random((3, 5, 70))                  # 3 heads
    for i, (a, b) in enumerate(zip(boundaries, boundaries[1:])):
        weights[:, i, a:b] += 1.0
    matrix = normalized_matrix(weights)
    assert matrix.shape == (5, 70)
    path = dtw_path(matrix)
    assert path[0].tolist() == [0, 0] and path[-1].tolist() == [4, 69]
    assert (np.diff(path, axis=0) >= 0).all() and (np.diff(path, axis=0).sum(1) >= 1).all()
    entries = [int(path[path[:, 0] == i, 1].min()) for i in range(5)]
    assert entries == boundaries[:-1]


def test_normalisation_is_a_zscore_over_tokens_then_a_median_filter():
    weights = np.random.default_rng(1).random((2, 4, 30))
    unfiltered = normalized_matrix(weights, medfilt_width=1)
    z = (weights - weights.mean(1, keepdims=True)) / weights.std(1, keepdims=True)
    np.testing.assert_allclose(unfiltered, z.mean(0), atol=1e-12)
    filtered = normalized_matrix(weights, medfilt_width=7)
    inner = np.median(np.lib.stride_tricks.sliding_window_view(z, 7, -1), axis=-1).mean(0)
    np.testing.assert_allclose(filtered[:, 3:-3], inner, atol=1e-12)
    # the edges: reflected as torch's F.pad(mode="reflect") does (timing.py), e.g. at t=0: z[3], z[2], z[1], z[0…3]
    first = np.median(z[..., [3, 2, 1, 0, 1, 2, 3]], axis=-1).mean(0)
    np.testing.assert_allclose(filtered[:, 0], first, atol=1e-12)


@pytest.mark.parametrize("tokens, words, expected", [
    ([" the", " quick", " fox", "."], "spaces", [("the", 1), ("quick", 1), ("fox.", 2)]),
    ([" ", "the", " un", "believ", "able", "!"], "spaces", [("the", 2), ("unbelievable!", 4)]),
    (["hello", " world"], "spaces", [("hello", 1), ("world", 1)]),
    (["今", "天", "好"], "tokens", [("今", 1), ("天", 1), ("好", 1)]),
])
def test_tokens_merge_into_words(tokens, words, expected):
    assert split_words(tokens, words) == expected


# --- mechanics on the tiny models ---------------------------------------------------------------

def test_qwen_alignment_over_audio_tokens(qwen, clip):
    result = align(qwen, ASR, clip, text=" mister quilting is", heads=[(1, 0), (1, 3)])
    n_tokens = audio_tokens(qwen.inputs(ASR, [clip]).audios[0].n_samples)
    assert result.step_s == 0.04 and result.heads == ((1, 0), (1, 3))
    assert result.matrix.shape[1] == n_tokens
    assert [w.word for w in result.words] == ["mister", "quilting", "is"]
    assert result.matrix.shape[0] == sum(len(w.tokens) for w in result.words) + 1 == len(result.rows)
    starts = [w.start for w in result.words]
    assert starts == sorted(starts) and all(w.end >= w.start for w in result.words)
    assert result.words[-1].end <= n_tokens * 0.04
    table = result.to_pandas()
    assert list(table.columns) == ["word", "start_s", "end_s", "n_tokens"] and len(table) == 3
    fig = result.plot()
    assert isinstance(fig, Figure) and len(fig.axes) >= 2


def test_qwen_alignment_without_heads_averages_every_head(qwen, clip):
    result = align(qwen, ASR, clip, text=" mister quilting")
    assert len(result.heads) == 2 * 4


def test_whisper_alignment_over_encoder_frames(whisper, noise):
    result = align(whisper, WHISPER_PREFIX, noise, text=" ask not", heads=[(0, 1), (1, 2)])
    assert result.step_s == 0.02 and result.matrix.shape == (len(" ask not") + 1, encoder_frames(len(noise)))
    assert [w.word for w in result.words] == ["ask", "not"]


def test_greedy_output_is_aligned_without_its_tags(qwen, clip):
    generated = qwen.generate(ASR, [clip], max_new_tokens=6)
    result = align(qwen, ASR, clip, heads=[(1, 0)], max_new_tokens=6)
    assert result.text == qwen.decode(generated.ids, keep_tags=False)
    assert result.matrix.shape[0] == len(result.rows) == sum(len(w.tokens) for w in result.words) + 1


def test_head_finder_ranks_every_head(whisper, noise):
    words = [("ask", 0.2, 0.5), ("not", 0.6, 0.9)]
    ranking = find_alignment_heads(whisper, WHISPER_PREFIX, noise, words)
    assert isinstance(ranking, HeadRanking) and ranking.errors.shape == (2, 4)
    table = ranking.to_pandas()
    assert table["mean_abs_error_s"].is_monotonic_increasing and list(table["rank"]) == list(range(1, 9))
    assert ranking.top(3) == [tuple(x) for x in table[["layer", "head"]].to_numpy()[:3].tolist()]
    assert align(whisper, WHISPER_PREFIX, noise, text=" ask not", heads=ranking, top=2).heads == tuple(ranking.top(2))
    assert isinstance(ranking.plot(), Figure)


# --- bad input ----------------------------------------------------------------------------------

@pytest.mark.parametrize("options, message", [
    ({"text": "  "}, "text='  ': give the words spoken"),
    ({"max_new_tokens": 3}, "the model's greedy output holds no text to align"),   # the random model: tags only
    ({"text": " hi<|endoftext|>"}, "holds tags or special tokens"),
    ({"text": " hi", "heads": [(2, 0)]}, "heads=\\[\\(2, 0\\)\\]: give \\(layer, head\\) pairs with layer in 0…1"),
    ({"text": " hi", "heads": []}, "heads=\\[\\]: give \\(layer, head\\) pairs"),
    ({"text": " hi", "words": "letters"}, "words='letters': choose one of \\('spaces', 'tokens'\\)"),
    ({"text": " hi", "medfilt_width": 4}, "medfilt_width=4: give an odd positive number"),
])
def test_bad_alignment_requests(whisper, noise, options, message):
    with pytest.raises(AlignmentError, match=message):
        align(whisper, WHISPER_PREFIX, noise, **options)


def test_more_tokens_than_time_steps_is_refused(whisper, noise):
    short = noise[:3000]     # 0.19 s: 9 encoder frames
    with pytest.raises(AlignmentError, match=f"20 text tokens but only {encoder_frames(3000)} time steps of audio"):
        align(whisper, WHISPER_PREFIX, short, text=" " + "a" * 19)


def test_head_finder_needs_as_many_words_as_times(whisper, noise):
    with pytest.raises(AlignmentError, match="splits into 2 words .* but 3 word times were given"):
        find_alignment_heads(whisper, WHISPER_PREFIX, noise, [("ask", 0.1), ("not", 0.5), ("what", 0.9)],
                             text=" ask not")
    with pytest.raises(AlignmentError, match="words is empty"):
        find_alignment_heads(whisper, WHISPER_PREFIX, noise, [])



def test_top_needs_a_sensible_count():
    ranking = HeadRanking(np.ones((2, 2)), "cross", (("a", 0.0),))
    with pytest.raises(AlignmentError, match="k=5: give 1…4 heads"):
        ranking.top(5)


# --- real Whisper base on speech with exact word times --------------------------------------------

def _whisper_base():
    try:
        registry.locate(registry.lookup("whisper-base"))
    except registry.MissingPackageError as error:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI installs the 'whisper' extra, yet: {error}")
        pytest.skip(str(error))
    if shutil.which("espeak-ng") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI installs espeak-ng, yet it is missing")
        pytest.skip("espeak-ng is not installed")
    return workbench.load("whisper-base")


@pytest.mark.whisper
def test_whisper_base_word_starts_match_espeak_word_times():
    from workbench.models.whisper import STANDARD_PREFIX
    from workbench.synth.speech import Voice, speak_words

    model = _whisper_base()
    sentence = "my brother bought seven green apples at noon".split()
    speech = speak_words([(w, w, True) for w in sentence], Voice("en"), np.random.default_rng(1))
    truth = np.array([w.start for w in speech.words])
    text = " " + " ".join(sentence)

    result = align(model, STANDARD_PREFIX, speech.audio, text=text)          # the config's alignment heads
    assert len(result.heads) == 8 and [w.word for w in result.words] == sentence
    error = np.abs(np.array([w.start for w in result.words]) - truth).mean()
    assert error <= MAX_MEAN_START_ERROR_S, f"mean word-start error {error:.3f} s"

    ranking = find_alignment_heads(model, STANDARD_PREFIX, speech.audio, speech.words)
    assert ranking.errors.shape == (6, 8)
    assert ranking.errors.min() < np.median(ranking.errors)
    best = align(model, STANDARD_PREFIX, speech.audio, text=text, heads=ranking, top=6)
    best_error = np.abs(np.array([w.start for w in best.words]) - truth).mean()
    assert best_error <= MAX_MEAN_START_ERROR_TOP_HEADS_S, f"top-6 heads: mean word-start error {best_error:.3f} s"
