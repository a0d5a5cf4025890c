//! aarch64 variants. Each module's `table()` is only called after detection confirmed its features.

mod asm;
pub(super) mod dotprod;
pub(super) mod i8mm;
pub(super) mod neon;
mod quant_dotprod;
mod quant_gguf;
mod quant_i8mm;
mod quant_neon;
mod quant_rows8;
#[cfg(test)]
mod quant_tests;
