"""Known-answer tests for the evaluation scorers (official and standard recipes)."""
from __future__ import annotations

import importlib.util
import math
import shutil

import pytest

from workbench.evaluation import metrics, metrics_caption
from workbench.evaluation.items import Metric


def by(metrics_list: list[Metric], name: str, recipe: str) -> Metric:
    (found,) = [m for m in metrics_list if m.name == name and m.recipe == recipe]
    return found


# ---------------------------------------------------------------------------------------------
# ASR
def test_official_clean_is_remove_sp():
    # tags → spaces, collapsed, no space before !,.?;: , no leading space
    assert metrics.official_clean("<|en|> Hello ,  world !<|endoftext|>", "en") == "Hello, world! "
    assert metrics.official_clean("甚至 出现 ， 交易", "zh") == "甚至出现，交易"
    assert metrics.official_tokens("Hello, World", "en") == ["hello,", "world"]  # punctuation stays glued
    assert metrics.official_tokens("你好 世界", "zh") == ["你", "好", "世", "界"]


def test_wer_jiwer_documented_example():
    # jiwer's README corpus example: 1 substitution + 1 deletion over 6 reference words
    refs, hyps = ["hello world", "i like monthy python"], ["hello duck", "i like python"]
    out = metrics.asr_metrics(hyps, refs, "en")
    assert by(out, "WER", "official").value == pytest.approx(100 * 2 / 6)
    assert by(out, "WER", "standard").value == pytest.approx(100 * 2 / 6)
    assert "EnglishTextNormalizer" in by(out, "WER", "standard").note


LIBRISPEECH_REF = "MISTER QUILTER IS THE APOSTLE OF THE MIDDLE CLASSES AND WE ARE GLAD TO WELCOME HIS GOSPEL"


def test_official_and_standard_differ_on_casing_and_punctuation():
    output = "Mr. Quilter is the apostle of the middle classes, and we are glad to welcome his gospel."
    out = metrics.asr_metrics([output], [LIBRISPEECH_REF], "en")
    # official: lowercase only — "mr." ≠ "mister", "classes," ≠ "classes", "gospel." ≠ "gospel"
    assert by(out, "WER", "official").value == pytest.approx(100 * 3 / 17)
    # Whisper's normaliser spells "mr" as "mister" and drops punctuation
    assert by(out, "WER", "standard").value == 0.0


def test_readme_reference_output_scores_one_substitution():
    # QWEN_AUDIO.md §4: the official README's output on dev-clean 1272-128104-0000
    output = "mister quilting is the apostle of the middle classes and we are glad to welcome his gospel"
    item = metrics.asr_item(output, LIBRISPEECH_REF, "en")
    assert (item["errors"], item["ref_len"]) == (1, 17)
    assert item["wer"] == pytest.approx(100 / 17) and item["wer_standard"] == pytest.approx(100 / 17)


def test_zh_is_scored_per_character():
    ref = "甚至出现交易几乎停滞的情况"  # 13 characters
    out = metrics.asr_metrics(["<|zh|>甚至出现交易几乎停止的情况。"], [ref], "zh")
    # official keeps "。" as a character: 1 substitution + 1 insertion
    assert by(out, "WER", "official").value == pytest.approx(100 * 2 / 13)
    assert by(out, "CER", "standard").value == pytest.approx(100 * 1 / 13)


def test_empty_references_are_unavailable_not_zero():
    out = metrics.asr_metrics(["something"], ["<|en|>"], "en")
    assert by(out, "WER", "official").value is None
    assert "empty" in by(out, "WER", "official").note


# ---------------------------------------------------------------------------------------------
# S2TT
SACREBLEU_SYS = ["The dog bit the man.", "It wasn't surprising.", "The man had just bitten him."]
SACREBLEU_REFS = [["The dog bit the man.", "It was not unexpected.", "The man bit him first."],
                  ["The dog had bit the man.", "No one was surprised.", "The man had bitten the dog."]]


def test_bleu_sacrebleu_documented_example():
    per_item_refs = [list(refs) for refs in zip(*SACREBLEU_REFS)]
    out = metrics.s2tt_metrics(SACREBLEU_SYS, per_item_refs, "de")
    assert round(by(out, "BLEU", "official").value, 2) == 48.53  # sacrebleu's README
    standard = by(out, "BLEU", "standard")
    assert round(standard.value, 2) == 48.53
    assert "tok:13a" in standard.note and "nrefs:2" in standard.note


