//! Causal grouped-query attention over the KV cache, `att = softmax(q·Kᵀ/√d)·V`, for one layer.
//!
//! Two paths with the same result (up to float summation order):
//! - **one token** (decode): for each kv head one matmul of the head's keys with its `group` queries, a
//!   softmax per query head, and one weighted sum over the values for all `group` query heads (the
//!   values are read once);
//! - **a prompt** (several tokens): blocks of [`ATT_BLOCK`] tokens. A block's `block × group` queries of
//!   one kv head share one f32 copy of the keys (one matmul gives every score, already laid out one
//!   row per query), and its probabilities multiply a transposed f32 copy of the values in one matmul
//!   whose inner dimension is the number of keys, long enough that the kernels' per-output reductions
//!   cost little. Blocks are split across threads by their cost (keys seen × tokens), not by their
//!   count: with causal attention the last tokens see the most keys. On a 2-core AVX-512 VM this took
//!   pp512 from ~1,100 to ~1,380 tokens/s at one thread (with the token-major quantized products).

use edgeinfer_kernels::dispatch::MatmulFn;
use edgeinfer_kernels::{par, Kernels};
use half::f16;
use half::slice::HalfFloatSliceExt;
use rayon::prelude::*;

use crate::config::Config;
use crate::state::KvCache;

/// Tokens per block on the prompt path.
pub const ATT_BLOCK: usize = 32;

/// Keys transposed per step on the prompt path (bounds the staging rows kept next to the transpose).
const V_CHUNK: usize = 32;

/// Floats of attention scratch one thread needs for batches of up to `batch` tokens over a context of
/// `ctx`: for one token, the scores of one query group as the matmul leaves them and per head
/// (`2 × group × ctx`); for a prompt, a block's probabilities, its f32 keys (then transposed values),
/// output, queries and staged value rows.
pub fn attention_slot(c: &Config, ctx: usize, batch: usize) -> usize {
    let group = c.num_heads / c.num_kv_heads;
    let decode = 2 * group * ctx;
    if batch <= 1 {
        return decode;
    }
    let cols = ATT_BLOCK.min(batch) * group;
    let hd = c.head_dim;
    decode.max((cols + hd) * ctx + 2 * cols * hd + V_CHUNK * hd)
}

/// Causal grouped-query attention of `n = q.len() / q_dim` tokens at positions `pos..pos+n` over one
/// layer's cache (`[kv_heads, ctx, head_dim]`, positions `0..pos+n` filled); `att` gets `[n, q_dim]`.
/// `scores` holds whole slots of [`attention_slot`]`(c, ctx, n)` floats, one per thread used.
#[allow(clippy::too_many_arguments)]
pub(crate) fn attention<T: KvElem>(
    kern: &Kernels,
    c: &Config,
    q: &[f32],
    keys: &[T],
    values: &[T],
    pos: usize,
    att: &mut [f32],
    scores: &mut [f32],
    ctx: usize,
) {
    let n = q.len() / c.q_dim();
    if n == 1 {
        attention_tokens(kern, c, q, keys, values, pos, att, scores, ctx);
    } else {
        attention_blocks(kern, c, q, keys, values, pos, att, scores, ctx);
    }
}

/// An element type the KV cache can hold, with the kernels attention needs for it.
pub(crate) trait KvElem: Copy + Send + Sync {
    #[cfg(test)]
    fn from_f32(v: f32) -> Self;
    fn store(dst: &mut [Self], src: &[f32]);
    fn load(dst: &mut [f32], src: &[Self]);
    fn matmul(kern: &Kernels) -> MatmulFn<Self>;
    fn weighted_sum(kern: &Kernels) -> fn(&[f32], usize, &[Self], &mut [f32]);
}

impl KvElem for f32 {
    #[cfg(test)]
    fn from_f32(v: f32) -> f32 {
        v
    }
    fn store(dst: &mut [f32], src: &[f32]) {
        dst.copy_from_slice(src);
    }
    fn load(dst: &mut [f32], src: &[f32]) {
        dst.copy_from_slice(src);
    }
    fn matmul(kern: &Kernels) -> MatmulFn<f32> {
        kern.matmul_f32
    }
    fn weighted_sum(kern: &Kernels) -> fn(&[f32], usize, &[f32], &mut [f32]) {
        kern.weighted_sum_f32
    }
}

