//! Soak test of `infer serve`: the real binary and model, 1,000 mixed requests from 4 concurrent
//! clients (completions and chat, whole and streamed, FC `/invoke`, refusals, requests that run
//! into the server's timeout, streams the client abandons). Every valid request must finish, every
//! invalid one must be refused with its error, the server must not leave threads behind, and its
//! RSS must stay within 2 MB of what it used after the warm-up.
//!
//! RSS used to grow 4–11 MB over the 900 requests after the warm-up, in steps. `/proc/<pid>/smaps`
//! showed where: the sessions' KV caches (fresh zeroed mappings, backed page by page as positions
//! were first reached, ~23 KB per position with SmolLM2's f16 cache) — a generation cut by the
//! timeout at a later position than any before touched new pages, for the life of the process. The
//! server now pre-faults each session when it opens (`SessionOptions::prefault`), which makes the
//! whole ~12 MB per session at `-c 512` resident from the start. What is left is glibc's per-thread
//! arenas settling (the tokio blocking threads'): 0.3–0.5 MB over the 900 requests, ~0.7 MB over
//! 3,900, slowing down.
//!
//! `EDGEINFER_SOAK_RSS=0` reports RSS growth instead of failing on it, and
//! `EDGEINFER_SOAK_SMAPS=DIR` copies the server's `smaps` into `DIR` after the warm-up and each
//! third of the rest, to see which mappings grew. Skipped (with a message) without
//! `weights/SmolLM2-135M-Instruct`, unless `EDGEINFER_REQUIRE_MODEL=1`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const CLIENTS: usize = 4;
const TOTAL: usize = 1000;
const WARMUP: usize = 100;
/// The server's `--timeout-ms`: far above what a 1–4 token request takes, far below a 480-token one.
const TIMEOUT_MS: u64 = 2000;
/// Most RSS growth allowed after the warm-up.
const RSS_SLACK_KB: u64 = 2048;

/// The model directory, or `None` (after saying why) when it is missing and not required.
fn model_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("EDGEINFER_MODEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            // This package's directory is `cli/`, one below the repository root.
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../weights/SmolLM2-135M-Instruct"
            ))
        });
    if dir.join("config.json").is_file() {
        return Some(dir);
    }
    if std::env::var("EDGEINFER_REQUIRE_MODEL").as_deref() == Ok("1") {
        panic!("EDGEINFER_REQUIRE_MODEL=1 but {} is missing", dir.display());
    }
    eprintln!(
        "skipping the soak test: {} is missing (scripts/fetch-model.sh)",
        dir.display()
    );
    None
}

/// A running `infer serve`, killed on drop.
struct Server {
    child: Child,
    /// `127.0.0.1:PORT`.
    addr: String,
}

