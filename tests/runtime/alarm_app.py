"""A core-module app that uses alarms, for the alarm tests (WAT, built per test).

Requests, by their first byte:
  ``S`` + 8 bytes (i64 LE ms): ``set_alarm``; answers its status as one byte (0, 1, 2)
  ``W`` + 8 bytes: ``set_alarm``, then trap (the request fails: its change must not stay)
  ``G``: answers ``get_alarm`` as 8 bytes (i64 LE; -1 for none)
  ``D``: ``delete_alarm``; answers ``ok``
Its ``facet_alarm`` inserts a row into ``fired`` (so a test counts deliveries in the
facet's own database), and with ``reschedule_ms`` also sets the next alarm that far
ahead; with ``alarm_traps`` it inserts, then traps (a failed delivery: the row must roll
back). ``handler=False`` leaves ``facet_alarm`` out.
"""

from __future__ import annotations

import struct

from tests.runtime.versioned import ALLOC, data_text

CREATE = '{"sql":"CREATE TABLE IF NOT EXISTS fired(id INTEGER PRIMARY KEY, v INTEGER DEFAULT 1)"}'
INSERT = '{"sql":"INSERT INTO fired DEFAULT VALUES"}'


def alarm_wat(*, handler: bool = True, reschedule_ms: int = 0, alarm_traps: bool = False) -> str:
    create_at, insert_at = 64, 256
    alarm_body = f"(drop (call $sql (i32.const {insert_at}) (i32.const {len(INSERT)})))"
    if reschedule_ms:
        alarm_body += f" (drop (call $set (i64.add (call $now) (i64.const {reschedule_ms}))))"
    if alarm_traps:
        alarm_body += " unreachable"
    alarm_export = f'(func (export "facet_alarm") {alarm_body})' if handler else ""
    return f"""
(module
  (import "facet" "sql" (func $sql (param i32 i32) (result i64)))
  (import "facet" "now_ms" (func $now (result i64)))
  (import "facet" "set_alarm" (func $set (param i64) (result i32)))
  (import "facet" "get_alarm" (func $get (result i64)))
  (import "facet" "delete_alarm" (func $delete))
  (memory (export "memory") 1)
  (data (i32.const 0) "ok")
  (data (i32.const {create_at}) "{data_text(CREATE)}")
  (data (i32.const {insert_at}) "{data_text(INSERT)}")
{ALLOC}  (func (export "facet_init") (drop (call $sql (i32.const {create_at}) (i32.const {len(CREATE)}))))
  {alarm_export}
  (func (export "facet_handle") (param $ptr i32) (param $len i32) (result i64)
    (local $op i32)
    (local.set $op (i32.load8_u (local.get $ptr)))
    (if (i32.eq (local.get $op) (i32.const 83))  ;; S
      (then
        (i32.store8 (i32.const 32) (call $set (i64.load (i32.add (local.get $ptr) (i32.const 1)))))
        (return (i64.or (i64.shl (i64.const 32) (i64.const 32)) (i64.const 1)))))
    (if (i32.eq (local.get $op) (i32.const 87))  ;; W
      (then (drop (call $set (i64.load (i32.add (local.get $ptr) (i32.const 1))))) unreachable))
    (if (i32.eq (local.get $op) (i32.const 71))  ;; G
      (then
        (i64.store (i32.const 40) (call $get))
        (return (i64.or (i64.shl (i64.const 40) (i64.const 32)) (i64.const 8)))))
    (if (i32.eq (local.get $op) (i32.const 68))  ;; D
      (then (call $delete)))
    (i64.const 2)))
"""


def set_body(at_ms: int, op: bytes = b"S") -> bytes:
    return op + struct.pack("<q", at_ms)


def got(response: bytes) -> int:
    return struct.unpack("<q", response)[0]
