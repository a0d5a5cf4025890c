//! Writing checkpoint directories: a `model.safetensors` holding dense tensors and block-quantized
//! matrices (the planes and `__metadata__` keys of `edgeinfer_models::matrix`), and the publishing of
//! a directory's files so that nobody ever sees a half-written model.
//!
//! # The safetensors file
//! The whole header is laid out before any data is produced (every shape is known up front), then each
//! tensor's bytes are asked for once, in the caller's order, and written at their place in the file:
//! peak memory is one tensor (one matrix's planes), not the model.
//!
//! **Alignment.** The loader maps the file and casts tensor bytes in place, so each tensor must start at
//! a file offset that is a multiple of its element size (4 for F32, 2 for F16 scales), and quant planes
//! are best on cache-line (64-byte) boundaries: the AVX-512 kernels read 64 bytes at a time, and a
//! plane that starts mid-line makes every such load touch two lines (1-thread q4_0 decode of
//! SmolLM2-135M was ~10% slower with its planes at 56 mod 64). The mapping itself starts on a page.
//! safetensors requires the data of consecutive tensors to be contiguous (no padding between them),
//! so alignment comes from the order: tensors whose byte length is a multiple of 64 come first (in the
//! caller's order), then multiples of 8, then the others by decreasing element size. The header is
//! padded with spaces so that data starts 64-byte aligned. Hence every tensor starts at a multiple of
//! its element size, and every tensor of the first group — in practice all of them, since real models'
//! dimensions are multiples of 32 — at a multiple of 64. [`write_model`] checks the element alignment
//! before writing anything.
//!
//! # Publishing a directory
//! [`Staging`] writes every file under a `.partial` name inside the output directory and renames them
//! only once all are complete; `config.json` goes last (and an old one is removed first), so its
//! presence means the directory is whole. Dropping a `Staging` that was not published removes the
//! `.partial` files, and the directory too if it created it and it is empty.

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use edgeinfer_kernels::quant::{rows8, QFormat, QLayout, LAYOUT_NAME, LAYOUT_VERSION, QK};
use edgeinfer_models::matrix::{
    aux_name, format_key, layout_key, plane_names, LAYOUT_KEY, VERSION_KEY,
};
use half::f16;
use safetensors::Dtype;

/// The weights file of a checkpoint directory.
pub const WEIGHTS_FILE: &str = "model.safetensors";

/// An error while laying out or writing a checkpoint.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The plan or the bytes handed in for a tensor are inconsistent (a bug in the caller).
    #[error("{}: tensor `{name}`: {reason}", path.display())]
    Tensor {
        path: PathBuf,
        name: String,
        reason: String,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// How one planned entry is stored.
#[derive(Clone, Debug, PartialEq)]
pub enum StoredAs {
    /// An ordinary tensor of `dtype` (little-endian elements, row-major).
    Dense { dtype: Dtype, shape: Vec<usize> },
    /// A `[rows, k]` matrix in `format`, stored as the `.qs`/`.scales`/`.mins` planes in `layout`
    /// (the producer hands over `rowsplit` planes; the writer reorders them for `rows8`).
    Quant {
        format: QFormat,
        rows: usize,
        k: usize,
        layout: QLayout,
    },
}

/// One weight to write: its name (for a quantized matrix, the name its planes derive from) and storage.
#[derive(Clone, Debug)]
pub struct Entry {
    pub name: String,
    pub stored: StoredAs,
}

impl Entry {
    /// Elements (parameters) the entry holds.
    pub fn elements(&self) -> usize {
        match &self.stored {
            StoredAs::Dense { shape, .. } => shape.iter().product(),
            StoredAs::Quant { rows, k, .. } => rows * k,
        }
    }

    /// Storage type for summaries: `F32`, `F16`, `BF16`, … or `q8_0`, `q4_0`, `q4_1`.
    pub fn type_name(&self) -> String {
        match &self.stored {
            StoredAs::Dense { dtype, .. } => format!("{dtype:?}"),
            StoredAs::Quant { format, .. } => format.name().to_string(),
        }
    }
}

/// The bytes of one entry, as the producer hands them to [`write_model`].
pub enum Data {
    /// Little-endian elements, `shape × dtype size` bytes.
    Dense(Vec<u8>),
    /// The `rowsplit` planes (`m` empty unless the format has minimums, `aux` unless it has an
    /// `aux` plane).
    Quant(QPlanes),
}

/// A quantized matrix's planes in the `rowsplit` layout (see `edgeinfer_kernels::quant::format`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct QPlanes {
    pub qs: Vec<u8>,
    pub d: Vec<f16>,
    pub m: Vec<f16>,
    /// High bits or packed sub-block scales of the GGUF formats (`edgeinfer_kernels::quant::kquant`).
    pub aux: Vec<u8>,
}

