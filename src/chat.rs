//! Chat templates: the model's own Jinja template (from tokenizer_config.json), compiled once with
//! minijinja and rendered per request.
//!
//! Hugging Face renders these with Python's jinja2 (`trim_blocks`, `lstrip_blocks`), and templates lean
//! on Python-isms: string methods (`.strip()`, `.startswith()`), dict methods (`.items()`, `.get()`),
//! `raise_exception(...)` and a `tojson` that prints like `json.dumps`. The small subset templates use
//! is provided here, so no extra dependency is needed.

use minijinja::value::{Kwargs, Value, ValueKind};
use minijinja::{Environment, Error as JinjaError, ErrorKind, State};

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Message {
            role: role.into(),
            content: content.into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    #[error("chat template does not compile: {reason}")]
    Template { reason: String },
    #[error("chat template failed to render: {reason}")]
    Render { reason: String },
}

const NAME: &str = "chat_template";

/// A compiled chat template plus the special tokens it may refer to (`bos_token`, `eos_token`).
pub struct ChatTemplate {
    env: Environment<'static>,
    source: String,
    bos_token: Option<String>,
    eos_token: Option<String>,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("source", &self.source())
            .field("bos_token", &self.bos_token)
            .field("eos_token", &self.eos_token)
            .finish()
    }
}

/// Instructions one render may run. Real templates use a few dozen per message (SmolLM2's: ~40;
/// a conversation of 10,000 messages ~0.5 M); 10^15 loop iterations stop after this many.
pub const RENDER_FUEL: u64 = 20_000_000;

impl ChatTemplate {
    pub fn new(
        source: &str,
        bos_token: Option<&str>,
        eos_token: Option<&str>,
    ) -> Result<Self, ChatError> {
        let mut env = Environment::new();
        // A template is code from the model directory: bound the work of one render, so a loop
        // like `range(10**5)` inside another errors instead of spinning.
        env.set_fuel(Some(RENDER_FUEL));
        // As transformers' apply_chat_template configures jinja2.
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(python_method);
        env.add_function("raise_exception", raise_exception);
        // transformers passes `strftime_now` to templates (Llama 3.x prints today's date with it).
        env.add_function("strftime_now", strftime_now);
        env.add_filter("tojson", tojson);
        env.add_template_owned(NAME, source.to_owned())
            .map_err(|e| ChatError::Template {
                reason: describe(&e),
            })?;
        Ok(ChatTemplate {
            env,
            source: source.to_owned(),
            bos_token: bos_token.map(str::to_owned),
            eos_token: eos_token.map(str::to_owned),
        })
    }

