//! Builds a [`Bpe`] straight from `tokenizer.json`, with strings borrowed from the file, for the
//! pipelines `bpe` implements; anything else is `Unsupported` and left to the `tokenizers` crate.
//!
//! Ids are assigned exactly as `tokenizers` deserialisation assigns them (its `add_tokens` ignores the
//! ids written in `added_tokens` and looks contents up in the vocabulary), and the merge map keeps the
//! last rank of a repeated pair, as its hash map does.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::marker::PhantomData;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;

use super::bpe::{Bpe, MergeTable, Plan, BYTE_CHARS, NONE};
use super::pretokenize::{Pattern, Step};

/// Why the fast path does not take this file (it may still be a fine tokenizer).
#[derive(Debug)]
pub(super) struct Unsupported(pub String);

fn unsupported<T>(reason: impl Into<String>) -> Result<T, Unsupported> {
    Err(Unsupported(reason.into()))
}

#[derive(Deserialize)]
struct FileJson<'a> {
    #[serde(default)]
    truncation: Option<IgnoredAny>,
    #[serde(default)]
    padding: Option<IgnoredAny>,
    #[serde(default, borrow)]
    added_tokens: Vec<AddedJson<'a>>,
    #[serde(default)]
    normalizer: Option<IgnoredAny>,
    #[serde(default)]
    pre_tokenizer: Option<Value>,
    #[serde(default)]
    post_processor: Option<Value>,
    #[serde(default)]
    decoder: Option<Value>,
    #[serde(borrow)]
    model: ModelJson<'a>,
}

/// `tokenizers`' `AddedToken`, whose fields are all required.
#[derive(Deserialize, PartialEq, Eq)]
struct AddedJson<'a> {
    #[serde(borrow)]
    content: Cow<'a, str>,
    single_word: bool,
    lstrip: bool,
    rstrip: bool,
    normalized: bool,
    special: bool,
}

#[derive(Deserialize)]
struct ModelJson<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(default)]
    dropout: Option<f64>,
    #[serde(default)]
    continuing_subword_prefix: Option<IgnoredAny>,
    #[serde(default)]
    end_of_word_suffix: Option<IgnoredAny>,
    #[serde(default)]
    ignore_merges: bool,
    #[serde(default, borrow)]
    unk_token: Option<Cow<'a, str>>,
    #[serde(default)]
    fuse_unk: bool,
    #[serde(default)]
    byte_fallback: bool,
    #[serde(borrow)]
    vocab: Entries<'a>,
    #[serde(borrow)]
    merges: Merges<'a>,
}

/// A JSON string, borrowed from the file unless it has escapes.
struct Str<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Str<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Str<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Str<'a>, E> {
                Ok(Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Str<'a>, E> {
                Ok(Str(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(V(PhantomData))
    }
}

/// The vocabulary object in file order (duplicates kept, to be refused).
struct Entries<'a>(Vec<(Cow<'a, str>, u32)>);

impl<'de: 'a, 'a> Deserialize<'de> for Entries<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Entries<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map from token to id")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entries<'a>, A::Error> {
                let mut v = Vec::with_capacity(map.size_hint().unwrap_or(0));
                while let Some((k, id)) = map.next_entry::<Str<'a>, u32>()? {
                    v.push((k.0, id));
                }
                Ok(Entries(v))
            }
        }
        d.deserialize_map(V(PhantomData))
    }
}

/// Merges as `["a", "b"]` pairs or legacy `"a b"` strings.
struct Merges<'a>(Vec<(Cow<'a, str>, Cow<'a, str>)>);

