//! STUB (being written by another engineer): signatures only, so the crate compiles meanwhile.
use std::path::{Path, PathBuf};
use crate::chat::ChatTemplate;
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("{path:?}: {reason}")]
    Load { path: PathBuf, reason: String },
    #[error("{reason}")]
    Encode { reason: String },
    #[error("{reason}")]
    Decode { reason: String },
}
pub struct Tokenizer;
impl Tokenizer {
    pub fn from_dir(_dir: &Path) -> Result<Tokenizer, TokenizerError> { unimplemented!() }
    pub fn encode(&self, _text: &str, _add_special_tokens: bool) -> Result<Vec<u32>, TokenizerError> { unimplemented!() }
    pub fn decode(&self, _ids: &[u32]) -> Result<String, TokenizerError> { unimplemented!() }
    pub fn vocab_size(&self) -> usize { unimplemented!() }
    pub fn token_id(&self, _token: &str) -> Option<u32> { unimplemented!() }
    pub fn bos_token(&self) -> Option<&str> { unimplemented!() }
    pub fn eos_token(&self) -> Option<&str> { unimplemented!() }
    pub fn add_bos_token(&self) -> bool { unimplemented!() }
    pub fn chat_template(&self) -> Option<&ChatTemplate> { unimplemented!() }
}
pub struct StreamDecoder;
impl StreamDecoder {
    pub fn new(_tok: &Tokenizer) -> Self { unimplemented!() }
    pub fn push(&mut self, _tok: &Tokenizer, _id: u32) -> Option<&str> { unimplemented!() }
    pub fn finish(&mut self) -> Option<&str> { unimplemented!() }
}
