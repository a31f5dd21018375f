//! The per-tier parts of the CPU q/k norm + rotary embedding (`super`): the sum of squares
//! and the vector head kernel (`head_f32`), compiled for each instruction-set tier.

use super::super::kernel::{arr, arr_mut, Tier};
#[cfg(target_arch = "x86_64")]
use super::super::simd::{avx2_fn, avx512_fn, Avx2, Avx512};
use super::super::simd::{Elem, Isa, Portable};
use crate::config::Rounding;
use crate::rope_config::RopeStyle;
use crate::rope_op::RopeParams;
use std::mem::MaybeUninit;

/// One head vector's operands: its input values, the scale of its norm, and its weights,
/// cosines and sines (`d / 2` each) in f32.
pub(super) struct HeadIn<'a, T> {
    pub x: &'a [T],
    pub scale: f32,
    pub w: &'a [f32],
    pub cos: &'a [f32],
    pub sin: &'a [f32],
}

#[inline(always)]
fn sum_sq<T: Elem, I: Isa>(isa: I, v: &[T]) -> f32 {
    let mut acc = isa.zero();
    let mut it = v.chunks_exact(16);
    for c in &mut it {
        let x = T::load(isa, arr(c));
        acc = isa.add(acc, isa.mul(x, x));
    }
    let mut s = super::super::simd::hsum16(isa.to_array(acc));
    for x in it.remainder() {
        let f = x.to_f32();
        s += f * f;
    }
    s
}

/// `y = round(x * scale [rounded] * w)` of element `i`, in f32.
#[inline(always)]
fn y1<T: Elem>(x: &[T], w: &[f32], i: usize, scale: f32, rb: bool) -> f32 {
    let mut n = x[i].to_f32() * scale;
    if rb {
        n = T::from_f32(n).to_f32();
    }
    T::from_f32(n * w[i]).to_f32()
}

/// [`y1`] of the 16 elements from `i`, as a vector.
#[inline(always)]
fn y16<T: Elem, I: Isa>(isa: I, x: &[T], w: &[f32], i: usize, sc: I::V, rb: bool) -> I::V {
    let mut n = isa.mul(T::load(isa, arr(&x[i..i + 16])), sc);
    if rb {
        n = T::round(isa, n);
    }
    T::round(isa, isa.mul(n, isa.load_f32(arr(&w[i..i + 16]))))
}

/// Head vector `x` into `out`: `y` ([`y1`]) rotated pair by pair, the pair `(a, b)` with angle
/// `(c, s)` giving `out[a] = y[a] * c + y[b] * (-s)` and `out[b] = y[b] * c + y[a] * s`, rounded
/// once on the store. 16 lanes at a time, with `y` kept in registers: `rope_i` pairs lie inside
/// a vector (partners by a lane swap, the angles each spread over two lanes), `rope` pairs
/// across the two halves (a vector from each); the elements past the last whole vector one by
/// one with the same operations.
#[inline(always)]
fn head_f32<T: Elem, I: Isa>(
    isa: I,
    h: &HeadIn<'_, T>,
    op: &RopeParams,
    out: &mut [MaybeUninit<T>],
) {
    let HeadIn {
        x,
        scale,
        w,
        cos,
        sin,
    } = *h;
    let d = x.len();
    let rb = op.rounding == Rounding::BeforeWeight;
    let sc = isa.splat(scale);
    // The scalar form of one pair from its `y` values.
    let pair = |i: usize, out: &mut [MaybeUninit<T>]| {
        let (a, b) = op.pair(i);
        let (ya, yb) = (y1(x, w, a, scale, rb), y1(x, w, b, scale, rb));
        out[a].write(T::from_f32(ya * cos[i] + yb * -sin[i]));
        out[b].write(T::from_f32(yb * cos[i] + ya * sin[i]));
    };
    match op.style {
        RopeStyle::Interleaved => {
            // -1 on the first lane of each pair.
            let alt = isa.load_f32(&std::array::from_fn(
                |j| if j % 2 == 0 { -1.0 } else { 1.0 },
            ));
            let n16 = d / 16 * 16;
            for i in (0..n16).step_by(16) {
                let y = y16(isa, x, w, i, sc, rb);
                let h = i / 2..i / 2 + 8;
                let c = isa.load_dup8(cos[h.clone()].try_into().expect("8 angles"));
                let s = isa.mul(isa.load_dup8(sin[h].try_into().expect("8 angles")), alt);
                let r = isa.add(isa.mul(y, c), isa.mul(isa.swap_pairs(y), s));
                T::store(isa, r, arr_mut(&mut out[i..i + 16]));
            }
            (n16 / 2..d / 2).for_each(|i| pair(i, out));
        }
        RopeStyle::HalfSplit => {
            let half = d / 2;
            let n16 = half / 16 * 16;
            let neg = isa.splat(-1.0);
            for i in (0..n16).step_by(16) {
                let (ya, yb) = (y16(isa, x, w, i, sc, rb), y16(isa, x, w, i + half, sc, rb));
                let c = isa.load_f32(arr(&cos[i..i + 16]));
                let s = isa.load_f32(arr(&sin[i..i + 16]));
                let ra = isa.add(isa.mul(ya, c), isa.mul(yb, isa.mul(s, neg)));
                let rb2 = isa.add(isa.mul(yb, c), isa.mul(ya, s));
                T::store(isa, ra, arr_mut(&mut out[i..i + 16]));
                T::store(isa, rb2, arr_mut(&mut out[i + half..i + half + 16]));
            }
            (n16..half).for_each(|i| pair(i, out));
        }
    }
}

