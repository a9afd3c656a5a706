"""Multi-turn chat against the official `model.chat()` (golden_chat.json of the tiny fixture),
plus the history window, numbering options, the response post-processing and bad input."""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from workbench.audio import load_audio as wb_load_audio
from workbench.chat import Chat, grounding_clips, response_text
from workbench.errors import ChatInputError
from workbench.models.base import Generation
from workbench.models.qwen_audio import QwenAudio, load_qwen_audio
from workbench.tags import ENDOFTEXT_ID, IM_END_ID, IM_START_ID, Segment, grounding_segments
from workbench.tokenizer import audio_refs

N_NEW = 8  # the golden turns were generated greedily with 8 new tokens
SPEECH, GLASS = "1272-128104-0000.flac", "glass-breaking-151256.mp3"


@pytest.fixture(scope="module")
def chat_model(tiny_dir: Path) -> QwenAudio:
    # ffmpeg: the official decoding, which the 48 kHz mp3 of turn 2 needs to reproduce exactly
    return load_qwen_audio(tiny_dir / "checkpoint", chat=True, audio_decoder="ffmpeg")


@pytest.fixture
def chat(chat_model, golden_chat, tiny_dir) -> Chat:
    return Chat(chat_model, system=golden_chat["system"], audio_dir=tiny_dir / "clips")


def _items(query: str) -> list[dict[str, str]]:
    """The list items the golden query was built from (`Audio 1:<audio>PATH</audio>\\nTEXT`)."""
    audio, text = re.fullmatch(r"Audio 1:<audio>(.+?)</audio>\n(.*)", query, re.DOTALL).groups()
    return [{"audio": audio}, {"text": text}]


def test_replays_the_official_chat_turn_by_turn(chat, golden_chat):
    assert len(golden_chat["turns"]) == 3
    for number, golden in enumerate(golden_chat["turns"], start=1):
        response = chat.ask(_items(golden["query"]), max_new_tokens=N_NEW)
        turn = chat.turns[-1]
        assert turn.query == golden["query"], number
        assert turn.raw_text == golden["raw_text"], number
        assert list(turn.input_ids) == golden["context_tokens"], number
        assert list(turn.audio_span_tokens) == golden["audio_span_tokens"], number   # history audio re-encoded
        assert response == turn.response == golden["response"], number
        assert [list(pair) for pair in chat.history] == golden["history_after"], number


def test_a_string_query_is_sent_as_is(chat, golden_chat):
    first = golden_chat["turns"][0]
    assert chat.ask(first["query"], max_new_tokens=N_NEW) == first["response"]
    assert chat.turns[-1].input_ids == tuple(first["context_tokens"])


def test_reply_cut_by_max_new_tokens_loses_its_last_token_as_officially(chat, chat_model):
    chat.ask([{"audio": SPEECH}, {"text": "what does the speaker say?"}], max_new_tokens=N_NEW)
    turn = chat.turns[-1]
    assert turn.stop_token is None and len(turn.generated_ids) == N_NEW
    assert turn.response == chat_model.tokenizer.decode(turn.generated_ids[:-1]).strip()
    assert turn.response != chat_model.tokenizer.decode(turn.generated_ids).strip()


@pytest.mark.parametrize("stop", [IM_END_ID, IM_START_ID, ENDOFTEXT_ID])
def test_reply_ended_by_a_stop_token_keeps_every_token_before_it(chat_model, stop):
    tokenizer = chat_model.tokenizer
    ids = tokenizer.encode("  starts at <|2.33|> seconds \n")
    reply = response_text(tokenizer, Generation(ids=ids, text="", prompt_length=10, stop_token=stop))
    assert reply == "starts at <|2.33|> seconds"       # tags kept as text, whitespace stripped
    cut = response_text(tokenizer, Generation(ids=ids, text="", prompt_length=10, stop_token=None))
    assert cut == tokenizer.decode(ids[:-1]).strip()


