//! GGUF import: turn a llama.cpp GGUF file into an ordinary Hugging Face Llama checkpoint directory
//! (`config.json`, `model.safetensors`, `tokenizer.json`, `tokenizer_config.json`,
//! `generation_config.json`) that the loader can mmap.
//!
//! Weights are dequantized (to F32 by default) with llama.cpp's Q/K row permutation undone, so the
//! result uses the usual half-rotation RoPE. The tokenizer is rebuilt from `tokenizer.ggml.*`
//! metadata and checked by loading it with the `tokenizers` crate before anything is published.
//!
//! Every file is first written under a `.partial` name inside the output directory and renamed only
//! once all of them are complete; `config.json` is renamed last, so its presence means the
//! directory is whole.

mod config;
mod gguf;
mod tokenizer_json;
mod weights;

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use config::{LlamaParams, SpecialIds};
use gguf::Gguf;
use tokenizer_json::Vocab;

/// Element type of the written `model.safetensors`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ImportDType {
    #[default]
    F32,
    F16,
    Bf16,
}

impl ImportDType {
    /// The `torch_dtype` value in `config.json`.
    pub fn torch_name(self) -> &'static str {
        match self {
            ImportDType::F32 => "float32",
            ImportDType::F16 => "float16",
            ImportDType::Bf16 => "bfloat16",
        }
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            ImportDType::F32 => 4,
            ImportDType::F16 | ImportDType::Bf16 => 2,
        }
    }
}

impl fmt::Display for ImportDType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
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
            "f32" | "float32" => Ok(ImportDType::F32),
            "f16" | "float16" => Ok(ImportDType::F16),
            "bf16" | "bfloat16" => Ok(ImportDType::Bf16),
            other => Err(format!(
                "unknown dtype `{other}` (expected f32, f16 or bf16)"
            )),
        }
    }
}

/// How to import.
#[derive(Clone, Debug, Default)]
pub struct ImportOptions {
    /// Element type of the written weights (default F32).
    pub dtype: ImportDType,
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
    #[error("{}: not a readable GGUF file: {source}", path.display())]
    Gguf {
        path: PathBuf,
        source: Box<candle_core::Error>,
    },
    #[error("{}: metadata `{key}`: {reason}", path.display())]
    Metadata {
        path: PathBuf,
        key: String,
        reason: String,
    },
    #[error("{}: architecture `{architecture}` is not supported (only `llama`)", path.display())]
    UnsupportedArchitecture { path: PathBuf, architecture: String },
    #[error("{}: tensor `{name}` is missing", path.display())]
    MissingTensor { path: PathBuf, name: String },
    #[error("{}: tensor `{name}` has no place in a Llama checkpoint (dropping it could change the model)", path.display())]
    UnexpectedTensor { path: PathBuf, name: String },
    #[error("{}: tensor `{name}`: expected shape {expected:?}, found {got:?}", path.display())]
    Shape {
        path: PathBuf,
        name: String,
        expected: Vec<usize>,
        got: Vec<usize>,
    },
    #[error("{}: tensor `{name}`: {source}", path.display())]
    Tensor {
        path: PathBuf,
        name: String,
        source: Box<candle_core::Error>,
    },
    #[error("the rebuilt tokenizer.json is unusable: {reason}")]
    TokenizerCheck { reason: String },
    #[error("{}: {source}", path.display())]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{}: {source}", path.display())]
    Safetensors {
        path: PathBuf,
        source: safetensors::SafeTensorError,
    },
    #[error("{}: tensor `{name}` data starts at byte {offset}, which is not 8-byte aligned", path.display())]
    Misaligned {
        path: PathBuf,
        name: String,
        offset: u64,
    },
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ImportError + '_ {
    move |source| ImportError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The files of a checkpoint directory, in the order they are published (`config.json` last).
const FILES: [&str; 5] = [
    "tokenizer.json",
    "tokenizer_config.json",
    "generation_config.json",
    "model.safetensors",
    "config.json",
];

fn partial_name(dir: &Path, file: &str) -> PathBuf {
    dir.join(format!("{file}.partial"))
}

/// Convert the GGUF file `gguf` into a Hugging Face Llama checkpoint in `out_dir` (created if
/// needed; files already there with the same names are replaced). `progress` is called once per
/// tensor. On error, no file of the checkpoint is published and the `.partial` files are removed.
pub fn import_gguf(
    gguf: &Path,
    out_dir: &Path,
    opts: &ImportOptions,
    progress: &mut dyn FnMut(ImportProgress),
) -> Result<ImportSummary, ImportError> {
    let g = Gguf::open(gguf)?;
    let params = LlamaParams::read(&g)?;
    let tied = g.shape("output.weight").is_none();
    let plan = gguf::llama_plan(&params.dims, tied);
    weights::check_plan(&g, &plan)?;

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
            config::config_json(&params, &ids, tied, opts.dtype),
        ),
    ];
    let vocab_size = vocab.tokens.len();
    drop(vocab);

    fs::create_dir_all(out_dir).map_err(io_err(out_dir))?;
    let result = (|| {
        let path = partial_name(out_dir, "tokenizer.json");
        fs::write(&path, tokenizer_text).map_err(io_err(&path))?;
        for (file, value) in &json_files {
            let path = partial_name(out_dir, file);
            let text = serde_json::to_string_pretty(value).map_err(|source| ImportError::Json {
                path: path.clone(),
                source,
            })?;
            fs::write(&path, text + "\n").map_err(io_err(&path))?;
        }
        let weights_path = partial_name(out_dir, "model.safetensors");
        let stats = weights::write_safetensors(g, &plan, opts.dtype, &weights_path, progress)?;
        for file in FILES {
            let (from, to) = (partial_name(out_dir, file), out_dir.join(file));
            fs::rename(&from, &to).map_err(io_err(&to))?;
        }
        Ok(stats)
    })();
    let stats = result.inspect_err(|_| {
        for file in FILES {
            let _ = fs::remove_file(partial_name(out_dir, file));
        }
    })?;

    Ok(ImportSummary {
        out_dir: out_dir.to_path_buf(),
        dtype: opts.dtype,
        tensors: plan.len(),
        parameters: stats.parameters,
        weights_bytes: stats.bytes,
        vocab_size,
        tie_word_embeddings: tied,
    })
}

#[cfg(test)]
mod tests;
