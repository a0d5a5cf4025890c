//! [`Model`]: a model directory loaded once and shared by any number of sessions.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use edgeinfer_kernels::Kernels;
use edgeinfer_models::{Config, Llama, ModelError};

use crate::constraint::Grammars;
use crate::error::{io, Error, Result};
use crate::loader::{Checkpoint, WeightsAccess};
use crate::session::{Session, SessionOptions};
use crate::tokenizer::Tokenizer;

/// How to load a model.
#[derive(Clone, Debug, Default)]
pub struct ModelOptions {
    /// Worker threads for one forward pass. `None`: the CPUs this process may use.
    pub threads: Option<usize>,
    /// Kernel variant name (`scalar`, `avx2`, `neon_dotprod`, …). `None`: `$EDGEINFER_KERNELS`, else
    /// the best one this CPU supports.
    pub kernels: Option<String>,
}

/// A loaded model: config, weights mapped from disk, tokenizer and the kernel table. `Send + Sync`;
/// share it with `Arc` and open one [`Session`] per concurrent conversation.
pub struct Model {
    dir: PathBuf,
    pub(crate) llama: Llama,
    checkpoint: Checkpoint,
    tokenizer: Tokenizer,
    pub(crate) kernels: Kernels,
    threads: usize,
    pub(crate) pool: Option<rayon::ThreadPool>,
    eos_ids: Vec<u32>,
    load_time: Duration,
    /// The token trie and compiled constraints, built on the first constrained generation (a
    /// model that never sees one never pays for it).
    grammars: OnceLock<Result<Grammars, String>>,
}

impl Model {
    /// Loads the model in `dir` with default options.
    pub fn load(dir: impl AsRef<Path>) -> Result<Arc<Model>> {
        Model::load_with(dir, &ModelOptions::default())
    }

    /// Loads with `opts`, mapping the weights (or copying them when `$EDGEINFER_WEIGHTS=copy`).
    pub fn load_with(dir: impl AsRef<Path>, opts: &ModelOptions) -> Result<Arc<Model>> {
        Model::load_with_access(dir, opts, WeightsAccess::from_env()?)
    }

    /// Loads with `opts`, mapping or copying the weight files as `access` says: copy files that
    /// other processes may truncate or rewrite (see [`crate::loader`]'s docs).
    pub fn load_with_access(
        dir: impl AsRef<Path>,
        opts: &ModelOptions,
        access: WeightsAccess,
    ) -> Result<Arc<Model>> {
        let start = Instant::now();
        let dir = dir.as_ref();
        let kernels = Kernels::select(opts.kernels.as_deref())?;
        let checkpoint = Checkpoint::open_with(dir, access)?;
        let config = read_config(dir)?;
        let source = checkpoint.source();
        let llama = Llama::load(config, &source).map_err(|source_err| Error::Model {
            // The file holding the tensor at fault (a shape error is found after the lookup succeeded).
            path: source
                .failed_file()
                .or_else(|| {
                    tensor_name(&source_err)
                        .and_then(|n| checkpoint.file_of(n))
                        .map(Path::to_path_buf)
                })
                .unwrap_or_else(|| dir.to_path_buf()),
            source: source_err,
        })?;
        drop(source);
        let tokenizer = Tokenizer::from_dir(dir)?;
        let eos_ids = eos_ids(dir, &llama.config, &tokenizer)?;
        let threads = match opts.threads {
            Some(0) => {
                return Err(Error::Options {
                    field: "threads",
                    reason: "must be at least 1".into(),
                })
            }
            Some(n) => n,
            None => default_threads(),
        };
        let pool = if threads > 1 {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .thread_name(|i| format!("edgeinfer-{i}"))
                .build()
                .map_err(|e| Error::ThreadPool {
                    reason: e.to_string(),
                })?;
            Some(pool)
        } else {
            None
        };
        Ok(Arc::new(Model {
            dir: dir.to_path_buf(),
            llama,
            checkpoint,
            tokenizer,
            kernels,
            threads,
            pool,
            eos_ids,
            load_time: start.elapsed(),
            grammars: OnceLock::new(),
        }))
    }

    /// Opens a session (its own activation arena and KV cache). Fails with
    /// [`Error::WeightsChanged`] if a mapped weight file was truncated or rewritten since loading.
    pub fn session(self: &Arc<Self>, opts: SessionOptions) -> Result<Session> {
        self.verify_weights()?;
        Session::new(self.clone(), opts)
    }

