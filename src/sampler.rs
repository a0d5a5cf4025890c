//! Token sampling: repetition penalty, greedy, top-k, temperature, top-p, min-p, seeded draw.
//!
//! The order follows llama.cpp's classic chain: penalty → (greedy short-cut) → top-k → temperature →
//! softmax → top-p → min-p → renormalise → draw. `Sampler::sample` runs once per decoded token and
//! never touches the heap: every buffer is sized in `Sampler::new`.
//!
//! Determinism: the PRNG (xoshiro256**) and `exp` are written here with plain IEEE arithmetic, so a
//! seed gives the same tokens on every platform for the same logits (the platform `exp` may differ
//! in the last ulp between libms).

pub mod penalties;

use std::cmp::Ordering;

#[derive(Clone, Debug, PartialEq)]
pub struct SamplerConfig {
    /// Softmax temperature; 0 = greedy (argmax).
    pub temperature: f32,
    /// Keep the k most likely tokens; 0 = off.
    pub top_k: usize,
    /// Keep the smallest set whose probability reaches p; 1 = off.
    pub top_p: f32,
    /// Drop tokens less likely than `min_p` × the most likely one; 0 = off.
    pub min_p: f32,
    /// Divide positive (multiply negative) logits of recently seen tokens; 1 = off.
    pub repeat_penalty: f32,
    /// How many of the last history ids the penalty looks at.
    pub repeat_last_n: usize,
    /// OpenAI's presence penalty: subtracted from the logit of every token generated so far
    /// ([`penalties`]); 0 = off.
    pub presence_penalty: f32,
    /// OpenAI's frequency penalty: subtracted once per time a token was generated; 0 = off.
    pub frequency_penalty: f32,
    pub seed: u64,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        SamplerConfig {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            seed: 0x5EED,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SamplerError {
    #[error("sampler option `{name}`: {reason}")]
    InvalidParam { name: &'static str, reason: String },
}

impl SamplerConfig {
    /// Argmax decoding: deterministic whatever the seed.
    pub fn greedy() -> Self {
        SamplerConfig {
            temperature: 0.0,
            top_k: 1,
            top_p: 1.0,
            min_p: 0.0,
            ..SamplerConfig::default()
        }
    }

    pub fn validate(&self) -> Result<(), SamplerError> {
        let bad = |name, reason: String| Err(SamplerError::InvalidParam { name, reason });
        if !self.temperature.is_finite() || self.temperature < 0.0 {
            return bad(
                "temperature",
                format!("{} is not a finite number >= 0", self.temperature),
            );
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad("top_p", format!("{} is outside (0, 1]", self.top_p));
        }
        if !(self.min_p >= 0.0 && self.min_p < 1.0) {
            return bad("min_p", format!("{} is outside [0, 1)", self.min_p));
        }
        if !self.repeat_penalty.is_finite() || self.repeat_penalty <= 0.0 {
            return bad(
                "repeat_penalty",
                format!("{} is not a finite number > 0", self.repeat_penalty),
            );
        }
        for (name, p) in [
            ("presence_penalty", self.presence_penalty),
            ("frequency_penalty", self.frequency_penalty),
        ] {
            if !(-2.0..=2.0).contains(&p) {
                return bad(name, format!("{p} is outside [-2, 2]"));
            }
        }
        Ok(())
    }

    fn is_greedy(&self) -> bool {
        self.temperature == 0.0 || self.top_k == 1
    }
}

/// A configured sampler with its scratch buffers. One per generation stream.
pub struct Sampler {
    cfg: SamplerConfig,
    rng: Xoshiro256,
    /// Candidate token ids; the first `n` entries are live during `sample`.
    idx: Vec<u32>,
    /// Unnormalised probabilities, parallel to `idx`.
    probs: Vec<f32>,
    /// One bit per vocab entry: "penalty already applied in this step".
    seen: Vec<u64>,
    /// The presence and frequency penalties' counts of generated tokens.
    occurrence: penalties::OccurrencePenalties,
}

impl Sampler {
    pub fn new(cfg: SamplerConfig, vocab_size: usize) -> Result<Sampler, SamplerError> {
        cfg.validate()?;
        if vocab_size == 0 || vocab_size > u32::MAX as usize {
            return Err(SamplerError::InvalidParam {
                name: "vocab_size",
                reason: format!("{vocab_size} is not in 1..=2^32-1"),
            });
        }
        let rng = Xoshiro256::new(cfg.seed);
        let occurrence = penalties::OccurrencePenalties::new(
            cfg.presence_penalty,
            cfg.frequency_penalty,
            vocab_size,
        );
        let mut s = Sampler {
            cfg,
            rng,
            idx: Vec::new(),
            probs: Vec::new(),
            seen: Vec::new(),
            occurrence,
        };
        s.ensure_capacity(vocab_size);
        Ok(s)
    }

    pub fn config(&self) -> &SamplerConfig {
        &self.cfg
    }

    /// Restart the random stream, e.g. for a new request that must reproduce a seed.
    pub fn reset(&mut self, seed: u64) {
        self.cfg.seed = seed;
        self.rng = Xoshiro256::new(seed);
        self.occurrence.reset();
    }

    /// Picks the next token. May rewrite `logits` (NaN → -inf, penalties). Does not allocate as long
    /// as `logits.len()` is at most the `vocab_size` given to `new` (a longer slice grows the buffers
    /// once). An empty slice returns 0.
    pub fn sample(&mut self, logits: &mut [f32], history: &[u32]) -> u32 {
        let n = logits.len();
        if n == 0 {
            return 0;
        }
        self.ensure_capacity(n);
        for l in logits.iter_mut() {
            if l.is_nan() {
                *l = f32::NEG_INFINITY;
            }
        }
        self.apply_repeat_penalty(logits, history);
        self.occurrence.apply(logits, history);
        if self.cfg.is_greedy() {
            return argmax(logits);
        }

        // Top-k: one pass with a k-entry min-heap (most logits are rejected by a single compare),
        // leaving the k best in idx[..k]; without top-k every id is a candidate.
        let mut len = n;
        if self.cfg.top_k > 0 && self.cfg.top_k < n {
            len = self.cfg.top_k;
            top_k_heap(logits, &mut self.idx[..len]);
        } else {
            for (i, slot) in self.idx[..n].iter_mut().enumerate() {
                *slot = i as u32;
            }
        }
        let max = self.idx[..len]
            .iter()
            .map(|&i| logits[i as usize])
            .fold(f32::NEG_INFINITY, f32::max);
        if max == f32::NEG_INFINITY {
            // Every candidate is masked out: nothing to draw from, fall back to argmax's choice.
            return argmax(logits);
        }

        // Temperature + softmax, unnormalised: the best token gets exactly 1.0.
        let inv_t = 1.0 / self.cfg.temperature;
        let mut sum = 0.0f32;
        for (p, &i) in self.probs[..len].iter_mut().zip(&self.idx[..len]) {
            *p = exp_det((logits[i as usize] - max) * inv_t);
            sum += *p;
        }

        // Top-p and min-p each keep a prefix of the candidates sorted by probability, so applying
        // min-p first (relative to the best token's 1.0, no order needed) gives the same survivors and
        // leaves top-p far fewer candidates to sort. Top-p's mass target still uses the full sum.
        if self.cfg.min_p > 0.0 {
            let mut w = 0;
            for j in 0..len {
                if self.probs[j] >= self.cfg.min_p {
                    self.probs[w] = self.probs[j];
                    self.idx[w] = self.idx[j];
                    w += 1;
                }
            }
            len = w; // >= 1: the best token has 1.0 > min_p
        }
        if self.cfg.top_p < 1.0 {
            let cand = &mut self.idx[..len];
            cand.sort_unstable_by(|&a, &b| {
                let (la, lb) = (logits[a as usize], logits[b as usize]);
                lb.partial_cmp(&la)
                    .unwrap_or(Ordering::Equal)
                    .then(a.cmp(&b))
            });
            let target = self.cfg.top_p * sum;
            let mut cum = 0.0f32;
            for j in 0..len {
                let p = exp_det((logits[self.idx[j] as usize] - max) * inv_t);
                self.probs[j] = p;
                cum += p;
                if cum >= target {
                    len = j + 1;
                    break;
                }
            }
        }

        // Renormalise implicitly: draw in [0, mass of the survivors).
        let probs = &self.probs[..len];
        let total: f32 = probs.iter().sum();
        let r = self.rng.next_f32() * total;
        let mut cum = 0.0f32;
        for (j, &p) in probs.iter().enumerate() {
            cum += p;
            if r < cum {
                return self.idx[j];
            }
        }
        // Rounding left r at the very top: the last candidate with any mass.
        let last = probs.iter().rposition(|&p| p > 0.0).unwrap_or(0);
        self.idx[last]
    }

    fn ensure_capacity(&mut self, n: usize) {
        if self.idx.len() < n {
            self.idx.resize(n, 0);
            self.probs.resize(n, 0.0);
            self.seen.resize(n.div_ceil(64), 0);
        }
    }

    /// Each distinct id in the window is penalised once, however often it repeats.
    fn apply_repeat_penalty(&mut self, logits: &mut [f32], history: &[u32]) {
        let penalty = self.cfg.repeat_penalty;
        if penalty == 1.0 || self.cfg.repeat_last_n == 0 {
            return;
        }
        let window = &history[history.len().saturating_sub(self.cfg.repeat_last_n)..];
        for &id in window {
            let i = id as usize;
            if i >= logits.len() {
                continue;
            }
            let (word, bit) = (i / 64, 1u64 << (i % 64));
            if self.seen[word] & bit != 0 {
                continue;
            }
            self.seen[word] |= bit;
            let l = &mut logits[i];
            *l = if *l > 0.0 { *l / penalty } else { *l * penalty };
        }
        for &id in window {
            if let Some(w) = self.seen.get_mut(id as usize / 64) {
                *w = 0;
            }
        }
    }
}

/// Fills `heap` with the ids of the `heap.len()` largest logits (ties: lower id wins), in heap order.
/// `heap.len()` must be in 1..=logits.len().
fn top_k_heap(logits: &[f32], heap: &mut [u32]) {
    // Min-heap on (logit, -id): the root is the worst of the current best k.
    let worse = |a: u32, b: u32| {
        let (la, lb) = (logits[a as usize], logits[b as usize]);
        la < lb || (la == lb && a > b)
    };
    let sift_down = |heap: &mut [u32], mut i: usize| loop {
        let left = 2 * i + 1;
        if left >= heap.len() {
            break;
        }
        let right = left + 1;
        let child = if right < heap.len() && worse(heap[right], heap[left]) {
            right
        } else {
            left
        };
        if worse(heap[child], heap[i]) {
            heap.swap(child, i);
            i = child;
        } else {
            break;
        }
    };
    let k = heap.len();
    for (i, slot) in heap.iter_mut().enumerate() {
        *slot = i as u32;
    }
    for i in (0..k / 2).rev() {
        sift_down(heap, i);
    }
    for id in k as u32..logits.len() as u32 {
        if worse(heap[0], id) {
            heap[0] = id;
            sift_down(heap, 0);
        }
    }
}

/// Index of the largest logit; ties go to the lowest id. NaN never wins.
fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0usize;
    let mut best_v = f32::NEG_INFINITY;
    for (i, &v) in logits.iter().enumerate() {
        if v > best_v {
            best = i;
            best_v = v;
        }
    }
    best as u32
}

/// e^x for x <= 0 using only IEEE +, *, and exact power-of-two scaling, so results are bit-identical
/// across platforms. Relative error about 2e-7 — ample for sampling.
fn exp_det(x: f32) -> f32 {
    if x < -87.0 {
        return 0.0; // below f32's normal range; also covers -inf
    }
    if x > 88.0 {
        return f32::INFINITY;
    }
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split in a short high part (exact when multiplied by n) and the remainder.
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    let n = (x * LOG2E).round();
    let r = (x - n * LN2_HI) - n * LN2_LO; // |r| <= ln2 / 2
                                           // Taylor/Horner to degree 6 on |r| <= 0.347: truncation error < 3e-8.
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    // 2^n built from the exponent bits; the clamps above keep n in [-126, 127].
    let n = n as i32;
    p * f32::from_bits(((n + 127) as u32) << 23)
}

/// xoshiro256** (Blackman & Vigna), seeded through splitmix64 so that any u64 — zero included —
/// gives a well-mixed, non-zero state.
#[derive(Clone, Debug)]
struct Xoshiro256 {
    s: [u64; 4],
}

impl Xoshiro256 {
    fn new(seed: u64) -> Self {
        let mut z = seed;
        let mut next = || {
            z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut x = z;
            x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            x ^ (x >> 31)
        };
        Xoshiro256 {
            s: [next(), next(), next(), next()],
        }
    }

    fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let out = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        out
    }

    /// Uniform in [0, 1) with 24 bits of precision.
    fn next_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 * (1.0 / (1u32 << 24) as f32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(temperature: f32, top_k: usize, top_p: f32, min_p: f32) -> SamplerConfig {
        SamplerConfig {
            temperature,
            top_k,
            top_p,
            min_p,
            ..SamplerConfig::default()
        }
    }

    /// A smooth, seeded, non-trivial distribution over `n` logits.
    fn logits(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = Xoshiro256::new(seed);
        (0..n).map(|_| rng.next_f32() * 8.0 - 4.0).collect()
    }

    fn draws(cfg: SamplerConfig, l: &[f32], steps: usize) -> Vec<u32> {
        let mut s = Sampler::new(cfg, l.len()).unwrap();
        (0..steps).map(|_| s.sample(&mut l.to_vec(), &[])).collect()
    }

    #[test]
    fn greedy_is_argmax_with_lowest_id_on_ties() {
        let mut s = Sampler::new(SamplerConfig::greedy(), 6).unwrap();
        assert_eq!(s.sample(&mut [0.1, 3.0, -1.0, 2.0, 3.0, f32::NAN], &[]), 1);
        assert_eq!(
            s.sample(
                &mut [f32::NAN, f32::NAN, 0.5, f32::NEG_INFINITY, 0.0, 0.5],
                &[]
            ),
            2
        );
        let l = logits(1000, 7);
        let want = argmax(&l);
        assert_eq!(s.sample(&mut l.clone(), &[]), want);
        let mut s = Sampler::new(cfg(0.0, 40, 0.5, 0.1), 1000).unwrap();
        assert_eq!(s.sample(&mut l.clone(), &[]), want);
    }

    #[test]
    fn same_seed_same_sequence_and_reset_replays() {
        let l = logits(500, 1);
        let c = cfg(1.0, 0, 1.0, 0.0);
        let a = draws(c.clone(), &l, 200);
        assert_eq!(a, draws(c.clone(), &l, 200));
        assert_ne!(
            a,
            draws(
                SamplerConfig {
                    seed: 99,
                    ..c.clone()
                },
                &l,
                200
            )
        );
        let distinct: std::collections::HashSet<_> = a.iter().collect();
        assert!(
            distinct.len() > 20,
            "a flat-ish distribution should spread: {}",
            distinct.len()
        );

        let mut s = Sampler::new(c.clone(), l.len()).unwrap();
        let first: Vec<u32> = (0..50).map(|_| s.sample(&mut l.clone(), &[])).collect();
        s.reset(c.seed);
        let again: Vec<u32> = (0..50).map(|_| s.sample(&mut l.clone(), &[])).collect();
        assert_eq!(first, again);
    }

    #[test]
    fn pinned_sequence_for_seed() {
        // Guards cross-platform/cross-version determinism: change only with intent.
        let mut rng = Xoshiro256::new(0x5EED);
        let first: Vec<u64> = (0..3).map(|_| rng.next_u64()).collect();
        let mut rng2 = Xoshiro256::new(0x5EED);
        assert_eq!(first, (0..3).map(|_| rng2.next_u64()).collect::<Vec<_>>());
        assert!(first.iter().all(|&v| v != 0));
    }

    #[test]
    fn top_k_one_is_greedy() {
        let l = logits(300, 3);
        let want = argmax(&l);
        for seed in 0..20 {
            let c = SamplerConfig {
                seed,
                ..cfg(1.5, 1, 1.0, 0.0)
            };
            assert!(draws(c, &l, 10).iter().all(|&t| t == want));
        }
    }

    #[test]
    fn top_k_limits_candidates() {
        let l = logits(300, 4);
        let mut order: Vec<u32> = (0..300).collect();
        order.sort_by(|&a, &b| l[b as usize].partial_cmp(&l[a as usize]).unwrap());
        let top: Vec<u32> = order[..5].to_vec();
        let got = draws(cfg(5.0, 5, 1.0, 0.0), &l, 500);
        assert!(got.iter().all(|t| top.contains(t)));
        let distinct: std::collections::HashSet<_> = got.iter().collect();
        assert_eq!(distinct.len(), 5, "high temperature should reach all five");
    }

    #[test]
    fn top_k_heap_matches_full_sort() {
        for (n, k, seed) in [
            (1, 1, 0),
            (7, 3, 1),
            (64, 64, 2),
            (1000, 40, 3),
            (333, 1, 4),
            (100, 99, 5),
        ] {
            let mut l = logits(n, seed);
            // Ties and -inf must follow the same rule as the sort: higher logit, then lower id.
            for i in (0..n).step_by(5) {
                l[i] = 1.0;
            }
            if n > 3 {
                l[3] = f32::NEG_INFINITY;
            }
            let mut want: Vec<u32> = (0..n as u32).collect();
            want.sort_by(|&a, &b| {
                l[b as usize]
                    .partial_cmp(&l[a as usize])
                    .unwrap()
                    .then(a.cmp(&b))
            });
            want.truncate(k);
            want.sort_unstable();
            let mut heap = vec![0u32; k];
            top_k_heap(&l, &mut heap);
            heap.sort_unstable();
            assert_eq!(heap, want, "n={n} k={k}");
        }
    }

    /// Survivors of top-k → temperature → softmax → top-p → min-p, done the slow, literal way.
    fn reference_survivors(l: &[f32], c: &SamplerConfig) -> Vec<u32> {
        let mut order: Vec<u32> = (0..l.len() as u32).collect();
        order.sort_by(|&a, &b| {
            l[b as usize]
                .partial_cmp(&l[a as usize])
                .unwrap()
                .then(a.cmp(&b))
        });
        if c.top_k > 0 {
            order.truncate(c.top_k);
        }
        let max = l[order[0] as usize];
        let p: Vec<f64> = order
            .iter()
            .map(|&i| (((l[i as usize] - max) / c.temperature) as f64).exp())
            .collect();
        let sum: f64 = p.iter().sum();
        let mut keep = order.len();
        let mut cum = 0.0;
        for (j, q) in p.iter().enumerate() {
            cum += q / sum;
            if cum >= c.top_p as f64 {
                keep = j + 1;
                break;
            }
        }
        order.truncate(keep);
        order
            .into_iter()
            .zip(p)
            .filter(|&(_, q)| q >= c.min_p as f64)
            .map(|(i, _)| i)
            .collect()
    }

    #[test]
    fn filters_match_the_literal_chain() {
        let l = logits(200, 21);
        for (t, k, p, m) in [
            (1.0, 0, 0.5, 0.0),
            (0.7, 0, 0.9, 0.2),
            (1.3, 50, 0.8, 0.05),
            (1.0, 10, 1.0, 0.3),
            (2.0, 0, 0.3, 0.5),
        ] {
            let c = cfg(t, k, p, m);
            let want = reference_survivors(&l, &c);
            let got: std::collections::BTreeSet<u32> =
                draws(c.clone(), &l, 3000).into_iter().collect();
            assert!(
                got.iter().all(|t| want.contains(t)),
                "{c:?}: drew outside {want:?}: {got:?}"
            );
            if want.len() <= 8 {
                assert_eq!(got.len(), want.len(), "{c:?}: {want:?} vs {got:?}");
            }
        }
    }

    #[test]
    fn tiny_top_p_is_argmax() {
        let l = logits(400, 5);
        let want = argmax(&l);
        assert!(draws(cfg(1.0, 0, 1e-6, 0.0), &l, 100)
            .iter()
            .all(|&t| t == want));
        assert!(draws(cfg(1.0, 40, 1e-6, 0.0), &l, 100)
            .iter()
            .all(|&t| t == want));
    }

    #[test]
    fn top_p_keeps_the_nucleus() {
        // p ∝ [0.5, 0.3, 0.15, 0.05]: top_p 0.7 keeps the first two.
        let l: Vec<f32> = [0.5f32, 0.3, 0.15, 0.05].iter().map(|p| p.ln()).collect();
        let got = draws(cfg(1.0, 0, 0.7, 0.0), &l, 500);
        assert!(got.iter().all(|&t| t < 2));
        assert!(got.contains(&0) && got.contains(&1));
    }

    #[test]
    fn min_p_filters_relative_to_best() {
        // p ∝ [1, 0.5, 0.09, 0.01]: min_p 0.1 drops ids 2 and 3.
        let l: Vec<f32> = [1.0f32, 0.5, 0.09, 0.01].iter().map(|p| p.ln()).collect();
        let got = draws(cfg(1.0, 0, 1.0, 0.1), &l, 1000);
        assert!(got.iter().all(|&t| t < 2));
        let ones = got.iter().filter(|&&t| t == 1).count() as f32 / 1000.0;
        assert!(
            (ones - 1.0 / 3.0).abs() < 0.06,
            "renormalised p(1) ≈ 1/3, got {ones}"
        );
        // Without min_p the tail shows up.
        assert!(draws(cfg(1.0, 0, 1.0, 0.0), &l, 2000).contains(&2));
    }

    #[test]
    fn presence_and_frequency_penalties_count_generated_tokens_only() {
        let c = SamplerConfig {
            presence_penalty: 1.0,
            frequency_penalty: 0.5,
            ..SamplerConfig::greedy()
        };
        let mut s = Sampler::new(c, 3).unwrap();
        // The prompt's tokens (the history at the first draw) are not penalised.
        let mut l = [3.0f32, 2.5, 0.0];
        assert_eq!(s.sample(&mut l, &[0, 0]), 0);
        // Token 0 generated once: 3.0 - 1.0 - 0.5 = 1.5 < 2.5.
        let mut l = [3.0f32, 2.5, 0.0];
        assert_eq!(s.sample(&mut l, &[0, 0, 0]), 1);
        assert_eq!(l, [1.5, 2.5, 0.0]);
        s.reset(7);
        let mut l = [3.0f32, 2.5, 0.0];
        assert_eq!(s.sample(&mut l, &[0, 0, 0]), 0);
    }

    #[test]
    fn repetition_penalty_divides_positive_and_multiplies_negative() {
        let c = SamplerConfig {
            repeat_penalty: 2.0,
            repeat_last_n: 3,
            ..SamplerConfig::greedy()
        };
        let mut s = Sampler::new(c, 4).unwrap();
        let mut l = [4.0f32, 3.0, -1.0, 1.0];
        // id 0 appears twice but is penalised once; id 3 is outside the window of 3.
        assert_eq!(s.sample(&mut l, &[3, 0, 2, 0]), 1);
        assert_eq!(l, [2.0, 3.0, -2.0, 1.0]);
        // The scratch bitset is clean for the next step.
        let mut l = [4.0f32, 3.0, -1.0, 1.0];
        assert_eq!(s.sample(&mut l, &[]), 0);
        // Out-of-range ids in history are ignored, not a panic.
        let mut l = [4.0f32, 3.0, -1.0, 1.0];
        assert_eq!(s.sample(&mut l, &[1000, u32::MAX]), 0);
    }

    #[test]
    fn degenerate_inputs_do_not_panic() {
        let mut s = Sampler::new(SamplerConfig::default(), 8).unwrap();
        assert_eq!(s.sample(&mut [], &[]), 0);
        assert_eq!(s.sample(&mut [f32::NAN; 8], &[]), 0);
        assert_eq!(s.sample(&mut [f32::NEG_INFINITY; 8], &[]), 0);
        let mut l = [f32::NEG_INFINITY; 8];
        l[5] = 0.0;
        assert_eq!(s.sample(&mut l, &[]), 5);
        let mut inf = [0.0f32; 8];
        inf[2] = f32::INFINITY;
        let _ = s.sample(&mut inf, &[]);
        // Longer than the declared vocab: grows instead of panicking.
        let mut long = logits(20, 9);
        assert!((s.sample(&mut long, &[]) as usize) < 20);
    }

    #[test]
    fn validation_names_the_field() {
        let name = |c: SamplerConfig| match c.validate() {
            Err(SamplerError::InvalidParam { name, .. }) => Some(name),
            Ok(()) => None,
        };
        let d = SamplerConfig::default;
        assert_eq!(name(d()), None);
        assert_eq!(name(SamplerConfig::greedy()), None);
        assert_eq!(
            name(SamplerConfig {
                temperature: f32::NAN,
                ..d()
            }),
            Some("temperature")
        );
        assert_eq!(
            name(SamplerConfig {
                temperature: -0.1,
                ..d()
            }),
            Some("temperature")
        );
        assert_eq!(name(SamplerConfig { top_p: 0.0, ..d() }), Some("top_p"));
        assert_eq!(name(SamplerConfig { top_p: 1.01, ..d() }), Some("top_p"));
        assert_eq!(
            name(SamplerConfig {
                top_p: f32::NAN,
                ..d()
            }),
            Some("top_p")
        );
        assert_eq!(name(SamplerConfig { min_p: 1.0, ..d() }), Some("min_p"));
        assert_eq!(
            name(SamplerConfig {
                min_p: -0.01,
                ..d()
            }),
            Some("min_p")
        );
        assert_eq!(
            name(SamplerConfig {
                repeat_penalty: 0.0,
                ..d()
            }),
            Some("repeat_penalty")
        );
        assert_eq!(
            name(SamplerConfig {
                repeat_penalty: f32::NAN,
                ..d()
            }),
            Some("repeat_penalty")
        );
        assert!(Sampler::new(SamplerConfig { top_p: 2.0, ..d() }, 10).is_err());
        assert!(Sampler::new(d(), 0).is_err());
    }

    #[test]
    fn exp_det_matches_std() {
        let mut x = -90.0f32;
        while x <= 0.0 {
            let (got, want) = (exp_det(x), x.exp());
            assert!(
                (got - want).abs() <= 1e-6 * want + 1e-37,
                "x={x}: {got} vs {want}"
            );
            x += 0.013;
        }
        assert_eq!(exp_det(0.0), 1.0);
        assert_eq!(exp_det(f32::NEG_INFINITY), 0.0);
    }
}
