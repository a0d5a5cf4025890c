//! `tokenizer.json` and `tokenizer_config.json` rebuilt from `tokenizer.ggml.*` metadata.
//!
//! Only byte-level BPE (`tokenizer.ggml.model = "gpt2"`) is supported. The GGUF holds the vocabulary
//! and merges already in byte-level form (`Ġ` for a space), so they are copied as they are; what the
//! GGUF only names (`tokenizer.ggml.pre`) is the pre-tokenizer, which is spelled out here per name.

use serde_json::{json, Map, Value};

use super::gguf::Gguf;
use super::ImportError;

/// llama.cpp token types (`llama_token_type`).
const TOKEN_TYPE_CONTROL: i64 = 3;
const TOKEN_TYPE_USER_DEFINED: i64 = 4;

/// Llama 3's split regex (llama.cpp pre-tokenizer `llama-bpe`).
const LLAMA3_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Qwen2's split regex (llama.cpp pre-tokenizer `qwen2`, also Qwen3's): Llama 3's with single digits.
const QWEN2_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The vocabulary and special tokens, read once and shared by both output files.
pub(crate) struct Vocab<'a> {
    pub tokens: Vec<&'a str>,
    /// Token type per id; empty when the GGUF has none (then nothing is an added token).
    pub types: Vec<i64>,
    pub merges: Vec<(&'a str, &'a str)>,
    pub pre: &'a str,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub unk: Option<u32>,
    pub pad: Option<u32>,
    pub add_bos: bool,
    pub add_eos: bool,
    pub chat_template: Option<&'a str>,
}

impl<'a> Vocab<'a> {
    pub fn read(g: &'a Gguf) -> Result<Vocab<'a>, ImportError> {
        let err = |key: &str, reason: String| ImportError::Metadata {
            path: g.path.clone(),
            key: key.to_string(),
            reason,
        };
        let model = g.str("tokenizer.ggml.model")?;
        if model != "gpt2" {
            return Err(err(
                "tokenizer.ggml.model",
                format!("`{model}` is not supported; only byte-level BPE (`gpt2`) is"),
            ));
        }
        let pre = g.str("tokenizer.ggml.pre")?;
        let tokens = g.str_array("tokenizer.ggml.tokens")?;
        let types = g
            .opt_int_array("tokenizer.ggml.token_type")?
            .unwrap_or_default();
        if !types.is_empty() && types.len() != tokens.len() {
            return Err(err(
                "tokenizer.ggml.token_type",
                format!("{} entries for {} tokens", types.len(), tokens.len()),
            ));
        }
        let merges = g
            .str_array("tokenizer.ggml.merges")?
            .into_iter()
            .enumerate()
            .map(|(i, m)| {
                // Byte-level tokens never hold a raw space, so the first space separates the pair.
                m.split_once(' ')
                    .filter(|(a, b)| !a.is_empty() && !b.is_empty())
                    .ok_or_else(|| {
                        err(
                            "tokenizer.ggml.merges",
                            format!("merge {i} `{m}` is not two tokens separated by a space"),
                        )
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let n = tokens.len();
        Ok(Vocab {
            tokens,
            types,
            merges,
            pre,
            bos: g.opt_token_id("tokenizer.ggml.bos_token_id", n)?,
            eos: g.opt_token_id("tokenizer.ggml.eos_token_id", n)?,
            unk: g.opt_token_id("tokenizer.ggml.unknown_token_id", n)?,
            pad: g.opt_token_id("tokenizer.ggml.padding_token_id", n)?,
            add_bos: g.opt_bool("tokenizer.ggml.add_bos_token")?.unwrap_or(false),
            add_eos: g.opt_bool("tokenizer.ggml.add_eos_token")?.unwrap_or(false),
            chat_template: g.opt_str("tokenizer.chat_template")?,
        })
    }

    fn token(&self, id: Option<u32>) -> Option<&'a str> {
        id.map(|i| self.tokens[i as usize])
    }

    /// Ids matched whole before BPE, with whether each is special (control) or user-defined.
    fn added(&self) -> impl Iterator<Item = (usize, bool)> + '_ {
        self.types
            .iter()
            .enumerate()
            .filter_map(|(id, &t)| match t {
                TOKEN_TYPE_CONTROL => Some((id, true)),
                TOKEN_TYPE_USER_DEFINED => Some((id, false)),
                _ => None,
            })
    }
}

/// The pre-tokenizer llama.cpp applies for a `tokenizer.ggml.pre` name, and whether BPE merges
/// are skipped for words already in the vocabulary (`ignore_merges`).
fn pre_tokenizer(pre: &str) -> Option<(Value, bool)> {
    let byte_level = |use_regex: bool| json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": use_regex});
    match pre {
        // GPT-2's regex, which ByteLevel applies itself.
        "gpt-2" => Some((byte_level(true), false)),
        // Every digit is its own word, then GPT-2's regex.
        "smollm" => Some((
            json!({"type": "Sequence", "pretokenizers": [
                {"type": "Digits", "individual_digits": true},
                byte_level(true),
            ]}),
            false,
        )),
        "llama-bpe" | "llama3" => Some((
            json!({"type": "Sequence", "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": LLAMA3_PATTERN}, "behavior": "Isolated", "invert": false},
                byte_level(false),
            ]}),
            true,
        )),
        "qwen2" => Some((
            json!({"type": "Sequence", "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": QWEN2_PATTERN}, "behavior": "Isolated", "invert": false},
                byte_level(false),
            ]}),
            false,
        )),
        _ => None,
    }
}

