;; A test app for the server: facet_http answers with the request's raw body as its whole
;; response envelope (the JSON line, "\n", the body), so a test chooses the status and
;; headers a guest returns, forbidden ones included. A request with an empty body is answered
;; 200 with the request's JSON line (method, path, query, base, headers) as the JSON body.
;; facet_handle echoes (a v1 request).
(module
  (memory (export "memory") 2)
  (data (i32.const 0) "{\"status\":200,\"headers\":[[\"content-type\",\"application/json\"]]}\n") ;; 63
  (global $heap (mut i32) (i32.const 1024))
  (global $done (mut i32) (i32.const 0))

  ;; Bump allocator, reset on the first allocation after a request finished.
  (func $alloc (export "facet_alloc") (param $size i32) (result i32)
    (local $p i32) (local $end i32) (local $have i32)
    (if (global.get $done)
      (then (global.set $heap (i32.const 1024)) (global.set $done (i32.const 0))))
    (local.set $p (global.get $heap))
    (local.set $end (i32.add (local.get $p) (local.get $size)))
    (local.set $have (i32.mul (memory.size) (i32.const 65536)))
    (if (i32.gt_u (local.get $end) (local.get $have))
      (then
        (if (i32.eq
              (memory.grow (i32.add (i32.shr_u (i32.sub (local.get $end) (local.get $have)) (i32.const 16))
                                    (i32.const 1)))
              (i32.const -1))
          (then (return (i32.const 0))))))
    (global.set $heap (local.get $end))
    (local.get $p))

  (func $pack (param $p i32) (param $l i32) (result i64)
    (global.set $done (i32.const 1))
    (i64.or (i64.shl (i64.extend_i32_u (local.get $p)) (i64.const 32))
            (i64.extend_i32_u (local.get $l))))

  (func (export "facet_handle") (param $ptr i32) (param $len i32) (result i64)
    (call $pack (local.get $ptr) (local.get $len)))

  ;; Skip the request's JSON line and its "\n": the rest (the raw body) is the answer.
  (func (export "facet_http") (param $ptr i32) (param $len i32) (result i64)
    (local $p i32) (local $end i32)
    (local.set $p (local.get $ptr))
    (local.set $end (i32.add (local.get $ptr) (local.get $len)))
    (block $found
      (loop $scan
        (br_if $found (i32.ge_u (local.get $p) (local.get $end)))
        (br_if $found (i32.eq (i32.load8_u (local.get $p)) (i32.const 10)))
        (local.set $p (i32.add (local.get $p) (i32.const 1)))
        (br $scan)))
    (if (i32.ge_u (i32.add (local.get $p) (i32.const 1)) (local.get $end))
      (then (return (call $describe (local.get $ptr) (i32.sub (local.get $p) (local.get $ptr))))))
    (local.set $p (i32.add (local.get $p) (i32.const 1)))
    (call $pack (local.get $p) (i32.sub (local.get $end) (local.get $p))))

  ;; 200, application/json, and the request line (at $line, $n bytes) as the body.
  (func $describe (param $line i32) (param $n i32) (result i64)
    (local $out i32)
    (local.set $out (call $alloc (i32.add (local.get $n) (i32.const 63))))
    (memory.copy (local.get $out) (i32.const 0) (i32.const 63))
    (memory.copy (i32.add (local.get $out) (i32.const 63)) (local.get $line) (local.get $n))
    (call $pack (local.get $out) (i32.add (local.get $n) (i32.const 63))))
)
