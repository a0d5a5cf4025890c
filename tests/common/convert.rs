//! Test helpers that need the converter (`edgeinfer-convert`), kept out of `common` because the
//! lean Lambda package's tests include `common` and do not depend on the converter.

use std::path::Path;

use edgeinfer_convert::quantize::{quantize_checkpoint, QuantizeOptions, QuantizeSummary};
use edgeinfer_kernels::quant::QFormat;

/// Quantizes `input` into `out` in `format`, checking the progress events (one per tensor, in
/// order).
pub fn quantize(input: &Path, out: &Path, format: QFormat) -> QuantizeSummary {
    let mut events = 0;
    let s = quantize_checkpoint(input, out, &QuantizeOptions::new(format), &mut |p| {
        assert_eq!(p.index, events);
        events += 1;
    })
    .unwrap_or_else(|e| panic!("quantize {} to {format}: {e}", input.display()));
    assert_eq!(events, s.tensors);
    s
}
