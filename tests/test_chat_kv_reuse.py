"""KV reuse across chat turns (`workbench.chat_kv`): turn n runs the LLM on its new positions only, with
the ids of the full pass and its logits within float rounding; falls back to the full pass whenever the
prompt does not extend the held one; rotary phases (and the fixture's dynamic NTK / logn config) checked."""
from __future__ import annotations

import math
import re
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from workbench.chat import Chat
from workbench.chat_kv import unsupported
from workbench.errors import ContextTooLongError
from workbench.models.qwen_audio import QwenAudio, load_qwen_audio

N_NEW = 8
SPEECH, GLASS = "1272-128104-0000.flac", "glass-breaking-151256.mp3"
# Measured max |logit difference| between the reusing and the full pass, every decoding step of every
# turn (float32, CPU, torch 2.13): fixture 7.9e-7 (|logits| up to 2.7), nano 1.3e-5 (|logits| up to 26).
# The held keys were computed in other call shapes (reply ids one at a time, the suffix as a block), and
# the kernels sum in a shape-dependent order, so bit-identity is not expected; the tolerance leaves ~10x room.
LOGIT_ATOL = {"fixture": 1e-5, "nano": 1e-4}


@pytest.fixture(scope="module")
def chat_model(tiny_dir: Path) -> QwenAudio:
    return load_qwen_audio(tiny_dir / "checkpoint", chat=True, audio_decoder="ffmpeg")


@pytest.fixture(scope="module")
def nano() -> QwenAudio:
    import workbench as wb

    return wb.load("nano", chat=True)


def _items(query: str) -> list[dict[str, str]]:
    audio, text = re.fullmatch(r"Audio 1:<audio>(.+?)</audio>\n(.*)", query, re.DOTALL).groups()
    return [{"audio": audio}, {"text": text}]


@contextmanager
def _recording(model: QwenAudio):
    """Per LLM call, the positions it ran (a pre-hook on the body), and per decoding step the logits."""
    runs: list[int] = []
    logits: list[torch.Tensor] = []

    def count(module, args, kwargs):
        x = kwargs.get("inputs_embeds") if kwargs.get("inputs_embeds") is not None else kwargs["input_ids"]
        runs.append(x.shape[1])

    hooks = [model.llm.model.register_forward_pre_hook(count, with_kwargs=True),
             model.llm.lm_head.register_forward_hook(lambda m, a, out: logits.append(out.detach().float().clone()))]
    try:
        yield runs, logits
    finally:
        for hook in hooks:
            hook.remove()


def _compare(model: QwenAudio, clips_dir: Path, queries: list, n_new: int, atol: float, **options) -> float:
    """Ask the same turns of a reusing chat and of a full-pass one; returns the max logit difference."""
    reusing = Chat(model, audio_dir=clips_dir, **options)
    full = Chat(model, audio_dir=clips_dir, reuse_kv=False, **options)
    assert reusing.kv_cache is not None and full.kv_cache is None and "reuse_kv=False" in full.kv_note
    worst = 0.0
    for number, query in enumerate(queries, start=1):
        with _recording(model) as (runs, logits):
            reusing.ask(query, max_new_tokens=n_new)
        with _recording(model) as (full_runs, full_logits):
            full.ask(query, max_new_tokens=n_new)
        fast, slow = reusing.turns[-1], full.turns[-1]
        assert fast.input_ids == slow.input_ids and fast.response == slow.response, number
        assert fast.generated_ids == slow.generated_ids and fast.stop_token == slow.stop_token, number
        # the prompt: only the positions after the reused ones; then one position per fed-back id
        assert runs[0] == len(fast.input_ids) - fast.kv_reused and set(runs[1:]) <= {1}, number
        assert full_runs[0] == len(slow.input_ids) and slow.kv_reused == 0, number
        if number == 1:
            assert fast.kv_reused == 0
            assert all(torch.equal(a, b) for a, b in zip(logits, full_logits, strict=True))   # the same full pass
        else:
            previous = reusing.turns[-2]
            # the whole previous prompt, and the reply ids the history kept as generated
            assert len(previous.input_ids) <= fast.kv_reused <= len(previous.input_ids) + len(previous.generated_ids)
            assert runs[0] < len(fast.input_ids) - len(previous.input_ids) + 1, number
            assert reusing.kv_cache.note.startswith(f"reused {fast.kv_reused} positions"), number
        for a, b in zip(logits, full_logits, strict=True):
            worst = max(worst, float((a - b).abs().max()))
        torch.testing.assert_close(torch.cat(logits), torch.cat(full_logits), atol=atol, rtol=0)
    return worst


