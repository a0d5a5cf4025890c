//! [`Session`]: one conversation's activation arena and KV cache, and text generation over it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use edgeinfer_kernels::quant::ActQuant;
use edgeinfer_models::state::{KvDType, StateOptions};
use edgeinfer_models::{Logits, State};

use crate::chat::Message;
use crate::constraint::Constraint;
use crate::error::{Error, Result};
use crate::model::Model;
use crate::sampler::{Sampler, SamplerConfig};
use crate::tokenizer::StreamDecoder;

/// How a session is sized.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionOptions {
    /// Context length in tokens (prompt + generated). 0: the model's `max_position_embeddings`,
    /// capped at [`SessionOptions::DEFAULT_MAX_CTX`].
    pub ctx: usize,
    /// Most prompt tokens one forward call processes.
    pub batch: usize,
    /// Keep the logits of every position (needed by [`Session::evaluate`]).
    pub all_logits: bool,
    /// Element type of the KV cache (default F16: half the memory; F32 for bit-level comparisons).
    pub kv_dtype: KvDType,
    /// How activations are quantized for products with quantized weights: [`ActQuant::Q8`] (the
    /// default, llama.cpp's q8 activations) or [`ActQuant::Q8x2`] (a second q8 pass over the
    /// rounding error: logits as close to f32 activations as makes no difference, for about 1.1–2×
    /// the time of a quantized product). Dense weights always multiply f32 activations.
    pub acts: ActQuant,
    /// Write the whole arena and KV cache when the session opens (see [`State::prefault`]), so its
    /// memory is resident from the start and the process's RSS stays flat while it serves (what
    /// `infer serve` does). Off by default: a one-shot run or a cold FaaS invocation would pay
    /// for pages of a context it never reaches (94 MB for SmolLM2 at 4096 positions).
    ///
    /// [`State::prefault`]: edgeinfer_models::State::prefault
    pub prefault: bool,
}

impl SessionOptions {
    pub const DEFAULT_MAX_CTX: usize = 4096;

    /// The context length sessions opened with these options get for a model with `cfg`.
    pub fn ctx_for(&self, cfg: &edgeinfer_models::Config) -> usize {
        match self.ctx {
            0 => cfg
                .max_position_embeddings
                .min(SessionOptions::DEFAULT_MAX_CTX),
            n => n,
        }
    }
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions {
            ctx: 0,
            batch: 64,
            all_logits: false,
            kv_dtype: KvDType::F16,
            acts: ActQuant::Q8,
            prefault: false,
        }
    }
}

/// What to generate from.
#[derive(Clone, Debug)]
pub enum Prompt<'a> {
    /// Raw text, tokenized as is (plus BOS if the tokenizer config asks for it).
    Text(&'a str),
    /// A conversation rendered with the model's chat template, with the generation prompt appended.
    Chat(&'a [Message]),
    /// Token ids, used as given.
    Tokens(&'a [u32]),
}

/// Generation settings.
#[derive(Clone, Debug)]
pub struct GenerateOptions {
    /// Most tokens to generate.
    pub max_tokens: usize,
    pub sampler: SamplerConfig,
    /// Generation ends when the text contains one of these; the text is cut before it.
    pub stop: Vec<String>,
    /// Stop at the model's end-of-sequence tokens.
    pub stop_at_eos: bool,
    /// Stop when this moment passes, checked between prompt batches and between tokens: the text so
    /// far is returned with [`FinishReason::Deadline`]. A handler sets it from its invocation deadline
    /// minus the time it needs to send the answer.
    pub deadline: Option<Instant>,
    /// Stop when this flag becomes true (checked like `deadline`): [`FinishReason::Cancelled`]. Another
    /// thread sets it, e.g. when the client of a streaming request goes away.
    pub cancel: Option<Arc<AtomicBool>>,
    /// What the text must match ([`Constraint`]); `None`: free text. With one, generation ends
    /// with [`FinishReason::Stop`] only where the text is complete (at the end-of-sequence token
    /// the constraint then allows, whatever `stop_at_eos` says, or when nothing may follow), so a
    /// `stop` text always matches; `max_tokens` or a full context ends it with `length`, maybe
    /// unfinished. `stop` strings cannot be combined with it ([`Error::Options`] naming `stop`);
    /// a constraint that does not compile is [`Error::Options`] naming `constraint`.
    pub constraint: Option<Constraint>,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            max_tokens: 256,
            sampler: SamplerConfig::default(),
            stop: Vec::new(),
            stop_at_eos: true,
            deadline: None,
            cancel: None,
            constraint: None,
        }
    }
}

