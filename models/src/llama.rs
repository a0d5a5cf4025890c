//! The Llama-family forward pass (Llama 2/3 layout, SmolLM2, TinyLlama, Qwen2/2.5, Qwen3).
//!
//! Reads top to bottom like the paper: embed; per layer RMSNorm → q/k/v (+ bias, Qwen2) → per-head
//! q/k RMSNorm (Qwen3) → RoPE → cache write → causal grouped-query attention → output projection →
//! residual; RMSNorm → gate/up → SwiGLU → down → residual; final RMSNorm; logits.
//!
//! Qwen2 and Qwen3 differ from Llama only by two optional stages whose weights a [`Layer`] holds or
//! not, and Llama 3 only by its rotary frequencies (the state's tables): one forward serves all.
//!
//! Each stage is one method of the per-batch context in `batch.rs`, which cuts the state's buffers to
//! the batch once.

use edgeinfer_kernels::Kernels;

use crate::batch::Batch;
use crate::config::Config;
use crate::error::ModelError;
use crate::matrix::Matrix;
use crate::names;
use crate::state::State;
use crate::tensor::{Tensor, TensorSource};

/// Weights of one decoder layer (views into the mapped file).
pub struct Layer {
    /// `[hidden]`
    pub attn_norm: Tensor,
    /// `[heads × head_dim, hidden]`
    pub wq: Matrix,
    /// `[kv_heads × head_dim, hidden]`
    pub wk: Matrix,
    /// `[kv_heads × head_dim, hidden]`
    pub wv: Matrix,
    /// `[heads × head_dim]`, `[kv_heads × head_dim]` ×2: q/k/v projection biases (Qwen2).
    pub bq: Option<Tensor>,
    pub bk: Option<Tensor>,
    pub bv: Option<Tensor>,
    /// `[head_dim]` each: RMSNorm weights applied to every query / key head before RoPE (Qwen3).
    pub q_norm: Option<Tensor>,
    pub k_norm: Option<Tensor>,
    /// `[hidden, heads × head_dim]`
    pub wo: Matrix,
    /// `[hidden]`
    pub mlp_norm: Tensor,
    /// `[intermediate, hidden]`
    pub w_gate: Matrix,
    /// `[intermediate, hidden]`
    pub w_up: Matrix,
    /// `[hidden, intermediate]`
    pub w_down: Matrix,
}

/// A loaded Llama-family model: config plus weight views.
pub struct Llama {
    pub config: Config,
    /// `[vocab, hidden]`
    pub embed: Matrix,
    pub layers: Vec<Layer>,
    /// `[hidden]`
    pub norm: Tensor,
    /// `[vocab, hidden]`; `None` when tied to `embed`.
    pub lm_head: Option<Matrix>,
}

/// Where a [`Tap`] looks: the input of which matrix products.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TapSite {
    /// The attention norm's output, multiplied by `q_proj`, `k_proj` and `v_proj`.
    Qkv,
    /// The attention output, multiplied by `o_proj`.
    Out,
    /// The MLP norm's output, multiplied by `gate_proj` and `up_proj`.
    GateUp,
    /// `silu(gate) ⊙ up`, multiplied by `down_proj`.
    Down,
    /// The final norm's output of one logits row, multiplied by the lm_head (layer = layer count).
    Head,
}

/// One matrix-product input seen by [`Llama::forward_tapped`]: `rows` holds one row per token.
#[derive(Clone, Copy, Debug)]
pub struct Tap<'a> {
    pub layer: usize,
    pub site: TapSite,
    pub rows: &'a [f32],
}

/// Which logits a forward call leaves in the state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Logits {
    /// Only the last token's (generation).
    Last,
    /// Every token's (needs a state made with `all_logits`).
    All,
    /// None (prefilling a prefix whose continuation follows).
    None,
}

impl Llama {
    /// Looks up every tensor and checks its shape against the config.
    pub fn load(config: Config, src: &dyn TensorSource) -> Result<Llama, ModelError> {
        let c = &config;
        let (h, i, q, kv, v, hd) = (
            c.hidden_size,
            c.intermediate_size,
            c.q_dim(),
            c.kv_dim(),
            c.vocab_size,
            c.head_dim,
        );
        let get = |name: &str, shape: &[usize]| src.tensor(name)?.expect_shape(shape);
        let opt = |on: bool, name: &str, shape: &[usize]| on.then(|| get(name, shape)).transpose();
        let (bias, qk_norm) = (c.arch.qkv_bias(), c.arch.qk_norm());
        let mat = |name: &str, shape: &[usize]| src.matrix(name)?.expect_shape(shape);
        let mut layers = Vec::with_capacity(c.num_layers);
        for l in 0..c.num_layers {
            let n = |suffix| names::layer(l, suffix);
            layers.push(Layer {
                attn_norm: get(&n(names::ATTN_NORM), &[h])?,
                wq: mat(&n(names::WQ), &[q, h])?,
                wk: mat(&n(names::WK), &[kv, h])?,
                wv: mat(&n(names::WV), &[kv, h])?,
                bq: opt(bias, &n(names::BQ), &[q])?,
                bk: opt(bias, &n(names::BK), &[kv])?,
                bv: opt(bias, &n(names::BV), &[kv])?,
                q_norm: opt(qk_norm, &n(names::Q_NORM), &[hd])?,
                k_norm: opt(qk_norm, &n(names::K_NORM), &[hd])?,
                wo: mat(&n(names::WO), &[h, q])?,
                mlp_norm: get(&n(names::MLP_NORM), &[h])?,
                w_gate: mat(&n(names::W_GATE), &[i, h])?,
                w_up: mat(&n(names::W_UP), &[i, h])?,
                w_down: mat(&n(names::W_DOWN), &[h, i])?,
            });
        }
        let embed = mat(names::EMBED, &[v, h])?;
        let norm = get(names::NORM, &[h])?;
        let lm_head = if c.tie_word_embeddings {
            None
        } else {
            Some(mat(names::LM_HEAD, &[v, h])?)
        };
        Ok(Llama {
            config,
            embed,
            layers,
            norm,
            lm_head,
        })
    }

