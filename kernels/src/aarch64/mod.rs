//! aarch64 variants. Each module exposes `table()`, only called after detection confirmed its features.

mod asm;
pub mod dotprod;
pub mod i8mm;
pub mod neon;
pub mod quant_dotprod;
pub mod quant_i8mm;
pub mod quant_neon;
#[cfg(test)]
mod quant_tests;
