#!/usr/bin/env python3
"""`infer serve` through the official `openai` Python client: the server must be usable by it as is.

Starts `infer serve` on the real model with an API key and a small body limit, then checks
models.list(), a chat completion with logprobs (streamed and whole), embeddings (the client asks for
base64), `response_format` `json_schema` answers for 50 random schemas and prompts (validated by the
`jsonschema` package) and `json_object`, penalties, an unknown field (400 naming it), a wrong key
(401) and an oversized body (413).

Usage: scripts/openai-client-test.py [path/to/infer] (default target/debug/infer); needs `pip install
openai` (scripts/openai-client-test.sh makes a venv with it). The equality of the logprobs with the
log-softmax of the logits a session computes for the same request is checked in Rust
(cli/tests/serve.rs, logprobs_are_the_log_softmax_of_the_sampled_logits: this script has no
model of its own); here the client parses them and they are checked for consistency (one per token,
spelling the answer, the greedy token the most likely, a distribution).
"""

import json
import math
import os
import random
import subprocess
import sys

import jsonschema
import openai

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEY = "sk-openai-client-test"
checks = {"passed": 0, "failed": 0}


def check(name, ok, detail=""):
    checks["passed" if ok else "failed"] += 1
    print(("ok   " if ok else "FAIL ") + name + ("" if ok else f": {detail}"), flush=True)


def start(infer):
    model = os.environ.get("EDGEINFER_MODEL_DIR", os.path.join(ROOT, "weights/SmolLM2-135M-Instruct"))
    proc = subprocess.Popen(
        [infer, "serve", "-m", model, "--host", "127.0.0.1", "--port", "0", "-c", "512",
         "--threads", "1", "--log-format", "json", "--api-key", KEY, "--max-body-bytes", "20000"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("FC_")},
    )
    for line in proc.stderr:
        if line.startswith("infer serve: listening on "):
            return proc, line.split("listening on ", 1)[1].strip()
    raise SystemExit(f"infer serve exited ({proc.wait()}) before listening")


def main():
    infer = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "target/debug/infer")
    proc, base = start(infer)
    try:
        run(openai.OpenAI(base_url=base + "/v1", api_key=KEY, max_retries=0), base)
    finally:
        proc.kill()
        proc.wait()
    print(f"{checks['passed']} passed, {checks['failed']} failed")
    sys.exit(1 if checks["failed"] else 0)


def run(client, base):
    models = client.models.list()
    ids = [m.id for m in models.data]
    check("models.list() names the served model", ids == ["SmolLM2-135M-Instruct"], ids)

    messages = [{"role": "user", "content": "What is the capital of France?"}]
    chat = client.chat.completions.create(
        model=ids[0], messages=messages, max_tokens=6, temperature=0, logprobs=True, top_logprobs=3)
    content = chat.choices[0].logprobs.content
    check("chat logprobs: one per token", len(content) == chat.usage.completion_tokens,
          (len(content), chat.usage))
    check("chat logprobs: tokens spell the answer",
          "".join(t.token for t in content) == chat.choices[0].message.content)
    check("chat logprobs: greedy picks the most likely token",
          all(t.top_logprobs[0].token == t.token and abs(t.top_logprobs[0].logprob - t.logprob) < 1e-6
              for t in content))
    check("chat logprobs: a distribution",
          all(t.logprob <= 0 and sum(math.exp(a.logprob) for a in t.top_logprobs) <= 1 + 1e-5
              for t in content))

    stream = client.chat.completions.create(
        model=ids[0], messages=messages, max_tokens=6, temperature=0, logprobs=True, top_logprobs=3,
        stream=True)
    streamed = [t for c in stream for ch in c.choices if ch.logprobs and ch.logprobs.content
                for t in ch.logprobs.content]
    # A repeated prompt is served from the prefix cache (its last token recomputed alone), so its
    # logits may differ in the last bits from the first request's: compare each with its own text.
    check("streamed logprobs: one per token, greedy is the top alternative",
          len(streamed) == 6 and all(t.top_logprobs[0].token == t.token for t in streamed), streamed)

    # The completions API (legacy logprobs).
    prompt = "The capital of France is"
    legacy = client.completions.create(model=ids[0], prompt=prompt, max_tokens=4, temperature=0, logprobs=2)
    lp = legacy.choices[0].logprobs
    check("completions logprobs: legacy shape",
          len(lp.tokens) == 4 and len(lp.token_logprobs) == 4 and len(lp.top_logprobs[0]) == 2
          and "".join(lp.tokens) == legacy.choices[0].text, lp)
    check("completions logprobs: greedy is the top alternative",
          all(abs(max(top.values()) - tl) < 1e-6 for top, tl in zip(lp.top_logprobs, lp.token_logprobs)))

    emb = client.embeddings.create(model=ids[0], input=["a cat on a mat", "a kitten on a rug"])
    vecs = [d.embedding for d in emb.data]
    check("embeddings: two unit vectors of 576",
          len(vecs) == 2 and all(len(v) == 576 and abs(sum(x * x for x in v) - 1) < 1e-3 for v in vecs))

    try:
        client.chat.completions.create(model=ids[0], messages=messages, extra_body={"frobnicate": 1})
        check("unknown field refused", False, "accepted")
    except openai.BadRequestError as e:
        check("unknown field refused with 400 naming it", "frobnicate" in str(e), e)
    try:
        client.chat.completions.create(model=ids[0], messages=messages, logit_bias={"1": 5})
        check("logit_bias refused", False, "accepted")
    except openai.BadRequestError as e:
        check("logit_bias refused with param", e.body.get("param") == "logit_bias", e.body)

    schemas(client, ids[0])

    bad = openai.OpenAI(base_url=base + "/v1", api_key="sk-wrong", max_retries=0)
    try:
        bad.models.list()
        check("wrong key refused", False, "accepted")
    except openai.AuthenticationError as e:
        check("wrong key refused with 401", e.status_code == 401, e)

    try:
        client.chat.completions.create(
            model=ids[0], messages=[{"role": "user", "content": "x" * 30000}], max_tokens=1)
        check("oversized body refused", False, "accepted")
    except openai.APIStatusError as e:
        check("oversized body refused with 413", e.status_code == 413, e)


