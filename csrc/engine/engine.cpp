// Engine: see engine.h. A step splits the batch into chunks of rows (one thread runs a chunk with its own
// RunState, so the working set stays in L2). Per chunk: plan each row's token ranges, embed the new tokens into
// the layer-0 cache, run the layers over the packed token rows of the chunk (one matmul per weight for all of
// them; attention per row and head as two small matmuls, scores over transposed keys then weights times
// values), then ln_f and the action head on the s_t rows. Nothing is allocated after construction.
#include "engine/engine.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <sstream>

#include "common/check.h"

namespace dt {

namespace {

void activate(float* x, int64_t n, Activation a) {
  switch (a) {
    case Activation::Relu:
      for (int64_t i = 0; i < n; ++i) x[i] = x[i] > 0.0f ? x[i] : 0.0f;
      break;
    case Activation::Gelu:
      for (int64_t i = 0; i < n; ++i) x[i] = 0.5f * x[i] * (1.0f + std::erf(x[i] * 0.70710678118654752f));
      break;
    case Activation::GeluTanh:
      for (int64_t i = 0; i < n; ++i)
        x[i] = 0.5f * x[i] * (1.0f + std::tanh(0.79788456080286536f * (x[i] + 0.044715f * x[i] * x[i] * x[i])));
      break;
    case Activation::QuickGelu:
      for (int64_t i = 0; i < n; ++i) x[i] = x[i] / (1.0f + std::exp(-1.702f * x[i]));
      break;
    case Activation::Silu:
      for (int64_t i = 0; i < n; ++i) x[i] = x[i] / (1.0f + std::exp(-x[i]));
      break;
    case Activation::Tanh:
      for (int64_t i = 0; i < n; ++i) x[i] = std::tanh(x[i]);
      break;
    case Activation::Sigmoid:
      for (int64_t i = 0; i < n; ++i) x[i] = 1.0f / (1.0f + std::exp(-x[i]));
      break;
  }
}

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  DT_CHECK(in.good(), path, ": cannot open");
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

Mode parse_mode(const std::string& name) {
  if (name == "exact") return Mode::Exact;
  if (name == "rolling") return Mode::Rolling;
  fail("mode must be 'exact' or 'rolling', got '", name, "'");
}

Model load_checkpoint(const std::string& dir) {
  const std::string config_path = dir + "/config.json", weights_path = dir + "/model.safetensors";
  Config c = Config::from_json(Json::parse(read_text(config_path), config_path), config_path);
  SafetensorsFile f = SafetensorsFile::read(weights_path);
  return Model{c, Weights::from_tensors(c, f.tensors, weights_path)};
}

Engine::Engine(Model model, int batch, int context_len, Mode mode, int n_threads, const std::string& isa)
    : model_(std::move(model)), B_(batch), K_(context_len), R_(3 * context_len + 3), mode_(mode),
      kernels_(kernels_select(isa)) {
  DT_CHECK(batch >= 1, "batch must be >= 1, got ", batch);
  DT_CHECK(context_len >= 1 && context_len <= 100000, "context_len must be in [1, 100000], got ", context_len);
  DT_CHECK(n_threads >= 0, "n_threads must be >= 0, got ", n_threads);
  if (n_threads == 0) n_threads = batch == 1 ? 1 : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  const Config& c = model_.config;
  const size_t C = c.hidden_size, B = batch, R = R_, L = c.n_layer;
  const size_t per_row = mode == Mode::Exact ? 3 * K_ : 3;  // most token rows one batch row computes in a step
  chunk_ = static_cast<int>(std::max<size_t>(1, kChunkTokens / per_row));
  const int n_chunks = (batch + chunk_ - 1) / chunk_;
  pool_ = std::make_unique<ThreadPool>(std::max(1, std::min(n_threads, n_chunks)));
  cache_.k.assign(B * L * R * C, 0.0f);
  cache_.v.assign(B * L * R * C, 0.0f);
  cache_.x0.assign(B * R * C, 0.0f);
  cache_.q0.assign(B * R * C, 0.0f);
  const size_t G = static_cast<size_t>(std::min(chunk_, batch)), rows = G * per_row;
  states_.resize(static_cast<size_t>(pool_->size()));
  for (RunState& st : states_) {
    st.h.assign(rows * C, 0.0f);
    st.h2.assign(rows * C, 0.0f);
    st.xb.assign(rows * C, 0.0f);
    st.qkv.assign(rows * 3 * C, 0.0f);
    st.xq.assign(G * C, 0.0f);
    st.q_last.assign(G * C, 0.0f);
    st.att.assign(rows * C, 0.0f);
    st.ff.assign(rows * c.n_inner, 0.0f);
    const size_t np = (R + 15) / 16 * 16;
    st.scores.assign(R * np, 0.0f);
    st.att_q.assign(R * C, 0.0f);
    st.att_kt.assign(C * np, 0.0f);
    st.att_v.assign(R * C, 0.0f);
    st.plan.assign(G, RowPlan{});
  }
  n_steps_.assign(B, 0);
  prev_timestep_.assign(B, 0);
  prev_action_.assign(B * c.act_dim, 0.0f);
}

void Engine::reset(int64_t row) {
  DT_CHECK(row >= 0 && row < B_, "row ", row, " out of range [0, ", B_, ")");
  n_steps_[row] = 0;
}

void Engine::embed(int64_t b, const float* state, float rtg, int64_t timestep) {
  const Config& c = model_.config;
  const Weights& w = model_.weights;
  const int C = c.hidden_size;
  const int64_t t = n_steps_[b];
  auto finish = [&](int64_t pos, int64_t ts) {  // + timestep embedding, embed_ln, + wpe[0], in the x0 slot
    float* x = cache_.x0.data() + (b * R_ + pos % R_) * C;
    const float* e = w.embed_timestep + ts * C;
    for (int i = 0; i < C; ++i) x[i] += e[i];
    kernels_.layer_norm(x, x, w.embed_ln_w, w.embed_ln_b, C, 1e-5f);
    for (int i = 0; i < C; ++i) x[i] += w.wpe0[i];
  };
  if (t > 0) {
    const int64_t pos = 3 * t - 1;
    kernels_.matmul(cache_.x0.data() + (b * R_ + pos % R_) * C, C, prev_action_.data() + b * c.act_dim, c.act_dim,
                    w.embed_action_w, C, w.embed_action_b, 1, c.act_dim, C);
    finish(pos, prev_timestep_[b]);
  }
  float* xr = cache_.x0.data() + (b * R_ + (3 * t) % R_) * C;
  for (int i = 0; i < C; ++i) xr[i] = rtg * w.embed_return_w[i] + w.embed_return_b[i];
  finish(3 * t, timestep);
  kernels_.matmul(cache_.x0.data() + (b * R_ + (3 * t + 1) % R_) * C, C, state, c.state_dim, w.embed_state_w, C,
                  w.embed_state_b, 1, c.state_dim, C);
  finish(3 * t + 1, timestep);
}

void Engine::attend(RunState& st, int l, int64_t b, int64_t bl) {
  const Config& c = model_.config;
  const int C = c.hidden_size, H = c.n_head, hs = c.head_dim(), L = c.n_layer;
  const RowPlan& p = st.plan[bl];
  float scale = c.scale_attn_weights ? 1.0f / std::sqrt(static_cast<float>(hs)) : 1.0f;
  if (c.scale_attn_by_inverse_layer_idx) scale /= static_cast<float>(l + 1);
  const float* kc = cache_.k.data() + ((b * L + l) * R_) * static_cast<int64_t>(C);
  const float* vc = cache_.v.data() + ((b * L + l) * R_) * static_cast<int64_t>(C);
  const int64_t q_lo = l == L - 1 ? p.end : p.lo;
  auto floor_of = [&](int64_t pos) {
    return p.floor >= 0 ? p.floor : std::max<int64_t>(0, 3 * (pos / 3 - K_ + 1));
  };
  // Every query attends to keys in [floor_of(pos), pos] within the window [k_lo, end] (floors grow with pos).
  const int64_t k_lo = floor_of(q_lo);
  const int nq = static_cast<int>(p.end - q_lo + 1), n = static_cast<int>(p.end - k_lo + 1);
  const int np = (n + 15) / 16 * 16;  // key columns padded so the score matmul has no scalar tail
  float* q = st.att_q.data();          // (nq, hs) queries of one head
  float* kt = st.att_kt.data();        // (hs, np) keys of one head, transposed
  float* v = st.att_v.data();          // (n, hs) values of one head
  float* sc = st.scores.data();        // (nq, np) scores, then attention weights
  float* out = l == L - 1 ? st.att.data() + bl * C : st.att.data() + (p.h_off + q_lo - p.lo) * C;  // (nq, C)
  if (nq <= kDirectQueries) {  // few queries (rolling, the last layer): no transpose, one key at a time
    const int s0 = static_cast<int>(k_lo % R_), n1 = std::min(n, R_ - s0), n2 = n - n1;  // ring segments
    for (int i = 0; i < nq; ++i) {
      const int64_t pos = q_lo + i;
      const float* qv = l == 0 ? cache_.q0.data() + (b * R_ + pos % R_) * C
                        : l == L - 1 ? st.q_last.data() + bl * C
                                     : st.qkv.data() + (p.h_off + pos - p.lo) * 3 * C;
      const int lo = static_cast<int>(floor_of(pos) - k_lo), hi = n - nq + i;  // valid keys [lo, hi]
      for (int hd = 0; hd < H; ++hd) {
        const int col = hd * hs;
        kernels_.attn_scores(sc, qv + col, kc + s0 * C + col, C, n1, hs);
        if (n2) kernels_.attn_scores(sc + n1, qv + col, kc + col, C, n2, hs);
        float mx = -INFINITY;
        for (int j = lo; j <= hi; ++j) mx = std::max(mx, sc[j] * scale);
        float sum = 0.0f;
        for (int j = 0; j < n; ++j) sum += (sc[j] = j < lo || j > hi ? 0.0f : std::exp(sc[j] * scale - mx));
        const float inv = 1.0f / sum;
        for (int j = lo; j <= hi; ++j) sc[j] *= inv;
        float* o = out + i * C + col;
        kernels_.attn_values(o, sc, vc + s0 * C + col, C, n1, hs);
        if (n2) {
          kernels_.attn_values(q, sc + n1, vc + col, C, n2, hs);  // q is free scratch on this path
          for (int d = 0; d < hs; ++d) o[d] += q[d];
        }
      }
    }
    return;
  }
  for (int hd = 0; hd < H; ++hd) {
    const int col = hd * hs;
    for (int i = 0; i < nq; ++i) {
      const int64_t pos = q_lo + i;
      const float* src = l == 0 ? cache_.q0.data() + (b * R_ + pos % R_) * C
                         : l == L - 1 ? st.q_last.data() + bl * C
                                      : st.qkv.data() + (p.h_off + pos - p.lo) * 3 * C;
      std::copy_n(src + col, hs, q + i * hs);
    }
    for (int j = 0; j < n; ++j) {
      const int64_t slot = (k_lo + j) % R_;
      const float* kr = kc + slot * C + col;
      for (int d = 0; d < hs; ++d) kt[d * np + j] = kr[d];
      std::copy_n(vc + slot * C + col, hs, v + j * hs);
    }
    kernels_.matmul(sc, np, q, hs, kt, np, nullptr, nq, hs, np);
    for (int i = 0; i < nq; ++i) {
      float* row = sc + i * np;
      const int lo = static_cast<int>(floor_of(q_lo + i) - k_lo), hi = n - nq + i;  // valid keys [lo, hi]
      float mx = -INFINITY;
      for (int j = lo; j <= hi; ++j) mx = std::max(mx, row[j] * scale);
      float sum = 0.0f;
      for (int j = lo; j <= hi; ++j) sum += (row[j] = std::exp(row[j] * scale - mx));
      const float inv = 1.0f / sum;
      for (int j = 0; j < lo; ++j) row[j] = 0.0f;
      for (int j = lo; j <= hi; ++j) row[j] *= inv;
      for (int j = hi + 1; j < n; ++j) row[j] = 0.0f;
    }
    kernels_.matmul(out + col, C, sc, np, v, hs, nullptr, nq, n, hs);
  }
}

void Engine::layer(RunState& st, int64_t b0, int64_t nb, int l, int64_t rows_in) {
  const Config& c = model_.config;
  const LayerWeights& w = model_.weights.layers[l];
  const int C = c.hidden_size, I = c.n_inner, L = c.n_layer;
  const bool last = l == L - 1;
  const MatmulFn mm = kernels_.matmul;
  // ln_1 of the tokens whose keys/values this layer computes: the new tokens at layer 0, all rows after it.
  const RowPlan& back = st.plan[nb - 1];
  const int64_t rows_kv = l == 0 ? back.new_off + (back.end - back.new_lo + 1) : rows_in;
  for (int64_t bl = 0; bl < nb; ++bl) {
    const RowPlan& p = st.plan[bl];
    const int64_t lo = l == 0 ? p.new_lo : p.lo, off = l == 0 ? p.new_off : p.h_off;
    for (int64_t pos = lo; pos <= p.end; ++pos)
      kernels_.layer_norm(st.xb.data() + (off + pos - lo) * C, st.h.data() + (p.h_off + pos - p.lo) * C, w.ln_1_w,
                          w.ln_1_b, C, c.ln_eps);
    if (last && l > 0) std::copy_n(st.xb.data() + (off + p.end - lo) * C, C, st.xq.data() + bl * C);
  }
  if (last && l > 0) {  // keys and values of every token, the query of s_t only
    mm(st.qkv.data() + C, 3 * C, st.xb.data(), C, w.attn_w + C, 3 * C, w.attn_b + C, static_cast<int>(rows_kv), C,
       2 * C);
    mm(st.q_last.data(), C, st.xq.data(), C, w.attn_w, 3 * C, w.attn_b, static_cast<int>(nb), C, C);
  } else {
    mm(st.qkv.data(), 3 * C, st.xb.data(), C, w.attn_w, 3 * C, w.attn_b, static_cast<int>(rows_kv), C, 3 * C);
  }
  for (int64_t bl = 0; bl < nb; ++bl) {
    const int64_t b = b0 + bl;
    const RowPlan& p = st.plan[bl];
    const int64_t lo = l == 0 ? p.new_lo : p.lo, off = l == 0 ? p.new_off : p.h_off;
    const int64_t base = (b * L + l) * static_cast<int64_t>(R_);
    for (int64_t pos = lo; pos <= p.end; ++pos) {
      const float* row = st.qkv.data() + (off + pos - lo) * 3 * C;
      const int64_t slot = pos % R_;
      std::copy_n(row + C, C, cache_.k.data() + (base + slot) * C);
      std::copy_n(row + 2 * C, C, cache_.v.data() + (base + slot) * C);
      if (l == 0) std::copy_n(row, C, cache_.q0.data() + (b * R_ + slot) * C);
    }
    attend(st, l, b, bl);
  }
  // Queries of this layer: every row of the residual stream, or s_t alone at the last layer.
  const int64_t rows_q = last ? nb : rows_in;
  mm(st.xb.data(), C, st.att.data(), C, w.proj_w, C, w.proj_b, static_cast<int>(rows_q), C, C);
  for (int64_t bl = 0; bl < nb; ++bl) {
    const RowPlan& p = st.plan[bl];
    const int64_t q_lo = last ? p.end : p.lo, off = last ? bl : p.h_off;
    for (int64_t pos = q_lo; pos <= p.end; ++pos) {
      const int64_t r = off + pos - q_lo;
      const float* hin = st.h.data() + (p.h_off + pos - p.lo) * C;
      float* hout = st.h2.data() + r * C;
      const float* proj = st.xb.data() + r * C;
      for (int i = 0; i < C; ++i) hout[i] = hin[i] + proj[i];
      kernels_.layer_norm(st.xb.data() + r * C, hout, w.ln_2_w, w.ln_2_b, C, c.ln_eps);
    }
  }
  mm(st.ff.data(), I, st.xb.data(), C, w.fc_w, I, w.fc_b, static_cast<int>(rows_q), C, I);
  activate(st.ff.data(), rows_q * I, c.activation);
  mm(st.xb.data(), C, st.ff.data(), I, w.fc_proj_w, C, w.fc_proj_b, static_cast<int>(rows_q), I, C);
  for (int64_t i = 0; i < rows_q * C; ++i) st.h2[i] += st.xb[i];
  std::swap(st.h, st.h2);
}

void Engine::run_chunk(RunState& st, int64_t b0, int64_t nb, const float* states, const float* returns_to_go,
                       const int64_t* timesteps, float* actions) {
  const Config& c = model_.config;
  const Weights& w = model_.weights;
  const int C = c.hidden_size, A = c.act_dim, S = c.state_dim;
  int64_t h_off = 0, new_off = 0;
  for (int64_t bl = 0; bl < nb; ++bl) {
    const int64_t t = n_steps_[b0 + bl];
    RowPlan& p = st.plan[bl];
    p.end = 3 * t + 1;
    p.new_lo = t > 0 ? 3 * t - 1 : 0;
    const bool recompute = mode_ == Mode::Exact && t >= K_;
    p.lo = recompute ? 3 * (t - K_ + 1) : p.new_lo;
    p.new_lo = std::max(p.new_lo, p.lo);  // K = 1: a_{t-1} is already outside the window and never attended to
    p.floor = mode_ == Mode::Exact ? std::max<int64_t>(0, 3 * (t - K_ + 1)) : -1;
    p.h_off = h_off;
    p.new_off = new_off;
    h_off += p.end - p.lo + 1;
    new_off += p.end - p.new_lo + 1;
  }
  for (int64_t bl = 0; bl < nb; ++bl) {
    const int64_t b = b0 + bl;
    embed(b, states + b * S, returns_to_go[b], timesteps[b]);
    const RowPlan& p = st.plan[bl];
    for (int64_t pos = p.lo; pos <= p.end; ++pos)
      std::copy_n(cache_.x0.data() + (b * R_ + pos % R_) * C, C, st.h.data() + (p.h_off + pos - p.lo) * C);
  }
  for (int l = 0; l < c.n_layer; ++l) layer(st, b0, nb, l, h_off);
  for (int64_t bl = 0; bl < nb; ++bl)
    kernels_.layer_norm(st.xb.data() + bl * C, st.h.data() + bl * C, w.ln_f_w, w.ln_f_b, C, c.ln_eps);
  float* out = actions + b0 * A;
  kernels_.matmul(out, A, st.xb.data(), C, w.predict_action_w, A, w.predict_action_b, static_cast<int>(nb), C, A);
  if (c.action_tanh) activate(out, nb * A, Activation::Tanh);
}

void Engine::step(const float* states, const float* returns_to_go, const int64_t* timesteps, float* actions) {
  const Config& c = model_.config;
  const int A = c.act_dim;
  for (int64_t b = 0; b < B_; ++b)
    DT_CHECK(timesteps[b] >= 0 && timesteps[b] < c.max_ep_len, "timesteps[", b, "] = ", timesteps[b],
             " is outside [0, max_ep_len=", c.max_ep_len, ")");
  const int64_t n_chunks = (B_ + chunk_ - 1) / chunk_;
  auto body = [&](int64_t begin, int64_t end, int tid) {
    for (int64_t k = begin; k < end; ++k) {
      const int64_t b0 = k * chunk_, nb = std::min<int64_t>(chunk_, B_ - b0);
      run_chunk(states_[tid], b0, nb, states, returns_to_go, timesteps, actions);
    }
  };
  pool_->parallel_for(n_chunks, 1, body);
  for (int64_t b = 0; b < B_; ++b) {
    std::copy_n(actions + b * A, A, prev_action_.data() + b * A);
    prev_timestep_[b] = timesteps[b];
    ++n_steps_[b];
  }
}

}  // namespace dt
