"""The alignment study: stage 2 run for a grid of settings from one stage-1 model, each compared with
that model on the validation split, which chooses the setting, and on one fixed set of test images,
which report its effect.

Every run starts from the same stage-1 model (``prompt_10``) and its stored probabilities: it
makes the candidates of its unlabelled images (:mod:`samdpo.align.candidates`, any source),
annotates them, trains stage 2 in memory and predicts the validation and test images. Unlabelled
fractions above the pipeline's take the next cases of the split order, which the pipeline puts in
its test split (validation sits at the end of the order and never moves), so the study's test
images are the cases that no run uses: the test split under the largest fraction, the same for
every run. The chosen run is the one with the best mean validation difference over the seeds
(:func:`choose_run`); its test numbers are the reported result, and the test numbers of the
others are shown beside it but choose nothing.

Only the annotator (the virtual one) and the evaluation read labels of unlabelled and test images;
the GT-free annotators' rankings are compared with the virtual annotator's (Kendall's tau-b per
(image, class) pair, averaged over the pairs where both have a preference).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from samdpo import atomic
from samdpo.align.annotator import CLASSES, MODES, SIMULATED_REFERENCES, Annotation, annotate_all, kendall_tau
from samdpo.align.candidates import CandidateSet, CandidateSettings, build_candidates
from samdpo.align.pairs import preference_pairs
from samdpo.align.stage2_settings import OBJECTIVES, Stage2Settings
from samdpo.errors import ConfigError

#: The candidate settings a run can vary (``align.candidates``; its ``seed`` is ``candidate_seed`` here).
CANDIDATE_KEYS = tuple(f.name for f in fields(CandidateSettings) if f.name != "seed") + ("candidate_seed",)
#: Run keys besides the stage-2 settings.
ANNOTATOR_KEYS = ("mode", "objective", "reference", "classes", "noise", "unlabeled", *CANDIDATE_KEYS)
STAGE2_KEYS = tuple(f.name for f in fields(Stage2Settings) if f.name not in ("objective", "device"))


@dataclass(frozen=True)
class StudyRun:
    """One configuration of the study.

    Attributes:
        name: ``key=value`` of what differs from the base (``default`` for the base itself).
        mode, objective, reference, classes, noise: the annotator and the objective (see ``align``).
        unlabeled: fraction of cases whose images are aligned on.
        candidates: how the candidates are made.
        stage2: the stage-2 settings.
    """

    name: str
    mode: str
    objective: str
    reference: str
    classes: str
    noise: float
    unlabeled: float
    candidates: CandidateSettings
    stage2: Stage2Settings

    @property
    def settings(self) -> dict[str, Any]:
        """The run's flat settings (the study table's columns)."""
        stage2 = {key: getattr(self.stage2, key) for key in STAGE2_KEYS}
        candidates = {key: value for key, value in vars(self.candidates).items() if key != "seed"}
        return {
            "mode": self.mode,
            "objective": self.objective,
            "reference": self.reference,
            "classes": self.classes,
            "noise": self.noise,
            "unlabeled": self.unlabeled,
            **candidates,
            "candidate_seed": self.candidates.seed,
            **stage2,
        }


def make_run(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> StudyRun:
    """The run of ``base`` (flat settings: :data:`ANNOTATOR_KEYS` and stage-2 keys) with ``overrides``."""
    unknown = sorted(set(base) - set(ANNOTATOR_KEYS) - set(STAGE2_KEYS) - {"device"}) + sorted(
        set(overrides) - set(ANNOTATOR_KEYS) - set(STAGE2_KEYS)
    )
    if unknown:
        raise ConfigError(f"study: unknown settings {unknown}; use {', '.join(ANNOTATOR_KEYS + STAGE2_KEYS)}")
    merged = {**base, **overrides}
    if merged.get("reference") == "human":
        raise ConfigError(
            "study: the alignment study annotates the candidates of other splits again, which people cannot do in "
            "its run; vary reference to ground_truth, prompt or uncertainty (study.variations) or run it with those"
        )
    allowed_values = (("mode", MODES), ("objective", OBJECTIVES), ("reference", SIMULATED_REFERENCES))
    for key, allowed in (*allowed_values, ("classes", CLASSES)):
        if merged[key] not in allowed:
            raise ConfigError(f"study: {key} must be one of {allowed}, got {merged[key]!r}")
    if merged["classes"] == "present" and merged["reference"] != "ground_truth":
        raise ConfigError(f"study: classes present needs the ground_truth reference, got {merged['reference']!r}")
    if not 0.0 < float(merged["unlabeled"]) < 1.0 or not 0.0 <= float(merged["noise"]) <= 1.0:
        raise ConfigError(
            f"study: unlabeled must be in (0, 1) and noise in [0, 1], got {merged['unlabeled']}, {merged['noise']}"
        )
    stage2 = Stage2Settings(
        **{key: merged[key] for key in (*STAGE2_KEYS, "device") if key in merged}, objective=merged["objective"]
    )
    name = ",".join(f"{key}={value}" for key, value in overrides.items()) or "default"
    given = {key: merged[key] for key in CANDIDATE_KEYS if key in merged and key != "candidate_seed"}
    candidates = CandidateSettings(**given, seed=int(merged.get("candidate_seed", 0)))
    return StudyRun(
        name,
        merged["mode"],
        merged["objective"],
        merged["reference"],
        merged["classes"],
        float(merged["noise"]),
        float(merged["unlabeled"]),
        candidates,
        stage2,
    )


def expand_grid(
    base: Mapping[str, Any], factorial: Mapping[str, Sequence[Any]], variations: Sequence[Mapping[str, Any]]
) -> list[StudyRun]:
    """Every combination of the ``factorial`` values, then each of the ``variations`` alone on the
    base; runs equal to an earlier one (same settings) are dropped."""
    keys = list(factorial)
    overrides = (
        [dict(zip(keys, values)) for values in itertools.product(*(factorial[k] for k in keys))] if keys else [{}]
    )
    overrides += [dict(v) for v in variations]
    default = make_run(base, {}).settings
    runs, seen = [], set()
    for override in overrides:
        run = make_run(base, {k: v for k, v in override.items() if make_run(base, {k: v}).settings[k] != default[k]})
        key = tuple(sorted(run.settings.items()))
        if key not in seen:
            seen.add(key)
            runs.append(run)
    return runs


def mean_tau(first: Sequence[Sequence[Annotation]], second: Sequence[Sequence[Annotation]]) -> tuple[float, int]:
    """Mean Kendall's tau-b over the (image, class) pairs where both annotators have a preference, and their number."""
    taus = [kendall_tau(a, b) for row_a, row_b in zip(first, second) for a, b in zip(row_a, row_b)]
    defined = [t for t in taus if not np.isnan(t)]
    return (float(np.mean(defined)) if defined else float("nan")), len(defined)


