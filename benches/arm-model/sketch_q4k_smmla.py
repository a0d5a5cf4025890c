"""A sketch, for llvm-mca only, of one super-block of a q4_k `smmla` tile of 2 rows x 4 tokens
(docs/arm.md, "An i8mm tile for the super-block formats"): the instruction mix and dependencies such a
kernel would have, with registers named by hand (no spills counted, values not meaningful). Not a
kernel: it prints assembly.

    python3 benches/arm-model/sketch_q4k_smmla.py > /tmp/t.s
    llvm-mca-19 -mtriple=aarch64 -mcpu=neoverse-v1 -mattr=+i8mm -iterations=200 /tmp/t.s

Per super-block: both rows' scales unpacked as `scales_k4` does and spread to `[s, s, s', s']` per
block (the lanes of `smmla`'s 2 x 2 result: row 0 token 0, row 0 token 1, row 1 token 0, row 1
token 1); per 64 elements both rows' nibbles (`and`, `ushr`) and `zip1`/`zip2 .2d` into 8-byte row
pairs; activations read pair-interleaved (two tokens' 8-byte groups side by side, as a per-call
token buffer would hold them) with per-pair `[dx, dx', dx, dx']` and `dx*sx` vectors; per block and
token pair four `smmla` from loaded zeros, `mla` into the bits of 1.5*2^23, `fsub`, `fmla` by dx;
the minimums as q4_k's. One f32 accumulator per token pair (a chain of 16 `fmla` per super-block).
"""

# Pointers: x0/x1 the rows' quants, x2/x3 their 12 scale bytes, x4 the four tokens' pair-interleaved
# activations, x5/x6 per pair and block the dx and dx*sx vectors, x7 zeros, x8 the magic bits,
# x9/x10 the rows' d, x11/x12 their dmin; x21 a mask; v11 0x0f bytes, v29/v31 `tbl` indices.
L = []
e = L.append
# --- scales of both rows (general registers, as scales_k4), 8 scales + 8 mins each
for r, (src, s, m) in enumerate([("x2", "v24", "v25"), ("x3", "v26", "v27")]):
    e(f"ldr x13, [{src}]"); e(f"ldr w14, [{src}, #8]")
    e("and x15, x13, #0x3f3f3f3f3f3f3f3f"); e("and w16, w14, #0x0f0f0f0f")
    e("lsl x17, x14, #28"); e("and x17, x17, x21"); e("orr x16, x16, x17")
    e("lsr x17, x13, #2"); e("and x17, x17, #0x3030303030303030"); e("orr x16, x16, x17")
    e("fmov d28, x15"); e("mov v28.d[1], x16")
    e(f"tbl {s}.16b, {{v28.16b}}, v29.16b")            # scales blocks 0-3 (i32)
    e(f"tbl v30.16b, {{v28.16b}}, v31.16b")             # scales blocks 4-7
    e(f"tbl {m}.16b, {{v28.16b}}, v29.16b")             # mins 0-3
    e(f"tbl v28.16b, {{v28.16b}}, v31.16b")             # mins 4-7
    e(f"ucvtf {m}.4s, {m}.4s"); e("ucvtf v28.4s, v28.4s")
# per-block scale / min vectors [r0, r0, r1, r1] for blocks 0..3 (4..7 alike, counted)
for k in range(2):
    e("zip1 v16.4s, v24.4s, v26.4s"); e("zip2 v17.4s, v24.4s, v26.4s")
    e("zip1 v18.4s, v25.4s, v27.4s"); e("zip2 v19.4s, v25.4s, v27.4s")
# the 16 [s,s,s',s'] vectors: 4 zips per 4 blocks (x2), mins alike
SV = ["v20", "v21", "v22", "v23"]
for k in range(4):
    e(f"zip1 {SV[k%4]}.4s, v16.4s, v16.4s"); e(f"zip2 {SV[(k+1)%4]}.4s, v17.4s, v17.4s")
