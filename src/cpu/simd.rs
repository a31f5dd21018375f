//! 16-lane f32 vectors and element conversions for the instruction-set tiers of the CPU path.
//!
//! The row kernel in `kernel.rs` is written once against [`Isa`] and compiled three times: for
//! AVX-512 (F, BW, VL, DQ + F16C + FMA), for AVX2 + FMA + F16C, and portably (plain arrays the
//! compiler may vectorise). The tier is chosen once per process by run-time feature detection.
//! Every tier performs the same f32 operations in the same order (no fused multiply-add, the
//! same horizontal-sum tree), so all three produce bit-identical results; tests check that.

use half::{bf16, f16};
use std::mem::MaybeUninit;

/// Sixteen f32 lanes and the conversions the kernel needs.
pub(crate) trait Isa: Copy + Send + Sync + 'static {
    type V: Copy;
    fn zero() -> Self::V;
    fn splat(v: f32) -> Self::V;
    fn add(a: Self::V, b: Self::V) -> Self::V;
    fn mul(a: Self::V, b: Self::V) -> Self::V;
    fn to_array(v: Self::V) -> [f32; 16];

    fn load_f32(s: &[f32; 16]) -> Self::V;
    fn store_f32(v: Self::V, d: &mut [MaybeUninit<f32>; 16]);
    fn load_bf16(s: &[bf16; 16]) -> Self::V;
    fn store_bf16(v: Self::V, d: &mut [MaybeUninit<bf16>; 16]);
    /// Rounds each lane to bf16 (nearest even) and back.
    fn round_bf16(v: Self::V) -> Self::V;
    fn load_f16(s: &[f16; 16]) -> Self::V;
    fn store_f16(v: Self::V, d: &mut [MaybeUninit<f16>; 16]);
    /// Rounds each lane to f16 (nearest even) and back.
    fn round_f16(v: Self::V) -> Self::V;
}

/// The fixed summation tree every tier uses to reduce 16 lanes.
#[inline(always)]
pub(crate) fn hsum16(a: [f32; 16]) -> f32 {
    let mut s8 = [0f32; 8];
    for i in 0..8 {
        s8[i] = a[i] + a[i + 8];
    }
    let mut s4 = [0f32; 4];
    for i in 0..4 {
        s4[i] = s8[i] + s8[i + 4];
    }
    (s4[0] + s4[2]) + (s4[1] + s4[3])
}

/// f32 -> bf16 bits, round to nearest even; a NaN keeps its sign and top payload bits and is
/// made quiet. Branch-free so the portable tier can vectorise it.
#[inline(always)]
pub(crate) fn bf16_bits(v: f32) -> u16 {
    let b = v.to_bits();
    let rounded = b.wrapping_add(0x7fff + ((b >> 16) & 1)) >> 16;
    let quiet_nan = (b >> 16) | 0x0040;
    (if (b & 0x7fff_ffff) > 0x7f80_0000 {
        quiet_nan
    } else {
        rounded
    }) as u16
}

/// Plain Rust arrays.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Portable;

impl Isa for Portable {
    type V = [f32; 16];
    #[inline(always)]
    fn zero() -> Self::V {
        [0.0; 16]
    }
    #[inline(always)]
    fn splat(v: f32) -> Self::V {
        [v; 16]
    }
    #[inline(always)]
    fn add(a: Self::V, b: Self::V) -> Self::V {
        std::array::from_fn(|i| a[i] + b[i])
    }
    #[inline(always)]
    fn mul(a: Self::V, b: Self::V) -> Self::V {
        std::array::from_fn(|i| a[i] * b[i])
    }
    #[inline(always)]
    fn to_array(v: Self::V) -> [f32; 16] {
        v
    }
    #[inline(always)]
    fn load_f32(s: &[f32; 16]) -> Self::V {
        *s
    }
    #[inline(always)]
    fn store_f32(v: Self::V, d: &mut [MaybeUninit<f32>; 16]) {
        for i in 0..16 {
            d[i].write(v[i]);
        }
    }
    #[inline(always)]
    fn load_bf16(s: &[bf16; 16]) -> Self::V {
        std::array::from_fn(|i| f32::from_bits((s[i].to_bits() as u32) << 16))
    }
    #[inline(always)]
    fn store_bf16(v: Self::V, d: &mut [MaybeUninit<bf16>; 16]) {
        for i in 0..16 {
            d[i].write(bf16::from_bits(bf16_bits(v[i])));
        }
    }
    #[inline(always)]
    fn round_bf16(v: Self::V) -> Self::V {
        std::array::from_fn(|i| f32::from_bits((bf16_bits(v[i]) as u32) << 16))
    }
    #[inline(always)]
    fn load_f16(s: &[f16; 16]) -> Self::V {
        std::array::from_fn(|i| s[i].to_f32())
    }
    #[inline(always)]
    fn store_f16(v: Self::V, d: &mut [MaybeUninit<f16>; 16]) {
        for i in 0..16 {
            d[i].write(f16::from_f32(v[i]));
        }
    }
    #[inline(always)]
    fn round_f16(v: Self::V) -> Self::V {
        std::array::from_fn(|i| f16::from_f32(v[i]).to_f32())
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) use x86::{Avx2, Avx512};

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::Isa;
    use half::{bf16, f16};
    use std::arch::x86_64::*;
    use std::mem::MaybeUninit;

