//! Block-quantized weight formats, their `rowsplit` layout (layout version 1) and the q4_0 `rows8`
//! layout of version 2 ([`super::rows8`]).
//!
//! # Formats
//!
//! A row of `k` weights (`k` a positive multiple of [`QK`] = 32) is cut into `k / 32` blocks of 32
//! consecutive elements. Each block has an f16 scale `d` (and, for q4_1, an f16 minimum `m`):
//!
//! | format | element value            | quant                | bits per weight |
//! |--------|--------------------------|----------------------|-----------------|
//! | q8_0   | `d · q`                  | `q: i8` (−128..=127) | 8.5             |
//! | q4_0   | `d · (nib − 8)`          | `nib: u4` (0..=15)   | 4.5             |
//! | q4_1   | `d · nib + m`            | `nib: u4` (0..=15)   | 5               |
//!
//! The value math and the nibble order are GGUF's (ggml's `Q8_0`, `Q4_0`, `Q4_1`), so GGUF tensors
//! import bit-exactly: only the blocks' fields are moved into separate planes.
//!
//! **Nibble order.** In block `b` of a row, quant byte `j` (`0..16`) holds element `32·b + j` in its
//! low nibble and element `32·b + j + 16` in its high nibble:
//!
//! ```text
//! byte:         0      1    …    15
//! low nibble:   e0     e1   …    e15
//! high nibble:  e16    e17  …    e31
//! ```
//!
//! # The `rowsplit` layout
//!
//! A tensor `[rows, k]` is stored as up to three separate, contiguous planes:
//!
//! | plane | contents                                   | length                              |
//! |-------|--------------------------------------------|-------------------------------------|
//! | `qs`  | quants, row-major, row `r`'s bytes together | q8_0: `rows·k` bytes; q4: `rows·k/2` |
//! | `d`   | block scales, f16, row-major `[rows, k/32]` | `rows·k/32` f16                     |
//! | `m`   | block minimums, f16 (q4_1 only)            | `rows·k/32` f16 (empty otherwise)   |
//!
//! Row `r`, block `b`: quants at `qs[(r·k + 32·b)·B/32 ..][..B]` with `B` = [`QFormat::qs_bytes_per_block`]
//! (32 or 16), scale at `d[r·k/32 + b]`, minimum at `m[r·k/32 + b]`.
//!
//! Why this layout rather than ggml's array of 34/18/20-byte block structs, or a repacked one:
//! - Every row's quants are contiguous, and every block's quants start at a multiple of 16 (q4) or 32
//!   (q8_0) bytes from the plane start, so SIMD code loads them with full 16/32-byte loads and never
//!   straddles a 2-byte scale. Keeping the scales apart keeps the quants aligned. The writer
//!   (`edgeinfer_convert::store`) also starts every plane on a 64-byte boundary, so a 64-byte load
//!   never spans two lines.
//! - Decode (one token, a matrix–vector product) is bound by memory bandwidth; it reads each plane
//!   front to back, which the hardware prefetchers handle best.
//! - The i8mm (`smmla`) and VNNI matmul kernels that want two rows interleaved combine two rows'
//!   8-byte chunks with one zip per load, which costs less than keeping a second, interleaved layout.
//! - The same bytes serve all six kernel variants (scalar, avx2, avx512_vnni, neon, neon_dotprod,
//!   neon_i8mm): no repacking at load time, so a mapped file is used as is.
//!
//! Total bytes equal ggml's block structs' (asserted below), so converting costs no space.

use half::f16;

/// Elements per block.
pub const QK: usize = 32;

/// Name of the weight layout, as written into converted files' metadata.
pub const LAYOUT_NAME: &str = "rowsplit";

/// Version of [`LAYOUT_NAME`] written by this build: 1 when every matrix is [`QLayout::RowSplit`], 2
/// when some are [`QLayout::Rows8`] (named per matrix in the file's metadata). Files of both versions
/// are read; a build that knows only version 1 refuses version 2 files instead of misreading them.
pub const LAYOUT_VERSION: u32 = 2;

