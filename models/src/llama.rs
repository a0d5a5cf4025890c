//! The Llama-family forward pass (Llama 2/3 layout, SmolLM2, TinyLlama, Qwen2/2.5, Qwen3).
//!
//! Reads top to bottom like the paper: embed; per layer RMSNorm → q/k/v (+ bias, Qwen2) → per-head
//! q/k RMSNorm (Qwen3) → RoPE → cache write → causal grouped-query attention → output projection →
//! residual; RMSNorm → gate/up → SwiGLU → down → residual; final RMSNorm; logits.
//!
//! Qwen2 and Qwen3 differ from Llama only by two optional stages whose weights a [`Layer`] holds or
//! not, and Llama 3 only by its rotary frequencies (the state's tables): one forward serves all.

use edgeinfer_kernels::{par, Kernels};

use crate::attention::{attention, write_cache};
use crate::config::Config;
use crate::error::ModelError;
use crate::matrix::Matrix;
use crate::names;
use crate::state::{KvCache, State};
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
        let c = &self.config;
        let n = tokens.len();
        let pos = state.len;
        if n == 0 {
            return Ok(());
        }
        if n > state.opts.batch {
            return Err(ModelError::BatchTooLarge {
                got: n,
                max: state.opts.batch,
            });
        }
        if pos + n > state.opts.ctx {
            return Err(ModelError::ContextOverflow {
                needed: pos + n,
                ctx: state.opts.ctx,
            });
        }
        if logits == Logits::All && !state.opts.all_logits {
            return Err(ModelError::Options {
                field: "all_logits",
                reason: "this session keeps only the last logits".into(),
            });
        }
        let (h, inter, qd, kvd, hd) = (
            c.hidden_size,
            c.intermediate_size,
            c.q_dim(),
            c.kv_dim(),
            c.head_dim,
        );
        let s = state;

        // Embed: x[t] = embed[token t].
        for (t, &tok) in tokens.iter().enumerate() {
            if tok as usize >= c.vocab_size {
                return Err(ModelError::InvalidToken {
                    id: tok,
                    vocab: c.vocab_size,
                });
            }
            self.embed
                .row_f32(tok as usize, &mut s.x[t * h..(t + 1) * h]);
        }

        for (l, layer) in self.layers.iter().enumerate() {
            // Attention block: xb = rmsnorm(x); q, k, v = xb·Wqᵀ, xb·Wkᵀ, xb·Wvᵀ.
            rmsnorm_rows(
                kern,
                &s.x[..n * h],
                layer.attn_norm.view(),
                c.rms_norm_eps,
                &mut s.xb[..n * h],
            );
            tap(Tap {
                layer: l,
                site: TapSite::Qkv,
                rows: &s.xb[..n * h],
            });
            Matrix::matmul_group(
                kern,
                &[&layer.wq, &layer.wk, &layer.wv],
                h,
                &s.xb[..n * h],
                n,
                &mut [&mut s.q[..n * qd], &mut s.k[..n * kvd], &mut s.v[..n * kvd]],
                &mut s.scratch,
                &mut s.acts,
            );

            // Qwen2: q, k, v += their biases (one per output channel, the same for every token).
            for (x, b, d) in [
                (&mut s.q, &layer.bq, qd),
                (&mut s.k, &layer.bk, kvd),
                (&mut s.v, &layer.bv, kvd),
            ] {
                if let Some(b) = b {
                    add_bias_rows(&mut x[..n * d], b.view());
                }
            }

            // Qwen3: RMSNorm of every query and key head (one weight of head_dim shared by all heads).
            // `att` is free until attention runs and is at least as wide as q and k.
            for (x, w, d) in [
                (&mut s.q, &layer.q_norm, qd),
                (&mut s.k, &layer.k_norm, kvd),
            ] {
                if let Some(w) = w {
                    rmsnorm_rows(
                        kern,
                        &x[..n * d],
                        w.view(),
                        c.rms_norm_eps,
                        &mut s.att[..n * d],
                    );
                    x[..n * d].copy_from_slice(&s.att[..n * d]);
                }
            }

            // RoPE on q and k at each token's position.
            let half = hd / 2;
            for t in 0..n {
                let angles = (pos + t) * half..(pos + t + 1) * half;
                let (cos, sin) = (&s.rope_cos[angles.clone()], &s.rope_sin[angles]);
                (kern.rope_f32)(&mut s.q[t * qd..(t + 1) * qd], hd, cos, sin);
                (kern.rope_f32)(&mut s.k[t * kvd..(t + 1) * kvd], hd, cos, sin);
            }

            // Cache write (positions pos..pos+n of layer l, per kv head), then causal attention of
            // every (token, head) over the cache: att = softmax(q·Kᵀ/√d)·V.
            let layer_cache =
                l * c.num_kv_heads * s.opts.ctx * hd..(l + 1) * c.num_kv_heads * s.opts.ctx * hd;
            let (k, v, q) = (&s.k[..n * kvd], &s.v[..n * kvd], &s.q[..n * qd]);
            let (att, scores) = (&mut s.att[..n * qd], &mut s.scores);
            match &mut s.kv {
                KvCache::F32 { k: kc, v: vc } => {
                    let (kc, vc) = (&mut kc[layer_cache.clone()], &mut vc[layer_cache.clone()]);
                    write_cache(c, s.opts.ctx, pos, k, v, kc, vc);
                    attention(kern, c, q, kc, vc, pos, att, scores, s.opts.ctx);
                }
                KvCache::F16 { k: kc, v: vc } => {
                    let (kc, vc) = (&mut kc[layer_cache.clone()], &mut vc[layer_cache.clone()]);
                    write_cache(c, s.opts.ctx, pos, k, v, kc, vc);
                    attention(kern, c, q, kc, vc, pos, att, scores, s.opts.ctx);
                }
            }

            // Output projection and residual: x += att·Woᵀ.
            tap(Tap {
                layer: l,
                site: TapSite::Out,
                rows: &s.att[..n * qd],
            });
            layer.wo.matmul(
                kern,
                qd,
                &s.att[..n * qd],
                n,
                &mut s.out[..n * h],
                &mut s.scratch,
                &mut s.acts,
            );
            add_assign(&mut s.x[..n * h], &s.out[..n * h]);

            // MLP block: x += (silu(xb·Wgᵀ) ⊙ xb·Wuᵀ)·Wdᵀ with xb = rmsnorm(x).
            rmsnorm_rows(
                kern,
                &s.x[..n * h],
                layer.mlp_norm.view(),
                c.rms_norm_eps,
                &mut s.xb[..n * h],
            );
            tap(Tap {
                layer: l,
                site: TapSite::GateUp,
                rows: &s.xb[..n * h],
            });
            Matrix::matmul_group(
                kern,
                &[&layer.w_gate, &layer.w_up],
                h,
                &s.xb[..n * h],
                n,
                &mut [&mut s.gate[..n * inter], &mut s.up[..n * inter]],
                &mut s.scratch,
                &mut s.acts,
            );
            par::silu_mul(kern, &mut s.gate[..n * inter], &s.up[..n * inter]);
            tap(Tap {
                layer: l,
                site: TapSite::Down,
                rows: &s.gate[..n * inter],
            });
            layer.w_down.matmul(
                kern,
                inter,
                &s.gate[..n * inter],
                n,
                &mut s.out[..n * h],
                &mut s.scratch,
                &mut s.acts,
            );
            add_assign(&mut s.x[..n * h], &s.out[..n * h]);
        }
        s.len = pos + n;

        // Final norm and logits for the tokens asked for.
        let head = self.lm_head.as_ref().unwrap_or(&self.embed);
        let vocab = c.vocab_size;
        let rows = match logits {
            Logits::None => return Ok(()),
            Logits::Last => n - 1..n,
            Logits::All => 0..n,
        };
        for (slot, t) in rows.enumerate() {
            (kern.rmsnorm_f32)(
                &s.x[t * h..(t + 1) * h],
                self.norm.view(),
                c.rms_norm_eps,
                &mut s.xb[..h],
            );
            tap(Tap {
                layer: self.layers.len(),
                site: TapSite::Head,
                rows: &s.xb[..h],
            });
            head.matmul(
                kern,
                h,
                &s.xb[..h],
                1,
                &mut s.logits[slot * vocab..(slot + 1) * vocab],
                &mut s.scratch,
                &mut s.acts,
            );
        }
        Ok(())
    }
}

