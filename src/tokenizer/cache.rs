//! `tokenizer.edgeinfer.bin`: the fast tokenizer's arrays, written next to `tokenizer.json` on first
//! load so that later loads copy arrays instead of parsing 1.5 MB of JSON and hashing 100k strings.
//!
//! The file is a cache, never a source of truth: it is used only when the `tokenizer.json` beside it
//! has the recorded size, modification time and content hash, and its own payload hash and every
//! index in it check out; otherwise it is rebuilt (or, if the directory is read-only, simply not
//! written). Writing goes through a temporary file and a rename, so a reader never sees half a file.
//!
//! Layout (native byte order, marked in the header): magic, format version, byte-order mark, the
//! source's length / mtime (ns) / hash, the payload's hash, then the payload: sections, each a u64
//! element count followed by the elements, padded to 8 bytes.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use super::bpe::{Bpe, MergeTable, Plan, NONE};
use super::pretokenize::{Pattern, Step};
use super::{ByteTable, Core, Source, Tokenizer};

pub(super) const FILE_NAME: &str = "tokenizer.edgeinfer.bin";
const MAGIC: &[u8; 8] = b"EITOKBPE";
/// Bump when the layout or the meaning of any array changes (e.g. a fix in the JSON builder).
const VERSION: u32 = 2;
const BYTE_ORDER: u32 = 0x0102_0304;
const HEADER_LEN: usize = 8 + 4 + 4 + 8 * 4;

/// What identifies the `tokenizer.json` a cache was built from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Stamp {
    pub len: u64,
    pub mtime_ns: u64,
    pub hash: u64,
}

fn mtime_ns(file: &File) -> io::Result<u64> {
    let mtime = file.metadata()?.modified()?;
    Ok(mtime
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64))
}

impl Stamp {
    /// The stamp of `contents`, read after the file's modification time `mtime_ns` was taken.
    pub fn of(mtime_ns: u64, contents: &[u8]) -> Stamp {
        Stamp {
            len: contents.len() as u64,
            mtime_ns,
            hash: hash64(contents),
        }
    }
}

