"""``samdpo prompts show``: table, JSON summaries, class filter and the PNG drawing of one prompt file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from samdpo.errors import ConfigError
from samdpo.prompts.store_view import draw_png, format_table, show, to_json
from tests.prompt_rows import PEAK_XY, SIZE
from tests.prompt_rows import prompt_file as prompt_file  # noqa: F401  (the fixture: one prompt file, liver + spleen)


def test_table(prompt_file: Path) -> None:
    text = show(prompt_file)
    assert "case01_s005" in text and "amos" in text and "32x32" in text
    assert "tiny-clip" in text and "fake-vqa" in text and "fake-llm" in text
    assert "liver" in text and "spleen" in text
    assert "no box" in text and "[16, 5, 25, 14]" in text
    assert "liver-shaped oval" in text and "upper right" in text
    assert "shape" in text and "location" in text
    assert "0.90" in text  # 230 / 255
    assert "..." in text  # the long description is cut
    liver_line = next(line for line in text.splitlines() if line.strip().startswith("liver"))
    assert " 100 " in liver_line


def test_json(prompt_file: Path) -> None:
    data = json.loads(show(prompt_file, as_json=True))
    assert data["meta"]["sample_id"] == "case01_s005"
    liver, spleen = data["records"]
    assert liver["class_name"] == "liver" and spleen["class_name"] == "spleen"
    assert liver["image"] == {"shape": [SIZE, SIZE]}
    assert liver["mask"] == {"shape": [SIZE, SIZE], "area": 100}
    assert liver["saliency"]["peak_xy"] == list(PEAK_XY)
    assert liver["saliency"]["max"] == pytest.approx(230 / 255, abs=1e-3)
    assert spleen["saliency"]["shape"] == [16, 16] and spleen["saliency"]["mean"] == pytest.approx(40 / 255, abs=1e-3)
    assert spleen["mask"]["area"] == 0 and spleen["has_box"] is False and spleen["box"] is None
    assert liver["box"] == [16.0, 5.0, 25.0, 14.0] and liver["point_labels"] == [1, 0]
    assert [qa["question_id"] for qa in liver["vqa"]] == ["shape", "location"]
    for record in data["records"]:
        assert not {"image_shape", "saliency_shape", "mask_shape"} & set(record)
    # no raw bytes survive (they would not serialise anyway): the text is small
    assert "\\x" not in json.dumps(data)


def test_classes_filter(prompt_file: Path) -> None:
    text = show(prompt_file, classes=["spleen"])
    assert "spleen" in text and "liver" not in text
    data = json.loads(show(prompt_file, as_json=True, classes=["liver"]))
    assert [r["class_name"] for r in data["records"]] == ["liver"]


def test_png(prompt_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "figures" / "case.png"
    show(prompt_file, png=out)
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(out) as image:
        width, height = image.size
    assert 700 <= width <= 900 and 500 <= height <= 650  # 2 panels of 4 x 5.5 inches at 100 dpi
    assert [p.name for p in out.parent.iterdir()] == ["case.png"]


def test_png_one_class(prompt_file: Path, tmp_path: Path) -> None:
    from samdpo.prompts.store import read_prompts

    rows, meta = read_prompts(prompt_file)
    out = tmp_path / "one.png"
    draw_png(rows, meta, out, classes=["spleen"])
    with Image.open(out) as image:
        assert image.format == "PNG" and 350 <= image.size[0] <= 450
    assert (
        format_table(rows, meta).count("\n") >= 5
        and json.loads(to_json(rows[:1], meta))["records"][0]["class_name"] == "liver"
    )


def test_unknown_class(prompt_file: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="kidney.*liver"):
        show(prompt_file, classes=["kidney"])
    out = tmp_path / "bad.png"
    with pytest.raises(ConfigError, match="kidney"):
        show(prompt_file, png=out, classes=["liver", "kidney"])
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["prompts"]