@dataclass(frozen=True)
class StudyData:
    """What every run reads.

    Attributes:
        probs: (N, T, S, S) uint8 stage-1 probabilities of the model's predicted images.
        prob_index: sample id -> row of ``probs``.
        unlabeled: fraction -> the sample ids of that fraction's unlabelled images.
        held_out: ``validation`` (chooses) and ``test`` (reports) -> their sample ids.
        references: (reference, sample ids) -> (N, T, S, S) bool reference masks (the virtual
            annotator's ground truth, the CRF masks, or the consensus), computed on demand.
        graded: sample ids -> (N, T) bool classes present (for ``classes: present``).
        draws: (candidate settings, sample ids) -> (N, T, D, S, S) bool masks of the model sources
            (:func:`samdpo.align.candidate_draws.draw_masks`); no label enters them.
    """

    probs: np.ndarray
    prob_index: Mapping[str, int]
    unlabeled: Mapping[float, list[str]]
    held_out: Mapping[str, list[str]]
    references: Callable[[str, list[str]], np.ndarray]
    graded: Callable[[list[str]], np.ndarray]
    draws: Callable[[CandidateSettings, list[str]], np.ndarray]


def candidates_of_run(run: StudyRun, data: StudyData, cache: dict[Any, CandidateSet]) -> tuple[list[str], CandidateSet]:
    """The run's unlabelled ids and their candidates (built once per unlabelled fraction and candidate settings)."""
    ids = data.unlabeled[run.unlabeled]
    key = (run.unlabeled, run.candidates)
    if key not in cache:
        probs = np.asarray(data.probs[[data.prob_index[s] for s in ids]])
        draws = data.draws(run.candidates, ids) if run.candidates.needs_model else None
        packed = build_candidates(run.candidates, probs, draws)[0]
        cache[key] = CandidateSet(packed, {"count": run.candidates.count, "size": int(probs.shape[-1])})
    return ids, cache[key]


