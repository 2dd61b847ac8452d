"""The headless script runner: one command per line in, one JSON object per line out.

A ``load`` that builds a JS/TS/Python app also writes progress lines before its result,
``{"progress": {"step", "detail", "fraction", "elapsed", "cached"}, "cmd": LINE}``: a
reader tells them from results by the ``progress`` key (results have ``ok``).

Exit status: 0 when every command succeeded, 1 when any failed (the script
goes on unless ``fail_fast``), 2 for a usage error: the script file is
missing, or a line cannot be parsed. The whole script is parsed before the
first command runs, so a typo on line 40 does not leave lines 1-39 half done.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Iterable
from typing import IO, Any

from runtime import Supervisor

from .commands import (
    LOAD_PROGRESS,
    Command,
    CommandError,
    Exported,
    Imported,
    Reply,
    Result,
    UsageError,
    failure,
    parse,
    run,
)
from .format import dumps
from .progress import JsonProgress

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def script_lines(data: bytes) -> list[str]:
    """A script's bytes as lines; ``UsageError`` (with the line number) when it is not UTF-8.

    Lines end at ``\\n`` (a ``\\r`` before it is dropped) and nowhere else: ``str.splitlines``
    would also cut a request body at U+2028 or a form feed.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        number = data.count(b"\n", 0, exc.start) + 1
        raise UsageError(f"line {number}: the script is not valid UTF-8 (byte 0x{data[exc.start]:02x})") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def _emit(out: IO[str], payload: dict[str, Any]) -> None:
    out.write(dumps(payload, ensure_ascii=True) + "\n")  # strict JSON: no NaN/Infinity tokens
    out.flush()  # a reader sees each result before the next command runs


#: The argument of each command that names a file (relative to the operator's directory).
_PATH_ARGUMENT = {"load": 0, "import": 0, "export": 1}


def run_at(sup: Supervisor, cmd: Command, *, readonly: bool = False, cwd: str | None = None) -> Result:
    """``commands.run``, with the command's relative file path taken from ``cwd``: the
    directory of the operator who typed it, when an owner runs a command sent from another
    process (``control_api``). What it prints names the path as it was typed, so a command
    prints the same sent to an owner as run embedded."""
    index = _PATH_ARGUMENT.get(cmd.name)
    if cwd is None or index is None or len(cmd.args) <= index or os.path.isabs(cmd.args[index]):
        return run(sup, cmd, readonly=readonly)
    typed = cmd.args[index]
    resolved = os.path.join(cwd, typed)
    args = [*cmd.args[:index], resolved, *cmd.args[index + 1 :]]
    try:
        result = run(sup, dataclasses.replace(cmd, args=args), readonly=readonly)
    except CommandError as exc:
        raise type(exc)(exc.message.replace(resolved, typed), exc.code) from None
    if isinstance(result, Exported | Imported):
        result = dataclasses.replace(result, path=typed)
    return result


def run_script(
    sup: Supervisor,
    lines: Iterable[str],
    out: IO[str] = sys.stdout,
    *,
    fail_fast: bool = False,
    readonly: bool = False,
    cwd: str | None = None,
) -> int:
    """Run a script's lines on ``sup``, writing JSON Lines to ``out``; returns the exit status.
    ``cwd``: where relative file paths are (``run_at``; None: this process's directory)."""
    parsed: list[Command] = []
    for number, line in enumerate(lines, start=1):
        try:
            cmd = parse(line)
        except UsageError as exc:
            _emit(out, {**failure(line.strip(), UsageError(f"line {number}: {exc.message}")), "line": number})
            return EXIT_USAGE
        if cmd is not None:
            parsed.append(cmd)
    status = EXIT_OK
    for cmd in parsed:
        # a load's build progress: {"progress": {...}, "cmd": LINE} lines before its result
        token = LOAD_PROGRESS.set(JsonProgress(out, line=cmd.line) if cmd.name == "load" else None)
        try:
            result: dict[str, Any] = Reply(cmd.line, run_at(sup, cmd, readonly=readonly, cwd=cwd))
        except CommandError as exc:
            result = failure(cmd.line, exc)
            status = EXIT_FAILED
        finally:
            LOAD_PROGRESS.reset(token)
        _emit(out, result)
        if fail_fast and status != EXIT_OK:
            break
    return status
