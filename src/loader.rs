//! Opens a Hugging Face model directory: maps every safetensors file, validates each header with the
//! `safetensors` crate and our own checks, and serves typed tensor views into the mappings. No weight
//! is copied; pages fault in on first use.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use edgeinfer_kernels::quant::{self, QFormat};
use edgeinfer_kernels::DType;
use edgeinfer_models::matrix::{self, Matrix, QTensor};
use edgeinfer_models::{ModelError, Storage, Tensor, TensorSource};
use memmap2::Mmap;
use safetensors::tensor::TensorInfo;
use safetensors::{Dtype, SafeTensors};
use serde::Deserialize;

use crate::error::{io, Error, Result};

pub const SINGLE_FILE: &str = "model.safetensors";
pub const INDEX_FILE: &str = "model.safetensors.index.json";

/// A tensor as the header describes it.
#[derive(Clone, Debug)]
pub struct TensorEntry {
    pub name: String,
    /// Index into [`Checkpoint::files`].
    pub file: usize,
    /// Dtype name as written in the header (e.g. "F32", "BF16", "I64").
    pub dtype: String,
    pub shape: Vec<usize>,
    /// Absolute byte range in the file.
    pub range: std::ops::Range<usize>,
}

/// One mapped safetensors file.
pub struct MappedFile {
    pub path: PathBuf,
    pub map: Arc<Mmap>,
    pub metadata: HashMap<String, String>,
}

/// All safetensors files of a model directory, mapped and validated.
pub struct Checkpoint {
    pub files: Vec<MappedFile>,
    pub tensors: HashMap<String, TensorEntry>,
}

impl Checkpoint {
    /// Maps `dir/model.safetensors`, or every shard listed in `dir/model.safetensors.index.json`.
    pub fn open(dir: &Path) -> Result<Checkpoint> {
        let paths = weight_files(dir)?;
        let mut files = Vec::with_capacity(paths.len());
        let mut tensors = HashMap::new();
        for (index, path) in paths.into_iter().enumerate() {
            let map = map_file(&path)?;
            let (entries, metadata) = read_header(&path, &map, index)?;
            for e in entries {
                if tensors.contains_key(&e.name) {
                    return Err(Error::TensorHeader {
                        path,
                        name: e.name,
                        reason: "appears in more than one file".into(),
                    });
                }
                tensors.insert(e.name.clone(), e);
            }
            files.push(MappedFile {
                path,
                map: Arc::new(map),
                metadata,
            });
        }
        Ok(Checkpoint { files, tensors })
    }

    /// Bytes of all mapped files.
    pub fn mapped_bytes(&self) -> usize {
        self.files.iter().map(|f| f.map.len()).sum()
    }

    /// The file that holds tensor `name`.
    pub fn file_of(&self, name: &str) -> Option<&Path> {
        self.tensors
            .get(name)
            .map(|e| self.files[e.file].path.as_path())
    }

    /// A tensor source whose errors name the file each tensor lives in.
    pub fn source(&self) -> CheckpointSource<'_> {
        CheckpointSource {
            ckpt: self,
            failed_in: std::cell::RefCell::new(None),
        }
    }
}

/// [`TensorSource`] over a [`Checkpoint`]; remembers the file of the last failing tensor so the
/// caller can name it.
pub struct CheckpointSource<'a> {
    ckpt: &'a Checkpoint,
    failed_in: std::cell::RefCell<Option<PathBuf>>,
}

impl CheckpointSource<'_> {
    /// The file of the tensor whose lookup failed last, if it exists in some file.
    pub fn failed_file(&self) -> Option<PathBuf> {
        self.failed_in.borrow().clone()
    }
}

