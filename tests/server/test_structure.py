"""The server package stands on the runtime alone."""

from __future__ import annotations

import subprocess
import sys

import pytest

from server import Limits
from tests.conftest import ROOT


def test_server_imports_neither_console_nor_textual() -> None:
    code = "import server, sys; print(sorted(m for m in sys.modules if m.split('.')[0] in ('console', 'textual')))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    "bad", [{"connections": 0}, {"max_headers": -1}, {"header_timeout": 0}, {"body_timeout": -1.0}]
)
def test_limits_are_checked(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=next(iter(bad))):
        Limits(**bad)  # type: ignore[arg-type]
