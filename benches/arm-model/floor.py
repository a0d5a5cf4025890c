#!/usr/bin/env python3
"""The floor under a q4_0 prefill tile on each chip, by llvm-mca (docs/arm.md, "The prefill floor").

    python3 benches/arm-model/floor.py [--mca llvm-mca-19]

Writes ideal loop bodies (not compiled code: the fewest instructions any kernel of the kind needs)
for one 32-weight block of eight q4_0 rows times T tokens, with the weights already in registers'
reach, and prints llvm-mca's resource bound ("Block RThroughput", which ignores every dependency)
in cycles per block-row and token:

- `sdot` bodies (every chip with dotprod): per block, eight 16-byte loads of the eight rows'
  quants packed two rows per byte (the rows8 layout), eight `and` for the low nibbles, and per
  token 16 `sdot` (32 weights times eight rows is 256 multiply-adds, 16 per `sdot`) and the
  least scaling any per-block-scaled format needs: per four outputs one int-to-float step, one
  multiply forming `dw·dx` and one fused multiply-add.
- `smmla` bodies (i8mm: Graviton3 and 4): per block eight loads, eight `and` and eight `ushr`
  (nibbles to bytes), per two rows and two tokens four `smmla` (32 multiply-adds each) and the
  same scaling per output vector (two rows times two tokens).

The bound is divided by 8·T block-rows and tokens and set against llama.cpp's best prefill tile
(`ggml_gemm_q4_0_*`) as `run.sh` modelled it for the same chip on 2026-12-07 (LLAMA below).
"""

import argparse
import re
import subprocess

# llama.cpp's best q4_0 gemm, cycles per 32-weight block-row and token (run.sh, llvm-mca 19,
# llama.cpp 0c1e57098, gcc 12.2 -O3 -mcpu=<chip>): 18 bytes / bytes-per-cycle of the tile row.
LLAMA = {
    "neoverse-n1": ("gemm_q4_0_4x4", 18 / 10.86),
    "tsv110": ("gemm_q4_0_4x4", 18 / 10.91),
    "neoverse-n2": ("gemm_q4_0_4x8", 18 / 14.04),
    "neoverse-v1": ("gemm_q4_0_4x8", 18 / 28.04),
    "neoverse-v2": ("gemm_q4_0_4x8", 18 / 28.05),
}
I8MM = {"neoverse-n2", "neoverse-v1", "neoverse-v2"}


def scaling(outs):
    """Per output vector: int-to-float, the dw·dx product, the fused multiply-add."""
    body = []
    for i, a in enumerate(outs):
        body += [
            f"scvtf v28.4s, {a}.4s",
            f"fmul v29.4s, v30.4s, v{24 + i % 3}.4s",
            f"fmla v27.4s, v28.4s, v29.4s",
        ]
    return body


def sdot_body(tokens):
    body = [f"ldr q{i}, [x0, #{16 * i}]" for i in range(8)]
    body += [f"and v{8 + i}.16b, v{i}.16b, v31.16b" for i in range(8)]
    outs = []
    for t in range(tokens):
        body += [f"ldp q16, q17, [x1, #{32 * (t % 8)}]"]
        a, b = f"v{18 + 2 * (t % 3)}", f"v{19 + 2 * (t % 3)}"
        for i in range(8):
            x = 16 + i // 4
            body += [
                f"sdot {a}.4s, v{i}.16b, v{x}.4b[{i % 4}]",
                f"sdot {b}.4s, v{8 + i}.16b, v{x}.4b[{i % 4}]",
            ]
        outs += [a, b]
    return body + scaling(outs)


def smmla_body(tokens):
    body = [f"ldr q{i}, [x0, #{16 * i}]" for i in range(8)]
    for i in range(8):
        body += [f"and v{8 + i}.16b, v{i}.16b, v31.16b", f"ushr v{i}.16b, v{i}.16b, #4"]
    outs = []
    for tp in range(tokens // 2):
        body += ["ldp q16, q17, [x1]", "ldp q18, q19, [x1, #32]"]
        for rp in range(4):
            a = f"v{20 + (rp + tp) % 4}"
            for kc in range(4):
                body += [f"smmla {a}.4s, v{(kc % 2) * 8 + rp * 2 + kc // 2}.16b, v{16 + kc}.16b"]
            outs.append(a)
    return body + scaling(outs)


def bound(mca, chip, body):
    out = subprocess.run(
        [mca, "-mtriple=aarch64", f"-mcpu={chip}", "-mattr=+dotprod,+i8mm", "-iterations=100"],
        input="\n".join(body) + "\n",
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return float(re.search(r"Block RThroughput:\s*([\d.]+)", out).group(1))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mca", default="llvm-mca-19")
    args = ap.parse_args()
    print("| chip | body | tokens | floor, cycles per block-row and token | llama.cpp's best | floor / llama.cpp |")
    print("|---|---|---|---|---|---|")
    for chip, (kernel, theirs) in LLAMA.items():
        kinds = [("sdot", sdot_body)] + ([("smmla", smmla_body)] if chip in I8MM else [])
        for name, make in kinds:
            for tokens in (1, 4, 8) if name == "sdot" else (2, 4, 8):
                floor = bound(args.mca, chip, make(tokens)) / (8 * tokens)
                print(
                    f"| {chip} | {name} | {tokens} | {floor:.3f} | {theirs:.3f} ({kernel}) "
                    f"| {floor / theirs:.2f} |"
                )


if __name__ == "__main__":
    main()
