"""The ``facets`` command: the console, script runs, and every operator command.

    facets [--data DIR] [console]          the Textual console (the default)
    facets [--data DIR] run SCRIPT|-       a script, JSON Lines out
    facets [--data DIR] COMMAND ARGS...    one command (--json for JSON)
    facets [--data DIR] serve              the apps over HTTP (public and admin listeners)

``FACETS_DATA`` sets the data directory (default ``.facets-data``). One process owns a data
directory (``runtime.owner``): while another one does, COMMAND and run send their lines to
it (``remote``) and print what it answers, exactly what an embedded run prints.

``--durability`` (every command that opens the data directory): ``full`` (the default)
syncs every COMMIT to disk, so an answered request survives a power loss; ``process``
(SQLite synchronous=NORMAL in WAL) survives a killed process, not a power loss, and
commits faster.
"""

from __future__ import annotations

import contextlib
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console

from runtime import FacetsError, Supervisor, SupervisorSettings, default_data_dir, is_source
from runtime.apps import precompile

from . import progress
from .commands import (
    LOAD_PROGRESS,
    SPECS,
    Command,
    CommandError,
    RefusedError,
    Reply,
    UsageError,
    failure,
    is_write,
    parse,
    render,
    run,
)
from .control_server import admin_token, serve_control
from .format import dumps
from .headless import EXIT_FAILED, EXIT_OK, EXIT_USAGE, run_script, script_lines
from .remote import ControlClient, open_or_route

if TYPE_CHECKING:
    from server import Listen


def open_supervisor(data: str | None, *, readonly: bool = False, role: str = "command") -> Supervisor:
    """The data directory's supervisor; with ``readonly``, opened without writing anything
    (no orphan adoption, no mkdir, no control-database writes; ``commands.is_write`` refuses
    the writing commands before they reach it). Its durability is the ``--durability`` given
    to ``main`` (read from the click context, so every command gets it)."""
    data_dir = Path(data) if data else default_data_dir()
    return Supervisor(data_dir, readonly=readonly, durability=chosen_durability(), role=role)


def chosen_durability() -> str:
    """The ``--durability`` given to ``main`` (read from the click context, so every
    command that opens the data directory gets it), else the default."""
    ctx = click.get_current_context(silent=True)
    return ((ctx.find_root().obj or {}) if ctx else {}).get("durability") or SupervisorSettings.durability


def _lost(exc: OSError) -> CommandError:
    """The owner could not be reached or broke off (by type: an OSError)."""
    return CommandError(f"lost the data directory's owner: {type(exc).__name__}: {exc}", "io_error")


@click.group(invoke_without_command=True, help=__doc__)
@click.option(
    "--data",
    envvar="FACETS_DATA",
    type=click.Path(file_okay=False),
    help="data directory (default: $FACETS_DATA or .facets-data)",
)
@click.option(
    "--durability",
    type=click.Choice(["full", "process"]),
    default=None,
    help="full: a COMMIT survives power loss (the default); process: it survives a killed process",
)
@click.pass_context
def main(ctx: click.Context, data: str | None, durability: str | None) -> None:
    ctx.ensure_object(dict)
    ctx.obj["data"] = data
    ctx.obj["durability"] = durability
    if ctx.invoked_subcommand is None:
        ctx.invoke(console)


#: Where ``console --serve`` without a value listens: the issue's public port, loopback only.
CONSOLE_SERVE_DEFAULT = "127.0.0.1:8800"


