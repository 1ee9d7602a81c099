"""A local fake of the Hugging Face Hub's HTTP API, replaying recorded answers.

Serves what `huggingface_hub.HfApi(endpoint=...)` asks for, in the real API's shapes:

- `GET /api/models?author=ORG&filter=TAG&sort=createdAt|downloads[&direction=-1][&limit=N]
  [&expand=...]`: newest (most downloaded) first, `page_size` per page, the next page in a
  `Link: <...>; rel="next"` header.
- `GET /api/models/{repo}` and `/api/models/{repo}/revision/{rev}`: one repo's info.
- `HEAD|GET /{repo}/resolve/{rev}/{file}`: raw files, with `X-Repo-Commit` and `ETag`.
- Errors as the hub sends them (`X-Error-Code`): a gated repo (401 GatedRepo without a token
  that has access), a missing file (404 EntryNotFound), an unknown repo (404 RepoNotFound), an
  unknown revision (404 RevisionNotFound); and injected faults (a 429 once, a 500 once) from
  recordings/faults.json.

Recordings: recordings/api/models/{org}/{name}.json (the info answer), recordings/files/{org}/
{name}/... (raw files), recordings/faults.json. Tests can add repos and push new commits.
"""

from __future__ import annotations

import copy
import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlencode, urlsplit

RECORDINGS = Path(__file__).with_name("recordings")
GOOD_TOKEN = "hf_fake_token_with_access"


@dataclass
class Fault:
    """Answer the next `times` matching requests with `status` instead."""

    path_prefix: str
    status: int
    times: int = 1
    method: str = "GET"
    query_contains: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    body: str = ""

    def matches(self, method: str, path: str, query: str) -> bool:
        return (
            self.times > 0
            and method == self.method
            and path.startswith(self.path_prefix)
            and self.query_contains in query
        )


@dataclass
class Repo:
    info: dict[str, Any]
    files: dict[str, bytes]
    history: dict[str, dict[str, bytes]] = field(default_factory=dict)  # sha -> files

    @property
    def id(self) -> str:
        return str(self.info["id"])

    @property
    def sha(self) -> str:
        return str(self.info["sha"])


def _load_recordings(root: Path) -> tuple[dict[str, Repo], list[Fault]]:
    repos: dict[str, Repo] = {}
    for info_path in sorted((root / "api" / "models").glob("*/*.json")):
        info = json.loads(info_path.read_text(encoding="utf-8"))
        files_dir = root / "files" / info["id"]
        files = (
            {
                p.relative_to(files_dir).as_posix(): p.read_bytes()
                for p in sorted(files_dir.rglob("*"))
                if p.is_file()
            }
            if files_dir.is_dir()
            else {}
        )
        info["siblings"] = [{"rfilename": name} for name in sorted(files)]
        repo = Repo(info=info, files=files)
        repo.history[repo.sha] = dict(files)
        repos[repo.id] = repo
    faults_path = root / "faults.json"
    faults = [Fault(**f) for f in json.loads(faults_path.read_text())] if faults_path.exists() else []
    return repos, faults


