//! Element conversions and the instruction-set tiers of the CPU path.
//!
//! The row kernel in `kernel.rs` is written once over 16-lane `[f32; 16]` blocks and compiled
//! three times: for AVX-512 (F, BW, VL, DQ + F16C + FMA), for AVX2 + FMA + F16C, and portably.
//! The tier is chosen once per process by run-time feature detection. Every tier performs the
//! same f32 operations in the same order (no fused multiply-add is introduced), so all three
//! produce bit-identical results; tests check that.

use half::{bf16, f16};

/// Conversions whose fast form depends on the instruction set (only f16 has one: F16C).
pub(crate) trait Isa: Copy + Send + Sync + 'static {
    fn f16x16_to_f32(src: &[f16; 16]) -> [f32; 16];
    fn f32x16_to_f16(src: &[f32; 16], dst: &mut [f16; 16]);
}

/// Plain Rust; the compiler vectorises what it can.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Portable;

impl Isa for Portable {
    #[inline(always)]
    fn f16x16_to_f32(src: &[f16; 16]) -> [f32; 16] {
        std::array::from_fn(|i| src[i].to_f32())
    }
    #[inline(always)]
    fn f32x16_to_f16(src: &[f32; 16], dst: &mut [f16; 16]) {
        for i in 0..16 {
            dst[i] = f16::from_f32(src[i]);
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) use x86::{Avx2, Avx512};

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::Isa;
    use half::f16;
    use std::arch::x86_64::*;

    /// AVX2 + FMA + F16C.
    #[derive(Clone, Copy, Debug)]
    pub(crate) struct Avx2;
    /// AVX-512 F/BW/VL/DQ on top of AVX2 + FMA + F16C.
    #[derive(Clone, Copy, Debug)]
    pub(crate) struct Avx512;

    // SAFETY (module): these helpers are only reached from functions compiled with the same
    // target features, which `super::super::kernel::select` enables only after
    // `is_x86_feature_detected!` confirmed them; loads and stores use unaligned intrinsics on
    // arrays of exactly 16 elements, so they stay in bounds.

    #[target_feature(enable = "avx2,f16c")]
    #[inline]
    unsafe fn cvt_in_256(src: &[f16; 16]) -> [f32; 16] {
        let p = src.as_ptr() as *const __m128i;
        let lo = _mm256_cvtph_ps(_mm_loadu_si128(p));
        let hi = _mm256_cvtph_ps(_mm_loadu_si128(p.add(1)));
        let mut out = [0f32; 16];
        _mm256_storeu_ps(out.as_mut_ptr(), lo);
        _mm256_storeu_ps(out.as_mut_ptr().add(8), hi);
        out
    }

    #[target_feature(enable = "avx2,f16c")]
    #[inline]
    unsafe fn cvt_out_256(src: &[f32; 16], dst: &mut [f16; 16]) {
        const RNE: i32 = _MM_FROUND_TO_NEAREST_INT;
        let lo = _mm256_cvtps_ph::<RNE>(_mm256_loadu_ps(src.as_ptr()));
        let hi = _mm256_cvtps_ph::<RNE>(_mm256_loadu_ps(src.as_ptr().add(8)));
        let p = dst.as_mut_ptr() as *mut __m128i;
        _mm_storeu_si128(p, lo);
        _mm_storeu_si128(p.add(1), hi);
    }

    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn cvt_in_512(src: &[f16; 16]) -> [f32; 16] {
        let v = _mm512_cvtph_ps(_mm256_loadu_si256(src.as_ptr() as *const __m256i));
        let mut out = [0f32; 16];
        _mm512_storeu_ps(out.as_mut_ptr(), v);
        out
    }

    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn cvt_out_512(src: &[f32; 16], dst: &mut [f16; 16]) {
        const RNE: i32 = _MM_FROUND_TO_NEAREST_INT;
        let v = _mm512_cvtps_ph::<RNE>(_mm512_loadu_ps(src.as_ptr()));
        _mm256_storeu_si256(dst.as_mut_ptr() as *mut __m256i, v);
    }

    impl Isa for Avx2 {
        #[inline(always)]
        fn f16x16_to_f32(src: &[f16; 16]) -> [f32; 16] {
            // SAFETY: see the module note; `Avx2` is only used once AVX2 + F16C were detected.
            unsafe { cvt_in_256(src) }
        }
        #[inline(always)]
        fn f32x16_to_f16(src: &[f32; 16], dst: &mut [f16; 16]) {
            // SAFETY: as above.
            unsafe { cvt_out_256(src, dst) }
        }
    }

    impl Isa for Avx512 {
        #[inline(always)]
        fn f16x16_to_f32(src: &[f16; 16]) -> [f32; 16] {
            // SAFETY: `Avx512` is only used once AVX-512F (and F16C) were detected.
            unsafe { cvt_in_512(src) }
        }
        #[inline(always)]
        fn f32x16_to_f16(src: &[f32; 16], dst: &mut [f16; 16]) {
            // SAFETY: as above.
            unsafe { cvt_out_512(src, dst) }
        }
    }
}

/// A storage element whose arithmetic happens in f32.
pub(crate) trait Elem: Copy + Send + Sync + 'static {
    fn to_f32(self) -> f32;
    /// Round to nearest even; NaN stays NaN; overflow gives infinity.
    fn from_f32(v: f32) -> Self;

