// Config::from_json: transformers' DecisionTransformerConfig fields and defaults, validated.
#include "engine/config.h"

#include "common/check.h"
#include "engine/activation.h"

namespace dt {

namespace {

// Sizes from this on are refused as corrupt: far above any real model's. (The engine multiplies sizes in int only
// after the weights, whose shapes are checked against them in int64, have shown that the model fits in memory.)
constexpr int64_t kMaxSize = int64_t{1} << 30;

// A size field, also accepted under transformers' attribute_map alias.
int positive_int(const Json& j, const std::string& key, const std::string& alias, int64_t fallback,
                 const std::string& source) {
  int64_t v = json_int_or(j, key, j.has(alias) ? json_int(j, alias, source) : fallback, source);
  DT_CHECK(v >= 1 && v < kMaxSize, source, ": '", key, "' must be a positive int, got ", v);
  return static_cast<int>(v);
}

}  // namespace

Activation parse_activation(const std::string& name, const std::string& source) {
  if (name == "relu") return Activation::Relu;
  if (name == "gelu") return Activation::Gelu;
  if (name == "gelu_new" || name == "gelu_pytorch_tanh" || name == "gelu_fast") return Activation::GeluTanh;
  if (name == "quick_gelu") return Activation::QuickGelu;
  if (name == "silu" || name == "swish") return Activation::Silu;
  if (name == "tanh") return Activation::Tanh;
  if (name == "sigmoid") return Activation::Sigmoid;
  fail(source, ": unsupported activation_function '", name, "'");
}

bool Config::operator==(const Config& o) const {
  return state_dim == o.state_dim && act_dim == o.act_dim && hidden_size == o.hidden_size && n_layer == o.n_layer &&
         n_head == o.n_head && n_inner == o.n_inner && max_ep_len == o.max_ep_len && n_positions == o.n_positions &&
         action_tanh == o.action_tanh && activation == o.activation && ln_eps == o.ln_eps &&
         scale_attn_weights == o.scale_attn_weights &&
         scale_attn_by_inverse_layer_idx == o.scale_attn_by_inverse_layer_idx;
}

Config Config::from_json(const Json& j, const std::string& source) {
  DT_CHECK(j.kind == Json::Kind::Object, source, ": expected a JSON object");
  std::string model_type = json_string_or(j, "model_type", "decision_transformer", source);
  DT_CHECK(model_type == "decision_transformer", source, ": model_type is '", model_type,
           "', expected 'decision_transformer'");
  const Config d;  // transformers' defaults, for the keys a config.json leaves out
  Config c;
  c.state_dim = positive_int(j, "state_dim", "", d.state_dim, source);
  c.act_dim = positive_int(j, "act_dim", "", d.act_dim, source);
  c.hidden_size = positive_int(j, "hidden_size", "", d.hidden_size, source);
  c.n_layer = positive_int(j, "n_layer", "num_hidden_layers", d.n_layer, source);
  c.n_head = positive_int(j, "n_head", "num_attention_heads", d.n_head, source);
  c.n_inner = positive_int(j, "n_inner", "", 4 * int64_t{c.hidden_size}, source);
  c.max_ep_len = positive_int(j, "max_ep_len", "", d.max_ep_len, source);
  c.n_positions = positive_int(j, "n_positions", "max_position_embeddings", d.n_positions, source);
  c.action_tanh = json_bool_or(j, "action_tanh", d.action_tanh, source);
  c.activation = parse_activation(json_string_or(j, "activation_function", "relu", source), source);
  c.ln_eps = static_cast<float>(json_number_or(j, "layer_norm_epsilon", d.ln_eps, source));
  c.scale_attn_weights = json_bool_or(j, "scale_attn_weights", d.scale_attn_weights, source);
  c.scale_attn_by_inverse_layer_idx = json_bool_or(j, "scale_attn_by_inverse_layer_idx",
                                                   d.scale_attn_by_inverse_layer_idx, source);
  DT_CHECK(c.hidden_size % c.n_head == 0, source, ": hidden_size (", c.hidden_size, ") must be divisible by n_head (",
           c.n_head, ")");
  DT_CHECK(c.ln_eps > 0.0f, source, ": layer_norm_epsilon must be positive");
  return c;
}

}  // namespace dt
