"""Small formatting helpers shared by the console's widgets, and the strict JSON every
interface prints.

JSON out (CLI ``--json``, ``facets run``, the console's views): always strict JSON. A
non-finite float (``inf``, ``-inf``, ``NaN``), which JSON cannot spell, is written as
``null``, as JavaScript's ``JSON.stringify`` does; nothing prints the bare tokens
``Infinity`` or ``NaN``.

JSON in (a guest's response): ``parse_response`` accepts strict JSON only, nested at most
``MAX_JSON_DEPTH`` deep. ``NaN``/``Infinity`` tokens, deeper nesting (a 100,000-deep
``[[[...]]]`` would raise ``RecursionError``) or invalid UTF-8 make the response text,
shown as such. A number too large for a float (``1e999``) parses as infinity and so
prints as ``null``.
"""

from __future__ import annotations

import json
import math
import re
import time
from itertools import accumulate
from typing import Any

from rich.text import Text

from runtime import neutralize

#: Supervision's states stand out: an operator scanning the fleet must see them at once.
STATE_STYLES = {
    "warm": "green",
    "busy": "bold yellow",
    "cold": "dim",
    "failed": "bold red",
    "backoff": "bold black on yellow",
    "quarantined": "bold white on red",
}


def plain(value: Any, style: str = "") -> Text:
    """Any value as plain text for a widget: control characters escaped (an OSC 52 or
    ``\\x1b[2J`` in a guest's table name shows as text) and never parsed as markup (a name
    like ``[/]`` is just a name). Every guest- or database-derived string goes through here."""
    if isinstance(value, (dict, list)):
        value = dumps(value, ensure_ascii=False)
    return Text(neutralize("" if value is None else str(value)), style=style)


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


def state_text(state: str, shown: str | None = None) -> Text:
    """``state`` in its style (``shown``: the text, e.g. ``backoff 12s``)."""
    return Text(state if shown is None else shown, style=STATE_STYLES.get(state, ""))


def bar(used: float, limit: float, width: int = 10) -> Text:
    """A usage bar like ``████░░░░░░ 41%``, red past 90%."""
    fraction = 0.0 if not limit else min(1.0, used / limit)
    filled = round(fraction * width)
    style = "red" if fraction >= 0.9 else "yellow" if fraction >= 0.7 else "green"
    return Text.assemble(("█" * filled, style), ("░" * (width - filled), "dim"), f" {fraction * 100:3.0f}%")


def duration(seconds: float) -> str:
    """``12s``, ``4m10s``, ``3h05m``, ``2d04h``: two units at most, for a column."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def relative(epoch: float, now: float) -> str:
    """``in 4m10s`` or ``12s ago`` (``now`` for a time that is this second)."""
    delta = epoch - now
    if abs(delta) < 1:
        return "now"
    return f"in {duration(delta)}" if delta > 0 else f"{duration(-delta)} ago"


def iso_utc(epoch: float) -> str:
    """``2026-11-02T12:04:10Z``."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def clock(epoch: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(epoch))


#: Deepest guest JSON parsed as JSON (serde_json's default recursion limit); every
#: printer below stays far from Python's recursion limit of 1,000 frames.
MAX_JSON_DEPTH = 128
#: A JSON string (the unrolled-loop form: linear, no backtracking), and what is not a bracket.
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_STEPS = str.maketrans({"[": "\x02", "{": "\x02", "]": "\x00", "}": "\x00"})


def too_deep(text: str, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether ``text``'s brackets (outside JSON strings) nest deeper than ``limit``.

    All in C but the last line, which runs only with more than ``limit`` brackets: on a
    1.3 MB response of 100,000 strings it took about as long as ``json.loads`` (50-60 ms
    here), where a Python loop over each string and bracket took 160 ms.
    """
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    if brackets.count("[") + brackets.count("{") <= limit:
        return False
    steps = brackets.translate(_STEPS).encode("latin-1")  # 2 opens, 0 closes: step - 1
    return max(accumulate(step - 1 for step in steps)) > limit


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_response(data: bytes) -> Any:
    """A guest's response: its JSON value if it is strict JSON within the depth limit, else text."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("utf-8", errors="replace")
    if too_deep(text):
        return text
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except (ValueError, RecursionError):
        return text


def finite(value: Any) -> Any:
    """``value`` with every non-finite float replaced by None (lists and dicts copied)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def dumps(value: Any, **kwargs: Any) -> str:
    """Strict JSON (``allow_nan=False``); non-finite floats become null. ``kwargs`` go to json.dumps."""
    kwargs.setdefault("default", str)
    try:
        return json.dumps(value, allow_nan=False, **kwargs)
    except ValueError:  # a non-finite float somewhere: the rare path pays for the copy
        return json.dumps(finite(value), allow_nan=False, **kwargs)
