"""Disassembly to loops: parse `objdump -d --no-show-raw-insn -C`, find a function's loops, count what a
loop computes, and turn instructions back into assembly that llvm-mca accepts.

A loop is a backward branch inside one function: its body runs from the branch target to the branch.
The hot loop of a kernel is an innermost one (no other backward branch inside it), picked by what it
computes (see `macs` and the selectors in targets.py), not by its address, so the model follows the
code the compiler emitted rather than the source's shape.
"""

import re
import subprocess
from dataclasses import dataclass, field

FUNC_RE = re.compile(r"^([0-9a-f]+) <(.*)>:$")
INSN_RE = re.compile(r"^\s+([0-9a-f]+):\t(\S+)(?:\t(.*))?$")
# An operand that objdump printed as an address plus a symbol: `4f580 <name+0xd0>`.
TARGET_RE = re.compile(r"\b([0-9a-f]+) <(.*)>$")
BRANCHES = ("b", "cbz", "cbnz", "tbz", "tbnz")


@dataclass
class Insn:
    addr: int
    mnem: str
    ops: str
    target: int | None = None  # address operand, if any (branches, adrp, literal loads)
    target_name: str = ""

    @property
    def is_branch(self) -> bool:
        return self.mnem in BRANCHES or self.mnem.startswith("b.")

    @property
    def is_call(self) -> bool:
        return self.mnem == "bl"


@dataclass
class Function:
    name: str
    addr: int
    insns: list[Insn] = field(default_factory=list)

    def successors(self, n: int, index: dict[int, int]) -> list[int]:
        i = self.insns[n]
        out = []
        if i.mnem not in ("b", "ret", "br") and n + 1 < len(self.insns):
            out.append(n + 1)
        if i.is_branch and i.target in index:
            out.append(index[i.target])
        return out

    def loops(self) -> list[tuple[int, int]]:
        """Every loop as (index of its first instruction, index of its backward branch): a backward
        branch whose target can reach it again (a jump back into code laid out earlier that runs
        on to a return is not a loop)."""
        index = {i.addr: n for n, i in enumerate(self.insns)}
        out = []
        for n, i in enumerate(self.insns):
            if i.is_branch and i.target is not None and i.target <= i.addr and i.target in index:
                start, seen, todo = index[i.target], set(), [index[i.target]]
                while todo:
                    m = todo.pop()
                    if m in seen:
                        continue
                    seen.add(m)
                    todo.extend(self.successors(m, index))
                if n in seen:
                    out.append((start, n))
        return sorted(set(out))

    def innermost(self) -> list[tuple[int, int]]:
        loops = self.loops()
        return [
            (a, b)
            for a, b in loops
            if not any((c, d) != (a, b) and a <= c and d <= b for c, d in loops)
        ]

    def enclosing(self, loop: tuple[int, int]) -> tuple[int, int] | None:
        """The smallest loop that strictly contains `loop`."""
        a, b = loop
        outer = [(c, d) for c, d in self.loops() if (c, d) != loop and c <= a and b <= d]
        return min(outer, key=lambda l: l[1] - l[0]) if outer else None