impl GenerateOptions {
    /// Why generation must end now, if the deadline passed or the cancel flag is set.
    fn interrupted(&self) -> Option<FinishReason> {
        if self
            .cancel
            .as_ref()
            .is_some_and(|c| c.load(Ordering::Relaxed))
        {
            return Some(FinishReason::Cancelled);
        }
        match self.deadline {
            Some(d) if Instant::now() >= d => Some(FinishReason::Deadline),
            _ => None,
        }
    }
}

/// Why generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinishReason {
    /// An end-of-sequence token or a stop string.
    Stop,
    /// `max_tokens` reached or the context is full.
    Length,
    /// The streaming callback asked to stop, or the cancel flag was set.
    Cancelled,
    /// The deadline passed; the text is what was generated until then.
    Deadline,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::Cancelled => "cancelled",
            FinishReason::Deadline => "deadline",
        }
    }
}

/// Time spent, in milliseconds, and token counts.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Timings {
    pub prompt_tokens: usize,
    /// Prompt tokens actually computed (fewer when a cached prefix was reused).
    pub prompt_tokens_evaluated: usize,
    pub generated_tokens: usize,
    pub prefill_ms: f64,
    pub decode_ms: f64,
    /// From the start of `generate` to the first generated token.
    pub ttft_ms: f64,
    /// Time spent in the constraint (masks and matcher updates; part of `decode_ms` but for the
    /// first token's mask); 0 without one.
    pub constraint_ms: f64,
}

impl Timings {
    pub fn prefill_tokens_per_s(&self) -> f64 {
        per_s(self.prompt_tokens_evaluated, self.prefill_ms)
    }

    /// Decode speed over the tokens after the first (the first comes from the prefill's logits).
    pub fn decode_tokens_per_s(&self) -> f64 {
        per_s(self.generated_tokens.saturating_sub(1), self.decode_ms)
    }
}

fn per_s(n: usize, ms: f64) -> f64 {
    if ms > 0.0 {
        n as f64 * 1000.0 / ms
    } else {
        0.0
    }
}

/// Memory one session accounts for, in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryUsage {
    /// Weight files mapped (shared by every session of the model; resident as pages are touched).
    pub weights_mapped: usize,
    /// The session's arena: activations, scratch, logits and the KV cache.
    pub arena: usize,
    /// The KV cache alone (part of `arena`).
    pub kv_cache: usize,
}

/// The result of [`Session::generate`].
#[derive(Clone, Debug)]
pub struct Generation {
    pub text: String,
    pub tokens: Vec<u32>,
    pub finish_reason: FinishReason,
    pub timings: Timings,
}

/// One conversation: an arena and KV cache sized once, plus the tokens in the cache.
pub struct Session {
    model: Arc<Model>,
    state: State,
    /// Tokens whose keys and values are in the cache, in order.
    tokens: Vec<u32>,
}

impl Session {
    pub fn new(model: Arc<Model>, opts: SessionOptions) -> Result<Session> {
        let cfg = model.config();
        let ctx = opts.ctx_for(cfg);
        let mut state = State::new(
            cfg,
            StateOptions {
                ctx,
                batch: opts.batch.min(ctx),
                threads: model.threads(),
                all_logits: opts.all_logits,
                kv_dtype: opts.kv_dtype,
                acts: opts.acts,
            },
        )?;
        if opts.prefault {
            state.prefault();
        }
        Ok(Session {
            model,
            state,
            tokens: Vec::with_capacity(ctx),
        })
    }

