"""Reliability of the checkpoint, align and prompt commands: bad input gets one clear line (exit 2),
nothing half-written; pickles that call code are never run; Ctrl-C keeps every answer received."""

from __future__ import annotations

import json
import os
import pickle
import socket
import zipfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from samdpo.align.candidates import CandidateSettings, pack_masks, write_candidates
from samdpo.cli import main
from samdpo.errors import ConfigError, DataError
from samdpo.prompts.store import SCHEMA, SETTINGS_FILE
from samdpo.prompts.text.answer_cache import AnswerCache
from samdpo.sam.builders import build_sam
from samdpo.sam.checkpoints import TrustNeeded, convert_checkpoint, load_checkpoint, pickle_globals, read_state_dict
from samdpo.sam.settings import SamSettings
from tests.openai_server import OpenAIServer
from tests.prepared_store import prepare_store
from tests.prompt_rows import SIZE, prompt_row
from tests.reliability import error_line, expect_error

KEY = "sk-test-reliability-2718"


# --- SAM checkpoints -------------------------------------------------------------------------


class _Payload:
    """Unpickling this calls os.system, which writes ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"echo pwned > {self.marker}",))


def _tiny_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return nn.Linear(2, 2).state_dict()


def _dangerous(tmp_path: Path, layout: str) -> tuple[Path, Path]:
    """A checkpoint whose pickle calls os.system (``layout``: zip, legacy torch.save or a plain pickle), and its
    marker."""
    marker = tmp_path / "pwned"
    obj = {"model": _tiny_state(), "optimizer": _Payload(marker)}
    path = tmp_path / f"evil_{layout}.pth"
    if layout == "pickle":
        path.write_bytes(pickle.dumps(obj, protocol=4))
    else:
        torch.save(obj, path, _use_new_zipfile_serialization=layout == "zip")
    return path, marker


@pytest.mark.parametrize("layout", ["zip", "legacy", "pickle"])
def test_checkpoint_that_calls_code_is_refused_and_never_run(tmp_path: Path, layout: str, capsys) -> None:
    src, marker = _dangerous(tmp_path, layout)
    assert "posix.system" in pickle_globals(src) or "nt.system" in pickle_globals(src)
    model = nn.Linear(2, 2)
    with pytest.raises(ConfigError, match=r"tries to call (posix|nt)\.system") as err:
        load_checkpoint(model, src)
    assert "--trust-pickle" not in str(err.value) and "Do not load or convert" in str(err.value)
    dst = tmp_path / "out.safetensors"
    for flags in ([], ["--trust-pickle"]):
        line = expect_error(
            ["sam", "convert", str(src), str(dst), *flags],
            capsys,
            str(src),
            "system",
            "Do not load or convert",
            absent=[dst, marker],
        )
        assert "--trust-pickle" not in line
    with pytest.raises(ConfigError, match="system"):
        convert_checkpoint(src, dst, trust_pickle=True)
    assert not marker.exists()


def test_checkpoint_stack_global_hidden_behind_the_memo_is_found(tmp_path: Path, capsys) -> None:
    # protocol 4 memoises module and name strings; a later STACK_GLOBAL reuses them through BINGET
    marker = tmp_path / "pwned"
    payload = pickle.dumps([("posix", "system"), _Payload(marker)], protocol=4)
    src = tmp_path / "memo.pth"
    src.write_bytes(payload)
    expect_error(
        ["sam", "convert", str(src), str(tmp_path / "o.safetensors"), "--trust-pickle"],
        capsys,
        "system",
        absent=[marker],
    )


@pytest.mark.parametrize("content", [b"", b"junk", os.urandom(256), b"PK\x03\x04 truncated zip"])
def test_checkpoint_that_is_no_pickle_is_called_unreadable(tmp_path: Path, content: bytes, capsys) -> None:
    src = tmp_path / "random.pth"
    src.write_bytes(content)
    with pytest.raises(DataError, match="random.pth") as err:
        read_state_dict(src)
    assert "convert" not in str(err.value)
    line = expect_error(
        ["sam", "convert", str(src), str(tmp_path / "o.safetensors"), "--trust-pickle"],
        capsys,
        str(src),
        "not a checkpoint",
    )
    assert "--trust-pickle" not in line


def test_checkpoint_zip_without_data_pkl_is_not_a_checkpoint(tmp_path: Path, capsys) -> None:
    src = tmp_path / "archive.pth"
    with zipfile.ZipFile(src, "w") as archive:
        archive.writestr("archive/readme.txt", "hello")
    expect_error(
        ["sam", "convert", str(src), str(tmp_path / "o.safetensors"), "--trust-pickle"], capsys, str(src), "data.pkl"
    )


def test_convert_without_trust_names_the_flag(tmp_path: Path, capsys) -> None:
    src = tmp_path / "epoch1.pth"
    model = nn.Linear(2, 2)
    torch.save({"model": model.state_dict(), "optimizer": torch.optim.Adam(model.parameters())}, src)
    dst = tmp_path / "epoch1.safetensors"
    line = expect_error(
        ["sam", "convert", str(src), str(dst)],
        capsys,
        str(src),
        "--trust-pickle",
        "torch.optim.adam.Adam",
        absent=[dst],
    )
    assert "trust_pickle=True" not in line
    with pytest.raises(TrustNeeded, match="trust_pickle=True"):  # library callers read the argument's name
        convert_checkpoint(src, dst, trust_pickle=False)
    with pytest.raises(
        ConfigError, match=r"torch\.optim\.adam\.Adam(.|\n)*--trust-pickle"
    ):  # loading says how to convert
        load_checkpoint(model, src)
    assert main(["sam", "convert", str(src), str(dst), "--trust-pickle"]) == 0
    assert set(read_state_dict(dst)) == {"weight", "bias"}


def test_convert_of_a_missing_checkpoint(tmp_path: Path, capsys) -> None:
    dst = tmp_path / "o.safetensors"
    expect_error(
        ["sam", "convert", str(tmp_path / "absent.pth"), str(dst), "--trust-pickle"],
        capsys,
        "not found",
        "absent.pth",
        absent=[dst],
    )


def test_convert_to_another_suffix(tmp_path: Path, capsys) -> None:
    src = tmp_path / "w.pth"
    torch.save(_tiny_state(), src)
    expect_error(
        ["sam", "convert", str(src), str(tmp_path / "w.bin"), "--trust-pickle"],
        capsys,
        ".safetensors",
        "w.bin",
        absent=[tmp_path / "w.bin"],
    )


def test_convert_failure_leaves_an_existing_output_intact(tmp_path: Path, capsys) -> None:
    src, marker = _dangerous(tmp_path, "zip")
    dst = tmp_path / "kept.safetensors"
    save_file(_tiny_state(), dst)
    before = dst.read_bytes()
    expect_error(
        ["sam", "convert", str(src), str(dst), "--trust-pickle"],
        capsys,
        "system",
        intact={dst: before},
        absent=[marker],
    )


def test_safetensors_with_wrong_keys_lists_them(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_sam(SamSettings("small", 64))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["extra.weight"] = state.pop("mask_decoder.iou_token.weight")
    save_file(state, tmp_path / "edited.safetensors")
    with pytest.raises(
        ConfigError,
        match=r"edited\.safetensors(.|\n)*1 missing, 1 "
        r"unexpected(.|\n)*mask_decoder\.iou_token\.weight(.|\n)*extra\.weight",
    ):
        load_checkpoint(model, tmp_path / "edited.safetensors")
    with pytest.raises(DataError, match="not found"):
        load_checkpoint(model, tmp_path / "absent.safetensors")


@pytest.mark.parametrize(
    "sam,needle", [("{not json", "--sam is not valid JSON"), ("[1]", "--sam must be a JSON object")]
)
def test_bad_sam_json_is_refused_before_reading_data(tmp_path: Path, sam: str, needle: str, capsys) -> None:
    args = [
        "prompts",
        "refine",
        "--store",
        str(tmp_path / "no-store"),
        "--saliency",
        str(tmp_path / "no-saliency"),
        "--crf",
        str(tmp_path / "crf.parquet"),
    ]
    out = tmp_path / "refined.parquet"
    expect_error([*args, "--embeddings", str(tmp_path), "--sam", sam, "--out", str(out)], capsys, needle, absent=[out])


def test_unknown_sam_name_lists_the_builders() -> None:
    with pytest.raises(ConfigError, match=r"sam.name: unknown SAM 'sam_vit_x'.*small"):
        SamSettings("sam_vit_x", 64)


# --- align -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def store(busi_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A prepared 32 px BUSI store."""
    out = tmp_path_factory.mktemp("store") / "busi"
    prepare_store("busi", busi_root, out, 32)
    return out


