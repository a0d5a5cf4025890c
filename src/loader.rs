//! Opens a Hugging Face model directory: maps every safetensors file, validates each header with the
//! `safetensors` crate and our own checks, and serves typed tensor views into the mappings. No weight
//! is copied; pages fault in on first use.
//!
//! # Files that change under a mapping
//! A mapped file that another process truncates makes every later read of the cut pages raise
//! SIGBUS, which kills the process; no mapping flag prevents it (truncation unmaps the cut pages
//! from every mapping, private copies included, so `MAP_PRIVATE`, `MAP_POPULATE` or `mlock` do not
//! help), and advisory locks do not stop `ftruncate`. The defences, by how far a file is trusted:
//!
//! - [`WeightsAccess::Map`] (default) — the contract: a model file is replaced by writing a new file
//!   and renaming it over the old one (what `infer import` and `infer quantize` do), never rewritten
//!   in place. A replaced file is harmless: the mapping keeps the old inode. [`Checkpoint::verify`]
//!   (called when a session opens and before each request) compares each mapped file's size and
//!   modification time with those at load and turns a violation into [`Error::WeightsChanged`]
//!   instead of a crash — unless the file changes *during* a request, which only copying prevents.
//! - [`WeightsAccess::Copy`] — for files the process does not control: read every file into
//!   memory at load (8-byte aligned). Costs the file size in RAM and a read instead of a map; later
//!   changes to the file cannot reach the model.

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use edgeinfer_kernels::quant::{self, QFormat, QLayout};
use edgeinfer_kernels::DType;
use edgeinfer_models::matrix::{self, Matrix, QTensor};
use edgeinfer_models::{Config, Llama, ModelError, Storage, Tensor, TensorSource};
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

/// How weight files are brought into memory; see the [module docs](self).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WeightsAccess {
    /// Map the files read-only (O(header) load; the files must not be rewritten in place).
    #[default]
    Map,
    /// Read the files into memory (for paths other processes may truncate or rewrite).
    Copy,
}

impl WeightsAccess {
    /// `$EDGEINFER_WEIGHTS` (`map` or `copy`), else `Map`.
    pub fn from_env() -> Result<WeightsAccess> {
        match std::env::var("EDGEINFER_WEIGHTS") {
            Err(_) => Ok(WeightsAccess::Map),
            Ok(v) => match v.as_str() {
                "" | "map" => Ok(WeightsAccess::Map),
                "copy" => Ok(WeightsAccess::Copy),
                other => Err(Error::Options {
                    field: "EDGEINFER_WEIGHTS",
                    reason: format!("`{other}` is neither `map` nor `copy`"),
                }),
            },
        }
    }
}

/// One safetensors file, mapped or read into memory.
pub struct MappedFile {
    pub path: PathBuf,
    pub map: Storage,
    pub metadata: HashMap<String, String>,
    /// The open file and its size and modification time when mapped; `None` when copied.
    mapped: Option<(File, Identity)>,
}

/// A file's path, bytes, and (when mapped) the open file with its identity at load.
type Loaded = (PathBuf, Storage, Option<(File, Identity)>);

/// What must not change in a mapped file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Identity {
    len: u64,
    mtime: Option<std::time::SystemTime>,
}

impl Identity {
    fn of(file: &File) -> std::io::Result<Identity> {
        let meta = file.metadata()?;
        Ok(Identity {
            len: meta.len(),
            mtime: meta.modified().ok(),
        })
    }
}

/// File bytes read into 8-byte aligned memory, so tensors can be cast in place as from a mapping.
struct HeapBytes {
    words: Vec<u64>,
    len: usize,
}

impl AsRef<[u8]> for HeapBytes {
    fn as_ref(&self) -> &[u8] {
        &bytemuck::cast_slice(&self.words)[..self.len]
    }
}

impl HeapBytes {
    fn from_slice(bytes: &[u8]) -> HeapBytes {
        let mut words = vec![0u64; bytes.len().div_ceil(8)];
        bytemuck::cast_slice_mut(&mut words)[..bytes.len()].copy_from_slice(bytes);
        HeapBytes {
            words,
            len: bytes.len(),
        }
    }
}

/// A tensor with NaN or infinite values ([`Checkpoint::non_finite`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NonFinite {
    pub name: String,
    pub nan: usize,
    pub inf: usize,
    /// Index (in elements) of the first non-finite value.
    pub first: Option<usize>,
}

impl NonFinite {
    fn count(&mut self, values: impl Iterator<Item = f64>) {
        for (i, v) in values.enumerate() {
            if v.is_finite() {
                continue;
            }
            if v.is_nan() {
                self.nan += 1;
            } else {
                self.inf += 1;
            }
            self.first.get_or_insert(i);
        }
    }
}

/// All safetensors files of a model directory, mapped and validated.
pub struct Checkpoint {
    pub files: Vec<MappedFile>,
    pub tensors: HashMap<String, TensorEntry>,
}

impl Checkpoint {
    /// Maps `dir/model.safetensors`, or every shard listed in `dir/model.safetensors.index.json`.
    pub fn open(dir: &Path) -> Result<Checkpoint> {
        Checkpoint::open_with(dir, WeightsAccess::Map)
    }

