"""Run llvm-mca on a snippet and read what it says: cycles per iteration, block reciprocal throughput,
and the bottleneck (its bottleneck analysis, else the busiest resource of the pressure table)."""

import re
import subprocess
from dataclasses import dataclass

MCA = "llvm-mca-19"


@dataclass
class Result:
    cycles_per_iter: float  # Total Cycles / iterations (dependency chains included)
    rthroughput: float  # Block RThroughput (resources only)
    bottleneck: str
    instructions: int


def run(asm: str, mcpu: str, iterations: int = 200, keep: str | None = None) -> Result:
    args = [MCA, "-mtriple=aarch64", f"-mcpu={mcpu}", f"-iterations={iterations}"]
    args += ["-bottleneck-analysis"]
    p = subprocess.run(args, input=asm, capture_output=True, text=True)
    if keep:
        with open(keep, "w") as f:
            f.write(p.stdout + p.stderr)
    if p.returncode != 0:
        raise RuntimeError(f"llvm-mca -mcpu={mcpu} failed: {p.stderr.strip()[:400]}")
    out = p.stdout
    total = float(re.search(r"Total Cycles:\s+(\d+)", out).group(1))
    insns = int(re.search(r"Instructions:\s+(\d+)", out).group(1)) // iterations
    rthr = float(re.search(r"Block RThroughput:\s+([\d.]+)", out).group(1))
    cpi = total / iterations
    return Result(cpi, rthr, bottleneck(out, cpi, rthr), insns)


def busiest(out: str) -> tuple[str, float]:
    """The resource with the highest pressure per unit, from the 'Resource pressure per iteration'
    table (units of one kind, [2.0] and [2.1], averaged under one name)."""
    names = dict(re.findall(r"^\[([\d.]+)\]\s+-\s+(\S+)", out, re.M))
    m = re.search(r"Resource pressure per iteration:\n(.*)\n(.*)\n", out)
    if not m:
        return "?", 0.0
    cols = re.findall(r"\[([\d.]+)\]", m.group(1))
    vals = [0.0 if v == "-" else float(v) for v in m.group(2).split()]
    per: dict[str, list[float]] = {}
    for c, v in zip(cols, vals):
        per.setdefault(names.get(c, c), []).append(v)
    name, v = max(((n, sum(v) / len(v)) for n, v in per.items()), key=lambda kv: kv[1])
    return name, v


def bottleneck(out: str, cpi: float, rthr: float) -> str:
    """The busiest resource when it is busy most of the time, else a dependency chain (latency: the
    loop-carried accumulators, or a long chain inside one iteration)."""
    name, pressure = busiest(out)
    busy = pressure / cpi if cpi else 0.0
    if busy >= 0.8 or cpi <= 1.15 * rthr:
        return f"{name} {100 * busy:.0f}% busy"
    return f"dependency chain ({name} {100 * busy:.0f}% busy)"
