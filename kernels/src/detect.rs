//! CPU feature detection, done once per process.

use std::sync::OnceLock;

/// The CPU features our kernels care about.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Features {
    pub avx2: bool,
    pub fma: bool,
    pub f16c: bool,
    pub avx512f: bool,
    pub avx512bw: bool,
    pub avx512vl: bool,
    pub avx512vnni: bool,
    pub neon: bool,
    pub dotprod: bool,
    pub i8mm: bool,
    /// An AMD x86 CPU (CPUID vendor `AuthenticAMD`): decode prefetches q8_0 weights as non-temporal
    /// only there (see `x86_64::qstream`), the hint measured best on Zen 4 and worst on an Intel Xeon.
    pub amd: bool,
}

/// Features of the CPU we run on (detected on first call, then cached).
pub fn features() -> Features {
    static CACHE: OnceLock<Features> = OnceLock::new();
    *CACHE.get_or_init(detect)
}

#[cfg(target_arch = "x86_64")]
fn detect() -> Features {
    Features {
        avx2: is_x86_feature_detected!("avx2"),
        fma: is_x86_feature_detected!("fma"),
        f16c: is_x86_feature_detected!("f16c"),
        avx512f: is_x86_feature_detected!("avx512f"),
        avx512bw: is_x86_feature_detected!("avx512bw"),
        avx512vl: is_x86_feature_detected!("avx512vl"),
        avx512vnni: is_x86_feature_detected!("avx512vnni"),
        amd: vendor_is_amd(),
        ..Features::default()
    }
}

/// CPUID leaf 0's vendor string (EBX, EDX, ECX) is `AuthenticAMD`.
#[cfg(target_arch = "x86_64")]
fn vendor_is_amd() -> bool {
    // SAFETY: CPUID exists on every x86_64 CPU and leaf 0 always answers (`unsafe` for the
    // toolchains on which the intrinsic is still an `unsafe fn`).
    #[allow(unused_unsafe)]
    let id = unsafe { core::arch::x86_64::__cpuid(0) };
    let mut v = [0u8; 12];
    v[..4].copy_from_slice(&id.ebx.to_le_bytes());
    v[4..8].copy_from_slice(&id.edx.to_le_bytes());
    v[8..].copy_from_slice(&id.ecx.to_le_bytes());
    &v == b"AuthenticAMD"
}

#[cfg(target_arch = "aarch64")]
fn detect() -> Features {
    use std::arch::is_aarch64_feature_detected;
    Features {
        neon: is_aarch64_feature_detected!("neon"),
        dotprod: is_aarch64_feature_detected!("dotprod"),
        i8mm: is_aarch64_feature_detected!("i8mm"),
        ..Features::default()
    }
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
fn detect() -> Features {
    Features::default()
}

#[cfg(all(test, target_arch = "x86_64", target_os = "linux"))]
mod tests {
    /// The CPUID vendor agrees with the kernel's `vendor_id` line.
    #[test]
    fn amd_matches_cpuinfo() {
        let info = std::fs::read_to_string("/proc/cpuinfo").expect("/proc/cpuinfo");
        let vendor = info
            .lines()
            .find_map(|l| l.strip_prefix("vendor_id"))
            .expect("a vendor_id line");
        assert_eq!(
            super::features().amd,
            vendor.contains("AuthenticAMD"),
            "{vendor}"
        );
    }
}
