//! Safetensors headers and our tensor validation: offsets, lengths, dtypes, shapes against the
//! config, quantized-plane layouts and their `__metadata__`.
//!
//! Input: a little-endian u16 `n`, `n` bytes of `config.json`, then the safetensors file.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| edgeinfer_fuzz::harness::safetensors(data));
