from __future__ import annotations

import re
import warnings
from collections import Counter

import pytest

from workbench.errors import TagPromptError, UnknownTagWarning
from workbench.tags import (
    AUDIO_END_ID,
    AUDIO_PAD_ID,
    AUDIO_START_ID,
    ENDOFTEXT_ID,
    IM_END_ID,
    IM_START_ID,
    PRESETS,
    SLOT_VALUES,
    SPECIAL_TOKENS,
    TIME_ZERO_ID,
    TagPrompt,
    check_tags,
    drop_variants,
    is_tag,
    permute_variants,
    preset,
    swap_variants,
    time_tag,
    token_id,
)

# Reference §3: the exact strings of the official evaluation scripts (eval_audio/*.py).
OFFICIAL_PROMPTS = [
    ("librispeech", {}, "<|startoftranscript|><|en|><|transcribe|><|en|><|notimestamps|><|wo_itn|>"),
    ("aishell1", {}, "<|startoftranscript|><|zh|><|transcribe|><|zh|><|notimestamps|><|wo_itn|>"),
    ("aishell2", {}, "<|startoftranscript|><|zh|><|transcribe|><|zh|><|notimestamps|><|wo_itn|>"),
    ("covost2", {"src": "en", "tgt": "de"}, "<|startoftranscript|><|en|><|translate|><|de|><|notimestamps|><|itn|>"),
    ("covost2", {"src": "zh", "tgt": "en"}, "<|startoftranscript|><|zh|><|translate|><|en|><|notimestamps|><|itn|>"),
    ("clotho", {}, "<|startofanalysis|><|unknown|><|caption|><|en|><|notimestamps|><|caption_clotho|>"),
    ("cochlscene", {}, "<|startofanalysis|><|unknown|><|keyword|><|en|><|notimestamps|><|scene|>"),
    ("tut2017", {}, "<|startofanalysis|><|unknown|><|keyword|><|en|><|notimestamps|><|scene|>"),
    ("meld", {}, "<|startofanalysis|><|en|><|keyword|><|en|><|notimestamps|><|emotion_recognition|>"),
    ("vocalsound", {}, "<|startofanalysis|><|en|><|keyword|><|en|><|notimestamps|><|vocal_classification|>"),
    ("clothoaqa", {"question": "Is there a bird?"}, "<|startofanalysis|><|en|><|question|>Is there a bird?<|answer|>"),
    ("nsynth", {}, "<|startofanalysis|><|unknown|><|keyword|><|en|><|notimestamps|><|note_analysis|>"),
    ("srwt", {}, "<|startoftranscript|><|zh|><|transcribe|><|zh|><|timestamps|><|0.00|>"),
]


# -- the vocabulary ------------------------------------------------------------------------------
def test_ids_are_contiguous_from_endoftext_to_closing_audio_tag():
    ids = [t.id for t in SPECIAL_TOKENS]
    assert ids == list(range(151643, 155165))
    assert len({t.text for t in SPECIAL_TOKENS}) == len(SPECIAL_TOKENS)


def test_key_ids_match_the_reference():
    assert (ENDOFTEXT_ID, IM_START_ID, IM_END_ID) == (151643, 151644, 151645)
    assert (AUDIO_PAD_ID, AUDIO_START_ID, AUDIO_END_ID) == (151851, 155163, 155164)
    assert token_id("<|extra_204|>") == AUDIO_PAD_ID - 1
    pinned = {"<|startoftranscript|>": 151852, "<|startofanalysis|>": 151853, "<|translate|>": 151854,
              "<|transcribe|>": 151855, "<|caption|>": 151856, "<|keyword|>": 151857, "<|unknown|>": 151858,
              "<|en|>": 151859, "<|it|>": 151866, "<|notimestamps|>": 151868, "<|wo_itn|>": 154877,
              "<|question|>": 155152, "<|answer|>": 155153, "<|pitch|>": 154890, "<|midi_pitch_60|>": 154951,
              "<|2.33|>": 152104, "<audio>": 155163, "</audio>": 155164}
    assert {text: token_id(text) for text in pinned} == pinned


def test_tag_ids_agree_with_the_golden_tokenizer_cases(golden):
    checked = 0
    for case in golden["tokenizer"]:
        tags = [m for m in re.findall(r"<\|[^<>|]*\|>", case["text"]) if is_tag(m)]
        assert [token_id(t) for t in tags] == [i for i in case["ids"] if i >= ENDOFTEXT_ID]
        checked += len(tags)
    assert checked >= 15


def test_time_tags_match_the_official_float_formatting():
    times = [t for t in SPECIAL_TOKENS if t.kind == "time"]
    assert [t.text for t in times] == [f"<|{i * 0.01:.2f}|>" for i in range(3001)]
    assert token_id(time_tag(2.33)) == TIME_ZERO_ID + 233 and time_tag(30) == "<|30.00|>"
    with pytest.raises(ValueError, match=r"30.01.*0.00 to 30.00"):
        time_tag(30.01)
    with pytest.raises(ValueError, match="two decimals"):
        time_tag(1.234)


