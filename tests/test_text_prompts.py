"""Text prompts: geometry VQA answers, the answer cache, the openai backends against a local HTTP
server (retries, faults, resume, keys), the knowledge descriptions and the per-image prompt store."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from samdpo.cli import main
from samdpo.errors import ConfigError
from samdpo.prompts.store import array, read_prompts
from samdpo.prompts.text.answer_cache import request_key
from samdpo.prompts.text.llm import KnowledgeLLM, make_requests
from samdpo.prompts.text.openai_chat import AnswerError, OpenAISettings, chat, make_client
from samdpo.prompts.text.question_pool import ask_all
from samdpo.prompts.text.vqa import geometry_answer
from tests.openai_server import OpenAIServer, answer_for
from tests.prepared_store import prepare_store, save_tiny_clip

KEY = "sk-test-DO-NOT-STORE-3141"


def _disk(size: int, cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    rows, cols = np.mgrid[:size, :size]
    return ((rows - cy) / ry) ** 2 + ((cols - cx) / rx) ** 2 <= 1.0


def test_geometry_answers_name_shape_size_and_place() -> None:
    assert geometry_answer(_disk(64, 12, 12, 8, 8), "shape").startswith("round, medium")
    assert geometry_answer(_disk(64, 12, 12, 8, 8), "location") == "in the upper left part of the image"
    assert geometry_answer(_disk(64, 32, 32, 8, 12), "shape").startswith("oval")
    assert geometry_answer(_disk(64, 32, 32, 8, 12), "location") == "in the center of the image"
    bar = np.zeros((64, 64), bool)
    bar[50:54, 5:60] = True
    assert geometry_answer(bar, "shape").startswith("elongated (horizontal)")
    ring = _disk(64, 32, 32, 20, 20) & ~_disk(64, 32, 32, 14, 14)
    assert geometry_answer(ring, "shape").startswith("irregular")
    lungs = _disk(64, 32, 14, 10, 7) | _disk(64, 32, 50, 10, 7)
    assert geometry_answer(lungs, "shape").startswith("two separate regions; the largest oval")
    assert geometry_answer(lungs, "location") == "in the left and right part of the image"
    assert geometry_answer(np.zeros((8, 8), bool), "shape") == "not found in the image"
    assert geometry_answer(_disk(64, 32, 32, 3, 3), "size").startswith("small (")
    with pytest.raises(ConfigError, match="geometry VQA backend answers"):
        geometry_answer(bar, "texture")


def test_request_key_is_stable_and_sensitive_to_what_is_asked() -> None:
    request = {
        "messages": [{"role": "user", "content": "Where is the liver located?"}],
        "parameters": {"temperature": 0},
    }
    key = request_key("openai", "gpt-4o", request)
    assert key == request_key("openai", "gpt-4o", json.loads(json.dumps(request)))
    assert len(key) == 64
    assert key != request_key("openai", "gpt-4o-mini", request)
    assert key != request_key("openai", "gpt-4o", {**request, "parameters": {"temperature": 1}})


def test_ask_all_keeps_order_and_stops_at_the_first_failure() -> None:
    assert ask_all(list(range(10)), str, workers=3, progress=False) == [str(i) for i in range(10)]
    asked = []

    def answer(question: int) -> str:
        asked.append(question)
        if question == 3:
            raise AnswerError("image x, class y: no answer")
        time.sleep(0.01)
        return str(question)

    with pytest.raises(AnswerError, match="image x, class y"):
        ask_all(list(range(100)), answer, workers=2, progress=False)
    assert len(asked) < 10  # nothing started after the failure beyond the questions in flight


def _settings(server: OpenAIServer, **extra) -> OpenAISettings:
    return OpenAISettings(
        model="vision-test", base_url=server.base_url, timeout_s=5, retries=2, backoff_s=0.01, **extra
    )


@pytest.fixture()
def api_key(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    return KEY


MESSAGES = [{"role": "user", "content": "Where is the spleen located?"}]


def test_rate_limits_and_server_errors_are_retried_then_answered(api_key: str) -> None:
    script = ["429", "500", "ok"]
    with OpenAIServer(lambda n: script[n]) as server:
        settings = _settings(server)
        assert chat(make_client(settings), settings, MESSAGES, "image a, class spleen") == answer_for(
            {"model": "vision-test", "messages": MESSAGES}
        )
        assert len(server.requests) == 3
        assert server.authorizations == [f"Bearer {KEY}"] * 3


@pytest.mark.parametrize(
    "mode,reason",
    [("500", "HTTP 500"), ("429", "HTTP 429"), ("malformed", "JSONDecodeError"), ("timeout", "timed out")],
)
def test_persistent_faults_fail_after_retries_naming_image_and_class(api_key: str, mode: str, reason: str) -> None:
    with OpenAIServer(lambda n: mode, delay_s=1.0) as server:
        settings = OpenAISettings(
            model="vision-test", base_url=server.base_url, timeout_s=0.3, retries=2, backoff_s=0.01
        )
        with pytest.raises(AnswerError, match=f"image benign_3, class tumor.*after 3 attempts: {reason}"):
            chat(make_client(settings), settings, MESSAGES, "image benign_3, class tumor")
        assert len(server.requests) == 3


def test_unauthorised_is_not_retried(api_key: str) -> None:
    with OpenAIServer(lambda n: "401") as server:
        settings = _settings(server)
        with pytest.raises(AnswerError, match="refused the request: HTTP 401"):
            chat(make_client(settings), settings, MESSAGES, "class lungs")
        assert len(server.requests) == 1


def test_missing_key_fails_at_once_saying_how_to_set_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with OpenAIServer() as server:
        with pytest.raises(ConfigError, match=r"export OPENAI_API_KEY=sk-"):
            make_client(_settings(server))
        assert server.requests == []


def test_knowledge_descriptions_cover_every_dataset_class() -> None:
    from samdpo.data.amos import AMOS_CLASSES

    llm = KnowledgeLLM()
    for modality, classes in (
        ("abdominal CT", AMOS_CLASSES),
        ("abdominal MRI", AMOS_CLASSES),
        ("breast ultrasound", ("tumor",)),
        ("chest X-ray", ("lungs",)),
    ):
        for request in make_requests(list(classes), modality, "Describe the {name} in {modality}."):
            assert len(llm.ask(request)) > 60
    assert llm.model.startswith("descriptions.yaml@sha256:")
    with pytest.raises(ConfigError, match="no descriptions for modality 'PET'"):
        llm.ask(make_requests(["liver"], "PET", "{name}")[0])
    with pytest.raises(ConfigError, match=r"llm.prompt: bad template"):
        make_requests(["liver"], "CT", "Describe the {organ}")


# --- the commands on a small prepared BUSI store ---------------------------------------------


@pytest.fixture(scope="module")
def visual(busi_root: Path, tiny_clip, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A prepared store with saliency maps and the CRF table (tiny CLIP, 64 px)."""
    root = tmp_path_factory.mktemp("visual")
    save_tiny_clip(tiny_clip, root / "clip")
    store = root / "store"
    prepare_store("busi", busi_root, store, 64)
    args = ["--store", str(store), "--no-progress"]
    assert (
        main(
            [
                "prompts",
                "saliency",
                *args,
                "--out",
                str(root / "p"),
                "--clip",
                f"local-dir:{root / 'clip'}",
                "--settings",
                '{"top_k": 4}',
            ]
        )
        == 0
    )
    crf = ["--crf", '{"sigmoid_center": 0.5}']
    assert (
        main(["prompts", "crf", *args, *crf, "--saliency", str(root / "p"), "--out", str(root / "p" / "crf.parquet")])
        == 0
    )
    return root


