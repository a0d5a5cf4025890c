//! Our byte-level BPE against the `tokenizers` crate, which stays the reference: identical ids (with
//! and without special tokens) and identical decoding on thousands of seeded random texts — ASCII,
//! digits, white-space runs, contractions in odd cases, code, CJK, emoji sequences, combining marks,
//! control chars, special tokens inside and around words, random code points, very long words.
//!
//! Pipelines: the real SmolLM2 tokenizer (when `weights/` has it), its vocabulary under every split
//! pattern we implement, and small BPEs trained here for the corners a real file does not reach
//! (bytes missing from the vocabulary, `unk`, repeated merges, legacy merges, normalized added
//! tokens, templates). Also: the cache file is used only when current and intact.
//!
//! `EDGEINFER_TOK_SEED=<n>` changes the corpus seed; a failure prints the seed and the text.

mod common;

use std::collections::HashMap;
use std::path::Path;

use common::Rng;
use edgeinfer::tokenizer::{Backend, Tokenizer, CACHE_FILE_NAME};
use serde_json::{json, Value};

const GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";
const LLAMA3: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

fn seed() -> u64 {
    std::env::var("EDGEINFER_TOK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x70c0_5eed)
}

const FRAGMENTS: &[&str] = &[
    "the",
    "The",
    "hello",
    "world",
    "Hello",
    "tokenizer",
    "a",
    "I",
    "don't",
    "I'M",
    "we'll",
    "they're",
    "You've",
    "'s",
    "'S",
    "'t",
    "'ſ",
    "'LL",
    "'Re",
    "'ve",
    "'d",
    "''",
    "'",
    "s",
    " ",
    "  ",
    "   ",
    "\t",
    "\n",
    "\n\n",
    "\r\n",
    "\r",
    " \n ",
    "\t\n",
    " \r\n\r\n ",
    "\u{a0}",
    "\u{3000}",
    "\u{85}",
    "\u{0b}",
    "\u{0c}",
    "\u{1c}",
    "\u{2028}",
    "\u{2009}",
    "0",
    "7",
    "42",
    "1234",
    "3.14159",
    "1,000,000",
    "٣٤٥",
    "²",
    "½",
    "Ⅻ",
    "〇",
    "二十",
    "x1",
    "a2b",
    "v1.2.3",
    ".",
    ",",
    "!",
    "?",
    "...",
    "--",
    "==>",
    "(",
    ")",
    "{",
    "}",
    "[",
    "]",
    "<",
    ">",
    "/",
    "\\",
    "\"",
    "#",
    "@",
    "$",
    "%",
    "^",
    "&",
    "*",
    "_",
    "-",
    "+",
    "=",
    "~",
    "`",
    "|",
    ";",
    ":",
    "你好",
    "世界",
    "日本語",
    "한국어",
    "Привет",
    "мир",
    "مرحبا",
    "שלום",
    "हिन्दी",
    "ไทย",
    "é",
    "e\u{301}",
    "ñ",
    "ß",
    "ǅ",
    "Σσς",
    "😀",
    "👍🏽",
    "👨\u{200d}👩\u{200d}👧",
    "🇫🇷",
    "\u{200d}",
    "\u{feff}",
    "\u{fffd}",
    "\u{ffff}",
    "\u{10ffff}",
    "\u{e000}",
    "\u{0}",
    "\u{4}",
    "\u{7f}",
    "\u{1b}[0m",
    "<|im_start|>",
    "<|im_end|>",
    "<|endoftext|>",
    "<|im_",
    "|>",
    "<|",
    "<repo_name>",
    "<file_sep>",
    "<special>",
    "<spec",
    "fn main() {",
    "    let x = 1;",
    "}",
    "def f(x):",
    "    return x**2",
    "#include <stdio.h>",
    "SELECT * FROM t;",
    "https://example.com/a?b=c",
    "user@example.com",
    "ﬁ",
    "İ",
    "ı",
    "K",
    "Å",
    "ſ",
    "ǈ",
    "ᾼ",
];

/// One random text: fragments, random code points, and now and then a very long run.
fn random_text(rng: &mut Rng) -> String {
    let mut s = String::new();
    for _ in 0..rng.below(24) {
        match rng.below(20) {
            0 => s.extend(std::iter::repeat_n(' ', 1 + rng.below(40))),
            1 => {
                let c = FRAGMENTS[rng.below(FRAGMENTS.len())];
                s.push_str(&c.repeat(1 + rng.below(60)));
            }
            2..=4 => {
                // Any code point, mostly from the BMP.
                let max = if rng.below(4) == 0 {
                    0x11_0000
                } else {
                    0x1_0000
                };
                if let Some(c) = char::from_u32(rng.below(max) as u32) {
                    s.push(c);
                }
            }
            5 => {
                for _ in 0..rng.below(300) {
                    s.push(
                        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="
                            [rng.below(65)] as char,
                    );
                }
            }
            6 => {
                for _ in 0..1 + rng.below(12) {
                    s.push(char::from(rng.below(128) as u8));
                }
            }
            _ => s.push_str(FRAGMENTS[rng.below(FRAGMENTS.len())]),
        }
    }
    s
}

fn corpus(seed: u64, n: usize) -> Vec<String> {
    let mut rng = Rng(seed);
    let mut texts: Vec<String> = FRAGMENTS.iter().map(|s| s.to_string()).collect();
    texts.extend(
        [
            "",
            " ",
            "a",
            "\n",
            "<|im_start|><|im_end|>",
            "<|im_start|>x<|im_end|>y",
        ]
        .map(String::from),
    );
    while texts.len() < n {
        texts.push(random_text(&mut rng));
    }
    texts
}

/// Same ids as `theirs` for every text, with and without special tokens, and the same decoding.
fn assert_same(label: &str, ours: &Tokenizer, theirs: &tokenizers::Tokenizer, texts: &[String]) {
    assert_ne!(
        ours.backend(),
        Backend::Tokenizers,
        "{label}: fell back to the tokenizers crate: {:?}",
        ours.unsupported_reason()
    );
    for text in texts {
        for special in [false, true] {
            let want = theirs.encode(text.as_str(), special).unwrap();
            let got = ours.encode(text, special).unwrap();
            assert!(
                got == want.get_ids(),
                "{label} (seed {}) special={special} text {text:?}\n ours   {got:?}\n theirs {:?}",
                seed(),
                want.get_ids()
            );
        }
        let ids = ours.encode(text, false).unwrap();
        assert_eq!(
            ours.decode(&ids).unwrap(),
            theirs.decode(&ids, false).unwrap(),
            "{label}: decode of {text:?}"
        );
    }
}

/// Same vocabulary both ways: `id_token`, `token_id`, `vocab_size`, and decoding of every id.
fn assert_same_vocab(label: &str, ours: &Tokenizer, theirs: &tokenizers::Tokenizer) {
    let n = theirs.get_vocab(true).values().max().map_or(0, |&m| m + 1);
    assert_eq!(ours.vocab_size(), n as usize, "{label}");
    for id in 0..n + 3 {
        let token = theirs.id_to_token(id);
        assert_eq!(ours.id_token(id), token, "{label}: id {id}");
        if let Some(token) = token {
            assert_eq!(
                ours.token_id(&token),
                theirs.token_to_id(&token),
                "{label}: {token:?}"
            );
        }
        assert_eq!(
            ours.decode(&[id, id]).unwrap(),
            theirs.decode(&[id, id], false).unwrap(),
            "{label}: decode id {id}"
        );
    }
    assert_eq!(ours.token_id("no such token ∅"), None);
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    common::temp_dir(&format!("tokeq-{name}"))
}

fn write_dir(name: &str, json: &[u8]) -> std::path::PathBuf {
    let dir = temp_dir(name);
    std::fs::write(dir.join("tokenizer.json"), json).unwrap();
    dir
}

// ---- The real SmolLM2 tokenizer --------------------------------------------------------------

fn real_tokenizer_json() -> Option<Vec<u8>> {
    let dir = common::real_model_path(
        "EDGEINFER_MODEL_DIR",
        "weights/SmolLM2-135M-Instruct",
        "tokenizer.json",
    )?;
    Some(std::fs::read(dir.join("tokenizer.json")).unwrap())
}

#[test]
fn smollm2_matches_tokenizers_crate() {
    let Some(json) = real_tokenizer_json() else {
        return;
    };
    let theirs = tokenizers::Tokenizer::from_bytes(&json).unwrap();
    let dir = write_dir("smollm2", &json);
    let built = Tokenizer::from_dir(&dir).unwrap();
    assert_eq!(built.backend(), Backend::Json);
    let cached = Tokenizer::from_dir(&dir).unwrap();
    assert_eq!(cached.backend(), Backend::Cached);

    let mut texts = corpus(seed(), 3000);
    let fixture = Path::new("/work/shared/fixtures/smollm2-tokenizer-cases.json");
    if let Ok(bytes) = std::fs::read(fixture) {
        let cases: Value = serde_json::from_slice(&bytes).unwrap();
        for case in cases["cases"].as_array().unwrap() {
            texts.push(case["text"].as_str().unwrap().to_string());
        }
    }
    assert_same("smollm2 from json", &built, &theirs, &texts);
    assert_same("smollm2 from cache", &cached, &theirs, &texts[..600]);
    assert_same_vocab("smollm2", &cached, &theirs);
    let _ = std::fs::remove_dir_all(dir);
}

/// The real vocabulary and merges under the other pre-tokenizers we implement.
#[test]
fn real_vocabulary_under_every_split_pattern() {
    let Some(json) = real_tokenizer_json() else {
        return;
    };
    let base: Value = serde_json::from_slice(&json).unwrap();
    let byte_level = |regex: bool| json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": regex});
    let split = |p: &str| json!({"type": "Split", "pattern": {"Regex": p}, "behavior": "Isolated", "invert": false});
    let variants = [
        ("gpt2", byte_level(true), false),
        (
            "gpt2 as Split",
            json!({"type": "Sequence", "pretokenizers": [split(GPT2), byte_level(false)]}),
            false,
        ),
        (
            "llama3",
            json!({"type": "Sequence", "pretokenizers": [split(LLAMA3), byte_level(false)]}),
            true,
        ),
        (
            "qwen2",
            json!({"type": "Sequence", "pretokenizers": [split(QWEN2), byte_level(false)]}),
            false,
        ),
        (
            "digits+llama3",
            json!({"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": false}, split(LLAMA3), byte_level(false)]}),
            false,
        ),
    ];
    let texts = corpus(seed() ^ 1, 800);
    for (label, pre, ignore_merges) in variants {
        let mut v = base.clone();
        v["pre_tokenizer"] = pre;
        v["model"]["ignore_merges"] = json!(ignore_merges);
        let bytes = serde_json::to_vec(&v).unwrap();
        let theirs = tokenizers::Tokenizer::from_bytes(&bytes).unwrap();
        let ours = Tokenizer::from_bytes(&bytes, None).unwrap();
        assert_same(label, &ours, &theirs, &texts);
    }
}

