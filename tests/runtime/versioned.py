"""Small app versions for rollout and supervision tests, written as WAT.

``versioned_wat(label, ...)`` is a module whose ``facet_handle`` answers ``label`` (so a
test sees which version served it) and traps on a body starting with ``X``; its
``facet_init`` runs ``init_sql`` statements through the ``sql`` host call, then traps if
``init_traps`` (a migration that fails after it wrote), and its handler always traps
with ``handle_traps`` (a version that is simply broken).
"""

from __future__ import annotations

import json

#: A facet_alloc whose memory starts over at each call (the constants live below 4096).
ALLOC = """  (global $heap (mut i32) (i32.const 4096))
  (func (export "facet_alloc") (param $size i32) (result i32)
    (local $p i32)
    (global.set $heap (i32.const 4096))
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (local.get $p) (local.get $size)))
    (local.get $p))
"""


def data_text(text: str) -> str:
    """``text`` as a WAT data string, every byte escaped."""
    return "".join(f"\\{b:02x}" for b in text.encode())


def versioned_wat(
    label: str, init_sql: tuple[str, ...] = (), *, init_traps: bool = False, handle_traps: bool = False
) -> str:
    segments = []
    offset = 0
    label_at, label_len = offset, len(label.encode())
    segments.append(f'(data (i32.const {label_at}) "{data_text(label)}")')
    offset += label_len + 8
    calls = []
    for sql in init_sql:
        request = json.dumps({"sql": sql})
        size = len(request.encode())
        segments.append(f'(data (i32.const {offset}) "{data_text(request)}")')
        calls.append(f"(drop (call $sql (i32.const {offset}) (i32.const {size})))")
        offset += size + 8
    assert offset < 4096, "keep the constants below the heap"
    init_body = " ".join(calls) + (" unreachable" if init_traps else "")
    handle_trap = "unreachable" if handle_traps else ""
    return f"""
(module
  (import "facet" "sql" (func $sql (param i32 i32) (result i64)))
  (memory (export "memory") 1)
  {" ".join(segments)}
{ALLOC}  (func (export "facet_init") {init_body})
  (func (export "facet_handle") (param $ptr i32) (param $len i32) (result i64)
    {handle_trap}
    (if (i32.and (i32.gt_u (local.get $len) (i32.const 0))
                 (i32.eq (i32.load8_u (local.get $ptr)) (i32.const 88)))
      (then unreachable))
    (i64.or (i64.shl (i64.const {label_at}) (i64.const 32)) (i64.const {label_len}))))
"""
