"""The alignment study from folders on disk: wires the stored stage-1 model, its probabilities, image
embeddings, prompts and labels into :func:`samdpo.align.study.run_study` (the grid itself lives there)."""

from __future__ import annotations

import json
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from samdpo.errors import ConfigError, DataError


def fraction_ids(
    store: Any, splits: str, split_settings: Mapping[str, Any], fractions: list[float]
) -> tuple[dict[float, list[str]], dict[str, list[str]]]:
    """Unlabelled sample ids per fraction, and the study's held-out ids: ``validation`` (the pipeline's validation
    split, which chooses) and ``test`` (the test split under the largest fraction, which reports)."""
    from samdpo.data.splits import make_splits, read_splits

    cases = list(store.samples["case_id"])
    ids = list(store.samples["sample_id"])
    written = read_splits(Path(splits))
    fixed = {name: {c for c, split in written.items() if split == name} for name in ("labeled", "validation")}
    out, held_out = {}, {}
    for fraction in sorted(set(fractions)):
        assignment = make_splits(
            cases, split_settings["labeled"], fraction, split_settings["seed"], split_settings["validation"]
        )
        for name, chosen in fixed.items():
            if {c for c, split in assignment.items() if split == name} != chosen:
                raise ConfigError(
                    f"{splits}: its {name} split is not the one splits {split_settings} make; rerun the split rule"
                )
        out[fraction] = [s for s, c in zip(ids, cases) if assignment[c] == "unlabeled"]
        held_out = {name: [s for s, c in zip(ids, cases) if assignment[c] == name] for name in ("validation", "test")}
    if not held_out["test"]:
        raise ConfigError(f"study: unlabelled fraction {max(fractions)} leaves no test case")
    return out, held_out


def study_runs(study: Mapping[str, Any]) -> list[Any]:
    """The grid of a ``--study`` object: base (an object), factorial (an object) and variations (a list of objects)."""
    from samdpo.align.study import expand_grid

    variations = study.get("variations", [])
    if (
        not isinstance(study.get("base"), dict)
        or not isinstance(variations, list)
        or not all(isinstance(v, dict) for v in variations)
    ):
        raise ConfigError(
            "--study must hold base (an object), and optionally factorial (an object) and variations "
            "(a list of objects)"
        )
    return expand_grid(study["base"], study.get("factorial", {}), variations)


@dataclass
class _Stage1:
    """What the study reads of the stage-1 model and the store (loaded once).

    Attributes:
        store: the sample store; names: its class names; row_of: sample id -> store row.
        spec: the model folder's settings.json; texts: text embeddings; model_dir: its folder.
        reference: the stage-1 model (DPO's frozen reference); embeddings: the encoder's image embeddings.
        prompts: sample id -> prompts (the study's images); prompts_dir: the prompt store.
    """

    store: Any
    names: list[str]
    row_of: dict[str, int]
    spec: dict[str, Any]
    texts: Mapping[str, np.ndarray]
    model_dir: Path
    reference: Any
    embeddings: Any
    prompts: dict[str, Any]
    prompts_dir: Path

    def model(self) -> Any:
        """A fresh copy of the stage-1 model (the start of every policy)."""
        from samdpo.sam.checkpoints import load_checkpoint
        from samdpo.sam.specs import build_model
        from samdpo.train.model_folder import WEIGHTS

        model = build_model(self.spec["sam"], self.spec["text_dim"], self.spec["switches"], 0, load_weights=False)
        load_checkpoint(model, self.model_dir / WEIGHTS)
        return model


def _load_stage1(
    store: Any, model_dir: Path, texts_path: Path, embeddings_dir: Path, prompts_dir: Path, needed: list[str]
) -> _Stage1:
    """The stage-1 model, its texts and image embeddings, and the prompts of the ``needed`` images."""
    from samdpo.sam.image_embeddings import ImageEmbeddings
    from samdpo.train.model_folder import read_model_spec
    from samdpo.train.prompt_data import load_image_prompts
    from samdpo.train.text_embeddings import read_text_embeddings

    names = list(store.class_names)
    texts, _ = read_text_embeddings(texts_path)
    row_of = {s: i for i, s in enumerate(store.samples["sample_id"])}
    stage1 = _Stage1(store, names, row_of, read_model_spec(model_dir), texts, model_dir, None, None, {}, prompts_dir)
    stage1.reference = stage1.model()
    stage1.embeddings = ImageEmbeddings(embeddings_dir, stage1.reference)
    stage1.prompts = {s: load_image_prompts(prompts_dir, s, names) for s in needed}
    return stage1


