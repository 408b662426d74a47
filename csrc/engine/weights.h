// Weights: every parameter the engine reads, copied once into one owned buffer, matrices stored in x out
// (GPT-2's Conv1D layout) so that a matmul streams rows of W. Shapes in the comments use
// S state_dim, A act_dim, C hidden_size, I n_inner, T max_ep_len.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "engine/config.h"
#include "engine/safetensors.h"

namespace dt {

struct LayerWeights {
  const float* ln_1_w;     // (C)
  const float* ln_1_b;     // (C)
  const float* attn_w;     // (C, 3C) columns q | k | v
  const float* attn_b;     // (3C)
  const float* proj_w;     // (C, C)
  const float* proj_b;     // (C)
  const float* ln_2_w;     // (C)
  const float* ln_2_b;     // (C)
  const float* fc_w;       // (C, I)
  const float* fc_b;       // (I)
  const float* fc_proj_w;  // (I, C)
  const float* fc_proj_b;  // (C)
};

struct Weights {
  Weights() = default;
  Weights(const Weights&) = delete;  // the pointers below point into `storage`: move only
  Weights(Weights&&) = default;
  Weights& operator=(Weights&&) = default;

  std::vector<float> storage;        // owns every array below
  const float* embed_timestep;       // (T, C)
  const float* embed_return_w;       // (C): Linear(1, C) weight
  const float* embed_return_b;       // (C)
  const float* embed_state_w;        // (S, C)
  const float* embed_state_b;        // (C)
  const float* embed_action_w;       // (A, C)
  const float* embed_action_b;       // (C)
  const float* embed_ln_w;           // (C)
  const float* embed_ln_b;           // (C)
  const float* wpe0;                 // (C): row 0 of wpe, added to every token
  std::vector<LayerWeights> layers;  // (L)
  const float* ln_f_w;               // (C)
  const float* ln_f_b;               // (C)
  const float* predict_action_w;     // (C, A)
  const float* predict_action_b;     // (A)
  // The log-std head of a stochastic model (ODT's; engine/sampling.h), or null: predict_action_log_std.
  const float* predict_action_log_std_w = nullptr;  // (C, A)
  const float* predict_action_log_std_b = nullptr;  // (A)

  // Copy from tensors in transformers' state-dict layout (the keys and shapes of model.safetensors), plus the
  // log-std head's two tensors of a stochastic model (predict_action_log_std.weight (A, C) and .bias (A), nn.Linear
  // layout; with action_tanh only) when present; throws naming `source` and the first missing, unexpected or
  // mis-shaped key, or the first tensor holding a NaN or an infinity (every tensor is checked, also those the
  // engine does not read: such a checkpoint is broken, and the torch backend would return NaN actions where the
  // engine's would look normal).
  static Weights from_tensors(const Config& c, const std::map<std::string, TensorView>& tensors,
                              const std::string& source);
  bool has_log_std() const { return predict_action_log_std_w != nullptr; }
  // Bytes of the parameters one step reads (for the benchmark's bandwidth bound).
  size_t bytes() const { return storage.size() * sizeof(float); }
};

}  // namespace dt
