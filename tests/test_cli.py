"""The samdpo command line: summaries, synth, prepare, split and error handling."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from samdpo.cli import main
from tests.prepared_store import prepare_store


def test_summary_json(amos_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "summary", "--kind", "amos", "--root", str(amos_root), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert set(summary) == {"kind", "cases", "slices", "foreground"}
    assert summary["kind"] == "amos" and summary["cases"] == 5 and len(summary["foreground"]) == 15
    assert all(count > 0 for count in summary["foreground"].values())


@pytest.mark.parametrize("kind,name", [("busi", "tumor"), ("cxr", "lungs")])
def test_summary_table(
    kind: str, name: str, request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str]
) -> None:
    root = request.getfixturevalue(f"{kind}_root")
    assert main(["data", "summary", "--kind", kind, "--root", str(root)]) == 0
    out = capsys.readouterr().out
    assert f"dataset: {kind}" in out and name in out and "foreground pixels" in out


def test_synth_prepare_split(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data, store = tmp_path / "cxr", tmp_path / "store"
    assert main(["synth", "cxr", "--out", str(data), "--cases", "5", "--seed", "1", "--layout", "paired"]) == 0
    prepare_store("cxr", data, store, 32)
    assert main(["data", "split", "--store", str(store), "--out", str(tmp_path / "s.csv"), "--seed", "3"]) == 0
    assert (tmp_path / "s.csv").read_text().splitlines()[0] == "case_id,split"
    # a non-empty output folder is never overwritten silently
    assert main(["synth", "cxr", "--out", str(data), "--cases", "4"]) == 2
    assert "pass --force" in capsys.readouterr().err


def test_errors_are_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "summary", "--kind", "busi", "--root", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("samdpo: error: ") and "missing: BUSI folder does not exist" in err
    assert (
        main(
            [
                "data",
                "prepare",
                "--kind",
                "cxr",
                "--root",
                str(tmp_path),
                "--out",
                str(tmp_path / "o"),
                "--image-size",
                "8",
            ]
        )
        == 2
    )
    assert "image_size must be at least 16" in capsys.readouterr().err
    assert main(["data", "summary", "--kind", "busi", "--root", str(tmp_path), "--settings", "{bad"]) == 2
    assert "--settings is not valid JSON" in capsys.readouterr().err
    assert main(["synth", "busi", "--out", str(tmp_path / "x"), "--cases", "0"]) == 2
    assert not (tmp_path / "x").exists()
    summary = tmp_path / "m.json"
    summary.write_text("{}")
    assert (
        main(
            [
                "table",
                "--dataset",
                "amos",
                "--summaries",
                str(summary),
                "--methods",
                "a",
                "b",
                "--provenance",
                "x",
                "--out",
                str(tmp_path / "t.csv"),
            ]
        )
        == 2
    )
    assert "--methods" in capsys.readouterr().err and not (tmp_path / "t.csv").exists()


def _subcommand_paths(parser, prefix=()) -> list[tuple[str, ...]]:
    """Every command path of the parser (``("prompts", "crf")``, ...), found through argparse's sub-parsers."""
    import argparse

    paths = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                paths += [(*prefix, name), *_subcommand_paths(sub, (*prefix, name))]
    return paths


def test_every_command_prints_its_help(capsys: pytest.CaptureFixture[str]) -> None:
    """`--help` of the program and of every command renders (a stray % in a help text breaks it)."""
    from samdpo.cli import build_parser

    paths = _subcommand_paths(build_parser())
    assert ("prompts", "crf") in paths and ("align", "study") in paths and len(paths) > 25
    for path in [(), *paths]:
        with pytest.raises(SystemExit) as exit_info:
            main([*path, "--help"])
        assert exit_info.value.code == 0, path
        assert "usage: samdpo" in capsys.readouterr().out
