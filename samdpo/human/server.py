"""Start the grading app on a finished run's candidates (``samdpo annotate serve``)."""

from __future__ import annotations

import secrets
import sys
from pathlib import Path

from samdpo.align.candidates import read_candidates
from samdpo.errors import ConfigError, DataError
from samdpo.human.decisions import DecisionLog, decisions_path

#: Where a finished run keeps a dataset's candidates and prompt store, and where decisions go.
CANDIDATES = "results/align/{dataset}/candidates"
PROMPTS = "prompts_cache/{dataset}"
DECISIONS = "annotations/{dataset}"


def open_session(candidates: Path | str, prompts: Path | str, folder: Path | str, name: str, mode: str):
    """The :class:`~samdpo.human.session.Session` of ``name`` on these candidates, resumed from its file."""
    from samdpo.human.session import Session

    meta = read_candidates(Path(candidates)).meta
    missing = [sample for sample in meta["sample_ids"] if not (Path(prompts) / f"{sample}.parquet").is_file()]
    if missing:
        raise DataError(
            f"{prompts}: no prompt file for {len(missing)} of the candidates' images, e.g. {missing[0]}.parquet; "
            "give --prompts the prompt store of the run that made the candidates"
        )
    log = DecisionLog(decisions_path(folder, name), name, mode, meta)
    return Session(candidates, prompts, log)


def serve(
    candidates: Path | str,
    prompts: Path | str,
    folder: Path | str,
    name: str,
    mode: str,
    host: str = "127.0.0.1",
    port: int = 8765,
    token: str | None = None,
) -> None:
    """Serve the grading page until interrupted; off loopback a token is required (one is drawn if not given)."""
    import uvicorn

    from samdpo.human.app import LOOPBACK, create_app

    if not 0 < port < 65536:
        raise ConfigError(f"--port must be in 1..65535, got {port}")
    session = open_session(candidates, prompts, folder, name, mode)
    if host not in LOOPBACK and not token:
        token = secrets.token_urlsafe(18)
    url = f"http://{'[' + host + ']' if ':' in host else host}:{port}/" + (f"?token={token}" if token else "")
    done, total = session.progress().values()
    print(
        f"{name} grades ({mode}) {total} pairs of {session.meta['dataset']}, {done} already decided, into "
        f"{session.log.path}\nopen {url}  (Ctrl-C stops; every acknowledged decision is on disk)",
        file=sys.stderr,
    )
    uvicorn.run(create_app(session, token), host=host, port=port, log_level="warning")
