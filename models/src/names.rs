//! Hugging Face tensor names of the Llama family (Qwen2 and Qwen3 use the same, plus biases and q/k norms).

pub const EMBED: &str = "model.embed_tokens.weight";
pub const NORM: &str = "model.norm.weight";
pub const LM_HEAD: &str = "lm_head.weight";

/// `model.layers.{layer}.{suffix}`.
pub fn layer(layer: usize, suffix: &str) -> String {
    format!("model.layers.{layer}.{suffix}")
}

pub const ATTN_NORM: &str = "input_layernorm.weight";
pub const WQ: &str = "self_attn.q_proj.weight";
pub const WK: &str = "self_attn.k_proj.weight";
pub const WV: &str = "self_attn.v_proj.weight";
pub const WO: &str = "self_attn.o_proj.weight";
pub const MLP_NORM: &str = "post_attention_layernorm.weight";
pub const W_GATE: &str = "mlp.gate_proj.weight";
pub const W_UP: &str = "mlp.up_proj.weight";
pub const W_DOWN: &str = "mlp.down_proj.weight";
pub const BQ: &str = "self_attn.q_proj.bias";
pub const BK: &str = "self_attn.k_proj.bias";
pub const BV: &str = "self_attn.v_proj.bias";
pub const Q_NORM: &str = "self_attn.q_norm.weight";
pub const K_NORM: &str = "self_attn.k_norm.weight";
