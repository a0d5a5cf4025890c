//! edgeinfer: a lean inference engine for tiny LLMs on ARM and x86 CPUs.
#![deny(unsafe_code)]

pub mod chat;
pub mod sampler;
pub mod tokenizer;

pub mod error;
#[cfg(feature = "import")]
pub mod import;
pub mod loader;
pub mod model;
pub mod session;

pub use chat::Message;
pub use error::{Error, Result};
pub use model::{Model, ModelOptions};
pub use sampler::SamplerConfig;
pub use session::{
    FinishReason, GenerateOptions, Generation, Prompt, Session, SessionOptions, Timings,
};
