"""plot_training_curves: a panel per stage, the raw and running-mean losses, held-out points."""
from __future__ import annotations

import numpy as np
import pytest

from workbench.figures.training import plot_training_curves


def _log() -> list[dict]:
    rows = [{"stage": "lm", "step": s, "loss": 5.0 - 0.01 * s, "seconds": 6.0 * s} for s in range(1, 101)]
    rows += [{"stage": "stage1", "step": s, "loss": 2.0, "seconds": 60.0 * (s - 100)} for s in range(101, 131)]
    rows[49]["validation_loss"] = 4.9
    return rows


def test_one_panel_per_stage_with_its_running_mean_and_held_out_points():
    fig = plot_training_curves(_log(), smooth=10)
    lm, stage1 = fig.axes
    assert lm.get_title() == "lm: 100 steps, 10 min" and stage1.get_title() == "stage1: 30 steps, 30 min"
    raw, running, held = lm.get_lines()
    assert np.allclose(raw.get_ydata(), [5.0 - 0.01 * s for s in range(1, 101)])
    assert np.isclose(running.get_ydata()[0], np.mean([5.0 - 0.01 * s for s in range(1, 11)]))
    assert list(held.get_xdata()) == [50] and list(held.get_ydata()) == [4.9]
    assert len(stage1.get_lines()) == 2        # no held-out points in that stage


def test_a_resumed_stage_keeps_the_later_record_of_a_repeated_step():
    log = _log()
    log.insert(60, {"stage": "lm", "step": 40, "loss": 9.0, "seconds": 240.0})   # resumed from step 39
    raw = plot_training_curves(log, smooth=10).axes[0].get_lines()[0]
    assert len(raw.get_ydata()) == 100 and raw.get_ydata()[39] == 9.0 and list(raw.get_xdata()) == list(range(1, 101))


def test_an_empty_log_is_one_clear_error():
    with pytest.raises(ValueError, match="no records"):
        plot_training_curves([])
