//! The fuzz targets' bodies, one function per target, shared with the regression tests
//! (`tests/fuzz_regressions.rs` includes this file) so a crashing input replays exactly.
//! Each function must return normally for every input: a panic, an abort or an allocation over
//! libFuzzer's limit is a bug.

use std::path::PathBuf;
use std::sync::OnceLock;

use edgeinfer::chat::{ChatTemplate, Message};
use edgeinfer::tokenizer::{StreamDecoder, Tokenizer};
use edgeinfer_convert::import::{import_gguf, ImportDType, ImportOptions};

/// Splits `data` into fields separated by `sep` (at most `max` fields; the last takes the rest).
fn fields(data: &[u8], sep: u8, max: usize) -> Vec<&[u8]> {
    data.splitn(max, |&b| b == sep).collect()
}

/// The first byte (a mode selector) and the rest.
fn mode(data: &[u8]) -> (u8, &[u8]) {
    match data.split_first() {
        Some((&m, rest)) => (m, rest),
        None => (0, data),
    }
}

/// A scratch directory for this process, created once.
fn scratch() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("edgeinfer-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create the fuzz scratch directory");
        dir
    })
}

/// Safetensors headers and our tensor validation: offsets, lengths, dtypes, shapes against the
/// config, quantized-plane layouts and their `__metadata__`.
///
/// Input: a little-endian u16 `n`, `n` bytes of `config.json`, then the safetensors file.
pub fn safetensors(data: &[u8]) {
    let Some((len, rest)) = data.split_first_chunk::<2>() else {
        return;
    };
    let n = usize::from(u16::from_le_bytes(*len)).min(rest.len());
    let (config, weights) = rest.split_at(n);
    let config = String::from_utf8_lossy(config);
    let files = vec![(PathBuf::from("model.safetensors"), weights.to_vec())];
    if let Ok(llama) = edgeinfer::loader::validate_in_memory(&config, files) {
        for w in llama.weights() {
            std::hint::black_box(w.bytes);
        }
    }
}

/// `config.json` parsing into the typed, validated `Config`.
pub fn config(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(c) = edgeinfer_models::Config::from_json(&text) {
        std::hint::black_box((c.q_dim(), c.kv_dim()));
    }
}

/// Tokenizer loading and use: `tokenizer.json` (+ `tokenizer_config.json`) through our BPE builder
/// or the `tokenizers` crate, or the payload of a `tokenizer.edgeinfer.bin` cache; then encoding and
/// decoding hostile text and ids.
///
/// Input: a mode byte, then fields separated by 0xFF. Even mode: tokenizer.json,
/// tokenizer_config.json, text. Odd mode: cache payload (up to the last 0xFF), then text.
pub fn tokenizer(data: &[u8]) {
    let (m, rest) = mode(data);
    let (tok, text) = if m % 2 == 0 {
        let f = fields(rest, 0xFF, 3);
        let cfg = f.get(1).copied().filter(|c| !c.is_empty());
        match Tokenizer::from_bytes(f[0], cfg) {
            Ok(t) => (t, f.get(2).copied().unwrap_or_default()),
            Err(_) => return,
        }
    } else {
        let cut = rest.iter().rposition(|&b| b == 0xFF).unwrap_or(rest.len());
        let (payload, text) = rest.split_at(cut);
        match Tokenizer::from_cache_payload(payload) {
            Some(t) => (t, text.get(1..).unwrap_or_default()),
            None => return,
        }
    };
    let text = String::from_utf8_lossy(text);
    for special in [false, true] {
        let Ok(ids) = tok.encode(&text, special) else {
            continue;
        };
        let _ = tok.decode(&ids);
        let mut stream = StreamDecoder::new(&tok);
        for &id in &ids {
            std::hint::black_box(stream.push(&tok, id));
        }
        std::hint::black_box(stream.finish());
    }
    // Ids from the input itself, in range or not.
    let ids: Vec<u32> = text.bytes().map(|b| u32::from(b) * 131).collect();
    let _ = tok.decode(&ids);
    for id in ids {
        std::hint::black_box((tok.id_token(id), tok.token_bytes(id)));
    }
}

