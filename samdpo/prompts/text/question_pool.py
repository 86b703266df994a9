"""Ask many questions, in a pool of threads, with a progress bar; stop cleanly at the first failure."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from typing import TypeVar

from tqdm import tqdm

Q = TypeVar("Q")


def ask_all(
    questions: Sequence[Q], answer: Callable[[Q], str], workers: int = 1, desc: str = "ask", progress: bool = True
) -> list[str]:
    """``[answer(q) for q in questions]``, ``workers`` at a time.

    At the first failure (or Ctrl-C) no further question is started; those already in flight finish
    (and so reach the answer cache), then the failure is raised. A rerun asks only what is missing.
    """
    bar = tqdm(total=len(questions), desc=desc, unit="question", disable=not progress)
    try:
        if workers <= 1:
            answers = []
            for question in questions:
                answers.append(answer(question))
                bar.update()
            return answers
        with ThreadPoolExecutor(max_workers=workers) as pool:
            futures = [pool.submit(answer, question) for question in questions]
            for future in futures:
                future.add_done_callback(lambda _: bar.update())
            try:
                done, _ = wait(futures, return_when=FIRST_EXCEPTION)
            except BaseException:  # Ctrl-C: ask nothing more, let the questions in flight finish
                pool.shutdown(wait=True, cancel_futures=True)
                raise
            failed = [f for f in futures if f in done and f.exception() is not None]
            if failed:
                pool.shutdown(wait=True, cancel_futures=True)
                raise failed[0].exception()
            return [future.result() for future in futures]
    finally:
        bar.close()
