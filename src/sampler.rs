//! STUB (being written by another engineer): signatures only, so the crate compiles meanwhile.
#[derive(Clone, Debug, PartialEq)]
pub struct SamplerConfig { pub temperature: f32, pub top_k: usize, pub top_p: f32, pub min_p: f32, pub repeat_penalty: f32, pub repeat_last_n: usize, pub seed: u64 }
impl Default for SamplerConfig { fn default() -> Self { unimplemented!() } }
impl SamplerConfig { pub fn greedy() -> Self { unimplemented!() } pub fn validate(&self) -> Result<(), SamplerError> { unimplemented!() } }
#[derive(Debug, thiserror::Error)]
pub enum SamplerError { #[error("{name}: {reason}")] InvalidParam { name: &'static str, reason: String } }
pub struct Sampler;
impl Sampler {
    pub fn new(_cfg: SamplerConfig, _vocab: usize) -> Result<Sampler, SamplerError> { unimplemented!() }
    pub fn sample(&mut self, _logits: &mut [f32], _history: &[u32]) -> u32 { unimplemented!() }
    pub fn reset(&mut self, _seed: u64) { unimplemented!() }
}
