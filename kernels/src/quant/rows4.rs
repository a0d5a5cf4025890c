//! The q4_0 `rows4` layout (layout version 2): the ARM decode layout, written once at import or
//! quantize time, never at load.
//!
//! # Bytes
//!
//! A q4_0 matrix of `rows` (a multiple of 4) × `k` (a multiple of 32, at most [`ROWS4_MAX_K`]) has
//! the same two planes as in `rowsplit`, of the same lengths, in another order. Rows go in groups of
//! four; group `g` holds rows `4g..4g+4`, and within it block `b` (of `nb = k/32`) is one 64-byte
//! chunk of quants and one 4-scale chunk:
//!
//! ```text
//! qs[(g·nb + b)·64 + 16p + 4i + j] = rowsplit byte 4p + j of row 4g + i, block b, XOR 0x88
//! d [(g·nb + b)·4 + i]             = scale of row 4g + i, block b
//! ```
//!
//! for `p, i, j` in `0..4`. So each 16-byte register `p` holds four bytes of each of the four rows,
//! which are elements `4p..4p+4` (low nibbles) and `16+4p..16+4p+4` (high nibbles) of the block: one
//! `sdot vA.4s, vW.16b, vX.4b[p]` adds a four-element product of all four rows into the four lanes of
//! one accumulator, with no reduction across lanes afterwards. The XOR with `0x88` stores each nibble
//! as the two's complement of `q − 8`, so `shl #4` (low) and `and #0xf0` (high) give `16·(q − 8)` as
//! signed bytes in one instruction each, and q4_0's offset costs nothing per block.
//!
//! Rows `r0..r1` of a `rows4` matrix (both multiples of 4) are the same byte ranges of the planes as
//! in `rowsplit` (`r·k/2` and `r·k/32`), so splitting a matrix across threads is unchanged.
//!
//! # Kernels
//!
//! Variants with a kernel of their own for this layout (aarch64 dotprod and i8mm, one token) read it
//! as it is. Everything else ([`matmul_via_rowsplit`]) copies four rows at a time back into
//! `rowsplit` order on the stack and runs the variant's q4_0 kernel: exact, and cheap next to a
//! prefill tile, but a decode step on such a variant reads every weight twice; a model meant for
//! x86 should keep `rowsplit`. The scalar reference is that copy followed by the scalar q4_0 kernel.

use half::f16;

use super::{scalar, Q8ActsRef, QFormat, QLayout, QMatmulFn, QWeight, QK};

/// Widest row a `rows4` matrix may have: four rows of it fit the on-stack copy of
/// [`matmul_via_rowsplit`] (64 KiB of quants).
pub const ROWS4_MAX_K: usize = 32768;

/// Rows per group.
pub const GROUP: usize = 4;

/// Bytes of one group's block (four rows × 16 bytes).
const CHUNK: usize = GROUP * QK / 2;

/// What the layout's XOR does to each nibble: `q` becomes the two's complement of `q − 8`.
const SIGN: u8 = 0x88;

/// Writes `rows` × `k` q4_0 planes in `rowsplit` order (`qs`, `d`) into `rows4` order (`out_qs`,
/// `out_d`, of the same lengths). Panics if `rows` is not a multiple of 4, `k` of 32, or a plane's
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
    for_each_block(rows, nb, |src_q, src_d, dst_q, dst_d| {
        for (p, i, j) in offsets() {
            out_qs[dst_q + 16 * p + 4 * i + j] = qs[src_q + i * nb * 16 + 4 * p + j] ^ SIGN;
        }
        for i in 0..GROUP {
            out_d[dst_d + i] = d[src_d + i * nb];
        }
    });
}

/// The inverse of [`from_rowsplit`]: `rows4` planes back into `rowsplit` order.
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
    for_each_block(rows, nb, |dst_q, dst_d, src_q, src_d| {
        for (p, i, j) in offsets() {
            out_qs[dst_q + i * nb * 16 + 4 * p + j] = qs[src_q + 16 * p + 4 * i + j] ^ SIGN;
        }
        for i in 0..GROUP {
            out_d[dst_d + i * nb] = d[src_d + i];
        }
    });
}

/// Quant byte `j` (`0..16`, rowsplit order) and scale of row `r`, block `b` of a `rows4` matrix with
/// `nb` blocks per row, as `rowsplit` stores them.
#[inline]
pub fn block_byte(qs: &[u8], nb: usize, r: usize, b: usize, j: usize) -> u8 {
    let (g, i) = (r / GROUP, r % GROUP);
    qs[(g * nb + b) * CHUNK + 16 * (j / 4) + 4 * i + j % 4] ^ SIGN
}

/// Scale of row `r`, block `b` of a `rows4` matrix with `nb` blocks per row.
#[inline]
pub fn block_scale(d: &[f16], nb: usize, r: usize, b: usize) -> f16 {
    d[(r / GROUP * nb + b) * GROUP + r % GROUP]
}

/// `(p, i, j)` over `0..4`³: register, row, byte.
fn offsets() -> impl Iterator<Item = (usize, usize, usize)> {
    (0..4).flat_map(|p| (0..GROUP).flat_map(move |i| (0..4).map(move |j| (p, i, j))))
}

/// Calls `f(rowsplit qs, rowsplit d, rows4 qs, rows4 d)` with the first byte / scale index of every
/// group's block: row `4g`'s block `b` in `rowsplit`, the group's chunk in `rows4`.
fn for_each_block(rows: usize, nb: usize, mut f: impl FnMut(usize, usize, usize, usize)) {
    for g in 0..rows / GROUP {
        for b in 0..nb {
            let r = g * GROUP;
            f(
                (r * nb + b) * 16,
                r * nb + b,
                (g * nb + b) * CHUNK,
                (g * nb + b) * GROUP,
            );
        }
    }
}

fn check_planes(what: &str, rows: usize, k: usize, qs: usize, d: usize) -> usize {
    assert!(
        rows.is_multiple_of(GROUP) && k.is_multiple_of(QK),
        "rows4::{what}: {rows}×{k} is not whole groups of 4 rows and blocks of {QK}"
    );
    let nb = k / QK;
    assert!(
        qs == rows * nb * 16 && d == rows * nb,
        "rows4::{what}: planes of {qs} and {d} elements for {rows}×{k}"
    );
    nb
}

/// A `rows4` q4_0 product through a `rowsplit` q4_0 kernel (`inner`): each group of rows is copied
/// back into `rowsplit` order on the stack, as many rows at a time as 64 KiB of quants hold, and
/// `inner` runs on the copy. Exact; the layout's fallback for variants without a kernel of their own.
pub fn matmul_via_rowsplit(inner: QMatmulFn, w: &QWeight<'_>, x: &Q8ActsRef<'_>, yt: &mut [f32]) {
    let (rows, n, nb) = scalar::check_matmul_layout(w, QFormat::Q4_0, QLayout::Rows4, x, yt.len());
    const QS: usize = ROWS4_MAX_K / 2 * GROUP;
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

/// The scalar reference of the `rows4` q4_0 product: [`matmul_via_rowsplit`] with
/// [`scalar::matmul_q4_0_q8`].
pub fn matmul_q4_0_rows4_q8(w: &QWeight<'_>, x: &Q8ActsRef<'_>, yt: &mut [f32]) {
    matmul_via_rowsplit(scalar::matmul_q4_0_q8, w, x, yt)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_indexing() {
        let (rows, k) = (8, 96);
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