/// `f(tier's isa)`, through the `target_feature` wrappers below.
macro_rules! with_tier {
    ($tier:expr, $f:ident, $t:ty, $($arg:expr),*) => {
        match $tier {
            Tier::Portable => $f::<$t, Portable>(Portable, $($arg),*),
            // SAFETY: an `Avx2` value exists only where `Avx2::detect` found every feature the
            // wrapper is compiled with.
            #[cfg(target_arch = "x86_64")]
            Tier::Avx2(i) => unsafe { avx2::$f::<$t>(i, $($arg),*) },
            // SAFETY: likewise for `Avx512::detect`.
            #[cfg(target_arch = "x86_64")]
            Tier::Avx512(i) => unsafe { avx512::$f::<$t>(i, $($arg),*) },
        }
    };
}

/// The two kernels compiled for one x86 tier (`$tier_fn`: its `target_feature` wrapper).
macro_rules! tier_mod {
    ($m:ident, $isa:ty, $tier_fn:ident) => {
        #[cfg(target_arch = "x86_64")]
        mod $m {
            use super::*;

            $tier_fn! {
                pub(super) fn sum_sq<T: Elem>(isa: $isa, v: &[T]) -> f32 {
                    super::sum_sq::<T, $isa>(isa, v)
                }

                pub(super) fn head_f32<T: Elem>(
                    isa: $isa,
                    h: &HeadIn<'_, T>,
                    op: &RopeParams,
                    out: &mut [MaybeUninit<T>],
                ) {
                    super::head_f32::<T, $isa>(isa, h, op, out)
                }
            }
        }
    };
}

tier_mod!(avx2, Avx2, avx2_fn);
tier_mod!(avx512, Avx512, avx512_fn);

/// The sum of squares of `v` in f32 with `tier`'s vectors.
pub(super) fn sum_sq_with<T: Elem>(tier: Tier, v: &[T]) -> f32 {
    with_tier!(tier, sum_sq, T, v)
}

/// [`head_f32`] with `tier`'s vectors.
pub(super) fn head_with<T: Elem>(
    tier: Tier,
    h: &HeadIn<'_, T>,
    op: &RopeParams,
    out: &mut [MaybeUninit<T>],
) {
    with_tier!(tier, head_f32, T, h, op, out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{EpsMode, WeightMode};
    use crate::cpu::kernel::tests::all_tiers;
    use crate::rope_config::{HeadLayout, NormScope};
    use half::{bf16, f16};

    /// `head_f32` of every tier gives the portable tier's bits (NaN as NaN), for both pairings,
    /// head sizes with and without a scalar tail, both roundings, and values that overflow,
    /// carry NaN or infinity.
    fn tiers_agree<T: Elem>(bits: fn(T) -> u64) {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 40) as f32 / (1u64 << 24) as f32 * 8.0 - 4.0
        };
        for d in [2, 6, 16, 18, 32, 34, 48, 64, 96, 128, 130] {
            for style in [RopeStyle::Interleaved, RopeStyle::HalfSplit] {
                for rounding in [Rounding::AtEnd, Rounding::BeforeWeight] {
                    let p = RopeParams {
                        eps: 1e-6,
                        eps_mode: EpsMode::AddToMean,
                        weight_mode: WeightMode::Scale,
                        rounding,
                        heads: 1,
                        head_dim: d,
                        scope: NormScope::PerHead,
                        style,
                        layout: HeadLayout::Blhd,
                        tensors: 1,
                    };
                    let mut x: Vec<T> = (0..d).map(|_| T::from_f32(next())).collect();
                    x[d - 1] = T::from_f32(f32::NAN);
                    x[0] = T::from_f32(3.0e38);
                    let w: Vec<f32> = (0..d).map(|_| next()).collect();
                    let mut cos: Vec<f32> = (0..d / 2).map(|_| next().cos()).collect();
                    let sin: Vec<f32> = (0..d / 2).map(|_| next().sin()).collect();
                    cos[d / 4] = f32::INFINITY;
                    let run = |tier: Tier| {
                        let mut out = vec![MaybeUninit::new(T::from_f32(0.0)); d];
                        let h = HeadIn {
                            x: &x,
                            scale: 0.7,
                            w: &w,
                            cos: &cos,
                            sin: &sin,
                        };
                        head_with(tier, &h, &p, &mut out);
                        out.iter()
                            .map(|v| {
                                // SAFETY: initialised above.
                                let v = unsafe { v.assume_init() };
                                if v.to_f32().is_nan() {
                                    u64::MAX
                                } else {
                                    bits(v)
                                }
                            })
                            .collect::<Vec<_>>()
                    };
                    let want = run(Tier::Portable);
                    // The NaN reaches its element and that element's partner.
                    assert!(want.iter().filter(|&&b| b == u64::MAX).count() >= 2);
                    for t in all_tiers() {
                        assert_eq!(run(t), want, "{t:?} d {d} {style:?} {rounding:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn every_tier_is_bit_identical() {
        tiers_agree::<f32>(|v| v.to_bits() as u64);
        tiers_agree::<f16>(|v| v.to_bits() as u64);
        tiers_agree::<bf16>(|v| v.to_bits() as u64);
    }
}
