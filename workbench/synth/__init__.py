"""The synthetic multitask corpus that the embedded nano Qwen-Audio is trained on.

A miniature of the Qwen-Audio recipe: ten tasks, each with its official tag prompt (or ChatML for
chat), built from content a tiny model can learn — a small parallel grammar spoken by espeak-ng in
five languages, procedural sound events and scenes, espeak-ng vocal-sound proxies, and single
notes rendered by FluidSynth — and split into train/validation/test by content.

    from workbench.synth import CorpusOptions, generate_corpus, read_manifest
    generate_corpus("corpus", CorpusOptions(per_task=2000, seed=0, workers=2))
    rows = read_manifest("corpus/train.jsonl")

Needs the system programs espeak-ng and fluidsynth with the General MIDI soundfont
(`apt-get install espeak-ng fluidsynth fluid-soundfont-gm`).
"""
from .corpus import CorpusOptions, CorpusSummary, generate_corpus, read_manifest, split_sizes
from .prompts import TASKS, chat_prompt, task_prompt
from .splits import SPLITS, split_of

__all__ = ["CorpusOptions", "CorpusSummary", "generate_corpus", "read_manifest", "split_sizes", "TASKS",
           "chat_prompt", "task_prompt", "SPLITS", "split_of"]
