//! The activation arena: every buffer a session needs, allocated once from the config and the session's
//! sizes. A forward pass only writes into these buffers; decoding a token allocates nothing.

use edgeinfer_kernels::quant::{ActQuant, Q8Acts};
use half::f16;

use crate::config::Config;
use crate::error::ModelError;

/// How a session is sized.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StateOptions {
    /// Positions the KV cache holds (prompt + generated tokens).
    pub ctx: usize,
    /// Most tokens one forward call takes (prefill chunk).
    pub batch: usize,
    /// Upper bound on threads that will run the forward (sizes per-thread scratch).
    pub threads: usize,
    /// Keep logits for every token of a batch, not only the last (perplexity, parity tests).
    pub all_logits: bool,
    /// Element type of the KV cache.
    pub kv_dtype: KvDType,
    /// How activations are quantized for products with quantized weights.
    pub acts: ActQuant,
}

/// Element type of the KV cache. F16 halves its memory and the bandwidth attention needs, at a
/// relative rounding of 2⁻¹¹ on keys and values; F32 keeps the forward bit-comparable to an f32
/// reference (the parity tests use it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KvDType {
    F32,
    #[default]
    F16,
}

/// The KV cache of every layer in the session's [`KvDType`].
pub(crate) enum KvCache {
    F32 { k: Vec<f32>, v: Vec<f32> },
    F16 { k: Vec<f16>, v: Vec<f16> },
}

/// The current wave of activations plus the KV cache of one session.
pub struct State {
    pub(crate) opts: StateOptions,
    /// Residual stream, `[batch, hidden]`.
    pub(crate) x: Vec<f32>,
    /// Normalised input of the current sub-layer, `[batch, hidden]`.
    pub(crate) xb: Vec<f32>,
    /// Queries, `[batch, heads × head_dim]`.
    pub(crate) q: Vec<f32>,
    /// Keys and values of the current batch, `[batch, kv_heads × head_dim]`.
    pub(crate) k: Vec<f32>,
    pub(crate) v: Vec<f32>,
    /// Attention output before the output projection, `[batch, heads × head_dim]`.
    pub(crate) att: Vec<f32>,
    /// Sub-layer output before the residual add, `[batch, hidden]`.
    pub(crate) out: Vec<f32>,
    /// MLP gate and up projections, `[batch, intermediate]`.
    pub(crate) gate: Vec<f32>,
    pub(crate) up: Vec<f32>,
    /// Transposed matmul output for batches, `[max rows, batch]` (`[max rows, 2 × batch]` with
    /// two-pass activations, whose products have both passes' outputs here).
    pub(crate) scratch: Vec<f32>,
    /// Attention scores, one slot per thread: the query group's scores as the matmul leaves them
    /// (`[ctx, group]`) and per head (`[group, ctx]`), `[threads, 2 × group × ctx]`.
    pub(crate) scores: Vec<f32>,
    /// KV cache, `[layers, kv_heads, ctx, head_dim]` each: one head's keys are contiguous rows, so
    /// its attention scores are one matmul over them.
    pub(crate) kv: KvCache,
    /// Rotary angles per position, `[ctx, head_dim / 2]` each.
    pub(crate) rope_cos: Vec<f32>,
    pub(crate) rope_sin: Vec<f32>,
    /// Logits, `[vocab]`, or `[batch, vocab]` with `all_logits`.
    pub(crate) logits: Vec<f32>,
    /// The activations of the current matmul quantized to q8 blocks (quantized weights only),
    /// `[batch, max(hidden, intermediate, q_dim)]`.
    pub(crate) acts: Q8Acts,
    /// Positions already in the KV cache.
    pub(crate) len: usize,
}

/// The cosines and sines of every rotary angle, `[ctx, head_dim / 2]` each.
fn rope_tables(cfg: &Config, ctx: usize) -> (Vec<f32>, Vec<f32>) {
    let half = cfg.head_dim / 2;
    let (mut cos, mut sin) = (vec![0.0f32; ctx * half], vec![0.0f32; ctx * half]);
    let inv_freq = cfg.rope_inv_freq();
    for pos in 0..ctx {
        for (i, &freq) in inv_freq.iter().enumerate() {
            let angle = pos as f32 * freq;
            cos[pos * half + i] = angle.cos();
            sin[pos * half + i] = angle.sin();
        }
    }
    (cos, sin)
}

impl State {
    pub fn new(cfg: &Config, opts: StateOptions) -> Result<State, ModelError> {
        let StateOptions {
            ctx,
            batch,
            threads,
            all_logits,
            kv_dtype: _,
            acts,
        } = opts;
        if ctx == 0 {
            return Err(ModelError::Options {
                field: "ctx",
                reason: "must be at least 1".into(),
            });
        }
        if batch == 0 {
            return Err(ModelError::Options {
                field: "batch",
                reason: "must be at least 1".into(),
            });
        }
        let threads = threads.max(1);
        let too_big = |field: &'static str| ModelError::Options {
            field,
            reason: "the buffers it needs overflow memory sizes".into(),
        };
        let mul = |a: usize, b: usize, field| a.checked_mul(b).ok_or_else(|| too_big(field));
        let (hidden, inter, q_dim, kv_dim) = (
            cfg.hidden_size,
            cfg.intermediate_size,
            cfg.q_dim(),
            cfg.kv_dim(),
        );
        let max_rows = hidden.max(inter).max(q_dim).max(kv_dim);
        let cache = mul(mul(cfg.num_layers, ctx, "ctx")?, kv_dim, "ctx")?;
        let logits_rows = if all_logits { batch } else { 1 };
        let zeros = |n: usize| vec![0.0f32; n];