// ---- Small trained BPEs ----------------------------------------------------------------------

/// GPT-2's byte → char map.
fn byte_char(b: u8) -> char {
    let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    if printable(b) {
        return b as char;
    }
    let n = (0..b).filter(|&x| !printable(x)).count() as u32;
    char::from_u32(256 + n).unwrap()
}

struct Trained {
    vocab: Vec<String>,
    merges: Vec<(String, String)>,
}

/// A naive BPE trainer (most frequent pair first, ties by the pair's text) over space-split words,
/// with the byte tokens of `missing` left out of the vocabulary.
fn train(texts: &[String], n_merges: usize, missing: &[u8]) -> Trained {
    let mut vocab: Vec<String> = (0..=255u8)
        .filter(|b| !missing.contains(b))
        .map(|b| byte_char(b).to_string())
        .collect();
    let mut known: HashMap<String, usize> = vocab
        .iter()
        .cloned()
        .enumerate()
        .map(|(i, s)| (s, i))
        .collect();
    let mut words: Vec<Vec<String>> = texts
        .iter()
        .flat_map(|t| {
            t.split_inclusive(' ')
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .map(|w| w.bytes().map(|b| byte_char(b).to_string()).collect())
        .collect();
    let mut merges = Vec::new();
    for _ in 0..n_merges {
        let mut counts: HashMap<(&str, &str), usize> = HashMap::new();
        for w in &words {
            for pair in w.windows(2) {
                if known.contains_key(&pair[0]) && known.contains_key(&pair[1]) {
                    *counts.entry((&pair[0], &pair[1])).or_default() += 1;
                }
            }
        }
        let Some((&(a, b), _)) = counts
            .iter()
            .max_by(|x, y| x.1.cmp(y.1).then_with(|| y.0.cmp(x.0)))
        else {
            break;
        };
        let (a, b) = (a.to_string(), b.to_string());
        let merged = format!("{a}{b}");
        for w in &mut words {
            let mut i = 0;
            while i + 1 < w.len() {
                if w[i] == a && w[i + 1] == b {
                    w[i] = merged.clone();
                    w.remove(i + 1);
                }
                i += 1;
            }
        }
        if !known.contains_key(&merged) {
            known.insert(merged.clone(), vocab.len());
            vocab.push(merged);
        }
        merges.push((a, b));
    }
    Trained { vocab, merges }
}

fn added(content: &str, id: usize, normalized: bool) -> Value {
    json!({"id": id, "content": content, "single_word": false, "lstrip": false, "rstrip": false,
           "normalized": normalized, "special": !normalized})
}

struct Spec {
    label: &'static str,
    pre: Value,
    post: Value,
    /// (content, normalized); appended after the trained vocabulary.
    added: Vec<(&'static str, bool)>,
    unk: Option<&'static str>,
    fuse_unk: bool,
    ignore_merges: bool,
    legacy_merges: bool,
    /// Also merge the same pair again at the end and add a second pair for an existing token.
    odd_merges: bool,
}

fn spec(label: &'static str, pre: Value) -> Spec {
    Spec {
        label,
        pre,
        post: Value::Null,
        added: vec![
            ("<|im_start|>", false),
            ("<|im_end|>", false),
            ("<|endoftext|>", false),
        ],
        unk: None,
        fuse_unk: false,
        ignore_merges: false,
        legacy_merges: false,
        odd_merges: false,
    }
}

fn build_json(s: &Spec, t: &Trained) -> Vec<u8> {
    let mut vocab_list = t.vocab.clone();
    let mut merges = t.merges.clone();
    if s.odd_merges {
        merges.push(merges[3].clone());
        // A second way to the same token: ("ab", "c") and ("a", "bc") both give "abc".
        let index: HashMap<&str, ()> = vocab_list.iter().map(|v| (v.as_str(), ())).collect();
        let extra: Vec<(String, String)> = merges
            .iter()
            .filter_map(|(a, b)| {
                let (a1, a2) = a.split_at(a.char_indices().nth(1)?.0);
                (index.contains_key(a2) && index.contains_key(format!("{a2}{b}").as_str()))
                    .then(|| (a1.to_string(), format!("{a2}{b}")))
            })
            .take(20)
            .collect();
        merges.extend(extra);
    }
    if let Some(unk) = s.unk {
        vocab_list.push(unk.to_string());
    }
    let mut added_tokens = Vec::new();
    for (content, normalized) in &s.added {
        added_tokens.push(added(content, vocab_list.len(), *normalized));
        vocab_list.push(content.to_string());
    }
    let vocab: serde_json::Map<String, Value> = vocab_list
        .iter()
        .enumerate()
        .map(|(i, v)| (v.clone(), json!(i)))
        .collect();
    let merges: Vec<Value> = merges
        .iter()
        .map(|(a, b)| {
            if s.legacy_merges {
                json!(format!("{a} {b}"))
            } else {
                json!([a, b])
            }
        })
        .collect();
    serde_json::to_vec(&json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": added_tokens,
        "normalizer": null,
        "pre_tokenizer": s.pre,
        "post_processor": s.post,
        "decoder": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": s.unk, "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": s.fuse_unk, "byte_fallback": false,
                  "ignore_merges": s.ignore_merges, "vocab": vocab, "merges": merges}
    }))
    .unwrap()
}

