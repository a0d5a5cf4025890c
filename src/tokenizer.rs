//! The model's tokenizer (Hugging Face `tokenizer.json`), its `tokenizer_config.json` settings, and a
//! streaming detokenizer for generation.
//!
//! Two engines produce the same ids. Byte-level BPE tokenizers of the shapes we know (GPT-2, SmolLM,
//! Llama 3 style pre-tokenizers; see `tokenizer/bpe.rs`) are encoded by our own code from flat arrays,
//! which load from a cache file beside `tokenizer.json` in about a millisecond (parsing the JSON with
//! the `tokenizers` crate takes well over 100 ms). Anything else goes through the `tokenizers` crate,
//! which stays the reference: `inner` parses it on demand, and the equivalence tests compare the two.
//!
//! Streaming cannot call `decode` per token: a byte-level or byte-fallback token may hold half a UTF-8
//! character. So at load every token's exact output bytes are precomputed into one flat table (the
//! inverse of the decoder for the two vocabulary families tiny LLMs use), and `StreamDecoder` emits the
//! longest complete UTF-8 prefix of the bytes seen so far.

mod bpe;
mod cache;
mod classes;
mod hf_guard;
mod json;
mod pretokenize;

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use crate::chat::{ChatError, ChatTemplate};

use bpe::Bpe;

/// The cache file `Tokenizer::from_dir` keeps beside `tokenizer.json`.
pub const CACHE_FILE_NAME: &str = cache::FILE_NAME;

#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("{}: {reason}", path.display())]
    Load { path: PathBuf, reason: String },
    #[error("{}: chat_template: {source}", path.display())]
    ChatTemplate { path: PathBuf, source: ChatError },
    #[error("encoding failed: {reason}")]
    Encode { reason: String },
    #[error("decoding failed: {reason}")]
    Decode { reason: String },
}

/// Which engine encodes, and where it came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// Our byte-level BPE, loaded from the cache file beside `tokenizer.json`.
    Cached,
    /// Our byte-level BPE, built from `tokenizer.json` (first load, or no cache possible).
    Json,
    /// The `tokenizers` crate (a pipeline our BPE does not implement).
    Tokenizers,
}

/// How token strings map back to bytes; read off the tokenizer's decoder at load.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct DecodeRules {
    /// GPT-2 byte-level: every char of a token stands for one byte.
    byte_level: bool,
    /// `<0xNN>` tokens stand for the raw byte NN.
    byte_fallback: bool,
    /// SentencePiece word marker to turn into a space (`▁`).
    metaspace: Option<char>,
    /// Leading spaces the decoder strips from the start of the whole text (SentencePiece's prefix space).
    strip_leading: usize,
}

/// Every token's exact output bytes: token `id` is `bytes[offsets[id]..offsets[id + 1]]`; ids with
/// no token are empty and not `known`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct ByteTable {
    bytes: Vec<u8>,
    offsets: Vec<u32>,
    known: Vec<bool>,
}

impl ByteTable {
    /// The table for ids `0..n`, from each id's token string.
    fn build<'a>(
        n: usize,
        token: impl Fn(u32) -> Option<Cow<'a, str>>,
        rules: &DecodeRules,
    ) -> Result<ByteTable, String> {
        if n > MAX_VOCAB {
            return Err(format!(
                "token id {} is beyond the supported {MAX_VOCAB}",
                n - 1
            ));
        }
        let unicode_to_byte = unicode_to_byte_table();
        let mut t = ByteTable {
            bytes: Vec::new(),
            offsets: Vec::with_capacity(n + 1),
            known: Vec::with_capacity(n),
        };
        t.offsets.push(0);
        for id in 0..n as u32 {
            match token(id) {
                Some(token) => {
                    token_to_bytes(&token, rules, &unicode_to_byte, &mut t.bytes);
                    t.known.push(true);
                }
                None => t.known.push(false),
            }
            let end =
                u32::try_from(t.bytes.len()).map_err(|_| "token table over 4 GiB".to_string())?;
            t.offsets.push(end);
        }
        t.bytes.shrink_to_fit();
        Ok(t)
    }

    fn get(&self, id: u32) -> Option<&[u8]> {
        let i = id as usize;
        if !*self.known.get(i)? {
            return None;
        }
        Some(&self.bytes[self.offsets[i] as usize..self.offsets[i + 1] as usize])
    }

    /// Offsets in bounds and in order (a table read from a cache file is checked before use).
    fn is_valid(&self) -> bool {
        self.offsets.len() == self.known.len() + 1
            && self.offsets.first() == Some(&0)
            && self.offsets.windows(2).all(|w| w[0] <= w[1])
            && self.offsets.last().map(|&e| e as usize) == Some(self.bytes.len())
    }
}

