#!/usr/bin/env python3
"""Ours vs candle from the last `cargo bench --bench kernels` run, as a Markdown table.

Reads criterion's `target/criterion/<kernel>/<variant>/<rows>x<cols>_n<tokens>/new/{benchmark,estimates}.json`
(the latest run of each benchmark, whatever baselines were saved) and prints, for every kernel and
token count, one table: per shape the GB/s (10^9 bytes of weights per second, from the median time)
of each variant, our best one, and its ratio to candle (> 1: ours is faster). Kernels without a
candle peer (the dense ones) get no ratio. Several tokens (prefill, n > 1) read each weight once per
call but are compute-bound, so their GB/s are small; they also get the best variant's and candle's
multiply-adds per second (GMAC/s).

Usage: python3 benches/summarize.py [CRITERION_DIR]   (default: $CARGO_TARGET_DIR or target/, + criterion)
Stdlib only.
"""

import json
import os
import re
import sys
from pathlib import Path

PEER = "candle"


def criterion_dir() -> Path:
    if len(sys.argv) > 1:
        return Path(sys.argv[1])
    target = os.environ.get("CARGO_TARGET_DIR")
    root = Path(target) if target else Path(__file__).resolve().parent.parent / "target"
    return root / "criterion"


def load(root: Path):
    """{(kernel, tokens): {shape: {variant: GB/s}}} for every benchmark with a byte throughput."""
    out = {}
    for bench in root.glob("**/new/benchmark.json"):
        est = bench.with_name("estimates.json")
        if not est.exists():
            continue
        meta = json.loads(bench.read_text())
        tp = meta.get("throughput") or {}
        nbytes = tp.get("Bytes") or tp.get("BytesDecimal")
        if not nbytes:
            continue
        ns = json.loads(est.read_text())["median"]["point_estimate"]
        kernel, variant, value = meta["group_id"], meta.get("function_id"), meta.get("value_str")
        m = re.fullmatch(r"(\d+x\d+)_n(\d+)", value or "")
        if variant is None or not m:
            continue
        shape, tokens = m.group(1), int(m.group(2))
        out.setdefault((kernel, tokens), {}).setdefault(shape, {})[variant] = nbytes / ns
    return out


def fmt(x: float) -> str:
    """Three significant digits, so the prefill tables' small GB/s stay readable."""
    return f"{x:.3g}" if x < 100 else f"{x:.0f}"


def gmacs(kernel: str, tokens: int, gbs: float):
    """Multiply-adds per ns for a quantized product of several tokens, from its GB/s and the weight's
    bytes per element; None for one token or a dense kernel."""
    fm = re.fullmatch(r"matmul_(q8_0|q4_0|q4_1)_q8", kernel)
    if tokens <= 1 or not fm:
        return None
    bytes_per_elem = {"q8_0": 34 / 32, "q4_0": 18 / 32, "q4_1": 20 / 32}[fm.group(1)]
    return gbs / bytes_per_elem * tokens


def shape_key(shape: str):
    r, c = shape.split("x")
    return (int(r) * int(c), int(r))


def table_key(key):
    # Decode before prefill, fewer tokens first, kernels in name order.
    kernel, tokens = key
    return (tokens, kernel)


def main() -> int:
    root = criterion_dir()
    data = load(root)
    if not data:
        print(f"no criterion results under {root}; run `cargo bench --bench kernels` first", file=sys.stderr)
        return 1
    for key in sorted(data, key=table_key):
        kernel, tokens = key
        shapes = data[key]
        variants = sorted({v for s in shapes.values() for v in s} - {PEER})
        has_peer = any(PEER in s for s in shapes.values())
        batched = gmacs(kernel, tokens, 1.0) is not None
        cols = ["shape"] + variants + ([PEER, "best ours", "ours/candle"] if has_peer else ["best"])
        if batched:
            cols += ["best GMAC/s", "candle GMAC/s"]
        print(f"\n### {kernel}, {tokens} token{'s' if tokens > 1 else ''} (GB/s of weights)\n")
        print("| " + " | ".join(cols) + " |")
        print("|" + "|".join(["---"] + ["---:"] * (len(cols) - 1)) + "|")
        for shape in sorted(shapes, key=shape_key):
            row = shapes[shape]
            ours = {v: g for v, g in row.items() if v != PEER}
            best = max(ours, key=ours.get) if ours else None
            cells = [shape] + [fmt(row[v]) if v in row else "–" for v in variants]
            tail = f"{best} {fmt(ours[best])}" if best else "–"
            peer = row.get(PEER)
            if has_peer:
                ratio = f"{ours[best] / peer:.2f}×" if best and peer else "–"
                cells += [fmt(peer) if peer else "–", tail, ratio]
            else:
                cells.append(tail)
            if batched:
                cells.append(fmt(gmacs(kernel, tokens, ours[best])) if best else "–")
                cells.append(fmt(gmacs(kernel, tokens, peer)) if peer else "–")
            print("| " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
