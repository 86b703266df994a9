"""Real human feedback: the decision file (append, resume, undo, refusals), the grading queue and drawings,
the web app's API and its security cases, and the merge into the annotations ``align`` trains on."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image
from starlette.testclient import TestClient

from samdpo.align.agreement import NOT_DECIDED, SKIPPED
from samdpo.align.annotator import EQUAL, not_graded, read_annotations
from samdpo.align.candidates import read_candidates
from samdpo.cli import main
from samdpo.errors import ConfigError, DataError
from samdpo.human.app import create_app
from samdpo.human.decisions import DecisionLog, decisions_path, graded, ranked
from samdpo.human.server import DECISIONS, open_session
from samdpo.human.session import COLOURS, window
from tests.human_data import grading_run
from tests.prepared_store import prepare_store
from tests.reliability import expect_error


@pytest.fixture()
def run(tmp_path: Path) -> tuple[Path, Path]:
    """Prompts and candidates of 6 images x 2 classes (two pairs with all candidates empty)."""
    return grading_run(tmp_path / "run", images=6)


def _session(run: tuple[Path, Path], folder: Path, name: str = "alice", mode: str = "score"):
    prompts, candidates = run
    return open_session(candidates, prompts, folder, name, mode)


# --- the decision file -------------------------------------------------------------------------


def test_decisions_are_written_in_the_annotators_schema_and_resume(run, tmp_path: Path) -> None:
    meta = read_candidates(run[1]).meta
    path = decisions_path(tmp_path / "annotations", "alice")
    log = DecisionLog(path, "alice", "score", meta)
    log.append("case000", 0, graded([1, 2, 4, 4], 4), 3.5)
    log.append("case001", 1, not_graded(4, "score", SKIPPED), 1.0)
    found = read_annotations(path)  # align's own reader
    assert found[("case000", 0)].grades.tolist() == [1, 2, 4, 4]
    assert found[("case000", 0)].ties.tolist() == [1, 2, 4, 4] and found[("case000", 0)].has_preference
    assert found[("case001", 1)].reason == SKIPPED and not found[("case001", 1)].has_preference
    table = pq.read_table(path)
    assert table.column("annotator").to_pylist() == ["alice", "alice"]
    assert table.column("seconds").to_pylist() == [3.5, 1.0]
    assert all(when.endswith("+00:00") for when in table.column("decided_at").to_pylist())
    resumed = DecisionLog(path, "alice", "score", meta)
    assert resumed.decided() == {("case000", 0), ("case001", 1)}
    assert resumed.undo() == ("case001", 1)
    assert DecisionLog(path, "alice", "score", meta).decided() == {("case000", 0)}
    with pytest.raises(DataError, match="already decided"):
        resumed.append("case000", 0, graded([1, 1, 1, 2], 4), 1.0)
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left


def test_a_ranking_becomes_tie_groups_best_highest() -> None:
    annotation = ranked([1, 3, 0, 2], 4)  # candidate 1 best, then 3, 0, 2
    assert annotation.order.tolist() == [1, 3, 0, 2]
    assert annotation.ties.tolist() == [1, 3, 0, 2]  # per candidate 0..3: position from the worst
    assert annotation.grades is None
    with pytest.raises(DataError, match="each of the 4 candidates once"):
        ranked([0, 0, 1, 2], 4)
    with pytest.raises(DataError, match="4 grades in 1..4"):
        graded([1, 2, 5, 1], 4)
    assert graded([3, 3, 3, 3], 4).reason == EQUAL


def test_a_decision_file_of_other_candidates_or_mode_is_refused(run, tmp_path: Path) -> None:
    meta = read_candidates(run[1]).meta
    path = decisions_path(tmp_path, "bob")
    DecisionLog(path, "bob", "score", meta).append("case000", 0, graded([1, 2, 3, 4], 4), 2.0)
    with pytest.raises(DataError, match=rf"{path.name}.*model_settings_hash"):
        DecisionLog(path, "bob", "score", {**meta, "model_settings_hash": "other"})
    with pytest.raises(DataError, match=rf"{path.name}.*mode"):
        DecisionLog(path, "bob", "rank", meta)
    path.write_bytes(b"not parquet")
    with pytest.raises(DataError, match="not a readable decision file"):
        DecisionLog(path, "bob", "score", meta)


@pytest.mark.parametrize("name", ["../evil", "", "a b", "x" * 41])
def test_annotator_names_that_cannot_name_a_file_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(ConfigError, match="annotator name"):
        decisions_path(tmp_path, name)


# --- the queue and the drawings ----------------------------------------------------------------


def test_the_queue_leaves_out_pairs_whose_candidates_are_all_the_same(run, tmp_path: Path) -> None:
    session = _session(run, tmp_path)
    candidates = read_candidates(run[1])
    ids = [p.id for p in session.pairs]
    assert "0-1" not in ids and "3-1" not in ids and len(ids) == 10  # 6 x 2 minus the two empty spleens
    assert all(candidates.masks(p.image, p.class_index).any() for p in session.pairs)
    assert session.current().id == "0-0" and session.following(session.current()).id == "1-0"
    picture = Image.open(io.BytesIO(session.png("1-1", 2)))
    assert picture.size == (256, 256) and picture.mode == "RGB"
    whole = np.asarray(Image.open(io.BytesIO(session.png("1-1", None))))
    zoomed = np.asarray(picture)
    assert (whole == [255, 255, 255]).all(axis=2).sum() > 400  # the prompt box
    assert (zoomed == COLOURS[2]).all(axis=2).sum() > 400  # candidate 3's outline, zoomed
    assert not (whole == COLOURS[2]).all(axis=2).any()  # not on the context image


def test_the_zoom_window_holds_the_box_and_the_candidates() -> None:
    union = np.zeros((100, 100), bool)
    union[40:50, 60:70] = True
    assert window(union, (55.0, 38.0, 72.0, 52.0), 100) == (50, 32, 77, 59)  # 18 px wide x 1.5 = 27, centred
    assert window(union, None, 100) == (53, 33, 77, 57)  # at least 24 px
    assert window(np.zeros((100, 100), bool), None, 100) == (0, 0, 100, 100)
    assert window(union | np.eye(100, dtype=bool), None, 100) == (0, 0, 100, 100)  # never outside the image


# --- the app -----------------------------------------------------------------------------------


def test_grading_through_the_api_writes_each_decision_and_resumes(run, tmp_path: Path) -> None:
    client = TestClient(create_app(_session(run, tmp_path)))
    state = client.get("/api/state").json()
    assert state["pair"]["id"] == "0-0" and state["progress"] == {"done": 0, "total": 10}
    assert state["next"]["id"] == "1-0" and "grades" not in json.dumps(state)
    assert client.get(state["pair"]["candidates"][3]).headers["content-type"] == "image/png"
    state = client.post("/api/decide", json={"pair": "0-0", "grades": [1, 2, 3, 4], "seconds": 2}).json()
    assert state["pair"]["id"] == "1-0" and state["progress"]["done"] == 1
    state = client.post("/api/decide", json={"pair": "1-0", "skip": True}).json()
    assert client.post("/api/decide", json={"pair": "1-0", "grades": [1, 1, 1, 1]}).status_code == 409  # stale
    bad = client.post("/api/decide", json={"pair": state["pair"]["id"], "grades": [1, 9, 1, 1]})
    assert bad.status_code == 422 and "grades in 1..4" in bad.json()["error"]
    assert client.post("/api/decide", json={"pair": state["pair"]["id"], "order": [0, 1, 2, 3]}).status_code == 422
    form = client.post(
        "/api/decide",
        content=json.dumps({"pair": state["pair"]["id"], "skip": True}),
        headers={"Content-Type": "text/plain"},
    )  # what another site's form could send
    assert form.status_code == 415 and client.get("/api/state").json()["pair"]["id"] == state["pair"]["id"]
    assert client.post("/api/undo", json={}).json()["pair"]["id"] == "1-0"
    resumed = TestClient(create_app(_session(run, tmp_path)))  # a restarted server
    assert resumed.get("/api/state").json()["pair"]["id"] == "1-0"
    found = read_annotations(decisions_path(tmp_path, "alice"))
    assert list(found) == [("case000", 0)] and found[("case000", 0)].grades.tolist() == [1, 2, 3, 4]


@pytest.mark.parametrize(
    "url",
    [
        "/png/../../etc/passwd",
        "/png/..%2F..%2Fetc%2Fpasswd/image.png",
        "/png/0-1/image.png",  # a pair not shown: its candidates are all empty
        "/png/99-0/image.png",
        "/png/0-0/4.png",
        "/png/0-0/-1.png",
        "/png/0-0/labels.png",
        "/static/../../../etc/passwd",
        "/static/__init__.py",
        "/labels.npy",
    ],
)
def test_unknown_ids_and_paths_are_404(run, tmp_path: Path, url: str) -> None:
    assert TestClient(create_app(_session(run, tmp_path))).get(url).status_code == 404


def test_off_loopback_every_route_needs_the_token(run, tmp_path: Path) -> None:
    client = TestClient(create_app(_session(run, tmp_path), token="s3cret"))
    for url in ("/", "/api/state", "/png/0-0/image.png", "/static/page.js"):
        assert client.get(url).status_code == 403, url
    assert client.post("/api/decide", json={"pair": "0-0", "skip": True}).status_code == 403
    assert client.get("/?token=wrong").status_code == 403
    assert client.get("/api/state?token=s3cret").status_code == 403  # the query only opens the page
    assert client.get("/?token=s3cret").status_code == 200  # sets the cookie
    assert client.get("/api/state").status_code == 200
    fresh = TestClient(create_app(_session(run, tmp_path), token="s3cret"))
    assert fresh.get("/api/state", headers={"X-Samdpo-Token": "s3cret"}).status_code == 200


def test_the_app_reads_no_ground_truth(run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The grading inputs are the prompt store and the candidates only: no store, no label file is opened."""
    from samdpo.data.store import SampleStore

    monkeypatch.setattr(SampleStore, "labels", lambda self: pytest.fail("the app read labels"))
    opened = []
    real_load = np.load
    monkeypatch.setattr(np, "load", lambda file, *a, **k: opened.append(str(file)) or real_load(file, *a, **k))
    client = TestClient(create_app(_session(run, tmp_path)))
    state = client.get("/api/state").json()
    for url in [state["pair"]["image"], *state["pair"]["candidates"]]:
        assert client.get(url).status_code == 200
    client.post("/api/decide", json={"pair": "0-0", "grades": [4, 3, 2, 1]})
    assert not any("label" in name for name in opened)
    assert {r.path for r in client.app.routes} == {
        "/",
        "/static/{name}",
        "/api/state",
        "/api/decide",
        "/api/undo",
        "/png/{pair}/{which}.png",
    }