struct Merge<'a>(Cow<'a, str>, Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Merge<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(PhantomData<&'a ()>);
        fn legacy<'a, E: de::Error>(s: Cow<'a, str>) -> Result<Merge<'a>, E> {
            // As `tokenizers`' `convert_merges_to_hashmap`: exactly two space-separated parts.
            if s.split(' ').count() != 2 {
                return Err(E::custom(format!("merge `{s}` is not two tokens")));
            }
            Ok(match s {
                Cow::Borrowed(s) => {
                    let (a, b) = s.split_once(' ').unwrap_or((s, ""));
                    Merge(Cow::Borrowed(a), Cow::Borrowed(b))
                }
                Cow::Owned(s) => {
                    let (a, b) = s.split_once(' ').unwrap_or((&s, ""));
                    Merge(a.to_owned().into(), b.to_owned().into())
                }
            })
        }
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Merge<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a merge: [\"a\", \"b\"] or \"a b\"")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Merge<'a>, E> {
                legacy(Cow::Borrowed(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Merge<'a>, E> {
                legacy(Cow::Owned(v.to_owned()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Merge<'a>, A::Error> {
                let a: Str<'a> = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::invalid_length(0, &self))?;
                let b: Str<'a> = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::invalid_length(1, &self))?;
                if seq.next_element::<IgnoredAny>()?.is_some() {
                    return Err(de::Error::invalid_length(3, &self));
                }
                Ok(Merge(a.0, b.0))
            }
        }
        d.deserialize_any(V(PhantomData))
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Merges<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Merges<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of merges")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Merges<'a>, A::Error> {
                let mut v = Vec::with_capacity(seq.size_hint().unwrap_or(0));
                while let Some(Merge(a, b)) = seq.next_element()? {
                    v.push((a, b));
                }
                Ok(Merges(v))
            }
        }
        d.deserialize_seq(V(PhantomData))
    }
}

/// FxHash: the build-time maps hash short strings and need no DoS resistance.
#[derive(Default)]
struct Fx(u64);

impl Hasher for Fx {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes(c.try_into().unwrap_or([0; 8])));
        }
        for &b in chunks.remainder() {
            self.add(b as u64);
        }
    }
    fn write_u8(&mut self, b: u8) {
        self.add(b as u64);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

impl Fx {
    #[inline]
    fn add(&mut self, w: u64) {
        self.0 = (self.0.rotate_left(5) ^ w).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

type FxMap<K, V> = HashMap<K, V, BuildHasherDefault<Fx>>;

/// Token strings to their ids.
type TokenIds<'s> = FxMap<&'s str, u32>;

/// Parses `tokenizer.json` into the fast form, or says why it cannot.
pub(super) fn build(json: &[u8], max_vocab: usize) -> Result<Bpe, Unsupported> {
    let file: FileJson = serde_json::from_slice(json).map_err(|e| Unsupported(e.to_string()))?;
    let steps = pipeline(&file)?;
    let model = file.model;
    let vocab = &model.vocab.0;
    let (by_str, mut strs) = model_vocab(vocab, max_vocab)?;
    let (added, added_by_id) = added_ids(&file.added_tokens, vocab.len() as u32, &by_str)?;
    let (added_raw, added_normalized) = place_added(&added_by_id, max_vocab, &mut strs)?;

    // The byte tokens; a byte without one is dropped, or becomes `unk` (byte fallback would look
    // for `<0xNN>` tokens, which byte-level vocabularies do not have).
    let byte_ids = byte_ids(&by_str);
    let unk = match &model.unk_token {
        Some(name) => match by_str.get(name.as_ref()) {
            Some(&id) => Some(id),
            None => return unsupported(format!("unk token `{name}` is not in the vocabulary")),
        },
        None => None,
    };
    if byte_ids.contains(&NONE) && model.byte_fallback {
        return unsupported("byte fallback with bytes missing from the vocabulary");
    }

    let merges = merge_table(&model.merges.0, &by_str)?;
    let (prefix, suffix) = post_processor(file.post_processor.as_ref())?;
    let (flat, str_offsets) = flat_strings(&strs, json.len() / 3)?;
    let bpe = Bpe {
        plan: Plan {
            steps,
            ignore_merges: model.ignore_merges,
            unk,
            fuse_unk: model.fuse_unk,
            prefix,
            suffix,
            added_raw,
            added_normalized,
        },
        strs: flat,
        str_offsets,
        model_sorted: ids_by_string(vocab.iter().map(|(s, id)| (s.as_ref(), *id))),
        added_sorted: ids_by_string(added.iter().map(|(s, id)| (*s, *id))),
        byte_ids,
        merges,
    };
    if !bpe.is_valid() {
        return unsupported("inconsistent tables");
    }
    Ok(bpe)
}

/// The options around the model that the fast path does not implement, refused; the
/// pre-tokenizer's splitting steps if the rest of the pipeline is one it runs.
fn pipeline(file: &FileJson) -> Result<Vec<Step>, Unsupported> {
    if file.truncation.is_some() || file.padding.is_some() {
        return unsupported("truncation or padding");
    }
    if file.normalizer.is_some() {
        return unsupported("a normalizer");
    }
    let model = &file.model;
    if model.kind.as_deref() != Some("BPE") {
        return unsupported("a model other than BPE");
    }
    if model.dropout.is_some_and(|p| p != 0.0)
        || model.continuing_subword_prefix.is_some()
        || model.end_of_word_suffix.is_some()
    {
        return unsupported("BPE dropout, prefix or suffix");
    }
    let steps = pre_tokenizer(file.pre_tokenizer.as_ref())?;
    if !byte_level_decoder(file.decoder.as_ref()) {
        return unsupported("a decoder other than ByteLevel");
    }
    Ok(steps)
}

/// The model's vocabulary: unique strings and unique ids. Returns the id of each string and the
/// string of each id below the largest.
fn model_vocab<'v>(
    vocab: &'v [(Cow<'_, str>, u32)],
    max_vocab: usize,
) -> Result<(TokenIds<'v>, Vec<Option<&'v str>>), Unsupported> {
    let mut by_str: TokenIds = FxMap::default();
    by_str.reserve(vocab.len());
    let mut n = 0usize;
    for (s, id) in vocab {
        if by_str.insert(s.as_ref(), *id).is_some() {
            return unsupported(format!("token `{s}` appears twice"));
        }
        if s.is_empty() {
            return unsupported("an empty token");
        }
        n = n.max(*id as usize + 1);
    }
    if n > max_vocab {
        return unsupported(format!("token id {} is too large", n - 1));
    }
    let mut strs: Vec<Option<&str>> = vec![None; n];
    for (s, id) in vocab {
        if strs[*id as usize].replace(s.as_ref()).is_some() {
            return unsupported(format!("id {id} names two tokens"));
        }
    }
    Ok((by_str, strs))
}

