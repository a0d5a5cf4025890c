//! What a generation's text must match: JSON, a JSON Schema, a regular expression or a grammar.
//!
//! [`GenerateOptions::constraint`](crate::GenerateOptions::constraint) takes one; every sampled
//! token then keeps the text inside it (tokens that would leave it are masked out of the logits
//! before sampling), so a generation that ends at `stop` (end of sequence) always matches, and one
//! cut by `max_tokens` ends with `finish_reason` `length`.
//!
//! The masks come from [llguidance](https://github.com/guidance-ai/llguidance) (what llama.cpp and
//! vLLM use): an Earley parser over a lazily built lexer DFA, walking the tokenizer's token trie
//! once per step. `docs/constrained.md` says why this crate and what a mask costs.
//!
//! Each model keeps its token trie (built on the first constrained request, ~0.1 s for a 49k
//! vocabulary) and the last [`CACHE_ENTRIES`] compiled constraints, so a warm process compiles a
//! schema once; generations with the same constraint share its lexer, which keeps growing warmer.

use std::sync::{Arc, Mutex};

use llguidance::api::{ParserLimits, TopLevelGrammar};
use llguidance::toktrie::{ApproximateTokEnv, TokEnv, TokRxInfo, TokTrie};
use llguidance::{Matcher, ParserFactory};

use crate::error::{Error, Result};
use crate::tokenizer::Tokenizer;

mod gbnf;

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

    /// The cache key: the kind and the constraint's text (a schema serialized compactly, so the
    /// same schema sent with other whitespace hits the same entry).
    fn key(&self) -> String {
        let body = match self {
            Constraint::JsonObject => String::new(),
            Constraint::JsonSchema(v) => v.to_string(),
            Constraint::Regex(s) | Constraint::Lark(s) | Constraint::Gbnf(s) => s.clone(),
        };
        format!("{}\n{body}", self.kind())
    }

    fn grammar(&self) -> Result<TopLevelGrammar> {
        Ok(match self {
            // Any JSON object: llguidance's own reading of OpenAI's json_object.
            Constraint::JsonObject => {
                TopLevelGrammar::from_json_schema(bounded_whitespace(serde_json::json!({
                    "type": "object"
                })))
            }
            Constraint::JsonSchema(schema) => {
                TopLevelGrammar::from_json_schema(bounded_whitespace(schema.clone()))
            }
            Constraint::Regex(rx) => TopLevelGrammar::from_regex(rx),
            Constraint::Lark(lark) => TopLevelGrammar::from_lark(lark.clone()),
            Constraint::Gbnf(g) => {
                TopLevelGrammar::from_lark(gbnf::to_lark(g).map_err(|e| Error::Options {
                    field: "constraint",
                    reason: format!("gbnf grammar: {e}"),
                })?)
            }
        })
    }
}

/// Whitespace allowed between JSON tokens: one space, or a newline and up to 20 spaces or tabs of
/// indentation (llama.cpp's JSON grammars allow the same). llguidance's default is any run of
/// whitespace, which lets a small model pad with newlines until `max_tokens` runs out.
const JSON_WHITESPACE: &str = r"(?:\x20|\x0A[\x20\x09]{0,20})";

/// `schema` with [`JSON_WHITESPACE`], unless it sets llguidance's JSON options itself (an
/// `x-guidance` object: `whitespace_pattern`, `whitespace_flexible`, separators).
fn bounded_whitespace(mut schema: serde_json::Value) -> serde_json::Value {
    if let Some(obj) = schema.as_object_mut() {
        obj.entry("x-guidance")
            .or_insert_with(|| serde_json::json!({ "whitespace_pattern": JSON_WHITESPACE }));
    }
    schema
}

/// Compiled constraints a model keeps, most recently used last.
pub const CACHE_ENTRIES: usize = 16;

/// A tokenizer's constraint compiler: its tokens as a trie, and the last [`CACHE_ENTRIES`]
/// compiled constraints. A [`Model`](crate::Model) builds one on its first constrained generation;
/// build one yourself to drive a decoding loop of your own (or to time masks for a tokenizer
/// without a model, as `infer bench --mask-tokenizer` does).
pub struct Grammars {
    factory: ParserFactory,
    /// (key, matcher at the start of the text); least recently used first.
    cache: Mutex<Vec<(String, Matcher)>>,
}

