//! One token against all rows as one stream of blocks (decode), shared by the x86 variants: AVX2
//! in units of eight blocks, AVX-512 VNNI in units of sixteen ([`Units::UNIT`]).
//!
//! The rows are cut into segments of `seg` rows whose `seg·nb` blocks (`nb = k/32`) fill whole units
//! where that fits [`PREP`] (`seg = UNIT/gcd(nb, UNIT)`, e.g. 8 rows of 18 blocks in units of 16),
//! else single rows. The activations are prepared once per call and repeated `seg` times, so a
//! segment is one contiguous run of quants and scales read front to back against one contiguous run
//! of activations: no row tiles, and no partly used vectors except at a segment's end. Each unit's
//! exact block dots ([`Stream::unit_dots`]) meet their scales in one vector and are stored; each row
//! then sums its `nb` terms.
//!
//! Decode is bound by memory, and the hardware prefetchers alone leave this loop well short of the
//! bandwidth a plain read loop gets (the out-of-order window covers only a few units), so every cache
//! line of the quants and scales is prefetched [`Stream::PF_BYTES`] ahead.

use core::arch::x86_64::*;
use core::mem::MaybeUninit;

use half::f16;

use crate::quant::{Q8ActsRef, QWeight, QK};
use crate::simd::Format;

/// Most activation blocks a decode call prepares on the stack (16 KiB of quants); longer rows take
/// the decode tiles.
pub(super) const PREP: usize = 512;

/// An x86 variant's vectors of one unit: `UNIT` f32 or i32 lanes, lane = block.
pub(super) trait Units: Sized {
    /// Blocks per unit: a divisor of [`PREP`].
    const UNIT: usize;
    type F: Copy;
    type I: Copy;

    /// `blocks` halves at `p` as f32 lanes: all `UNIT` unless `MASKED`, then the rest zero.
    ///
    /// # Safety
    /// `blocks` halves readable at `p`; the CPU has the variant's features (likewise below).
    unsafe fn f16s<const MASKED: bool>(p: *const f16, blocks: usize) -> Self::F;
    /// `UNIT` values at `p`.
    ///
    /// # Safety
    /// `UNIT` values readable at `p`.
    unsafe fn f32s(p: *const f32) -> Self::F;
    /// # Safety
    /// As [`Units::f32s`].
    unsafe fn i32s(p: *const i32) -> Self::I;
    unsafe fn mul(a: Self::F, b: Self::F) -> Self::F;
    /// `a·b + c`, fused.
    unsafe fn fmadd(a: Self::F, b: Self::F, c: Self::F) -> Self::F;
    /// Exact for block dots (below 2²⁴).
    unsafe fn cvt(v: Self::I) -> Self::F;
    unsafe fn sub(a: Self::I, b: Self::I) -> Self::I;
    /// # Safety
    /// `UNIT` values writable at `p`.
    unsafe fn store(p: *mut f32, v: Self::F);
    /// `Σ t[..n]`.
    ///
    /// # Safety
    /// `n` values readable at `t`.
    unsafe fn row_sum(t: *const f32, n: usize) -> f32;

    /// [`decode`] under the variant's `#[target_feature]` (see [`crate::simd`]).
    ///
    /// # Safety
    /// As [`decode`].
    unsafe fn decode<F: Stream<Self>>(w: &QWeight<'_>, x: &Q8ActsRef<'_>, yt: &mut [f32]);
}

/// A weight format's decode operations on the x86 variant `I`: a format with one f16 scale per
/// 32-element block (and a minimum where [`Format::MIN`]), its quants in the `qs` plane and, where it
/// has them, its high bits in the `aux` plane (q5_0, q5_1).
pub(super) trait Stream<I: Units>: Format {
    /// `Some(s)`: [`Stream::unit_dots`] exceeds `Σ w·x` by `Σx << s` per block.
    const SHIFT: Option<i32>;
    /// How far ahead decode prefetches the quants, in bytes, and whether as non-temporal (measured on
    /// the SmolLM2-135M shapes streamed from memory, on Zen 4). Non-temporal applies on AMD CPUs
    /// only: on an Intel Xeon (2026-12-07) the NTA hint made q8_0 decode 1.4× slower than T0.
    const PF_BYTES: usize;
    const PF_NTA: bool;
    /// Rearranges one unit of activation quants (`UNIT` blocks in their natural order at `a`) in
    /// place into the order [`Stream::unit_dots`] reads.
    ///
    /// # Safety
    /// `UNIT·32` bytes at `a` readable and writable, 64-byte aligned; the CPU has `I`'s features.
    unsafe fn prep_unit(a: *mut u8);
    /// The dots of `blocks` consecutive weight blocks at `w` (quants) and `aux` (their high bits, if
    /// the format has any) (all `UNIT` unless `MASKED`, then `1..UNIT`) against one unit prepared by
    /// [`Stream::prep_unit`] at `a`, plus `Σx << SHIFT` (lane = block; lanes past `blocks`
    /// unspecified).
    ///
    /// # Safety
    /// `blocks·QB` bytes at `w`, `blocks` blocks' aux bytes at `aux` and the prepared unit at `a`
    /// readable; the CPU has `I`'s features.
    unsafe fn unit_dots<const MASKED: bool>(
        w: *const u8,
        aux: *const u8,
        blocks: usize,
        a: *const u8,
    ) -> I::I;
}

