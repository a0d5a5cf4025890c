//! The prefill kernel's repacking, per format: a row tile's chunk of blocks into the shape every
//! format shares (see [`super`]): per 32-element block eight vectors of unsigned quants `u` (vector
//! `s`: elements `4s..4s+4` of each row in its i32 lane), with the element's value `u − OFF` before
//! the scales ([`off`]), and per part of the block (one part of 32 elements, or two of 16 for the
//! formats whose sub-blocks are 16 elements, [`parts`]) a lane of f32 scales and, for the formats
//! with a minimum, a lane of f32 minimums.
//!
//! | format      | `u`                       | `OFF` | scale lane       | minimum lane   | parts |
//! |-------------|---------------------------|-------|------------------|----------------|-------|
//! | q8_0        | `q + 128`                 | 128   | `d`              |                | 1     |
//! | q4_0        | nibble                    | 8     | `d`              |                | 1     |
//! | q4_1        | nibble                    | 0     | `d`              | `m`            | 1     |
//! | q5_0        | nibble, `qh` bit as 16    | 16    | `d`              |                | 1     |
//! | q5_1        | nibble, `qh` bit as 16    | 0     | `d`              | `m`            | 1     |
//! | iq4_nl      | `K[nibble] + 128`         | 128   | `d`              |                | 1     |
//! | q4_k, q5_k  | 4 or 5 bits               | 0     | `d · sc`         | `−dmin · mn`   | 1     |
//! | iq4_xs      | `K[nibble] + 128`         | 128   | `d · (ls − 32)`  |                | 1     |
//! | q6_k        | 6 bits                    | 32    | `d · sc` (i8)    |                | 2     |
//! | q3_k        | 2 bits, `hmask` bit as 4  | 4     | `d · (sc − 32)`  |                | 2     |
//! | q2_k        | 2 bits                    | 0     | `d · sc`         | `−dmin · mn`   | 2     |
//!
//! Every scale and minimum lane is an f16 times an integer of at most 8 bits: exact in f32. The
//! integer dot of `u` with a token's quants less `OFF` times the token's sum over the part is the
//! spec's exact `Σ q·x` of that part; only the float products and sums are ordered differently
//! from [`crate::quant::kquant::matmul_q8`], as its tolerance allows.
//!
//! The quants are read with one dword gather per row (the sixteen rows' four bytes at the same
//! offset of their blocks), the sub-block scales with a few more per super-block, decoded for all
//! sixteen rows at once in the i32 lanes.

use core::arch::x86_64::*;

use half::f16;

use super::PR;
use crate::quant::kquant::IQ4_NL_VALUES;
use crate::quant::{QFormat, QWeight, QK};
use crate::simd::Format;

/// What is subtracted from every repacked quant to give its value (before the scales).
pub(super) const fn off(f: QFormat) -> i32 {
    match f {
        QFormat::Q8_0 | QFormat::Iq4Nl | QFormat::Iq4Xs => 128,
        QFormat::Q4_0 => 8,
        QFormat::Q5_0 => 16,
        QFormat::Q6K => 32,
        QFormat::Q3K => 4,
        _ => 0,
    }
}

/// Scale (and minimum) lanes per 32-element block: 2 for the formats with 16-element sub-blocks.
pub(super) const fn parts(f: QFormat) -> usize {
    match f {
        QFormat::Q2K | QFormat::Q3K | QFormat::Q6K => 2,
        _ => 1,
    }
}

/// Whether the prefill kernel takes this format.
pub(super) const fn takes(f: QFormat) -> bool {
    // Every format: the match documents that a new one must be added here.
    match f {
        QFormat::Q8_0 | QFormat::Q4_0 | QFormat::Q4_1 => true,
        QFormat::Q5_0 | QFormat::Q5_1 | QFormat::Iq4Nl => true,
        QFormat::Q2K | QFormat::Q3K | QFormat::Q4K | QFormat::Q5K | QFormat::Q6K => true,
        QFormat::Iq4Xs => true,
    }
}

/// One dword per row from a plane: lane `j < rr` reads the four bytes at `base + j·stride + at`.
struct Plane {
    base: *const i32,
    rows: __m512i,
    lanes: __mmask16,
}

