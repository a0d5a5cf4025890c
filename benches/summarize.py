#!/usr/bin/env python3
"""Ours vs candle from the last `cargo bench --bench kernels` run, as a Markdown table.

Reads criterion's `target/criterion/<group>/<variant>/<shape>/new/{benchmark,estimates}.json` (the
latest run of each benchmark, whatever baselines were saved) and prints, for every group and shape,
the GB/s (10^9 bytes of weights per second, from the median time) of each variant, our best one, and
its ratio to candle (> 1: ours is faster). Groups without a candle peer (the dense ones) get no ratio.
Batched groups (`..._n64`, `..._n512`) read each weight once per call but are compute-bound, so their
GB/s are small; they also get the best variant's and candle's multiply-adds per second (GMAC/s).

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
    """{group: {shape: {variant: GB/s}}} for every benchmark with a byte throughput."""
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
        group, variant, shape = meta["group_id"], meta.get("function_id"), meta.get("value_str")
        if variant is None or shape is None:
            continue
        out.setdefault(group, {}).setdefault(shape, {})[variant] = nbytes / ns
    return out


def fmt(x: float) -> str:
    """Three significant digits, so the batched groups' small GB/s stay readable."""
    return f"{x:.3g}" if x < 100 else f"{x:.0f}"


def gmacs(group: str, shape: str, gbs: float):
    """Multiply-adds per ns for a batched group, from its GB/s and the weight's bytes per element."""
    m = re.search(r"_n(\d+)$", group)
    fm = re.match(r"mat(?:vec|mul)_(q8_0|q4_0|q4_1)_", group)
    if not m or not fm:
        return None
    bytes_per_elem = {"q8_0": 34 / 32, "q4_0": 18 / 32, "q4_1": 20 / 32}[fm.group(1)]
    return gbs / bytes_per_elem * int(m.group(1))


def shape_key(shape: str):
    try:
        r, c = shape.split("x")
        return (int(r) * int(c), int(r))
    except ValueError:
        return (0, 0)


def group_key(group: str):
    # matvec before matmul, n64 before n512, formats in a fixed order.
    mode = 0 if group.startswith("matvec") else (1 if "n64" in group else 2)
    return (mode, group)


def main() -> int:
    root = criterion_dir()
    data = load(root)
    if not data:
        print(f"no criterion results under {root}; run `cargo bench --bench kernels` first", file=sys.stderr)
        return 1
    for group in sorted(data, key=group_key):
        shapes = data[group]
        variants = sorted({v for s in shapes.values() for v in s} - {PEER})
        has_peer = any(PEER in s for s in shapes.values())
        batched = gmacs(group, "", 1.0) is not None
        cols = ["shape"] + variants + ([PEER, "best ours", "ours/candle"] if has_peer else ["best"])
        if batched:
            cols += ["best GMAC/s", "candle GMAC/s"]
        print(f"\n### {group} (GB/s of weights)\n")
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
                cells.append(fmt(gmacs(group, shape, ours[best])) if best else "–")
                cells.append(fmt(gmacs(group, shape, peer)) if peer else "–")
            print("| " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
