//! The `rows8` layout (layout version 2) of q4_0, q4_1 and q8_0: the ARM decode layout, written once
//! at import or quantize time, never at load.
//!
//! # Bytes
//!
//! A q4_0 matrix of `rows` (a multiple of 8) × `k` (a multiple of 32, at most [`ROWS8_MAX_K`]) has
//! the same two planes as in `rowsplit`, of the same lengths, in another order. Rows go in groups of
//! eight; in group `g`, row `8g + i` (`i` in `0..4`, "row A of pair `i`") shares its bytes with row
//! `8g + 4 + i` ("row B"): each byte holds one element of each, at the same column. Block `b` (of
//! `nb = k/32`) of a group is one 128-byte chunk of quants and one 8-scale chunk:
//!
//! ```text
//! qs[(g·nb + b)·128 + 16c + 4i + j] = (qA ^ 8) << 4 | qB,   qA, qB = element 4c + j of block b
//!                                                           of rows 8g + i and 8g + 4 + i
//! d [(g·nb + b)·8 + r]              = scale of row 8g + r, block b
//! ```
//!
//! for `c` in `0..8` (sixteen bytes each: four columns of the four pairs) and `i, j` in `0..4`. The
//! elements are q4_0's nibbles `q` (value `d·(q − 8)`): row A's as the two's complement of `q − 8` in
//! the high nibble, row B's as stored in the low nibble. Read as a signed byte, such a byte is
//! `16·(qA − 8) + qB`, so for a 16-byte register `W` and the activations' bytes `x`:
//!
//! - `sdot(W, x)` (the byte as it is) gives `16·Σ(qA − 8)·x + Σ qB·x` per pair, and
//! - `sdot(W & 0x0f, x)` gives `Σ qB·x`;
//!
//! their difference is row A's dot times 16, and the second less `8·Σx` is row B's. One `and` per
//! 16 bytes (32 weights) instead of two, one `sdot` by element per 16 bytes per row, and the lanes of
//! the accumulators are four rows each: nothing is reduced across lanes.
//!
//! q4_1 is packed as q4_0 (its nibbles `q` are unsigned, value `d·q + m`: row A's `q ^ 8` in the
//! high nibble, row B's `q` in the low one), and its minimums `m` are a plane ordered like the
//! scales ([`scales_from_rowsplit`]).
//!
//! A q8_0 matrix (`rows` a multiple of 8, `k` at most [`ROWS8_MAX_K`]` / 2`) in `rows8` keeps one
//! row per byte: block `b` of group `g` is one 256-byte chunk, two halves of four rows, and its
//! eight scales as for q4_0:
//!
//! ```text
//! qs[(g·nb + b)·256 + 128h + 16c + 4i + j] = quant (element) 4c + j of block b of row 8g + 4h + i
//! ```
//!
//! for `h` in `0..2`, `c` in `0..8`, `i, j` in `0..4`: `sdot` by element takes four columns of four
//! rows per register, with nothing to unpack.
//!
//! Rows `r0..r1` of a `rows8` matrix (both multiples of 8) are the same byte ranges of the planes as
//! in `rowsplit` (`r·k/2` and `r·k/32`), so splitting a matrix across threads is unchanged.
//!
//! # Kernels
//!
//! Variants with a kernel of their own for this layout (aarch64 dotprod and i8mm, one token) read it
//! as it is. Everything else ([`matmul_via_rowsplit`]) copies eight rows at a time back into
//! `rowsplit` order on the stack and runs the variant's q4_0 kernel: exact, and cheap next to a
//! prefill tile, but a decode step on such a variant reads every weight twice; a model meant for
//! x86 should keep `rowsplit`. The scalar reference is that copy followed by the scalar q4_0 kernel.

use half::f16;

use super::{scalar, Q8ActsRef, QFormat, QLayout, QMatmulFn, QWeight, QK};

/// Widest row a q4_0 `rows8` matrix may have (q8_0: half of it): eight rows fit the on-stack copy
/// of [`matmul_via_rowsplit`] (128 KiB of quants).
pub const ROWS8_MAX_K: usize = 32768;

/// Bytes of the on-stack copy: eight rows of the widest row.
const COPY_BYTES: usize = ROWS8_MAX_K / 2 * GROUP;

/// The widest row of a `format` matrix in `rows8` (see [`ROWS8_MAX_K`]).
pub const fn max_k(format: QFormat) -> usize {
    COPY_BYTES / GROUP / format.qs_bytes_per_block() * QK
}

/// Rows per group.
pub const GROUP: usize = 8;

/// Pairs per group (the lanes of one accumulator).
const PAIRS: usize = GROUP / 2;

