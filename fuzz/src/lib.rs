//! edgeinfer's fuzz targets (`fuzz_targets/*.rs` call [`harness`]); see docs/reliability.md,
//! "Fuzzing".

pub mod harness;