#[test]
fn trained_pipelines_match_tokenizers_crate() {
    let training: Vec<String> = corpus(seed() ^ 2, 400);
    let byte_level = |regex: bool| json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": regex});
    let split = |p: &str| json!({"type": "Split", "pattern": {"Regex": p}, "behavior": "Isolated", "invert": false});
    let smollm = json!({"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": true}, byte_level(true)]});
    let bos_template = |bos: &str, id: usize| {
        json!({"type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                       {"SpecialToken": {"id": "<|im_end|>", "type_id": 0}}],
            "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {bos: {"id": bos, "ids": [id], "tokens": [bos]},
                               "<|im_end|>": {"id": "<|im_end|>", "ids": [id + 1], "tokens": ["<|im_end|>"]}}})
    };

    let plain = train(&training, 600, &[]);
    let holes: Vec<u8> = (0u8..9).chain([0x7f, 0xC0, 0xF8]).collect();
    let holey = train(&training, 300, &holes);
    let n = plain.vocab.len();

    let specs = vec![
        (spec("smollm", smollm.clone()), &plain),
        (spec("gpt2", byte_level(true)), &plain),
        (spec("no split", byte_level(false)), &plain),
        (
            Spec {
                post: json!({"type": "Sequence", "processors": [byte_level(true), bos_template("<|im_start|>", n)]}),
                ignore_merges: true,
                ..spec(
                    "llama3 + template",
                    json!({"type": "Sequence", "pretokenizers": [split(LLAMA3), byte_level(false)]}),
                )
            },
            &plain,
        ),
        (
            spec(
                "qwen2",
                json!({"type": "Sequence", "pretokenizers": [split(QWEN2), byte_level(false)]}),
            ),
            &plain,
        ),
        (
            Spec {
                added: vec![
                    ("<|im", true),
                    ("<|im_start|>", false),
                    ("m_st", true),
                    ("<|", false),
                    ("end", true),
                ],
                legacy_merges: true,
                odd_merges: true,
                ..spec(
                    "normalized added tokens, legacy and odd merges",
                    smollm.clone(),
                )
            },
            &plain,
        ),
        (spec("missing bytes dropped", smollm.clone()), &holey),
        (
            Spec {
                unk: Some("<unk>"),
                ..spec("missing bytes to unk", byte_level(true))
            },
            &holey,
        ),
        (
            Spec {
                unk: Some("<unk>"),
                fuse_unk: true,
                ..spec("missing bytes to fused unk", smollm.clone())
            },
            &holey,
        ),
    ];
    let texts = corpus(seed() ^ 3, 1500);
    for (s, trained) in &specs {
        let bytes = build_json(s, trained);
        let theirs = tokenizers::Tokenizer::from_bytes(&bytes)
            .unwrap_or_else(|e| panic!("{}: tokenizers refuses the test file: {e}", s.label));
        let ours = Tokenizer::from_bytes(&bytes, None).unwrap();
        assert_same(s.label, &ours, &theirs, &texts);
        assert_same_vocab(s.label, &ours, &theirs);
    }
}

