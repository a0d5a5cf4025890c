//! `infer inspect`: what a model directory holds and what running it costs.

use anyhow::Result;
use clap::Args;
use edgeinfer::SessionOptions;
use edgeinfer_kernels::quant::QLayout;
use edgeinfer_kernels::Kernels;

use crate::ModelArgs;

#[derive(Args)]
pub struct InspectArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Context length to estimate the session memory for [default: the model's, at most 4096].
    #[arg(
        short = 'c',
        long = "ctx-size",
        default_value_t = 0,
        hide_default_value = true
    )]
    ctx_size: usize,
    /// List every tensor (name, dtype, shape, bytes, bits per weight).
    #[arg(long)]
    tensors: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// Read every weight and fail if any is NaN or infinite (names the tensors).
    #[arg(long)]
    check: bool,
}

pub fn run(args: InspectArgs) -> Result<()> {
    let model = args.model.load()?;
    let cfg = model.config();
    // Opening a session sizes the arena exactly as `run` would; its pages are never touched.
    let session = model.session(SessionOptions {
        ctx: args.ctx_size,
        ..args.model.session_options()
    })?;
    let (ctx, arena) = (session.ctx(), session.arena_bytes());
    let weights = model.weight_bytes();
    let available: Vec<&str> = Kernels::available().iter().map(|v| v.name()).collect();
    let tensors: Vec<_> = model.weights().collect();
    let mut params = 0usize;
    // Per storage type: tensors, parameters, bytes; and the same over the layers' matrices.
    let mut types: std::collections::BTreeMap<&str, (usize, usize, usize)> = Default::default();
    let (mut layer_params, mut layer_bytes) = (0usize, 0usize);
    for t in &tensors {
        let n = t.shape.iter().product::<usize>();
        params += n;
        let e = types.entry(t.type_name).or_default();
        *e = (e.0 + 1, e.1 + n, e.2 + t.bytes);
        if t.shape.len() == 2 && t.name.contains("layers.") {
            (layer_params, layer_bytes) = (layer_params + n, layer_bytes + t.bytes);
        }
    }
    let bits = |bytes: usize, n: usize| 8.0 * bytes as f64 / n.max(1) as f64;
    let all_bytes: usize = tensors.iter().map(|t| t.bytes).sum();
    let non_finite = if args.check {
        Some(model.non_finite_weights()?)
    } else {
        None
    };
    let check_result = || -> Result<()> {
        match non_finite.as_deref() {
            Some([first, ..]) => anyhow::bail!(
                "{} tensor(s) hold NaN or infinite values, first `{}` ({} NaN, {} Inf)",
                non_finite.as_ref().map_or(0, Vec::len),
                first.name,
                first.nan,
                first.inf
            ),
            _ => Ok(()),
        }
    };

    if args.json {
        let list: Vec<_> = tensors
            .iter()
            .map(|t| {
                let n = t.shape.iter().product::<usize>();
                let mut j = serde_json::json!({"name": t.name, "dtype": t.type_name, "shape": t.shape, "bytes": t.bytes, "bits_per_weight": bits(t.bytes, n), "line_aligned": t.line_aligned});
                if let Some(l) = t.layout {
                    j["layout"] = l.name().into();
                }
                j
            })
            .collect();
        let json = serde_json::json!({
            "model": model.dir().display().to_string(),
            "architecture": cfg.arch.name(),
            "layers": cfg.num_layers,
            "hidden_size": cfg.hidden_size,
            "intermediate_size": cfg.intermediate_size,
            "heads": cfg.num_heads,
            "kv_heads": cfg.num_kv_heads,
            "vocab_size": cfg.vocab_size,
            "max_position_embeddings": cfg.max_position_embeddings,
            "parameters": params,
            "bits_per_weight": bits(all_bytes, params),
            "layer_matrix_bits_per_weight": bits(layer_bytes, layer_params),
            "formats": types.iter().map(|(name, &(count, n, b))| (name.to_string(), serde_json::json!({"tensors": count, "parameters": n, "bytes": b, "bits_per_weight": bits(b, n)}))).collect::<serde_json::Map<_, _>>(),
            "weight_bytes": weights,
            "mapped_bytes": model.mapped_bytes(),
            "kernels": model.kernels().variant.name(),
            "kernels_available": available,
            "acts": args.model.session_options().acts.name(),
            "threads": model.threads(),
            "ctx": ctx,
            "session_bytes": arena,
            "estimated_memory_bytes": weights + arena,
            "tensors": list,
        });
        let mut json = json;
        if let Some(bad) = &non_finite {
            json["non_finite"] = bad
                .iter()
                .map(|t| serde_json::json!({"name": t.name, "nan": t.nan, "inf": t.inf, "first": t.first}))
                .collect();
        }
        println!("{json:#}");
        return check_result();
    }

    let mb = |b: usize| b as f64 / (1024.0 * 1024.0);
    println!("model        {}", model.dir().display());
    println!(
        "architecture {} — {} layers, hidden {}, mlp {}, heads {} (kv {}), vocab {}, max context {}",
        cfg.arch.name(),
        cfg.num_layers,
        cfg.hidden_size,
        cfg.intermediate_size,
        cfg.num_heads,
        cfg.num_kv_heads,
        cfg.vocab_size,
        cfg.max_position_embeddings
    );
    println!(
        "parameters   {:.1} M in {} tensors",
        params as f64 / 1e6,
        tensors.len()
    );
    let formats: Vec<String> = types
        .iter()
        .map(|(name, &(count, n, b))| format!("{name} ×{count} ({:.2})", bits(b, n)))
        .collect();
    println!(
        "formats      {} (tensors, bits per weight)",
        formats.join(", ")
    );
    println!(
        "bits/weight  {:.3} over every weight; {:.3} over the layers' matrices",
        bits(all_bytes, params),
        bits(layer_bytes, layer_params)
    );
    println!(
        "weights      {:.1} MiB (mapped from disk, {:.1} MiB of files)",
        mb(weights),
        mb(model.mapped_bytes())
    );
    println!(
        "kernels      {} (available here: {}); {} activations",
        model.kernels().variant.name(),
        available.join(", "),
        args.model.session_options().acts
    );
    let misaligned = tensors.iter().filter(|t| !t.line_aligned).count();
    if misaligned == 0 {
        println!("layout       every tensor starts on a 64-byte cache line");
    } else {
        println!(
            "layout       {misaligned} of {} tensors start mid-cache-line; decoding is fastest when each \
             starts on one, as `infer import` and `infer quantize` now write them",
            tensors.len()
        );
    }
    let rows8 = tensors
        .iter()
        .filter(|t| t.layout == Some(QLayout::Rows8))
        .count();
    if rows8 > 0 {
        let variant = model.kernels().variant;
        let how = if variant.reads_rows8() {
            format!("{variant} reads them as stored")
        } else {
            format!(
                "{variant} has no kernel for it and reorders them on every product; for this CPU \
                 quantize or import with --layout rowsplit"
            )
        };
        println!("             {rows8} matrices in the rows8 layout (ARM dotprod): {how}");
    }
    println!("threads      {}", model.threads());
    println!(
        "session      {:.1} MiB at a context of {ctx} tokens (activations + KV cache)",
        mb(arena)
    );
    println!(
        "estimate     {:.1} MiB resident for one session once every weight page is touched",
        mb(weights + arena)
    );
    if args.tensors {
        println!();
        println!(
            "{:<48} {:>10} {:>14} {:>12} {:>6}",
            "tensor", "dtype", "shape", "bytes", "bits"
        );
        for t in &tensors {
            let dtype = match t.layout {
                Some(l) if l != QLayout::RowSplit => format!("{} {l}", t.type_name),
                _ => t.type_name.to_string(),
            };
            println!(
                "{:<48} {:>10} {:>14} {:>12} {:>6.2}",
                t.name,
                dtype,
                format!("{:?}", t.shape),
                t.bytes,
                bits(t.bytes, t.shape.iter().product())
            );
        }
    } else {
        println!("(--tensors lists every tensor)");
    }
    if let Some(bad) = &non_finite {
        if bad.is_empty() {
            println!("check        every weight is finite");
        }
        for t in bad {
            println!(
                "check        `{}`: {} NaN, {} Inf (first at element {})",
                t.name,
                t.nan,
                t.inf,
                t.first.unwrap_or(0)
            );
        }
    }
    check_result()
}
