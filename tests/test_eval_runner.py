"""The evaluation runner: resumable records, keys, the batch == batch-size-1 check, the report, the CLI.

End-to-end runs use the embedded nano model on its own held-out clips (workbench/assets/nano/eval_clips);
the checks that need exact call counts or a deliberately broken batch use a small fake `AudioLM`.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

import workbench as wb
from workbench.evaluation.items import Item, Metric
from workbench.evaluation.runner import BatchMismatchError, EvalResult, RunOptions, UnsupportedTaskError, evaluate, read_items
from workbench.evaluation.runner_records import TruncatedRecordWarning, audio_hash, item_key, model_identity, read_records
from workbench.models.base import AudioLM, ModelInputs
from workbench.tags import TagPrompt

CLIPS = Path(wb.__file__).resolve().parent / "assets" / "nano" / "eval_clips"
DEMO = Path(wb.__file__).resolve().parent / "assets" / "demo"
ASR_EN = "<|startoftranscript|><|en|><|transcribe|><|en|><|notimestamps|><|wo_itn|>"


# --- a task and items built here (the same fields as workbench.evaluation.tasks.Task) -------------

@dataclass(frozen=True)
class ClipTask:
    """Prompts are the manifest's official tag strings; the score is exact match."""

    name: str = "nano-clips"
    kind: str = "mixed"
    dataset: str = "nano-clips"
    reader_kwargs: dict = field(default_factory=dict)
    max_new_tokens: int = 40
    paper: dict = field(default_factory=lambda: {"ACC": 0.795})
    previous_best: dict = field(default_factory=lambda: {"ACC": (0.669, "Pengi")})
    whisper: bool = False

    def prompt(self, item: Item) -> TagPrompt:
        return TagPrompt.parse(item.meta["prompt"])

    def whisper_prompt(self, item: Item) -> str | None:
        return item.meta["prompt"] if self.whisper else None

    def score_item(self, output: str, item: Item) -> dict:
        return {"correct": output == item.reference}

    def score(self, outputs: list[str], items: list[Item]) -> list[Metric]:
        accuracy = float(np.mean([o == i.reference for o, i in zip(outputs, items)]))
        return [Metric("ACC", accuracy, "official", True),
                Metric("ACC", accuracy, "standard", True, note="exact match after strip")]


def clip_items(ids: list[str] | None = None, root: Path = CLIPS) -> list[Item]:
    rows = [json.loads(line) for line in (root / "manifest.jsonl").read_text().splitlines()]
    rows = [r for r in rows if ids is None or r["id"] in ids]
    return [Item(id=r["id"], audio=root / r["audio"], reference=r["reference"],
                 meta={"prompt": r["prompt"], "task": r["task"]}) for r in rows]


# Five clips of different lengths and tasks (ASR, a scene, an emotion, a vocal sound, a note), in
# manifest order.
FIVE = ["asr-test-000004", "asc-test-000000", "ser-test-000001", "vsc-test-000000", "mna-test-000000"]


def demo_items() -> list[Item]:
    return [Item(id=p.stem, audio=p, reference="x", meta={"prompt": ASR_EN}) for p in sorted(DEMO.glob("*.flac"))]


# --- a fake model: exact call counts, and a batch that can be made to differ -------------------------

class FakeTokenizer:
    def decode(self, ids, keep_tags: bool = True) -> str:
        return " ".join(f"w{i}" for i in ids)


class FakeLM(AudioLM):
    """Prompt length grows with the clip's duration; the output depends on the prompt. `broken`: the second item
    of every batch of two or more gets another output, as a padding bug would."""

    def __init__(self, *, family: str = "fake", broken: bool = False, weight: float = 0.5):
        self.family, self.broken = family, broken
        self.tokenizer, self.config = FakeTokenizer(), {"layers": 1}
        self.stop_token_ids = (0,)
        self.net = torch.nn.Linear(3, 2)
        torch.nn.init.constant_(self.net.weight, weight)
        torch.nn.init.zeros_(self.net.bias)
        self.batches: list[int] = []

    def _build_inputs(self, text, audios, audio_dir) -> ModelInputs:
        size = Path(audios[0]).stat().st_size
        ids = [len(text) % 50 + 1, size % 97 + 1] + [1] * int(4 * soundfile.info(str(audios[0])).duration)
        return ModelInputs(text=text, input_ids=torch.tensor([ids]))

    def _generate_batch(self, batch, *, max_new_tokens):
        self.batches.append(len(batch))
        out = []
        for k, inputs in enumerate(batch):
            first, second = inputs.input_ids[0, :2].tolist()
            new = [first + 1, second + 2, 0]
            if self.broken and len(batch) > 1 and k == 1:
                new = [77, 0]
            out.append(new[:max_new_tokens])
        return out

    def _parameter_groups(self):
        return {"net": self.net}


