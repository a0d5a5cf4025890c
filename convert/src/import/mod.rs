//! GGUF import: turn a llama.cpp GGUF file (`general.architecture` `llama`, `qwen2` or `qwen3`) into
//! an ordinary Hugging Face checkpoint directory
//! (`config.json`, `model.safetensors`, `tokenizer.json`, `tokenizer_config.json`,
//! `generation_config.json`) that the loader can mmap.
//!
//! # Weights
//! By default ([`ImportDType::Native`]) every tensor keeps the precision it has in the GGUF file:
//!
//! | GGUF type of a matrix | written as | |
//! |---|---|---|
//! | `Q8_0`, `Q4_0`, `Q4_1`, `Q5_0`, `Q5_1`, `IQ4_NL`, `Q2_K`, `Q3_K`, `Q4_K`, `Q5_K`, `Q6_K`, `IQ4_XS` | the same format (`q4_k`, …) | bit-exact: each ggml block's fields are moved into the `rowsplit` planes (`edgeinfer_kernels::quant::kquant`) |
//! | `F32`, `F16`, `BF16` | the same dtype, dense | lossless (`infer quantize` can quantize the result) |
//!
//! Other ggml types (`Q8_1`, `Q8_K`, the IQ1–IQ3 types, …) are refused by tensor name before
//! anything is written. 1-D tensors (the RMSNorm weights) are always written as F32. ggml blocks run
//! along a row, so a quantized GGUF matrix always has a row length that is a whole number of blocks.
//! The file is read by our own GGUF reader ([`gguf_file`]), which, unlike candle-core's, reads files
//! holding IQ4_NL and IQ4_XS tensors.
//!
//! With `--dtype f32|f16|bf16` every tensor is instead dequantized to that type, as before.
//!
//! llama.cpp's Q/K row permutation is undone in both cases, so the result uses the usual half-rotation
//! RoPE; a quantized block lies within one row, so whole rows of planes are moved and the blocks stay
//! bit-exact. The tokenizer is rebuilt from `tokenizer.ggml.*` metadata and checked by loading it with
//! the `tokenizers` crate before anything is published.
//!
//! Every file is first written under a `.partial` name inside the output directory and renamed only
//! once all of them are complete ([`crate::store::Staging`]); `config.json` is renamed last, so its
//! presence means the directory is whole.

mod config;
mod gguf;
pub mod gguf_file;
mod limits;
mod tokenizer_json;
mod weights;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use edgeinfer_kernels::quant::QLayout;

use crate::store::{Staging, WEIGHTS_FILE};
use config::{LlamaParams, SpecialIds};
use gguf::Gguf;
use tokenizer_json::Vocab;

/// Element type of the written `model.safetensors` (see the [module docs](self)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ImportDType {
    /// Quantized matrices stay quantized (bit-exact where the format is supported), dense ones keep
    /// their dtype, norms are F32.
    #[default]
    Native,
    F32,
    F16,
    Bf16,
}

impl ImportDType {
    /// The `torch_dtype` value in `config.json` (for `Native`, that of the dense tensors).
    pub fn torch_name(self) -> &'static str {
        match self {
            ImportDType::Native | ImportDType::F32 => "float32",
            ImportDType::F16 => "float16",
            ImportDType::Bf16 => "bfloat16",
        }
    }
}

impl fmt::Display for ImportDType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ImportDType::Native => "native",
            ImportDType::F32 => "f32",
            ImportDType::F16 => "f16",
            ImportDType::Bf16 => "bf16",
        })
    }
}

impl FromStr for ImportDType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "native" => Ok(ImportDType::Native),
            "f32" | "float32" => Ok(ImportDType::F32),
            "f16" | "float16" => Ok(ImportDType::F16),
            "bf16" | "bfloat16" => Ok(ImportDType::Bf16),
            other => Err(format!(
                "unknown dtype `{other}` (expected native, f32, f16 or bf16)"
            )),
        }
    }
}

/// How to import.
#[derive(Clone, Debug, Default)]
pub struct ImportOptions {
    /// Element type of the written weights (default: native).
    pub dtype: ImportDType,
    /// Layout of the q4_0, q4_1 and q8_0 matrices kept native (default `rowsplit`; `rows8` for ARM dotprod
    /// decode, where the shape fits it, see `edgeinfer_kernels::quant::rows8`).
    pub layout: QLayout,
}

/// Reported once per tensor, after the tensor has been converted and handed to the writer.
/// `index` counts from 0 in write order, so the last event has `index + 1 == total`.
#[derive(Clone, Debug)]
pub struct ImportProgress {
    pub index: usize,
    pub total: usize,
    /// The Hugging Face name of the tensor (`model.layers.3.self_attn.q_proj.weight`).
    pub name: String,
}

