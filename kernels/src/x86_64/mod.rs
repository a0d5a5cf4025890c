//! x86_64 variants. Each module's `table()` is only called after detection confirmed its features.
//!
//! The quantized products of both variants share their drivers: [`qtile`] (tiles of rows × tokens,
//! eight-block groups) and [`qstream`] (one token as one stream of blocks); each variant supplies its
//! loads and block dots ([`quant_avx2`], [`quant_avx512`]). The GGUF formats (q5_0 … iq4_xs) have a
//! driver of their own, [`gguf`] (one 256-element group decoded once per row and token chunk), with
//! each variant's group decodes and dots ([`gguf_avx2`], [`gguf_avx512`]).

use core::arch::x86_64::*;

pub(super) mod avx2;
pub(super) mod avx512;
mod gguf;
mod gguf_avx2;
mod gguf_avx512;
mod qstream;
mod qtile;
mod quant_avx2;
mod quant_avx512;

/// The sum of the eight lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}