    #[inline(always)]
    fn load16<I: Isa>(src: &[Self; 16]) -> [f32; 16] {
        std::array::from_fn(|i| src[i].to_f32())
    }

    #[inline(always)]
    fn store16<I: Isa>(src: &[f32; 16], dst: &mut [Self; 16]) {
        for i in 0..16 {
            dst[i] = Self::from_f32(src[i]);
        }
    }

    /// Rounds an f32 to this type and back.
    #[inline(always)]
    fn round_trip16<I: Isa>(v: &[f32; 16]) -> [f32; 16] {
        let mut tmp = [Self::from_f32(0.0); 16];
        Self::store16::<I>(v, &mut tmp);
        Self::load16::<I>(&tmp)
    }
}

impl Elem for f32 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
    #[inline(always)]
    fn from_f32(v: f32) -> Self {
        v
    }
}

impl Elem for bf16 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        f32::from_bits((self.to_bits() as u32) << 16)
    }
    #[inline(always)]
    fn from_f32(v: f32) -> Self {
        // Branch-free round to nearest even, so the compiler can vectorise it; a NaN keeps its
        // sign and top payload bits and is forced quiet.
        let b = v.to_bits();
        let rounded = (b.wrapping_add(0x7fff + ((b >> 16) & 1)) >> 16) as u16;
        let quiet_nan = ((b >> 16) | 0x0040) as u16;
        bf16::from_bits(if v.is_nan() { quiet_nan } else { rounded })
    }
}

impl Elem for f16 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
    #[inline(always)]
    fn from_f32(v: f32) -> Self {
        f16::from_f32(v)
    }
    #[inline(always)]
    fn load16<I: Isa>(src: &[Self; 16]) -> [f32; 16] {
        I::f16x16_to_f32(src)
    }
    #[inline(always)]
    fn store16<I: Isa>(src: &[f32; 16], dst: &mut [Self; 16]) {
        I::f32x16_to_f16(src, dst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_rounding_matches_half_on_every_pattern_class() {
        // Exhaustive over the upper 16 bits combined with the lower bits that decide rounding.
        for hi in 0..=u16::MAX as u32 {
            for lo in [0u32, 1, 0x7fff, 0x8000, 0x8001, 0xffff] {
                let v = f32::from_bits((hi << 16) | lo);
                let ours = <bf16 as Elem>::from_f32(v);
                let theirs = bf16::from_f32(v);
                if v.is_nan() {
                    assert!(ours.is_nan());
                } else {
                    assert_eq!(
                        ours.to_bits(),
                        theirs.to_bits(),
                        "{v:e} ({:#x})",
                        v.to_bits()
                    );
                }
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn f16_conversions_agree_across_tiers() {
        let mut vals = Vec::new();
        for bits in (0..=u32::MAX).step_by(65_537) {
            vals.push(f32::from_bits(bits));
        }
        vals.extend([
            65504.0,
            65520.0,
            65519.99,
            6.0e-8,
            2.98e-8,
            -0.0,
            f32::INFINITY,
        ]);
        for chunk in vals.chunks_exact(16) {
            let src: [f32; 16] = chunk.try_into().unwrap();
            let mut a = [f16::ZERO; 16];
            Portable::f32x16_to_f16(&src, &mut a);
            let back_p = Portable::f16x16_to_f32(&a);
            if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("f16c") {
                let mut b = [f16::ZERO; 16];
                Avx2::f32x16_to_f16(&src, &mut b);
                let back_v = Avx2::f16x16_to_f32(&b);
                for i in 0..16 {
                    if src[i].is_nan() {
                        assert!(a[i].is_nan() && b[i].is_nan());
                    } else {
                        assert_eq!(a[i].to_bits(), b[i].to_bits(), "{:e}", src[i]);
                        assert_eq!(back_p[i].to_bits(), back_v[i].to_bits());
                    }
                }
            }
            if std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("f16c") {
                let mut b = [f16::ZERO; 16];
                Avx512::f32x16_to_f16(&src, &mut b);
                for i in 0..16 {
                    if !src[i].is_nan() {
                        assert_eq!(a[i].to_bits(), b[i].to_bits(), "{:e}", src[i]);
                    }
                }
            }
        }
    }
}
