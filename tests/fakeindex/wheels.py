"""A local fake package index that installers resolve against: real wheels with upload times.

uv resolves and installs from it as from PyPI: the simple API in its JSON form (PEP 691, with
PEP 700's `upload-time`, which `--exclude-newer` reads), the wheel files themselves, and the
JSON API (`/pypi/{project}/json`, `upload_time_iso_8601`) that dayone reads release days from.
The wheels are tiny pure-Python packages made here (`publish`); a test publishes a dependency's
new release to see what the locks make of it.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import threading
import zipfile
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def make_wheel(name: str, version: str, requires: tuple[str, ...] = ()) -> tuple[str, bytes]:
    """A pure-Python wheel of NAME==VERSION whose module records its version."""
    module = name.replace("-", "_")
    dist = f"{module}-{version}.dist-info"
    files = {
        f"{module}/__init__.py": f"__version__ = {version!r}\n",
        f"{dist}/METADATA": "\n".join(
            [
                "Metadata-Version: 2.1",
                f"Name: {name}",
                f"Version: {version}",
                *(f"Requires-Dist: {r}" for r in requires),
            ]
        )
        + "\n",
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: dayone-tests\nRoot-Is-Purelib: true\n"
        "Tag: py3-none-any\n",
    }
    record = []
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as whl:
        for path, text in files.items():
            data = text.encode()
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
            record.append(f"{path},sha256={digest.decode()},{len(data)}")
            whl.writestr(path, data)
        whl.writestr(f"{dist}/RECORD", "\n".join(record + [f"{dist}/RECORD,,"]) + "\n")
    return f"{module}-{version}-py3-none-any.whl", buf.getvalue()


@dataclass(frozen=True)
class File:
    project: str
    version: str
    filename: str
    data: bytes
    uploaded: str  # ISO 8601, UTC

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


class WheelIndex:
    """The fake index; a context manager. `simple_url` for uv, `json_url` for dayone."""

    def __init__(self, host: str = "127.0.0.1"):
        self.files: list[File] = []
        self.requests: list[str] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer((host, 0), _handler_for(self))
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def simple_url(self) -> str:
        return f"{self.base}/simple"

    @property
    def json_url(self) -> str:
        return f"{self.base}/pypi"

    def __enter__(self) -> WheelIndex:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def publish(self, name: str, version: str, uploaded: str, requires: tuple[str, ...] = ()) -> File:
        filename, data = make_wheel(name, version, requires)
        file = File(normalise(name), version, filename, data, uploaded)
        with self._lock:
            self.files.append(file)
        return file

    def of(self, project: str) -> list[File]:
        with self._lock:
            return [f for f in self.files if f.project == normalise(project)]

    def simple_answer(self, project: str) -> dict:
        files = self.of(project)
        return {
            "meta": {"api-version": "1.1"},
            "name": normalise(project),
            "versions": sorted({f.version for f in files}),
            "files": [
                {
                    "filename": f.filename,
                    "url": f"{self.base}/files/{f.filename}",
                    "hashes": {"sha256": f.sha256},
                    "requires-python": None,
                    "upload-time": f.uploaded,
                    "yanked": False,
                }
                for f in files
            ],
        }

    def json_answer(self, project: str) -> dict:
        files = self.of(project)
        releases: dict[str, list[dict]] = {}
        for f in files:
            releases.setdefault(f.version, []).append(
                {
                    "filename": f.filename,
                    "packagetype": "bdist_wheel",
                    "requires_python": None,
                    "upload_time_iso_8601": f.uploaded,
                    "yanked": False,
                    "yanked_reason": None,
                }
            )
        newest = max(releases, default=None)
        return {
            "info": {"name": normalise(project), "version": newest, "requires_python": None},
            "releases": releases,
        }


def _handler_for(index: WheelIndex) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:  # quiet
            pass

        head = False

        def _send(self, status: int, body: bytes, kind: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if not self.head:
                self.wfile.write(body)

        def do_HEAD(self) -> None:  # noqa: N802 - installers ask before a ranged read
            self.head = True
            self.do_GET()

        def do_GET(self) -> None:  # noqa: N802 - the http.server API
            index.requests.append(self.path)
            parts = [p for p in self.path.split("?")[0].split("/") if p]
            if len(parts) == 2 and parts[0] == "simple" and index.of(parts[1]):
                body = json.dumps(index.simple_answer(parts[1])).encode()
                return self._send(200, body, "application/vnd.pypi.simple.v1+json")
            if len(parts) == 3 and parts[0] == "pypi" and parts[2] == "json" and index.of(parts[1]):
                return self._send(200, json.dumps(index.json_answer(parts[1])).encode(), "application/json")
            if len(parts) == 2 and parts[0] == "files":
                found = [f for f in index.files if f.filename == parts[1]]
                if found:
                    return self._send(200, found[0].data, "application/octet-stream")
            self._send(404, b"not found", "text/plain")

    return Handler
