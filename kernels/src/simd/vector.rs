//! The element-wise kernels of every SIMD variant, written once: `dot_f32`, `softmax_f32` (with its
//! vector `exp`), `silu_mul_f32` and `rmsnorm_f32` over an ISA's native f32 vector ([`Vector`]);
//! `axpy_*` and `weighted_sum_*` over its dense-product step ([`Lanes`]), whose element loads also
//! widen f16.
//!
//! Each loop takes whole vectors, then the tail: one masked step where the ISA has masks, else one
//! element at a time. Results match [`crate::scalar`] up to summation order and fused multiply-adds;
//! `exp` is within 2 ulp of `f32::exp` on the range softmax uses.

use super::dense::{Elem, Lanes};

/// An ISA's native f32 vector, as `dot_f32` uses it. The methods are `#[inline(always)]` and compiled
/// into the ISA's entries (see [`super`]); each is one instruction or a short fixed sequence.
pub(crate) trait Vector: Sized {
    type F: Copy;
    /// Which lanes a masked load reads (`()` where [`Vector::MASKED`] is false).
    type M: Copy;
    /// Lanes per vector.
    const W: usize;
    /// Whether tails are one masked step rather than element by element.
    const MASKED: bool;

    /// The first `n` (`< W`) lanes. Only called when [`Vector::MASKED`].
    fn lanes(n: usize) -> Self::M;

    /// # Safety
    /// The CPU has the ISA's features (likewise for every method below and of [`VectorMath`]).
    unsafe fn splat(v: f32) -> Self::F;

    /// # Safety
    /// `W` values readable at `p`.
    unsafe fn load(p: *const f32) -> Self::F;

    /// The lanes of `m` (the others zero and not read). Only called when [`Vector::MASKED`].
    ///
    /// # Safety
    /// The selected lanes readable at `p`.
    unsafe fn load_lanes(_p: *const f32, _m: Self::M) -> Self::F {
        unreachable!("a masked load on an ISA without masks")
    }

    /// # Safety
    /// `W` values writable at `p`.
    unsafe fn store(p: *mut f32, v: Self::F);

    unsafe fn add(a: Self::F, b: Self::F) -> Self::F;
    /// `a·b + c`, fused.
    unsafe fn fma(a: Self::F, b: Self::F, c: Self::F) -> Self::F;
    /// The sum of the lanes.
    unsafe fn sum(v: Self::F) -> f32;
}

/// What `softmax_f32`, `silu_mul_f32` and `rmsnorm_f32` use besides [`Vector`].
pub(crate) trait VectorMath: Vector {
    unsafe fn sub(a: Self::F, b: Self::F) -> Self::F;
    unsafe fn mul(a: Self::F, b: Self::F) -> Self::F;
    unsafe fn div(a: Self::F, b: Self::F) -> Self::F;
    unsafe fn min(a: Self::F, b: Self::F) -> Self::F;
    unsafe fn max(a: Self::F, b: Self::F) -> Self::F;
    unsafe fn neg(a: Self::F) -> Self::F;
    /// `c − a·b`, fused.
    unsafe fn fnma(a: Self::F, b: Self::F, c: Self::F) -> Self::F;
    /// To the nearest integer, ties to even.
    unsafe fn round(v: Self::F) -> Self::F;
    /// `2^n` for integral `n` in `-126..=127`, built in the exponent bits.
    unsafe fn pow2(n: Self::F) -> Self::F;
}

/// [`crate::scalar::dot_f32`]: four accumulators hide the FMA latency.
///
/// # Safety
/// The CPU has `I`'s features.
#[inline(always)]
pub(crate) unsafe fn dot<I: Vector>(a: &[f32], b: &[f32]) -> f32 {
    let (len, w) = (a.len().min(b.len()), I::W);
    let (ap, bp) = (a.as_ptr(), b.as_ptr());
    let mut acc = [I::splat(0.0); 4];
    let mut i = 0;
    while i + 4 * w <= len {
        for (u, s) in acc.iter_mut().enumerate() {
            // SAFETY: i + 4w <= len, so elements i+uw..i+uw+w lie in both slices.
            let (va, vb) = unsafe { (I::load(ap.add(i + u * w)), I::load(bp.add(i + u * w))) };
            *s = I::fma(va, vb, *s);
        }
        i += 4 * w;
    }
    while i + w <= len {
        // SAFETY: i + w <= len.
        let (va, vb) = unsafe { (I::load(ap.add(i)), I::load(bp.add(i))) };
        acc[0] = I::fma(va, vb, acc[0]);
        i += w;
    }
    if I::MASKED && i < len {
        let m = I::lanes(len - i);
        // SAFETY: the lanes of `m` are elements i..len of both slices.
        let (va, vb) = unsafe { (I::load_lanes(ap.add(i), m), I::load_lanes(bp.add(i), m)) };
        acc[0] = I::fma(va, vb, acc[0]);
        i = len;
    }
    let mut s = I::sum(I::add(I::add(acc[0], acc[1]), I::add(acc[2], acc[3])));
    for j in i..len {
        s += a[j] * b[j];
    }
    s
}

