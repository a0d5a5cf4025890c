"""What to measure: each kernel's function, how to pick its hot loop, and what one pass over that loop
computes. Also the chips (llvm-mca model, gcc flag, clock, one-core read bandwidth) and which kernel
each engine runs on each of them.
"""

from dataclasses import dataclass

# Weight bytes per 32-weight block, scales included (kernels/src/quant/format.rs: the rowsplit planes
# hold 16 or 32 quant bytes plus an f16 scale, and an f16 minimum for q4_1; ggml's block structs
# have the same sizes, and its repacked x4/x8 blocks the same bytes per row-block).
BLOCK_BYTES = {"q4_0": 18, "q4_0_rows8": 18, "q4_1": 20, "q4_1_rows8": 20, "q8_0": 34,
               "q8_0_rows8": 34,
               # The GGUF formats (kernels/src/quant/kquant.rs): a super-block's bytes / 8.
               "q5_0": 22, "q5_1": 24, "iq4_nl": 18, "q2_k": 10.5, "q3_k": 13.75, "q4_k": 18,
               "q5_k": 22, "q6_k": 26.25, "iq4_xs": 17}
FORMATS = ("q4_0", "q8_0", "q4_1")
# GGUF formats with 32-element blocks, which run the tiles of q4_0 (quant_neon.rs) with their own
# block loads, and the super-block formats with a tile of their own (quant_gguf.rs).
GGUF32 = ("q5_0", "q5_1", "iq4_nl")
KQUANTS = ("q2_k", "q3_k", "q4_k", "q5_k", "q6_k", "iq4_xs")
# Formats with a minimum per block (or super-block): twice the f16 conversions per row.
MIN_FORMATS = ("q4_1", "q5_1", "q2_k", "q4_k", "q5_k")
# Formats of the whole-token predictions: q4_0, q8_0 and q4_1 in the rows8 layout
# (kernels/src/quant/rows8.rs) are rows of their own, so both layouts show side by side (a rows8
# model's q8_0 output matrix is rows8 too).
TOKEN_FORMATS = ("q4_0", "q4_0_rows8", "q8_0", "q8_0_rows8", "q4_1", "q4_1_rows8")
VARIANTS = ("neon", "neon_dotprod", "neon_i8mm")

OURS_CRATE = "edgeinfer_kernels"
NEON = f"{OURS_CRATE}::aarch64::neon::Neon"
DOTPROD = f"{OURS_CRATE}::aarch64::dotprod::Dotprod"
I8MM = f"{OURS_CRATE}::aarch64::i8mm::I8mm"
ISA = f"{OURS_CRATE}::aarch64::quant_neon::Isa"
GGUF = f"{OURS_CRATE}::aarch64::quant_gguf"
KISA = f"{GGUF}::KIsa"
FMT_TYPE = {"q4_0": f"{OURS_CRATE}::simd::Q4_0", "q4_1": f"{OURS_CRATE}::simd::Q4_1",
            "q8_0": f"{OURS_CRATE}::simd::Q8_0", "q5_0": f"{GGUF}::Q5_0",
            "q5_1": f"{GGUF}::Q5_1", "iq4_nl": f"{GGUF}::Iq4Nl", "q2_k": f"{GGUF}::Q2K",
            "q3_k": f"{GGUF}::Q3K", "q4_k": f"{GGUF}::Q4K",
            "q5_k": f"{GGUF}::Q5K", "q6_k": f"{GGUF}::Q6K", "iq4_xs": f"{GGUF}::Iq4Xs"}


def tile_fn(isa: str, fmt: str, rows: int, tokens: int) -> str:
    return f"<{isa} as {ISA}>::tile::<{FMT_TYPE[fmt]}, {rows}, {tokens}>"


def neon_entry(fmt: str) -> str:
    return f"{OURS_CRATE}::simd::matmul_q::<{NEON}, {FMT_TYPE[fmt]}>"


def neon_by_block(fmt: str) -> str:
    """Where LLVM puts plain NEON's tiles when `matmul_q` has several callers (q4_0's also serves
    the rows8 fallback)."""
    return f"{OURS_CRATE}::aarch64::quant_neon::matmul_by_block::<{FMT_TYPE[fmt]}, {NEON}>"


def ktile_fn(isa: str, fmt: str, rows: int, tokens: int) -> str:
    """The super-block formats' tile (quant_gguf.rs), and where LLVM may inline it."""
    return f"<{isa} as {KISA}>::ktile::<{FMT_TYPE[fmt]}, {rows}, {tokens}>"


