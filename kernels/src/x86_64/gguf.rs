//! The GGUF formats' products with q8 activations ([`crate::quant::kquant`]), shared by the x86
//! variants: the driver, and the float step every format ends with. Each variant supplies a
//! format's group decode and integer dots ([`super::gguf_avx2`], [`super::gguf_avx512`]).
//!
//! A *group* is 256 elements of one row: one super-block of a K-quant, or eight blocks of q5_0,
//! q5_1 and iq4_nl (a row's last group of these may be shorter). It covers eight activation blocks,
//! and the variants turn a group and one token into the eight exact integers `A` (and `B`) of the
//! spec, one i32 lane per activation block, before any float is involved. The eight terms then meet
//! their scales here in one vector ([`acc_terms`]): `acc + (dw·dx)·A ∓ (dmin·dx)·B` in f32, with an
//! FMA where the spec rounds twice, and the lanes are summed once per output. So the integers are
//! the spec's and only the float additions are reordered, as its tolerance allows.
//!
//! # Loops
//!
//! ```text
//! LOOP 3: token chunks of TC       (n = 1 takes a one-token instantiation: acc stays in a register)
//!  LOOP 2: column chunks of KC      (rows past the first chunk add to yt)
//!   prepare the chunk's 16-element activation sums (q2_k, q3_k, q6_k only) and its tokens'
//!   zero-padded partial last group (32-element formats whose rows end inside a group)
//!   LOOP 1: rows                    (independent: par.rs splits these across threads)
//!    LOOP 0: groups                 (decode the group once, then dot it with every token)
//! ```
//!
//! Decode (one token) is a single stream through the weight planes, prefetched [`PF_BYTES`] ahead;
//! several tokens decode each group once per chunk of [`TC`] tokens. A format may take one token
//! its own way instead ([`Group::one_token`]: AVX-512's q4_k and q5_k).

use core::arch::x86_64::*;
use core::mem::MaybeUninit;

use half::f16;

use super::hsum;
use crate::dispatch::Kernels;
use crate::quant::scalar::check_matmul_q;
use crate::quant::{Q8ActsRef, QFormat, QWeight, QK};
use crate::simd::Format;

/// Elements per group.
pub(super) const GROUP: usize = 256;
/// Tokens per chunk (several tokens).
const TC: usize = 8;
/// Columns per chunk: a multiple of [`GROUP`]. The 16-element sums of `TC` tokens' chunk take 8 KiB
/// of stack.
const KC: usize = 8192;
/// How far ahead decode prefetches the quant planes, in bytes.
pub(super) const PF_BYTES: usize = 4096;

macro_rules! formats {
    ($($t:ident = $f:ident),+) => {$(
        pub(super) struct $t;
        impl Format for $t {
            const FORMAT: QFormat = QFormat::$f;
        }
    )+};
}
formats!(
    Q5_0 = Q5_0,
    Q5_1 = Q5_1,
    Iq4Nl = Iq4Nl,
    Q2K = Q2K,
    Q3K = Q3K,
    Q4K = Q4K,
    Q5K = Q5K,
    Q6K = Q6K,
    Iq4Xs = Iq4Xs
);

/// One token's part of a group: 256 quants, eight scales and sums, and (formats with
/// [`Group::S16`]) the sixteen 16-element sums of the quants.
#[derive(Clone, Copy)]
pub(super) struct Acts {
    pub q: *const i8,
    pub d: *const f32,
    pub sum: *const i32,
    pub s16: *const i16,
}

impl Acts {
    /// The eight block sums, as lanes.
    ///
    /// # Safety
    /// Eight sums readable at `sum`; AVX present (inlined into a variant's entry).
    #[inline(always)]
    pub unsafe fn sums(&self) -> __m256i {
        // SAFETY: as required of the caller.
        unsafe { _mm256_loadu_si256(self.sum.cast()) }
    }

    /// The eight block scales, as lanes.
    ///
    /// # Safety
    /// Eight scales readable at `d`; AVX present (inlined into a variant's entry).
    #[inline(always)]
    pub unsafe fn dx(&self) -> __m256 {
        // SAFETY: as required of the caller.
        unsafe { _mm256_loadu_ps(self.d) }
    }
}

