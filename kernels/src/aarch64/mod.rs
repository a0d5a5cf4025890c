//! aarch64 variants. Each module exposes `table()`, only called after detection confirmed its features.

pub mod dotprod;
pub mod i8mm;
pub mod neon;