    /// Checks that no mapped weight file was truncated or rewritten in place since loading (one
    /// `fstat` per file): call it before a request to turn such a change into
    /// [`Error::WeightsChanged`] instead of a SIGBUS. See [`crate::loader`]'s docs.
    pub fn verify_weights(&self) -> Result<()> {
        self.checkpoint.verify()
    }

    /// Weight tensors holding NaN or infinite values (reads every float of the weight files).
    pub fn non_finite_weights(&self) -> Result<Vec<crate::loader::NonFinite>> {
        self.checkpoint.non_finite()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn config(&self) -> &Config {
        &self.llama.config
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    pub fn kernels(&self) -> &Kernels {
        &self.kernels
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Token ids that end generation (config.json, generation_config.json and the tokenizer's EOS).
    pub fn eos_ids(&self) -> &[u32] {
        &self.eos_ids
    }

    /// The constraint compiler, built once (see [`crate::constraint`]).
    pub(crate) fn grammars(&self) -> Result<&Grammars> {
        self.grammars
            .get_or_init(|| {
                Grammars::new(&self.tokenizer, self.llama.config.vocab_size, &self.eos_ids).map_err(
                    |e| match e {
                        Error::Options { reason, .. } => reason,
                        e => e.to_string(),
                    },
                )
            })
            .as_ref()
            .map_err(|reason| Error::Options {
                field: "constraint",
                reason: reason.clone(),
            })
    }

    /// Wall time `load` took.
    pub fn load_time(&self) -> Duration {
        self.load_time
    }

    /// Bytes of weight files mapped (resident only as pages are touched).
    pub fn mapped_bytes(&self) -> usize {
        self.checkpoint.mapped_bytes()
    }

    /// The model's weights (name, storage type, shape, bytes), for inspection.
    pub fn weights(&self) -> impl Iterator<Item = edgeinfer_models::WeightInfo<'_>> {
        self.llama.weights()
    }

    /// A warning when the model's layout does not suit the kernels in use: `rows8` matrices (see
    /// `edgeinfer_kernels::quant::rows8`) with a variant that has no kernel for them, which then
    /// reorders every such matrix on every product (decode several times slower).
    pub fn layout_warning(&self) -> Option<String> {
        let variant = self.kernels().variant;
        let rows8 = self
            .weights()
            .filter(|w| w.layout == Some(edgeinfer_kernels::quant::QLayout::Rows8))
            .count();
        (rows8 > 0 && !variant.reads_rows8()).then(|| {
            format!(
                "{rows8} matrices are in the rows8 layout, made for ARM CPUs with dotprod; the {variant} \
                 kernels reorder them on every product, so decoding is several times slower than \
                 with the rowsplit layout: quantize or import the model again with --layout rowsplit \
                 for this CPU"
            )
        })
    }

    /// Bytes of the weights the forward pass reads.
    pub fn weight_bytes(&self) -> usize {
        self.llama.weights().map(|w| w.bytes).sum()
    }
}

/// The tensor a load error is about, if it is about one that exists.
fn tensor_name(err: &ModelError) -> Option<&str> {
    match err {
        ModelError::Shape { name, .. }
        | ModelError::DType { name, .. }
        | ModelError::TensorData { name, .. } => Some(name),
        _ => None,
    }
}

fn read_config(dir: &Path) -> Result<Config> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(io(&path))?;
    Config::from_json(&text).map_err(|source| Error::Config { path, source })
}

/// EOS ids from every place a Hugging Face model directory may declare them, without duplicates.
fn eos_ids(dir: &Path, config: &Config, tok: &Tokenizer) -> Result<Vec<u32>> {
    let mut ids = config.eos_token_ids.clone();
    let gen_path = dir.join("generation_config.json");
    if gen_path.is_file() {
        let text = std::fs::read_to_string(&gen_path).map_err(io(&gen_path))?;
        let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::Config {
            path: gen_path.clone(),
            source: edgeinfer_models::ModelError::ConfigJson {
                reason: e.to_string(),
            },
        })?;
        match json.get("eos_token_id") {
            Some(serde_json::Value::Array(a)) => {
                ids.extend(a.iter().filter_map(|v| v.as_u64()).map(|v| v as u32))
            }
            Some(v) => ids.extend(v.as_u64().map(|v| v as u32)),
            None => {}
        }
    }
    if let Some(id) = tok.eos_token().and_then(|t| tok.token_id(t)) {
        ids.push(id);
    }
    ids.sort_unstable();
    ids.dedup();
    Ok(ids)
}

/// The CPUs this process may run on: affinity mask and cgroup CPU quota (both respected by std).
pub fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}
