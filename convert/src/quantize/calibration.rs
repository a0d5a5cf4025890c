//! Calibration for [`super::quantize_checkpoint`]: runs the input model over a text and keeps, for the
//! input of each matrix product, `H = Σ xᵀx` over its rows, then the factor [`super::gptq`] rounds
//! with. Layers are done a few at a time (one forward pass over the text per group, as the writer
//! reaches them) so memory stays bounded on larger models.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use edgeinfer::tokenizer::Tokenizer;
use edgeinfer_kernels::quant::ActQuant;
use edgeinfer_kernels::{par, Kernels, WeightRef};
use edgeinfer_models::state::{KvDType, StateOptions};
use edgeinfer_models::{Llama, Logits, State, Tap, TapSite};

use super::{gptq, QuantizeError};

/// Tokens per forward call (bounds the logits buffer when an untied lm_head is calibrated).
const CHUNK: usize = 128;

/// Most bytes of `H` matrices held at once (decides how many layers one pass covers).
const BUDGET_BYTES: usize = 512 << 20;

/// GPTQ's damping: `λ = 1%` of the mean diagonal of `H`.
const DAMP: f64 = 0.01;

/// Which matrix product's input (`layer` = the layer count for the lm_head).
pub type Site = (usize, TapSite);

pub struct Calibrator<'a> {
    llama: &'a Llama,
    /// The input checkpoint (named in errors).
    dir: PathBuf,
    kern: Kernels,
    pool: rayon::ThreadPool,
    /// The text's paragraphs, each run from position 0 (so the first-position activations, which
    /// every prompt has, are sampled many times rather than once).
    sequences: Vec<Vec<u32>>,
    layers_per_pass: usize,
    /// `H` of the sites measured but not yet factored.
    hessians: HashMap<Site, Vec<f32>>,
    /// Factors of the sites in use; `None` where `H` was not positive definite (plain rounding).
    factors: HashMap<Site, Option<Vec<f32>>>,
    /// `diag H` (each input column's mean square, times the tokens) of the sites in use.
    diagonals: HashMap<Site, Vec<f32>>,
}