# --- fixtures --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def nano():
    torch.set_num_threads(1)    # the shared 2-core machine; nano gains little from a second thread
    return wb.load("nano")


@pytest.fixture(scope="module")
def nano_run(nano, tmp_path_factory):
    """One uninterrupted run on five clips: the reference the resumed runs must equal."""
    out = tmp_path_factory.mktemp("full")
    result = evaluate(nano, ClipTask(), clip_items(FIVE), out, batch_size=2, progress=False)
    return out, result


def count_items(model, monkeypatch) -> list[int]:
    """Patch `model.generate_batch` to record how many prompts each call gets."""
    calls: list[int] = []
    original = model.generate_batch

    def counting(prompts, **kw):
        calls.append(len(prompts))
        return original(prompts, **kw)
    monkeypatch.setattr(model, "generate_batch", counting)
    return calls


# --- end to end on nano ----------------------------------------------------------------------------

def test_run_writes_records_in_item_order_and_a_summary(nano, nano_run):
    out, result = nano_run
    records = read_records(out / "records.jsonl")
    assert [r["id"] for r in records] == FIVE and [r["index"] for r in records] == list(range(5))
    assert set(records[0]) == {"index", "id", "audio", "prompt", "output", "reference", "score", "key",
                               "n_tokens", "stopped"}
    alone = nano.generate(TagPrompt.parse(ASR_EN), CLIPS / "asr-test-000004.flac", max_new_tokens=40)
    assert records[0]["prompt"] == ASR_EN and records[0]["output"] == alone.text.strip()
    assert records[0]["output"].startswith("the mouse swims") and records[0]["n_tokens"] == len(alone.ids)
    assert all(r["score"] == {"correct": r["output"] == r["reference"]} for r in records)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"] == {"items": 5, "generated": 5, "reused": 0, "shared": 0, "ranks": 1,
                                 "stopped": 5, "truncated": 0}
    assert summary["batch_check"] == {"status": "passed", "items": 2, "ranks": 1, "batch_size": 2}
    assert summary["model"]["family"] == "qwen-audio" and summary["settings"]["max_new_tokens"] == 40
    assert summary["metrics"][0]["name"] == "ACC" and summary["metrics"][0]["value"] >= 0.6  # shipped: 3 of 5
    assert result.outputs == [r["output"] for r in records]
    assert EvalResult.load(out).to_pandas().equals(result.to_pandas())


def test_interrupted_run_resumes_without_recomputing(nano, nano_run, tmp_path, monkeypatch):
    full, reference = nano_run
    lines = (full / "records.jsonl").read_text().splitlines(keepends=True)
    (tmp_path / "records.jsonl").write_text("".join(lines[:3]))      # killed after the third item
    calls = count_items(nano, monkeypatch)
    result = evaluate(nano, ClipTask(), clip_items(FIVE), tmp_path, batch_size=2, progress=False)
    assert sum(calls) == 2                                            # only items 4 and 5
    assert (tmp_path / "records.jsonl").read_text() == (full / "records.jsonl").read_text()
    assert result.metrics == reference.metrics
    assert result.summary["counts"]["generated"] == 2 and result.summary["counts"]["reused"] == 3
    calls.clear()
    again = evaluate(nano, ClipTask(), clip_items(FIVE), tmp_path, batch_size=2, progress=False)
    assert calls == [] and again.summary["batch_check"]["status"].startswith("not run")


def librispeech_layout(root: Path, n: int = 4) -> Path:
    """nano's English ASR test clips as a LibriSpeech split folder (root/LibriSpeech/dev-clean/…)."""
    rows = [json.loads(line) for line in (CLIPS / "manifest.jsonl").read_text().splitlines()]
    rows = [r for r in rows if r["task"] == "asr" and r.get("language") == "en"][:n]
    chapter = root / "LibriSpeech" / "dev-clean" / "9991" / "2"
    chapter.mkdir(parents=True)
    for k, r in enumerate(rows):
        shutil.copy(CLIPS / r["audio"], chapter / f"9991-2-{k:04d}.flac")
    (chapter / "9991-2.trans.txt").write_text("".join(f"9991-2-{k:04d} {r['reference'].upper()}\n"
                                                      for k, r in enumerate(rows)))
    return root / "LibriSpeech"


