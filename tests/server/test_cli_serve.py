"""``facets serve``'s arguments and the global ``--durability`` option (in process, with
click's runner; the serving itself is tested on a real process in test_lifecycle)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import console.cli
import server
from runtime import Supervisor
from server import Listen, parse_listen


@pytest.mark.parametrize("bad", ["nonsense", "127.0.0.1:", "127.0.0.1:99999", ":8800", "::1:8800", "host:port"])
def test_a_bad_listen_address_is_a_usage_error(tmp_path: Path, bad: str) -> None:
    for option in ("--listen", "--admin"):
        result = CliRunner().invoke(console.cli.main, ["--data", str(tmp_path / "d"), "serve", option, bad])
        assert result.exit_code == 2, result.output
        assert "HOST:PORT" in result.output or "brackets" in result.output
    assert not (tmp_path / "d").exists()  # refused before the data directory was opened


def test_the_two_listeners_must_differ(tmp_path: Path) -> None:
    args = ["--data", str(tmp_path / "d"), "serve", "--listen", "127.0.0.1:9000", "--admin", "127.0.0.1:9000"]
    result = CliRunner().invoke(console.cli.main, args)
    assert result.exit_code == 2
    assert "--admin" in result.output


def test_parse_listen() -> None:
    assert parse_listen("127.0.0.1:8800") == Listen("127.0.0.1", 8800)
    assert parse_listen("[::1]:0") == Listen("::1", 0)
    assert parse_listen("localhost:80").url() == "http://localhost:80"
    assert Listen("::1", 8800).url() == "http://[::1]:8800"


@pytest.mark.parametrize(("args", "expected"), [([], "full"), (["--durability", "process"], "process")])
def test_durability_reaches_the_served_supervisor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], expected: str
) -> None:
    seen: list[tuple[str, str]] = []

    def fake_serve(sup: Supervisor, *a: Any, ready: Any, **kw: Any) -> None:  # returns at once
        seen.append((sup.durability, sup.settings.role))
        ready(["http://127.0.0.1:1", "http://127.0.0.1:2"])

    monkeypatch.setattr(server, "serve", fake_serve)
    result = CliRunner().invoke(console.cli.main, ["--data", str(tmp_path / "d"), *args, "serve"])
    assert result.exit_code == 0, result.output
    assert seen == [(expected, "serve")]
    assert result.output.splitlines() == ["public http://127.0.0.1:1/APP/FACET/", "admin  http://127.0.0.1:2/metrics"]


def test_a_bad_durability_is_a_usage_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(console.cli.main, ["--data", str(tmp_path / "d"), "--durability", "fast", "apps"])
    assert result.exit_code == 2
    assert "full" in result.output and "process" in result.output
