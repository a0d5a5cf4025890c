//! `config.json` parsing into the typed, validated `Config`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| edgeinfer_fuzz::harness::config(data));
