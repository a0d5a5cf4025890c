//! llama.cpp's GBNF, rewritten as llguidance's Lark (llguidance's Rust API has no GBNF reader).
//!
//! GBNF: `name ::= alternatives`, with `"literals"`, `[character classes]` (`^` negates), `.` (any
//! character), rule names, `( groups )`, and `*`, `+`, `?`, `{m}`, `{m,}`, `{m,n}`, `{,n}` after any
//! item; `#` comments; the text starts at `root`. Each rule becomes a Lark rule `gbnf_<name>`
//! (lowercased: Lark names are lowercase), literals become JSON-style strings, classes and `.`
//! become `/regex/` terminals with every non-alphanumeric character written as `\x{..}`, and
//! `start: gbnf_root` leads. Newlines are whitespace here; a rule ends where `name ::=` begins the
//! next one (llama.cpp ends it at the newline, so every grammar it reads means the same here).

use std::collections::HashMap;

/// Converts a GBNF grammar to Lark; the error says what is wrong and at which line.
pub(super) fn to_lark(src: &str) -> Result<String, String> {
    let mut p = Parser {
        chars: src.chars().collect(),
        pos: 0,
    };
    let mut rules: Vec<(String, String)> = Vec::new();
    let mut names: HashMap<String, String> = HashMap::new();
    p.skip_space();
    while !p.at_end() {
        let name = p.name().ok_or_else(|| p.error("expected a rule name"))?;
        p.skip_space();
        if !p.eat_str("::=") {
            return Err(p.error(&format!("expected `::=` after `{name}`")));
        }
        let body = p.alternatives(0)?;
        let lark = lark_name(&name);
        if let Some(prev) = names.insert(lark.clone(), name.clone()) {
            return Err(if prev == name {
                format!("rule `{name}` is defined twice")
            } else {
                format!("rules `{prev}` and `{name}` differ only in case")
            });
        }
        rules.push((lark, body));
    }
    if !names.contains_key("gbnf_root") {
        return Err("the grammar has no `root` rule".into());
    }
    let mut out = String::from("start: gbnf_root\n");
    for (name, body) in rules {
        out.push_str(&format!("{name}: {body}\n"));
    }
    Ok(out)
}

fn lark_name(name: &str) -> String {
    format!("gbnf_{}", name.to_ascii_lowercase())
}

struct Parser {
    chars: Vec<char>,
    pos: usize,
}

/// Deepest nesting of groups: a hostile grammar must not overflow the stack.
const MAX_DEPTH: usize = 64;

impl Parser {
    fn at_end(&self) -> bool {
        self.pos >= self.chars.len()
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn error(&self, what: &str) -> String {
        let line = 1 + self.chars[..self.pos.min(self.chars.len())]
            .iter()
            .filter(|&&c| c == '\n')
            .count();
        format!("line {line}: {what}")
    }

    fn eat(&mut self, c: char) -> bool {
        let hit = self.peek() == Some(c);
        self.pos += usize::from(hit);
        hit
    }

    fn eat_str(&mut self, s: &str) -> bool {
        let n = s.chars().count();
        let hit = self.chars.len() >= self.pos + n
            && s.chars()
                .eq(self.chars[self.pos..self.pos + n].iter().copied());
        if hit {
            self.pos += n;
        }
        hit
    }

    /// Spaces, newlines and comments.
    fn skip_space(&mut self) {
        while let Some(c) = self.peek() {
            if c == '#' {
                while self.peek().is_some_and(|c| c != '\n') {
                    self.pos += 1;
                }
            } else if c.is_whitespace() {
                self.pos += 1;
            } else {
                break;
            }
        }
    }

    fn name(&mut self) -> Option<String> {
        let start = self.pos;
        while self
            .peek()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            self.pos += 1;
        }
        (self.pos > start).then(|| self.chars[start..self.pos].iter().collect())
    }

    /// Whether a rule definition (`name ::=`) starts here.
    fn at_rule_start(&mut self) -> bool {
        let save = self.pos;
        let hit = self.name().is_some() && {
            self.skip_space();
            self.eat_str("::=")
        };
        self.pos = save;
        hit
    }