/// What [`write_model`] wrote.
#[derive(Clone, Debug)]
pub struct WriteStats {
    /// Size of the file in bytes.
    pub bytes: u64,
    pub parameters: u64,
    /// Entries per storage type (`"q4_1"` → 180, `"F32"` → 61, …).
    pub types: BTreeMap<String, usize>,
}

/// One safetensors tensor of the file (a dense entry, or one plane of a quantized one).
struct Slot {
    tensor: String,
    dtype: Dtype,
    shape: Vec<usize>,
    /// Index of the entry it belongs to.
    entry: usize,
    /// Which part of the entry: 0 for dense / `qs`, 1 for scales, 2 for mins, 3 for aux.
    part: usize,
    len: usize,
    /// Offset from the start of the data section, once laid out.
    offset: usize,
}

fn slots(entries: &[Entry], path: &Path) -> Result<Vec<Slot>, StoreError> {
    let mut out = Vec::new();
    let mut names = HashSet::new();
    for (i, e) in entries.iter().enumerate() {
        let bad = |reason: String| StoreError::Tensor {
            path: path.to_path_buf(),
            name: e.name.clone(),
            reason,
        };
        let mut push = |tensor: String, dtype: Dtype, shape: Vec<usize>, part| {
            let len = shape
                .iter()
                .try_fold(dtype.bitsize() / 8, |a, &d| a.checked_mul(d))
                .ok_or_else(|| bad(format!("shape {shape:?} overflows")))?;
            if !names.insert(tensor.clone()) {
                return Err(bad(format!("`{tensor}` is written twice")));
            }
            out.push(Slot {
                tensor,
                dtype,
                shape,
                entry: i,
                part,
                len,
                offset: 0,
            });
            Ok(())
        };
        match &e.stored {
            StoredAs::Dense { dtype, shape } => {
                if dtype.bitsize() % 8 != 0 {
                    return Err(bad(format!("{dtype:?} is not a whole number of bytes")));
                }
                push(e.name.clone(), *dtype, shape.clone(), 0)?
            }
            &StoredAs::Quant {
                format,
                rows,
                k,
                layout,
            } => {
                let block = format.block_elems();
                if k == 0 || !k.is_multiple_of(block) || rows == 0 {
                    return Err(bad(format!(
                        "[{rows}, {k}] cannot be stored as {format}: k must be a positive multiple of {block}"
                    )));
                }
                if !layout.fits(format, rows, k) {
                    return Err(bad(format!(
                        "[{rows}, {k}] {format} cannot be stored in the {layout} layout"
                    )));
                }
                let [qs, scales, mins] = plane_names(&e.name);
                let qs_dtype = if format == QFormat::Q8_0 {
                    Dtype::I8
                } else {
                    Dtype::U8
                };
                let nb = k / block;
                push(
                    qs,
                    qs_dtype,
                    vec![rows, nb * format.qs_bytes_per_block()],
                    0,
                )?;
                push(scales, Dtype::F16, vec![rows, nb], 1)?;
                if format.has_min() {
                    push(mins, Dtype::F16, vec![rows, nb], 2)?;
                }
                if format.aux_bytes_per_block() > 0 {
                    push(
                        aux_name(&e.name),
                        Dtype::U8,
                        vec![rows, nb * format.aux_bytes_per_block()],
                        3,
                    )?;
                }
            }
        }
    }
    Ok(out)
}

/// Where the data section starts, and the boundary the first tensors keep: a cache line.
const DATA_ALIGN: usize = 64;

/// Orders the slots so that each starts aligned (see the module docs) and assigns offsets.
fn lay_out(slots: &mut [Slot]) -> usize {
    let rank = |s: &Slot| {
        if s.len.is_multiple_of(DATA_ALIGN) {
            0
        } else if s.len.is_multiple_of(8) {
            1
        } else {
            // Larger elements first: 4-byte after the 8-byte multiples, then 2-byte, then bytes.
            16 - s.dtype.bitsize() / 8
        }
    };
    slots.sort_by_key(rank); // stable: the caller's order within a group
    let mut offset = 0;
    for s in slots.iter_mut() {
        s.offset = offset;
        offset += s.len;
    }
    offset
}