/// Element `e` (`0..32`) of a q4_0 block's 16 rowsplit bytes: its nibble `q`.
#[inline]
fn nibble(block: &[u8], e: usize) -> u8 {
    if e < 16 {
        block[e] & 15
    } else {
        block[e - 16] >> 4
    }
}

/// Writes `rows` × `k` quants and scales in `rowsplit` order (`qs`, `d`) into `rows8` order
/// (`out_qs`, `out_d`, of the same lengths); q4_1's minimums go through [`scales_from_rowsplit`].
/// Panics if `rows` is not a multiple of 8, `k` of 32, or a plane's length is wrong.
pub fn from_rowsplit(
    format: QFormat,
    rows: usize,
    k: usize,
    qs: &[u8],
    d: &[f16],
    out_qs: &mut [u8],
    out_d: &mut [f16],
) {
    let (nb, bb) = check_planes("from_rowsplit", format, rows, k, qs.len(), d.len());
    assert!(out_qs.len() == qs.len() && out_d.len() == d.len());
    for g in 0..rows / GROUP {
        for b in 0..nb {
            let block = |r: usize| &qs[((g * GROUP + r) * nb + b) * bb..][..bb];
            let chunk = &mut out_qs[(g * nb + b) * GROUP * bb..][..GROUP * bb];
            match format {
                QFormat::Q4_0 | QFormat::Q4_1 => {
                    for (c, i, j) in offsets() {
                        let e = 4 * c + j;
                        let (a, bq) = (nibble(block(i), e), nibble(block(PAIRS + i), e));
                        chunk[16 * c + 4 * i + j] = (a ^ 8) << 4 | bq;
                    }
                }
                _ => {
                    for h in 0..2 {
                        for (c, i, j) in offsets() {
                            chunk[128 * h + 16 * c + 4 * i + j] = block(PAIRS * h + i)[4 * c + j];
                        }
                    }
                }
            }
        }
    }
    scales_from_rowsplit(rows, nb, d, out_d);
}

/// Writes a `rowsplit` plane of per-block f16 values (scales `d`, q4_1's minimums `m`: `[rows, nb]`)
/// in `rows8` order: group `g`, block `b`'s eight rows together. Panics on a wrong length.
pub fn scales_from_rowsplit(rows: usize, nb: usize, src: &[f16], out: &mut [f16]) {
    assert!(rows.is_multiple_of(GROUP) && src.len() == rows * nb && out.len() == src.len());
    for g in 0..rows / GROUP {
        for b in 0..nb {
            for r in 0..GROUP {
                out[(g * nb + b) * GROUP + r] = src[(g * GROUP + r) * nb + b];
            }
        }
    }
}

/// The inverse of [`scales_from_rowsplit`].
pub fn scales_to_rowsplit(rows: usize, nb: usize, src: &[f16], out: &mut [f16]) {
    assert!(rows.is_multiple_of(GROUP) && src.len() == rows * nb && out.len() == src.len());
    for g in 0..rows / GROUP {
        for b in 0..nb {
            for r in 0..GROUP {
                out[(g * GROUP + r) * nb + b] = src[(g * nb + b) * GROUP + r];
            }
        }
    }
}

/// The inverse of [`from_rowsplit`]: `rows8` planes back into `rowsplit` order. Four bytes at a
/// time (the layout keeps four columns of a row together), as the fallback product runs it on every
/// call.
pub fn to_rowsplit(
    format: QFormat,
    rows: usize,
    k: usize,
    qs: &[u8],
    d: &[f16],
    out_qs: &mut [u8],
    out_d: &mut [f16],
) {
    let (nb, bb) = check_planes("to_rowsplit", format, rows, k, qs.len(), d.len());
    assert!(out_qs.len() == qs.len() && out_d.len() == d.len());
    let word = |b: &[u8], at: usize| u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
    let row_bytes = nb * bb;
    for (src, dst) in qs
        .chunks_exact(nb * GROUP * bb)
        .zip(out_qs.chunks_exact_mut(GROUP * row_bytes))
    {
        for (b, chunk) in src.chunks_exact(GROUP * bb).enumerate() {
            for i in 0..PAIRS {
                for c in 0..4 {
                    let at = |r: usize, byte: usize| r * row_bytes + b * bb + byte;
                    if format == QFormat::Q8_0 {
                        for h in 0..2 {
                            for c in [c, c + 4] {
                                let w = word(chunk, 128 * h + 16 * c + 4 * i);
                                let o = at(PAIRS * h + i, 4 * c);
                                dst[o..o + 4].copy_from_slice(&w.to_le_bytes());
                            }
                        }
                        continue;
                    }
                    // Columns 4c..4c+4 (low nibbles) and 16+4c.. (high) of the pair's rows.
                    let (lo, hi) = (
                        word(chunk, 16 * c + 4 * i),
                        word(chunk, 64 + 16 * c + 4 * i),
                    );
                    let a = ((lo >> 4) & 0x0F0F_0F0F | hi & 0xF0F0_F0F0) ^ 0x8888_8888;
                    let bw = lo & 0x0F0F_0F0F | (hi << 4) & 0xF0F0_F0F0;
                    let (oa, ob) = (at(i, 4 * c), at(PAIRS + i, 4 * c));
                    dst[oa..oa + 4].copy_from_slice(&a.to_le_bytes());
                    dst[ob..ob + 4].copy_from_slice(&bw.to_le_bytes());
                }
            }
        }
    }
    scales_to_rowsplit(rows, nb, d, out_d);
}