/// Where `tokenizer.json` came from, to parse it with `tokenizers` when someone asks for `inner`.
enum Source {
    File(PathBuf),
    Bytes(Arc<[u8]>),
}

/// Tokenizer with its special tokens, chat template and per-token byte table.
pub struct Tokenizer {
    /// Our BPE, when the pipeline is one it implements.
    bpe: Option<Box<Bpe>>,
    backend: Backend,
    /// Why our BPE does not take this tokenizer (with `Backend::Tokenizers`).
    unsupported: Option<String>,
    /// The `tokenizers` tokenizer: loaded at once when `bpe` is `None`, else on first use.
    hf: OnceLock<Result<tokenizers::Tokenizer, String>>,
    source: Source,
    bos_token: Option<String>,
    eos_token: Option<String>,
    add_bos_token: bool,
    chat_template: Option<ChatTemplate>,
    rules: DecodeRules,
    table: ByteTable,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("backend", &self.backend)
            .field("vocab_size", &self.vocab_size())
            .field("bos_token", &self.bos_token)
            .field("eos_token", &self.eos_token)
            .field("add_bos_token", &self.add_bos_token)
            .field("chat_template", &self.chat_template.is_some())
            .field("rules", &self.rules)
            .finish()
    }
}

/// Ids above this are refused at load: a hostile file must not make us allocate gigabytes.
const MAX_VOCAB: usize = 1 << 24;

/// The encoding half of a tokenizer, before `tokenizer_config.json` is applied.
struct Core {
    bpe: Option<Box<Bpe>>,
    hf: Option<tokenizers::Tokenizer>,
    backend: Backend,
    /// Why our BPE does not take this file.
    unsupported: Option<String>,
    rules: DecodeRules,
    table: ByteTable,
}

impl Core {
    /// Our BPE if the file is a pipeline it implements, else the `tokenizers` crate.
    fn build(json: &[u8]) -> Result<Core, String> {
        match json::build(json, MAX_VOCAB) {
            Ok(bpe) => Self::from_bpe(bpe),
            Err(json::Unsupported(reason)) => Ok(Core {
                unsupported: Some(reason),
                ..Self::from_tokenizers(json)?
            }),
        }
    }

    fn from_bpe(bpe: Bpe) -> Result<Core, String> {
        let rules = DecodeRules {
            byte_level: true,
            ..DecodeRules::default()
        };
        let table = ByteTable::build(
            bpe.vocab_len(),
            |id| {
                Some(bpe.str_of(id))
                    .filter(|s| !s.is_empty())
                    .map(Cow::Borrowed)
            },
            &rules,
        )?;
        Ok(Core {
            bpe: Some(Box::new(bpe)),
            hf: None,
            backend: Backend::Json,
            unsupported: None,
            rules,
            table,
        })
    }

    /// Our BPE and its byte table as a `tokenizer.edgeinfer.bin` cache holds them (the decode rules
    /// of [`Core::from_bpe`]).
    fn from_cache(bpe: Bpe, table: ByteTable) -> Core {
        Core {
            bpe: Some(Box::new(bpe)),
            hf: None,
            backend: Backend::Cached,
            unsupported: None,
            rules: DecodeRules {
                byte_level: true,
                ..DecodeRules::default()
            },
            table,
        }
    }