    /// `seq | seq | …` up to `)` (inside a group), the next rule or the end.
    fn alternatives(&mut self, depth: usize) -> Result<String, String> {
        if depth > MAX_DEPTH {
            return Err(self.error("groups nested too deeply"));
        }
        let mut alts = vec![self.sequence(depth)?];
        while self.eat('|') {
            alts.push(self.sequence(depth)?);
        }
        Ok(alts.join(" | "))
    }

    fn sequence(&mut self, depth: usize) -> Result<String, String> {
        let mut items = Vec::new();
        loop {
            self.skip_space();
            match self.peek() {
                None | Some('|') | Some(')') => break,
                _ if self.at_rule_start() => break,
                _ => {}
            }
            let item = self.item(depth)?;
            let item = self.postfix(item)?;
            items.push(item);
        }
        if items.is_empty() {
            // Lark has no empty alternative; an empty string matches the same (nothing).
            return Ok("\"\"".into());
        }
        Ok(items.join(" "))
    }

    fn item(&mut self, depth: usize) -> Result<String, String> {
        let c = self.peek().ok_or_else(|| self.error("unexpected end"))?;
        match c {
            '"' => {
                self.pos += 1;
                let mut s = String::new();
                loop {
                    match self.peek() {
                        None => return Err(self.error("unterminated string")),
                        Some('"') => {
                            self.pos += 1;
                            break;
                        }
                        Some(_) => s.push(self.char_or_escape()?),
                    }
                }
                Ok(lark_string(&s))
            }
            '[' => {
                self.pos += 1;
                let negated = self.eat('^');
                let mut class = String::new();
                let mut any = false;
                loop {
                    match self.peek() {
                        None => return Err(self.error("unterminated character class")),
                        Some(']') if any => {
                            self.pos += 1;
                            break;
                        }
                        Some(_) => {
                            let lo = self.char_or_escape()?;
                            regex_char(lo, &mut class);
                            if self.peek() == Some('-')
                                && self.chars.get(self.pos + 1) != Some(&']')
                            {
                                self.pos += 1;
                                let hi = self.char_or_escape()?;
                                if hi < lo {
                                    return Err(
                                        self.error(&format!("range {lo:?}-{hi:?} is reversed"))
                                    );
                                }
                                class.push('-');
                                regex_char(hi, &mut class);
                            }
                            any = true;
                        }
                    }
                }
                Ok(format!("/[{}{class}]/", if negated { "^" } else { "" }))
            }
            '.' => {
                self.pos += 1;
                Ok("/(?s:.)/".into())
            }
            '(' => {
                self.pos += 1;
                let inner = self.alternatives(depth + 1)?;
                self.skip_space();
                if !self.eat(')') {
                    return Err(self.error("expected `)`"));
                }
                Ok(format!("({inner})"))
            }
            _ => match self.name() {
                Some(name) => Ok(lark_name(&name)),
                None => Err(self.error(&format!("unexpected {c:?}"))),
            },
        }
    }

    fn postfix(&mut self, item: String) -> Result<String, String> {
        // A group from `item` is already parenthesized; anything else gets parentheses before an
        // operator applies to it (a postfixed item counts as anything else).
        let mut grouped = item.starts_with('(');
        let mut item = item;
        let wrap = |item: &str, grouped: &mut bool| {
            let w = if *grouped {
                item.to_string()
            } else {
                format!("({item})")
            };
            *grouped = false;
            w
        };
        loop {
            match self.peek() {
                Some(op @ ('*' | '+' | '?')) => {
                    self.pos += 1;
                    item = format!("{}{op}", wrap(&item, &mut grouped));
                }
                Some('{') => {
                    self.pos += 1;
                    let min = self.number()?;
                    let rep = if self.eat(',') {
                        let max = self.number()?;
                        match max {
                            Some(max) => format!("{{{},{max}}}", min.unwrap_or(0)),
                            None => format!("{{{},}}", min.unwrap_or(0)),
                        }
                    } else {
                        let n = min.ok_or_else(|| self.error("expected a number after `{`"))?;
                        format!("{{{n}}}")
                    };
                    if !self.eat('}') {
                        return Err(self.error("expected `}`"));
                    }
                    item = format!("{}{rep}", wrap(&item, &mut grouped));
                }
                _ => return Ok(item),
            }
        }
    }

