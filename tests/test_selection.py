"""Model selection on the validation split: the best epoch's weights are written, patience and budget end
training, the choice survives a resume, and the validation mDice is the tables' mDice."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from samdpo.baselines import unet as unet_module
from samdpo.baselines.unet import WEIGHTS, load_unet, predict_unet, train_unet
from samdpo.evaluation.metrics import evaluate, mean_dice, summarize
from samdpo.train.selection import Selection, SelectionState, late_gain, stop_reason
from tests.unet_data import FAST
from tests.unet_data import data as data  # noqa: F401  (the module-scoped store fixture)
from tests.unet_data import one_thread as one_thread  # noqa: F401  (autouse: one torch thread per test)
from tests.unet_data import selection_data as selection_data  # noqa: F401


def test_late_gain_is_what_the_last_quarter_added() -> None:
    scores = [(1, 10.0), (2, 20.0), (3, 30.0), (4, 31.5)]
    assert late_gain(scores) == pytest.approx(1.5)  # epoch 4 of 4 lies past 75%; epochs 1-3 reached 30
    assert late_gain([(1, 50.0), (2, 40.0), (3, 45.0), (4, 44.0)]) == 0.0
    assert late_gain([]) is None


def test_best_weights_keep_the_first_of_equal_scores_and_stop_by_patience_or_budget() -> None:
    model = torch.nn.Linear(2, 1)
    best = SelectionState()
    assert best.offer(1, 5.0, model) and not best.offer(2, 5.0, model) and best.epoch == 1
    with torch.no_grad():
        model.weight.fill_(3.0)
    assert best.offer(3, 6.0, model) and torch.equal(best.weights["weight"], model.weight)
    with torch.no_grad():
        model.weight.fill_(0.0)
    assert torch.equal(best.weights["weight"], torch.full((1, 2), 3.0))  # a copy, not the live tensor
    best.cpu_s = 5.0
    assert stop_reason(Selection(lambda: 0.0, patience=2), best, 5) == "patience"  # 5 - 3 >= 2
    assert stop_reason(Selection(lambda: 0.0, patience=3), best, 5) is None
    assert stop_reason(Selection(lambda: 0.0, budget_s=5.0), best, 5) == "budget"  # CPU seconds, not wall
    assert stop_reason(Selection(lambda: 0.0, budget_s=6.0), best, 5) is None
    restored = SelectionState()
    restored.load_state_dict(best.state_dict())
    assert restored.epoch == 3 and restored.score == 6.0 and restored.cpu_s == 5.0


def test_mean_dice_is_the_tables_mdice() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, size=(5, 16, 16), dtype=np.uint8)
    labels[2] = 0  # an image with no class
    labels[labels == 3] = 0  # a class present nowhere
    probs = rng.integers(0, 256, size=(5, 3, 16, 16), dtype=np.uint8)
    samples = pd.DataFrame(
        {
            "sample_id": [f"s{i}" for i in range(5)],
            "case_id": [f"c{i}" for i in range(5)],
            "slice_index": 0,
            "spacing_row": 1.0,
            "spacing_col": 1.0,
        }
    )
    names = ["a", "b", "c"]
    table = summarize(evaluate(probs, labels, samples, names), None, names)
    assert mean_dice(probs, labels, 3) == pytest.approx(table["mdice"])


def test_the_unet_keeps_its_best_validation_epoch_and_stops_by_patience(
    selection_data: tuple,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (images, labels), validation = selection_data
    scores = iter([10.0, 30.0, 20.0, 25.0, 29.0, 99.0])  # best at epoch 2; patience 3 ends after epoch 5
    snapshots = {}
    real = unet_module.mean_dice

    def scripted(probs, labels_, classes, threshold=0.5):
        real(probs, labels_, classes, threshold)  # the real score runs too
        epoch = len(snapshots) + 1
        snapshots[epoch] = predict_unet(model_of[0], validation[0], torch.device("cpu"), progress=False)
        return next(scores)

    model_of = []
    build = unet_module.build_unet
    monkeypatch.setattr(unet_module, "build_unet", lambda *a, **k: model_of.append(build(*a, **k)) or model_of[-1])
    monkeypatch.setattr(unet_module, "mean_dice", scripted)
    settings = replace(FAST, epochs=20, patience=3, budget_s=None)
    history = train_unet(images, labels, 2, settings, tmp_path / "m", {}, validation, progress=False)
    assert [row["epoch"] for row in history] == [1, 2, 3, 4, 5]
    assert [row["val_dice"] for row in history] == [10.0, 30.0, 20.0, 25.0, 29.0]
    selection = json.loads((tmp_path / "m" / "settings.json").read_text())["selection"]
    assert selection["chosen_epoch"] == 2 and selection["stopped"] == "patience" and selection["epochs_run"] == 5
    loaded, _ = load_unet(tmp_path / "m")  # the written weights are epoch 2's
    np.testing.assert_array_equal(
        predict_unet(loaded, validation[0], torch.device("cpu"), progress=False), snapshots[2]
    )
    curve = pd.read_csv(tmp_path / "m" / "loss.csv")
    assert list(curve["val_dice"]) == [10.0, 30.0, 20.0, 25.0, 29.0]


def test_a_resumed_run_chooses_what_the_whole_run_chooses(
    selection_data: tuple,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (images, labels), validation = selection_data
    settings = replace(FAST, epochs=4, patience=None, budget_s=None)
    train_unet(images, labels, 2, settings, tmp_path / "whole", {}, validation, progress=False)
    real, calls = unet_module.segmentation_loss, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3 * 3 + 1:  # the first step of epoch 4 (10 images in batches of 4: 3 steps an epoch)
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(unet_module, "segmentation_loss", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train_unet(images, labels, 2, settings, tmp_path / "cut", {}, validation, progress=False)
    monkeypatch.setattr(unet_module, "segmentation_loss", real)
    train_unet(images, labels, 2, settings, tmp_path / "cut", {}, validation, progress=False)
    assert (tmp_path / "cut" / WEIGHTS).read_bytes() == (tmp_path / "whole" / WEIGHTS).read_bytes()
    chosen = [json.loads((tmp_path / n / "settings.json").read_text())["selection"] for n in ("cut", "whole")]
    assert chosen[0] == chosen[1]  # and no run-dependent field (CPU seconds) in the hashed record