def test_reuse_equals_the_full_pass_on_the_fixture(chat_model, golden_chat, tiny_dir, shared_audio):
    queries = [_items(golden["query"]) for golden in golden_chat["turns"]]
    queries += [[{"audio": SPEECH}, {"text": "the first clip again?"}],
                [{"audio": str(shared_audio / "jfk.flac")}, {"text": "and this one?"}]]
    reusing = Chat(chat_model, system=golden_chat["system"], audio_dir=tiny_dir / "clips")
    for golden, query in zip(golden_chat["turns"], queries):
        assert reusing.ask(query, max_new_tokens=N_NEW) == golden["response"]   # still the official chat
    assert [turn.kv_reused > 0 for turn in reusing.turns] == [False, True, True]
    worst = _compare(chat_model, tiny_dir / "clips", queries, N_NEW, LOGIT_ATOL["fixture"], system=golden_chat["system"])
    assert worst < LOGIT_ATOL["fixture"]


def test_reuse_equals_the_full_pass_on_nano(nano):
    import workbench as wb

    clips_dir = wb.demo.demo_path("speech_en").parent
    queries = [[{"audio": "speech_en.flac"}, {"text": "What is the person saying?"}],
               [{"audio": "tones_c_major.flac"}, {"text": "What can you hear?"}],
               [{"audio": "speech_de.flac"}, {"text": "What language is spoken?"}],
               "Say it again.",
               [{"audio": "speech_en.flac"}, {"text": "And this one?"}]]
    worst = _compare(nano, clips_dir, queries, 10, LOGIT_ATOL["nano"])
    assert worst < LOGIT_ATOL["nano"]


# --- fallbacks ------------------------------------------------------------------------------------

def test_history_dropped_from_the_window_falls_back(chat_model, golden_chat, tiny_dir):
    queries = [_items(golden["query"]) for golden in golden_chat["turns"]]
    reusing = Chat(chat_model, audio_dir=tiny_dir / "clips", max_window=300)
    full = Chat(chat_model, audio_dir=tiny_dir / "clips", max_window=300, reuse_kv=False)
    for query in queries[:2]:
        reusing.ask(query, max_new_tokens=N_NEW)
        full.ask(query, max_new_tokens=N_NEW)
    assert reusing.turns[-1].kv_reused > 0
    with pytest.warns(UserWarning, match="dropped the oldest 1 history turn"), _recording(chat_model) as (runs, _):
        reusing.ask(queries[2], max_new_tokens=N_NEW)
    with pytest.warns(UserWarning, match="dropped the oldest"):
        full.ask(queries[2], max_new_tokens=N_NEW)
    turn = reusing.turns[-1]
    assert turn.dropped_turns == 1 and turn.kv_reused == 0 and runs[0] == len(turn.input_ids)
    assert reusing.kv_cache.note.startswith("full pass: the prompt differs from the held one")
    assert turn.generated_ids == full.turns[-1].generated_ids
    assert len(reusing.kv_cache) == len(turn.input_ids) + len(turn.generated_ids) - (turn.stop_token is None)


def test_reset_falls_back_and_holds_afresh(chat_model, golden_chat, tiny_dir):
    chat = Chat(chat_model, system=golden_chat["system"], audio_dir=tiny_dir / "clips")
    first = _items(golden_chat["turns"][0]["query"])
    chat.ask(first, max_new_tokens=N_NEW)
    chat.ask("and again?", max_new_tokens=N_NEW)
    before = chat.turns[0].generated_ids
    chat.reset()
    assert len(chat.kv_cache) == 0
    with _recording(chat_model) as (runs, _):
        assert chat.ask(first, max_new_tokens=N_NEW) == golden_chat["turns"][0]["response"]
    assert chat.turns[-1].kv_reused == 0 and runs[0] == len(chat.turns[-1].input_ids)
    assert chat.turns[-1].generated_ids == before and chat.kv_cache.note.startswith("full pass: nothing held")


def test_weight_edit_drops_the_held_keys(chat_model, golden_chat, tiny_dir):
    chat = Chat(chat_model, system=golden_chat["system"], audio_dir=tiny_dir / "clips")
    chat.ask(_items(golden_chat["turns"][0]["query"]), max_new_tokens=N_NEW)
    with torch.no_grad():
        chat_model.llm.model.layers[0].mlp.up_proj.weight.add_(0.0)   # an in-place write, as load_state_dict
    chat.ask("and again?", max_new_tokens=N_NEW)
    assert chat.turns[-1].kv_reused == 0 and "the LLM changed" in chat.kv_cache.note
    chat.ask("once more?", max_new_tokens=N_NEW)
    assert chat.turns[-1].kv_reused > 0


