"""The grading page in real headless Chromium: 100 pairs graded by keyboard with nothing dropped or
duplicated, a ranking made with the mouse, undo, a reload that resumes, a killed server that loses nothing
it acknowledged; and, on a smoke run, decisions that stage 2 trains on exactly."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from samdpo.align.annotator import read_annotations
from samdpo.align.candidates import read_candidates
from samdpo.human.decisions import decisions_path
from tests.browser import chromium, grading_server, needs_chromium, shown
from tests.human_data import grading_run


def _keys(driver, keys: str) -> None:
    ActionChains(driver).send_keys(keys).perform()


def _pair_keys(candidates: Path) -> dict[str, tuple[str, int]]:
    """Pair id -> (sample id, class index)."""
    ids = read_candidates(candidates).meta["sample_ids"]
    return {f"{n}-{t}": (sample, t) for n, sample in enumerate(ids) for t in range(2)}


@needs_chromium
def test_100_pairs_by_keyboard_then_undo_reload_and_a_killed_server(tmp_path: Path) -> None:
    prompts, candidates = grading_run(tmp_path / "run", images=60)  # 60 x 2 pairs, 20 of them all empty
    folder, keys = tmp_path / "annotations", _pair_keys(candidates)
    args = ["--dataset", "amos", "--candidates", str(candidates), "--prompts", str(prompts), "--folder", str(folder)]
    rng = np.random.default_rng(0)
    sent: dict[str, list[int]] = {}
    with chromium(tmp_path / "profile") as driver, grading_server(*args, "--name", "alice", log=tmp_path / "a.log") as (
        url,
        server,
    ):
        started = time.perf_counter()
        driver.get(url)
        current = shown(driver)
        first_page = time.perf_counter() - started
        assert driver.find_element(By.ID, "class-name").text in ("liver", "spleen")
        for _ in range(100):
            grades = rng.integers(1, 5, size=4).tolist()
            _keys(driver, "".join(map(str, grades)) + Keys.ENTER)
            sent[current] = grades
            current = shown(driver, other_than=current)
        assert current == "done" and driver.find_element(By.ID, "finished").is_displayed()
        assert "100 / 100" in driver.find_element(By.ID, "status").text
        timings = driver.execute_script("return window.samdpoTimings")
        _keys(driver, "u")  # undo the last decision: its pair is back on screen
        last = list(sent)[-1]
        assert shown(driver, other_than="done") == last
        driver.refresh()  # a reload resumes at the first pair without a decision
        assert shown(driver) == last
        server.kill()  # killed: what it acknowledged is on disk
        server.wait()
    found = read_annotations(decisions_path(folder, "alice"))
    table = pq.read_table(decisions_path(folder, "alice"))
    assert table.num_rows == 99 and len(found) == 99  # 100 decided, one undone; none duplicated
    assert {keys[pair] for pair in list(sent)[:-1]} == set(found)
    assert all(found[keys[pair]].grades.tolist() == grades for pair, grades in list(sent.items())[:-1])
    assert len(timings) == 100 and all(t > 0 for t in timings)
    print(
        f"first page {first_page * 1000:.0f} ms; key press to next pair drawn: median {np.median(timings):.0f} ms, "
        f"95th percentile {np.percentile(timings, 95):.0f} ms, max {max(timings):.0f} ms (100 decisions)"
    )


@needs_chromium
def test_a_ranking_with_the_mouse_and_a_skip(tmp_path: Path) -> None:
    prompts, candidates = grading_run(tmp_path / "run", images=3)
    folder, keys = tmp_path / "annotations", _pair_keys(candidates)
    args = ["--dataset", "amos", "--candidates", str(candidates), "--prompts", str(prompts), "--folder", str(folder)]
    with chromium(tmp_path / "profile") as driver, grading_server(
        *args, "--name", "bob", "--mode", "rank", log=tmp_path / "b.log"
    ) as (url, _):
        driver.get(url)
        first = shown(driver)
        for k in (2, 0, 3):  # the fourth is implied
            driver.find_element(By.ID, f"panel-{k}").click()
        assert [driver.find_element(By.ID, f"badge-{k}").text for k in range(4)] == ["#2", "#4", "#1", "#3"]
        driver.find_element(By.ID, "submit").click()
        second = shown(driver, other_than=first)
        driver.find_element(By.ID, "skip").click()
        shown(driver, other_than=second)
    found = read_annotations(decisions_path(folder, "bob"))
    assert found[keys[first]].order.tolist() == [2, 0, 3, 1] and found[keys[first]].grades is None
    assert not found[keys[second]].has_preference and len(found) == 2