/// A weight format's group operations on the x86 variant `I`. Implementations are
/// `#[inline(always)]` without features of their own, so they compile into `I`'s [`Entry`] with its
/// features (see [`crate::simd`]); the group's decoded vectors then stay in registers where they fit.
pub(super) trait Group<I>: Format {
    /// Whether [`Group::dot`] reads [`Acts::s16`].
    const S16: bool = false;
    /// One row's group, decoded.
    type W: Copy;
    /// Decodes the group whose first block is at `qs`, `aux`, `d`, `m` (the plane pointers of that
    /// block; `m` is only read by formats with a minimum).
    ///
    /// # Safety
    /// One group's bytes readable at each pointer the format reads; the CPU has `I`'s features.
    unsafe fn load(qs: *const u8, aux: *const u8, d: *const f16, m: *const f16) -> Self::W;
    /// `acc` plus the group's eight terms for one token (lane = activation block).
    ///
    /// # Safety
    /// `x`'s pointers readable for one group; the CPU has `I`'s features.
    unsafe fn dot(w: &Self::W, x: &Acts, acc: __m256) -> __m256;
    /// A whole one-token product (`x.n == 1`) of the format's own, where it has one: whether it
    /// wrote `yt` (else the driver below does).
    ///
    /// # Safety
    /// As [`matmul`], with `x.n == 1`.
    #[inline(always)]
    unsafe fn one_token(_w: &QWeight<'_>, _x: &Q8ActsRef<'_>, _yt: &mut [f32]) -> bool {
        false
    }
}

/// An x86 variant's `#[target_feature]` entry into [`matmul`] (implemented by [`gguf_entry`]).
pub(super) trait Entry: Sized {
    /// # Safety
    /// As [`matmul`].
    unsafe fn gguf<F: Group<Self>>(w: &QWeight<'_>, x: &Q8ActsRef<'_>, yt: &mut [f32]);
}

/// Implements [`Entry`] for `$isa` with `#[target_feature(enable = $features)]`.
macro_rules! gguf_entry {
    ($isa:ty, $features:literal) => {
        impl $crate::x86_64::gguf::Entry for $isa {
            #[target_feature(enable = $features)]
            unsafe fn gguf<F: $crate::x86_64::gguf::Group<Self>>(
                w: &$crate::quant::QWeight<'_>,
                x: &$crate::quant::Q8ActsRef<'_>,
                yt: &mut [f32],
            ) {
                // SAFETY: the caller's contract.
                unsafe { $crate::x86_64::gguf::matmul::<Self, F>(w, x, yt) }
            }
        }
    };
}
pub(super) use gguf_entry;

/// The table entry of `I` for `F` weights: [`crate::quant::kquant::matmul_q8`]'s contract (same
/// panics).
fn matmul_q8<I: Entry, F: Group<I>>(w: &QWeight<'_>, x: &Q8ActsRef<'_>, yt: &mut [f32]) {
    check_matmul_q(w, F::FORMAT, x, yt.len());
    // SAFETY: only instantiated in `I`'s table, built after detection confirmed `I`'s features;
    // `check_matmul_q` proved the plane lengths the kernel reads.
    unsafe { I::gguf::<F>(w, x, yt) }
}

/// `base` with `I`'s kernels for every GGUF format. Only for a variant whose features detection
/// confirmed.
pub(super) fn table<I: Entry>(base: Kernels) -> Kernels
where
    Q5_0: Group<I>,
    Q5_1: Group<I>,
    Iq4Nl: Group<I>,
    Q2K: Group<I>,
    Q3K: Group<I>,
    Q4K: Group<I>,
    Q5K: Group<I>,
    Q6K: Group<I>,
    Iq4Xs: Group<I>,
{
    Kernels {
        matmul_q5_0_q8: matmul_q8::<I, Q5_0>,
        matmul_q5_1_q8: matmul_q8::<I, Q5_1>,
        matmul_iq4_nl_q8: matmul_q8::<I, Iq4Nl>,
        matmul_q2_k_q8: matmul_q8::<I, Q2K>,
        matmul_q3_k_q8: matmul_q8::<I, Q3K>,
        matmul_q4_k_q8: matmul_q8::<I, Q4K>,
        matmul_q5_k_q8: matmul_q8::<I, Q5K>,
        matmul_q6_k_q8: matmul_q8::<I, Q6K>,
        matmul_iq4_xs_q8: matmul_q8::<I, Iq4Xs>,
        ..base
    }
}

