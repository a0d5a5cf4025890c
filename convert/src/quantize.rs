//! Quantizing a checkpoint: an F32/F16/BF16 Llama checkpoint directory in, the same model with its
//! matrices in q8_0, q4_0 or q4_1 (`rowsplit` planes in `model.safetensors`, see
//! `edgeinfer_models::matrix`) out. This is what `infer quantize` runs.
//!
//! What is quantized, and what is not:
//! - **Quantized to the chosen format** (q8_0 and q4_1 with the reference quantizers of
//!   `edgeinfer_kernels::quant::scalar`, q4_0 with the least-squares scale search of
//!   [`search`]): every 2-D matmul weight of the layers (`q_proj`, `k_proj`,
//!   `v_proj`, `o_proj`, `gate_proj`, `up_proj`, `down_proj`). These are most of the bytes, and
//!   decode time is the time to stream them.
//! - **Quantized to q8_0 under q4_0/q4_1**: the token embedding and `lm_head` when untied (as the
//!   GGUF files of llama.cpp keep them at 6–8 bits). Their error reaches the logits directly instead
//!   of averaging out through later layers; on SmolLM2-135M (tied) this one matrix in q8_0 instead
//!   of q4_0 costs 14 MB. The embedding is read one row per token (dequantized on lookup).
//! - **Kept in F32**: the RMSNorm weights (`input_layernorm`, `post_attention_layernorm`,
//!   `model.norm`, Qwen3's `q_norm`/`k_norm`) and Qwen2's q/k/v projection biases. They are `hidden` floats per layer (≈0.05% of the model), and each one scales one
//!   channel of every activation, so an error there is systematic rather than averaged out over a dot
//!   product; quantizing them would save nothing worth having.
//! - **Kept dense, in the input's dtype**: a matrix whose row length `k` is not a multiple of the
//!   32-element block (the formats cannot hold it); the summary lists them.
//! - Tensors the Llama forward pass does not read (e.g. `rotary_emb.inv_freq`) are not copied; the
//!   summary lists them.
//!
//! [`QuantizeOptions::overrides`] (`--tensor-type PATTERN=TYPE`) change any matrix's storage: another
//! format, or dense F32/F16/BF16 (which the forward pass multiplies with f32 activations).
//!
//! [`QuantizeOptions::calibration`] (`--calibration FILE`) rounds the layers' matrices and an untied
//! lm_head GPTQ-style instead, weighted by the input model's activations on a text ([`Calibration`];
//! `calibration` runs the model and collects them, [`gptq`] rounds).
//!
//! `config.json` is copied with `"quantization_config": {"quant_method": "edgeinfer", "format": …,
//! "layout": "rowsplit", "version": 1}` added; `tokenizer.json`, `tokenizer_config.json` and
//! `generation_config.json` are copied when present. The output is staged and published as a whole
//! ([`crate::store::Staging`]): on any error nothing is left in the output directory.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use edgeinfer::loader::{Checkpoint, CheckpointSource};
use edgeinfer_kernels::quant::{QFormat, QLayout, LAYOUT_NAME, LAYOUT_VERSION, QK};
use edgeinfer_kernels::WeightRef;
use edgeinfer_models::{names, Config, Llama, Matrix, ModelError, TapSite, Tensor};
use half::f16;
use rayon::prelude::*;
use safetensors::Dtype;

use crate::store::{self, Data, Entry, QPlanes, Staging, StoreError, StoredAs, WEIGHTS_FILE};
use calibration::{Calibrator, Site};
pub use recipe::{
    fitting_format, medium_budget, medium_upgrades, more_bits, output_format, Recipe,
};

mod calibration;
pub mod gptq;
mod iq4;
pub mod kquants;
mod recipe;
pub mod search;

