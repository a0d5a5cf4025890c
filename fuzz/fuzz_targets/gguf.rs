//! GGUF import: header, metadata, tensor infos and tensor data through `import_gguf`, which writes a
//! checkpoint only when the whole file checks out.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| edgeinfer_fuzz::harness::gguf(data));
