//! [`State::prefault`] makes a session's arena and KV cache resident when it opens; without it the
//! cache's pages are backed only as positions are first reached, which is how `infer serve`'s RSS
//! used to grow in steps for as long as it ran (cli/tests/soak.rs). Linux only (reads the process's
//! own `RssAnon`); alone in its test binary, so no other test allocates while it measures.

use edgeinfer_models::state::{KvDType, StateOptions};
use edgeinfer_models::{Config, State};

/// `RssAnon` of this process in bytes, or `None` off Linux.
fn rss_anon() -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: usize = status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

#[test]
fn prefault_makes_the_kv_cache_resident() {
    if rss_anon().is_none() {
        eprintln!("SKIPPED: no RssAnon in /proc/self/status on this system");
        return;
    }
    let cfg = Config::from_json(
        r#"{"model_type": "llama", "hidden_size": 128, "intermediate_size": 256,
            "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 2,
            "vocab_size": 256, "head_dim": 32, "max_position_embeddings": 16384}"#,
    )
    .unwrap();
    let opts = StateOptions {
        ctx: 16384,
        batch: 8,
        threads: 1,
        all_logits: false,
        kv_dtype: KvDType::F16,
        acts: edgeinfer_kernels::quant::ActQuant::Q8,
    };
    let before = rss_anon().unwrap();
    let mut state = State::new(&cfg, opts).unwrap();
    let opened = rss_anon().unwrap();
    // 4 layers × 16384 positions × 64 (kv_heads × head_dim) × 2 (keys, values) × 2 bytes: 16 MiB.
    let kv = state.kv_bytes();
    assert_eq!(kv, 16 << 20);
    // Zeroed by the allocator as fresh pages the kernel has not backed yet: nearly none resident.
    assert!(
        opened.saturating_sub(before) < kv / 4,
        "opening alone made {} of the cache's {kv} bytes resident",
        opened.saturating_sub(before)
    );
    state.prefault();
    let resident = rss_anon().unwrap().saturating_sub(opened);
    assert!(
        resident >= kv * 95 / 100,
        "prefault made {resident} bytes resident, the KV cache alone is {kv}"
    );
    // Still a working, empty state.
    assert!(state.is_empty());
}
