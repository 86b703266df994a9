"""``samdpo align study``: wires the stored stage-1 model, embeddings, prompts and labels into
:func:`samdpo.align.study.run_study` (the grid itself lives there)."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from samdpo.errors import ConfigError, DataError
from samdpo.settings import json_object


def _fraction_ids(store: Any, splits_path: str, split_settings: dict[str, Any], fractions: list[float]) -> tuple[dict[float, list[str]], list[str]]:
    """Unlabelled sample ids per fraction, and the study's test ids (the test split under the largest fraction)."""
    from samdpo.data.splits import make_splits, read_splits

    cases = list(store.samples["case_id"])
    ids = list(store.samples["sample_id"])
    written = read_splits(Path(splits_path))
    labelled = {c for c, split in written.items() if split == "labeled"}
    out, test = {}, []
    for fraction in sorted(set(fractions)):
        assignment = make_splits(cases, split_settings["labeled"], fraction, split_settings["seed"])
        if {c for c, split in assignment.items() if split == "labeled"} != labelled:
            raise ConfigError(f"{splits_path}: its labelled split is not the one splits {split_settings} make; rerun the split rule")
        out[fraction] = [s for s, c in zip(ids, cases) if assignment[c] == "unlabeled"]
        test = [s for s, c in zip(ids, cases) if assignment[c] == "test"]
    if not test:
        raise ConfigError(f"study: unlabelled fraction {max(fractions)} leaves no test case")
    return out, test


def _study(args: argparse.Namespace) -> None:
    import torch

    from samdpo.align.stage2 import LabelledSet, train_stage2
    from samdpo.align.study import StudyData, Trained, expand_grid, run_study, write_study
    from samdpo.align.uncertainty import UncertaintySettings, consensus_masks
    from samdpo.data.store import SampleStore
    from samdpo.evaluation.metrics import evaluate
    from samdpo.predictions import read_predictions
    from samdpo.sam.checkpoints import load_checkpoint
    from samdpo.sam.specs import build_model
    from samdpo.data.splits import split_indices
    from samdpo.sam.image_embeddings import ImageEmbeddings
    from samdpo.train.predict import predict_probabilities
    from samdpo.train.prompt_data import load_image_prompts
    from samdpo.train.model_folder import SETTINGS, WEIGHTS
    from samdpo.train.model_folder import read_model_spec
    from samdpo.devices import pick_device
    from samdpo.train.text_embeddings import read_text_embeddings

    torch.set_num_threads(max(1, args.threads))
    study = json_object(args.study, "--study")
    variations = study.get("variations", [])
    if not isinstance(study.get("base"), dict) or not isinstance(variations, list) or not all(isinstance(v, dict) for v in variations):
        raise ConfigError("--study must hold base (an object), and optionally factorial (an object) and variations (a list of objects)")
    runs = expand_grid(study["base"], study.get("factorial", {}), variations)
    try:
        uncertainty = UncertaintySettings(**json_object(args.uncertainty, "--uncertainty"))
    except TypeError as exc:
        raise ConfigError(f"bad align.uncertainty settings: {exc}") from exc
    store = SampleStore(Path(args.store))
    names = list(store.class_names)
    unlabeled, test_ids = _fraction_ids(store, args.splits, json_object(args.split_settings, "--split-settings"), [r.unlabeled for r in runs])
    probs, meta = read_predictions(Path(args.model))
    prob_index = {s: i for i, s in enumerate(meta["sample_ids"])}
    needed = sorted({s for ids in unlabeled.values() for s in ids} | set(test_ids))
    missing = [s for s in needed if s not in prob_index]
    if missing:
        raise DataError(f"{args.model}: no stored probability for {len(missing)} study images (e.g. {missing[0]}); predict its unlabelled and test splits")
    spec = read_model_spec(args.model)
    texts, _ = read_text_embeddings(Path(args.texts))
    device = pick_device("auto")
    row_of = {s: i for i, s in enumerate(store.samples["sample_id"])}
    labels = store.labels()  # the virtual annotator (unlabelled images) and the evaluation (test images) only

    def model_from_stage1() -> Any:
        model = build_model(spec["sam"], spec["text_dim"], spec["switches"], 0, load_weights=False)
        load_checkpoint(model, Path(args.model) / WEIGHTS)
        return model

    reference_model = model_from_stage1()
    embeddings = ImageEmbeddings(Path(args.embeddings), reference_model)
    prompts = {s: load_image_prompts(Path(args.prompts), s, names) for s in needed}
    size = store.images().shape[-1]
    masks_cache: dict[tuple[str, tuple[str, ...]], np.ndarray] = {}

    def references(kind: str, ids: list[str]) -> np.ndarray:
        key = (kind, tuple(ids))
        if key not in masks_cache:
            if kind == "ground_truth":
                masks_cache[key] = np.stack([np.asarray(labels[row_of[s]])[None] == np.arange(1, len(names) + 1)[:, None, None] for s in ids])
            elif kind == "prompt":
                from samdpo.prompts.store import array, read_prompts

                masks_cache[key] = np.stack([np.stack([array(r, "mask") for r in read_prompts(Path(args.prompts) / f"{s}.parquet")[0]]) for s in ids])
            else:
                masks_cache[key] = consensus_masks(reference_model, embeddings.select(ids), [prompts[s] for s in ids], texts, len(names), size,
                                                   spec["point_count"], uncertainty, device, progress=False)
        return masks_cache[key]

    def graded(ids: list[str]) -> np.ndarray:
        return references("ground_truth", ids).any(axis=(2, 3))

    data = StudyData(probs, prob_index, unlabeled, test_ids, references, graded)
    labelled_rows = split_indices(store, args.splits, ["labeled"])
    labelled_ids = [store.samples["sample_id"][i] for i in labelled_rows]
    labelled = LabelledSet(store.images()[labelled_rows], store.labels()[labelled_rows], [load_image_prompts(Path(args.prompts), s, names) for s in labelled_ids],
                           embeddings.select(labelled_ids), spec["stage1"]["gt_box_fraction"], spec["stage1"]["gt_box_jitter"])
    state: dict[str, Any] = {}

    def train(run: Any, seed: int, ids: list[str], levels: np.ndarray, pairs: Any) -> Trained:
        policy = model_from_stage1()
        with tempfile.TemporaryDirectory(prefix="samdpo-study-") as scratch:
            history = train_stage2(policy, reference_model, store.images()[[row_of[s] for s in ids]], levels, len(run.thresholds), pairs,
                                   [prompts[s] for s in ids], texts, run.stage2, Path(scratch), {}, spec["point_count"], progress=False,
                                   embeddings=embeddings.select(ids), labelled=labelled)
            diagnostics = json.loads((Path(scratch) / SETTINGS).read_text())
        state["model"] = policy
        return Trained(history, diagnostics)

    test_rows = [row_of[s] for s in test_ids]
    test_labels = np.asarray(labels[test_rows])
    test_samples = store.samples.iloc[test_rows].reset_index(drop=True)
    present = [[t for t in range(len(names)) if (label == t + 1).any()] for label in test_labels]  # evaluation reads the test labels

    def per_image(test_probs: np.ndarray) -> Any:
        return evaluate(test_probs, test_labels, test_samples, names, args.threshold, args.tolerance_mm)

    def score(trained: Trained) -> Any:
        out = np.zeros((len(test_ids), len(names), size, size), np.uint8)
        predict_probabilities(state["model"], store.images()[test_rows], [prompts[s] for s in test_ids], texts, device, out, spec["point_count"],
                              progress=False, embeddings=embeddings.select(test_ids), classes=present)
        return per_image(out)

    start = per_image(np.asarray(probs[[prob_index[s] for s in test_ids]]))
    print(f"study: {len(runs)} runs x {len(args.seeds)} seeds from {args.model}; unlabelled images per fraction "
          + ", ".join(f"{f}: {len(ids)}" for f, ids in sorted(unlabeled.items())) + f"; {len(test_ids)} test images", file=sys.stderr)

    def report(rows: list[dict[str, Any]]) -> None:
        row = rows[-1]
        print(f"[{len(rows)}/{len(runs) * len(args.seeds)}] {row['run']} seed {row['seed']}: {row['pairs_with_preference']}/{row['pairs']} pairs with a preference, "
              f"mDice {row['mdice']:.2f} ({row['difference']:+.2f} [{row['low']:+.2f}, {row['high']:+.2f}]), {row['seconds']:.0f} s", file=sys.stderr, flush=True)

    rows = run_study(runs, data, train, score, start, args.seeds, on_row=report)
    write_study(rows, Path(args.out), args.provenance)
    print(f"alignment study written to {args.out}", file=sys.stderr)


