"""Real headless Chromium (Debian's ``chromium`` and ``chromium-driver``) driven by Selenium, and the grading
server started as a user starts it (``samdpo annotate serve``) in a subprocess."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
#: The test is skipped, with this reason, where the browser is not installed (.ci/run installs it).
MISSING = "needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver; .ci/run does)"
needs_chromium = pytest.mark.skipif(
    not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()), reason=MISSING
)


def free_port() -> int:
    """A TCP port nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def grading_server(*args: str, log: Path) -> Iterator[tuple[str, subprocess.Popen]]:
    """Run ``samdpo annotate serve ARGS --port P`` until the block ends; yields its URL and the process."""
    port = free_port()
    command = [sys.executable, "-m", "samdpo.cli", "annotate", "serve", *args, "--port", str(port)]
    with open(log, "ab") as output:
        server = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(url + "api/state", timeout=1).read()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"the server did not start: {log.read_text()}") from None
                time.sleep(0.1)
        yield url, server
    finally:
        server.kill()
        server.wait()


@contextlib.contextmanager
def chromium(profile: Path) -> Iterator[object]:
    """A headless Chromium with a fresh profile and no background network traffic."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1400,900",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def shown(driver, timeout: float = 10.0, other_than: str | None = None) -> str:
    """Wait until the page has drawn a pair (``body[data-shown]``, other than ``other_than``); returns its id."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = driver.execute_script("return document.body.dataset.shown || null")
        if value and value != other_than:
            return value
        time.sleep(0.005)
    raise AssertionError(f"no new pair drawn within {timeout} s (still {other_than!r})")
