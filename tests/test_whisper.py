"""Whisper behind the workbench surface: a tiny random model for the mechanics, the packaged real
weights (extra 'whisper') for what they transcribe."""
from __future__ import annotations

import json
import os
from pathlib import Path

import jiwer
import numpy as np
import pytest
import soundfile
import torch
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    WhisperConfig,
    WhisperFeatureExtractor,
    WhisperForConditionalGeneration,
    WhisperProcessor,
    WhisperTokenizer,
)

from workbench.errors import (
    NotAWhisperDirectoryError,
    UnknownModelError,
    UnknownTagWarning,
    UnsupportedDtypeError,
    WhisperPromptError,
)
from workbench.models import registry
from workbench.models.whisper import STANDARD_PREFIX, load_whisper
from workbench.tags import TagPrompt

SPECIALS = ["<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|de|>", "<|translate|>", "<|transcribe|>",
            "<|startoflm|>", "<|startofprev|>", "<|nocaptions|>", "<|notimestamps|>"]
TIMESTAMPS = [f"<|{i * 0.02:.2f}|>" for i in range(1501)]


def tiny_tokenizer(path: Path) -> WhisperTokenizer:
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    bpe.train_from_iterator(["ask not what your country can do for you"] * 4, trainer)
    bpe.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIALS + TIMESTAMPS])
    bpe.save(str(path))
    return WhisperTokenizer(tokenizer_file=str(path), unk_token="<|endoftext|>", bos_token="<|endoftext|>",
                            eos_token="<|endoftext|>", pad_token="<|endoftext|>")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, WhisperForConditionalGeneration]:
    """A transformers-format Whisper directory with random weights (what save_pretrained writes)."""
    directory = tmp_path_factory.mktemp("whisper") / "tiny"
    directory.mkdir()
    tokenizer = tiny_tokenizer(directory / "source-tokenizer.json")
    eos, sot = tokenizer.convert_tokens_to_ids(["<|endoftext|>", "<|startoftranscript|>"])
    config = WhisperConfig(vocab_size=len(tokenizer), d_model=16, encoder_layers=2, decoder_layers=3,
                           encoder_attention_heads=2, decoder_attention_heads=4, encoder_ffn_dim=32,
                           decoder_ffn_dim=32, max_target_positions=32, pad_token_id=eos, bos_token_id=eos,
                           eos_token_id=eos, decoder_start_token_id=sot)
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(config).eval()
    model.save_pretrained(directory)
    WhisperProcessor(feature_extractor=WhisperFeatureExtractor(feature_size=80), tokenizer=tokenizer).save_pretrained(directory)
    return directory, model


@pytest.fixture(scope="module")
def clip() -> np.ndarray:
    return (0.1 * np.random.default_rng(0).standard_normal(27_200)).astype(np.float32)


def _reference_logits(model, clip: np.ndarray, ids: list[int]) -> torch.Tensor:
    features = WhisperFeatureExtractor(feature_size=80)(clip, sampling_rate=16000, return_tensors="pt").input_features
    with torch.no_grad():
        return model(input_features=features, decoder_input_ids=torch.tensor([ids])).logits


def test_forward_equals_transformers(tiny, clip):
    directory, model = tiny
    lm = load_whisper(directory)
    out = lm.forward(STANDARD_PREFIX, clip)
    ids = lm.tokenizer.convert_tokens_to_ids(["<|startoftranscript|>", "<|en|>", "<|transcribe|>", "<|notimestamps|>"])
    assert lm.inputs(STANDARD_PREFIX, clip).input_ids.tolist() == [ids]
    torch.testing.assert_close(out.logits, _reference_logits(model, clip, ids), atol=1e-5, rtol=1e-5)
    assert out.audio_embeds[0].shape == (1500, 16)
    assert lm.describe()["total"] == sum(p.numel() for p in model.parameters())


def test_prompt_forms_build_the_same_inputs(tiny, clip, tmp_path):
    lm = load_whisper(tiny[0])
    soundfile.write(tmp_path / "clip.wav", clip, 16000, subtype="FLOAT")
    qwen_style = lm.inputs(f"<audio>clip.wav</audio>{STANDARD_PREFIX}", audio_dir=tmp_path)
    with_audio = lm.inputs(STANDARD_PREFIX, clip)
    tagged = lm.inputs(TagPrompt(text_lang=None, instructions=()), clip)   # renders Whisper's own 4 tags
    for other in (with_audio, tagged):
        assert torch.equal(other.input_ids, qwen_style.input_ids)
        torch.testing.assert_close(other.extra["input_features"], qwen_style.extra["input_features"])
    span = qwen_style.audios[0]
    assert (span.source, span.n_samples, span.n_positions) == ("clip.wav", 27_200, 0)   # audio is not in the decoder


def test_qwen_audio_tags_whisper_lacks_are_warned(tiny, clip):
    lm = load_whisper(tiny[0])
    with pytest.warns(UnknownTagWarning, match=r"^<\|wo_itn\|> look like tags but are not in Whisper's vocabulary"):
        inputs = lm.inputs(TagPrompt(), clip)    # the Qwen-Audio ASR tags
    assert inputs.length > 6                     # <|wo_itn|> went in as plain BPE pieces