/// Stamps `tokenizer.json`, streaming it through the hash (no 1.5 MB buffer); also returns its
/// modification time alone, for stamping the contents read later.
pub(super) fn stamp_file(path: &Path) -> io::Result<(u64, Stamp)> {
    let mut file = File::open(path)?;
    let mtime = mtime_ns(&file)?;
    let mut h = Hash64::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => h.update(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let stamp = Stamp {
        len: h.len,
        mtime_ns: mtime,
        hash: h.finish(),
    };
    Ok((mtime, stamp))
}

pub(super) fn path_next_to(tokenizer_json: &Path) -> PathBuf {
    tokenizer_json.with_file_name(FILE_NAME)
}

const K: u64 = 0x9E37_79B9_7F4A_7C15;

/// A streaming 64-bit content hash (four independent multiply-rotate lanes over 32-byte blocks,
/// then a SplitMix finish): fast enough to run on every load (~20 GB/s), good enough to notice a
/// changed file. Not cryptographic.
struct Hash64 {
    lanes: [u64; 4],
    tail: [u8; 32],
    tail_len: usize,
    len: u64,
}

impl Hash64 {
    fn new() -> Hash64 {
        Hash64 {
            lanes: [K, K.rotate_left(16), K.rotate_left(32), K.rotate_left(48)],
            tail: [0; 32],
            tail_len: 0,
            len: 0,
        }
    }

    fn block(&mut self, block: &[u8]) {
        for (lane, word) in self.lanes.iter_mut().zip(block.chunks_exact(8)) {
            let w = u64::from_le_bytes(word.try_into().unwrap_or([0; 8]));
            *lane = (*lane ^ w).wrapping_mul(K).rotate_left(31);
        }
    }

    fn update(&mut self, mut data: &[u8]) {
        self.len += data.len() as u64;
        if self.tail_len > 0 {
            let take = (32 - self.tail_len).min(data.len());
            self.tail[self.tail_len..self.tail_len + take].copy_from_slice(&data[..take]);
            self.tail_len += take;
            data = &data[take..];
            if self.tail_len < 32 {
                return;
            }
            let tail = self.tail;
            self.block(&tail);
            self.tail_len = 0;
        }
        let mut blocks = data.chunks_exact(32);
        for block in &mut blocks {
            self.block(block);
        }
        let rest = blocks.remainder();
        self.tail[..rest.len()].copy_from_slice(rest);
        self.tail_len = rest.len();
    }

    fn finish(&self) -> u64 {
        let mut h = self.len;
        for lane in self.lanes {
            h = (h ^ lane).wrapping_mul(K).rotate_left(27);
        }
        for &b in &self.tail[..self.tail_len] {
            h = (h ^ b as u64).wrapping_mul(K).rotate_left(27);
        }
        h ^= h >> 30;
        h = h.wrapping_mul(0xBF58_476D_1CE4_E5B9);
        h ^= h >> 27;
        h = h.wrapping_mul(0x94D0_49BB_1331_11EB);
        h ^ (h >> 31)
    }
}

pub(super) fn hash64(data: &[u8]) -> u64 {
    let mut h = Hash64::new();
    h.update(data);
    h.finish()
}

#[derive(Default)]
struct Writer(Vec<u8>);

impl Writer {
    fn section<T: bytemuck::Pod>(&mut self, items: &[T]) {
        self.0
            .extend_from_slice(&(items.len() as u64).to_ne_bytes());
        self.0.extend_from_slice(bytemuck::cast_slice(items));
        self.0.resize(self.0.len().next_multiple_of(8), 0);
    }
}

/// Reads sections straight into their typed vectors (no copy of the whole file), hashing the bytes.
struct Reader<R> {
    input: R,
    hash: Hash64,
    /// Bytes left in the payload, from the file size: bounds every allocation.
    left: u64,
}

impl<R: Read> Reader<R> {
    fn bytes(&mut self, out: &mut [u8]) -> Option<()> {
        self.left = self.left.checked_sub(out.len() as u64)?;
        self.input.read_exact(out).ok()?;
        self.hash.update(out);
        Some(())
    }

    fn section<T: bytemuck::Pod>(&mut self) -> Option<Vec<T>> {
        let mut count = [0u8; 8];
        self.bytes(&mut count)?;
        let count = u64::from_ne_bytes(count);
        let bytes = count.checked_mul(std::mem::size_of::<T>() as u64)?;
        if bytes > self.left {
            return None;
        }
        let mut v = bytemuck::zeroed_vec::<T>(count as usize);
        self.bytes(bytemuck::cast_slice_mut(&mut v))?;
        let pad = (8 - bytes % 8) % 8;
        self.bytes(&mut [0u8; 8][..pad as usize])?;
        Some(v)
    }
}

fn plan_words(p: &Plan) -> Vec<u32> {
    let mut w = vec![p.steps.len() as u32];
    w.extend(p.steps.iter().map(|s| match *s {
        Step::Digits { individual } => individual as u32,
        Step::Split(Pattern::Gpt2) => 10,
        Step::Split(Pattern::Llama3) => 11,
        Step::Split(Pattern::Qwen2) => 12,
    }));
    w.push(p.ignore_merges as u32);
    w.push(p.unk.unwrap_or(NONE));
    w.push(p.fuse_unk as u32);
    for list in [&p.prefix, &p.suffix, &p.added_raw, &p.added_normalized] {
        w.push(list.len() as u32);
        w.extend_from_slice(list);
    }
    w
}

fn plan_from_words(w: &[u32]) -> Option<Plan> {
    let mut it = w.iter().copied();
    let list = |it: &mut dyn Iterator<Item = u32>| -> Option<Vec<u32>> {
        let n = it.next()? as usize;
        let v: Vec<u32> = it.take(n).collect();
        (v.len() == n).then_some(v)
    };
    let steps = list(&mut it)?
        .into_iter()
        .map(|code| match code {
            0 | 1 => Some(Step::Digits {
                individual: code == 1,
            }),
            10 => Some(Step::Split(Pattern::Gpt2)),
            11 => Some(Step::Split(Pattern::Llama3)),
            12 => Some(Step::Split(Pattern::Qwen2)),
            _ => None,
        })
        .collect::<Option<Vec<_>>>()?;
    let ignore_merges = match it.next()? {
        0 => false,
        1 => true,
        _ => return None,
    };
    let unk = Some(it.next()?).filter(|&id| id != NONE);
    let fuse_unk = match it.next()? {
        0 => false,
        1 => true,
        _ => return None,
    };
    let plan = Plan {
        steps,
        ignore_merges,
        unk,
        fuse_unk,
        prefix: list(&mut it)?,
        suffix: list(&mut it)?,
        added_raw: list(&mut it)?,
        added_normalized: list(&mut it)?,
    };
    it.next().is_none().then_some(plan)
}

/// The cache file's bytes.
pub(super) fn encode(stamp: Stamp, bpe: &Bpe, table: &ByteTable) -> Vec<u8> {
    let mut w = Writer::default();
    w.section(&plan_words(&bpe.plan));
    w.section(&bpe.strs);
    w.section(&bpe.str_offsets);
    w.section(&bpe.model_sorted);
    w.section(&bpe.added_sorted);
    w.section(&bpe.byte_ids);
    w.section(&bpe.merges.keys);
    w.section(&bpe.merges.values);
    w.section(&table.bytes);
    w.section(&table.offsets);
    let known: Vec<u8> = table.known.iter().map(|&k| k as u8).collect();
    w.section(&known);
    let payload = w.0;

    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_ne_bytes());
    out.extend_from_slice(&BYTE_ORDER.to_ne_bytes());
    for v in [stamp.len, stamp.mtime_ns, stamp.hash, hash64(&payload)] {
        out.extend_from_slice(&v.to_ne_bytes());
    }
    out.extend_from_slice(&payload);
    out
}