/// How to quantize.
#[derive(Clone, Debug)]
pub struct QuantizeOptions {
    /// Format of every quantized matrix.
    pub format: QFormat,
    /// Per-tensor exceptions, first match wins (`infer quantize --tensor-type`). A matrix no override
    /// names gets the default plan above.
    pub overrides: Vec<TensorOverride>,
    /// How the layers' matrices are rounded.
    pub calibration: Calibration,
    /// Layout of the quantized matrices (default `rowsplit`; `rows8` for ARM dotprod decode,
    /// where the shape fits it, see `edgeinfer_kernels::quant::rows8`).
    pub layout: QLayout,
    /// Which matrices get more bits than `format` ([`Recipe`]).
    pub recipe: Recipe,
}

/// The formats `infer quantize` writes, for messages.
pub const WRITABLE: &str =
    "q8_0, q4_0, q4_1, q5_0, q5_1, iq4_nl, q2_k, q3_k, q4_k, q5_k, q6_k, iq4_xs";

impl QuantizeOptions {
    /// Every matrix in `format` (the embedding and an untied lm_head as [`output_format`] says),
    /// every block rounded on its own.
    pub fn new(format: QFormat) -> QuantizeOptions {
        QuantizeOptions {
            format,
            overrides: Vec::new(),
            calibration: Calibration::Plain,
            layout: QLayout::RowSplit,
            recipe: Recipe::Uniform,
        }
    }

    /// The options a `--type` name asks for: a format (`q4_0`, `q4_k`, …) or a mixture (`q4_k_m`,
    /// `q5_k_m`).
    pub fn from_type_name(name: &str) -> Option<QuantizeOptions> {
        let name = name.trim().to_ascii_lowercase();
        let (format, recipe) = match name.as_str() {
            "q4_k_m" => (QFormat::Q4K, Recipe::Medium),
            "q5_k_m" => (QFormat::Q5K, Recipe::Medium),
            other => (QFormat::from_name(other)?, Recipe::Uniform),
        };
        Some(QuantizeOptions {
            recipe,
            ..QuantizeOptions::new(format)
        })
    }
}

/// How the layers' matrices (and an untied lm_head) are rounded.
#[derive(Clone, Debug)]
pub enum Calibration {
    /// Every block on its own, by the quantizers of `edgeinfer_kernels::quant::scalar` (q4_0: with
    /// the scale search of [`search`]). Needs no tokenizer and no forward pass.
    Plain,
    /// Error-compensating rounding ([`gptq`]) weighted by the activations the input model produces
    /// on this text: each matrix's products with them change least. The embedding (read by rows,
    /// and the output projection too when tied) is rounded plainly.
    /// Paragraphs (separated by blank lines) run as separate sequences, each from position 0. It
    /// needs text like what the model will see, and plenty of it: on SmolLM2-135M, ~10k tokens
    /// helped where ~1k tokens (fewer than a `down_proj` row's 1536 inputs) made q4_0 worse than
    /// plain rounding (docs/accuracy.md, "Calibrated rounding").
    Text(String),
}

/// What a matrix is stored as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreType {
    Quant(QFormat),
    /// Dense F32, F16 or BF16 (matmuls with this matrix take f32 activations, not q8 ones).
    Dense(edgeinfer_kernels::DType),
}

impl StoreType {
    /// `q8_0`, `q4_0`, `q4_1`, `f32`, `f16` or `bf16` (case-insensitive).
    pub fn from_name(name: &str) -> Option<StoreType> {
        use edgeinfer_kernels::DType;
        if let Some(f) = QFormat::from_name(name) {
            return Some(StoreType::Quant(f));
        }
        let d = match name.trim().to_ascii_lowercase().as_str() {
            "f32" => DType::F32,
            "f16" => DType::F16,
            "bf16" => DType::BF16,
            _ => return None,
        };
        Some(StoreType::Dense(d))
    }
}

/// Matrices whose name contains `pattern` are stored as `to`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorOverride {
    pub pattern: String,
    pub to: StoreType,
}

impl std::str::FromStr for TensorOverride {
    type Err = String;

