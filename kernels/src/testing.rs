//! Helpers for testing kernel variants against the scalar reference (used by `tests/` and benches).
//!
//! Not part of the inference API: a seeded RNG, the ragged sizes every kernel is swept over, unaligned
//! sub-slices, the error bound, and the `EDGEINFER_REQUIRE_VARIANTS` check.

use half::f16;

use crate::dispatch::{Kernels, Variant};
use crate::quant::{QFormat, QWeight};

/// Environment variable listing variants (comma separated) that must be available: a test run where one
/// of them is missing fails instead of skipping it. CI sets it per machine so it cannot go green
/// without running the kernels it is meant to test.
pub const ENV_REQUIRE_VARIANTS: &str = "EDGEINFER_REQUIRE_VARIANTS";

/// Row and token counts around every SIMD width and tile boundary.
#[cfg(not(miri))]
pub const RAGGED: [usize; 19] = [
    1, 2, 3, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 128, 129, 257,
];
/// Under Miri (scripts/miri.sh), which interprets every operation: around the 8-lane step, and one
/// size past 64.
#[cfg(miri)]
pub const RAGGED: [usize; 6] = [1, 2, 7, 8, 9, 65];

/// Reduction lengths: one, ragged values around 4/8/16/32-lane steps, and real model widths.
#[cfg(not(miri))]
pub const K_SIZES: [usize; 12] = [1, 2, 3, 5, 7, 9, 15, 17, 33, 100, 576, 1536];
/// Under Miri: ragged ones and one real width.
#[cfg(miri)]
pub const K_SIZES: [usize; 5] = [1, 3, 17, 33, 576];

/// A small, fast, seeded generator (SplitMix64). Deterministic across platforms, so a seed printed by a
/// failing test reproduces the failure anywhere.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Uniform in `[-scale, scale)`.
    pub fn uniform(&mut self, scale: f32) -> f32 {
        (2.0 * self.unit() - 1.0) * scale
    }

    /// Uniform in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// `len` values uniform in `[-scale, scale)`.
    pub fn vec(&mut self, len: usize, scale: f32) -> Vec<f32> {
        (0..len).map(|_| self.uniform(scale)).collect()
    }
}

/// A seed for a test: `$EDGEINFER_TEST_SEED` if set (to reproduce a failure), else one derived from the
/// clock. Tests print it on failure.
pub fn seed() -> u64 {
    if let Some(s) = std::env::var("EDGEINFER_TEST_SEED")
        .ok()
        .and_then(|s| s.trim().parse().ok())
    {
        return s;
    }
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    t.as_nanos() as u64
}

/// Storage for a slice that starts `offset` elements past the allocation's start, so that SIMD code sees
/// every alignment. `get()` returns the slice.
#[derive(Clone, Debug)]
pub struct Unaligned<T> {
    buf: Vec<T>,
    offset: usize,
}

impl<T: Copy + Default> Unaligned<T> {
    /// Copies `data` into a fresh buffer at element `offset` (the padding holds `T::default()`).
    pub fn new(data: &[T], offset: usize) -> Unaligned<T> {
        let mut buf = vec![T::default(); data.len() + offset];
        buf[offset..].copy_from_slice(data);
        Unaligned { buf, offset }
    }

    pub fn get(&self) -> &[T] {
        &self.buf[self.offset..]
    }

    pub fn get_mut(&mut self) -> &mut [T] {
        &mut self.buf[self.offset..]
    }
}

/// Whether `got` is within the f32 bar of `want`: `|got − want| <= rel · scale + tiny`, where `scale`
/// is the magnitude of the terms that were summed (e.g. `Σ |w|·|x|` for a dot product). Relative to the
/// terms rather than the result, since cancellation makes the result's own magnitude meaningless.
pub fn close(got: f32, want: f32, scale: f32, rel: f32) -> bool {
    if got.is_nan() || want.is_nan() {
        return got.is_nan() && want.is_nan();
    }
    (got - want).abs() <= rel * scale + f32::MIN_POSITIVE
}

/// Variants named in `$EDGEINFER_REQUIRE_VARIANTS`. Panics on an unknown name (a typo must not turn the
/// requirement off).
pub fn required_variants() -> Vec<Variant> {
    let Ok(list) = std::env::var(ENV_REQUIRE_VARIANTS) else {
        return Vec::new();
    };
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            Variant::from_name(s)
                .unwrap_or_else(|| panic!("{ENV_REQUIRE_VARIANTS}: unknown variant `{s}`"))
        })
        .collect()
}

/// A rayon pool of `threads` threads, for tests that split work the way a multi-threaded session does.
pub fn pool(threads: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("rayon pool")
}

/// The tables to test: every variant this CPU can run. Panics if a required variant (see
/// [`ENV_REQUIRE_VARIANTS`]) is missing; reports other unavailable variants on stderr.
pub fn variants_under_test() -> Vec<Kernels> {
    let available = Kernels::available();
    let required = required_variants();
    let missing: Vec<_> = required
        .iter()
        .filter(|v| !available.contains(v))
        .map(|v| v.name())
        .collect();
    assert!(
        missing.is_empty(),
        "{ENV_REQUIRE_VARIANTS} requires {missing:?}, but this CPU only runs {:?}",
        available.iter().map(|v| v.name()).collect::<Vec<_>>()
    );
    // Once per process: every test calls this, and one message per variant is enough.
    static REPORTED: std::sync::Once = std::sync::Once::new();
    REPORTED.call_once(|| {
        for v in Variant::ALL {
            if !available.contains(&v) && arch_of(v) == std::env::consts::ARCH {
                eprintln!("skipping kernel variant {v}: not supported by this CPU");
            }
        }
    });
    available
        .into_iter()
        .map(|v| Kernels::new(v).expect("available variant"))
        .collect()
}