/// How a matrix's blocks sit in its planes (see the [module docs](self) and [`super::rows8`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum QLayout {
    /// Every row's quants and scales together, row after row (layout version 1).
    #[default]
    RowSplit,
    /// q4_0, q4_1 and q8_0: rows in groups of eight, each block of the eight rows together in
    /// 4-column chunks (4-bit formats: each byte holding one element of each of two rows), so that one `sdot` by
    /// element takes four columns of four rows at once (layout version 2, see [`super::rows8`]).
    Rows8,
}

impl QLayout {
    /// All layouts.
    pub const ALL: [QLayout; 2] = [QLayout::RowSplit, QLayout::Rows8];

    /// Lower-case name (`"rowsplit"`, `"rows8"`), as in file metadata and flags.
    pub const fn name(self) -> &'static str {
        match self {
            QLayout::RowSplit => "rowsplit",
            QLayout::Rows8 => "rows8",
        }
    }

    /// The layout called `name` (case-insensitive, surrounding blanks ignored).
    pub fn from_name(name: &str) -> Option<QLayout> {
        let name = name.trim();
        QLayout::ALL
            .into_iter()
            .find(|l| l.name().eq_ignore_ascii_case(name))
    }

    /// Whether a `format` matrix may be stored in this layout.
    pub const fn holds(self, format: QFormat) -> bool {
        match self {
            QLayout::RowSplit => true,
            QLayout::Rows8 => matches!(format, QFormat::Q4_0 | QFormat::Q8_0 | QFormat::Q4_1),
        }
    }

    /// Whether a `format` matrix of `rows` × `k` may be stored in this layout (`rows8`: q4_0, q4_1 or
    /// q8_0 with `rows` a multiple of 8 and `k` at most [`super::rows8::max_k`]).
    pub const fn fits(self, format: QFormat, rows: usize, k: usize) -> bool {
        match self {
            QLayout::RowSplit => true,
            QLayout::Rows8 => {
                self.holds(format)
                    && rows.is_multiple_of(super::rows8::GROUP)
                    && k <= super::rows8::max_k(format)
            }
        }
    }

    /// The lowest layout version of a file that can hold a matrix in this layout.
    pub const fn version(self) -> u32 {
        match self {
            QLayout::RowSplit => 1,
            QLayout::Rows8 => 2,
        }
    }
}

impl std::fmt::Display for QLayout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A block-quantized weight format (see the [module docs](self) and, for the GGUF formats beyond
/// the first three, [`super::kquant`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QFormat {
    Q8_0,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Iq4Nl,
    Q2K,
    Q3K,
    Q4K,
    Q5K,
    Q6K,
    Iq4Xs,
}

/// Elements per super-block of the K-quants and IQ4_XS.
pub const QK_K: usize = 256;

impl QFormat {
    /// All formats.
    pub const ALL: [QFormat; 12] = [
        QFormat::Q8_0,
        QFormat::Q4_0,
        QFormat::Q4_1,
        QFormat::Q5_0,
        QFormat::Q5_1,
        QFormat::Iq4Nl,
        QFormat::Q2K,
        QFormat::Q3K,
        QFormat::Q4K,
        QFormat::Q5K,
        QFormat::Q6K,
        QFormat::Iq4Xs,
    ];

    /// The formats `infer quantize` writes, that every variant has its own kernels for and that
    /// the `rows8` layout holds.
    pub const BASIC: [QFormat; 3] = [QFormat::Q8_0, QFormat::Q4_0, QFormat::Q4_1];

    /// The GGUF formats kept as stored on import ([`super::kquant`]): the formats that are not
    /// [`QFormat::BASIC`].
    pub const GGUF: [QFormat; 9] = [
        QFormat::Q5_0,
        QFormat::Q5_1,
        QFormat::Iq4Nl,
        QFormat::Q2K,
        QFormat::Q3K,
        QFormat::Q4K,
        QFormat::Q5K,
        QFormat::Q6K,
        QFormat::Iq4Xs,
    ];