def test_bleu_tokenizer_choice_and_tags():
    assert [metrics.bleu_tokenizer(t) for t in ("zh", "ja", "de", "en")] == ["zh", "ja-mecab", "13a", "13a"]
    out = metrics.s2tt_metrics(["<|de|>Der Hund biss den Mann."], ["Der Hund biss den Mann."], "de")
    assert by(out, "BLEU", "standard").value == pytest.approx(100.0)  # tags stripped
    assert by(out, "BLEU", "official").value < 100.0  # the official scores the decoded text as is
    zh = metrics.s2tt_metrics(["我喜欢猫。"], ["我喜欢猫。"], "zh")
    assert by(zh, "BLEU", "official").value == pytest.approx(100.0)
    assert "tok:zh" in by(zh, "BLEU", "standard").note
    assert metrics.s2tt_item("Der Hund biss den Mann.", "Der Hund biss den Mann.", "de")["bleu"] == pytest.approx(100.0)


def test_ja_mecab_reported_unavailable_when_missing():
    if importlib.util.find_spec("MeCab") is not None:
        pytest.skip("MeCab is installed here")
    out = metrics.s2tt_metrics(["テスト"], ["テスト"], "ja")
    assert all(m.value is None and "ja-mecab" in m.note for m in out)
    assert metrics.s2tt_item("テスト", "テスト", "ja") == {"bleu": None}


# ---------------------------------------------------------------------------------------------
# AAC
def test_caption_metrics_without_java_are_unavailable(monkeypatch):
    real_which = shutil.which
    monkeypatch.setattr(metrics_caption.shutil, "which",
                        lambda cmd, *a, **k: None if cmd == "java" else real_which(cmd))
    out = metrics.caption_metrics(["a dog barks"], [["a dog is barking", "dog barking"]])
    assert {m.name for m in out} == {*metrics_caption.OFFICIAL_NAMES, *metrics_caption.STANDARD_NAMES}
    assert all(m.value is None and "Java" in m.note for m in out)
    assert "Java" in metrics.spice_unavailable()


@pytest.mark.slow
def test_caption_metrics_hand_computed():
    if metrics.java_unavailable():
        pytest.skip(metrics.java_unavailable())
    # Lowercase, unpunctuated captions: the PTB tokenizer leaves them as they are.
    out = metrics.caption_metrics(["a b", "c d e"], [["a b"], ["c d"]])
    # CIDEr-D by hand: idf of every n-gram is log(2) (each occurs in one clip's references, an unseen
    # n-gram gets df 1); "length" is the bigram count (coco-caption's quirk).
    # clip 1: cosine 1 for 1- and 2-grams, 0 for 3-/4-grams (no n-grams) → mean 0.5 → × 10 = 5
    # clip 2: 1-grams 2/√6, 2-grams 1/√2, 3-/4-grams 0; bigram lengths 2 vs 1 → penalty e^(-1/72)
    clip2 = 10 * (2 / math.sqrt(6) + 1 / math.sqrt(2)) / 4 * math.exp(-1 / 72)
    assert by(out, "CIDEr", "official").value == pytest.approx((5 + clip2) / 2, rel=1e-9)
    assert by(out, "CIDEr-D", "standard").value == by(out, "CIDEr", "official").value
    # corpus BLEU: 4 of 5 unigrams match, no brevity penalty; bigrams 2 of 3
    assert by(out, "BLEU_1", "official").value == pytest.approx(0.8, abs=1e-6)
    assert by(out, "BLEU_2", "official").value == pytest.approx(math.sqrt(0.8 * 2 / 3), abs=1e-6)
    assert 0 < by(out, "METEOR", "official").value <= 1
    spice = by(out, "SPICE", "official")
    if metrics.spice_unavailable():
        assert spice.value is None and "CoreNLP" in spice.note
        assert by(out, "SPIDEr", "official").value is None and "SPICE" in by(out, "SPIDEr", "official").note
        assert by(out, "SPIDEr-D", "standard").value is None


def test_caption_item():
    item = metrics.caption_item("<|en|>A dog barks", ["a dog barks", "a dog is barking"])
    assert item == {"words": 3, "sentence_bleu": pytest.approx(100.0)}