def test_every_token_has_its_slot_kind():
    kinds = Counter(t.kind for t in SPECIAL_TOKENS)
    assert kinds["language"] == 10 and kinds["task"] == 4 and kinds["transcription"] == 2
    assert kinds["time"] == 3001 and kinds["extra"] == 205 and kinds["chat"] == 2
    assert kinds["note_field"] == 2 + 128 + 2 + 128 and kinds["qa"] == 3 and kinds["audio"] == 3
    timestamps = {t.text for t in SPECIAL_TOKENS if t.kind == "timestamps"}
    assert timestamps == {"<|notimestamps|>", "<|sil|>", "<|timestamps|>"}
    assert sum(kinds.values()) == len(SPECIAL_TOKENS)


def test_unknown_token_lookup_suggests_the_closest_tag():
    assert is_tag("<|en|>") and not is_tag("<|english|>")
    with pytest.raises(KeyError, match=r"did you mean '<\|startoftranscript\|>'"):
        token_id("<|startoftranscription|>")


def test_check_tags_warns_with_the_closest_valid_tag():
    with pytest.warns(UnknownTagWarning, match=r"startoftranscription.*did you mean '<\|startoftranscript\|>'"):
        unknown = check_tags("<|startoftranscription|><|en|><|transcribe|>")
    assert unknown == ["<|startoftranscription|>"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_tags(OFFICIAL_PROMPTS[0][2] + " plain text") == []


# -- TagPrompt -----------------------------------------------------------------------------------
@pytest.mark.parametrize("name, fields, official", OFFICIAL_PROMPTS)
def test_presets_render_the_official_strings_and_round_trip(name, fields, official):
    prompt = preset(name, **fields)
    assert prompt.render() == official == str(prompt)
    assert TagPrompt.parse(official) == prompt
    assert TagPrompt.parse(official).render() == official


def test_every_preset_is_covered_by_the_official_table():
    assert set(PRESETS) == {name for name, _, _ in OFFICIAL_PROMPTS}


def test_fields_are_bare_names_and_timestamps_accept_bools():
    prompt = preset("librispeech")
    assert (prompt.start, prompt.audio_lang, prompt.task, prompt.text_lang) == ("transcript", "en", "transcribe", "en")
    assert prompt.timestamps == "notimestamps" and prompt.instructions == ("wo_itn",)
    assert TagPrompt(timestamps=True) == TagPrompt(timestamps="timestamps")
    assert TagPrompt(instructions=["itn"]) == TagPrompt(instructions="itn") == TagPrompt(instructions=("itn",))
    assert TagPrompt(timestamps=False).render() == prompt.render()
    assert preset("librispeech", timestamps=True).render().endswith("<|timestamps|><|wo_itn|>")


def test_partial_prompts_parse_with_absent_slots():
    prompt = TagPrompt.parse("<|transcribe|>")  # the single-tag prompt of QwenLM/Qwen-Audio#32
    assert prompt == TagPrompt(None, None, "transcribe", None, None, ())
    assert TagPrompt.parse("<|startoftranscript|><|en|><|en|>").task is None


@pytest.mark.parametrize("fields, slot, listed", [
    ({"task": "transcibe"}, "task", "translate, transcribe, caption, keyword"),
    ({"audio_lang": "english"}, "audio_lang", "unknown, en, zh, de, es, ko, fr, ja, it, zh_tr"),
    ({"start": "transcription"}, "start", "transcript, analysis"),
    ({"timestamps": "stamps"}, "timestamps", "notimestamps, sil, timestamps"),
])
def test_bad_slot_values_name_the_slot_and_the_allowed_values(fields, slot, listed):
    with pytest.raises(TagPromptError, match=rf"{slot}=.*allowed values: {listed}"):
        TagPrompt(**fields)


def test_bad_instruction_suggests_the_closest():
    with pytest.raises(TagPromptError, match=r"'wo-itn'.*did you mean 'wo_itn'.*caption_clotho"):
        TagPrompt(instructions=("wo-itn",))


def test_question_goes_with_the_question_task_only():
    with pytest.raises(TagPromptError, match="task='question' and the question text together"):
        TagPrompt(question="Is it loud?")
    with pytest.raises(TagPromptError, match="task='question' and the question text together"):
        TagPrompt("analysis", "en", "question", None, None, ())
    with pytest.raises(TagPromptError, match="plain text without tags"):
        TagPrompt("analysis", "en", "question", None, None, (), question="a <|answer|> b")


def test_parse_rejects_unknown_tags_out_of_order_tags_and_audio():
    with pytest.warns(UnknownTagWarning, match="startoftranscript"):
        with pytest.raises(TagPromptError, match="startoftranscription.*not a Qwen-Audio tag"):
            TagPrompt.parse("<|startoftranscription|><|en|>")
    with pytest.raises(TagPromptError, match=r"'<\|en\|>' does not fit the slot order start · audio_lang"):
        TagPrompt.parse("<|startoftranscript|><|wo_itn|><|en|>")
    with pytest.raises(TagPromptError, match="pass only the tags after </audio>"):
        TagPrompt.parse("<audio>a.wav</audio><|startoftranscript|>")
    with pytest.raises(TagPromptError, match="question text and <|answer|>"):
        TagPrompt.parse("<|startofanalysis|><|en|><|question|>")


def test_preset_errors_say_what_to_pass():
    with pytest.raises(KeyError, match="did you mean 'librispeech'"):
        preset("librispeeh")
    with pytest.raises(TypeError, match=r"needs src, tgt, e.g. preset\('covost2'"):
        preset("covost2")
    with pytest.raises(TypeError, match="got colour"):
        preset("clotho", colour="red")


# -- variants ------------------------------------------------------------------------------------
def test_drop_variants_leave_out_exactly_one_slot_each():
    prompt = preset("librispeech")
    slots = prompt.slots()
    variants = drop_variants(prompt)
    assert [v.label for v in variants] == [f"drop {name}" for name, _ in slots]
    for variant, (name, _) in zip(variants, slots):
        assert variant.slots == tuple(s for s in slots if s[0] != name)
        assert variant.prompt_text == "".join(text for _, text in variant.slots)
        dropped = getattr(variant.prompt, name)
        assert dropped in (None, ())


def test_drop_of_the_aqa_question_is_rendered_even_if_no_prompt():
    variants = {v.label: v for v in drop_variants(preset("clothoaqa", question="Is it raining?"))}
    assert variants["drop question"].prompt_text == "<|startofanalysis|><|en|><|question|>"
    assert variants["drop question"].prompt is None


def test_swap_variants_change_one_slot_within_its_vocabulary():
    prompt = preset("librispeech")
    variants = swap_variants(prompt)
    for variant in variants:
        changed = [s for s in ("start", "audio_lang", "task", "text_lang", "timestamps", "instructions")
                   if getattr(variant.prompt, s) != getattr(prompt, s)]
        assert len(changed) == 1
        assert variant.label.startswith(f"{changed[0]}: ")
        assert variant.prompt_text == variant.prompt.render()
    labels = {v.label for v in variants}
    assert "task: transcribe → translate" in labels and "instructions: wo_itn → itn" in labels
    expected = sum(len(SLOT_VALUES[s]) - 1 for s in ("start", "audio_lang", "text_lang", "timestamps", "instructions"))
    assert len(variants) == expected + len(SLOT_VALUES["task"]) - 2  # "question" needs question text


def test_swap_variants_with_given_values_and_the_aqa_task():
    prompt = preset("librispeech")
    assert [v.label for v in swap_variants(prompt, "audio_lang", ["de", "en", "zh"])] == [
        "audio_lang: en → de", "audio_lang: en → zh"]
    with pytest.raises(TypeError, match="values= needs slot="):
        swap_variants(prompt, values=["de"])
    with pytest.raises(TagPromptError, match="slot='lang' is not a slot"):
        swap_variants(prompt, "lang")
    with pytest.raises(TagPromptError, match="audio_lang='xx'"):
        swap_variants(prompt, "audio_lang", ["xx"])
    aqa = swap_variants(preset("clothoaqa", question="Is it raining?"), "task", ["caption"])
    assert aqa[0].prompt_text == "<|startofanalysis|><|en|><|caption|>"


def test_permute_variants_reorder_the_same_slots():
    prompt = preset("covost2", src="de", tgt="en")
    original = prompt.render()
    variants = permute_variants(prompt)
    assert len(variants) == 15  # six distinct slots, every pair swapped once
    swapped = {v.label: v.prompt_text for v in variants}["order: audio_lang↔task"]
    assert swapped == "<|startoftranscript|><|translate|><|de|><|en|><|notimestamps|><|itn|>"
    for variant in variants:
        assert sorted(variant.slots) == sorted(prompt.slots()) and variant.prompt_text != original
    exhaustive = permute_variants(prompt, exhaustive=True)
    assert len(exhaustive) == 719 and len({v.prompt_text for v in exhaustive}) == 719


def test_permutations_that_change_nothing_are_skipped():
    # audio_lang and text_lang are both <|en|>: swapping them is the unchanged prompt
    labels = {v.label for v in permute_variants(preset("librispeech"))}
    assert "order: audio_lang↔text_lang" not in labels and len(labels) == 14
