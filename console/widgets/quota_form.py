"""QuotaForm: edit one target's quotas in place, validated as you type, applied at once."""

from __future__ import annotations

from typing import Any, ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Input, Label, Static

from runtime import QUOTA_KEYS, FacetsError, QuotaError, parse_quota
from runtime.quotas import format_size

from ..format import plain
from ..host import ConsoleSupervisor

SIZE_KEYS = {"memory", "storage", "log_bytes"}


def show_value(key: str, value: Any) -> str:
    if key in SIZE_KEYS:
        return format_size(int(value))
    if key in ("timeout_ms", "backoff_ms", "backoff_max_ms"):
        return f"{value}ms"
    if key in ("rate", "queue", "max_facets", "crash_faults", "quarantine_faults") and not value:
        return "off"
    if key == "rate":
        return f"{value:g}"
    return str(value)


class QuotaForm(Vertical):
    """One row per quota key: its effective value (editable) and where it comes from."""

    DEFAULT_CSS = """
    QuotaForm { height: auto; padding: 0 1; }
    QuotaForm .quota-row { height: 1; margin-bottom: 1; }
    QuotaForm .quota-row Label { width: 19; }  /* quarantine_faults, the longest key */
    QuotaForm .quota-row Input { width: 20; height: 1; border: none; padding: 0 1; }
    QuotaForm .quota-row .quota-note { width: 1fr; padding: 0 1; }
    QuotaForm .quota-row .quota-note.-error { color: $error; }
    QuotaForm #quota-result { height: auto; margin-top: 1; }
    QuotaForm #quota-buttons { height: 3; }
    """

    BINDINGS: ClassVar[list[BindingType]] = [Binding("ctrl+s", "apply", "Apply quotas")]

    def __init__(self, sup: ConsoleSupervisor, target: str, *, readonly: bool = False, id: str | None = None) -> None:
        super().__init__(id=id)
        self.sup = sup
        self.target = target
        self.readonly = readonly
        self.keys = [k for k in QUOTA_KEYS if not (k == "max_facets" and "/" in target)]
        self._loaded: dict[str, str] = {}
        self._origin: dict[str, str] = {}

    def compose(self) -> ComposeResult:
        for key in self.keys:
            with Horizontal(classes="quota-row"):
                yield Label(key)
                yield Input(id=f"quota-{key}", disabled=self.readonly)
                yield Static("", id=f"note-{key}", classes="quota-note")
        with Horizontal(id="quota-buttons"):
            yield Button("Apply (ctrl+s)", id="quota-apply", variant="primary", disabled=self.readonly)
            yield Button("Reload", id="quota-reload")
        yield Static("", id="quota-result")

    def on_mount(self) -> None:
        self.load()

    @work(thread=True, exclusive=True, group="quota-form")
    def load(self) -> None:
        try:
            effective = self.sup.quotas(self.target).as_dict()
            explicit = self.sup.explicit_quotas(self.target)
        except FacetsError as exc:  # an attached console's owner is away
            self.app.call_from_thread(self._failed, exc.message)
            return
        self.app.call_from_thread(self._fill, effective, explicit)

    def _fill(self, effective: dict[str, Any], explicit: dict[str, Any]) -> None:
        if not self.is_attached:
            return
        level = "this facet" if "/" in self.target else "this app" if self.target != "*" else "global"
        for key in self.keys:
            text = show_value(key, effective[key])
            self._loaded[key] = text
            self.query_one(f"#quota-{key}", Input).value = text
            self._origin[key] = f"set on {level}" if key in explicit else "inherited"
            note = self.query_one(f"#note-{key}", Static)
            note.remove_class("-error")
            note.update(self._origin[key])

    def changes(self) -> dict[str, str]:
        return {
            key: self.query_one(f"#quota-{key}", Input).value.strip()
            for key in self.keys
            if self.query_one(f"#quota-{key}", Input).value.strip() != self._loaded.get(key)
        }

    @on(Input.Changed)
    def _validate(self, event: Input.Changed) -> None:
        key = (event.input.id or "").removeprefix("quota-")
        if key not in self.keys:
            return
        note = self.query_one(f"#note-{key}", Static)
        value = event.value.strip()
        if value == self._loaded.get(key):
            note.remove_class("-error")
            note.update(self._origin.get(key, ""))
            return
        try:
            if value.lower() != "default":
                parse_quota(key, value)
        except QuotaError as exc:
            note.add_class("-error")
            note.update(plain(exc.message))
            return
        note.remove_class("-error")
        note.update("changed: apply with ctrl+s")

    @on(Button.Pressed, "#quota-apply")
    def _apply_pressed(self) -> None:
        self.action_apply()

    @on(Button.Pressed, "#quota-reload")
    def _reload_pressed(self) -> None:
        self.load()

    def action_apply(self) -> None:
        if self.readonly:
            self.notify("read-only console: quotas cannot change", severity="warning")
            return
        changes = self.changes()
        if not changes:
            self.query_one("#quota-result", Static).update("nothing changed")
            return
        self._apply(changes)

    @work(thread=True, exclusive=True, group="quota-form")
    def _apply(self, changes: dict[str, str]) -> None:
        try:
            self.sup.set_quotas(self.target, changes)
        except QuotaError as exc:
            self.app.call_from_thread(self._refused, exc.message)
            return
        except FacetsError as exc:  # an attached console lost its owner: whether it applied is unknown
            self.app.call_from_thread(self._failed, exc.message)
            return
        self.app.call_from_thread(self._applied, changes)

    def _refused(self, message: str) -> None:
        if not self.is_attached:
            return
        result = self.query_one("#quota-result", Static)
        result.update(plain(f"refused, nothing changed: {message}", style="bold red"))

    def _failed(self, message: str) -> None:
        if not self.is_attached:
            return
        result = self.query_one("#quota-result", Static)
        result.update(plain(f"failed: {message} (reload to see the quotas in force)", style="bold red"))

    def _applied(self, changes: dict[str, str]) -> None:
        if not self.is_attached:
            return
        described = ", ".join(f"{k}={v}" for k, v in changes.items())
        self.query_one("#quota-result", Static).update(
            plain(f"applied to {self.target}: {described} (takes effect at the next request)", style="green")
        )
        self.load()