    /// The template's Jinja source.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Renders the conversation; with `add_generation_prompt` the text ends where the assistant's
    /// reply should begin.
    pub fn render(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> Result<String, ChatError> {
        let template = self
            .env
            .get_template(NAME)
            .map_err(|e| ChatError::Template {
                reason: describe(&e),
            })?;
        let ctx = minijinja::context! {
            messages => Value::from_serialize(messages),
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos_token.as_deref().unwrap_or(""),
            eos_token => self.eos_token.as_deref().unwrap_or(""),
        };
        template.render(ctx).map_err(|e| ChatError::Render {
            reason: describe(&e),
        })
    }
}

/// minijinja's Display plus the line, which its Display leaves out for named templates.
fn describe(e: &JinjaError) -> String {
    match e.line() {
        Some(line) => format!("{e} (template line {line})"),
        None => e.to_string(),
    }
}

/// Python's `datetime.now().strftime(format)` for the codes chat templates use, in UTC (the
/// process has no time zone database): `%d %m %Y %y %b %B %a %A %H %M %S %j %%`.
fn strftime_now(format: String) -> Result<Value, JinjaError> {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    strftime_utc(&format, secs).map(Value::from)
}

/// `format` for the UTC time `secs` seconds after the Unix epoch (see [`strftime_now`]).
pub(crate) fn strftime_utc(format: &str, secs: u64) -> Result<String, JinjaError> {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    const DAYS: [&str; 7] = [
        "Monday",
        "Tuesday",
        "Wednesday",
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
    ];
    let days = secs / 86_400;
    let (year, month, day) = civil_from_days(days);
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let before = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334][month as usize - 1];
    let yday = before + day + u64::from(leap && month > 2);
    // 1970-01-01 was a Thursday (index 3 from Monday).
    let weekday = ((days + 3) % 7) as usize;
    let (h, m, s) = (secs / 3600 % 24, secs / 60 % 60, secs % 60);
    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let month_name = MONTHS[month as usize - 1];
        match chars.next() {
            Some('d') => out.push_str(&format!("{day:02}")),
            Some('m') => out.push_str(&format!("{month:02}")),
            Some('Y') => out.push_str(&year.to_string()),
            Some('y') => out.push_str(&format!("{:02}", year % 100)),
            Some('b') => out.push_str(&month_name[..3]),
            Some('B') => out.push_str(month_name),
            Some('a') => out.push_str(&DAYS[weekday][..3]),
            Some('A') => out.push_str(DAYS[weekday]),
            Some('H') => out.push_str(&format!("{h:02}")),
            Some('M') => out.push_str(&format!("{m:02}")),
            Some('S') => out.push_str(&format!("{s:02}")),
            Some('j') => out.push_str(&format!("{yday:03}")),
            Some('%') => out.push('%'),
            other => {
                return Err(JinjaError::new(
                    ErrorKind::InvalidOperation,
                    format!(
                        "strftime_now: unsupported format code %{}",
                        other.map_or(String::new(), String::from)
                    ),
                ))
            }
        }
    }
    Ok(out)
}

/// (year, month 1–12, day 1–31) of the day `days` after 1970-01-01 (proleptic Gregorian).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    // Shift to an era starting 0000-03-01, so leap days fall at the end of each year.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

fn raise_exception(message: String) -> Result<Value, JinjaError> {
    Err(JinjaError::new(ErrorKind::InvalidOperation, message))
}

/// `tojson` as Python's `json.dumps(value, ensure_ascii=False, indent=indent, sort_keys=sort_keys)`
/// prints it: `", "` and `": "` separators, non-ASCII kept literal.
fn tojson(value: &Value, indent: Option<Value>, kwargs: Kwargs) -> Result<Value, JinjaError> {
    let indent = match indent.or(kwargs.get::<Option<Value>>("indent")?) {
        None => None,
        Some(v) if v.is_none() || v.is_undefined() => None,
        Some(v) => Some(usize::try_from(v.clone()).map_err(|_| {
            JinjaError::new(
                ErrorKind::InvalidOperation,
                format!("tojson: indent must be an integer, got {v}"),
            )
        })?),
    };
    let sort_keys = kwargs.get::<Option<bool>>("sort_keys")?.unwrap_or(false);
    let _ = kwargs.get::<Option<Value>>("ensure_ascii")?; // always False in spirit: output is UTF-8
    kwargs.assert_all_used()?;
    let json = serde_json::to_value(value)
        .map_err(|e| JinjaError::new(ErrorKind::InvalidOperation, format!("tojson: {e}")))?;
    let mut out = String::new();
    write_py_json(&json, indent, sort_keys, 0, &mut out);
    Ok(Value::from_safe_string(out))
}