def disassemble(path: str, objdump: str = "aarch64-linux-gnu-objdump") -> dict[str, Function]:
    """Functions of an aarch64 ELF file by demangled name (the first one wins on duplicates)."""
    text = subprocess.run(
        [objdump, "-d", "--no-show-raw-insn", "-C", path],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    funcs: dict[str, Function] = {}
    cur = None
    for line in text.splitlines():
        m = FUNC_RE.match(line)
        if m:
            cur = Function(m.group(2), int(m.group(1), 16))
            funcs.setdefault(cur.name, cur)
            continue
        m = INSN_RE.match(line)
        if m and cur is not None:
            ops = (m.group(3) or "").split("//")[0].strip()
            insn = Insn(int(m.group(1), 16), m.group(2), ops)
            t = TARGET_RE.search(ops)
            if t:
                insn.target, insn.target_name = int(t.group(1), 16), t.group(2)
            cur.insns.append(insn)
    return funcs


def count(insns: list[Insn], pred) -> int:
    return sum(1 for i in insns if pred(i))


def macs(insns: list[Insn], sve_bits: int = 128) -> dict[str, int]:
    """Multiply-accumulates per pass over `insns`: integer (i8 products) and f32.

    sdot/udot/usdot: 16 per 128 bits; smmla/ummla/usmmla: 32; smull(2)/smlal(2) of bytes into
    i16 lanes: 8;
    f32 fmla: 4 per 128 bits (by element too). SVE forms (z registers) scale with the vector length.
    """
    ints = floats = 0
    for i in insns:
        scale = sve_bits // 128 if re.match(r"z\d", i.ops) else 1
        if i.mnem in ("sdot", "udot", "usdot", "sudot"):
            ints += 16 * scale
        elif i.mnem in ("smmla", "ummla", "usmmla"):
            ints += 32 * scale
        elif i.mnem in ("smull", "smull2", "umull", "umull2", "smlal", "smlal2") and re.match(
            r"v\d+\.8h", i.ops
        ):
            # Bytes into i16 lanes only: a long multiply of i16 lanes (`smull2 v.4s, v.8h, v.8h`,
            # llama.cpp's K-quant minimums) multiplies no weights.
            ints += 8
        elif i.mnem == "fmla" and (".4s" in i.ops or (scale > 1 or i.ops.startswith("z"))):
            floats += 4 * scale
    return {"int": ints, "f32": floats}


def q_loads(insns: list[Insn]) -> int:
    """16-byte vector loads (ldp of q registers counts 2)."""
    n = 0
    for i in insns:
        if i.mnem in ("ldr", "ldur") and re.match(r"q\d", i.ops):
            n += 1
        elif i.mnem == "ldp" and re.match(r"q\d", i.ops):
            n += 2
        elif i.mnem == "ld1" and ".4s" in i.ops:
            n += i.ops.count(".4s")
    return n


def q_stores(insns: list[Insn]) -> int:
    n = 0
    for i in insns:
        if i.mnem in ("str", "stur") and re.match(r"q\d", i.ops) and "[sp" not in i.ops:
            n += 1
        elif i.mnem == "stp" and re.match(r"q\d", i.ops) and "[sp" not in i.ops:
            n += 2
        elif i.mnem == "st1" and ".4s" in i.ops:
            n += i.ops.count(".4s")
    return n


def histogram(insns: list[Insn]) -> list[tuple[str, int]]:
    h: dict[str, int] = {}
    for i in insns:
        h[i.mnem] = h.get(i.mnem, 0) + 1
    return sorted(h.items(), key=lambda kv: (-kv[1], kv[0]))


def cold(insns: list[Insn]) -> set[int]:
    """Indices of panic/assert paths: from a call to a panicking function back to the previous
    unconditional branch or return (code that a correct call never runs)."""
    out: set[int] = set()
    for n, i in enumerate(insns):
        if i.is_call and re.search(r"panic|assert|abort|_fail|unwrap|unreachable", i.target_name):
            m = n
            while m > 0 and insns[m - 1].mnem not in ("b", "ret", "br"):
                m -= 1
            out.update(range(m, n + 1))
    return out


def to_asm(insns: list[Insn]) -> str:
    """Assembly text llvm-mca parses: addresses become labels (placed where they fall inside the
    snippet, at the end otherwise), objdump's comments are gone."""
    inside = {i.addr for i in insns}
    used: set[int] = set()
    lines = []
    for i in insns:
        ops = i.ops
        if i.target is not None:
            used.add(i.target)
            ops = TARGET_RE.sub(f".L{i.target:x}", ops, count=1)
        lines.append((i.addr, f"\t{i.mnem}\t{ops}".rstrip()))
    out = []
    placed: set[int] = set()  # a flattened loop repeats addresses: each label once
    for addr, text in lines:
        if addr in used and addr not in placed:
            out.append(f".L{addr:x}:")
            placed.add(addr)
        out.append(text)
    for addr in sorted(used - inside):
        out.append(f".L{addr:x}:")
    return "\n".join(out) + "\n"


def flatten(fn: Function, loop: tuple[int, int], trip) -> list[Insn]:
    """The body of `loop` with every loop nested in it written out `trip(inner)` times (recursively):
    one pass over it as straight-line code, for a loop whose body holds loops of its own."""
    inside = [l for l in fn.loops() if l != loop and loop[0] <= l[0] and l[1] <= loop[1]]
    # Immediate children: not inside another loop that is inside `loop`.
    children = sorted(
        l for l in inside
        if not any(m != l and m[0] <= l[0] and l[1] <= m[1] for m in inside)
    )
    out: list[Insn] = []
    n = loop[0]
    for c in children:
        if c[0] < n:  # overlaps a child already written out (two branches back to one target)
            continue
        out += fn.insns[n : c[0]]
        out += flatten(fn, c, trip) * trip(c)
        n = c[1] + 1
    out += fn.insns[n : loop[1] + 1]
    return out