    /// As [`Checkpoint::open`], mapping or copying the files as `access` says.
    pub fn open_with(dir: &Path, access: WeightsAccess) -> Result<Checkpoint> {
        let paths = weight_files(dir)?;
        let mut loaded = Vec::with_capacity(paths.len());
        for path in paths {
            let (map, mapped) = match access {
                WeightsAccess::Map => {
                    let (map, file, id) = map_file(&path)?;
                    (Arc::new(map) as Storage, Some((file, id)))
                }
                WeightsAccess::Copy => (Arc::new(read_file(&path)?) as Storage, None),
            };
            loaded.push((path, map, mapped));
        }
        Checkpoint::from_storage(loaded)
    }

    /// A checkpoint from files already in memory (`(name, bytes)`), validated as [`Checkpoint::open`]
    /// validates files on disk: for tests, fuzzing and weights embedded in a binary.
    pub fn from_bytes(files: Vec<(PathBuf, Vec<u8>)>) -> Result<Checkpoint> {
        Checkpoint::from_storage(
            files
                .into_iter()
                .map(|(path, bytes)| {
                    let storage: Storage = Arc::new(HeapBytes::from_slice(&bytes));
                    (path, storage, None)
                })
                .collect(),
        )
    }

    fn from_storage(loaded: Vec<Loaded>) -> Result<Checkpoint> {
        let mut files = Vec::with_capacity(loaded.len());
        let mut tensors = HashMap::new();
        for (index, (path, map, mapped)) in loaded.into_iter().enumerate() {
            let (entries, metadata) = read_header(&path, (*map).as_ref(), index)?;
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
                map,
                metadata,
                mapped,
            });
        }
        Ok(Checkpoint { files, tensors })
    }

    /// Checks that no mapped file was truncated, extended or rewritten in place since it was mapped
    /// (size and modification time of the open file); see the [module docs](self). Costs one
    /// `fstat` per file. Copied files always pass.
    pub fn verify(&self) -> Result<()> {
        for f in &self.files {
            let Some((file, at_load)) = &f.mapped else {
                continue;
            };
            let now = Identity::of(file).map_err(io(&f.path))?;
            if now != *at_load {
                let reason = if now.len != at_load.len {
                    format!(
                        "was {} bytes when mapped and is {} bytes now",
                        at_load.len, now.len
                    )
                } else {
                    "was modified in place after it was mapped".to_string()
                };
                return Err(Error::WeightsChanged {
                    path: f.path.clone(),
                    reason,
                });
            }
        }
        Ok(())
    }

    /// Tensors (quantized planes' scales and minimums included) that hold NaN or infinite values,
    /// by name. Reads every F32/F16/BF16/F64 byte of the files (`infer inspect --check`).
    pub fn non_finite(&self) -> Result<Vec<NonFinite>> {
        self.verify()?;
        let mut entries: Vec<&TensorEntry> = self.tensors.values().collect();
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        let mut out = Vec::new();
        for e in entries {
            let bytes = &(*self.files[e.file].map).as_ref()[e.range.clone()];
            let mut found = NonFinite {
                name: e.name.clone(),
                nan: 0,
                inf: 0,
                first: None,
            };
            match e.dtype.as_str() {
                "F32" => found.count(bytes.chunks_exact(4).map(|c| {
                    <[u8; 4]>::try_from(c).map_or(0.0, |b| f64::from(f32::from_le_bytes(b)))
                })),
                "F64" => found.count(
                    bytes
                        .chunks_exact(8)
                        .map(|c| <[u8; 8]>::try_from(c).map_or(0.0, f64::from_le_bytes)),
                ),
                "F16" => found.count(bytes.chunks_exact(2).map(|c| {
                    <[u8; 2]>::try_from(c).map_or(0.0, |b| half::f16::from_le_bytes(b).to_f64())
                })),
                "BF16" => found.count(bytes.chunks_exact(2).map(|c| {
                    <[u8; 2]>::try_from(c).map_or(0.0, |b| half::bf16::from_le_bytes(b).to_f64())
                })),
                _ => continue,
            }
            if found.first.is_some() {
                out.push(found);
            }
        }
        Ok(out)
    }

    /// Bytes of all mapped (or copied) files.
    pub fn mapped_bytes(&self) -> usize {
        self.files.iter().map(|f| (*f.map).as_ref().len()).sum()
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
        let version_num = version.and_then(|v| v.parse::<u32>().ok());
        if layout != Some(quant::LAYOUT_NAME)
            || !version_num.is_some_and(|v| (1..=quant::LAYOUT_VERSION).contains(&v))
        {
            return Err(bad(format!(
                "quantized with layout {:?} version {:?}, but this build reads only `{}` versions 1 to {}; re-quantize the model with `infer quantize` (or re-import its GGUF with `infer import`)",
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
                "unknown quantized format `{format_name}` (this build reads {})",
                QFormat::ALL.map(QFormat::name).join(", ")
            ))
        })?;
        let layout_key = matrix::layout_key(name);
        let matrix_layout = match meta(&layout_key) {
            None => QLayout::RowSplit,
            Some(l) => QLayout::from_name(l)
                .filter(|l| l.version() <= version_num.unwrap_or(1))
                .ok_or_else(|| {
                    bad(format!(
                        "`{layout_key}` = `{l}` is not a layout of a version {} file (rowsplit; rows8 from version 2)",
                        version.unwrap_or("(none)")
                    ))
                })?,
        };
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
        let aux_plane = matrix::aux_name(name);
        let aux = if format.aux_bytes_per_block() > 0 {
            Some(plane(&aux_plane, "U8")?)
        } else {
            None
        };
        let (rows, nb) = (scales.shape[0], scales.shape[1]);
        let k = nb.saturating_mul(format.block_elems());
        let qs_cols = nb.saturating_mul(format.qs_bytes_per_block());
        let aux_cols = nb.saturating_mul(format.aux_bytes_per_block());
        if qs.shape != [rows, qs_cols] || mins.is_some_and(|m| m.shape != scales.shape) {
            return Err(bad(format!(
                "planes disagree: `{qs_name}` {:?}, `{scales_name}` {:?}; expected [{rows}, {qs_cols}] quants for {rows}×{k}",
                qs.shape, scales.shape
            )));
        }
        if let Some(a) = aux.filter(|a| a.shape != [rows, aux_cols]) {
            return Err(bad(format!(
                "planes disagree: `{aux_plane}` {:?}, `{scales_name}` {:?}; expected [{rows}, {aux_cols}] bytes for {rows}×{k}",
                a.shape, scales.shape
            )));
        }
        let storage: Storage = file.map.clone();
        let t = QTensor::new(
            name,
            format,
            matrix_layout,
            rows,
            k,
            storage,
            qs.range.clone(),
            aux.map_or(0..0, |a| a.range.clone()),
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

fn too_short(path: &Path, len: u64) -> Error {
    Error::Safetensors {
        path: path.to_path_buf(),
        reason: format!("file is {len} bytes, shorter than the 8-byte header length"),
    }
}

/// Maps a file read-only; returns the open file and its identity for [`Checkpoint::verify`].
#[allow(unsafe_code)]
fn map_file(path: &Path) -> Result<(Mmap, File, Identity)> {
    let file = File::open(path).map_err(io(path))?;
    let id = Identity::of(&file).map_err(io(path))?;
    if id.len < 8 {
        return Err(too_short(path, id.len));
    }
    let len = usize::try_from(id.len).map_err(|_| Error::Safetensors {
        path: path.to_path_buf(),
        reason: format!("file is {} bytes, more than this machine can map", id.len),
    })?;
    // SAFETY: the map is read-only and we never write through it. Its contents may change only if
    // another process rewrites the file in place, which the loading contract forbids (module docs);
    // `Checkpoint::verify` reports a violation between requests, and `WeightsAccess::Copy` avoids
    // the mapping altogether.
    let map = unsafe { memmap2::MmapOptions::new().len(len).map(&file) }.map_err(io(path))?;
    Ok((map, file, id))
}

/// Reads a file into aligned memory; a file that changes size while it is read is an error.
fn read_file(path: &Path) -> Result<HeapBytes> {
    let mut file = File::open(path).map_err(io(path))?;
    let len = file.metadata().map_err(io(path))?.len();
    if len < 8 {
        return Err(too_short(path, len));
    }
    let len = usize::try_from(len).map_err(|_| Error::Safetensors {
        path: path.to_path_buf(),
        reason: format!("file is {len} bytes, more than this machine can address"),
    })?;
    let mut words = Vec::new();
    words
        .try_reserve_exact(len.div_ceil(8))
        .map_err(|_| Error::Safetensors {
            path: path.to_path_buf(),
            reason: format!("cannot allocate {len} bytes to copy the file"),
        })?;
    words.resize(len.div_ceil(8), 0u64);
    let buf = &mut bytemuck::cast_slice_mut::<u64, u8>(&mut words)[..len];
    file.read_exact(buf).map_err(io(path))?;
    let mut probe = [0u8; 1];
    if file.read(&mut probe).map_err(io(path))? != 0 {
        return Err(Error::WeightsChanged {
            path: path.to_path_buf(),
            reason: "grew while it was read".into(),
        });
    }
    Ok(HeapBytes { words, len })
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

/// Validates a checkpoint held in memory — `config.json` text and safetensors files as
/// `(name, bytes)` — with every check [`crate::Model::load`] makes on weights: headers, offsets,
/// dtypes, shapes against the config, quantized layouts. For fuzzing and tests; nothing is mapped.
pub fn validate_in_memory(config_json: &str, files: Vec<(PathBuf, Vec<u8>)>) -> Result<Llama> {
    let ckpt = Checkpoint::from_bytes(files)?;
    let config = Config::from_json(config_json).map_err(|source| Error::Config {
        path: PathBuf::from("config.json"),
        source,
    })?;
    let source = ckpt.source();
    Llama::load(config, &source).map_err(|e| Error::Model {
        path: source.failed_file().unwrap_or_default(),
        source: e,
    })
}
