"""A local fake of the package index's JSON API (PyPI's shape), replaying recorded answers.

Serves `GET /pypi/{project}/json` (the project name normalised as PEP 503 does, so
`llama_cpp_python` finds `llama-cpp-python`), 404 for a project it does not know, and injected
faults (the next N answers for a path are a given status). Recordings: recordings/{project}.json
(real answers trimmed by trim.py; see README.md). Tests publish new releases and yank old ones.
"""

from __future__ import annotations

import copy
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

RECORDINGS = Path(__file__).with_name("recordings")


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


class FakeIndex:
    """The fake index; a context manager. `url` is the base to give IndexClient."""

    def __init__(self, recordings: Path = RECORDINGS, host: str = "127.0.0.1"):
        self.projects: dict[str, dict[str, Any]] = {
            normalise(p.stem): json.loads(p.read_text(encoding="utf-8"))
            for p in sorted(recordings.glob("*.json"))
        }
        self.faults: dict[str, list[int]] = {}  # project -> statuses to answer first
        self.requests: list[str] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer((host, 0), _handler_for(self))
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/pypi"

    def __enter__(self) -> FakeIndex:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def publish(self, project: str, version: str, files: list[dict[str, Any]]) -> None:
        """A new release appears, files in the JSON API's shape (missing keys defaulted)."""
        with self._lock:
            answer = self.projects[normalise(project)]
            answer["releases"][version] = [
                {
                    "packagetype": "bdist_wheel",
                    "requires_python": None,
                    "yanked": False,
                    "yanked_reason": None,
                    "upload_time_iso_8601": "2026-12-02T10:00:00Z",
                    **f,
                }
                for f in files
            ]
            answer["info"]["version"] = version

    def yank(self, project: str, version: str, reason: str) -> None:
        with self._lock:
            for f in self.projects[normalise(project)]["releases"][version]:
                f["yanked"], f["yanked_reason"] = True, reason

    def fail_next(self, project: str, status: int, times: int = 1) -> None:
        with self._lock:
            self.faults.setdefault(normalise(project), []).extend([status] * times)

    def answer(self, path: str) -> tuple[int, bytes]:
        match = re.fullmatch(r"/pypi/([^/]+)/json/?", path.split("?", 1)[0])
        with self._lock:
            self.requests.append(path)
            if not match:
                return 404, b'{"message": "Not Found"}'
            name = normalise(match.group(1))
            if self.faults.get(name):
                return self.faults[name].pop(0), b'{"message": "fault"}'
            if name not in self.projects:
                return 404, b'{"message": "Not Found"}'
            return 200, json.dumps(copy.deepcopy(self.projects[name])).encode()


def _handler_for(index: FakeIndex) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            status, body = index.answer(self.path)
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    return Handler
