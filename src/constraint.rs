//! What a generation's text must match: JSON, a JSON Schema, a regular expression or a grammar.
//!
//! [`GenerateOptions::constraint`](crate::GenerateOptions::constraint) takes one; every sampled
//! token then keeps the text inside it (tokens that would leave it are masked out of the logits
//! before sampling), so a generation that ends at `stop` (end of sequence) always matches, and one
//! cut by `max_tokens` ends with `finish_reason` `length`.

/// A constraint on the generated text.
#[derive(Clone, Debug, PartialEq)]
pub enum Constraint {
    /// Any JSON object (OpenAI's `response_format: {"type": "json_object"}`).
    JsonObject,
    /// A JSON value that validates against this JSON Schema (OpenAI's `json_schema`).
    JsonSchema(serde_json::Value),
    /// Text that matches this regular expression as a whole.
    Regex(String),
    /// Text in the language of this grammar, in Lark syntax (llguidance's dialect).
    Lark(String),
    /// Text in the language of this grammar, in llama.cpp's GBNF.
    Gbnf(String),
}

impl Constraint {
    /// The constraint's kind, as options and errors name it.
    pub fn kind(&self) -> &'static str {
        match self {
            Constraint::JsonObject => "json_object",
            Constraint::JsonSchema(_) => "json_schema",
            Constraint::Regex(_) => "regex",
            Constraint::Lark(_) => "lark",
            Constraint::Gbnf(_) => "gbnf",
        }
    }
}
