//! Tokenizer loading and use: `tokenizer.json` (+ `tokenizer_config.json`) through our BPE builder,
//! or the payload of a `tokenizer.edgeinfer.bin` cache; then encoding and decoding hostile text.
//!
//! Input: a mode byte, then fields separated by 0xFF. Even mode: tokenizer.json, tokenizer_config.json,
//! text. Odd mode: cache payload (the rest, up to the last 0xFF), text after it.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| edgeinfer_fuzz::harness::tokenizer(data));
