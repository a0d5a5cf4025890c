//! The q4_0 `rows8` layout (layout version 2): the ARM decode layout, written once at import or
//! quantize time, never at load.
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

/// Widest row a `rows8` matrix may have: eight rows of it fit the on-stack copy of
/// [`matmul_via_rowsplit`] (128 KiB of quants).
pub const ROWS8_MAX_K: usize = 32768;

/// Rows per group.
pub const GROUP: usize = 8;

/// Pairs per group (the lanes of one accumulator).
const PAIRS: usize = GROUP / 2;

/// Bytes of one group's block (eight rows × 16 bytes).
const CHUNK: usize = GROUP * QK / 2;

/// Element `e` (`0..32`) of a q4_0 block's 16 rowsplit bytes: its nibble `q`.
#[inline]
fn nibble(block: &[u8], e: usize) -> u8 {
    if e < 16 {
        block[e] & 15
    } else {
        block[e - 16] >> 4
    }
}

/// Writes `rows` × `k` q4_0 planes in `rowsplit` order (`qs`, `d`) into `rows8` order (`out_qs`,
/// `out_d`, of the same lengths). Panics if `rows` is not a multiple of 8, `k` of 32, or a plane's
/// length is wrong.
pub fn from_rowsplit(
    rows: usize,
    k: usize,
    qs: &[u8],
    d: &[f16],
    out_qs: &mut [u8],
    out_d: &mut [f16],
) {
    let nb = check_planes("from_rowsplit", rows, k, qs.len(), d.len());
    assert!(out_qs.len() == qs.len() && out_d.len() == d.len());
    for g in 0..rows / GROUP {
        for b in 0..nb {
            let block = |r: usize| &qs[((g * GROUP + r) * nb + b) * 16..][..16];
            let chunk = &mut out_qs[(g * nb + b) * CHUNK..][..CHUNK];
            for (c, i, j) in offsets() {
                let e = 4 * c + j;
                let (a, bq) = (nibble(block(i), e), nibble(block(PAIRS + i), e));
                chunk[16 * c + 4 * i + j] = (a ^ 8) << 4 | bq;
            }
            for r in 0..GROUP {
                out_d[(g * nb + b) * GROUP + r] = d[(g * GROUP + r) * nb + b];
            }
        }
    }
}

/// The inverse of [`from_rowsplit`]: `rows8` planes back into `rowsplit` order.
pub fn to_rowsplit(
    rows: usize,
    k: usize,
    qs: &[u8],
    d: &[f16],
    out_qs: &mut [u8],
    out_d: &mut [f16],
) {
    let nb = check_planes("to_rowsplit", rows, k, qs.len(), d.len());
    assert!(out_qs.len() == qs.len() && out_d.len() == d.len());
    for g in 0..rows / GROUP {
        for b in 0..nb {
            for r in 0..GROUP {
                let row = (g * GROUP + r) * nb + b;
                for (j, o) in out_qs[row * 16..][..16].iter_mut().enumerate() {
                    *o = block_byte(qs, nb, g * GROUP + r, b, j);
                }
                out_d[row] = d[(g * nb + b) * GROUP + r];
            }
        }
    }
}

/// Quant byte `j` (`0..16`, rowsplit order: elements `j` and `j + 16`) of row `r`, block `b` of a
/// `rows8` matrix with `nb` blocks per row, as `rowsplit` stores it.
#[inline]
pub fn block_byte(qs: &[u8], nb: usize, r: usize, b: usize, j: usize) -> u8 {
    let (g, i) = (r / GROUP, r % GROUP);
    let chunk = &qs[(g * nb + b) * CHUNK..][..CHUNK];
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

fn check_planes(what: &str, rows: usize, k: usize, qs: usize, d: usize) -> usize {
    assert!(
        rows.is_multiple_of(GROUP) && k.is_multiple_of(QK),
        "rows8::{what}: {rows}×{k} is not whole groups of {GROUP} rows and blocks of {QK}"
    );
    let nb = k / QK;
    assert!(
        qs == rows * nb * 16 && d == rows * nb,
        "rows8::{what}: planes of {qs} and {d} elements for {rows}×{k}"
    );
    nb
}

/// A `rows8` q4_0 product through a `rowsplit` q4_0 kernel (`inner`): each group of rows is copied
/// back into `rowsplit` order on the stack, as many rows at a time as 128 KiB of quants hold, and
/// `inner` runs on the copy. Exact; the layout's fallback for variants without a kernel of their own.
pub fn matmul_via_rowsplit(inner: QMatmulFn, w: &QWeight<'_>, x: &Q8ActsRef<'_>, yt: &mut [f32]) {
    let (rows, n, nb) = scalar::check_matmul_layout(w, QFormat::Q4_0, QLayout::Rows8, x, yt.len());
    const QS: usize = ROWS8_MAX_K / 2 * GROUP;
    let mut qs = [0u8; QS];
    let mut d = [f16::ZERO; QS / 16];
    let row_bytes = nb * 16;
    let per = (QS / row_bytes / GROUP * GROUP).max(GROUP);
    let mut r0 = 0;
    while r0 < rows {
        let r1 = (r0 + per).min(rows);
        let part = w.rows(r0..r1);
        let (qs, d) = (&mut qs[..part.qs.len()], &mut d[..part.d.len()]);
        to_rowsplit(part.rows, w.k, part.qs, part.d, qs, d);
        let plain = QWeight {
            layout: QLayout::RowSplit,
            qs,
            d,
            ..part
        };
        inner(&plain, x, &mut yt[r0 * n..r1 * n]);
        r0 = r1;
    }
}

/// The scalar reference of the `rows8` q4_0 product: [`matmul_via_rowsplit`] with
/// [`scalar::matmul_q4_0_q8`].
pub fn matmul_q4_0_rows8_q8(w: &QWeight<'_>, x: &Q8ActsRef<'_>, yt: &mut [f32]) {
    matmul_via_rowsplit(scalar::matmul_q4_0_q8, w, x, yt)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_indexing() {
        let (rows, k) = (16, 96);
        let nb = k / QK;
        let qs: Vec<u8> = (0..rows * k / 2).map(|i| (i * 37 + 11) as u8).collect();
        let d: Vec<f16> = (0..rows * nb)
            .map(|i| f16::from_f32(i as f32 - 3.5))
            .collect();
        let (mut q4, mut d4) = (vec![0; qs.len()], vec![f16::ZERO; d.len()]);
        from_rowsplit(rows, k, &qs, &d, &mut q4, &mut d4);
        assert_ne!(q4, qs);
        for r in 0..rows {
            for b in 0..nb {
                assert_eq!(block_scale(&d4, nb, r, b), d[r * nb + b]);
                for j in 0..16 {
                    assert_eq!(block_byte(&q4, nb, r, b, j), qs[(r * nb + b) * 16 + j]);
                }
            }
        }
        let (mut q1, mut d1) = (vec![0; qs.len()], vec![f16::ZERO; d.len()]);
        to_rowsplit(rows, k, &q4, &d4, &mut q1, &mut d1);
        assert_eq!((q1, d1), (qs, d));
    }
}
