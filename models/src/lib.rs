//! edgeinfer's model architectures.
//!
//! - [`config`]: the model's `config.json`, parsed once into a typed, validated struct.
//! - [`tensor`]: typed views of weights that live in someone else's memory (the mapped file).
//! - [`state`]: the activation arena, allocated once per session.
//! - [`matrix`]: weight matrices, dense or block-quantized, and how quantized ones are stored.
//! - [`llama`]: the Llama-family forward pass.
//!
//! This crate never opens files: the caller hands it a [`tensor::TensorSource`].
#![deny(unsafe_code)]

pub mod attention;
mod batch;
pub mod config;
pub mod error;
pub mod llama;
pub mod matrix;
pub mod names;
pub mod state;
pub mod tensor;

pub use config::{Arch, Config};
pub use error::ModelError;
pub use llama::{Llama, Logits, Tap, TapSite, WeightInfo};
pub use matrix::{Matrix, QTensor};
pub use state::State;
pub use tensor::{Storage, Tensor, TensorSource};