def _references(stage1: _Stage1, uncertainty: Any, device: Any) -> Callable[[str, list[str]], np.ndarray]:
    """(reference, sample ids) -> (N, C, S, S) masks: ground truth, CRF masks or the consensus (cached)."""
    from samdpo.align.uncertainty import consensus_masks
    from samdpo.prompts.store import array, read_prompts

    labels = stage1.store.labels()  # the virtual annotator (unlabelled images) and the evaluation (test images) only
    classes = np.arange(1, len(stage1.names) + 1)[:, None, None]
    size = stage1.store.images().shape[-1]
    cache: dict[tuple[str, tuple[str, ...]], np.ndarray] = {}

    def references(kind: str, ids: list[str]) -> np.ndarray:
        key = (kind, tuple(ids))
        if key not in cache:
            if kind == "ground_truth":
                cache[key] = np.stack([np.asarray(labels[stage1.row_of[s]])[None] == classes for s in ids])
            elif kind == "prompt":
                files = [read_prompts(stage1.prompts_dir / f"{s}.parquet")[0] for s in ids]
                cache[key] = np.stack([np.stack([array(r, "mask") for r in rows]) for rows in files])
            else:
                cache[key] = consensus_masks(
                    stage1.reference,
                    stage1.embeddings.select(ids),
                    [stage1.prompts[s] for s in ids],
                    stage1.texts,
                    len(stage1.names),
                    size,
                    stage1.spec["point_count"],
                    uncertainty,
                    device,
                    progress=False,
                )
        return cache[key]

    return references


def _draws(stage1: _Stage1, device: Any) -> Callable[[Any, list[str]], np.ndarray]:
    """(candidate settings, sample ids) -> the stage-1 model's (N, C, D, S, S) draws of the model sources."""
    from samdpo.align.candidate_draws import draw_masks
    from samdpo.sam.engine import attach_engine

    frozen = stage1.model()
    attach_engine(frozen, stage1.spec["sam"])  # only inference here: the engine where sam.engine asks for it

    def draws(settings: Any, ids: list[str]) -> np.ndarray:
        size = stage1.store.images().shape[-1]
        prompts = [stage1.prompts[s] for s in ids]
        embeddings = stage1.embeddings.select(ids)
        point_count = stage1.spec["point_count"]
        names = stage1.names
        return draw_masks(
            frozen, embeddings, prompts, stage1.texts, len(names), size, point_count, settings, device, False
        )

    return draws


def _trainer(stage1: _Stage1, splits: str, state: dict[str, Any]) -> Callable[..., Any]:
    """(run, seed, ids, candidates, pairs) -> Trained: stage 2 from a fresh stage-1 model; keeps the policy in
    ``state``."""
    from samdpo.align.stage2 import LabelledSet, train_stage2
    from samdpo.align.study import Trained
    from samdpo.data.splits import split_indices
    from samdpo.train.model_folder import SETTINGS
    from samdpo.train.prompt_data import load_image_prompts

    store, spec = stage1.store, stage1.spec
    rows = split_indices(store, splits, ["labeled"])
    ids = [store.samples["sample_id"][i] for i in rows]
    labelled = LabelledSet(
        store.images()[rows],
        store.labels()[rows],
        [load_image_prompts(stage1.prompts_dir, s, stage1.names) for s in ids],
        stage1.embeddings.select(ids),
        spec["stage1"]["gt_box_fraction"],
        spec["stage1"]["gt_box_jitter"],
    )

    def train(run: Any, seed: int, ids: list[str], candidates: Any, pairs: Any) -> Trained:
        policy = stage1.model()
        with tempfile.TemporaryDirectory(prefix="samdpo-study-") as scratch:
            history = train_stage2(
                policy,
                stage1.reference,
                store.images()[[stage1.row_of[s] for s in ids]],
                candidates,
                pairs,
                [stage1.prompts[s] for s in ids],
                stage1.texts,
                run.stage2,
                Path(scratch),
                {},
                spec["point_count"],
                progress=False,
                embeddings=stage1.embeddings.select(ids),
                labelled=labelled,
            )
            diagnostics = json.loads((Path(scratch) / SETTINGS).read_text())
        state["model"] = policy
        return Trained(history, diagnostics)

    return train