def add_study_command(align: argparse._SubParsersAction) -> None:
    """Register ``align study``."""
    study = align.add_parser("study", help="stage 2 for a grid of settings, each against the stage-1 model on one fixed test set")
    study.add_argument("--store", required=True)
    study.add_argument("--splits", required=True, help="the pipeline's split table (its labelled split is checked)")
    study.add_argument("--split-settings", required=True, help="the splits section as a JSON object (labeled, unlabeled, seed)")
    study.add_argument("--prompts", required=True)
    study.add_argument("--texts", required=True)
    study.add_argument("--embeddings", required=True)
    study.add_argument("--model", required=True, help="stage-1 model folder with probs.npy of its unlabelled and test images")
    study.add_argument("--study", required=True, help="JSON object: base (the default run's settings), factorial (setting -> values, "
                       "every combination run) and variations (a list of objects, each run alone on the base)")
    study.add_argument("--seeds", type=int, nargs="+", default=[0])
    study.add_argument("--uncertainty", help="align.uncertainty settings as a JSON object")
    study.add_argument("--threshold", type=float, default=0.5, help="evaluation probability threshold")
    study.add_argument("--tolerance-mm", type=float, default=2.0)
    study.add_argument("--provenance", default="", help="what data and models produced the study (its Markdown title)")
    study.add_argument("--out", required=True, help="results/{dataset}_alignment_study.csv (+ .md)")
    study.add_argument("--threads", type=int, default=1)
    study.set_defaults(func=_study)
