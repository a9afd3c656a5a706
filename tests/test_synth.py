"""The synthetic corpus: determinism, official prompts, content splits, exact labels."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import librosa
import numpy as np
import pytest
import soundfile as sf

from workbench.errors import CorpusError, MissingToolError
from workbench.synth import (
    SPLITS,
    TASKS,
    CorpusOptions,
    generate_corpus,
    grammar,
    mixtures,
    notes,
    read_manifest,
    scenes,
    speech,
    split_of,
    split_sizes,
    splits,
    task_prompt,
    vocal,
)
from workbench.tags import TagPrompt

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None or shutil.which("fluidsynth") is None
                                or not notes.SOUNDFONT.exists(),
                                reason="needs apt packages espeak-ng, fluidsynth, fluid-soundfont-gm")

SMALL = CorpusOptions(per_task=3, seed=0)  # one item of every task in every split


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("corpus")
    generate_corpus(out, SMALL)
    return out


@pytest.fixture(scope="module")
def rows(corpus) -> list[dict]:
    return [row for split in SPLITS for row in read_manifest(corpus / f"{split}.jsonl")]


def _audio_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted((root / "audio").rglob("*.flac"))}


def _manifests(root: Path) -> str:
    return "".join((root / f"{split}.jsonl").read_text() for split in SPLITS)


# --- determinism -------------------------------------------------------------------------------
def test_same_seed_gives_identical_manifests_and_audio_bytes(corpus, tmp_path):
    generate_corpus(tmp_path, SMALL)
    assert _manifests(tmp_path) == _manifests(corpus)
    assert _audio_files(tmp_path) == _audio_files(corpus)


def test_different_seed_gives_a_different_corpus(corpus, tmp_path):
    generate_corpus(tmp_path, CorpusOptions(per_task=3, seed=1))
    assert _manifests(tmp_path) != _manifests(corpus)
    ours, theirs = _audio_files(corpus), _audio_files(tmp_path)
    assert sum(ours[name] != theirs.get(name) for name in ours) >= len(ours) - 3


def test_worker_count_does_not_change_the_corpus(tmp_path):
    options = CorpusOptions(per_task=3, seed=0, tasks=("asr", "mna"), chunk=1)
    generate_corpus(tmp_path / "one", options)
    generate_corpus(tmp_path / "two", CorpusOptions(**{**options.__dict__, "workers": 2}))
    assert _manifests(tmp_path / "one") == _manifests(tmp_path / "two")
    assert _audio_files(tmp_path / "one") == _audio_files(tmp_path / "two")


def test_a_task_can_have_more_items_and_keeps_the_smaller_corpus_items(tmp_path):
    small = CorpusOptions(per_task=3, seed=0, tasks=("asr", "mna"))
    large = CorpusOptions(per_task=3, seed=0, tasks=("asr", "mna"), per_task_for=(("mna", 12),))
    assert split_sizes(large, "mna") == {"train": 10, "validation": 1, "test": 1}
    assert split_sizes(large, "asr") == split_sizes(large) == {"train": 1, "validation": 1, "test": 1}
    generate_corpus(tmp_path / "small", small)
    summary = generate_corpus(tmp_path / "large", large)
    assert summary.items["train"] == {"asr": 1, "mna": 10}
    rows = {name: [json.loads(line) for line in (tmp_path / name / "train.jsonl").read_text().splitlines()]
            for name in ("small", "large")}
    assert all(row in rows["large"] for row in rows["small"])   # item i does not depend on the counts
    files = _audio_files(tmp_path / "large")
    assert all(files[name] == digest for name, digest in _audio_files(tmp_path / "small").items())


# --- manifests and prompts ---------------------------------------------------------------------
# The official prompts (reference §3), written out independently of workbench.tags.
OFFICIAL = {
    "asr": "<|startoftranscript|><|{language}|><|transcribe|><|{language}|><|notimestamps|><|wo_itn|>",
    "s2tt": "<|startoftranscript|><|{language}|><|translate|><|{target_language}|><|notimestamps|><|itn|>",
    "aac": "<|startofanalysis|><|unknown|><|caption|><|en|><|notimestamps|><|caption_clotho|>",
    "asc": "<|startofanalysis|><|unknown|><|keyword|><|en|><|notimestamps|><|scene|>",
    "ser": "<|startofanalysis|><|en|><|keyword|><|en|><|notimestamps|><|emotion_recognition|>",
    "vsc": "<|startofanalysis|><|en|><|keyword|><|en|><|notimestamps|><|vocal_classification|>",
    "aqa": "<|startofanalysis|><|en|><|question|>{question}<|answer|>",
    "mna": "<|startofanalysis|><|unknown|><|keyword|><|en|><|notimestamps|><|note_analysis|>",
    "srwt": "<|startoftranscript|><|{language}|><|transcribe|><|{language}|><|timestamps|><|0.00|>",
}


def test_every_task_is_in_every_split_with_its_official_prompt(rows):
    assert {(r["task"], r["split"]) for r in rows} == {(t, s) for t in TASKS for s in SPLITS}
    for row in rows:
        if row["task"] == "chat":
            continue
        assert row["prompt"] == OFFICIAL[row["task"]].format(**row), row["id"]
        assert TagPrompt.parse(row["prompt"]).render() == row["prompt"]
        assert row["stop"] == "<|endoftext|>"


def test_chat_prompts_are_official_chatml_with_numbered_audios(rows):
    chats = [r for r in rows if r["task"] == "chat"]
    for row in chats:
        prompt = row["prompt"]
        assert prompt.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n")
        assert prompt.endswith("<|im_end|>\n<|im_start|>assistant\n") and row["stop"] == "<|im_end|>"
        numbered = re.findall(r"Audio (\d+):<audio>([^<]+)</audio>\n", prompt)
        assert [path for _, path in numbered] == row["audios"] and row["audio"] == row["audios"][0]
        assert [int(n) for n, _ in numbered] == list(range(1, len(row["audios"]) + 1))  # one message each


def test_chat_prompt_matches_the_tokenizers_chatml(tiny_dir):
    from workbench.synth.prompts import chat_prompt, user_message
    from workbench.tokenizer import QwenAudioTokenizer
    tokenizer = QwenAudioTokenizer.from_dir(tiny_dir / "checkpoint")
    history = [(user_message(["a.flac"], "what does the person say?"), 'The person says: "the dog sleeps".')]
    query = user_message(["b.flac", "c.flac"], "what is the difference of the two recordings?")
    assert chat_prompt(query, history) == tokenizer.chat_prompt(query, history)


def test_durations_equal_the_files_and_clips_are_16k_mono_within_30s(corpus, rows):
    for row in rows:
        for path, duration in zip(row.get("audios", [row["audio"]]), row.get("durations", [row["duration"]])):
            info = sf.info(corpus / path)
            assert (info.samplerate, info.channels) == (16000, 1)
            assert duration == info.frames / 16000
            assert 0 < duration <= 30


def test_corpus_json_reports_counts_and_speed(corpus):
    summary = json.loads((corpus / "corpus.json").read_text())
    assert summary["items"]["test"] == {task: 1 for task in TASKS}
    assert summary["items_per_second"] > 0 and summary["options"]["seed"] == 0


# --- splits ------------------------------------------------------------------------------------
def test_splits_share_no_content(rows):
    keys = {split: {k for r in rows if r["split"] == split for k in r["content_keys"]} for split in SPLITS}
    assert not keys["train"] & keys["validation"] and not keys["train"] & keys["test"]
    assert not keys["validation"] & keys["test"]
    assert all(split_of(k) == r["split"] for r in rows for k in r["content_keys"])


def test_test_sentences_never_occur_in_training_in_any_language():
    rng = np.random.default_rng(0)
    train = {splits.draw(rng, "train", grammar.sample_sentence, lambda s: s.key) for _ in range(300)}
    test = {splits.draw(rng, "test", grammar.sample_sentence, lambda s: s.key) for _ in range(100)}
    for language in grammar.LANGUAGES:
        assert not {s.text(language) for s in train} & {s.text(language) for s in test}
        assert not {s.transcript(language) for s in train} & {s.transcript(language) for s in test}


def test_every_label_has_content_in_every_split():
    rng = np.random.default_rng(0)
    for split in SPLITS:
        for label in vocal.LABELS:
            assert splits.draw(rng, split, lambda r, label=label: vocal.sample_vocal(r, label), lambda v: v.key).label == label
        for family in notes.FAMILIES:
            assert splits.draw(rng, split, lambda r, family=family: notes.sample_note(r, family), lambda n: n.key).family == family


# --- exact labels ------------------------------------------------------------------------------
def _srwt_segments(reference: str) -> list[tuple[str, float, float]]:
    """(token, start, end) with the official parser's rule: text between consecutive time tags."""
    text = "<|0.00|>" + reference
    times = [float(t) for t in re.findall(r"<\|(\d+\.\d+)\|>", text)]
    tokens = re.split(r"<\|\d+\.\d+\|>", text)[1:-1]
    assert len(times) == len(tokens) + 1
    return [(token, times[i], times[i + 1]) for i, token in enumerate(tokens)]


