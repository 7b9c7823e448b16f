;; A hand-written component implementing the `twinloom:plugin/plugin` world (contract 0.3.0), for
;; tests. `init` answers ok after running the INIT placeholder's instructions; `on-changes` and
;; `on-tick` return the outputs record at address 64 (empty unless data segments, the DATA
;; placeholder, put something there) after running the CHANGES and TICK placeholders'
;; instructions: loop, trap, grow memory. The outputs record is 40 bytes: the derived values'
;; three columns (indices, values, qualities), the proposals and the reasons, each a (pointer,
;; length) pair.
(component
  (import "twinloom:plugin/types@0.3.0" (instance $types
    (type $quality' (enum "good" "uncertain" "bad"))
    (export "quality" (type $quality (eq $quality')))
    (type $data-type' (enum "boolean" "integer" "float"))
    (export "data-type" (type $data-type (eq $data-type')))
    (type $writable-property' (record (field "path" string) (field "data-type" $data-type)))
    (export "writable-property" (type $writable-property (eq $writable-property')))
    (type $properties' (record
      (field "inputs" (list string))
      (field "owned" (list string))
      (field "writable" (list $writable-property))))
    (export "properties" (type $properties (eq $properties')))
    (type $change-batch' (record
      (field "properties" (list u32))
      (field "values" (list f64))
      (field "qualities" (list u8))
      (field "source-times-ms" (list s64))))
    (export "change-batch" (type $change-batch (eq $change-batch')))
    (type $derived-values' (record
      (field "indices" (list u32))
      (field "values" (list f64))
      (field "qualities" (list u8))))
    (export "derived-values" (type $derived-values (eq $derived-values')))
    (type $setpoint' (variant (case "boolean" bool) (case "integer" s64) (case "float" f64)))
    (export "setpoint" (type $setpoint (eq $setpoint')))
    (type $write-proposal' (record (field "index" u32) (field "value" $setpoint)
      (field "reason-start" u32) (field "reason-len" u32)))
    (export "write-proposal" (type $write-proposal (eq $write-proposal')))
    (type $outputs' (record (field "values" $derived-values) (field "proposals" (list $write-proposal))
      (field "reasons" string)))
    (export "outputs" (type $outputs (eq $outputs')))
    (type $device-error-kind' (enum "not-bound" "not-writable" "not-connected" "stopped" "timeout"
      "device-rejected" "encoding" "out-of-range"))
    (export "device-error-kind" (type $device-error-kind (eq $device-error-kind')))
    (type $outcome' (variant
      (case "written")
      (case "refused" string)
      (case "shadow")
      (case "expired")
      (case "superseded")
      (case "disarmed")
      (case "device-error" $device-error-kind)
      (case "read-back-mismatch")))
    (export "outcome" (type $outcome (eq $outcome')))
    (type $proposal-outcome' (record (field "proposal" u64) (field "index" u32) (field "outcome" $outcome)))
    (export "proposal-outcome" (type $proposal-outcome (eq $proposal-outcome')))
  ))
  (alias export $types "properties" (type $properties))
  (alias export $types "change-batch" (type $change-batch))
  (alias export $types "outputs" (type $outputs))
  (alias export $types "proposal-outcome" (type $proposal-outcome))

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
    ;; Result areas at 16 (init: discriminant 0 = ok) and 64 (outputs: five empty lists).
    (func (export "init") (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)
      {{INIT}}
      (i32.const 16))
    (func (export "on-changes") (param i64 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)
      {{CHANGES}}
      (i32.const 64))
    (func (export "on-tick") (param i64 i32 i32) (result i32)
      {{TICK}}
      (i32.const 64))
  )
  (core instance $i (instantiate $m))

  (type $init-t (func (param "config" string) (param "properties" $properties) (result (result (error string)))))
  (type $changes-t (func (param "now-ms" s64) (param "batch" $change-batch) (param "outcomes" (list $proposal-outcome)) (result $outputs)))
  (type $tick-t (func (param "now-ms" s64) (param "outcomes" (list $proposal-outcome)) (result $outputs)))
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