def text_prompts(
    root: Path, out: Path, vqa: dict | None = None, llm: dict | None = None, cache: Path | None = None
) -> tuple[int, int]:
    """Run `prompts vqa` and `prompts llm`; their exit codes."""
    common = [
        "--store",
        str(root / "store"),
        "--modality",
        "breast ultrasound",
        "--cache",
        str(cache or out / "answers"),
        "--no-progress",
    ]
    crf = ["--crf", str(root / "p" / "crf.parquet")]
    vqa_code = main(
        ["prompts", "vqa", *common, *crf, "--out", str(out / "vqa.parquet"), "--settings", json.dumps(vqa or {})]
    )
    llm_code = main(["prompts", "llm", *common, "--out", str(out / "llm.parquet"), "--settings", json.dumps(llm or {})])
    return vqa_code, llm_code


def _meta(path: Path) -> dict:
    return json.loads(pq.read_schema(path).metadata[b"samdpo"])


def test_openai_answers_are_cached_and_a_rerun_asks_nothing(visual: Path, tmp_path: Path, api_key: str, capsys) -> None:
    with OpenAIServer() as server:
        backend = {
            "backend": "openai",
            "openai": {"model": "vision-test", "base_url": server.base_url, "backoff_s": 0.01, "workers": 3},
        }
        assert text_prompts(visual, tmp_path, backend, backend) == (0, 0)
        vqa = pq.read_table(tmp_path / "vqa.parquet").to_pylist()
        images = len(pq.read_table(visual / "store" / "samples.parquet"))
        assert len(vqa) == images * 2 and len(server.requests) == images * 2 + 1
        assert vqa[0]["answer"].startswith("vision-test says") and vqa[0]["question"] in vqa[0]["answer"]
        assert _meta(tmp_path / "vqa.parquet")["asked"] == images * 2 and _meta(tmp_path / "llm.parquet")["asked"] == 1
        image_part = server.requests[0]["messages"][1]["content"][1]["image_url"]["url"]
        assert image_part.startswith("data:image/png;base64,")

        first = pq.read_table(tmp_path / "vqa.parquet")
        assert text_prompts(visual, tmp_path, backend, backend) == (0, 0)
        assert len(server.requests) == images * 2 + 1  # nothing asked again
        assert _meta(tmp_path / "vqa.parquet")["asked"] == 0 and _meta(tmp_path / "vqa.parquet")["reused"] == images * 2
        assert pq.read_table(tmp_path / "vqa.parquet").equals(first)
    # the key is nowhere: not in the cache, the tables or the output
    output = capsys.readouterr()
    for path in [*(tmp_path / "answers").rglob("*"), tmp_path / "vqa.parquet", tmp_path / "llm.parquet"]:
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), path
    assert KEY not in output.out + output.err