fn write_py_json(
    v: &serde_json::Value,
    indent: Option<usize>,
    sort_keys: bool,
    level: usize,
    out: &mut String,
) {
    use serde_json::Value as J;
    let newline = |out: &mut String, level: usize| {
        if let Some(n) = indent {
            out.push('\n');
            out.extend(std::iter::repeat_n(' ', n * level));
        }
    };
    let sep = if indent.is_some() { "," } else { ", " };
    match v {
        J::Null => out.push_str("null"),
        J::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        J::Number(n) => out.push_str(&n.to_string()),
        J::String(s) => out.push_str(&serde_json::Value::String(s.clone()).to_string()),
        J::Array(items) if items.is_empty() => out.push_str("[]"),
        J::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(sep);
                }
                newline(out, level + 1);
                write_py_json(item, indent, sort_keys, level + 1, out);
            }
            newline(out, level);
            out.push(']');
        }
        J::Object(map) if map.is_empty() => out.push_str("{}"),
        J::Object(map) => {
            let mut entries: Vec<(&String, &serde_json::Value)> = map.iter().collect();
            if sort_keys {
                entries.sort_by(|a, b| a.0.cmp(b.0));
            }
            out.push('{');
            for (i, (k, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push_str(sep);
                }
                newline(out, level + 1);
                out.push_str(&serde_json::Value::String(k.clone()).to_string());
                out.push_str(": ");
                write_py_json(item, indent, sort_keys, level + 1, out);
            }
            newline(out, level);
            out.push('}');
        }
    }
}

/// The Python string and dict methods that chat templates call.
fn python_method(
    _state: &State,
    value: &Value,
    method: &str,
    args: &[Value],
) -> Result<Value, JinjaError> {
    let call = Call { method, args };
    match value.kind() {
        ValueKind::String => str_method(value.as_str().unwrap_or(""), &call),
        ValueKind::Map => map_method(value, &call),
        _ => unknown(),
    }
}

fn unknown() -> Result<Value, JinjaError> {
    Err(JinjaError::from(ErrorKind::UnknownMethod))
}

/// One method call's name and arguments, for argument errors that name the method.
struct Call<'a> {
    method: &'a str,
    args: &'a [Value],
}

impl<'a> Call<'a> {
    fn bad_args(&self, what: &str) -> JinjaError {
        JinjaError::new(
            ErrorKind::InvalidOperation,
            format!("{}(): {what}", self.method),
        )
    }

    /// Argument `i` as a string; absent or `none` is `None`, as Python's optional arguments.
    fn str_arg(&self, i: usize) -> Result<Option<&'a str>, JinjaError> {
        match self.args.get(i) {
            None => Ok(None),
            Some(v) if v.is_none() => Ok(None),
            Some(v) => v
                .as_str()
                .map(Some)
                .ok_or_else(|| self.bad_args("expected a string argument")),
        }
    }

    /// Argument `i` as an integer, if it is one and not negative.
    fn count_arg(&self, i: usize) -> Option<usize> {
        self.args
            .get(i)
            .and_then(|n| i64::try_from(n.clone()).ok())
            .filter(|&n| n >= 0)
            .map(|n| n as usize)
    }

    /// Argument `i` as a string, which the method needs.
    fn needed_str(&self, i: usize) -> Result<&'a str, JinjaError> {
        self.str_arg(i)?
            .ok_or_else(|| self.bad_args("missing argument"))
    }

    fn first(&self) -> Result<&'a Value, JinjaError> {
        self.args
            .first()
            .ok_or_else(|| self.bad_args("missing argument"))
    }
}

/// `str` methods, one family per function.
fn str_method(s: &str, call: &Call) -> Result<Value, JinjaError> {
    Ok(match call.method {
        "strip" | "lstrip" | "rstrip" => strip(s, call)?,
        "upper" => Value::from(s.to_uppercase()),
        "lower" => Value::from(s.to_lowercase()),
        "title" | "capitalize" => recase(s, call.method == "title"),
        "startswith" | "endswith" => affix(s, call)?,
        "replace" => replace(s, call)?,
        "split" => split(s, call)?,
        "join" => join(s, call)?,
        "find" => find(s, call)?,
        "count" => count(s, call)?,
        "isdigit" => Value::from(!s.is_empty() && s.chars().all(|c| c.is_ascii_digit())),
        "isspace" => Value::from(!s.is_empty() && s.chars().all(char::is_whitespace)),
        _ => return unknown(),
    })
}

/// `strip`, `lstrip`, `rstrip`: whitespace, or the characters of the argument.
fn strip(s: &str, call: &Call) -> Result<Value, JinjaError> {
    let chars = call.str_arg(0)?;
    let pred = |c: char| match chars {
        None => c.is_whitespace(),
        Some(set) => set.contains(c),
    };
    Ok(Value::from(match call.method {
        "strip" => s.trim_matches(pred),
        "lstrip" => s.trim_start_matches(pred),
        _ => s.trim_end_matches(pred),
    }))
}

