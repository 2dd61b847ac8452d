"""FacetsConsole: the operator's Textual app, over an embedded Supervisor or, attached, over
the data directory's owner (``remote_supervisor.RemoteSupervisor``).

The event loop never calls into wasm or SQLite: views gather data in thread
workers and hand results back with ``call_from_thread``; log records stream
in as messages. ``--readonly`` hides and refuses every write. ``--serve`` runs the public
HTTP listener in this process too (``ingress.Ingress``), started by a worker once the app
is up and stopped when it exits, before ``run_console`` closes the supervisor.

``run_console`` attaches when another process owns the data directory and serves its control
socket (``facets serve``, another console): the same views, live, on the owner's truth. The
title says ``attached to serve pid N``, and a 1 s heartbeat (``RemoteSupervisor.check``)
shows there when the owner stops answering and follows a new one. Without an owner the
console embeds the supervisor and serves the control socket itself (``control_server``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar, cast

from textual import on, work
from textual.app import App
from textual.binding import Binding, BindingType
from textual.command import Provider
from textual.screen import Screen

from runtime import FacetsError, Supervisor, default_data_dir, neutralize
from server import Listen

from .commands import run_line
from .control_server import serve_control
from .host import ConsoleSupervisor
from .ingress import Ingress
from .messages import OpenFacet, RunCommand
from .palette import ConsoleCommands
from .remote import ControlClient, open_or_route
from .remote_supervisor import RemoteSupervisor
from .samples import SAMPLES, load_component_samples, load_samples, missing_component_samples
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

    #: Seconds between two looks at an attached console's owner (``RemoteSupervisor.check``).
    OWNER_CHECK_SECONDS = 1.0

    def __init__(
        self,
        sup: ConsoleSupervisor,
        *,
        readonly: bool = False,
        traffic_rate: float = 200.0,
        serve: Listen | None = None,
        component_samples: list[tuple[str, Path]] | None = None,
    ) -> None:
        """``sup``: a ``Supervisor`` (embedded) or a ``RemoteSupervisor`` (attached);
        ``serve``: where to run the public HTTP listener in this process (None: none; an
        attached console serves none: its owner runs the requests); ``component_samples``: the
        JS/Python samples to build and load on a worker once the console runs."""
        super().__init__()
        self._component_samples = component_samples or []
        self.sup = sup
        self.readonly = readonly
        # The generator only sends `call`s, which a RemoteSupervisor answers as Supervisor does.
        self.traffic = TrafficGenerator(cast(Supervisor, sup), rate=traffic_rate)
        self.ingress = Ingress(sup, serve) if serve is not None and isinstance(sup, Supervisor) else None
        #: ``--serve`` asked of a console that attached: the header says why it does not serve.
        self._serve_declined = serve is not None and self.ingress is None
        #: Lines entered in the command bar: one history per console, walked from every view.
        self.command_history: list[str] = []
        if readonly:
            self.sub_title = "read-only"

    def on_mount(self) -> None:
        self._show_title()
        if self.ingress is not None:
            self._start_ingress()
        if isinstance(self.sup, RemoteSupervisor):
            self.set_interval(self.OWNER_CHECK_SECONDS, self._check_owner)
        if self._component_samples and isinstance(self.sup, Supervisor):
            self._build_component_samples()

    @work(thread=True, exclusive=True, group="component-samples")
    def _build_component_samples(self) -> None:
        """The JS and Python samples, built off the event loop: the console stays usable, and
        the Apps view lists them when they are in."""
        assert isinstance(self.sup, Supervisor)
        names = ", ".join(name for name, _ in self._component_samples)
        self.call_from_thread(self.notify, f"building the component samples ({names}) in the background")
        try:
            loaded = load_component_samples(self.sup, self._component_samples)
        except FacetsError as exc:
            message = neutralize(f"component samples not loaded: {exc.code}: {exc.message}")
            self.call_from_thread(self.notify, message, severity="warning", markup=False)
            return
        self.call_from_thread(self.notify, f"loaded {', '.join(loaded)}")

    def _show_title(self) -> None:
        parts = [f"Facets · {neutralize(str(self.sup.data_dir))}"]
        if isinstance(self.sup, RemoteSupervisor):
            parts.append(neutralize(self.sup.status))  # role: the owner's own words
        if self.readonly:
            parts.append("read-only")
        self.title = " · ".join(parts)

    @work(thread=True, exclusive=True, group="owner-check")
    def _check_owner(self) -> None:
        assert isinstance(self.sup, RemoteSupervisor)
        self.sup.check()  # a lock probe and a connect: off the event loop
        self.call_from_thread(self._show_title)

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
        if isinstance(self.sup, RemoteSupervisor):  # the owner runs it: its truth, its reply
            result = self.sup.run_line(line, readonly=self.readonly)
        else:
            result = run_line(cast(Supervisor, self.sup), line, readonly=self.readonly)
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
        if self.ingress is not None:
            return self.ingress.status
        if isinstance(self.sup, RemoteSupervisor):
            served = self.sup.owner.public_url
            if served:
                return neutralize(f"the owner serves {served}/")
            if self._serve_declined:
                return "ingress: not started here: the owner runs this directory's requests (facets serve)"
        return ""


#: Seconds a console waits for an owner that serves no control socket to serve one or to go,
#: before it refuses naming it: a one-shot ``facets COMMAND`` holds the directory ~0.3 s
#: (remote.OWNER_WAIT), an owner starting up serves within about as long; an operator at the
#: terminal sees nothing meanwhile, so this is shorter than the 10 s a command waits.
OWNER_WAIT = 2.0


def run_console(
    data: str | None,
    *,
    readonly: bool = False,
    samples: bool = True,
    serve: Listen | None = None,
    durability: str | None = None,
) -> None:
    """Run the console on the data directory: attached to its owner when one serves its
    control socket, else embedding it (loading the sample apps into an empty one, serving
    the control socket; ``serve``: and HTTP, ``ingress``). ``durability``: the embedded
    supervisor's (None: the default)."""
    data_dir = Path(data) if data else default_data_dir()
    # The owner's socket if one serves it (an owner that serves none yet: wait OWNER_WAIT for
    # it to serve or go), else the directory opened here; read-only opens take no lock.
    routed = open_or_route(data_dir, role="console", readonly=readonly, wait=OWNER_WAIT, durability=durability)
    if isinstance(routed, ControlClient):
        assert routed.owner is not None
        remote = RemoteSupervisor(data_dir, routed, routed.owner, readonly=readonly)
        try:
            FacetsConsole(remote, readonly=readonly, serve=serve).run()
        finally:
            remote.close()
        return
    sup = routed
    with sup:
        components: list[tuple[str, Path]] = []
        if samples and not readonly:
            fresh = load_samples(sup)
            # the JS/Python twins: in a fresh directory, or one that had its samples before them
            if fresh or {name for name, _ in SAMPLES} <= {info.name for info in sup.app_list()}:
                components = missing_component_samples(sup)
        with serve_control(sup) or contextlib.nullcontext():  # `facets COMMAND` elsewhere comes here
            FacetsConsole(sup, readonly=readonly, serve=serve, component_samples=components).run()