def _sample_ids(store: Path) -> list[str]:
    return pq.read_table(store / "samples.parquet").column("sample_id").to_pylist()


@pytest.fixture()
def candidates(store: Path, tmp_path: Path) -> Path:
    ids = _sample_ids(store)[:3]
    masks = np.random.default_rng(0).random((len(ids), 1, 4, 32, 32)) > 0.5
    meta = {
        "dataset": "busi",
        "sample_ids": ids,
        "class_names": ["tumor"],
        "count": 4,
        "size": 32,
        "candidates": CandidateSettings().describe(),
        "model": "m",
        "model_settings_hash": "h",
    }
    write_candidates(tmp_path / "candidates", pack_masks(masks), meta)
    return tmp_path / "candidates"


@pytest.mark.parametrize(
    "reference,given,needles",
    [
        ("prompt", [], ["--reference prompt", "--prompts"]),
        ("uncertainty", ["--prompts", "p"], ["--reference uncertainty", "--model", "--texts"]),
        ("uncertainty", [], ["--model", "--texts", "--prompts"]),
    ],
)
def test_annotate_reference_without_its_inputs(
    store: Path, candidates: Path, tmp_path: Path, reference: str, given: list, needles: list, capsys
) -> None:
    out = tmp_path / "annotations.parquet"
    args = [
        "align",
        "annotate",
        "--store",
        str(store),
        "--candidates",
        str(candidates),
        "--out",
        str(out),
        "--reference",
        reference,
        *given,
    ]
    expect_error(args, capsys, *needles, absent=[out])