    /// `PATTERN=TYPE`, e.g. `mlp.down_proj=q8_0` or `layers.0.=f16`.
    fn from_str(s: &str) -> Result<TensorOverride, String> {
        let (pattern, to) = s
            .rsplit_once('=')
            .ok_or_else(|| format!("`{s}`: expected PATTERN=TYPE, e.g. mlp.down_proj=q8_0"))?;
        if pattern.is_empty() {
            return Err(format!("`{s}`: the pattern before `=` is empty"));
        }
        let to = match StoreType::from_name(to) {
            Some(t) => t,
            None => {
                return Err(format!(
                    "`{s}`: unknown type `{to}` (expected {WRITABLE}, f32, f16 or bf16)"
                ))
            }
        };
        Ok(TensorOverride {
            pattern: pattern.to_string(),
            to,
        })
    }
}

/// Reported once per weight, after it has been written. `index` counts from 0, so the last event has
/// `index + 1 == total`.
#[derive(Clone, Debug)]
pub struct QuantizeProgress {
    pub index: usize,
    pub total: usize,
    pub name: String,
}

/// What a quantization wrote.
#[derive(Clone, Debug)]
pub struct QuantizeSummary {
    pub out_dir: PathBuf,
    pub format: QFormat,
    /// Weights written (dense tensors and quantized matrices).
    pub tensors: usize,
    /// Matrices stored in `format`.
    pub quantized: usize,
    /// Quantized matrices per format written (a mixture's, and shapes' fallbacks, included).
    pub formats: BTreeMap<String, usize>,
    /// Matrices kept dense because their row length is not a multiple of 32.
    pub kept_dense: Vec<String>,
    /// Matrices stored as an override said (name, type), in checkpoint order.
    pub overridden: Vec<(String, StoreType)>,
    /// Input tensors that were not copied (the forward pass does not read them).
    pub skipped: Vec<String>,
    pub parameters: u64,
    /// Bytes of the input's safetensors files.
    pub input_bytes: u64,
    /// Bytes of the written `model.safetensors`.
    pub output_bytes: u64,
    /// Tokens of calibration text the rounding was weighted by (`None`: plain rounding).
    pub calibration_tokens: Option<usize>,
}

