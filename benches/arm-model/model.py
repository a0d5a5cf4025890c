"""The per-kernel cost model of issue 16: llvm-mca on the hot loops of our aarch64 build and of
llama.cpp's ARM kernels, combined with model shapes and each chip's clock and one-core read bandwidth
into predicted one-core decode tokens/s. Run by run.sh, which builds what this reads; docs/arm.md
says what the numbers mean and what they leave out.
"""

import argparse
import json
import os
import sys

import loops
import measure
import targets
from targets import BLOCK_BYTES, CHIPS, Chip

# name: hidden, intermediate, layers, heads, kv heads, head dim, vocab (all with tied embeddings).
MODELS = {
    "SmolLM2-135M": (576, 1536, 30, 9, 3, 64, 49152),
    "Qwen2.5-0.5B": (896, 4864, 24, 14, 2, 64, 151936),
    "Llama-3.2-1B": (2048, 8192, 16, 32, 8, 64, 128256),
}


def matrices(model: str) -> list[tuple[int, int, int]]:
    """(rows, k, count) of the weight matrices one decoded token multiplies, lm_head apart."""
    h, inter, layers, nh, nkv, hd, _ = MODELS[model]
    q, kv = nh * hd, nkv * hd
    return [(q, h, layers), (kv, h, 2 * layers), (h, q, layers), (inter, h, 2 * layers),
            (h, inter, layers)]


def small_ops(model: str, ctx: int) -> dict[str, float]:
    """Units of the per-token small ops: elements (rmsnorm, quantize, softmax, silu) or f32 MACs
    (attention) at `ctx` positions already in the cache."""
    h, inter, layers, nh, nkv, hd, _ = MODELS[model]
    seen = ctx + 1
    return {
        "rmsnorm": (2 * layers + 1) * h,
        # The inputs of qkv (one quantization serves q, k, v), o, gate/up, down, and lm_head.
        "quantize_acts": layers * (h + nh * hd + h + inter) + h,
        "attn_scores": layers * nh * seen * hd,
        "attn_weighted_sum": layers * nh * seen * hd,
        "softmax": layers * nh * seen,
        "silu_mul": layers * inter,
    }


def kv_bytes(model: str, ctx: int) -> int:
    h, inter, layers, nh, nkv, hd, _ = MODELS[model]
    return 2 * layers * nkv * (ctx + 1) * hd * 2  # keys and values, f16


def measure_all(args) -> list[measure.Measured]:
    out = []
    ours = loops.disassemble(args.ours)
    for mcpu in args.chips:
        dot, mm = targets.features(mcpu)
        for k in targets.ours():
            if (k.variant == "neon_dotprod" and not dot) or (k.variant == "neon_i8mm" and not mm):
                continue
            out += measure.measure(k, ours, mcpu, keep_dir=args.keep)
    if args.llama:
        for chip in CHIPS:
            if chip.mcpu not in args.chips:
                continue
            d = os.path.join(args.llama, chip.gcc)
            funcs = {}
            for obj in ("quants.o", "repack.o"):
                funcs.update(loops.disassemble(os.path.join(d, obj)))
            for k in targets.llamacpp():
                for m in measure.measure(k, funcs, chip.mcpu, chip.sve_bits or 128,
                                         keep_dir=args.keep):
                    m.note = f"{chip.name}: gcc -mcpu={chip.gcc}"
                    m.chip = chip.name
                    out.append(m)
    return out


def pick(ms, engine, op, fmt, mcpu, variant=None, name=None, chip=None):
    for m in ms:
        k = m.kernel
        if (k.engine, k.op, k.fmt, m.mcpu) != (engine, op, fmt, mcpu):
            continue
        if variant and k.variant != variant:
            continue
        if name and k.name != name:
            continue
        if chip and getattr(m, "chip", chip) != chip:
            continue
        return m
    return None