    /// Lower-case name (`"q8_0"`, `"q4_k"`, `"iq4_nl"`, …), as in file metadata and flags: ggml's
    /// type name in lower case.
    pub const fn name(self) -> &'static str {
        match self {
            QFormat::Q8_0 => "q8_0",
            QFormat::Q4_0 => "q4_0",
            QFormat::Q4_1 => "q4_1",
            QFormat::Q5_0 => "q5_0",
            QFormat::Q5_1 => "q5_1",
            QFormat::Iq4Nl => "iq4_nl",
            QFormat::Q2K => "q2_k",
            QFormat::Q3K => "q3_k",
            QFormat::Q4K => "q4_k",
            QFormat::Q5K => "q5_k",
            QFormat::Q6K => "q6_k",
            QFormat::Iq4Xs => "iq4_xs",
        }
    }

    /// The format called `name` (case-insensitive, surrounding blanks ignored).
    pub fn from_name(name: &str) -> Option<QFormat> {
        let name = name.trim();
        QFormat::ALL
            .into_iter()
            .find(|f| f.name().eq_ignore_ascii_case(name))
    }

    /// Whether this is one of [`QFormat::BASIC`].
    pub const fn is_basic(self) -> bool {
        matches!(self, QFormat::Q8_0 | QFormat::Q4_0 | QFormat::Q4_1)
    }

    /// Elements per block: [`QK`] (32), or [`QK_K`] (256) for the K-quants and IQ4_XS.
    pub const fn block_elems(self) -> usize {
        match self {
            QFormat::Q8_0
            | QFormat::Q4_0
            | QFormat::Q4_1
            | QFormat::Q5_0
            | QFormat::Q5_1
            | QFormat::Iq4Nl => QK,
            QFormat::Q2K
            | QFormat::Q3K
            | QFormat::Q4K
            | QFormat::Q5K
            | QFormat::Q6K
            | QFormat::Iq4Xs => QK_K,
        }
    }

    /// Bytes of the `qs` plane per block: 32 for q8_0, 16 for the 32-element 4- and 5-bit
    /// formats, and the quant fields of a K-quant's block (see [`super::kquant`]).
    pub const fn qs_bytes_per_block(self) -> usize {
        match self {
            QFormat::Q8_0 => QK,
            QFormat::Q4_0 | QFormat::Q4_1 | QFormat::Q5_0 | QFormat::Q5_1 | QFormat::Iq4Nl => {
                QK / 2
            }
            QFormat::Q2K => 64,
            QFormat::Q3K => 96,
            QFormat::Q4K | QFormat::Iq4Xs => 128,
            QFormat::Q5K => 160,
            QFormat::Q6K => 192,
        }
    }

    /// Bytes of the `aux` plane per block (high bits or packed sub-block scales, see
    /// [`super::kquant`]); 0 for the basic formats and IQ4_NL.
    pub const fn aux_bytes_per_block(self) -> usize {
        match self {
            QFormat::Q8_0 | QFormat::Q4_0 | QFormat::Q4_1 | QFormat::Iq4Nl => 0,
            QFormat::Q5_0 | QFormat::Q5_1 => 4,
            QFormat::Q3K | QFormat::Q4K | QFormat::Q5K => 12,
            QFormat::Q2K | QFormat::Q6K => 16,
            QFormat::Iq4Xs => 6,
        }
    }

    /// Whether the format has the `m` plane: q4_1's and q5_1's block minimum, or the K-quants'
    /// `dmin` (q2_k, q4_k, q5_k).
    pub const fn has_min(self) -> bool {
        matches!(
            self,
            QFormat::Q4_1 | QFormat::Q5_1 | QFormat::Q2K | QFormat::Q4K | QFormat::Q5K
        )
    }

    /// Bytes per block over all planes (the same as ggml's block struct).
    pub const fn bytes_per_block(self) -> usize {
        self.qs_bytes_per_block()
            + self.aux_bytes_per_block()
            + SCALE_BYTES * (1 + self.has_min() as usize)
    }

    /// Bits per weight over all planes.
    pub fn bits_per_weight(self) -> f64 {
        (8 * self.bytes_per_block()) as f64 / self.block_elems() as f64
    }

    /// Where each plane's bytes lie in ggml's block struct of this format: `(plane, offset,
    /// bytes)` for `"d"`, `"m"` (when [`QFormat::has_min`]), `"aux"` (when any) and `"qs"`, whose
    /// fields are taken in the struct's order (q3_k's `qs` plane is its `hmask` then `qs`, q5_k's
    /// `qh` then `qs`, q6_k's `ql` then `qh`; q2_k's and q6_k's `aux` is `scales`, iq4_xs's
    /// `scales_h` (little-endian) then `scales_l`). Splitting a GGUF block by these and joining it
    /// back is lossless.
    pub const fn ggml_fields(self) -> [(&'static str, usize, usize); 4] {
        const NONE: (&str, usize, usize) = ("", 0, 0);
        match self {
            QFormat::Q8_0 => [("d", 0, 2), ("qs", 2, 32), NONE, NONE],
            QFormat::Q4_0 | QFormat::Iq4Nl => [("d", 0, 2), ("qs", 2, 16), NONE, NONE],
            QFormat::Q4_1 => [("d", 0, 2), ("m", 2, 2), ("qs", 4, 16), NONE],
            QFormat::Q5_0 => [("d", 0, 2), ("aux", 2, 4), ("qs", 6, 16), NONE],
            QFormat::Q5_1 => [("d", 0, 2), ("m", 2, 2), ("aux", 4, 4), ("qs", 8, 16)],
            QFormat::Q2K => [("aux", 0, 16), ("qs", 16, 64), ("d", 80, 2), ("m", 82, 2)],
            QFormat::Q3K => [("qs", 0, 96), ("aux", 96, 12), ("d", 108, 2), NONE],
            QFormat::Q4K => [("d", 0, 2), ("m", 2, 2), ("aux", 4, 12), ("qs", 16, 128)],
            QFormat::Q5K => [("d", 0, 2), ("m", 2, 2), ("aux", 4, 12), ("qs", 16, 160)],
            QFormat::Q6K => [("qs", 0, 192), ("aux", 192, 16), ("d", 208, 2), NONE],
            QFormat::Iq4Xs => [("d", 0, 2), ("aux", 2, 6), ("qs", 8, 128), NONE],
        }
    }
}

impl std::fmt::Display for QFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

const SCALE_BYTES: usize = std::mem::size_of::<f16>();

// The layout's arithmetic relies on these; a change here is a new layout version.
const _: () = assert!(QK == 32 && QK.is_multiple_of(16));
const _: () = assert!(SCALE_BYTES == 2 && std::mem::align_of::<f16>() == 2);
// Same bytes as ggml's block structs.
const _: () = {
    let ggml = [34, 18, 20, 22, 24, 18, 84, 110, 144, 176, 210, 136];
    let mut i = 0;
    while i < QFormat::ALL.len() {
        let f = QFormat::ALL[i];
        assert!(f.bytes_per_block() == ggml[i]);
        // The fields cover the struct exactly once.
        let fields = f.ggml_fields();
        let mut total = 0;
        let mut j = 0;
        while j < fields.len() {
            total += fields[j].2;
            j += 1;
        }
        assert!(total == ggml[i]);
        // Every block's quants start on a 16-byte boundary relative to the plane.
        assert!(f.qs_bytes_per_block().is_multiple_of(16));
        assert!(f.block_elems().is_multiple_of(QK));
        i += 1;
    }
};