def test_cli_eval_end_to_end_on_nano(tmp_path, capsys):
    """`workbench eval librispeech-dev-clean --data LibriSpeech/ --model nano --out DIR`: the real
    task, reader and scorer, on nano's English test clips laid out as LibriSpeech."""
    from workbench import cli

    data = librispeech_layout(tmp_path)
    code = cli.main(["eval", "librispeech-dev-clean", "--data", str(data), "--model", "nano",
                     "--out", str(tmp_path / "run"), "--limit", "3", "--batch-size", "2", "--quiet"])
    printed = capsys.readouterr().out
    assert code == 0
    assert "| metric | recipe | value | Qwen-Audio (paper) | previous best |" in printed
    assert "| WER ↓ | official |" in printed and "| 1.8 | 2.1 (SpeechT5) |" in printed
    records = read_records(tmp_path / "run" / "records.jsonl")
    assert [r["id"] for r in records] == ["9991-2-0000", "9991-2-0001", "9991-2-0002"]
    assert records[0]["prompt"] == ASR_EN and records[0]["output"].startswith("the mouse swims")
    result = EvalResult.load(tmp_path / "run")
    assert result.metric("WER").value < 30 and result.summary["batch_check"]["status"] == "passed"


# --- keys ------------------------------------------------------------------------------------------

def test_key_changes_with_model_prompt_audio_and_decoding(nano, tmp_path):
    identity = model_identity(nano)
    assert model_identity(nano) == identity                        # stable: same model, same identity
    assert model_identity(nano.with_options(audio_decoder="ffmpeg"))["hash"] != identity["hash"]
    clip = CLIPS / "asr-test-000004.flac"
    copy = tmp_path / "elsewhere.flac"
    shutil.copy(clip, copy)
    assert audio_hash(copy) == audio_hash(clip)                     # content, not path
    base = item_key(identity["hash"], ASR_EN, audio_hash(clip), 40)
    assert item_key(identity["hash"], ASR_EN, audio_hash(copy), 40) == base
    assert item_key(identity["hash"], ASR_EN.replace("wo_itn", "itn"), audio_hash(clip), 40) != base
    assert item_key(identity["hash"], ASR_EN, audio_hash(CLIPS / "asr-test-000007.flac"), 40) != base
    assert item_key(identity["hash"], ASR_EN, audio_hash(clip), 41) != base
    assert item_key(model_identity(FakeLM())["hash"], ASR_EN, audio_hash(clip), 40) != base


def test_model_identity_sees_weights_and_family():
    assert model_identity(FakeLM())["hash"] == model_identity(FakeLM())["hash"]
    assert model_identity(FakeLM(weight=0.25))["hash"] != model_identity(FakeLM())["hash"]
    assert model_identity(FakeLM(family="whisper"))["hash"] != model_identity(FakeLM())["hash"]


def test_changed_audio_is_recomputed(tmp_path):
    items = demo_items()[:2]
    clip = tmp_path / "clip.flac"
    shutil.copy(items[0].audio, clip)
    item = Item(id="clip", audio=clip, reference="x", meta={"prompt": ASR_EN})
    model = FakeLM()
    evaluate(model, ClipTask(), [item], tmp_path / "run", progress=False)
    shutil.copy(items[1].audio, clip)                                # same path, other bytes
    result = evaluate(model, ClipTask(), [item], tmp_path / "run", progress=False)
    assert result.summary["counts"]["generated"] == 1 and model.batches == [1, 1]
    # the superseded record is kept beside the run, still found by key
    assert len(read_records(tmp_path / "run" / "records.unused.jsonl")) == 1


# --- record files ------------------------------------------------------------------------------------

