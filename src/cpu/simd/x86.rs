//! The x86-64 tiers of [`Isa`]: AVX2 + FMA + F16C, and AVX-512. Every intrinsic is reached
//! only through a tier value, and a tier value only through run-time detection.

use super::Isa;
use half::{bf16, f16};
use std::arch::x86_64::*;
use std::mem::MaybeUninit;

/// AVX2 + FMA + F16C: two 8-lane registers. A value exists only where the CPU has those
/// features ([`Avx2::detect`]), which is what makes its safe methods sound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Avx2 {
    _detected: (),
}

/// AVX-512 F/BW/VL/DQ (+ AVX2, FMA, F16C): one 16-lane register. A value exists only where
/// the CPU has those features ([`Avx512::detect`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Avx512 {
    _detected: (),
}

impl Avx2 {
    /// The tier, when this CPU has AVX2, FMA and F16C.
    pub(crate) fn detect() -> Option<Self> {
        let ok = is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c");
        ok.then_some(Self { _detected: () })
    }
}

impl Avx512 {
    /// The tier, when this CPU has AVX-512 F/BW/VL/DQ as well as every [`Avx2`] feature.
    pub(crate) fn detect() -> Option<Self> {
        let ok = Avx2::detect().is_some()
            && is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vl")
            && is_x86_feature_detected!("avx512dq");
        ok.then_some(Self { _detected: () })
    }
}

