//! The GGUF formats kept as a GGUF stores them: q5_0, q5_1, iq4_nl (32-element blocks) and the
//! K-quants q2_k, q3_k, q4_k, q5_k, q6_k and iq4_xs (256-element super-blocks).
//!
//! # Layout (`rowsplit`, as for q4_0)
//!
//! A `[rows, k]` matrix (`k` a multiple of [`QFormat::block_elems`]) is stored as up to four
//! planes, row-major, block after block, each a field (or fields) of ggml's block struct moved
//! unchanged ([`QFormat::ggml_fields`] says which bytes):
//!
//! | format | block | `qs` bytes (fields)       | `aux` bytes (fields)        | `d`  | `m`    | bits/weight |
//! |--------|-------|---------------------------|-----------------------------|------|--------|-------------|
//! | q5_0   | 32    | 16 (`qs`)                 | 4 (`qh`)                    | `d`  |        | 5.5         |
//! | q5_1   | 32    | 16 (`qs`)                 | 4 (`qh`)                    | `d`  | `m`    | 6           |
//! | iq4_nl | 32    | 16 (`qs`)                 |                             | `d`  |        | 4.5         |
//! | q2_k   | 256   | 64 (`qs`)                 | 16 (`scales`)               | `d`  | `dmin` | 2.625       |
//! | q3_k   | 256   | 96 (`hmask`, `qs`)        | 12 (`scales`)               | `d`  |        | 3.4375      |
//! | q4_k   | 256   | 128 (`qs`)                | 12 (`scales`)               | `d`  | `dmin` | 4.5         |
//! | q5_k   | 256   | 160 (`qh`, `qs`)          | 12 (`scales`)               | `d`  | `dmin` | 5.5         |
//! | q6_k   | 256   | 192 (`ql`, `qh`)          | 16 (`scales`, i8)           | `d`  |        | 6.5625      |
//! | iq4_xs | 256   | 128 (`qs`)                | 6 (`scales_h` LE, `scales_l`)| `d`  |        | 4.25        |
//!
//! So the quants of every block start on a 16-byte boundary of their plane, import is a byte
//! split (lossless: joining the planes gives the GGUF's blocks back), and loading maps the planes.
//!
//! # Values (ggml's `dequantize_row_*`, in the same f32 operations and order)
//!
//! With `d`, `dmin`, `m` the f16 fields as f32, per element (sub-block scales `sc`, minimums `mn`
//! and quants `q` are integers):
//!
//! | format | element value                         | `q`                                 | sub-block |
//! |--------|---------------------------------------|-------------------------------------|-----------|
//! | q5_0   | `d · (q − 16)`                        | 5 bits: nibble, `qh` bit            | 32        |
//! | q5_1   | `d · q + m`                           | 5 bits                              | 32        |
//! | iq4_nl | `d · K[q]`                            | nibble; `K` = [`IQ4_NL_VALUES`]     | 32        |
//! | q2_k   | `(d · sc) · q − dmin · mn`            | 2 bits; `sc`, `mn` 4 bits           | 16        |
//! | q3_k   | `(d · (sc − 32)) · (q − 4·[hbit = 0])`| 2 bits and `hmask` bit; `sc` 6 bits | 16        |
//! | q4_k   | `(d · sc) · q − dmin · mn`            | nibble; `sc`, `mn` 6 bits           | 32        |
//! | q5_k   | `(d · sc) · q − dmin · mn`            | nibble and `qh` bit; 6-bit `sc, mn` | 32        |
//! | q6_k   | `(d · sc) · (q − 32)`                 | nibble and 2 `qh` bits; `sc` i8     | 16        |
//! | iq4_xs | `(d · (sc − 32)) · K[q]`              | nibble; `sc` 6 bits                 | 32        |
//!
//! The element order, and where each sub-block's bits sit, are ggml's (see the decoders below).
//!
//! # Products with q8 activations (the scalar spec)
//!
//! Per activation block `j` of 32 (scale `dx`, quants `qx`), with the weight block's elements
//! `32·j ..` written as `s_h · q_i (+ mn_h)` for the one or two sub-blocks `h` it covers:
//! `A = Σ_h s_h · Σ_{i∈h} q_i · qx_i` and `B = Σ_h mn_h · Σ_{i∈h} qx_i` (exact in i32, and below
//! 2²⁴ so exact in f32), and the term is
//!
//! - `(dw·dx) · A − (dmin·dx) · B` for q2_k, q4_k, q5_k (`dw` = `d`),
//! - `(dw·dx) · A + (m·dx) · B` for q5_1 (`s = mn = 1`),
//! - `(dw·dx) · A` for the others (q5_0 with `q − 16`, q3_k's `s = sc − 32` and `q − 4·[hbit = 0]`,
//!   q6_k's `q − 32`, the IQ4 formats' `K[q]`),
//!
//! evaluated in f32 as written; `yt[r·n + t]` is the f32 sum of the terms in block order from 0.
//! Other variants may order the additions differently (and fuse), within `1e-5 · Σ_j |term_j|`
//! (both parts counted separately).

