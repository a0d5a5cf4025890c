//! Pre-tokenizers of byte-level BPE tokenizers, without a regex engine: text → words.
//!
//! Each split pattern that the `tokenizers` crate would run through fancy-regex is hand-written here as a
//! scanner with the same leftmost-first, backtracking semantics, so loading compiles nothing and
//! splitting allocates nothing. Only the exact pattern strings below are recognised; any other pattern
//! leaves the tokenizer to the `tokenizers` crate.

use super::classes::{class, LETTER, NUMBER, OTHER, SPACE};

/// GPT-2's pattern, which `ByteLevel` applies itself when `use_regex` is on.
pub(super) const GPT2_PATTERN: &str =
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";
/// Llama 3's pattern (also llama.cpp's `llama-bpe`): numbers in groups of up to three.
pub(super) const LLAMA3_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen2's pattern: Llama 3's with every number its own word.
pub(super) const QWEN2_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Pattern {
    Gpt2,
    Llama3,
    Qwen2,
}

impl Pattern {
    pub(super) fn from_regex(regex: &str) -> Option<Pattern> {
        match regex {
            GPT2_PATTERN => Some(Pattern::Gpt2),
            LLAMA3_PATTERN => Some(Pattern::Llama3),
            QWEN2_PATTERN => Some(Pattern::Qwen2),
            _ => None,
        }
    }

    /// End of the match starting at `i` (< `s.len()`, on a char boundary). These patterns match
    /// every non-empty text from its first char, so each match starts where the previous one ended.
    fn match_at(self, s: &str, i: usize) -> usize {
        match self {
            Pattern::Gpt2 => gpt2(s, i),
            Pattern::Llama3 => llama3(s, i, 3),
            Pattern::Qwen2 => llama3(s, i, 1),
        }
    }
}

/// One splitting step; every step keeps all text (`Isolated` behaviour, nothing inverted).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Step {
    /// `Digits`: each numeric char (`char::is_numeric`, as there) its own word, or runs of them.
    Digits { individual: bool },
    /// A split pattern (`Split` with a known regex, or `ByteLevel` with `use_regex`).
    Split(Pattern),
}

/// Calls `emit` with each non-empty word of `text[start..end]` after applying `steps` in order.
pub(super) fn split(steps: &[Step], text: &str, emit: &mut impl FnMut(&str)) {
    let Some((step, rest)) = steps.split_first() else {
        if !text.is_empty() {
            emit(text);
        }
        return;
    };
    match *step {
        Step::Digits { individual } => {
            let mut piece_start = 0;
            let mut in_digits = false;
            for (i, c) in text.char_indices() {
                let digit = c.is_numeric();
                if digit && individual {
                    split(rest, &text[piece_start..i], emit);
                    let end = i + c.len_utf8();
                    split(rest, &text[i..end], emit);
                    piece_start = end;
                } else if digit != in_digits {
                    split(rest, &text[piece_start..i], emit);
                    piece_start = i;
                    in_digits = digit;
                }
            }
            split(rest, &text[piece_start..], emit);
        }
        Step::Split(pattern) => {
            let mut i = 0;
            while i < text.len() {
                let end = pattern.match_at(text, i);
                debug_assert!(end > i);
                split(rest, &text[i..end], emit);
                i = end;
            }
        }
    }
}

#[inline]
fn char_at(s: &str, i: usize) -> Option<char> {
    s.get(i..)?.chars().next()
}

/// End of the run of chars of class `k` starting at `i`.
fn run_end(s: &str, i: usize, k: u8) -> usize {
    s[i..]
        .char_indices()
        .find(|&(_, c)| class(c) != k)
        .map_or(s.len(), |(j, _)| i + j)
}

/// `\s+(?!\S)|\s+` at `i`, where `s[i]` is white space: the whole run when it ends the text, else the
/// run but its last char (which a following word may take), unless that would leave nothing.
fn whitespace(s: &str, i: usize) -> usize {
    let end = run_end(s, i, SPACE);
    if end == s.len() {
        return end;
    }
    let last = s[..end].chars().next_back().map_or(0, char::len_utf8);
    if end - last > i {
        end - last
    } else {
        end
    }
}