def _listen(ctx: click.Context, param: click.Parameter, value: str | None) -> Listen | None:
    if value is None:
        return None
    from server import parse_listen  # uvicorn is imported only by the commands that serve

    try:
        return parse_listen(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@main.command()
@click.option("--readonly", is_flag=True, help="hide and refuse every write")
@click.option("--no-samples", is_flag=True, help="do not load the sample apps into an empty data directory")
@click.option(
    "--serve",
    "serve",
    is_flag=False,
    flag_value=CONSOLE_SERVE_DEFAULT,
    default=None,
    metavar="HOST:PORT",
    callback=_listen,
    help=f"also serve the apps over HTTP from the console's process (default {CONSOLE_SERVE_DEFAULT})",
)
@click.pass_context
def console(ctx: click.Context, readonly: bool, no_samples: bool, serve: Listen | None) -> None:
    """Start the operator console."""
    from .app import run_console

    if serve is not None and readonly:
        raise click.UsageError("--serve runs requests, which write: it cannot be used with --readonly")
    try:
        durability = ctx.obj.get("durability")
        run_console(ctx.obj["data"], readonly=readonly, samples=not no_samples, serve=serve, durability=durability)
    except FacetsError as exc:  # the data directory cannot be opened (damaged, missing read-only)
        click.echo(f"facets: {exc.message} ({exc.code})", err=True)
        sys.exit(EXIT_FAILED)


@main.command("run")
@click.argument("script")
@click.option("--fail-fast", is_flag=True, help="stop at the first failed command")
@click.option("--readonly", is_flag=True, help="refuse every write")
@click.pass_context
def run_cmd(ctx: click.Context, script: str, fail_fast: bool, readonly: bool) -> None:
    """Run SCRIPT (a file, or - for stdin): one command per line, JSON Lines out."""
    try:
        data = sys.stdin.buffer.read() if script == "-" else Path(script).read_bytes()
        lines = script_lines(data)
    except (OSError, UsageError) as exc:
        message = exc.message if isinstance(exc, UsageError) else f"cannot read script: {exc}"
        click.echo(dumps(failure("", UsageError(message)) | {"cmd": None}, ensure_ascii=True))
        sys.exit(EXIT_USAGE)
    data_dir = Path(ctx.obj["data"]) if ctx.obj["data"] else default_data_dir()
    try:
        target = open_or_route(data_dir, role="run", readonly=readonly, durability=chosen_durability())
    except FacetsError as exc:  # owned by a process that serves no control socket; damaged...
        click.echo(dumps(failure("", exc) | {"cmd": None}, ensure_ascii=True))
        sys.exit(EXIT_FAILED)
    if isinstance(target, ControlClient):
        sys.exit(_run_remote(target, lines, fail_fast=fail_fast, readonly=readonly))
    with target as sup, serve_control(sup) or contextlib.nullcontext():  # a second script comes here
        status = run_script(sup, lines, sys.stdout, fail_fast=fail_fast, readonly=readonly)
    sys.exit(status)


def _run_remote(client: ControlClient, lines: list[str], *, fail_fast: bool, readonly: bool) -> int:
    """Send a script to the owner; print its JSON Lines as they come; its exit status."""
    try:
        for item in client.script(lines, fail_fast=fail_fast, readonly=readonly):
            if isinstance(item, int):
                return item
            sys.stdout.write(item)
            sys.stdout.flush()
    except OSError as exc:
        click.echo(dumps(failure("", _lost(exc)) | {"cmd": None}, ensure_ascii=True))
    return EXIT_FAILED


@main.command("serve")
@click.option("--listen", default="127.0.0.1:8800", show_default=True, help="public listener, HOST:PORT")
@click.option(
    "--admin",
    default="127.0.0.1:8801",
    show_default=True,
    help="admin listener: /metrics, /healthz, and the control API under /control/ (bearer token: DATA/admin.token)",
)
@click.option("--base-domain", default=None, help="also route FACET.APP.DOMAIN by the Host header")
@click.pass_context
def serve_cmd(ctx: click.Context, listen: str, admin: str, base_domain: str | None) -> None:
    """Serve the apps over HTTP: /APP/FACET/... on the public listener; SIGTERM or
    SIGINT drains the requests in flight, flushes usage and logs, and exits 0."""
    from server import RequireToken, parse_listen, serve

    from .control_api import ControlAPI

    try:
        public_at, admin_at = parse_listen(listen), parse_listen(admin)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    if public_at == admin_at and public_at.port:  # port 0: each gets a free port of its own
        raise click.UsageError(f"--listen and --admin are both {listen}: the admin listener needs its own")

    def ready(urls: list[str]) -> None:
        if sup.owner is not None:
            sup.owner.publish(public_url=urls[0], admin_url=urls[1])
        click.echo(f"public {urls[0]}/APP/FACET/")
        click.echo(f"admin  {urls[1]}/metrics")
        sys.stdout.flush()

    try:
        # The owner of the data directory: `facets COMMAND` and `facets run` elsewhere come
        # through its control socket while it serves.
        with open_supervisor(ctx.obj["data"], role="serve") as sup, serve_control(sup) or contextlib.nullcontext():
            control = ControlAPI(sup)
            try:
                mounts = {"/control": RequireToken(control, admin_token(sup.data_dir))}
                serve(sup, public_at, admin_at, base_domain=base_domain, ready=ready, mounts=mounts)
            finally:
                control.close()
    except FacetsError as exc:  # the data directory cannot be opened
        click.echo(f"facets: {exc.message} ({exc.code})", err=True)
        sys.exit(EXIT_FAILED)
    except OSError as exc:  # a listener cannot bind (address in use, not permitted)
        click.echo(f"facets serve: cannot listen: {exc}", err=True)
        sys.exit(EXIT_FAILED)
    sys.exit(EXIT_OK)


def _make_command(name: str) -> click.Command:
    spec = SPECS[name]

    @click.command(
        name=name,
        help=f"{spec.summary}\n\nUsage: {spec.usage}",
        context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False},
    )
    @click.option("--json", "as_json", is_flag=True, help="print the result as JSON")
    @click.option("--readonly", is_flag=True, help="refuse the command if it writes anything")
    @click.argument("args", nargs=-1, type=click.UNPROCESSED)
    @click.pass_context
    def command(ctx: click.Context, as_json: bool, readonly: bool, args: tuple[str, ...]) -> None:
        if "--json" in args:  # accepted anywhere on the line, like the other flags
            as_json = True
            args = tuple(a for a in args if a != "--json")
        if "--readonly" in args:
            readonly = True
            args = tuple(a for a in args if a != "--readonly")
        line = shlex.join([name, *args])
        try:
            cmd = parse(line)
        except UsageError as exc:
            _print(failure(line, exc), as_json)
            sys.exit(EXIT_USAGE)
        assert cmd is not None  # the line starts with the command's name: never blank
        try:
            if readonly and is_write(cmd):  # refused before the data directory is opened
                raise RefusedError(f"{cmd.name}: refused in read-only mode")
            result: dict[str, Any] = _run_one(ctx.obj["data"], line, cmd, readonly=readonly)
        except (CommandError, FacetsError) as exc:  # FacetsError: opening the data directory failed
            result = failure(line, exc)
        except OSError as exc:
            result = failure(line, _lost(exc))
        _print(result, as_json)
        sys.exit(EXIT_OK if result["ok"] else EXIT_FAILED)

    return command


