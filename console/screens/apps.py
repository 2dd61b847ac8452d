"""AppsScreen: loaded apps and their versions, which facets run which version, loading new code.

Per app: its latest and active version, a staged canary (version and share), a pin. For
the selected app, its versions side by side (``Supervisor.rollout``: facets, warm
instances, requests and errors (kept across restarts), the error rate, red past 5%)
so a bad canary is seen at a glance, and which version each facet runs. On the right, the
fleet's next alarms. ``L`` loads: ``PATH [as NAME] [--canary N%]``."""

from __future__ import annotations

import os
import shlex
import time
from pathlib import Path
from typing import Any, ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.suggester import Suggester
from textual.widgets import DataTable, Input, Label, Static

from runtime import AppVersion, BuildProgress, FacetInfo, FacetsError, neutralize

from ..commands import version_role
from ..format import human_bytes, iso_utc, plain, relative, state_text
from ..widgets.console_table import ConsoleTable
from .base import ConsoleScreen

#: The fleet's next alarms shown.
FLEET_ALARMS = 8
#: What ``load`` takes: modules and components, WAT, and sources built into components.
LOADABLE_SUFFIXES = (".wasm", ".wat", ".js", ".mjs", ".ts", ".mts", ".py")


def progress_text(report: BuildProgress, width: int = 24) -> Text:
    """One line for a running build or compile: what runs, a bar, the percentage, seconds."""
    what = "building" if report.step == "build" else "compiling"
    fraction = report.fraction or 0.0
    filled = round(fraction * width)
    line = Text()
    line.append(neutralize(f"{what} {report.detail} "), style="bold")
    line.append("█" * filled, style="green")
    line.append("░" * (width - filled), style="dim")
    line.append(f" {fraction * 100:3.0f}%  {report.elapsed:.1f}s")
    return line


class PathSuggester(Suggester):
    """Completes file paths as they are typed (the first match in the directory)."""

    def __init__(self) -> None:
        super().__init__(use_cache=False, case_sensitive=True)

    async def get_suggestion(self, value: str) -> str | None:
        if not value or " " in value:
            return None
        path = Path(os.path.expanduser(value))
        directory, prefix = (path, "") if value.endswith("/") else (path.parent, path.name)
        try:
            names = sorted(n for n in os.listdir(directory) if n.startswith(prefix) and not n.startswith("."))
        except OSError:
            return None
        for name in names:
            full = directory / name
            if full.is_dir() or name.endswith(LOADABLE_SUFFIXES):
                suggestion = value[: len(value) - len(prefix)] + name + ("/" if full.is_dir() else "")
                return suggestion if suggestion != value else None
        return None


