"""The console's structure: no dead messages (and, below, no import cycles)."""

from __future__ import annotations

import inspect
from pathlib import Path

from textual.message import Message

import console.messages

CONSOLE = Path(console.messages.__file__).resolve().parent


def test_every_app_message_is_posted_and_handled_somewhere():
    messages = [name for name, obj in vars(console.messages).items()
                if inspect.isclass(obj) and issubclass(obj, Message) and obj.__module__ == console.messages.__name__]
    assert messages
    sources = {path: path.read_text() for path in CONSOLE.rglob("*.py") if path.name != "messages.py"}
    for name in messages:
        users = [path.name for path, text in sources.items() if f"{name}(" in text]
        handlers = [path.name for path, text in sources.items() if f"@on({name}" in text or
                    f"on_{''.join('_' + c.lower() if c.isupper() else c for c in name).lstrip('_')}" in text]
        assert users and handlers, f"{name}: posted in {users}, handled in {handlers}"
