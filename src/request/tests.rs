use super::*;

const LIMITS: Limits = Limits {
    default_max_tokens: 16,
    max_tokens: 100,
};

fn job(body: &str, kind: PromptKind) -> Result<Job, RequestError> {
    GenerateRequest::parse(body.as_bytes())?.into_job(kind, &LIMITS)
}

#[test]
fn accepts_prompt_or_messages() {
    let j = job(
        r#"{"prompt":"hi","max_tokens":5,"temperature":0,"stop":"x"}"#,
        PromptKind::Either,
    )
    .unwrap();
    assert_eq!(j.options.max_tokens, 5);
    assert_eq!(j.options.sampler.temperature, 0.0);
    assert_eq!(j.options.stop, vec!["x".to_string()]);
    let j = job(
        r#"{"messages":[{"role":"user","content":"hi"}],"seed":7}"#,
        PromptKind::Either,
    )
    .unwrap();
    assert!(matches!(j.prompt, JobPrompt::Chat(ref m) if m.len() == 1));
    assert_eq!(j.options.sampler.seed, 7);
    assert_eq!(j.options.max_tokens, 16);
}

#[test]
fn refuses_bad_requests_with_the_field() {
    let cases = [
        ("{", "invalid_json", None),
        (r#"{"prompt":3}"#, "invalid_request", Some("prompt")),
        (r#"[1]"#, "invalid_json", None),
        (
            r#"{"max_tokens":-1}"#,
            "invalid_request",
            Some("max_tokens"),
        ),
        (
            r#"{"prompt":"a","stop":[1]}"#,
            "invalid_request",
            Some("stop"),
        ),
        (r#"{}"#, "invalid_request", Some("prompt")),
        (r#"{"prompt":""}"#, "invalid_request", Some("prompt")),
        (
            r#"{"prompt":"a","max_tokens":0}"#,
            "invalid_request",
            Some("max_tokens"),
        ),
        (
            r#"{"prompt":"a","max_tokens":101}"#,
            "invalid_request",
            Some("max_tokens"),
        ),
        (
            r#"{"prompt":"a","temperature":-1}"#,
            "invalid_request",
            Some("temperature"),
        ),
        (
            r#"{"prompt":"a","top_p":0}"#,
            "invalid_request",
            Some("top_p"),
        ),
        (
            r#"{"prompt":"a","stop":["a","b","c","d","e"]}"#,
            "invalid_request",
            Some("stop"),
        ),
        (r#"{"messages":[]}"#, "invalid_request", Some("messages")),
        (
            r#"{"messages":[{"role":"robot","content":"x"}]}"#,
            "invalid_request",
            Some("messages"),
        ),
        (r#"{"prompt":"a","n":2}"#, "invalid_request", Some("n")),
    ];
    for (body, code, param) in cases {
        let e = job(body, PromptKind::Either).unwrap_err();
        assert_eq!((e.code, e.param), (code, param), "{body}: {e}");
    }
    let e = job(r#"{"prompt":"a"}"#, PromptKind::Chat).unwrap_err();
    assert_eq!(e.param, Some("prompt"));
}

#[test]
fn refuses_fields_it_does_not_implement_by_name() {
    let ok = r#"{"prompt":"a","model":"m","user":"u","stream_options":{"include_usage":true},
                 "echo":false,"best_of":1,"logit_bias":{},"tools":[],"n":1}"#;
    assert!(job(ok, PromptKind::Either).is_ok());
    for (body, param) in [
        (r#"{"prompt":"a","echo":true}"#, "echo"),
        (r#"{"prompt":"a","logit_bias":{"1":5}}"#, "logit_bias"),
        (r#"{"prompt":"a","best_of":3}"#, "best_of"),
        (r#"{"prompt":"a","suffix":"z"}"#, "suffix"),
    ] {
        let e = job(body, PromptKind::Either).unwrap_err();
        assert_eq!((e.code, e.param), ("invalid_request", Some(param)), "{e}");
        assert!(e.message.contains(param), "{e}");
    }
    let e = job(
        r#"{"messages":[{"role":"user","content":"a"}],"tools":[{"type":"function"}],
            "parallel_tool_calls":true}"#,
        PromptKind::Chat,
    )
    .unwrap_err();
    assert_eq!(e.param, Some("tools"), "{e}");
    let e = job(r#"{"prompt":"a","presence_penalty":2.5}"#, PromptKind::Text).unwrap_err();
    assert_eq!(e.param, Some("presence_penalty"), "{e}");
    let j = job(
        r#"{"prompt":"a","presence_penalty":0.5,"frequency_penalty":-1}"#,
        PromptKind::Text,
    )
    .unwrap();
    let c = &j.options.sampler;
    assert_eq!((c.presence_penalty, c.frequency_penalty), (0.5, -1.0));
    assert!(job(r#"{"prompt":"a","frequency_penalty":0}"#, PromptKind::Text).is_ok());
    let e = job(r#"{"prompt":"a","temprature":0.5}"#, PromptKind::Either).unwrap_err();
    assert_eq!((e.code, e.param), ("invalid_request", None), "{e}");
    assert!(e.message.contains("`temprature`"), "{e}");
}

#[test]
fn logprobs_take_each_api_form() {
    let chat = |extra: &str| {
        job(
            &format!(r#"{{"messages":[{{"role":"user","content":"a"}}]{extra}}}"#),
            PromptKind::Chat,
        )
    };
    assert_eq!(chat("").unwrap().logprobs, None);
    assert_eq!(chat(r#","logprobs":true"#).unwrap().logprobs, Some(0));
    assert_eq!(
        chat(r#","logprobs":true,"top_logprobs":5"#)
            .unwrap()
            .logprobs,
        Some(5)
    );
    assert_eq!(chat(r#","logprobs":false"#).unwrap().logprobs, None);
    for (extra, param) in [
        (r#","top_logprobs":2"#, "top_logprobs"),
        (r#","logprobs":true,"top_logprobs":21"#, "top_logprobs"),
        (r#","logprobs":3"#, "logprobs"),
    ] {
        assert_eq!(chat(extra).unwrap_err().param, Some(param), "{extra}");
    }
    let text = job(r#"{"prompt":"a","logprobs":3}"#, PromptKind::Text).unwrap();
    assert_eq!(text.logprobs, Some(3));
    let e = job(r#"{"prompt":"a","logprobs":true}"#, PromptKind::Text).unwrap_err();
    assert_eq!(e.param, Some("logprobs"));
    let e = job(r#"{"prompt":"a","logprobs":2}"#, PromptKind::Either).unwrap_err();
    assert_eq!(e.param, Some("logprobs"));
}

#[test]
fn response_format_becomes_a_constraint() {
    let with = |rf: &str| {
        job(
            &format!(r#"{{"prompt":"a","response_format":{rf}}}"#),
            PromptKind::Text,
        )
    };
    assert!(with(r#"{"type":"text"}"#)
        .unwrap()
        .options
        .constraint
        .is_none());
    assert!(matches!(
        with(r#"{"type":"json_object"}"#)
            .unwrap()
            .options
            .constraint,
        Some(Constraint::JsonObject)
    ));
    let schema = r#"{"type":"json_schema","json_schema":{"name":"x","strict":true,
                     "schema":{"type":"object","properties":{"a":{"type":"integer"}}}}}"#;
    match with(schema).unwrap().options.constraint {
        Some(Constraint::JsonSchema(s)) => {
            assert_eq!(s["properties"]["a"]["type"], "integer")
        }
        other => panic!("{other:?}"),
    }
    for bad in [
        r#"{"type":"yaml"}"#,
        r#"{"type":"json_schema"}"#,
        r#"{"type":"json_schema","json_schema":{"name":"x"}}"#,
    ] {
        assert_eq!(
            with(bad).unwrap_err().param,
            Some("response_format"),
            "{bad}"
        );
    }
}

#[test]
fn caps_prompt_bytes_before_tokenizing() {
    let at_cap = "a".repeat(MAX_PROMPT_BYTES);
    let body = serde_json::json!({"prompt": at_cap}).to_string();
    assert!(job(&body, PromptKind::Text).is_ok());
    let over = serde_json::json!({"prompt": format!("{at_cap}b")}).to_string();
    let e = job(&over, PromptKind::Either).unwrap_err();
    assert_eq!(
        (e.code, e.param),
        ("prompt_too_large", Some("prompt")),
        "{e}"
    );
    assert_eq!(e.to_json()["error"]["code"], "prompt_too_large");

    let half = "a".repeat(MAX_PROMPT_BYTES / 2);
    let two = serde_json::json!({"messages": [
        {"role": "user", "content": half},
        {"role": "assistant", "content": half},
    ]});
    let e = job(&two.to_string(), PromptKind::Chat).unwrap_err();
    assert_eq!(
        (e.code, e.param),
        ("prompt_too_large", Some("messages")),
        "{e}"
    );
    // Empty messages count too.
    let n = MAX_PROMPT_BYTES / MESSAGE_OVERHEAD_BYTES;
    let empty = vec![serde_json::json!({"role": "user", "content": ""}); n];
    let e = job(
        &serde_json::json!({ "messages": empty }).to_string(),
        PromptKind::Chat,
    )
    .unwrap_err();
    assert_eq!(e.code, "prompt_too_large", "{e}");
    let few = vec![serde_json::json!({"role": "user", "content": ""}); 100];
    assert!(job(
        &serde_json::json!({ "messages": few }).to_string(),
        PromptKind::Chat
    )
    .is_ok());
}

#[test]
fn caps_stop_strings() {
    let long = "s".repeat(MAX_STOP_BYTES + 1);
    for stop in [
        serde_json::json!(["a", "b", "c", "d", "e"]),
        serde_json::json!(long),
        serde_json::json!([""]),
    ] {
        let body = serde_json::json!({"prompt": "hi", "stop": stop}).to_string();
        let e = job(&body, PromptKind::Either).unwrap_err();
        assert_eq!((e.code, e.param), ("invalid_request", Some("stop")), "{e}");
    }
    let ok = serde_json::json!({"prompt": "hi", "stop": ["a", "b", "c", "s".repeat(256)]});
    assert_eq!(
        job(&ok.to_string(), PromptKind::Either)
            .unwrap()
            .options
            .stop
            .len(),
        4
    );
}
