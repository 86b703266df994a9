"""Benchmark: the grading page in headless Chromium against the server alone, side by side in one run.

On a finished run's candidates (default: the embedded default's AMOS, ``results/align/amos/candidates``
and ``prompts_cache/amos``), with a throw-away decision folder, it measures
- the server alone: one decision POSTed and the next pair's five PNGs fetched, over HTTP from Python;
- the page: from the key press that submits a decision to the next pair drawn (the page's own
  ``window.samdpoTimings``), and the first page from navigation to the first pair drawn;
and prints both with their ratio. ``--screenshot FILE`` saves the page (a pair with grades entered).
Needs Debian's chromium and chromium-driver. Run: ``python benchmarks/grading_page_benchmark.py``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' browser helpers

from tests.browser import chromium, grading_server, shown  # noqa: E402


def _server_alone(url: str, decisions: int) -> list[float]:
    """ms per decision: POST a skip of the pair on screen, then GET the next pair's PNGs."""
    times = []
    for _ in range(decisions):
        state = json.loads(urllib.request.urlopen(url + "api/state").read())
        if state["pair"] is None:
            break
        started = time.perf_counter()
        body = json.dumps({"pair": state["pair"]["id"], "skip": True}).encode()
        request = urllib.request.Request(url + "api/decide", body, {"Content-Type": "application/json"})
        after = json.loads(urllib.request.urlopen(request).read())
        if after["pair"]:
            for image in [after["pair"]["image"], *after["pair"]["candidates"]]:
                urllib.request.urlopen(url + image.lstrip("/")).read()
        times.append((time.perf_counter() - started) * 1000)
    return times


def _page(driver, url: str, decisions: int, screenshot: Path | None) -> tuple[float, list[float]]:
    """First page ms, and ms from each deciding key press to the next pair drawn."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    started = time.perf_counter()
    driver.get(url)
    current = shown(driver)
    first = (time.perf_counter() - started) * 1000
    if screenshot:
        ActionChains(driver).send_keys("43").perform()
        time.sleep(0.2)
        driver.save_screenshot(str(screenshot))
        ActionChains(driver).send_keys(Keys.BACKSPACE).perform()
    for _ in range(decisions):
        ActionChains(driver).send_keys("1234" + Keys.ENTER).perform()
        current = shown(driver, other_than=current)
        if current == "done":
            break
    return first, driver.execute_script("return window.samdpoTimings")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="amos")
    parser.add_argument("--candidates", default="results/align/{dataset}/candidates")
    parser.add_argument("--prompts", default="prompts_cache/{dataset}")
    parser.add_argument("--decisions", type=int, default=40, help="decisions per side (fewer if the run has fewer)")
    parser.add_argument("--screenshot", type=Path)
    args = parser.parse_args()
    fill = {"dataset": args.dataset}
    where = ["--dataset", args.dataset, "--candidates", args.candidates.format(**fill)]
    where += ["--prompts", args.prompts.format(**fill)]
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        with grading_server(*where, "--folder", str(root / "a"), "--name", "server", log=root / "s.log") as (url, _):
            alone = _server_alone(url, args.decisions)
        with chromium(root / "profile") as driver, grading_server(
            *where, "--folder", str(root / "b"), "--name", "page", log=root / "p.log"
        ) as (url, _):
            first, page = _page(driver, url, args.decisions, args.screenshot)
    print(f"{args.dataset}: {len(page)} decisions in the page, {len(alone)} against the server alone")
    print(f"{'':>34} {'median ms':>10} {'95th pct ms':>12}")
    for name, times in (("server alone (POST + 5 PNGs)", alone), ("page: key press -> next pair drawn", page)):
        print(f"{name:>34} {np.median(times):>10.1f} {np.percentile(times, 95):>12.1f}")
    print(f"ratio page / server alone (medians): {np.median(page) / np.median(alone):.2f}; first page {first:.0f} ms")


if __name__ == "__main__":
    main()
