//! Checks a `tokenizer.json` before the `tokenizers` crate parses it: that crate panics instead of
//! returning an error on some malformed files (found by `fuzz/`'s `tokenizer` target), and a model
//! directory is input we do not control.
//!
//! - a JSON syntax error inside the `decoder` object panics ("Helper" in its decoder
//!   deserializer): the whole file is parsed here first, so syntax errors come back as errors;
//! - a `Precompiled` normalizer with bad fields panics ("Precompiled"): refused here (it belongs to
//!   SentencePiece Unigram models, which edgeinfer does not run);
//! - a `Strip` decoder with `stop` > 0 indexes below zero (or slices backwards) when decoding a token
//!   shorter than what it strips: refused (real tokenizers strip only from the start). The crate
//!   picks a decoder by its fields, whatever its `type` says (`"type": "S*rip"` still decodes as
//!   `Strip`), so any object with a nonzero `stop` is refused, but for the vocabulary and merges
//!   (`model.vocab`, `model.merges`), data the crate never reads as a component: a vocabulary maps
//!   tokens such as `stop` to ids.

use serde_json::Value;

/// Deepest nesting accepted (serde_json's own recursion limit is 128; real files use < 10).
const MAX_DEPTH: usize = 64;

/// `Err(reason)` if `json` must not be handed to the `tokenizers` crate.
pub(super) fn check(json: &[u8]) -> Result<(), String> {
    let value: Value = serde_json::from_slice(json).map_err(|e| e.to_string())?;
    walk(&value, 0)
}

fn walk(v: &Value, depth: usize) -> Result<(), String> {
    if depth > MAX_DEPTH {
        return Err(format!("nested deeper than {MAX_DEPTH} levels"));
    }
    match v {
        Value::Object(map) => {
            match map.get("type").and_then(Value::as_str) {
                // By field as well as by name: the crate picks normalizers by their fields too.
                _ if map.contains_key("precompiled_charsmap") => {
                    return Err(
                        "`Precompiled` normalizers (SentencePiece Unigram) are not supported"
                            .into(),
                    )
                }
                Some("Precompiled") => {
                    return Err(
                        "`Precompiled` normalizers (SentencePiece Unigram) are not supported"
                            .into(),
                    )
                }
                _ if map.get("stop").is_some_and(|s| s.as_u64() != Some(0)) => {
                    return Err("`Strip` decoders with a nonzero `stop` are not supported".into())
                }
                _ => {}
            }
            map.iter()
                .filter(|(k, _)| !matches!(k.as_str(), "vocab" | "merges"))
                .try_for_each(|(_, v)| walk(v, depth + 1))
        }
        Value::Array(items) => items.iter().try_for_each(|v| walk(v, depth + 1)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_what_the_tokenizers_crate_panics_on() {
        // A syntax error inside `decoder` (the crate panics with "Helper").
        let broken = br#"{"decoder": {"type": "ByteLevel" "x": 1}, "model": {}}"#;
        assert!(check(broken).is_err());
        let precompiled = br#"{"normalizer": {"type": "Precompiled", "precompiled_charsmap": 7}}"#;
        assert!(check(precompiled).unwrap_err().contains("Precompiled"));
        let renamed = br#"{"normalizer": {"type": "Pr*compiled", "precompiled_charsmap": 7}}"#;
        assert!(check(renamed).unwrap_err().contains("Precompiled"));
        assert!(check(br#"{"normalizer": null, "decoder": {"type": "Fuse"}}"#).is_ok());
        // Strip with `stop` underflows on short tokens (fuzz/regressions/tokenizer/strip-stop).
        let strip = br#"{"decoder": {"type": "Strip", "content": " ", "start": 1, "stop": 3}}"#;
        assert!(check(strip).unwrap_err().contains("Strip"));
        // The same fields under another `type` still deserialize as `Strip`
        // (fuzz/regressions/tokenizer/strip-stop-any-type).
        let renamed = br#"{"decoder": {"type": "S*rip", "content": " ", "start": 1, "stop": 5}}"#;
        assert!(check(renamed).unwrap_err().contains("Strip"));
        let llama = br#"{"decoder": {"type": "Strip", "content": " ", "start": 1, "stop": 0}}"#;
        assert!(check(llama).is_ok());
        // A vocabulary with a token `stop` is data, not a decoder.
        let vocab =
            br#"{"model": {"type": "BPE", "vocab": {"stop": 9, "start": 1}, "merges": []}}"#;
        assert!(check(vocab).is_ok());
    }
}
