;; The all-reduce wire formats (wire-format.ts) in WebAssembly SIMD, four
;; floats per instruction. Why not JavaScript: the scalar loops run at 2-4 ns
;; an element on Node 20 (50-100 ms per 23.5M-element all-reduce), this at
;; close to memory speed. Same bits as the JavaScript kernels of
;; wire-format.ts (test/wire-format.test.ts checks both against a reference).
;;
;; Built by scripts/build-wasm-kernels.ts into wire-kernel-bytes.ts. The module
;; owns its memory: region A (floats, 64 KiB) at 0 and region B (wire bytes,
;; 64 KiB) at 65536; the caller copies a block of at most 16384 elements in,
;; runs one function, and copies the result out. $n is the element count
;; rounded up to a multiple of 8 (padding lanes compute garbage, never read).
(module
  (memory (export "memory") 2)

  ;; bf16 bits (in i32 lanes) of four float32s: PyTorch round_to_nearest_even,
  ;; (u + 0x7FFF + ((u >> 16) & 1)) >> 16, NaN -> 0x7FC0.
  (func $bf16 (param $u v128) (result v128)
    (v128.bitselect
      (v128.const i32x4 0x7fc0 0x7fc0 0x7fc0 0x7fc0)
      (i32x4.shr_u
        (i32x4.add
          (i32x4.add (local.get $u) (v128.const i32x4 0x7fff 0x7fff 0x7fff 0x7fff))
          (v128.and (i32x4.shr_u (local.get $u) (i32.const 16)) (v128.const i32x4 1 1 1 1)))
        (i32.const 16))
      (i32x4.gt_s
        (v128.and (local.get $u) (v128.const i32x4 0x7fffffff 0x7fffffff 0x7fffffff 0x7fffffff))
        (v128.const i32x4 0x7f800000 0x7f800000 0x7f800000 0x7f800000))))

  ;; fp16 bits (in i32 lanes) of four float32s, round to nearest even.
  (func $f16enc (param $u v128) (result v128)
    (local $a v128) (local $r v128) (local $h v128)
    (local.set $a (v128.and (local.get $u) (v128.const i32x4 0x7fffffff 0x7fffffff 0x7fffffff 0x7fffffff)))
    ;; Normal: rebias the exponent and round off 13 bits (a carry bumps the exponent).
    (local.set $r (i32x4.sub (local.get $a) (v128.const i32x4 0x38000000 0x38000000 0x38000000 0x38000000)))
    (local.set $h
      (i32x4.shr_u
        (i32x4.add
          (i32x4.add (local.get $r) (v128.const i32x4 0xfff 0xfff 0xfff 0xfff))
          (v128.and (i32x4.shr_u (local.get $r) (i32.const 13)) (v128.const i32x4 1 1 1 1)))
        (i32.const 13)))
    ;; |x| < 2^-14: |x| + 0.5 rounds (to nearest even) at 2^-24, the fp16 subnormal step.
    (local.set $h
      (v128.bitselect
        (i32x4.sub
          (f32x4.add (local.get $a) (v128.const f32x4 0.5 0.5 0.5 0.5))
          (v128.const i32x4 0x3f000000 0x3f000000 0x3f000000 0x3f000000))
        (local.get $h)
        (i32x4.lt_s (local.get $a) (v128.const i32x4 0x38800000 0x38800000 0x38800000 0x38800000))))
    ;; |x| >= 65520 -> Inf; NaN -> 0x7E00.
    (local.set $h
      (v128.bitselect
        (v128.const i32x4 0x7c00 0x7c00 0x7c00 0x7c00)
        (local.get $h)
        (i32x4.ge_s (local.get $a) (v128.const i32x4 0x477ff000 0x477ff000 0x477ff000 0x477ff000))))
    (local.set $h
      (v128.bitselect
        (v128.const i32x4 0x7e00 0x7e00 0x7e00 0x7e00)
        (local.get $h)
        (i32x4.gt_s (local.get $a) (v128.const i32x4 0x7f800000 0x7f800000 0x7f800000 0x7f800000))))
    (v128.or
      (local.get $h)
      (v128.and (i32x4.shr_u (local.get $u) (i32.const 16)) (v128.const i32x4 0x8000 0x8000 0x8000 0x8000))))

  ;; float32 bits of four fp16s (bits in the low 16 of i32 lanes), exact.
  (func $f16dec (param $h v128) (result v128)
    (local $em v128) (local $norm v128)
    (local.set $em (v128.and (local.get $h) (v128.const i32x4 0x7fff 0x7fff 0x7fff 0x7fff)))
    ;; Normal, Inf, NaN: shift into place, rebias 15 -> 127, and once more for exponent 31 -> 255.
    (local.set $norm
      (i32x4.add
        (i32x4.add (i32x4.shl (local.get $em) (i32.const 13)) (v128.const i32x4 0x38000000 0x38000000 0x38000000 0x38000000))
        (v128.and
          (i32x4.ge_s (local.get $em) (v128.const i32x4 0x7c00 0x7c00 0x7c00 0x7c00))
          (v128.const i32x4 0x38000000 0x38000000 0x38000000 0x38000000))))
    (v128.or
      (v128.bitselect
        ;; Subnormal or zero: (0.5 + em * 2^-24) - 0.5, exact.
        (f32x4.sub
          (v128.or (local.get $em) (v128.const i32x4 0x3f000000 0x3f000000 0x3f000000 0x3f000000))
          (v128.const f32x4 0.5 0.5 0.5 0.5))
        (local.get $norm)
        (i32x4.lt_s (local.get $em) (v128.const i32x4 0x400 0x400 0x400 0x400)))
      (i32x4.shl (v128.and (local.get $h) (v128.const i32x4 0x8000 0x8000 0x8000 0x8000)) (i32.const 16))))

  (func (export "bf16Encode") (param $n i32)
    (local $i i32)
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
        (v128.store offset=65536 (i32.shl (local.get $i) (i32.const 1))
          (i16x8.narrow_i32x4_u
            (call $bf16 (v128.load (i32.shl (local.get $i) (i32.const 2))))
            (call $bf16 (v128.load offset=16 (i32.shl (local.get $i) (i32.const 2))))))
        (local.set $i (i32.add (local.get $i) (i32.const 8)))
        (br $next))))

  (func (export "fp16Encode") (param $n i32)
    (local $i i32)
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
        (v128.store offset=65536 (i32.shl (local.get $i) (i32.const 1))
          (i16x8.narrow_i32x4_u
            (call $f16enc (v128.load (i32.shl (local.get $i) (i32.const 2))))
            (call $f16enc (v128.load offset=16 (i32.shl (local.get $i) (i32.const 2))))))
        (local.set $i (i32.add (local.get $i) (i32.const 8)))
        (br $next))))

  (func (export "bf16Decode") (param $n i32)
    (local $i i32) (local $w v128)
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
        (local.set $w (v128.load offset=65536 (i32.shl (local.get $i) (i32.const 1))))
        (v128.store (i32.shl (local.get $i) (i32.const 2))
          (i32x4.shl (i32x4.extend_low_i16x8_u (local.get $w)) (i32.const 16)))
        (v128.store offset=16 (i32.shl (local.get $i) (i32.const 2))
          (i32x4.shl (i32x4.extend_high_i16x8_u (local.get $w)) (i32.const 16)))
        (local.set $i (i32.add (local.get $i) (i32.const 8)))
        (br $next))))

  (func (export "fp16Decode") (param $n i32)
    (local $i i32) (local $w v128)
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
        (local.set $w (v128.load offset=65536 (i32.shl (local.get $i) (i32.const 1))))
        (v128.store (i32.shl (local.get $i) (i32.const 2))
          (call $f16dec (i32x4.extend_low_i16x8_u (local.get $w))))
        (v128.store offset=16 (i32.shl (local.get $i) (i32.const 2))
          (call $f16dec (i32x4.extend_high_i16x8_u (local.get $w))))
        (local.set $i (i32.add (local.get $i) (i32.const 8)))
        (br $next))))

  (func (export "bf16Accumulate") (param $n i32)
    (local $i i32) (local $p i32) (local $w v128)
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
        (local.set $w (v128.load offset=65536 (i32.shl (local.get $i) (i32.const 1))))
        (local.set $p (i32.shl (local.get $i) (i32.const 2)))
        (v128.store (local.get $p)
          (f32x4.add (v128.load (local.get $p))
            (i32x4.shl (i32x4.extend_low_i16x8_u (local.get $w)) (i32.const 16))))
        (v128.store offset=16 (local.get $p)
          (f32x4.add (v128.load offset=16 (local.get $p))
            (i32x4.shl (i32x4.extend_high_i16x8_u (local.get $w)) (i32.const 16))))
        (local.set $i (i32.add (local.get $i) (i32.const 8)))
        (br $next))))

  (func (export "fp16Accumulate") (param $n i32)
    (local $i i32) (local $p i32) (local $w v128)
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
        (local.set $w (v128.load offset=65536 (i32.shl (local.get $i) (i32.const 1))))
        (local.set $p (i32.shl (local.get $i) (i32.const 2)))
        (v128.store (local.get $p)
          (f32x4.add (v128.load (local.get $p)) (call $f16dec (i32x4.extend_low_i16x8_u (local.get $w)))))
        (v128.store offset=16 (local.get $p)
          (f32x4.add (v128.load offset=16 (local.get $p)) (call $f16dec (i32x4.extend_high_i16x8_u (local.get $w)))))
        (local.set $i (i32.add (local.get $i) (i32.const 8)))
        (br $next))))

  ;; A += B, both float32.
  (func (export "fp32Accumulate") (param $n i32)
    (local $p i32) (local $end i32)
    (local.set $end (i32.shl (local.get $n) (i32.const 2)))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $p) (local.get $end)))
        (v128.store (local.get $p)
          (f32x4.add (v128.load (local.get $p)) (v128.load offset=65536 (local.get $p))))
        (local.set $p (i32.add (local.get $p) (i32.const 16)))
        (br $next))))

  (func (export "bf16Round") (param $n i32)
    (local $p i32) (local $end i32)
    (local.set $end (i32.shl (local.get $n) (i32.const 2)))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $p) (local.get $end)))
        (v128.store (local.get $p) (i32x4.shl (call $bf16 (v128.load (local.get $p))) (i32.const 16)))
        (local.set $p (i32.add (local.get $p) (i32.const 16)))
        (br $next))))

  (func (export "fp16Round") (param $n i32)
    (local $p i32) (local $end i32)
    (local.set $end (i32.shl (local.get $n) (i32.const 2)))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $p) (local.get $end)))
        (v128.store (local.get $p) (call $f16dec (call $f16enc (v128.load (local.get $p)))))
        (local.set $p (i32.add (local.get $p) (i32.const 16)))
        (br $next))))
)
