"""``facets console --serve``: the public HTTP listener in the console's process, its URL in
the home view's header, a port in use reported there instead of a crash, and the listener
gone when the console exits."""

from __future__ import annotations

import asyncio
import http.client
import json
import re
import socket
from urllib.parse import urlsplit

import pytest
from click.testing import CliRunner
from textual.widgets import Static

from console import cli
from console.app import FacetsConsole
from runtime import owner_of
from server import Listen
from tests.console.test_tui import SIZE, facets_table, run_async
from tests.console.waiting import until

SERVING = re.compile(r"serving (http://\S+)/ · curl (http://\S+)")


def ingress_line(app: FacetsConsole) -> str:
    line = app.screen.query_one("#ingress", Static)
    return str(line.render()) if line.display else ""


def get(url: str) -> tuple[int, bytes]:
    """A real HTTP GET (http.client: blocking, so run it off the app's event loop)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        conn.request("GET", parts.path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


@run_async
async def test_the_console_serves_http_and_its_header_shows_the_url_to_curl(seeded):
    app = FacetsConsole(seeded, serve=Listen("127.0.0.1", 0))
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: SERVING.search(ingress_line(app)))
        base, sample = SERVING.search(ingress_line(app)).groups()
        assert base == f"http://127.0.0.1:{app.ingress.url.rsplit(':', 1)[1]}"  # the port bound for port 0
        assert sample == f"{base}/counter/alice"

        assert owner_of(seeded.data_dir).public_url == base  # where an attached console finds it

        status, body = await asyncio.to_thread(get, sample)  # what the newcomer's curl does
        assert status == 200
        assert json.loads(body) == {"count": 43}  # the seeded counter (41 + 1), counted once more
        # the request went through this console's supervisor: its home view counts it
        await until(pilot, lambda: str(facets_table(app).get_cell("counter/alice", "http")) == "1/0/0")
    # the console's exit stopped the listener (before the supervisor closes: it is still open here)
    assert app.ingress.url is None and app.ingress.status == "ingress stopped"
    assert owner_of(seeded.data_dir).public_url is None
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", int(base.rsplit(":", 1)[1])), timeout=5).close()


@run_async
async def test_a_port_in_use_is_shown_in_the_header_and_the_console_runs_on(seeded):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        app = FacetsConsole(seeded, serve=Listen("127.0.0.1", port))
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: ingress_line(app) == f"ingress: 127.0.0.1:{port} in use")
            await until(pilot, lambda: facets_table(app).row_count == 8)  # the console works as ever
            assert app.ingress.url is None


@run_async
async def test_without_serve_the_header_has_no_ingress_line(seeded):
    app = FacetsConsole(seeded)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: facets_table(app).row_count == 8)
        assert not app.screen.query_one("#ingress", Static).display
        assert app.ingress is None


@pytest.mark.parametrize(
    ("args", "listen"),
    [
        (["--serve"], Listen("127.0.0.1", 8800)),  # the flag alone: the default loopback port
        (["--serve", "0.0.0.0:9000"], Listen("0.0.0.0", 9000)),
        (["--serve=[::1]:8900"], Listen("::1", 8900)),
        ([], None),
    ],
)
def test_serve_option_parses_host_and_port(monkeypatch, tmp_path, args, listen):
    seen = {}
    monkeypatch.setattr("console.app.run_console", lambda data, **kwargs: seen.update(kwargs))
    result = CliRunner().invoke(cli.main, ["--data", str(tmp_path / "d"), "console", *args])
    assert result.exit_code == 0, result.output
    assert seen["serve"] == listen


@pytest.mark.parametrize("args", [["--serve", "8800"], ["--serve", "localhost:http"], ["--serve", "--readonly"]])
def test_serve_option_refuses_bad_values_before_opening_anything(monkeypatch, tmp_path, args):
    monkeypatch.setattr("console.app.run_console", lambda data, **kwargs: pytest.fail("must not run"))
    result = CliRunner().invoke(cli.main, ["--data", str(tmp_path / "d"), "console", *args])
    assert result.exit_code == 2  # click's usage error
    assert not (tmp_path / "d").exists()
