"""Start an engine's OpenAI-compatible server, wait for it, talk to it, stop it. Stdlib only.

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


def http_json(url: str, payload: dict[str, Any] | None = None, timeout: float = 60.0
              ) -> tuple[int, Any]:
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

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def chat(self, messages: list[dict[str, str]], timeout: float = 120, **params: Any
             ) -> tuple[int, Any]:
        return http_json(f"{self.base_url}/v1/chat/completions",
                         {"messages": messages, **params}, timeout=timeout)


def start_server(argv: list[str], port: int, log_path: Path, ready_path: str = "/v1/models",
                 timeout_s: float = 180.0, env: dict[str, str] | None = None) -> Server:
    """Start argv, wait until GET ready_path answers 200; on failure stop it and raise."""
    log = open(log_path, "ab")
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, env={**os.environ, **(env or {})})
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