/// Why a quantization failed; every variant names the file or tensor at fault.
#[derive(Debug, thiserror::Error)]
pub enum QuantizeError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The input checkpoint does not load (missing tensor, wrong shape, bad file, bad config…).
    #[error("input checkpoint: {0}")]
    Input(#[source] Box<edgeinfer::Error>),
    #[error("{}: tensor `{name}` is already quantized ({format}); quantize from an F32, F16 or BF16 checkpoint", path.display())]
    AlreadyQuantized {
        path: PathBuf,
        name: String,
        format: QFormat,
    },
    #[error("{}: {reason}", path.display())]
    Config { path: PathBuf, reason: String },
    #[error("--tensor-type `{pattern}`: no matrix of {} has a name containing it (names look like model.layers.0.mlp.down_proj.weight)", path.display())]
    UnmatchedOverride { path: PathBuf, pattern: String },
    #[error("{}: is the input directory; write the quantized model elsewhere", path.display())]
    SameDirectory { path: PathBuf },
    #[error("{}: calibration: {reason}", path.display())]
    Calibration { path: PathBuf, reason: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> QuantizeError + '_ {
    move |source| QuantizeError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Files copied from the input directory (when present) besides `config.json`.
const COPIED: [&str; 3] = [
    "tokenizer.json",
    "tokenizer_config.json",
    "generation_config.json",
];

/// Quantizes the checkpoint in `in_dir` into `out_dir` (created if needed; files of the same names are
/// replaced only once all are written). `progress` is called once per weight.
pub fn quantize_checkpoint(
    in_dir: &Path,
    out_dir: &Path,
    opts: &QuantizeOptions,
    progress: &mut dyn FnMut(QuantizeProgress),
) -> Result<QuantizeSummary, QuantizeError> {
    if same_dir(in_dir, out_dir) {
        return Err(QuantizeError::SameDirectory {
            path: out_dir.to_path_buf(),
        });
    }
    // Load and validate the whole input before creating anything.
    let ckpt = Checkpoint::open(in_dir).map_err(|e| QuantizeError::Input(Box::new(e)))?;
    let config_path = in_dir.join("config.json");
    let config_text = std::fs::read_to_string(&config_path).map_err(io_err(&config_path))?;
    let config = Config::from_json(&config_text).map_err(|source| {
        QuantizeError::Input(Box::new(edgeinfer::Error::Config {
            path: config_path.clone(),
            source,
        }))
    })?;
    let source = ckpt.source();
    let llama = Llama::load(config, &source).map_err(|e| input_error(&ckpt, &source, in_dir, e))?;
    let weights = plan(&llama, &ckpt, opts, in_dir)?;
    let layout = match weights.iter().any(|w| {
        matches!(
            w.entry.stored,
            StoredAs::Quant {
                layout: QLayout::Rows8,
                ..
            }
        )
    }) {
        true => QLayout::Rows8,
        false => QLayout::RowSplit,
    };
    let config_json = quantized_config(&config_text, &config_path, opts, layout)?;

    let entries: Vec<Entry> = weights.iter().map(|w| w.entry.clone()).collect();
    // The input is dense (quantized matrices were refused above), so every entry is one input tensor.
    let planned: HashSet<&str> = entries.iter().map(|e| e.name.as_str()).collect();
    let mut skipped: Vec<String> = ckpt
        .tensors
        .keys()
        .filter(|n| !planned.contains(n.as_str()))
        .cloned()
        .collect();
    skipped.sort();

    let mut staging = Staging::new(out_dir)?;
    let weights_path = staging.stage(WEIGHTS_FILE);
    let total = weights.len();
    let meta = BTreeMap::from([("format".to_string(), "pt".to_string())]);
    let mut calibrator = match &opts.calibration {
        Calibration::Text(text) if weights.iter().any(|w| w.calibrated()) => {
            Some(Calibrator::new(&llama, in_dir, text)?)
        }
        _ => None,
    };
    let stats = store::write_model(&weights_path, &entries, &meta, |i, e| {
        let data = weights[i].produce(e, calibrator.as_mut())?;
        progress(QuantizeProgress {
            index: i,
            total,
            name: e.name.clone(),
        });
        Ok::<_, QuantizeError>(data)
    })?;
    for file in COPIED {
        let from = in_dir.join(file);
        if from.is_file() {
            let bytes = std::fs::read(&from).map_err(io_err(&from))?;
            staging.write(file, &bytes)?;
        }
    }
    staging.write("config.json", config_json.as_bytes())?;
    staging.publish()?;

    let kept_dense = weights
        .iter()
        .filter(|w| w.kept_dense)
        .map(|w| w.entry.name.clone())
        .collect();
    let overridden = weights
        .iter()
        .filter_map(|w| Some((w.entry.name.clone(), w.overridden?)))
        .collect();
    Ok(QuantizeSummary {
        out_dir: out_dir.to_path_buf(),
        format: opts.format,
        overridden,
        tensors: entries.len(),
        quantized: weights
            .iter()
            .filter(|w| matches!(w.entry.stored, StoredAs::Quant { format, .. } if format == opts.format))
            .count(),
        formats: weights
            .iter()
            .filter_map(|w| match w.entry.stored {
                StoredAs::Quant { format, .. } => Some(format.name().to_string()),
                StoredAs::Dense { .. } => None,
            })
            .fold(BTreeMap::new(), |mut m, f| {
                *m.entry(f).or_insert(0) += 1;
                m
            }),
        kept_dense,
        skipped,
        parameters: stats.parameters,
        input_bytes: ckpt.mapped_bytes() as u64,
        output_bytes: stats.bytes,
        calibration_tokens: calibrator.map(|c| c.tokens()),
    })
}

/// Whether `a` and `b` are the same existing directory.
fn same_dir(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// A load error with the file it concerns, as `Model::load` reports it.
fn input_error(
    ckpt: &Checkpoint,
    source: &CheckpointSource<'_>,
    dir: &Path,
    e: ModelError,
) -> QuantizeError {
    let name = match &e {
        ModelError::Shape { name, .. }
        | ModelError::DType { name, .. }
        | ModelError::TensorData { name, .. } => Some(name.as_str()),
        _ => None,
    };
    let path = source
        .failed_file()
        .or_else(|| name.and_then(|n| ckpt.file_of(n)).map(Path::to_path_buf))
        .unwrap_or_else(|| dir.to_path_buf());
    QuantizeError::Input(Box::new(edgeinfer::Error::Model { path, source: e }))
}

/// `config.json` with `quantization_config` set.
fn quantized_config(
    text: &str,
    path: &Path,
    opts: &QuantizeOptions,
    layout: QLayout,
) -> Result<String, QuantizeError> {
    let mut json: serde_json::Value =
        serde_json::from_str(text).map_err(|e| QuantizeError::Config {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    let obj = json.as_object_mut().ok_or_else(|| QuantizeError::Config {
        path: path.to_path_buf(),
        reason: "top level is not an object".into(),
    })?;
    let mut q = quantization_config(opts.format, layout);
    if opts.recipe == Recipe::Medium {
        // The mixture's name (`q4_k_m`), not only its base format.
        q["format"] = format!("{}_m", opts.format.name()).into();
    }
    obj.insert("quantization_config".into(), q);
    let text = serde_json::to_string_pretty(&json).map_err(|e| QuantizeError::Config {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    Ok(text + "\n")
}

/// The `quantization_config` object of a checkpoint whose matrices are (mostly) in `format`, its
/// quantized matrices in `layout` where they fit it: `layout` names the file layout (`rowsplit`),
/// `version` its version (2 when `matrix_layout` is `rows8`).
pub fn quantization_config(format: QFormat, layout: QLayout) -> serde_json::Value {
    let mut q = serde_json::json!({
        "quant_method": "edgeinfer",
        "format": format.name(),
        "layout": LAYOUT_NAME,
        "version": layout.version(),
    });
    if layout != QLayout::RowSplit {
        q["matrix_layout"] = layout.name().into();
    }
    debug_assert!(layout.version() <= LAYOUT_VERSION);
    q
}

/// One weight of the output and where its values come from.
struct Weight {
    entry: Entry,
    src: Src,
    kept_dense: bool,
    /// Set when an override chose the storage.
    overridden: Option<StoreType>,
    /// Whose inputs calibrate the rounding (the layers' matrices and an untied lm_head).
    site: Option<Site>,
}

enum Src {
    /// A norm: converted to F32.
    Norm(Tensor),
    /// A matrix quantized row by row.
    Quantize(Matrix),
    /// A matrix copied as is.
    Copy(Tensor),
    /// A matrix converted to another dense dtype.
    Convert(Matrix),
}

impl Weight {
    /// Whether calibration would change how this weight is rounded.
    fn calibrated(&self) -> bool {
        self.site.is_some() && matches!(self.src, Src::Quantize(_))
    }

    fn produce(&self, e: &Entry, cal: Option<&mut Calibrator>) -> Result<Data, QuantizeError> {
        Ok(match (&self.src, &e.stored) {
            (Src::Norm(t), _) => {
                let mut v = vec![0f32; t.shape().iter().product()];
                t.view().to_f32(&mut v);
                Data::Dense(bytemuck::cast_slice(&v).to_vec())
            }
            (Src::Copy(t), _) => Data::Dense(tensor_bytes(t).to_vec()),
            (Src::Convert(m), StoredAs::Dense { dtype, shape }) => {
                Data::Dense(convert_matrix(m, shape, *dtype))
            }
            (Src::Convert(_), StoredAs::Quant { .. }) => unreachable!("planned as dense"),
            (
                Src::Quantize(m),
                &StoredAs::Quant {
                    format, rows, k, ..
                },
            ) => {
                if !format.is_basic() {
                    let imp = match (cal, self.site) {
                        (Some(cal), Some(site)) => Some(importance_weights(cal.importance(site)?)),
                        _ => None,
                    };
                    return Ok(Data::Quant(quantize_matrix_gguf(
                        format,
                        rows,
                        k,
                        imp.as_deref(),
                        |r, out| m.row_f32(r, out),
                    )));
                }
                let u = match (cal, self.site) {
                    (Some(cal), Some(site)) => cal.factor(site)?,
                    _ => None,
                };
                Data::Quant(quantize_matrix(format, rows, k, u, |r, out| {
                    m.row_f32(r, out)
                }))
            }
            (Src::Quantize(_), StoredAs::Dense { .. }) => unreachable!("planned as quantized"),
        })
    }
}

/// Every weight the Llama forward pass reads, in checkpoint order, with how it is stored.
fn plan(
    llama: &Llama,
    ckpt: &Checkpoint,
    opts: &QuantizeOptions,
    in_dir: &Path,
) -> Result<Vec<Weight>, QuantizeError> {
    let format = opts.format;
    let mut used = vec![false; opts.overrides.len()];
    let norm = |t: &Tensor| Weight {
        entry: Entry {
            name: t.name().to_string(),
            stored: StoredAs::Dense {
                dtype: Dtype::F32,
                shape: t.shape().to_vec(),
            },
        },
        src: Src::Norm(t.clone()),
        kept_dense: false,
        overridden: None,
        site: None,
    };
    let mut matrix =
        |m: &Matrix, format: QFormat, site: Option<Site>| -> Result<Weight, QuantizeError> {
            let t = match m {
                Matrix::Dense(t) => t,
                Matrix::Quant(q) => {
                    return Err(QuantizeError::AlreadyQuantized {
                        path: ckpt
                            .file_of(&format!("{}.qs", m.name()))
                            .unwrap_or(Path::new(""))
                            .to_path_buf(),
                        name: m.name().to_string(),
                        format: q.format(),
                    })
                }
            };
            let (rows, k) = match *t.shape() {
                [rows, k] => (rows, k),
                _ => unreachable!("the loader checked matrix shapes"),
            };
            let chosen = opts
                .overrides
                .iter()
                .position(|o| t.name().contains(&o.pattern));
            if let Some(i) = chosen {
                used[i] = true;
            }
            let overridden = chosen.map(|i| opts.overrides[i].to);
            let name = t.name().to_string();
            Ok(match overridden.unwrap_or(StoreType::Quant(format)) {
                StoreType::Dense(dtype) => Weight {
                    entry: Entry {
                        name,
                        stored: StoredAs::Dense {
                            dtype: dtype_of(dtype),
                            shape: vec![rows, k],
                        },
                    },
                    src: Src::Convert(m.clone()),
                    kept_dense: false,
                    overridden,
                    site,
                },
                StoreType::Quant(format)
                    if k.is_multiple_of(fitting_format(format, k).block_elems()) && rows > 0 =>
                {
                    let format = fitting_format(format, k);
                    Weight {
                        entry: Entry {
                            name,
                            stored: StoredAs::Quant {
                                format,
                                rows,
                                k,
                                layout: if opts.layout.fits(format, rows, k) {
                                    opts.layout
                                } else {
                                    QLayout::RowSplit
                                },
                            },
                        },
                        src: Src::Quantize(m.clone()),
                        kept_dense: false,
                        overridden,
                        site,
                    }
                }
                StoreType::Quant(_) => Weight {
                    entry: Entry {
                        name: t.name().to_string(),
                        stored: StoredAs::Dense {
                            dtype: safetensors_dtype(t),
                            shape: vec![rows, k],
                        },
                    },
                    src: Src::Copy(t.clone()),
                    kept_dense: true,
                    overridden: None,
                    site,
                },
            })
        };
    // The embedding (the output projection too when tied) and an untied lm_head stay in q8_0 under the
    // 4-bit formats: their error lands on the logits directly, not averaged through later layers.
    let outer = output_format(format);
    let layers = llama.layers.len();
    // Under `Recipe::Medium`, the value and down projections of some layers in q6_k.
    let upgrades = match opts.recipe {
        Recipe::Medium => medium_upgrades(llama, format),
        Recipe::Uniform => vec![[false; 2]; layers],
    };
    let more = |i: usize, slot: usize| match upgrades[i][slot] {
        true => QFormat::Q6K,
        false => format,
    };
    let mut out = vec![matrix(&llama.embed, outer, None)?];
    for (i, l) in llama.layers.iter().enumerate() {
        out.push(norm(&l.attn_norm));
        for (m, f) in [(&l.wq, format), (&l.wk, format), (&l.wv, more(i, 0))] {
            out.push(matrix(m, f, Some((i, TapSite::Qkv)))?);
        }
        // Qwen2's q/k/v biases and Qwen3's per-head q/k norms: vectors, kept F32 like the norms.
        for t in [&l.bq, &l.bk, &l.bv, &l.q_norm, &l.k_norm]
            .into_iter()
            .flatten()
        {
            out.push(norm(t));
        }
        out.push(matrix(&l.wo, format, Some((i, TapSite::Out)))?);
        out.push(norm(&l.mlp_norm));
        for m in [&l.w_gate, &l.w_up] {
            out.push(matrix(m, format, Some((i, TapSite::GateUp)))?);
        }
        out.push(matrix(&l.w_down, more(i, 1), Some((i, TapSite::Down)))?);
    }
    out.push(norm(&llama.norm));
    if let Some(head) = &llama.lm_head {
        let site = (llama.layers.len(), TapSite::Head);
        out.push(matrix(head, outer, Some(site))?);
    }
    debug_assert!(out.iter().any(|w| w.entry.name == names::EMBED));
    if let Some(i) = used.iter().position(|u| !u) {
        return Err(QuantizeError::UnmatchedOverride {
            path: in_dir.to_path_buf(),
            pattern: opts.overrides[i].pattern.clone(),
        });
    }
    Ok(out)
}

/// Importance weights from `diag H`: each column's share, floored at a thousandth of the mean so
/// that a column no calibration token used still counts a little.
fn importance_weights(diag: &[f32]) -> Vec<f32> {
    let mean = diag.iter().map(|&v| f64::from(v)).sum::<f64>() / diag.len().max(1) as f64;
    if mean <= 0.0 {
        return vec![1.0; diag.len()];
    }
    diag.iter()
        .map(|&v| (f64::from(v) / mean + 1e-3) as f32)
        .collect()
}

/// [`quantize_matrix`] for the GGUF formats of [`kquants`], each column's error weighted by `imp`
/// (calibration) or not at all.
pub fn quantize_matrix_gguf(
    format: QFormat,
    rows: usize,
    k: usize,
    imp: Option<&[f32]>,
    row: impl Fn(usize, &mut [f32]) + Sync,
) -> QPlanes {
    let nb = k / format.block_elems();
    let (rb, ab) = (
        nb * format.qs_bytes_per_block(),
        nb * format.aux_bytes_per_block(),
    );
    let mut qs = vec![0u8; rows * rb];
    // One byte per row at least, so that the zip below has a chunk for every row (dropped after).
    let mut aux = vec![0u8; rows * ab.max(1)];
    let mut d = vec![f16::ZERO; rows * nb];
    let mut m = vec![f16::ZERO; rows * nb];
    qs.par_chunks_mut(rb)
        .zip(aux.par_chunks_mut(ab.max(1)))
        .zip(d.par_chunks_mut(nb))
        .zip(m.par_chunks_mut(nb))
        .enumerate()
        .for_each_init(
            || vec![0f32; k],
            |x, (r, (((qs, aux), d), m))| {
                row(r, x);
                let aux = &mut aux[..ab];
                kquants::quantize_row(format, x, imp, qs, aux, d, m);
            },
        );
    if !format.has_min() {
        m = Vec::new();
    }
    if ab == 0 {
        aux = Vec::new();
    }
    QPlanes { qs, d, m, aux }
}

/// A dense tensor's bytes as stored.
fn tensor_bytes(t: &Tensor) -> &[u8] {
    match t.view() {
        WeightRef::F32(v) => bytemuck::cast_slice(v),
        WeightRef::F16(v) => bytemuck::cast_slice(v),
        WeightRef::BF16(v) => bytemuck::cast_slice(v),
    }
}

fn safetensors_dtype(t: &Tensor) -> Dtype {
    dtype_of(t.dtype())
}

fn dtype_of(d: edgeinfer_kernels::DType) -> Dtype {
    match d {
        edgeinfer_kernels::DType::F32 => Dtype::F32,
        edgeinfer_kernels::DType::F16 => Dtype::F16,
        edgeinfer_kernels::DType::BF16 => Dtype::BF16,
    }
}

/// A `[rows, k]` matrix's bytes in `dtype` (F32, F16 or BF16), converted row by row.
fn convert_matrix(m: &Matrix, shape: &[usize], dtype: Dtype) -> Vec<u8> {
    let k = shape[1];
    let mut row = vec![0f32; k];
    let mut out = Vec::with_capacity(shape[0] * k * dtype.bitsize() / 8);
    for r in 0..shape[0] {
        m.row_f32(r, &mut row);
        match dtype {
            Dtype::F16 => row
                .iter()
                .for_each(|&v| out.extend_from_slice(&f16::from_f32(v).to_le_bytes())),
            Dtype::BF16 => row
                .iter()
                .for_each(|&v| out.extend_from_slice(&half::bf16::from_f32(v).to_le_bytes())),
            _ => row
                .iter()
                .for_each(|&v| out.extend_from_slice(&v.to_le_bytes())),
        }
    }
    out
}

/// Rows handed to one rayon task: enough work to amortise the task, small enough to balance.
const ROWS_PER_TASK: usize = 8;

/// Quantizes a `[rows, k]` matrix (`k` a positive multiple of 32) whose row `r` `row(r, out)` writes
/// as f32, with the reference quantizer of `format` (q4_0: with the scale search), or with GPTQ's
/// error feedback when `u` (the factor of [`gptq::inverse_factor`]) is given;
/// rows are split across the current rayon pool.
pub fn quantize_matrix(
    format: QFormat,
    rows: usize,
    k: usize,
    u: Option<&[f32]>,
    row: impl Fn(usize, &mut [f32]) + Sync,
) -> QPlanes {
    assert!(
        k > 0 && k.is_multiple_of(QK),
        "quantize_matrix: k={k} is not a positive multiple of {QK}"
    );
    let nb = k / QK;
    let rb = nb * format.qs_bytes_per_block();
    let mut qs = vec![0u8; rows * rb];
    let mut d = vec![f16::ZERO; rows * nb];
    // Allocated for every format to keep one loop; dropped below when the format has no minimums.
    let mut m = vec![f16::ZERO; rows * nb];
    qs.par_chunks_mut(rb * ROWS_PER_TASK)
        .zip(d.par_chunks_mut(nb * ROWS_PER_TASK))
        .zip(m.par_chunks_mut(nb * ROWS_PER_TASK))
        .enumerate()
        .for_each_init(
            || vec![0f32; k * ROWS_PER_TASK],
            |x, (task, ((qs, d), m))| {
                let rows_here = d.len() / nb;
                if let Some(u) = u {
                    let x = &mut x[..rows_here * k];
                    for (i, xr) in x.chunks_exact_mut(k).enumerate() {
                        row(task * ROWS_PER_TASK + i, xr);
                    }
                    return gptq::quantize_rows(format, x, k, u, qs, d, m);
                }
                let x = &mut x[..k];
                for i in 0..rows_here {
                    row(task * ROWS_PER_TASK + i, x);
                    let (qs, d, m) = (
                        &mut qs[i * rb..(i + 1) * rb],
                        &mut d[i * nb..(i + 1) * nb],
                        &mut m[i * nb..(i + 1) * nb],
                    );
                    search::quantize_row(format, x, qs, d, m);
                }
            },
        );
    if !format.has_min() {
        m = Vec::new();
    }
    QPlanes {
        qs,
        d,
        m,
        aux: Vec::new(),
    }
}
