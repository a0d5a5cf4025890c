//! The FaaS event (`examples/lambda`): JSON through `GenerateRequest::from_value` and
//! `into_job`.
//!
//! Input: the event's JSON text.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| edgeinfer_fuzz::harness::event(data));