impl KvElem for f16 {
    #[cfg(test)]
    fn from_f32(v: f32) -> f16 {
        f16::from_f32(v)
    }
    fn store(dst: &mut [f16], src: &[f32]) {
        dst.convert_from_f32_slice(src);
    }
    fn load(dst: &mut [f32], src: &[f16]) {
        src.convert_to_f32_slice(dst);
    }
    fn matmul(kern: &Kernels) -> MatmulFn<f16> {
        kern.matmul_f16
    }
    fn weighted_sum(kern: &Kernels) -> fn(&[f32], usize, &[f16], &mut [f32]) {
        kern.weighted_sum_f16
    }
}

/// One layer's attention for a batch of `n = q.len() / q_dim` tokens at positions `pos..pos+n`.
pub(crate) struct Step<'a> {
    pub(crate) kern: &'a Kernels,
    pub(crate) c: &'a Config,
    /// Positions the cache holds.
    pub(crate) ctx: usize,
    pub(crate) pos: usize,
    /// `[n, q_dim]`, `[n, kv_dim]`, `[n, kv_dim]`.
    pub(crate) q: &'a [f32],
    pub(crate) k: &'a [f32],
    pub(crate) v: &'a [f32],
    /// The output, `[n, q_dim]`.
    pub(crate) att: &'a mut [f32],
    /// Whole slots of [`attention_slot`], one per thread used.
    pub(crate) scores: &'a mut [f32],
}

impl Step<'_> {
    /// Writes the batch's keys and values into `layer`'s part of `cache`, then attends over it.
    pub(crate) fn run(self, cache: &mut KvCache, layer: usize) {
        let size = self.c.num_kv_heads * self.ctx * self.c.head_dim;
        let at = layer * size..(layer + 1) * size;
        match cache {
            KvCache::F32 { k, v } => self.over(&mut k[at.clone()], &mut v[at]),
            KvCache::F16 { k, v } => self.over(&mut k[at.clone()], &mut v[at]),
        }
    }

    /// The step over one layer's cache (`[kv_heads, ctx, head_dim]` each) in its element type.
    fn over<T: KvElem>(self, keys: &mut [T], values: &mut [T]) {
        let Step {
            kern,
            c,
            ctx,
            pos,
            q,
            k,
            v,
            att,
            scores,
        } = self;
        write_cache(c, ctx, pos, k, v, keys, values);
        attention(kern, c, q, keys, values, pos, att, scores, ctx);
    }
}

/// Appends `n` tokens' keys and values (`[n, kv_heads × head_dim]`) at positions `pos..pos+n` of one
/// layer's cache (`[kv_heads, ctx, head_dim]`).
fn write_cache<T: KvElem>(
    c: &Config,
    ctx: usize,
    pos: usize,
    k: &[f32],
    v: &[f32],
    kc: &mut [T],
    vc: &mut [T],
) {
    let (hd, kvd) = (c.head_dim, c.kv_dim());
    for t in 0..k.len() / kvd {
        for g in 0..c.num_kv_heads {
            let src = t * kvd + g * hd..t * kvd + (g + 1) * hd;
            let dst = (g * ctx + pos + t) * hd..(g * ctx + pos + t + 1) * hd;
            T::store(&mut kc[dst.clone()], &k[src.clone()]);
            T::store(&mut vc[dst], &v[src]);
        }
    }
}