# ---------------------------------------------------------------------------------------------
# ASC / SER / VSC and AQA
def test_label_accuracy_official_is_exact_string_match():
    out = metrics.label_accuracy(["Tram", "bus ", "metro_station"], ["tram", "bus", "metro station"])
    assert by(out, "ACC", "official").value == pytest.approx(1 / 3)
    assert by(out, "ACC", "standard").value == 1.0
    assert metrics.label_item("neutral", "neutral") == {"correct": 1.0, "correct_standard": 1.0}
    assert metrics.label_item("Neutral.", "neutral") == {"correct": 0.0, "correct_standard": 1.0}


def test_aqa_rows_and_yes_no_subset():
    # q1 has three accepted answers (three rows in the official file), q2 and q3 one each
    outputs = ["yes", "yes", "yes", "Dog", "no"]
    answers = ["yes", "yes", "no", "dog", "no"]
    questions = [("a.wav", "q1")] * 3 + [("b.wav", "q2"), ("c.wav", "q3")]
    out = metrics.aqa_metrics(outputs, answers, questions)
    assert by(out, "ACC", "official").value == pytest.approx(3 / 5)
    assert by(out, "ACC_yes_no", "official").value == pytest.approx(3 / 4)
    assert by(out, "ACC", "standard").value == 1.0  # per question, any accepted answer, case-folded
    assert by(out, "ACC_yes_no", "standard").value == 1.0
    # a list of accepted answers expands into the same rows
    grouped = metrics.aqa_metrics(["yes", "Dog", "no"], [["yes", "yes", "no"], "dog", "no"])
    assert by(grouped, "ACC", "official").value == pytest.approx(3 / 5)
    assert metrics.aqa_item("yes", ["yes", "yes", "no"]) == {
        "correct": pytest.approx(2 / 3), "correct_standard": 1.0, "yes_no": True}


# ---------------------------------------------------------------------------------------------
# NSynth
def test_parse_note_official_fields():
    text = ("<|pitch|><|midi_pitch_60|><|velocity|><|midi_velocity_100|>"
            "<|instrument|>keyboard<|sonic|>bright, fast_decay, wobbly")
    assert metrics.parse_note(text) == metrics.Note(60, 100, "keyboard", ("bright", "fast_decay"))
    assert metrics.parse_note("no tags") == metrics.Note(128, 128, "", ())
    ref = metrics.note_from_reference({"pitch": 62, "velocity": 50, "instrument": "bass", "qualities": "dark, reverb"})
    assert ref == metrics.Note(62, 50, "bass", ("dark", "reverb"))
    nsynth = {"pitch": 62, "velocity": 50, "instrument_family_str": "bass", "instrument_source_str": "electronic",
              "qualities_str": ["dark", "reverb"]}  # the reader's fields, from NSynth's examples.json
    assert metrics.note_from_reference(nsynth) == ref


NOTE_REFS = [
    {"pitch": 60, "velocity": 100, "instrument": "keyboard", "qualities": ["bright"]},
    {"pitch": 62, "velocity": 50, "instrument": "bass", "qualities": ["dark"]},
    {"pitch": 72, "velocity": 75, "instrument": "guitar", "qualities": ["bright", "percussive"]},
    {"pitch": 48, "velocity": 25, "instrument": "organ", "qualities": []},
]
NOTE_OUTPUTS = [
    "<|pitch|><|midi_pitch_60|><|velocity|><|midi_velocity_100|><|instrument|>keyboard<|sonic|>bright, reverb",
    "<|pitch|><|midi_pitch_74|><|velocity|><|midi_velocity_50|><|instrument|>bass",
    "<|pitch|><|midi_pitch_60|><|velocity|><|midi_velocity_127|><|instrument|>flute<|sonic|>bright",
    "<|instrument|>organ<|sonic|>dark",
]


def test_note_metrics_hand_computed():
    out = metrics.note_metrics(NOTE_OUTPUTS, NOTE_REFS)
    assert by(out, "instrument_ACC", "official").value == 0.75
    assert by(out, "velocity_ACC", "official").value == 0.5  # 127≠75, absent (128)≠25
    assert by(out, "pitch_ACC", "official").value == 0.25
    # pitches seen: 48 60 62 72 74 128 → columns 0..5; refs 1 2 3 0, outputs 1 4 1 5: only 1≡1 mod 12
    assert by(out, "pitch_chroma_ACC", "official").value == 0.25
    # MIDI pitch classes: 60≡60, 74≡62, 60≡72 (mod 12), absent → wrong
    assert by(out, "pitch_chroma_ACC", "standard").value == 0.75
    # AP with binary scores: bright 1.0, dark 0.25, percussive 0.25, reverb (never a reference) 0
    assert by(out, "qualities_mAP", "official").value == pytest.approx((1 + 0.25 + 0.25 + 0) / 4)
    assert by(out, "qualities_mAP", "standard").value == pytest.approx((1 + 0.25 + 0.25) / 3)
    item = metrics.note_item(NOTE_OUTPUTS[1], NOTE_REFS[1])
    assert item["pitch_error"] == 12 and item["chroma_correct"] == 1.0 and item["pitch_correct"] == 0.0
    assert metrics.note_item(NOTE_OUTPUTS[3], NOTE_REFS[3])["pitch_error"] is None