impl TensorSource for CheckpointSource<'_> {
    fn tensor(&self, name: &str) -> std::result::Result<Tensor, ModelError> {
        let e = self
            .ckpt
            .tensors
            .get(name)
            .ok_or_else(|| ModelError::MissingTensor {
                name: name.to_string(),
            })?;
        let file = &self.ckpt.files[e.file];
        let fail = |err: ModelError| {
            *self.failed_in.borrow_mut() = Some(file.path.clone());
            err
        };
        let dtype = match e.dtype.as_str() {
            "F32" => DType::F32,
            "F16" => DType::F16,
            "BF16" => DType::BF16,
            other => {
                return Err(fail(ModelError::DType {
                    name: name.to_string(),
                    dtype: other.to_string(),
                }))
            }
        };
        let storage: Storage = file.map.clone();
        Tensor::new(name, dtype, e.shape.clone(), storage, e.range.clone()).map_err(fail)
    }

    fn matrix(&self, name: &str) -> std::result::Result<Matrix, ModelError> {
        let [qs_name, scales_name, mins_name] = matrix::plane_names(name);
        let Some(qs) = self.ckpt.tensors.get(&qs_name) else {
            // Not quantized: a dense tensor (or the missing-tensor error naming `name`).
            return self.tensor(name).map(Matrix::Dense);
        };
        let file = &self.ckpt.files[qs.file];
        *self.failed_in.borrow_mut() = Some(file.path.clone());
        let bad = |reason: String| ModelError::TensorData {
            name: name.to_string(),
            reason,
        };
        let meta = |key: &str| file.metadata.get(key).map(String::as_str);
        let (layout, version) = (meta(matrix::LAYOUT_KEY), meta(matrix::VERSION_KEY));
        let expected_version = quant::LAYOUT_VERSION.to_string();
        if layout != Some(quant::LAYOUT_NAME) || version != Some(expected_version.as_str()) {
            return Err(bad(format!(
                "quantized with layout {:?} version {:?}, but this build reads only `{}` version {}; re-quantize the model with `infer quantize`",
                layout.unwrap_or("(none)"),
                version.unwrap_or("(none)"),
                quant::LAYOUT_NAME,
                quant::LAYOUT_VERSION
            )));
        }
        let format_key = matrix::format_key(name);
        let format_name = meta(&format_key).ok_or_else(|| {
            bad(format!(
                "`__metadata__` has no `{format_key}` naming its format"
            ))
        })?;
        let format = QFormat::from_name(format_name).ok_or_else(|| {
            bad(format!(
                "unknown quantized format `{format_name}` (this build reads q8_0, q4_0, q4_1)"
            ))
        })?;
        let plane =
            |plane_name: &str, dtype: &str| -> std::result::Result<&TensorEntry, ModelError> {
                let e =
                    self.ckpt
                        .tensors
                        .get(plane_name)
                        .ok_or_else(|| ModelError::MissingTensor {
                            name: plane_name.to_string(),
                        })?;
                if e.file != qs.file {
                    return Err(bad(format!(
                        "`{plane_name}` is in another file than `{qs_name}`"
                    )));
                }
                if e.dtype != dtype || e.shape.len() != 2 {
                    return Err(bad(format!(
                        "`{plane_name}` is {} {:?}; a {} matrix needs a 2-D {dtype} tensor",
                        e.dtype,
                        e.shape,
                        format.name()
                    )));
                }
                Ok(e)
            };
        let qs_dtype = if format == QFormat::Q8_0 { "I8" } else { "U8" };
        let qs = plane(&qs_name, qs_dtype)?;
        let scales = plane(&scales_name, "F16")?;
        let mins = if format.has_min() {
            Some(plane(&mins_name, "F16")?)
        } else {
            None
        };
        let (rows, k) = (scales.shape[0], scales.shape[1].saturating_mul(quant::QK));
        let qs_cols = k / quant::QK * format.qs_bytes_per_block();
        if qs.shape != [rows, qs_cols] || mins.is_some_and(|m| m.shape != scales.shape) {
            return Err(bad(format!(
                "planes disagree: `{qs_name}` {:?}, `{scales_name}` {:?}; expected [{rows}, {qs_cols}] quants for {rows}×{k}",
                qs.shape, scales.shape
            )));
        }
        let storage: Storage = file.map.clone();
        let t = QTensor::new(
            name,
            format,
            rows,
            k,
            storage,
            qs.range.clone(),
            scales.range.clone(),
            mins.map(|m| m.range.clone()),
        )?;
        *self.failed_in.borrow_mut() = None;
        Ok(Matrix::Quant(t))
    }
}

/// The safetensors files of a model directory, in a stable order.
fn weight_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let meta = std::fs::metadata(dir).map_err(|e| Error::ModelDir {
        path: dir.to_path_buf(),
        reason: describe_missing(e),
    })?;
    if !meta.is_dir() {
        return Err(Error::ModelDir {
            path: dir.to_path_buf(),
            reason: "is not a directory".into(),
        });
    }
    let single = dir.join(SINGLE_FILE);
    if single.is_file() {
        return Ok(vec![single]);
    }
    let index = dir.join(INDEX_FILE);
    if !index.is_file() {
        return Err(Error::ModelDir {
            path: dir.to_path_buf(),
            reason: format!("has neither {SINGLE_FILE} nor {INDEX_FILE}"),
        });
    }
    let text = std::fs::read_to_string(&index).map_err(io(&index))?;
    let bad = |reason: String| Error::Safetensors {
        path: index.clone(),
        reason,
    };
    let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    let map = json
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| bad("no `weight_map` object".into()))?;
    let mut names: Vec<&str> = Vec::new();
    for (tensor, file) in map {
        let file = file
            .as_str()
            .ok_or_else(|| bad(format!("weight_map[{tensor}] is not a file name")))?;
        // Shards must be plain names inside the model directory.
        if file.is_empty() || file.contains('/') || file.contains('\\') || file.starts_with('.') {
            return Err(bad(format!(
                "weight_map[{tensor}] = {file:?} is not a file in the model directory"
            )));
        }
        if !names.contains(&file) {
            names.push(file);
        }
    }
    names.sort_unstable();
    if names.is_empty() {
        return Err(bad("weight_map is empty".into()));
    }
    Ok(names.into_iter().map(|n| dir.join(n)).collect())
}

