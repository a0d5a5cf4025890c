//! edgeinfer: a lean inference engine for tiny LLMs on ARM and x86 CPUs.
#![deny(unsafe_code)]

pub mod chat;
pub mod sampler;
pub mod tokenizer;

#[cfg(feature = "import")]
pub mod import;