/// Added tokens, with ids as `AddedVocabulary::add_tokens` assigns them (new contents numbered
/// from `next_id`): the id of each content, and the token of each id.
fn added_ids<'t, 'a>(
    tokens: &'t [AddedJson<'a>],
    mut next_id: u32,
    by_str: &TokenIds,
) -> Result<(TokenIds<'t>, FxMap<u32, &'t AddedJson<'a>>), Unsupported> {
    let mut added: TokenIds = FxMap::default();
    let mut added_by_id: FxMap<u32, &AddedJson> = FxMap::default();
    for t in tokens {
        let content = t.content.as_ref();
        if content.is_empty() {
            continue;
        }
        if let Some(id) = added.get(content) {
            if added_by_id.get(id).is_some_and(|prev| *prev == t) {
                continue;
            }
        }
        let id = match added.get(content).or_else(|| by_str.get(content)) {
            Some(&id) => id,
            None => {
                next_id += 1;
                next_id - 1
            }
        };
        added.insert(content, id);
        added_by_id.insert(id, t);
    }
    if added.len() != added_by_id.len() {
        return unsupported("two added tokens share an id");
    }
    Ok((added, added_by_id))
}

/// Writes the added tokens into the id-to-string table; their ids, split by whether the
/// normalizer applies to them (raw, normalized), each sorted.
fn place_added<'t>(
    added_by_id: &FxMap<u32, &'t AddedJson>,
    max_vocab: usize,
    strs: &mut Vec<Option<&'t str>>,
) -> Result<(Vec<u32>, Vec<u32>), Unsupported> {
    let mut added_raw = Vec::new();
    let mut added_normalized = Vec::new();
    for (&id, t) in added_by_id {
        if t.single_word || t.lstrip || t.rstrip {
            return unsupported(format!("added token `{}` has matching options", t.content));
        }
        if id as usize >= max_vocab {
            return unsupported(format!("added token id {id} is too large"));
        }
        if id as usize >= strs.len() {
            strs.resize(id as usize + 1, None);
        }
        match strs[id as usize] {
            Some(s) if s != t.content => {
                return unsupported(format!("id {id} is both `{s}` and `{}`", t.content))
            }
            _ => strs[id as usize] = Some(t.content.as_ref()),
        }
        if t.normalized {
            added_normalized.push(id);
        } else {
            added_raw.push(id);
        }
    }
    added_raw.sort_unstable();
    added_normalized.sort_unstable();
    Ok((added_raw, added_normalized))
}

