"""Tiny random Whisper and Qwen2-Audio checkpoints, written to a directory that `workbench.load` reads.

Their tokenizers are byte-level BPE without merges (256 byte tokens) plus the special tokens the
families need, so nothing is downloaded and a checkpoint is built in well under a second.
"""
from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers.convert_slow_tokenizer import bytes_to_unicode

WHISPER_SPECIALS = ("<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|transcribe|>", "<|notimestamps|>")
QWEN2_AUDIO_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>")
WHISPER_PREFIX = "<|startoftranscript|><|en|><|transcribe|><|notimestamps|>"
WHISPER_ALIGNMENT_HEADS = [[1, 0], [1, 2]]


def _byte_level() -> Tokenizer:
    tokenizer = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(bytes_to_unicode().values())}, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer


def write_whisper(directory: Path, seed: int = 0) -> Path:
    from transformers import (
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperProcessor,
        WhisperTokenizer,
    )

    eos = WHISPER_SPECIALS[0]
    tokenizer = WhisperTokenizer(tokenizer_object=_byte_level(), unk_token=eos, bos_token=eos, eos_token=eos,
                                 pad_token=eos)
    tokenizer.add_special_tokens({"additional_special_tokens": list(WHISPER_SPECIALS[1:])})
    ids = tokenizer.convert_tokens_to_ids(list(WHISPER_SPECIALS))
    config = WhisperConfig(vocab_size=len(tokenizer), d_model=32, encoder_layers=2, decoder_layers=2,
                           encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=64,
                           decoder_ffn_dim=64, max_source_positions=1500, max_target_positions=64, num_mel_bins=80,
                           eos_token_id=ids[0], bos_token_id=ids[0], pad_token_id=ids[0],
                           decoder_start_token_id=ids[1])
    torch.manual_seed(seed)
    WhisperForConditionalGeneration(config).save_pretrained(directory)
    WhisperProcessor(feature_extractor=WhisperFeatureExtractor(feature_size=80),
                     tokenizer=tokenizer).save_pretrained(directory)
    return directory


def write_qwen2_audio(directory: Path, seed: int = 0) -> Path:
    from transformers import (
        Qwen2AudioConfig,
        Qwen2AudioForConditionalGeneration,
        Qwen2AudioProcessor,
        Qwen2TokenizerFast,
        WhisperFeatureExtractor,
    )

    eos = QWEN2_AUDIO_SPECIALS[0]
    tokenizer = Qwen2TokenizerFast(tokenizer_object=_byte_level(), eos_token=eos, pad_token=eos, unk_token=None,
                                   bos_token=None)
    tokenizer.add_special_tokens({"additional_special_tokens": list(QWEN2_AUDIO_SPECIALS)})
    config = Qwen2AudioConfig(
        audio_config={"d_model": 32, "encoder_layers": 2, "encoder_attention_heads": 4, "encoder_ffn_dim": 64,
                      "num_mel_bins": 128},
        text_config={"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
                     "intermediate_size": 64, "vocab_size": len(tokenizer)},
        audio_token_index=tokenizer.convert_tokens_to_ids("<|AUDIO|>"))
    torch.manual_seed(seed)
    Qwen2AudioForConditionalGeneration(config).save_pretrained(directory)
    Qwen2AudioProcessor(feature_extractor=WhisperFeatureExtractor(feature_size=128),
                        tokenizer=tokenizer).save_pretrained(directory)
    return directory
