"""Build every sample app's .wasm from its source with the Zig toolchain from PyPI.

    python sample_apps/build.py           # rebuild all (what `make apps` runs)
    python sample_apps/build.py --check   # rebuild into a temp dir and compare with the committed files

Zig apps import the SDK as the module "facet"; the C app includes sdk/facet.h
and is compiled with `zig cc`. Builds are reproducible for a given Zig version
(the test extras pin it), so the committed .wasm files must match.
"""

from __future__ import annotations

import argparse
import filecmp
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
SDK = HERE / "sdk"
ZIG_APPS = ("counter", "todo", "guestbook", "shortener", "poll")
C_APPS = ("hits",)
#: Small stacks keep a warm facet's memory small; the apps never recurse deeply.
STACK = 65536


def zig(*args: str) -> list[str]:
    return [sys.executable, "-m", "ziglang", *args]


def build_commands(out_dir: Path) -> dict[str, list[str]]:
    commands = {}
    for app in ZIG_APPS:
        commands[app] = zig(
            "build-exe",
            "-target",
            "wasm32-freestanding",
            "-fno-entry",
            "-O",
            "ReleaseSmall",
            "-rdynamic",
            "--stack",
            str(STACK),
            "--dep",
            "facet",
            f"-Mroot={HERE / app / (app + '.zig')}",
            f"-Mfacet={SDK / 'facet.zig'}",
            f"-femit-bin={out_dir / (app + '.wasm')}",
            "--cache-dir",
            str(out_dir / ".zig-cache"),
            "--global-cache-dir",
            str(out_dir / ".zig-global"),
        )
    for app in C_APPS:
        commands[app] = zig(
            "cc",
            "--target=wasm32-freestanding",
            "-O2",
            "-g0",
            "-nostdlib",
            f"-I{SDK}",
            "-Wl,--no-entry",
            "-Wl,--strip-all",
            f"-Wl,-z,stack-size={STACK}",
            "-o",
            str(out_dir / (app + ".wasm")),
            str(HERE / app / (app + ".c")),
        )
    return commands


def build(out_dir: Path) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    built = {}
    for app, command in build_commands(out_dir).items():
        subprocess.run(command, check=True, cwd=HERE)
        built[app] = out_dir / f"{app}.wasm"
    return built


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="compare a fresh build with the committed .wasm")
    args = parser.parse_args()
    if args.check:
        with tempfile.TemporaryDirectory() as tmp:
            built = build(Path(tmp))
            stale = [
                app for app, path in built.items() if not filecmp.cmp(path, HERE / app / f"{app}.wasm", shallow=False)
            ]
        if stale:
            print(f"stale .wasm (run `make apps`): {', '.join(stale)}")
            return 1
        print(f"{len(built)} apps match their sources")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        for app, path in build(Path(tmp)).items():
            (HERE / app / f"{app}.wasm").write_bytes(path.read_bytes())
            print(f"built sample_apps/{app}/{app}.wasm ({path.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