/// `e^x` per lane: `x = n·ln2 + r` with |r| ≤ ln2/2 (`r` in two steps, Cody–Waite, to keep it exact
/// enough), a degree-6 polynomial for `e^r`, and `2^n` in the exponent bits. Inputs below -87.3 give
/// 0 (as softmax wants for far-below-max scores); inputs above 88.7 saturate at `f32::MAX`-ish, which
/// softmax never passes (its inputs are ≤ 0).
///
/// # Safety
/// The CPU has `I`'s features.
#[inline(always)]
unsafe fn exp<I: VectorMath>(x: I::F) -> I::F {
    let x = I::max(I::min(x, I::splat(88.7)), I::splat(-87.3));
    let n = I::round(I::mul(x, I::splat(std::f32::consts::LOG2_E)));
    let r = I::fnma(n, I::splat(0.693_145_75), x);
    let r = I::fnma(n, I::splat(1.428_606_8e-6), r);
    let mut p = I::splat(1.0 / 720.0);
    for c in [1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
        p = I::fma(p, r, I::splat(c));
    }
    I::mul(p, I::pow2(n))
}

/// [`crate::scalar::softmax_f32`]: the same steps, with `exp` a vector at a time.
///
/// # Safety
/// The CPU has `I`'s features.
#[inline(always)]
pub(crate) unsafe fn softmax<I: VectorMath>(x: &mut [f32]) {
    let (len, w, xp) = (x.len(), I::W, x.as_mut_ptr());
    let mut vm = I::splat(f32::NEG_INFINITY);
    let mut i = 0;
    while i + w <= len {
        // SAFETY: i + w <= len.
        vm = I::max(vm, unsafe { I::load(xp.add(i)) });
        i += w;
    }
    let mut lanes = [f32::NEG_INFINITY; 16];
    // SAFETY: `lanes` holds the W <= 16 lanes.
    unsafe { I::store(lanes.as_mut_ptr(), vm) };
    let max = lanes[..w]
        .iter()
        .chain(&x[i..])
        .copied()
        .fold(f32::NEG_INFINITY, f32::max);
    let vmax = I::splat(max);
    let mut vsum = I::splat(0.0);
    let mut i = 0;
    while i + w <= len {
        // SAFETY: i + w <= len.
        unsafe {
            let e = exp::<I>(I::sub(I::load(xp.add(i)), vmax));
            I::store(xp.add(i), e);
            vsum = I::add(vsum, e);
        }
        i += w;
    }
    let mut sum = I::sum(vsum);
    for v in &mut x[i..] {
        *v = (*v - max).exp();
        sum += *v;
    }
    let inv = I::splat(1.0 / sum);
    // The tail loop above reborrowed `x` mutably, which retires pointers taken from it before
    // (Miri: a Stacked Borrows violation, scripts/miri.sh); take a fresh one.
    let xp = x.as_mut_ptr();
    let mut i = 0;
    while i + w <= len {
        // SAFETY: i + w <= len.
        unsafe { I::store(xp.add(i), I::mul(I::load(xp.add(i)), inv)) };
        i += w;
    }
    for v in &mut x[i..] {
        *v *= 1.0 / sum;
    }
}

/// [`crate::scalar::silu_mul_f32`] with `exp` from [`exp`]. Precondition: equal lengths.
///
/// # Safety
/// The CPU has `I`'s features; `gate.len() == up.len()`.
#[inline(always)]
pub(crate) unsafe fn silu_mul<I: VectorMath>(gate: &mut [f32], up: &[f32]) {
    let (len, w, gp, up_p) = (gate.len(), I::W, gate.as_mut_ptr(), up.as_ptr());
    let one = I::splat(1.0);
    let mut i = 0;
    while i + w <= len {
        // SAFETY: i + w <= len = up.len().
        unsafe {
            let g = I::load(gp.add(i));
            let e = exp::<I>(I::neg(g));
            I::store(
                gp.add(i),
                I::mul(I::div(g, I::add(one, e)), I::load(up_p.add(i))),
            );
        }
        i += w;
    }
    crate::scalar::silu_mul_f32(&mut gate[i..], &up[i..]);
}

