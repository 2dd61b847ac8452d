"""The command palette (ctrl+p): views, the traffic toggle, and every operator command."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import cast

from textual.command import DiscoveryHit, Hit, Hits, Provider
from textual.markup import escape

from .commands import SPECS
from .host import ConsoleHost


class ConsoleCommands(Provider):
    def _entries(self) -> list[tuple[str, str, Callable[[], object]]]:
        # Everything is asked of the app as an action: the palette needs no import of it.
        app = self.app
        act = app.run_action
        entries: list[tuple[str, str, Callable[[], object]]] = [
            ("Go to Facets", "the fleet, live (1)", partial(app.switch_mode, "facets")),
            ("Go to Apps", "apps and versions (2)", partial(app.switch_mode, "apps")),
            ("Go to Logs", "all logs (3)", partial(app.switch_mode, "logs")),
            ("Go to Usage & billing", "cost per app and facet (4)", partial(app.switch_mode, "billing")),
            ("Show keys", "every key of every view (?)", partial(act, "help")),
        ]
        if not cast(ConsoleHost, app).readonly:
            entries.append(("Toggle traffic", "load generator on the sample apps (t)", partial(act, "traffic")))
        for name, spec in SPECS.items():
            # usages contain [brackets]: escape them, palette text is markup
            entries.append((escape(f"Run: {spec.usage}"), spec.summary, partial(act, f"command_bar({name + ' '!r})")))
        return entries

    async def discover(self) -> Hits:
        for text, help_text, callback in self._entries():
            yield DiscoveryHit(text, callback, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for text, help_text, callback in self._entries():
            score = matcher.match(text)
            if score > 0:
                yield Hit(score, matcher.highlight(text), callback, help=help_text)
