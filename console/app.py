"""Entry point of the console (the Textual TUI lands with the console issue; until then a demo)."""

from __future__ import annotations

from pathlib import Path

from runtime import Supervisor, default_data_dir

SAMPLE_APPS = Path(__file__).resolve().parent.parent / "sample_apps"


def run_console(data: str | None, *, readonly: bool = False, samples: bool = True) -> None:
    with Supervisor(Path(data) if data else default_data_dir()) as sup:
        if samples:
            for wat in sorted(SAMPLE_APPS.glob("*/*.wat")):
                sup.load_app(wat)
        for facet in ("alice", "bob"):
            result = sup.call(f"counter/{facet}")
            print(f"counter/{facet} -> {result.response.decode()} ({result.usage.wall_ms:.2f} ms)")