/// What an import wrote.
#[derive(Clone, Debug)]
pub struct ImportSummary {
    pub out_dir: PathBuf,
    pub dtype: ImportDType,
    pub tensors: usize,
    pub parameters: u64,
    /// Size of `model.safetensors` in bytes.
    pub weights_bytes: u64,
    /// Tensors per storage type written (`"q4_1"` → 180, `"F32"` → 61, …).
    pub types: BTreeMap<String, usize>,
    pub vocab_size: usize,
    pub tie_word_embeddings: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: not a readable GGUF file: {reason}", path.display())]
    Gguf { path: PathBuf, reason: String },
    #[error("{}: metadata `{key}`: {reason}", path.display())]
    Metadata {
        path: PathBuf,
        key: String,
        reason: String,
    },
    #[error("{}: architecture `{architecture}` is not supported (supported: llama, qwen2, qwen3)", path.display())]
    UnsupportedArchitecture { path: PathBuf, architecture: String },
    #[error("{}: tensor `{name}` is missing", path.display())]
    MissingTensor { path: PathBuf, name: String },
    #[error("{}: tensor `{name}` has no place in a checkpoint of this architecture (dropping it could change the model)", path.display())]
    UnexpectedTensor { path: PathBuf, name: String },
    #[error("{}: tensor `{name}`: expected shape {expected:?}, found {got:?}", path.display())]
    Shape {
        path: PathBuf,
        name: String,
        expected: Vec<usize>,
        got: Vec<usize>,
    },
    #[error("{}: tensor `{name}`: {reason}", path.display())]
    Tensor {
        path: PathBuf,
        name: String,
        reason: String,
    },
    #[error("the rebuilt tokenizer.json is unusable: {reason}")]
    TokenizerCheck { reason: String },
    #[error("{}: {source}", path.display())]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// Convert the GGUF file `gguf` into a Hugging Face Llama/Qwen2/Qwen3 checkpoint in `out_dir` (created if
/// needed; files already there with the same names are replaced). `progress` is called once per
/// tensor. On error, no file of the checkpoint is published and the `.partial` files are removed.
pub fn import_gguf(
    gguf: &Path,
    out_dir: &Path,
    opts: &ImportOptions,
    progress: &mut dyn FnMut(ImportProgress),
) -> Result<ImportSummary, ImportError> {
    let mut g = Gguf::open(gguf)?;
    let params = LlamaParams::read(&mut g)?;
    limits::check_dims(&g, &params.dims)?;
    let tied = g.shape("output.weight").is_none();
    let plan = gguf::plan(params.arch, &params.dims, tied);
    weights::check_plan(&g, &plan, &params.consumed)?;
    let planned = weights::plan_conversions(&g, &plan, opts.dtype, opts.layout);

    let vocab = Vocab::read(&g)?;
    if vocab.tokens.len() != params.dims.vocab {
        return Err(ImportError::Metadata {
            path: g.path.clone(),
            key: "tokenizer.ggml.tokens".into(),
            reason: format!(
                "{} tokens but the embedding has {} rows",
                vocab.tokens.len(),
                params.dims.vocab
            ),
        });
    }
    let tokenizer = tokenizer_json::tokenizer_json(&g, &vocab)?;
    let tokenizer_text = serde_json::to_string(&tokenizer).map_err(|source| ImportError::Json {
        path: out_dir.join("tokenizer.json"),
        source,
    })?;
    tokenizer_json::check_loads(&tokenizer_text, &vocab)?;
    let ids = SpecialIds {
        bos: vocab.bos,
        eos: vocab.eos,
        pad: vocab.pad,
    };
    let json_files = [
        (
            "tokenizer_config.json",
            tokenizer_json::tokenizer_config_json(&vocab, params.context_length),
        ),
        (
            "generation_config.json",
            config::generation_config_json(&ids),
        ),
        (
            "config.json",
            config::config_json(
                &params,
                &ids,
                tied,
                opts.dtype,
                weights::quantization_config(&planned),
            ),
        ),
    ];
    let vocab_size = vocab.tokens.len();
    drop(vocab);

    let mut staging = Staging::new(out_dir)?;
    staging.write("tokenizer.json", tokenizer_text.as_bytes())?;
    for (file, value) in &json_files {
        let text = serde_json::to_string_pretty(value).map_err(|source| ImportError::Json {
            path: out_dir.join(file),
            source,
        })?;
        staging.write(file, (text + "\n").as_bytes())?;
    }
    let weights_path = staging.stage(WEIGHTS_FILE);
    let written = weights::write_safetensors(g, &planned, &weights_path, progress)?;
    staging.publish()?;

    Ok(ImportSummary {
        out_dir: out_dir.to_path_buf(),
        dtype: opts.dtype,
        tensors: plan.len(),
        parameters: written.stats.parameters,
        weights_bytes: written.stats.bytes,
        types: written.stats.types,
        vocab_size,
        tie_word_embeddings: tied,
    })
}

#[cfg(test)]
mod tests;
