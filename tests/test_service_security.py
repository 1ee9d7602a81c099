"""What tests/test_service_api.py (schemathesis, XSS, token, size limit) leaves out: the token is
compared in constant time, the body limit holds without a Content-Length, ids cannot reach the
file system, public endpoints are read-only, and every answer carries the CSP."""

from __future__ import annotations

import hmac
import re
from collections import Counter
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from tests.reliability_report import note

TOKEN = "s3cret-token-for-security-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def client(tmp_path):
    with TestClient(
        create_app(f"sqlite:///{tmp_path / 'sec.db'}", ingest_token=TOKEN, max_body_bytes=50_000)
    ) as c:
        yield c


def test_token_is_compared_in_constant_time(client, monkeypatch):
    """Every token check goes through hmac.compare_digest (a `==` would leak the prefix)."""
    seen = []
    real = hmac.compare_digest

    def spy(a, b):
        seen.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    tries = ["Bearer wrong", f"Bearer {TOKEN[:-1]}", f"Bearer {TOKEN}x", f"Bearer {TOKEN}"]
    codes = [
        client.post("/api/v1/results", content=b"[]", headers={"Authorization": t}).status_code for t in tries
    ]
    held = codes == [401, 401, 401, 200] and len(seen) == len(tries)
    note(
        "service",
        "ingest token: wrong, prefix, suffix, right",
        tried=len(tries),
        outcomes=[str(c) for c in codes],
        expected="401 x3, 200; every compare via hmac.compare_digest",
        held=held,
        detail=f"{len(seen)} constant-time compares",
    )
    assert codes == [401, 401, 401, 200]
    assert len(seen) == len(tries)


def _chunks(size: int, chunk: int = 8192):
    sent = 0
    while sent < size:
        yield b" " * min(chunk, size - sent)
        sent += chunk


def test_body_limit_holds_without_or_with_a_lying_content_length(client):
    # chunked: no Content-Length at all, 100 times the limit
    chunked = client.post("/api/v1/results", content=_chunks(5_000_000), headers=AUTH)
    # one JSON document over the limit, with its Content-Length
    big = client.post("/api/v1/results", content=b"[" + b"{}," * 40_000 + b"{}]", headers=AUTH)
    codes = [chunked.status_code, big.status_code]
    note(
        "service",
        "request size limit (chunked, oversized JSON)",
        tried=2,
        outcomes=[str(c) for c in codes],
        expected="413",
        held=codes == [413, 413],
        detail="limit 50 kB; a 5 MB chunked body without Content-Length",
    )
    assert codes == [413, 413]


TRAVERSALS = [
    "/static/../../../../etc/passwd",
    "/static/..%2f..%2f..%2f..%2fetc%2fpasswd",
    "/static/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "/models/..%2f..%2f..%2fetc%2fpasswd",
    "/models/../../../../etc/passwd.json",
    "/cells/..%2f..%2fetc/passwd",
    "/engines/..%2f..%2fetc%2fpasswd",
    "/api/v1/models/..%2f..%2f..%2fetc%2fpasswd",
    "/badge/..%2f..%2f..%2fetc/passwd.svg",
    "/static//etc/passwd",
    "/models/~2e~2e/~2e~2e/etc/passwd",
]


def test_no_path_reaches_the_file_system(client):
    passwd = Path("/etc/passwd").read_text().splitlines()[0]
    codes = []
    for path in TRAVERSALS:
        r = client.get(path)
        codes.append(r.status_code)
        assert passwd not in r.text, path
        assert r.status_code < 500, (path, r.status_code)
    note(
        "service",
        "path traversal through ids and static paths",
        tried=len(TRAVERSALS),
        outcomes=[str(c) for c in codes],
        expected="4xx, no file content",
        held=True,
    )


def _spec(client) -> dict:
    return client.get("/openapi.json").json()["paths"]


def _get_paths(client) -> list[str]:
    """One concrete path for every GET route the app publishes (parameters filled in)."""
    paths = [re.sub(r"\{[^}]+\}", "org/model", p) for p, ops in _spec(client).items() if "get" in ops]
    return sorted(set(paths + ["/docs", "/redoc", "/openapi.json"]))


def test_public_endpoints_are_read_only(client):
    paths = _get_paths(client)
    got: Counter = Counter()
    bad = []
    for path in paths:
        for method in ("POST", "PUT", "PATCH", "DELETE"):
            if path == "/api/v1/results" and method == "POST":
                continue  # the one write: ingest, behind the token
            r = client.request(method, path, headers=AUTH)
            got[str(r.status_code)] += 1
            if r.status_code not in (404, 405):
                bad.append((method, path, r.status_code))
    writes = sorted(
        f"{m.upper()} {p}" for p, ops in _spec(client).items() for m in ops if m not in ("get", "head")
    )
    note(
        "service",
        "writes on public endpoints (POST/PUT/PATCH/DELETE)",
        tried=sum(got.values()),
        outcomes=got,
        expected="405 (or 404), never a change",
        held=not bad and writes == ["POST /api/v1/results"],
        detail=f"{len(paths)} GET paths; write routes: {writes}",
    )
    assert not bad, bad
    assert writes == ["POST /api/v1/results"]


def test_every_answer_carries_the_csp(client):
    paths = _get_paths(client) + ["/nope", "/static/nope.css", "/models/a%00b", "/api/v1/results?limit=0"]
    answers = [client.get(p) for p in paths]
    answers.append(client.post("/api/v1/results", content=b"{bad", headers=AUTH))
    answers.append(client.post("/api/v1/results", content=b"[]"))
    answers.append(client.delete("/"))
    missing = [
        (a.request.url.path, a.status_code)
        for a in answers
        if "default-src" not in a.headers.get("content-security-policy", "")
        or a.headers.get("x-content-type-options") != "nosniff"
    ]
    codes = Counter(str(a.status_code) for a in answers)
    note(
        "service",
        "CSP + nosniff on every answer (pages, API, errors, static)",
        tried=len(answers),
        outcomes=codes,
        expected="every answer has both headers",
        held=not missing,
        detail=f"{len(missing)} without",
    )
    assert not missing, missing