use half::f16;

use super::scalar::check_matmul_layout;
use super::{Q8ActsRef, QFormat, QLayout, QWeight, QK};

/// IQ4_NL's and IQ4_XS's sixteen values (ggml's `kvalues_iq4nl`).
pub const IQ4_NL_VALUES: [i8; 16] = [
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
];

/// Most elements in one block (a K-quant's super-block).
const MAX_BLOCK: usize = super::QK_K;
/// Most 16-element sub-blocks in one block.
const MAX_SUBS: usize = MAX_BLOCK / 16;

/// One block in integers: element `i` is `s[i/16] · q[i] (+ mn[i/16])` before the f16 factors.
#[derive(Clone, Copy)]
struct Block {
    q: [i8; MAX_BLOCK],
    s: [i32; MAX_SUBS],
    mn: [i32; MAX_SUBS],
}

impl Block {
    const fn new() -> Block {
        Block {
            q: [0; MAX_BLOCK],
            s: [1; MAX_SUBS],
            mn: [0; MAX_SUBS],
        }
    }

    /// Sets sub-blocks of 32 elements `j` (two entries of 16).
    fn set32(&mut self, j: usize, s: i32, mn: i32) {
        self.s[2 * j..2 * j + 2].fill(s);
        self.mn[2 * j..2 * j + 2].fill(mn);
    }
}

/// ggml's `get_scale_min_k4`: sub-block `j`'s 6-bit scale and minimum from q4_k's and q5_k's 12
/// scale bytes.
fn scale_min_k4(j: usize, sc: &[u8]) -> (i32, i32) {
    if j < 4 {
        (i32::from(sc[j] & 63), i32::from(sc[j + 4] & 63))
    } else {
        (
            i32::from((sc[j + 4] & 0xF) | ((sc[j - 4] >> 6) << 4)),
            i32::from((sc[j + 4] >> 4) | ((sc[j] >> 6) << 4)),
        )
    }
}

/// q3_k's sixteen 6-bit scales from its 12 scale bytes (low nibbles in bytes 0..8, two high bits
/// each in bytes 8..12), as stored (before `− 32`).
fn q3k_scales(sc: &[u8]) -> [i32; 16] {
    let mut out = [0; 16];
    for (i, o) in out.iter_mut().enumerate() {
        let low = (sc[i % 8] >> (4 * (i / 8))) & 0xF;
        let high = (sc[8 + i % 4] >> (2 * (i / 4))) & 3;
        *o = i32::from(low | (high << 4));
    }
    out
}

