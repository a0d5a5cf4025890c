//! edgeinfer: a lean inference engine for tiny LLMs on ARM and x86 CPUs.
//!
//! Load a model directory once ([`Model::load`]); the weights are mapped from disk, never copied.
//! `Model` is `Send + Sync`: share it with `Arc` and open one [`Session`] (activation arena and KV
//! cache, allocated once) per conversation, on any thread.
//!
//! ```no_run
//! use edgeinfer::{GenerateOptions, Message, Model, Prompt, SamplerConfig, SessionOptions};
//!
//! # fn main() -> edgeinfer::Result<()> {
//! let model = Model::load("weights/SmolLM2-135M-Instruct")?;
//! let mut session = model.session(SessionOptions::default())?;
//! let messages = [Message::new("user", "What is the capital of France?")];
//! let opts = GenerateOptions { max_tokens: 64, sampler: SamplerConfig::greedy(), ..Default::default() };
//! let out = session.generate(&Prompt::Chat(&messages), &opts, |piece| {
//!     print!("{piece}"); // streamed as soon as it is complete UTF-8
//!     true // return false to cancel
//! })?;
//! println!("\n{} tokens at {:.1} tokens/s ({})", out.timings.generated_tokens,
//!     out.timings.decode_tokens_per_s(), out.finish_reason.as_str());
//! # Ok(())
//! # }
//! ```
//!
//! `examples/generate.rs` runs this with sessions on two threads.
#![deny(unsafe_code)]

pub mod chat;
pub mod constraint;
pub mod embed;
pub mod sampler;
pub mod tokenizer;

pub mod error;
pub mod loader;
pub mod logprobs;
pub mod model;
pub mod pool;
pub mod request;
pub mod session;

pub use chat::Message;
pub use constraint::{Constraint, Grammars, Guide};
pub use edgeinfer_kernels::quant::ActQuant;
pub use edgeinfer_models::state::KvDType;
pub use error::{Error, Result};
pub use model::{Model, ModelOptions};
pub use pool::{PoolStats, PooledSession, SessionPool};
pub use sampler::SamplerConfig;
pub use session::{
    FinishReason, GenerateOptions, Generation, MemoryUsage, Prompt, Session, SessionOptions,
    Timings,
};
