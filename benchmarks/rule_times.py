"""Summary of a finished run's Snakemake benchmark files: wall time and peak memory per rule.

Every rule writes ``results/benchmarks/RULE/...tsv`` (Snakemake's ``benchmark:``: wall seconds
``s``, peak resident memory ``max_rss`` in MB, CPU seconds ``cpu_time``). This prints one Markdown
row per rule: jobs, summed and longest wall time, summed CPU time and the largest peak RSS, slowest
rule first. Run after ``snakemake``: ``python benchmarks/rule_times.py [--root results/benchmarks]``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd


def read_benchmarks(root: Path) -> pd.DataFrame:
    """One row per benchmark file: rule, job (the path below the rule), s, max_rss (MB), cpu_time (s)."""
    rows = []
    for path in sorted(root.rglob("*.tsv")):
        frame = pd.read_csv(path, sep="\t")
        if frame.empty or "s" not in frame:
            continue
        relative = path.relative_to(root)
        last = frame.iloc[-1]
        rows.append(
            {
                "rule": relative.parts[0],
                "job": str(relative.with_suffix(""))[len(relative.parts[0]) + 1 :],
                "s": float(last["s"]),
                "max_rss": float(pd.to_numeric(last.get("max_rss"), errors="coerce")),
                "cpu_time": float(pd.to_numeric(last.get("cpu_time"), errors="coerce")),
            }
        )
    if not rows:
        raise SystemExit(f"{root}: no benchmark files; run snakemake first")
    return pd.DataFrame(rows)


def summarise(jobs: pd.DataFrame) -> pd.DataFrame:
    """Per rule: jobs, total and longest wall seconds (with the longest job), CPU seconds, peak RSS in MB."""
    longest = jobs.loc[jobs.groupby("rule")["s"].idxmax(), ["rule", "job", "s"]].set_index("rule")
    table = jobs.groupby("rule").agg(
        jobs=("job", "size"), wall_s=("s", "sum"), cpu_s=("cpu_time", "sum"), peak_rss_mb=("max_rss", "max")
    )
    table["longest_job"] = longest["job"] + " (" + longest["s"].round(1).astype(str) + " s)"
    return table.sort_values("wall_s", ascending=False).round(1).reset_index()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="results/benchmarks", type=Path)
    args = parser.parse_args()
    table = summarise(read_benchmarks(args.root))
    print(table.to_markdown(index=False))
    total = table["wall_s"].sum()
    print(
        f"\n{int(table['jobs'].sum())} jobs, {total:.0f} s of job wall time in all (jobs overlap when run in parallel)"
    )


if __name__ == "__main__":
    main()