impl Plane {
    /// Rows `r0..r0+rr` of a plane with `stride` bytes per row (`PR · stride < 2³¹`).
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    fn new(plane: &[u8], stride: usize, r0: usize, lanes: __mmask16) -> Plane {
        Plane {
            base: plane.as_ptr().wrapping_add(r0 * stride).cast(),
            rows: _mm512_mullo_epi32(
                _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                _mm512_set1_epi32(stride as i32),
            ),
            lanes,
        }
    }

    /// The four bytes at byte `at` of every row.
    ///
    /// # Safety
    /// `at + 4` bytes lie inside each of rows `r0..r0+rr` of the plane.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    unsafe fn get(&self, at: usize) -> __m512i {
        let idx = _mm512_add_epi32(self.rows, _mm512_set1_epi32(at as i32));
        // SAFETY: lane j < rr reads 4 bytes of row j inside the plane (the caller's contract);
        // other lanes are masked off and read nothing.
        unsafe {
            _mm512_mask_i32gather_epi32::<1>(_mm512_setzero_si512(), self.lanes, idx, self.base)
        }
    }
}

/// Bits `at..at+w` of every i32 lane.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn bits(v: __m512i, at: u32, w: u32) -> __m512i {
    _mm512_and_si512(
        _mm512_srlv_epi32(v, _mm512_set1_epi32(at as i32)),
        _mm512_set1_epi32((1 << w) - 1),
    )
}

/// Every byte's bit `at`, as `1 << to` in the byte (`at`, `to` < 8).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn byte_bit(v: __m512i, at: u32, to: u32) -> __m512i {
    let set = _mm512_test_epi8_mask(v, _mm512_set1_epi8((1u8 << at) as i8));
    _mm512_maskz_mov_epi8(set, _mm512_set1_epi8((1u8 << to) as i8))
}

/// Every byte's nibble `h` (0 low, 1 high).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn nibble(v: __m512i, h: usize) -> __m512i {
    let v = if h == 0 { v } else { _mm512_srli_epi32::<4>(v) };
    _mm512_and_si512(v, _mm512_set1_epi8(0x0f))
}

/// `v[j·stride]` for `j < rr` as f32 lanes, the rest zero.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn f16_lanes(v: &[f16], stride: usize, rr: usize) -> __m512 {
    let mut h = [0u16; PR];
    for (j, o) in h.iter_mut().enumerate().take(rr) {
        *o = v[j * stride].to_bits();
    }
    // SAFETY: `h` is 32 readable bytes.
    _mm512_cvtph_ps(unsafe { _mm256_loadu_si256(h.as_ptr().cast()) })
}

/// Where a chunk's repacked blocks go: per 32-element block `b`, quants at `q[8b..8b+8]`, scales at
/// `d[P·b + p]` and minimums at `m[P·b + p]` for part `p < P` ([`parts`]).
pub(super) struct Out {
    pub q: *mut __m512i,
    pub d: *mut __m512,
    pub m: *mut __m512,
}

impl Out {
    /// Stores vector `s` of block `b`.
    ///
    /// # Safety
    /// `b < KC`, `s < 8`.
    #[inline(always)]
    unsafe fn q(&self, b: usize, s: usize, v: __m512i) {
        // SAFETY: inside the buffer of `8·KC` vectors (the caller's contract).
        unsafe { self.q.add(8 * b + s).write(v) }
    }

    /// Stores scale lane `i` (`P·b + p`) and, when given, minimum lane `i`.
    ///
    /// # Safety
    /// `i < 2·KC`.
    #[inline(always)]
    unsafe fn lanes(&self, i: usize, d: __m512, m: Option<__m512>) {
        // SAFETY: inside the buffers of `2·KC` vectors (the caller's contract).
        unsafe {
            self.d.add(i).write(d);
            if let Some(m) = m {
                self.m.add(i).write(m);
            }
        }
    }
}

