;; The sum kernel of the shared-memory all-reduce (shared-memory.ts): f32x4
;; adds over a shared WebAssembly memory (the region every local thread sees).
;; `add2(dst, a, b, n)`: dst[i] = a[i] + b[i]; `addTo(dst, src, n)`:
;; dst[i] += src[i]; byte addresses, n floats, any alignment. Each add is one
;; IEEE float32 addition (round to nearest even), the same as Math.fround(a + b),
;; so chaining them in rank order gives the sequential float32 sum exactly.
;;
;; Built by scripts/build-wasm-kernels.ts into shared-memory-kernel-bytes.ts
;; (threads on, for the shared memory).
(module
  (import "env" "memory" (memory 1 65536 shared))
  (func (export "add2") (param $dst i32) (param $a i32) (param $b i32) (param $n i32)
    (local $vend i32) (local $end i32)
    (local.set $end (i32.add (local.get $dst) (i32.shl (local.get $n) (i32.const 2))))
    (local.set $vend (i32.add (local.get $dst) (i32.shl (i32.and (local.get $n) (i32.const -4)) (i32.const 2))))
    (block $vdone
      (loop $v
        (br_if $vdone (i32.ge_u (local.get $dst) (local.get $vend)))
        (v128.store (local.get $dst) (f32x4.add (v128.load (local.get $a)) (v128.load (local.get $b))))
        (local.set $dst (i32.add (local.get $dst) (i32.const 16)))
        (local.set $a (i32.add (local.get $a) (i32.const 16)))
        (local.set $b (i32.add (local.get $b) (i32.const 16)))
        (br $v)))
    (block $done
      (loop $s
        (br_if $done (i32.ge_u (local.get $dst) (local.get $end)))
        (f32.store (local.get $dst) (f32.add (f32.load (local.get $a)) (f32.load (local.get $b))))
        (local.set $dst (i32.add (local.get $dst) (i32.const 4)))
        (local.set $a (i32.add (local.get $a) (i32.const 4)))
        (local.set $b (i32.add (local.get $b) (i32.const 4)))
        (br $s))))
  (func (export "addTo") (param $dst i32) (param $src i32) (param $n i32)
    (call 0 (local.get $dst) (local.get $dst) (local.get $src) (local.get $n))))
