from __future__ import annotations

import warnings

import pytest

from workbench.errors import AudioTagError, UnknownTagWarning
from workbench.tags import AUDIO_END_ID, AUDIO_PAD_ID, AUDIO_START_ID, SPECIAL_TOKENS, preset
from workbench.tokenizer import QwenAudioTokenizer, audio_refs, from_list_format


@pytest.fixture(scope="module")
def tok(tiny_dir) -> QwenAudioTokenizer:
    return QwenAudioTokenizer.from_dir(tiny_dir / "checkpoint")


# -- text ⇄ ids ----------------------------------------------------------------------------------
def test_golden_tokenizer_cases_encode_exactly(tok, golden):
    for case in golden["tokenizer"]:
        assert tok.encode(case["text"]) == case["ids"], case["text"]
        assert tok.decode(case["ids"]) == case["text"]


def test_every_special_token_encodes_to_its_id(tok):
    assert len(tok) == tok.vocab_size == SPECIAL_TOKENS[-1].id + 1 == 155165
    # one string holding every token (3522 separate encodes would take seconds)
    assert tok.encode("".join(t.text for t in SPECIAL_TOKENS)) == [t.id for t in SPECIAL_TOKENS]
    for kind in {t.kind for t in SPECIAL_TOKENS}:  # and each kind's first and last on its own
        of_kind = [t for t in SPECIAL_TOKENS if t.kind == kind]
        for token in (of_kind[0], of_kind[-1]):
            assert tok.encode(token.text) == [token.id], token.text
    assert tok.convert_ids_to_tokens([t.id for t in SPECIAL_TOKENS]) == [t.text for t in SPECIAL_TOKENS]


def test_case_prompts_expand_to_the_golden_input_ids(tok, golden, golden_arrays):
    for i, case in enumerate(golden["cases"]):
        ids = tok.encode_with_audio(case["prompt"], case["audio_span_tokens"])
        assert ids == golden_arrays[f"case{i}_input_ids"].tolist(), case["name"]
        assert len(ids) == case["n_input_ids"]


def test_case_prompt_tags_come_from_the_preset(tok, golden):
    asr = golden["cases"][0]["prompt"]
    assert asr.endswith(preset("librispeech").render())
    ids = tok.encode_with_audio(asr, [148])
    assert ids[:2] == [AUDIO_START_ID, AUDIO_PAD_ID] and ids[147] == AUDIO_END_ID
    assert ids[148:] == tok.encode(preset("librispeech").render())


def test_decode_without_tags_strips_every_special_token(tok, golden, golden_arrays):
    text = "<|startoftranscript|><|en|>hello<|2.33|> world<|endoftext|>"
    assert tok.decode(tok.encode(text), keep_tags=False) == "hello world"
    ids = golden_arrays["case0_input_ids"]  # numpy arrays are accepted
    assert tok.decode(ids, keep_tags=False) == ""
    assert tok.decode(ids).count("[[[AUDIO:modality]]]") == 146
    for i, case in enumerate(golden["cases"]):
        assert tok.decode(golden_arrays[f"case{i}_generated"]) == case["generated_text"]


def test_text_is_nfc_normalised(tok):
    assert tok.encode("cafe\u0301") == tok.encode("caf\u00e9")


def test_convert_ids_to_tokens_shows_partial_utf8_bytes(tok):
    assert tok.convert_ids_to_tokens(tok.encode("Hello world")) == ["Hello", " world"]
    assert tok.convert_ids_to_tokens(151859) == "<|en|>"
    pieces = tok.convert_ids_to_tokens(tok.encode("𝄞"))  # one character, split over two tokens
    assert len(pieces) == 2 and all(p.startswith("\\x") for p in pieces)
    assert bytes.fromhex("".join(pieces).replace("\\x", "")) == "𝄞".encode()


def test_ids_beyond_the_tokenizer_are_refused_with_the_fix(tok):
    with pytest.raises(ValueError, match=r"id 155857 is outside.*mask logits\[\.\.\., 155165:\]"):
        tok.decode([9707, 155857])
    with pytest.raises(TypeError, match="flat sequence of ints"):
        tok.decode([[9707, 1879]])


def test_unused_ids_can_be_marked_instead(tok):
    hello = tok.decode([9707])
    assert tok.decode([9707, 155857, 9707], unused="mark") == f"{hello}<unused id 155857>{hello}"
    assert tok.decode([155900, 9707], keep_tags=False, unused="mark") == hello
    assert tok.decode([9707], unused="mark") == hello
    with pytest.raises(ValueError, match="choose 'error' or 'mark'"):
        tok.decode([9707], unused="skip")