def test_history_beyond_the_window_is_dropped_oldest_first(chat_model, golden_chat, tiny_dir):
    chat = Chat(chat_model, audio_dir=tiny_dir / "clips", max_window=300)
    for golden in golden_chat["turns"][:2]:
        chat.ask(_items(golden["query"]), max_new_tokens=N_NEW)
    assert chat.turns[-1].dropped_turns == 0
    with pytest.warns(UserWarning, match="dropped the oldest 1 history turn"):
        chat.ask(_items(golden_chat["turns"][2]["query"]), max_new_tokens=N_NEW)
    turn = chat.turns[-1]
    assert turn.dropped_turns == 1 and SPEECH not in turn.raw_text and GLASS in turn.raw_text
    assert list(turn.audio_span_tokens) == golden_chat["turns"][2]["audio_span_tokens"][1:]
    assert len(chat.history) == 3          # the history keeps every turn; only the prompt drops them


def test_numbering_across_the_conversation_and_space_after_colon(chat_model, tiny_dir):
    chat = Chat(chat_model, audio_dir=tiny_dir / "clips", numbering="conversation", space_after_colon=True)
    chat.ask([{"audio": SPEECH}, {"text": "what is said?"}], max_new_tokens=2)
    second = chat.query_text([{"audio": GLASS}, {"text": "and this?"}])
    assert second == f"Audio 2: <audio>{GLASS}</audio>\nand this?"
    official = Chat(chat_model, audio_dir=tiny_dir / "clips", history=chat.history)
    assert official.query_text([{"audio": GLASS}]) == f"Audio 1:<audio>{GLASS}</audio>\n"


def test_reset_forgets_the_conversation(chat, golden_chat):
    first = golden_chat["turns"][0]
    chat.ask(_items(first["query"]), max_new_tokens=N_NEW)
    chat.reset()
    assert chat.history == [] and chat.turns == []
    chat.ask(_items(first["query"]), max_new_tokens=N_NEW)
    assert chat.turns[-1].raw_text == first["raw_text"]


def test_history_property_is_a_copy(chat):
    chat.history.append(("q", "r"))
    assert chat.history == []


# --- bad input ----------------------------------------------------------------------------------

def test_empty_queries(chat):
    with pytest.raises(ChatInputError, match="the query is empty: ask a question"):
        chat.ask("   ")
    with pytest.raises(ChatInputError, match="the query is an empty list"):
        chat.ask([])
    with pytest.raises(ChatInputError, match="hold only empty text"):
        chat.ask([{"text": " "}])
    assert chat.history == []


def test_unknown_or_malformed_items(chat):
    with pytest.raises(ChatInputError, match=r"query item 0 is \{'image': 'x.png'\} \(\['image'\]\): each item must "
                                             r"be a dict with one key, 'audio' \(a path\) or 'text'"):
        chat.ask([{"image": "x.png"}])
    with pytest.raises(ChatInputError, match="query item 1 .* each item must be a dict with one key"):
        chat.ask([{"text": "hi"}, {"audio": SPEECH, "text": "both"}])
    with pytest.raises(ChatInputError, match="query item 0 is 'clip.flac' .* each item must be a dict"):
        chat.ask(["clip.flac"])
    with pytest.raises(ChatInputError, match="query item 0: audio must be a file path .*not ndarray"):
        chat.ask([{"audio": np.zeros(16000)}])
    with pytest.raises(ChatInputError, match="query item 0: text must be a str, not int"):
        chat.ask([{"text": 3}])
    with pytest.raises(TypeError, match="query must be a str or a list .* not int"):
        chat.ask(42)


def test_missing_audio_names_audio_dir(chat_model, tmp_path):
    chat = Chat(chat_model, audio_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match=f"audio '{SPEECH}' of the conversation resolves to "
                                                f"{tmp_path}/{SPEECH}, which does not exist: pass Chat"):
        chat.ask([{"audio": SPEECH}, {"text": "hi"}])
    assert chat.history == []


def test_bad_options(chat_model):
    with pytest.raises(ValueError, match="numbering='per_turn': choose 'per_message' .* or 'conversation'"):
        Chat(chat_model, numbering="per_turn")
    with pytest.raises(ValueError, match="max_window=0: give a positive number of tokens"):
        Chat(chat_model, max_window=0)
    with pytest.raises(ChatInputError, match=r"history turn \('only a query',\): each turn must be a"):
        Chat(chat_model, history=[("only a query",)])
    with pytest.raises(TypeError, match="cannot run Chat on a str"):
        Chat("qwen-audio-chat")


