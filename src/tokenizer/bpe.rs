//! Byte-level BPE encoding, as the `tokenizers` crate does it for the tokenizer.json files we know
//! (no normalizer; added tokens without strip/single-word options; known split patterns; `ByteLevel`
//! last; BPE without dropout, prefixes or suffixes), from plain arrays that load without parsing.
//!
//! Encoding mirrors `tokenizers` step by step: added tokens are cut out first (leftmost-longest, the
//! non-normalized ones, then the normalized ones in what is left), the rest is split into words, each
//! word's bytes become the byte tokens, and merges apply lowest rank first, leftmost first among equals.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use super::pretokenize::{split, Step};

/// Everything about the pipeline that is not a big table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Plan {
    pub steps: Vec<Step>,
    /// A word that is a vocabulary entry is taken whole, before any merge.
    pub ignore_merges: bool,
    /// The token for bytes whose char is not in the vocabulary (without one they are dropped), and
    /// whether a run of such bytes becomes one such token.
    pub unk: Option<u32>,
    pub fuse_unk: bool,
    /// Ids the post-processor puts before and after the text when special tokens are asked for.
    pub prefix: Vec<u32>,
    pub suffix: Vec<u32>,
    /// Added tokens matched on the raw text (`normalized: false`), then in the pieces left
    /// (`normalized: true`; with no normalizer the text is the same, but the order is not).
    pub added_raw: Vec<u32>,
    pub added_normalized: Vec<u32>,
}

/// Open-addressed table from a token pair to its merge: `(left << 32 | right)` → `(rank << 32 | id)`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct MergeTable {
    /// Power-of-two length; `EMPTY` marks a free slot.
    pub keys: Vec<u64>,
    pub values: Vec<u64>,
}

impl MergeTable {
    pub const EMPTY: u64 = u64::MAX;

    /// A table for `n` merges, at most 3/4 full (the keys of a probe run share cache lines, so a
    /// fuller, smaller table loads faster and looks up about as fast).
    pub fn with_merges(n: usize) -> MergeTable {
        let len = (n + n / 3 + 1).next_power_of_two().max(16);
        MergeTable {
            keys: vec![Self::EMPTY; len],
            values: vec![0; len],
        }
    }

    #[inline]
    fn slot(&self, key: u64) -> usize {
        // Fibonacci hashing: the top bits of the product.
        let bits = self.keys.len().trailing_zeros();
        (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - bits)) as usize
    }

    /// Inserts or replaces (a later merge of the same pair wins, as in `tokenizers`' map).
    pub fn insert(&mut self, left: u32, right: u32, rank: u32, id: u32) {
        let key = (left as u64) << 32 | right as u64;
        let mask = self.keys.len() - 1;
        let mut i = self.slot(key);
        while self.keys[i] != Self::EMPTY && self.keys[i] != key {
            i = (i + 1) & mask;
        }
        self.keys[i] = key;
        self.values[i] = (rank as u64) << 32 | id as u64;
    }

    /// `(rank, merged id)`.
    #[inline]
    pub fn get(&self, left: u32, right: u32) -> Option<(u32, u32)> {
        let key = (left as u64) << 32 | right as u64;
        let mask = self.keys.len() - 1;
        let mut i = self.slot(key);
        loop {
            let k = self.keys[i];
            if k == key {
                let v = self.values[i];
                return Some(((v >> 32) as u32, v as u32));
            }
            if k == Self::EMPTY {
                return None;
            }
            i = (i + 1) & mask;
        }
    }

    /// A well-formed table: power-of-two length with a free slot (so lookups end), ids below `n`.
    pub fn is_valid(&self, n: usize) -> bool {
        self.keys.len().is_power_of_two()
            && self.keys.len() == self.values.len()
            && self.keys.contains(&Self::EMPTY)
            // Free slots hold 0, so every value can be checked (in one vectorised pass).
            && self.values.iter().all(|&v| (v as u32 as usize) < n)
    }
}

/// A byte-level BPE tokenizer in flat arrays (what the cache file holds).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Bpe {
    pub plan: Plan,
    /// Token strings by id as the vocabulary spells them (`Ġworld`; an added token's content):
    /// `strs[str_offsets[id]..str_offsets[id + 1]]`, empty for ids with no token. Bytes, checked as
    /// UTF-8 per token when read as text (a whole-table check would cost more than all lookups).
    pub strs: Vec<u8>,
    pub str_offsets: Vec<u32>,
    /// Ids of the model's vocabulary, sorted by their string.
    pub model_sorted: Vec<u32>,
    /// Ids of the added tokens, sorted by their content.
    pub added_sorted: Vec<u32>,
    /// The id of the one-char token of each byte; `NONE` where the vocabulary lacks it.
    pub byte_ids: Vec<u32>,
    pub merges: MergeTable,
}