/// Repacks the 32-element blocks `c0..c0+kc` of rows `r0..r0+rr` (lanes past `rr` zero) into `out`.
///
/// # Safety
/// The rows and blocks exist in `w` (which passed `check_matmul_q` for `F`); `c0` and `kc` are
/// whole blocks of the format; `rr <= PR`, `kc <= KC`; `out` holds `8·KC` quant vectors and `2·KC`
/// scale and minimum vectors; `PR` rows of each plane fit the gathers' i32 offsets; AVX-512
/// F/BW/VL/VNNI present.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(super) unsafe fn repack<F: Format>(
    w: &QWeight<'_>,
    r0: usize,
    rr: usize,
    c0: usize,
    kc: usize,
    out: &Out,
) {
    let f = F::FORMAT;
    let per = f.block_elems() / QK; // 32-element blocks per format block
    let (nbf, qb, ab) = (w.k / f.block_elems(), F::QB, f.aux_bytes_per_block());
    let lanes: __mmask16 = ((1u32 << rr) - 1) as u16;
    let qs = Plane::new(w.qs, nbf * qb, r0, lanes);
    let aux = Plane::new(w.aux, nbf * ab, r0, lanes);
    let m4 = _mm512_set1_epi8(0x0f);
    // IQ4_NL's values plus 128, in every 128-bit lane of the table.
    let iq4 = {
        let mut t = [0u8; 16];
        for (t, &v) in t.iter_mut().zip(&IQ4_NL_VALUES) {
            *t = (i32::from(v) + 128) as u8;
        }
        // SAFETY: `t` is 16 readable bytes.
        _mm512_broadcast_i32x4(unsafe { _mm_loadu_si128(t.as_ptr().cast()) })
    };
    // Byte 4i + j of a 128-bit lane: 4i (a shuffle index of the lane's dword i's first byte).
    let dword = _mm512_broadcast_i32x4(_mm_setr_epi8(
        0, 0, 0, 0, 4, 4, 4, 4, 8, 8, 8, 8, 12, 12, 12, 12,
    ));
    for fb in 0..kc / per {
        // The format block's index in its row, its first 32-element block in the chunk, and the
        // byte offsets of its fields in the rows of each plane.
        let (g, b0) = (c0 / per + fb, fb * per);
        let (q0, a0) = (g * qb, g * ab);
        let d = f16_lanes(&w.d[r0 * nbf + g..], nbf, rr);
        let dm = if F::MIN {
            f16_lanes(&w.m[r0 * nbf + g..], nbf, rr)
        } else {
            _mm512_setzero_ps()
        };
        // SAFETY (whole match): every gather reads four bytes of the format block's fields in
        // `qs` or `aux` (the offsets below stay inside `qb` and `ab` bytes), of rows that exist;
        // every store is block b0 + j < kc <= KC of `out`.
        unsafe {
            match f {
                QFormat::Q8_0 => {
                    for s in 0..8 {
                        let v = _mm512_xor_si512(qs.get(q0 + 4 * s), _mm512_set1_epi8(-128));
                        out.q(b0, s, v);
                    }
                    out.lanes(b0, d, None);
                }
                QFormat::Q4_0 | QFormat::Q4_1 | QFormat::Q5_0 | QFormat::Q5_1 | QFormat::Iq4Nl => {
                    // Byte j: element j in the low nibble, j + 16 in the high one; q5's `qh` bit
                    // j is element j's fifth bit.
                    let qh = match f {
                        QFormat::Q5_0 | QFormat::Q5_1 => aux.get(a0),
                        _ => _mm512_setzero_si512(),
                    };
                    for s in 0..4 {
                        let q = qs.get(q0 + 4 * s);
                        for h in 0..2 {
                            let mut v = nibble(q, h);
                            match f {
                                QFormat::Iq4Nl => v = _mm512_shuffle_epi8(iq4, v),
                                QFormat::Q5_0 | QFormat::Q5_1 => {
                                    // Elements 16h + 4s + i: bits of qh byte 2h + s/2, from
                                    // 4·(s%2), spread over the dword's bytes i.
                                    let src = _mm512_set1_epi8((2 * h + s / 2) as i8);
                                    let spread =
                                        _mm512_shuffle_epi8(qh, _mm512_add_epi8(dword, src));
                                    let first = 4 * (s % 2) as u32;
                                    let sel = _mm512_set1_epi32(i32::from_le_bytes([
                                        1 << first,
                                        2 << first,
                                        4 << first,
                                        8 << first,
                                    ]));
                                    let set = _mm512_test_epi8_mask(spread, sel);
                                    v = _mm512_mask_add_epi8(v, set, v, _mm512_set1_epi8(16));
                                }
                                _ => {}
                            }
                            out.q(b0, 4 * h + s, v);
                        }
                    }
                    out.lanes(b0, d, F::MIN.then_some(dm));
                }
                QFormat::Q4K | QFormat::Q5K => {
                    // Byte 32c + l: element l of block 2c (low nibble) and of 2c + 1 (high); q5_k's
                    // `qh` byte l (before the nibbles) holds their fifth bits, bit j for block j.
                    let (qn, qh0) = match f {
                        QFormat::Q5K => (q0 + 32, q0),
                        _ => (q0, 0),
                    };
                    let mut qh = [_mm512_setzero_si512(); 8];
                    if f == QFormat::Q5K {
                        for (s, v) in qh.iter_mut().enumerate() {
                            *v = qs.get(qh0 + 4 * s);
                        }
                    }
                    for c in 0..4 {
                        for (s, &qh) in qh.iter().enumerate() {
                            let q = qs.get(qn + 32 * c + 4 * s);
                            for h in 0..2 {
                                let j = 2 * c + h;
                                let mut v = nibble(q, h);
                                if f == QFormat::Q5K {
                                    v = _mm512_or_si512(v, byte_bit(qh, j as u32, 4));
                                }
                                out.q(b0 + j, s, v);
                            }
                        }
                    }
                    // ggml's get_scale_min_k4 on the scale bytes as dwords a0, a1, a2.
                    let (x0, x1, x2) = (aux.get(a0), aux.get(a0 + 4), aux.get(a0 + 8));
                    for j in 0..8u32 {
                        let (sc, mn) = if j < 4 {
                            (bits(x0, 8 * j, 6), bits(x1, 8 * j, 6))
                        } else {
                            let i = 8 * (j - 4);
                            (
                                _mm512_or_si512(
                                    bits(x2, i, 4),
                                    _mm512_slli_epi32::<4>(bits(x0, i + 6, 2)),
                                ),
                                _mm512_or_si512(
                                    bits(x2, i + 4, 4),
                                    _mm512_slli_epi32::<4>(bits(x1, i + 6, 2)),
                                ),
                            )
                        };
                        let sc = _mm512_mul_ps(d, _mm512_cvtepi32_ps(sc));
                        let mn = _mm512_sub_ps(
                            _mm512_setzero_ps(),
                            _mm512_mul_ps(dm, _mm512_cvtepi32_ps(mn)),
                        );
                        out.lanes(b0 + j as usize, sc, Some(mn));
                    }
                }
                QFormat::Iq4Xs => {
                    // Block j: bytes 16j.. as an iq4_nl block; scale bits j from `scales_l`
                    // (bytes 2..6, a nibble each) and `scales_h` (bytes 0..2, two bits each).
                    for j in 0..8 {
                        for s in 0..4 {
                            let q = qs.get(q0 + 16 * j + 4 * s);
                            for h in 0..2 {
                                let v = _mm512_shuffle_epi8(iq4, nibble(q, h));
                                out.q(b0 + j, 4 * h + s, v);
                            }
                        }
                    }
                    let (sh, sl) = (aux.get(a0), aux.get(a0 + 2));
                    for j in 0..8u32 {
                        let ls = _mm512_or_si512(
                            bits(sl, 4 * j, 4),
                            _mm512_slli_epi32::<4>(bits(sh, 2 * j, 2)),
                        );
                        let ls = _mm512_sub_epi32(ls, _mm512_set1_epi32(32));
                        out.lanes(
                            b0 + j as usize,
                            _mm512_mul_ps(d, _mm512_cvtepi32_ps(ls)),
                            None,
                        );
                    }
                }
                QFormat::Q6K => {
                    // Half n, l < 32: element l of block 4n + i from ql[64n + l] (i = 0, 2: low,
                    // high nibble) or ql[64n + 32 + l] (i = 1, 3), and bits 2i, 2i + 1 of
                    // qh[32n + l] as 16 and 32.
                    for n in 0..2 {
                        for s in 0..8 {
                            let a = qs.get(q0 + 64 * n + 4 * s);
                            let b = qs.get(q0 + 64 * n + 32 + 4 * s);
                            let h = qs.get(q0 + 128 + 32 * n + 4 * s);
                            let m30 = _mm512_set1_epi8(0x30);
                            let high = [
                                _mm512_and_si512(_mm512_slli_epi32::<4>(h), m30),
                                _mm512_and_si512(_mm512_slli_epi32::<2>(h), m30),
                                _mm512_and_si512(h, m30),
                                _mm512_and_si512(_mm512_srli_epi32::<2>(h), m30),
                            ];
                            let low = [
                                _mm512_and_si512(a, m4),
                                _mm512_and_si512(b, m4),
                                nibble(a, 1),
                                nibble(b, 1),
                            ];
                            for i in 0..4 {
                                out.q(b0 + 4 * n + i, s, _mm512_or_si512(low[i], high[i]));
                            }
                        }
                    }
                    // Sixteen i8 scales, sub-block 2j + p for part p of block j.
                    for k in 0..4 {
                        let g = aux.get(a0 + 4 * k);
                        for i in 0..4 {
                            let sc = _mm512_srai_epi32::<24>(_mm512_sllv_epi32(
                                g,
                                _mm512_set1_epi32(24 - 8 * i as i32),
                            ));
                            out.lanes(
                                2 * b0 + 4 * k + i,
                                _mm512_mul_ps(d, _mm512_cvtepi32_ps(sc)),
                                None,
                            );
                        }
                    }
                }
                QFormat::Q2K | QFormat::Q3K => {
                    // Half n, l < 32: element l of block 4n + i is bits 2i, 2i + 1 of
                    // q[32n + l]; q3_k adds bit 4n + i of hmask[l] (before the quants) as 4.
                    let (qn, hm) = match f {
                        QFormat::Q3K => (q0 + 32, q0),
                        _ => (q0, 0),
                    };
                    for s in 0..8 {
                        let h = match f {
                            QFormat::Q3K => qs.get(hm + 4 * s),
                            _ => _mm512_setzero_si512(),
                        };
                        for n in 0..2 {
                            let q = qs.get(qn + 32 * n + 4 * s);
                            for i in 0..4 {
                                let j = 4 * n + i;
                                let mut v = _mm512_and_si512(
                                    _mm512_srlv_epi32(q, _mm512_set1_epi32(2 * i as i32)),
                                    _mm512_set1_epi8(3),
                                );
                                if f == QFormat::Q3K {
                                    v = _mm512_or_si512(v, byte_bit(h, j as u32, 2));
                                }
                                out.q(b0 + j, s, v);
                            }
                        }
                    }
                    if f == QFormat::Q3K {
                        // Sub-block i: low nibble from byte i % 8 (shifted by 4·(i / 8)), two high
                        // bits from byte 8 + i % 4 (shifted by 2·(i / 4)); less 32.
                        let (x0, x1, x2) = (aux.get(a0), aux.get(a0 + 4), aux.get(a0 + 8));
                        for i in 0..16u32 {
                            let lo = [x0, x1][(i % 8 / 4) as usize];
                            let sc = _mm512_or_si512(
                                bits(lo, 8 * (i % 4) + 4 * (i / 8), 4),
                                _mm512_slli_epi32::<4>(bits(x2, 8 * (i % 4) + 2 * (i / 4), 2)),
                            );
                            let sc = _mm512_sub_epi32(sc, _mm512_set1_epi32(32));
                            let sc = _mm512_mul_ps(d, _mm512_cvtepi32_ps(sc));
                            out.lanes(2 * b0 + i as usize, sc, None);
                        }
                    } else {
                        // Sub-block i: byte i, scale in the low nibble, minimum in the high one.
                        for k in 0..4u32 {
                            let g = aux.get(a0 + 4 * k as usize);
                            for i in 0..4u32 {
                                let sc = _mm512_mul_ps(d, _mm512_cvtepi32_ps(bits(g, 8 * i, 4)));
                                let mn =
                                    _mm512_mul_ps(dm, _mm512_cvtepi32_ps(bits(g, 8 * i + 4, 4)));
                                let mn = _mm512_sub_ps(_mm512_setzero_ps(), mn);
                                out.lanes(2 * b0 + (4 * k + i) as usize, sc, Some(mn));
                            }
                        }
                    }
                }
            }
        }
    }
}