// ---- Fallback and cache ----------------------------------------------------------------------

#[test]
fn other_pipelines_fall_back_to_tokenizers_crate() {
    let training = corpus(seed() ^ 4, 100);
    let trained = train(&training, 100, &[]);
    let base = build_json(
        &spec(
            "base",
            json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true}),
        ),
        &trained,
    );
    let base: Value = serde_json::from_slice(&base).unwrap();
    let changes: [(&str, Value); 4] = [
        ("/normalizer", json!({"type": "NFC"})),
        (
            "/pre_tokenizer",
            json!({"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true}),
        ),
        (
            "/pre_tokenizer",
            json!({"type": "Split", "pattern": {"Regex": "\\s+"}, "behavior": "Isolated", "invert": false}),
        ),
        ("/model/dropout", json!(0.5)),
    ];
    let texts = corpus(seed() ^ 5, 100);
    for (pointer, value) in changes {
        let mut v = base.clone();
        *v.pointer_mut(pointer).unwrap() = value;
        let bytes = serde_json::to_vec(&v).unwrap();
        let ours = Tokenizer::from_bytes(&bytes, None).unwrap();
        assert_eq!(ours.backend(), Backend::Tokenizers, "{pointer}");
        assert!(ours.unsupported_reason().is_some());
        if pointer != "/model/dropout" {
            let theirs = tokenizers::Tokenizer::from_bytes(&bytes).unwrap();
            for text in &texts {
                let want = theirs.encode(text.as_str(), false).unwrap();
                assert_eq!(
                    ours.encode(text, false).unwrap(),
                    want.get_ids(),
                    "{pointer} {text:?}"
                );
            }
        }
    }
}

#[test]
fn cache_is_used_only_when_current_and_intact() {
    let training = corpus(seed() ^ 6, 200);
    let trained = train(&training, 200, &[]);
    let s = spec(
        "cache",
        json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true}),
    );
    let json = build_json(&s, &trained);
    let dir = write_dir("cache", &json);
    let cache = dir.join(CACHE_FILE_NAME);
    let texts = corpus(seed() ^ 7, 200);
    let ids = |t: &Tokenizer| -> Vec<Vec<u32>> {
        texts.iter().map(|x| t.encode(x, true).unwrap()).collect()
    };

    let first = Tokenizer::from_dir(&dir).unwrap();
    assert_eq!(first.backend(), Backend::Json);
    assert!(cache.is_file());
    let second = Tokenizer::from_dir(&dir).unwrap();
    assert_eq!(second.backend(), Backend::Cached);
    assert_eq!(ids(&first), ids(&second));
    assert!(
        second.inner().is_ok(),
        "the tokenizers form loads on demand"
    );

    // Every damaged form of the cache is refused (and replaced by a good one).
    let good = std::fs::read(&cache).unwrap();
    let mut damaged = vec![
        good[..good.len() / 2].to_vec(),
        Vec::new(),
        b"EITOKBPE".to_vec(),
    ];
    for at in [0, 9, 20, 44, good.len() / 3, good.len() - 1] {
        let mut d = good.clone();
        d[at] ^= 0x40;
        damaged.push(d);
    }
    for d in damaged {
        std::fs::write(&cache, &d).unwrap();
        let t = Tokenizer::from_dir(&dir).unwrap();
        assert_eq!(t.backend(), Backend::Json);
        assert_eq!(ids(&t), ids(&first));
        assert_eq!(std::fs::read(&cache).unwrap(), good);
    }

    // A changed tokenizer.json (same length, one merge less effective) is noticed.
    let mut changed: Value = serde_json::from_slice(&json).unwrap();
    let merges = changed["model"]["merges"].as_array_mut().unwrap();
    merges.swap(0, 1);
    let changed = serde_json::to_vec(&changed).unwrap();
    assert_eq!(changed.len(), json.len());
    std::fs::write(dir.join("tokenizer.json"), &changed).unwrap();
    let t = Tokenizer::from_dir(&dir).unwrap();
    assert_eq!(t.backend(), Backend::Json);
    let theirs = tokenizers::Tokenizer::from_bytes(&changed).unwrap();
    assert_same("changed", &t, &theirs, &texts);
    let _ = std::fs::remove_dir_all(dir);
}
