//! The kernel table: one set of function pointers, chosen once.

use half::{bf16, f16};

use crate::detect::{features, Features};
use crate::quant::{self, QFormat, QLayout, QWeight};
use crate::scalar;
use crate::weight::WeightRef;

/// Environment variable that overrides detection with a variant name.
pub const ENV_KERNELS: &str = "EDGEINFER_KERNELS";

/// A kernel variant. Names (see [`Variant::name`]) are used in logs, benches and flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Variant {
    Scalar,
    Avx2,
    Avx512Vnni,
    Neon,
    NeonDotprod,
    NeonI8mm,
}

impl Variant {
    /// All variants, slowest first.
    pub const ALL: [Variant; 6] = [
        Variant::Scalar,
        Variant::Avx2,
        Variant::Avx512Vnni,
        Variant::Neon,
        Variant::NeonDotprod,
        Variant::NeonI8mm,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Variant::Scalar => "scalar",
            Variant::Avx2 => "avx2",
            Variant::Avx512Vnni => "avx512_vnni",
            Variant::Neon => "neon",
            Variant::NeonDotprod => "neon_dotprod",
            Variant::NeonI8mm => "neon_i8mm",
        }
    }

    pub fn from_name(name: &str) -> Option<Variant> {
        Variant::ALL.into_iter().find(|v| v.name() == name.trim())
    }

    /// Whether this CPU can run the variant.
    /// Whether the variant reads the `rows8` layout as stored (the others reorder it into
    /// `rowsplit` order on every product: a decode step then costs several times as much).
    pub const fn reads_rows8(self) -> bool {
        matches!(self, Variant::NeonDotprod | Variant::NeonI8mm)
    }

    pub fn supported_by(self, f: &Features) -> bool {
        let arch_x86 = cfg!(target_arch = "x86_64");
        let arch_arm = cfg!(target_arch = "aarch64");
        match self {
            Variant::Scalar => true,
            Variant::Avx2 => arch_x86 && f.avx2 && f.fma && f.f16c,
            Variant::Avx512Vnni => {
                arch_x86
                    && f.avx2
                    && f.fma
                    && f.f16c
                    && f.avx512f
                    && f.avx512bw
                    && f.avx512vl
                    && f.avx512vnni
            }
            Variant::Neon => arch_arm && f.neon,
            Variant::NeonDotprod => arch_arm && f.neon && f.dotprod,
            Variant::NeonI8mm => arch_arm && f.neon && f.dotprod && f.i8mm,
        }
    }
}

impl std::fmt::Display for Variant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("unknown kernel variant `{name}` (known: scalar, avx2, avx512_vnni, neon, neon_dotprod, neon_i8mm)")]
    Unknown { name: String },
    #[error("kernel variant `{variant}` cannot run on this CPU (available here: {available})")]
    Unsupported { variant: Variant, available: String },
}

pub type MatmulFn<T> = fn(w: &[T], k: usize, x: &[f32], n: usize, yt: &mut [f32]);
pub use crate::quant::{QMatmulFn, QuantizeQ8Fn};

/// One variant's kernels. Every entry is a safe function: SIMD entries are wrappers whose
/// construction is only possible after the variant's features were detected (see [`Kernels::new`]).
#[derive(Clone, Copy)]
pub struct Kernels {
    pub variant: Variant,
    pub matmul_f32: MatmulFn<f32>,
    pub matmul_f16: MatmulFn<f16>,
    pub matmul_bf16: MatmulFn<bf16>,
    pub dot_f32: fn(&[f32], &[f32]) -> f32,
    pub axpy_f32: fn(f32, &[f32], &mut [f32]),
    pub axpy_f16: fn(f32, &[f16], &mut [f32]),
    pub weighted_sum_f32: fn(&[f32], usize, &[f32], &mut [f32]),
    pub weighted_sum_f16: fn(&[f32], usize, &[f16], &mut [f32]),
    pub rmsnorm_f32: fn(&[f32], WeightRef<'_>, f32, &mut [f32]),
    pub softmax_f32: fn(&mut [f32]),
    pub silu_mul_f32: fn(&mut [f32], &[f32]),
    pub rope_f32: fn(&mut [f32], usize, &[f32], &[f32]),
    /// f32 activations to q8 blocks (see [`quant::scalar::quantize_q8`]).
    pub quantize_q8: QuantizeQ8Fn,
    pub matmul_q8_0_q8: QMatmulFn,
    pub matmul_q4_0_q8: QMatmulFn,
    pub matmul_q4_1_q8: QMatmulFn,
    /// The GGUF formats kept as stored ([`quant::kquant`]); the scalar reference
    /// [`quant::kquant::matmul_q8`] where a variant has no kernel of its own.
    pub matmul_q5_0_q8: QMatmulFn,
    pub matmul_q5_1_q8: QMatmulFn,
    pub matmul_iq4_nl_q8: QMatmulFn,
    pub matmul_q2_k_q8: QMatmulFn,
    pub matmul_q3_k_q8: QMatmulFn,
    pub matmul_q4_k_q8: QMatmulFn,
    pub matmul_q5_k_q8: QMatmulFn,
    pub matmul_q6_k_q8: QMatmulFn,
    pub matmul_iq4_xs_q8: QMatmulFn,
    /// q4_0, q8_0 and q4_1 weights in the `rows8` layout ([`quant::rows8`]); same contracts as
    /// `matmul_q4_0_q8`, `matmul_q8_0_q8` and `matmul_q4_1_q8`.
    pub matmul_q4_0_rows8_q8: QMatmulFn,
    pub matmul_q8_0_rows8_q8: QMatmulFn,
    pub matmul_q4_1_rows8_q8: QMatmulFn,
    /// Token-major products, `y[t·rows + r]` instead of `yt[r·n + t]` (same contract otherwise), from
    /// variants whose multi-token kernel produces token-major sums natively, so that prefill needs no
    /// transposition after the product; `None` where the caller must transpose `matmul_*_q8`'s output.
    pub matmul_tokens_q8_0_q8: Option<QMatmulFn>,
    pub matmul_tokens_q4_0_q8: Option<QMatmulFn>,
    pub matmul_tokens_q4_1_q8: Option<QMatmulFn>,
    pub matmul_tokens_q5_0_q8: Option<QMatmulFn>,
    pub matmul_tokens_q5_1_q8: Option<QMatmulFn>,
    pub matmul_tokens_iq4_nl_q8: Option<QMatmulFn>,
    pub matmul_tokens_q2_k_q8: Option<QMatmulFn>,
    pub matmul_tokens_q3_k_q8: Option<QMatmulFn>,
    pub matmul_tokens_q4_k_q8: Option<QMatmulFn>,
    pub matmul_tokens_q5_k_q8: Option<QMatmulFn>,
    pub matmul_tokens_q6_k_q8: Option<QMatmulFn>,
    pub matmul_tokens_iq4_xs_q8: Option<QMatmulFn>,
}

impl std::fmt::Debug for Kernels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kernels")
            .field("variant", &self.variant)
            .finish_non_exhaustive()
    }
}