/// Causal grouped-query attention for `n = q.len() / q_dim` tokens at positions `pos..pos+n`.
///
/// Work items are `(token, kv head)` pairs: the `group` query heads sharing a kv head are contiguous
/// in `q` and `att`, so one item reads its keys once for all of them (one matmul with `group` columns)
/// and owns `group × head_dim` outputs. Items are split into at most `scores.len() / slot` contiguous
/// runs; each run owns one slot of `scores`, so threads never share memory.
#[allow(clippy::too_many_arguments)]
fn attention_tokens<T: KvElem>(
    kern: &Kernels,
    c: &Config,
    q: &[f32],
    keys: &[T],
    values: &[T],
    pos: usize,
    att: &mut [f32],
    scores: &mut [f32],
    ctx: usize,
) {
    let (hd, nkv) = (c.head_dim, c.num_kv_heads);
    let group = c.num_heads / nkv;
    let slot = attention_slot(c, ctx, 1);
    let items = q.len() / (group * hd);
    let runs = (scores.len() / slot).min(par::threads()).max(1);
    let per_run = items.div_ceil(runs);
    let scale = 1.0 / (hd as f32).sqrt();
    let (matmul, weighted_sum) = (T::matmul(kern), T::weighted_sum(kern));

    let run = |first_item: usize, out: &mut [f32], sc: &mut [f32]| {
        let (by_key, by_head) = sc.split_at_mut(group * ctx);
        for (j, o) in out.chunks_exact_mut(group * hd).enumerate() {
            let item = first_item + j;
            let (t, kv_head) = (item / nkv, item % nkv);
            // This kv head's keys and values: rows 0..seen of `[ctx, head_dim]`.
            let kv = kv_head * ctx * hd;
            let seen = pos + t + 1;
            let queries = &q[item * group * hd..(item + 1) * group * hd];
            matmul(
                &keys[kv..kv + seen * hd],
                hd,
                queries,
                group,
                &mut by_key[..seen * group],
            );
            // The group's probabilities, one row of `seen` per query head, then one pass over the
            // values for all of them.
            let probs = &mut by_head[..group * seen];
            for (h, row) in probs.chunks_exact_mut(seen).enumerate() {
                for (p, r) in row.iter_mut().enumerate() {
                    *r = by_key[p * group + h] * scale;
                }
                (kern.softmax_f32)(row);
            }
            weighted_sum(probs, group, &values[kv..kv + seen * hd], o);
        }
    };

    if runs == 1 {
        run(0, att, &mut scores[..slot]);
    } else if let Some(plan) = (items == nkv)
        .then(|| Split::plan(c, ctx, runs, pos + 1))
        .flatten()
    {
        attention_split(
            kern,
            c,
            q,
            keys,
            values,
            &plan,
            att,
            &mut scores[..runs * slot],
            ctx,
        );
    } else {
        att.par_chunks_mut(per_run * group * hd)
            .zip(scores.par_chunks_mut(slot))
            .enumerate()
            .for_each(|(r, (out, sc))| run(r * per_run, out, sc));
    }
}

/// Context length from which one token's attention splits kv heads by positions when they do not
/// divide evenly among the threads (below it the whole-head split's imbalance costs little).
const SPLIT_MIN: usize = 256;

/// How [`attention_split`] cuts one token's attention: every kv head's `seen` positions into `parts`
/// ranges of `span`, `per_run` tasks per thread.
struct Split {
    seen: usize,
    parts: usize,
    span: usize,
    per_run: usize,
    /// Floats of a thread's slot used as scratch by one task (its scores and probabilities).
    work: usize,
    /// Floats one task leaves behind: `group × head_dim` weighted values, `group` maxima, `group` sums.
    partial: usize,
}

impl Split {
    /// `None` when whole heads already divide evenly among the `runs` threads, the context is short,
    /// or a slot cannot hold a thread's tasks (tiny configurations only).
    fn plan(c: &Config, ctx: usize, runs: usize, seen: usize) -> Option<Split> {
        let (hd, nkv) = (c.head_dim, c.num_kv_heads);
        if runs <= 1 || nkv.is_multiple_of(runs) || seen < SPLIT_MIN {
            return None;
        }
        let group = c.num_heads / nkv;
        let parts = runs / gcd(nkv, runs);
        let span = seen.div_ceil(parts);
        let split = Split {
            seen,
            parts,
            span,
            per_run: nkv * parts / runs,
            work: 2 * group * span,
            partial: group * (hd + 2),
        };
        (split.work + split.per_run * split.partial <= attention_slot(c, ctx, 1)).then_some(split)
    }
}