for k in range(4):
    e("zip1 v14.4s, v18.4s, v18.4s"); e("zip2 v15.4s, v19.4s, v19.4s")
# dw, dmin as [d0, d0, d1, d1]
for a, b, d in (("x9", "x10", "v12"), ("x11", "x12", "v13")):
    e(f"ld1 {{{d}.h}}[0], [{a}]"); e(f"ld1 {{{d}.h}}[1], [{b}]"); e(f"fcvtl {d}.4s, {d}.4h")
    e(f"zip1 {d}.4s, {d}.4s, {d}.4s")
# --- four chunks of 64 elements (two blocks each)
for c in range(4):
    e(f"ldp q0, q1, [x0, #{32*c}]"); e(f"ldp q2, q3, [x1, #{32*c}]")
    e("and v4.16b, v0.16b, v11.16b"); e("and v5.16b, v1.16b, v11.16b")
    e("ushr v6.16b, v0.16b, #4"); e("ushr v7.16b, v1.16b, #4")
    e("and v8.16b, v2.16b, v11.16b"); e("and v9.16b, v3.16b, v11.16b")
    e("ushr v0.16b, v2.16b, #4"); e("ushr v1.16b, v3.16b, #4")
    # zipped weights: block 2c in z[0..4], block 2c+1 in z[4..8]
    Z = ["v2", "v3", "v10", "v16", "v17", "v18", "v19", "v28"]
    pairs = [("v4", "v8"), ("v5", "v9"), ("v6", "v0"), ("v7", "v1")]
    for i, (a, b) in enumerate(pairs):
        e(f"zip1 {Z[2*i]}.2d, {a}.2d, {b}.2d"); e(f"zip2 {Z[2*i+1]}.2d, {a}.2d, {b}.2d")
    for p in range(2):
        for blk in range(2):
            acc = f"v{29 + blk}" if p == 0 else f"v{4 + blk}"
            e(f"ldr q{acc[1:]}, [x7]")
            for i in range(4):
                ar = f"v{6 + (i % 2)}" if p == 0 else f"v{8 + (i % 2)}"
                e(f"ldr q{ar[1:]}, [x4, #{16*(16*c + 8*p + 4*blk + i) % 4096}]")
                e(f"smmla {acc}.4s, {Z[4*blk+i]}.16b, {ar}.16b")
            # A_j by the block's scales into the bits of 1.5*2^23, then to f32 and times dx
            e("ldr q31, [x8]")
            e(f"mla v31.4s, {acc}.4s, {SV[blk]}.4s")
            e("fsub v31.4s, v31.4s, v26.4s")
            e(f"ldr q{24 + p}, [x5, #{16*(4*c + 2*blk + p)}]")
            if c == 0 and blk == 0:
                e(f"fmul v{14 + p}.4s, v31.4s, v{24 + p}.4s")
            else:
                e(f"fmla v{14 + p}.4s, v31.4s, v{24 + p}.4s")
            # minimums: [mn, mn, mn', mn'] times the pair's dx*sx
            e(f"ldr q{27}, [x6, #{16*(4*c + 2*blk + p)}]")
            e(f"fmla v{18 + 2*p}.4s, v15.4s, v27.4s")
# per pair: acc += f*dw, acc -= u*dmin
for p in range(2):
    e(f"fmla v{22 + p}.4s, v{14 + p}.4s, v12.4s"); e(f"fmls v{22 + p}.4s, v{18 + 2*p}.4s, v13.4s")
e("add x0, x0, #128"); e("add x1, x1, #128"); e("add x2, x2, #12"); e("add x3, x3, #12")
e("add x4, x4, #1024"); e("add x9, x9, #2"); e("add x10, x10, #2"); e("add x11, x11, #2")
e("add x12, x12, #2"); e("subs x20, x20, #1"); e("b.ne .Lloop")
print(".Lloop:")
print("\n".join("\t" + l for l in L))