    fn number(&mut self) -> Result<Option<u32>, String> {
        self.skip_space();
        let start = self.pos;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.pos += 1;
        }
        let digits: String = self.chars[start..self.pos].iter().collect();
        self.skip_space();
        if digits.is_empty() {
            return Ok(None);
        }
        digits
            .parse()
            .map(Some)
            .map_err(|_| self.error(&format!("repetition count {digits} is too large")))
    }

    /// One character of a literal or class, decoding `\` escapes.
    fn char_or_escape(&mut self) -> Result<char, String> {
        let c = self.peek().ok_or_else(|| self.error("unexpected end"))?;
        self.pos += 1;
        if c != '\\' {
            return Ok(c);
        }
        let e = self.peek().ok_or_else(|| self.error("unfinished escape"))?;
        self.pos += 1;
        let hex = |p: &mut Parser, n: usize| -> Result<char, String> {
            let end = (p.pos + n).min(p.chars.len());
            let digits: String = p.chars[p.pos..end].iter().collect();
            p.pos = end;
            u32::from_str_radix(&digits, 16)
                .ok()
                .filter(|_| digits.len() == n)
                .and_then(char::from_u32)
                .ok_or_else(|| p.error(&format!("bad escape \\{e}{digits}")))
        };
        Ok(match e {
            'n' => '\n',
            'r' => '\r',
            't' => '\t',
            'x' => hex(self, 2)?,
            'u' => hex(self, 4)?,
            'U' => hex(self, 8)?,
            '\\' | '"' | '[' | ']' | '-' | '/' | '^' | '.' | '(' | ')' | '|' => e,
            _ => return Err(self.error(&format!("unknown escape \\{e}"))),
        })
    }
}

/// A Lark (JSON-syntax) string literal.
fn lark_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 || c == '\x7f' => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `c` inside a regex character class: alphanumerics as they are, the rest as `\x{..}`.
fn regex_char(c: char, out: &mut String) {
    if c.is_ascii_alphanumeric() {
        out.push(c);
    } else {
        out.push_str(&format!("\\x{{{:x}}}", c as u32));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_the_usual_constructs() {
        let g = r#"
            # a comment
            root ::= "{" ws pair ("," ws pair)* "}"
            pair ::= key ":" ws [0-9]+ | key ":" ws "\"x\""
            key  ::= [a-zA-Z_] [^"\n]{0,8} .?
            ws   ::= [ \t\n]{,2}
        "#;
        let lark = to_lark(g).unwrap();
        assert!(lark.starts_with("start: gbnf_root\n"), "{lark}");
        assert!(
            lark.contains(r#"gbnf_root: "{" gbnf_ws gbnf_pair ("," gbnf_ws gbnf_pair)* "}""#),
            "{lark}"
        );
        assert!(lark.contains(r#"/[^\x{22}\x{a}]/"#), "{lark}");
        assert!(lark.contains("{0,2}"), "{lark}");
        assert!(lark.contains(r#""\"x\"""#), "{lark}");
    }

    #[test]
    fn refuses_bad_grammars_by_line() {
        assert!(to_lark("foo ::= \"a\"").unwrap_err().contains("no `root`"));
        assert!(to_lark("root ::= \"a\nroot2 ::= x")
            .unwrap_err()
            .contains("unterminated"));
        assert!(to_lark("root ::= (\"a\"")
            .unwrap_err()
            .contains("expected `)`"));
        assert!(to_lark("root ::= [z-a]").unwrap_err().contains("reversed"));
        assert!(to_lark("root ::= \"a\"\nroot ::= \"b\"")
            .unwrap_err()
            .contains("twice"));
        let deep = format!("root ::= {}\"a\"{}", "(".repeat(100), ")".repeat(100));
        assert!(to_lark(&deep).unwrap_err().contains("nested"));
    }
}
