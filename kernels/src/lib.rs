//! edgeinfer's compute kernels.
//!
//! Every operation has a scalar reference in [`scalar`] and [`quant::scalar`]: the specification the
//! SIMD variants must match. A [`Kernels`] table of plain function pointers is chosen once (CPU
//! detection or an explicit name, see [`Variant`]) and kept by the model; nothing checks CPU features
//! per call. The SIMD code is private to this crate: its only way out is a table, built only on a CPU
//! that has the variant's features, so every function reachable from outside is safe on any CPU.
//!
//! Threading belongs to the caller: a kernel computes the rows it is given. [`par`] has the row-splitting
//! helpers the models use.
//!
//! This crate knows nothing about files or models.
//!
//! # Layout
//!
//! - [`scalar`], [`quant::scalar`]: the reference kernels (the specification);
//! - `simd/`: every kernel's SIMD code written once, generic over an ISA's vectors and loads: the
//!   dense tiles, the element-wise kernels, the checked table entries and the table builder;
//! - `x86_64/`, `aarch64/`: per ISA, its vectors and loads (a few instructions each) and its
//!   quantized block dots, plus the quantized tile drivers each architecture's ISAs share
//!   (`x86_64/qtile.rs` and `qstream.rs`, `aarch64/quant_neon.rs`; the GGUF formats' on x86:
//!   `x86_64/gguf.rs`). Private: reachable only through a [`Kernels`] table.
//!
//! # Names
//!
//! A kernel is named `<op>_<weights>_<acts>`, the same in its scalar function, its [`Kernels`] field,
//! its benchmark (`<name>/<variant>/<rows>x<k>_n<tokens>`) and its tests:
//! - `op`: `matmul` (`yt[r·n + t] = Σ_j w[r, j]·x[t, j]`, any number of tokens: one token is decode),
//!   `matmul_tokens` (the same sums token-major, `y[t·rows + r]`), `dot`, `axpy`, `weighted_sum`,
//!   `rmsnorm`, `softmax`, `silu_mul`, `rope`, `quantize`;
//! - `weights`: the format of the first operand: `f32`, `f16`, `bf16` (dense), `q8_0`, `q4_0`, `q4_1`
//!   (block-quantized, see [`quant::format`]), followed by the layout when it is not `rowsplit`
//!   (`q4_0_rows8`, see [`quant::rows8`]); for an op on one vector, its element type;
//! - `acts`: the format of the activations, left out when they are f32; `q8` is the q8 activation block
//!   (an f32 scale, 32 `i8` quants and their `i32` sum, see [`quant::Q8ActsRef`]), which is not the q8_0
//!   weight format. `quantize_q8` makes it from f32 activations.
//!
//! So `matmul_f16` is f16 weights × f32 activations, `matmul_q4_0_q8` q4_0 weights × q8 activations and
//! `matmul_tokens_q4_0_q8` the same product token-major. The ISA is never in a name: it is the table's
//! [`Variant`] (`scalar`, `avx2`, `avx512_vnni`, `neon`, `neon_dotprod`, `neon_i8mm`). Helpers over a
//! table for a format chosen at run time drop the format to `q`: [`Kernels::matmul_q`],
//! [`par::matmul_q`], [`par::matmul_tokens_q`]; [`quant::quantize_acts`] fills a [`quant::Q8Acts`]
//! arena through `quantize_q8` (in one or two passes).

pub mod detect;
pub mod dispatch;
pub mod par;
pub mod quant;
pub mod scalar;
pub mod testing;
pub mod weight;

#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
mod simd;

#[cfg(target_arch = "x86_64")]
mod x86_64;

#[cfg(target_arch = "aarch64")]
mod aarch64;

pub use dispatch::{KernelError, Kernels, Variant};
pub use quant::{QFormat, QWeight};
pub use weight::{DType, WeightRef};
