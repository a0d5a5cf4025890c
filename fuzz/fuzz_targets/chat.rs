//! Chat-template rendering: hostile messages through a ChatML template like the ones models ship,
//! or a hostile template.
//!
//! Input: a mode byte, then fields separated by 0xFF. Mode bit 0 set: the first field is the
//! template. The other fields alternate role and content. Mode bit 1: add the generation prompt.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| edgeinfer_fuzz::harness::chat(data));