def test_another_clip_of_the_same_length_is_not_reused(chat_model, golden_chat, tiny_dir):
    chat = Chat(chat_model, system=golden_chat["system"], audio_dir=tiny_dir / "clips")
    chat.ask(_items(golden_chat["turns"][0]["query"]), max_new_tokens=N_NEW)
    kv, turn = chat.kv_cache, chat.turns[-1]
    start = turn.input_ids.index(chat_model.tokenizer.audio_start_id)
    held = kv._held
    ids = list(held.ids) + [chat_model.tokenizer.im_end_id]       # extends the held positions by one
    assert kv.reusable(ids, held.audio, kv.settings()) == len(held.ids)
    assert kv.reusable(ids, ((start, ("another clip", ())),), kv.settings()) == 0
    assert kv.reusable(ids, (), kv.settings()) == 0              # the held prompt's audio is gone


def test_switches_off(chat_model, golden_chat, tiny_dir):
    clips = tiny_dir / "clips"
    assert Chat(chat_model, audio_dir=clips, reuse_kv=False).kv_cache is None
    official = Chat(chat_model, audio_dir=clips, cache_audio=False)      # the official computation throughout
    assert official.kv_cache is None and "no audio cache" in official.kv_note
    with pytest.warns(UserWarning, match="does not cache audio"):
        batched = Chat(chat_model.with_options(audio_batching="official"), audio_dir=clips)
    assert batched.kv_cache is None
    for chat in (official, batched):
        for golden in golden_chat["turns"][:2]:
            chat.ask(_items(golden["query"]), max_new_tokens=N_NEW)
        assert [turn.kv_reused for turn in chat.turns] == [0, 0]


# --- positions: rotary phases, and the fixture's dynamic NTK / logn scaling ------------------------

def test_suffix_rotary_phases_equal_the_full_pass(chat_model):
    rotary = chat_model.llm.model.rotary_emb
    assert rotary.rope_type == "default"   # no length-dependent scaling in the module that computes
    x = torch.zeros(1, 1, dtype=chat_model.dtype)
    full = rotary(x, torch.arange(2048)[None])
    for n in (1, 137, 1500, 2047):
        suffix = rotary(x, torch.arange(n, 2048)[None])
        assert all(torch.equal(a[:, n:], b) for a, b in zip(full, suffix))   # bit for bit


def _official_ntk_alpha(length: int, seq_length: int) -> float:
    # modeling_qwen.py (QWenModel.forward): the NTK factor of a pass over `length` positions
    context_value = math.log(length / seq_length, 2) + 1
    return max(2 ** math.ceil(context_value) - 1, 1)


def _official_logn(position: int, seq_length: int) -> float:
    # modeling_qwen.py: logn_list = [math.log(i, seq_length) if i > seq_length else 1 for i in range(1, 32768)]
    return math.log(position, seq_length) if position > seq_length else 1


def test_dynamic_ntk_and_logn_are_one_within_the_limit(chat_model, golden_chat, tiny_dir):
    official = chat_model.config.official
    assert official["use_dynamic_ntk"] and official["use_logn_attn"]     # the fixture's config sets both
    limit = official["seq_length"]
    assert chat_model.config.max_positions == chat_model.adapter.splice.max_positions == limit == 2048
    # Up to the limit the official factors do not depend on the total length: a held prefix and the
    # full pass get the same (unscaled) phases and scores. One position more and they would.
    assert {_official_ntk_alpha(n, limit) for n in range(1, limit + 1)} == {1}
    assert {_official_logn(i, limit) for i in range(1, limit + 1)} == {1}
    assert _official_ntk_alpha(limit + 1, limit) == 3 and _official_logn(limit + 1, limit) > 1
    # Beyond the limit the chat raises as the full path does, and keeps its held keys for the next turn.
    chat = Chat(chat_model, system=golden_chat["system"], audio_dir=tiny_dir / "clips")
    chat.ask(_items(golden_chat["turns"][0]["query"]), max_new_tokens=N_NEW)
    held = len(chat.kv_cache)
    with pytest.raises(ContextTooLongError, match="dynamic-NTK rotary scaling and logn attention scaling"):
        chat.ask("and again?", max_new_tokens=limit)
    assert len(chat.kv_cache) == held and len(chat.turns) == 1
    chat.ask("and again?", max_new_tokens=N_NEW)
    assert chat.turns[-1].kv_reused > 0


def test_length_dependent_rotary_turns_reuse_off(chat_model, golden_chat, tiny_dir, monkeypatch):
    monkeypatch.setattr(chat_model.llm.model.rotary_emb, "rope_type", "dynamic")
    assert "'dynamic'" in unsupported(chat_model)
    chat = Chat(chat_model, system=golden_chat["system"], audio_dir=tiny_dir / "clips")   # no exception
    assert chat.kv_cache is None and "phases may depend on the sequence length" in chat.kv_note
    monkeypatch.undo()
    for golden in golden_chat["turns"][:2]:                       # the full pass, every turn
        assert chat.ask(_items(golden["query"]), max_new_tokens=N_NEW) == golden["response"]
    assert [turn.kv_reused for turn in chat.turns] == [0, 0]
