//! Writing `model.safetensors`: tensors are dequantized one at a time while the `safetensors`
//! crate streams them out, so peak memory is the quantized file plus one tensor, not the whole
//! F32 model.

use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::fs::File;
use std::io::Read;
use std::path::Path;

use safetensors::tensor::{Dtype, View};

use super::gguf::{unpermute_rows, Gguf, Rows, TensorPlan};
use super::{io_err, ImportDType, ImportError, ImportProgress};

/// Every planned tensor is present with its expected shape and nothing else is in the file.
pub(crate) fn check_plan(g: &Gguf, plan: &[TensorPlan]) -> Result<(), ImportError> {
    for t in plan {
        let got = g.shape(&t.gguf).ok_or_else(|| ImportError::MissingTensor {
            path: g.path.clone(),
            name: t.gguf.clone(),
        })?;
        if got != t.shape {
            return Err(ImportError::Shape {
                path: g.path.clone(),
                name: t.gguf.clone(),
                expected: t.shape.clone(),
                got,
            });
        }
    }
    let planned: HashSet<&str> = plan.iter().map(|t| t.gguf.as_str()).collect();
    let mut extra: Vec<&String> = g
        .content
        .tensor_infos
        .keys()
        .filter(|n| !planned.contains(n.as_str()))
        .collect();
    extra.sort();
    if let Some(name) = extra.first() {
        return Err(ImportError::UnexpectedTensor {
            path: g.path.clone(),
            name: name.to_string(),
        });
    }
    Ok(())
}

pub(crate) struct WriteStats {
    pub parameters: u64,
    pub bytes: u64,
}

/// State shared by the lazy tensor views while the `safetensors` crate pulls their bytes.
struct Job<'p> {
    gguf: RefCell<Gguf>,
    dtype: ImportDType,
    progress: RefCell<&'p mut dyn FnMut(ImportProgress)>,
    done: Cell<usize>,
    total: usize,
    /// The first error; once set, remaining tensors are skipped and the file is discarded.
    error: RefCell<Option<ImportError>>,
}

impl Job<'_> {
    fn convert(&self, t: &TensorPlan) -> Result<Vec<u8>, ImportError> {
        let f32s = self.gguf.borrow_mut().read_f32(&t.gguf)?;
        let f32s = match t.rows {
            Rows::AsIs => f32s,
            Rows::Unpermute { heads } => unpermute_rows(&f32s, heads, t.shape[0], t.shape[1]),
        };
        Ok(encode(&f32s, self.dtype))
    }
}

fn encode(values: &[f32], dtype: ImportDType) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() * dtype.size());
    match dtype {
        ImportDType::F32 => values
            .iter()
            .for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
        ImportDType::F16 => values
            .iter()
            .for_each(|v| out.extend_from_slice(&half::f16::from_f32(*v).to_le_bytes())),
        ImportDType::Bf16 => values
            .iter()
            .for_each(|v| out.extend_from_slice(&half::bf16::from_f32(*v).to_le_bytes())),
    }
    out
}

/// A tensor whose bytes are produced only when the writer asks for them.
struct LazyTensor<'j, 'p> {
    job: &'j Job<'p>,
    plan: &'j TensorPlan,
}

impl View for LazyTensor<'_, '_> {
    fn dtype(&self) -> Dtype {
        match self.job.dtype {
            ImportDType::F32 => Dtype::F32,
            ImportDType::F16 => Dtype::F16,
            ImportDType::Bf16 => Dtype::BF16,
        }
    }

    fn shape(&self) -> &[usize] {
        &self.plan.shape
    }

    fn data(&self) -> Cow<'_, [u8]> {
        let job = self.job;
        if job.error.borrow().is_some() {
            return Cow::Owned(Vec::new());
        }
        match job.convert(self.plan) {
            Ok(bytes) => {
                let index = job.done.get();
                job.done.set(index + 1);
                (job.progress.borrow_mut())(ImportProgress {
                    index,
                    total: job.total,
                    name: self.plan.hf.clone(),
                });
                Cow::Owned(bytes)
            }
            Err(e) => {
                *job.error.borrow_mut() = Some(e);
                Cow::Owned(Vec::new())
            }
        }
    }

    fn data_len(&self) -> usize {
        self.plan.shape.iter().product::<usize>() * self.job.dtype.size()
    }
}

/// Write `plan` from `gguf` to `path` as safetensors, then check the result's alignment.
pub(crate) fn write_safetensors(
    gguf: Gguf,
    plan: &[TensorPlan],
    dtype: ImportDType,
    path: &Path,
    progress: &mut dyn FnMut(ImportProgress),
) -> Result<WriteStats, ImportError> {
    let job = Job {
        gguf: RefCell::new(gguf),
        dtype,
        progress: RefCell::new(progress),
        done: Cell::new(0),
        total: plan.len(),
        error: RefCell::new(None),
    };
    let views = plan
        .iter()
        .map(|t| (t.hf.as_str(), LazyTensor { job: &job, plan: t }));
    let written = safetensors::serialize_to_file(views, None, path);
    if let Some(e) = job.error.take() {
        return Err(e);
    }
    written.map_err(|source| ImportError::Safetensors {
        path: path.to_path_buf(),
        source,
    })?;
    let bytes = check_alignment(path)?;
    let parameters = plan
        .iter()
        .map(|t| t.shape.iter().product::<usize>() as u64)
        .sum();
    Ok(WriteStats { parameters, bytes })
}

/// Read back the header and check that every tensor's data starts 8-byte aligned from the start
/// of the file, which the loader needs to cast mmapped bytes in place. Returns the file size.
fn check_alignment(path: &Path) -> Result<u64, ImportError> {
    let mut f = File::open(path).map_err(io_err(path))?;
    let size = f.metadata().map_err(io_err(path))?.len();
    let mut n = [0u8; 8];
    f.read_exact(&mut n).map_err(io_err(path))?;
    let n = u64::from_le_bytes(n);
    let bad = |name: &str, offset: u64| ImportError::Misaligned {
        path: path.to_path_buf(),
        name: name.to_string(),
        offset,
    };
    if n % 8 != 0 || n > size {
        return Err(bad("(header)", 8 + n));
    }
    let mut header = vec![0u8; n as usize];
    f.read_exact(&mut header).map_err(io_err(path))?;
    let header: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&header)
        .map_err(|source| ImportError::Json {
            path: path.to_path_buf(),
            source,
        })?;
    for (name, info) in &header {
        if name == "__metadata__" {
            continue;
        }
        let offset = info["data_offsets"][0]
            .as_u64()
            .and_then(|b| b.checked_add(8 + n));
        match offset {
            Some(o) if o % 8 == 0 => {}
            o => return Err(bad(name, o.unwrap_or(u64::MAX))),
        }
    }
    Ok(size)
}