impl Server {
    fn start(dir: &PathBuf) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_infer"))
            .arg("serve")
            .arg("-m")
            .arg(dir)
            .args(["--host", "127.0.0.1", "--port", "0", "-c", "512"])
            .args(["--sessions", &CLIENTS.to_string(), "--threads", "1"])
            .args(["--timeout-ms", &TIMEOUT_MS.to_string()])
            .args(["--log-format", "json"])
            .env_remove("FC_SERVER_PORT")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting infer serve");
        let mut err = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        let addr = loop {
            line.clear();
            if err.read_line(&mut line).unwrap() == 0 {
                let status = child.wait().unwrap();
                panic!("infer serve exited ({status}) before listening");
            }
            if let Some(rest) = line
                .trim()
                .strip_prefix("infer serve: listening on http://")
            {
                break rest.to_string();
            }
        };
        std::thread::spawn(move || {
            let mut sink = String::new();
            let _ = err.read_to_string(&mut sink);
        });
        Server { child, addr }
    }

    fn proc_path(&self, rest: &str) -> String {
        format!("/proc/{}/{rest}", self.child.id())
    }

    /// Resident set size in kB.
    fn rss_kb(&self) -> u64 {
        let status = std::fs::read_to_string(self.proc_path("status")).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/<pid>/status")
    }

    /// Copies `/proc/<pid>/smaps` to `$EDGEINFER_SOAK_SMAPS/<name>` when that is set (to see which
    /// mappings grew).
    fn dump_smaps(&self, name: &str) {
        if let Some(dir) = std::env::var_os("EDGEINFER_SOAK_SMAPS") {
            let dir = PathBuf::from(dir);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::copy(self.proc_path("smaps"), dir.join(name)).unwrap();
        }
    }

    fn threads(&self) -> usize {
        std::fs::read_dir(self.proc_path("task")).unwrap().count()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What one request is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Kind {
    Completion,
    Chat,
    Invoke,
    Stream,
    Invalid,
    Deadline,
    Cancelled,
}

/// The mix, by request number: per 20 requests 7 completions, 4 chats, 2 FC invokes, 2 streams to
/// the end, 4 refusals and 1 abandoned stream; 8 of the 1,000 run into the timeout.
fn kind(i: usize) -> Kind {
    if i % 125 == 60 {
        return Kind::Deadline;
    }
    match i % 20 {
        0..=6 => Kind::Completion,
        7..=10 => Kind::Chat,
        11 | 12 => Kind::Invoke,
        13 | 14 => Kind::Stream,
        15..=18 => Kind::Invalid,
        _ => Kind::Cancelled,
    }
}

/// Invalid requests: endpoint, body, the error code and param they must be refused with.
const INVALID: &[(&str, &str, &str, Option<&str>)] = &[
    (
        "/v1/completions",
        "{\"prompt\": \"Hi\", ",
        "invalid_json",
        None,
    ),
    ("/v1/completions", "[1, 2]", "invalid_json", None),
    (
        "/v1/completions",
        r#"{"prompt": "Hi", "temperature": 7}"#,
        "invalid_request",
        Some("temperature"),
    ),
    (
        "/v1/completions",
        r#"{"prompt": "Hi", "max_tokens": 0}"#,
        "invalid_request",
        Some("max_tokens"),
    ),
    (
        "/v1/completions",
        r#"{"prompt": "Hi", "max_tokens": 100000}"#,
        "invalid_request",
        Some("max_tokens"),
    ),
    (
        "/v1/completions",
        r#"{"prompt": "Hi", "top_p": 0}"#,
        "invalid_request",
        Some("top_p"),
    ),
    (
        "/v1/completions",
        r#"{"prompt": "Hi", "n": 3}"#,
        "invalid_request",
        Some("n"),
    ),
    (
        "/v1/completions",
        r#"{"prompt": ""}"#,
        "invalid_request",
        Some("prompt"),
    ),
    (
        "/v1/completions",
        r#"{"prompt": 42}"#,
        "invalid_request",
        Some("prompt"),
    ),
    (
        "/v1/completions",
        r#"{"prompt": "Hi", "stop": ["a", "b", "c", "d", "e"]}"#,
        "invalid_request",
        Some("stop"),
    ),
    (
        "/v1/chat/completions",
        r#"{"messages": []}"#,
        "invalid_request",
        Some("messages"),
    ),
    (
        "/v1/chat/completions",
        r#"{"messages": [{"role": "robot", "content": "x"}]}"#,
        "invalid_request",
        Some("messages"),
    ),
    (
        "/v1/chat/completions",
        r#"{"prompt": "Hi"}"#,
        "invalid_request",
        Some("prompt"),
    ),
    (
        "/v1/chat/completions",
        r#"{"messages": [{"role": "user", "content": "x"}], "min_p": 1.5}"#,
        "invalid_request",
        Some("min_p"),
    ),
    ("/invoke", "not json", "invalid_json", None),
    (
        "/invoke",
        r#"{"max_tokens": 4}"#,
        "invalid_request",
        Some("prompt"),
    ),
];

const PROMPTS: &[&str] = &[
    "The capital of France is",
    "Once upon a time",
    "def fibonacci(n):",
    "Rust is a language that",
    "The three primary colors are",
];

/// A valid body for request `i` (1–4 tokens, greedy or sampled).
fn valid_body(i: usize, chat: bool) -> Value {
    let prompt = PROMPTS[i % PROMPTS.len()];
    let mut body = if chat {
        json!({"messages": [{"role": "user", "content": prompt}]})
    } else {
        json!({"prompt": prompt})
    };
    body["max_tokens"] = json!(1 + i % 4);
    if i.is_multiple_of(3) {
        body["temperature"] = json!(0.8);
        body["top_p"] = json!(0.9);
        body["seed"] = json!(i);
    } else {
        body["temperature"] = json!(0);
    }
    if i.is_multiple_of(7) {
        body["stop"] = json!(["\n\n", "."]);
    }
    body
}

struct Client {
    agent: ureq::Agent,
    addr: String,
}

impl Client {
    /// POSTs `body`; the status and the JSON answer.
    fn post(&self, path: &str, body: &str) -> (u16, Value) {
        let resp = match self
            .agent
            .post(&format!("http://{}{path}", self.addr))
            .set("content-type", "application/json")
            .send_string(body)
        {
            Ok(r) | Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("POST {path}: {e}"),
        };
        let status = resp.status();
        let text = resp.into_string().unwrap();
        let v = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("POST {path}: {status} answer is not JSON ({e}): {text}"));
        (status, v)
    }

    /// Runs request `i`; panics with a description if the answer is wrong.
    fn run(&self, i: usize) -> Kind {
        let k = kind(i);
        match k {
            Kind::Completion | Kind::Chat => {
                let (path, chat) = match k {
                    Kind::Chat => ("/v1/chat/completions", true),
                    _ => ("/v1/completions", false),
                };
                let (status, v) = self.post(path, &valid_body(i, chat).to_string());
                assert_eq!(status, 200, "request {i}: {v}");
                let reason = &v["choices"][0]["finish_reason"];
                assert!(reason == "stop" || reason == "length", "request {i}: {v}");
                let n = v["usage"]["completion_tokens"].as_u64().unwrap();
                assert!((1..=4).contains(&n) || reason == "stop", "request {i}: {v}");
            }
            Kind::Invoke => {
                let (status, v) =
                    self.post("/invoke", &valid_body(i, i.is_multiple_of(2)).to_string());
                assert_eq!(status, 200, "request {i}: {v}");
                assert!(
                    v["finish_reason"] == "stop" || v["finish_reason"] == "length",
                    "request {i}: {v}"
                );
            }
            Kind::Stream => self.stream_to_end(i),
            Kind::Invalid => {
                let (path, body, code, param) = INVALID[(i / 20) % INVALID.len()];
                let (status, v) = self.post(path, body);
                assert_eq!(status, 400, "request {i} ({body}): {v}");
                assert_eq!(v["error"]["code"], code, "request {i} ({body}): {v}");
                if let Some(p) = param {
                    assert_eq!(v["error"]["param"], p, "request {i} ({body}): {v}");
                }
                assert!(v["error"]["message"].is_string(), "request {i}: {v}");
            }
            Kind::Deadline => {
                let body = json!({"prompt": "1, 2, 3, 4, 5, 6, 7, 8,", "max_tokens": 480,
                                  "temperature": 0});
                let started = Instant::now();
                let (status, v) = self.post("/v1/completions", &body.to_string());
                assert_eq!(status, 200, "request {i}: {v}");
                assert_eq!(
                    v["choices"][0]["finish_reason"], "deadline",
                    "request {i}: {v}"
                );
                assert!(
                    started.elapsed() < Duration::from_millis(TIMEOUT_MS * 3),
                    "request {i} took {:?}",
                    started.elapsed()
                );
            }
            Kind::Cancelled => self.abandon_stream(i),
        }
        k
    }

    /// A streamed request read to `data: [DONE]`: text chunks, then one with the finish reason.
    fn stream_to_end(&self, i: usize) {
        let chat = i.is_multiple_of(2);
        let mut body = valid_body(i, chat);
        body["stream"] = json!(true);
        let path = if chat {
            "/v1/chat/completions"
        } else {
            "/v1/completions"
        };
        let resp = self
            .agent
            .post(&format!("http://{}{path}", self.addr))
            .set("content-type", "application/json")
            .send_string(&body.to_string())
            .unwrap_or_else(|e| panic!("request {i}: {e}"));
        assert!(resp.content_type().starts_with("text/event-stream"));
        let mut finish = Value::Null;
        let mut done = false;
        for line in BufReader::new(resp.into_reader()).lines() {
            let line = line.unwrap();
            let Some(data) = line.strip_prefix("data: ") else {
                continue;
            };
            assert!(!done, "request {i}: data after [DONE]: {data}");
            if data == "[DONE]" {
                done = true;
                continue;
            }
            let chunk: Value = serde_json::from_str(data).unwrap();
            assert!(chunk.get("error").is_none(), "request {i}: {chunk}");
            if !chunk["choices"][0]["finish_reason"].is_null() {
                finish = chunk["choices"][0]["finish_reason"].clone();
            }
        }
        assert!(done, "request {i}: stream ended without [DONE]");
        assert!(
            finish == "stop" || finish == "length",
            "request {i}: {finish}"
        );
    }

    /// A long stream the client hangs up on after its first chunk.
    fn abandon_stream(&self, i: usize) {
        let body = json!({"prompt": "1, 2, 3, 4, 5, 6, 7, 8,", "max_tokens": 400,
                          "temperature": 0, "stream": true})
        .to_string();
        let path = if i % 40 == 19 {
            "/v1/completions"
        } else {
            "/v1/chat/completions"
        };
        let body = if path == "/v1/completions" {
            body
        } else {
            json!({"messages": [{"role": "user", "content": "Count to 500."}],
                   "max_tokens": 400, "stream": true})
            .to_string()
        };
        let mut conn = TcpStream::connect(&self.addr).unwrap();
        write!(
            conn,
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            self.addr,
            body.len()
        )
        .unwrap();
        let mut reader = BufReader::new(conn.try_clone().unwrap());
        let mut line = String::new();
        while !line.starts_with("data: ") {
            line.clear();
            assert!(
                reader.read_line(&mut line).unwrap() > 0,
                "request {i}: stream ended early"
            );
        }
        conn.shutdown(std::net::Shutdown::Both).unwrap();
    }
}