# --- merge and align ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def busi_store(busi_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return prepare_store("busi", busi_root, tmp_path_factory.mktemp("store") / "busi", 32)


def test_align_annotate_merges_the_peoples_files_into_the_annotations(busi_store: Path, tmp_path: Path) -> None:
    ids = pq.read_table(busi_store / "samples.parquet").column("sample_id").to_pylist()[:4]
    prompts, candidates = grading_run(tmp_path / "run", ids=ids, classes=["tumor"])
    meta = read_candidates(candidates).meta
    folder = tmp_path / "annotations"
    alice = DecisionLog(decisions_path(folder, "alice"), "alice", "score", meta)
    bob = DecisionLog(decisions_path(folder, "bob"), "bob", "score", meta)
    alice.append(ids[0], 0, graded([1, 2, 3, 4], 4), 1.0)
    bob.append(ids[0], 0, graded([1, 3, 3, 4], 4), 1.0)
    alice.append(ids[1], 0, graded([4, 4, 1, 1], 4), 1.0)
    bob.append(ids[1], 0, not_graded(4, "score", SKIPPED), 1.0)
    bob.append(ids[2], 0, graded([2, 2, 2, 2], 4), 1.0)
    out = tmp_path / "annotations_score.parquet"
    files = [str(alice.path), str(bob.path)]
    args = ["align", "annotate", "--store", str(busi_store), "--candidates", str(candidates), "--out", str(out)]
    assert main([*args, "--reference", "human", "--human", *files]) == 0
    merged = read_annotations(out)
    assert merged[(ids[0], 0)].grades.tolist() == [1, 2, 3, 4]  # a tie of grades 2 and 3: the lower
    assert merged[(ids[1], 0)].grades.tolist() == [4, 4, 1, 1]  # bob skipped: alice's
    assert merged[(ids[2], 0)].reason == EQUAL and merged[(ids[3], 0)].reason == NOT_DECIDED
    agreement = json.loads(pq.read_schema(out).metadata[b"samdpo"])["agreement"]
    assert agreement[0]["first"] == "alice" and agreement[0]["pairs"] == 1
    assert agreement[0]["kappa"] == pytest.approx(2 / 3)  # 3 of 4 grades equal; chance 0.25
    table = tmp_path / "agreement.csv"
    assert (
        main(
            ["annotate", "agreement", "--store", str(busi_store), "--candidates", str(candidates)]
            + ["--human", *files, "--out", str(table)]
        )
        == 0
    )
    import pandas as pd

    rows = pd.read_csv(table)
    assert set(rows["annotator"]) == {"alice", "bob"} and len(rows) == 10
    assert rows[rows["iou_bin"] == "all"].set_index("annotator").loc["alice", "candidates"] == 8


