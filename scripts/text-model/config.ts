// The embedded model's architecture and pretraining recipe, in one place: make-model.ts builds the
// model from it and the model card quotes it.

/** config.json of the model (Llama family: RoPE, RMSNorm, SwiGLU, grouped-query attention, tied embeddings). */
export const MODEL_CONFIG = {
  architectures: ['LlamaForCausalLM'],
  model_type: 'llama',
  vocab_size: 4096,
  hidden_size: 256,
  intermediate_size: 688,
  num_hidden_layers: 6,
  num_attention_heads: 8,
  num_key_value_heads: 4,
  max_position_embeddings: 256,
  hidden_act: 'silu',
  rms_norm_eps: 1e-5,
  rope_theta: 10000,
  tie_word_embeddings: true,
  attention_bias: false,
  mlp_bias: false,
  initializer_range: 0.02,
  bos_token_id: 0,
  eos_token_id: 0,
  torch_dtype: 'float16',
};

/** The `vera train --method full` flags of the pretraining run (the data and output paths are added by make-model.ts). */
export const PRETRAIN_FLAGS = {
  '--seq-len': '256',
  '--batch-size': '16',
  '--steps': '1000',
  '--lr': '2e-3',
  '--schedule': 'cosine',
  '--warmup-steps': '60',
  '--weight-decay': '0.1',
  '--max-grad-norm': '1',
  '--eval-every': '200',
  '--seed': '0',
  '--dtype': 'f16',
};
