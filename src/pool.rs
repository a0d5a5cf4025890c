//! [`SessionPool`]: sessions kept across requests, so a warm process allocates no arena or KV cache per
//! request and skips re-prefilling a prompt prefix (a shared system prompt) it has already computed.
//!
//! A request tokenizes its prompt, then takes the idle session whose cached tokens share the longest
//! prefix with it ([`SessionPool::acquire`]); [`Session::generate`] reuses that prefix. A session goes
//! back to the pool when the [`PooledSession`] is dropped. At most `max_sessions` exist at once: a
//! request that finds them all busy waits for one (or for its deadline).

use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;

use crate::error::{Error, Result};
use crate::model::Model;
use crate::session::{
    tokenize, GenerateOptions, Generation, MemoryUsage, Prompt, Session, SessionOptions,
};

/// Sessions of one model, reused across requests. Cheap to clone (shared); `Send + Sync`.
#[derive(Clone)]
pub struct SessionPool {
    inner: Arc<Inner>,
}

struct Inner {
    model: Arc<Model>,
    opts: SessionOptions,
    max_sessions: usize,
    state: Mutex<PoolState>,
    returned: Condvar,
}

struct PoolState {
    idle: Vec<Session>,
    /// Sessions in existence: idle, lent out, or being created.
    open: usize,
    /// What one session holds (all are opened alike); known once one exists.
    per_session: Option<MemoryUsage>,
}

/// A snapshot of the pool, for metrics and logs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolStats {
    pub max_sessions: usize,
    pub open: usize,
    pub idle: usize,
    /// Memory of the open sessions together: the weights once, arenas and KV caches summed.
    pub memory: MemoryUsage,
}

impl SessionPool {
    /// A pool of at most `max_sessions` sessions opened with `opts`, created as requests need them.
    pub fn new(
        model: Arc<Model>,
        opts: SessionOptions,
        max_sessions: usize,
    ) -> Result<SessionPool> {
        if max_sessions == 0 {
            return Err(Error::Options {
                field: "max_sessions",
                reason: "a pool needs room for at least one session".into(),
            });
        }
        Ok(SessionPool {
            inner: Arc::new(Inner {
                model,
                opts,
                max_sessions,
                state: Mutex::new(PoolState {
                    idle: Vec::with_capacity(max_sessions),
                    open: 0,
                    per_session: None,
                }),
                returned: Condvar::new(),
            }),
        })
    }

    pub fn model(&self) -> &Arc<Model> {
        &self.inner.model
    }

    pub fn session_options(&self) -> SessionOptions {
        self.inner.opts
    }

    /// Context length of the pool's sessions, in tokens.
    pub fn ctx(&self) -> usize {
        self.inner.opts.ctx_for(self.inner.model.config())
    }

    pub fn max_sessions(&self) -> usize {
        self.inner.max_sessions
    }

    /// Opens `n` sessions now (at most `max_sessions`), so the first requests allocate nothing.
    pub fn prewarm(&self, n: usize) -> Result<()> {
        let n = n.min(self.inner.max_sessions);
        let mut taken = Vec::with_capacity(n);
        for _ in 0..n {
            taken.push(self.acquire(&[], None)?);
        }
        Ok(())
    }

    /// Tokenizes `prompt` for this pool's model.
    pub fn tokenize(&self, prompt: &Prompt<'_>) -> Result<Vec<u32>> {
        tokenize(&self.inner.model, prompt)
    }

    /// A session for a prompt of `tokens`: the idle one whose cache shares the longest prefix with
    /// them, else a new one while fewer than `max_sessions` exist, else the first one returned.
    /// Waiting ends at `deadline` with [`Error::PoolBusy`].
    pub fn acquire(&self, tokens: &[u32], deadline: Option<Instant>) -> Result<PooledSession> {
        let inner = &self.inner;
        let mut state = inner.lock();
        loop {
            if let Some(i) = best_prefix(&state.idle, tokens) {
                let session = state.idle.swap_remove(i);
                return Ok(self.lend(session));
            }
            if state.open < inner.max_sessions {
                state.open += 1;
                drop(state);
                // Allocate outside the lock; give the slot back if it fails.
                return match Session::new(inner.model.clone(), inner.opts) {
                    Ok(session) => {
                        inner.lock().per_session = Some(session.memory());
                        Ok(self.lend(session))
                    }
                    Err(e) => {
                        inner.lock().open -= 1;
                        inner.returned.notify_one();
                        Err(e)
                    }
                };
            }
            state = match deadline {
                None => inner
                    .returned
                    .wait(state)
                    .unwrap_or_else(|e| e.into_inner()),
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(Error::PoolBusy {
                            max_sessions: inner.max_sessions,
                        });
                    }
                    inner
                        .returned
                        .wait_timeout(state, left)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
        }
    }

    /// Tokenizes `prompt`, takes the best session for it and generates (see [`Session::generate`]).
    /// `opts.deadline` also bounds the wait for a free session.
    pub fn generate(
        &self,
        prompt: &Prompt<'_>,
        opts: &GenerateOptions,
        on_text: impl FnMut(&str) -> bool,
    ) -> Result<Generation> {
        let tokens = self.tokenize(prompt)?;
        let mut session = self.acquire(&tokens, opts.deadline)?;
        let result = session.generate(&Prompt::Tokens(&tokens), opts, on_text);
        if result.is_err() {
            // Whatever the error left in the cache is not worth matching against.
            session.reset();
        }
        result
    }

    pub fn stats(&self) -> PoolStats {
        let state = self.inner.lock();
        let one = state.per_session.unwrap_or_default();
        let memory = MemoryUsage {
            weights_mapped: self.inner.model.mapped_bytes(),
            arena: state.open * one.arena,
            kv_cache: state.open * one.kv_cache,
        };
        PoolStats {
            max_sessions: self.inner.max_sessions,
            open: state.open,
            idle: state.idle.len(),
            memory,
        }
    }

    fn lend(&self, session: Session) -> PooledSession {
        PooledSession {
            session: Some(session),
            pool: self.inner.clone(),
        }
    }
}

impl Inner {
    /// The pool's state; a panic elsewhere while it was held leaves it consistent (every update is
    /// one statement), so a poisoned lock is used as is.
    fn lock(&self) -> MutexGuard<'_, PoolState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Index of the idle session sharing the longest prefix with `tokens` (the most recently returned
/// among equals), if any is idle.
fn best_prefix(idle: &[Session], tokens: &[u32]) -> Option<usize> {
    let shared = |s: &Session| {
        s.tokens()
            .iter()
            .zip(tokens)
            .take_while(|(a, b)| a == b)
            .count()
    };
    let mut best: Option<(usize, usize)> = None;
    for (i, s) in idle.iter().enumerate() {
        let n = shared(s);
        if best.is_none_or(|(_, b)| n >= b) {
            best = Some((i, n));
        }
    }
    best.map(|(i, _)| i)
}

/// A session lent by a [`SessionPool`]; dropping it returns the session, cache intact.
pub struct PooledSession {
    session: Option<Session>,
    pool: Arc<Inner>,
}

impl Deref for PooledSession {
    type Target = Session;
    fn deref(&self) -> &Session {
        self.session.as_ref().expect("present until drop")
    }
}

impl DerefMut for PooledSession {
    fn deref_mut(&mut self) -> &mut Session {
        self.session.as_mut().expect("present until drop")
    }
}

impl Drop for PooledSession {
    fn drop(&mut self) {
        if let Some(session) = self.session.take() {
            self.pool.lock().idle.push(session);
            self.pool.returned.notify_one();
        }
    }
}