WORDS = ["name", "city", "age", "count", "colour", "title", "score", "active", "tags", "id", "kind",
         "price", "year", "owner", "label"]
TOPICS = ["a cat", "a book", "a city in Europe", "a programming language", "a planet", "a recipe",
          "a football team", "a song", "a car", "a tree"]


def random_schema(rng, depth=0):
    """A random object schema of the kinds structured-output users write: strings, enums,
    integers with bounds, numbers, booleans, arrays of strings, a nested object; some required."""
    props = {}
    for key in rng.sample(WORDS, rng.randint(1, 4)):
        kind = rng.choice(["string", "enum", "integer", "number", "boolean", "array"]
                          + (["object"] if depth == 0 else []))
        if kind == "string":
            props[key] = {"type": "string", "maxLength": rng.choice([8, 16, 32])}
        elif kind == "enum":
            props[key] = {"enum": rng.sample(["red", "green", "blue", "small", "large", "yes", "no"], 3)}
        elif kind == "integer":
            lo = rng.randint(-5, 50)
            props[key] = {"type": "integer", "minimum": lo, "maximum": lo + rng.randint(1, 1000)}
        elif kind == "number":
            props[key] = {"type": "number"}
        elif kind == "boolean":
            props[key] = {"type": "boolean"}
        elif kind == "array":
            props[key] = {"type": "array", "items": {"type": "string", "maxLength": 12},
                          "maxItems": rng.randint(1, 3)}
        else:
            props[key] = random_schema(rng, depth + 1)
    required = [k for k in props if rng.random() < 0.7]
    return {"type": "object", "properties": props, "required": required,
            "additionalProperties": False}


def schemas(client, model):
    rng = random.Random(2026)
    valid, length, failures = 0, 0, []
    for i in range(50):
        schema = random_schema(rng)
        topic = rng.choice(TOPICS)
        messages = [{"role": "user", "content": f"Describe {topic} as JSON."}]
        chat = client.chat.completions.create(
            model=model, messages=messages, max_tokens=300, temperature=rng.choice([0, 0.7, 1.0]),
            seed=i, response_format={"type": "json_schema",
                                     "json_schema": {"name": f"s{i}", "schema": schema, "strict": True}})
        choice = chat.choices[0]
        if choice.finish_reason == "length":
            length += 1
            continue
        try:
            jsonschema.validate(json.loads(choice.message.content), schema)
            valid += 1
        except (ValueError, jsonschema.ValidationError) as e:
            failures.append((schema, choice.message.content, str(e)[:200]))
    # Cut by max_tokens is allowed (finish_reason `length`); a finished answer must validate.
    check(f"json_schema: {valid} of 50 answers validate, {length} cut by max_tokens, none invalid",
          not failures and valid >= 40, failures[:3])

    chat = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Give me a JSON object about a dog."}],
        max_tokens=120, temperature=0, response_format={"type": "json_object"})
    check("json_object: the answer is a JSON object",
          chat.choices[0].finish_reason == "length"
          or isinstance(json.loads(chat.choices[0].message.content), dict), chat.choices[0])

    messages = [{"role": "user", "content": "Say yes yes yes yes yes."}]
    plain = client.chat.completions.create(model=model, messages=messages, max_tokens=12, temperature=0)
    penal = client.chat.completions.create(model=model, messages=messages, max_tokens=12, temperature=0,
                                           frequency_penalty=2.0, presence_penalty=2.0)
    check("penalties accepted and change a repetitive answer",
          penal.choices[0].message.content != plain.choices[0].message.content,
          (plain.choices[0].message.content, penal.choices[0].message.content))


if __name__ == "__main__":
    main()