/// Block `b`'s planes of a rowsplit `w` (row-major blocks): `(qs, aux, d, m)`, `m` 0 without one.
fn block_planes<'a>(w: &QWeight<'a>, block: usize) -> (&'a [u8], &'a [u8], f32, f32) {
    let f = w.format;
    let (qb, ab) = (f.qs_bytes_per_block(), f.aux_bytes_per_block());
    let m = match f.has_min() {
        true => f32::from(w.m[block]),
        false => 0.0,
    };
    (
        &w.qs[block * qb..][..qb],
        &w.aux[block * ab..][..ab],
        f32::from(w.d[block]),
        m,
    )
}

/// Decodes one block of a GGUF format (not q8_0/q4_0/q4_1) into `out`.
fn decode(format: QFormat, qs: &[u8], aux: &[u8], out: &mut Block) {
    match format {
        QFormat::Q5_0 | QFormat::Q5_1 => {
            let qh = u32::from_le_bytes([aux[0], aux[1], aux[2], aux[3]]);
            let off = if format == QFormat::Q5_0 { 16 } else { 0 };
            for (j, &byte) in qs[..16].iter().enumerate() {
                let lo = (byte & 0xF) | ((((qh >> j) & 1) as u8) << 4);
                let hi = (byte >> 4) | ((((qh >> (j + 16)) & 1) as u8) << 4);
                out.q[j] = lo as i8 - off;
                out.q[j + 16] = hi as i8 - off;
            }
            out.s[..2].fill(1);
            out.mn[..2].fill(i32::from(format == QFormat::Q5_1));
        }
        QFormat::Iq4Nl => {
            for j in 0..16 {
                out.q[j] = IQ4_NL_VALUES[usize::from(qs[j] & 0xF)];
                out.q[j + 16] = IQ4_NL_VALUES[usize::from(qs[j] >> 4)];
            }
            out.set32(0, 1, 0);
        }
        QFormat::Q2K | QFormat::Q3K => {
            // Element 128·n + 32·j + l: bits 2j.. of quant byte 32·n + l; sub-block 8n + 2j + l/16.
            let (q, hmask) = match format {
                QFormat::Q3K => (&qs[32..96], &qs[..32]),
                _ => (&qs[..64], &[][..]),
            };
            let sc3 = if format == QFormat::Q3K {
                q3k_scales(aux)
            } else {
                [0; 16]
            };
            for n in 0..2 {
                for j in 0..4 {
                    for l in 0..32 {
                        let v = ((q[32 * n + l] >> (2 * j)) & 3) as i8;
                        out.q[128 * n + 32 * j + l] = match format {
                            QFormat::Q3K if hmask[l] & (1 << (4 * n + j)) == 0 => v - 4,
                            _ => v,
                        };
                    }
                }
            }
            for h in 0..16 {
                (out.s[h], out.mn[h]) = match format {
                    QFormat::Q3K => (sc3[h] - 32, 0),
                    _ => (i32::from(aux[h] & 0xF), i32::from(aux[h] >> 4)),
                };
            }
        }
        QFormat::Q4K | QFormat::Q5K => {
            // Element 64·c + l (l < 32): low nibble of byte 32·c + l, sub-block 2c; element
            // 64·c + 32 + l: its high nibble, sub-block 2c + 1. q5_k adds bit 2c (2c + 1) of
            // `qh[l]` as 16.
            let (q, qh) = match format {
                QFormat::Q5K => (&qs[32..160], &qs[..32]),
                _ => (&qs[..128], &[][..]),
            };
            for c in 0..4 {
                for l in 0..32 {
                    let (mut lo, mut hi) = (q[32 * c + l] & 0xF, q[32 * c + l] >> 4);
                    if format == QFormat::Q5K {
                        lo |= ((qh[l] >> (2 * c)) & 1) << 4;
                        hi |= ((qh[l] >> (2 * c + 1)) & 1) << 4;
                    }
                    out.q[64 * c + l] = lo as i8;
                    out.q[64 * c + 32 + l] = hi as i8;
                }
            }
            for j in 0..8 {
                let (s, mn) = scale_min_k4(j, aux);
                out.set32(j, s, mn);
            }
        }
        QFormat::Q6K => {
            // Per half n (128 elements: ql bytes 64n.., qh bytes 32n..), l < 32: elements l,
            // l + 32, l + 64, l + 96 take ql[l]'s and ql[l + 32]'s low, then high nibbles and
            // qh[l]'s bit pairs 0, 1, 2, 3; sub-block 8n + l/16 + 2·(which).
            let (ql, qh) = (&qs[..128], &qs[128..192]);
            for n in 0..2 {
                for l in 0..32 {
                    let (a, b, h) = (ql[64 * n + l], ql[64 * n + l + 32], qh[32 * n + l]);
                    let q = [
                        (a & 0xF) | ((h & 3) << 4),
                        (b & 0xF) | (((h >> 2) & 3) << 4),
                        (a >> 4) | (((h >> 4) & 3) << 4),
                        (b >> 4) | (((h >> 6) & 3) << 4),
                    ];
                    for (i, q) in q.into_iter().enumerate() {
                        out.q[128 * n + 32 * i + l] = q as i8 - 32;
                    }
                }
            }
            for (h, &sc) in aux[..16].iter().enumerate() {
                (out.s[h], out.mn[h]) = (i32::from(sc as i8), 0);
            }
        }
        QFormat::Iq4Xs => {
            let sh = u16::from_le_bytes([aux[0], aux[1]]);
            for j in 0..8 {
                let low = (aux[2 + j / 2] >> (4 * (j % 2))) & 0xF;
                let ls = i32::from(low) | (i32::from((sh >> (2 * j)) & 3) << 4);
                out.set32(j, ls - 32, 0);
                for l in 0..16 {
                    let byte = qs[16 * j + l];
                    out.q[32 * j + l] = IQ4_NL_VALUES[usize::from(byte & 0xF)];
                    out.q[32 * j + 16 + l] = IQ4_NL_VALUES[usize::from(byte >> 4)];
                }
            }
        }
        QFormat::Q8_0 | QFormat::Q4_0 | QFormat::Q4_1 => {
            unreachable!("kquant::decode: {format} is a basic format")
        }
    }
}