/// `'s|'t|'re|'ve|'m|'ll|'d` at the apostrophe at `i`, letters compared after `fold`: the match end.
fn contraction(s: &str, i: usize, fold: fn(char) -> char) -> Option<usize> {
    let mut rest = s[i + 1..].chars();
    let a = rest.next()?;
    let a_end = i + 1 + a.len_utf8();
    let a = fold(a);
    if matches!(a, 's' | 't' | 'm' | 'd') {
        return Some(a_end);
    }
    let b = rest.next()?;
    if matches!((a, fold(b)), ('r', 'e') | ('v', 'e') | ('l', 'l')) {
        return Some(a_end + b.len_utf8());
    }
    None
}

fn no_fold(c: char) -> char {
    c
}

/// Case-insensitive matching of the contraction letters as the regex engine does it (simple case
/// folding): upper case, and `ſ` (long s), which folds to `s`.
fn fold_contraction(c: char) -> char {
    match c {
        'S' | 'ſ' => 's',
        'T' => 't',
        'M' => 'm',
        'D' => 'd',
        'R' => 'r',
        'E' => 'e',
        'V' => 'v',
        'L' => 'l',
        _ => c,
    }
}

/// GPT-2: `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`.
fn gpt2(s: &str, i: usize) -> usize {
    if s.as_bytes()[i] == b'\'' {
        if let Some(end) = contraction(s, i, no_fold) {
            return end;
        }
    }
    let c = char_at(s, i).unwrap_or(' ');
    // ` ?X+`: a space joins the run of letters, numbers or other chars after it.
    if c == ' ' {
        if let Some(next) = char_at(s, i + 1) {
            let k = class(next);
            if k != SPACE {
                return run_end(s, i + 1, k);
            }
        }
    }
    let k = class(c);
    if k != SPACE {
        return run_end(s, i, k);
    }
    whitespace(s, i)
}