fn rmsnorm_rows(
    kern: &Kernels,
    x: &[f32],
    w: edgeinfer_kernels::WeightRef<'_>,
    eps: f32,
    out: &mut [f32],
) {
    let h = w.len();
    for (xr, or) in x.chunks_exact(h).zip(out.chunks_exact_mut(h)) {
        (kern.rmsnorm_f32)(xr, w, eps, or);
    }
}

/// `x[t, j] += b[j]` for every row `t` of `x` (rows as long as `b`).
fn add_bias_rows(x: &mut [f32], b: edgeinfer_kernels::WeightRef<'_>) {
    for row in x.chunks_exact_mut(b.len()) {
        for (j, a) in row.iter_mut().enumerate() {
            *a += b.get(j);
        }
    }
}

fn add_assign(x: &mut [f32], y: &[f32]) {
    for (a, b) in x.iter_mut().zip(y) {
        *a += b;
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
}

impl<'a> WeightInfo<'a> {
    fn tensor(t: &'a Tensor) -> Self {
        WeightInfo {
            name: t.name(),
            type_name: t.dtype().name(),
            shape: t.shape().to_vec(),
            bytes: t.byte_len(),
            line_aligned: t.line_aligned(),
        }
    }

    fn matrix(m: &'a Matrix) -> Self {
        WeightInfo {
            name: m.name(),
            type_name: m.type_name(),
            shape: m.shape(),
            bytes: m.byte_len(),
            line_aligned: m.line_aligned(),
        }
    }
}
