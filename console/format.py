"""Small formatting helpers shared by the console's widgets."""

from __future__ import annotations

import time

from rich.text import Text

STATE_STYLES = {"warm": "green", "busy": "bold yellow", "cold": "dim", "failed": "bold red"}


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def human_count(n: float) -> str:
    if n >= 1e9:
        return f"{n / 1e9:.1f}G"
    if n >= 1e6:
        return f"{n / 1e6:.1f}M"
    if n >= 1e4:
        return f"{n / 1e3:.1f}k"
    return f"{n:.0f}" if float(n).is_integer() else f"{n:.1f}"


def state_text(state: str) -> Text:
    return Text(state, style=STATE_STYLES.get(state, ""))


def bar(used: float, limit: float, width: int = 10) -> Text:
    """A usage bar like ``████░░░░░░ 41%``, red past 90%."""
    fraction = 0.0 if not limit else min(1.0, used / limit)
    filled = round(fraction * width)
    style = "red" if fraction >= 0.9 else "yellow" if fraction >= 0.7 else "green"
    return Text.assemble(("█" * filled, style), ("░" * (width - filled), "dim"), f" {fraction * 100:3.0f}%")


def clock(epoch: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(epoch))
