"""Entry point of the console (the Textual TUI lands with the console issue; until then a demo)."""

from __future__ import annotations

from pathlib import Path

from runtime import Supervisor, default_data_dir

from .samples import load_samples


def run_console(data: str | None, *, readonly: bool = False, samples: bool = True) -> None:
    with Supervisor(Path(data) if data else default_data_dir()) as sup:
        if samples:
            load_samples(sup)
        for info in sup.facet_list():
            print(f"{info.app}/{info.name}: {info.usage['requests']} requests")
