//! x86_64 variants. Each module exposes `table()`, only called after detection confirmed its features.

pub mod avx2;
pub mod avx512;
pub mod quant_avx2;
pub mod quant_avx512;
