"""Every benchmark end to end on the embedded default, through the runner, on its tiny replica;
and the runner gives nano's recipe evaluation the same outputs on the same held-out items."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

import workbench as wb
from workbench.evaluation.items import Item
from workbench.evaluation.replicas import BENCHMARK_OF, REPLICAS
from workbench.evaluation.runner import evaluate
from workbench.evaluation.suite import evaluate_replicas
from workbench.models.qwen_audio.nano import NANO_DIR

CLIPS = NANO_DIR / "eval_clips"


@pytest.fixture(scope="module")
def nano():
    return wb.load("nano")


@pytest.fixture(scope="module")
def table(nano, tmp_path_factory, shared_audio):
    return evaluate_replicas(nano, tmp_path_factory.mktemp("replicas"), real_clips=shared_audio)


@pytest.mark.slow
def test_every_replica_is_run_and_scored(table):
    assert set(table["replica"]) == set(REPLICAS)
    for name, rows in table.groupby("replica"):
        assert set(rows["benchmark"]) == {BENCHMARK_OF[name]}
        assert (rows["items"] >= 2).all()
        for _, row in rows.iterrows():   # a number, or unavailable with its reason: never a silent 0
            value = row["value"]
            assert (value is not None and math.isfinite(value)) or row["note"], (name, row["metric"])


@pytest.mark.slow
def test_nano_does_its_own_world_on_the_replicas(table):
    def value(replica: str, metric: str, recipe: str = "standard") -> float:
        rows = table[(table.replica == replica) & (table.metric == metric) & (table.recipe == recipe)]
        return float(rows["value"].iloc[0])

    classification = [value(name, "ACC") for name in ("cochlscene", "tut2017", "meld", "vocalsound")]
    assert np.mean(classification) >= 0.5, classification        # chance is 1/6 to 1/4
    assert value("nsynth", "instrument_ACC") >= 0.5                # chance 1/11


@pytest.mark.slow
def test_the_runner_reproduces_the_recipe_evaluation_on_nanos_held_out_clips(nano, tmp_path):
    """recipes/eval_nano.py (which wrote assets/nano/eval.json) generates with `generate_batch`,
    96 new tokens; the runner, batched and checked against batch size 1, must give the same text."""
    rows = [json.loads(line) for line in (CLIPS / "manifest.jsonl").read_text().splitlines()]
    asr = [r for r in rows if r["task"] == "asr" and r["language"] == "en"]
    items = [Item(r["id"], CLIPS / r["audio"], r["reference"].upper(), meta={"lang": "en"}) for r in asr]
    result = evaluate(nano, "librispeech-dev-clean", items, tmp_path, max_new_tokens=96, batch_size=3,
                      progress=False)
    recipe = [g.text.strip() for g in nano.generate_batch([f"<audio>{r['audio']}</audio>{r['prompt']}" for r in asr],
                                                          audio_dir=CLIPS, max_new_tokens=96)]
    assert result.outputs == recipe
    assert result.summary["batch_check"]["status"] == "passed"


@pytest.mark.whisper
@pytest.mark.slow
def test_real_whisper_through_the_runner_gets_the_real_clip_right(tmp_path, shared_audio):
    """Whisper's own prompt, adapted to an English-only model (which has no language/task tags)."""
    from workbench.evaluation.replicas import build_replicas

    data = build_replicas(tmp_path / "data", real_clips=shared_audio)["librispeech"]
    result = evaluate(wb.load("whisper-tiny.en"), "librispeech-dev-clean", data, tmp_path / "run", progress=False)
    real = next(r for r in result.records if r["id"] == "1272-128104-0000")
    assert real["prompt"] == "<|startoftranscript|><|notimestamps|>"
    assert real["score"]["wer_standard"] < 15, real
    assert result.metric("WER", "standard").value < 30   # real speech and espeak-ng sentences alike
