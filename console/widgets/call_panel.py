"""CallPanel: send one request to a facet and see its response and usage."""

from __future__ import annotations

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Button, Input, Static

from runtime import CallResult, neutralize

from ..format import dumps, parse_response
from ..host import ConsoleSupervisor


def describe(result: CallResult) -> Text:
    """The response (pretty JSON when it is JSON) and its usage, as plain text."""
    u = result.usage
    usage = (
        f"fuel {u.fuel:,} · {u.wall_ms:.2f} ms · rows read {u.rows_read} · rows written {u.rows_written}"
        f" · {'cold start' if u.cold_start else 'warm'}"
    )
    if not result.ok:
        return Text.assemble((f"{result.error}: ", "bold red"), neutralize(result.message), "\n\n", (usage, "dim"))
    text = result.response.decode("utf-8", errors="replace")
    # Strict JSON within the depth limit only: json.loads took a 100,000-deep answer into a
    # RecursionError that killed the console, and json.dumps re-emitted [1e999, NaN] as the
    # bare tokens Infinity and NaN, which are not JSON.
    value = parse_response(result.response)
    body = text if isinstance(value, str) and value == text else dumps(value, indent=2, ensure_ascii=False)
    # Line breaks of the pretty-printed JSON stay; every other control character is escaped.
    shown = "\n".join(neutralize(line) for line in body.split("\n"))
    return Text.assemble(shown, "\n\n", (usage, "dim"))


class CallPanel(Vertical):
    DEFAULT_CSS = """
    CallPanel { height: 1fr; padding: 0 1; }
    CallPanel #call-row { height: 3; }
    CallPanel #call-body { width: 1fr; }
    CallPanel #call-output { height: 1fr; border: round $primary-background; }
    """

    def __init__(self, sup: ConsoleSupervisor, target: str, *, readonly: bool = False, id: str | None = None) -> None:
        super().__init__(id=id)
        self.sup = sup
        self.target = target
        self.readonly = readonly

    def compose(self) -> ComposeResult:
        with Horizontal(id="call-row"):
            yield Input(
                placeholder='request body, e.g. {"op": "list", "list": "home"}', id="call-body", disabled=self.readonly
            )
            yield Button("Send", id="call-send", variant="primary", disabled=self.readonly)
        with VerticalScroll(id="call-output"):
            yield Static("read-only console: requests are disabled" if self.readonly else "", id="call-response")

    @on(Input.Submitted, "#call-body")
    @on(Button.Pressed, "#call-send")
    def _send(self) -> None:
        if self.readonly:
            return
        self.query_one("#call-response", Static).update(Text("sending…", style="dim"))
        self._call(self.query_one("#call-body", Input).value)

    @work(thread=True, exclusive=True, group="call-panel")
    def _call(self, body: str) -> None:
        result = self.sup.call(self.target, body.encode("utf-8"))
        self.app.call_from_thread(self._show, describe(result))

    def _show(self, text: Text) -> None:
        if self.is_attached:  # the view may have closed while the request ran
            self.query_one("#call-response", Static).update(text)