/// The header: every slot's dtype, shape and offsets, plus `__metadata__` (the caller's keys, and the
/// quantized layout's keys when any entry is quantized). Padded with spaces so that the data after it
/// (and the 8-byte length before it) starts on a [`DATA_ALIGN`] boundary.
fn header(
    entries: &[Entry],
    slots: &[Slot],
    extra: &BTreeMap<String, String>,
) -> Result<Vec<u8>, serde_json::Error> {
    let mut meta: serde_json::Map<String, serde_json::Value> = extra
        .iter()
        .map(|(k, v)| (k.clone(), v.clone().into()))
        .collect();
    // The lowest version that holds every matrix's layout: files without `rows8` stay readable by
    // builds that know only version 1.
    let mut version = None;
    for e in entries {
        if let StoredAs::Quant { format, layout, .. } = e.stored {
            version = version.max(Some(layout.version()));
            meta.insert(format_key(&e.name), format.name().into());
            if layout != QLayout::RowSplit {
                meta.insert(layout_key(&e.name), layout.name().into());
            }
        }
    }
    if let Some(version) = version {
        debug_assert!(version <= LAYOUT_VERSION);
        meta.insert(LAYOUT_KEY.into(), LAYOUT_NAME.into());
        meta.insert(VERSION_KEY.into(), version.to_string().into());
    }
    let mut json = serde_json::Map::new();
    json.insert("__metadata__".into(), meta.into());
    for s in slots {
        json.insert(
            s.tensor.clone(),
            serde_json::json!({
                "dtype": s.dtype,
                "shape": s.shape,
                "data_offsets": [s.offset, s.offset + s.len],
            }),
        );
    }
    let mut bytes = serde_json::to_vec(&json)?;
    bytes.resize((8 + bytes.len()).next_multiple_of(DATA_ALIGN) - 8, b' ');
    Ok(bytes)
}

/// Writes `entries` as one safetensors file at `path` (the caller picks a `.partial` name; see
/// [`Staging`]). `produce(i, entry)` is called once per entry, in order, and must return bytes of
/// exactly the planned size; its error aborts the write (the file is left for the caller to remove).
/// `extra_metadata` goes into `__metadata__` alongside the quantized-layout keys.
pub fn write_model<E: From<StoreError>>(
    path: &Path,
    entries: &[Entry],
    extra_metadata: &BTreeMap<String, String>,
    mut produce: impl FnMut(usize, &Entry) -> Result<Data, E>,
) -> Result<WriteStats, E> {
    let mut slots = slots(entries, path)?;
    let data_len = lay_out(&mut slots);
    let header = header(entries, &slots, extra_metadata).map_err(|e| StoreError::Io {
        path: path.to_path_buf(),
        source: e.into(),
    })?;
    let data_start = 8 + header.len();
    for s in &slots {
        let align = (s.dtype.bitsize() / 8).max(1);
        if !(data_start + s.offset).is_multiple_of(align) {
            return Err(StoreError::Tensor {
                path: path.to_path_buf(),
                name: s.tensor.clone(),
                reason: format!(
                    "would start at byte {}, not {align}-byte aligned",
                    data_start + s.offset
                ),
            }
            .into());
        }
    }
    // Slots of each entry, by part.
    let mut by_entry: Vec<[Option<usize>; 4]> = vec![[None; 4]; entries.len()];
    for (i, s) in slots.iter().enumerate() {
        by_entry[s.entry][s.part] = Some(i);
    }

    let mut file = File::create(path).map_err(io_err(path))?;
    let total = (data_start + data_len) as u64;
    file.write_all(&(header.len() as u64).to_le_bytes())
        .and_then(|()| file.write_all(&header))
        .and_then(|()| file.set_len(total))
        .map_err(io_err(path))?;
    let mut types = BTreeMap::new();
    for (i, e) in entries.iter().enumerate() {
        let mut data = produce(i, e)?;
        if let (
            &StoredAs::Quant {
                format,
                rows,
                k,
                layout: QLayout::Rows8,
            },
            Data::Quant(p),
        ) = (&e.stored, &mut data)
        {
            // Wrong sizes are left for the check below, which names the tensor.
            if p.qs.len() == rows * k / QK * format.qs_bytes_per_block()
                && p.d.len() == rows * k / QK
            {
                let (mut qs, mut d) = (vec![0; p.qs.len()], vec![f16::ZERO; p.d.len()]);
                rows8::from_rowsplit(format, rows, k, &p.qs, &p.d, &mut qs, &mut d);
                (p.qs, p.d) = (qs, d);
                if format.has_min() && p.m.len() == p.d.len() {
                    let mut m = vec![f16::ZERO; p.m.len()];
                    rows8::scales_from_rowsplit(rows, k / QK, &p.m, &mut m);
                    p.m = m;
                }
            }
        }
        let parts: [&[u8]; 4] = match &data {
            Data::Dense(b) => [b, &[], &[], &[]],
            Data::Quant(p) => [
                &p.qs,
                bytemuck::cast_slice(&p.d),
                bytemuck::cast_slice(&p.m),
                &p.aux,
            ],
        };
        let dense = matches!(e.stored, StoredAs::Dense { .. });
        if dense != matches!(data, Data::Dense(_)) {
            return Err(StoreError::Tensor {
                path: path.to_path_buf(),
                name: e.name.clone(),
                reason: "produced data of the wrong kind (dense vs quantized)".into(),
            }
            .into());
        }
        for (part, bytes) in parts.into_iter().enumerate() {
            let slot = by_entry[i][part].map(|s| &slots[s]);
            let want = slot.map_or(0, |s| s.len);
            if bytes.len() != want {
                return Err(StoreError::Tensor {
                    path: path.to_path_buf(),
                    name: slot.map_or_else(|| e.name.clone(), |s| s.tensor.clone()),
                    reason: format!("produced {} bytes, planned {want}", bytes.len()),
                }
                .into());
            }
            if let Some(s) = slot {
                file.seek(SeekFrom::Start((data_start + s.offset) as u64))
                    .and_then(|_| file.write_all(bytes))
                    .map_err(io_err(path))?;
            }
        }
        *types.entry(e.type_name()).or_insert(0) += 1;
    }
    file.sync_all().map_err(io_err(path))?;
    Ok(WriteStats {
        bytes: total,
        parameters: entries.iter().map(|e| e.elements() as u64).sum(),
        types,
    })
}

