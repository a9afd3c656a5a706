"""The benchmark registry: how to read, prompt, decode and score each of Qwen-Audio's evaluations.

A `Task` is data — reader name and arguments, the official tag preset, decoding limits, the paper's
numbers — plus the methods the runner calls: a prompt per model family (`prompt(item)`, Qwen-Audio's
tags; `qwen2_prompt(item)`, Qwen2-Audio's natural language; `whisper_prompt(item)`, Whisper's decoder
prefix), `score_item(output, item)` and `score(outputs, items)`. Prompts, decoding limits and scoring follow
QwenLM/Qwen-Audio's `eval_audio/evaluate_*.py`; every `max_new_tokens` below is the value in that
benchmark's script (all of them also pass `min_new_tokens=1` and decode greedily).

`paper` and `previous_best` are keyed by the metric names the scorers emit (compare them with the
`recipe="official"` values). Previous bests are the best earlier system in the official README's
per-benchmark tables.
"""
from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from workbench.evaluation import metrics
from workbench.evaluation.items import Item, Metric
from workbench.tags import TagPrompt, preset

KINDS = ("asr", "s2tt", "aac", "asc", "ser", "vsc", "aqa", "mna", "srwt")
_PRIMARY = {"asr": "WER", "s2tt": "BLEU", "aac": "CIDEr", "asc": "ACC", "ser": "ACC", "vsc": "ACC",
            "aqa": "ACC", "mna": "qualities_mAP", "srwt": "AAS_ms"}


