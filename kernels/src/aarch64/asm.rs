//! The `asm!` wrappers for the integer dot-product instructions whose intrinsics (`vdotq_s32`,
//! `vmmlaq_s32`) are not stable on our toolchain, and for the few instructions whose stable
//! intrinsic LLVM rewrites into longer sequences ([`sri2`], [`not`]). Every one of them lives here, so there
//! is one file to review.
//!
//! Each wrapper is a safe `#[target_feature]` function: calling it from code without the feature needs
//! `unsafe`, and the caller's `// SAFETY:` says why the CPU has it (in practice: only the tables built
//! after detection reach these kernels). `#[inline]` lets LLVM fold them into callers that enable the
//! same features; the assembler accepts `sdot`/`smmla` only in such functions.

use core::arch::aarch64::{int32x4_t, int8x16_t, uint8x16_t};
use core::arch::asm;

/// `sdot`: `acc[i] + Σ_{j<4} a[4i+j]·b[4i+j]` for each of the four i32 lanes (Armv8.2 dotprod).
#[inline]
#[target_feature(enable = "neon,dotprod")]
pub(crate) fn sdot(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    let mut acc = acc;
    // SAFETY: register-only arithmetic (no memory, stack or flags); `dotprod` is enabled on this
    // function, so it only runs where the caller proved the CPU has the instruction.
    unsafe {
        asm!(
            "sdot {acc:v}.4s, {a:v}.16b, {b:v}.16b",
            acc = inout(vreg) acc,
            a = in(vreg) a,
            b = in(vreg) b,
            options(pure, nomem, nostack, preserves_flags),
        );
    }
    acc
}

/// `sdot` by element: `acc[i] + Σ_{j<4} a[4i+j]·b[4L+j]`: every lane takes the four bytes of `b`'s
/// 32-bit lane `L` (Armv8.2 dotprod).
#[inline]
#[target_feature(enable = "neon,dotprod")]
pub(crate) fn sdot_lane<const L: i32>(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    let mut acc = acc;
    // SAFETY: register-only arithmetic, as `sdot`; `L` is checked by the assembler (0..=3).
    unsafe {
        asm!(
            "sdot {acc:v}.4s, {a:v}.16b, {b:v}.4b[{l}]",
            acc = inout(vreg) acc,
            a = in(vreg) a,
            b = in(vreg) b,
            l = const L,
            options(pure, nomem, nostack, preserves_flags),
        );
    }
    acc
}

/// Sixteen bytes at `p`, loaded afresh at every call: for an accumulator's starting value that must
/// come through a load port, not a vector-pipe `movi`/`mov` (the compiler would hoist a plain load
/// of a constant out of the loop and copy the register each iteration instead).
///
/// # Safety
/// `p..p + 16` is readable.
#[inline(always)]
pub(crate) unsafe fn load_fresh(p: *const i32) -> int32x4_t {
    let v: int32x4_t;
    // SAFETY: reads 16 bytes at `p` (the caller's contract); no stores, no stack, no flags. Not
    // `pure`, so it is not hoisted.
    unsafe {
        asm!(
            "ldr {v:q}, [{p}]",
            p = in(reg) p,
            v = out(vreg) v,
            options(readonly, nostack, preserves_flags),
        );
    }
    v
}

/// `smmla`: `a` and `b` each hold two rows of 8 i8 (bytes 0..8 and 8..16); adds the 2×2 product
/// `a · bᵀ` to `acc`, row-major: lanes `[a0·b0, a0·b1, a1·b0, a1·b1]` (Armv8.6 i8mm).
#[inline]
#[target_feature(enable = "neon,i8mm")]
pub(crate) fn smmla(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    let mut acc = acc;
    // SAFETY: register-only arithmetic; `i8mm` is enabled on this function (see `sdot`).
    unsafe {
        asm!(
            "smmla {acc:v}.4s, {a:v}.16b, {b:v}.16b",
            acc = inout(vreg) acc,
            a = in(vreg) a,
            b = in(vreg) b,
            options(pure, nomem, nostack, preserves_flags),
        );
    }
    acc
}

/// `sri #2` on bytes: `(b >> 2) | (a & 0xC0)`, one instruction. `vsriq_n_u8::<2>` is stable, but
/// LLVM expands it into `ushr`, two `and` and `orr` when it can see that the bits `a` keeps come from
/// a shift (q6_k's decoding), which costs three more vector instructions each time.
#[inline]
#[target_feature(enable = "neon")]
pub(crate) fn sri2(a: uint8x16_t, b: uint8x16_t) -> uint8x16_t {
    let mut a = a;
    // SAFETY: register-only arithmetic; NEON is baseline on aarch64 and enabled here.
    unsafe {
        asm!(
            "sri {a:v}.16b, {b:v}.16b, #2",
            a = inout(vreg) a,
            b = in(vreg) b,
            options(pure, nomem, nostack, preserves_flags),
        );
    }
    a
}

/// `mvn`: every bit of `a` inverted. `vmvnq_u8` is stable, but LLVM folds it into the `cmtst`s that
/// test the result against single bits, turning each `cmtst` into `and` and `cmeq` (q5_k's high
/// bits: eight more vector instructions per super-block); behind `asm!` it stays one `mvn`.
#[inline]
#[target_feature(enable = "neon")]
pub(crate) fn not(a: uint8x16_t) -> uint8x16_t {
    let mut a = a;
    // SAFETY: register-only arithmetic; NEON is baseline on aarch64 and enabled here.
    unsafe {
        asm!(
            "mvn {a:v}.16b, {a:v}.16b",
            a = inout(vreg) a,
            options(pure, nomem, nostack, preserves_flags),
        );
    }
    a
}
