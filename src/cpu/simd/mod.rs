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
    fn zero(self) -> Self::V;
    fn splat(self, v: f32) -> Self::V;
    fn add(self, a: Self::V, b: Self::V) -> Self::V;
    fn mul(self, a: Self::V, b: Self::V) -> Self::V;
    fn to_array(self, v: Self::V) -> [f32; 16];

    fn load_f32(self, s: &[f32; 16]) -> Self::V;
    fn store_f32(self, v: Self::V, d: &mut [MaybeUninit<f32>; 16]);
    fn load_bf16(self, s: &[bf16; 16]) -> Self::V;
    fn store_bf16(self, v: Self::V, d: &mut [MaybeUninit<bf16>; 16]);
    /// Rounds each lane to bf16 (nearest even) and back.
    fn round_bf16(self, v: Self::V) -> Self::V;
    fn load_f16(self, s: &[f16; 16]) -> Self::V;
    fn store_f16(self, v: Self::V, d: &mut [MaybeUninit<f16>; 16]);
    /// Rounds each lane to f16 (nearest even) and back.
    fn round_f16(self, v: Self::V) -> Self::V;
    /// Lanes `2i` and `2i + 1` exchanged (an interleaved rotation's pair partners).
    fn swap_pairs(self, v: Self::V) -> Self::V;
    /// Each of eight values in two adjacent lanes: lane `j` holds `s[j / 2]`.
    fn load_dup8(self, s: &[f32; 8]) -> Self::V;
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
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Portable;

impl Isa for Portable {
    type V = [f32; 16];
    #[inline(always)]
    fn zero(self) -> Self::V {
        [0.0; 16]
    }
    #[inline(always)]
    fn splat(self, v: f32) -> Self::V {
        [v; 16]
    }
    #[inline(always)]
    fn add(self, a: Self::V, b: Self::V) -> Self::V {
        std::array::from_fn(|i| a[i] + b[i])
    }
    #[inline(always)]
    fn mul(self, a: Self::V, b: Self::V) -> Self::V {
        std::array::from_fn(|i| a[i] * b[i])
    }
    #[inline(always)]
    fn to_array(self, v: Self::V) -> [f32; 16] {
        v
    }
    #[inline(always)]
    fn load_f32(self, s: &[f32; 16]) -> Self::V {
        *s
    }
    #[inline(always)]
    fn store_f32(self, v: Self::V, d: &mut [MaybeUninit<f32>; 16]) {
        for i in 0..16 {
            d[i].write(v[i]);
        }
    }
    #[inline(always)]
    fn load_bf16(self, s: &[bf16; 16]) -> Self::V {
        std::array::from_fn(|i| f32::from_bits((s[i].to_bits() as u32) << 16))
    }
    #[inline(always)]
    fn store_bf16(self, v: Self::V, d: &mut [MaybeUninit<bf16>; 16]) {
        for i in 0..16 {
            d[i].write(bf16::from_bits(bf16_bits(v[i])));
        }
    }
    #[inline(always)]
    fn round_bf16(self, v: Self::V) -> Self::V {
        std::array::from_fn(|i| f32::from_bits((bf16_bits(v[i]) as u32) << 16))
    }
    #[inline(always)]
    fn load_f16(self, s: &[f16; 16]) -> Self::V {
        std::array::from_fn(|i| s[i].to_f32())
    }
    #[inline(always)]
    fn store_f16(self, v: Self::V, d: &mut [MaybeUninit<f16>; 16]) {
        for i in 0..16 {
            d[i].write(f16::from_f32(v[i]));
        }
    }
    #[inline(always)]
    fn round_f16(self, v: Self::V) -> Self::V {
        std::array::from_fn(|i| f16::from_f32(v[i]).to_f32())
    }
    #[inline(always)]
    fn swap_pairs(self, v: Self::V) -> Self::V {
        std::array::from_fn(|i| v[i ^ 1])
    }
    #[inline(always)]
    fn load_dup8(self, s: &[f32; 8]) -> Self::V {
        std::array::from_fn(|i| s[i / 2])
    }
}

#[cfg(target_arch = "x86_64")]
mod x86;
#[cfg(target_arch = "x86_64")]
pub(crate) use x86::{avx2_fn, avx512_fn, prefetch, Avx2, Avx512};

