"""Reference model configurations (diffusers layout), so shapes are written down once."""

# Wan2.1-T2V-1.3B transformer, as in the diffusers-format release (transformer/config.json).
WAN21_T2V_1_3B_TRANSFORMER = {
    "patch_size": [1, 2, 2],
    "num_attention_heads": 12,
    "attention_head_dim": 128,
    "in_channels": 16,
    "out_channels": 16,
    "text_dim": 4096,
    "freq_dim": 256,
    "ffn_dim": 8960,
    "num_layers": 30,
    "cross_attn_norm": True,
    "qk_norm": "rms_norm_across_heads",
    "eps": 1e-6,
    "image_dim": None,
    "added_kv_proj_dim": None,
    "rope_max_seq_len": 1024,
}

# Wan2.1 VAE (AutoencoderKLWan defaults): 4x temporal, 8x spatial compression, 16 latent channels.
WAN21_VAE = {
    "base_dim": 96,
    "z_dim": 16,
    "dim_mult": [1, 2, 4, 4],
    "num_res_blocks": 2,
    "attn_scales": [],
    "temperal_downsample": [False, True, True],
}

# UMT5-XXL text encoder output: 512 tokens of 4096 channels per prompt.
UMT5_SEQUENCE_LENGTH = 512
UMT5_DIM = 4096