    /// AVX2 + FMA + F16C: two 8-lane registers.
    #[derive(Clone, Copy, Debug)]
    pub(crate) struct Avx2;
    /// AVX-512 F/BW/VL/DQ (+ F16C): one 16-lane register.
    #[derive(Clone, Copy, Debug)]
    pub(crate) struct Avx512;

    const RNE: i32 = _MM_FROUND_TO_NEAREST_INT;

    // SAFETY (whole module): the `unsafe fn`s below are compiled with the target features
    // they use and are reached only through `Avx2` / `Avx512`, which the kernel selects only
    // after `is_x86_feature_detected!` confirmed every one of those features (see
    // `kernel::tier`). Every load and store is unaligned and covers exactly the 16-element
    // array it is given (`MaybeUninit<T>` has the layout of `T`).

    // ---- AVX2 ----

    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn bf16_round_bits_256(v: __m256) -> __m256i {
        let b = _mm256_castps_si256(v);
        let hi = _mm256_srli_epi32::<16>(b);
        let lsb = _mm256_and_si256(hi, _mm256_set1_epi32(1));
        let r = _mm256_srli_epi32::<16>(_mm256_add_epi32(
            b,
            _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7fff)),
        ));
        let q = _mm256_or_si256(hi, _mm256_set1_epi32(0x40));
        let nan = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_UNORD_Q>(v, v));
        _mm256_blendv_epi8(r, q, nan)
    }

    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn load_bf16_256(s: &[bf16; 16]) -> (__m256, __m256) {
        let p = s.as_ptr() as *const __m128i;
        let lo = _mm256_cvtepu16_epi32(_mm_loadu_si128(p));
        let hi = _mm256_cvtepu16_epi32(_mm_loadu_si128(p.add(1)));
        (
            _mm256_castsi256_ps(_mm256_slli_epi32::<16>(lo)),
            _mm256_castsi256_ps(_mm256_slli_epi32::<16>(hi)),
        )
    }

    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn store_bf16_256(v: (__m256, __m256), d: &mut [MaybeUninit<bf16>; 16]) {
        let lo = bf16_round_bits_256(v.0);
        let hi = bf16_round_bits_256(v.1);
        // packus interleaves 128-bit halves: [lo0-3 hi0-3 lo4-7 hi4-7]; restore the order.
        let packed = _mm256_permute4x64_epi64::<0xD8>(_mm256_packus_epi32(lo, hi));
        _mm256_storeu_si256(d.as_mut_ptr() as *mut __m256i, packed);
    }

    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn round_bf16_256(v: (__m256, __m256)) -> (__m256, __m256) {
        (
            _mm256_castsi256_ps(_mm256_slli_epi32::<16>(bf16_round_bits_256(v.0))),
            _mm256_castsi256_ps(_mm256_slli_epi32::<16>(bf16_round_bits_256(v.1))),
        )
    }

    #[target_feature(enable = "avx2,f16c")]
    #[inline]
    unsafe fn load_f16_256(s: &[f16; 16]) -> (__m256, __m256) {
        let p = s.as_ptr() as *const __m128i;
        (
            _mm256_cvtph_ps(_mm_loadu_si128(p)),
            _mm256_cvtph_ps(_mm_loadu_si128(p.add(1))),
        )
    }

    #[target_feature(enable = "avx2,f16c")]
    #[inline]
    unsafe fn store_f16_256(v: (__m256, __m256), d: &mut [MaybeUninit<f16>; 16]) {
        let p = d.as_mut_ptr() as *mut __m128i;
        _mm_storeu_si128(p, _mm256_cvtps_ph::<RNE>(v.0));
        _mm_storeu_si128(p.add(1), _mm256_cvtps_ph::<RNE>(v.1));
    }

    #[target_feature(enable = "avx2,f16c")]
    #[inline]
    unsafe fn round_f16_256(v: (__m256, __m256)) -> (__m256, __m256) {
        (
            _mm256_cvtph_ps(_mm256_cvtps_ph::<RNE>(v.0)),
            _mm256_cvtph_ps(_mm256_cvtps_ph::<RNE>(v.1)),
        )
    }

    impl Isa for Avx2 {
        type V = (__m256, __m256);
        #[inline(always)]
        fn zero() -> Self::V {
            // SAFETY: see the module note.
            unsafe { (_mm256_setzero_ps(), _mm256_setzero_ps()) }
        }
        #[inline(always)]
        fn splat(v: f32) -> Self::V {
            // SAFETY: see the module note.
            unsafe { (_mm256_set1_ps(v), _mm256_set1_ps(v)) }
        }
        #[inline(always)]
        fn add(a: Self::V, b: Self::V) -> Self::V {
            // SAFETY: see the module note.
            unsafe { (_mm256_add_ps(a.0, b.0), _mm256_add_ps(a.1, b.1)) }
        }
        #[inline(always)]
        fn mul(a: Self::V, b: Self::V) -> Self::V {
            // SAFETY: see the module note.
            unsafe { (_mm256_mul_ps(a.0, b.0), _mm256_mul_ps(a.1, b.1)) }
        }
        #[inline(always)]
        fn to_array(v: Self::V) -> [f32; 16] {
            let mut out = [0f32; 16];
            // SAFETY: see the module note; `out` holds 16 f32.
            unsafe {
                _mm256_storeu_ps(out.as_mut_ptr(), v.0);
                _mm256_storeu_ps(out.as_mut_ptr().add(8), v.1);
            }
            out
        }
        #[inline(always)]
        fn load_f32(s: &[f32; 16]) -> Self::V {
            // SAFETY: see the module note.
            unsafe {
                (
                    _mm256_loadu_ps(s.as_ptr()),
                    _mm256_loadu_ps(s.as_ptr().add(8)),
                )
            }
        }
        #[inline(always)]
        fn store_f32(v: Self::V, d: &mut [MaybeUninit<f32>; 16]) {
            let p = d.as_mut_ptr() as *mut f32;
            // SAFETY: see the module note.
            unsafe {
                _mm256_storeu_ps(p, v.0);
                _mm256_storeu_ps(p.add(8), v.1);
            }
        }
        #[inline(always)]
        fn load_bf16(s: &[bf16; 16]) -> Self::V {
            // SAFETY: see the module note.
            unsafe { load_bf16_256(s) }
        }
        #[inline(always)]
        fn store_bf16(v: Self::V, d: &mut [MaybeUninit<bf16>; 16]) {
            // SAFETY: see the module note.
            unsafe { store_bf16_256(v, d) }
        }
        #[inline(always)]
        fn round_bf16(v: Self::V) -> Self::V {
            // SAFETY: see the module note.
            unsafe { round_bf16_256(v) }
        }
        #[inline(always)]
        fn load_f16(s: &[f16; 16]) -> Self::V {
            // SAFETY: see the module note.
            unsafe { load_f16_256(s) }
        }
        #[inline(always)]
        fn store_f16(v: Self::V, d: &mut [MaybeUninit<f16>; 16]) {
            // SAFETY: see the module note.
            unsafe { store_f16_256(v, d) }
        }
        #[inline(always)]
        fn round_f16(v: Self::V) -> Self::V {
            // SAFETY: see the module note.
            unsafe { round_f16_256(v) }
        }
    }

    // ---- AVX-512 ----

    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn bf16_round_bits_512(v: __m512) -> __m512i {
        let b = _mm512_castps_si512(v);
        let hi = _mm512_srli_epi32::<16>(b);
        let lsb = _mm512_and_si512(hi, _mm512_set1_epi32(1));
        let r = _mm512_srli_epi32::<16>(_mm512_add_epi32(
            b,
            _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff)),
        ));
        let q = _mm512_or_si512(hi, _mm512_set1_epi32(0x40));
        let nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v, v);
        _mm512_mask_blend_epi32(nan, r, q)
    }

    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn load_bf16_512(s: &[bf16; 16]) -> __m512 {
        let w = _mm512_cvtepu16_epi32(_mm256_loadu_si256(s.as_ptr() as *const __m256i));
        _mm512_castsi512_ps(_mm512_slli_epi32::<16>(w))
    }

    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn store_bf16_512(v: __m512, d: &mut [MaybeUninit<bf16>; 16]) {
        let bits = _mm512_cvtepi32_epi16(bf16_round_bits_512(v));
        _mm256_storeu_si256(d.as_mut_ptr() as *mut __m256i, bits);
    }

    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn round_bf16_512(v: __m512) -> __m512 {
        _mm512_castsi512_ps(_mm512_slli_epi32::<16>(bf16_round_bits_512(v)))
    }

    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn load_f16_512(s: &[f16; 16]) -> __m512 {
        _mm512_cvtph_ps(_mm256_loadu_si256(s.as_ptr() as *const __m256i))
    }

    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn store_f16_512(v: __m512, d: &mut [MaybeUninit<f16>; 16]) {
        _mm256_storeu_si256(d.as_mut_ptr() as *mut __m256i, _mm512_cvtps_ph::<RNE>(v));
    }

    impl Isa for Avx512 {
        type V = __m512;
        #[inline(always)]
        fn zero() -> Self::V {
            // SAFETY: see the module note.
            unsafe { _mm512_setzero_ps() }
        }
        #[inline(always)]
        fn splat(v: f32) -> Self::V {
            // SAFETY: see the module note.
            unsafe { _mm512_set1_ps(v) }
        }
        #[inline(always)]
        fn add(a: Self::V, b: Self::V) -> Self::V {
            // SAFETY: see the module note.
            unsafe { _mm512_add_ps(a, b) }
        }
        #[inline(always)]
        fn mul(a: Self::V, b: Self::V) -> Self::V {
            // SAFETY: see the module note.
            unsafe { _mm512_mul_ps(a, b) }
        }
        #[inline(always)]
        fn to_array(v: Self::V) -> [f32; 16] {
            let mut out = [0f32; 16];
            // SAFETY: see the module note; `out` holds 16 f32.
            unsafe { _mm512_storeu_ps(out.as_mut_ptr(), v) };
            out
        }
        #[inline(always)]
        fn load_f32(s: &[f32; 16]) -> Self::V {
            // SAFETY: see the module note.
            unsafe { _mm512_loadu_ps(s.as_ptr()) }
        }
        #[inline(always)]
        fn store_f32(v: Self::V, d: &mut [MaybeUninit<f32>; 16]) {
            // SAFETY: see the module note.
            unsafe { _mm512_storeu_ps(d.as_mut_ptr() as *mut f32, v) }
        }
        #[inline(always)]
        fn load_bf16(s: &[bf16; 16]) -> Self::V {
            // SAFETY: see the module note.
            unsafe { load_bf16_512(s) }
        }
        #[inline(always)]
        fn store_bf16(v: Self::V, d: &mut [MaybeUninit<bf16>; 16]) {
            // SAFETY: see the module note.
            unsafe { store_bf16_512(v, d) }
        }
        #[inline(always)]
        fn round_bf16(v: Self::V) -> Self::V {
            // SAFETY: see the module note.
            unsafe { round_bf16_512(v) }
        }
        #[inline(always)]
        fn load_f16(s: &[f16; 16]) -> Self::V {
            // SAFETY: see the module note.
            unsafe { load_f16_512(s) }
        }
        #[inline(always)]
        fn store_f16(v: Self::V, d: &mut [MaybeUninit<f16>; 16]) {
            // SAFETY: see the module note.
            unsafe { store_f16_512(v, d) }
        }
        #[inline(always)]
        fn round_f16(v: Self::V) -> Self::V {
            // SAFETY: see the module note.
            unsafe { _mm512_cvtph_ps(_mm512_cvtps_ph::<RNE>(v)) }
        }
    }
}