def test_generation_on_a_model_that_emits_padding_rows_still_decodes(tiny_qwen, tiny_clip):
    # A hook on the LM head makes a padding row (past the tokenizer) win every step.
    vocab = tiny_qwen.tokenizer.vocab_size
    prompt = f"<audio>{tiny_clip}</audio><|startoftranscript|><|en|><|transcribe|><|en|><|notimestamps|><|wo_itn|>"

    def prefer_padding(module, args, logits):
        logits = logits.clone()
        logits[..., vocab + 3] = logits.max() + 10
        return logits

    handle = tiny_qwen.llm.lm_head.register_forward_hook(prefer_padding)
    try:
        generation = tiny_qwen.generate(prompt, max_new_tokens=2)
    finally:
        handle.remove()
    assert generation.ids[0] == vocab + 3 and f"<unused id {vocab + 3}>" in generation.text


def test_unknown_looking_tag_warns_and_is_split_into_text(tok):
    with pytest.warns(UnknownTagWarning, match=r"did you mean '<\|startoftranscript\|>'"):
        ids = tok.encode("<|startoftranscription|><|en|>")
    assert len(ids) > 2 and ids[-1] == 151859
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tok.encode(preset("clotho").render())


def test_missing_tokenizer_file_names_the_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match=rf"no qwen.tiktoken in {tmp_path}.*checkpoint directory"):
        QwenAudioTokenizer.from_dir(tmp_path)


def test_malformed_tokenizer_file_says_which_line(tmp_path):
    (tmp_path / "qwen.tiktoken").write_text("IQ== 0\nnot-base64!! 1\n")
    with pytest.raises(ValueError, match="line 2 .*not a tiktoken BPE file"):
        QwenAudioTokenizer.from_dir(tmp_path)
    (tmp_path / "qwen.tiktoken").write_text("IQ== 0\nIg== 1\n")
    with pytest.raises(ValueError, match="has 2 ranks.*151643"):
        QwenAudioTokenizer.from_dir(tmp_path)


# -- audio spans ---------------------------------------------------------------------------------
def test_audio_refs_in_order():
    text = "Audio 1:<audio>a b.wav</audio>\nAudio 2:<audio>http://x/y.mp3</audio>\nhi"
    assert audio_refs(text) == ["a b.wav", "http://x/y.mp3"]
    assert audio_refs("no audio") == []


@pytest.mark.parametrize("text, message", [
    ("<audio>a.wav", r"<audio> at character 0 .*has no </audio>"),
    ("x<audio>a.wav<audio>b.wav</audio>", r"nested <audio> at character 13.*character 8"),
    ("a.wav</audio>", r"</audio> at character 5 .*has no <audio> before it"),
])
def test_unmatched_audio_tags_say_where(text, message):
    with pytest.raises(AudioTagError, match=message):
        audio_refs(text)


def test_span_count_must_match_the_audio_tags(tok):
    text = "<audio>a.wav</audio><audio>b.wav</audio><|startofanalysis|>"
    with pytest.raises(AudioTagError, match=r"more audio tags than audios: the text has 2 .*but 1 span"):
        tok.encode_with_audio(text, [10])
    with pytest.raises(AudioTagError, match="fewer audio tags than audios"):
        tok.encode_with_audio(text, [10, 10, 10])
    with pytest.raises(AudioTagError, match="span 1 is not an int ≥ 2"):
        tok.encode_with_audio(text, [10, 1])
    with pytest.raises(AudioTagError, match="has no </audio>"):
        tok.encode_with_audio("<audio>a.wav", [10])


def test_path_text_produces_no_tokens(tok):
    short = tok.encode_with_audio("<audio>a.wav</audio>hi", [5])
    long = tok.encode_with_audio("<audio>/a/very/long/path/to/some/clip.flac</audio>hi", [5])
    assert short == long == [AUDIO_START_ID, *[AUDIO_PAD_ID] * 3, AUDIO_END_ID, *tok.encode("hi")]


# -- ChatML --------------------------------------------------------------------------------------
def test_golden_chat_turns_reproduce_exactly(tok, golden_chat):
    history: list[tuple[str, str]] = []
    for turn in golden_chat["turns"]:
        (path,) = audio_refs(turn["query"])
        question = turn["query"].split("</audio>\n", 1)[1]
        assert from_list_format([{"audio": path}, {"text": question}]) == turn["query"]
        context = tok.chat_context(turn["query"], history, golden_chat["system"], turn["audio_span_tokens"])
        assert context.raw_text == turn["raw_text"]
        assert context.ids == turn["context_tokens"]
        assert tok.encode_with_audio(turn["raw_text"], turn["audio_span_tokens"]) == turn["context_tokens"]
        assert tok.chat_prompt(turn["query"], history, golden_chat["system"]) == turn["raw_text"]
        assert context.dropped_turns == 0 and len(context.audio_refs) == len(turn["audio_span_tokens"])
        history = [tuple(pair) for pair in turn["history_after"]]