def test_truncated_last_line_is_dropped_with_a_warning_and_recomputed(tmp_path):
    items, model = demo_items()[:5], FakeLM()
    evaluate(model, ClipTask(), items, tmp_path, batch_size=2, progress=False, check_batch=False)
    full = (tmp_path / "records.jsonl").read_text()
    lines = full.splitlines(keepends=True)
    (tmp_path / "records.jsonl").write_text("".join(lines[:3]) + lines[3][: len(lines[3]) // 2])
    model.batches.clear()
    with pytest.warns(TruncatedRecordWarning, match="last line is incomplete"):
        evaluate(model, ClipTask(), items, tmp_path, batch_size=2, progress=False, check_batch=False)
    assert sum(model.batches) == 2
    assert (tmp_path / "records.jsonl").read_text() == full


def test_identical_items_are_generated_once(tmp_path):
    # ClothoAQA repeats a question once per accepted answer: same audio, same prompt, same key.
    item = demo_items()[0]
    twins = [item, Item(id="twin", audio=item.audio, reference="y", meta=item.meta)]
    model = FakeLM()
    result = evaluate(model, ClipTask(), twins, tmp_path, progress=False)
    assert model.batches == [1] and result.summary["counts"]["shared"] == 1
    assert [r["reference"] for r in result.records] == ["x", "y"] and result.outputs[0] == result.outputs[1]


# --- the batch check ---------------------------------------------------------------------------------

def test_batch_check_catches_outputs_that_change_with_padding(tmp_path):
    items = demo_items()
    with pytest.raises(BatchMismatchError, match=r"differs from one item at a time for 1 of 4 items.*#43"):
        evaluate(FakeLM(broken=True), ClipTask(), items, tmp_path / "a", batch_size=4, progress=False)
    assert not read_records(tmp_path / "a" / "records.jsonl")   # nothing of the bad batch was recorded
    unchecked = evaluate(FakeLM(broken=True), ClipTask(), items, tmp_path / "b", batch_size=4, progress=False,
                         check_batch=False)
    assert unchecked.summary["batch_check"] == {"status": "off"}
    alone = evaluate(FakeLM(broken=True), ClipTask(), items, tmp_path / "c", batch_size=1, progress=False)
    assert alone.summary["batch_check"]["status"] == "skipped: batch size 1"
    assert alone.outputs != unchecked.outputs


def test_batches_are_sorted_by_prompt_length_within_a_window(tmp_path):
    items = demo_items()
    model = FakeLM()
    seen: list[list[int]] = []
    original = model.generate_batch
    model.generate_batch = lambda prompts, **kw: (seen.append([p.length for p in prompts]), original(prompts, **kw))[1]
    result = evaluate(model, ClipTask(), items, tmp_path, batch_size=2, window=6, progress=False, check_batch=False)
    flat = [n for batch in seen for n in batch]
    assert flat == sorted(flat) and len(seen) == 3
    assert [r["id"] for r in result.records] == [i.id for i in items]   # written in item order


# --- whisper, options, items -----------------------------------------------------------------------

def test_task_without_a_whisper_prompt_is_one_clear_error(tmp_path):
    model = FakeLM(family="whisper")
    with pytest.raises(UnsupportedTaskError, match="'nano-clips' .* has no Whisper prompt"):
        evaluate(model, ClipTask(), demo_items(), tmp_path, progress=False)
    assert model.batches == []
    result = evaluate(model, ClipTask(whisper=True), demo_items()[:2], tmp_path, progress=False)
    assert result.records[0]["prompt"] == ASR_EN                       # the whisper prompt, as given


def test_bad_options_and_empty_data_are_refused(tmp_path):
    with pytest.raises(ValueError, match="batch_size=0"):
        RunOptions(batch_size=0)
    with pytest.raises(ValueError, match="limit=-1"):
        RunOptions(limit=-1)
    with pytest.raises(ValueError, match="no items to evaluate"):
        read_items(ClipTask(), [], None)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_items(ClipTask(), tmp_path / "absent", None)
    assert [i.id for i in read_items(ClipTask(), demo_items(), 2)] == [i.id for i in demo_items()[:2]]


# --- the report --------------------------------------------------------------------------------------

def test_table_markdown_and_plot_put_the_run_beside_the_paper(tmp_path):
    import matplotlib
    matplotlib.use("Agg")
    result = evaluate(FakeLM(), ClipTask(), demo_items()[:3], tmp_path, progress=False)
    frame = result.to_pandas()
    assert list(frame.columns[:5]) == ["metric", "recipe", "value", "Qwen-Audio (paper)", "previous best"]
    assert frame["recipe"].tolist() == ["official", "standard"]
    assert frame["Qwen-Audio (paper)"].tolist() == [0.795, 0.795] and frame["previous best by"][0] == "Pengi"
    assert frame["value"].tolist() == [0.0, 0.0]
    text = result.to_markdown()
    assert "| ACC ↑ | official | 0 | 0.795 | 0.669 (Pengi) |" in text
    assert "[1] exact match after strip" in text and "batch check: passed" in text
    assert result.records_to_pandas()["score.correct"].tolist() == [False] * 3
    fig = result.plot()
    assert len(fig.axes) == 1 and [t.get_text() for t in fig.axes[0].get_xticklabels()] == \
        ["ours\nofficial", "ours\nstandard", "Qwen-Audio\n(paper)", "prev. best\nPengi"]
    assert "EvalResult nano-clips: 3 items" in repr(result)