/// How a format's minimum term enters: `−dmin·mn`, `+m·mn`, or not at all.
fn min_sign(format: QFormat) -> f32 {
    match format {
        QFormat::Q2K | QFormat::Q4K | QFormat::Q5K => -1.0,
        QFormat::Q5_1 => 1.0,
        _ => 0.0,
    }
}

/// Row `r` of a GGUF-format `w` as f32 values into `out` (ggml's values, bit for bit).
pub(super) fn dequantize_row(w: &QWeight<'_>, r: usize, out: &mut [f32]) {
    let (f, nb) = (w.format, w.blocks_per_row());
    let sign = min_sign(f);
    let mut blk = Block::new();
    for (b, o) in out.chunks_exact_mut(f.block_elems()).enumerate() {
        let (qs, aux, d, m) = block_planes(w, r * nb + b);
        decode(f, qs, aux, &mut blk);
        for (i, o) in o.iter_mut().enumerate() {
            let (s, mn, q) = (blk.s[i / 16], blk.mn[i / 16], f32::from(blk.q[i]));
            *o = match f {
                // ggml: x·d, with x = q − 16 (multiplication commutes exactly).
                QFormat::Q5_0 | QFormat::Iq4Nl => d * q,
                QFormat::Q5_1 => d * q + m,
                _ if sign < 0.0 => (d * s as f32) * q - m * mn as f32,
                _ => (d * s as f32) * q,
            };
        }
    }
}

