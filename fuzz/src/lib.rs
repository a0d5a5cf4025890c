//! edgeinfer's fuzz targets (`fuzz_targets/*.rs` call [`harness`]); see README.md, "Reliability".

pub mod harness;