def _run_one(data: str | None, line: str, cmd: Command, *, readonly: bool) -> dict[str, Any]:
    """Run one command here, or send it to the data directory's owner (``remote``)."""
    data_dir = Path(data) if data else default_data_dir()
    target = open_or_route(data_dir, role="command", readonly=readonly, durability=chosen_durability())
    building = cmd.name == "load" and not readonly and is_source(cmd.args[0])
    if isinstance(target, ControlClient):
        if building:  # built and compiled here, with progress; the owner then finds the caches warm
            _with_progress(lambda report: precompile(cmd.args[0], progress=report))
        return target.command(line, readonly=readonly)
    with target as sup:
        if building:
            return _with_progress(lambda report: Reply(line, run_with_progress(sup, cmd, report, readonly=readonly)))
        return Reply(line, run(sup, cmd, readonly=readonly))


def run_with_progress(sup: Any, cmd: Command, report: Any, *, readonly: bool) -> Any:
    """``run`` with ``report`` receiving the command's build progress (``LOAD_PROGRESS``)."""
    token = LOAD_PROGRESS.set(report)
    try:
        return run(sup, cmd, readonly=readonly)
    finally:
        LOAD_PROGRESS.reset(token)


def _with_progress(work: Callable[[Any], Any]) -> Any:
    reporter = progress.for_terminal()
    if isinstance(reporter, progress.BarProgress):
        with reporter:
            return work(reporter)
    return work(reporter)


def _print(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        click.echo(dumps(result, ensure_ascii=True))  # strict JSON: no NaN/Infinity tokens
    else:
        width = None if sys.stdout.isatty() else 160
        Console(highlight=False, soft_wrap=False, width=width).print(render(result))


for _name in SPECS:
    main.add_command(_make_command(_name))


if __name__ == "__main__":
    main()