    fn from_tokenizers(json: &[u8]) -> Result<Core, String> {
        hf_guard::check(json)?;
        let inner = tokenizers::Tokenizer::from_bytes(json).map_err(|e| e.to_string())?;
        let rules = match inner.get_decoder() {
            Some(d) => decode_rules(&serde_json::to_value(d).map_err(|e| format!("decoder: {e}"))?),
            None => DecodeRules::default(),
        };
        let n = inner
            .get_vocab(true)
            .values()
            .max()
            .map_or(0, |&max| max as usize + 1);
        let table = ByteTable::build(n, |id| inner.id_to_token(id).map(Cow::Owned), &rules)?;
        Ok(Core {
            bpe: None,
            hf: Some(inner),
            backend: Backend::Tokenizers,
            unsupported: None,
            rules,
            table,
        })
    }
}

impl Tokenizer {
    /// Loads `dir/tokenizer.json` and, when present, `dir/tokenizer_config.json`. A byte-level BPE
    /// tokenizer is cached in `dir/tokenizer.edgeinfer.bin` (written if the directory allows).
    pub fn from_dir(dir: &Path) -> Result<Tokenizer, TokenizerError> {
        let tok_path = dir.join("tokenizer.json");
        let load_err = |path: &Path, reason: String| TokenizerError::Load {
            path: path.to_owned(),
            reason,
        };
        let (mtime, stamp) =
            cache::stamp_file(&tok_path).map_err(|e| load_err(&tok_path, e.to_string()))?;
        let cfg_path = dir.join("tokenizer_config.json");
        let cfg = if cfg_path.is_file() {
            Some(std::fs::read(&cfg_path).map_err(|e| load_err(&cfg_path, e.to_string()))?)
        } else {
            None
        };
        let core = match cache::load(&tok_path, stamp) {
            Some((bpe, table)) => Core::from_cache(bpe, table),
            None => {
                let json =
                    std::fs::read(&tok_path).map_err(|e| load_err(&tok_path, e.to_string()))?;
                let core = Core::build(&json).map_err(|reason| load_err(&tok_path, reason))?;
                if let Some(bpe) = &core.bpe {
                    // Stamped from the bytes parsed, so a file changed meanwhile is not trusted.
                    let stamp = cache::Stamp::of(mtime, &json);
                    cache::store(&tok_path, stamp, bpe, &core.table);
                }
                core
            }
        };
        Self::finish(core, Source::File(tok_path), cfg.as_deref(), &cfg_path)
    }

    /// As `from_dir`, from the two files' contents (e.g. embedded in a binary); nothing is cached.
    pub fn from_bytes(
        tokenizer_json: &[u8],
        tokenizer_config_json: Option<&[u8]>,
    ) -> Result<Tokenizer, TokenizerError> {
        let core = Core::build(tokenizer_json).map_err(|reason| TokenizerError::Load {
            path: PathBuf::from("tokenizer.json"),
            reason,
        })?;
        let source = Source::Bytes(Arc::from(tokenizer_json));
        Self::finish(
            core,
            source,
            tokenizer_config_json,
            Path::new("tokenizer_config.json"),
        )
    }

    fn finish(
        core: Core,
        source: Source,
        cfg: Option<&[u8]>,
        cfg_path: &Path,
    ) -> Result<Tokenizer, TokenizerError> {
        let hf = OnceLock::new();
        if let Some(inner) = core.hf {
            let _ = hf.set(Ok(inner));
        }
        let mut tok = Tokenizer {
            bpe: core.bpe,
            backend: core.backend,
            unsupported: core.unsupported,
            hf,
            source,
            bos_token: None,
            eos_token: None,
            add_bos_token: false,
            chat_template: None,
            rules: core.rules,
            table: core.table,
        };
        if let Some(cfg) = cfg {
            let cfg: serde_json::Value =
                serde_json::from_slice(cfg).map_err(|e| TokenizerError::Load {
                    path: cfg_path.to_owned(),
                    reason: e.to_string(),
                })?;
            tok.bos_token = special_token(cfg.get("bos_token"));
            tok.eos_token = special_token(cfg.get("eos_token"));
            tok.add_bos_token = cfg
                .get("add_bos_token")
                .and_then(|v| v.as_bool())
                .unwrap_or(false);
            if let Some(source) = chat_template_source(cfg.get("chat_template")) {
                let t =
                    ChatTemplate::new(source, tok.bos_token.as_deref(), tok.eos_token.as_deref())
                        .map_err(|source| TokenizerError::ChatTemplate {
                        path: cfg_path.to_owned(),
                        source,
                    })?;
                tok.chat_template = Some(t);
            }
        }
        Ok(tok)
    }