def test_from_list_format_options_reproduce_the_sft_style_two_audio_prompt(golden):
    prompt = golden["cases"][2]["prompt"]
    query = from_list_format([{"audio": "1272-128104-0000.flac"}, {"audio": "music.wav"},
                              {"text": "What is in each clip?"}], space_after_colon=True)
    assert f"<|im_start|>user\n{query}<|im_end|>" in prompt


def test_from_list_format_numbering():
    history = [("Audio 1:<audio>a.wav</audio>\nhi", "ok"), ("Audio 1:<audio>b.wav</audio>\nand?", None)]
    items = [{"audio": "c.wav"}, {"audio": "d.wav"}]
    assert from_list_format(items, history=history) == "Audio 1:<audio>c.wav</audio>\nAudio 2:<audio>d.wav</audio>\n"
    assert from_list_format(items, numbering="conversation", history=history).startswith("Audio 3:<audio>c.wav")
    assert from_list_format(items, start_index=0).startswith("Audio 0:")
    with pytest.raises(ValueError, match="numbering='global'.*'per_message'"):
        from_list_format(items, numbering="global")
    with pytest.raises(ValueError, match=r"'image'.*\{'audio': PATH\} or \{'text': TEXT\}"):
        from_list_format([{"image": "x.png"}])


def test_chat_history_beyond_the_window_is_dropped_oldest_first(tok):
    history = [(f"question {i} " + "word " * 200, f"answer {i}") for i in range(6)]
    system_and_query = tok.chat_context("now?", (), max_window=None).ids
    full = tok.chat_context("now?", history, max_window=None)
    window = len(full.ids) - 500  # too small for all six turns
    with pytest.warns(UserWarning, match=r"dropped the oldest \d history turn"):
        context = tok.chat_context("now?", history, max_window=window)
    kept = 6 - context.dropped_turns
    assert 0 < kept < 6 and context.raw_text.count("<|im_start|>user") == kept + 1
    assert "question 5" in context.raw_text and "question 0 " not in context.raw_text
    history_ids = len(context.ids) - len(system_and_query)
    system_ids = len(tok.encode("<|im_start|>system\nYou are a helpful assistant.<|im_end|>"))
    assert system_ids + history_ids < window  # what is kept fits …
    one_more = tok.chat_context("now?", history[-kept - 1:], max_window=None)
    assert system_ids + len(one_more.ids) - len(system_and_query) >= window  # … the next older turn does not


def test_chat_prompt_needs_spans_when_history_audio_could_overflow(tok):
    history = [("Audio 1:<audio>a.wav</audio>\nhi", "ok")] * 9
    with pytest.raises(AudioTagError, match="pass audio_span_tokens"):
        tok.chat_prompt("and now?", history)
    text = tok.chat_prompt("and now?", history, audio_span_tokens=[50] * 9)
    assert text.count("<audio>a.wav</audio>") == 9


def test_chat_context_span_count_and_history_shape_errors(tok):
    with pytest.raises(AudioTagError, match="conversation has 1 <audio>.*but 0 audio spans"):
        tok.chat_context("Audio 1:<audio>a.wav</audio>\nhi")
    with pytest.raises(ValueError, match=r"history turn 'hi' must be a \(query, response\) pair"):
        tok.chat_context("x", ["hi"])


def test_chat_contents_cannot_inject_control_tokens(tok):
    context = tok.chat_context("a<|im_end|>b")
    assert context.ids.count(151645) == 2  # the system's and the query's own <|im_end|> only


def test_chat_ids_are_built_piece_by_piece_like_make_context(tok):
    # A history turn without a response ends in "\n" and the next turn starts with "\n": the
    # official code concatenates two separately encoded "\n" (198, 198) where encoding the raw
    # text in one piece would merge them into "\n\n" (271).
    context = tok.chat_context("hi", [("q", None)])
    assert "<|im_end|>\n\n<|im_start|>" in context.raw_text
    assert (198, 198) in zip(context.ids, context.ids[1:])
    assert (198, 198) not in zip(tok.encode(context.raw_text), tok.encode(context.raw_text)[1:])
