// Weights::from_tensors: validate every key and shape of a transformers DecisionTransformerModel state dict and
// copy it into the engine's layout (nn.Linear weights (out, in) are transposed to (in, out); GPT-2 Conv1D
// weights are already (in, out)).
#include "engine/weights.h"

#include <array>
#include <cmath>
#include <cstring>
#include <set>

#include "common/check.h"

namespace dt {

namespace {

std::string shape_str(const std::vector<int64_t>& s) {
  std::string out = "(";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + (s.size() == 1 ? ",)" : ")");
}

// The first non-finite value of t as "nan at [i, j]" (its index in every dimension), or "" when all are finite.
std::string first_non_finite(const TensorView& t) {
  const int64_t n = t.numel();
  for (int64_t i = 0; i < n; ++i) {
    float x;
    std::memcpy(&x, t.data + i, sizeof(x));  // t.data may be unaligned
    if (std::isfinite(x)) continue;
    std::vector<int64_t> index(t.shape.size());
    for (int64_t d = static_cast<int64_t>(t.shape.size()) - 1, rest = i; d >= 0; --d) {
      index[d] = rest % t.shape[d];
      rest /= t.shape[d];
    }
    std::string at = "[";
    for (size_t d = 0; d < index.size(); ++d) at += (d ? ", " : "") + std::to_string(index[d]);
    return std::string(std::isnan(x) ? "nan" : x > 0 ? "inf" : "-inf") + " at " + at + "]";
  }
  return "";
}

// Tensors of one GPT-2 block the engine copies (LayerWeights' fields, in order).
constexpr size_t kLayerTensors = 12;

struct Loader {
  const std::map<std::string, TensorView>& tensors;
  const std::string& source;
  std::vector<float>& storage;
  std::set<std::string> used;

  const TensorView& get(const std::string& key, std::vector<int64_t> shape) {
    auto it = tensors.find(key);
    DT_CHECK(it != tensors.end(), source, ": missing weight '", key, "'");
    DT_CHECK(it->second.shape == shape, source, ": weight '", key, "' has shape ", shape_str(it->second.shape),
             ", the config implies ", shape_str(shape));
    used.insert(key);
    return it->second;
  }