/// `title` (each word's first letter up, the rest down) or `capitalize` (only the first).
fn recase(s: &str, title: bool) -> Value {
    let mut out = String::with_capacity(s.len());
    let mut at_word_start = true;
    for (i, c) in s.chars().enumerate() {
        let start = if title { at_word_start } else { i == 0 };
        if start {
            out.extend(c.to_uppercase());
        } else {
            out.extend(c.to_lowercase());
        }
        at_word_start = !c.is_alphanumeric();
    }
    Value::from(out)
}

/// `startswith`, `endswith`: one affix, or a tuple/list of them as Python allows.
fn affix(s: &str, call: &Call) -> Result<Value, JinjaError> {
    let test = |p: &str| {
        if call.method == "startswith" {
            s.starts_with(p)
        } else {
            s.ends_with(p)
        }
    };
    let arg = call.first()?;
    if let Some(p) = arg.as_str() {
        return Ok(Value::from(test(p)));
    }
    let mut any = false;
    for p in arg.try_iter()? {
        any |= test(
            p.as_str()
                .ok_or_else(|| call.bad_args("expected strings"))?,
        );
    }
    Ok(Value::from(any))
}

/// `replace(old, new[, count])`; a negative or missing count replaces all.
fn replace(s: &str, call: &Call) -> Result<Value, JinjaError> {
    let (from, to) = match (call.str_arg(0)?, call.str_arg(1)?) {
        (Some(f), Some(t)) => (f, t),
        _ => return Err(call.bad_args("expected two strings")),
    };
    Ok(Value::from(match call.count_arg(2) {
        Some(n) => s.replacen(from, to, n),
        None => s.replace(from, to),
    }))
}

/// `split([sep[, maxsplit]])`; without a separator, runs of whitespace split and edges are dropped.
fn split(s: &str, call: &Call) -> Result<Value, JinjaError> {
    let max = call.count_arg(1);
    let parts: Vec<Value> = match (call.str_arg(0)?, max) {
        (Some(sep), Some(m)) => s.splitn(m + 1, sep).map(Value::from).collect(),
        (Some(sep), None) => s.split(sep).map(Value::from).collect(),
        (None, Some(m)) => {
            let mut rest = s.trim_start();
            let mut parts = Vec::new();
            while !rest.is_empty() && parts.len() < m {
                let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
                parts.push(Value::from(&rest[..end]));
                rest = rest[end..].trim_start();
            }
            if !rest.is_empty() {
                parts.push(Value::from(rest));
            }
            parts
        }
        (None, None) => s.split_whitespace().map(Value::from).collect(),
    };
    Ok(Value::from(parts))
}

/// `sep.join(strings)`.
fn join(sep: &str, call: &Call) -> Result<Value, JinjaError> {
    let mut out = String::new();
    for (i, item) in call.first()?.try_iter()?.enumerate() {
        if i > 0 {
            out.push_str(sep);
        }
        out.push_str(
            item.as_str()
                .ok_or_else(|| call.bad_args("expected strings"))?,
        );
    }
    Ok(Value::from(out))
}

/// `find(sub)`: the index in characters, as Python counts, or -1.
fn find(s: &str, call: &Call) -> Result<Value, JinjaError> {
    let needle = call.needed_str(0)?;
    Ok(Value::from(
        s.find(needle)
            .map(|b| s[..b].chars().count() as i64)
            .unwrap_or(-1),
    ))
}

/// `count(sub)`: non-overlapping matches; the empty string matches between every character.
fn count(s: &str, call: &Call) -> Result<Value, JinjaError> {
    let needle = call.needed_str(0)?;
    Ok(Value::from(if needle.is_empty() {
        s.chars().count() + 1
    } else {
        s.matches(needle).count()
    }))
}

