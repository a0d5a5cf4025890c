//! STUB (being written by another engineer): signatures only, so the crate compiles meanwhile.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Message { pub role: String, pub content: String }
pub struct ChatTemplate;
#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    #[error("{reason}")]
    Template { reason: String },
    #[error("{reason}")]
    Render { reason: String },
}
impl ChatTemplate {
    pub fn new(_source: &str, _bos: Option<&str>, _eos: Option<&str>) -> Result<Self, ChatError> { unimplemented!() }
    pub fn render(&self, _messages: &[Message], _add_generation_prompt: bool) -> Result<String, ChatError> { unimplemented!() }
}
