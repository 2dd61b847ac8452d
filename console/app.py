"""FacetsConsole: the operator's Textual app, embedding a Supervisor.

The event loop never calls into wasm or SQLite: views gather data in thread
workers and hand results back with ``call_from_thread``; log records stream
in as messages. ``--readonly`` hides and refuses every write. ``--serve`` runs the public
HTTP listener in this process too (``ingress.Ingress``), started by a worker once the app
is up and stopped when it exits, before ``run_console`` closes the supervisor.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

from textual import on, work
from textual.app import App
from textual.binding import Binding, BindingType
from textual.command import Provider
from textual.screen import Screen

from runtime import Supervisor, default_data_dir, neutralize
from server import Listen

from .commands import run_line
from .control_server import serve_control
from .ingress import Ingress
from .messages import OpenFacet, RunCommand
from .palette import ConsoleCommands
from .samples import load_samples
from .screens.apps import AppsScreen
from .screens.billing import BillingScreen
from .screens.facet_detail import FacetDetailScreen
from .screens.facets import FacetsScreen
from .screens.help import HelpScreen
from .screens.logs import LogsScreen
from .screens.result import CommandResultScreen
from .traffic import TrafficGenerator
from .widgets.command_bar import CommandBar
from .widgets.log_view import LogView
from .widgets.quota_form import QuotaForm
from .widgets.table_browser import TableBrowser


class FacetsConsole(App):
    """Keyboard-driven console over one supervisor."""

    CSS_PATH = "app.tcss"
    TITLE = "Facets"
    MODES: ClassVar[dict[str, str | Callable[[], Screen]]] = {
        "facets": FacetsScreen,
        "apps": AppsScreen,
        "logs": LogsScreen,
        "billing": BillingScreen,
    }
    DEFAULT_MODE = "facets"
    COMMANDS: ClassVar[set[type[Provider] | Callable[[], type[Provider]]]] = App.COMMANDS | {ConsoleCommands}
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("1", "switch_mode('facets')", "Facets"),
        Binding("2", "switch_mode('apps')", "Apps"),
        Binding("3", "switch_mode('logs')", "Logs"),
        Binding("4", "switch_mode('billing')", "Billing"),
        Binding("colon", "command_bar", "Command"),
        Binding("question_mark", "help", "Keys"),
        Binding("t", "traffic", "Traffic"),
        Binding("q", "quit", "Quit"),
    ]

    def __init__(
        self, sup: Supervisor, *, readonly: bool = False, traffic_rate: float = 200.0, serve: Listen | None = None
    ) -> None:
        """``serve``: where to run the public HTTP listener in this process (None: none)."""
        super().__init__()
        self.sup = sup
        self.readonly = readonly
        self.traffic = TrafficGenerator(sup, rate=traffic_rate)
        self.ingress = Ingress(sup, serve) if serve is not None else None
        #: Lines entered in the command bar: one history per console, walked from every view.
        self.command_history: list[str] = []
        if readonly:
            self.sub_title = "read-only"

    def on_mount(self) -> None:
        self.title = f"Facets · {neutralize(str(self.sup.data_dir))}" + (" · read-only" if self.readonly else "")
        if self.ingress is not None:
            self._start_ingress()

    @work(thread=True, group="ingress")
    def _start_ingress(self) -> None:
        assert self.ingress is not None
        self.ingress.start()  # binding and uvicorn's startup: off the event loop

    def on_unmount(self) -> None:
        self.traffic.stop()
        if self.ingress is not None:
            self.ingress.stop()  # drains its requests: the supervisor is closed after this

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        return not (self.readonly and action == "traffic")

    # -- navigation ---------------------------------------------------------------------
    @on(OpenFacet)
    def _open_facet_requested(self, event: OpenFacet) -> None:
        self.open_facet(event.target)

    def open_facet(self, target: str) -> None:
        if self.current_mode != "facets":
            self.switch_mode("facets")
        self.push_screen(FacetDetailScreen(target))

    def action_help(self) -> None:
        self.push_screen(
            HelpScreen(
                [
                    ("Everywhere", self.BINDINGS),
                    ("Facets (home, 1)", FacetsScreen.BINDINGS),
                    ("Facet detail (Enter on a facet)", FacetDetailScreen.BINDINGS),
                    ("Data tab: table browser", TableBrowser.BINDINGS),
                    ("Logs tab and Logs view", LogView.BINDINGS),
                    ("Quotas tab", QuotaForm.BINDINGS),
                    ("Apps (2)", AppsScreen.BINDINGS),
                    ("Logs (3)", LogsScreen.BINDINGS),
                    ("Usage & billing (4)", BillingScreen.BINDINGS),
                ]
            )
        )

    # -- command bar ----------------------------------------------------------------------
    def action_command_bar(self, text: str = "") -> None:
        bars = self.screen.query(CommandBar)
        if bars:
            bars.first().open(text)

    @on(RunCommand)
    def _command_entered(self, event: RunCommand) -> None:
        self.run_command_line(event.line)

    def run_command_line(self, line: str) -> None:
        self._run_line(line)

    @work(thread=True, group="command-bar")
    def _run_line(self, line: str) -> None:
        result = run_line(self.sup, line, readonly=self.readonly)
        if result is not None:
            self.call_from_thread(self.push_screen, CommandResultScreen(line, result))

    # -- traffic --------------------------------------------------------------------------
    def action_traffic(self) -> None:
        if self.readonly:
            self.notify("read-only console: no traffic", severity="warning")
            return
        running = self.traffic.toggle()
        self.notify(f"traffic {'on' if running else 'off'} (~{self.traffic.rate:.0f} req/s on the sample apps)")

    def traffic_status(self) -> str:
        return f"traffic on · {self.traffic.sent:,} sent" if self.traffic.running else "traffic off (t)"

    def ingress_status(self) -> str:
        return self.ingress.status if self.ingress is not None else ""


def run_console(data: str | None, *, readonly: bool = False, samples: bool = True, serve: Listen | None = None) -> None:
    """Open the data directory (loading the sample apps into an empty one) and run the console;
    ``serve``: also serve HTTP there (``ingress``)."""
    # Read-only, the supervisor itself writes nothing (no adoption, no flushes, no mkdir).
    with Supervisor(Path(data) if data else default_data_dir(), readonly=readonly, role="console") as sup:
        if samples and not readonly:
            load_samples(sup)
        with serve_control(sup) or contextlib.nullcontext():  # `facets COMMAND` elsewhere comes here
            FacetsConsole(sup, readonly=readonly, serve=serve).run()
