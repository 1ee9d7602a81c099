"""Where each page lives, as one path scheme shared by the live site and the static export.

Model ids are untrusted text with slashes (`org/name`). `slug` turns one into a path that is safe
as a URL and as a file path: the characters of hub ids stay as they are, everything else is
written `~XX` (UTF-8 bytes in hex), and nothing can form an empty, `.`/`..` or hidden segment, so
an exported page can never land outside the export folder. `unslug` reverses it.

Links are relative (`../../models/org/name`), so the same pages work served at `/`, under a
prefix, or as files on GitHub Pages; the export adds `.html` where the server has no suffix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.")
# Suffixes that name a twin or a file type: an id ending so gets its dot escaped, so
# `/models/x.json` is always the JSON twin of `/models/x`, never the page of a model `x.json`.
TWIN_SUFFIXES = (".json", ".html", ".svg", ".atom")
_ESCAPED = re.compile(r"(?:~[0-9A-Fa-f]{2})+")


def _escape(ch: str) -> str:
    return "".join(f"~{b:02X}" for b in ch.encode("utf-8"))


def slug(text: str, *, keep_slashes: bool = True) -> str:
    """A path-safe, reversible spelling of `text` (see the module docstring)."""
    out: list[str] = []
    at_segment_start = True
    for i, ch in enumerate(text):
        if ch == "/" and keep_slashes and not at_segment_start and i != len(text) - 1:
            out.append("/")
            at_segment_start = True
            continue
        if ch in SAFE and not (ch == "." and at_segment_start):
            out.append(ch)
        else:
            out.append(_escape(ch))
        at_segment_start = False
    path = "".join(out)
    for suffix in TWIN_SUFFIXES:
        if path.endswith(suffix):
            path = path[: -len(suffix)] + "~2E" + suffix[1:]
            break
    return path or "~"  # an empty id still needs a name; "~" alone never comes from an id


def unslug(path: str) -> str:
    """The text `slug` was given (lenient: anything that is not `~XX` is taken literally)."""
    if path == "~":
        return ""

    def decode(m: re.Match[str]) -> str:
        return bytes.fromhex(m.group(0).replace("~", "")).decode("utf-8", "replace")

    return _ESCAPED.sub(decode, path)


@dataclass(frozen=True)
class Links:
    """Relative links from one page. `here` is the page's path from the site root without a
    suffix (`""` for the matrix, `models/org/name`, ...); `suffix` is `""` live, `.html` in an
    export."""

    here: str = ""
    suffix: str = ""

    @property
    def root(self) -> str:
        depth = self.here.count("/")
        return "../" * depth if depth else "./"

    def _page(self, path: str) -> str:
        return self.root + path + self.suffix

    # pages
    def home(self) -> str:
        return self.root + ("index.html" if self.suffix else "")

    def map(self) -> str:
        return self._page("map")

    def arch(self, arch: str) -> str:
        """One architecture's page on the map (`arch` without the `arch/` of its copy)."""
        return self._page(arch_path(arch))

    def search(self) -> str:
        return self._page("search")

    def model(self, model_id: str) -> str:
        return self._page(model_path(model_id))

    def engine(self, name: str) -> str:
        return self._page(engine_path(name))

    def cell(self, model_id: str, engine: str) -> str:
        return self._page(cell_path(model_id, engine))

    def release(self, name: str, version: str) -> str:
        return self._page(release_path(name, version))

    def cell_json(self, model_id: str, engine: str) -> str:
        return self.root + cell_path(model_id, engine) + ".json"

    # files and twins
    def json(self) -> str:
        """The JSON twin of this page."""
        name = self.here.rsplit("/", 1)[-1] if self.here else "index"
        return f"{name}.json"

    def badge(self, model_id: str, engine: str) -> str:
        return self.root + badge_path(model_id, engine)

    def static(self, name: str) -> str:
        return self.root + "static/" + name

    def feed(self) -> str:
        return self.root + "feed.atom"

    def api(self, name: str) -> str:
        """An API document: `/api/v1/NAME` live, `api/v1/NAME.json` in an export."""
        return self.root + f"api/v1/{name}" + (".json" if self.suffix else "")


def model_path(model_id: str) -> str:
    return "models/" + slug(model_id)


def arch_path(arch: str) -> str:
    return "map/" + slug(arch, keep_slashes=False)


def engine_path(name: str) -> str:
    return "engines/" + slug(name, keep_slashes=False)


def release_path(name: str, version: str) -> str:
    """One engine release: `engines/vllm/0.32.0` (beside `engines/vllm`)."""
    return f"engines/{slug(name, keep_slashes=False)}/{slug(version, keep_slashes=False)}"


def cell_path(model_id: str, engine: str) -> str:
    return f"cells/{slug(model_id)}/{slug(engine, keep_slashes=False)}"


def badge_path(model_id: str, engine: str) -> str:
    return f"badge/{slug(model_id)}/{slug(engine, keep_slashes=False)}.svg"


def split_twin(path: str, suffix: str = ".json") -> tuple[str, bool]:
    """(path without the twin suffix, whether it had it)."""
    if path.endswith(suffix):
        return path[: -len(suffix)], True
    return path, False