/// [`crate::scalar::rmsnorm_f32`] with F32 norm weights: the sum of squares in two accumulators.
///
/// # Safety
/// The CPU has `I`'s features; the three slices have the same length.
#[inline(always)]
pub(crate) unsafe fn rmsnorm<I: VectorMath>(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let (len, vw) = (x.len(), I::W);
    let (xp, wp, op) = (x.as_ptr(), w.as_ptr(), out.as_mut_ptr());
    let mut acc = [I::splat(0.0); 2];
    let mut i = 0;
    while i + 2 * vw <= len {
        // SAFETY: i + 2w <= len.
        unsafe {
            let (a, b) = (I::load(xp.add(i)), I::load(xp.add(i + vw)));
            acc[0] = I::fma(a, a, acc[0]);
            acc[1] = I::fma(b, b, acc[1]);
        }
        i += 2 * vw;
    }
    let mut ss = I::sum(I::add(acc[0], acc[1]));
    for v in &x[i..] {
        ss += v * v;
    }
    let scale = 1.0 / (ss / len as f32 + eps).sqrt();
    let vs = I::splat(scale);
    let mut i = 0;
    while i + vw <= len {
        // SAFETY: i + w <= len, the length of all three slices.
        unsafe {
            I::store(
                op.add(i),
                I::mul(I::mul(I::load(xp.add(i)), vs), I::load(wp.add(i))),
            )
        };
        i += vw;
    }
    for j in i..len {
        out[j] = x[j] * scale * w[j];
    }
}

/// [`crate::scalar::axpy_f32`] and `axpy_f16`, a step at a time (fused multiply-adds, so last-bit
/// differences are expected).
///
/// # Safety
/// The CPU has `I`'s features.
#[inline(always)]
pub(crate) unsafe fn axpy<I: Lanes, W: Elem<I>>(alpha: f32, x: &[W], y: &mut [f32]) {
    let (len, step) = (x.len().min(y.len()), I::STEP);
    let (xp, yp) = (x.as_ptr(), y.as_mut_ptr());
    let va = I::splat(alpha);
    let mut i = 0;
    while i + step <= len {
        // SAFETY: i + step <= len, so elements i..i+step lie in both slices; `y` is borrowed mutably.
        unsafe {
            let v = I::fma(I::load(yp.add(i), I::FULL), va, W::load(xp.add(i), I::FULL));
            I::store(yp.add(i), v, I::FULL);
        }
        i += step;
    }
    if I::MASKED_TAIL && i < len {
        let m = I::mask(len - i);
        // SAFETY: the lanes of `m` are elements i..len of both slices; the others are neither
        // read nor written.
        unsafe {
            let v = I::fma(I::load(yp.add(i), m), va, W::load(xp.add(i), m));
            I::store(yp.add(i), v, m);
        }
        i = len;
    }
    for j in i..len {
        y[j] += alpha * x[j].to_f32();
    }
}

/// The rows `weighted_sum_*` takes at once through `I`'s entry: [`weighted_group`] for 2..=4 rows
/// (where [`Lanes::WEIGHTED_ROWS`] allows), [`Lanes::weighted_one`] for one. Precondition: `p` is `r`
/// rows of `seen > 0`, `out` `r` rows of `hd > 0`, `v.len() >= seen·hd`.
///
/// # Safety
/// The CPU has `I`'s features; the precondition.
#[inline(always)]
pub(crate) unsafe fn weighted_rows<I: Lanes, W: Elem<I>>(
    p: &[f32],
    v: &[W],
    out: &mut [f32],
    r: usize,
) {
    // SAFETY: forwarded precondition.
    unsafe {
        match r {
            2 if I::WEIGHTED_ROWS >= 2 => weighted_group::<I, W, 2>(p, v, out),
            3 if I::WEIGHTED_ROWS >= 3 => weighted_group::<I, W, 3>(p, v, out),
            4 if I::WEIGHTED_ROWS >= 4 => weighted_group::<I, W, 4>(p, v, out),
            _ => I::weighted_one(p, v, out),
        }
    }
}