/// Scratch space for encoding words, reused across the words of one text.
#[derive(Default)]
struct Word {
    ids: Vec<u32>,
    /// Linked list over `ids`; a merged-away symbol has `len == 0`.
    prev: Vec<u32>,
    next: Vec<u32>,
    len: Vec<u32>,
    queue: BinaryHeap<Reverse<(u32, u32, u32)>>,
    mapped: String,
}

pub(super) const NONE: u32 = u32::MAX;

impl Bpe {
    pub fn vocab_len(&self) -> usize {
        self.str_offsets.len().saturating_sub(1)
    }

    /// The token string of `id` as bytes (empty when it has none).
    pub fn bytes_of(&self, id: u32) -> &[u8] {
        let i = id as usize;
        match (self.str_offsets.get(i), self.str_offsets.get(i + 1)) {
            (Some(&a), Some(&b)) => self.strs.get(a as usize..b as usize).unwrap_or_default(),
            _ => &[],
        }
    }

    /// The token string of `id` (empty when it has none).
    pub fn str_of(&self, id: u32) -> &str {
        std::str::from_utf8(self.bytes_of(id)).unwrap_or("")
    }

    /// Byte order is string order, so the sorted lists are searched on bytes.
    fn find_sorted(&self, sorted: &[u32], token: &str) -> Option<u32> {
        let i = sorted
            .binary_search_by(|&id| self.bytes_of(id).cmp(token.as_bytes()))
            .ok()?;
        Some(sorted[i])
    }

    /// As `tokenizers`' `token_to_id`: the added tokens first, then the model's vocabulary.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.find_sorted(&self.added_sorted, token)
            .or_else(|| self.find_sorted(&self.model_sorted, token))
    }

    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Vec<u32> {
        let mut out = Vec::with_capacity(text.len() / 3 + 4);
        if add_special_tokens {
            out.extend_from_slice(&self.plan.prefix);
        }
        let mut word = Word::default();
        split_added(self, &self.plan.added_raw, text, &mut |piece| match piece {
            Piece::Added(id) => out.push(id),
            Piece::Text(text) => split_added(
                self,
                &self.plan.added_normalized,
                text,
                &mut |piece| match piece {
                    Piece::Added(id) => out.push(id),
                    Piece::Text(text) => split(&self.plan.steps, text, &mut |w| {
                        self.encode_word(w, &mut word, &mut out)
                    }),
                },
            ),
        });
        if add_special_tokens {
            out.extend_from_slice(&self.plan.suffix);
        }
        out
    }

    fn encode_word(&self, w: &str, word: &mut Word, out: &mut Vec<u32>) {
        let bytes = w.as_bytes();
        if self.plan.ignore_merges && bytes.len() > 1 {
            word.mapped.clear();
            word.mapped
                .extend(bytes.iter().map(|&b| BYTE_CHARS[b as usize]));
            if let Some(id) = self.find_sorted(&self.model_sorted, &word.mapped) {
                out.push(id);
                return;
            }
        }
        // The byte tokens, as `tokenizers`' `merge_word` makes them (one char per byte here).
        word.ids.clear();
        let mut unk_pending = false;
        for &b in bytes {
            let id = self.byte_ids[b as usize];
            if id != NONE {
                if std::mem::take(&mut unk_pending) {
                    word.ids.extend(self.plan.unk);
                }
                word.ids.push(id);
            } else if self.plan.unk.is_some() {
                if unk_pending && !self.plan.fuse_unk {
                    word.ids.extend(self.plan.unk);
                }
                unk_pending = true;
            }
        }
        if unk_pending {
            word.ids.extend(self.plan.unk);
        }
        if word.ids.len() == 1 {
            out.push(word.ids[0]);
            return;
        }
        self.merge(word);
        out.extend(
            (0..word.ids.len())
                .filter(|&i| word.len[i] != 0)
                .map(|i| word.ids[i]),
        );
    }

    /// BPE over `w.ids`, as `tokenizers`' `Word::merge_all`: a min-queue of (rank, position) over the
    /// adjacent pairs; an entry whose pair has changed since it was queued is skipped.
    fn merge(&self, w: &mut Word) {
        let n = w.ids.len() as u32;
        w.prev.clear();
        w.prev.extend((0..n).map(|i| i.wrapping_sub(1)));
        w.next.clear();
        w.next
            .extend((1..=n).map(|i| if i == n { NONE } else { i }));
        w.len.clear();
        w.len.resize(n as usize, 1);
        w.queue.clear();
        for i in 0..n.saturating_sub(1) {
            if let Some((rank, id)) = self.merges.get(w.ids[i as usize], w.ids[i as usize + 1]) {
                w.queue.push(Reverse((rank, i, id)));
            }
        }
        while let Some(Reverse((_, pos, id))) = w.queue.pop() {
            let p = pos as usize;
            if w.len[p] == 0 || w.next[p] == NONE {
                continue;
            }
            let right = w.next[p] as usize;
            if self.merges.get(w.ids[p], w.ids[right]).map(|m| m.1) != Some(id) {
                continue; // stale: the pair at `pos` has changed
            }
            w.ids[p] = id;
            w.len[p] += w.len[right];
            w.len[right] = 0;
            w.next[p] = w.next[right];
            if w.next[p] != NONE {
                w.prev[w.next[p] as usize] = pos;
            }
            let prev = w.prev[p];
            if prev != NONE {
                if let Some((rank, id)) = self.merges.get(w.ids[prev as usize], w.ids[p]) {
                    w.queue.push(Reverse((rank, prev, id)));
                }
            }
            let next = w.next[p];
            if next != NONE {
                if let Some((rank, id)) = self.merges.get(w.ids[p], w.ids[next as usize]) {
                    w.queue.push(Reverse((rank, pos, id)));
                }
            }
        }
    }

    /// Bounds of every index the encoder follows, so that a damaged cache cannot make it panic.
    pub fn is_valid(&self) -> bool {
        let n = self.vocab_len();
        let id_ok = |id: &u32| (*id as usize) < n;
        let p = &self.plan;
        self.str_offsets.first() == Some(&0)
            && self.str_offsets.windows(2).all(|w| w[0] <= w[1])
            && self.str_offsets.last().map(|&e| e as usize) == Some(self.strs.len())
            && self.byte_ids.len() == 256
            && self.byte_ids.iter().all(|&id| id == NONE || id_ok(&id))
            && self.plan.unk.as_ref().is_none_or(id_ok)
            && self.model_sorted.iter().all(id_ok)
            && self.added_sorted.iter().all(id_ok)
            && [&p.prefix, &p.suffix, &p.added_raw, &p.added_normalized]
                .iter()
                .all(|ids| ids.iter().all(id_ok))
            && p.added_raw
                .iter()
                .chain(&p.added_normalized)
                .all(|&id| !self.bytes_of(id).is_empty())
            && self.merges.is_valid(n)
    }
}

