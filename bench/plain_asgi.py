"""The HTTP baseline: what a user would write instead of a facet, as a plain ASGI app.

One SQL write per request (``BEGIN IMMEDIATE; INSERT; COMMIT``, the writer's statement),
answered with the same JSON the writer facet answers. SQLite in WAL mode with
``synchronous`` from ``PLAIN_SYNCHRONOUS`` (``NORMAL`` is Facets' ``process`` durability,
``FULL`` its ``full``), one connection guarded by a lock, and the write run off the event
loop with ``run_in_executor`` as Facets' server runs ``Supervisor.fetch``. Served by the
same server as Facets (uvicorn + httptools + uvloop), one process:

    PLAIN_DB=/tmp/plain.sqlite3 python -m uvicorn --app-dir bench plain_asgi:app \\
        --loop uvloop --http httptools --no-access-log
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

conn = sqlite3.connect(os.environ.get("PLAIN_DB", "plain.sqlite3"), isolation_level=None, check_same_thread=False)
conn.execute("PRAGMA journal_mode=WAL")
conn.execute(f"PRAGMA synchronous={os.environ.get('PLAIN_SYNCHRONOUS', 'NORMAL')}")
conn.execute("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v INTEGER)")
# One connection for every executor thread: SQLite takes one writer at a time anyway, and a
# connection per thread would make them wait in busy_timeout's sleeps instead of on a lock.
lock = threading.Lock()


def write() -> bytes:
    with lock:
        conn.execute("BEGIN IMMEDIATE")
        cursor = conn.execute("INSERT INTO t(v) VALUES (?)", [42])
        conn.execute("COMMIT")
        return json.dumps({"changes": 1, "last_insert_rowid": cursor.lastrowid}).encode()


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return
    more = True
    while more:  # the body is read (and ignored), as the writer facet ignores it
        more = (await receive()).get("more_body", False)
    body = await asyncio.get_running_loop().run_in_executor(None, write)
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})