def _evaluator(
    stage1: _Stage1, held_out: Mapping[str, list[str]], threshold: float, tolerance_mm: float, device: Any
) -> Callable[[Any], dict[str, Any]]:
    """model -> its per-image evaluation on each held-out split (name -> sample ids), predicting each image's
    present classes only (those evaluation scores)."""
    from samdpo.evaluation.metrics import evaluate
    from samdpo.train.predict import predict_probabilities, present_classes

    store, names = stage1.store, stage1.names
    size = store.images().shape[-1]
    rows = {split: [stage1.row_of[s] for s in ids] for split, ids in held_out.items()}
    # evaluation reads the labels of the held-out images: validation to choose, test to report
    labels = {split: np.asarray(store.labels()[r]) for split, r in rows.items()}
    present = {split: present_classes(labels[split], len(names)) for split in rows}

    def score(model: Any) -> dict[str, Any]:
        results = {}
        for split, ids in held_out.items():
            out = np.zeros((len(ids), len(names), size, size), np.uint8)
            predict_probabilities(
                model,
                store.images()[rows[split]],
                [stage1.prompts[s] for s in ids],
                stage1.texts,
                device,
                out,
                stage1.spec["point_count"],
                progress=False,
                embeddings=stage1.embeddings.select(ids),
                classes=present[split],
            )
            samples = store.samples.iloc[rows[split]].reset_index(drop=True)
            results[split] = evaluate(out, labels[split], samples, names, threshold, tolerance_mm)
        return results

    return score


def _report(total: int) -> Callable[[list[dict[str, Any]]], None]:
    """Print the last row of the study so far (one line per finished run)."""

    def report(rows: list[dict[str, Any]]) -> None:
        row = rows[-1]
        print(
            f"[{len(rows)}/{total}] {row['run']} seed {row['seed']}: "
            f"{row['pairs_with_preference']}/{row['pairs']} pairs with a preference; validation mDice "
            f"{row['val_mdice']:.2f} ({row['val_difference']:+.2f} [{row['val_low']:+.2f}, {row['val_high']:+.2f}]), "
            f"test {row['mdice']:.2f} ({row['difference']:+.2f} [{row['low']:+.2f}, {row['high']:+.2f}]), "
            f"{row['seconds']:.0f} s",
            file=sys.stderr,
            flush=True,
        )

    return report


def run_alignment_study(
    store_dir: str,
    splits: str,
    split_settings: Mapping[str, Any],
    prompts_dir: str,
    texts_path: str,
    embeddings_dir: str,
    model_dir: str,
    study: Mapping[str, Any],
    seeds: Sequence[int],
    uncertainty: Any,
    evaluation: tuple[float, float],
    provenance: str,
    out: str,
) -> str:
    """Stage 2 for every run of the ``study`` grid and seed, each against the stage-1 model in ``model_dir`` on the
    validation split (which chooses) and one fixed test set (which reports); writes the study table (CSV +
    Markdown) and the choice (``{out stem}_choice.json``). ``evaluation``: (threshold, tolerance_mm)."""
    from samdpo.align.study import StudyData, run_study, write_choice, write_study
    from samdpo.data.store import SampleStore
    from samdpo.devices import pick_device
    from samdpo.predictions import read_predictions

    runs = study_runs(study)
    store = SampleStore(Path(store_dir))
    unlabeled, held_out = fraction_ids(store, splits, split_settings, [r.unlabeled for r in runs])
    probs, meta = read_predictions(Path(model_dir))
    prob_index = {s: i for i, s in enumerate(meta["sample_ids"])}
    needed = sorted({s for ids in [*unlabeled.values(), *held_out.values()] for s in ids})
    missing = sorted({s for ids in unlabeled.values() for s in ids if s not in prob_index})
    if missing:
        raise DataError(
            f"{model_dir}: no stored probability for {len(missing)} study images (e.g. {missing[0]}); "
            "predict its unlabelled split"
        )
    stage1 = _load_stage1(store, Path(model_dir), Path(texts_path), Path(embeddings_dir), Path(prompts_dir), needed)
    device, state = pick_device("auto"), {}
    references = _references(stage1, uncertainty, device)
    data = StudyData(
        probs,
        prob_index,
        unlabeled,
        held_out,
        references,
        lambda ids: references("ground_truth", ids).any(axis=(2, 3)),
        _draws(stage1, device),
    )
    train = _trainer(stage1, splits, state)
    evaluator = _evaluator(stage1, held_out, *evaluation, device)
    start = evaluator(stage1.reference)
    print(
        f"study: {len(runs)} runs x {len(seeds)} seeds from {model_dir}; unlabelled images per fraction "
        + ", ".join(f"{f}: {len(ids)}" for f, ids in sorted(unlabeled.items()))
        + f"; {len(held_out['validation'])} validation images (they choose), {len(held_out['test'])} test images",
        file=sys.stderr,
    )
    rows = run_study(
        runs,
        data,
        train,
        lambda trained: evaluator(state["model"]),
        start,
        seeds,
        on_row=_report(len(runs) * len(seeds)),
    )
    write_study(rows, Path(out), provenance)
    chosen = write_choice(rows, runs, Path(out))
    return f"alignment study written to {out}; validation chose {chosen}"