def annotate_run(run: StudyRun, data: StudyData, seed: int, candidates: CandidateSet) -> list[list[Annotation]]:
    """The annotations of the run's candidates of its unlabelled images."""
    ids = data.unlabeled[run.unlabeled]
    masks = data.references(run.reference, ids)
    graded = data.graded(ids) if run.classes == "present" else None
    return annotate_all(candidates.packed, candidates.size, lambda n: masks[n], run.mode, graded, run.noise, seed)


@dataclass(frozen=True)
class Trained:
    """What a run's stage 2 left: the per-epoch history and the diagnostics it recorded."""

    history: list[dict[str, Any]]
    diagnostics: Mapping[str, Any]


def _ranking(data: StudyData, ids: list[str], candidates: CandidateSet, reference: str) -> list[list[Annotation]]:
    """Every pair's candidates ordered by IoU with ``reference``'s masks (rank mode, no noise)."""
    masks = data.references(reference, ids)
    return annotate_all(candidates.packed, candidates.size, lambda n: masks[n], "rank")


def _seeded(run: StudyRun, seed: int) -> StudyRun:
    """``run`` with its stage-2 seed set to ``seed``."""
    stage2 = Stage2Settings(**{**{f.name: getattr(run.stage2, f.name) for f in fields(Stage2Settings)}, "seed": seed})
    return StudyRun(
        run.name, run.mode, run.objective, run.reference, run.classes, run.noise, run.unlabeled, run.candidates, stage2
    )


def _tau_vs_virtual(
    run: StudyRun,
    data: StudyData,
    ids: list[str],
    candidates: CandidateSet,
    virtual: dict[tuple[float, CandidateSettings], list[list[Annotation]]],
) -> tuple[float, int]:
    """Mean Kendall's tau of ``run``'s reference against the virtual annotator (both in rank mode,
    every class) and its pair count; NaN and 0 for the virtual annotator itself. ``virtual`` caches
    the virtual rankings per (unlabelled fraction, candidate settings)."""
    if run.reference == "ground_truth":
        return float("nan"), 0
    key = (run.unlabeled, run.candidates)
    if key not in virtual:
        virtual[key] = _ranking(data, ids, candidates, "ground_truth")
    return mean_tau(_ranking(data, ids, candidates, run.reference), virtual[key])


def _effect_columns(effect: Any, prefix: str, split: str) -> dict[str, Any]:
    """A split's columns of a study row (``effect`` from ``paired_difference``), named with ``prefix``."""
    return {
        f"{prefix}reference_mdice": effect.reference,
        f"{prefix}mdice": effect.model,
        f"{prefix}difference": effect.difference,
        f"{prefix}low": effect.low,
        f"{prefix}high": effect.high,
        f"{split}_cases": effect.cases,
        f"{split}_images": effect.images,
    }


