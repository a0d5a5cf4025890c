//! The OpenAI request bodies of `infer serve` (`/v1/completions`, `/v1/chat/completions`) through
//! `GenerateRequest::parse` and `into_job`.
//!
//! Input: a mode byte (bit 0 set: chat completions), then the body.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| edgeinfer_fuzz::harness::openai(data));
