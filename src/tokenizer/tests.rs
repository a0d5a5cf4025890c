//! Unit tests of the tokenizer front end (split out of `tokenizer.rs`).
use super::*;
use serde_json::json;

const SMOLLM2_TEMPLATE: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// Bytes as GPT-2 byte-level characters.
fn bl(bytes: &[u8]) -> String {
    let table = unicode_to_byte_table();
    bytes
        .iter()
        .map(|&b| {
            let code = table.iter().position(|&x| x == Some(b)).unwrap();
            char::from_u32(code as u32).unwrap()
        })
        .collect()
}

fn added(id: u32, content: &str, special: bool) -> serde_json::Value {
    json!({"id": id, "content": content, "single_word": false, "lstrip": false, "rstrip": false,
           "normalized": false, "special": special})
}

/// A byte-level BPE: the 256 byte tokens, merges that build whole words, a token ending in the
/// middle of a CJK character, one spanning two characters, two specials.
fn byte_level_json() -> Vec<u8> {
    let mut vocab = serde_json::Map::new();
    for b in 0..=255u8 {
        vocab.insert(bl(&[b]), json!(b as u32));
    }
    let pairs: [(&[u8], &[u8]); 10] = [
        (b"h", b"e"),
        (b"l", b"l"),
        (b"he", b"ll"),
        (b"hell", b"o"),
        (b" ", b"w"),
        (b"o", b"r"),
        (b" w", b"or"),
        (&[0xE4], &[0xBD]), // first two bytes of 你
        (&[0xA0], &[0xE5]), // last byte of 你 + first of 好
        (&[0xF0], &[0x9F]), // half an emoji
    ];
    let mut merges = Vec::new();
    for (a, b) in pairs {
        let merged = [a, b].concat();
        vocab.insert(bl(&merged), json!(vocab.len()));
        merges.push(json!([bl(a), bl(b)]));
    }
    let n = vocab.len() as u32;
    serde_json::to_vec(&json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": [added(n, "<|im_start|>", true), added(n + 1, "<|im_end|>", true)],
        "normalizer": null,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                  "vocab": vocab, "merges": merges}
    }))
    .unwrap()
}

/// A SentencePiece-style BPE (Llama/Mistral layout): `▁` word marker, `<0xNN>` byte fallback,
/// and a decoder that strips the prefix space.
fn sentencepiece_json() -> Vec<u8> {
    let mut vocab = serde_json::Map::new();
    for (i, t) in ["<unk>", "<s>", "</s>"].iter().enumerate() {
        vocab.insert(t.to_string(), json!(i));
    }
    for b in 0..=255u32 {
        vocab.insert(format!("<0x{b:02X}>"), json!(3 + b));
    }
    for t in ["▁", "h", "i", "▁h", "▁hi", "你"] {
        vocab.insert(t.to_string(), json!(vocab.len()));
    }
    serde_json::to_vec(&json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": [added(0, "<unk>", true), added(1, "<s>", true), added(2, "</s>", true)],
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "▁"},
            {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]},
        "pre_tokenizer": null,
        "post_processor": null,
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
            {"type": "ByteFallback"}, {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
        "model": {"type": "BPE", "dropout": null, "unk_token": "<unk>", "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": true, "byte_fallback": true, "ignore_merges": false,
                  "vocab": vocab, "merges": [["▁", "h"], ["▁h", "i"]]}
    }))
    .unwrap()
}

/// A fresh directory holding the given files.
fn dir_with(name: &str, files: &[(&str, &[u8])]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("edgeinfer-tok-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for (file, bytes) in files {
        std::fs::write(dir.join(file), bytes).unwrap();
    }
    dir
}

fn stream(tok: &Tokenizer, ids: &[u32]) -> (String, Vec<String>) {
    let mut d = StreamDecoder::new(tok);
    let mut pieces = Vec::new();
    for &id in ids {
        if let Some(p) = d.push(tok, id) {
            pieces.push(p.to_owned());
        }
    }
    if let Some(p) = d.finish() {
        pieces.push(p.to_owned());
    }
    (pieces.concat(), pieces)
}

const TEXTS: [&str; 7] = [
    "hello world",
    "你好",
    "Hello 你好, world 😀! héllo\n\tdone",
    "<|im_start|>user\nhi 你好<|im_end|>\n",
    "😀😀 你好你好",
    "",
    " leading and trailing ",
];

