"""The baseline: the same module on wasmtime-py's stock API and sqlite3, with no supervisor.

What a developer would write in an afternoon: a Linker with a `sql` host
function, `Func.__call__` for every call, one transaction per request. No
quotas, metering, logs, name checks or sandboxing beyond wasmtime's defaults.
Every benchmark figure is a ratio against this, measured in the same run.
"""

from __future__ import annotations

import json
import sqlite3

import wasmtime


class BareHost:
    def __init__(
        self,
        wasm: bytes,
        db_path: str,
        synchronous: str = "NORMAL",
        *,
        engine: wasmtime.Engine | None = None,
        module: wasmtime.Module | None = None,
    ) -> None:
        self.engine = engine or wasmtime.Engine()
        self.module = module or wasmtime.Module(self.engine, wasm)
        self.conn = sqlite3.connect(db_path, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute(f"PRAGMA synchronous={synchronous}")
        self.store = wasmtime.Store(self.engine)
        linker = wasmtime.Linker(self.engine)
        i32, i64 = wasmtime.ValType.i32(), wasmtime.ValType.i64()
        linker.define_func("facet", "sql", wasmtime.FuncType([i32, i32], [i64]), self._sql, access_caller=True)
        self.instance = linker.instantiate(self.store, self.module)
        exports = self.instance.exports(self.store)
        self.memory = exports["memory"]
        self.alloc = exports["facet_alloc"]
        self.handle_fn = exports["facet_handle"]
        self.conn.execute("BEGIN")
        exports["facet_init"](self.store)
        self.conn.execute("COMMIT")

    def _sql(self, caller, ptr: int, length: int) -> int:
        request = json.loads(self.memory.read(caller, ptr, ptr + length))
        cursor = self.conn.execute(request["sql"], request.get("params", []))
        rows = cursor.fetchall()
        reply = json.dumps(
            {"ok": True, "rows": rows, "rows_written": cursor.rowcount, "last_insert_rowid": cursor.lastrowid}
        ).encode()
        out = self.alloc(caller, len(reply))
        self.memory.write(caller, reply, out)
        return (out << 32) | len(reply)

    def handle(self, body: bytes) -> bytes:
        self.conn.execute("BEGIN")
        ptr = self.alloc(self.store, len(body))
        self.memory.write(self.store, body, ptr)
        packed = self.handle_fn(self.store, ptr, len(body)) & 0xFFFFFFFFFFFFFFFF
        self.conn.execute("COMMIT")
        resp_ptr, resp_len = packed >> 32, packed & 0xFFFFFFFF
        return bytes(self.memory.read(self.store, resp_ptr, resp_ptr + resp_len))

    def close(self) -> None:
        self.conn.close()
