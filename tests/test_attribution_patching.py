"""Attribution patching: the first-order estimate of activation patching.

On the tiny models (random weights) every cell equals the exact linear term d/dα metric(a_corrupt +
α·(a_clean − a_corrupt)) at α = 0, computed one cell at a time with torch.autograd through a patching
hook; on the trained nano the estimates track real patching (`patch_sweep`) over heads and groups.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.figure import Figure
from tiny_models import WHISPER_PREFIX

import workbench as wb
from workbench.analysis.attribution_patching import AttributionResult, agreement, attribution_patch
from workbench.analysis.interventions import answer_rows, encode_text, head_columns, hooks, prompt_inputs
from workbench.analysis.patching import patch_sweep
from workbench.analysis.positions import aligned_positions, label_positions
from workbench.errors import NotSupportedError, PatchingError
from workbench.tags import preset

ASR = preset("librispeech").render()
SHORTER = ASR.replace("<|en|><|notimestamps|>", "<|notimestamps|>")      # one tag fewer: positions shift
GERMAN_TEXT = ASR.replace("<|en|><|notimestamps|>", "<|de|><|notimestamps|>")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # nano's tiny matrices run ~30x slower with two threads on a loaded 2-core machine
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(params=["qwen", "whisper"])
def case(request, tiny_qwen, tiny_clip, tiny_whisper, noise):
    """(model, audio, clean prompt, corrupted prompt of another length, continuation)."""
    if request.param == "qwen":
        return tiny_qwen, tiny_clip, ASR, SHORTER, " mister quilting"
    return tiny_whisper, noise, WHISPER_PREFIX, WHISPER_PREFIX.replace("<|en|>", ""), " ask not"


def _linear_term(model, clean: str, corrupt: str, audio, continuation: str, what: str, layer: int,
                 columns: slice, group: str) -> float:
    """d metric / dα at α = 0 of the corrupted run with a ← a_corrupt + α (a_clean − a_corrupt) at
    the patched positions and columns of one layer: the exact first-order term, by torch.autograd."""
    adapter = model.adapter
    stack = adapter.sequence
    ids = encode_text(model, continuation)
    prompts = [prompt_inputs(model, p, audio, None) for p in (clean, corrupt)]
    runs = [p.extended(ids) for p in prompts]
    audios = [adapter.interventions.encode(p) for p in prompts]
    tables = [label_positions(model, r, n_prompt=p.length) for r, p in zip(runs, prompts)]
    pairs = aligned_positions(*tables, group)
    module = (stack.head_inputs if what == "head" else stack.layers)[layer]
    pre = what == "head"
    seen: dict[str, torch.Tensor] = {}

    def take(module, args, output=None):
        seen["x"] = (args[0] if pre else output[0] if isinstance(output, tuple) else output).detach().clone()

    with torch.no_grad(), hooks([(module, take, pre)]):
        adapter.interventions.run(runs[0], audios[0])
    clean_x = seen["x"]
    alpha = torch.zeros((), requires_grad=True)

    def mix(x: torch.Tensor) -> torch.Tensor:
        src, tgt = torch.as_tensor(pairs[:, 0]), torch.as_tensor(pairs[:, 1])
        step = torch.zeros_like(x)
        step[:, tgt, columns] = clean_x[:, src, columns] - x[:, tgt, columns].detach()
        return x + alpha * step

    def hook(module, args, output=None):
        if pre:
            return (mix(args[0]), *args[1:])
        return (mix(output[0]), *output[1:]) if isinstance(output, tuple) else mix(output)

    with torch.enable_grad(), hooks([(module, hook, pre)]):
        rows = answer_rows(prompts[1].length, ids)
        logits = adapter.interventions.run(runs[1], audios[1], rows).log_softmax(-1)
        score = logits[torch.arange(len(ids)), torch.tensor(ids)].double().sum()
        (grad,) = torch.autograd.grad(score, alpha)
    return float(grad)


# --- exactness: the estimate is the first-order term ------------------------------------------------

def test_head_estimates_equal_the_linear_term_cell_by_cell(case):
    model, audio, clean, corrupt, text = case
    result = attribution_patch(model, clean, corrupt, audio, what="head", continuation=text)
    stack = model.adapter.sequence
    assert result.effects.shape == (len(stack.layers), stack.n_heads)
    assert result.columns == tuple(f"head {h}" for h in range(stack.n_heads))
    for layer, head in [(0, 0), (len(stack.layers) - 1, stack.n_heads - 1), (1, 1)]:
        expected = _linear_term(model, clean, corrupt, audio, text, "head", layer,
                                head_columns(stack.head_inputs[layer], head, stack.n_heads), "all")
        assert result.effects[layer, head] == pytest.approx(expected, rel=1e-4, abs=1e-6)
    assert np.abs(result.effects).max() > 1e-4        # not all zero: the prompts differ


def test_resid_estimates_equal_the_linear_term_per_group(case):
    model, audio, clean, corrupt, text = case
    result = attribution_patch(model, clean, corrupt, audio, what="resid", continuation=text)
    for i, layer in enumerate(result.layers):
        for j, group in enumerate(result.columns):
            expected = _linear_term(model, clean, corrupt, audio, text, "resid", layer, slice(None), group)
            assert result.effects[i, j] == pytest.approx(expected, rel=1e-4, abs=1e-6)


def test_clean_and_corrupt_scores_are_patch_sweeps(case):
    model, audio, clean, corrupt, text = case
    result = attribution_patch(model, clean, corrupt, audio, what="resid", layers=[0], continuation=text)
    real = patch_sweep(model, clean, corrupt, audio, what="resid", layers=[0], continuation=text)
    assert result.clean == pytest.approx(real.source, abs=1e-5)
    assert result.corrupt == pytest.approx(real.clean, abs=1e-5)
    assert result.columns == real.columns


def test_a_prompt_against_itself_has_no_effect(tiny_qwen, tiny_clip):
    result = attribution_patch(tiny_qwen, ASR, ASR, tiny_clip, continuation=" mister")
    assert np.abs(result.effects).max() == 0.0 and result.recovery is None


def test_a_custom_metric_is_differentiated(tiny_qwen, tiny_clip):
    """A linear metric of the logits: its estimate for a last-layer head is still the first-order term."""
    def top_logit(logits):
        return logits[0, 0]
    result = attribution_patch(tiny_qwen, ASR, SHORTER, tiny_clip, metric=top_logit, continuation=" mister")
    assert result.measure == "top_logit" and np.abs(result.effects).max() > 0


# --- agreement with real patching on nano ---------------------------------------------------------

@pytest.fixture(scope="module")
def nano():
    return wb.load("nano")


@pytest.fixture(scope="module")
def speech():
    return wb.load_audio(wb.demo.demo_path("speech_en"))


@pytest.mark.parametrize("what", ["head", "resid"])
def test_estimates_track_real_patching_on_nano(nano, speech, what):
    """Measured: Pearson r 0.95 over the 4 × 6 heads, 0.94 over the 4 × 3 layer × group cells
    (module docstring); the bound leaves room for numerical drift, not for a wrong sign or cell."""
    estimate = attribution_patch(nano, ASR, GERMAN_TEXT, speech, what=what)
    real = patch_sweep(nano, ASR, GERMAN_TEXT, speech, what=what)
    assert estimate.clean == pytest.approx(real.source, abs=1e-4)
    assert estimate.corrupt == pytest.approx(real.clean, abs=1e-4)
    measured = agreement(estimate, real)
    assert measured.n == real.scores.size
    assert measured.pearson >= 0.9, measured.table
    if what == "head":   # the head the estimate ranks first is among the three that matter most
        first = estimate.top(1)["column"].iloc[0], estimate.top(1)["layer"].iloc[0]
        best = real.best(3)
        assert any((best["column"] == first[0]) & (best["layer"] == first[1]))


def test_result_table_and_figures(nano, speech):
    estimate = attribution_patch(nano, ASR, GERMAN_TEXT, speech, what="resid", layers=[0, 3])
    table = estimate.to_pandas()
    assert isinstance(table, pd.DataFrame) and len(table) == estimate.effects.size
    np.testing.assert_allclose(table["score"], estimate.corrupt + table["effect"])
    np.testing.assert_allclose(table["recovery"], table["effect"] / (estimate.clean - estimate.corrupt))
    assert isinstance(estimate, AttributionResult) and isinstance(estimate.plot(), Figure)
    real = patch_sweep(nano, ASR, GERMAN_TEXT, speech, what="resid", layers=[0, 3])
    assert isinstance(agreement(estimate, real).plot(), Figure)


# --- bad input ---------------------------------------------------------------------------------------

def test_bad_requests_get_one_clear_error(tiny_qwen, tiny_clip):
    with pytest.raises(PatchingError, match="what='mlp': choose one of"):
        attribution_patch(tiny_qwen, ASR, SHORTER, tiny_clip, what="mlp")
    with pytest.raises(PatchingError, match="metric='wer': use 'logprob' or a function"):
        attribution_patch(tiny_qwen, ASR, SHORTER, tiny_clip, metric="wer")
    with pytest.raises(PatchingError, match="layers=\\[9\\]|layer=9"):
        attribution_patch(tiny_qwen, ASR, SHORTER, tiny_clip, layers=[9], continuation=" a")
    with pytest.raises(PatchingError, match="groups='tags': give a non-empty list"):
        attribution_patch(tiny_qwen, ASR, SHORTER, tiny_clip, what="resid", groups="tags", continuation=" a")
    with pytest.raises(PatchingError, match="does not depend on the model's activations"):
        attribution_patch(tiny_qwen, ASR, SHORTER, tiny_clip, metric=lambda logits: torch.tensor(1.0),
                          continuation=" a")
    estimate = attribution_patch(tiny_qwen, ASR, SHORTER, tiny_clip, layers=[0], continuation=" a")
    real = patch_sweep(tiny_qwen, ASR, SHORTER, tiny_clip, what="head", layers=[1], continuation=" a")
    with pytest.raises(PatchingError, match="the results cover different cells"):
        agreement(estimate, real)


def test_a_family_without_interventions_is_refused(tmp_path):
    from tiny_models import write_qwen2_audio
    model = wb.load(write_qwen2_audio(tmp_path / "qwen2_audio"))
    with pytest.raises(NotSupportedError, match="attribution_patch is not supported for the qwen2-audio family"):
        attribution_patch(model, "<|audio_bos|><|AUDIO|><|audio_eos|>", "<|audio_bos|><|AUDIO|><|audio_eos|>",
                          np.zeros(24_000, np.float32), continuation=" hi")