/// One token with every kv head's positions cut into ranges ([`Split`]), so that
/// `kv_heads × parts` tasks divide evenly among the threads (3 kv heads on 2 threads: 6 tasks, 3
/// each, where whole heads split 2 : 1). Each task leaves, per query head of its group, the
/// softmax-weighted values of its range, the range's largest score `m` and its sum of
/// `exp(score − m)` `l` in its thread's slot of `scores`; the ranges of a head are then merged with
/// weights `l·exp(m − M)` (`M` the largest `m`).
#[allow(clippy::too_many_arguments)]
fn attention_split<T: KvElem>(
    kern: &Kernels,
    c: &Config,
    q: &[f32],
    keys: &[T],
    values: &[T],
    plan: &Split,
    att: &mut [f32],
    scores: &mut [f32],
    ctx: usize,
) {
    let (hd, nkv) = (c.head_dim, c.num_kv_heads);
    let group = c.num_heads / nkv;
    let slot = attention_slot(c, ctx, 1);
    let &Split {
        seen,
        parts,
        span,
        per_run,
        work,
        partial,
    } = plan;
    let (matmul, weighted_sum) = (T::matmul(kern), T::weighted_sum(kern));
    let scale = 1.0 / (hd as f32).sqrt();
    scores.par_chunks_mut(slot).enumerate().for_each(|(r, sc)| {
        let (scratch, out) = sc.split_at_mut(work);
        let (by_key, by_head) = scratch.split_at_mut(group * span);
        for (j, part_out) in out.chunks_exact_mut(partial).take(per_run).enumerate() {
            let task = r * per_run + j;
            let (item, part) = (task / parts, task % parts);
            let range = part * span..((part + 1) * span).min(seen);
            let len = range.len();
            let kv = item * ctx * hd;
            let (o, stats) = part_out.split_at_mut(group * hd);
            let (maxes, sums) = stats.split_at_mut(group);
            let queries = &q[item * group * hd..(item + 1) * group * hd];
            let rows = kv + range.start * hd..kv + range.end * hd;
            matmul(
                &keys[rows.clone()],
                hd,
                queries,
                group,
                &mut by_key[..len * group],
            );
            let probs = &mut by_head[..group * len];
            for (h, row) in probs.chunks_exact_mut(len).enumerate() {
                let (mut m, mut at) = (f32::NEG_INFINITY, 0);
                for (p, r) in row.iter_mut().enumerate() {
                    *r = by_key[p * group + h] * scale;
                    if *r > m {
                        (m, at) = (*r, p);
                    }
                }
                (kern.softmax_f32)(row);
                // The largest score's probability is exp(0) / l.
                maxes[h] = m;
                sums[h] = 1.0 / row[at];
            }
            weighted_sum(probs, group, &values[rows], o);
        }
    });
    merge_parts(kern, c, plan, scores, slot, att);
}

/// Merges the parts [`attention_split`] left in `scores` into each query head's output in `att`.
fn merge_parts(
    kern: &Kernels,
    c: &Config,
    plan: &Split,
    scores: &[f32],
    slot: usize,
    att: &mut [f32],
) {
    let hd = c.head_dim;
    let group = c.num_heads / c.num_kv_heads;
    let &Split {
        parts,
        per_run,
        work,
        partial,
        ..
    } = plan;
    for (item, o) in att.chunks_exact_mut(group * hd).enumerate() {
        let partial_of = |part: usize| {
            let task = item * parts + part;
            let at = (task / per_run) * slot + work + (task % per_run) * partial;
            &scores[at..at + partial]
        };
        for h in 0..group {
            let stat = |part: usize, k: usize| partial_of(part)[group * hd + k * group + h];
            let top = (0..parts)
                .map(|p| stat(p, 0))
                .fold(f32::NEG_INFINITY, f32::max);
            let weights = (0..parts).map(|p| stat(p, 1) * (stat(p, 0) - top).exp());
            let total: f32 = weights.clone().sum();
            let out = &mut o[h * hd..(h + 1) * hd];
            out.fill(0.0);
            for (p, w) in weights.enumerate() {
                let v = &partial_of(p)[h * hd..(h + 1) * hd];
                (kern.axpy_f32)(w / total, v, out);
            }
        }
    }
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// The prompt path of [`attention`] (see the module docs).
#[allow(clippy::too_many_arguments)]
fn attention_blocks<T: KvElem>(
    kern: &Kernels,
    c: &Config,
    q: &[f32],
    keys: &[T],
    values: &[T],
    pos: usize,
    att: &mut [f32],
    scores: &mut [f32],
    ctx: usize,
) {
    let qd = c.q_dim();
    let n = q.len() / qd;
    let bt = ATT_BLOCK.min(n);
    let slot = attention_slot(c, ctx, n);
    let runs = (scores.len() / slot).min(par::threads()).max(1);
    let blk = Blocks { c, pos, n, bt, ctx };
    let work = |blocks: std::ops::Range<usize>, out: &mut [f32], sc: &mut [f32]| {
        for b in blocks.clone() {
            let first = b * bt - blocks.start * bt;
            let rows = (b * bt + bt).min(n) - b * bt;
            blk.block(
                kern,
                b,
                q,
                keys,
                values,
                &mut out[first * qd..(first + rows) * qd],
                sc,
            );
        }
    };
    split_by_cost(
        &blk,
        0..n.div_ceil(bt),
        runs,
        att,
        &mut scores[..runs * slot],
        slot,
        &work,
    );
}

/// The shape of one prompt-path call.
struct Blocks<'a> {
    c: &'a Config,
    pos: usize,
    n: usize,
    bt: usize,
    ctx: usize,
}

