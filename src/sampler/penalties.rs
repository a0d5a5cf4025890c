//! OpenAI's presence and frequency penalties: before each draw,
//! `logit[t] -= presence · [count(t) > 0] + frequency · count(t)`, counting the tokens generated so
//! far (not the prompt's, unlike the repetition penalty's window).
//! [`super::Sampler`] applies them after the repetition penalty (`SamplerConfig::presence_penalty`,
//! `frequency_penalty`).

/// Counts of the generated tokens and the penalties to apply. Zero penalties cost one branch per
/// step and allocate nothing; otherwise the buffers are sized once in [`OccurrencePenalties::new`]
/// and nothing is allocated per token.
#[derive(Clone, Debug)]
pub struct OccurrencePenalties {
    presence: f32,
    frequency: f32,
    /// `[vocab]`: how often each token was generated.
    counts: Vec<u32>,
    /// The distinct generated tokens, in order of first appearance (the entries of `counts` to visit).
    seen: Vec<u32>,
    /// Length of the history at the first step: the prompt, which is not counted.
    prompt_len: Option<usize>,
    /// History entries already counted.
    counted: usize,
}

impl OccurrencePenalties {
    /// Penalties for a vocabulary of `vocab` tokens; both 0: off.
    pub fn new(presence: f32, frequency: f32, vocab: usize) -> OccurrencePenalties {
        let on = presence != 0.0 || frequency != 0.0;
        OccurrencePenalties {
            presence,
            frequency,
            counts: if on { vec![0; vocab] } else { Vec::new() },
            seen: Vec::with_capacity(if on { vocab } else { 0 }),
            prompt_len: None,
            counted: 0,
        }
    }

    pub fn is_off(&self) -> bool {
        self.presence == 0.0 && self.frequency == 0.0
    }

    /// Forgets the generated tokens (a new generation with the same penalties).
    pub fn reset(&mut self) {
        for &t in &self.seen {
            self.counts[t as usize] = 0;
        }
        self.seen.clear();
        self.prompt_len = None;
        self.counted = 0;
    }

    /// Penalises `logits` for the tokens generated so far. `history` is what the sampler gets: the
    /// session's tokens, the prompt followed by the generated ones; its length at the first call is
    /// taken as the prompt's.
    pub fn apply(&mut self, logits: &mut [f32], history: &[u32]) {
        if self.is_off() {
            return;
        }
        let start = *self.prompt_len.get_or_insert(history.len());
        let from = self.counted.max(start);
        for &t in history.get(from..).unwrap_or_default() {
            let Some(c) = self.counts.get_mut(t as usize) else {
                continue;
            };
            if *c == 0 {
                self.seen.push(t);
            }
            *c += 1;
        }
        self.counted = history.len();
        for &t in &self.seen {
            let c = self.counts[t as usize];
            if let Some(l) = logits.get_mut(t as usize) {
                *l -= self.presence + self.frequency * c as f32;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn penalises_generated_tokens_by_presence_and_count() {
        let mut p = OccurrencePenalties::new(0.5, 0.25, 4);
        let prompt = [1u32, 1, 1];
        let mut logits = [1.0f32; 4];
        p.apply(&mut logits, &prompt); // first step: only the prompt, nothing penalised
        assert_eq!(logits, [1.0; 4]);
        let history = [1u32, 1, 1, 2, 3, 2];
        let mut logits = [1.0f32; 4];
        p.apply(&mut logits, &history);
        assert_eq!(logits, [1.0, 1.0, 1.0 - 0.5 - 0.5, 1.0 - 0.5 - 0.25]);
        // Incremental: one more token counted, earlier ones not twice.
        let history = [1u32, 1, 1, 2, 3, 2, 3];
        let mut logits = [0.0f32; 4];
        p.apply(&mut logits, &history);
        assert_eq!(logits, [0.0, 0.0, -1.0, -1.0]);
        p.reset();
        let mut logits = [0.0f32; 4];
        p.apply(&mut logits, &history);
        assert_eq!(logits, [0.0; 4]);
    }

    #[test]
    fn zero_penalties_do_nothing_and_hold_nothing() {
        let mut p = OccurrencePenalties::new(0.0, 0.0, 50_000);
        assert!(p.is_off() && p.counts.capacity() == 0 && p.seen.capacity() == 0);
        let mut logits = [1.0f32; 3];
        p.apply(&mut logits, &[0, 1, 2]);
        assert_eq!(logits, [1.0; 3]);
    }
}