/// A cache hint where the target has none: nothing.
#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
pub(crate) fn prefetch<T>(_s: &[T]) {}

/// A storage element whose arithmetic happens in f32.
pub(crate) trait Elem: Copy + Send + Sync + 'static {
    fn to_f32(self) -> f32;
    /// Round to nearest even; NaN stays NaN; overflow gives infinity.
    fn from_f32(v: f32) -> Self;
    fn load<I: Isa>(isa: I, s: &[Self; 16]) -> I::V;
    fn store<I: Isa>(isa: I, v: I::V, d: &mut [MaybeUninit<Self>; 16]);
    /// Rounds each lane to this type and back.
    fn round<I: Isa>(isa: I, v: I::V) -> I::V;
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
    fn load<I: Isa>(isa: I, s: &[Self; 16]) -> I::V {
        isa.load_f32(s)
    }
    #[inline(always)]
    fn store<I: Isa>(isa: I, v: I::V, d: &mut [MaybeUninit<Self>; 16]) {
        isa.store_f32(v, d)
    }
    #[inline(always)]
    fn round<I: Isa>(_isa: I, v: I::V) -> I::V {
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
    fn load<I: Isa>(isa: I, s: &[Self; 16]) -> I::V {
        isa.load_bf16(s)
    }
    #[inline(always)]
    fn store<I: Isa>(isa: I, v: I::V, d: &mut [MaybeUninit<Self>; 16]) {
        isa.store_bf16(v, d)
    }
    #[inline(always)]
    fn round<I: Isa>(isa: I, v: I::V) -> I::V {
        isa.round_bf16(v)
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
    fn load<I: Isa>(isa: I, s: &[Self; 16]) -> I::V {
        isa.load_f16(s)
    }
    #[inline(always)]
    fn store<I: Isa>(isa: I, v: I::V, d: &mut [MaybeUninit<Self>; 16]) {
        isa.store_f16(v, d)
    }
    #[inline(always)]
    fn round<I: Isa>(isa: I, v: I::V) -> I::V {
        isa.round_f16(v)
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
    fn tier_matches_portable<I: Isa>(isa: I) {
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
            let (p, v) = (Portable.load_f32(&src), isa.load_f32(&src));
            let mut a = [MaybeUninit::new(bf16::ZERO); 16];
            let mut b = [MaybeUninit::new(bf16::ZERO); 16];
            Portable.store_bf16(p, &mut a);
            isa.store_bf16(v, &mut b);
            let (a, b) = (
                a.map(|e| unsafe { e.assume_init() }),
                b.map(|e| unsafe { e.assume_init() }),
            );
            let back_p = Portable.to_array(Portable.load_bf16(&a));
            let back_v = isa.to_array(isa.load_bf16(&b));
            let rp = Portable.to_array(Portable.round_bf16(p));
            let rv = isa.to_array(isa.round_bf16(v));
            let mut fa = [MaybeUninit::new(f16::ZERO); 16];
            let mut fb = [MaybeUninit::new(f16::ZERO); 16];
            Portable.store_f16(p, &mut fa);
            isa.store_f16(v, &mut fb);
            let (fa, fb) = (
                fa.map(|e| unsafe { e.assume_init() }),
                fb.map(|e| unsafe { e.assume_init() }),
            );
            let fr_p = Portable.to_array(Portable.round_f16(p));
            let fr_v = isa.to_array(isa.round_f16(v));
            let fl_p = Portable.to_array(Portable.load_f16(&fa));
            let fl_v = isa.to_array(isa.load_f16(&fb));
            let sw_p = Portable.to_array(Portable.swap_pairs(p));
            let sw_v = isa.to_array(isa.swap_pairs(v));
            let half: &[f32; 8] = src[..8].try_into().unwrap();
            let du_v = isa.to_array(isa.load_dup8(half));
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
                assert!(same(sw_p[i], src[i ^ 1]) && same(sw_v[i], src[i ^ 1]));
                assert!(same(du_v[i], src[i / 2]), "dup8 lane {i}");
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn x86_tiers_match_portable() {
        if let Some(t) = Avx2::detect() {
            tier_matches_portable(t);
        }
        if let Some(t) = Avx512::detect() {
            tier_matches_portable(t);
        }
    }
}