/// The tokenizer in a cache file, if it was built from the source with `stamp` and is intact.
fn decode(mut input: impl Read, file_len: u64, stamp: Stamp) -> Option<(Bpe, ByteTable)> {
    let mut header = [0u8; HEADER_LEN];
    input.read_exact(&mut header).ok()?;
    let word = |at: usize| -> Option<u64> {
        Some(u64::from_ne_bytes(header.get(at..at + 8)?.try_into().ok()?))
    };
    let header_ok = header[..8] == MAGIC[..]
        && header[8..12] == VERSION.to_ne_bytes()
        && header[12..16] == BYTE_ORDER.to_ne_bytes()
        && [stamp.len, stamp.mtime_ns, stamp.hash]
            .iter()
            .enumerate()
            .all(|(i, &v)| word(16 + 8 * i) == Some(v));
    if !header_ok {
        return None;
    }
    let payload_hash = word(40)?;
    let left = file_len.checked_sub(HEADER_LEN as u64)?;
    decode_payload(input, left, Some(payload_hash))
}

/// The payload's sections, read and checked; `payload_hash` is `None` only for fuzzing, so that
/// mutated payloads reach the structural checks (`is_valid`) that guard every index used later.
fn decode_payload(
    input: impl Read,
    left: u64,
    payload_hash: Option<u64>,
) -> Option<(Bpe, ByteTable)> {
    let mut r = Reader {
        input,
        hash: Hash64::new(),
        left,
    };
    let plan = plan_from_words(&r.section::<u32>()?)?;
    let bpe = Bpe {
        plan,
        strs: r.section()?,
        str_offsets: r.section()?,
        model_sorted: r.section()?,
        added_sorted: r.section()?,
        byte_ids: r.section()?,
        merges: MergeTable {
            keys: r.section()?,
            values: r.section()?,
        },
    };
    let table = ByteTable {
        bytes: r.section()?,
        offsets: r.section()?,
        known: r.section::<u8>()?.into_iter().map(|k| k != 0).collect(),
    };
    let ok = r.left == 0
        && payload_hash.is_none_or(|h| r.hash.finish() == h)
        && bpe.is_valid()
        && table.is_valid()
        && table.known.len() == bpe.vocab_len();
    ok.then_some((bpe, table))
}

/// The payload of a cache file (the bytes after its header), decoded and checked as [`load`] does
/// but without the source stamp and payload hash, which a fuzzer cannot forge.
pub(super) fn decode_unstamped(payload: &[u8]) -> Option<(Bpe, ByteTable)> {
    decode_payload(payload, payload.len() as u64, None)
}

/// The payload of an encoded cache file (for fuzzing seeds).
pub(super) fn payload_of(file: &[u8]) -> &[u8] {
    file.get(HEADER_LEN..).unwrap_or_default()
}

/// Reads the cache beside `tokenizer_json`, if present and current.
pub(super) fn load(tokenizer_json: &Path, stamp: Stamp) -> Option<(Bpe, ByteTable)> {
    let file = File::open(path_next_to(tokenizer_json)).ok()?;
    let len = file.metadata().ok()?.len();
    decode(io::BufReader::with_capacity(1 << 16, file), len, stamp)
}

/// Writes the cache beside `tokenizer_json`; a failure (read-only directory, full disk) only means
/// the next load parses the JSON again.
pub(super) fn store(tokenizer_json: &Path, stamp: Stamp, bpe: &Bpe, table: &ByteTable) {
    let path = path_next_to(tokenizer_json);
    let tmp = path.with_file_name(format!("{FILE_NAME}.{}.tmp", std::process::id()));
    let written =
        std::fs::write(&tmp, encode(stamp, bpe, table)).and_then(|()| std::fs::rename(&tmp, &path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
}

impl Tokenizer {
    /// A tokenizer from the payload of a `tokenizer.edgeinfer.bin` cache, checked as a cache file
    /// is but without its stamp and hash (a fuzzing entry point; `None` if the checks fail).
    #[doc(hidden)]
    pub fn from_cache_payload(payload: &[u8]) -> Option<Tokenizer> {
        let (bpe, table) = decode_unstamped(payload)?;
        let core = Core::from_cache(bpe, table);
        let source = Source::Bytes(Arc::from(&b""[..]));
        Tokenizer::finish(core, source, None, Path::new("tokenizer_config.json")).ok()
    }

    /// The payload of this tokenizer's cache file, if it has a fast BPE (for fuzzing seeds).
    #[doc(hidden)]
    pub fn cache_payload(&self) -> Option<Vec<u8>> {
        let bpe = self.bpe.as_ref()?;
        let stamp = Stamp::of(0, &[]);
        Some(payload_of(&encode(stamp, bpe, &self.table)).to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streaming_hash_equals_one_shot() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7 + i / 13) as u8).collect();
        for len in [0, 1, 31, 32, 33, 64, 100, 1000] {
            let want = hash64(&data[..len]);
            for step in [1, 5, 31, 32, 33, 200] {
                let mut h = Hash64::new();
                for chunk in data[..len].chunks(step) {
                    h.update(chunk);
                }
                assert_eq!(h.finish(), want, "len {len} step {step}");
            }
        }
        assert_ne!(hash64(b"a"), hash64(b"b"));
        assert_ne!(hash64(&[0; 32]), hash64(&[0; 33]));
    }
}