impl Kernels {
    /// The scalar reference table (runs everywhere).
    pub const SCALAR: Kernels = Kernels {
        variant: Variant::Scalar,
        matmul_f32: scalar::matmul_f32,
        matmul_f16: scalar::matmul_f16,
        matmul_bf16: scalar::matmul_bf16,
        dot_f32: scalar::dot_f32,
        axpy_f32: scalar::axpy_f32,
        axpy_f16: scalar::axpy_f16,
        weighted_sum_f32: scalar::weighted_sum_f32,
        weighted_sum_f16: scalar::weighted_sum_f16,
        rmsnorm_f32: scalar::rmsnorm_f32,
        softmax_f32: scalar::softmax_f32,
        silu_mul_f32: scalar::silu_mul_f32,
        rope_f32: scalar::rope_f32,
        quantize_q8: quant::scalar::quantize_q8,
        matmul_q8_0_q8: quant::scalar::matmul_q8_0_q8,
        matmul_q4_0_q8: quant::scalar::matmul_q4_0_q8,
        matmul_q4_1_q8: quant::scalar::matmul_q4_1_q8,
        matmul_q5_0_q8: quant::kquant::matmul_q8,
        matmul_q5_1_q8: quant::kquant::matmul_q8,
        matmul_iq4_nl_q8: quant::kquant::matmul_q8,
        matmul_q2_k_q8: quant::kquant::matmul_q8,
        matmul_q3_k_q8: quant::kquant::matmul_q8,
        matmul_q4_k_q8: quant::kquant::matmul_q8,
        matmul_q5_k_q8: quant::kquant::matmul_q8,
        matmul_q6_k_q8: quant::kquant::matmul_q8,
        matmul_iq4_xs_q8: quant::kquant::matmul_q8,
        matmul_q4_0_rows8_q8: quant::rows8::matmul_q4_0_rows8_q8,
        matmul_q8_0_rows8_q8: quant::rows8::matmul_q8_0_rows8_q8,
        matmul_q4_1_rows8_q8: quant::rows8::matmul_q4_1_rows8_q8,
        matmul_tokens_q8_0_q8: None,
        matmul_tokens_q4_0_q8: None,
        matmul_tokens_q4_1_q8: None,
        matmul_tokens_q5_0_q8: None,
        matmul_tokens_q5_1_q8: None,
        matmul_tokens_iq4_nl_q8: None,
        matmul_tokens_q2_k_q8: None,
        matmul_tokens_q3_k_q8: None,
        matmul_tokens_q4_k_q8: None,
        matmul_tokens_q5_k_q8: None,
        matmul_tokens_q6_k_q8: None,
        matmul_tokens_iq4_xs_q8: None,
    };

