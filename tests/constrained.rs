//! Constrained decoding on the real SmolLM2-135M-Instruct: JSON Schema, JSON object, regex, Lark
//! and GBNF constraints sampled at temperature 1 with several seeds; each text that ends at `stop`
//! is checked independently (serde_json + the `jsonschema` crate, the `regex` crate). A generation
//! cut by `max_tokens` reports `length`; a constraint that does not compile is an `Options` error
//! naming `constraint`.
//!
//! The model directory comes from `EDGEINFER_MODEL_DIR` / `weights/SmolLM2-135M-Instruct`; without
//! it the tests are skipped with a message, unless `EDGEINFER_REQUIRE_MODEL=1`.

mod common;

use std::sync::{Arc, OnceLock};

use edgeinfer::{
    Constraint, Error, FinishReason, GenerateOptions, Generation, Message, Model, ModelOptions,
    Prompt, SamplerConfig, SessionOptions,
};
use serde_json::json;

fn model() -> Option<Arc<Model>> {
    static MODEL: OnceLock<Option<Arc<Model>>> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            let dir = common::real_model_dir()?;
            let opts = ModelOptions {
                threads: Some(1),
                ..ModelOptions::default()
            };
            Some(Model::load_with(dir, &opts).expect("load model"))
        })
        .clone()
}

fn sampled(seed: u64) -> SamplerConfig {
    SamplerConfig {
        temperature: 1.0,
        top_k: 0,
        top_p: 1.0,
        min_p: 0.0,
        seed,
        ..SamplerConfig::default()
    }
}

fn generate(
    model: &Arc<Model>,
    user: &str,
    constraint: Constraint,
    sampler: SamplerConfig,
    max_tokens: usize,
) -> edgeinfer::Result<Generation> {
    let mut session = model.session(SessionOptions {
        ctx: 1024,
        ..SessionOptions::default()
    })?;
    let messages = [Message::new("user", user)];
    let opts = GenerateOptions {
        max_tokens,
        sampler,
        constraint: Some(constraint),
        ..GenerateOptions::default()
    };
    let mut streamed = String::new();
    let g = session.generate(&Prompt::Chat(&messages), &opts, |piece| {
        streamed.push_str(piece);
        true
    })?;
    assert_eq!(streamed, g.text, "the streamed pieces make up the text");
    Ok(g)
}

fn schemas() -> Vec<(&'static str, serde_json::Value)> {
    vec![
        (
            "Describe a person as JSON.",
            json!({
                "type": "object",
                "properties": {
                    "name": {"type": "string", "maxLength": 24},
                    "age": {"type": "integer", "minimum": 0, "maximum": 120},
                    "tags": {"type": "array", "items": {"type": "string", "maxLength": 12}, "maxItems": 3},
                    "active": {"type": "boolean"}
                },
                "required": ["name", "age", "tags", "active"],
                "additionalProperties": false
            }),
        ),
        (
            "What is the weather in Paris? Answer in JSON.",
            json!({
                "type": "object",
                "properties": {
                    "city": {"type": "string", "enum": ["Paris", "London", "Tokyo"]},
                    "celsius": {"type": "number", "minimum": -50, "maximum": 60},
                    "sky": {"enum": ["sunny", "cloudy", "rain"]}
                },
                "required": ["city", "celsius", "sky"],
                "additionalProperties": false
            }),
        ),
        (
            "List three fruits with their colours as JSON.",
            json!({
                "type": "array",
                "minItems": 1,
                "maxItems": 3,
                "items": {
                    "type": "object",
                    "properties": {
                        "fruit": {"type": "string", "pattern": "^[a-z]{1,12}$"},
                        "colour": {"type": "string", "maxLength": 10},
                        "ripe": {"type": ["boolean", "null"]}
                    },
                    "required": ["fruit", "colour"],
                    "additionalProperties": false
                }
            }),
        ),
    ]
}

#[test]
fn json_schema_texts_parse_and_validate() {
    let Some(model) = model() else { return };
    for (prompt, schema) in schemas() {
        let validator = jsonschema::validator_for(&schema).expect("the test's schema is valid");
        for seed in [1, 2, 3] {
            let g = generate(
                &model,
                prompt,
                Constraint::JsonSchema(schema.clone()),
                sampled(seed),
                400,
            )
            .unwrap();
            assert_eq!(
                g.finish_reason,
                FinishReason::Stop,
                "seed {seed}: {prompt}: {:?}",
                g.text
            );
            let value: serde_json::Value = serde_json::from_str(&g.text)
                .unwrap_or_else(|e| panic!("seed {seed}: not JSON ({e}): {:?}", g.text));
            let errors: Vec<String> = validator
                .iter_errors(&value)
                .map(|e| e.to_string())
                .collect();
            assert!(
                errors.is_empty(),
                "seed {seed}: {:?} fails the schema: {errors:?}",
                g.text
            );
        }
    }
}

