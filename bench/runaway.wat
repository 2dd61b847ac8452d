;; The runaway guest of make bench's http section: every request loops until the host stops it
;; (its timeout_ms quota; fuel is set out of the way). It touches no database.
(module
  (memory (export "memory") 1)
  (func (export "facet_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "facet_handle") (param i32 i32) (result i64)
    (loop $spin (br $spin))
    (i64.const 0))
)