    /// Which engine encodes (ours from the cache or the JSON, or the `tokenizers` crate).
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// With `Backend::Tokenizers`: the part of `tokenizer.json` our BPE does not implement.
    pub fn unsupported_reason(&self) -> Option<&str> {
        self.unsupported.as_deref()
    }

    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>, TokenizerError> {
        if let Some(bpe) = &self.bpe {
            return Ok(bpe.encode(text, add_special_tokens));
        }
        let enc = self
            .inner()?
            .encode(text, add_special_tokens)
            .map_err(|e| TokenizerError::Encode {
                reason: e.to_string(),
            })?;
        Ok(enc.get_ids().to_vec())
    }

    /// Decodes with special tokens kept, as the model wrote them.
    pub fn decode(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        if self.bpe.is_some() {
            // The ByteLevel decoder: all tokens' bytes, then one lossy UTF-8 conversion.
            let mut bytes = Vec::with_capacity(ids.len() * 4);
            for &id in ids {
                bytes.extend_from_slice(self.table.get(id).unwrap_or_default());
            }
            return Ok(String::from_utf8_lossy(&bytes).into_owned());
        }
        self.inner()?
            .decode(ids, false)
            .map_err(|e| TokenizerError::Decode {
                reason: e.to_string(),
            })
    }

    /// Number of token ids (highest id + 1, added tokens included).
    pub fn vocab_size(&self) -> usize {
        self.table.known.len()
    }

    pub fn token_id(&self, token: &str) -> Option<u32> {
        match &self.bpe {
            Some(bpe) => bpe.token_id(token),
            None => self.inner().ok()?.token_to_id(token),
        }
    }

    /// The token's string as stored in the vocabulary (e.g. `Ġworld`, `▁world`, `<0x0A>`).
    pub fn id_token(&self, id: u32) -> Option<String> {
        match &self.bpe {
            Some(bpe) => Some(bpe.str_of(id))
                .filter(|s| !s.is_empty())
                .map(str::to_owned),
            None => self.inner().ok()?.id_to_token(id),
        }
    }

    /// The exact bytes token `id` contributes to decoded text (before any leading-space strip).
    /// `None` for ids outside the vocabulary.
    pub fn token_bytes(&self, id: u32) -> Option<&[u8]> {
        self.table.get(id)
    }

    /// Ids of the added tokens (`added_tokens` in tokenizer.json: the chat markers, EOS and the
    /// like), in no particular order. Constrained decoding keeps them out of the text it matches.
    pub fn added_token_ids(&self) -> Vec<u32> {
        match &self.bpe {
            Some(bpe) => bpe.added_sorted.clone(),
            None => self
                .inner()
                .map(|t| t.get_added_tokens_decoder().keys().copied().collect())
                .unwrap_or_default(),
        }
    }

    pub fn bos_token(&self) -> Option<&str> {
        self.bos_token.as_deref()
    }

    pub fn eos_token(&self) -> Option<&str> {
        self.eos_token.as_deref()
    }

    /// `add_bos_token` from tokenizer_config.json; false when absent.
    pub fn add_bos_token(&self) -> bool {
        self.add_bos_token
    }

    pub fn chat_template(&self) -> Option<&ChatTemplate> {
        self.chat_template.as_ref()
    }

