"""Where dayone keeps what it makes on the host: the store, logs, the nightly's journal."""

from __future__ import annotations

import os
from pathlib import Path


def dayone_home() -> Path:
    """`$DAYONE_HOME`, else `~/.dayone`; set but empty means the default too (an unset variable
    in a shell script or a compose file arrives empty, and "" would be the working folder)."""
    return Path(os.environ.get("DAYONE_HOME") or Path.home() / ".dayone").expanduser()