/// A storage element whose arithmetic happens in f32.
pub(crate) trait Elem: Copy + Send + Sync + 'static {
    fn to_f32(self) -> f32;
    /// Round to nearest even; NaN stays NaN; overflow gives infinity.
    fn from_f32(v: f32) -> Self;
    fn load<I: Isa>(s: &[Self; 16]) -> I::V;
    fn store<I: Isa>(v: I::V, d: &mut [MaybeUninit<Self>; 16]);
    /// Rounds each lane to this type and back.
    fn round<I: Isa>(v: I::V) -> I::V;
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
    #[inline(always)]
    fn load<I: Isa>(s: &[Self; 16]) -> I::V {
        I::load_f32(s)
    }
    #[inline(always)]
    fn store<I: Isa>(v: I::V, d: &mut [MaybeUninit<Self>; 16]) {
        I::store_f32(v, d)
    }
    #[inline(always)]
    fn round<I: Isa>(v: I::V) -> I::V {
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
        bf16::from_bits(bf16_bits(v))
    }
    #[inline(always)]
    fn load<I: Isa>(s: &[Self; 16]) -> I::V {
        I::load_bf16(s)
    }
    #[inline(always)]
    fn store<I: Isa>(v: I::V, d: &mut [MaybeUninit<Self>; 16]) {
        I::store_bf16(v, d)
    }
    #[inline(always)]
    fn round<I: Isa>(v: I::V) -> I::V {
        I::round_bf16(v)
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
    fn load<I: Isa>(s: &[Self; 16]) -> I::V {
        I::load_f16(s)
    }
    #[inline(always)]
    fn store<I: Isa>(v: I::V, d: &mut [MaybeUninit<Self>; 16]) {
        I::store_f16(v, d)
    }
    #[inline(always)]
    fn round<I: Isa>(v: I::V) -> I::V {
        I::round_f16(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_rounding_matches_half() {
        for hi in 0..=u16::MAX as u32 {
            for lo in [0u32, 1, 0x7fff, 0x8000, 0x8001, 0xffff] {
                let v = f32::from_bits((hi << 16) | lo);
                let ours = <bf16 as Elem>::from_f32(v);
                if v.is_nan() {
                    assert!(ours.is_nan());
                } else {
                    assert_eq!(ours.to_bits(), bf16::from_f32(v).to_bits(), "{v:e}");
                }
            }
        }
    }

    /// Every tier converts and rounds every sampled f32 bit pattern identically.
    fn tier_matches_portable<I: Isa>() {
        let mut vals: Vec<f32> = (0..=u32::MAX).step_by(65_521).map(f32::from_bits).collect();
        vals.extend([
            65504.0,
            65520.0,
            65519.99,
            6.0e-8,
            2.98e-8,
            -0.0,
            f32::INFINITY,
            3.4e38,
        ]);
        while !vals.len().is_multiple_of(16) {
            vals.push(1.0);
        }
        let same = |a: f32, b: f32| (a.is_nan() && b.is_nan()) || a.to_bits() == b.to_bits();
        for c in vals.chunks_exact(16) {
            let src: [f32; 16] = c.try_into().unwrap();
            let (p, v) = (Portable::load_f32(&src), I::load_f32(&src));
            let mut a = [MaybeUninit::new(bf16::ZERO); 16];
            let mut b = [MaybeUninit::new(bf16::ZERO); 16];
            Portable::store_bf16(p, &mut a);
            I::store_bf16(v, &mut b);
            let (a, b) = (
                a.map(|e| unsafe { e.assume_init() }),
                b.map(|e| unsafe { e.assume_init() }),
            );
            let back_p = Portable::to_array(Portable::load_bf16(&a));
            let back_v = I::to_array(I::load_bf16(&b));
            let rp = Portable::to_array(Portable::round_bf16(p));
            let rv = I::to_array(I::round_bf16(v));
            let mut fa = [MaybeUninit::new(f16::ZERO); 16];
            let mut fb = [MaybeUninit::new(f16::ZERO); 16];
            Portable::store_f16(p, &mut fa);
            I::store_f16(v, &mut fb);
            let (fa, fb) = (
                fa.map(|e| unsafe { e.assume_init() }),
                fb.map(|e| unsafe { e.assume_init() }),
            );
            let fr_p = Portable::to_array(Portable::round_f16(p));
            let fr_v = I::to_array(I::round_f16(v));
            let fl_p = Portable::to_array(Portable::load_f16(&fa));
            let fl_v = I::to_array(I::load_f16(&fb));
            for i in 0..16 {
                assert!(same(back_p[i], back_v[i]), "bf16 {:e}", src[i]);
                assert!(
                    same(rp[i], rv[i]) && same(rp[i], back_p[i]),
                    "bf16 round {:e}",
                    src[i]
                );
                assert!(same(fl_p[i], fl_v[i]), "f16 {:e}", src[i]);
                assert!(
                    same(fr_p[i], fr_v[i]) && same(fr_p[i], fl_p[i]),
                    "f16 round {:e}",
                    src[i]
                );
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn x86_tiers_match_portable() {
        let f16c = std::is_x86_feature_detected!("f16c");
        if std::is_x86_feature_detected!("avx2") && f16c {
            tier_matches_portable::<Avx2>();
        }
        if std::is_x86_feature_detected!("avx512f") && f16c {
            tier_matches_portable::<Avx512>();
        }
    }
}