    /// The product kernel for weights in `format`: `matmul_<format>_q8`.
    pub fn matmul_q(&self, format: QFormat) -> QMatmulFn {
        match format {
            QFormat::Q8_0 => self.matmul_q8_0_q8,
            QFormat::Q4_0 => self.matmul_q4_0_q8,
            QFormat::Q4_1 => self.matmul_q4_1_q8,
            QFormat::Q5_0 => self.matmul_q5_0_q8,
            QFormat::Q5_1 => self.matmul_q5_1_q8,
            QFormat::Iq4Nl => self.matmul_iq4_nl_q8,
            QFormat::Q2K => self.matmul_q2_k_q8,
            QFormat::Q3K => self.matmul_q3_k_q8,
            QFormat::Q4K => self.matmul_q4_k_q8,
            QFormat::Q5K => self.matmul_q5_k_q8,
            QFormat::Q6K => self.matmul_q6_k_q8,
            QFormat::Iq4Xs => self.matmul_iq4_xs_q8,
        }
    }

    /// The product kernel for `w`'s format and layout.
    pub fn matmul_weight(&self, w: &QWeight<'_>) -> QMatmulFn {
        match w.layout {
            QLayout::RowSplit => self.matmul_q(w.format),
            QLayout::Rows8 => match w.format {
                QFormat::Q8_0 => self.matmul_q8_0_rows8_q8,
                QFormat::Q4_0 => self.matmul_q4_0_rows8_q8,
                QFormat::Q4_1 => self.matmul_q4_1_rows8_q8,
                // `QWeight::validate` refuses rows8 views of other formats.
                _ => unreachable!("a rows8 {} weight", w.format),
            },
        }
    }

    /// The token-major product kernel for weights in `format` (`matmul_tokens_<format>_q8`), if this
    /// variant has one.
    pub fn matmul_tokens_q(&self, format: QFormat) -> Option<QMatmulFn> {
        match format {
            QFormat::Q8_0 => self.matmul_tokens_q8_0_q8,
            QFormat::Q4_0 => self.matmul_tokens_q4_0_q8,
            QFormat::Q4_1 => self.matmul_tokens_q4_1_q8,
            QFormat::Q5_0 => self.matmul_tokens_q5_0_q8,
            QFormat::Q5_1 => self.matmul_tokens_q5_1_q8,
            QFormat::Iq4Nl => self.matmul_tokens_iq4_nl_q8,
            QFormat::Q2K => self.matmul_tokens_q2_k_q8,
            QFormat::Q3K => self.matmul_tokens_q3_k_q8,
            QFormat::Q4K => self.matmul_tokens_q4_k_q8,
            QFormat::Q5K => self.matmul_tokens_q5_k_q8,
            QFormat::Q6K => self.matmul_tokens_q6_k_q8,
            QFormat::Iq4Xs => self.matmul_tokens_iq4_xs_q8,
        }
    }

    /// The table of `variant`, if this CPU supports it.
    pub fn new(variant: Variant) -> Result<Kernels, KernelError> {
        if !variant.supported_by(&features()) {
            return Err(KernelError::Unsupported {
                variant,
                available: names(&Kernels::available()),
            });
        }
        Ok(Self::table(variant))
    }

    /// The best variant for this CPU.
    pub fn detect() -> Kernels {
        let best = *Kernels::available()
            .last()
            .expect("scalar is always available");
        Self::table(best)
    }

    /// A variant by name (`"auto"` or empty means [`Kernels::detect`]).
    pub fn by_name(name: &str) -> Result<Kernels, KernelError> {
        let name = name.trim();
        if name.is_empty() || name == "auto" {
            return Ok(Kernels::detect());
        }
        let variant = Variant::from_name(name).ok_or_else(|| KernelError::Unknown {
            name: name.to_string(),
        })?;
        Kernels::new(variant)
    }

    /// `explicit` if given, else `$EDGEINFER_KERNELS` if set, else detection.
    pub fn select(explicit: Option<&str>) -> Result<Kernels, KernelError> {
        match explicit {
            Some(name) => Kernels::by_name(name),
            None => match std::env::var(ENV_KERNELS) {
                Ok(name) => Kernels::by_name(&name),
                Err(_) => Ok(Kernels::detect()),
            },
        }
    }

    /// Variants this CPU can run, slowest first (scalar is always first).
    pub fn available() -> Vec<Variant> {
        let f = features();
        Variant::ALL
            .into_iter()
            .filter(|v| v.supported_by(&f))
            .collect()
    }

    // Only called once `variant` is known to be supported.
    fn table(variant: Variant) -> Kernels {
        match variant {
            Variant::Scalar => Kernels::SCALAR,
            #[cfg(target_arch = "x86_64")]
            Variant::Avx2 => crate::x86_64::avx2::table(),
            #[cfg(target_arch = "x86_64")]
            Variant::Avx512Vnni => crate::x86_64::avx512::table(),
            #[cfg(target_arch = "aarch64")]
            Variant::Neon => crate::aarch64::neon::table(),
            #[cfg(target_arch = "aarch64")]
            Variant::NeonDotprod => crate::aarch64::dotprod::table(),
            #[cfg(target_arch = "aarch64")]
            Variant::NeonI8mm => crate::aarch64::i8mm::table(),
            #[allow(unreachable_patterns)]
            _ => Kernels::SCALAR,
        }
    }
}

fn names(v: &[Variant]) -> String {
    v.iter().map(|v| v.name()).collect::<Vec<_>>().join(", ")
}
