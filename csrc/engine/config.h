// Config: the model hyper-parameters the engine needs, read from a transformers config.json.
#pragma once

#include <string>

#include "engine/json.h"

namespace dt {

enum class Activation { Relu, Gelu, GeluTanh, QuickGelu, Silu, Tanh, Sigmoid };

// Defaults: transformers' DecisionTransformerConfig's, used for keys a config.json leaves out.
struct Config {
  int state_dim = 17;      // S: observation size
  int act_dim = 4;         // A: action size
  int hidden_size = 128;   // C: residual width
  int n_layer = 3;         // L: GPT-2 blocks
  int n_head = 1;          // H: attention heads, C % H == 0
  int n_inner = 512;       // I: MLP width (config n_inner, or 4C when null)
  int max_ep_len = 4096;   // rows of the timestep embedding
  int n_positions = 1024;  // rows of wpe (only row 0 is used)
  bool action_tanh = true;
  Activation activation = Activation::Relu;
  float ln_eps = 1e-5f;  // GPT-2 LayerNorms; embed_ln always uses 1e-5 as in transformers
  bool scale_attn_weights = true;
  bool scale_attn_by_inverse_layer_idx = false;

  int head_dim() const { return hidden_size / n_head; }
  // Every field equal: the same model up to its weights.
  bool operator==(const Config& o) const;
  // Parse and validate a config.json object (transformers' keys and defaults); `source` names the file.
  static Config from_json(const Json& j, const std::string& source);
};

}  // namespace dt