@dataclass(frozen=True)
class Task:
    name: str  # "librispeech-test-clean"
    kind: str  # one of KINDS
    dataset: str  # the reader: readers.read_dataset(dataset, root, **reader_kwargs)
    reader_kwargs: Mapping[str, Any] = field(default_factory=dict, hash=False)
    preset: str = ""  # the tags.PRESETS entry holding the official prompt
    preset_fields: Mapping[str, Any] = field(default_factory=dict, hash=False)  # lang, src/tgt
    max_new_tokens: int = 256
    min_new_tokens: int = 1  # every official script passes 1
    language: str | None = None  # the speech's language: ASR/SRWT scoring language, S2TT source
    target_language: str | None = None  # S2TT: BLEU tokenizer choice
    paper: Mapping[str, float] = field(default_factory=dict, hash=False)  # Qwen-Audio's numbers
    previous_best: Mapping[str, tuple[float, str]] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"task {self.name!r}: kind={self.kind!r} is not one of {', '.join(KINDS)}")
        # Own copies, so a caller's dict cannot change a registered task (plain dicts: Tasks pickle).
        for name in ("reader_kwargs", "preset_fields", "paper", "previous_best"):
            object.__setattr__(self, name, dict(getattr(self, name)))

    @property
    def primary_metric(self) -> str:
        return _PRIMARY[self.kind]

    # --- prompting -------------------------------------------------------------------------
    def prompt(self, item: Item) -> TagPrompt:
        """The official tag prompt (after `<audio>FILE</audio>`); AQA puts the item's question in."""
        if self.kind == "aqa":
            if not item.question:
                raise ValueError(f"{self.name}: item {item.id!r} has no question; ClothoAQA items need one")
            return preset(self.preset, question=item.question, **self.preset_fields)
        return preset(self.preset, **self.preset_fields)

    def whisper_prompt(self, item: Item) -> str | None:
        """Whisper's own decoder prompt for what Whisper can do, else None: transcription,
        translation into English (Whisper translates only to English), and timestamps (segment-level:
        Whisper emits time tokens per segment, not per word — SRWT's AAS then measures segments)."""
        if self.kind == "asr":
            return f"<|startoftranscript|><|{self.language}|><|transcribe|><|notimestamps|>"
        if self.kind == "s2tt" and self.target_language == "en":
            return f"<|startoftranscript|><|{self.language}|><|translate|><|notimestamps|>"
        if self.kind == "srwt":
            return f"<|startoftranscript|><|{self.language}|><|transcribe|>"  # no <|notimestamps|>: timestamps on
        return None

    def qwen2_prompt(self, item: Item) -> str | None:
        """Qwen2-Audio's natural-language prompt (the text after `<|audio_bos|><|AUDIO|><|audio_eos|>`),
        or None where Qwen2-Audio cannot be asked for the task (`QWEN2_PROMPTS`)."""
        form = QWEN2_PROMPTS[self.kind]
        if form is None:
            return None
        if self.kind == "aqa" and not item.question:
            raise ValueError(f"{self.name}: item {item.id!r} has no question; ClothoAQA items need one")
        return form.format(lang=self.language, target=_LANGUAGE_NAMES.get(str(self.target_language), ""),
                           question=item.question, dataset=_QWEN2_DATASET_NAMES.get(self.dataset, self.dataset))

    # --- scoring ---------------------------------------------------------------------------
    def score_item(self, output: str, item: Item) -> dict:
        """A small dict of per-item scores for the runner's JSONL record."""
        ref = item.reference
        if self.kind == "asr":
            return metrics.asr_item(output, ref, self.language)
        if self.kind == "s2tt":
            return metrics.s2tt_item(output, ref, self.target_language)
        if self.kind == "aac":
            return metrics.caption_item(output, _captions(ref))
        if self.kind in ("asc", "ser", "vsc"):
            return metrics.label_item(output, str(ref))
        if self.kind == "aqa":
            return metrics.aqa_item(output, ref)
        if self.kind == "mna":
            return metrics.note_item(output, ref)
        return metrics.srwt_item(output, ref, self.language)

    def score(self, outputs: Sequence[str], items: Sequence[Item]) -> list[Metric]:
        """Corpus metrics, official and standard recipes side by side."""
        if len(outputs) != len(items):
            raise ValueError(f"{self.name}: {len(outputs)} outputs for {len(items)} items")
        refs = [item.reference for item in items]
        if self.kind == "asr":
            return metrics.asr_metrics(outputs, refs, self.language)
        if self.kind == "s2tt":
            return metrics.s2tt_metrics(outputs, refs, self.target_language)
        if self.kind == "aac":
            return metrics.caption_metrics(outputs, [_captions(r) for r in refs])
        if self.kind in ("asc", "ser", "vsc"):
            return metrics.label_accuracy(outputs, [str(r) for r in refs])
        if self.kind == "aqa":
            # A question asked several times (one row per accepted answer) is one question.
            return metrics.aqa_metrics(outputs, refs, questions=[(str(i.audio), i.question) for i in items])
        if self.kind == "mna":
            return metrics.note_metrics(outputs, refs)
        return metrics.srwt_metrics(outputs, refs, self.language)


# Qwen2-Audio drops the tags: each prompt is natural language after `<|audio_bos|><|AUDIO|><|audio_eos|>`.
# Sources, because QwenLM/Qwen2-Audio's eval_audio/evaluate_*.py read the prompt from the JSONL files
# that eval_audio/EVALUATION.md links (librispeech_eval.jsonl, aishell2_eval.jsonl, covost2_eval.jsonl,
# meld_eval.jsonl, vocalsound_eval.jsonl) and state none in code:
# - ASR, SER, VSC: the prompts of those JSONL files as evaluation harnesses that cite them reproduce
#   them (Qwen2-Audio wrappers of public audio-evaluation kits); the language token `<|en|>` is not a
#   special token of Qwen2-Audio's tokenizer, so it is tokenized as characters, as in the JSONL;
# - S2TT: "Translate the speech into German." for covost2_eval.jsonl, as this project's issue #12
#   states it. Not verified against the JSONL itself: a paper quoting Qwen2-Audio-Instruct's prompt
#   writes "Translate the speech into $target_language:" (a colon);
# - AAC: "Generate the caption in English:", the README's and transformers' Qwen2-Audio example;
# - AQA, ASC, MNA: Qwen2-Audio's evaluation has no ClothoAQA, acoustic-scene or NSynth run. AQA asks
#   the question as it is (Qwen2-Audio's audio-analysis mode); ASC and MNA follow VocalSound's
#   "Classify … to DATASET in English:" — our wording, not the authors';
# - SRWT: none. Qwen2-Audio's vocabulary has no time tokens, so it cannot give word timestamps.
QWEN2_PROMPTS: dict[str, str | None] = {
    "asr": "Detect the language and recognize the speech: <|{lang}|>",
    "s2tt": "Translate the speech into {target}.",
    "aac": "Generate the caption in English:",
    "ser": "Recognize the emotion with keywords in English:",
    "vsc": "Classify the human vocal sound to VocalSound in English:",
    "aqa": "{question}",
    "asc": "Classify the acoustic scene to {dataset} in English:",
    "mna": "Classify the musical note to {dataset} in English:",
    "srwt": None,
}
_LANGUAGE_NAMES = {"en": "English", "de": "German", "zh": "Chinese", "es": "Spanish", "fr": "French",
                   "it": "Italian", "ja": "Japanese"}
