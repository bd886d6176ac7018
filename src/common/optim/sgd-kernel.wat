;; The optimizer's host pass in WebAssembly SIMD: torch.optim.SGD (momentum,
;; weight decay, dampening 0, no Nesterov) and the finite check, four floats
;; per instruction. Why not JavaScript: the same loop with Math.fround runs at
;; about 7 ns per parameter (166 ms for ResNet50) against 1.4 ns for a memory
;; copy; this runs at memory speed. wasm's f32 arithmetic rounds every
;; operation to float32 exactly as Math.fround does, so the result is the same
;; bits as the JavaScript reference (sgdStep in sgd.ts; test/sgd-kernel.test.ts).
;;
;; Built by scripts/build-wasm-kernels.ts into sgd-kernel-bytes.ts. All
;; pointers are byte offsets into the imported memory, 4-byte aligned.
(module
  (import "env" "memory" (memory 1 65536 shared))

  ;; 1 when every value of p[0..n) is finite. x * 0 is +-0 for a finite x and
  ;; NaN for Inf or NaN, and a NaN survives every later add.
  (func (export "allFinite") (param $p i32) (param $n i32) (result i32)
    (local $acc v128) (local $end i32) (local $s f32)
    (local.set $end (i32.add (local.get $p) (i32.shl (i32.and (local.get $n) (i32.const -4)) (i32.const 2))))
    (block $done
      (loop $vec
        (br_if $done (i32.ge_u (local.get $p) (local.get $end)))
        (local.set $acc (f32x4.add (local.get $acc) (f32x4.mul (v128.load (local.get $p)) (v128.const f32x4 0 0 0 0))))
        (local.set $p (i32.add (local.get $p) (i32.const 16)))
        (br $vec)))
    (local.set $end (i32.add (local.get $end) (i32.shl (i32.and (local.get $n) (i32.const 3)) (i32.const 2))))
    (block $tdone
      (loop $tail
        (br_if $tdone (i32.ge_u (local.get $p) (local.get $end)))
        (local.set $s (f32.add (local.get $s) (f32.mul (f32.load (local.get $p)) (f32.const 0))))
        (local.set $p (i32.add (local.get $p) (i32.const 4)))
        (br $tail)))
    (i32.and
      (i32x4.all_true (f32x4.eq (local.get $acc) (local.get $acc)))
      (f32.eq (local.get $s) (local.get $s))))

  ;; One SGD step from (w, m) and the gradient g into (wo, mo), n values:
  ;;   gg  = decay ? g + wd * w : g
  ;;   buf = useMomentum ? mom * m + gg : gg
  ;;   mo = buf;  wo = w - lr * buf
  ;; Returns 1 when every g was finite; otherwise wo and mo hold garbage and
  ;; the caller keeps (w, m). The outputs may be the inputs (in place).
  (func (export "sgd")
    (param $w i32) (param $m i32) (param $g i32) (param $wo i32) (param $mo i32) (param $n i32)
    (param $lr f32) (param $mom f32) (param $wd f32) (param $decay i32) (param $useMomentum i32)
    (result i32)
    (local $i i32) (local $vend i32) (local $end i32)
    (local $lr4 v128) (local $mom4 v128) (local $wd4 v128) (local $decay4 v128) (local $useM4 v128)
    (local $x v128) (local $gi v128) (local $gg v128) (local $buf v128) (local $acc v128)
    (local $sx f32) (local $sg f32) (local $sgg f32) (local $sbuf f32) (local $sacc f32)
    (local.set $lr4 (f32x4.splat (local.get $lr)))
    (local.set $mom4 (f32x4.splat (local.get $mom)))
    (local.set $wd4 (f32x4.splat (local.get $wd)))
    ;; all ones or all zeros, for bitselect: one loop serves every case
    (local.set $decay4 (i32x4.splat (i32.sub (i32.const 0) (i32.ne (local.get $decay) (i32.const 0)))))
    (local.set $useM4 (i32x4.splat (i32.sub (i32.const 0) (i32.ne (local.get $useMomentum) (i32.const 0)))))
    (local.set $vend (i32.shl (i32.and (local.get $n) (i32.const -4)) (i32.const 2)))
    (local.set $end (i32.shl (local.get $n) (i32.const 2)))
    (block $done
      (loop $vec
        (br_if $done (i32.ge_u (local.get $i) (local.get $vend)))
        (local.set $x (v128.load (i32.add (local.get $w) (local.get $i))))
        (local.set $gi (v128.load (i32.add (local.get $g) (local.get $i))))
        (local.set $acc (f32x4.add (local.get $acc) (f32x4.mul (local.get $gi) (v128.const f32x4 0 0 0 0))))
        (local.set $gg (v128.bitselect
          (f32x4.add (local.get $gi) (f32x4.mul (local.get $wd4) (local.get $x)))
          (local.get $gi) (local.get $decay4)))
        (local.set $buf (v128.bitselect
          (f32x4.add (f32x4.mul (local.get $mom4) (v128.load (i32.add (local.get $m) (local.get $i)))) (local.get $gg))
          (local.get $gg) (local.get $useM4)))
        (v128.store (i32.add (local.get $mo) (local.get $i)) (local.get $buf))
        (v128.store (i32.add (local.get $wo) (local.get $i))
          (f32x4.sub (local.get $x) (f32x4.mul (local.get $lr4) (local.get $buf))))
        (local.set $i (i32.add (local.get $i) (i32.const 16)))
        (br $vec)))
    (block $tdone
      (loop $tail
        (br_if $tdone (i32.ge_u (local.get $i) (local.get $end)))
        (local.set $sx (f32.load (i32.add (local.get $w) (local.get $i))))
        (local.set $sg (f32.load (i32.add (local.get $g) (local.get $i))))
        (local.set $sacc (f32.add (local.get $sacc) (f32.mul (local.get $sg) (f32.const 0))))
        (local.set $sgg (select
          (f32.add (local.get $sg) (f32.mul (local.get $wd) (local.get $sx)))
          (local.get $sg) (local.get $decay)))
        (local.set $sbuf (select
          (f32.add (f32.mul (local.get $mom) (f32.load (i32.add (local.get $m) (local.get $i)))) (local.get $sgg))
          (local.get $sgg) (local.get $useMomentum)))
        (f32.store (i32.add (local.get $mo) (local.get $i)) (local.get $sbuf))
        (f32.store (i32.add (local.get $wo) (local.get $i))
          (f32.sub (local.get $sx) (f32.mul (local.get $lr) (local.get $sbuf))))
        (local.set $i (i32.add (local.get $i) (i32.const 4)))
        (br $tail)))
    (i32.and
      (i32x4.all_true (f32x4.eq (local.get $acc) (local.get $acc)))
      (f32.eq (local.get $sacc) (local.get $sacc))))
)
