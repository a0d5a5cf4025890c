"""One kernel on one llvm-mca model: find its hot loop, model it, and model once what a call runs
outside that loop (its whole-call overhead)."""

import os
import re
from dataclasses import dataclass

import loops
import mca
from targets import BLOCK_BYTES, MIN_FORMATS, Kernel

# glibc's memcpy for a few bytes (our tails copy 2 to 12): about a dozen instructions with one
# branch; charged as a fixed cost, since the call leaves the binary we disassemble.
MEMCPY_CYCLES = 15


@dataclass
class Measured:
    kernel: Kernel
    mcpu: str
    function: str
    cycles_per_iter: float
    rthroughput: float
    units_per_iter: float  # block-rows (per token), f32 MACs or elements
    bottleneck: str
    insns_per_iter: int
    overhead_cycles: float | None  # one call's code outside the hot loop, once
    memcpy_calls: int
    note: str = ""

    @property
    def cycles_per_unit(self) -> float:
        return self.cycles_per_iter / self.units_per_iter

    @property
    def bytes_per_cycle(self) -> float | None:
        if self.kernel.unit != "block":
            return None
        return BLOCK_BYTES[self.kernel.fmt] / self.cycles_per_unit

    def call_cycles(self, k: int) -> float:
        """One call over `kernel.rows` rows of k weights (decode): whole loop iterations plus the
        overhead; a tail shorter than one iteration is in the overhead's code."""
        per_row_iter = self.units_per_iter / self.kernel.rows  # blocks of one row per iteration
        iters = int((k // 32) / per_row_iter + 1e-9)
        return iters * self.cycles_per_iter + (self.overhead_cycles or 0.0)

    def call_bytes_per_cycle(self, k: int) -> float:
        return self.kernel.rows * (k // 32) * BLOCK_BYTES[self.kernel.fmt] / self.call_cycles(k)


def _units(k: Kernel, body: list[loops.Insn], sve_bits: int) -> float:
    m = loops.macs(body, sve_bits)
    if k.unit == "block":
        return m["int"] / 32
    if k.unit == "mac":
        return m["f32"]
    if k.select == "fcvtas":
        return 4 * loops.count(body, lambda i: i.mnem == "fcvtas" and ".4s" in i.ops)
    stores = loops.q_stores(body)
    return 4 * (stores if stores else loops.q_loads(body))



def _select(k: Kernel, fn: loops.Function, sve_bits: int) -> list[tuple[int, int]]:
    inner = fn.innermost()
    body = lambda l: fn.insns[l[0] : l[1] + 1]  # noqa: E731
    vector = [
        l for l in inner
        if loops.q_loads(body(l)) + loops.count(body(l), lambda i: i.mnem == "ld1") > 0
        and not any(i.is_call for i in body(l))
    ]
    if k.select.startswith("loops="):
        # The passes of an element-wise kernel, by their order in the code: LLVM also vectorizes the
        # scalar tails (fewer than 4 elements) into loops of their own, which a length that is a
        # multiple of 8 never enters; the selection names the passes' loops (see the .s files kept).
        want = [int(x) for x in k.select[6:].split(",")]
        return [vector[n] for n in want if n < len(vector)]
    if k.select == "fcvtas":
        return [l for l in vector if _units(k, body(l), sve_bits) > 0][:1]
    cands = [l for l in inner if _units(k, body(l), sve_bits) > 0]
    if k.select == "no-mmla":
        cands = [l for l in cands if not any("mmla" in i.mnem for i in body(l))]
    if k.select == "sve-switch":
        # SVE builds switch on the vector length to one `sdot` loop per length, in code order (128
        # bits, then 256): the MAC count cannot tell them apart (both count their z-register `sdot`
        # at the chip's length, which doubles the 128-bit loop's on a 256-bit chip), the order can.
        # `smmla` loops (two rows at once) are not the one-row dot; a NEON build has one loop.
        cands = [l for l in cands if not any("mmla" in i.mnem for i in body(l))]
        sve = sorted(l for l in cands if any(i.ops.startswith("z") for i in body(l)))
        if sve:
            return sve[1:2] if sve_bits >= 256 and len(sve) > 1 else sve[:1]
    if k.select == "nest":
        loop = _nest(k, fn, sve_bits)
        return [loop] if loop else []
    if k.select.startswith("rows="):
        r = int(k.select[5:]) * (2 if k.fmt in MIN_FORMATS else 1)
        cands = [l for l in cands if loops.count(body(l), lambda i: i.mnem in ("fcvtl", "fcvtl2")) == r]
    if not cands:
        return []
    return [max(cands, key=lambda l: _units(k, body(l), sve_bits))]


def _nest(k: Kernel, fn: loops.Function, sve_bits: int) -> tuple[int, int] | None:
    """The super-block loop of a 'nest' kernel: `k.up` loops above the smallest loop with the most
    MACs."""
    ls = fn.loops()
    if not ls:
        return None
    mac = lambda l: loops.macs(fn.insns[l[0] : l[1] + 1], sve_bits)["int"]  # noqa: E731
    most = max(mac(l) for l in ls)
    if most == 0:
        return None
    loop = min((l for l in ls if mac(l) == most), key=lambda l: l[1] - l[0])
    for _ in range(k.up):
        loop = fn.enclosing(loop)
        if loop is None:
            return None
    return loop


def _nest_trip(k: Kernel, fn: loops.Function, outer: tuple[int, int], sve_bits: int):
    """Trip counts for loops.flatten: the loops that hold the most MACs take `k.trips` by depth below
    `outer`, every other loop `k.side`."""
    mac = lambda l: loops.macs(fn.insns[l[0] : l[1] + 1], sve_bits)["int"]  # noqa: E731
    most = max(mac(l) for l in fn.loops())

    def depth(l):
        return sum(1 for m in fn.loops() if m != l and outer[0] <= m[0] and m[1] <= outer[1]
                   and m[0] <= l[0] and l[1] <= m[1] and m != outer)

    def trip(l):
        d = depth(l)
        if mac(l) == most and d < len(k.trips):
            return k.trips[d]
        return k.side

    return trip


def body_of(k: Kernel, fn: loops.Function, loop: tuple[int, int], sve_bits: int) -> list:
    """What one iteration of `loop` runs: its instructions, nested loops written out ('nest')."""
    if k.select == "nest":
        return loops.flatten(fn, loop, _nest_trip(k, fn, loop, sve_bits))
    return fn.insns[loop[0] : loop[1] + 1]


def _overhead(fn, loop, funcs, mcpu, keep):
    """Everything a call runs outside the hot loop, modelled straight-line once: the enclosing loop's
    body (or the whole function) minus the hot loop and panic paths, plus the bodies of our own
    out-of-line helpers it calls (the tile constructor); memcpy calls are counted apart. Modelled as
    a repeated block and costed by its resources (Block RThroughput): its dependency chains (spills,
    reloads, the constructor's stores) overlap with the loops around it in an out-of-order core. An
    upper bound otherwise: every tail path is counted, whether a given k takes it or not."""
    scope = fn.enclosing(loop) or (0, len(fn.insns) - 1)
    skip = loops.cold(fn.insns)
    insns = [
        i for n, i in enumerate(fn.insns)
        if scope[0] <= n <= scope[1] and not (loop[0] <= n <= loop[1]) and n not in skip
    ]
    memcpy = 0
    extra = []
    for i in insns:
        if i.is_call and "memcpy" in i.target_name:
            memcpy += 1
        elif i.is_call and "Tile<" in i.target_name and i.target_name in funcs:
            h = funcs[i.target_name]
            cold = loops.cold(h.insns)
            extra += [x for n, x in enumerate(h.insns) if n not in cold]
    if not insns:
        return 0.0, 0
    r = mca.run(loops.to_asm(insns + extra), mcpu, keep=keep)
    return r.rthroughput + memcpy * MEMCPY_CYCLES, memcpy


def measure(k: Kernel, funcs: dict, mcpu: str, sve_bits: int = 128,
            keep_dir: str | None = None) -> list[Measured]:
    # The first candidate present whose loops hold the kernel (a generic LLVM inlined elsewhere
    # leaves a symbol without them).
    fn, chosen = None, []
    for name in k.functions:
        if name in funcs:
            fn, chosen = funcs[name], _select(k, funcs[name], sve_bits)
            if chosen:
                break
    if fn is None:
        return []
    out = []
    tag = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{k.engine}-{k.op}-{k.fmt}-{k.name}-{k.variant}-{mcpu}")
    total_cpi = total_rthr = 0.0
    units = insns = 0
    bottlenecks = []
    for n, loop in enumerate(chosen):
        body = body_of(k, fn, loop, sve_bits)
        asm = loops.to_asm(body)
        keep = None
        if keep_dir:
            keep = os.path.join(keep_dir, f"{tag}-loop{n}.mca.txt")
            with open(os.path.join(keep_dir, f"{tag}-loop{n}.s"), "w") as f:
                f.write(f"# {fn.name}\n# {fn.insns[loop[0]].addr:x}..{fn.insns[loop[1]].addr:x}\n")
                f.write(asm)
        r = mca.run(asm, mcpu, keep=keep)
        u = _units(k, body, sve_bits)
        if k.select.startswith("loops="):
            # Each loop is one pass over the data: add their costs per element.
            total_cpi += r.cycles_per_iter / u
            total_rthr += r.rthroughput / u
            units = 1
        else:
            total_cpi, total_rthr, units = r.cycles_per_iter, r.rthroughput, u
        insns += r.instructions
        bottlenecks.append(r.bottleneck)
    if not chosen:
        return []
    overhead, memcpy = (None, 0)
    if k.unit == "block" and k.op == "matvec":
        keep = os.path.join(keep_dir, f"{tag}-call.mca.txt") if keep_dir else None
        overhead, memcpy = _overhead(fn, chosen[0], funcs, mcpu, keep)
    note = "inlined into its caller" if fn.name != k.functions[0] else ""
    out.append(Measured(k, mcpu, fn.name, total_cpi, total_rthr, units, "; ".join(bottlenecks),
                        insns, overhead, memcpy, note))
    return out
