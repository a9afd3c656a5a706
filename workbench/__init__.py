"""Qwen-Audio Workbench: load a model, build tag prompts, look inside.

    import workbench as wb
    model = wb.load("whisper-base")              # or a local Qwen-Audio checkpoint directory
    audio = wb.load_audio("clip.flac")
    prompt = wb.preset("librispeech", lang="en")
    print(model.generate(prompt, audio).text)
    t = wb.trace(model, prompt, audio, capture="decoder.layers.*.cross_attn.pattern")
"""
from workbench.audio import load_audio, log_mel
from workbench.models.loading import load
from workbench.tags import TagPrompt, preset
from workbench.analysis.trace import trace

__all__ = ["load", "load_audio", "log_mel", "TagPrompt", "preset", "trace"]
__version__ = "0.1.0"