/// `yt[r·n + t] = Σ_j w[r, j]·x[t, j]` for the GGUF formats (see the [module docs](self)): the
/// scalar reference, and the kernel of the variants without one of their own for the format (the
/// x86 and aarch64 variants have their own for every format).
pub fn matmul_q8(w: &QWeight<'_>, x: &Q8ActsRef<'_>, yt: &mut [f32]) {
    assert!(
        !w.format.is_basic(),
        "kquant::matmul_q8: a {} weight (its own kernels read it)",
        w.format
    );
    let (rows, n, _) = check_matmul_layout(w, w.format, QLayout::RowSplit, x, yt.len());
    let (f, nb, k) = (w.format, w.blocks_per_row(), w.k);
    let (sign, per) = (min_sign(f), f.block_elems() / QK);
    let mut blk = Block::new();
    for r in 0..rows {
        let y = &mut yt[r * n..(r + 1) * n];
        y.fill(0.0);
        for b in 0..nb {
            let (qs, aux, dw, m) = block_planes(w, r * nb + b);
            decode(f, qs, aux, &mut blk);
            for (t, y) in y.iter_mut().enumerate() {
                for j in 0..per {
                    let xb = (t * k + b * f.block_elems()) / QK + j;
                    let (xq, dx) = (&x.qs[xb * QK..][..QK], x.d[xb]);
                    let (mut a, mut bsum) = (0i32, 0i32);
                    for h in 0..2 {
                        let (sub, lo) = (2 * j + h, QK * j + 16 * h);
                        let (q, xq) = (&blk.q[lo..lo + 16], &xq[16 * h..16 * h + 16]);
                        let dot: i32 = q
                            .iter()
                            .zip(xq)
                            .map(|(&a, &b)| i32::from(a) * i32::from(b))
                            .sum();
                        a += blk.s[sub] * dot;
                        if sign != 0.0 {
                            bsum += blk.mn[sub] * xq.iter().map(|&v| i32::from(v)).sum::<i32>();
                        }
                    }
                    let mut term = (dw * dx) * a as f32;
                    if sign < 0.0 {
                        term -= (m * dx) * bsum as f32;
                    } else if sign > 0.0 {
                        term += (m * dx) * bsum as f32;
                    }
                    *y += term;
                }
            }
        }
    }
}

/// ggml's block struct of block `b` of `w` (rowsplit, any format) joined from its planes by
/// [`QFormat::ggml_fields`]: what a GGUF stores.
pub fn ggml_block(w: &QWeight<'_>, b: usize, out: &mut Vec<u8>) {
    let f = w.format;
    let start = out.len();
    out.resize(start + f.bytes_per_block(), 0);
    let block = &mut out[start..];
    for (plane, off, len) in f.ggml_fields() {
        let (d, m) = (w.d[b].to_le_bytes(), w.m.get(b).map(|m| m.to_le_bytes()));
        let src: &[u8] = match plane {
            "qs" => &w.qs[b * len..][..len],
            "aux" => &w.aux[b * len..][..len],
            "d" => &d,
            "m" => m.as_ref().expect("a format with `m` has its plane"),
            _ => continue,
        };
        block[off..off + len].copy_from_slice(src);
    }
}

/// Splits ggml block structs of `format` (`blocks` concatenated) into the planes `qs`, `aux`, `d`
/// and `m` (appended): the inverse of [`ggml_block`], lossless.
pub fn split_ggml_blocks(
    format: QFormat,
    blocks: &[u8],
    qs: &mut Vec<u8>,
    aux: &mut Vec<u8>,
    d: &mut Vec<f16>,
    m: &mut Vec<f16>,
) {
    for block in blocks.chunks_exact(format.bytes_per_block()) {
        for (plane, off, len) in format.ggml_fields() {
            let field = &block[off..off + len];
            let half = || f16::from_le_bytes([field[0], field[1]]);
            match plane {
                "qs" => qs.extend_from_slice(field),
                "aux" => aux.extend_from_slice(field),
                "d" => d.push(half()),
                "m" => m.push(half()),
                _ => {}
            }
        }
    }
}