#[test]
fn json_object_texts_are_objects() {
    let Some(model) = model() else { return };
    for seed in [4, 5] {
        let g = generate(
            &model,
            "Give me a small JSON object about a cat.",
            Constraint::JsonObject,
            sampled(seed),
            300,
        )
        .unwrap();
        if g.finish_reason == FinishReason::Stop {
            let v: serde_json::Value = serde_json::from_str(&g.text)
                .unwrap_or_else(|e| panic!("seed {seed}: not JSON ({e}): {:?}", g.text));
            assert!(v.is_object(), "seed {seed}: {:?}", g.text);
        } else {
            assert_eq!(g.finish_reason, FinishReason::Length, "{:?}", g.text);
        }
    }
}

#[test]
fn regex_texts_match() {
    let Some(model) = model() else { return };
    let patterns = [
        r"[0-9]{4}-[0-9]{2}-[0-9]{2}",
        r"(yes|no), because [a-z ]{1,40}\.",
        r"#[0-9a-f]{6}",
    ];
    for rx in patterns {
        let whole = regex::Regex::new(&format!("^(?:{rx})$")).unwrap();
        for seed in [7, 8] {
            let g = generate(
                &model,
                "Answer briefly.",
                Constraint::Regex(rx.to_string()),
                sampled(seed),
                100,
            )
            .unwrap();
            assert_eq!(g.finish_reason, FinishReason::Stop, "{rx}: {:?}", g.text);
            assert!(whole.is_match(&g.text), "{rx} does not match {:?}", g.text);
        }
    }
}

#[test]
fn lark_and_gbnf_grammars_constrain() {
    let Some(model) = model() else { return };
    let lark = "start: answer \" \" NUMBER\nanswer: \"yes\" | \"no\"\nNUMBER: /[1-9][0-9]{0,2}/\n";
    let gbnf = "root ::= answer \" \" num\nanswer ::= \"yes\" | \"no\"\nnum ::= [1-9] [0-9]{0,2}\n";
    let whole = regex::Regex::new(r"^(yes|no) [1-9][0-9]{0,2}$").unwrap();
    for (c, seed) in [
        (Constraint::Lark(lark.into()), 9),
        (Constraint::Gbnf(gbnf.into()), 10),
    ] {
        let kind = c.kind();
        let g = generate(
            &model,
            "Is water wet? How sure, in percent?",
            c,
            sampled(seed),
            40,
        )
        .unwrap();
        assert_eq!(g.finish_reason, FinishReason::Stop, "{kind}: {:?}", g.text);
        assert!(whole.is_match(&g.text), "{kind}: {:?}", g.text);
    }
}

#[test]
fn cut_by_max_tokens_is_length() {
    let Some(model) = model() else { return };
    let schema = &schemas()[0].1;
    let g = generate(
        &model,
        "Describe a person as JSON.",
        Constraint::JsonSchema(schema.clone()),
        SamplerConfig::greedy(),
        4,
    )
    .unwrap();
    assert_eq!(g.finish_reason, FinishReason::Length, "{:?}", g.text);
    assert_eq!(g.tokens.len(), 4);
    assert!(g.text.starts_with('{'), "{:?}", g.text);
}

#[test]
fn bad_constraints_are_typed_errors() {
    let Some(model) = model() else { return };
    let bad = [
        Constraint::JsonSchema(json!({"type": "nonsense"})),
        Constraint::JsonSchema(
            json!({"type": "object", "properties": {"a": {"$ref": "#/nowhere"}}}),
        ),
        Constraint::Regex("(unclosed".into()),
        Constraint::Lark("start: undefined_rule\n".into()),
        Constraint::Gbnf("root ::= (\"a\"".into()),
        Constraint::Gbnf("item ::= \"a\"".into()),
    ];
    for c in bad {
        let kind = c.kind();
        match generate(&model, "hi", c, SamplerConfig::greedy(), 8) {
            Err(Error::Options { field, reason }) => {
                assert_eq!(field, "constraint", "{kind}: {reason}");
                assert!(!reason.is_empty());
            }
            other => panic!("{kind}: expected an Options error, got {other:?}"),
        }
    }
    // A stop string would cut the text where the constraint may not end: refused by name.
    let mut session = model.session(SessionOptions::default()).unwrap();
    let opts = GenerateOptions {
        stop: vec!["}".into()],
        constraint: Some(Constraint::JsonObject),
        ..GenerateOptions::default()
    };
    match session.generate(&Prompt::Text("x"), &opts, |_| true) {
        Err(Error::Options { field, .. }) => assert_eq!(field, "stop"),
        other => panic!("expected an Options error naming stop, got {other:?}"),
    }
}

#[test]
fn cached_constraint_gives_the_same_text() {
    let Some(model) = model() else { return };
    let c = Constraint::Regex(r"[A-Z][a-z]{2,8} [0-9]{1,3}".into());
    let a = generate(&model, "Name and number.", c.clone(), sampled(11), 30).unwrap();
    let b = generate(&model, "Name and number.", c, sampled(11), 30).unwrap();
    assert_eq!(
        a.text, b.text,
        "the cached matcher starts where a fresh one does"
    );
    assert_eq!(a.finish_reason, FinishReason::Stop);
}