/// `acc + (dw·dx)·a ∓ (dm·dx)·b` per lane, the sign (or no `b` term) as `F`'s spec says: the float
/// step of every format, `a` and `b` the exact integers `A` and `B` as f32.
#[inline(always)]
pub(super) unsafe fn acc_terms<F: Format>(
    acc: __m256,
    dw: __m256,
    dm: __m256,
    dx: __m256,
    a: __m256,
    b: __m256,
) -> __m256 {
    let acc = _mm256_fmadd_ps(_mm256_mul_ps(dw, dx), a, acc);
    match F::FORMAT {
        QFormat::Q2K | QFormat::Q4K | QFormat::Q5K => {
            _mm256_fnmadd_ps(_mm256_mul_ps(dm, dx), b, acc)
        }
        QFormat::Q5_1 => _mm256_fmadd_ps(_mm256_mul_ps(dm, dx), b, acc),
        _ => acc,
    }
}

/// The f16 at `p` in every lane (an exact conversion).
///
/// # Safety
/// One f16 readable at `p`; F16C present.
#[inline(always)]
pub(super) unsafe fn f16_splat(p: *const f16) -> __m256 {
    // SAFETY: as required of the caller; `read_unaligned` has no alignment requirement.
    _mm256_cvtph_ps(_mm_set1_epi16(unsafe { p.cast::<i16>().read_unaligned() }))
}

/// The eight f16 at `p` as lanes (exact).
///
/// # Safety
/// Eight f16 readable at `p`; F16C present.
#[inline(always)]
pub(super) unsafe fn f16x8(p: *const f16) -> __m256 {
    // SAFETY: as required of the caller; `loadu` has no alignment requirement.
    _mm256_cvtph_ps(unsafe { _mm_loadu_si128(p.cast()) })
}

/// Every row and token (see the module docs).
///
/// # Safety
/// The CPU has `I`'s features; `check_matmul_q` accepted `w`, `x`, `yt` for `F`.
#[inline(always)]
pub(super) unsafe fn matmul<I, F: Group<I>>(w: &QWeight<'_>, x: &Q8ActsRef<'_>, yt: &mut [f32]) {
    let (n, k) = (x.n, w.k);
    // SAFETY: the caller's contract, and one token.
    if n == 1 && unsafe { F::one_token(w, x, yt) } {
        return;
    }
    // The 16-element sums of a token chunk's column chunk, written below before any group reads
    // them (and only for the formats that read them).
    let mut s16 = MaybeUninit::<[i16; TC * KC / 16]>::uninit();
    let s16 = s16.as_mut_ptr().cast::<i16>();
    // The chunks' partial last groups (32-element formats), written below before any row reads
    // them (and only where there is one).
    let mut xtail = MaybeUninit::<[XTail; TC]>::uninit();
    let xtail = xtail.as_mut_ptr().cast::<XTail>();
    // LOOP 3: token chunks.
    for t0 in (0..n).step_by(TC) {
        let tn = TC.min(n - t0);
        // LOOP 2: column chunks.
        for c0 in (0..k).step_by(KC) {
            let cl = KC.min(k - c0);
            if F::S16 {
                for t in 0..tn {
                    let xq = &x.qs[(t0 + t) * k + c0..][..cl];
                    for (i, q) in xq.chunks_exact(16).enumerate() {
                        // |Σ| <= 16·127: an i16.
                        let sum = q.iter().map(|&v| i16::from(v)).sum();
                        // SAFETY: t < TC and i < cl/16 <= KC/16: inside the buffer.
                        unsafe { s16.add(t * (KC / 16) + i).write(sum) };
                    }
                }
            }
            // A 32-element format's partial last group: each token's columns, zero-padded to a
            // whole group, once for all rows.
            let tail = cl % GROUP / QK;
            if tail > 0 {
                for t in 0..tn {
                    let e = (t0 + t) * k + c0 + cl - tail * QK;
                    let mut xt = XTail::ZERO;
                    xt.q[..tail * QK].copy_from_slice(&x.qs[e..][..tail * QK]);
                    xt.d[..tail].copy_from_slice(&x.d[e / QK..][..tail]);
                    xt.sum[..tail].copy_from_slice(&x.sum[e / QK..][..tail]);
                    // SAFETY: t < tn <= TC: inside the buffer.
                    unsafe { xtail.add(t).write(xt) };
                }
            }
            let chunk = Chunk {
                t0,
                tn,
                c0,
                cl,
                first: c0 == 0,
                s16,
                xtail,
            };
            // SAFETY: the caller's contract; the chunk lies inside the shapes (loop bounds).
            unsafe {
                if n == 1 {
                    rows::<I, F, 1>(w, x, yt, &chunk)
                } else {
                    rows::<I, F, TC>(w, x, yt, &chunk)
                }
            }
        }
    }
}