class FakeHub:
    """The fake hub server; use as a context manager. `url` is the endpoint to give HfApi."""

    def __init__(
        self,
        recordings: Path = RECORDINGS,
        *,
        page_size: int = 2,
        faults: bool = True,
        host: str = "127.0.0.1",
    ):
        self.repos, loaded_faults = _load_recordings(recordings)
        self.faults: list[Fault] = loaded_faults if faults else []
        self.page_size = page_size
        self.requests: list[tuple[str, str, int]] = []  # (method, path?query, status)
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer((host, 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    # Lifecycle
    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeHub:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # Test controls
    def push_commit(
        self, repo_id: str, files: dict[str, bytes | str], last_modified: str = "2026-06-01T00:00:00.000Z"
    ) -> str:
        """A new commit on a repo: new sha, changed files; the old sha stays resolvable."""
        with self._lock:
            repo = self.repos[repo_id]
            new_files = dict(repo.files)
            new_files.update({k: v.encode() if isinstance(v, str) else v for k, v in files.items()})
            sha = hashlib.sha1(repr(sorted(new_files.items())).encode()).hexdigest()
            repo.files = new_files
            repo.history[sha] = dict(new_files)
            repo.info["sha"] = sha
            repo.info["lastModified"] = last_modified
            repo.info["siblings"] = [{"rfilename": n} for n in sorted(new_files)]
            return sha

    def add_repo(self, info: dict[str, Any], files: dict[str, bytes | str]) -> None:
        with self._lock:
            encoded = {k: v.encode() if isinstance(v, str) else v for k, v in files.items()}
            info = {**info, "siblings": [{"rfilename": n} for n in sorted(encoded)]}
            repo = Repo(info=info, files=encoded)
            repo.history[repo.sha] = dict(encoded)
            self.repos[repo.id] = repo

    def add_fault(self, fault: Fault) -> None:
        with self._lock:
            self.faults.append(fault)

    def count(self, method: str, path_prefix: str) -> int:
        return sum(1 for m, p, _s in self.requests if m == method and p.startswith(path_prefix))

    # Answers
    def answer(
        self, method: str, raw_path: str, headers: dict[str, str]
    ) -> tuple[int, dict[str, str], bytes]:
        parts = urlsplit(raw_path)
        path, query = parts.path, parts.query
        with self._lock:
            for fault in self.faults:
                if fault.matches(method, path, query):
                    fault.times -= 1
                    return fault.status, dict(fault.headers), fault.body.encode()
        params = parse_qs(query)
        if path == "/api/models":
            return self._list_models(params)
        if path.startswith("/api/models/"):
            return self._model_info(path[len("/api/models/") :], params)
        if "/resolve/" in path:
            return self._resolve(method, path.lstrip("/"), headers)
        return _error(404, "NotFound", f"no route for {path}")

    def _list_models(self, params: dict[str, list[str]]) -> tuple[int, dict[str, str], bytes]:
        author = params.get("author", [None])[0]
        with self._lock:
            infos = [
                copy.deepcopy(r.info)
                for r in self.repos.values()
                if author is None or r.id.split("/")[0] == author
            ]
        # `filter`: repos carrying every given tag (the hub's model_type tags among them).
        tags = params.get("filter", [])
        infos = [i for i in infos if all(tag in (i.get("tags") or []) for tag in tags)]
        sort = params.get("sort", ["createdAt"])[0]
        descending = params.get("direction", ["-1"])[0] != "1"
        infos.sort(key=lambda i: (_sort_value(i.get(sort)), i["id"]), reverse=descending)
        limit = int(params.get("limit", [str(self.page_size)])[0])
        size = min(limit, self.page_size)
        start = int(params.get("cursor", ["0"])[0])
        page = infos[start : start + size]
        headers = {"Content-Type": "application/json"}
        if start + size < len(infos):
            nxt = {k: v for k, v in params.items() if k != "cursor"}
            nxt["cursor"] = [str(start + size)]
            headers["Link"] = f'<{self.url}/api/models?{urlencode(nxt, doseq=True)}>; rel="next"'
        expand = params.get("expand")
        body = [_select(i, expand, list_view=True) for i in page]
        return 200, headers, json.dumps(body).encode()

    def _model_info(self, rest: str, params: dict[str, list[str]]) -> tuple[int, dict[str, str], bytes]:
        repo_id, _, revision = rest.partition("/revision/")
        repo = self.repos.get(repo_id)
        if repo is None:
            return _error(404, "RepoNotFound", f"Repository not found: {repo_id}")
        if revision and revision not in ("main", repo.sha) and revision not in repo.history:
            return _error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        info = copy.deepcopy(repo.info)
        if revision in repo.history and revision != repo.sha:
            info["sha"] = revision
            info["siblings"] = [{"rfilename": n} for n in sorted(repo.history[revision])]
        return (
            200,
            {"Content-Type": "application/json"},
            json.dumps(_select(info, params.get("expand"), list_view=False)).encode(),
        )

    def _resolve(self, method: str, path: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        before, _, after = path.partition("/resolve/")
        repo = self.repos.get(before)
        if repo is None:
            return _error(404, "RepoNotFound", f"Repository not found: {before}")
        revision, _, filename = after.partition("/")
        if repo.info.get("gated") and headers.get("authorization") != f"Bearer {GOOD_TOKEN}":
            return _error(
                401,
                "GatedRepo",
                f"Access to model {repo.id} is restricted. You must "
                "have access to it and be authenticated to access it.",
            )
        sha = repo.sha if revision == "main" else revision
        files = repo.history.get(sha)
        if files is None:
            return _error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        if filename not in files:
            return _error(404, "EntryNotFound", f"{filename} does not exist on {revision}")
        body = files[filename]
        etag = hashlib.sha1(body).hexdigest()
        out = {
            "X-Repo-Commit": sha,
            "ETag": f'"{etag}"',
            "Content-Length": str(len(body)),
            "Content-Type": "application/octet-stream",
        }
        return 200, out, (b"" if method == "HEAD" else body)


def _sort_value(value: Any) -> tuple[int, float, str]:
    """Numbers (downloads, likes) sort as numbers, the rest (dates) as text."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (0, float(value), "")
    return (1, 0.0, str(value or ""))


_LIST_FIELDS = (
    "_id",
    "id",
    "likes",
    "private",
    "downloads",
    "tags",
    "pipeline_tag",
    "library_name",
    "createdAt",
)


def _select(info: dict[str, Any], expand: list[str] | None, *, list_view: bool) -> dict[str, Any]:
    """The fields the real API returns: `expand` picks them; the list view is compact."""
    if expand:
        return {k: v for k, v in info.items() if k in ("_id", "id", *expand)}
    if list_view:
        return {k: v for k, v in info.items() if k in _LIST_FIELDS}
    return info


def _error(status: int, code: str, message: str) -> tuple[int, dict[str, str], bytes]:
    headers = {"Content-Type": "application/json", "X-Error-Code": code, "X-Error-Message": message}
    return status, headers, json.dumps({"error": message}).encode()


def _handler_for(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self, method: str) -> None:
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, out, body = hub.answer(method, self.path, headers)
            with hub._lock:
                hub.requests.append((method, self.path, status))
            self.send_response(status)
            for key, value in out.items():
                self.send_header(key, value)
            if "Content-Length" not in out:
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if method != "HEAD":
                self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            self._serve("GET")

        def do_HEAD(self) -> None:  # noqa: N802
            self._serve("HEAD")

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet in tests
            return

    return Handler


def repo_url(hub: FakeHub, repo_id: str, filename: str, revision: str = "main") -> str:
    return f"{hub.url}/{repo_id}/resolve/{quote(revision, safe='')}/{filename}"


if __name__ == "__main__":  # run it by hand: python -m tests.fakehub
    with FakeHub() as running:
        print(f"fake hub at {running.url} (Ctrl-C to stop)", flush=True)
        threading.Event().wait()
