"""The ``facets`` command. (The full operator CLI and the console grow from here.)"""

from __future__ import annotations

import json
from pathlib import Path

from runtime import Supervisor, default_data_dir

SAMPLE_APPS = Path(__file__).resolve().parent.parent / "sample_apps"


def demo(data_dir: Path) -> None:
    """Load the sample apps, send a few requests, show the fleet."""
    with Supervisor(data_dir) as sup:
        for wat in sorted(SAMPLE_APPS.glob("*/*.wat")):
            version = sup.load_app(wat)
            print(f"loaded {version.app} v{version.version} ({version.sha256[:12]})")
        for facet in ("alice", "bob", "alice"):
            result = sup.call(f"counter/{facet}")
            print(f"counter/{facet} -> {result.response.decode()}  "
                  f"fuel={result.usage.fuel} wall={result.usage.wall_ms:.2f}ms")
        for info in sup.facet_list():
            print(json.dumps({"facet": f"{info.app}/{info.name}", "state": info.state,
                              "requests": info.usage["requests"]}))


def main() -> None:
    demo(default_data_dir())


if __name__ == "__main__":
    main()
