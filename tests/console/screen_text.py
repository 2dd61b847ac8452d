"""The text a Pilot-driven console shows, read back from Textual's own screenshot."""

from __future__ import annotations

import html
import re

from textual.app import App

_TEXT = re.compile(r'<text class="[^"]*" x="([\d.]+)" y="([\d.]+)"[^>]*>(.*?)</text>', re.S)


def screen_text(app: App[object]) -> str:
    """Every line of the current screen as text (what reaches the terminal, minus styles).

    The screenshot is drawn by the same compositor that writes to the terminal; each
    ``<text>`` element is one run of cells, so joining a row's runs gives the row."""
    rows: dict[float, list[tuple[float, str]]] = {}
    for x, y, text in _TEXT.findall(app.export_screenshot()):
        rows.setdefault(float(y), []).append((float(x), html.unescape(text).replace("\xa0", " ")))
    return "\n".join("".join(t for _, t in sorted(runs)) for _, runs in sorted(rows.items()))
