//! The library's error type. Every variant says which file, tensor or field is at fault.

use std::path::PathBuf;

use edgeinfer_kernels::KernelError;
use edgeinfer_models::ModelError;

use crate::chat::ChatError;
use crate::sampler::SamplerError;
use crate::tokenizer::TokenizerError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("model directory {}: {reason}", path.display())]
    ModelDir { path: PathBuf, reason: String },
    #[error("{}: invalid safetensors file: {reason}", path.display())]
    Safetensors { path: PathBuf, reason: String },
    /// A mapped weight file was truncated or rewritten in place (see `loader`'s docs).
    #[error("{}: weight file changed under the model: {reason}; reload the model (replace model files by renaming a new file over the old, or load with EDGEINFER_WEIGHTS=copy)", path.display())]
    WeightsChanged { path: PathBuf, reason: String },
    #[error("{}: tensor `{name}`: {reason}", path.display())]
    TensorHeader {
        path: PathBuf,
        name: String,
        reason: String,
    },
    #[error("{}: {source}", path.display())]
    Config { path: PathBuf, source: ModelError },
    #[error("{}: {source}", path.display())]
    Model { path: PathBuf, source: ModelError },
    #[error(transparent)]
    Session(#[from] ModelError),
    #[error("prompt has {tokens} tokens but the context holds {ctx}; shorten it or raise the context size (-c)")]
    PromptTooLong { tokens: usize, ctx: usize },
    #[error("prompt is empty: there is nothing to continue")]
    EmptyPrompt,
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    #[error(transparent)]
    Chat(#[from] ChatError),
    #[error("the model has no chat template (tokenizer_config.json has no `chat_template`)")]
    NoChatTemplate,
    #[error(transparent)]
    Sampler(#[from] SamplerError),
    #[error(transparent)]
    Kernels(#[from] KernelError),
    #[error("option `{field}`: {reason}")]
    Options { field: &'static str, reason: String },
    #[error("could not start the thread pool: {reason}")]
    ThreadPool { reason: String },
    #[error("all {max_sessions} sessions are busy and the deadline passed while waiting for one")]
    PoolBusy { max_sessions: usize },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.into();
    move |source| Error::Io { path, source }
}