    pub fn model(&self) -> &Arc<Model> {
        &self.model
    }

    /// Context length in tokens.
    pub fn ctx(&self) -> usize {
        self.state.options().ctx
    }

    /// Tokens currently in the KV cache.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// Bytes of the arena (activations and KV cache).
    pub fn arena_bytes(&self) -> usize {
        self.state.bytes()
    }

    /// Weights mapped, arena and KV cache, in bytes.
    pub fn memory(&self) -> MemoryUsage {
        MemoryUsage {
            weights_mapped: self.model.mapped_bytes(),
            arena: self.state.bytes(),
            kv_cache: self.state.kv_bytes(),
        }
    }

    /// Forgets the conversation; buffers stay allocated.
    pub fn reset(&mut self) {
        self.state.reset();
        self.tokens.clear();
    }

    /// Logits left by the last call (the last position's, `[vocab]`).
    pub fn logits(&self) -> &[f32] {
        &self.state.logits()[..self.model.config().vocab_size]
    }

    /// Runs `tokens` after those already cached; leaves the last one's logits.
    pub fn prefill(&mut self, tokens: &[u32]) -> Result<()> {
        self.check_room(tokens.len())?;
        let batch = self.state.options().batch;
        let chunks = tokens.len().div_ceil(batch);
        for (i, chunk) in tokens.chunks(batch).enumerate() {
            let mode = if i + 1 == chunks {
                Logits::Last
            } else {
                Logits::None
            };
            self.forward(chunk, mode)?;
        }
        Ok(())
    }

    /// Runs one token; returns its logits. Allocates nothing.
    pub fn step(&mut self, token: u32) -> Result<&mut [f32]> {
        self.check_room(1)?;
        self.forward(&[token], Logits::Last)?;
        let vocab = self.model.config().vocab_size;
        Ok(&mut self.state.logits_mut()[..vocab])
    }

    /// Runs `tokens` and calls `f(i, logits)` with the logits after each token `i` (teacher forcing).
    /// Needs a session made with `all_logits`.
    pub fn evaluate(&mut self, tokens: &[u32], mut f: impl FnMut(usize, &[f32])) -> Result<()> {
        if !self.state.options().all_logits {
            return Err(Error::Options {
                field: "all_logits",
                reason: "evaluate needs a session opened with all_logits".into(),
            });
        }
        self.check_room(tokens.len())?;
        let vocab = self.model.config().vocab_size;
        let batch = self.state.options().batch;
        for (c, chunk) in tokens.chunks(batch).enumerate() {
            self.forward(chunk, Logits::All)?;
            for i in 0..chunk.len() {
                f(
                    c * batch + i,
                    &self.state.logits()[i * vocab..(i + 1) * vocab],
                );
            }
        }
        Ok(())
    }

    fn check_room(&self, n: usize) -> Result<()> {
        let needed = self.tokens.len().saturating_add(n);
        if needed > self.ctx() {
            return Err(Error::Session(
                edgeinfer_models::ModelError::ContextOverflow {
                    needed,
                    ctx: self.ctx(),
                },
            ));
        }
        Ok(())
    }

    fn forward(&mut self, tokens: &[u32], mode: Logits) -> Result<()> {
        let model = &*self.model;
        let state = &mut self.state;
        let mut run = || model.llama.forward(&model.kernels, state, tokens, mode);
        match &model.pool {
            Some(pool) => pool.install(run)?,
            None => run()?,
        }
        self.tokens.extend_from_slice(tokens);
        Ok(())
    }

    /// Tokenizes a prompt (rendering the chat template for conversations).
    pub fn tokenize(&self, prompt: &Prompt<'_>) -> Result<Vec<u32>> {
        tokenize(&self.model, prompt)
    }