#[test]
fn byte_level_roundtrip_and_stream_equals_decode() {
    let tok = Tokenizer::from_bytes(&byte_level_json(), None).unwrap();
    assert_eq!(
        tok.rules,
        DecodeRules {
            byte_level: true,
            ..DecodeRules::default()
        }
    );
    assert_eq!(tok.vocab_size(), 256 + 10 + 2);
    for text in TEXTS {
        let ids = tok.encode(text, false).unwrap();
        let decoded = tok.decode(&ids).unwrap();
        assert_eq!(decoded, text);
        assert_eq!(stream(&tok, &ids).0, decoded, "{text:?} ids {ids:?}");
    }
    // Specials are single ids and decode to their content.
    let start = tok.token_id("<|im_start|>").unwrap();
    assert_eq!(tok.encode("<|im_start|>", false).unwrap(), vec![start]);
    assert_eq!(tok.token_bytes(start), Some(&b"<|im_start|>"[..]));
    assert_eq!(
        tok.token_id("hello"),
        Some(tok.encode("hello", false).unwrap()[0])
    );
}

#[test]
fn stream_holds_back_partial_characters() {
    let tok = Tokenizer::from_bytes(&byte_level_json(), None).unwrap();
    // 你好 → [E4 BD] [A0 E5] [A5] [BD]: only the 2nd and 4th tokens complete a character.
    let ids = tok.encode("你好", false).unwrap();
    assert_eq!(ids.len(), 4);
    let mut d = StreamDecoder::new(&tok);
    let got: Vec<Option<String>> = ids
        .iter()
        .map(|&id| d.push(&tok, id).map(str::to_owned))
        .collect();
    assert_eq!(got, [None, Some("你".into()), None, Some("好".into())]);
    assert_eq!(d.finish(), None);
    let (_, pieces) = stream(&tok, &tok.encode("a😀b", false).unwrap());
    assert_eq!(pieces, ["a", "😀", "b"]);
}

#[test]
fn stream_invalid_and_truncated_bytes_match_lossy_decode() {
    let tok = Tokenizer::from_bytes(&byte_level_json(), None).unwrap();
    let half = tok.encode("你", false).unwrap()[0]; // [E4 BD]
    let h = tok.encode("h", false).unwrap()[0];
    let lone_cont = 0x80; // byte-level id of a bare continuation byte
    for ids in [
        vec![half, h],
        vec![half],
        vec![h, half],
        vec![lone_cont, h, lone_cont, lone_cont],
        vec![half, half],
    ] {
        let want = tok.decode(&ids).unwrap();
        assert_eq!(stream(&tok, &ids).0, want, "{ids:?}");
    }
    // Unknown ids produce nothing, as decode skips them.
    let mut d = StreamDecoder::new(&tok);
    assert_eq!(d.push(&tok, 99_999), None);
    assert_eq!(tok.token_bytes(99_999), None);
    assert_eq!(tok.decode(&[h, 99_999]).unwrap(), "h");
}

#[test]
fn sentencepiece_byte_fallback_stream_equals_decode() {
    let tok = Tokenizer::from_bytes(&sentencepiece_json(), None).unwrap();
    assert_eq!(
        tok.rules,
        DecodeRules {
            byte_level: false,
            byte_fallback: true,
            metaspace: Some('▁'),
            strip_leading: 1
        }
    );
    let ids = tok.encode("hi 你好 😀 hi", false).unwrap();
    assert!(
        ids.contains(&tok.token_id("<0xE5>").unwrap()),
        "好 should fall back to bytes: {ids:?}"
    );
    assert_eq!(
        tok.token_bytes(tok.token_id("<0xE5>").unwrap()),
        Some(&[0xE5u8][..])
    );
    assert_eq!(
        tok.token_bytes(tok.token_id("▁hi").unwrap()),
        Some(&b" hi"[..])
    );
    for text in ["hi 你好 😀 hi", "hi", "你", "😀", "ih hi"] {
        let ids = tok.encode(text, false).unwrap();
        let decoded = tok.decode(&ids).unwrap();
        assert_eq!(decoded, text);
        assert_eq!(stream(&tok, &ids).0, decoded, "{text:?} ids {ids:?}");
    }
    // A continuation keeps the word's space, which decode strips at the start of a text.
    let hi = tok.token_id("▁hi").unwrap();
    let mut d = StreamDecoder::continuing(&tok);
    assert_eq!(d.push(&tok, hi), Some(" hi"));
    let mut d = StreamDecoder::new(&tok);
    assert_eq!(d.push(&tok, hi), Some("hi"));
    assert_eq!(d.push(&tok, hi), Some(" hi"));
}