    /// The same tokenizer as a `tokenizers` one, for anything not covered here. With our BPE engine
    /// it is parsed on the first call (over 100 ms for a 50k vocabulary).
    pub fn inner(&self) -> Result<&tokenizers::Tokenizer, TokenizerError> {
        let path = match &self.source {
            Source::File(path) => path.as_path(),
            Source::Bytes(_) => Path::new("tokenizer.json"),
        };
        self.hf
            .get_or_init(|| {
                let read;
                let bytes: &[u8] = match &self.source {
                    Source::File(path) => {
                        read = std::fs::read(path).map_err(|e| e.to_string())?;
                        &read
                    }
                    Source::Bytes(bytes) => bytes,
                };
                hf_guard::check(bytes)?;
                tokenizers::Tokenizer::from_bytes(bytes).map_err(|e| e.to_string())
            })
            .as_ref()
            .map_err(|reason| TokenizerError::Load {
                path: path.to_owned(),
                reason: reason.clone(),
            })
    }
}

/// `"<s>"` or `{"content": "<s>", ...}` (AddedToken form); null/absent → None.
fn special_token(v: Option<&serde_json::Value>) -> Option<String> {
    match v? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Object(o) => o.get("content")?.as_str().map(str::to_owned),
        _ => None,
    }
}

/// A plain string, or a list of `{name, template}` of which "default" is the chat one.
fn chat_template_source(v: Option<&serde_json::Value>) -> Option<&str> {
    match v? {
        serde_json::Value::String(s) => Some(s),
        serde_json::Value::Array(list) => list
            .iter()
            .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))
            .and_then(|t| t.get("template")?.as_str()),
        _ => None,
    }
}

/// Reads the decoder pipeline (as `tokenizers` serialises it) into the rules we can invert.
fn decode_rules(decoder: &serde_json::Value) -> DecodeRules {
    fn walk(d: &serde_json::Value, r: &mut DecodeRules) {
        let str_field = |name: &str| d.get(name).and_then(|v| v.as_str());
        match str_field("type") {
            Some("ByteLevel") => r.byte_level = true,
            Some("ByteFallback") => r.byte_fallback = true,
            Some("Sequence") => {
                for inner in d
                    .get("decoders")
                    .and_then(|v| v.as_array())
                    .into_iter()
                    .flatten()
                {
                    walk(inner, r);
                }
            }
            Some("Replace") => {
                let pattern = d
                    .get("pattern")
                    .and_then(|p| p.get("String"))
                    .and_then(|s| s.as_str());
                if let (Some(p), Some(" ")) = (pattern, str_field("content")) {
                    let mut chars = p.chars();
                    if let (Some(c), None) = (chars.next(), chars.next()) {
                        r.metaspace = Some(c);
                    }
                }
            }
            Some("Metaspace") => {
                r.metaspace = str_field("replacement")
                    .and_then(|s| s.chars().next())
                    .or(Some('▁'));
                let prepends = match str_field("prepend_scheme") {
                    Some(scheme) => scheme != "never",
                    None => d
                        .get("add_prefix_space")
                        .and_then(|v| v.as_bool())
                        .unwrap_or(true),
                };
                if prepends {
                    r.strip_leading = r.strip_leading.max(1);
                }
            }
            Some("Strip") if str_field("content") == Some(" ") => {
                let start = d.get("start").and_then(|v| v.as_u64()).unwrap_or(0);
                r.strip_leading = r.strip_leading.max(start as usize);
            }
            _ => {} // Fuse needs nothing; WordPiece/BPE/CTC decoders are not inverted (raw token text).
        }
    }
    let mut r = DecodeRules::default();
    walk(decoder, &mut r);
    r
}

/// GPT-2's byte ↔ unicode map, inverted: printable Latin-1 bytes map to themselves, the other 68 bytes
/// to U+0100.. in byte order. Index = char code (< 324), value = byte.
fn unicode_to_byte_table() -> [Option<u8>; 324] {
    let mut table = [None; 324];
    let mut next = 256usize;
    for b in 0..=255u8 {
        let printable = matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        if printable {
            table[b as usize] = Some(b);
        } else {
            table[next] = Some(b);
            next += 1;
        }
    }
    table
}