/// GPT-2's byte → char map: printable Latin-1 bytes stand for themselves, the others for U+0100...
pub(super) const BYTE_CHARS: [char; 256] = {
    let mut t = ['\0'; 256];
    let mut next = 256u32;
    let mut b = 0;
    while b < 256 {
        let printable = matches!(b as u8, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        let code = if printable {
            b as u32
        } else {
            next += 1;
            next - 1
        };
        t[b] = match char::from_u32(code) {
            Some(c) => c,
            None => '\0',
        };
        b += 1;
    }
    t
};

enum Piece<'a> {
    Added(u32),
    Text(&'a str),
}

/// Cuts `text` at the added tokens `ids` (leftmost match, longest at that position), calling `emit`
/// with the pieces in order.
fn split_added<'a>(bpe: &Bpe, ids: &[u32], text: &'a str, emit: &mut impl FnMut(Piece<'a>)) {
    if ids.is_empty() {
        if !text.is_empty() {
            emit(Piece::Text(text));
        }
        return;
    }
    let bytes = text.as_bytes();
    let mut first = [false; 256];
    for &id in ids {
        first[bpe.bytes_of(id)[0] as usize] = true;
    }
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        if first[bytes[i] as usize] {
            let rest = &bytes[i..];
            let best = ids
                .iter()
                .map(|&id| (id, bpe.bytes_of(id)))
                .filter(|(_, t)| rest.starts_with(t))
                .max_by_key(|(id, t)| (t.len(), Reverse(*id)));
            if let Some((id, t)) = best {
                if start < i {
                    emit(Piece::Text(&text[start..i]));
                }
                emit(Piece::Added(id));
                i += t.len();
                start = i;
                continue;
            }
        }
        i += 1;
    }
    if start < text.len() {
        emit(Piece::Text(&text[start..]));
    }
}