/// Implements [`Units::decode`] (inside an `impl Units`) with `#[target_feature(enable = $features)]`.
macro_rules! decode_entry {
    ($features:literal) => {
        #[target_feature(enable = $features)]
        unsafe fn decode<F: $crate::x86_64::qstream::Stream<Self>>(
            w: &$crate::quant::QWeight<'_>,
            x: &$crate::quant::Q8ActsRef<'_>,
            yt: &mut [f32],
        ) {
            // SAFETY: the caller's contract.
            unsafe { $crate::x86_64::qstream::decode::<Self, F>(w, x, yt) }
        }
    };
}
pub(super) use decode_entry;

const fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// One token against all rows (see the module docs).
///
/// # Safety
/// The CPU has `I`'s features; the shapes passed `check_matmul_q`; `x.n == 1`; `k/32 <= PREP`.
#[inline(always)]
pub(super) unsafe fn decode<I: Units, F: Stream<I>>(
    w: &QWeight<'_>,
    x: &Q8ActsRef<'_>,
    yt: &mut [f32],
) {
    let (rows, k, nb) = (w.rows, w.k, w.k / QK);
    debug_assert!(x.n == 1 && nb <= PREP);
    let seg = match I::UNIT / gcd(nb, I::UNIT) {
        r if r * nb <= PREP => r,
        _ => 1,
    };
    let len = seg * nb; // blocks per segment
    let units = len.div_ceil(I::UNIT);
    let ab = F::FORMAT.aux_bytes_per_block();
    let padded = units * I::UNIT;

    // Prepared activations: quants (64-byte aligned), scales, and the per-block offset terms.
    let mut aq = MaybeUninit::<[__m512i; PREP / 2]>::uninit();
    let mut dx = MaybeUninit::<[f32; PREP]>::uninit();
    let mut off = MaybeUninit::<[i32; PREP]>::uninit();
    let mut dxs = MaybeUninit::<[f32; PREP]>::uninit();
    let mut terms = MaybeUninit::<[f32; PREP]>::uninit();
    let (aq, dx, off, dxs, terms) = (
        aq.as_mut_ptr().cast::<u8>(),
        dx.as_mut_ptr().cast::<f32>(),
        off.as_mut_ptr().cast::<i32>(),
        dxs.as_mut_ptr().cast::<f32>(),
        terms.as_mut_ptr().cast::<f32>(),
    );
    // SAFETY: `padded <= PREP` (PREP is a multiple of UNIT), so every write below stays inside the
    // buffers, and `x` holds `k` quants and `nb` scales and sums (check_matmul_q). Everything later
    // read (`padded` blocks) is written here first.
    unsafe {
        for i in 0..seg {
            core::ptr::copy_nonoverlapping(x.qs.as_ptr().cast(), aq.add(i * k), k);
        }
        core::ptr::write_bytes(aq.add(len * QK), 0, (padded - len) * QK);
        for u in 0..units {
            F::prep_unit(aq.add(u * I::UNIT * QK));
        }
        // One period of scales and offsets, then its copies.
        for (b, (&d, &s)) in x.d[..nb].iter().zip(&x.sum[..nb]).enumerate() {
            *dx.add(b) = d;
            match (F::MIN, F::SHIFT) {
                (true, _) => *dxs.add(b) = d * s as f32,
                (_, Some(shift)) => *off.add(b) = s << shift,
                (_, None) => *off.add(b) = 0,
            }
        }
        let per = if F::MIN { dxs } else { off.cast::<f32>() };
        for i in 1..seg {
            core::ptr::copy_nonoverlapping(dx, dx.add(i * nb), nb);
            core::ptr::copy_nonoverlapping(per, per.add(i * nb), nb);
        }
        core::ptr::write_bytes(dx.add(len), 0, padded - len);
        core::ptr::write_bytes(per.add(len), 0, padded - len);
    }

    // The prefetch hint, once per call (see `Stream::PF_NTA`).
    let nta = F::PF_NTA && crate::detect::features().amd;
    // LOOP 1: segments (independent rows).
    let mut r = 0;
    while r < rows {
        let rs = seg.min(rows - r);
        let blocks = rs * nb;
        let b0 = r * nb;
        let wq = w.qs[b0 * F::QB..(b0 + blocks) * F::QB].as_ptr();
        let wa = w.aux[b0 * ab..(b0 + blocks) * ab].as_ptr();
        let wd = w.d[b0..b0 + blocks].as_ptr();
        let wm = if F::MIN {
            w.m[b0..b0 + blocks].as_ptr()
        } else {
            wd
        };
        // LOOP 0: whole units, then the segment's partial one.
        let full = blocks / I::UNIT;
        for u in 0..full {
            let b = u * I::UNIT;
            prefetch::<I, F>(
                wq.wrapping_add(b * F::QB),
                wa.wrapping_add(b * ab),
                wd.wrapping_add(b),
                wm.wrapping_add(b),
                nta,
            );
            // SAFETY: blocks b..b+UNIT lie inside the segment (the slices above) and inside the
            // prepared buffers (b + UNIT <= padded).
            unsafe {
                let t = unit::<I, F, false>(wq, wa, wd, wm, b, I::UNIT, aq, dx, off, dxs);
                I::store(terms.add(b), t);
            }
        }
        if blocks % I::UNIT != 0 {
            let b = full * I::UNIT;
            // SAFETY: as above, with the `blocks − b` blocks left (masked loads).
            unsafe {
                let t = unit::<I, F, true>(wq, wa, wd, wm, b, blocks - b, aq, dx, off, dxs);
                I::store(terms.add(b), t);
            }
        }
        for (i, y) in yt[r..r + rs].iter_mut().enumerate() {
            // SAFETY: the segment's `blocks` terms were just written.
            *y = unsafe { I::row_sum(terms.add(i * nb), nb) };
        }
        r += rs;
    }
}