def _study_row(
    run: StudyRun,
    ids: list[str],
    class_count: int,
    pairs: Any,
    trained: Trained,
    effects: Mapping[str, Any],
    tau: tuple[float, int],
) -> dict[str, Any]:
    """One row of the study table (``run`` seeded; ``effects``: split -> ``paired_difference``); ``seconds`` is left
    to the caller. The validation columns are ``val_*``, the test ones unprefixed."""
    return {
        "run": run.name,
        "seed": run.stage2.seed,
        **run.settings,
        "unlabeled_images": len(ids),
        "pairs": len(ids) * class_count,
        "pairs_with_preference": len(pairs.image),
        "why_no_preference": "; ".join(f"{k}: {v}" for k, v in sorted(pairs.reasons.items())),
        "median_disagreement_px": trained.diagnostics.get("median_disagreement_px"),
        "median_disagreement_share": trained.diagnostics.get("median_disagreement_share"),
        "at_ln2": trained.diagnostics.get("at_ln2"),
        "mean_margin": trained.diagnostics.get("mean_margin"),
        "best_rose": trained.diagnostics.get("best_rose"),
        "tau_vs_virtual": tau[0],
        "tau_pairs": tau[1],
        **_effect_columns(effects["validation"], "val_", "validation"),
        **_effect_columns(effects["test"], "", "test"),
    }


def run_study(
    runs: Sequence[StudyRun],
    data: StudyData,
    train: Callable[[StudyRun, int, list[str], CandidateSet, Any], Trained],
    score: Callable[[Any], Mapping[str, pd.DataFrame]],
    reference: Mapping[str, pd.DataFrame],
    seeds: Sequence[int] = (0,),
    on_row: Callable[[list[dict[str, Any]]], None] | None = None,
) -> list[dict[str, Any]]:
    """Run every (run, seed): annotate, train, score on the study's test images, compare with the start.

    Args:
        runs: the grid; data: what every run reads.
        train: (run, seed, unlabelled ids, candidates, pairs) -> :class:`Trained`; it keeps the aligned model for
            ``score``.
        score: the last trained model -> its per-image evaluation on each split of ``data.held_out``.
        reference: the stage-1 model's per-image evaluations of the same images.
        seeds: stage-2 seeds (pair order; also the rating noise's draws).
        on_row: called with the rows so far after each run (to write the table as it grows).

    Returns:
        One row per (run, seed): the settings, the annotator's and the trainer's diagnostics, the
        mean Dice and its paired difference from the stage-1 model with a 95% interval on validation
        (``val_*``) and test, seconds.
    """
    from samdpo.evaluation.paired import paired_difference

    rows: list[dict[str, Any]] = []
    virtual: dict[tuple[float, CandidateSettings], list[list[Annotation]]] = {}
    built: dict[Any, CandidateSet] = {}
    for run in runs:
        for seed in seeds:
            began = time.perf_counter()
            seeded = _seeded(run, seed)
            ids, candidates = candidates_of_run(seeded, data, built)
            annotations = annotate_run(seeded, data, seed, candidates)
            tau = _tau_vs_virtual(run, data, ids, candidates, virtual)
            lookup = {(sample, t): a for sample, row in zip(ids, annotations) for t, a in enumerate(row)}
            classes = candidates.packed.shape[1]
            stage2 = seeded.stage2
            pairs = preference_pairs(ids, classes, lookup, stage2.beta1, stage2.beta2, stage2.min_grade_gap)
            trained = train(seeded, seed, ids, candidates, pairs)
            scored = score(trained)
            effects = {split: paired_difference(reference[split], scored[split]) for split in ("validation", "test")}
            row = _study_row(seeded, ids, classes, pairs, trained, effects, tau)
            rows.append({**row, "seconds": time.perf_counter() - began})
            if on_row is not None:
                on_row(rows)
    return rows