    /// Generates a continuation of `prompt`, calling `on_text` with each new piece of text as soon as
    /// it is complete UTF-8 and cannot be part of a stop string. `on_text` returns `false` to cancel.
    ///
    /// The prompt continues the conversation from scratch, except that a prefix shared with the tokens
    /// already in the cache is reused rather than recomputed.
    pub fn generate(
        &mut self,
        prompt: &Prompt<'_>,
        opts: &GenerateOptions,
        on_text: impl FnMut(&str) -> bool,
    ) -> Result<Generation> {
        self.generate_observed(prompt, opts, on_text, |_| {})
    }

    /// [`Session::generate`], also calling `on_logits` with the raw logits (`[vocab]`) each time a
    /// token is about to be sampled: once for the last prompt position, then once per generated step.
    pub fn generate_observed(
        &mut self,
        prompt: &Prompt<'_>,
        opts: &GenerateOptions,
        mut on_text: impl FnMut(&str) -> bool,
        mut on_logits: impl FnMut(&[f32]),
    ) -> Result<Generation> {
        let start = Instant::now();
        // A weight file truncated since loading is an error here, not a SIGBUS mid-forward.
        self.model.verify_weights()?;
        let ids = match prompt {
            // Already tokens (e.g. a pool tokenized the prompt to pick this session): no copy needed.
            Prompt::Tokens(ids) => std::borrow::Cow::Borrowed(*ids),
            _ => std::borrow::Cow::Owned(self.tokenize(prompt)?),
        };
        let ids = &*ids;
        if ids.is_empty() {
            return Err(Error::EmptyPrompt);
        }
        if ids.len() > self.ctx() {
            return Err(Error::PromptTooLong {
                tokens: ids.len(),
                ctx: self.ctx(),
            });
        }
        let mut guide = match &opts.constraint {
            Some(c) => {
                if !opts.stop.is_empty() {
                    // A stop string would cut the text where the constraint may not end it.
                    return Err(Error::Options {
                        field: "stop",
                        reason: format!(
                            "stop strings cannot be combined with a `{}` constraint: the constraint decides where the text ends",
                            c.kind()
                        ),
                    });
                }
                Some(self.model.grammars()?.matcher(c)?)
            }
            None => None,
        };
        let vocab = self.model.config().vocab_size;
        let mut sampler = Sampler::new(opts.sampler.clone(), vocab)?;

        // Reuse the cached prefix; at least one token must run to produce logits.
        let keep = common_prefix(&self.tokens, ids).min(ids.len() - 1);
        self.state.truncate(keep);
        self.tokens.truncate(keep);
        let t_prefill = Instant::now();
        let interrupted = self.prefill_interruptible(&ids[keep..], opts)?;
        let prefill_ms = ms(t_prefill);
        if let Some(finish) = interrupted {
            // The prompt batches that did run stay cached for the next request.
            return Ok(Generation {
                text: String::new(),
                tokens: Vec::new(),
                finish_reason: finish,
                timings: Timings {
                    prompt_tokens: ids.len(),
                    prompt_tokens_evaluated: self.tokens.len() - keep,
                    prefill_ms,
                    ..Timings::default()
                },
            });
        }

        let model = self.model.clone();
        let tok = model.tokenizer();
        let mut stream = StreamDecoder::new(tok);
        let mut out = StopScanner::new(&opts.stop);
        let mut generated = Vec::with_capacity(opts.max_tokens.min(self.ctx()));
        let mut finish = FinishReason::Length;
        let mut ttft_ms = 0.0;
        let mut constraint_ms = 0.0;
        let t_decode = Instant::now();
        let mut decode_start = t_decode;
        while generated.len() < opts.max_tokens {
            let token = {
                let vocab = self.model.config().vocab_size;
                let logits = &mut self.state.logits_mut()[..vocab];
                on_logits(logits);
                // Disallowed tokens go to -inf before the sampler sees the logits, so its penalty,
                // top-k, temperature, top-p and min-p all work on the allowed tokens alone.
                if let Some(g) = &mut guide {
                    let t = Instant::now();
                    g.mask(logits)?;
                    constraint_ms += ms(t);
                }
                sampler.sample(logits, &self.tokens)
            };
            if generated.is_empty() {
                ttft_ms = ms(start);
                decode_start = Instant::now();
            }
            let eos = model.eos_ids().contains(&token);
            // Under a constraint the mask allows EOS only where the text is complete, and a
            // complete text ends there whatever `stop_at_eos` says.
            if eos && (opts.stop_at_eos || guide.is_some()) {
                finish = FinishReason::Stop;
                break;
            }
            generated.push(token);
            if let Some(g) = &mut guide {
                let t = Instant::now();
                g.commit(token)?;
                constraint_ms += ms(t);
            }
            if let Some(piece) = stream.push(tok, token) {
                if out.push(piece, &mut on_text) {
                    finish = if out.cancelled {
                        FinishReason::Cancelled
                    } else {
                        FinishReason::Stop
                    };
                    break;
                }
            }
            // The text is complete and nothing may follow: done, without spending a step on EOS.
            if guide.as_ref().is_some_and(|g| g.is_done()) {
                finish = FinishReason::Stop;
                break;
            }
            if generated.len() >= opts.max_tokens {
                break;
            }
            if self.tokens.len() >= self.ctx() {
                break;
            }
            if let Some(reason) = opts.interrupted() {
                finish = reason;
                break;
            }
            self.step(token)?;
        }
        let flush = match finish {
            FinishReason::Length | FinishReason::Deadline => true,
            FinishReason::Stop => !out.stopped,
            // Cancelled by the flag (not by the callback): the caller still gets the text so far.
            FinishReason::Cancelled => !out.cancelled,
        };
        if flush {
            if let Some(rest) = stream.finish() {
                out.push(rest, &mut on_text);
            }
            out.flush(&mut on_text);
        }
        let decode_ms = if generated.is_empty() {
            0.0
        } else {
            ms(decode_start)
        };
        let _ = t_decode;
        let timings = Timings {
            prompt_tokens: ids.len(),
            prompt_tokens_evaluated: ids.len() - keep,
            generated_tokens: generated.len(),
            prefill_ms,
            decode_ms,
            ttft_ms,
            constraint_ms,
        };
        Ok(Generation {
            text: out.text,
            tokens: generated,
            finish_reason: finish,
            timings,
        })
    }
}