/// The id of each byte's token in the byte-level alphabet, `NONE` where the vocabulary has none.
fn byte_ids(by_str: &TokenIds) -> Vec<u32> {
    let mut buf = [0u8; 4];
    BYTE_CHARS
        .iter()
        .map(|c| {
            by_str
                .get(&*c.encode_utf8(&mut buf))
                .copied()
                .unwrap_or(NONE)
        })
        .collect()
}

/// The merge ranks in file order; every part and every result must be a vocabulary token.
fn merge_table(
    pairs: &[(Cow<'_, str>, Cow<'_, str>)],
    by_str: &TokenIds,
) -> Result<MergeTable, Unsupported> {
    let mut merges = MergeTable::with_merges(pairs.len());
    let mut joined = String::new();
    for (rank, (a, b)) in pairs.iter().enumerate() {
        let id = |s: &str| by_str.get(s).copied();
        joined.clear();
        joined.push_str(a);
        joined.push_str(b);
        match (id(a), id(b), id(&joined)) {
            (Some(a), Some(b), Some(m)) => merges.insert(a, b, rank as u32, m),
            _ => return unsupported(format!("merge `{a} {b}` is not in the vocabulary")),
        }
    }
    Ok(merges)
}

/// The strings of all ids back to back (a missing id is empty), and the offset where each starts
/// plus the end.
fn flat_strings(
    strs: &[Option<&str>],
    capacity: usize,
) -> Result<(Vec<u8>, Vec<u32>), Unsupported> {
    let mut flat = Vec::with_capacity(capacity);
    let mut str_offsets = Vec::with_capacity(strs.len() + 1);
    str_offsets.push(0);
    for s in strs {
        flat.extend_from_slice(s.unwrap_or("").as_bytes());
        str_offsets.push(
            u32::try_from(flat.len()).map_err(|_| Unsupported("token table over 4 GiB".into()))?,
        );
    }
    Ok((flat, str_offsets))
}

/// The ids of `(string, id)` pairs in the order of their strings.
fn ids_by_string<'s>(pairs: impl Iterator<Item = (&'s str, u32)>) -> Vec<u32> {
    let mut sorted: Vec<(&str, u32)> = pairs.collect();
    sorted.sort_unstable();
    sorted.into_iter().map(|(_, id)| id).collect()
}

fn str_field<'v>(v: &'v Value, name: &str) -> Option<&'v str> {
    v.get(name)?.as_str()
}

/// The splitting steps; the pipeline must end in `ByteLevel` without a prefix space.
fn pre_tokenizer(v: Option<&Value>) -> Result<Vec<Step>, Unsupported> {
    let list = match v {
        Some(v) if str_field(v, "type") == Some("Sequence") => match v.get("pretokenizers") {
            Some(Value::Array(list)) => list.iter().collect(),
            _ => return unsupported("a pre-tokenizer sequence without a list"),
        },
        Some(v) => vec![v],
        None => Vec::new(),
    };
    let mut steps = Vec::new();
    let mut byte_level = false;
    for p in list {
        if byte_level {
            return unsupported("a pre-tokenizer after ByteLevel");
        }
        match str_field(p, "type") {
            Some("ByteLevel") => {
                if p.get("add_prefix_space") != Some(&Value::Bool(false)) {
                    return unsupported("ByteLevel with a prefix space");
                }
                match p.get("use_regex") {
                    None | Some(Value::Bool(true)) => steps.push(Step::Split(Pattern::Gpt2)),
                    Some(Value::Bool(false)) => {}
                    Some(_) => return unsupported("ByteLevel use_regex"),
                }
                byte_level = true;
            }
            Some("Digits") => match p.get("individual_digits") {
                Some(Value::Bool(individual)) => steps.push(Step::Digits {
                    individual: *individual,
                }),
                _ => return unsupported("Digits without individual_digits"),
            },
            Some("Split") => {
                let regex = p.get("pattern").and_then(|p| str_field(p, "Regex"));
                let pattern = regex.and_then(Pattern::from_regex);
                let isolated = str_field(p, "behavior") == Some("Isolated");
                let inverted = p.get("invert") != Some(&Value::Bool(false));
                match pattern {
                    Some(pattern) if isolated && !inverted => steps.push(Step::Split(pattern)),
                    _ => return unsupported("a Split pre-tokenizer with another pattern"),
                }
            }
            other => return unsupported(format!("pre-tokenizer {other:?}")),
        }
    }
    if !byte_level {
        return unsupported("no ByteLevel pre-tokenizer");
    }
    Ok(steps)
}

