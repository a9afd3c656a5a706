"""Qwen-Audio Workbench: load a model, build tag prompts, look inside.

    import workbench as wb
    model = wb.load("whisper-base")              # or "nano", or a local Qwen-Audio checkpoint directory
    audio = wb.load_audio("clip.flac")
    prompt = wb.preset("librispeech", lang="en")
    print(model.generate(prompt, audio).text)
    t = wb.trace(model, prompt, audio, capture="decoder.layers.*.cross_attn.pattern")
    wb.figures.plot_mel(wb.log_mel(audio))

The verbs are here; the layers they come from are, from the bottom: `errors`, `audio`, `tags`,
`tokenizer`, `models` and `figures`, `analysis`, `evaluation` and `chat`, `widgets` (pyproject.toml's import
contract). Which analysis works for which model family: `wb.capability_table()`.
"""
from workbench import audio, demo, errors, figures, tags, widgets
from workbench.analysis.ablation import ablate
from workbench.analysis.alignment import align, find_alignment_heads
from workbench.analysis.attribution import attribute_audio, attribute_tags
from workbench.analysis.attribution_patching import attribution_patch
from workbench.analysis.capabilities import capability_table
from workbench.analysis.dla import direct_logit_attribution
from workbench.analysis.edges import edge_knockout, edge_knockout_many
from workbench.analysis.knockout import knockout_sweep
from workbench.analysis.lens import logit_lens
from workbench.analysis.patching import patch_sweep
from workbench.analysis.probes import probe, probe_features
from workbench.analysis.trace import trace
from workbench.analysis.tracing import causal_trace, causal_trace_many, corrupt_audio
from workbench.audio import load_audio, log_mel
from workbench.chat import Chat
from workbench.evaluation.runner import evaluate
from workbench.evaluation.suite import evaluate_replicas
from workbench.evaluation.tasks import TASKS, get_task
from workbench.models.loading import load
from workbench.tags import TagPrompt, preset

__all__ = [
    # load a model, a clip, a prompt
    "load", "load_audio", "log_mel", "preset", "TagPrompt",
    # look inside
    "trace", "logit_lens", "ablate", "attribute_tags", "attribute_audio", "patch_sweep", "knockout_sweep",
    "probe", "probe_features",
    "edge_knockout", "edge_knockout_many", "direct_logit_attribution",
    "attribution_patch", "causal_trace", "causal_trace_many", "corrupt_audio",
    "align", "find_alignment_heads", "capability_table",
    # talk
    "Chat",
    # evaluate on a benchmark as distributed (or on its tiny replica)
    "evaluate", "evaluate_replicas", "get_task", "TASKS",
    # the modules a notebook reaches into: clips and their time grid, tags, figures, the demo clips,
    # the exceptions, the ipywidgets explorers
    "audio", "tags", "figures", "demo", "errors", "widgets",
]
__version__ = "0.1.0"
