;; counter: the facet ABI's "hello world", hand-written in WebAssembly text.
;;
;; Every request (whatever its body) adds one to the facet's counter and
;; answers {"count": N}. The schema is created in facet_init; state lives
;; only in the facet's SQLite database, never in wasm globals, so it survives
;; eviction, restarts and upgrades.
(module
  (import "facet" "sql" (func $sql (param i32 i32) (result i64)))
  (memory (export "memory") 1)

  ;; SQL requests as JSON, at fixed offsets (offset, length noted beside each).
  (data (i32.const 64) "{\"sql\":\"CREATE TABLE IF NOT EXISTS counter(id INTEGER PRIMARY KEY CHECK (id = 1), n INTEGER NOT NULL)\"}") ;; 103
  (data (i32.const 175) "{\"sql\":\"INSERT OR IGNORE INTO counter(id, n) VALUES (1, 0)\"}") ;; 60
  (data (i32.const 243) "{\"sql\":\"UPDATE counter SET n = n + 1 WHERE id = 1 RETURNING n\"}") ;; 63
  (data (i32.const 0) "{\"count\":") ;; 9

  ;; A bump allocator over the memory after the constants. It is reset on the
  ;; first allocation after a request finished, so a response stays valid
  ;; until the guest is next entered and memory does not creep.
  (global $heap_start i32 (i32.const 1024))
  (global $heap (mut i32) (i32.const 1024))
  (global $done (mut i32) (i32.const 0))

  (func $alloc (export "facet_alloc") (param $size i32) (result i32)
    (local $p i32) (local $end i32) (local $have i32)
    (if (global.get $done)
      (then (global.set $heap (global.get $heap_start)) (global.set $done (i32.const 0))))
    (local.set $p (global.get $heap))
    (local.set $end (i32.add (local.get $p) (local.get $size)))
    (local.set $have (i32.mul (memory.size) (i32.const 65536)))
    (if (i32.gt_u (local.get $end) (local.get $have))
      (then
        (if (i32.eq (memory.grow (i32.add (i32.shr_u (i32.sub (local.get $end) (local.get $have))
                                                     (i32.const 16))
                                          (i32.const 1)))
                    (i32.const -1))
          (then (return (i32.const 0))))))
    (global.set $heap (local.get $end))
    (local.get $p))

  (func (export "facet_init")
    (drop (call $sql (i32.const 64) (i32.const 103)))
    (drop (call $sql (i32.const 175) (i32.const 60))))

  ;; The sql result looks like {"ok":true,"columns":["n"],"rows":[[N]],...}:
  ;; find "[[" and copy the digits after it into {"count":N}.
  (func (export "facet_handle") (param $ptr i32) (param $len i32) (result i64)
    (local $res i64) (local $p i32) (local $end i32) (local $out i32) (local $o i32)
    (local.set $res (call $sql (i32.const 243) (i32.const 63)))
    (local.set $p (i32.wrap_i64 (i64.shr_u (local.get $res) (i64.const 32))))
    (local.set $end (i32.add (local.get $p) (i32.wrap_i64 (local.get $res))))
    (local.set $out (call $alloc (i32.const 32)))
    (memory.copy (local.get $out) (i32.const 0) (i32.const 9))
    (local.set $o (i32.add (local.get $out) (i32.const 9)))
    (block $found
      (loop $scan
        (br_if $found (i32.ge_u (i32.add (local.get $p) (i32.const 1)) (local.get $end)))
        (br_if $found (i32.and (i32.eq (i32.load8_u (local.get $p)) (i32.const 91))
                               (i32.eq (i32.load8_u offset=1 (local.get $p)) (i32.const 91))))
        (local.set $p (i32.add (local.get $p) (i32.const 1)))
        (br $scan)))
    (local.set $p (i32.add (local.get $p) (i32.const 2)))
    (block $copied
      (loop $digits
        (br_if $copied (i32.ge_u (local.get $p) (local.get $end)))
        (br_if $copied (i32.eq (i32.load8_u (local.get $p)) (i32.const 93)))
        (br_if $copied (i32.ge_u (local.get $o) (i32.add (local.get $out) (i32.const 31))))
        (i32.store8 (local.get $o) (i32.load8_u (local.get $p)))
        (local.set $o (i32.add (local.get $o) (i32.const 1)))
        (local.set $p (i32.add (local.get $p) (i32.const 1)))
        (br $digits)))
    (i32.store8 (local.get $o) (i32.const 125))
    (global.set $done (i32.const 1))
    (i64.or (i64.shl (i64.extend_i32_u (local.get $out)) (i64.const 32))
            (i64.extend_i32_u (i32.sub (i32.add (local.get $o) (i32.const 1)) (local.get $out)))))
)
