"""The alignment study: the grid it expands, the settings it refuses, and one pass of its loop with a
fake trainer (what each row reports, the Kendall's tau of a GT-free annotator, the fixed test set, the
choice made on validation alone)."""

from __future__ import annotations

import json
from dataclasses import fields

import numpy as np
import pandas as pd
import pytest

from samdpo.align.study import (
    StudyData,
    Trained,
    candidates_of_run,
    choice_path,
    choose_run,
    expand_grid,
    make_run,
    run_study,
    write_choice,
    write_study,
)
from samdpo.errors import ConfigError

BASE = {
    "mode": "rank",
    "objective": "dpo",
    "reference": "ground_truth",
    "classes": "all",
    "noise": 0.0,
    "unlabeled": 0.1,
    "thresholds": [0.3, 0.4, 0.5, 0.6],
    "epochs": 2,
    "batch_pairs": 8,
    "device": "cpu",
    "reduction": "sum",
}


def test_grid_is_the_factorial_then_each_variation_alone() -> None:
    runs = expand_grid(
        BASE,
        {"reduction": ["sum", "disagreement_mean"], "anchor_weight": [0.0, 1.0]},
        [{"mode": "score"}, {"reduction": "sum"}, {"noise": 0.3}],
    )
    names = [r.name for r in runs]
    assert names == [
        "default",
        "anchor_weight=1.0",
        "reduction=disagreement_mean",
        "reduction=disagreement_mean,anchor_weight=1.0",
        "mode=score",
        "noise=0.3",
    ]
    assert runs[1].stage2.anchor_weight == 1.0 and runs[4].mode == "score" and runs[5].noise == 0.3
    assert runs[0].candidates.thresholds == (0.3, 0.4, 0.5, 0.6) and runs[0].candidates.paper