#[test]
fn from_dir_reads_config_and_chat_template() {
    let config = json!({
        "add_bos_token": false,
        "bos_token": {"content": "<|im_start|>", "lstrip": false, "normalized": false, "rstrip": false, "special": true},
        "eos_token": "<|im_end|>",
        "chat_template": SMOLLM2_TEMPLATE,
    });
    let dir = dir_with(
        "config",
        &[
            ("tokenizer.json", &byte_level_json()),
            (
                "tokenizer_config.json",
                &serde_json::to_vec(&config).unwrap(),
            ),
        ],
    );
    let tok = Tokenizer::from_dir(&dir).unwrap();
    assert_eq!(tok.bos_token(), Some("<|im_start|>"));
    assert_eq!(tok.eos_token(), Some("<|im_end|>"));
    assert!(!tok.add_bos_token());
    let text = tok
        .chat_template()
        .unwrap()
        .render(&[crate::Message::new("user", "hello")], true)
        .unwrap();
    assert!(
        text.ends_with("<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n"),
        "{text}"
    );
    let ids = tok.encode(&text, false).unwrap();
    assert_eq!(
        ids.iter()
            .filter(|&&id| Some(id) == tok.token_id("<|im_end|>"))
            .count(),
        2
    );
    assert_eq!(tok.decode(&ids).unwrap(), text);

    // Without a config everything is absent; a list-form template picks "default".
    let dir2 = dir_with("noconfig", &[("tokenizer.json", &byte_level_json())]);
    let tok = Tokenizer::from_dir(&dir2).unwrap();
    assert!(
        tok.bos_token().is_none() && tok.eos_token().is_none() && tok.chat_template().is_none()
    );
    let listed = json!({"add_bos_token": true, "chat_template": [
        {"name": "tool_use", "template": "{{ nope"}, {"name": "default", "template": "X{{ messages|length }}"}]});
    let tok = Tokenizer::from_bytes(
        &byte_level_json(),
        Some(&serde_json::to_vec(&listed).unwrap()),
    )
    .unwrap();
    assert!(tok.add_bos_token());
    assert_eq!(
        tok.chat_template().unwrap().render(&[], false).unwrap(),
        "X0"
    );
    let _ = std::fs::remove_dir_all(dir);
    let _ = std::fs::remove_dir_all(dir2);
}

#[test]
fn bad_files_are_errors() {
    let missing = std::env::temp_dir().join("edgeinfer-tok-does-not-exist");
    match Tokenizer::from_dir(&missing) {
        Err(TokenizerError::Load { path, .. }) => {
            assert_eq!(path, missing.join("tokenizer.json"))
        }
        other => panic!("expected Load, got {other:?}"),
    }
    let dir = dir_with(
        "bad",
        &[
            ("tokenizer.json", b"{\"model\": 3}"),
            ("tokenizer_config.json", b"{}"),
        ],
    );
    assert!(matches!(
        Tokenizer::from_dir(&dir),
        Err(TokenizerError::Load { .. })
    ));
    assert!(matches!(
        Tokenizer::from_bytes(&byte_level_json(), Some(b"not json")),
        Err(TokenizerError::Load { .. })
    ));
    let bad_template = serde_json::to_vec(&json!({"chat_template": "{% for %}"})).unwrap();
    assert!(matches!(
        Tokenizer::from_bytes(&byte_level_json(), Some(&bad_template)),
        Err(TokenizerError::ChatTemplate { .. })
    ));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn byte_table_inverts_gpt2_mapping() {
    let table = unicode_to_byte_table();
    let mapped: Vec<u8> = table.iter().flatten().copied().collect();
    assert_eq!(mapped.len(), 256);
    assert_eq!(table['Ġ' as usize], Some(b' '));
    assert_eq!(table['Ċ' as usize], Some(b'\n'));
    assert_eq!(table['A' as usize], Some(b'A'));
    assert_eq!(byte_fallback_token("<0x0A>"), Some(b'\n'));
    assert_eq!(byte_fallback_token("<0x0A"), None);
    assert_eq!(byte_fallback_token("<0x1>"), None);
}

/// The real SmolLM2 tokenizer, once the importer has written it: the fixture's ids and texts.
#[test]
fn smollm2_fixture_when_available() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = root.join("weights/SmolLM2-135M-Instruct");
    let fixture = Path::new("/work/shared/fixtures/smollm2-tokenizer-cases.json");
    if !dir.join("tokenizer.json").is_file() || !fixture.is_file() {
        eprintln!("skipped: {} or the fixture is missing", dir.display());
        return;
    }
    let tok = Tokenizer::from_dir(&dir).unwrap();
    let cases: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture).unwrap()).unwrap();
    for case in cases["cases"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let want: Vec<u32> = case["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(tok.encode(text, false).unwrap(), want, "{text:?}");
        assert_eq!(tok.decode(&want).unwrap(), text);
        assert_eq!(stream(&tok, &want).0, text, "{text:?}");
    }
}