/// Tokens `t0..t0+tn` and columns `c0..c0+cl` of a product, `s16` their 16-element sums (token `t`
/// at `t·KC/16`), `xtail` their partial last groups (32-element formats); `first` when the outputs
/// are written rather than added to.
struct Chunk {
    t0: usize,
    tn: usize,
    c0: usize,
    cl: usize,
    first: bool,
    s16: *const i16,
    xtail: *const XTail,
}

/// One token's columns of a partial last group, zero past the row's end.
#[derive(Clone, Copy)]
struct XTail {
    q: [i8; GROUP],
    d: [f32; 8],
    sum: [i32; 8],
}

impl XTail {
    const ZERO: XTail = XTail {
        q: [0; GROUP],
        d: [0.0; 8],
        sum: [0; 8],
    };
}

/// Every row of one chunk, `T` tokens at most (`T = 1`: decode).
///
/// # Safety
/// As [`matmul`]; the chunk lies inside the shapes, `c.tn <= T`, and `c.s16` holds its sums.
#[inline(always)]
unsafe fn rows<I, F: Group<I>, const T: usize>(
    w: &QWeight<'_>,
    x: &Q8ActsRef<'_>,
    yt: &mut [f32],
    c: &Chunk,
) {
    let f = F::FORMAT;
    let (n, k, be) = (x.n, w.k, f.block_elems());
    let (nb, qb, ab) = (k / be, F::QB, f.aux_bytes_per_block());
    let tn = if T == 1 { 1 } else { c.tn };
    let (groups, tail) = (c.cl / GROUP, c.cl % GROUP / be); // whole groups, blocks after them
    let per = GROUP / be; // blocks per group
                          // `m` stands in for `d` where there is no minimum plane: never read then.
    let (qs, aux, d) = (w.qs.as_ptr(), w.aux.as_ptr(), w.d.as_ptr());
    let m = if F::MIN { w.m.as_ptr() } else { d };
    // Token t's part of group g (columns c0 + 256·g ..): pointers inside x by the chunk's bounds.
    let acts = |t: usize, g: usize| {
        let e = (c.t0 + t) * k + c.c0 + g * GROUP;
        Acts {
            q: x.qs.as_ptr().wrapping_add(e),
            d: x.d.as_ptr().wrapping_add(e / QK),
            sum: x.sum.as_ptr().wrapping_add(e / QK),
            s16: c.s16.wrapping_add(t * (KC / 16) + g * (GROUP / 16)),
        }
    };
    // LOOP 1: rows.
    for r in 0..w.rows {
        let mut acc = [_mm256_setzero_ps(); T];
        let b0 = r * nb + c.c0 / be; // the chunk's first block of row r
                                     // LOOP 0: whole groups.
        for g in 0..groups {
            let b = b0 + g * per;
            let q = qs.wrapping_add(b * qb);
            if T == 1 {
                for l in 0..(per * qb).div_ceil(64) {
                    // SAFETY: a prefetch is a hint that never faults, whatever the address.
                    unsafe {
                        _mm_prefetch::<_MM_HINT_T0>(q.wrapping_add(PF_BYTES + 64 * l).cast())
                    };
                }
                if ab > 0 {
                    let a = aux.wrapping_add(b * ab + PF_BYTES * ab / qb);
                    // SAFETY: as above.
                    unsafe { _mm_prefetch::<_MM_HINT_T0>(a.cast()) };
                }
            }
            // SAFETY: blocks b..b+per of row r lie inside the planes (check_matmul_q), and each
            // token's group inside x (the chunk's bounds).
            unsafe {
                let wv = F::load(q, aux.wrapping_add(b * ab), d.add(b), m.add(b));
                for (t, acc) in acc.iter_mut().enumerate().take(tn) {
                    *acc = F::dot(&wv, &acts(t, g), *acc);
                }
            }
        }
        if tail > 0 {
            // SAFETY: the tail's blocks of row r lie inside the planes; the chunk's `xtail` holds
            // its tokens' columns.
            unsafe { tail_group::<I, F, T>(w, c, b0 + groups * per, tail, &mut acc) };
        }
        for (t, &a) in acc.iter().enumerate().take(tn) {
            let y = &mut yt[r * n + c.t0 + t];
            let s = hsum(a);
            *y = if c.first { s } else { *y + s };
        }
    }
}