/// Items compiled for the [`Avx2`] tier: each with exactly the features [`Avx2::detect`]
/// checks (the one place the kernels' feature list is written).
macro_rules! avx2_fn {
    ($($i:item)*) => { $( #[target_feature(enable = "avx2,fma,f16c")] $i )* };
}
/// Items compiled for the [`Avx512`] tier: the features [`Avx512::detect`] checks.
macro_rules! avx512_fn {
    ($($i:item)*) => {
        $( #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")] $i )*
    };
}
pub(crate) use {avx2_fn, avx512_fn};

const RNE: i32 = _MM_FROUND_TO_NEAREST_INT;

// SAFETY (whole module): the `unsafe fn`s below are compiled with the target features
// they use and are reached only through the methods of `Avx2` / `Avx512` values, which
// exist only after `detect` confirmed every one of those features at run time (the types
// have a private field and no other constructor). Every load and store is unaligned and covers exactly the 16-element
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
    fn zero(self) -> Self::V {
        // SAFETY: see the module note.
        unsafe { (_mm256_setzero_ps(), _mm256_setzero_ps()) }
    }
    #[inline(always)]
    fn splat(self, v: f32) -> Self::V {
        // SAFETY: see the module note.
        unsafe { (_mm256_set1_ps(v), _mm256_set1_ps(v)) }
    }
    #[inline(always)]
    fn add(self, a: Self::V, b: Self::V) -> Self::V {
        // SAFETY: see the module note.
        unsafe { (_mm256_add_ps(a.0, b.0), _mm256_add_ps(a.1, b.1)) }
    }
    #[inline(always)]
    fn mul(self, a: Self::V, b: Self::V) -> Self::V {
        // SAFETY: see the module note.
        unsafe { (_mm256_mul_ps(a.0, b.0), _mm256_mul_ps(a.1, b.1)) }
    }
    #[inline(always)]
    fn to_array(self, v: Self::V) -> [f32; 16] {
        let mut out = [0f32; 16];
        // SAFETY: see the module note; `out` holds 16 f32.
        unsafe {
            _mm256_storeu_ps(out.as_mut_ptr(), v.0);
            _mm256_storeu_ps(out.as_mut_ptr().add(8), v.1);
        }
        out
    }
    #[inline(always)]
    fn load_f32(self, s: &[f32; 16]) -> Self::V {
        // SAFETY: see the module note.
        unsafe {
            (
                _mm256_loadu_ps(s.as_ptr()),
                _mm256_loadu_ps(s.as_ptr().add(8)),
            )
        }
    }
    #[inline(always)]
    fn store_f32(self, v: Self::V, d: &mut [MaybeUninit<f32>; 16]) {
        let p = d.as_mut_ptr() as *mut f32;
        // SAFETY: see the module note.
        unsafe {
            _mm256_storeu_ps(p, v.0);
            _mm256_storeu_ps(p.add(8), v.1);
        }
    }
    #[inline(always)]
    fn load_bf16(self, s: &[bf16; 16]) -> Self::V {
        // SAFETY: see the module note.
        unsafe { load_bf16_256(s) }
    }
    #[inline(always)]
    fn store_bf16(self, v: Self::V, d: &mut [MaybeUninit<bf16>; 16]) {
        // SAFETY: see the module note.
        unsafe { store_bf16_256(v, d) }
    }
    #[inline(always)]
    fn round_bf16(self, v: Self::V) -> Self::V {
        // SAFETY: see the module note.
        unsafe { round_bf16_256(v) }
    }
    #[inline(always)]
    fn load_f16(self, s: &[f16; 16]) -> Self::V {
        // SAFETY: see the module note.
        unsafe { load_f16_256(s) }
    }
    #[inline(always)]
    fn store_f16(self, v: Self::V, d: &mut [MaybeUninit<f16>; 16]) {
        // SAFETY: see the module note.
        unsafe { store_f16_256(v, d) }
    }
    #[inline(always)]
    fn round_f16(self, v: Self::V) -> Self::V {
        // SAFETY: see the module note.
        unsafe { round_f16_256(v) }
    }
    #[inline(always)]
    fn swap_pairs(self, v: Self::V) -> Self::V {
        // SAFETY: see the module note.
        unsafe {
            (
                _mm256_permute_ps::<0b1011_0001>(v.0),
                _mm256_permute_ps::<0b1011_0001>(v.1),
            )
        }
    }
    #[inline(always)]
    fn load_dup8(self, s: &[f32; 8]) -> Self::V {
        // SAFETY: see the module note; the load covers exactly the 8 values.
        unsafe {
            let c = _mm256_loadu_ps(s.as_ptr());
            // [c0 c0 c1 c1 | c4 c4 c5 c5] and [c2 c2 c3 c3 | c6 c6 c7 c7], then their halves.
            let (lo, hi) = (_mm256_unpacklo_ps(c, c), _mm256_unpackhi_ps(c, c));
            (
                _mm256_permute2f128_ps::<0x20>(lo, hi),
                _mm256_permute2f128_ps::<0x31>(lo, hi),
            )
        }
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
    fn zero(self) -> Self::V {
        // SAFETY: see the module note.
        unsafe { _mm512_setzero_ps() }
    }
    #[inline(always)]
    fn splat(self, v: f32) -> Self::V {
        // SAFETY: see the module note.
        unsafe { _mm512_set1_ps(v) }
    }
    #[inline(always)]
    fn add(self, a: Self::V, b: Self::V) -> Self::V {
        // SAFETY: see the module note.
        unsafe { _mm512_add_ps(a, b) }
    }
    #[inline(always)]
    fn mul(self, a: Self::V, b: Self::V) -> Self::V {
        // SAFETY: see the module note.
        unsafe { _mm512_mul_ps(a, b) }
    }
    #[inline(always)]
    fn to_array(self, v: Self::V) -> [f32; 16] {
        let mut out = [0f32; 16];
        // SAFETY: see the module note; `out` holds 16 f32.
        unsafe { _mm512_storeu_ps(out.as_mut_ptr(), v) };
        out
    }
    #[inline(always)]
    fn load_f32(self, s: &[f32; 16]) -> Self::V {
        // SAFETY: see the module note.
        unsafe { _mm512_loadu_ps(s.as_ptr()) }
    }
    #[inline(always)]
    fn store_f32(self, v: Self::V, d: &mut [MaybeUninit<f32>; 16]) {
        // SAFETY: see the module note.
        unsafe { _mm512_storeu_ps(d.as_mut_ptr() as *mut f32, v) }
    }
    #[inline(always)]
    fn load_bf16(self, s: &[bf16; 16]) -> Self::V {
        // SAFETY: see the module note.
        unsafe { load_bf16_512(s) }
    }
    #[inline(always)]
    fn store_bf16(self, v: Self::V, d: &mut [MaybeUninit<bf16>; 16]) {
        // SAFETY: see the module note.
        unsafe { store_bf16_512(v, d) }
    }
    #[inline(always)]
    fn round_bf16(self, v: Self::V) -> Self::V {
        // SAFETY: see the module note.
        unsafe { round_bf16_512(v) }
    }
    #[inline(always)]
    fn load_f16(self, s: &[f16; 16]) -> Self::V {
        // SAFETY: see the module note.
        unsafe { load_f16_512(s) }
    }
    #[inline(always)]
    fn store_f16(self, v: Self::V, d: &mut [MaybeUninit<f16>; 16]) {
        // SAFETY: see the module note.
        unsafe { store_f16_512(v, d) }
    }
    #[inline(always)]
    fn round_f16(self, v: Self::V) -> Self::V {
        // SAFETY: see the module note.
        unsafe { _mm512_cvtph_ps(_mm512_cvtps_ph::<RNE>(v)) }
    }
    #[inline(always)]
    fn swap_pairs(self, v: Self::V) -> Self::V {
        // SAFETY: see the module note.
        unsafe { _mm512_permute_ps::<0b1011_0001>(v) }
    }
    #[inline(always)]
    fn load_dup8(self, s: &[f32; 8]) -> Self::V {
        // SAFETY: see the module note; the load covers exactly the 8 values, and the permute
        // reads only its lanes 0..8.
        unsafe {
            let idx = _mm512_set_epi32(7, 7, 6, 6, 5, 5, 4, 4, 3, 3, 2, 2, 1, 1, 0, 0);
            _mm512_permutexvar_ps(idx, _mm512_castps256_ps512(_mm256_loadu_ps(s.as_ptr())))
        }
    }
}

/// Asks the CPU to bring the cache lines of `s` towards L1 (a hint: no effect on results).
#[inline(always)]
pub(crate) fn prefetch<T>(s: &[T]) {
    let (p, bytes) = (s.as_ptr() as *const i8, std::mem::size_of_val(s));
    for off in (0..bytes).step_by(64) {
        // SAFETY: SSE is part of x86-64's baseline, and a prefetch neither reads the memory
        // architecturally nor faults; the address lies inside `s`.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(p.add(off)) };
    }
}
