#!/usr/bin/env python3
"""Last-position logits of quantized models against a reference model (docs/accuracy.md).

    scripts/accuracy.py --reference weights/SmolLM2-135M-Instruct-F32 DIR [DIR ...]
        [--infer target/release/infer] [--acts q8|q8x2] [--text FILE]

For each of twelve short prompts, runs `infer run -n 1 --temp 0 --dump-logits` on the reference and
on every model directory, and prints per model the worst and median cosine similarity of the
last-position logits and how many prompts reach 0.99 / 0.999. With --text FILE it also prints each
model's `infer perplexity` on that text and the ratio to the reference's. Only the standard library.
"""

import argparse
import json
import math
import os
import struct
import subprocess
import sys
import tempfile

PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):",
    "The quick brown fox",
    "import numpy as np",
    "Once upon a time",
    "The three primary colors are",
    "Rust is a language that",
    "To make a cup of tea, first",
    "The largest planet in the solar system is",
    "SELECT name FROM users WHERE",
    "Water boils at a temperature of",
    "My favourite book is",
]


def logits(infer, model, prompt, acts, tmp):
    path = os.path.join(tmp, "logits.bin")
    subprocess.run(
        [infer, "run", "-m", model, "-n", "1", "--temp", "0", "--acts", acts,
         "--dump-logits", path, prompt],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    data = open(path, "rb").read()
    return struct.unpack(f"<{len(data) // 4}f", data)


def cosine(a, b):
    n = min(len(a), len(b))  # the first row: the last prompt position
    ab = sum(x * y for x, y in zip(a[:n], b[:n]))
    aa = sum(x * x for x in a[:n])
    bb = sum(y * y for y in b[:n])
    return ab / math.sqrt(aa * bb) if aa > 0 and bb > 0 else 0.0


def perplexity(infer, model, text, acts):
    out = subprocess.run(
        [infer, "perplexity", "-m", model, "-f", text, "--json", "--acts", acts],
        check=True, capture_output=True, text=True,
    ).stdout
    return json.loads(out)["perplexity"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+")
    ap.add_argument("--reference", required=True)
    ap.add_argument("--infer", default="target/release/infer")
    ap.add_argument("--acts", default="q8", choices=["q8", "q8x2"])
    ap.add_argument("--text")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        vocab = None
        ref = []
        for p in PROMPTS:
            row = logits(args.infer, args.reference, p, args.acts, tmp)
            vocab = vocab or len(row)
            ref.append(row)
        ref_ppl = perplexity(args.infer, args.reference, args.text, args.acts) if args.text else None
        if ref_ppl:
            print(f"{args.reference}: perplexity {ref_ppl:.3f}")
        for m in args.models:
            cos = sorted(cosine(logits(args.infer, m, p, args.acts, tmp), r) for p, r in zip(PROMPTS, ref))
            line = (f"{m}: acts {args.acts}: worst cosine {cos[0]:.5f}, median {cos[len(cos) // 2]:.5f}, "
                    f">= 0.99: {sum(c >= 0.99 for c in cos)} of {len(cos)}, >= 0.999: {sum(c >= 0.999 for c in cos)}")
            if ref_ppl:
                ppl = perplexity(args.infer, m, args.text, args.acts)
                line += f"; perplexity {ppl:.3f} ({ppl / ref_ppl - 1:+.1%})"
            print(line, flush=True)


if __name__ == "__main__":
    sys.exit(main())