impl Session {
    /// [`Session::prefill`], checking `opts`' deadline and cancel flag before each batch; returns
    /// why it stopped early, if it did.
    fn prefill_interruptible(
        &mut self,
        tokens: &[u32],
        opts: &GenerateOptions,
    ) -> Result<Option<FinishReason>> {
        self.check_room(tokens.len())?;
        let batch = self.state.options().batch;
        let chunks = tokens.len().div_ceil(batch);
        for (i, chunk) in tokens.chunks(batch).enumerate() {
            if let Some(reason) = opts.interrupted() {
                return Ok(Some(reason));
            }
            let mode = if i + 1 == chunks {
                Logits::Last
            } else {
                Logits::None
            };
            self.forward(chunk, mode)?;
        }
        Ok(None)
    }
}

/// Tokenizes a prompt for `model` (rendering the chat template for conversations).
pub fn tokenize(model: &Model, prompt: &Prompt<'_>) -> Result<Vec<u32>> {
    let tok = model.tokenizer();
    match prompt {
        Prompt::Tokens(ids) => Ok(ids.to_vec()),
        Prompt::Text(text) => Ok(tok.encode(text, tok.add_bos_token())?),
        Prompt::Chat(messages) => {
            let template = tok.chat_template().ok_or(Error::NoChatTemplate)?;
            let text = template.render(messages, true)?;
            // The template writes any BOS itself; special tokens in it are parsed as such.
            Ok(tok.encode(&text, false)?)
        }
    }
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1000.0
}

fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// Accumulates generated text, cuts it at the first stop string, and releases to the caller only
/// text that can no longer turn out to be the start of a stop string.
struct StopScanner<'a> {
    stops: &'a [String],
    text: String,
    emitted: usize,
    stopped: bool,
    cancelled: bool,
}

impl<'a> StopScanner<'a> {
    fn new(stops: &'a [String]) -> Self {
        StopScanner {
            stops,
            text: String::new(),
            emitted: 0,
            stopped: false,
            cancelled: false,
        }
    }

    /// Adds a piece; returns true when generation must end (stop string found or cancelled).
    fn push(&mut self, piece: &str, on_text: &mut impl FnMut(&str) -> bool) -> bool {
        let search_from = self.emitted;
        self.text.push_str(piece);
        let stops = self.stops.iter().filter(|s| !s.is_empty());
        // Earliest stop string that starts at or after the emitted text.
        let hit = stops
            .filter_map(|s| {
                let from = floor_char(&self.text, search_from.saturating_sub(s.len()));
                self.text[from..].find(s.as_str()).map(|i| from + i)
            })
            .filter(|&i| i >= self.emitted)
            .min();
        if let Some(cut) = hit {
            self.text.truncate(cut);
            self.stopped = true;
            self.release(cut, on_text);
            return true;
        }
        let hold = self.held_back();
        self.release(self.text.len() - hold, on_text)
    }

    /// Bytes at the end of the text that are a proper prefix of some stop string.
    fn held_back(&self) -> usize {
        let mut hold = 0;
        for s in self.stops {
            for len in (1..s.len()).rev() {
                if len <= hold {
                    break;
                }
                if s.is_char_boundary(len) && self.text.ends_with(&s[..len]) {
                    hold = len;
                    break;
                }
            }
        }
        hold
    }

    fn release(&mut self, upto: usize, on_text: &mut impl FnMut(&str) -> bool) -> bool {
        if upto > self.emitted {
            let keep_going = on_text(&self.text[self.emitted..upto]);
            self.emitted = upto;
            if !keep_going {
                self.cancelled = true;
                return true;
            }
        }
        false
    }

    fn flush(&mut self, on_text: &mut impl FnMut(&str) -> bool) {
        let end = self.text.len();
        self.release(end, on_text);
    }
}

fn floor_char(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], pieces: &[&str]) -> (String, Vec<String>, bool) {
        let stops: Vec<String> = stops.iter().map(|s| s.to_string()).collect();
        let mut sc = StopScanner::new(&stops);
        let mut seen = Vec::new();
        let mut cb = |s: &str| {
            seen.push(s.to_string());
            true
        };
        let mut ended = false;
        for p in pieces {
            if sc.push(p, &mut cb) {
                ended = true;
                break;
            }
        }
        if !ended {
            sc.flush(&mut cb);
        }
        (sc.text, seen, ended)
    }

    #[test]
    fn stop_string_split_across_pieces_is_cut_and_never_streamed() {
        let (text, seen, ended) = run(&["</s>"], &["Hello", " wor", "ld<", "/s", ">tail"]);
        assert!(ended);
        assert_eq!(text, "Hello world");
        assert_eq!(seen.concat(), "Hello world");
    }

    #[test]
    fn near_miss_is_released() {
        let (text, seen, ended) = run(&["STOP"], &["ST", "ART", " done"]);
        assert!(!ended);
        assert_eq!(text, "START done");
        assert_eq!(seen.concat(), "START done");
    }

    #[test]
    fn no_stops_streams_everything() {
        let (text, seen, _) = run(&[], &["a", "é", "中"]);
        assert_eq!(text, "aé中");
        assert_eq!(seen, vec!["a", "é", "中"]);
    }
}