impl Grammars {
    /// The trie of `tok`'s tokens for a model with `vocab_size` logits, ending at `eos_ids`.
    ///
    /// Added tokens (chat markers, EOS) get llguidance's special-token marker byte, so no text the
    /// constraint matches can be spelled with them; ids past the tokenizer's (padding rows of the
    /// embedding) are empty and never allowed.
    pub fn new(tok: &Tokenizer, vocab_size: usize, eos_ids: &[u32]) -> Result<Grammars> {
        let refuse = |reason: String| Error::Options {
            field: "constraint",
            reason,
        };
        let vocab = u32::try_from(vocab_size)
            .map_err(|_| refuse(format!("a vocabulary of {vocab_size} tokens is too large")))?;
        let eos: Vec<u32> = eos_ids.iter().copied().filter(|&e| e < vocab).collect();
        let Some(&first_eos) = eos.first() else {
            return Err(refuse(
                "the model has no end-of-sequence token, so a constrained text could never end"
                    .into(),
            ));
        };
        let mut words: Vec<Vec<u8>> = (0..vocab)
            .map(|id| tok.token_bytes(id).map(<[u8]>::to_vec).unwrap_or_default())
            .collect();
        for id in tok.added_token_ids() {
            if let Some(w) = words.get_mut(id as usize) {
                if !w.is_empty() {
                    w.insert(0, TokTrie::SPECIAL_TOKEN_MARKER);
                }
            }
        }
        // toktrie asserts its invariants; our checks above should meet them, but a tokenizer is
        // input we do not control, so a failed assert is an error, not a dead thread.
        let trie = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            TokTrie::from(&TokRxInfo::new(vocab, first_eos), &words).with_eos_tokens(&eos)
        }))
        .map_err(|_| refuse("the tokenizer's tokens do not make a valid token trie".into()))?;
        // Greedy (non-canonical) tokenization: llguidance then never forces tokens on its own,
        // it only masks; our loop samples every token.
        let env: TokEnv = Arc::new(ApproximateTokEnv::new(trie));
        let mut factory = ParserFactory::new_simple(&env).map_err(|e| refuse(e.to_string()))?;
        factory.quiet();
        // Errors name the problem, not the parser's internal state and token history.
        *factory.limits_mut() = ParserLimits {
            verbose_errors: false,
            ..ParserLimits::default()
        };
        Ok(Grammars {
            factory,
            cache: Mutex::new(Vec::with_capacity(CACHE_ENTRIES)),
        })
    }

    /// A matcher for `c` at the start of the text: from the cache, else compiled (and cached).
    /// A constraint that does not compile is [`Error::Options`] naming `constraint`.
    pub fn matcher(&self, c: &Constraint) -> Result<Guide> {
        let key = c.key();
        if let Some(m) = self.cached(&key) {
            return Ok(Guide { matcher: m });
        }
        let parser = self
            .factory
            .create_parser(c.grammar()?)
            .map_err(|e| Error::Options {
                field: "constraint",
                reason: format!("{} does not compile: {e}", c.kind()),
            })?;
        let matcher = Matcher::new(Ok(parser));
        if let Some(e) = matcher.get_error() {
            return Err(Error::Options {
                field: "constraint",
                reason: format!("{} does not compile: {e}", c.kind()),
            });
        }
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= CACHE_ENTRIES {
            cache.remove(0);
        }
        // A shallow clone shares the lexer, so what one generation builds of it the next reuses.
        cache.push((key, matcher.clone()));
        Ok(Guide { matcher })
    }

    fn cached(&self, key: &str) -> Option<Matcher> {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        let i = cache.iter().position(|(k, _)| k == key)?;
        let entry = cache.remove(i);
        let m = entry.1.clone();
        cache.push(entry);
        Some(m)
    }
}

/// One generation's position in its constraint: per step, [`Guide::mask`] the logits, sample,
/// then [`Guide::commit`] the token; stop when [`Guide::is_done`] or at an end-of-sequence token.
pub struct Guide {
    matcher: Matcher,
}

impl Guide {
    /// Sets the logits of every token the constraint does not allow next to -inf. Allocates the
    /// mask inside llguidance (one bit per token, 6 KiB for 49k tokens), the one allocation a
    /// constrained step makes that a free one does not.
    pub fn mask(&mut self, logits: &mut [f32]) -> Result<()> {
        let allowed = self.matcher.compute_mask().map_err(|e| self.failed(e))?;
        apply_mask(allowed.as_slice(), logits);
        Ok(())
    }

    /// Moves past `token`, which the last mask allowed.
    pub fn commit(&mut self, token: u32) -> Result<()> {
        self.matcher
            .consume_token(token)
            .map_err(|e| self.failed(e))
    }

    /// The text is complete and nothing can follow it: the only token left is end of sequence.
    pub fn is_done(&self) -> bool {
        self.matcher.is_stopped()
    }

    fn failed(&self, e: impl std::fmt::Display) -> Error {
        Error::Options {
            field: "constraint",
            reason: format!("the constraint's matcher failed mid-generation: {e}"),
        }
    }
}

/// `logits[i] = -inf` where bit `i` of `allowed` (32 ids per word, lowest bit first) is clear.
/// Ids past the mask are not allowed.
fn apply_mask(allowed: &[u32], logits: &mut [f32]) {
    let mut chunks = logits.chunks_mut(32);
    for (&word, chunk) in allowed.iter().zip(&mut chunks) {
        if word == u32::MAX {
            continue;
        }
        for (j, l) in chunk.iter_mut().enumerate() {
            if word & (1 << j) == 0 {
                *l = f32::NEG_INFINITY;
            }
        }
    }
    for chunk in chunks {
        chunk.fill(f32::NEG_INFINITY);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_keeps_exactly_the_allowed_ids() {
        let mut logits = vec![1.0f32; 70];
        // ids 0, 33 and 63 allowed; the mask covers 64 ids, so 64..70 are not.
        apply_mask(&[1, (1 << 1) | (1 << 31)], &mut logits);
        for (i, &l) in logits.iter().enumerate() {
            assert_eq!(l == 1.0, [0, 33, 63].contains(&i), "id {i}");
        }
        let mut all = vec![0.5f32; 40];
        apply_mask(&[u32::MAX, 0xFF], &mut all);
        assert!(all.iter().all(|&l| l == 0.5));
    }

    #[test]
    fn keys_ignore_schema_whitespace() {
        let a = Constraint::JsonSchema(serde_json::from_str(r#"{"type": "object"}"#).unwrap());
        let b = Constraint::JsonSchema(serde_json::from_str(r#"{ "type":"object" }"#).unwrap());
        assert_eq!(a.key(), b.key());
        assert_ne!(a.key(), Constraint::JsonObject.key());
    }
}