def test_base_model_warns(chat_model):
    base = QwenAudio(chat_model.network, chat_model.tokenizer, dataclasses.replace(chat_model.config, chat=False))
    with pytest.warns(UserWarning, match="base Qwen-Audio, trained on tag prompts, not on ChatML"):
        Chat(base)


# --- the audio cache: turn n encodes its new clip only, with the numbers of re-encoding ------------

def _check_cache_against_reencoding(model, clips_dir: Path, queries: list[list[dict]], n_new: int, **options) -> None:
    """Ask the same turns of a caching chat and of a re-encoding one (the official computation) and
    compare every number, turn by turn."""
    cached = Chat(model, audio_dir=clips_dir, **options)
    again = Chat(model, audio_dir=clips_dir, cache_audio=False, **options)
    assert cached.audio_cache is not None and again.audio_cache is None
    for number, query in enumerate(queries, start=1):
        assert cached.ask(query, max_new_tokens=n_new) == again.ask(query, max_new_tokens=n_new), number
        fast, slow = cached.turns[-1], again.turns[-1]
        assert fast.generated_ids == slow.generated_ids and fast.input_ids == slow.input_ids, number
        assert (fast.audios_encoded, slow.audios_encoded) == (1, number), number   # only the new clip
        clips = [model.read_audio(ref, clips_dir) for ref in audio_refs(fast.raw_text)]
        inputs = model.inputs(fast.raw_text, audio=clips)   # what model.generate gets in the official chat
        assert inputs.input_ids[0].tolist() == list(fast.input_ids)
        stored = [cached.audio_cache.get(clip) for clip in clips]
        with torch.no_grad():
            direct = model.encode_audio(inputs).embeds
            for a, b in zip(stored, direct, strict=True):
                assert torch.equal(a, b), number                               # tolerance 0
            logits = model.adapter.interventions.run(inputs, stored, slice(-1, None))
        reference = model.forward(inputs, logits_to_keep=1).logits[0]
        torch.testing.assert_close(logits, reference, atol=1e-6, rtol=0)
        assert int(logits[-1].argmax()) == (list(fast.generated_ids) + [fast.stop_token])[0], number
    assert len(cached.audio_cache) == len(queries)


def test_cache_equals_reencoding_on_the_fixture(chat_model, golden_chat, tiny_dir, shared_audio):
    queries = [_items(golden["query"]) for golden in golden_chat["turns"]]
    cached = Chat(chat_model, system=golden_chat["system"], audio_dir=tiny_dir / "clips")
    for golden, query in zip(golden_chat["turns"], queries):
        assert cached.ask(query, max_new_tokens=N_NEW) == golden["response"]   # still the official chat
    assert [turn.audios_encoded for turn in cached.turns] == [1, 1, 1]
    cached.ask([{"audio": SPEECH}, {"text": "the first clip again?"}], max_new_tokens=N_NEW)
    assert cached.turns[-1].audios_encoded == 0          # the same samples: nothing to encode
    queries.append([{"audio": str(shared_audio / "jfk.flac")}, {"text": "and this one?"}])   # absolute path
    _check_cache_against_reencoding(chat_model, tiny_dir / "clips", queries, N_NEW, system=golden_chat["system"])


def test_cache_equals_reencoding_on_nano():
    import workbench as wb

    model = wb.load("nano", chat=True)
    clips_dir = wb.demo.demo_path("speech_en").parent
    queries = [[{"audio": "speech_en.flac"}, {"text": "What is the person saying?"}],
               [{"audio": "tones_c_major.flac"}, {"text": "What can you hear?"}],
               [{"audio": "speech_de.flac"}, {"text": "What language is spoken?"}]]
    _check_cache_against_reencoding(model, clips_dir, queries, 6)


