;; A hand-written component of the previous contract, twinloom:plugin@0.2.0: the daemon must
;; refuse it with a message naming both versions. Placeholders as in template.wat.
(component
  (import "twinloom:plugin/types@0.2.0" (instance $types
    (type $quality' (enum "good" "uncertain" "bad"))
    (export "quality" (type $quality (eq $quality')))
    (type $change-batch' (record
      (field "properties" (list u32))
      (field "values" (list f64))
      (field "qualities" (list u8))
      (field "source-times-ms" (list s64))))
    (export "change-batch" (type $change-batch (eq $change-batch')))
    (type $derived-value' (record (field "property" string) (field "value" f64)))
    (export "derived-value" (type $derived-value (eq $derived-value')))
    (type $write-proposal' (record (field "property" string) (field "value" f64) (field "reason" string)))
    (export "write-proposal" (type $write-proposal (eq $write-proposal')))
    (type $outputs' (record (field "values" (list $derived-value)) (field "proposals" (list $write-proposal))))
    (export "outputs" (type $outputs (eq $outputs')))
  ))
  (alias export $types "change-batch" (type $change-batch))
  (alias export $types "outputs" (type $outputs))

  (core module $m
    (memory (export "memory") 1)
    {{DATA}}
    (global $heap (mut i32) (i32.const 1024))
    ;; cabi_realloc: a bump allocator (plugins here never free).
    (func (export "realloc") (param i32 i32 i32 i32) (result i32)
      (local $p i32)
      (local.set $p
        (i32.and
          (i32.add (global.get $heap) (i32.sub (local.get 2) (i32.const 1)))
          (i32.sub (i32.const 0) (local.get 2))))
      (global.set $heap (i32.add (local.get $p) (local.get 3)))
      (if (i32.gt_u (global.get $heap) (i32.mul (memory.size) (i32.const 65536)))
        (then (drop (memory.grow (i32.const 1)))))
      (local.get $p))
    ;; Result areas at 16 (init: discriminant 0 = ok) and 64 (outputs: two empty lists).
    (func (export "init") (param i32 i32 i32 i32) (result i32)
      {{INIT}}
      (i32.const 16))
    (func (export "on-changes") (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)
      {{CHANGES}}
      (i32.const 64))
    (func (export "on-tick") (param i64) (result i32)
      {{TICK}}
      (i32.const 64))
  )
  (core instance $i (instantiate $m))

  (type $init-t (func (param "config" string) (param "properties" (list string)) (result (result (error string)))))
  (type $changes-t (func (param "batch" $change-batch) (result $outputs)))
  (type $tick-t (func (param "now-ms" s64) (result $outputs)))
  (func $init (type $init-t)
    (canon lift (core func $i "init") (memory (core memory $i "memory")) (realloc (core func $i "realloc"))))
  (func $on-changes (type $changes-t)
    (canon lift (core func $i "on-changes") (memory (core memory $i "memory")) (realloc (core func $i "realloc"))))
  (func $on-tick (type $tick-t)
    (canon lift (core func $i "on-tick") (memory (core memory $i "memory")) (realloc (core func $i "realloc"))))
  (export "init" (func $init))
  (export "on-changes" (func $on-changes))
  (export "on-tick" (func $on-tick))
)
