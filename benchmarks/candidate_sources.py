"""Benchmark: what each candidate source gives the annotator, side by side on one finished run.

For a dataset of a finished run (``results/`` in the working folder), the ``prompt_10`` model's
candidates are made again with each source setting below (the same code as the ``candidates``
rule), graded by the virtual annotator in ``score`` mode (the ``annotate`` rule's code; it reads the
unlabelled split's labels, as that rule does) and summarised per source:

- the (image, class) pairs that carry a preference, with ``min_grade_gap`` applied, and why the
  others carry none, split into organs present on the slice and absent from it;
- for the present organs with a preference: the median share of the pair's largest candidate's area
  where its candidates disagree (all candidates, and without the empty one), and the median grade spread;
- seconds to make the candidates.

Run: ``python benchmarks/candidate_sources.py [--dataset amos] [--gap 1]`` in a folder whose
``results/`` holds a finished run of that dataset (the table target is enough).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from samdpo.align.annotator import read_annotations
from samdpo.align.candidates import CandidateSettings, read_candidates
from samdpo.align.pairs import preference_pairs
from samdpo.align.stage2 import disagreement_share
from samdpo.align.steps import AnnotatorSettings, ReferenceInputs, run_annotate, run_candidates
from samdpo.data.store import SampleStore

#: (name, align.candidates settings) compared; the last is the embedded default.
SOURCES = (
    ("paper: thresholds", {}),
    ("thresholds + empty", {"empty": True}),
    ("perturb + empty", {"source": ["perturb"], "empty": True}),
    ("dropout + empty", {"source": ["dropout"], "empty": True}),
    ("all + empty (default)", {"source": ["thresholds", "perturb", "dropout"], "empty": True}),
)


def summarise(folder: Path, annotations: Path, store: SampleStore, gap: int) -> dict[str, float]:
    """One source's row: pairs with a preference (present / absent organs), why not, disagreement shares."""
    candidates = read_candidates(folder)
    meta = candidates.meta
    ids, names = meta["sample_ids"], meta["class_names"]
    found = read_annotations(annotations)
    pairs = preference_pairs(ids, len(names), found, 1.0, 0.5, gap)
    index = {s: i for i, s in enumerate(store.samples["sample_id"])}
    labels = store.labels()
    present = np.stack([np.asarray(labels[index[s]])[None] == np.arange(1, len(names) + 1)[:, None, None] for s in ids])
    shown = present.any(axis=(2, 3))
    chosen = shown[pairs.image, pairs.klass]
    masks = candidates.masks(pairs.image[chosen], pairs.klass[chosen])
    nonempty = [m[m.reshape(len(m), -1).any(1)] for m in masks]
    shares = [float(disagreement_share(m[None])[0]) for m in nonempty if len(m) > 1]
    spreads = [found[(ids[i], t)].grade_spread for i, t in zip(pairs.image[chosen], pairs.klass[chosen])]
    return {
        "pairs": len(ids) * len(names),
        "with_preference": len(pairs.image),
        "present_with": int(chosen.sum()),
        "present": int(shown.sum()),
        "absent_with": int((~chosen).sum()),
        "absent": int((~shown).sum()),
        "why_not": "; ".join(f"{k}: {v}" for k, v in sorted(pairs.reasons.items())),
        "share_all": float(np.median(disagreement_share(masks))) if len(masks) else float("nan"),
        "share_nonempty": float(np.median(shares)) if shares else float("nan"),
        "spread": float(np.median(spreads)) if spreads else float("nan"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="amos")
    parser.add_argument("--gap", type=int, default=1, help="align.stage2.min_grade_gap")
    args = parser.parse_args()
    model = Path(f"results/stage1/{args.dataset}/prompt_10")
    store_dir = Path(f"results/data/prepared/{args.dataset}")
    inputs = ReferenceInputs(
        prompts=f"prompts_cache/{args.dataset}",
        model=str(model),
        texts=f"results/prompts/{args.dataset}/text_embeddings.parquet",
        embeddings=f"results/embeddings/{args.dataset}",
        store=str(store_dir),
    )
    store = SampleStore(store_dir)
    header = (
        f"{'source':24} {'seconds':>7} {'pairs':>5} {'with pref':>9} {'present':>9} {'absent':>9} "
        f"{'disagree':>8} {'no empty':>8} {'spread':>6}  why not"
    )
    print(f"{args.dataset}, min_grade_gap {args.gap}; shares: median over present organs with a preference")
    print(header)
    with tempfile.TemporaryDirectory(prefix="samdpo-sources-") as scratch:
        for name, values in SOURCES:
            folder, annotations = Path(scratch) / "c", Path(scratch) / "a.parquet"
            began = time.perf_counter()
            run_candidates(model, folder, CandidateSettings(**values), inputs, progress=False)
            seconds = time.perf_counter() - began
            run_annotate(store_dir, folder, annotations, AnnotatorSettings(mode="score"), ReferenceInputs(), False)
            row = summarise(folder, annotations, store, args.gap)
            print(
                f"{name:24} {seconds:7.1f} {row['pairs']:5d} {row['with_preference']:9d} "
                f"{row['present_with']:>4}/{row['present']:<4} {row['absent_with']:>4}/{row['absent']:<4} "
                f"{row['share_all']:8.1%} {row['share_nonempty']:8.1%} {row['spread']:6.1f}  {row['why_not']}",
                flush=True,
            )


if __name__ == "__main__":
    main()
