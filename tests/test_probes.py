"""Linear probes: a label planted linearly in one layer of fake activations is found there and
nowhere else; grouped splits keep every group on one side; the CI and chance are the stated
computations; on nano, MNA pitch class is read from the encoder blocks well above chance."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from workbench.analysis.probes import ProbeResult, probe, probe_features
from workbench.analysis.stats import mean_ci
from workbench.errors import TraceRequestError


def planted(n_items: int = 120, layers: int = 4, width: int = 16, carrier: int = 2, seed: int = 0):
    """Noise everywhere; at layer `carrier`, three classes separated along a random direction each."""
    rng = np.random.default_rng(seed)
    labels = np.array(["a", "b", "c"])[rng.integers(0, 3, n_items)]
    features = rng.standard_normal((layers, n_items, width))
    directions = rng.standard_normal((3, width))
    features[carrier] += 2.0 * directions[np.searchsorted(["a", "b", "c"], labels)]
    return features, labels


def test_a_planted_label_is_found_in_its_layer_only():
    features, labels = planted()
    result = probe_features(features, labels)
    assert isinstance(result, ProbeResult) and result.layers == ["0", "1", "2", "3"]
    assert result.best_layer() == "2" and result.accuracy[2] >= 0.95
    others = np.delete(result.accuracy, 2)
    assert others.max() <= 0.6                      # noise layers stay near chance (1/3)
    assert result.ci_low[2] > result.chance > 0.2
    assert result.n_train + result.n_test == 120 and result.n_test == 30
    # the CI is mean_ci over the held-out items' correctness, with the same seed
    correct = (result.predictions[2] == result.truth).astype(float)
    ci = mean_ci(correct, seed=0)
    assert (result.accuracy[2], result.ci_low[2], result.ci_high[2]) == (ci.mean, ci.low, ci.high)
    # chance: always answering the training split's most frequent label
    train = np.setdiff1d(np.arange(120), result.test_items)
    values, counts = np.unique(labels[train], return_counts=True)
    assert result.chance == pytest.approx(np.mean(labels[result.test_items] == values[counts.argmax()]))


def test_split_is_seeded_and_stratified():
    features, labels = planted()
    a, b, c = (probe_features(features, labels, seed=s) for s in (0, 0, 1))
    np.testing.assert_array_equal(a.test_items, b.test_items)
    np.testing.assert_array_equal(a.accuracy, b.accuracy)
    assert not np.array_equal(a.test_items, c.test_items)
    shares = {k: np.mean(labels[a.test_items] == k) for k in "abc"}
    overall = {k: np.mean(labels == k) for k in "abc"}
    assert all(abs(shares[k] - overall[k]) < 0.05 for k in "abc")


def test_grouped_split_never_puts_a_group_on_both_sides():
    features, labels = planted()
    groups = [f"voice{i // 8}" for i in range(120)]          # 15 voices of 8 clips
    result = probe_features(features, labels, groups=groups, test_size=0.2)
    test = set(result.test_items.tolist())
    train_groups = {groups[i] for i in range(120) if i not in test}
    test_groups = {groups[i] for i in test}
    assert test_groups and not train_groups & test_groups and result.grouped
    assert result.best_layer() == "2"


def test_table_and_plot():
    result = probe_features(*planted())
    table = result.to_pandas()
    assert list(table.columns) == ["layer", "accuracy", "ci_low", "ci_high", "chance", "uniform", "n_train", "n_test"]
    assert table["uniform"].iloc[0] == pytest.approx(1 / 3)
    assert (table["ci_low"] <= table["accuracy"]).all() and (table["accuracy"] <= table["ci_high"]).all()
    fig = result.plot()
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    np.testing.assert_allclose(ax.lines[0].get_ydata(), result.accuracy)
    assert ax.lines[1].get_ydata()[0] == pytest.approx(result.chance)     # the chance line
    assert len(ax.collections) == 1                                       # the CI band


@pytest.mark.parametrize("args, message", [
    ((np.zeros((2, 10, 3)), ["a"] * 10), "every item has the label"),
    ((np.zeros((2, 10, 3)), ["a", "b"] * 4), "8 labels for 10 items"),
    ((np.full((2, 10, 3), np.nan), ["a", "b"] * 5), "finite values"),
    ((np.zeros((10, 3)), ["a", "b"] * 5), "shape \\(layers, items, width\\)"),
])
def test_bad_features_name_the_problem(args, message):
    with pytest.raises(ValueError, match=message):
        probe_features(*args)


def test_bad_split_options():
    features, labels = planted(n_items=20)
    with pytest.raises(ValueError, match="test_size=1.5"):
        probe_features(features, labels, test_size=1.5)
    with pytest.raises(ValueError, match="same group"):
        probe_features(features, labels, groups=["x"] * 20)


# --- on nano ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def nano():
    module = pytest.importorskip("workbench.models.qwen_audio.nano")
    if not (module.NANO_DIR / "model.safetensors").is_file():
        pytest.skip("the packaged nano checkpoint is not there")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield module.load_nano()
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def notes():
    """48 notes of nano's held-out MNA split, rendered in one fluidsynth run."""
    if not __import__("workbench.synth.notes", fromlist=["SOUNDFONT"]).SOUNDFONT.is_file():
        pytest.skip("fluidsynth's General MIDI soundfont is not installed")
    from workbench.synth import SPLITS, TASKS
    from workbench.synth.tasks import build_items

    rngs = [np.random.default_rng([0, TASKS.index("mna"), SPLITS.index("test"), i]) for i in range(48)]
    return build_items("mna", "test", rngs)


def test_nano_pitch_class_is_linear_in_the_encoder(nano, notes):
    result = probe(nano, notes, "encoder.blocks.{}.resid_post", labels=lambda item: item.fields["pitch"] % 12)
    assert result.layers == ["0", "1"] and result.n_test == 12
    # measured (seeded split, 12 held-out notes of 12 pitch classes): block 0 0.50 [0.25, 0.75], block 1 0.42,
    # against 0.25 for the most frequent training class and 1/12 uniform
    assert result.accuracy.max() >= 0.4 and result.accuracy.max() > result.chance
    assert result.chance == pytest.approx(0.25) and result.to_pandas()["uniform"].iloc[0] == pytest.approx(1 / 12)


def test_nano_probe_refuses_a_name_it_lacks(nano, notes):
    with pytest.raises(TraceRequestError, match="give a name template"):
        probe(nano, notes[:4], "encoder.blocks.0.resid_post", labels="pitch")
    with pytest.raises(TraceRequestError, match="names nothing this model offers"):
        probe(nano, notes[:4], "encoder.layers.{}.resid_post", labels="pitch")
    with pytest.raises(ValueError, match="names a field that item 0 lacks"):
        probe(nano, notes[:4], "encoder.blocks.{}.resid_post", labels="speaker")


def test_whisper_decoder_has_no_audio_positions_but_its_encoder_probes(tiny_whisper, noise):
    from tiny_models import WHISPER_PREFIX

    clips = [noise, noise / 2, noise[::-1].copy(), noise / 3]
    with pytest.raises(TraceRequestError, match="no audio positions"):
        probe(tiny_whisper, clips, "decoder.layers.{}.resid_post", labels=[0, 1, 0, 1], prompt=WHISPER_PREFIX)
    result = probe(tiny_whisper, clips, "encoder.layers.{}.resid_post", labels=[0, 1, 0, 1], prompt=WHISPER_PREFIX,
                   test_size=0.5)
    assert result.layers == ["0", "1"] and result.n_test == 2