impl<'a> Calibrator<'a> {
    /// Tokenizes `text` with the tokenizer in `dir` (the input checkpoint's).
    pub fn new(llama: &'a Llama, dir: &Path, text: &str) -> Result<Calibrator<'a>, QuantizeError> {
        let tokenizer = Tokenizer::from_dir(dir).map_err(|e| {
            fail(dir, format!(
                "{e}; calibration needs the input checkpoint's tokenizer.json (or quantize without --calibration)"
            ))
        })?;
        let c = &llama.config;
        let mut sequences = Vec::new();
        for part in text.split("\n\n").map(str::trim).filter(|p| !p.is_empty()) {
            let mut t = tokenizer
                .encode(part, tokenizer.add_bos_token())
                .map_err(|e| fail(dir, e))?;
            if t.iter().any(|&t| t as usize >= c.vocab_size) {
                return Err(fail(
                    dir,
                    format!(
                        "the tokenizer produced ids beyond the model's vocab_size {}",
                        c.vocab_size
                    ),
                ));
            }
            t.truncate(c.max_position_embeddings);
            sequences.push(t);
        }
        let tokens: usize = sequences.iter().map(Vec::len).sum();
        if tokens < 2 {
            return Err(fail(
                dir,
                format!("the calibration text has {tokens} tokens; give it at least a sentence"),
            ));
        }
        let per_layer =
            4 * (2 * c.hidden_size.pow(2) + c.q_dim().pow(2) + c.intermediate_size.pow(2));
        let threads = rayon::current_num_threads();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .map_err(|e| fail(dir, e))?;
        Ok(Calibrator {
            llama,
            dir: dir.to_path_buf(),
            kern: Kernels::select(None).map_err(|e| fail(dir, e))?,
            pool,
            sequences,
            layers_per_pass: (BUDGET_BYTES / per_layer).max(1),
            hessians: HashMap::new(),
            factors: HashMap::new(),
            diagonals: HashMap::new(),
        })
    }

    /// Calibration tokens.
    pub fn tokens(&self) -> usize {
        self.sequences.iter().map(Vec::len).sum()
    }

    /// The GPTQ factor for the matrices that read `site`'s input (`None`: round plainly), running a
    /// forward pass over the text when that layer was not measured yet. Factors of earlier layers are
    /// dropped: the writer goes through the layers in order.
    pub fn factor(&mut self, site: Site) -> Result<Option<&[f32]>, QuantizeError> {
        if !self.factors.contains_key(&site) {
            if !self.hessians.contains_key(&site) {
                self.measure(site)?;
            }
            self.factors.retain(|s, _| s.0 >= site.0);
            let h = self.hessians.remove(&site).expect("measured above");
            let k = (h.len() as f64).sqrt() as usize;
            self.keep_diagonal(site, diagonal(&h, k));
            let mut h: Vec<f64> = h.into_iter().map(f64::from).collect();
            let u = self.pool.install(|| gptq::inverse_factor(&mut h, k, DAMP));
            self.factors.insert(site, u);
        }
        Ok(self.factors[&site].as_deref())
    }

    /// Per input column of the matrices that read `site`'s input, how much its rounding error costs
    /// (`diag H`: the sum of its squared activations over the text), for the quantizers that weigh
    /// each column's error rather than feed it forward (`super::kquants`).
    pub fn importance(&mut self, site: Site) -> Result<&[f32], QuantizeError> {
        if !self.diagonals.contains_key(&site) {
            if !self.hessians.contains_key(&site) {
                self.measure(site)?;
            }
            let h = &self.hessians[&site];
            let k = (h.len() as f64).sqrt() as usize;
            let diag = diagonal(h, k);
            self.keep_diagonal(site, diag);
        }
        Ok(&self.diagonals[&site])
    }

    fn keep_diagonal(&mut self, site: Site, diag: Vec<f32>) {
        self.diagonals.retain(|s, _| s.0 >= site.0);
        self.diagonals.entry(site).or_insert(diag);
    }

    /// One pass over the text, measuring every site of layers `site.0 ..` (as many as the budget
    /// holds), or only the lm_head's input.
    fn measure(&mut self, site: Site) -> Result<(), QuantizeError> {
        let llama = self.llama;
        let c = &llama.config;
        let head = site.1 == TapSite::Head;
        let layers = if head {
            0..0
        } else {
            site.0..(site.0 + self.layers_per_pass).min(llama.layers.len())
        };
        self.hessians.retain(|s, _| s.0 >= site.0);
        let n = self.sequences.iter().map(Vec::len).max().unwrap_or(1);
        let mut state = State::new(
            c,
            StateOptions {
                ctx: n,
                batch: CHUNK.min(n),
                threads: self.pool.current_num_threads(),
                all_logits: head,
                kv_dtype: KvDType::F32,
                acts: ActQuant::Q8,
            },
        )
        .map_err(|e| fail(&self.dir, e))?;
        let (kern, hessians) = (&self.kern, &mut self.hessians);
        let mode = if head { Logits::All } else { Logits::None };
        for seq in &self.sequences {
            state.reset();
            for chunk in seq.chunks(CHUNK) {
                let mut tap = |t: Tap<'_>| {
                    let wanted = if head {
                        t.site == TapSite::Head
                    } else {
                        t.site != TapSite::Head && layers.contains(&t.layer)
                    };
                    if wanted {
                        let k = match t.site {
                            TapSite::Qkv | TapSite::GateUp | TapSite::Head => c.hidden_size,
                            TapSite::Out => c.q_dim(),
                            TapSite::Down => c.intermediate_size,
                        };
                        let h = hessians
                            .entry((t.layer, t.site))
                            .or_insert_with(|| vec![0f32; k * k]);
                        accumulate(kern, h, t.rows, k);
                    }
                };
                self.pool
                    .install(|| llama.forward_tapped(kern, &mut state, chunk, mode, &mut tap))
                    .map_err(|e| fail(&self.dir, e))?;
            }
        }
        Ok(())
    }
}

/// The diagonal of the `k × k` row-major `h`.
fn diagonal(h: &[f32], k: usize) -> Vec<f32> {
    (0..k).map(|j| h[j * k + j]).collect()
}

/// A calibration failure for the input checkpoint `dir`.
fn fail(dir: &Path, reason: impl std::fmt::Display) -> QuantizeError {
    QuantizeError::Calibration {
        path: dir.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// `h += xᵀx` for `x` holding rows of `k` (one product of the transposed rows with themselves).
fn accumulate(kern: &Kernels, h: &mut [f32], x: &[f32], k: usize) {
    let n = x.len() / k;
    let mut xt = vec![0f32; k * n];
    for (t, row) in x.chunks_exact(k).enumerate() {
        for (j, &v) in row.iter().enumerate() {
            xt[j * n + t] = v;
        }
    }
    let mut prod = vec![0f32; k * k];
    par::matmul_t(kern, WeightRef::F32(&xt), n, &xt, k, &mut prod);
    for (a, b) in h.iter_mut().zip(&prod) {
        *a += b;
    }
}