/// `dict` methods.
fn map_method(map: &Value, call: &Call) -> Result<Value, JinjaError> {
    match call.method {
        "items" => {
            let mut out = Vec::new();
            for k in map.try_iter()? {
                let v = map.get_item(&k)?;
                out.push(Value::from(vec![k, v]));
            }
            Ok(Value::from(out))
        }
        "keys" => Ok(Value::from(map.try_iter()?.collect::<Vec<_>>())),
        "values" => {
            let mut out = Vec::new();
            for k in map.try_iter()? {
                out.push(map.get_item(&k)?);
            }
            Ok(Value::from(out))
        }
        "get" => {
            let key = call
                .args
                .first()
                .ok_or_else(|| call.bad_args("missing key"))?;
            let v = map.get_item(key)?;
            Ok(if v.is_undefined() {
                call.args.get(1).cloned().unwrap_or(Value::from(()))
            } else {
                v
            })
        }
        _ => unknown(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMOLLM2: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    #[test]
    fn smollm2_user_only_gets_default_system() {
        let t = ChatTemplate::new(SMOLLM2, None, Some("<|im_end|>")).unwrap();
        let msgs = [Message::new("user", "What is 2+2?")];
        assert_eq!(
            t.render(&msgs, true).unwrap(),
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n\
             <|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"
        );
        assert_eq!(
            t.render(&msgs, false).unwrap(),
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n\
             <|im_start|>user\nWhat is 2+2?<|im_end|>\n"
        );
    }

    #[test]
    fn smollm2_with_system_and_history() {
        let t = ChatTemplate::new(SMOLLM2, None, None).unwrap();
        let msgs = [
            Message::new("system", "Be terse."),
            Message::new("user", "Hi"),
            Message::new("assistant", "Hello."),
            Message::new("user", "你好 😀"),
        ];
        assert_eq!(
            t.render(&msgs, true).unwrap(),
            "<|im_start|>system\nBe terse.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n\
             <|im_start|>assistant\nHello.<|im_end|>\n<|im_start|>user\n你好 😀<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn python_isms_and_block_trimming() {
        // A Llama/Zephyr-flavoured template: bos_token, .strip(), raise_exception, trim_blocks.
        let src = "{{ bos_token }}\n{% for m in messages %}\n{% if m['role'] not in ['user', 'assistant'] %}\n{{ raise_exception('bad role: ' + m['role']) }}\n{% endif %}\n    {% if m.role == 'user' %}\n[INST] {{ m['content'].strip() }} [/INST]\n{% else %}\n{{ m.content.lstrip('>').upper() }}{{ eos_token }}\n{% endif %}\n{% endfor %}";
        let t = ChatTemplate::new(src, Some("<s>"), Some("</s>")).unwrap();
        let ok = [
            Message::new("user", "  hello \n"),
            Message::new("assistant", ">>ok"),
        ];
        // trim_blocks eats the newline after a block tag only, never after `{{ ... }}`.
        assert_eq!(
            t.render(&ok, false).unwrap(),
            "<s>\n[INST] hello [/INST]\nOK</s>\n"
        );
        match t.render(&[Message::new("tool", "x")], false) {
            Err(ChatError::Render { reason }) => {
                assert!(reason.contains("bad role: tool"), "{reason}")
            }
            other => panic!("expected a render error, got {other:?}"),
        }
    }

    #[test]
    fn string_and_dict_methods() {
        let t = ChatTemplate::new(
            "{{ 'a,b,,c'.split(',') | join('|') }} {{ ' x  y '.split() | length }} \
             {{ 'hello'.startswith(('he', 'zz')) }} {{ 'hello'.endswith('lo') }} {{ 'aXa'.replace('a', 'b') }} \
             {{ '-'.join(['p', 'q']) }} {{ 'hi there'.title() }} \
             {% for k, v in {'k': 1}.items() %}{{ k }}={{ v }}{% endfor %} {{ {'a': 1}.get('b', 'dflt') }}",
            None,
            None,
        )
        .unwrap();
        assert_eq!(
            t.render(&[], false).unwrap(),
            "a|b||c 2 True True bXb p-q Hi There k=1 dflt"
        );
    }

    #[test]
    fn tojson_prints_like_python() {
        let t = ChatTemplate::new(
            "{{ messages[0] | tojson }}|{{ messages | tojson(indent=2) }}|{{ {'b': [1, 2.5, none, true], 'a': '<é>'} | tojson(sort_keys=true) }}",
            None,
            None,
        )
        .unwrap();
        let out = t.render(&[Message::new("user", "q\"é\n")], false).unwrap();
        // Keys in insertion order, as Python's dicts (serde_json's `preserve_order`, which
        // llguidance turns on): a message prints `role` before `content`, as in transformers.
        assert_eq!(
            out,
            "{\"role\": \"user\", \"content\": \"q\\\"é\\n\"}|[\n  {\n    \"role\": \"user\",\n    \"content\": \"q\\\"é\\n\"\n  }\n]|{\"a\": \"<é>\", \"b\": [1, 2.5, null, true]}"
        );
    }

    #[test]
    fn strftime_in_utc() {
        let f = "%d %b %Y|%a %A %B %m %y %H:%M:%S %j %%";
        for (secs, want) in [
            (0, "01 Jan 1970|Thu Thursday January 01 70 00:00:00 001 %"),
            (
                951_782_400,
                "29 Feb 2000|Tue Tuesday February 02 00 00:00:00 060 %",
            ),
            (
                1_721_955_723,
                "26 Jul 2024|Fri Friday July 07 24 01:02:03 208 %",
            ),
            (
                4_102_444_799,
                "31 Dec 2099|Thu Thursday December 12 99 23:59:59 365 %",
            ),
        ] {
            assert_eq!(strftime_utc(f, secs).unwrap(), want, "{secs}");
        }
        assert!(strftime_utc("%Q", 0).is_err());
    }

    #[test]
    fn bad_template_is_an_error_not_a_panic() {
        assert!(matches!(
            ChatTemplate::new("{% for m in messages %}", None, None),
            Err(ChatError::Template { .. })
        ));
        assert!(matches!(
            ChatTemplate::new("{{ 1 + }}", None, None),
            Err(ChatError::Template { .. })
        ));
        let t = ChatTemplate::new("{{ messages[0].content.nosuchmethod() }}", None, None).unwrap();
        assert!(matches!(
            t.render(&[Message::new("user", "x")], false),
            Err(ChatError::Render { .. })
        ));
        assert_eq!(
            ChatTemplate::new("{{ 1 }}", None, None).unwrap().source(),
            "{{ 1 }}"
        );
    }

    #[test]
    fn runaway_template_runs_out_of_fuel_instead_of_hanging() {
        let source = "{% for i in range(100000) %}{% for j in range(100000) %}\
                      {% for k in range(100000) %}{{ i }}{% endfor %}{% endfor %}{% endfor %}";
        let t = ChatTemplate::new(source, None, None).unwrap();
        let started = std::time::Instant::now();
        let err = t.render(&[Message::new("user", "x")], false).unwrap_err();
        assert!(matches!(err, ChatError::Render { .. }), "{err}");
        assert!(err.to_string().contains("fuel"), "{err}");
        assert!(started.elapsed() < std::time::Duration::from_secs(60));
    }

    #[test]
    fn long_conversations_fit_in_the_fuel() {
        // A ChatML template like SmolLM2's, over 10,000 messages.
        let source = "{% for message in messages %}{% if loop.first and messages[0]['role'] != \
                      'system' %}{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}\
                      {% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + \
                      '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}\
                      {{ '<|im_start|>assistant\n' }}{% endif %}";
        let t = ChatTemplate::new(source, None, None).unwrap();
        let messages: Vec<Message> = (0..10_000)
            .map(|i| Message::new(if i % 2 == 0 { "user" } else { "assistant" }, "hi"))
            .collect();
        let text = t.render(&messages, true).unwrap();
        assert!(text.ends_with("<|im_start|>assistant\n"));
    }
}
