"""The grading web app (Starlette): one page, a small JSON API, PNGs drawn from the prompt store.

Routes: ``GET /`` the page; ``GET /static/{page.js,page.css}``; ``GET /api/state`` the pair on
screen, the one after it (for prefetching) and the progress; ``POST /api/decide`` a decision on the
pair on screen (``grades``, ``order`` or ``skip``; a decision on any other pair is refused with 409, so
two tabs cannot decide the same pair twice); ``POST /api/undo``; ``GET /png/{pair}/{image|k}.png``.
Ids are checked against the candidate set (anything else is a 404); nothing reads the labels.

Bound to a loopback address the app trusts its callers; bound elsewhere it needs a token, given once
as ``/?token=...`` (it then lives in a same-site cookie) or as the ``X-Samdpo-Token`` header. POSTs must
be JSON, which another site's page cannot send here without a CORS preflight this app never answers.
"""

from __future__ import annotations

import hmac
import importlib.resources
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from samdpo.align.agreement import SKIPPED
from samdpo.align.annotator import not_graded
from samdpo.errors import DataError
from samdpo.human.decisions import graded, ranked
from samdpo.human.session import Session

#: Addresses that only this machine reaches.
LOOPBACK = ("127.0.0.1", "localhost", "::1")
COOKIE = "samdpo_token"
STATIC = {"page.js": "text/javascript", "page.css": "text/css"}
#: Longest time a decision may report (s); a person who walked away is not an hour's work.
MAX_SECONDS = 3600.0


def _asset(name: str) -> str:
    """A file of the page, from the package."""
    return importlib.resources.files("samdpo.human").joinpath("page", name).read_text(encoding="utf-8")


def _state(session: Session) -> dict[str, Any]:
    """The pair on screen, the next one, the progress, the mode."""
    pair = session.current()
    return {
        "mode": session.log.mode,
        "annotator": session.log.annotator,
        "count": session.count,
        "progress": session.progress(),
        "pair": session.describe(pair),
        "next": session.describe(session.following(pair) if pair else None),
    }


def _annotation(body: dict[str, Any], session: Session) -> Any:
    """The annotation a decision's JSON body gives (grades, order or skip), checked for the mode."""
    mode, count = session.log.mode, session.count
    if body.get("skip") is True:
        return not_graded(count, mode, SKIPPED)
    if mode == "score" and isinstance(body.get("grades"), list):
        return graded(body["grades"], count)
    if mode == "rank" and isinstance(body.get("order"), list):
        return ranked(body["order"], count)
    raise DataError(f"a decision in {mode} mode needs {'grades' if mode == 'score' else 'order'} or skip")


def create_app(session: Session, token: str | None = None) -> Starlette:
    """The app serving ``session``; ``token`` (None: none needed) guards every route."""

    def allowed(request: Request) -> bool:
        if token is None:
            return True
        given = request.headers.get("x-samdpo-token") or request.cookies.get(COOKIE) or ""
        if request.url.path == "/" and request.method == "GET":
            given = request.query_params.get("token") or given
        return hmac.compare_digest(given.encode(), token.encode())

    def guarded(handler: Any) -> Any:
        async def wrapped(request: Request) -> Response:
            if not allowed(request):
                return JSONResponse({"error": "a token is needed: open the URL the server printed"}, 403)
            if request.method == "POST" and request.headers.get("content-type", "").split(";")[0] != "application/json":
                # another site's form can POST text/plain to 127.0.0.1, but not JSON without a CORS preflight
                return JSONResponse({"error": "POST JSON (Content-Type: application/json)"}, 415)
            return await handler(request)

        return wrapped

    async def page(request: Request) -> Response:
        html = _asset("page.html").replace("{{annotator}}", session.log.annotator).replace("{{mode}}", session.log.mode)
        response = HTMLResponse(html, headers={"Cache-Control": "no-store"})
        if token is not None:
            response.set_cookie(COOKIE, token, httponly=True, samesite="strict")
        return response

    async def static(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in STATIC:
            return JSONResponse({"error": "not found"}, 404)
        return Response(_asset(name), media_type=STATIC[name], headers={"Cache-Control": "no-cache"})

    async def state(request: Request) -> Response:
        return JSONResponse(_state(session), headers={"Cache-Control": "no-store"})

    async def decide(request: Request) -> Response:
        try:
            body = await request.json()
        except ValueError:
            return JSONResponse({"error": "the body is not JSON"}, 400)
        current = session.current()
        if not isinstance(body, dict) or current is None or body.get("pair") != current.id:
            return JSONResponse({"error": "that pair is not the one on screen", **_state(session)}, 409)
        try:
            annotation = _annotation(body, session)
            seconds = min(max(float(body.get("seconds", 0.0)), 0.0), MAX_SECONDS)
            session.log.append(current.sample_id, current.class_index, annotation, seconds)
        except (DataError, TypeError, ValueError) as error:
            return JSONResponse({"error": str(error)}, 422)
        return JSONResponse(_state(session), headers={"Cache-Control": "no-store"})

    async def undo(request: Request) -> Response:
        session.log.undo()
        return JSONResponse(_state(session), headers={"Cache-Control": "no-store"})

    async def png(request: Request) -> Response:
        pair_id, which = request.path_params["pair"], request.path_params["which"]
        candidate = None if which == "image" else int(which) if which.isdigit() else -1
        try:
            session.pair(pair_id)
        except KeyError:
            return JSONResponse({"error": "unknown pair"}, 404)
        if candidate is not None and not 0 <= candidate < session.count:
            return JSONResponse({"error": "unknown candidate"}, 404)
        try:
            body = session.png(pair_id, candidate)
        except DataError as error:  # a prompt file changed or broke since the start: say which
            return JSONResponse({"error": str(error)}, 500)
        return Response(body, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})

    routes = [
        Route("/", guarded(page)),
        Route("/static/{name}", guarded(static)),
        Route("/api/state", guarded(state)),
        Route("/api/decide", guarded(decide), methods=["POST"]),
        Route("/api/undo", guarded(undo), methods=["POST"]),
        Route("/png/{pair}/{which}.png", guarded(png)),
    ]
    return Starlette(routes=routes)
