"""The command palette (ctrl+p): views, the traffic toggle, and every operator command."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Callable

from textual.command import DiscoveryHit, Hit, Hits, Provider
from textual.markup import escape

from .commands import SPECS

if TYPE_CHECKING:
    from .app import FacetsConsole


class ConsoleCommands(Provider):
    def _entries(self) -> list[tuple[str, str, Callable[[], object]]]:
        app: FacetsConsole = self.app  # type: ignore[assignment]
        entries: list[tuple[str, str, Callable[[], object]]] = [
            ("Go to Facets", "the fleet, live (1)", partial(app.switch_mode, "facets")),
            ("Go to Apps", "apps and versions (2)", partial(app.switch_mode, "apps")),
            ("Go to Logs", "all logs (3)", partial(app.switch_mode, "logs")),
            ("Go to Usage & billing", "cost per app and facet (4)", partial(app.switch_mode, "billing")),
            ("Show keys", "every key of every view (?)", app.action_help),
        ]
        if not app.readonly:
            entries.append(("Toggle traffic", "load generator on the sample apps (t)", app.action_traffic))
        for name, spec in SPECS.items():
            # usages contain [brackets]: escape them, palette text is markup
            entries.append((escape(f"Run: {spec.usage}"), spec.summary, partial(app.action_command_bar, f"{name} ")))
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
