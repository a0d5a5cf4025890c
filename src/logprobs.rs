//! Log-probabilities of generated tokens, for OpenAI's `logprobs` / `top_logprobs`.
//!
//! What is reported is the model's distribution: the log-softmax of the raw logits of each step, before
//! temperature, top-k/p, min-p and penalties (as OpenAI does), so the numbers do not depend on the
//! sampling settings and can be checked against a teacher-forced evaluation of the same tokens.
//!
//! [`Session::generate_observed`] shows the raw logits of each step but not the token drawn from them,
//! which is only known once the step's text is out. Rather than change the generation loop, the
//! observer here runs a second [`Sampler`] with the same configuration on a copy of the same logits
//! and the same history: the sampler is deterministic (its own PRNG and `exp`), so it draws the same
//! token, and [`generate_with_logprobs`] checks that it did against the generation's tokens.

use std::cell::RefCell;

use crate::error::{Error, Result};
use crate::model::Model;
use crate::pool::SessionPool;
use crate::sampler::Sampler;
use crate::session::{GenerateOptions, Generation, Prompt};

/// Most alternatives one token may list (OpenAI's limit for `top_logprobs`).
pub const MAX_TOP_LOGPROBS: usize = 20;

/// One generated token: its log-probability and the most likely alternatives at its step.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenLogprob {
    pub token: u32,
    /// ln p(token) under the step's raw logits.
    pub logprob: f32,
    /// The `top_n` most likely tokens of the step and their log-probabilities, best first (ties:
    /// lower id first).
    pub top: Vec<(u32, f32)>,
}

/// ln Σ exp(logits), in f64 so that a 50k-entry vocabulary loses nothing; NaN counts as -inf (as
/// the sampler treats it).
pub fn log_sum_exp(logits: &[f32]) -> f64 {
    let max = logits
        .iter()
        .filter(|l| !l.is_nan())
        .fold(f32::NEG_INFINITY, |m, &l| m.max(l));
    if max == f32::NEG_INFINITY {
        return f64::NEG_INFINITY;
    }
    let sum: f64 = logits
        .iter()
        .filter(|l| !l.is_nan())
        .map(|&l| ((l - max) as f64).exp())
        .sum();
    max as f64 + sum.ln()
}

/// The log-probability of `token` and of the `top_n` most likely tokens under `logits`.
pub fn token_logprob(logits: &[f32], token: u32, top_n: usize) -> TokenLogprob {
    let lse = log_sum_exp(logits);
    let lp = |l: f32| {
        if l.is_nan() {
            f32::NEG_INFINITY
        } else {
            (l as f64 - lse) as f32
        }
    };
    // Insertion into a list of at most `top_n` (<= 20): most logits fail the first comparison.
    let mut top: Vec<(u32, f32)> = Vec::with_capacity(top_n.min(MAX_TOP_LOGPROBS) + 1);
    if top_n > 0 {
        for (id, &l) in logits.iter().enumerate() {
            if l.is_nan() || (top.len() == top_n && l <= top[top_n - 1].1) {
                continue;
            }
            let at = top.partition_point(|&(_, t)| t >= l);
            top.insert(at, (id as u32, l));
            top.truncate(top_n);
        }
    }
    TokenLogprob {
        token,
        logprob: logits
            .get(token as usize)
            .map_or(f32::NEG_INFINITY, |&l| lp(l)),
        top: top.into_iter().map(|(id, l)| (id, lp(l))).collect(),
    }
}

/// Follows a generation step by step: draws each token as the generation's sampler does and records
/// its log-probability.
struct Observer {
    sampler: Sampler,
    /// The session's tokens as its sampler sees them: the prompt, then each drawn token.
    history: Vec<u32>,
    scratch: Vec<f32>,
    top_n: usize,
    /// Tokens that end the generation without being part of it.
    eos: Vec<u32>,
    entries: Vec<TokenLogprob>,
}

impl Observer {
    fn observe(&mut self, logits: &[f32]) {
        self.scratch.clear();
        self.scratch.extend_from_slice(logits);
        let token = self.sampler.sample(&mut self.scratch, &self.history);
        self.history.push(token);
        if !self.eos.contains(&token) {
            self.entries.push(token_logprob(logits, token, self.top_n));
        }
    }
}

/// [`SessionPool::generate`] with the log-probability of each generated token (and its `top_n`
/// alternatives, at most [`MAX_TOP_LOGPROBS`]). `on_text` gets each piece of text with the tokens
/// drawn since the previous piece (text held back for stop strings arrives later than its tokens).
pub fn generate_with_logprobs(
    pool: &SessionPool,
    prompt: &Prompt<'_>,
    opts: &GenerateOptions,
    top_n: usize,
    mut on_text: impl FnMut(&str, Vec<TokenLogprob>) -> bool,
) -> Result<(Generation, Vec<TokenLogprob>)> {
    let tokens = pool.tokenize(prompt)?;
    let model: &Model = pool.model();
    let vocab = model.config().vocab_size;
    let observer = RefCell::new(Observer {
        sampler: Sampler::new(opts.sampler.clone(), vocab)?,
        history: {
            let mut h = Vec::with_capacity(tokens.len() + opts.max_tokens + 1);
            h.extend_from_slice(&tokens);
            h
        },
        scratch: Vec::with_capacity(vocab),
        top_n: top_n.min(MAX_TOP_LOGPROBS),
        eos: if opts.stop_at_eos {
            model.eos_ids().to_vec()
        } else {
            Vec::new()
        },
        entries: Vec::with_capacity(opts.max_tokens),
    });
    let mut session = pool.acquire(&tokens, opts.deadline)?;
    let mut handed = 0;
    let result = session.generate_observed(
        &Prompt::Tokens(&tokens),
        opts,
        |text| {
            let fresh = observer.borrow().entries[handed..].to_vec();
            handed += fresh.len();
            on_text(text, fresh)
        },
        |logits| observer.borrow_mut().observe(logits),
    );
    if result.is_err() {
        session.reset();
    }
    let g = result?;
    let mut entries = observer.into_inner().entries;
    let drawn = entries.iter().map(|e| e.token);
    if entries.len() < g.tokens.len() || !drawn.zip(&g.tokens).all(|(a, &b)| a == b) {
        return Err(Error::Options {
            field: "logprobs",
            reason: "the generation drew other tokens than its sampler's replica \
                     (logprobs are not available with this request's options)"
                .into(),
        });
    }
    entries.truncate(g.tokens.len());
    Ok((g, entries))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logprobs_are_a_log_softmax() {
        let logits = [1.0f32, 3.0, 2.0, f32::NAN, 3.0];
        let t = token_logprob(&logits, 2, 3);
        let z: f64 = [1.0f64, 3.0, 2.0, 3.0].iter().map(|l| l.exp()).sum();
        assert!((t.logprob as f64 - (2.0 - z.ln())).abs() < 1e-6, "{t:?}");
        let ids: Vec<u32> = t.top.iter().map(|p| p.0).collect();
        assert_eq!(ids, [1, 4, 2]);
        assert!((t.top[0].1 as f64 - (3.0 - z.ln())).abs() < 1e-6);
        assert!(token_logprob(&logits, 0, 0).top.is_empty());
        // Probabilities over the vocabulary sum to 1.
        let total: f64 = (0..5)
            .map(|i| (token_logprob(&logits, i, 0).logprob as f64).exp())
            .sum();
        assert!((total - 1.0).abs() < 1e-6);
    }
}