  // Append `key` (shape `shape`) to storage, transposed when `transpose` (2-D only); returns its offset.
  size_t add(const std::string& key, std::vector<int64_t> shape, bool transpose = false, int64_t rows = -1) {
    const TensorView& t = get(key, shape);
    size_t off = storage.size();
    int64_t n = rows < 0 ? t.numel() : rows * shape.back();
    storage.resize(off + static_cast<size_t>(n));
    float* dst = storage.data() + off;
    if (!transpose) {
      std::memcpy(dst, t.data, static_cast<size_t>(n) * sizeof(float));
    } else {
      int64_t r = shape[0], c = shape[1];
      for (int64_t i = 0; i < r; ++i)
        for (int64_t j = 0; j < c; ++j) std::memcpy(dst + j * r + i, t.data + i * c + j, sizeof(float));
    }
    return off;
  }
};

}  // namespace

Weights Weights::from_tensors(const Config& c, const std::map<std::string, TensorView>& tensors,
                              const std::string& source) {
  const int64_t S = c.state_dim, A = c.act_dim, C = c.hidden_size, I = c.n_inner, L = c.n_layer;
  Weights w;
  Loader ld{tensors, source, w.storage, {}};
  size_t ts = ld.add("embed_timestep.weight", {c.max_ep_len, C});
  size_t rw = ld.add("embed_return.weight", {C, 1});
  size_t rb = ld.add("embed_return.bias", {C});
  size_t sw = ld.add("embed_state.weight", {C, S}, true);
  size_t sb = ld.add("embed_state.bias", {C});
  size_t aw = ld.add("embed_action.weight", {C, A}, true);
  size_t ab = ld.add("embed_action.bias", {C});
  size_t lnw = ld.add("embed_ln.weight", {C});
  size_t lnb = ld.add("embed_ln.bias", {C});
  size_t wpe = ld.add("encoder.wpe.weight", {c.n_positions, C}, false, 1);
  std::vector<std::array<size_t, kLayerTensors>> layer_off(static_cast<size_t>(L));
  for (int64_t l = 0; l < L; ++l) {
    const std::string p = "encoder.h." + std::to_string(l) + ".";
    layer_off[l] = {ld.add(p + "ln_1.weight", {C}),
                    ld.add(p + "ln_1.bias", {C}),
                    ld.add(p + "attn.c_attn.weight", {C, 3 * C}),
                    ld.add(p + "attn.c_attn.bias", {3 * C}),
                    ld.add(p + "attn.c_proj.weight", {C, C}),
                    ld.add(p + "attn.c_proj.bias", {C}),
                    ld.add(p + "ln_2.weight", {C}),
                    ld.add(p + "ln_2.bias", {C}),
                    ld.add(p + "mlp.c_fc.weight", {C, I}),
                    ld.add(p + "mlp.c_fc.bias", {I}),
                    ld.add(p + "mlp.c_proj.weight", {I, C}),
                    ld.add(p + "mlp.c_proj.bias", {C})};
    for (const char* buf : {"attn.bias", "attn.masked_bias"}) ld.used.insert(p + buf);
  }
  size_t fw = ld.add("encoder.ln_f.weight", {C});
  size_t fb = ld.add("encoder.ln_f.bias", {C});
  size_t pw = ld.add("predict_action.0.weight", {A, C}, true);
  size_t pb = ld.add("predict_action.0.bias", {A});
  const bool log_std = tensors.count("predict_action_log_std.weight") || tensors.count("predict_action_log_std.bias");
  DT_CHECK(!log_std || c.action_tanh, source,
           ": a log-std head (predict_action_log_std) needs action_tanh = true: "
           "a stochastic action is squashed with tanh");
  const size_t lw = log_std ? ld.add("predict_action_log_std.weight", {A, C}, true) : 0;
  const size_t lb = log_std ? ld.add("predict_action_log_std.bias", {A}) : 0;
  // Present in every checkpoint but not needed for actions: checked, not copied.
  auto wte = tensors.find("encoder.wte.weight");
  ld.get("encoder.wte.weight", {wte != tensors.end() && !wte->second.shape.empty() ? wte->second.shape[0] : 1, C});
  ld.get("predict_state.weight", {S, C});
  ld.get("predict_state.bias", {S});
  ld.get("predict_return.weight", {1, C});
  ld.get("predict_return.bias", {1});
  for (const auto& kv : tensors)
    DT_CHECK(ld.used.count(kv.first), source, ": unexpected weight '", kv.first, "' (not part of the config's model)");
  for (const auto& kv : tensors) {
    const std::string bad = first_non_finite(kv.second);
    DT_CHECK(bad.empty(), source, ": weight '", kv.first, "' is not finite (as float32): ", bad);
  }

  const float* base = w.storage.data();
  w.embed_timestep = base + ts;
  w.embed_return_w = base + rw;
  w.embed_return_b = base + rb;
  w.embed_state_w = base + sw;
  w.embed_state_b = base + sb;
  w.embed_action_w = base + aw;
  w.embed_action_b = base + ab;
  w.embed_ln_w = base + lnw;
  w.embed_ln_b = base + lnb;
  w.wpe0 = base + wpe;
  for (const auto& o : layer_off) {
    w.layers.push_back({base + o[0], base + o[1], base + o[2], base + o[3], base + o[4], base + o[5], base + o[6],
                        base + o[7], base + o[8], base + o[9], base + o[10], base + o[11]});
  }
  w.ln_f_w = base + fw;
  w.ln_f_b = base + fb;
  w.predict_action_w = base + pw;
  w.predict_action_b = base + pb;
  if (log_std) {
    w.predict_action_log_std_w = base + lw;
    w.predict_action_log_std_b = base + lb;
  }
  return w;
}

}  // namespace dt