def test_align_annotate_refuses_decisions_on_other_candidates(busi_store: Path, tmp_path: Path, capsys) -> None:
    ids = pq.read_table(busi_store / "samples.parquet").column("sample_id").to_pylist()[:2]
    _, candidates = grading_run(tmp_path / "run", ids=ids, classes=["tumor"])
    meta = read_candidates(candidates).meta
    other = {**meta["candidates"], "thresholds": [0.2, 0.4, 0.6, 0.8]}
    stale = DecisionLog(decisions_path(tmp_path, "carol"), "carol", "score", {**meta, "candidates": other})
    stale.append(ids[0], 0, graded([1, 2, 3, 4], 4), 1.0)
    out = tmp_path / "annotations_score.parquet"
    args = ["align", "annotate", "--store", str(busi_store), "--candidates", str(candidates), "--out", str(out)]
    refused = [*args, "--reference", "human", "--human", str(stale.path)]
    expect_error(refused, capsys, "(candidates differ", absent=[out])  # the candidate settings, named
    expect_error([*args, "--reference", "human"], capsys, "--human", absent=[out])
    missing = str(tmp_path / "annotations_human_dave.parquet")
    expect_error([*args, "--reference", "human", "--human", missing], capsys, "dave", absent=[out])


def test_serve_names_a_missing_candidates_or_prompt_folder(run, tmp_path: Path, capsys) -> None:
    prompts, candidates = run
    args = ["annotate", "serve", "--dataset", "amos", "--name", "alice", "--folder", str(tmp_path / "out")]
    expect_error([*args, "--candidates", str(tmp_path / "nowhere"), "--prompts", str(prompts)], capsys, "nowhere")
    (prompts / "case003.parquet").unlink()
    expect_error([*args, "--candidates", str(candidates), "--prompts", str(prompts)], capsys, "case003.parquet")
    assert not (tmp_path / "out").exists()


def test_the_default_decision_folder_is_the_align_settings_default() -> None:
    import yaml

    schema = yaml.safe_load((Path(__file__).parents[1] / "workflow/schemas/config.schema.yaml").read_text())
    assert schema["properties"]["align"]["properties"]["human"]["properties"]["folder"]["default"] == DECISIONS