def kquant_callers(isa: str, fmt: str, rows: int, tokens: int) -> list[str]:
    return [ktile_fn(isa, fmt, rows, tokens),
            f"{GGUF}::kmatmul::<{FMT_TYPE[fmt]}, {isa}, {rows}, {tokens}>",
            f"{GGUF}::matmul_k::<{isa}, {FMT_TYPE[fmt]}>"]


@dataclass
class Kernel:
    """One hot loop to model.

    `functions`: candidate symbols, the first one present wins (a generic that LLVM inlined into its
    caller is looked for in the caller). `select`: how to pick the loop among the function's innermost
    loops ('macs': most multiply-accumulates; 'rows=R': our quantized tile with R weight rows, told by
    its R f16 scale conversions (2R for the formats with minimums); 'no-mmla': most MACs without
    smmla; 'sve-switch': of loops one per SVE vector length, the chip's, by code order; 'nest': a
    super-block loop with loops inside, written out (see `up`, `trips`); 'loops=0,2': the
    vector loops with these indices in code order, each one a pass over the data; 'fcvtas': the
    quantizer's loop). `unit`: what one iteration's count is measured in.
    `rows`: weight rows one call covers (its whole-call overhead is paid once per that many rows).
    """

    engine: str
    op: str
    fmt: str | None
    name: str  # kernel name for the table
    variant: str | None
    functions: list[str]
    select: str
    unit: str  # 'block' (32-weight block-rows, per token), 'mac' (f32 MACs), 'elem' (f32 elements)
    rows: int = 1
    # select 'nest' (llama.cpp's K-quant gemv, whose super-block loop holds loops of its own): the
    # super-block loop is `up` loops above the smallest loop with the most MACs; the loops on the
    # way down to it run `trips` times each (outermost first), every other loop inside `side` times.
    up: int = 1
    trips: tuple[int, ...] = ()
    side: int = 1


def ours() -> list[Kernel]:
    ks = []
    for fmt in FORMATS + GGUF32:
        q = f"matmul_{fmt}_q8"
        # Decode (one token): 4 × 1 tiles; i8mm decode runs the dotprod tiles (quant_i8mm.rs).
        ks.append(Kernel("edgeinfer", "matvec", fmt, q, "neon",
                         [tile_fn(NEON, fmt, 4, 1), neon_entry(fmt), neon_by_block(fmt)], "rows=4", "block", 4))
        for v in ("neon_dotprod", "neon_i8mm"):
            ks.append(Kernel("edgeinfer", "matvec", fmt, q, v,
                             [tile_fn(DOTPROD, fmt, 4, 1)], "rows=4", "block", 4))
        # Prefill: 2 × 2 tiles (neon, dotprod), 4 × 2 smmla tiles (i8mm).
        ks.append(Kernel("edgeinfer", "matmul_tile", fmt, q, "neon",
                         [tile_fn(NEON, fmt, 2, 2), neon_entry(fmt), neon_by_block(fmt)], "rows=2", "block", 2))
        ks.append(Kernel("edgeinfer", "matmul_tile", fmt, q, "neon_dotprod",
                         [tile_fn(DOTPROD, fmt, 2, 2)], "rows=2", "block", 2))
        ks.append(Kernel("edgeinfer", "matmul_tile", fmt, q, "neon_i8mm",
                         [tile_fn(I8MM, fmt, 4, 2)], "macs", "block", 4))
    # The super-block formats: decode in 1 × 1 tiles, prefill in 1 × 4 (tokens) tiles; the
    # super-block loop is the hot loop (everything inside it unrolled). i8mm runs the dotprod tile.
    for fmt in KQUANTS:
        q = f"matmul_{fmt}_q8"
        for v, isa in (("neon", NEON), ("neon_dotprod", DOTPROD), ("neon_i8mm", DOTPROD)):
            ks.append(Kernel("edgeinfer", "matvec", fmt, q, v, kquant_callers(isa, fmt, 1, 1),
                             "macs", "block", 1))
            ks.append(Kernel("edgeinfer", "matmul_tile", fmt, q, v,
                             kquant_callers(isa, fmt, 1, 4), "macs", "block", 1))
    # q4_0, q8_0 and q4_1 in the rows8 layout: kernels of their own (dotprod; i8mm runs them too), 8
    # rows per pass; its 16 sdot per block count as 8 block-rows (each row's 32 weights are taken
    # by two sdot, one of them shared with the row it pairs with). Plain NEON reorders the rows into
    # rowsplit order and runs the tiles above (not modelled).
    for v in ("neon_dotprod", "neon_i8mm"):
        for fmt in ("q4_0", "q8_0", "q4_1"):
            ks.append(Kernel("edgeinfer", "matvec", f"{fmt}_rows8", f"matmul_{fmt}_rows8_q8", v,
                             [f"{OURS_CRATE}::aarch64::quant_rows8::{fmt}_tokens"], "macs",
                             "block", 8))
    # The rest is plain NEON in every variant's table (simd::table_of / quantized).
    f16 = "half::binary16::f16"
    ks += [
        Kernel("edgeinfer", "quantize_acts", "q8", "quantize_q8", "neon",
               [f"{OURS_CRATE}::simd::quantize_q8::<{NEON}>"], "fcvtas", "elem"),
        Kernel("edgeinfer", "attn_scores", "f16", "matmul_f16", "neon",
               [f"{OURS_CRATE}::simd::dense::matmul::<{NEON}, {f16}>"], "macs", "mac"),
        Kernel("edgeinfer", "attn_weighted_sum", "f16", "weighted_sum_f16", "neon",
               [f"{OURS_CRATE}::simd::weighted_sum::<{NEON}, {f16}>"], "macs", "mac"),
        Kernel("edgeinfer", "rmsnorm", "f32", "rmsnorm_f32", "neon",
               [f"{OURS_CRATE}::simd::rmsnorm_f32::<{NEON}>"], "loops=0,2", "elem"),
        Kernel("edgeinfer", "softmax", "f32", "softmax_f32", "neon",
               [f"{OURS_CRATE}::simd::softmax_f32::<{NEON}>"], "loops=0,2,3", "elem"),
        Kernel("edgeinfer", "silu_mul", "f32", "silu_mul_f32", "neon",
               [f"{OURS_CRATE}::simd::silu_mul_f32::<{NEON}>"], "loops=0", "elem"),
    ]
    return ks