/// A row's last, partial group: `tail` (< 8) blocks of a 32-element format from block `b`. The
/// group is read whole where the planes go on (into the next row's blocks), else from a zero-padded
/// copy, with the scales of the blocks past the row's end zero either way, against the tokens'
/// zero-padded columns: the padding adds exact zeros, whatever the bytes it reads.
///
/// # Safety
/// As [`rows`]; blocks `b..b+tail` exist, and `c.xtail` holds the chunk's tokens' tails.
#[inline(always)]
unsafe fn tail_group<I, F: Group<I>, const T: usize>(
    w: &QWeight<'_>,
    c: &Chunk,
    b: usize,
    tail: usize,
    acc: &mut [__m256; T],
) {
    const MAX_QB: usize = 16; // q5_0, q5_1, iq4_nl
    const MAX_AB: usize = 4;
    let f = F::FORMAT;
    let (qb, ab) = (F::QB, f.aux_bytes_per_block());
    debug_assert!(f.block_elems() == QK && qb <= MAX_QB && ab <= MAX_AB && tail < 8);
    let (mut d, mut m) = ([f16::ZERO; 8], [f16::ZERO; 8]);
    for i in 0..tail {
        d[i] = w.d[b + i];
        if F::MIN {
            m[i] = w.m[b + i];
        }
    }
    let wv = if b + 8 <= w.d.len() {
        // SAFETY: blocks b..b+8 lie inside the planes (qs, aux and d hold the same blocks).
        unsafe {
            F::load(
                w.qs.as_ptr().add(b * qb),
                w.aux.as_ptr().wrapping_add(b * ab),
                d.as_ptr(),
                m.as_ptr(),
            )
        }
    } else {
        let mut qs = [0u8; 8 * MAX_QB];
        let mut aux = [0u8; 8 * MAX_AB];
        qs[..tail * qb].copy_from_slice(&w.qs[b * qb..][..tail * qb]);
        aux[..tail * ab].copy_from_slice(&w.aux[b * ab..][..tail * ab]);
        // SAFETY: the buffers hold a whole group.
        unsafe { F::load(qs.as_ptr(), aux.as_ptr(), d.as_ptr(), m.as_ptr()) }
    };
    let tn = if T == 1 { 1 } else { c.tn };
    for (t, acc) in acc.iter_mut().enumerate().take(tn) {
        // SAFETY: token t < tn of the chunk's tails.
        let xt = unsafe { &*c.xtail.add(t) };
        let a = Acts {
            q: xt.q.as_ptr(),
            d: xt.d.as_ptr(),
            sum: xt.sum.as_ptr(),
            s16: core::ptr::null(),
        };
        // SAFETY: the buffers hold a whole group (32-element formats read no 16-element sums).
        *acc = unsafe { F::dot(&wv, &a, *acc) };
    }
}

