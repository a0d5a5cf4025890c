//! Errors of model construction and execution. Each variant names the field or tensor at fault.

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("config.json: field `{field}`: {reason}")]
    Config { field: String, reason: String },
    #[error("config.json is not valid JSON: {reason}")]
    ConfigJson { reason: String },
    #[error("missing tensor `{name}`")]
    MissingTensor { name: String },
    #[error("tensor `{name}` has shape {got:?}, expected {expected:?}")]
    Shape {
        name: String,
        expected: Vec<usize>,
        got: Vec<usize>,
    },
    #[error(
        "tensor `{name}` has dtype {dtype}, which edgeinfer cannot use (supported: F32, F16, BF16)"
    )]
    DType { name: String, dtype: String },
    #[error("tensor `{name}`: {reason}")]
    TensorData { name: String, reason: String },
    #[error("token id {id} is outside the vocabulary (size {vocab})")]
    InvalidToken { id: u32, vocab: usize },
    #[error("{needed} positions needed but the context holds {ctx}; start a new session or raise the context size")]
    ContextOverflow { needed: usize, ctx: usize },
    #[error("batch of {got} tokens exceeds the session's batch size {max}")]
    BatchTooLarge { got: usize, max: usize },
    #[error("session option `{field}`: {reason}")]
    Options { field: &'static str, reason: String },
}
