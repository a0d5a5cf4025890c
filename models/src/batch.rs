//! One forward call's context: the batch's size and position, the kernels, the tap, and the arena's
//! buffers cut to this batch, with one method per stage of the forward. [`Llama::forward_tapped`]
//! reads as the list of these stages; each method here is one of them.
//!
//! Nothing here allocates: the views are slices of the [`State`] made once per call.
//!
//! [`Llama::forward_tapped`]: crate::llama::Llama::forward_tapped

use edgeinfer_kernels::quant::Q8Acts;
use edgeinfer_kernels::{par, Kernels, WeightRef};

use crate::attention::Step;
use crate::config::Config;
use crate::error::ModelError;
use crate::llama::TapSite::{self, Down, GateUp, Head, Out, Qkv};
use crate::llama::{Logits, Tap};
use crate::matrix::Matrix;
use crate::state::{KvCache, State};
use crate::tensor::Tensor;

/// The forward's view of one batch of `n` tokens at positions `pos..pos+n`.
pub(crate) struct Batch<'a> {
    c: &'a Config,
    kern: &'a Kernels,
    n: usize,
    pos: usize,
    /// Positions the cache holds.
    ctx: usize,
    /// The arena's activations cut to this batch, one row per token: `[n, hidden]` (x, xb, out),
    /// `[n, q_dim]` (q, att), `[n, kv_dim]` (k, v), `[n, intermediate]` (gate, up).
    x: &'a mut [f32],
    xb: &'a mut [f32],
    q: &'a mut [f32],
    k: &'a mut [f32],
    v: &'a mut [f32],
    att: &'a mut [f32],
    out: &'a mut [f32],
    gate: &'a mut [f32],
    up: &'a mut [f32],
    mm: Products<'a>,
    /// Attention's per-thread scratch and the KV cache of every layer.
    scores: &'a mut [f32],
    kv: &'a mut KvCache,
    /// Rotary angles, `[ctx, head_dim / 2]` each.
    rope_cos: &'a [f32],
    rope_sin: &'a [f32],
    /// The state's logits, whole.
    logits: &'a mut [f32],
}

/// What every matrix product uses besides its operands.
struct Products<'a> {
    kern: &'a Kernels,
    tap: &'a mut dyn FnMut(Tap<'_>),
    /// Shared by every product (see [`Matrix::matmul`]).
    scratch: &'a mut [f32],
    acts: &'a mut Q8Acts,
}

impl Products<'_> {
    /// Shows the tap `x` (`[n, k]`, the input of `layer`'s products at `site`), then
    /// `outs[i] = x·mats[i]ᵀ`: one matrix, or a group that reads the same input.
    fn run(
        &mut self,
        layer: usize,
        site: TapSite,
        x: &[f32],
        n: usize,
        mats: &[&Matrix],
        outs: &mut [&mut [f32]],
    ) {
        (self.tap)(Tap {
            layer,
            site,
            rows: x,
        });
        let (kern, k) = (self.kern, x.len() / n);
        Matrix::matmul_group(kern, mats, k, x, n, outs, self.scratch, self.acts);
    }
}

