"""What a stage ends with: its outcome, the two ways it fails, and an exception as the one line
a record's message and the log classifier read. Standard library only: every stage module
(engines, parity, features, serving, throughput) and the child build on it."""

from __future__ import annotations

import traceback


def one_line(exc: BaseException, limit: int = 500) -> str:
    """The exception as one line, as `traceback` names it (module-qualified outside builtins):
    multi-line messages (PEFT's module reprs) keep every part, joined; past `limit`, cut and
    marked ` ...`."""
    text = " ".join(line.strip() for line in
                    "".join(traceback.format_exception_only(type(exc), exc)).splitlines()
                    if line.strip())
    return (text[:limit] + " ...") if len(text) > limit else (text or type(exc).__name__)
