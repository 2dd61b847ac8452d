"""``facets console`` attached to the data directory's running owner: the same views, live,
over the owner's control socket (``RemoteSupervisor``), and an owner that goes away shown in
the title instead of a crash.

The owner here is a real one: a ``Supervisor`` holding the directory's lock and serving its
control socket (``control_server.serve_control``) on its own threads, in this process.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading

import pytest
from click.testing import CliRunner
from textual.widgets import DataTable, Input, RichLog, Static

from console.app import FacetsConsole, run_console
from console.cli import main
from console.control_server import serve_control
from console.remote_supervisor import OwnerUnreachable, RemoteSupervisor, attach
from console.screens.result import CommandResultScreen
from runtime import ErrorCode, NotFound, QuotaError, Supervisor
from server import Listen
from tests.conftest import COUNTER_WAT, fixture
from tests.console.test_console_serve import ingress_line
from tests.console.test_tui import SIZE, facets_table, open_detail, run_async
from tests.console.waiting import until
from tests.server.conftest import request
from tests.server.test_lifecycle import Serving


def quota_result(app) -> str:
    return str(app.screen.query_one("#quota-result", Static).render())


class Owner:
    """A running owner of ``data``: its supervisor and control socket, until ``stop``."""

    def __init__(self, data, role: str = "serve") -> None:
        self.sup = Supervisor(data, idle_timeout=3600, role=role)
        self.control = serve_control(self.sup)
        assert self.control is not None

    def stop(self) -> None:
        self.control.close()
        self.sup.close()


@pytest.fixture
def owner(tmp_path):
    running = Owner(tmp_path / "data")
    running.sup.load_app(COUNTER_WAT, "counter")
    running.sup.load_app(fixture("probe.wat"), "probe")
    assert running.sup.call("counter/a").ok
    yield running
    running.stop()


@pytest.fixture
def remote(owner, tmp_path):
    attached = attach(tmp_path / "data")
    assert attached is not None
    yield attached
    attached.close()


def test_no_owner_or_an_owner_without_a_socket_is_not_attached_to(tmp_path):
    assert attach(tmp_path / "data") is None  # no directory, no owner
    with Supervisor(tmp_path / "data", role="python"):  # owns it, serves no control socket
        assert attach(tmp_path / "data") is None


@run_async
async def test_the_attached_console_shows_the_owners_facets_live_and_runs_commands_there(owner, remote):
    app = FacetsConsole(remote)
    async with app.run_test(size=SIZE) as pilot:
        table = facets_table(app)
        await until(pilot, lambda: table.row_count == 1)
        assert app.title.endswith(f"attached to serve pid {os.getpid()}")

        assert owner.sup.call("counter/b").ok  # created by the owner while the console watches
        await until(pilot, lambda: "counter/b" in table.rows)

        await pilot.press("colon")
        app.screen.query_one("#command-bar", Input).value = "call counter/a"
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, CommandResultScreen))
        assert app.screen.result["ok"], app.screen.result
        assert owner.sup.usage("counter/a")["requests"] == 2  # the owner ran it: its meters count it
        await pilot.press("escape")
        await until(pilot, lambda: table.get_cell("counter/a", "requests") == 2)  # and the table shows it


@run_async
async def test_the_attached_data_tab_reads_the_owners_facet_database(owner, remote):
    owner.sup.call("probe/t", b'S{"sql": "CREATE TABLE items(x)", "params": []}')
    owner.sup.call("probe/t", b'S{"sql": "INSERT INTO items VALUES (1), (2)", "params": []}')
    app = FacetsConsole(remote)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: "probe/t" in facets_table(app).rows)
        await open_detail(pilot, app, "probe/t")
        tables = app.screen.query_one("#tables-list", DataTable)
        await until(pilot, lambda: tables.row_count == 1)
        assert tables.get_row_at(0)[1] == 2  # the owner's two rows, counted by the local reader


@run_async
async def test_the_attached_logs_view_tails_the_owners_logs_live(owner, remote):
    owner.sup.call("probe/l", b"L1stored before")
    app = FacetsConsole(remote)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("3")
        log = app.screen.query_one(RichLog)
        text = lambda: "\n".join(line.text for line in log.lines)  # noqa: E731
        await until(pilot, lambda: "stored before" in text())  # the recent records, read at once
        owner.sup.call("probe/l", b"L3logged \x1b[31mlive")  # guest text: escapes never reach the terminal
        await until(pilot, lambda: "live" in text())  # streamed by the poller
        assert "\x1b" not in text() and "logged \\x1b[31mlive" in text()
        assert text().count("stored before") == 1


def test_the_reader_opens_the_file_the_owner_writes(owner, remote):
    owner.sup.call("probe/t", b'S{"sql": "CREATE TABLE items(x)", "params": []}')
    with remote.reader("probe/t") as reader:
        assert [t["name"] for t in reader.tables()] == ["items"]
        assert reader.db.conn.execute("PRAGMA database_list").fetchone()[2] == str(owner.sup.db_path("probe/t"))
    with pytest.raises(NotFound):
        remote.reader("probe/nobody")


def test_errors_the_owner_answers_are_raised_as_embedded(remote):
    with pytest.raises(QuotaError):
        remote.set_quotas("counter", fuel="lots")
    with pytest.raises(NotFound):
        remote.evict("counter/nobody")
    assert remote.problem is None  # answered: the owner is there


def test_logs_logged_by_the_owner_stream_to_a_subscriber(owner, remote):
    batches: list[list] = []
    arrived = threading.Event()

    def collect(batch):
        batches.append(batch)
        if any(r.message == "from the owner" for r in batch):
            arrived.set()

    old = owner.sup.call("probe/l", b"L1before the subscription")
    assert old.ok
    owner.sup.logs()  # stored before the subscription: not streamed
    unsubscribe = remote.subscribe_logs(collect)
    try:
        # the first poll marks what is stored; then the owner logs
        assert owner.sup.call("probe/l", b"L1from the owner").ok
        assert arrived.wait(30), batches
    finally:
        unsubscribe()
    messages = [r.message for batch in batches for r in batch]
    assert messages.count("from the owner") == 1  # delivered once, though polls overlap
    assert "before the subscription" not in messages


@run_async
async def test_an_owner_that_goes_away_is_shown_in_the_title_and_a_new_one_attached_to(tmp_path):
    first = Owner(tmp_path / "data")
    first.sup.load_app(COUNTER_WAT, "counter")
    first.sup.call("counter/a")
    remote = attach(tmp_path / "data")
    assert remote is not None
    app = FacetsConsole(remote)
    try:
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: facets_table(app).row_count == 1)
            first.stop()
            await until(pilot, lambda: "is gone" in app.title)
            assert app.title.endswith(f"owner serve pid {os.getpid()} is gone: no process owns the data directory")
            with pytest.raises(OwnerUnreachable) as raised:
                remote.usage()
            assert raised.value.code == ErrorCode.IO_ERROR
            result = remote.call("counter/a")  # never raises, as Supervisor.call
            assert (result.ok, result.error) == (False, ErrorCode.IO_ERROR)
            # every view keeps running on what it showed: the lists, the table's last rows...
            await pilot.press("2", "3", "4", "1")
            assert facets_table(app).row_count == 1
            await pilot.press("e")  # a write: refused with a notification, no crash
            await until(pilot, lambda: any("io_error" in n.message for n in app._notifications))
            # ...and the detail view of a facet: its quota form says why it has nothing to show
            app.open_facet("counter/a")
            await until(pilot, lambda: "failed: lost the data directory's owner" in quota_result(app))
            await pilot.press("escape")

            second = Owner(tmp_path / "data", role="console")
            try:
                await until(pilot, lambda: app.title.endswith(f"attached to console pid {os.getpid()}"))
                second.sup.call("counter/c")
                await until(pilot, lambda: "counter/c" in facets_table(app).rows)
            finally:
                second.stop()
    finally:
        remote.close()


def test_run_console_attaches_when_an_owner_serves(owner, tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(FacetsConsole, "run", lambda self: seen.append(self.sup))
    run_console(str(tmp_path / "data"))
    assert len(seen) == 1 and isinstance(seen[0], RemoteSupervisor)
    assert seen[0].owner.role == "serve"


@pytest.mark.parametrize(("args", "durability"), [([], "full"), (["--durability", "process"], "process")])
def test_the_console_embeds_without_an_owner_with_the_durability_asked(tmp_path, monkeypatch, args, durability):
    seen = []
    monkeypatch.setattr(FacetsConsole, "run", lambda self: seen.append((self.sup, self.sup.durability)))
    result = CliRunner().invoke(main, ["--data", str(tmp_path / "data"), *args, "console", "--no-samples"])
    assert result.exit_code == 0, result.output
    assert len(seen) == 1 and isinstance(seen[0][0], Supervisor)
    assert seen[0][1] == durability


@run_async
async def test_an_attached_console_shows_where_its_owner_serves_http_and_serves_none_itself(owner, tmp_path):
    owner.sup.owner.publish(public_url="http://127.0.0.1:8123")
    remote = attach(tmp_path / "data")
    assert remote is not None
    app = FacetsConsole(remote, serve=Listen("127.0.0.1", 0))  # asked to serve: its owner does
    try:
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: ingress_line(app) == "the owner serves http://127.0.0.1:8123/")
            assert app.ingress is None
    finally:
        remote.close()


@run_async
async def test_a_console_attached_to_facets_serve_sees_its_http_traffic_live_and_its_exit(tmp_path):
    """The owner is ``facets serve`` in its own process: the console follows what its public
    listener serves, sends it a ``:call``, shows it stopped (SIGSTOP) and back, and its exit
    after SIGTERM."""
    data = tmp_path / "data"
    with Supervisor(data) as sup:
        sup.load_app(COUNTER_WAT, "counter")
    serving = Serving(data)
    try:
        remote = attach(data)
        assert remote is not None
        app = FacetsConsole(remote)
        async with app.run_test(size=SIZE) as pilot:
            assert app.title.endswith(f"attached to serve pid {serving.proc.pid}")
            await until(pilot, lambda: ingress_line(app) == f"the owner serves http://127.0.0.1:{serving.port}/")
            reply = await asyncio.to_thread(request, serving.port, "GET", "/counter/alice")
            assert reply.status == 200
            table = facets_table(app)
            await until(
                pilot, lambda: "counter/alice" in table.rows and str(table.get_cell("counter/alice", "http")) == "1/0/0"
            )

            await pilot.press("colon")
            app.screen.query_one("#command-bar", Input).value = "call counter/alice"
            await pilot.press("enter")
            await until(pilot, lambda: isinstance(app.screen, CommandResultScreen))
            assert app.screen.result["ok"], app.screen.result
            await pilot.press("escape")
            await until(pilot, lambda: facets_table(app).get_cell("counter/alice", "requests") == 2)

            # stopped, it still accepts connections (the kernel queues them): only an answer counts
            serving.proc.send_signal(signal.SIGSTOP)
            await until(pilot, lambda: app.title.endswith("does not answer (no reply in 2 s)"))
            serving.proc.send_signal(signal.SIGCONT)
            await until(pilot, lambda: app.title.endswith(f"attached to serve pid {serving.proc.pid}"))

            serving.proc.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(serving.proc.wait, 60) == 0
            await until(pilot, lambda: "is gone" in app.title)
        remote.close()
    finally:
        if serving.proc.poll() is None:
            serving.proc.kill()
        serving.proc.wait()
    with Supervisor(data) as sup:  # the owner counted both: one HTTP request, one :call
        assert sup.usage("counter/alice")["requests"] == 2


def test_supervision_alarms_and_rollouts_answered_by_the_owner(owner, remote, tmp_path):
    """What the views call for issue 15, attached: the owner's own answers."""
    from tests.runtime.versioned import versioned_wat

    for _ in range(3):
        owner.sup.call("probe/a", b"X")
    owner.sup.alarms.set("counter", "a", 1_900_000_000_000)
    assert remote.health("probe/a") == owner.sup.health("probe/a")
    assert [h.target for h in remote.faulting()] == ["probe/a"]
    assert remote.alarm_list("counter") == owner.sup.alarm_list("counter")
    assert remote.reset("probe/a").state == "backoff" and owner.sup.health("probe/a") is None
    v2 = tmp_path / "v2.wat"
    v2.write_text(versioned_wat("v2"))
    owner.sup.load_app_bytes(versioned_wat("v1"), "app")
    version = remote.load_app(v2, "app", canary="30%")
    assert version.version == 2 and remote.rollout("app") == owner.sup.rollout("app")
    assert owner.sup.rollout("app")["canary_percent"] == 30.0
    assert remote.promote("app")["active"] == 2
    assert remote.rollback("app")["active"] == 1
    with pytest.raises(NotFound):
        remote.pin("app", 9)