/// Requests `from..to` from `CLIENTS` threads; the count of each kind done.
fn run_requests(addr: &str, from: usize, to: usize, done: &Mutex<Vec<(Kind, usize)>>) {
    let next = AtomicUsize::new(from);
    std::thread::scope(|s| {
        for _ in 0..CLIENTS {
            s.spawn(|| {
                let client = Client {
                    agent: ureq::AgentBuilder::new()
                        .timeout(Duration::from_secs(60))
                        .build(),
                    addr: addr.to_string(),
                };
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= to {
                        break;
                    }
                    let k = client.run(i);
                    done.lock().unwrap().push((k, i));
                }
            });
        }
    });
}

/// A gauge or counter line of `/metrics`.
fn metric(metrics: &str, name: &str) -> Option<u64> {
    metrics.lines().find_map(|l| {
        let v = l.strip_prefix(name)?.strip_prefix(' ')?;
        v.trim().parse::<f64>().ok().map(|v| v as u64)
    })
}

/// `/metrics` once no generation is running (waiting up to 5 s: an abandoned stream's generation
/// ends at its next token).
fn quiesce(server: &Server, agent: &ureq::Agent) -> String {
    let url = format!("http://{}/metrics", server.addr);
    for _ in 0..100 {
        let metrics = agent.get(&url).call().unwrap().into_string().unwrap();
        let open = metric(&metrics, "edgeinfer_sessions_open");
        let idle = metric(&metrics, "edgeinfer_sessions_idle");
        if open.is_some() && open == idle {
            std::thread::sleep(Duration::from_millis(100));
            return metrics;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("generations still running 5 s after the last request");
}

#[test]
fn a_thousand_mixed_requests_leave_memory_and_threads_flat() {
    let Some(dir) = model_dir() else {
        return;
    };
    let server = Server::start(&dir);
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(30))
        .build();
    let started = Instant::now();
    let threads_idle = server.threads();
    let done = Mutex::new(Vec::new());

    // Warm-up: every session opened and grown to a long generation at once (sessions are opened,
    // and pre-faulted, on demand), with as many more waiting for one, so tokio's blocking pool
    // has the threads the soak can need (a generation per client, plus an abandoned stream's
    // generation per client that has not yet noticed); then the first 100 requests of the mix.
    // A blocking thread the pool adds later brings its stack and malloc arena (~4 MB).
    let warm_generations = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..2 * CLIENTS {
            s.spawn(|| {
                let body = json!({"prompt": "1, 2, 3, 4, 5, 6, 7, 8,", "max_tokens": 480,
                                  "temperature": 0});
                let url = format!("http://{}/v1/completions", server.addr);
                // 200, or 503 (`busy`) for those that found no session free.
                match agent.post(&url).send_string(&body.to_string()) {
                    Ok(r) => {
                        assert_eq!(r.status(), 200);
                        warm_generations.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(ureq::Error::Status(503, _)) => {}
                    Err(e) => panic!("warm-up: {e}"),
                }
            });
        }
    });
    run_requests(&server.addr, 0, WARMUP, &done);
    let warm_metrics = quiesce(&server, &agent);
    assert_eq!(
        metric(&warm_metrics, "edgeinfer_sessions_open"),
        Some(CLIENTS as u64),
        "{warm_metrics}"
    );
    let (rss_warm, threads_warm) = (server.rss_kb(), server.threads());
    server.dump_smaps("0");

    // RSS at each third of the rest, to tell a plateau from growth.
    let mut rss = vec![rss_warm];
    let step = (TOTAL - WARMUP) / 3;
    for from in (WARMUP..TOTAL).step_by(step) {
        run_requests(&server.addr, from, (from + step).min(TOTAL), &done);
        quiesce(&server, &agent);
        rss.push(server.rss_kb());
        server.dump_smaps(&rss.len().saturating_sub(1).to_string());
    }
    eprintln!("soak: RSS (kB) after 100 and each third of the rest: {rss:?}");
    let metrics = quiesce(&server, &agent);
    let (rss_end, threads_end) = (server.rss_kb(), server.threads());
    let elapsed = started.elapsed();

    let done = done.into_inner().unwrap();
    assert_eq!(done.len(), TOTAL);
    let mut counts = std::collections::BTreeMap::new();
    for (k, _) in &done {
        *counts.entry(*k).or_insert(0usize) += 1;
    }
    eprintln!(
        "soak: {TOTAL} requests in {elapsed:.1?} ({counts:?}); RSS {rss_warm} kB after \
         {WARMUP}, {rss_end} kB at the end; threads {threads_idle} idle, {threads_warm} after \
         {WARMUP}, {threads_end} at the end"
    );
    let generations = |reason: &str| {
        let name = format!("edgeinfer_generations_total{{finish_reason=\"{reason}\"}}");
        metric(&metrics, &name).unwrap_or(0) as usize
    };
    let n = |k: Kind| counts.get(&k).copied().unwrap_or(0);
    // Every valid request ran once; an abandoned stream ends `cancelled` (or, if its
    // generation outran the hang-up, at the timeout or the end of its text).
    let reasons = ["stop", "length", "deadline", "cancelled"];
    assert_eq!(
        reasons.iter().map(|r| generations(r)).sum::<usize>(),
        n(Kind::Completion)
            + n(Kind::Chat)
            + n(Kind::Invoke)
            + n(Kind::Stream)
            + n(Kind::Deadline)
            + n(Kind::Cancelled)
            + warm_generations.load(Ordering::Relaxed),
        "{metrics}"
    );
    assert!(generations("deadline") >= n(Kind::Deadline), "{metrics}");
    assert!(generations("cancelled") > 0, "{metrics}");
    // The sessions are pre-faulted, so what can still grow is the heap (see the module docs).
    let rss_ok = rss_end <= rss_warm + RSS_SLACK_KB;
    if std::env::var("EDGEINFER_SOAK_RSS").as_deref() == Ok("0") {
        if !rss_ok {
            eprintln!(
                "soak: WARNING: RSS grew from {rss_warm} kB to {rss_end} kB (more than \
                 {RSS_SLACK_KB} kB; a failure without EDGEINFER_SOAK_RSS=0)"
            );
        }
    } else {
        assert!(
            rss_ok,
            "RSS grew from {rss_warm} kB to {rss_end} kB (more than {RSS_SLACK_KB} kB; by thirds: \
             {rss:?}; EDGEINFER_SOAK_SMAPS=DIR shows which mappings)"
        );
    }
    // The fixed threads (main, 2 tokio workers, the model's) never change; tokio's blocking pool
    // keeps a generation's thread for 10 s after it ends and reuses it, so once the warm-up has
    // had 4 clients' generations at once the idle pool has what the soak needs. A cancelled
    // generation may still hold its thread for a token after its client moved on, so the pool
    // may have grown by at most one thread per client since.
    assert!(
        threads_end <= threads_warm + CLIENTS,
        "threads grew from {threads_warm} to {threads_end}"
    );
    assert!(threads_end <= threads_idle + 2 * CLIENTS);
}