fn describe_missing(e: std::io::Error) -> String {
    if e.kind() == std::io::ErrorKind::NotFound {
        "does not exist (fetch the default model with `scripts/fetch-model.sh`, or pass -m DIR)"
            .into()
    } else {
        e.to_string()
    }
}

/// Maps a file read-only.
#[allow(unsafe_code)]
fn map_file(path: &Path) -> Result<Mmap> {
    let file = File::open(path).map_err(io(path))?;
    let len = file.metadata().map_err(io(path))?.len();
    if len < 8 {
        return Err(Error::Safetensors {
            path: path.to_path_buf(),
            reason: format!("file is {len} bytes, shorter than the 8-byte header length"),
        });
    }
    // SAFETY: the map is read-only and private to this process. Its contents may change only if
    // another process rewrites the file while we run; we never write through it.
    unsafe { Mmap::map(&file) }.map_err(io(path))
}

/// Headers larger than this are refused before parsing (the `safetensors` crate's own limit).
const MAX_HEADER_LEN: usize = 100_000_000;

/// Parses and checks one header; returns its tensors (with absolute ranges) and `__metadata__`.
///
/// Our checks run first so that an error names the tensor at fault (the crate reports a truncated
/// file or a stray offset only as "file not fully covered"); the crate's validation (contiguous data
/// covering the file exactly) then runs as a second opinion.
fn read_header(
    path: &Path,
    map: &[u8],
    file: usize,
) -> Result<(Vec<TensorEntry>, HashMap<String, String>)> {
    let bad = |reason: String| Error::Safetensors {
        path: path.to_path_buf(),
        reason,
    };
    let len_bytes: [u8; 8] = map
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| bad("shorter than the 8-byte header length".into()))?;
    let header_len = u64::from_le_bytes(len_bytes);
    let data_start = usize::try_from(header_len)
        .ok()
        .filter(|&n| n <= MAX_HEADER_LEN)
        .and_then(|n| n.checked_add(8))
        .filter(|&end| end <= map.len())
        .ok_or_else(|| bad(format!("header length {header_len} runs past the end of the {}-byte file (truncated or not safetensors?)", map.len())))?;
    let data_len = map.len() - data_start;
    let header = std::str::from_utf8(&map[8..data_start])
        .map_err(|e| bad(format!("header is not UTF-8: {e}")))?;
    let json: serde_json::Map<String, serde_json::Value> = serde_json::from_str(header)
        .map_err(|e| bad(format!("header is not a JSON object: {e}")))?;
    let mut infos = Vec::with_capacity(json.len());
    for (name, value) in &json {
        if name == "__metadata__" {
            continue;
        }
        let info = TensorInfo::deserialize(value).map_err(|e| Error::TensorHeader {
            path: path.to_path_buf(),
            name: name.clone(),
            reason: format!("invalid entry: {e}"),
        })?;
        infos.push((name.clone(), info));
    }
    // In file order, so that a truncated file is reported at the first tensor it cuts.
    infos.sort_by_key(|(name, info)| (info.data_offsets, name.clone()));
    let mut entries = Vec::with_capacity(infos.len());
    for (name, info) in infos {
        let (start, end) = info.data_offsets;
        let tensor_err = |reason: String| Error::TensorHeader {
            path: path.to_path_buf(),
            name: name.clone(),
            reason,
        };
        if start > end || end > data_len {
            return Err(tensor_err(format!("data offsets {start}..{end} lie outside the {data_len} data bytes (is the file truncated?)")));
        }
        let elems = info
            .shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .ok_or_else(|| tensor_err("shape overflows".into()))?;
        let bits = elems
            .checked_mul(info.dtype.bitsize())
            .ok_or_else(|| tensor_err("shape overflows".into()))?;
        let bytes = bits.div_ceil(8);
        if bytes != end - start {
            return Err(tensor_err(format!(
                "shape {:?} of {:?} needs {bytes} bytes but offsets give {}",
                info.shape,
                info.dtype,
                end - start
            )));
        }
        entries.push(TensorEntry {
            name,
            file,
            dtype: dtype_name(info.dtype),
            shape: info.shape,
            range: data_start + start..data_start + end,
        });
    }
    // Entries are sorted by start, so an overlap shows up between neighbours.
    for w in entries.windows(2) {
        if w[1].range.start < w[0].range.end {
            return Err(Error::TensorHeader {
                path: path.to_path_buf(),
                name: w[1].name.clone(),
                reason: format!("data overlaps tensor `{}`", w[0].name),
            });
        }
    }
    let (_, meta) = SafeTensors::read_metadata(map).map_err(|e| bad(e.to_string()))?;
    Ok((entries, meta.metadata().clone().unwrap_or_default()))
}

fn dtype_name(d: Dtype) -> String {
    match d {
        Dtype::F32 => "F32".into(),
        Dtype::F16 => "F16".into(),
        Dtype::BF16 => "BF16".into(),
        other => format!("{other:?}"),
    }
}
