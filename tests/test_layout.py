"""The package's layout: no import cycle between its packages, light modules stay free of torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import samdpo

ROOT = Path(samdpo.__file__).parent
REPO = ROOT.parent


def _package(module: str) -> str:
    """``samdpo.prompts.visual.crf`` -> ``prompts``; a top-level module is its own node (``samdpo.atomic`` ->
    ``atomic``)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def package_imports() -> dict[str, set[str]]:
    """Package -> the other samdpo packages its modules import (at the top or inside functions)."""
    edges: dict[str, set[str]] = defaultdict(set)
    for path in ROOT.rglob("*.py"):
        module = ".".join(("samdpo", *path.relative_to(ROOT).with_suffix("").parts)).removesuffix(".__init__")
        source = _package(module)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "samdpo":
                targets = [f"samdpo.{alias.name}" for alias in node.names] if node.module == "samdpo" else [node.module]
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names if alias.name.split(".")[0] == "samdpo"]
            else:
                continue
            edges[source] |= {_package(target) for target in targets} - {source}
    return edges


def _cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as a path of nodes, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node], _ = 1, stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node], _ = 2, stack.pop()
        return None

    return next((found for node in sorted(edges) if node not in state and (found := visit(node))), None)


def test_no_import_cycle_between_packages() -> None:
    edges = package_imports()
    assert {"prompts", "train", "align", "evaluation", "sam", "data"} <= set(edges)
    assert _cycle(edges) is None, " -> ".join(_cycle(edges) or [])
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]  # the walk finds a cycle


def test_the_command_line_and_the_numpy_steps_do_not_import_torch() -> None:
    """`samdpo --help`, candidates, predictions, the metrics, the evaluation job, the annotator study and the
    settings check every Snakemake start runs, all start without torch (each import of torch and segment_anything
    costs seconds per job)."""
    code = (
        "import sys, yaml; from snakemake.utils import validate;"
        "import samdpo.cli, samdpo.align.candidates, samdpo.predictions, samdpo.evaluation.tables;"
        "import samdpo.evaluation.evaluate, samdpo.evaluation.metrics, samdpo.align.study;"
        "from samdpo.config_check import check_config;"
        f"config = yaml.safe_load(open({str(REPO / 'workflow/config/default.yaml')!r}));"
        f"validate(config, {str(REPO / 'workflow/schemas/config.schema.yaml')!r}, set_default=True);"
        "check_config(config);"
        "print(sorted({'torch', 'monai', 'segment_anything'} & set(sys.modules)))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