/// `ByteLevel`, alone or as the only step of a sequence: decoding is then the byte table's bytes.
fn byte_level_decoder(v: Option<&Value>) -> bool {
    let Some(v) = v else { return false };
    match str_field(v, "type") {
        Some("ByteLevel") => true,
        Some("Sequence") => match v.get("decoders") {
            Some(Value::Array(list)) => {
                !list.is_empty()
                    && list
                        .iter()
                        .all(|d| str_field(d, "type") == Some("ByteLevel"))
            }
            _ => false,
        },
        _ => false,
    }
}

/// Ids around the text for `add_special_tokens`: none, `ByteLevel` (offsets only), or a
/// `TemplateProcessing` whose single-sequence template is special tokens around `$A`.
fn post_processor(v: Option<&Value>) -> Result<(Vec<u32>, Vec<u32>), Unsupported> {
    let list: Vec<&Value> = match v {
        None => return Ok((Vec::new(), Vec::new())),
        Some(v) if str_field(v, "type") == Some("Sequence") => match v.get("processors") {
            Some(Value::Array(list)) => list.iter().collect(),
            _ => return unsupported("a post-processor sequence without a list"),
        },
        Some(v) => vec![v],
    };
    let (mut prefix, mut suffix) = (Vec::new(), Vec::new());
    let mut templates = 0;
    for p in list {
        match str_field(p, "type") {
            Some("ByteLevel") => {}
            Some("TemplateProcessing") => {
                templates += 1;
                template(p, &mut prefix, &mut suffix)?;
            }
            other => return unsupported(format!("post-processor {other:?}")),
        }
    }
    if templates > 1 {
        return unsupported("two templates");
    }
    Ok((prefix, suffix))
}

fn template(p: &Value, prefix: &mut Vec<u32>, suffix: &mut Vec<u32>) -> Result<(), Unsupported> {
    let Some(Value::Array(single)) = p.get("single") else {
        return unsupported("a template without `single`");
    };
    let specials = p.get("special_tokens");
    let mut seen_sequence = false;
    for piece in single {
        if let Some(seq) = piece.get("Sequence") {
            if str_field(seq, "id") != Some("A") || seen_sequence {
                return unsupported("a template with another sequence than one $A");
            }
            seen_sequence = true;
        } else if let Some(special) = piece.get("SpecialToken") {
            let name = str_field(special, "id").unwrap_or("");
            let ids = specials
                .and_then(|s| s.get(name))
                .and_then(|s| s.get("ids"))
                .and_then(Value::as_array);
            let Some(ids) = ids else {
                return unsupported(format!("template token `{name}` is not defined"));
            };
            let out = if seen_sequence {
                &mut *suffix
            } else {
                &mut *prefix
            };
            for id in ids {
                match id.as_u64().and_then(|id| u32::try_from(id).ok()) {
                    Some(id) => out.push(id),
                    None => return unsupported("a template id that is not a number"),
                }
            }
        } else {
            return unsupported("a template piece of another kind");
        }
    }
    if !seen_sequence {
        return unsupported("a template without $A");
    }
    Ok(())
}
