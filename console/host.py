"""ConsoleHost: what screens and the palette may read from the app that hosts them.

A structural type, so that they need not import ``app.py`` (which imports them): the
screens, the palette and the app formed one 9-module import cycle. What they ask the app
to *do* travels as messages (``console/messages.py``) or actions, handled by the app.
"""

from __future__ import annotations

from typing import Protocol

from runtime import Supervisor


class ConsoleHost(Protocol):
    sup: Supervisor
    """The embedded supervisor every view reads from."""
    readonly: bool
    """Hide and refuse every write."""
    command_history: list[str]
    """The command bar's history, shared by the bars of every view."""

    def traffic_status(self) -> str:
        """One line on the load generator, e.g. ``traffic on · 1,204 sent``."""
        ...

    def ingress_status(self) -> str:
        """One line on the console's HTTP listener (``--serve``), e.g. ``serving
        http://127.0.0.1:8800/ · curl http://127.0.0.1:8800/counter/alice``; "" when none."""
        ...