/// GGUF import: header, metadata, tensor infos and tensor data through `import_gguf`, which writes
/// a checkpoint only when the whole file checks out.
///
/// Input: a mode byte (the output dtype), then the GGUF file.
pub fn gguf(data: &[u8]) {
    let (m, file) = mode(data);
    let dtype = match m % 4 {
        0 => ImportDType::Native,
        1 => ImportDType::F32,
        2 => ImportDType::F16,
        _ => ImportDType::Bf16,
    };
    let dir = scratch();
    let path = dir.join("in.gguf");
    std::fs::write(&path, file).expect("write the input");
    let opts = ImportOptions {
        dtype,
        ..ImportOptions::default()
    };
    let _ = import_gguf(&path, &dir.join("out"), &opts, &mut |_| {});
}

/// A ChatML template in the style models ship (system prompt default, loop over messages).
const CHATML: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] | trim + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// Chat-template rendering: hostile messages through a ChatML template, or a hostile template.
///
/// Input: a mode byte, then fields separated by 0xFF. Mode bit 0 set: the first field is the
/// template. The other fields alternate role and content. Mode bit 1: add the generation prompt.
pub fn chat(data: &[u8]) {
    let (m, rest) = mode(data);
    let mut f = fields(rest, 0xFF, 64).into_iter();
    let source = if m & 1 == 1 {
        String::from_utf8_lossy(f.next().unwrap_or_default()).into_owned()
    } else {
        CHATML.to_string()
    };
    let Ok(t) = ChatTemplate::new(&source, Some("<|im_start|>"), Some("<|im_end|>")) else {
        return;
    };
    let parts: Vec<String> = f.map(|p| String::from_utf8_lossy(p).into_owned()).collect();
    let messages: Vec<Message> = parts
        .chunks(2)
        .map(|c| Message::new(c[0].clone(), c.get(1).cloned().unwrap_or_default()))
        .collect();
    let _ = t.render(&messages, m & 2 == 2);
}

/// Limits like `infer serve`'s with SmolLM2 (2048-token context, 256 tokens by default).
const LIMITS: edgeinfer::request::Limits = edgeinfer::request::Limits {
    default_max_tokens: 256,
    max_tokens: 2048,
};

/// The FaaS event (`examples/lambda`): a JSON value through `GenerateRequest::from_value` and
/// `into_job` with `PromptKind::Either`; an accepted job's prompt, options and sampler checked.
///
/// Input: the event's JSON text (invalid JSON returns early: the Lambda runtime parses it).
pub fn event(data: &[u8]) {
    use edgeinfer::request::{GenerateRequest, PromptKind};
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let job =
        GenerateRequest::from_value(value).and_then(|r| r.into_job(PromptKind::Either, &LIMITS));
    check_job(job);
}

/// The OpenAI bodies of `/v1/completions` and `/v1/chat/completions` (`infer serve`): raw bytes
/// through `GenerateRequest::parse` and `into_job`; a refusal's error body serialized.
///
/// Input: a mode byte (bit 0 set: chat completions), then the body.
pub fn openai(data: &[u8]) {
    use edgeinfer::request::{GenerateRequest, PromptKind};
    let (m, body) = mode(data);
    let kind = if m & 1 == 1 {
        PromptKind::Chat
    } else {
        PromptKind::Text
    };
    let job = GenerateRequest::parse(body).and_then(|r| r.into_job(kind, &LIMITS));
    check_job(job);
}

/// The invariants of an accepted job; a refusal's error body must serialize.
fn check_job(job: Result<edgeinfer::request::Job, edgeinfer::request::RequestError>) {
    match job {
        Ok(job) => {
            let o = &job.options;
            assert!((1..=LIMITS.max_tokens).contains(&o.max_tokens));
            assert!(o.stop.len() <= edgeinfer::request::MAX_STOP_STRINGS);
            assert!(o.sampler.validate().is_ok());
            std::hint::black_box(job.prompt());
        }
        Err(e) => {
            std::hint::black_box(e.to_json().to_string());
        }
    }
}