def test_an_interrupted_run_resumes_asking_only_what_is_missing(
    visual: Path, tmp_path: Path, api_key: str, capsys
) -> None:
    images = len(pq.read_table(visual / "store" / "samples.parquet"))
    with OpenAIServer(lambda n: "ok" if n < 5 else "500") as server:
        backend = {
            "backend": "openai",
            "openai": {
                "model": "vision-test",
                "base_url": server.base_url,
                "backoff_s": 0.01,
                "retries": 1,
                "workers": 1,
            },
        }
        assert text_prompts(visual, tmp_path, backend)[0] == 2
        error = capsys.readouterr().err
        assert (
            "samdpo: error: image benign_" in error and "class tumor" in error and "after 2 attempts: HTTP 500" in error
        )
        assert not (tmp_path / "vqa.parquet").exists()  # nothing half-written
    with OpenAIServer() as server:
        backend["openai"]["base_url"] = server.base_url
        assert text_prompts(visual, tmp_path, backend)[0] == 0
        assert len(server.requests) == images * 2 - 5  # the 5 answered before are not asked again
        assert _meta(tmp_path / "vqa.parquet")["reused"] == 5


def test_missing_key_stops_the_vqa_command_before_any_question(
    visual: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with OpenAIServer() as server:
        backend = {"backend": "openai", "openai": {"model": "m", "base_url": server.base_url}}
        assert text_prompts(visual, tmp_path, backend)[0] == 2
        assert server.requests == []
    assert "export OPENAI_API_KEY" in capsys.readouterr().err
    assert not (tmp_path / "vqa.parquet").exists()


def test_default_backends_and_the_prompt_store(visual: Path, tmp_path: Path, capsys) -> None:
    assert text_prompts(visual, tmp_path) == (0, 0)
    assert _meta(tmp_path / "vqa.parquet")["model"] == "crf-mask-geometry"
    out = tmp_path / "prompts_cache" / "busi"
    p = visual / "p"
    args = ["prompts", "store", "--store", str(visual / "store"), "--saliency", str(p), "--crf", str(p / "crf.parquet")]
    args += [
        "--vqa",
        str(tmp_path / "vqa.parquet"),
        "--llm",
        str(tmp_path / "llm.parquet"),
        "--out",
        str(out),
        "--saliency-size",
        "32",
        "--no-progress",
    ]
    assert main(args) == 0
    samples = pq.read_table(visual / "store" / "samples.parquet").column("sample_id").to_pylist()
    assert sorted(f.stem for f in out.glob("*.parquet")) == sorted(samples) and (out / "_settings.json").is_file()
    assert not [f for f in out.parent.iterdir() if f.name.startswith(".")]  # no temporary folder left
    rows, meta = read_prompts(out / f"{samples[0]}.parquet")
    (row,) = rows
    assert row["sample_id"] == samples[0] and row["class_name"] == "tumor" and row["modality"] == "breast ultrasound"
    assert (
        array(row, "image").shape == (64, 64)
        and array(row, "saliency").shape == (32, 32)
        and array(row, "mask").shape == (64, 64)
    )
    assert [qa["question_id"] for qa in row["vqa"]] == ["shape", "location"]
    assert row["description"].startswith("A breast tumor on ultrasound")
    assert (
        row["vqa_backend"] == "geometry" and row["llm_backend"] == "knowledge" and row["clip"].startswith("local-dir:")
    )
    assert len(row["visual_hash"]) == len(row["vqa_hash"]) == len(row["llm_hash"]) == 16
    assert (
        meta["format_version"] == 2
        and meta["settings"]["presence"] is None
        and row["presence"] is None
        and row["present"] is True
        and meta["settings"]["vqa"]["settings"]["questions"]["shape"] == "What is the shape of the {name}?"
    )
    mask = array(row, "mask")
    assert row["has_box"] == bool(mask.any())

    assert main(["prompts", "show", str(out / f"{samples[0]}.parquet")]) == 0
    table = capsys.readouterr().out
    assert "tumor" in table and samples[0] in table
    assert (
        main(["prompts", "show", str(out / f"{samples[0]}.parquet"), "--json", "--png", str(tmp_path / "show.png")])
        == 0
    )
    shown = json.loads(capsys.readouterr().out)
    assert shown["records"][0]["vqa"] == row["vqa"]
    assert (tmp_path / "show.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_merge_refuses_tables_of_other_samples(visual: Path, tmp_path: Path, capsys) -> None:
    assert text_prompts(visual, tmp_path) == (0, 0)
    vqa = pq.read_table(tmp_path / "vqa.parquet")
    pq.write_table(vqa.slice(0, 2).replace_schema_metadata(vqa.schema.metadata), tmp_path / "vqa.parquet")
    p = visual / "p"
    args = ["prompts", "store", "--store", str(visual / "store"), "--saliency", str(p), "--crf", str(p / "crf.parquet")]
    args += [
        "--vqa",
        str(tmp_path / "vqa.parquet"),
        "--llm",
        str(tmp_path / "llm.parquet"),
        "--out",
        str(tmp_path / "out"),
        "--no-progress",
    ]
    assert main(args) == 2
    assert "vqa.parquet: no answers for" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