def test_attentions_are_captured_under_sdpa(tiny, clip):
    lm = load_whisper(tiny[0], attn="sdpa")
    plain = lm.forward(STANDARD_PREFIX, clip)
    out = lm.forward(STANDARD_PREFIX, clip, output_attentions=True, output_encoder_attentions=True,
                     output_hidden_states=True)
    assert lm.model.config._attn_implementation == "sdpa"           # switched back after capturing
    torch.testing.assert_close(out.logits, plain.logits, atol=1e-5, rtol=1e-5)
    assert len(out.attentions) == 3 and out.attentions[0].shape == (1, 4, 4, 4)
    assert len(out.cross_attentions) == 3 and out.cross_attentions[0].shape == (1, 4, 4, 1500)
    assert len(out.encoder_attentions[0]) == 2 and out.encoder_attentions[0][0].shape == (2, 1500, 1500)
    for weights in (out.attentions[1], out.cross_attentions[2], out.encoder_attentions[0][1]):
        torch.testing.assert_close(weights.sum(-1), torch.ones(weights.shape[:-1]))
    assert torch.all(out.attentions[0][0, :, 0, 1:] == 0)           # causal
    assert len(out.hidden_states) == 4 and torch.equal(out.hidden_states[-1], out.last_hidden_state)
    assert len(out.encoder_hidden_states) == 3


def test_generate_is_greedy_and_cached(tiny, clip):
    lm = load_whisper(tiny[0])
    generation = lm.generate(STANDARD_PREFIX, clip, max_new_tokens=8)
    new = generation.ids + ([generation.stop_token] if generation.stop_token is not None else [])
    prefix = lm.inputs(STANDARD_PREFIX, clip).input_ids[0].tolist()
    full = _reference_logits(tiny[1], clip, prefix + new[:-1])[0]
    assert full[len(prefix) - 1:].argmax(-1).tolist() == new            # each token the argmax of its prefix
    assert generation.prompt_length == 4 and (len(new) == 8 or generation.stop_token == lm.stop_token_ids[0])


def test_decode_keeps_or_strips_tags(tiny):
    lm = load_whisper(tiny[0])
    ids = lm.tokenizer.encode("<|startoftranscript|><|en|><|0.02|> ask not<|0.50|><|endoftext|>",
                              add_special_tokens=False)
    assert lm.decode(ids) == "<|startoftranscript|><|en|><|0.02|> ask not<|0.50|><|endoftext|>"
    assert lm.decode(ids, keep_tags=False) == " ask not"


@pytest.mark.parametrize("prompt, audio, message", [
    ("<audio>a.wav</audio>", None, "no decoder prefix"),
    (f"<audio>a.wav</audio><audio>b.wav</audio>{STANDARD_PREFIX}", None, "exactly one audio per prompt, got 2"),
    (STANDARD_PREFIX, None, "exactly one audio per prompt, got 0"),
    (f"<audio>a.wav</audio>{STANDARD_PREFIX}", ["x.wav", "y.wav"], "names 1 audio.*but 2 were passed"),
    (f"<audio>a.wav{STANDARD_PREFIX}", None, "unbalanced <audio> tags"),
])
def test_bad_prompts(tiny, prompt, audio, message):
    lm = load_whisper(tiny[0])
    with pytest.raises(WhisperPromptError, match=message):
        lm.inputs(prompt, audio)


def test_generation_beyond_the_decoder_positions_is_refused(tiny, clip):
    lm = load_whisper(tiny[0])    # max_target_positions = 32
    with pytest.raises(ValueError, match="exceeds Whisper's 32 decoder positions.*at most 29"):
        lm.generate(STANDARD_PREFIX, clip, max_new_tokens=30)


def test_bad_sources(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(NotAWhisperDirectoryError, match=r"not a Whisper checkpoint.*found \['notes.txt'\]"):
        load_whisper(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(NotAWhisperDirectoryError, match="model_type 'whisper'"):
        load_whisper(tmp_path)
    with pytest.raises(UnknownModelError, match="'whisper-huge' is neither a packaged model.*whisper-base"):
        load_whisper("whisper-huge")
    with pytest.raises(ValueError, match="attn='flash'"):
        load_whisper(tmp_path, attn="flash")


def test_bad_dtype_name(tiny):
    with pytest.raises(UnsupportedDtypeError, match="dtype='float99': choose float32, bfloat16 or float16"):
        load_whisper(tiny[0], dtype="float99")


# --- the real packaged weights ---------------------------------------------------------------
def _packaged(name: str):
    try:
        registry.locate(registry.lookup(name))
    except registry.MissingPackageError as error:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI installs the 'whisper' extra, yet: {error}")
        pytest.skip(str(error))
    return load_whisper(name)


def _wer(reference: str, hypothesis: str) -> float:
    from whisper_normalizer.english import EnglishTextNormalizer

    normalize = EnglishTextNormalizer()
    return jiwer.wer(normalize(reference), normalize(hypothesis))


def _labels(shared_audio: Path) -> dict[str, str]:
    rows = [json.loads(line) for line in (shared_audio / "labels.jsonl").read_text().splitlines() if line.strip()]
    return {row["file"]: row["transcript"] for row in rows if row.get("transcript")}


@pytest.mark.whisper
@pytest.mark.parametrize("name, prefix, files", [
    ("whisper-base", STANDARD_PREFIX, ["jfk.flac", "1272-128104-0000.flac"]),
    ("whisper-tiny.en", "<|startoftranscript|><|notimestamps|>", ["jfk.flac"]),   # English-only: no language/task
])
def test_packaged_whisper_transcribes(name, prefix, files, shared_audio):
    lm = _packaged(name)
    labels = _labels(shared_audio)
    for file in files:
        generation = lm.generate(f"<audio>{file}</audio>{prefix}", audio_dir=shared_audio,
                                 max_new_tokens=96, keep_tags=False)
        assert generation.stop_token == lm.stop_token_ids[0], generation.text    # it finished on its own
        wer = _wer(labels[file], generation.text)
        assert wer <= 0.10, f"{name} on {file}: WER {wer:.3f}, {generation.text!r}"
