//! The library in a few lines: load a model once, share it, generate with streaming.
//!
//! ```text
//! cargo run --release --example generate -- [MODEL_DIR] [PROMPT]
//! ```
//! MODEL_DIR defaults to `weights/SmolLM2-135M-Instruct` (fetch it with `scripts/fetch-model.sh`).

use std::io::Write;
use std::sync::Arc;

use edgeinfer::{GenerateOptions, Message, Model, Prompt, SamplerConfig, SessionOptions};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = args
        .next()
        .unwrap_or_else(|| "weights/SmolLM2-135M-Instruct".into());
    let question = args
        .next()
        .unwrap_or_else(|| "What is the capital of France?".into());

    // Load once: weights are mapped, not copied. `Model` is Send + Sync; share it with Arc.
    let model: Arc<Model> = Model::load(&dir)?;

    // One session per conversation; sessions can live on different threads.
    let handles: Vec<_> = (0..2)
        .map(|i| {
            let model = Arc::clone(&model);
            std::thread::spawn(move || -> edgeinfer::Result<String> {
                let mut session = model.session(SessionOptions::default())?;
                let opts = GenerateOptions {
                    max_tokens: 16,
                    sampler: SamplerConfig {
                        seed: i,
                        ..Default::default()
                    },
                    ..Default::default()
                };
                Ok(session
                    .generate(&Prompt::Text("Once upon a time"), &opts, |_| true)?
                    .text)
            })
        })
        .collect();
    for (i, h) in handles.into_iter().enumerate() {
        println!(
            "thread {i}: Once upon a time{}",
            h.join().expect("thread panicked")?
        );
    }

    // Streaming a chat answer: the callback gets each piece of text as soon as it is complete.
    let mut session = model.session(SessionOptions::default())?;
    let messages = [Message::new("user", question.as_str())];
    let opts = GenerateOptions {
        max_tokens: 64,
        sampler: SamplerConfig::greedy(),
        ..Default::default()
    };
    let result = session.generate(&Prompt::Chat(&messages), &opts, |piece| {
        print!("{piece}");
        std::io::stdout().flush().is_ok()
    })?;
    let t = result.timings;
    println!(
        "\n[{} prompt tokens in {:.1} ms, {} generated at {:.1} tokens/s, finish: {}]",
        t.prompt_tokens,
        t.prefill_ms,
        t.generated_tokens,
        t.decode_tokens_per_s(),
        result.finish_reason.as_str()
    );
    Ok(())
}
