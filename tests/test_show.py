"""``samdpo prompts show``: table, JSON summaries, class filter and the PNG drawing of one prompt file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from samdpo.errors import ConfigError
from samdpo.prompts.store import SCHEMA
from samdpo.prompts.store_view import draw_png, format_table, show, to_json

SIZE = 32
PEAK_XY = (20, 9)  # x (column), y (row) of the liver saliency maximum


def _row(
    class_index: int,
    name: str,
    mask: np.ndarray,
    saliency: np.ndarray,
    box: list[float] | None,
    points: list,
    labels: list,
) -> dict:
    image = (np.arange(SIZE * SIZE) % 256).astype(np.uint8).reshape(SIZE, SIZE)
    return {
        "sample_id": "case01_s005",
        "dataset": "amos",
        "class_index": class_index,
        "class_name": name,
        "image": image.tobytes(),
        "image_shape": [SIZE, SIZE],
        "saliency": saliency.tobytes(),
        "saliency_shape": list(saliency.shape),
        "has_box": box is not None,
        "box": box,
        "points": points,
        "point_labels": labels,
        "mask": np.packbits(mask).tobytes(),
        "mask_shape": list(mask.shape),
        "vqa": [
            {"question_id": "shape", "question": f"What shape is the {name}?", "answer": f"{name}-shaped oval"},
            {"question_id": "location", "question": f"Where is the {name}?", "answer": "upper right"},
        ],
        "modality": "CT",
        "llm_prompt": f"Describe the {name}.",
        "description": f"The {name} is a large organ " + "with a long description " * 10,
        "clip": "tiny-clip",
        "vqa_backend": "fake",
        "vqa_model": "fake-vqa",
        "llm_backend": "fake",
        "llm_model": "fake-llm",
        "visual_hash": "v" * 16,
        "vqa_hash": "q" * 16,
        "llm_hash": "l" * 16,
    }


@pytest.fixture()
def prompt_file(tmp_path: Path) -> Path:
    mask = np.zeros((SIZE, SIZE), dtype=bool)
    mask[5:15, 16:26] = True  # 100 pixels
    saliency = np.zeros((SIZE, SIZE), dtype=np.uint8)
    saliency[5:15, 16:26] = 120
    saliency[PEAK_XY[1], PEAK_XY[0]] = 230
    liver = _row(0, "liver", mask, saliency, [16.0, 5.0, 25.0, 14.0], [[20.0, 9.0], [2.0, 30.0]], [1, 0])
    spleen = _row(1, "spleen", np.zeros((SIZE, SIZE), dtype=bool), np.full((16, 16), 40, dtype=np.uint8), None, [], [])
    meta = {"format_version": 1, "dataset": "amos", "sample_id": "case01_s005"}
    table = pa.Table.from_pylist([liver, spleen], schema=SCHEMA).replace_schema_metadata({"samdpo": json.dumps(meta)})
    path = tmp_path / "prompts" / "case01_s005.parquet"
    path.parent.mkdir()
    pq.write_table(table, path)
    return path


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