/// Llama 3 (`digits` = 3) and Qwen2 (`digits` = 1):
/// `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,digits}| ?[^\s\p{L}\p{N}]+[\r\n]*|`
/// `\s*[\r\n]+|\s+(?!\S)|\s+`.
fn llama3(s: &str, i: usize, digits: usize) -> usize {
    if s.as_bytes()[i] == b'\'' {
        if let Some(end) = contraction(s, i, fold_contraction) {
            return end;
        }
    }
    let c = char_at(s, i).unwrap_or(' ');
    let k = class(c);
    let after = i + c.len_utf8();
    let next = char_at(s, after);
    // `[^\r\n\p{L}\p{N}]?\p{L}+`
    if k == LETTER {
        return run_end(s, i, LETTER);
    }
    if k != NUMBER && c != '\r' && c != '\n' && next.is_some_and(|n| class(n) == LETTER) {
        return run_end(s, after, LETTER);
    }
    // `\p{N}{1,digits}`
    if k == NUMBER {
        return s[i..]
            .char_indices()
            .take_while(|&(_, c)| class(c) == NUMBER)
            .take(digits)
            .last()
            .map_or(after, |(j, c)| i + j + c.len_utf8());
    }
    // ` ?[^\s\p{L}\p{N}]+[\r\n]*`
    let other_start = if c == ' ' && next.is_some_and(|n| class(n) == OTHER) {
        Some(after)
    } else if k == OTHER {
        Some(i)
    } else {
        None
    };
    if let Some(start) = other_start {
        let end = run_end(s, start, OTHER);
        let newlines = s[end..].bytes().take_while(|&b| b == b'\r' || b == b'\n');
        return end + newlines.count();
    }
    // `\s*[\r\n]+`: white space up to and including its last line break.
    let end = run_end(s, i, SPACE);
    if let Some(p) = s[i..end].rfind(['\r', '\n']) {
        return i + p + 1;
    }
    whitespace(s, i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokenizers::utils::SysRegex;

    fn words(steps: &[Step], text: &str) -> Vec<String> {
        let mut out = Vec::new();
        split(steps, text, &mut |w| out.push(w.to_string()));
        out
    }

    /// What the regex engine of `tokenizers` makes of `text` (Isolated: matches and the gaps).
    fn regex_words(re: &SysRegex, text: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut prev = 0;
        for (a, b) in re.find_iter(text) {
            if a > prev {
                out.push(text[prev..a].to_string());
            }
            out.push(text[a..b].to_string());
            prev = b;
        }
        if prev < text.len() {
            out.push(text[prev..].to_string());
        }
        out
    }

    #[test]
    fn scanners_match_the_regexes() {
        let texts = [
            "Hello world! It's 2024, isn't it? I'M here;  ok\n\n  \t x",
            "  leading   and trailing   ",
            "a\r\n\r\nb \n c\t\n\td   \r\n",
            "'s 'S 'ſ 'Re 'LL 've 'x '' ''s 's's",
            "1234567 ½² ٣٤٥ x1y22z333",
            "你好，世界。 😀 👍🏽 e\u{301} ñ",
            "(foo)[bar]{baz} --> ==> \"quoted\" #tag @user",
            "\u{a0}\u{2009}x\u{3000}y\u{85}z\u{0b}\u{1c}",
            " ",
            "  ",
            "\n",
            "x",
            "'",
        ];
        for (pattern, p) in [
            (GPT2_PATTERN, Pattern::Gpt2),
            (LLAMA3_PATTERN, Pattern::Llama3),
            (QWEN2_PATTERN, Pattern::Qwen2),
        ] {
            let re = SysRegex::new(pattern).unwrap();
            for text in texts {
                assert_eq!(
                    words(&[Step::Split(p)], text),
                    regex_words(&re, text),
                    "{p:?} {text:?}"
                );
            }
        }
    }

    /// Short random strings over the chars the patterns treat differently, word by word.
    #[test]
    fn scanners_match_the_regexes_on_random_strings() {
        const ALPHABET: &[char] = &[
            '\'', 's', 'S', 'ſ', 't', 'r', 'e', 'E', 'v', 'm', 'l', 'L', 'd', 'x', ' ', ' ', '\t',
            '\r', '\n', '\u{a0}', '\u{3000}', '\u{0b}', '1', '2', '²', '٣', '.', '!', '(', '你',
            'é', '\u{301}', '😀', '\u{200d}', '_', '-',
        ];
        let mut state = 0x5eed_u64;
        let mut next = move |n: usize| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 33) % n as u64) as usize
        };
        for (pattern, p) in [
            (GPT2_PATTERN, Pattern::Gpt2),
            (LLAMA3_PATTERN, Pattern::Llama3),
            (QWEN2_PATTERN, Pattern::Qwen2),
        ] {
            let re = SysRegex::new(pattern).unwrap();
            for _ in 0..3000 {
                let len = next(12);
                let text: String = (0..len).map(|_| ALPHABET[next(ALPHABET.len())]).collect();
                assert_eq!(
                    words(&[Step::Split(p)], &text),
                    regex_words(&re, &text),
                    "{p:?} {text:?}"
                );
            }
        }
    }

    #[test]
    fn contraction_letters_fold_as_the_regex_engine_does() {
        // Every char that `(?i:x)` matches for the contraction letters, and nothing else, folds.
        let all: String = (0..=0x10FFFFu32).filter_map(char::from_u32).collect();
        for x in "strevmld".chars() {
            let re = SysRegex::new(&format!("(?i:{x})")).unwrap();
            let matched: Vec<char> = re
                .find_iter(&all)
                .flat_map(|(a, b)| all[a..b].chars())
                .collect();
            let folded: Vec<char> = all.chars().filter(|&c| fold_contraction(c) == x).collect();
            assert_eq!(matched, folded, "{x}");
        }
    }

    #[test]
    fn digits_split_before_the_pattern() {
        let steps = [
            Step::Digits { individual: true },
            Step::Split(Pattern::Gpt2),
        ];
        assert_eq!(words(&steps, "a 12b"), ["a", " ", "1", "2", "b"]);
        let steps = [Step::Digits { individual: false }];
        assert_eq!(words(&steps, "a12b3"), ["a", "12", "b", "3"]);
        assert!(words(&steps, "").is_empty());
    }
}