/// Appends the bytes `token` decodes to, mirroring the `tokenizers` decoders.
fn token_to_bytes(token: &str, rules: &DecodeRules, u2b: &[Option<u8>; 324], out: &mut Vec<u8>) {
    if rules.byte_level {
        // As the ByteLevel decoder: all chars mapped, or (e.g. an added token with other chars) raw.
        let start = out.len();
        for c in token.chars() {
            match u2b.get(c as usize).copied().flatten() {
                Some(b) => out.push(b),
                None => {
                    out.truncate(start);
                    out.extend_from_slice(token.as_bytes());
                    return;
                }
            }
        }
        return;
    }
    if rules.byte_fallback {
        if let Some(b) = byte_fallback_token(token) {
            out.push(b);
            return;
        }
    }
    match rules.metaspace {
        Some(m) => {
            for c in token.chars() {
                let c = if c == m { ' ' } else { c };
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
        None => out.extend_from_slice(token.as_bytes()),
    }
}

/// `<0xNN>` → NN.
fn byte_fallback_token(token: &str) -> Option<u8> {
    let hex = token.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

/// Turns generated ids into text pieces as they arrive. Never emits half a UTF-8 character: bytes of
/// an incomplete character wait for the next token; invalid bytes become U+FFFD, as in `decode`.
///
/// Concatenating every piece (and `finish`) gives `Tokenizer::decode` of all the ids.
pub struct StreamDecoder {
    /// Undecoded bytes: at most an incomplete UTF-8 prefix (≤ 3 bytes) between calls.
    pending: Vec<u8>,
    /// The text returned by the last call.
    out: String,
    /// Leading spaces still to strip (SentencePiece-style decoders strip the first one).
    strip: usize,
}

impl StreamDecoder {
    /// A decoder whose output equals `tok.decode(ids)`, including the leading-space strip of
    /// SentencePiece-style tokenizers.
    pub fn new(tok: &Tokenizer) -> Self {
        StreamDecoder {
            pending: Vec::with_capacity(64),
            out: String::with_capacity(256),
            strip: tok.rules.strip_leading,
        }
    }

    /// A decoder for text that continues earlier text (e.g. a raw prompt): keeps the leading space
    /// that `decode` would strip from the start of a text.
    pub fn continuing(tok: &Tokenizer) -> Self {
        StreamDecoder {
            strip: 0,
            ..Self::new(tok)
        }
    }

    /// Feeds one id; returns the text completed by it, if any. Unknown ids produce nothing. Does not
    /// allocate once the buffers have grown to the longest token seen.
    pub fn push(&mut self, tok: &Tokenizer, id: u32) -> Option<&str> {
        self.out.clear();
        let mut bytes = tok.token_bytes(id)?;
        while self.strip > 0 && !bytes.is_empty() {
            if bytes[0] == b' ' {
                bytes = &bytes[1..];
                self.strip -= 1;
            } else {
                self.strip = 0;
            }
        }
        self.pending.extend_from_slice(bytes);
        let mut start = 0;
        loop {
            match std::str::from_utf8(&self.pending[start..]) {
                Ok(s) => {
                    self.out.push_str(s);
                    start = self.pending.len();
                    break;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    // Checked by from_utf8 just above.
                    self.out.push_str(
                        std::str::from_utf8(&self.pending[start..start + valid]).unwrap_or(""),
                    );
                    start += valid;
                    match e.error_len() {
                        Some(bad) => {
                            self.out.push('\u{FFFD}');
                            start += bad;
                        }
                        None => break, // an incomplete character at the end: keep it for later
                    }
                }
            }
        }
        self.pending.drain(..start);
        (!self.out.is_empty()).then_some(self.out.as_str())
    }

    /// Ends the stream: an incomplete trailing character becomes U+FFFD.
    pub fn finish(&mut self) -> Option<&str> {
        self.out.clear();
        if !self.pending.is_empty() {
            self.pending.clear();
            self.out.push('\u{FFFD}');
        }
        (!self.out.is_empty()).then_some(self.out.as_str())
    }
}

#[cfg(test)]
mod tests;