def llamacpp() -> list[Kernel]:
    ks = [
        Kernel("llama.cpp", "matvec", "q4_0", "ggml_vec_dot_q4_0_q8_0", None,
               ["ggml_vec_dot_q4_0_q8_0"], "no-mmla", "block", 1),
        Kernel("llama.cpp", "matvec", "q8_0", "ggml_vec_dot_q8_0_q8_0", None,
               ["ggml_vec_dot_q8_0_q8_0"], "no-mmla", "block", 1),
        Kernel("llama.cpp", "matvec", "q4_1", "ggml_vec_dot_q4_1_q8_1", None,
               ["ggml_vec_dot_q4_1_q8_1"], "no-mmla", "block", 1),
    ]
    # The GGUF formats: the one-row dots (q8_K activations for the K-quants: 256 per scale), and
    # the gemv kernels on weights repacked at load (q4_K, q5_K, q6_K in 8 rows, iq4_nl in 4).
    for fmt in GGUF32 + KQUANTS:
        f = llama_vec_dot(fmt)
        # The SVE builds of q2_K, q3_K, q4_K and q6_K switch on the vector length to one loop per
        # length: 128 bits first, then 256 (see `sve-switch` in measure.py).
        sel = "sve-switch" if fmt in ("q2_k", "q3_k", "q4_k", "q6_k") else "no-mmla"
        ks.append(Kernel("llama.cpp", "matvec", fmt, f, None, [f], sel, "block", 1))
    ks.append(Kernel("llama.cpp", "matvec", "iq4_nl", "ggml_gemv_iq4_nl_4x4_q8_0", None,
                     ["ggml_gemv_iq4_nl_4x4_q8_0"], "macs", "block", 4))
    for fmt, up, trips, side in (("q4_K", 1, (4,), 2), ("q5_K", 1, (4,), 2), ("q6_K", 2, (2, 4), 1)):
        for t in ("8x4", "8x8"):
            g = f"ggml_gemv_{fmt}_{t}_q8_K"
            ks.append(Kernel("llama.cpp", "matvec", fmt.lower(), g, None, [g], "nest", "block", 8,
                             up=up, trips=trips, side=side))
    for fmt, tiles in (("q4_0", ("4x4", "4x8", "8x8")), ("q8_0", ("4x4", "4x8"))):
        for t in tiles:
            rows = int(t.split("x")[0])
            ks.append(Kernel("llama.cpp", "matvec", fmt, f"ggml_gemv_{fmt}_{t}_q8_0", None,
                             [f"ggml_gemv_{fmt}_{t}_q8_0"], "macs", "block", rows))
            ks.append(Kernel("llama.cpp", "matmul_tile", fmt, f"ggml_gemm_{fmt}_{t}_q8_0", None,
                             [f"ggml_gemm_{fmt}_{t}_q8_0"], "macs", "block", rows))
    return ks


