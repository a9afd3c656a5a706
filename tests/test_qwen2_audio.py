"""Qwen2-Audio behind the workbench surface, on a tiny random checkpoint built and saved here
(model.save_pretrained + a processor with a tokenizer made from a `tokenizers` BPE, no hub)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers, trainers
from transformers import (
    Qwen2AudioConfig,
    Qwen2AudioForConditionalGeneration,
    Qwen2AudioProcessor,
    Qwen2TokenizerFast,
    WhisperFeatureExtractor,
)

from workbench.errors import (
    NotAQwen2AudioDirectoryError,
    Qwen2AudioPromptError,
    UnknownTagWarning,
    UnsupportedDtypeError,
)
from workbench.models.qwen2_audio import audio_token_count, load_qwen2_audio
from workbench.tags import TagPrompt

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>"]
NATIVE = "<|audio_bos|><|AUDIO|><|audio_eos|>Generate the caption in English:"


def tiny_tokenizer() -> Qwen2TokenizerFast:
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=320, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    bpe.train_from_iterator(["Generate the caption in English:", "What does the person say?"] * 3, trainer)
    state = json.loads(bpe.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in state["merges"]]
    tokenizer = Qwen2TokenizerFast(vocab=state["vocab"], merges=merges)
    tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIALS], special_tokens=True)
    return tokenizer


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, Qwen2AudioForConditionalGeneration, Qwen2AudioProcessor]:
    directory = tmp_path_factory.mktemp("qwen2_audio") / "tiny"
    tokenizer = tiny_tokenizer()
    processor = Qwen2AudioProcessor(feature_extractor=WhisperFeatureExtractor(feature_size=128), tokenizer=tokenizer)
    config = Qwen2AudioConfig(
        audio_config=dict(num_mel_bins=128, encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=64, d_model=32),
        text_config=dict(model_type="qwen2", vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2),
        audio_token_index=tokenizer.convert_tokens_to_ids("<|AUDIO|>"))
    torch.manual_seed(0)
    model = Qwen2AudioForConditionalGeneration(config).eval()
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory, model, processor


def _clip(n_samples: int, seed: int = 0) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(n_samples)).astype(np.float32)


def test_forward_equals_transformers_on_the_processors_inputs(tiny):
    directory, model, processor = tiny
    lm = load_qwen2_audio(directory)
    clip = _clip(20_800)
    out = lm.forward(NATIVE, clip, output_hidden_states=True)
    batch = processor(text=[NATIVE], audio=[clip], sampling_rate=16000, return_tensors="pt")
    with torch.no_grad():
        reference = model(**batch)
    assert torch.equal(lm.inputs(NATIVE, clip).input_ids, batch["input_ids"])
    torch.testing.assert_close(out.logits, reference.logits, atol=1e-5, rtol=1e-5)
    assert len(out.hidden_states) == 3 and torch.equal(out.hidden_states[-1], out.last_hidden_state)


@pytest.mark.parametrize("n_samples", [16_000, 20_800, 93_680, 480_000])
def test_audio_positions_follow_the_span_formula(tiny, n_samples):
    lm = load_qwen2_audio(tiny[0])
    inputs = lm.inputs(NATIVE, _clip(n_samples))
    # §6: the same formula as v1 without its +2; for these lengths ceil and floor of L / 160 agree
    mel = n_samples // 160
    n_tok = ((mel - 1) // 2 + 1 - 2) // 2 + 1
    assert int((inputs.input_ids == lm.audio_token_id).sum()) == n_tok == audio_token_count(n_samples)
    span = inputs.audios[0]
    assert (span.start, span.n_positions) == (0, n_tok + 2)                 # <|audio_bos|> … <|audio_eos|>
    assert inputs.input_ids[0, span.stop - 1] == lm.audio_eos_id


def test_processor_counts_mel_frames_rounded_up(tiny):
    """Where L is not a multiple of 160, the processor's mask covers ceil(L / 160) frames: L = 16,321
    gets 26 audio tokens where v1's L // 160 would give 25. audio_token_count follows the processor."""
    lm = load_qwen2_audio(tiny[0])
    for n_samples in (16_321, 16_330, 17_000, 93_681):
        count = int((lm.inputs(NATIVE, _clip(n_samples)).input_ids == lm.audio_token_id).sum())
        assert count == audio_token_count(n_samples)
    v1 = ((16_321 // 160 - 1) // 2 + 1 - 2) // 2 + 1
    assert (audio_token_count(16_321), v1) == (26, 25)
    assert audio_token_count(16_321) == ((math.ceil(16_321 / 160) - 1) // 2 + 1 - 2) // 2 + 1


def test_prompt_forms_build_the_same_inputs(tiny, tmp_path):
    lm = load_qwen2_audio(tiny[0])
    clip = _clip(24_000)
    soundfile.write(tmp_path / "a.wav", clip, 16000, subtype="FLOAT")
    native = lm.inputs(NATIVE, clip)
    reference = lm.inputs("<audio>a.wav</audio>Generate the caption in English:", audio_dir=tmp_path)
    assert torch.equal(native.input_ids, reference.input_ids)
    torch.testing.assert_close(native.extra["input_features"], reference.extra["input_features"])
    assert reference.audios[0].source == "a.wav"
    with pytest.warns(UnknownTagWarning, match=r"<\|startoftranscript\|>, <\|en\|>, <\|transcribe\|>, <\|notimestamps\|>, "
                                                r"<\|wo_itn\|> look like tags but are not in Qwen2-Audio's vocabulary"):
        tagged = lm.inputs(TagPrompt(), clip)     # v1 tags are plain text to Qwen2-Audio
    assert tagged.audios[0].start == 0 and tagged.audios[0].n_positions == native.audios[0].n_positions


def test_two_audios_get_their_own_spans_and_embeddings(tiny):
    lm = load_qwen2_audio(tiny[0])
    clips = [_clip(16_000, 1), _clip(32_000, 2)]
    prompt = "Audio 1: <audio>one</audio>\nAudio 2: <audio>two</audio>\nWhich is longer?"
    inputs = lm.inputs(prompt, clips)
    first, second = inputs.audios
    assert first.stop < second.start and (first.n_positions, second.n_positions) == (27, 52)
    out = lm.forward(inputs, output_encoder_attentions=True)
    assert [e.shape for e in out.audio_embeds] == [(27, 32), (52, 32)]
    embed = lm.model.get_input_embeddings()
    torch.testing.assert_close(out.audio_embeds[1][0], embed.weight[lm.audio_bos_id])      # bos is a text token
    assert [a[0].shape for a in out.encoder_attentions] == [(4, 50, 50), (4, 100, 100)]
    torch.testing.assert_close(out.encoder_attentions[0][1].sum(-1), torch.ones(4, 50))    # padding was masked


def test_attentions_are_captured_under_sdpa(tiny):
    lm = load_qwen2_audio(tiny[0], attn="sdpa")
    clip = _clip(16_000)
    plain = lm.forward(NATIVE, clip)
    out = lm.forward(NATIVE, clip, output_attentions=True)
    assert lm.model.config._attn_implementation == "sdpa"
    torch.testing.assert_close(out.logits, plain.logits, atol=1e-5, rtol=1e-5)
    length = lm.inputs(NATIVE, clip).length
    assert len(out.attentions) == 2 and out.attentions[0].shape == (1, 4, length, length)


def test_generate_is_greedy_and_cached(tiny):
    lm = load_qwen2_audio(tiny[0])
    clip = _clip(16_000)
    inputs = lm.inputs(NATIVE, clip)
    generation = lm.generate(inputs, max_new_tokens=6)
    new = generation.ids + ([generation.stop_token] if generation.stop_token is not None else [])
    ids = torch.cat([inputs.input_ids, torch.tensor([new[:-1]])], dim=1)
    batch = {**inputs.extra, "input_ids": ids, "attention_mask": torch.ones_like(ids)}
    with torch.no_grad():
        logits = tiny[1](**batch).logits[0]
    assert logits[inputs.length - 1:].argmax(-1).tolist() == new


@pytest.mark.parametrize("prompt, audio, message", [
    (f"<audio>a.wav</audio>{NATIVE}", [np.zeros(16000, np.float32)], "mixes <audio>…</audio> references"),
    (NATIVE, None, r"1 <\|AUDIO\|> placeholder\(s\) but 0 audio"),
    ("Describe it.", np.zeros(16000, np.float32), "has no place for it"),
    ("<audio>a</audio><audio>b</audio>", [np.zeros(16000, np.float32)], "names 2 audio.*but 1 were passed"),
    ("<|AUDIO|><|AUDIO|>Compare.", [np.ones(16000, np.float32)] * 2, "2 audios but 1 separate runs"),
])
def test_bad_prompts(tiny, prompt, audio, message):
    lm = load_qwen2_audio(tiny[0])
    with pytest.raises(Qwen2AudioPromptError, match=message):
        lm.inputs(prompt, audio)


def test_bad_options(tiny):
    with pytest.raises(UnsupportedDtypeError, match="dtype='half_float': choose float32, bfloat16 or float16"):
        load_qwen2_audio(tiny[0], dtype="half_float")
    with pytest.raises(ValueError, match="attn='flash'"):
        load_qwen2_audio(tiny[0], attn="flash")


def test_bad_directories(tmp_path):
    with pytest.raises(NotAQwen2AudioDirectoryError, match="has no config.json"):
        load_qwen2_audio(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "whisper"}))
    with pytest.raises(NotAQwen2AudioDirectoryError, match="model_type 'whisper', not 'qwen2_audio'"):
        load_qwen2_audio(tmp_path)


def test_extended_inputs_grow_the_attention_mask(tiny):
    """One `extend` for every family: Qwen2-Audio's text mask grows with the appended ids (the
    copy in `interventions` once left it at the prompt's length, so the longer inputs did not run)."""
    lm = load_qwen2_audio(tiny[0])
    inputs = lm.inputs(NATIVE, _clip(16_000))
    longer = inputs.extended([5, 6])
    assert longer.input_ids.shape == (1, inputs.length + 2)
    assert longer.extra["attention_mask"].shape == longer.input_ids.shape
    assert inputs.extended([]) is inputs
    torch.testing.assert_close(lm.forward(longer).logits[:, :inputs.length], lm.forward(inputs).logits,
                               atol=1e-5, rtol=1e-5)
