"""A fault-injection engine for testing the harness itself (never shown in the matrix).

options["fault"] picks what its `load` stage does: segfault, abort, hang, memory, memory_worker
(a subprocess blows up), flood, exit, harness_bug, raise (an engine-style exception), ok.
options["fail_stages"] names later stages that raise an engine error; the others pass: a stage
layout for the blocking rule.
Standard library only.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time

from probes.engines.base import EngineBase
from probes.outcome import StageOutcome


def _engine_error(message: str) -> None:
    # Raised from a frame outside probes/ so the child counts it as the engine's exception.
    exec(compile(f"raise RuntimeError({message!r})", "<engine>", "exec"))


class Engine(EngineBase):
    name = "fault"
    package = "pip"

    def stage_load(self) -> StageOutcome:
        fault = self.options.get("fault", "ok")
        print(f"fault engine: injecting {fault}", flush=True)
        if fault == "segfault":
            ctypes.string_at(0)  # SIGSEGV inside the interpreter
        elif fault == "abort":
            os.abort()
        elif fault == "hang":
            time.sleep(3600)
        elif fault == "memory":
            hog = []
            while True:
                hog.append(bytearray(50 * 2**20))
                hog[-1][::4096] = b"x" * len(hog[-1][::4096])  # touch pages: resident
                time.sleep(0.01)
        elif fault == "memory_worker":  # a worker process blows up; the engine reports it
            hog = (
                "import time\nhog = []\nwhile True:\n"
                "    hog.append(b'x' * (50 * 2**20)); time.sleep(0.01)\n"
            )  # resident
            worker = subprocess.run([sys.executable, "-c", hog], check=False)
            _engine_error(f"worker process died with exit status {worker.returncode}")
        elif fault == "flood":
            chunk = "flood " * 10000 + "\n"
            for _ in range(int(self.options.get("flood_lines", 20000))):
                sys.stdout.write(chunk)
            sys.stdout.flush()
            _engine_error("unknown model architecture: 'flooded'")
        elif fault == "exit":
            os._exit(7)
        elif fault == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        elif fault == "harness_bug":
            raise KeyError("a bug in our own probe code")
        elif fault == "raise":
            _engine_error(self.options.get("message", "engine exploded"))
        return StageOutcome(metrics={"fault": fault})

    def run_stage(self, stage: str) -> StageOutcome:
        if stage != "load" and stage in self.options.get("fail_stages", ()):
            _engine_error(f"{stage} exploded")
        if stage == "load":
            return self.stage_load()
        return StageOutcome(metrics={"stage": stage})
