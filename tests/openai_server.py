"""A local OpenAI-compatible chat-completions server for tests and benchmarks (127.0.0.1, any port).

Each request is answered by ``behaviour(n)`` for the n-th request (0-based): ``"ok"`` (an answer
derived from the request's last user text), ``"429"``, ``"500"``, ``"401"``, ``"malformed"``
(a body that is not JSON) or ``"timeout"`` (answers after ``delay_s``). Requests are counted
and their headers kept, so tests can check what was asked and with which key.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def answer_for(body: dict) -> str:
    """The server's answer to a request: names the model and hashes the last user text."""
    content = body["messages"][-1]["content"]
    text = (
        content if isinstance(content, str) else " ".join(p.get("text", "") for p in content if p.get("type") == "text")
    )
    return f"{body['model']} says {hashlib.sha256(text.encode()).hexdigest()[:8]} to: {text}"


class OpenAIServer:
    """Start with ``with OpenAIServer(behaviour) as server:``; ``server.base_url`` ends in ``/v1``."""

    def __init__(self, behaviour: Callable[[int], str] = lambda n: "ok", delay_s: float = 2.0) -> None:
        self.behaviour, self.delay_s = behaviour, delay_s
        self.requests: list[dict] = []
        self.authorizations: list[str] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server._lock:
                    n = len(server.requests)
                    server.requests.append(body)
                    server.authorizations.append(self.headers.get("Authorization", ""))
                mode = server.behaviour(n)
                if mode == "timeout":
                    time.sleep(server.delay_s)
                    mode = "ok"
                status, data = 200, b"{not json"
                if mode == "ok":
                    reply = {
                        "id": f"chatcmpl-{n}",
                        "object": "chat.completion",
                        "created": 0,
                        "model": body["model"],
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": answer_for(body)},
                                "finish_reason": "stop",
                            }
                        ],
                    }
                    data = json.dumps(reply).encode()
                elif mode in ("429", "500", "401"):
                    status, data = (
                        int(mode),
                        json.dumps({"error": {"message": f"scripted {mode}", "type": "test"}}).encode(),
                    )
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout)

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self._server.server_port}/v1"

    def __enter__(self) -> OpenAIServer:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