def predict(ms, chip: Chip, engine: str, model: str, fmt: str, ctx: int) -> dict | None:
    """Cycles and bytes of one decoded token; lm_head (the tied embedding) is q8_0 in q4 models."""
    mcpu = chip.mcpu
    vocab, h = MODELS[model][6], MODELS[model][0]
    head_fmt = "q8_0" if fmt.startswith("q4") else fmt
    if fmt.endswith("_rows8"):  # --layout rows8 stores the q8_0 output matrix in rows8 too
        head_fmt = "q8_0_rows8"

    def matvec(f):
        if engine == "edgeinfer":
            return pick(ms, engine, "matvec", f, mcpu, variant=targets.our_variant(chip))
        m = pick(ms, engine, "matvec", f, mcpu, name=targets.llama_matvec(chip, f), chip=chip.name)
        if m is None:  # not vectorized for this chip: vec_dot is what runs then
            m = pick(ms, engine, "matvec", f, mcpu, name=targets.llama_vec_dot(f), chip=chip.name)
        return m

    body, head = matvec(fmt), matvec(head_fmt)
    if engine == "llama.cpp":
        # llama.cpp multiplies the tied embedding with vec_dot (it is not repacked).
        head = pick(ms, engine, "matvec", head_fmt, mcpu, name="ggml_vec_dot_q8_0_q8_0",
                    chip=chip.name)
    if body is None or head is None:
        return None
    cycles = nbytes = 0.0
    for rows, k, count in matrices(model):
        cycles += count * (rows / body.kernel.rows) * body.call_cycles(k)
        nbytes += count * rows * (k // 32) * BLOCK_BYTES[fmt]
    cycles += (vocab / head.kernel.rows) * head.call_cycles(h)
    nbytes += vocab * (h // 32) * BLOCK_BYTES[head_fmt]
    weights = nbytes
    # Small ops: ours for both engines (llama.cpp's are not modelled; a few % of a token).
    for op, units in small_ops(model, ctx).items():
        m = pick(ms, "edgeinfer", op, {"rmsnorm": "f32", "softmax": "f32", "silu_mul": "f32",
                                       "quantize_acts": "q8"}.get(op, "f16"), mcpu)
        if m is not None:
            cycles += units * m.cycles_per_unit
    nbytes += kv_bytes(model, ctx)
    compute = chip.ghz * 1e9 / cycles
    bandwidth = chip.gbs * 1e9 / nbytes
    return {
        "chip": f"{chip.name} ({mcpu})", "engine": engine, "model": model, "format": fmt,
        "op": "decode_token", "kernel": body.kernel.name if engine == "llama.cpp" else
        f"{body.kernel.name}/{targets.our_variant(chip)}",
        "bytes_per_cycle": round(weights / cycles, 2), "cycles_per_token": round(cycles),
        "predicted_decode_tps": round(min(compute, bandwidth), 1),
        "bound": "compute" if compute < bandwidth else "bandwidth",
        "compute_tps": round(compute, 1), "bandwidth_tps": round(bandwidth, 1),
        "bytes_per_token": int(nbytes), "context": ctx,
    }


def kernel_row(m: measure.Measured) -> dict:
    k = m.kernel
    row = {
        "chip": f"{m.chip} ({m.mcpu})" if hasattr(m, "chip") else m.mcpu, "engine": k.engine, "model": None, "format": k.fmt, "op": k.op,
        "kernel": k.name if k.engine == "llama.cpp" else f"{k.name}/{k.variant}",
        "bytes_per_cycle": round(m.bytes_per_cycle, 2) if m.bytes_per_cycle else None,
        "cycles_per_token": None, "predicted_decode_tps": None, "bound": None,
        "unit": {"block": "32-weight block-row" + (" per token" if k.op == "matmul_tile" else ""),
                 "mac": "f32 MAC", "elem": "element"}[k.unit],
        "cycles_per_unit": round(m.cycles_per_unit, 4),
        "cycles_per_iter": round(m.cycles_per_iter, 2), "units_per_iter": m.units_per_iter,
        "block_rthroughput": round(m.rthroughput, 2), "bottleneck": m.bottleneck,
        "function": m.function, "note": m.note,
    }
    if k.op == "matvec":
        # The whole call at SmolLM2's k = 576, or for the 256-element formats at Llama-3.2-1B's 2048.
        call_k = 2048 if k.fmt in targets.KQUANTS else 576
        row["call_k"] = call_k
        row[f"call_bytes_per_cycle_k{call_k}"] = round(m.call_bytes_per_cycle(call_k), 2)
        row["call_overhead_cycles"] = round(m.overhead_cycles or 0, 1)
        row["memcpy_calls"] = m.memcpy_calls
    return row


def table(rows: list[dict]) -> str:
    lines = []
    ks = [r for r in rows if r["op"] != "decode_token"]
    lines.append(f"{'chip':<28} {'engine':<9} {'op':<17} {'fmt':<10} {'kernel':<34} "
                 f"{'cyc/unit':>9} {'B/cyc':>6} {'B/cyc@k':>9}  bottleneck")
    for r in ks:
        bpc = f"{r['bytes_per_cycle']:.2f}" if r["bytes_per_cycle"] else "-"
        call = r.get(f"call_bytes_per_cycle_k{r.get('call_k', 576)}")
        lines.append(f"{r['chip']:<28} {r['engine']:<9} {r['op']:<17} {r['format'] or '-':<10} "
                     f"{r['kernel'][:34]:<34} {r['cycles_per_unit']:>9.3f} {bpc:>6} "
                     f"{(f'{call:.2f}' if call else '-'):>9}  {r['bottleneck'][:60]}")
    lines.append("")
    lines.append(f"{'chip':<28} {'engine':<9} {'model':<13} {'fmt':<10} {'kernel':<26} "
                 f"{'cyc/token':>10} {'B/cyc':>6} {'compute':>8} {'bandw.':>8} {'t/s':>7}  bound")
    for r in rows:
        if r["op"] != "decode_token":
            continue
        lines.append(f"{r['chip']:<28} {r['engine']:<9} {r['model']:<13} {r['format']:<10} "
                     f"{r['kernel'][:26]:<26} {r['cycles_per_token']:>10} "
                     f"{r['bytes_per_cycle']:>6.2f} {r['compute_tps']:>8.1f} "
                     f"{r['bandwidth_tps']:>8.1f} {r['predicted_decode_tps']:>7.1f}  {r['bound']}")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--ours", required=True, help="linked aarch64 release binary with the kernels")
    p.add_argument("--llama", help="folder with <gcc-mcpu>/quants.o and repack.o")
    p.add_argument("--chips", default=",".join(targets.MCPUS), help="llvm-mca -mcpu list")
    p.add_argument("--context", type=int, default=128, help="positions in the cache at decode")
    p.add_argument("--json", help="write the rows here")
    p.add_argument("--keep", help="keep every modelled snippet and llvm-mca report here")
    args = p.parse_args()
    args.chips = [c for c in args.chips.split(",") if c]
    bad = [c for c in args.chips if c not in targets.MCPUS]
    if bad:
        print(f"arm-model: unknown -mcpu {bad} (known: {', '.join(targets.MCPUS)})", file=sys.stderr)
        return 2
    if args.keep:
        os.makedirs(args.keep, exist_ok=True)
    ms = measure_all(args)
    rows = [kernel_row(m) for m in ms]
    for chip in CHIPS:
        if not chip.ghz or chip.mcpu not in args.chips:
            continue
        for model in MODELS:
            for fmt in targets.TOKEN_FORMATS:
                for engine in ("edgeinfer", "llama.cpp") if args.llama else ("edgeinfer",):
                    r = predict(ms, chip, engine, model, fmt, args.context)
                    if r:
                        rows.append(r)
    print(table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