@dataclass
class Chip:
    name: str
    mcpu: str  # llvm-mca model
    gcc: str  # gcc 12 -mcpu for llama.cpp's objects
    ghz: float | None
    gbs: float | None  # one-core read bandwidth, GB/s
    source: str
    dotprod: bool
    i8mm: bool
    sve_bits: int = 0


# The clocks and bandwidths and where they come from: docs/arm.md.
CHIPS = [
    Chip("Graviton2", "neoverse-n1", "neoverse-n1", 2.5, 20.9, "issue 16", True, False),
    Chip("Graviton3", "neoverse-v1", "neoverse-v1", 2.6, 30.0, "assumed", True, True, 256),
    Chip("Graviton4", "neoverse-v2", "neoverse-n2", 2.8, 37.0, "issue 16", True, True, 128),
    # gcc 12's tsv110 lacks dotprod, which Kunpeng 920 has (asimddp; -mcpu=native adds it).
    Chip("Kunpeng 920", "tsv110", "tsv110+dotprod", 2.6, 11.3, "issue 16", True, False),
    Chip("Raspberry Pi 5", "neoverse-n1", "cortex-a76", 2.4, 9.3, "issue 16", True, False),
    Chip("Raspberry Pi 4", "cortex-a72", "cortex-a72", 1.5, 5.5, "sci-pi STREAM", False, False),
    # Models without a chip in the table: kernel rows only.
    Chip("(Neoverse N2)", "neoverse-n2", "neoverse-n2", None, None, "", True, True, 128),
    Chip("(Cortex-A76 as A57)", "cortex-a76", "cortex-a76", None, None, "", True, False),
]
MCPUS = ["neoverse-n1", "neoverse-v1", "neoverse-v2", "neoverse-n2", "tsv110", "cortex-a76",
         "cortex-a72"]


def features(mcpu: str) -> tuple[bool, bool]:
    """(dotprod, i8mm) of an llvm-mca model: which of our variants and llama.cpp's paths it runs."""
    return {
        "neoverse-n1": (True, False), "neoverse-v1": (True, True), "neoverse-v2": (True, True),
        "neoverse-n2": (True, True), "tsv110": (True, False), "cortex-a76": (True, False),
        "cortex-a72": (False, False),
    }[mcpu]


def our_variant(chip: Chip) -> str:
    """What detection picks (dispatch.rs: the last supported variant)."""
    if chip.i8mm:
        return "neon_i8mm"
    return "neon_dotprod" if chip.dotprod else "neon"


def llama_vec_dot(fmt: str) -> str:
    """llama.cpp's one-row dot for `fmt` (its activations: q8_1 for q4_1 and q5_1, q8_K for the
    256-element formats, q8_0 otherwise)."""
    name = fmt[:-1] + "K" if fmt.endswith("_k") else fmt
    acts = {"q4_1": "q8_1", "q5_1": "q8_1"}.get(fmt, "q8_K" if fmt in KQUANTS else "q8_0")
    return f"ggml_vec_dot_{name}_{acts}"


def llama_matvec(chip: Chip, fmt: str) -> str:
    """The kernel llama.cpp runs for a weight matrix (repack.cpp's ggml_repack_get_optimal_repack_type:
    rows are multiples of 4 in every model here)."""
    if fmt == "q4_0":
        if chip.i8mm and chip.sve_bits == 256:
            return "ggml_gemv_q4_0_8x8_q8_0"
        if chip.i8mm:
            return "ggml_gemv_q4_0_4x8_q8_0"
        if chip.dotprod:
            return "ggml_gemv_q4_0_4x4_q8_0"
        return "ggml_vec_dot_q4_0_q8_0"
    if fmt == "q8_0":
        if chip.i8mm:
            return "ggml_gemv_q8_0_4x8_q8_0"
        if chip.dotprod:
            return "ggml_gemv_q8_0_4x4_q8_0"
        return "ggml_vec_dot_q8_0_q8_0"
    if fmt in ("q4_k", "q5_k", "q6_k") and chip.dotprod:  # rows a multiple of 8
        return f"ggml_gemv_{fmt[:2]}_K_{'8x8' if chip.i8mm else '8x4'}_q8_K"
    if fmt == "iq4_nl" and chip.dotprod:
        return "ggml_gemv_iq4_nl_4x4_q8_0"
    return llama_vec_dot(fmt)