def test_srwt_word_times_are_exact(corpus, rows):
    for row in [r for r in rows if r["task"] == "srwt"]:
        audio, rate = sf.read(corpus / row["audio"], dtype="float32")
        segments = _srwt_segments(row["reference"])
        assert segments[-1][2] == pytest.approx(len(audio) / rate, abs=1 / rate)  # tiles the whole clip
        assert all(a[2] == b[1] for a, b in zip(segments, segments[1:]))
        words = [(t.strip(), s, e) for t, s, e in segments if t != "<|sil|>"]
        assert words == [(w["word"], w["start"], w["end"]) for w in row["words"]]
        separator = "" if row["language"] == "zh" else " "
        assert separator.join(w for w, _, _ in words) == row["transcript"]
        if row["language"] == "en":  # the content key is the English written sentence
            assert row["transcript"] == re.sub(r"[.,]", "", row["content_keys"][0]).lower()
        for token, start, end in segments:
            piece = audio[round(start * rate):round(end * rate)]
            if token == "<|sil|>":
                assert np.max(np.abs(piece)) == 0
            else:  # speech fills the word's segment up to its 10 ms padding
                assert np.sqrt(np.mean(piece ** 2)) > 0.01 and np.max(np.abs(piece[:len(piece) // 2])) > 0.02


def test_mna_pitch_matches_the_rendered_fundamental(corpus, rows):
    for row in [r for r in rows if r["task"] == "mna"]:
        audio, rate = sf.read(corpus / row["audio"], dtype="float32")
        f0, _, _ = librosa.pyin(audio[:round(0.8 * rate)], fmin=30, fmax=4200, sr=rate, frame_length=2048,
                                hop_length=512)
        estimate = librosa.hz_to_midi(np.nanmedian(f0))
        assert abs(estimate - row["pitch"]) <= 1, (row["id"], row["instrument"], estimate)
        assert row["reference"].startswith(f"<|pitch|><|midi_pitch_{row['pitch']}|><|velocity|>"
                                           f"<|midi_velocity_{row['velocity']}|><|instrument|>{row['instrument']}")


def test_louder_velocity_renders_louder():
    quiet, loud = notes.render_notes([notes.Note(0, 60, 25), notes.Note(0, 60, 127)])
    assert np.max(np.abs(loud)) > 2 * np.max(np.abs(quiet))


def test_notes_do_not_hear_each_other():
    alone = notes.render_notes([notes.Note(40, 70, 100)])[0]
    after = notes.render_notes([notes.Note(52, 72, 127), notes.Note(40, 70, 100)])[1]
    assert np.max(np.abs(after - alone)) < 0.01 * np.max(np.abs(alone))  # fluidsynth block timing: ~0.2 %


def test_chat_grounding_answers_quote_the_word_times():
    from workbench.synth.tasks import build_items
    grounding = [i for i in build_items("chat", "train", [np.random.default_rng([5, k]) for k in range(12)])
                 if i.fields["chat_type"] == "grounding"]
    assert grounding, "no grounding conversation among 12 chats"
    for item in grounding:
        phrase, start, end = re.fullmatch(r'The word "(.+)" starts at <\|(\d+\.\d+)\|> seconds and ends at '
                                          r'<\|(\d+\.\d+)\|> seconds\.', item.reference).groups()
        words = item.fields["words"]
        n = len(phrase.split())
        spans = [(w["start"], words[i + n - 1]["end"]) for i, w in enumerate(words[:len(words) - n + 1])
                 if " ".join(x["word"] for x in words[i:i + n]) == phrase]
        assert spans == [(float(start), float(end))]


def test_aqa_answers_follow_from_the_plan():
    rng = np.random.default_rng(0)
    for _ in range(40):
        mixture = mixtures.sample_mixture(rng)
        rendered = mixtures.render(mixture, rng)
        question = mixtures.sample_question(mixture, rendered, rng)
        if question.kind == "count":
            assert question.answer in [mixtures.COUNT_WORDS[c] for _, c in mixture.foreground]
        elif question.kind == "pitch":
            beeps = [o for o in rendered.occurrences if o.event == "beep"]
            assert question.answer == ("yes" if beeps[0].freq > beeps[-1].freq else "no")
        elif question.kind == "order":
            assert question.answer == mixture.foreground[0][0]
        assert question.answer == question.answer.lower() and " " not in question.answer
        assert len(rendered.occurrences) == sum(c for _, c in mixture.foreground)


def test_emotion_proxies_order_the_levels():
    rng = np.random.default_rng(0)
    peak = {e: np.max(np.abs(speech.speak_with_emotion("The dog sleeps.", e, rng))) for e in speech.EMOTIONS}
    assert peak["sadness"] < peak["neutral"] < peak["anger"]


def test_transcripts_use_only_the_vocabulary_and_zh_characters_have_one_syllable_each():
    rng = np.random.default_rng(0)
    for _ in range(200):
        sentence = grammar.sample_sentence(rng)
        for language in ("en", "de", "fr", "es"):
            assert set(sentence.transcript(language).split()) <= set(grammar.vocabulary(language))
            assert 3 <= len(sentence.transcript("en").split()) <= 8
        assert set(sentence.transcript("zh")) <= set(grammar.vocabulary("zh"))
        assert "".join(c for c, _, _ in sentence.words("zh")) == sentence.transcript("zh")
        assert sum(begins for _, _, begins in sentence.words("zh")) == len(
            [w for w, _ in sentence.zh_words if w not in "，。"])


# --- bad input ---------------------------------------------------------------------------------
def test_bad_options_say_what_to_do():
    with pytest.raises(CorpusError, match="at least 3 items per task"):
        CorpusOptions(per_task=2)
    with pytest.raises(CorpusError, match="unknown.*'speech'.*choose from"):
        CorpusOptions(tasks=("asr", "speech"))
    with pytest.raises(CorpusError, match="between 0 and 0.5"):
        CorpusOptions(eval_fraction=0.6)
    with pytest.raises(CorpusError, match="at least 1"):
        CorpusOptions(workers=0)
    with pytest.raises(CorpusError, match=r"per_task_for\['mna'\]=2: need at least 3"):
        CorpusOptions(per_task_for=(("mna", 2),))
    with pytest.raises(CorpusError, match=r"per_task_for names \['mna'\], which are not among the tasks"):
        CorpusOptions(tasks=("asr",), per_task_for=(("mna", 10),))


def test_bad_content_requests_name_the_choices():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="no tag prompt.*chat_prompt"):
        task_prompt("chat")
    with pytest.raises(ValueError, match="unknown scene 'forest'.*street"):
        scenes.render_scene("forest", 0, rng)
    with pytest.raises(ValueError, match="layout 100 is out of range"):
        scenes.render_scene("park", 100, rng)
    with pytest.raises(ValueError, match="unknown vocal sound 'yawn'"):
        vocal.sample_vocal(rng, "yawn")
    with pytest.raises(ValueError, match="unknown instrument family 'drums'"):
        notes.sample_note(rng, "drums")
    with pytest.raises(ValueError, match="no espeak-ng voice for language 'ja'"):
        speech.synthesize("konnichiwa", speech.Voice("ja"))
    with pytest.raises(ValueError, match="empty text"):
        speech.synthesize("  ", speech.Voice("en"))
    with pytest.raises(ValueError, match="language 'ko' is not in the grammar"):
        grammar.sample_sentence(rng).text("ko")
    with pytest.raises(ValueError, match="MIDI's ranges"):
        notes.midi_file([notes.Note(0, 130, 100)])
    with pytest.raises(ValueError, match="split 'dev' is not one of"):
        splits.draw(rng, "dev", grammar.sample_sentence, lambda s: s.key)
    not_test = next(k for k in map(str, range(100)) if split_of(k) != "test")
    with pytest.raises(RuntimeError, match="too small to be split"):
        splits.draw(rng, "test", lambda r: not_test, lambda k: k, max_tries=50)


def test_missing_programs_and_files_say_how_to_install(monkeypatch, tmp_path):
    with pytest.raises(MissingToolError, match="apt-get install fluid-soundfont-gm"):
        notes.render_notes([notes.Note(0, 60, 100)], soundfont=tmp_path / "none.sf2")
    with pytest.raises(FileNotFoundError, match="make_corpus.py --out"):
        read_manifest(tmp_path / "train.jsonl")
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(MissingToolError, match="apt-get install espeak-ng"):
        speech.synthesize("hello", speech.Voice("en"))
    with pytest.raises(MissingToolError, match="apt-get install --no-install-recommends fluidsynth"):
        notes.render_notes([notes.Note(0, 60, 100)])


def test_a_damaged_manifest_names_the_line(tmp_path):
    (tmp_path / "train.jsonl").write_text('{"audio": "a.flac"}\nnot json\n')
    with pytest.raises(ValueError, match=r"train.jsonl:2 is not a JSON object"):
        read_manifest(tmp_path / "train.jsonl")


def test_make_corpus_cli_writes_the_manifests(tmp_path, capsys):
    import runpy
    cli = runpy.run_path(str(Path(__file__).resolve().parents[1] / "recipes" / "make_corpus.py"))
    cli["main"](["--out", str(tmp_path), "--per-task", "3", "--tasks", "vsc", "asc", "--workers", "1"])
    assert "items/s" in capsys.readouterr().out
    assert [len(read_manifest(tmp_path / f"{split}.jsonl")) for split in SPLITS] == [2, 2, 2]