/// Files of an output directory being written; see the [module docs](self).
pub struct Staging {
    dir: PathBuf,
    /// Files staged so far, in publishing order.
    files: Vec<String>,
    created_dir: bool,
    published: bool,
}

impl Staging {
    /// Creates `dir` if needed. Nothing visible changes until [`Staging::publish`].
    pub fn new(dir: &Path) -> Result<Staging, StoreError> {
        let created_dir = !dir.exists();
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        Ok(Staging {
            dir: dir.to_path_buf(),
            files: Vec::new(),
            created_dir,
            published: false,
        })
    }

    /// The `.partial` path `file` is staged under; it will be published.
    pub fn stage(&mut self, file: &str) -> PathBuf {
        if !self.files.iter().any(|f| f == file) {
            self.files.push(file.to_string());
        }
        self.partial(file)
    }

    /// Stages `file` with `contents`, flushed to disk before [`Staging::publish`] can rename it.
    pub fn write(&mut self, file: &str, contents: &[u8]) -> Result<(), StoreError> {
        let path = self.stage(file);
        File::create(&path)
            .and_then(|mut f| f.write_all(contents).and_then(|()| f.sync_all()))
            .map_err(io_err(&path))
    }

    fn partial(&self, file: &str) -> PathBuf {
        self.dir.join(format!("{file}.partial"))
    }

    /// Renames every staged file to its real name, `config.json` last.
    pub fn publish(mut self) -> Result<(), StoreError> {
        let marker = "config.json";
        let old = self.dir.join(marker);
        if self.files.iter().any(|f| f == marker) && old.exists() {
            // The directory is incomplete while the files are swapped; say so by removing the marker.
            fs::remove_file(&old).map_err(io_err(&old))?;
        }
        let mut order: Vec<&String> = self.files.iter().filter(|f| *f != marker).collect();
        order.extend(self.files.iter().filter(|f| *f == marker));
        for file in order {
            let (from, to) = (self.partial(file), self.dir.join(file));
            fs::rename(&from, &to).map_err(io_err(&to))?;
        }
        self.published = true;
        // The renames themselves reach the disk only with the directory; a crash before this
        // leaves either the old names or the new, never a half-written file under a final name
        // (each file was synced before its rename).
        sync_dir(&self.dir)
    }
}