impl Blocks<'_> {
    /// Tokens `b·bt..` of block `b` and the keys its last token sees.
    fn span(&self, b: usize) -> (std::ops::Range<usize>, usize) {
        let t = b * self.bt..((b + 1) * self.bt).min(self.n);
        let seen = self.pos + t.end;
        (t, seen)
    }

    /// Work of block `b`: keys seen × tokens.
    fn cost(&self, b: usize) -> usize {
        let (t, seen) = self.span(b);
        seen * t.len()
    }

    /// Attention of block `b`'s tokens, every head; `out` is their `[tokens, q_dim]` rows.
    #[allow(clippy::too_many_arguments)]
    fn block<T: KvElem>(
        &self,
        kern: &Kernels,
        b: usize,
        q: &[f32],
        keys: &[T],
        values: &[T],
        out: &mut [f32],
        sc: &mut [f32],
    ) {
        let c = self.c;
        let (hd, nkv, qd) = (c.head_dim, c.num_kv_heads, c.q_dim());
        let group = c.num_heads / nkv;
        let (tokens, seen) = self.span(b);
        let ctx = self.ctx;
        let cols = tokens.len() * group;
        let ncols = self.bt * group;
        let scale = 1.0 / (hd as f32).sqrt();
        let (probs, rest) = sc.split_at_mut(ncols * ctx);
        let (kv32, rest) = rest.split_at_mut(hd * ctx);
        let (o, rest) = rest.split_at_mut(ncols * hd);
        let (qb, rest) = rest.split_at_mut(ncols * hd);
        let stage = &mut rest[..V_CHUNK * hd];
        let (probs, kv32, o, qb) = (
            &mut probs[..cols * seen],
            &mut kv32[..seen * hd],
            &mut o[..cols * hd],
            &mut qb[..cols * hd],
        );
        for g in 0..nkv {
            let kv = g * ctx * hd..g * ctx * hd + seen * hd;
            // This kv head's queries of the block, scaled by 1/√d, one row per (token, head):
            // row i·group + h.
            for (i, t) in tokens.clone().enumerate() {
                let from = t * qd + g * group * hd;
                let dst = &mut qb[i * group * hd..(i + 1) * group * hd];
                for (d, &x) in dst.iter_mut().zip(&q[from..from + group * hd]) {
                    *d = x * scale;
                }
            }
            // probs[row·seen + p] = q_row · k_p, then the softmax over the keys the row's token
            // sees, zero past them.
            T::load(kv32, &keys[kv.clone()]);
            (kern.matmul_f32)(qb, hd, kv32, seen, probs);
            for (row, pr) in probs.chunks_exact_mut(seen).enumerate() {
                let valid = self.pos + tokens.start + row / group + 1;
                (kern.softmax_f32)(&mut pr[..valid]);
                pr[valid..].fill(0.0);
            }
            // kv32[d·seen + p] = v_p[d] (values transposed), staged V_CHUNK rows at a time.
            let vals = &values[kv];
            for p0 in (0..seen).step_by(V_CHUNK) {
                let np = V_CHUNK.min(seen - p0);
                let st = &mut stage[..np * hd];
                T::load(st, &vals[p0 * hd..(p0 + np) * hd]);
                for (d, vrow) in kv32.chunks_exact_mut(seen).enumerate() {
                    for (j, v) in vrow[p0..p0 + np].iter_mut().enumerate() {
                        *v = st[j * hd + d];
                    }
                }
            }
            // o[row·hd + d] = Σ_p probs[row, p] · v_p[d], copied to the row's head in `out`.
            (kern.matmul_f32)(probs, seen, kv32, hd, o);
            for (row, or) in o.chunks_exact(hd).enumerate() {
                let (i, h) = (row / group, row % group);
                out[i * qd + (g * group + h) * hd..][..hd].copy_from_slice(or);
            }
        }
    }
}

