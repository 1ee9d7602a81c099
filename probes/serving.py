"""Start an engine's OpenAI-compatible server, wait for it, talk to it, stop it. Stdlib only.

The one OpenAI client of the probe side: `Server.chat` returns a typed `ChatAnswer` (status,
body, seconds, and what the stages read from it); `served_model`, `served_window` read
/v1/models; `refused` turns an error answer into a StageFailure with the server's words.
(Streaming for throughput is `probes/throughput.py:stream_chat`.)

Used inside the probe child. The server stays in the child's process group (so the host's
watchdog kills it with the child, whatever happens) and is stopped here with its whole process
tree. Nothing is left running, ever.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from probes.outcome import StageFailure
from probes.runner import die_with_parent

TRACEBACK = "Traceback (most recent call last)"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def descendants(pid: int) -> list[int]:
    """All processes below pid (from /proc), deepest last."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/stat", "rb") as fh:
                    ppid = int(fh.read().rsplit(b")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry.name))
            except (OSError, ValueError, IndexError):
                continue
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def http_json(url: str, payload: dict[str, Any] | None = None, timeout: float = 60.0) -> tuple[int, Any]:
    data = json.dumps(payload).encode() if payload is not None else None
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            body = resp.read().decode("utf-8", "replace")
            status = resp.status
    except urllib.error.HTTPError as exc:
        body, status = exc.read().decode("utf-8", "replace"), exc.code
    try:
        return status, json.loads(body)
    except ValueError:
        return status, body


@dataclass
class ChatAnswer:
    """One chat completion's answer: what the stages read from it, read defensively (a body
    may be anything a server wrote)."""

    status: int
    body: Any
    seconds: float

    @property
    def ok(self) -> bool:
        return self.status == 200 and isinstance(self.body, dict)

    @property
    def choice(self) -> dict[str, Any]:
        try:
            first = self.body["choices"][0]
        except (KeyError, IndexError, TypeError):
            return {}
        return first if isinstance(first, dict) else {}

    @property
    def message(self) -> dict[str, Any]:
        message = self.choice.get("message")
        return message if isinstance(message, dict) else {}

    @property
    def content(self) -> Any:
        return self.message.get("content")

    @property
    def finish_reason(self) -> str | None:
        return self.choice.get("finish_reason")

    def usage(self, key: str) -> int | None:
        try:
            value = self.body["usage"][key]
        except (KeyError, TypeError):
            return None
        return value if isinstance(value, int) else None

    @property
    def prompt_tokens(self) -> int | None:
        return self.usage("prompt_tokens")

    @property
    def completion_tokens(self) -> int | None:
        return self.usage("completion_tokens")

    @property
    def logprobs(self) -> list[Any] | None:
        return answer_logprobs(self.body)

    def excerpt(self, chars: int) -> str:
        return str(self.body)[:chars]


def answer_logprobs(body: Any) -> list[Any] | None:
    """The chosen tokens' logprobs of a chat answer, None where the server gave none. JSON has
    no NaN: servers write NaN (Python's json reads it), null, or a string."""
    try:
        content = body["choices"][0]["logprobs"]["content"]
    except (KeyError, IndexError, TypeError):
        return None
    if not isinstance(content, list):
        return None
    out: list[Any] = []
    for item in content:
        value = item.get("logprob") if isinstance(item, dict) else None
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                pass
        out.append(value)
    return out


@dataclass
class Server:
    proc: subprocess.Popen
    base_url: str
    log_path: Path

    def stop(self, grace_s: float = 10.0) -> None:
        """SIGTERM the server and everything it started; SIGKILL what is left."""
        if self.proc.poll() is not None and not descendants(self.proc.pid):
            return
        tree = [self.proc.pid, *descendants(self.proc.pid)]
        for pid in tree:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        try:
            self.proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            pass
        for pid in [self.proc.pid, *descendants(self.proc.pid), *tree]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass

    def log_tail(self, lines: int = 40, reach: int = 400) -> str:
        """The server log's last LINES lines, from the start of its last Python traceback
        where that is within REACH lines of the end: an exception's own line can sit above a
        long listing (torch names every dispatch backend after `Could not run ... 'CPU'
        backend`), and the classifier must see it, as it does in the bare run's whole log."""
        try:
            log = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        start = max(0, len(log) - lines)
        for no in range(len(log) - 1, max(-1, len(log) - reach - 1), -1):
            if TRACEBACK in log[no]:
                start = min(start, no)
                break
        return "\n".join(log[start:])

    def chat(
        self,
        messages: list[dict[str, Any]],
        *,
        model: str | None = None,
        timeout: float = 300.0,
        **params: Any,
    ) -> ChatAnswer:
        """POST a chat completion (greedy unless PARAMS say otherwise)."""
        payload: dict[str, Any] = {"messages": messages, "temperature": 0, **params}
        if model:
            payload["model"] = model
        t0 = time.perf_counter()
        status, body = http_json(f"{self.base_url}/v1/chat/completions", payload, timeout=timeout)
        return ChatAnswer(status, body, time.perf_counter() - t0)

    def models(self) -> dict[str, Any]:
        """The first entry of the server's /v1/models ({} when it answers nothing usable)."""
        try:
            status, body = http_json(f"{self.base_url}/v1/models", timeout=30)
        except OSError:
            return {}
        if status == 200 and isinstance(body, dict) and body.get("data"):
            first = body["data"][0]
            return first if isinstance(first, dict) else {}
        return {}


def start_server(
    argv: list[str],
    port: int,
    log_path: Path,
    ready_path: str = "/v1/models",
    timeout_s: float = 180.0,
    env: dict[str, str] | None = None,
) -> Server:
    """Start argv, wait until GET ready_path answers 200; on failure stop it and raise."""
    log = open(log_path, "ab")
    proc = subprocess.Popen(
        argv,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
        preexec_fn=die_with_parent,
    )  # started from the main thread
    log.close()
    server = Server(proc, f"http://127.0.0.1:{port}", log_path)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = server.log_tail()
            print(tail, flush=True)  # into the probe log, where the classifier reads it
            raise StageFailure(f"server exited with status {proc.returncode} before it was ready")
        try:
            status, _ = http_json(server.base_url + ready_path, timeout=2)
            if status == 200:
                return server
        except (urllib.error.URLError, OSError, TimeoutError):
            pass
        time.sleep(0.3)
    server.stop()
    print(server.log_tail(), flush=True)
    raise StageFailure(f"server not ready within {timeout_s:.0f} s", "timeout", status="timeout")


def served_model(server: Server) -> str | None:
    """The model id the server serves (first of /v1/models), for the requests' `model`."""
    return server.models().get("id")


def served_window(server: Server) -> int | None:
    """The context length the server says it serves (vLLM's max_model_len), if it says."""
    value = server.models().get("max_model_len")
    return value if isinstance(value, int) else None


def refused(server: Server, what: str, answer: ChatAnswer) -> StageFailure:
    """The server answered with an error: put its words and its log's tail into the probe log
    (where the classifier reads them) and fail, to be classified from the log."""
    body = answer.body
    detail = body.get("error", body) if isinstance(body, dict) else body
    if isinstance(detail, dict):
        detail = detail.get("message") or json.dumps(detail)
    detail = " ".join(str(detail).split())[:1000]
    print(f"dayone: server answered {what} with HTTP {answer.status}: {detail}", flush=True)
    time.sleep(0.5)  # servers log the traceback after they answer
    tail = server.log_tail(60)
    if tail:
        print("dayone: server log tail:\n" + tail, flush=True)
    return StageFailure(f"server answered {what} with HTTP {answer.status}: {detail[:300]}")