/// Quant byte `j` (rowsplit order: for q4_0 `0..16`, elements `j` and `j + 16`; for q8_0 `0..32`)
/// of row `r`, block `b` of a `rows8` matrix in `format` with `nb` blocks per row, as `rowsplit`
/// stores it.
#[inline]
pub fn block_byte(format: QFormat, qs: &[u8], nb: usize, r: usize, b: usize, j: usize) -> u8 {
    let (g, i) = (r / GROUP, r % GROUP);
    let bb = format.qs_bytes_per_block();
    let chunk = &qs[(g * nb + b) * GROUP * bb..][..GROUP * bb];
    if format == QFormat::Q8_0 {
        return chunk[128 * (i / PAIRS) + 16 * (j / 4) + 4 * (i % PAIRS) + j % 4];
    }
    let q = |e: usize| {
        let byte = chunk[16 * (e / 4) + 4 * (i % PAIRS) + e % 4];
        if i < PAIRS {
            (byte >> 4) ^ 8
        } else {
            byte & 15
        }
    };
    q(j) | q(j + 16) << 4
}

/// Scale of row `r`, block `b` of a `rows8` matrix with `nb` blocks per row.
#[inline]
pub fn block_scale(d: &[f16], nb: usize, r: usize, b: usize) -> f16 {
    d[(r / GROUP * nb + b) * GROUP + r % GROUP]
}

/// `(c, i, j)`: 16-byte register `c` in `0..8`, pair `i` and column `j` in `0..4`.
fn offsets() -> impl Iterator<Item = (usize, usize, usize)> {
    (0..8).flat_map(|c| (0..PAIRS).flat_map(move |i| (0..4).map(move |j| (c, i, j))))
}

fn check_planes(
    what: &str,
    format: QFormat,
    rows: usize,
    k: usize,
    qs: usize,
    d: usize,
) -> (usize, usize) {
    assert!(
        QLayout::Rows8.holds(format) && rows.is_multiple_of(GROUP) && k.is_multiple_of(QK),
        "rows8::{what}: {format} {rows}×{k} is not whole groups of {GROUP} rows and blocks of {QK}"
    );
    let (nb, bb) = (k / QK, format.qs_bytes_per_block());
    assert!(
        qs == rows * nb * bb && d == rows * nb,
        "rows8::{what}: planes of {qs} and {d} elements for {format} {rows}×{k}"
    );
    (nb, bb)
}

/// A `rows8` product through a `rowsplit` kernel of the same format (`inner`): each group of rows
/// is copied back into `rowsplit` order on the stack, as many rows at a time as 128 KiB of quants
/// hold, and `inner` runs on the copy. Exact; the layout's fallback for variants without a kernel
/// of their own.
pub fn matmul_via_rowsplit(
    format: QFormat,
    inner: QMatmulFn,
    w: &QWeight<'_>,
    x: &Q8ActsRef<'_>,
    yt: &mut [f32],
) {
    let (rows, n, nb) = scalar::check_matmul_layout(w, format, QLayout::Rows8, x, yt.len());
    let mut qs = [0u8; COPY_BYTES];
    let mut d = [f16::ZERO; COPY_BYTES / 16];
    let mut m = [f16::ZERO; COPY_BYTES / 16];
    let row_bytes = nb * format.qs_bytes_per_block();
    let per = (COPY_BYTES / row_bytes / GROUP * GROUP).max(GROUP);
    let mut r0 = 0;
    while r0 < rows {
        let r1 = (r0 + per).min(rows);
        let part = w.rows(r0..r1);
        let (qs, d, m) = (
            &mut qs[..part.qs.len()],
            &mut d[..part.d.len()],
            &mut m[..part.m.len()],
        );
        to_rowsplit(format, part.rows, w.k, part.qs, part.d, qs, d);
        if format.has_min() {
            scales_to_rowsplit(part.rows, nb, part.m, m);
        }
        let plain = QWeight {
            layout: QLayout::RowSplit,
            qs,
            d,
            m,
            ..part
        };
        inner(&plain, x, &mut yt[r0 * n..r1 * n]);
        r0 = r1;
    }
}