_QWEN2_DATASET_NAMES = {"cochlscene": "CochlScene", "tut2017": "TUT2017", "nsynth": "NSynth"}


def _captions(reference: Any) -> list[str]:
    return [reference] if isinstance(reference, str) else [str(r) for r in reference]


# ---------------------------------------------------------------------------------------------
# The registry. Reader names and arguments follow readers.READERS and name the split the paper
# evaluates (TUT2017: the evaluation set's meta.txt, the reader's default).
def _asr(name: str, dataset: str, lang: str, reader_kwargs: dict, paper: float, best: tuple[float, str]) -> Task:
    return Task(name, "asr", dataset, reader_kwargs, dataset, {"lang": lang}, max_new_tokens=256,
                language=lang, paper={"WER": paper}, previous_best={"WER": best})


def _s2tt(src: str, tgt: str, paper: float, best: tuple[float, str]) -> Task:
    return Task(f"covost2-{src}-{tgt}", "s2tt", "covost2", {"src": src, "tgt": tgt, "split": "test"}, "covost2",
                {"src": src, "tgt": tgt}, max_new_tokens=256, language=src, target_language=tgt,
                paper={"BLEU": paper}, previous_best={"BLEU": best})


def _label(name: str, kind: str, max_new_tokens: int, reader_kwargs: dict, paper: float,
           best: tuple[float, str]) -> Task:
    # Reader, preset and task share the dataset's name.
    return Task(name, kind, name, reader_kwargs, name, max_new_tokens=max_new_tokens,
                language="en", paper={"ACC": paper}, previous_best={"ACC": best})


