//! edgeinfer's offline conversion: what turns a downloaded model into a checkpoint directory that
//! `edgeinfer::Model::load` maps. The `infer import` and `infer quantize` commands run it; a
//! program that only loads and runs models (a FaaS handler) does not link it.
//!
//! - [`import`]: a llama.cpp GGUF file into a Hugging Face checkpoint directory (feature `import`,
//!   on by default: it reads GGUF through candle-core).
//! - [`quantize`]: an F32/F16/BF16 checkpoint into q8_0, q4_0, q4_1 or a GGUF block format (q5_0,
//!   q5_1, iq4_nl, iq4_xs, q2_k-q6_k, the q4_k_m/q5_k_m mixtures), rounding each block plainly, by
//!   a least-squares scale search ([`quantize::search`]), GPTQ-style against calibration
//!   activations ([`quantize::gptq`]) or, for the GGUF formats, weighted by an importance matrix.
//! - [`store`]: the safetensors writer both use, and the publishing of a directory as a whole.
#![deny(unsafe_code)]

#[cfg(feature = "import")]
pub mod import;
pub mod quantize;
pub mod store;