/// Flushes a directory's entries (renames, new files) to disk; a no-op where directories cannot be
/// opened as files.
fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    match File::open(dir) {
        Ok(d) => match d.sync_all() {
            Ok(()) => Ok(()),
            // Some filesystems refuse fsync on a directory; the renames are then as durable as
            // they can be made.
            Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => Ok(()),
            Err(e) => Err(StoreError::Io {
                path: dir.to_path_buf(),
                source: e,
            }),
        },
        Err(_) => Ok(()),
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if self.published {
            return;
        }
        for file in &self.files {
            let _ = fs::remove_file(self.partial(file));
        }
        if self.created_dir {
            // Fails, harmlessly, if something else is in it.
            let _ = fs::remove_dir(&self.dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Odd sizes: the writer reorders so every tensor is aligned for its type, and the stock crate
    /// reads the file back with the planes and metadata.
    #[test]
    fn odd_sizes_are_aligned_and_readable() {
        let dir = std::env::temp_dir().join(format!("edgeinfer-store-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let mut staging = Staging::new(&dir).unwrap();
        let path = staging.stage(WEIGHTS_FILE);
        let dense = |name: &str, dtype, shape: Vec<usize>| Entry {
            name: name.into(),
            stored: StoredAs::Dense { dtype, shape },
        };
        let entries = vec![
            dense("a", Dtype::F16, vec![3]),
            Entry {
                name: "w".into(),
                stored: StoredAs::Quant {
                    format: QFormat::Q4_1,
                    rows: 3,
                    k: 32,
                    layout: QLayout::RowSplit,
                },
            },
            dense("b", Dtype::F32, vec![5]),
            dense("c", Dtype::F32, vec![2, 4]),
            // A whole number of cache lines: placed first, on a 64-byte boundary.
            dense("d", Dtype::F32, vec![4, 4]),
        ];
        let meta = BTreeMap::from([("format".to_string(), "pt".to_string())]);
        let stats = write_model(&path, &entries, &meta, |_, e| {
            Ok::<_, StoreError>(match e.stored {
                StoredAs::Dense { dtype, ref shape } => {
                    let n = shape.iter().product::<usize>() * dtype.bitsize() / 8;
                    Data::Dense((0..n as u8).collect())
                }
                StoredAs::Quant { rows, .. } => Data::Quant(QPlanes {
                    qs: vec![7; rows * 16],
                    d: vec![f16::ONE; rows],
                    m: vec![f16::NEG_ONE; rows],
                    aux: Vec::new(),
                }),
            })
        })
        .unwrap();
        assert_eq!(stats.types["q4_1"], 1);
        assert_eq!(stats.types["F32"], 3);
        staging.publish().unwrap();

        let bytes = fs::read(dir.join(WEIGHTS_FILE)).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        for (name, view) in st.tensors() {
            let offset = view.data().as_ptr() as usize - bytes.as_ptr() as usize;
            let align = (view.dtype().bitsize() / 8).max(1);
            assert_eq!(offset % align, 0, "{name} at {offset}");
            if view.data().len() % DATA_ALIGN == 0 {
                assert_eq!(offset % DATA_ALIGN, 0, "{name} at {offset}");
            }
        }
        assert_eq!(st.tensor("w.qs").unwrap().data(), &[7; 48][..]);
        assert_eq!(st.tensor("w.mins").unwrap().shape(), [3, 1]);
        assert_eq!(
            st.tensor("b").unwrap().data(),
            &(0..20).collect::<Vec<u8>>()[..]
        );
        let (_, m) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        let m = m.metadata().clone().unwrap();
        assert_eq!(m[&format_key("w")], "q4_1");
        assert_eq!(m[LAYOUT_KEY], LAYOUT_NAME);
        // Only rowsplit matrices: version 1, which builds that predate rows8 read.
        assert_eq!(m[VERSION_KEY], "1");
        assert_eq!(m["format"], "pt");
        let names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [WEIGHTS_FILE]);
        fs::remove_dir_all(&dir).unwrap();
    }

    /// Produced bytes of the wrong size are an error naming the tensor, and nothing is published.
    #[test]
    fn wrong_sizes_are_refused() {
        let dir = std::env::temp_dir().join(format!("edgeinfer-store-bad-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        {
            let mut staging = Staging::new(&dir).unwrap();
            let path = staging.stage(WEIGHTS_FILE);
            let entries = vec![Entry {
                name: "x".into(),
                stored: StoredAs::Dense {
                    dtype: Dtype::F32,
                    shape: vec![4],
                },
            }];
            let e = write_model(&path, &entries, &BTreeMap::new(), |_, _| {
                Ok::<_, StoreError>(Data::Dense(vec![0; 15]))
            })
            .unwrap_err();
            assert!(
                matches!(&e, StoreError::Tensor { name, .. } if name == "x"),
                "{e}"
            );
        }
        assert!(!dir.exists(), "staging left {}", dir.display());
    }
}
