"""Qwen-Audio (v1) and Qwen-Audio-Chat, native: the published checkpoint on transformers' Qwen2.

    model.py            `QwenAudio`, `load_qwen_audio`: the encoder, the splice, generation
    adapter.py          what the analyses read: capture points, stacks, frame geometry, the splice
    config.py           config.json → `QwenAudioConfig`, the network on meta, weight mapping
    encoder.py          the audio encoder (Whisper-large-v2 shape, pooled to 40 ms tokens)
    official_layout.py  checkpoints written in the published layout (random, or from a model)
    nano.py             the embedded default, a nano Qwen-Audio shipped inside the package
"""
from workbench.models.qwen_audio.model import QwenAudio, load_qwen_audio

__all__ = ["QwenAudio", "load_qwen_audio"]