def choose_run(rows: Sequence[Mapping[str, Any]]) -> str:
    """The run with the largest mean validation difference over its seeds (ties: the first in grid order).

    Reads the ``val_difference`` column only: test numbers never take part in the choice."""
    frame = pd.DataFrame(list(rows))
    if frame.empty:
        raise ConfigError("study: no run to choose from")
    means = frame.groupby("run", sort=False)["val_difference"].mean()
    return str(means.idxmax())


def _run_means(rows: Sequence[Mapping[str, Any]], run: str) -> dict[str, float]:
    """Mean over the seeds of one run's validation and test differences and mDice."""
    frame = pd.DataFrame([r for r in rows if r["run"] == run])
    columns = ("val_difference", "val_mdice", "difference", "mdice", "reference_mdice", "val_reference_mdice")
    return {column: float(frame[column].mean()) for column in columns}


def write_choice(rows: Sequence[Mapping[str, Any]], runs: Sequence[StudyRun], out: Path) -> str:
    """Write ``{out stem}_choice.json``: the run :func:`choose_run` picks on validation, its settings (to copy into
    ``align`` / ``align.stage2`` of the config) and its mean validation and test effects; returns its name."""
    import json

    name = choose_run(rows)
    run = next(r for r in runs if r.name == name)
    settings = {key: list(value) if isinstance(value, tuple) else value for key, value in run.settings.items()}
    choice = {
        "chosen_run": name,
        "chosen_on": "validation",
        "criterion": "largest mean paired mDice difference from the stage-1 model on the validation split, over seeds",
        "seeds": int(sum(r["run"] == name for r in rows)),
        "settings": settings,
        **_run_means(rows, name),
    }
    atomic.write_text(choice_path(out), json.dumps(choice, indent=2, sort_keys=True) + "\n")
    return name


def choice_path(out: Path) -> Path:
    """The study's choice file beside its table: ``X_alignment_study.csv`` -> ``X_alignment_study_choice.json``."""
    return Path(out).with_name(Path(out).stem + "_choice.json")


#: The study's Markdown columns: diagnostics, then validation (chooses), then test (reports).
SHOWN = (
    "run",
    "pairs",
    "pairs_with_preference",
    "median_disagreement_px",
    "median_disagreement_share",
    "at_ln2",
    "mean_margin",
    "best_rose",
    "tau_vs_virtual",
    "val_mdice",
    "val_difference",
    "val_low",
    "val_high",
    "mdice",
    "difference",
    "low",
    "high",
    "seconds",
)


def _cell(key: str, value: Any) -> str:
    if isinstance(value, float) and key in ("at_ln2", "best_rose", "tau_vs_virtual", "median_disagreement_share"):
        return f"{value:.3f}"
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def write_study(rows: Sequence[Mapping[str, Any]], out: Path, provenance: str) -> None:
    """The study table as CSV and Markdown (with its provenance and a ``chosen`` column), each atomically."""
    chosen = choose_run(rows) if rows else None
    frame = pd.DataFrame([{**row, "chosen": row["run"] == chosen} for row in rows])
    atomic.write_text(out, frame.to_csv(index=False))
    lines = [
        f"# Alignment study ({provenance})",
        "",
        "Each run against the stage-1 model it started from, on the same images: paired mean-Dice difference "
        "(percentage points) with a case-bootstrap 95% interval, on the validation split (`val_*`) and on the test "
        f"split. **The validation split chose** `{chosen}` (largest mean `val_difference` over seeds, marked `*`); "
        "the test columns report and choose nothing.",
        "",
        "| " + " | ".join(SHOWN) + " |",
        "|" + "---|" * len(SHOWN),
    ]
    for row in rows:
        cells = [_cell(key, row.get(key)) for key in SHOWN]
        cells[0] += " *" if row["run"] == chosen else ""
        lines.append("| " + " | ".join(cells) + " |")
    atomic.write_text(out.with_suffix(".md"), "\n".join(lines) + "\n")