class AppsScreen(ConsoleScreen):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("L", "load", "Load / upgrade"),
        Binding("r", "reload", "Refresh"),
    ]
    WRITE_ACTIONS = frozenset({"load"})
    REFRESH_SECONDS = 2.0
    #: The status line shows a load's outcome (not replaced by the refresh's app count).
    _status_kept = False

    DEFAULT_CSS = """
    AppsScreen #apps-table { height: 1fr; }
    AppsScreen #apps-detail { height: 1fr; }
    AppsScreen #apps-detail DataTable { width: 1fr; }
    /* the whole width: its error columns side by side are what the view is for */
    AppsScreen #versions-table { height: auto; max-height: 9; border-top: hkey $primary-background; }
    AppsScreen #apps-detail #fleet-alarms { width: 44; border-left: vkey $primary-background; }
    AppsScreen #load-row { height: 1; display: none; }
    AppsScreen #load-row.-open { display: block; }
    AppsScreen #load-row Label { width: auto; padding: 0 1; }
    AppsScreen #load-path { border: none; height: 1; width: 1fr; }
    AppsScreen #apps-status { height: 1; padding: 0 1; }
    """

    def compose_body(self) -> ComposeResult:
        with Horizontal(id="load-row"):
            yield Label(Text("load PATH [as NAME] [--canary N%]:"))  # Text: as markup, "[as NAME]" vanished
            yield Input(placeholder="sample_apps/todo/todo.wasm as todo", id="load-path", suggester=PathSuggester())
        yield Static("", id="apps-status")
        yield ConsoleTable(cursor_type="row", zebra_stripes=True, id="apps-table")
        yield ConsoleTable(cursor_type="row", id="versions-table")
        with Horizontal(id="apps-detail"):
            yield ConsoleTable(cursor_type="row", id="app-facets-table")
            yield ConsoleTable(cursor_type="row", id="fleet-alarms")

    def on_mount(self) -> None:
        self.sub_title = "apps"
        apps = self.query_one("#apps-table", DataTable)
        for key, title in (
            ("name", "app"),
            ("version", "latest"),
            ("active", "active"),
            ("canary", "canary"),
            ("pinned", "pinned"),
            ("versions", "versions"),
            ("facets", "facets"),
            ("language", "language"),
            ("kind", "kind"),
            ("toolchain", "toolchain"),
            ("size", "size"),
            ("exports", "exports"),
            ("sha", "sha256"),
        ):
            apps.add_column(title, key=key)
        versions = self.query_one("#versions-table", DataTable)
        for title in ("version", "role", "facets", "warm", "requests", "errors", "error %", "sha256", "source"):
            versions.add_column(title)
        facets = self.query_one("#app-facets-table", DataTable)
        for title in ("facet", "state", "runs", "warm on"):
            facets.add_column(title)
        alarms = self.query_one("#fleet-alarms", DataTable)
        for title in ("next alarms", "in", "at (UTC)"):
            alarms.add_column(title)
        self.action_reload()
        # a canary's errors and the next alarms move while the operator watches
        self.set_interval(self.REFRESH_SECONDS, self.action_reload)
        apps.focus()

    def action_reload(self) -> None:
        self._load_apps()

    @work(thread=True, exclusive=True, group="apps")
    def _load_apps(self) -> None:
        try:
            infos = self.sup.app_list()
        except FacetsError:  # an attached console's owner is away (the title says so): keep the list shown
            return
        self.app.call_from_thread(self._show_apps, infos)

    def _show_apps(self, infos) -> None:
        if not self.is_attached:
            return
        table = self.query_one("#apps-table", DataTable)
        selected = self._selected_app()
        table.clear()
        for info in infos:
            v = info.version
            # import and export names are the guest module's own: plain text, escapes shown
            table.add_row(
                plain(info.name),
                v.version,
                info.active,
                Text(f"{info.canary} ({info.canary_percent:g}%)", style="bold yellow")
                if info.canary is not None and info.canary_percent is not None
                else "-",
                Text("pinned", style="magenta") if info.pinned else "-",
                info.versions,
                info.facets,
                plain(v.language),
                plain(v.kind),
                plain(v.toolchain or "-"),
                human_bytes(v.size),
                # the module's own names: plain text, escapes shown
                plain(", ".join(e for e in v.exports if e.startswith(("facet_", "facets:")))),
                plain(v.sha256[:12]),
                key=info.name,
            )
        if selected and selected in table.rows:
            table.move_cursor(row=table.get_row_index(selected))
        if not self._status_kept:  # a load's outcome stays until the next load: refreshes come every 2 s
            self.query_one("#apps-status", Static).update(Text(f"{len(infos)} apps · L loads or upgrades an app"))
        if infos:
            self._load_detail(self._selected_app() or infos[0].name)

    def _selected_app(self) -> str | None:
        table = self.query_one("#apps-table", DataTable)
        if not table.row_count:
            return None
        return str(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value)

    @on(DataTable.RowHighlighted, "#apps-table")
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key is not None:
            self._load_detail(str(event.row_key.value))

    @work(thread=True, exclusive=True, group="apps-detail")
    def _load_detail(self, app: str) -> None:
        try:
            versions = self.sup.app_versions(app)
            facets = self.sup.facet_list(app)
            rollout = self.sup.rollout(app)
            alarms = self.sup.alarm_list(None, limit=FLEET_ALARMS)
        except FacetsError:
            return
        self.app.call_from_thread(self._show_detail, versions, facets, rollout, alarms, time.time())

    def _show_detail(
        self,
        versions: list[AppVersion],
        facets: list[FacetInfo],
        rollout: dict[str, Any],
        alarms: list[dict[str, Any]],
        now: float,
    ) -> None:
        if not self.is_attached:
            return
        table = self.query_one("#versions-table", DataTable)
        table.clear()
        counts = {v["version"]: v for v in rollout["versions"]}
        for v in reversed(versions):
            c = counts.get(v.version, {"facets": 0, "warm": 0, "requests": 0, "errors": 0})
            rate = c["errors"] / c["requests"] if c["requests"] else 0.0
            role = version_role(rollout, v.version)
            table.add_row(
                v.version,
                Text(role, style="bold yellow" if "canary" in role else "green" if "active" in role else "dim"),
                c["facets"],
                c["warm"],
                c["requests"],
                Text(str(c["errors"]), style="red" if c["errors"] else ""),
                Text(f"{rate * 100:.1f}", style="bold red" if rate >= 0.05 else "red" if rate else ""),
                plain(v.sha256[:12]),
                plain(Path(v.source).name if v.source else "-"),
            )
        table = self.query_one("#app-facets-table", DataTable)
        table.clear()
        pins = rollout["facet_pins"]
        for f in facets:
            runs = Text(str(f.assigned if f.assigned is not None else "-"))
            if f.name in pins:
                runs.append(" pinned", style="magenta")
            elif rollout["canary"] is not None and f.assigned == rollout["canary"]:
                runs.append(" canary", style="bold yellow")
            table.add_row(
                plain(f.name), state_text(f.state), runs, plain(f.version if f.version is not None else "- (cold)")
            )
        table = self.query_one("#fleet-alarms", DataTable)
        table.clear()
        for a in alarms:
            at = a["at_ms"] / 1000
            table.add_row(plain(a["target"]), relative(at, now) if at > now else "due", iso_utc(at))

    # -- loading -------------------------------------------------------------------------
    def action_load(self) -> None:
        self.query_one("#load-row").add_class("-open")
        self.query_one("#load-path", Input).focus()

    @on(Input.Submitted, "#load-path")
    def _submit_load(self, event: Input.Submitted) -> None:
        if self.readonly:
            return
        try:
            words = shlex.split(event.value)
        except ValueError as exc:
            self.query_one("#apps-status", Static).update(plain(f"cannot parse: {exc}", style="red"))
            return
        canary: str | None = None
        if len(words) >= 2 and words[-2] == "--canary":
            canary, words = words[-1], words[:-2]
        elif words and words[-1].startswith("--canary="):
            canary, words = words[-1].partition("=")[2], words[:-1]
        if not words or len(words) not in (1, 3) or (len(words) == 3 and words[1] != "as"):
            self.query_one("#apps-status", Static).update(Text("expected PATH [as NAME] [--canary N%]", style="red"))
            return
        self._load(words[0], words[2] if len(words) == 3 else None, canary)

    @work(thread=True, exclusive=True, group="apps-load")
    def _load(self, path: str, name: str | None, canary: str | None = None) -> None:
        def report(progress: BuildProgress) -> None:  # from this worker: the screen redraws on its loop
            self.app.call_from_thread(self._progress, progress)

        try:
            version = self.sup.load_app(path, name, progress=report, canary=canary)
        except FacetsError as exc:
            self.app.call_from_thread(self._loaded, plain(f"{exc.code}: {exc.message}", style="red"), False)
            return
        message = f"{version.app} is at version {version.version} ({version.sha256[:12]})"
        if canary is not None:
            message += f", a canary for {canary} of its facets (promote or rollback settles it)"
        self.app.call_from_thread(self._loaded, plain(message, style="green"), True)

    def _progress(self, report: BuildProgress) -> None:
        if self.is_attached:
            self.query_one("#apps-status", Static).update(progress_text(report))

    def _loaded(self, message: Text, ok: bool) -> None:
        if not self.is_attached:
            return
        self.query_one("#apps-status", Static).update(message)
        self._status_kept = True
        if ok:
            self.query_one("#load-row").remove_class("-open")
            self.action_reload()