        // The rotary tables' size is checked like every other.
        mul(ctx, cfg.head_dim / 2, "ctx")?;
        let (rope_cos, rope_sin) = rope_tables(cfg, ctx);

        Ok(State {
            opts: StateOptions { threads, ..opts },
            x: zeros(mul(batch, hidden, "batch")?),
            xb: zeros(batch * hidden),
            q: zeros(mul(batch, q_dim, "batch")?),
            k: zeros(mul(batch, kv_dim, "batch")?),
            v: zeros(batch * kv_dim),
            att: zeros(batch * q_dim),
            out: zeros(batch * hidden),
            gate: zeros(mul(batch, inter, "batch")?),
            up: zeros(batch * inter),
            // Two-pass products of several tokens put both passes here (one token needs none,
            // so the lm_head, one row of logits at a time, never does).
            scratch: zeros(mul(max_rows, batch * acts.passes(), "batch")?),
            scores: zeros(mul(
                threads,
                crate::attention::attention_slot(cfg, ctx, batch),
                "threads",
            )?),
            kv: match opts.kv_dtype {
                KvDType::F32 => KvCache::F32 {
                    k: vec![0.0; cache],
                    v: vec![0.0; cache],
                },
                KvDType::F16 => KvCache::F16 {
                    k: bytemuck::zeroed_vec(cache),
                    v: bytemuck::zeroed_vec(cache),
                },
            },
            rope_cos,
            rope_sin,
            logits: zeros(mul(logits_rows, cfg.vocab_size, "batch")?),
            acts: Q8Acts::with_quant(batch, max_rows, acts),
            len: 0,
        })
    }

    pub fn options(&self) -> StateOptions {
        self.opts
    }

    /// Positions filled in the KV cache.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Writes every page of the arena and the KV cache, so that all of it is resident now rather than
    /// page by page as positions are first reached.
    ///
    /// The buffers come zeroed from the allocator, and large ones are fresh mappings whose pages the
    /// kernel only backs when first touched: a session's resident size then grows in steps each time
    /// a generation reaches a position no earlier one did (~23 KB per position for SmolLM2's f16
    /// cache), for as long as the process lives. A server that pre-faults its sessions has its whole
    /// memory use at startup, flat after, and fails then, not mid-request, on a machine short of it.
    /// Costs one write pass over the buffers (16 MB: under 10 ms on the development VM).
    pub fn prefault(&mut self) {
        fn touch<T: Copy + Default>(buf: &mut [T]) {
            // The compiler knows a zero-allocated buffer is zero and would drop a write of zeros;
            // `black_box` hides what the buffer holds, so the pages are written.
            std::hint::black_box(&mut *buf).fill(T::default());
        }
        for buf in [
            &mut self.x,
            &mut self.xb,
            &mut self.q,
            &mut self.k,
            &mut self.v,
            &mut self.att,
            &mut self.out,
            &mut self.gate,
            &mut self.up,
            &mut self.scratch,
            &mut self.scores,
            &mut self.logits,
        ] {
            touch(buf);
        }
        // The rope tables are written in `new`; the q8 activations are small (heap, not a mapping).
        match &mut self.kv {
            KvCache::F32 { k, v } => {
                touch(k);
                touch(v);
            }
            KvCache::F16 { k, v } => {
                touch(k);
                touch(v);
            }
        }
    }

    /// Forgets the cached positions (the buffers stay allocated).
    pub fn reset(&mut self) {
        self.len = 0;
    }

    /// Drops cached positions past `len` (to reuse a shared prefix).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Logits written by the last forward call: `[vocab]`, or `[tokens, vocab]` with `all_logits`.
    pub fn logits(&self) -> &[f32] {
        &self.logits
    }

    pub fn logits_mut(&mut self) -> &mut [f32] {
        &mut self.logits
    }

    /// Bytes held by the arena (activations, scratch, KV cache, rope tables, logits).
    pub fn bytes(&self) -> usize {
        let v = [
            &self.x,
            &self.xb,
            &self.q,
            &self.k,
            &self.v,
            &self.att,
            &self.out,
            &self.gate,
            &self.up,
            &self.scratch,
            &self.scores,
            &self.rope_cos,
            &self.rope_sin,
            &self.logits,
        ];
        v.iter().map(|b| b.len() * 4).sum::<usize>() + self.acts.bytes() + self.kv_bytes()
    }

    /// Bytes of the KV cache alone.
    pub fn kv_bytes(&self) -> usize {
        match &self.kv {
            KvCache::F32 { k, v } => (k.len() + v.len()) * 4,
            KvCache::F16 { k, v } => (k.len() + v.len()) * 2,
        }
    }
}