def test_official_batching_re_encodes_and_says_why(chat_model, golden_chat, tiny_dir):
    official = chat_model.with_options(audio_batching="official")
    with pytest.warns(UserWarning, match="does not cache audio: the model encodes the clips of a prompt as one batch"):
        chat = Chat(official, system=golden_chat["system"], audio_dir=tiny_dir / "clips")
    assert chat.audio_cache is None and "audio_batching='separate'" in chat.audio_cache_note
    for golden in golden_chat["turns"]:
        chat.ask(_items(golden["query"]), max_new_tokens=N_NEW)
    assert [turn.audios_encoded for turn in chat.turns] == [1, 2, 3]


def test_cache_key_follows_the_encoder_weights(chat_model, tiny_dir):
    chat = Chat(chat_model, audio_dir=tiny_dir / "clips")
    chat.ask([{"audio": SPEECH}, {"text": "hi"}], max_new_tokens=2)
    clip = chat_model.read_audio(SPEECH, tiny_dir / "clips")
    assert chat.audio_cache.get(clip) is not None
    with torch.no_grad():
        chat_model.encoder.proj.weight.add_(0.0)          # an in-place write, as load_state_dict makes
    assert chat.audio_cache.get(clip) is None
    chat.ask("and again?", max_new_tokens=2)
    assert chat.turns[-1].audios_encoded == 1
    chat.reset()
    assert len(chat.audio_cache) == 0


# --- grounding answers ---------------------------------------------------------------------------

ANSWER = 'The word "middle classes" starts at <|2.33|> seconds and ends at <|3.26|> seconds.'


def test_grounding_segments_of_an_answer():
    assert grounding_segments(ANSWER) == [Segment(2.33, 3.26, "middle classes")]
    assert grounding_segments("<|0.00|>-<|1.20|> dog barking; <|1.50|>-<|2.05|> glass breaking") == [
        Segment(0.0, 1.2, "dog barking"), Segment(1.5, 2.05, "glass breaking")]
    assert grounding_segments("a dog <|3.00|> to <|1.00|>") == [Segment(3.0, 1.0, "a dog")]   # kept as written
    assert grounding_segments("no time at all") == []
    with pytest.warns(UserWarning, match=r"3 time tags: the last, <\|3.00\|>, has no end tag"):
        assert grounding_segments("x <|1.00|> <|2.00|> y <|3.00|>") == [Segment(1.0, 2.0, "x")]


def test_grounding_clips_cut_and_written(shared_audio, tmp_path):
    audio = wb_load_audio(shared_audio / "1272-128104-0000.flac")
    clips = grounding_clips(ANSWER, audio, tmp_path, stem="middle")
    np.testing.assert_array_equal(clips[0], audio[37280:52160])          # 2.33 s · 16 kHz … 3.26 s · 16 kHz
    written, rate = soundfile.read(tmp_path / "middle_1.wav", dtype="float32")
    assert rate == 16000 and np.array_equal(written, clips[0])
    with pytest.raises(ValueError, match="runs from 3.00 s to 1.00 s: it holds no audio"):
        grounding_clips("x <|3.00|> <|1.00|>", audio)
    with pytest.raises(ValueError, match="ends at 29.00 s, after the clip's end at 5.86 s"):
        Segment(1.0, 29.0, "x").cut(audio)


def test_plot_grounding_shades_the_segments_on_the_mel(shared_audio):
    from workbench.audio import log_mel
    from workbench.figures.tasks import SPAN_GID, plot_grounding

    audio = wb_load_audio(shared_audio / "1272-128104-0000.flac")
    fig = plot_grounding(log_mel(audio), ANSWER, truth=[Segment(2.33, 3.26, "middle classes")],
                         seconds=len(audio) / 16000)
    shaded = [p for p in fig.axes[0].patches if p.get_gid() == SPAN_GID]
    assert len(shaded) == 1
    box = shaded[0].get_window_extent().transformed(fig.axes[0].transData.inverted())   # any patch type
    assert (box.x0, box.x1) == pytest.approx((2.33, 3.26), abs=1e-6)
    assert len(fig.axes) == 3                                             # mel, answer strip, truth strip