/// Prefetches the cache lines [`Stream::PF_BYTES`] of quants ahead of the unit at `wq` (and its
/// high bits, scales, minimums, the same number of blocks ahead), non-temporal when `nta`.
/// Prefetches never fault, so the addresses may run past the planes.
#[inline(always)]
fn prefetch<I: Units, F: Stream<I>>(
    wq: *const u8,
    wa: *const u8,
    wd: *const f16,
    wm: *const f16,
    nta: bool,
) {
    let ahead = F::PF_BYTES / F::QB; // blocks
    let line = |p: *const i8| {
        // SAFETY: a prefetch is a hint that never faults; SSE is baseline on x86_64.
        unsafe {
            if nta {
                _mm_prefetch::<_MM_HINT_NTA>(p)
            } else {
                _mm_prefetch::<_MM_HINT_T0>(p)
            }
        }
    };
    for l in 0..I::UNIT * F::QB / 64 {
        line(wq.wrapping_add(F::PF_BYTES + 64 * l).cast());
    }
    let ab = F::FORMAT.aux_bytes_per_block();
    for l in 0..(I::UNIT * ab).div_ceil(64) {
        line(wa.wrapping_add(ahead * ab + 64 * l).cast());
    }
    line(wd.wrapping_add(ahead).cast());
    if F::MIN {
        line(wm.wrapping_add(ahead).cast());
    }
}

/// `Σ_b (dw·dx)·(idot − off)` (with a minimum: `(dw·dx)·idot + m·(dx·Σx)`) of the unit at block `b`
/// of a segment, lane = block (lanes past `blocks` unspecified).
///
/// # Safety
/// `blocks` (`UNIT` unless `MASKED`) weight blocks at `wq`, `wa`, `wd`, `wm` (with a minimum) from
/// block `b` readable;
/// the unit at `b` of the prepared buffers `a`, `dx`, `off`, `dxs`; the CPU has `I`'s features.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn unit<I: Units, F: Stream<I>, const MASKED: bool>(
    wq: *const u8,
    wa: *const u8,
    wd: *const f16,
    wm: *const f16,
    b: usize,
    blocks: usize,
    a: *const u8,
    dx: *const f32,
    off: *const i32,
    dxs: *const f32,
) -> I::F {
    // SAFETY: as required of the caller; masked-off scales are not read.
    unsafe {
        let ab = F::FORMAT.aux_bytes_per_block();
        let idot = F::unit_dots::<MASKED>(wq.add(b * F::QB), wa.add(b * ab), blocks, a.add(b * QK));
        let dw = I::f16s::<MASKED>(wd.add(b), blocks);
        let s = I::mul(dw, I::f32s(dx.add(b)));
        if F::MIN {
            let m = I::f16s::<MASKED>(wm.add(b), blocks);
            I::fmadd(s, I::cvt(idot), I::mul(m, I::f32s(dxs.add(b))))
        } else {
            I::mul(s, I::cvt(I::sub(idot, I::i32s(off.add(b)))))
        }
    }
}