@pytest.mark.parametrize(
    "override, message",
    [
        ({"classes": "present", "reference": "prompt"}, "ground_truth"),
        ({"unlabeled": 1.0}, "unlabeled"),
        ({"mode": "vote"}, "mode"),
        ({"warmup": 3}, "unknown settings"),
        ({"thresholds": [0.5, 0.4, 0.6, 0.7]}, "ascending"),
        ({"reduction": "max"}, "reduction"),
        ({"source": ["sampling"]}, "align.candidates.source"),
        ({"count": 1}, "count"),
    ],
)
def test_bad_study_settings_are_named(override: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        make_run(BASE, override)


def _data() -> StudyData:
    rng = np.random.default_rng(0)
    probs = rng.integers(0, 256, size=(6, 2, 8, 8), dtype=np.uint8)
    ids = [f"s{i}" for i in range(6)]
    truth = probs >= 128  # a virtual annotator that agrees with the 0.5 candidate
    prompt = np.zeros_like(truth)

    def references(kind: str, chosen: list[str]) -> np.ndarray:
        rows = [ids.index(s) for s in chosen]
        return {"ground_truth": truth, "prompt": prompt}[kind][rows]

    return StudyData(
        probs,
        {s: i for i, s in enumerate(ids)},
        {0.1: ids[:2], 0.4: ids[:4]},
        {"validation": ids[4:5], "test": ids[5:]},
        references,
        lambda chosen: references("ground_truth", chosen).any(axis=(2, 3)),
        lambda settings, chosen: np.stack([references("ground_truth", chosen)] * settings.draws, axis=2),
    )


def test_study_loop_reports_every_run_against_the_same_start(tmp_path) -> None:
    data = _data()
    seen = []

    def train(run, seed, ids, candidates, pairs):
        seen.append((run.name, seed, list(ids), len(pairs.image)))
        return Trained(
            [{"epoch": 1}], {"median_disagreement_px": 3.0, "at_ln2": 0.5, "mean_margin": 1.0, "best_rose": 0.5}
        )

    start = {
        split: pd.DataFrame({"sample_id": [s], "case_id": [c], "class_name": ["a"], "dice": [50.0]})
        for split, s, c in (("validation", "s4", "c4"), ("test", "s5", "c5"))
    }
    # validation favours the default run, test the prompt annotator's: the choice must follow validation
    gains = {"default": (3.0, 1.0), "unlabeled=0.4": (2.0, 2.0), "reference=prompt": (1.0, 9.0)}

    def score(trained):
        val, test = gains[seen[-1][0]]
        return {
            "validation": start["validation"].assign(dice=50.0 + val),
            "test": start["test"].assign(dice=50.0 + test),
        }

    runs = expand_grid(BASE, {}, [{"unlabeled": 0.4}, {"reference": "prompt"}])
    rows = run_study(runs, data, train, score, start, seeds=(0, 1))
    assert [(r["run"], r["seed"]) for r in rows] == [
        ("default", 0),
        ("default", 1),
        ("unlabeled=0.4", 0),
        ("unlabeled=0.4", 1),
        ("reference=prompt", 0),
        ("reference=prompt", 1),
    ]
    assert [s[2] for s in seen][:3] == [["s0", "s1"], ["s0", "s1"], ["s0", "s1", "s2", "s3"]]
    assert [r["val_difference"] for r in rows[::2]] == pytest.approx([3.0, 2.0, 1.0])
    assert [r["difference"] for r in rows[::2]] == pytest.approx([1.0, 2.0, 9.0])
    assert all(r["test_images"] == 1 and r["validation_images"] == 1 for r in rows)
    # the virtual annotator itself has no tau; the prompt annotator (all-empty reference) ranks by candidate size,
    # against the truth
    assert np.isnan(rows[0]["tau_vs_virtual"]) and rows[4]["tau_pairs"] >= 0
    write_study(rows, tmp_path / "study.csv", "synthetic test")
    table = pd.read_csv(tmp_path / "study.csv")
    assert table.shape[0] == 6 and table.loc[table["chosen"], "run"].unique().tolist() == ["default"]
    markdown = (tmp_path / "study.md").read_text()
    assert "synthetic test" in markdown and "The validation split chose** `default`" in markdown
    assert write_choice(rows, runs, tmp_path / "study.csv") == "default"
    choice = json.loads(choice_path(tmp_path / "study.csv").read_text())
    assert choice["chosen_on"] == "validation" and choice["settings"]["reference"] == "ground_truth"
    assert choice["val_difference"] == pytest.approx(3.0) and choice["difference"] == pytest.approx(1.0)


def test_the_choice_reads_validation_only() -> None:
    """Whatever the test columns hold, the same validation columns make the same choice."""
    rows = [
        {"run": run, "seed": seed, "val_difference": val, "difference": test}
        for run, val in (("a", 0.5), ("b", 1.5), ("c", 1.0))
        for seed in (0, 1)
        for test in [np.random.default_rng(seed).normal() * 10]
    ]
    scrambled = [{**row, "difference": -row["difference"] * 7} for row in rows]
    assert choose_run(rows) == choose_run(scrambled) == "b"
    tie = [{"run": run, "seed": 0, "val_difference": 1.0, "difference": 0.0} for run in ("x", "y")]
    assert choose_run(tie) == "x"  # ties keep the grid's order


def test_a_model_source_run_draws_its_candidates_once_per_setting() -> None:
    base = _data()
    calls = []

    def draws(settings, chosen):
        calls.append((settings.source, tuple(chosen)))
        return base.draws(settings, chosen)

    data = StudyData(*[getattr(base, f.name) for f in fields(StudyData)][:-1], draws)
    run = make_run(BASE, {"source": ["thresholds", "perturb"], "empty": True, "draws": 2})
    cache: dict = {}
    ids, candidates = candidates_of_run(run, data, cache)
    again = candidates_of_run(run, data, cache)[1]
    assert ids == ["s0", "s1"] and candidates.count == 4 and candidates.size == 8 and again is candidates
    assert calls == [(("thresholds", "perturb"), ("s0", "s1"))]  # drawn once, reused by every seed
    masks = candidates.masks(0)
    assert masks.shape == (2, 4, 8, 8) and not masks[:, -1].any()  # the empty candidate, last (smallest)
    assert candidates_of_run(make_run(BASE, {}), data, cache)[1].meta["count"] == 4 and len(calls) == 1
