//! edgeinfer's compute kernels.
//!
//! Every operation has a scalar reference in [`scalar`] — the specification the SIMD variants must
//! match — and the per-ISA modules implement the same names with the same signatures. A [`Kernels`]
//! table of plain function pointers is chosen once (CPU detection or an explicit name) and kept by the
//! model; nothing checks CPU features per call.
//!
//! Threading belongs to the caller: a kernel computes the rows it is given. [`par`] has the row-splitting
//! helpers the models use.
//!
//! This crate knows nothing about files or models.

pub mod detect;
pub mod dispatch;
pub mod par;
pub mod quant;
pub mod scalar;
pub mod testing;
pub mod weight;

#[cfg(target_arch = "x86_64")]
pub mod x86_64;

#[cfg(target_arch = "aarch64")]
pub mod aarch64;

pub use dispatch::{KernelError, Kernels, Variant};
pub use quant::{QFormat, QWeight};
pub use weight::{DType, WeightRef};
