"""Multi-turn chat against the official `model.chat()` (golden_chat.json of the tiny fixture),
plus the history window, numbering options, the response post-processing and bad input."""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest

from workbench.chat import Chat, response_text
from workbench.errors import ChatInputError
from workbench.models.base import Generation
from workbench.models.qwen_audio import QwenAudio, load_qwen_audio
from workbench.tags import ENDOFTEXT_ID, IM_END_ID, IM_START_ID

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