_SPEECHT5, _SALMONN = "SpeechT5", "SALMONN"
_ALL: tuple[Task, ...] = (
    # evaluate_asr.py: max_new_tokens=256
    _asr("librispeech-dev-clean", "librispeech", "en", {"split": "dev-clean"}, 1.8, (2.1, _SPEECHT5)),
    _asr("librispeech-dev-other", "librispeech", "en", {"split": "dev-other"}, 4.0, (5.5, _SPEECHT5)),
    _asr("librispeech-test-clean", "librispeech", "en", {"split": "test-clean"}, 2.0, (2.1, _SALMONN)),
    _asr("librispeech-test-other", "librispeech", "en", {"split": "test-other"}, 4.2, (4.9, _SALMONN)),
    _asr("aishell1-dev", "aishell1", "zh", {"split": "dev"}, 1.2, (1.6, "MMSpeech-large")),
    _asr("aishell1-test", "aishell1", "zh", {"split": "test"}, 1.3, (1.9, "MMSpeech-large")),
    _asr("aishell2-mic", "aishell2", "zh", {"channel": "Mic", "split": "test"}, 3.3, (4.5, "MMSpeech-base")),
    # iOS: the README lists Paraformer-large at 2.9, better than Qwen-Audio's 3.1 (the paper's
    # headline table shows MMSpeech-base's 3.9).
    _asr("aishell2-ios", "aishell2", "zh", {"channel": "iOS", "split": "test"}, 3.1, (2.9, "Paraformer-large")),
    _asr("aishell2-android", "aishell2", "zh", {"channel": "Android", "split": "test"}, 3.3, (4.0, "MMSpeech-base")),
    # evaluate_st.py: max_new_tokens=256
    _s2tt("en", "de", 25.1, (18.6, "SALMONN")),
    _s2tt("de", "en", 33.9, (27.1, "SpeechLLaMA")),
    _s2tt("en", "zh", 41.5, (33.1, "SALMONN")),
    _s2tt("zh", "en", 15.7, (12.3, "SpeechLLaMA")),
    _s2tt("es", "en", 39.7, (27.9, "SpeechLLaMA")),
    _s2tt("fr", "en", 38.5, (25.2, "SpeechLLaMA")),
    _s2tt("it", "en", 36.0, (25.9, "SpeechLLaMA")),
    # evaluate_caption.py: max_new_tokens=30
    Task("clotho", "aac", "clotho", {"split": "evaluation"}, "clotho", max_new_tokens=30, language="en",
         paper={"CIDEr": 0.441, "SPICE": 0.136, "SPIDEr": 0.288},
         previous_best={"CIDEr": (0.416, "Pengi"), "SPICE": (0.126, "Pengi"), "SPIDEr": (0.271, "Pengi")}),
    # evaluate_scene.py: max_new_tokens=10
    _label("cochlscene", "asc", 10, {"split": "Test"}, 0.795, (0.669, "CochlScene baseline")),
    _label("tut2017", "asc", 10, {}, 0.649, (0.353, "Pengi")),
    # evaluate_emotion.py / evaluate_vocal_sound.py: max_new_tokens=4
    _label("meld", "ser", 4, {"split": "test"}, 0.557, (0.542, "WavLM-large")),
    _label("vocalsound", "vsc", 4, {"split": "test"}, 0.9289, (0.6035, "Pengi")),
    # evaluate_aqa.py: max_new_tokens=4. Binary: the README lists Pengi at 0.645 (the paper's headline
    # table shows the ClothoAQA baseline's 0.627).
    Task("clotho-aqa", "aqa", "clothoaqa", {"split": "test"}, "clothoaqa", max_new_tokens=4, language="en",
         paper={"ACC": 0.579, "ACC_yes_no": 0.749},
         previous_best={"ACC": (0.542, "ClothoAQA baseline"), "ACC_yes_no": (0.645, "Pengi")}),
    # evaluate_note_analysis.py: max_new_tokens=30
    Task("nsynth", "mna", "nsynth", {"split": "test"}, "nsynth", max_new_tokens=30,
         paper={"qualities_mAP": 0.4742, "instrument_ACC": 0.7882},
         previous_best={"qualities_mAP": (0.3860, "Pengi"), "instrument_ACC": (0.5007, "Pengi")}),
    # evaluate_srwt.py: max_new_tokens=256. The industrial set is closed: any word-timestamp data
    # the "srwt" reader (read_word_times) reads stands in.
    Task("srwt", "srwt", "srwt", {"lang": "zh"}, "srwt", {"lang": "zh"}, max_new_tokens=256, language="zh",
         paper={"AAS_ms": 51.5}, previous_best={"AAS_ms": (60.3, "Force-aligner")}),
)
TASKS: dict[str, Task] = {task.name: task for task in _ALL}


def get_task(name: str) -> Task:
    """The registered task called `name`, or a KeyError naming the close matches and every task."""
    if name in TASKS:
        return TASKS[name]
    close = difflib.get_close_matches(name, TASKS, n=3)
    hint = f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
    raise KeyError(f"no task {name!r}{hint}. Known tasks: {', '.join(TASKS)}")


def with_reader(task: Task, dataset: str, **reader_kwargs: Any) -> Task:
    """The same task reading other data, e.g. `with_reader(get_task("meld"), "official_jsonl", path=…)`."""
    return dataclasses.replace(task, dataset=dataset, reader_kwargs=reader_kwargs)