/// The architecture a variant belongs to (`std::env::consts::ARCH` spelling).
pub fn arch_of(v: Variant) -> &'static str {
    match v {
        Variant::Scalar => "any",
        Variant::Avx2 | Variant::Avx512Vnni => "x86_64",
        Variant::Neon | Variant::NeonDotprod | Variant::NeonI8mm => "aarch64",
    }
}

/// Owned planes of a `[rows, k]` quantized weight.
#[derive(Clone, Debug)]
pub struct QPlanes {
    pub format: QFormat,
    pub rows: usize,
    pub k: usize,
    pub qs: Vec<u8>,
    /// Empty for the formats without an `aux` plane.
    pub aux: Vec<u8>,
    pub d: Vec<f16>,
    pub m: Vec<f16>,
}

impl QPlanes {
    /// Random quants and `aux` bytes (every bit pattern), scales uniform in ±`scale` and (formats
    /// with minimums) minimums in ±`min_scale`.
    pub fn random(
        rng: &mut Rng,
        format: QFormat,
        rows: usize,
        k: usize,
        scale: f32,
        min_scale: f32,
    ) -> QPlanes {
        let nb = rows * k / format.block_elems();
        let qs = (0..nb * format.qs_bytes_per_block())
            .map(|_| rng.next_u64() as u8)
            .collect();
        let aux = (0..nb * format.aux_bytes_per_block())
            .map(|_| rng.next_u64() as u8)
            .collect();
        let d = (0..nb).map(|_| f16::from_f32(rng.uniform(scale))).collect();
        let m = match format.has_min() {
            true => (0..nb)
                .map(|_| f16::from_f32(rng.uniform(min_scale)))
                .collect(),
            false => Vec::new(),
        };
        QPlanes {
            format,
            rows,
            k,
            qs,
            aux,
            d,
            m,
        }
    }

    pub fn view(&self) -> QWeight<'_> {
        QWeight::with_aux(
            self.format,
            self.rows,
            self.k,
            &self.qs,
            &self.aux,
            &self.d,
            &self.m,
        )
        .expect("valid planes")
    }
}

/// Prints which variants this run tests (visible with `--nocapture` or `--show-output`; parsed by
/// scripts/test-aarch64.sh) and asserts that they are the right ones: [`variants_under_test`] (what
/// every variant test iterates over) is exactly the variants this CPU runs, asked of the standard
/// library's feature detection directly rather than of [`crate::detect`], scalar first, each table
/// naming its own variant; and every variant in `$EDGEINFER_REQUIRE_VARIANTS` is among them.
pub fn report_variants() {
    let tables = variants_under_test();
    let ran: Vec<Variant> = tables.iter().map(|k| k.variant).collect();
    let skipped: Vec<&str> = Variant::ALL
        .into_iter()
        .filter(|v| !ran.contains(v))
        .map(|v| v.name())
        .collect();
    println!(
        "kernel variants tested: {} (unavailable here: {})",
        ran.iter().map(|v| v.name()).collect::<Vec<_>>().join(","),
        skipped.join(",")
    );
    assert_eq!(
        ran.first(),
        Some(&Variant::Scalar),
        "scalar must come first"
    );
    let runnable: Vec<Variant> = Variant::ALL.into_iter().filter(|&v| cpu_runs(v)).collect();
    assert_eq!(
        ran, runnable,
        "the variants under test are not the ones this CPU's features allow"
    );
    for v in &ran {
        let table = Kernels::new(*v).expect("a variant under test");
        assert_eq!(table.variant, *v, "the {v} table names another variant");
    }
    for v in required_variants() {
        assert!(
            ran.contains(&v),
            "{ENV_REQUIRE_VARIANTS} requires {v}, which did not run"
        );
    }
}

/// Whether this CPU can run `v`, from the standard library's feature detection.
fn cpu_runs(v: Variant) -> bool {
    match v {
        Variant::Scalar => true,
        #[cfg(target_arch = "x86_64")]
        Variant::Avx2 => {
            use std::arch::is_x86_feature_detected as has;
            has!("avx2") && has!("fma") && has!("f16c")
        }
        #[cfg(target_arch = "x86_64")]
        Variant::Avx512Vnni => {
            use std::arch::is_x86_feature_detected as has;
            cpu_runs(Variant::Avx2)
                && has!("avx512f")
                && has!("avx512bw")
                && has!("avx512vl")
                && has!("avx512vnni")
        }
        #[cfg(target_arch = "aarch64")]
        Variant::Neon => std::arch::is_aarch64_feature_detected!("neon"),
        #[cfg(target_arch = "aarch64")]
        Variant::NeonDotprod => {
            cpu_runs(Variant::Neon) && std::arch::is_aarch64_feature_detected!("dotprod")
        }
        #[cfg(target_arch = "aarch64")]
        Variant::NeonI8mm => {
            cpu_runs(Variant::NeonDotprod) && std::arch::is_aarch64_feature_detected!("i8mm")
        }
        #[allow(unreachable_patterns)]
        _ => false,
    }
}