def test_annotate_reference_prompt_without_prompt_files(store: Path, candidates: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "annotations.parquet"
    args = [
        "align",
        "annotate",
        "--store",
        str(store),
        "--candidates",
        str(candidates),
        "--out",
        str(out),
        "--reference",
        "prompt",
        "--prompts",
        str(tmp_path),
    ]
    expect_error(args, capsys, "no prompt file for image", "prompt_store", absent=[out])


@pytest.mark.parametrize("noise", ["-0.1", "1.5"])
def test_annotate_noise_out_of_range(store: Path, candidates: Path, tmp_path: Path, noise: str, capsys) -> None:
    out = tmp_path / "annotations.parquet"
    args = [
        "align",
        "annotate",
        "--store",
        str(store),
        "--candidates",
        str(candidates),
        "--out",
        str(out),
        "--noise",
        noise,
    ]
    expect_error(args, capsys, "--noise", noise, absent=[out])


@pytest.mark.parametrize("action", ["annotate", "train"])
def test_align_with_a_missing_candidates_folder(store: Path, tmp_path: Path, action: str, capsys) -> None:
    out = tmp_path / "out"
    args = ["align", action, "--store", str(store), "--candidates", str(tmp_path / "absent"), "--out", str(out)]
    if action == "train":
        args += ["--annotations", "a", "--prompts", "p", "--texts", "t", "--model", str(tmp_path)]
    expect_error(args, capsys, "absent", "run the candidates rule", absent=[out])


def test_align_candidates_of_another_store(store: Path, tmp_path: Path, capsys) -> None:
    meta = {
        "sample_ids": ["not_in_store"],
        "class_names": ["tumor"],
        "count": 2,
        "size": 32,
        "candidates": CandidateSettings(thresholds=(0.3, 0.5), count=2).describe(),
        "model_settings_hash": "h",
    }
    write_candidates(tmp_path / "other", pack_masks(np.zeros((1, 1, 2, 32, 32), bool)), meta)
    out = tmp_path / "a.parquet"
    expect_error(
        ["align", "annotate", "--store", str(store), "--candidates", str(tmp_path / "other"), "--out", str(out)],
        capsys,
        "other samples or classes",
        absent=[out],
    )


def test_align_train_with_a_missing_model_folder(store: Path, candidates: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "stage2"
    args = [
        "align",
        "train",
        "--store",
        str(store),
        "--candidates",
        str(candidates),
        "--annotations",
        "a",
        "--prompts",
        "p",
        "--texts",
        "t",
    ]
    expect_error(
        [*args, "--model", str(tmp_path / "no-model"), "--out", str(out)],
        capsys,
        "no-model",
        "settings.json",
        absent=[out],
    )


def test_align_train_anchor_on_labeled_without_splits(tmp_path: Path, capsys) -> None:
    out = tmp_path / "stage2"
    args = [
        "align",
        "train",
        "--store",
        "s",
        "--candidates",
        "c",
        "--annotations",
        "a",
        "--prompts",
        "p",
        "--texts",
        "t",
        "--model",
        "m",
    ]
    settings = json.dumps({"anchor_weight": 0.5, "anchor_on": "labeled"})
    expect_error([*args, "--settings", settings, "--out", str(out)], capsys, "--splits", absent=[out])


def test_align_candidates_bad_thresholds_before_reading(tmp_path: Path, capsys) -> None:
    out = tmp_path / "c"
    for settings, message in (
        ('{"thresholds": [0.6, 0.3]}', "candidates.thresholds"),
        ('{"source": ["sampling"]}', "align.candidates.source"),
        ('{"count": 1}', "count"),
        ('{"source": ["perturb"]}', "absent"),  # good settings: then the missing probabilities are named
    ):
        expect_error(
            ["align", "candidates", "--probs", str(tmp_path / "absent"), "--out", str(out), "--settings", settings],
            capsys,
            message,
            absent=[out],
        )
    expect_error(
        ["align", "candidates", "--probs", str(tmp_path / "absent"), "--out", str(out)],
        capsys,
        "absent",
        "run the prediction rule",
        absent=[out],
    )


# --- the answer cache, VQA and LLM commands --------------------------------------------------


def _crf_table(store: Path, path: Path) -> Path:
    """A minimal CRF table (one centred square mask per image) for the geometry VQA backend."""
    mask = np.zeros((32, 32), dtype=bool)
    mask[8:20, 10:22] = True
    rows = [
        {"sample_id": s, "class_index": 0, "mask": np.packbits(mask).tobytes(), "mask_shape": [32, 32]}
        for s in _sample_ids(store)
    ]
    table = pa.Table.from_pylist(rows).replace_schema_metadata({"samdpo": json.dumps({"settings_hash": "crf-test"})})
    pq.write_table(table, path)
    return path


def _text_command(step: str, store: Path, tmp_path: Path, settings: dict, cache: Path | None = None) -> list[str]:
    args = [
        "prompts",
        step,
        "--store",
        str(store),
        "--out",
        str(tmp_path / f"{step}.parquet"),
        "--modality",
        "breast ultrasound",
    ]
    args += ["--cache", str(cache or tmp_path / "answers"), "--settings", json.dumps(settings), "--no-progress"]
    return [*args, "--crf", str(_crf_table(store, tmp_path / "crf.parquet"))] if step == "vqa" else args


def _asked(path: Path) -> tuple[int, int]:
    meta = json.loads(pq.read_schema(path).metadata[b"samdpo"])
    return meta["asked"], meta["reused"]


def _damage_pages(database: Path) -> None:
    """Overwrite everything after SQLite's first page: the header reads, the tables do not."""
    data = bytearray(database.read_bytes())
    data[4096:] = bytes((7 * b + 3) % 256 for b in data[4096:])
    database.write_bytes(bytes(data))


@pytest.mark.parametrize("step", ["vqa", "llm"])
@pytest.mark.parametrize("damage", ["garbage", "pages"])
def test_damaged_answer_cache(store: Path, tmp_path: Path, step: str, damage: str, capsys) -> None:
    cache = tmp_path / "answers"
    with AnswerCache(cache) as answers:  # a real cache with some answers, then damaged
        for n in range(200):
            answers.get_or_ask(f"k{n}", lambda: "x" * 100, "openai", "m")
    database = cache / "cache.db"
    if damage == "garbage":
        database.write_bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    else:
        _damage_pages(database)
    out = tmp_path / f"{step}.parquet"
    expect_error(
        _text_command(step, store, tmp_path, {}, cache), capsys, str(database), "delete the folder", absent=[out]
    )


def test_answer_cache_damaged_while_asking_is_a_data_error(tmp_path: Path) -> None:
    cache = tmp_path / "answers"
    with AnswerCache(cache) as answers:
        for n in range(200):
            answers.get_or_ask(f"k{n}", lambda: "x" * 100, "openai", "m")
    _damage_pages(cache / "cache.db")
    with pytest.raises(DataError, match="cache.db"):
        with AnswerCache(cache) as answers:
            answers.get_or_ask("k5", lambda: "new", "openai", "m")


def test_answer_cache_on_a_file(tmp_path: Path, capsys) -> None:
    (tmp_path / "answers").write_text("not a folder")
    with pytest.raises(DataError, match="cannot use the answer cache"):
        AnswerCache(tmp_path / "answers")


def _openai(server: OpenAIServer, **extra: object) -> dict:
    return {
        "backend": "openai",
        "openai": {
            "model": "vision-test",
            "base_url": server.base_url,
            "backoff_s": 0.01,
            "retries": 0,
            "workers": 1,
            **extra,
        },
    }


def test_ctrl_c_keeps_every_answer_and_exits_130(
    store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    import samdpo.prompts.text.vqa as vqa

    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    real_chat, calls = vqa.chat, []

    def interrupted(*args: object) -> str:
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real_chat(*args)

    images = len(_sample_ids(store))
    with OpenAIServer() as server:
        monkeypatch.setattr(vqa, "chat", interrupted)
        capsys.readouterr()
        assert main(_text_command("vqa", store, tmp_path, _openai(server))) == 130
        err = capsys.readouterr().err
        assert "samdpo: interrupted" in err and "Traceback" not in err
        assert not (tmp_path / "vqa.parquet").exists()
        monkeypatch.setattr(vqa, "chat", real_chat)
        assert main(_text_command("vqa", store, tmp_path, _openai(server))) == 0
        assert len(server.requests) == images * 2  # 3 before Ctrl-C, the rest after: none asked twice
    assert _asked(tmp_path / "vqa.parquet") == (images * 2 - 3, 3)


def test_openai_backend_without_its_key(store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.delenv("SAMDPO_TEST_KEY", raising=False)
    with OpenAIServer() as server:
        settings = _openai(server, api_key_env="SAMDPO_TEST_KEY")
        expect_error(
            _text_command("llm", store, tmp_path, settings),
            capsys,
            "$SAMDPO_TEST_KEY",
            "export SAMDPO_TEST_KEY",
            absent=[tmp_path / "llm.parquet"],
        )
        assert server.requests == []


def test_openai_server_unreachable(store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = {
        "backend": "openai",
        "openai": {"model": "m", "base_url": f"http://127.0.0.1:{port}/v1", "retries": 1, "backoff_s": 0.01},
    }
    expect_error(
        _text_command("llm", store, tmp_path, settings),
        capsys,
        f"127.0.0.1:{port}",
        "after 2 attempts",
        "connection failed",
        absent=[tmp_path / "llm.parquet"],
    )


@pytest.mark.parametrize(
    "openai,needle",
    [
        ({"modle": "x"}, "llm.openai"),
        ({"cache_endpoint": "yes"}, "openai.cache_endpoint"),
        ({"timeout_s": 0}, "openai.timeout_s"),
    ],
)
def test_bad_openai_settings(
    store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, openai: dict, needle: str, capsys
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    expect_error(
        _text_command("llm", store, tmp_path, {"backend": "openai", "openai": openai}),
        capsys,
        needle,
        absent=[tmp_path / "llm.parquet"],
    )


def test_cache_endpoint_makes_a_new_base_url_ask_again(
    store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    with OpenAIServer() as first, OpenAIServer() as second:
        assert main(_text_command("llm", store, tmp_path, _openai(first))) == 0
        assert (
            main(_text_command("llm", store, tmp_path, _openai(second))) == 0
        )  # the documented limit: served from the cache
        assert _asked(tmp_path / "llm.parquet") == (0, 1) and second.requests == []
        assert main(_text_command("llm", store, tmp_path, _openai(second, cache_endpoint=True))) == 0
        assert _asked(tmp_path / "llm.parquet") == (1, 0) and len(second.requests) == 1
        assert main(_text_command("llm", store, tmp_path, _openai(first, cache_endpoint=True))) == 0
        assert _asked(tmp_path / "llm.parquet") == (1, 0) and len(first.requests) == 2  # per endpoint


# --- prompts show ----------------------------------------------------------------------------


@pytest.fixture()
def prompt_file(tmp_path: Path) -> Path:
    mask = np.zeros((SIZE, SIZE), dtype=bool)
    mask[4:12, 4:12] = True
    saliency = np.full((SIZE, SIZE), 30, dtype=np.uint8)
    rows = [prompt_row(0, "liver", mask, saliency, [4.0, 4.0, 11.0, 11.0], [[8.0, 8.0]], [1])]
    table = pa.Table.from_pylist(rows, schema=SCHEMA).replace_schema_metadata(
        {"samdpo": json.dumps({"dataset": "amos", "sample_id": "case01_s005"})}
    )
    path = tmp_path / "amos" / "case01_s005.parquet"
    path.parent.mkdir()
    pq.write_table(table, path)
    (path.parent / SETTINGS_FILE).write_text("{}")
    return path


def _tamper(path: Path, column: str, value: object) -> bytes:
    table = pq.read_table(path)
    rows = table.to_pylist()
    rows[0][column] = value
    pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA).replace_schema_metadata(table.schema.metadata), path)
    return path.read_bytes()


@pytest.mark.parametrize(
    "column,value,problem",
    [
        ("mask", b"\x01\x02", "2 bytes for shape"),
        ("saliency", b"\x00" * 7, "7 bytes for shape"),
        ("image", b"\x00" * (SIZE * SIZE + 1), "expected"),
        ("saliency_shape", [SIZE, 0], "is not (H, W)"),
        ("box", [float("nan"), 4.0, 11.0, 11.0], "not finite"),
        ("box", [11.0, 4.0, 4.0, 11.0], "inverted"),
        ("points", [[float("inf"), 1.0]], "not finite"),
    ],
)
def test_show_refuses_a_damaged_prompt_file(
    prompt_file: Path, tmp_path: Path, column: str, value: object, problem: str, capsys
) -> None:
    content = _tamper(prompt_file, column, value)
    blob = column.removesuffix("_shape")
    png = tmp_path / "out.png"
    for flags in ([], ["--json"], ["--png", str(png)]):
        expect_error(
            ["prompts", "show", str(prompt_file), *flags],
            capsys,
            str(prompt_file),
            "case01_s005",
            f"column {blob}",
            problem,
            absent=[png],
            intact={prompt_file: content},
        )


@pytest.mark.parametrize("target", ["input", "settings", "folder"])
def test_show_png_onto_an_input_is_refused(prompt_file: Path, target: str, capsys) -> None:
    png = {"input": prompt_file, "settings": prompt_file.parent / SETTINGS_FILE, "folder": prompt_file.parent}[target]
    before = {p: p.read_bytes() for p in (prompt_file, prompt_file.parent / SETTINGS_FILE)}
    relative = os.path.relpath(png)  # the same file by another spelling
    expect_error(["prompts", "show", str(prompt_file), "--png", relative], capsys, "--png", relative, intact=before)


def test_show_missing_file_or_unknown_sample(prompt_file: Path, tmp_path: Path, capsys) -> None:
    expect_error(
        ["prompts", "show", str(prompt_file.parent / "case99_s001.parquet")],
        capsys,
        "case99_s001.parquet",
        "case01_s005",
    )
    expect_error(
        ["prompts", "show", str(tmp_path / "nowhere" / "x.parquet")], capsys, "x.parquet", "run the prompt_store rule"
    )


def test_show_file_that_is_not_a_prompt_file(tmp_path: Path, capsys) -> None:
    (tmp_path / "junk.parquet").write_bytes(b"not parquet")
    expect_error(
        ["prompts", "show", str(tmp_path / "junk.parquet")], capsys, "junk.parquet", "not a readable Parquet file"
    )
    pq.write_table(pa.table({"a": [1]}), tmp_path / "other.parquet")
    expect_error(
        ["prompts", "show", str(tmp_path / "other.parquet")], capsys, "other.parquet", "not a samdpo prompt file"
    )


def test_show_unknown_class(prompt_file: Path, tmp_path: Path, capsys) -> None:
    png = tmp_path / "o.png"
    expect_error(
        ["prompts", "show", str(prompt_file), "--classes", "spleen", "--png", str(png)],
        capsys,
        "spleen",
        "liver",
        absent=[png],
    )


def test_interrupt_prints_one_line(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    import samdpo.prompts.store_view as show

    def interrupted(*args: object, **kwargs: object) -> str:
        raise KeyboardInterrupt

    monkeypatch.setattr(show, "show", interrupted)
    assert main(["prompts", "show", "anything.parquet"]) == 130
    err = capsys.readouterr().err
    assert err.strip() == "samdpo: interrupted"
    with pytest.raises(AssertionError):
        error_line(err)  # not an input error: no "samdpo: error:" line


def test_a_damaged_blob_is_an_error_wherever_it_is_decoded(prompt_file: Path) -> None:
    """Not only `prompts show`: every reader of a stored array (CRF masks, saliency) refuses a truncated blob instead
    of zero-padding it."""
    from samdpo.prompts.store import array, read_prompts

    _tamper(prompt_file, "mask", b"\x01\x02")
    rows, _ = read_prompts(prompt_file)
    with pytest.raises(
        DataError,
        match=r"sample .*, class liver: the mask column holds 2 bytes where its shape \[\d+, \d+\] needs \d+; the "
        r"file is damaged",
    ):
        array(rows[0], "mask")


def test_a_corrupt_prompt_settings_file_is_named(prompt_file: Path, capsys) -> None:
    settings = prompt_file.parent / SETTINGS_FILE
    settings.write_text("{truncated")
    expect_error(
        ["prompts", "show", str(prompt_file)],
        capsys,
        str(settings),
        "unreadable prompt settings",
        "rerun the prompt_store rule",
    )


def test_predict_with_a_missing_model_folder(tmp_path: Path, capsys) -> None:
    out = tmp_path / "probs"
    args = [
        "--store",
        str(tmp_path / "s"),
        "--splits",
        str(tmp_path / "s.csv"),
        "--prompts",
        str(tmp_path),
        "--texts",
        str(tmp_path / "t"),
    ]
    expect_error(
        ["train", "predict", *args, "--model", str(tmp_path / "no-model"), "--out", str(out)],
        capsys,
        str(tmp_path / "no-model" / "settings.json"),
        "give a folder written by stage-1 training",
        absent=[out],
    )


def test_an_unknown_sam_name_without_image_size_is_named() -> None:
    from samdpo.sam.specs import resolve_sam

    with pytest.raises(ConfigError, match=r"sam.name: unknown SAM 'sam_vit_x'; choose one of .*lite_medsam.*small"):
        resolve_sam({"name": "sam_vit_x"}, 64)