/// One row: columns in blocks of four steps (four accumulators held in registers across all of
/// `p`), then single steps, then one at a time. Precondition: `v.len() >= p.len() · out.len()`.
///
/// # Safety
/// The CPU has `I`'s features; the precondition.
#[inline(always)]
pub(crate) unsafe fn weighted_one<I: Lanes, W: Elem<I>>(p: &[f32], v: &[W], out: &mut [f32]) {
    let (hd, step, vp, op) = (out.len(), I::STEP, v.as_ptr(), out.as_mut_ptr());
    let mut c = 0;
    while c + 4 * step <= hd {
        let mut acc = [I::zero(); 4];
        for (j, &pj) in p.iter().enumerate() {
            let w = I::splat(pj);
            for (a, acc) in acc.iter_mut().enumerate() {
                // SAFETY: row j < p.len() and columns c + a·step.. + step <= hd lie inside `v`.
                *acc = I::fma(*acc, w, unsafe {
                    W::load(vp.add(j * hd + c + step * a), I::FULL)
                });
            }
        }
        for (a, &acc) in acc.iter().enumerate() {
            // SAFETY: c + a·step + step <= hd = out.len().
            unsafe { I::store(op.add(c + step * a), acc, I::FULL) };
        }
        c += 4 * step;
    }
    while c + step <= hd {
        let mut acc = I::zero();
        for (j, &pj) in p.iter().enumerate() {
            // SAFETY: as above for one step.
            acc = I::fma(acc, I::splat(pj), unsafe {
                W::load(vp.add(j * hd + c), I::FULL)
            });
        }
        // SAFETY: c + step <= hd.
        unsafe { I::store(op.add(c), acc, I::FULL) };
        c += step;
    }
    for (d, o) in out.iter_mut().enumerate().skip(c) {
        *o = p
            .iter()
            .enumerate()
            .map(|(j, &pj)| pj * v[j * hd + d].to_f32())
            .sum();
    }
}

/// `R` rows at once: columns in blocks of [`Lanes::GROUP_STEPS`] steps, each block of `v` loaded once
/// per position for all `R` rows; the last partial block masked where the ISA has masks, else its
/// columns one at a time. Precondition: `p.len() = R·seen`, `out.len() = R·hd` with `seen, hd > 0`,
/// `v.len() >= seen·hd`.
///
/// # Safety
/// The CPU has `I`'s features; the precondition.
#[inline(always)]
unsafe fn weighted_group<I: Lanes, W: Elem<I>, const R: usize>(
    p: &[f32],
    v: &[W],
    out: &mut [f32],
) {
    let (seen, hd, step) = (p.len() / R, out.len() / R, I::STEP);
    let block = I::GROUP_STEPS * step;
    let mut c = 0;
    while c + block <= hd {
        // SAFETY: the block's columns c..c+block <= hd (the precondition for the rest).
        unsafe { group_block::<I, W, R>(p, v, out, c, [step; 4]) };
        c += block;
    }
    if I::MASKED_TAIL && c < hd {
        let lanes = core::array::from_fn(|a| hd.saturating_sub(c + step * a).min(step));
        // SAFETY: `lanes` counts the columns below hd of each step.
        unsafe { group_block::<I, W, R>(p, v, out, c, lanes) };
        c = hd;
    }
    for r in 0..R {
        for d in c..hd {
            out[r * hd + d] = (0..seen)
                .map(|j| p[r * seen + j] * v[j * hd + d].to_f32())
                .sum();
        }
    }
}

/// The columns `c + a·step ..+ lanes[a]` (`a < GROUP_STEPS`) of `R` rows (see [`weighted_group`]).
///
/// # Safety
/// The CPU has `I`'s features; those columns lie below `hd`; a count below `step` only where
/// [`Lanes::MASKED_TAIL`].
#[inline(always)]
unsafe fn group_block<I: Lanes, W: Elem<I>, const R: usize>(
    p: &[f32],
    v: &[W],
    out: &mut [f32],
    c: usize,
    lanes: [usize; 4],
) {
    let (seen, hd, step) = (p.len() / R, out.len() / R, I::STEP);
    let (vp, op) = (v.as_ptr(), out.as_mut_ptr());
    let mask = |n: usize| if n == step { I::FULL } else { I::mask(n) };
    let mut acc = [[I::zero(); 4]; R];
    for j in 0..seen {
        let mut x = [I::zero(); 4];
        for (a, x) in x.iter_mut().enumerate().take(I::GROUP_STEPS) {
            if lanes[a] > 0 {
                // SAFETY: position j < seen, and the selected columns lie below hd.
                *x = unsafe { W::load(vp.add(j * hd + c + step * a), mask(lanes[a])) };
            }
        }
        for (r, acc) in acc.iter_mut().enumerate() {
            let w = I::splat(p[r * seen + j]);
            for (acc, &x) in acc.iter_mut().zip(&x).take(I::GROUP_STEPS) {
                *acc = I::fma(*acc, w, x);
            }
        }
    }
    for (r, acc) in acc.iter().enumerate() {
        for (a, &acc) in acc.iter().enumerate().take(I::GROUP_STEPS) {
            if lanes[a] > 0 {
                // SAFETY: the selected columns lie below hd, in row r < R of `out`.
                unsafe { I::store(op.add(r * hd + c + step * a), acc, mask(lanes[a])) };
            }
        }
    }
}