/// The work on one range of query blocks, with those blocks' rows of `att` and one slot of `scores`.
type BlockWork<'a> = dyn Fn(std::ops::Range<usize>, &mut [f32], &mut [f32]) + Sync + 'a;

/// Runs `work` over `blocks`, split into `runs` contiguous ranges of about equal cost, each with its
/// rows of `att` and one `slot` of `scores`; ranges run in parallel through `rayon::join` (no heap).
#[allow(clippy::too_many_arguments)]
fn split_by_cost(
    blk: &Blocks<'_>,
    blocks: std::ops::Range<usize>,
    runs: usize,
    att: &mut [f32],
    scores: &mut [f32],
    slot: usize,
    work: &BlockWork<'_>,
) {
    if runs <= 1 || blocks.len() <= 1 {
        work(blocks, att, &mut scores[..slot]);
        return;
    }
    let left_runs = runs / 2;
    let total: usize = blocks.clone().map(|b| blk.cost(b)).sum();
    let target = total * left_runs / runs;
    let (mut mid, mut acc) = (blocks.start, 0);
    while mid < blocks.end - 1 && acc + blk.cost(mid) / 2 < target {
        acc += blk.cost(mid);
        mid += 1;
    }
    let mid = mid.max(blocks.start + 1);
    let split = (mid - blocks.start) * blk.bt * blk.c.q_dim();
    let (att_l, att_r) = att.split_at_mut(split);
    let (sc_l, sc_r) = scores.split_at_mut(left_runs * slot);
    rayon::join(
        || split_by_cost(blk, blocks.start..mid, left_runs, att_l, sc_l, slot, work),
        || {
            split_by_cost(
                blk,
                mid..blocks.end,
                runs - left_runs,
                att_r,
                sc_r,
                slot,
                work,
            )
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgeinfer_kernels::testing::Rng;

    fn config(heads: usize, kv_heads: usize, head_dim: usize) -> Config {
        let v = serde_json::json!({
            "model_type": "llama", "hidden_size": heads * head_dim, "intermediate_size": 32,
            "num_hidden_layers": 1, "num_attention_heads": heads, "num_key_value_heads": kv_heads,
            "vocab_size": 10, "head_dim": head_dim, "max_position_embeddings": 4096,
        });
        Config::from_json(&v.to_string()).unwrap()
    }

    /// `v` stored as the cache's element type.
    fn to_kv<T: KvElem>(v: Vec<f32>) -> Vec<T> {
        let mut t = vec![T::from_f32(0.0); v.len()];
        T::store(&mut t, &v);
        t
    }

    /// The prompt path against the one-token path, token by token, over a cache holding `pos` earlier
    /// positions: ragged block counts, GQA and MQA, f32 and f16 caches, 1 and 3 threads.
    fn check<T: KvElem>(
        kern: &Kernels,
        rng: &mut Rng,
        c: &Config,
        pos: usize,
        n: usize,
        threads: usize,
    ) {
        let (qd, hd, nkv) = (c.q_dim(), c.head_dim, c.num_kv_heads);
        let ctx = pos + n + 3;
        let q = rng.vec(n * qd, 1.5);
        let kv_len = nkv * ctx * hd;
        let keys = to_kv::<T>(rng.vec(kv_len, 1.0));
        let values = to_kv::<T>(rng.vec(kv_len, 1.0));
        let pool = edgeinfer_kernels::testing::pool(threads);
        let mut got = vec![f32::NAN; n * qd];
        let mut scores = vec![0.0; threads * attention_slot(c, ctx, n)];
        pool.install(|| attention(kern, c, &q, &keys, &values, pos, &mut got, &mut scores, ctx));
        let mut want = vec![0.0; qd];
        let mut sc1 = vec![0.0; attention_slot(c, ctx, 1)];
        for t in 0..n {
            let qt = &q[t * qd..(t + 1) * qd];
            attention_tokens(
                kern,
                c,
                qt,
                &keys,
                &values,
                pos + t,
                &mut want,
                &mut sc1,
                ctx,
            );
            for (j, (g, w)) in got[t * qd..(t + 1) * qd].iter().zip(&want).enumerate() {
                assert!(
                    (g - w).abs() <= 1e-5 * (1.0 + w.abs()),
                    "pos {pos} n {n} threads {threads} token {t} [{j}]: {g} vs {w}"
                );
            }
        }
    }

    /// One token at long contexts on several threads (kv heads split by positions when they do not
    /// divide among the threads) against one thread (whole heads, one softmax per head).
    #[test]
    fn split_positions_match_whole_heads() {
        let mut rng = Rng::new(edgeinfer_kernels::testing::seed());
        let kern = Kernels::detect();
        for (heads, kv_heads, hd) in [(9, 3, 16), (6, 3, 8), (4, 1, 16), (10, 5, 8)] {
            let c = config(heads, kv_heads, hd);
            for pos in [SPLIT_MIN - 2, SPLIT_MIN - 1, 300, 777] {
                let ctx = pos + 5;
                for threads in [2, 3, 4] {
                    assert_eq!(
                        Split::plan(&c, ctx, threads, pos + 1).is_some(),
                        pos + 1 >= SPLIT_MIN && !kv_heads.is_multiple_of(threads),
                        "plan for {kv_heads} kv heads on {threads} threads at {pos}"
                    );
                    split_case::<f32>(&kern, &mut rng, &c, pos, ctx, threads);
                    split_case::<f16>(&kern, &mut rng, &c, pos, ctx, threads);
                }
            }
        }
    }

    fn split_case<T: KvElem>(
        kern: &Kernels,
        rng: &mut Rng,
        c: &Config,
        pos: usize,
        ctx: usize,
        threads: usize,
    ) {
        let (qd, hd, nkv) = (c.q_dim(), c.head_dim, c.num_kv_heads);
        let kv_len = nkv * ctx * hd;
        // Scores spread wide enough that the ranges' maxima differ a lot.
        let q = rng.vec(qd, 3.0);
        let (keys, values) = (
            to_kv::<T>(rng.vec(kv_len, 1.0)),
            to_kv::<T>(rng.vec(kv_len, 1.0)),
        );
        let slot = attention_slot(c, ctx, 1);
        let mut want = vec![f32::NAN; qd];
        let mut sc1 = vec![0.0; slot];
        attention_tokens(kern, c, &q, &keys, &values, pos, &mut want, &mut sc1, ctx);
        let pool = edgeinfer_kernels::testing::pool(threads);
        let mut got = vec![f32::NAN; qd];
        let mut scores = vec![0.0; threads * slot];
        pool.install(|| attention(kern, c, &q, &keys, &values, pos, &mut got, &mut scores, ctx));
        for (j, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!(
                (g - w).abs() <= 2e-5 * (1.0 + w.abs()),
                "{nkv} kv heads, pos {pos}, {threads} threads [{j}]: {g} vs {w}"
            );
        }
    }

    #[test]
    fn prompt_blocks_match_token_by_token() {
        let mut rng = Rng::new(edgeinfer_kernels::testing::seed());
        for kern in [Kernels::SCALAR, Kernels::detect()] {
            for (heads, kv_heads, hd) in [(4, 2, 16), (6, 1, 8), (3, 3, 24)] {
                let c = config(heads, kv_heads, hd);
                for (pos, n) in [(0, 2), (0, 8), (0, 13), (5, 1), (5, 17), (40, 9), (0, 33)] {
                    for threads in [1, 3] {
                        check::<f32>(&kern, &mut rng, &c, pos, n, threads);
                        check::<f16>(&kern, &mut rng, &c, pos, n, threads);
                    }
                }
            }
        }
    }
}
