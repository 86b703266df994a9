"""``samdpo eval`` and ``samdpo table``: evaluate predictions on the test split, build results tables (thin entry points)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from samdpo.errors import ConfigError, DataError


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: unreadable summary ({exc})") from exc
    if not isinstance(value, dict):
        raise DataError(f"{path}: not a JSON object")
    return value


def _eval(args: argparse.Namespace) -> None:
    import numpy as np
    import torch

    from samdpo import atomic
    from samdpo.data.splits import read_splits
    from samdpo.data.store import SampleStore
    from samdpo.evaluation import metrics
    from samdpo.predictions import align_predictions, read_predictions

    torch.set_num_threads(max(1, args.threads))  # MONAI's per-image steps are small: extra threads only add overhead
    store = SampleStore(Path(args.store))
    splits = read_splits(Path(args.splits))
    probs, meta = read_predictions(Path(args.probs))
    rows = align_predictions(meta, list(store.samples["sample_id"]), store.class_names, store.kind)
    cases = store.samples["case_id"].to_numpy()[rows]
    unsplit = sorted({c for c in cases if c not in splits})
    if unsplit:
        raise DataError(f"{args.splits}: predicted cases {unsplit[:3]} have no split; rerun the split rule")
    chosen = np.flatnonzero([splits[c] == "test" for c in cases])
    if chosen.size == 0:
        raise DataError(f"{args.probs}: none of the {len(rows)} predicted images is in the test split of {args.splits}")
    store_rows = rows[chosen]
    probs = np.asarray(probs[chosen])
    labels = np.asarray(store.labels()[store_rows])
    samples = store.samples.iloc[store_rows].reset_index(drop=True)
    names = store.class_names
    per_image = metrics.evaluate(probs, labels, samples, names, args.threshold, args.tolerance_mm)
    per_volume = metrics.volume_dice(probs, labels, samples, names, args.threshold)
    false_positives = metrics.absent_class_false_positives(probs, labels, names, args.threshold)
    summary = metrics.summarize(per_image, per_volume, names, false_positives)
    summary.update(
        {
            "method": args.method or Path(str(meta.get("model", args.probs))).name,
            "dataset": store.kind,
            "model": meta.get("model"),
            "model_settings_hash": meta.get("model_settings_hash"),
            "threshold": args.threshold,
            "tolerance": args.tolerance_mm,
            "spacing_unit": store.meta.get("spacing_unit"),
            "store": str(args.store),
            "splits": str(args.splits),
            "probs": str(args.probs),
            "test_images": int(chosen.size),
        }
    )
    out = Path(args.out)
    atomic.write_text(out, per_image.to_csv(index=False))
    atomic.write_text(out.with_suffix(".json"), json.dumps(summary, indent=2, allow_nan=False) + "\n")
    main = "mdice" if len(names) > 1 else "dice"
    value = summary["mdice"]
    shown = "n/a" if value is None else f"{value:.2f}"
    print(f"{summary['method']}: {main} {shown} % over {chosen.size} test images; {out} and {out.with_suffix('.json')}", file=sys.stderr)


def _table(args: argparse.Namespace) -> None:
    from samdpo.evaluation.tables import build_table, write_table

    if len(args.methods) != len(args.summaries):
        raise ConfigError(
            f"--methods names {len(args.methods)} methods but --summaries gives {len(args.summaries)} files; "
            "give one name per summary, in the same order"
        )
    summaries = [_read_json(Path(p)) for p in args.summaries]
    class_names = summaries[0].get("class_names")
    if not class_names:
        raise DataError(f"{args.summaries[0]}: no class_names; is it a `samdpo eval` summary?")
    rows = []
    for method, summary in zip(args.methods, summaries):
        provenance = args.provenance
        if summary.get("model"):
            provenance += f"; model {summary['model']}"
            if summary.get("model_settings_hash"):
                provenance += f" ({str(summary['model_settings_hash'])[:12]})"
        rows.append({"method": method, "summary": summary, "provenance": provenance})
    table = build_table(rows, class_names, args.dataset)
    written = write_table(table, Path(args.out), title=f"{args.dataset}: test split")
    print(f"{len(rows)} methods in {', '.join(map(str, written))}", file=sys.stderr)


def _dpo_effect(args: argparse.Namespace) -> None:
    import pandas as pd

    from samdpo import atomic
    from samdpo.evaluation.paired import paired_difference

    def read(model: str) -> Any:
        path = Path(args.eval) / f"{model}.csv"
        if not path.is_file():
            raise DataError(f"{path}: no per-image evaluation of {model}; run the evaluate rule first")
        return pd.read_csv(path)

    reference = read(args.reference)
    if args.diagnostics and len(args.diagnostics) != len(args.models):
        raise ConfigError(f"--diagnostics: one settings.json per model ({len(args.models)}), got {len(args.diagnostics)}")
    rows = []
    for k, model in enumerate(args.models):
        r = paired_difference(reference, read(model), draws=args.draws, seed=args.seed)
        row = {
            "model": model, "reference_model": args.reference, "mdice_reference": r.reference, "mdice_model": r.model,
            "difference": r.difference, "low": r.low, "high": r.high, "confidence": r.confidence,
            "cases": r.cases, "images": r.images, "draws": r.draws,
        }
        if args.diagnostics:
            written = _read_json(Path(args.diagnostics[k]))
            row |= {key: written.get(key) for key in DIAGNOSTICS}
            row["why_no_preference"] = "; ".join(f"{why}: {n}" for why, n in sorted((written.get("why_no_preference") or {}).items()))
        rows.append(row)
    atomic.write_text(args.out, pd.DataFrame(rows).to_csv(index=False, float_format="%.4f"))
    lines = [
        f"| model | {args.reference} mDice | model mDice | difference | 95% interval (case bootstrap) | cases | images |",
        "| --- | ---: | ---: | ---: | --- | ---: | ---: |",
    ]
    lines += [
        f"| {row['model']} | {row['mdice_reference']:.2f} | {row['mdice_model']:.2f} | {row['difference']:+.2f} | "
        f"[{row['low']:+.2f}, {row['high']:+.2f}] | {row['cases']} | {row['images']} |"
        for row in rows
    ]
    if args.diagnostics:
        lines += [
            "", "Alignment diagnostics (last epoch; margin: sum_k w_k (log pi - log pi_ref) of a pair):", "",
            "| model | pairs with a preference | without (why) | median disagreement px | share at ln 2 | mean margin | best candidate rose |",
            "| --- | ---: | --- | ---: | ---: | ---: | ---: |",
        ]
        lines += [
            f"| {row['model']} | {row['pairs']} | {row['pairs_without_preference']} ({row['why_no_preference'] or '-'}) | {_shown(row['median_disagreement_px'], '.0f')} | "
            f"{_shown(row['at_ln2'], '.2f')} | {_shown(row['mean_margin'], '.2f')} | {_shown(row['best_rose'], '.2f')} |"
            for row in rows
        ]
    atomic.write_text(Path(args.out).with_suffix(".md"), "\n".join(lines) + "\n")
    print("\n".join(lines))


#: What an aligned model's settings.json records about its run (see samdpo.align.stage2).
DIAGNOSTICS = ("pairs", "pairs_without_preference", "median_disagreement_px", "at_ln2", "mean_margin", "best_rose")


def _shown(value: Any, spec: str) -> str:
    """A number formatted, or ``-`` where the run recorded none (no pair to train on)."""
    return "-" if value is None else format(value, spec)


def _box_quality(args: argparse.Namespace) -> None:
    import pandas as pd
    import pyarrow.parquet as pq

    from samdpo import atomic
    from samdpo.data.splits import read_splits
    from samdpo.data.store import SampleStore
    from samdpo.evaluation.box_quality import box_quality

    store = SampleStore(Path(args.store))
    tables = {}
    for column, path, rule in (("crf_box", args.crf, "crf"), ("refined_box", args.refined, "refine_boxes")):
        if path is None:
            continue
        if not Path(path).is_file():
            raise DataError(f"{path}: no prompt table; run the {rule} rule first")
        table = pq.read_table(path, columns=["sample_id", "class_index", "box"]).to_pandas()
        table["box"] = [None if b is None else tuple(b) for b in table["box"]]
        tables[column] = table
    report = box_quality(store.labels(), store.samples, read_splits(Path(args.splits)), tables, list(store.class_names))
    report.insert(0, "dataset", store.kind)
    if args.out:
        atomic.write_text(args.out, report.to_csv(index=False, float_format="%.4f"))
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(report.to_string(index=False, float_format=lambda v: f"{v:.3f}"))


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Register ``eval``, ``box-quality``, ``table`` and ``dpo-effect`` on the ``samdpo`` parser."""
    evaluate = commands.add_parser("eval", help="Dice / NSD / HD95 of a model's predictions on the test split")
    evaluate.add_argument("--store", required=True, help="prepared sample store folder")
    evaluate.add_argument("--splits", required=True, help="split table CSV (case_id,split)")
    evaluate.add_argument("--probs", required=True, help="folder with probs.npy and probs.json")
    evaluate.add_argument("--out", required=True, help="per-image CSV to write; the summary goes to the same name with .json")
    evaluate.add_argument("--threshold", type=float, default=0.5, help="probability at or above which a pixel is predicted")
    evaluate.add_argument(
        "--tolerance-mm", type=float, default=2.0, help="NSD tolerance in the spacing unit (mm for AMOS, original pixels otherwise)"
    )
    evaluate.add_argument("--method", help="method name recorded in the summary (default: the model folder's name)")
    evaluate.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    evaluate.set_defaults(func=_eval)

    table = commands.add_parser("table", help="results table (CSV, Markdown, PNG) from `samdpo eval` summaries")
    table.add_argument("--dataset", required=True)
    table.add_argument("--summaries", nargs="+", required=True, help="summary JSON files written by `samdpo eval`")
    table.add_argument("--methods", nargs="+", required=True, help="one method name per summary, same order")
    table.add_argument("--provenance", required=True, help="which data and models produced the rows (the data_models column)")
    table.add_argument("--out", required=True, help="CSV to write; .md and .png are written next to it")
    table.set_defaults(func=_table)

    effect = commands.add_parser("dpo-effect", help="each aligned model against the stage-1 model it started from: paired mDice difference, case-bootstrap 95% interval")
    effect.add_argument("--eval", required=True, help="folder of per-image evaluations (results/eval/DATASET)")
    effect.add_argument("--reference", required=True, help="the stage-1 model the aligned ones started from (e.g. prompt_10)")
    effect.add_argument("--models", nargs="+", required=True, help="the aligned models")
    effect.add_argument("--out", required=True, help="CSV to write; the .md goes next to it")
    effect.add_argument("--draws", type=int, default=2000, help="bootstrap resamples of the test cases")
    effect.add_argument("--seed", type=int, default=0)
    effect.add_argument("--diagnostics", nargs="+", help="each model's settings.json (its alignment diagnostics), in --models order")
    effect.set_defaults(func=_dpo_effect)

    quality = commands.add_parser("box-quality", help="median IoU of the CRF (and refined) boxes with ground-truth boxes (test split)")
    quality.add_argument("--store", required=True)
    quality.add_argument("--splits", required=True)
    quality.add_argument("--crf", required=True, help="crf.parquet")
    quality.add_argument("--refined", help="refined.parquet (SAM-refined boxes), reported beside the CRF's")
    quality.add_argument("--out", help="also write the table as CSV")
    quality.set_defaults(func=_box_quality)
