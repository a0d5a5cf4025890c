//! The chat templates of Qwen2.5, Qwen3 and Llama 3/3.2 (written out as in the models'
//! tokenizer_config.json, in `tests/fixtures/templates/`) rendered with our minijinja setup: a
//! two-turn conversation with a system prompt and the generation prompt, compared to the exact text
//! transformers' `apply_chat_template` produces.

use edgeinfer::chat::ChatTemplate;
use edgeinfer::Message;

fn template(file: &str, bos: Option<&str>, eos: Option<&str>) -> ChatTemplate {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/templates")
        .join(file);
    let source = std::fs::read_to_string(&path).unwrap();
    ChatTemplate::new(&source, bos, eos).unwrap_or_else(|e| panic!("{file}: {e}"))
}

/// System prompt, then user / assistant / user. Contents carry surrounding whitespace, quotes and
/// non-ASCII text so trimming and escaping show.
fn conversation(first_answer: &str) -> Vec<Message> {
    vec![
        Message::new("system", "You are a terse assistant."),
        Message::new("user", "What is the capital of France?"),
        Message::new("assistant", first_answer),
        Message::new("user", "And of \"Österreich\"?"),
    ]
}

#[test]
fn qwen2_5() {
    let t = template("qwen2.5.jinja", None, Some("<|im_end|>"));
    let got = t.render(&conversation("Paris."), true).unwrap();
    let want = "<|im_start|>system\nYou are a terse assistant.<|im_end|>\n\
                <|im_start|>user\nWhat is the capital of France?<|im_end|>\n\
                <|im_start|>assistant\nParis.<|im_end|>\n\
                <|im_start|>user\nAnd of \"Österreich\"?<|im_end|>\n\
                <|im_start|>assistant\n";
    assert_eq!(got, want);
    // Without the generation prompt the text ends after the last user turn.
    let got = t.render(&conversation("Paris."), false).unwrap();
    assert_eq!(got, want.strip_suffix("<|im_start|>assistant\n").unwrap());
    // No system message: Qwen2.5's default one.
    let got = t.render(&[Message::new("user", "Hi")], true).unwrap();
    assert_eq!(
        got,
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n\
         <|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    );
}

#[test]
fn qwen3() {
    let t = template("qwen3.jinja", None, Some("<|im_end|>"));
    let want = "<|im_start|>system\nYou are a terse assistant.<|im_end|>\n\
                <|im_start|>user\nWhat is the capital of France?<|im_end|>\n\
                <|im_start|>assistant\nParis.<|im_end|>\n\
                <|im_start|>user\nAnd of \"Österreich\"?<|im_end|>\n\
                <|im_start|>assistant\n";
    assert_eq!(t.render(&conversation("Paris."), true).unwrap(), want);
    // A past answer's reasoning is dropped (content.split('</think>'), rstrip/lstrip, reverse loop
    // over the messages to find the last user query).
    let thought = "<think>\nThe user asks about France.\n</think>\n\nParis.";
    assert_eq!(t.render(&conversation(thought), true).unwrap(), want);
    // The answer after the last user query keeps its reasoning, re-wrapped.
    let mut msgs = conversation("Paris.");
    msgs.push(Message::new(
        "assistant",
        "<think>\nVienna, surely.\n</think>\n\nVienna.",
    ));
    let got = t.render(&msgs, false).unwrap();
    assert_eq!(
        got,
        want.strip_suffix("<|im_start|>assistant\n")
            .unwrap()
            .to_string()
            + "<|im_start|>assistant\n<think>\nVienna, surely.\n</think>\n\nVienna.<|im_end|>\n"
    );
    // No system message: none is added.
    let got = t.render(&[Message::new("user", "Hi")], true).unwrap();
    assert_eq!(
        got,
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    );
}

/// Today's date as Python's `strftime("%d %b %Y")` prints it in UTC.
fn today() -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // Walk the calendar from 1970: simple and obviously right.
    let mut days = secs / 86_400;
    let mut year = 1970;
    loop {
        let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
        let len = if leap { 366 } else { 365 };
        if days < len {
            let lens = [
                31,
                if leap { 29 } else { 28 },
                31,
                30,
                31,
                30,
                31,
                31,
                30,
                31,
                30,
                31,
            ];
            let mut month = 0;
            while days >= lens[month] {
                days -= lens[month];
                month += 1;
            }
            return format!("{:02} {} {year}", days + 1, MONTHS[month]);
        }
        days -= len;
        year += 1;
    }
}

#[test]
fn llama3_2() {
    let t = template(
        "llama3.2.jinja",
        Some("<|begin_of_text|>"),
        Some("<|eot_id|>"),
    );
    let render = || t.render(&conversation(" Paris. "), true).unwrap();
    let (before, got) = (today(), render());
    let want = |date: &str| {
        format!(
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n\
             Cutting Knowledge Date: December 2023\nToday Date: {date}\n\n\
             You are a terse assistant.<|eot_id|>\
             <|start_header_id|>user<|end_header_id|>\n\nWhat is the capital of France?<|eot_id|>\
             <|start_header_id|>assistant<|end_header_id|>\n\nParis.<|eot_id|>\
             <|start_header_id|>user<|end_header_id|>\n\nAnd of \"Österreich\"?<|eot_id|>\
             <|start_header_id|>assistant<|end_header_id|>\n\n"
        )
    };
    // (A render that straddles midnight UTC may print either day.)
    assert!(
        got == want(&before) || got == want(&today()),
        "{got:?}\n!=\n{:?}",
        want(&before)
    );
    // No system message: an empty one after the dates.
    let got = t.render(&[Message::new("user", "Hi")], false).unwrap();
    assert!(
        got.ends_with("\n\n<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"),
        "{got:?}"
    );
}

#[test]
fn llama3_0() {
    let t = template(
        "llama3.jinja",
        Some("<|begin_of_text|>"),
        Some("<|eot_id|>"),
    );
    let got = t.render(&conversation(" Paris. "), true).unwrap();
    assert_eq!(
        got,
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are a terse assistant.<|eot_id|>\
         <|start_header_id|>user<|end_header_id|>\n\nWhat is the capital of France?<|eot_id|>\
         <|start_header_id|>assistant<|end_header_id|>\n\nParis.<|eot_id|>\
         <|start_header_id|>user<|end_header_id|>\n\nAnd of \"Österreich\"?<|eot_id|>\
         <|start_header_id|>assistant<|end_header_id|>\n\n"
    );
}