/// q4_k's and q5_k's twelve scale bytes at `p` as their eight 6-bit scales and eight minimums, as
/// f32 lanes (ggml's `get_scale_min_k4` for every sub-block at once). With the bytes as u32 words
/// `a0, a1, a2`: scales 0..4 are `a0 & 0x3f`, minimums 0..4 `a1 & 0x3f`; scales 4..8 take their low
/// four bits from `a2`'s low nibbles and the top two from `a0`'s top bits, minimums 4..8 from
/// `a2`'s high nibbles and `a1`'s top bits.
///
/// # Safety
/// Twelve bytes readable at `p`; AVX2 present.
#[inline(always)]
pub(super) unsafe fn k4_scales(p: *const u8) -> (__m256, __m256) {
    // SAFETY: as required of the caller (8 + 4 bytes).
    let (a01, a2) = unsafe {
        (
            _mm_loadl_epi64(p.cast()),
            _mm_cvtsi32_si128(p.add(8).cast::<i32>().read_unaligned()),
        )
    };
    let t = _mm_unpacklo_epi64(a01, a2); // [a0, a1, a2, 0]
                                         // y = [a0, a2, a1, a2 >> 4], z = [·, a0 >> 2, ·, a1 >> 2]: then bytes 0..8 are the scales and
                                         // 8..16 the minimums, each `(y & low) | (z & high)`.
    let y = _mm_srlv_epi32(
        _mm_shuffle_epi32::<0b10_01_10_00>(t),
        _mm_setr_epi32(0, 0, 0, 4),
    );
    let z = _mm_srli_epi32::<2>(_mm_shuffle_epi32::<0b01_01_00_00>(t));
    let low = _mm_setr_epi32(0x3f3f_3f3f, 0x0f0f_0f0f, 0x3f3f_3f3f, 0x0f0f_0f0f);
    let high = _mm_setr_epi32(0, 0x3030_3030, 0, 0x3030_3030);
    let r = _mm_or_si128(_mm_and_si128(y, low), _mm_and_si128(z, high));
    (
        _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(r)),
        _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_unpackhi_epi64(r, r))),
    )
}

/// q3_k's twelve scale bytes at `p` as its sixteen scales less 32 (`i8`, sub-block order): low
/// nibbles from bytes 0..8 (then their high nibbles), two high bits each from bytes 8..12.
///
/// # Safety
/// Twelve bytes readable at `p`; AVX2 present.
#[inline(always)]
pub(super) unsafe fn q3k_scales(p: *const u8) -> __m128i {
    // SAFETY: as required of the caller.
    let (lo, hi) = unsafe {
        (
            p.cast::<u64>().read_unaligned(),
            p.add(8).cast::<u32>().read_unaligned(),
        )
    };
    let m4 = _mm_set1_epi8(0x0f);
    let v = _mm_cvtsi64_si128(lo as i64);
    let low = _mm_unpacklo_epi64(
        _mm_and_si128(v, m4),
        _mm_and_si128(_mm_srli_epi16::<4>(v), m4),
    );
    // Dword g: the four bytes shifted right by 2g, so byte 4g + b holds scale 4g + b's bits.
    let high = _mm_and_si128(
        _mm_srlv_epi32(_mm_set1_epi32(hi as i32), _mm_setr_epi32(0, 2, 4, 6)),
        _mm_set1_epi8(3),
    );
    _mm_sub_epi8(
        _mm_or_si128(low, _mm_slli_epi16::<4>(high)),
        _mm_set1_epi8(32),
    )
}

/// iq4_xs's six scale bytes at `p` as its eight scales less 32, as f32 lanes.
///
/// # Safety
/// Six bytes readable at `p`; AVX2 present.
#[inline(always)]
pub(super) unsafe fn iq4xs_scales(p: *const u8) -> __m256 {
    // SAFETY: as required of the caller.
    let (h, l) = unsafe {
        (
            p.cast::<u16>().read_unaligned(),
            p.add(2).cast::<u32>().read_unaligned(),
        )
    };
    let low = _mm256_and_si256(
        _mm256_srlv_epi32(
            _mm256_set1_epi32(l as i32),
            _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28),
        ),
        _mm256_set1_epi32(0xf),
    );
    let high = _mm256_and_si256(
        _mm256_srlv_epi32(
            _mm256_set1_epi32(i32::from(h)),
            _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14),
        ),
        _mm256_set1_epi32(3),
    );
    let ls = _mm256_or_si256(low, _mm256_slli_epi32::<4>(high));
    _mm256_cvtepi32_ps(_mm256_sub_epi32(ls, _mm256_set1_epi32(32)))
}