    /// Every weight (for inspection and memory accounting), in file order of a Llama checkpoint.
    pub fn weights(&self) -> impl Iterator<Item = WeightInfo<'_>> {
        let per_layer = self.layers.iter().flat_map(|l| {
            let optional = [&l.bq, &l.bk, &l.bv, &l.q_norm, &l.k_norm]
                .into_iter()
                .flatten()
                .map(WeightInfo::tensor);
            [
                WeightInfo::tensor(&l.attn_norm),
                WeightInfo::matrix(&l.wq),
                WeightInfo::matrix(&l.wk),
                WeightInfo::matrix(&l.wv),
            ]
            .into_iter()
            .chain(optional)
            .chain([
                WeightInfo::matrix(&l.wo),
                WeightInfo::tensor(&l.mlp_norm),
                WeightInfo::matrix(&l.w_gate),
                WeightInfo::matrix(&l.w_up),
                WeightInfo::matrix(&l.w_down),
            ])
        });
        std::iter::once(WeightInfo::matrix(&self.embed))
            .chain(per_layer)
            .chain([WeightInfo::tensor(&self.norm)])
            .chain(self.lm_head.as_ref().map(WeightInfo::matrix))
    }

    /// Runs `tokens` at positions `state.len()..`, appends their keys and values to the cache and leaves
    /// the requested logits in the state. Call inside the rayon pool that should do the work.
    pub fn forward(
        &self,
        kern: &Kernels,
        state: &mut State,
        tokens: &[u32],
        logits: Logits,
    ) -> Result<(), ModelError> {
        self.forward_tapped(kern, state, tokens, logits, &mut |_| {})
    }

    /// [`Llama::forward`], also showing `tap` every matrix product's input rows as they go in (for
    /// calibrating a quantizer: the statistics of what each weight multiplies).
    pub fn forward_tapped(
        &self,
        kern: &Kernels,
        state: &mut State,
        tokens: &[u32],
        logits: Logits,
        tap: &mut dyn FnMut(Tap<'_>),
    ) -> Result<(), ModelError> {
        let n = tokens.len();
        if n == 0 {
            return Ok(());
        }
        let mut b = Batch::new(&self.config, kern, state, n, logits, tap)?;
        b.embed(&self.embed, tokens)?;
        for (l, w) in self.layers.iter().enumerate() {
            // Attention block: x += attention(q, k, v)·Woᵀ, with q, k, v from xb = rmsnorm(x).
            b.norm(&w.attn_norm);
            b.qkv(l, [&w.wq, &w.wk, &w.wv]);
            b.add_biases([&w.bq, &w.bk, &w.bv]); // Qwen2; a stage without weights is skipped
            b.head_norms([&w.q_norm, &w.k_norm]); // Qwen3
            b.rope();
            b.attend(l);
            b.out(l, &w.wo);
            b.residual();
            // MLP block: x += (silu(xb·Wgᵀ) ⊙ xb·Wuᵀ)·Wdᵀ, with xb = rmsnorm(x).
            b.norm(&w.mlp_norm);
            b.gate_up(l, [&w.w_gate, &w.w_up]);
            b.swiglu();
            b.down(l, &w.w_down);
            b.residual();
        }
        // Final norm and logits; the head is the embedding where the two are tied.
        let head = self.lm_head.as_ref().unwrap_or(&self.embed);
        b.logits(&self.norm, head, logits, self.layers.len());
        state.len += n;
        Ok(())
    }
}

/// One weight's name, storage type, shape and bytes, for inspection.
#[derive(Clone, Debug)]
pub struct WeightInfo<'a> {
    pub name: &'a str,
    /// `F32`, `F16`, `BF16`, `q8_0`, `q4_0` or `q4_1`.
    pub type_name: &'static str,
    pub shape: Vec<usize>,
    pub bytes: usize,
    /// The data (a quantized matrix's quants) starts on a 64-byte cache line.
    pub line_aligned: bool,
    /// A quantized matrix's block layout (`None` for dense tensors).
    pub layout: Option<edgeinfer_kernels::quant::QLayout>,
}

impl<'a> WeightInfo<'a> {
    fn tensor(t: &'a Tensor) -> Self {
        WeightInfo {
            name: t.name(),
            type_name: t.dtype().name(),
            shape: t.shape().to_vec(),
            bytes: t.byte_len(),
            line_aligned: t.line_aligned(),
            layout: None,
        }
    }

    fn matrix(m: &'a Matrix) -> Self {
        WeightInfo {
            name: m.name(),
            type_name: m.type_name(),
            shape: m.shape(),
            bytes: m.byte_len(),
            line_aligned: m.line_aligned(),
            layout: m.layout(),
        }
    }
}