impl<'a> Batch<'a> {
    /// The batch of `n` tokens (at least one) that follows the positions `state` holds; fails where the
    /// state was not made for it.
    pub fn new(
        c: &'a Config,
        kern: &'a Kernels,
        s: &'a mut State,
        n: usize,
        logits: Logits,
        tap: &'a mut dyn FnMut(Tap<'_>),
    ) -> Result<Batch<'a>, ModelError> {
        let (pos, o) = (s.len, s.opts);
        if n > o.batch {
            return Err(ModelError::BatchTooLarge {
                got: n,
                max: o.batch,
            });
        }
        if pos + n > o.ctx {
            return Err(ModelError::ContextOverflow {
                needed: pos + n,
                ctx: o.ctx,
            });
        }
        if logits == Logits::All && !o.all_logits {
            return Err(ModelError::Options {
                field: "all_logits",
                reason: "this session keeps only the last logits".into(),
            });
        }
        let (h, qd, kvd, i) = (c.hidden_size, c.q_dim(), c.kv_dim(), c.intermediate_size);
        Ok(Batch {
            c,
            kern,
            n,
            pos,
            ctx: o.ctx,
            x: &mut s.x[..n * h],
            xb: &mut s.xb[..n * h],
            q: &mut s.q[..n * qd],
            k: &mut s.k[..n * kvd],
            v: &mut s.v[..n * kvd],
            att: &mut s.att[..n * qd],
            out: &mut s.out[..n * h],
            gate: &mut s.gate[..n * i],
            up: &mut s.up[..n * i],
            mm: Products {
                kern,
                tap,
                scratch: &mut s.scratch,
                acts: &mut s.acts,
            },
            scores: &mut s.scores,
            kv: &mut s.kv,
            rope_cos: &s.rope_cos,
            rope_sin: &s.rope_sin,
            logits: &mut s.logits,
        })
    }

    /// `x[t] = embed[token t]`.
    pub fn embed(&mut self, embed: &Matrix, tokens: &[u32]) -> Result<(), ModelError> {
        let vocab = self.c.vocab_size;
        for (&tok, x) in tokens
            .iter()
            .zip(self.x.chunks_exact_mut(self.c.hidden_size))
        {
            if tok as usize >= vocab {
                return Err(ModelError::InvalidToken { id: tok, vocab });
            }
            embed.row_f32(tok as usize, x);
        }
        Ok(())
    }

    /// `xb = rmsnorm(x)`, token by token.
    pub fn norm(&mut self, w: &Tensor) {
        rmsnorm_rows(self.kern, self.x, w.view(), self.c.rms_norm_eps, self.xb);
    }

    /// `q, k, v = xb·Wqᵀ, xb·Wkᵀ, xb·Wvᵀ` (one parallel region for a decoded token).
    pub fn qkv(&mut self, layer: usize, w: [&Matrix; 3]) {
        let outs = &mut [&mut *self.q, &mut *self.k, &mut *self.v];
        self.mm.run(layer, Qkv, self.xb, self.n, &w, outs);
    }

    /// Qwen2: q, k, v += their biases (one per output channel, the same for every token).
    pub fn add_biases(&mut self, [bq, bk, bv]: [&Option<Tensor>; 3]) {
        for (x, b) in [(&mut *self.q, bq), (&mut *self.k, bk), (&mut *self.v, bv)] {
            if let Some(b) = b {
                add_bias_rows(x, b.view());
            }
        }
    }

    /// Qwen3: RMSNorm of every query and key head (one weight of head_dim shared by all heads).
    /// `att` is free until attention runs and is at least as wide as q and k.
    pub fn head_norms(&mut self, [wq, wk]: [&Option<Tensor>; 2]) {
        for (x, w) in [(&mut *self.q, wq), (&mut *self.k, wk)] {
            if let Some(w) = w {
                let normed = &mut self.att[..x.len()];
                rmsnorm_rows(self.kern, x, w.view(), self.c.rms_norm_eps, normed);
                x.copy_from_slice(normed);
            }
        }
    }

    /// RoPE on q and k at each token's position.
    pub fn rope(&mut self) {
        let (hd, qd, kvd) = (self.c.head_dim, self.c.q_dim(), self.c.kv_dim());
        let half = hd / 2;
        let (qs, ks) = (self.q.chunks_exact_mut(qd), self.k.chunks_exact_mut(kvd));
        for (t, (q, k)) in qs.zip(ks).enumerate() {
            let angles = (self.pos + t) * half..(self.pos + t + 1) * half;
            let (cos, sin) = (&self.rope_cos[angles.clone()], &self.rope_sin[angles]);
            (self.kern.rope_f32)(q, hd, cos, sin);
            (self.kern.rope_f32)(k, hd, cos, sin);
        }
    }

    /// Appends k and v to `layer`'s cache, then causal attention of every (token, head) over it:
    /// `att = softmax(q·Kᵀ/√d)·V`.
    pub fn attend(&mut self, layer: usize) {
        let step = Step {
            kern: self.kern,
            c: self.c,
            ctx: self.ctx,
            pos: self.pos,
            q: self.q,
            k: self.k,
            v: self.v,
            att: self.att,
            scores: self.scores,
        };
        step.run(self.kv, layer);
    }

    /// `out = att·Woᵀ`.
    pub fn out(&mut self, layer: usize, wo: &Matrix) {
        let outs = &mut [&mut *self.out];
        self.mm.run(layer, Out, self.att, self.n, &[wo], outs);
    }

    /// `x += out`.
    pub fn residual(&mut self) {
        for (a, b) in self.x.iter_mut().zip(&*self.out) {
            *a += b;
        }
    }

    /// `gate, up = xb·Wgᵀ, xb·Wuᵀ` (one parallel region for a decoded token).
    pub fn gate_up(&mut self, layer: usize, w: [&Matrix; 2]) {
        let outs = &mut [&mut *self.gate, &mut *self.up];
        self.mm.run(layer, GateUp, self.xb, self.n, &w, outs);
    }

    /// `gate = silu(gate) ⊙ up`.
    pub fn swiglu(&mut self) {
        par::silu_mul(self.kern, self.gate, self.up);
    }

    /// `out = gate·Wdᵀ`.
    pub fn down(&mut self, layer: usize, wd: &Matrix) {
        let outs = &mut [&mut *self.out];
        self.mm.run(layer, Down, self.gate, self.n, &[wd], outs);
    }

    /// The final norm and the logits of the tokens `which` asks for, one row at a time (the tap sees
    /// each row as the input of `layer`, the layer count).
    pub fn logits(&mut self, norm: &Tensor, head: &Matrix, which: Logits, layer: usize) {
        let (h, vocab, n) = (self.c.hidden_size, self.c.vocab_size, self.n);
        let rows = match which {
            Logits::None => return,
            Logits::Last => n - 1..n,
            Logits::All => 0..n,
        };
        let xb = &mut self.xb[..h];
        for (t, y) in rows.zip(self.logits.chunks_exact_mut(vocab)) {
            let x = &self.x[t * h..(t + 1) * h];
            (self.kern.rmsnorm_f32)(x, norm.view(), self.c.rms_norm_eps, xb);
            self.mm.run(layer, Head, xb, 1, &[head], &mut [y]);
        }
    }
}

fn rmsnorm_rows(kern: &Kernels, x: &[f32], w: WeightRef<'_>, eps: f32, out: &mut [f32]) {
    let h = w.len();
    for (xr, or) in x.chunks_exact(h).zip(out.chunks_exact_mut(h)) {
        (kern.rmsnorm_f32)(xr, w, eps, or);
    }
}

/// `x[t, j] += b[j]` for every row `t` of `x` (rows as long as `b`).
fn add_bias_rows(x: &mut [f32], b: WeightRef<'_>) {
    for row in x.chunks_exact_mut(b.len()) {
        for (j, a) in row.iter_mut().enumerate() {
            *a += b.get(j);
        }
    }
}
