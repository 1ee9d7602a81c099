"""Shields-style SVG badges: `engine | status`, the colour and the word from the cell's state."""

from __future__ import annotations

from dataclasses import dataclass

from service import render

COLOURS = {
    "pass": "#1a7f37",
    "degraded": "#9a6700",
    "fail": "#cf222e",
    "oom": "#8250df",
    "timeout": "#bc4c00",
    "error": "#57606a",
    "skipped": "#8c959f",
    "n/a": "#8c959f",
    "needs-gpu": "#6e7781",
}
UNKNOWN = "#8c959f"

# Verdana 11px advance widths (shields.io measures text the same way), by character class.
_NARROW = set("fijlrtI!.,:;'|()[] ")
_WIDE = set("mwMW@%")


def text_width(text: str) -> int:
    width = 0.0
    for ch in text:
        width += 4.0 if ch in _NARROW else 10.0 if ch in _WIDE else 7.0 if ch.isupper() else 6.5
    return int(width + 0.5)


@dataclass(frozen=True)
class Badge:
    label: str
    message: str
    colour: str

    @property
    def label_width(self) -> int:
        return text_width(self.label) + 10

    @property
    def message_width(self) -> int:
        return text_width(self.message) + 10


def badge_for(engine: str, status: str | None, version: str | None = None) -> Badge:
    label = engine if len(engine) <= 40 else engine[:39] + "…"
    if status is None:
        return Badge(label, "no data", UNKNOWN)
    message = f"{status} {version}" if version else status
    return Badge(label, message if len(message) <= 40 else message[:39] + "…", COLOURS.get(status, UNKNOWN))


def svg(badge: Badge) -> str:
    return render.environment().get_template("badge.svg").render(b=badge)