/// The scalar reference of the `rows8` q4_0 product: [`matmul_via_rowsplit`] with
/// [`scalar::matmul_q4_0_q8`].
pub fn matmul_q4_0_rows8_q8(w: &QWeight<'_>, x: &Q8ActsRef<'_>, yt: &mut [f32]) {
    matmul_via_rowsplit(QFormat::Q4_0, scalar::matmul_q4_0_q8, w, x, yt)
}

/// The scalar reference of the `rows8` q4_1 product: [`matmul_via_rowsplit`] with
/// [`scalar::matmul_q4_1_q8`].
pub fn matmul_q4_1_rows8_q8(w: &QWeight<'_>, x: &Q8ActsRef<'_>, yt: &mut [f32]) {
    matmul_via_rowsplit(QFormat::Q4_1, scalar::matmul_q4_1_q8, w, x, yt)
}

/// The scalar reference of the `rows8` q8_0 product: [`matmul_via_rowsplit`] with
/// [`scalar::matmul_q8_0_q8`].
pub fn matmul_q8_0_rows8_q8(w: &QWeight<'_>, x: &Q8ActsRef<'_>, yt: &mut [f32]) {
    matmul_via_rowsplit(QFormat::Q8_0, scalar::matmul_q8_0_q8, w, x, yt)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_indexing() {
        for format in [QFormat::Q4_0, QFormat::Q8_0] {
            let (rows, k) = (16, 96);
            let (nb, bb) = (k / QK, format.qs_bytes_per_block());
            let qs: Vec<u8> = (0..rows * nb * bb).map(|i| (i * 37 + 11) as u8).collect();
            let d: Vec<f16> = (0..rows * nb)
                .map(|i| f16::from_f32(i as f32 - 3.5))
                .collect();
            let (mut q8, mut d8) = (vec![0; qs.len()], vec![f16::ZERO; d.len()]);
            from_rowsplit(format, rows, k, &qs, &d, &mut q8, &mut d8);
            assert_ne!(q8, qs);
            for r in 0..rows {
                for b in 0..nb {
                    assert_eq!(block_scale(&d8, nb, r, b), d[r * nb + b]);
                    for j in 0..bb {
                        let got = block_byte(format, &q8, nb, r, b, j);
                        assert_eq!(got, qs[(r * nb + b) * bb + j], "{format} r{r} b{b} j{j}");
                    }
                }
            }
            let (mut q1, mut d1) = (vec![0; qs.len()], vec![f16::ZERO; d.len()]);
            to_rowsplit(format, rows, k, &q8, &d8, &mut q1, &mut d1);
            assert_eq!((q1, d1), (qs, d));
        }
    }

    /// A view in `rows8` is refused, as a typed error, for rows not a multiple of 8 and rows wider
    /// than the layout holds.
    #[test]
    fn views_that_do_not_fit_are_refused() {
        let planes = |f: QFormat, rows: usize, k: usize| {
            let nb = rows * k / QK;
            (
                vec![0u8; nb * f.qs_bytes_per_block()],
                vec![f16::ZERO; nb],
                vec![f16::ZERO; if f.has_min() { nb } else { 0 }],
            )
        };
        for (f, rows, k, ok) in [
            (QFormat::Q4_0, 16, 64, true),
            (QFormat::Q8_0, 8, 64, true),
            (QFormat::Q4_1, 8, 64, true),
            (QFormat::Q4_1, 4, 64, false),
            (QFormat::Q4_0, 12, 64, false),
            (QFormat::Q4_0, 8, max_k(QFormat::Q4_0) + QK, false),
            (QFormat::Q8_0, 8, max_k(QFormat::Q8_0) + QK, false),
        ] {
            let (qs, d, m) = planes(f, rows, k);
            let got =
                QWeight::new(f, rows, k, &qs, &d, &m).and_then(|w| w.in_layout(QLayout::Rows8));
            match (got, ok) {
                (Ok(_), true) => {}
                (Err(super::super::QuantError::Layout { .. }), false) => {}
                (got, _) => panic!("{f} {rows}x{k}: {got:?}"),
            }
        }
        assert_eq!((max_k(QFormat::Q4_0), max_k(QFormat::Q8_0)), (32768, 16384));
    }
}
