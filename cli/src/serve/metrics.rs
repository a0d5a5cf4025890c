//! Prometheus metrics of `infer serve`, kept by hand (a few counters and two histograms do not need a
//! metrics crate) and written in the text exposition format.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

use edgeinfer::PoolStats;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

#[derive(Default)]
struct Histogram {
    /// Observations at or below each bound (not cumulative; summed when written).
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        if let Some(i) = BUCKETS.iter().position(|&b| seconds <= b) {
            self.counts[i] += 1;
        }
        self.count += 1;
        self.sum += seconds;
    }

    fn write(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (bound, n) in BUCKETS.iter().zip(self.counts) {
            cumulative += n;
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum {}", self.sum);
        let _ = writeln!(out, "{name}_count {}", self.count);
    }
}

#[derive(Default)]
struct Inner {
    /// (endpoint, status) -> requests.
    requests: BTreeMap<(&'static str, u16), u64>,
    /// finish_reason -> generations.
    finished: BTreeMap<&'static str, u64>,
    prompt_tokens: u64,
    prompt_tokens_evaluated: u64,
    completion_tokens: u64,
    ttft: Histogram,
    duration: Histogram,
}

/// Every metric, behind one lock (updated once per request).
#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

/// What one finished request adds.
pub struct Observation {
    pub endpoint: &'static str,
    pub status: u16,
    pub finish_reason: Option<&'static str>,
    pub prompt_tokens: usize,
    pub prompt_tokens_evaluated: usize,
    pub completion_tokens: usize,
    pub ttft_ms: Option<f64>,
    pub duration_ms: f64,
}

impl Metrics {
    pub fn record(&self, o: &Observation) {
        let mut m = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        *m.requests.entry((o.endpoint, o.status)).or_default() += 1;
        if let Some(reason) = o.finish_reason {
            *m.finished.entry(reason).or_default() += 1;
        }
        m.prompt_tokens += o.prompt_tokens as u64;
        m.prompt_tokens_evaluated += o.prompt_tokens_evaluated as u64;
        m.completion_tokens += o.completion_tokens as u64;
        if let Some(ttft) = o.ttft_ms {
            m.ttft.observe(ttft / 1e3);
        }
        m.duration.observe(o.duration_ms / 1e3);
    }

    /// The text exposition of every metric, with the pool's state as gauges.
    pub fn render(&self, pool: &PoolStats) -> String {
        let m = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = String::with_capacity(4096);
        let _ = writeln!(
            out,
            "# HELP edgeinfer_requests_total Requests answered, by endpoint and HTTP status.\n\
             # TYPE edgeinfer_requests_total counter"
        );
        for ((endpoint, status), n) in &m.requests {
            let _ = writeln!(
                out,
                "edgeinfer_requests_total{{endpoint=\"{endpoint}\",status=\"{status}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP edgeinfer_generations_total Generations, by finish reason.\n\
             # TYPE edgeinfer_generations_total counter"
        );
        for (reason, n) in &m.finished {
            let _ = writeln!(
                out,
                "edgeinfer_generations_total{{finish_reason=\"{reason}\"}} {n}"
            );
        }
        let counters = [
            (
                "edgeinfer_prompt_tokens_total",
                "Prompt tokens received.",
                m.prompt_tokens,
            ),
            (
                "edgeinfer_prompt_tokens_evaluated_total",
                "Prompt tokens computed (the rest came from the prefix cache).",
                m.prompt_tokens_evaluated,
            ),
            (
                "edgeinfer_completion_tokens_total",
                "Tokens generated.",
                m.completion_tokens,
            ),
        ];
        for (name, help, v) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
            );
        }
        m.ttft.write(
            &mut out,
            "edgeinfer_time_to_first_token_seconds",
            "From a request's arrival to its first generated token.",
        );
        m.duration.write(
            &mut out,
            "edgeinfer_request_duration_seconds",
            "From a request's arrival to its last byte of answer.",
        );
        let gauges = [
            (
                "edgeinfer_sessions_open",
                "Sessions allocated (idle or busy).",
                pool.open,
            ),
            ("edgeinfer_sessions_idle", "Sessions idle.", pool.idle),
            (
                "edgeinfer_sessions_max",
                "Most sessions at once.",
                pool.max_sessions,
            ),
            (
                "edgeinfer_weights_mapped_bytes",
                "Bytes of weight files mapped.",
                pool.memory.weights_mapped,
            ),
            (
                "edgeinfer_session_arena_bytes",
                "Bytes of the sessions' arenas (activations and KV caches).",
                pool.memory.arena,
            ),
            (
                "edgeinfer_kv_cache_bytes",
                "Bytes of the sessions' KV caches.",
                pool.memory.kv_cache,
            ),
        ];
        for (name, help, v) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        }
        out
    }
}