# ---------------------------------------------------------------------------------------------
# SRWT
OFFICIAL_GT = "<|0.00|><|sil|><|0.54|>面<|0.86|>条<|1.17|>机<|1.46|><|sil|><|2.01|>"  # EVALUATION.md


def test_parse_timed_words_official_format():
    words = metrics.parse_timed_words(OFFICIAL_GT)
    assert [(w.word, w.start, w.end) for w in words] == [
        ("<|sil|>", 0.0, 0.54), ("面", 0.54, 0.86), ("条", 0.86, 1.17), ("机", 1.17, 1.46), ("<|sil|>", 1.46, 2.01)]
    # the output follows the prompt's <|0.00|>: the text before the first tag is dropped
    after_prompt = OFFICIAL_GT[len("<|0.00|>"):]
    assert [w.word for w in metrics.parse_timed_words(after_prompt)] == ["面", "条", "机", "<|sil|>"]
    assert metrics.parse_timed_words("面条机") is None  # the official "pattern error"


def test_aas_hand_computed():
    ref = [("面", 0.54, 0.86), ("条", 0.86, 1.17), ("机", 1.17, 1.46)]
    # shifts: 面 0.04+0.04, 条 0.04+0, 机 0+0.04 → 0.16 s over 3 words
    out = metrics.srwt_metrics(["<|0.50|>面<|0.90|>条<|1.17|>机<|1.50|>"], [ref], "zh")
    assert by(out, "AAS_ms", "official").value == pytest.approx(160 / 3)
    assert by(out, "WER", "official").value == 0.0
    # a substituted word is not matched: (0.08 + 0.04) / 2
    swapped = metrics.srwt_metrics(["<|0.50|>面<|0.90|>跳<|1.17|>机<|1.50|>"], [ref], "zh")
    assert by(swapped, "AAS_ms", "official").value == pytest.approx(60.0)
    assert by(swapped, "WER", "official").value == pytest.approx(100 / 3)


def test_aas_silence_counts_only_in_the_official_recipe():
    ref = "<|0.00|><|sil|><|0.54|>面<|0.86|>条<|1.17|>机<|1.46|>"
    output = "<|sil|><|0.50|>面<|0.86|>条<|1.17|>机<|1.46|>"  # after the prompt's <|0.00|>
    out = metrics.srwt_metrics([output], [ref], "zh")
    # the output's leading <|sil|> has no start tag, so it is dropped: 面 shifts 0.04 at its start
    assert by(out, "AAS_ms", "official").value == pytest.approx(40 / 3)
    full = metrics.srwt_metrics(["<|0.00|>" + output], [ref], "zh")
    # now <|sil|> matches too: (0.04 + 0.04) / 4 words officially, 0.04 / 3 words in the standard recipe
    assert by(full, "AAS_ms", "official").value == pytest.approx(20.0)
    assert by(full, "AAS_ms", "standard").value == pytest.approx(40 / 3)


def test_aas_skips_outputs_without_time_tags():
    ref = [("面", 0.54, 0.86)]
    out = metrics.srwt_metrics(["面"], [ref], "zh")
    aas = by(out, "AAS_ms", "official")
    assert aas.value is None and "1 utterances without time tags" in aas.note
    item = metrics.srwt_item("面", ref, "zh")
    assert item["timestamps_parsed"] is False and item["aas_ms"] is None and item["wer"] == 0.0


def test_standard_label_accuracy_ignores_how_a_dataset_spells_its_classes():
    from workbench.evaluation.metrics_labels import label_accuracy

    outputs = ["throat clearing", "crowded indoor", "Park.", "sigh"]
    labels = ["throatclearing", "CrowdedIndoor", "Park", "laughter"]
    by_recipe = {m.recipe: m.value for m in label_accuracy(outputs, labels)}
    assert by_recipe == {"official": 0.0, "standard": 0.75}
