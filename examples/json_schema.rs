//! Constrained decoding: the model's answer is JSON that validates against a schema.
//!
//! ```text
//! cargo run --release --example json_schema -- [MODEL_DIR]
//! ```
//! MODEL_DIR defaults to `weights/SmolLM2-135M-Instruct` (fetch it with `scripts/fetch-model.sh`).

use edgeinfer::{
    Constraint, GenerateOptions, Message, Model, Prompt, SamplerConfig, SessionOptions,
};

fn main() -> anyhow::Result<()> {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "weights/SmolLM2-135M-Instruct".into());
    let model = Model::load(&dir)?;
    let mut session = model.session(SessionOptions::default())?;

    let schema = serde_json::json!({
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "country": {"type": "string"},
            "population_millions": {"type": "number", "minimum": 0}
        },
        "required": ["city", "country", "population_millions"],
        "additionalProperties": false
    });
    let messages = [Message::new(
        "user",
        "What is the capital of France? Answer in JSON.",
    )];
    let opts = GenerateOptions {
        max_tokens: 128,
        sampler: SamplerConfig::greedy(),
        // Every token is masked to keep the text inside the schema; compiled once per model.
        constraint: Some(Constraint::JsonSchema(schema)),
        ..GenerateOptions::default()
    };
    let out = session.generate(&Prompt::Chat(&messages), &opts, |_| true)?;
    // `stop`: the value is complete and valid; `length`: max_tokens cut it short.
    println!("{} ({})", out.text, out.finish_reason.as_str());
    if out.finish_reason == edgeinfer::FinishReason::Stop {
        let value: serde_json::Value = serde_json::from_str(&out.text)?;
        println!("city: {}", value["city"]);
    }
    println!(
        "{} tokens, {:.2} ms of them in the constraint",
        out.timings.generated_tokens, out.timings.constraint_ms
    );
    Ok(())
}