/// The normalizer the model's own tokenizer.json has: Qwen's NFC-normalise the text first.
fn normalizer(pre: &str) -> Value {
    match pre {
        "qwen2" => json!({"type": "NFC"}),
        _ => Value::Null,
    }
}

pub(crate) fn tokenizer_json(g: &Gguf, v: &Vocab) -> Result<Value, ImportError> {
    let err = |key: &str, reason: String| ImportError::Metadata {
        path: g.path.clone(),
        key: key.to_string(),
        reason,
    };
    let (pre_tokenizer, ignore_merges) = pre_tokenizer(v.pre).ok_or_else(|| {
        err(
            "tokenizer.ggml.pre",
            format!(
                "pre-tokenizer `{}` is not supported (known: gpt-2, smollm, llama-bpe)",
                v.pre
            ),
        )
    })?;

    let mut vocab = Map::with_capacity(v.tokens.len());
    for (id, &tok) in v.tokens.iter().enumerate() {
        if let Some(prev) = vocab.insert(tok.to_string(), json!(id)) {
            return Err(err(
                "tokenizer.ggml.tokens",
                format!("token `{tok}` appears twice (ids {prev} and {id})"),
            ));
        }
    }
    let merges: Vec<Value> = v.merges.iter().map(|(a, b)| json!([a, b])).collect();

    let added_tokens: Vec<Value> = v
        .added()
        .map(|(id, special)| {
            json!({
                "id": id, "content": v.tokens[id], "single_word": false, "lstrip": false, "rstrip": false,
                "normalized": false, "special": special,
            })
        })
        .collect();

    let post_processor = match (v.add_bos, v.token(v.bos)) {
        (true, Some(bos)) => json!({
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [
                {"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                {"SpecialToken": {"id": bos, "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}},
            ],
            "special_tokens": {bos: {"id": bos, "ids": [v.bos], "tokens": [bos]}},
        }),
        (true, None) => {
            return Err(err(
                "tokenizer.ggml.add_bos_token",
                "is true but there is no bos_token_id".into(),
            ))
        }
        (false, _) => Value::Null,
    };

    Ok(json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added_tokens,
        "normalizer": normalizer(v.pre),
        "pre_tokenizer": pre_tokenizer,
        "post_processor": post_processor,
        "decoder": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
        "model": {
            "type": "BPE",
            "dropout": null,
            "unk_token": null,
            "continuing_subword_prefix": null,
            "end_of_word_suffix": null,
            "fuse_unk": false,
            "byte_fallback": false,
            "ignore_merges": ignore_merges,
            "vocab": vocab,
            "merges": merges,
        },
    }))
}

pub(crate) fn tokenizer_config_json(v: &Vocab, context_length: usize) -> Value {
    let mut decoder = Map::new();
    for (id, special) in v.added() {
        decoder.insert(
            id.to_string(),
            json!({"content": v.tokens[id], "lstrip": false, "normalized": false, "rstrip": false, "single_word": false, "special": special}),
        );
    }
    json!({
        "tokenizer_class": "GPT2Tokenizer",
        "add_bos_token": v.add_bos,
        "add_eos_token": v.add_eos,
        "bos_token": v.token(v.bos),
        "eos_token": v.token(v.eos),
        "unk_token": v.token(v.unk),
        "pad_token": v.token(v.pad),
        "clean_up_tokenization_spaces": false,
        "model_max_length": context_length,
        "chat_template": v.chat_template,
        "added_tokens_decoder": decoder,
    })
}

/// Load the JSON with the `tokenizers` crate, which is what reads it at run time, and check that a
/// few strings round-trip, so that a broken tokenizer fails the import rather than the first chat.
pub(crate) fn check_loads(json: &str, v: &Vocab) -> Result<(), ImportError> {
    let fail = |reason: String| ImportError::TokenizerCheck { reason };
    let tok: tokenizers::Tokenizer = json
        .parse()
        .map_err(|e| fail(format!("tokenizers cannot load it: {e}")))?;
    let mut probes = vec![("Hello world! 12345 \n\t  ünïcödé 漢字 🙂".to_string(), None)];
    if let Some((id, _)) = v.added().next() {
        probes.push((format!("a{}b", v.tokens[id]), Some(id as u32)));
    }
    for (text, whole) in &probes {
        let enc = tok
            .encode(text.as_str(), false)
            .map_err(|e| fail(format!("encoding {text:?}: {e}")))?;
        if let Some(id) = whole {
            if !enc.get_ids().contains(id) {
                return Err(fail(format!(
                    "{text:?} does not encode token {id} whole: {:?}",
                    enc.get_ids()
                )));
            }
        }
        let back = tok
            .decode(enc.get_ids(), false)
            .map_err(|e| fail(format!("decoding {text:?}: {e}")))?;
        if &back != text {
            return Err(fail(format!("{text:?} decodes back as {back:?}")));
        }
    }
    Ok(())
}
