// Engine: see engine.h. A step splits the batch into chunks of rows (one thread runs a chunk with its own
// RunState, so the working set stays in L2). Per chunk: plan each row's token ranges, embed the new tokens into
// the layer-0 cache, run the layers over the packed token rows of the chunk (one matmul per weight for all of
// them; attention per row and head over the ring: scores against the transposed keys, or against the cached ln_1
// outputs row by row, then weights times values or cached outputs), then ln_f and the action head on the s_t
// rows. Nothing is allocated after construction.
#include "engine/engine.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <fstream>
#include <limits>
#include <sstream>

#include "common/check.h"
#include "engine/activation.h"
#include "engine/sampling.h"

namespace dt {

namespace {

// embed_ln's epsilon: transformers builds it as nn.LayerNorm(hidden_size), whatever layer_norm_epsilon says.
constexpr float kEmbedLnEps = 1e-5f;

// A run of one batch row's tokens a layer step computes: positions [lo, the row's s_t], in the chunk's packed
// buffers from row `off` on.
struct TokenSpan {
  int64_t lo, off;
};

// The tokens whose cache entries layer l writes (Engine::ln_1).
TokenSpan cache_span(const RowPlan& p, int l) {
  return l == 0 ? TokenSpan{p.new_lo, p.new_off} : TokenSpan{p.lo, p.h_off};
}

// The queries of a layer: every token of the residual stream, or at the last layer s_t alone, in row bl of the
// chunk's s_t rows.
TokenSpan query_span(const RowPlan& p, int64_t bl, bool last) {
  return last ? TokenSpan{p.end, bl} : TokenSpan{p.lo, p.h_off};
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
    : model_(std::move(model)),
      B_(batch),
      K_(context_len),
      R_(3 * context_len + 3),
      Rp_((R_ + kSlotRun - 1) / kSlotRun * kSlotRun),
      mode_(mode),
      kernels_(kernels_select(isa)) {
  DT_CHECK(batch >= 1, "batch must be >= 1, got ", batch);
  DT_CHECK(context_len >= 1 && context_len <= kMaxContextLen, "context_len must be in [1, ", kMaxContextLen, "], got ",
           context_len);
  DT_CHECK(n_threads >= 0, "n_threads must be >= 0, got ", n_threads);
  if (n_threads == 0) n_threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  const Config& c = model_.config;
  const size_t C = c.hidden_size, B = batch, R = R_, L = c.n_layer;
  const bool exact = mode == Mode::Exact;
  const size_t per_row = exact ? 3 * K_ : 3;  // most token rows one batch row computes in a step
  // Rows per chunk: at most kChunkTokens token rows, and as many equal chunks as give every thread the same number.
  const size_t per_thread = (B + n_threads - 1) / n_threads;
  size_t max_rows = std::max<size_t>(1, kChunkTokens / per_row);
  if (!exact) max_rows = std::min(max_rows, std::max<size_t>(1, kChunkCacheBytes / (R * C * sizeof(float))));
  const size_t chunks_per_thread = (per_thread + max_rows - 1) / max_rows;
  chunk_ = static_cast<int>((per_thread + chunks_per_thread - 1) / chunks_per_thread);
  const int n_chunks = (batch + chunk_ - 1) / chunk_;
  pool_ = std::make_unique<ThreadPool>(n_chunks == 1 ? 1 : std::min(n_threads, n_chunks));
  team_ = std::make_unique<SpinTeam>(n_chunks == 1 ? n_threads : 1);
  pack_weights();
  if (exact) {  // rolling caches ln_1 outputs only, in cache_.v
    cache_.kt.assign(B * L * C * Rp_, 0.0f);
    cache_.q0.assign(B * R * C, 0.0f);
  }
  cache_.v.assign(B * L * R * C, 0.0f);
  cache_.x0.assign(B * R * C, 0.0f);
  const size_t G = static_cast<size_t>(std::min(chunk_, batch)), rows = G * per_row;
  // Layers that cache keys and values exist in exact mode only; layers that cache inputs take every row as a
  // query in rolling mode, s_t alone (the last layer) in exact mode.
  const size_t kv_rows = exact ? rows : 0, query_rows = exact ? G : rows;
  states_.resize(static_cast<size_t>(pool_->size()));
  for (RunState& st : states_) {
    st.h.assign(rows * C, 0.0f);
    st.h2.assign(rows * C, 0.0f);
    st.xb.assign(rows * C, 0.0f);
    st.qkv.assign(kv_rows * 3 * C, 0.0f);
    st.xq.assign(G * C, 0.0f);
    st.q_abs.assign(query_rows * c.n_head * C, 0.0f);
    st.x_mix.assign(query_rows * c.n_head * C, 0.0f);
    st.att.assign(kv_rows * C, 0.0f);
    st.ff.assign(rows * c.n_inner, 0.0f);
    st.scores.assign(R * Rp_, 0.0f);
    st.dist.assign(Rp_, 0);
    if (exact) {
      st.att_q.assign(R * C, 0.0f);
      st.kt_scratch.assign(C * Rp_, 0.0f);
      st.v_scratch.assign(R * C, 0.0f);
    }
    st.plan.assign(G, RowPlan{});
    st.log_std.assign(G * c.act_dim, 0.0f);
  }
  n_steps_.assign(B, 0);
  prev_timestep_.assign(B, 0);
  prev_action_.assign(B * c.act_dim, 0.0f);
  log_std_ = model_.weights.has_log_std();
  draws_.assign(B, 0);
}

void Engine::set_sampling(std::optional<uint64_t> seed) {
  DT_CHECK(!seed || log_std_,
           "sampled actions need a stochastic model, with the log-std head "
           "predict_action_log_std; this model's action head is deterministic");
  std::lock_guard<std::mutex> lock(mu_);
  seed_ = seed;
  std::fill(draws_.begin(), draws_.end(), 0);
}

std::optional<uint64_t> Engine::sample_seed() const {
  std::lock_guard<std::mutex> lock(mu_);
  return seed_;
}

void Engine::load_weights(Model model) {
  DT_CHECK(model.config == model_.config,
           "load_weights: the new weights' config differs from the engine's (sizes, "
           "activation, LayerNorm epsilon, attention scaling and action_tanh must all be the same)");
  DT_CHECK(model.weights.has_log_std() == log_std_, "load_weights: the engine's model ", log_std_ ? "has a" : "has no",
           " log-std head (predict_action_log_std) and the new weights ", log_std_ ? "have none" : "have one");
  std::lock_guard<std::mutex> lock(mu_);
  model_.weights = std::move(model.weights);
  pack_weights();
  std::fill(n_steps_.begin(), n_steps_.end(), 0);
}

void Engine::pack_weights() {
  const Config& c = model_.config;
  const int C = c.hidden_size, I = c.n_inner, L = c.n_layer, H = c.n_head, hs = c.head_dim();
  struct Source {
    PackedMatrix* dst;
    const float* w;
    int ldw, K, N;
  };
  std::vector<Source> sources;
  packed_layers_.assign(static_cast<size_t>(L), PackedLayer{});
  std::vector<float> folded(static_cast<size_t>(L) * 2 * H * C * C);  // W_qk and W_vo of each layer
  for (int l = 0; l < L; ++l) {
    const LayerWeights& w = model_.weights.layers[l];
    PackedLayer& p = packed_layers_[l];
    if (caches_inputs(l)) {  // engine.h, "Cached inputs": W_qk (C, H * C), W_vo (H * C, C) and their biases
      float* qk = folded.data() + static_cast<size_t>(l) * 2 * H * C * C;
      float* vo = qk + static_cast<size_t>(H) * C * C;
      const float* a = w.attn_w;  // (C, 3C): column o of q at o, of k at C + o, of v at 2C + o
      p.qk_bias.assign(static_cast<size_t>(H) * C, 0.0f);
      p.vo_bias.assign(static_cast<size_t>(C), 0.0f);
      // Every entry is a sum over o in ascending order, in double. The sums of a row run side by side (the loop
      // over o outside, the entries inside: independent, so vectorised) rather than one after the other (each a
      // chain of dependent adds): the same bits, several times faster (engine construction and load_weights).
      std::vector<double> kt(static_cast<size_t>(C) * C), acc(C);  // kt[o][i]: W_k's column o, row i
      for (int o = 0; o < C; ++o)
        for (int i = 0; i < C; ++i) kt[static_cast<size_t>(o) * C + i] = a[i * 3 * C + C + o];
      for (int hd = 0; hd < H; ++hd) {
        for (int i = 0; i < C; ++i) {
          double bias = 0.0;
          for (int o = hd * hs; o < (hd + 1) * hs; ++o) bias += double(w.attn_b[o]) * a[i * 3 * C + C + o];
          p.qk_bias[hd * C + i] = static_cast<float>(bias);
        }
        for (int r = 0; r < C; ++r) {  // W_qk (r, hd C + i) = sum_o W_q (r, o) W_k (i, o) over the head's o
          std::fill(acc.begin(), acc.end(), 0.0);
          for (int o = hd * hs; o < (hd + 1) * hs; ++o) {
            const double q = a[r * 3 * C + o];
            const double* k = kt.data() + static_cast<size_t>(o) * C;
            for (int i = 0; i < C; ++i) acc[i] += q * k[i];
          }
          for (int i = 0; i < C; ++i) qk[static_cast<size_t>(r) * H * C + hd * C + i] = static_cast<float>(acc[i]);
        }
        for (int i = 0; i < C; ++i) {  // W_vo (hd C + i, r) = sum_o W_v (i, o) W_o (o, r) over the head's o
          std::fill(acc.begin(), acc.end(), 0.0);
          for (int o = hd * hs; o < (hd + 1) * hs; ++o) {
            const double v = a[i * 3 * C + 2 * C + o];
            const float* proj = w.proj_w + static_cast<size_t>(o) * C;
            for (int r = 0; r < C; ++r) acc[r] += v * proj[r];
          }
          for (int r = 0; r < C; ++r) vo[(static_cast<size_t>(hd) * C + i) * C + r] = static_cast<float>(acc[r]);
        }
      }
      for (int r = 0; r < C; ++r) {
        double bias = w.proj_b[r];
        for (int o = 0; o < C; ++o) bias += double(w.attn_b[2 * C + o]) * w.proj_w[o * C + r];
        p.vo_bias[r] = static_cast<float>(bias);
      }
      sources.push_back({&p.qk, qk, H * C, C, H * C});
      sources.push_back({&p.vo, vo, C, H * C, C});
    } else {
      sources.push_back({&p.qkv, w.attn_w, 3 * C, C, 3 * C});
      sources.push_back({&p.proj, w.proj_w, C, C, C});
    }
    sources.push_back({&p.fc, w.fc_w, I, C, I});
    sources.push_back({&p.fc_proj, w.fc_proj_w, C, I, C});
  }
  size_t total = 0;
  for (const Source& s : sources) total += static_cast<size_t>(s.K) * s.N;
  packed_.assign(total, 0.0f);
  float* dst = packed_.data();
  for (const Source& s : sources) {
    pack_panels(dst, s.w, s.ldw, s.K, s.N, kernels_.panel);
    *s.dst = PackedMatrix{dst, s.K, s.N};
    dst += static_cast<size_t>(s.K) * s.N;
  }
}

void Engine::mm(float* out, int ldo, const float* in, int ldi, const PackedMatrix& w, const float* bias, int64_t M,
                bool relu, Prefetch* pf) {
  const int T = team_->size();
  if (T > 1) pf = nullptr;  // any member may run any part
  auto part = [&](int i) {  // a thread streams the same weights every step
    const auto [n0, n1] = panel_part(i, T, w.N, kernels_.panel);
    if (n0 < n1) kernels_.matmul_packed(out, ldo, in, ldi, w.w, bias, static_cast<int>(M), w.K, w.N, n0, n1, relu, pf);
  };
  team_->run(part);
}

Prefetch Engine::cache_lines(int l, int64_t first, int64_t count) const {
  if (count == 0) return {};
  const int64_t row = static_cast<int64_t>(R_) * model_.config.hidden_size;
  const float* p = cache_.v.data() + (l * B_ + first) * row;
  return {reinterpret_cast<uintptr_t>(p), reinterpret_cast<uintptr_t>(p + count * row)};
}

void Engine::reset(int64_t row) {
  DT_CHECK(row >= 0 && row < B_, "row ", row, " out of range [0, ", B_, ")");
  std::lock_guard<std::mutex> lock(mu_);
  n_steps_[row] = 0;
}

int64_t Engine::steps_taken(int64_t row) const {
  DT_CHECK(row >= 0 && row < B_, "row ", row, " out of range [0, ", B_, ")");
  std::lock_guard<std::mutex> lock(mu_);
  return n_steps_[row];
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
    kernels_.layer_norm(x, x, w.embed_ln_w, w.embed_ln_b, C, kEmbedLnEps);
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

void Engine::attend(RunState& st, int l, int64_t b, int64_t bl, const float* kt, const float* vc) {
  const Config& c = model_.config;
  const int C = c.hidden_size, H = c.n_head, hs = c.head_dim(), L = c.n_layer, R = R_, Rp = Rp_;
  const RowPlan& p = st.plan[bl];
  float scale = c.scale_attn_weights ? 1.0f / std::sqrt(static_cast<float>(hs)) : 1.0f;
  if (c.scale_attn_by_inverse_layer_idx) scale /= static_cast<float>(l + 1);
  const bool inputs = caches_inputs(l);
  const auto [q_lo, q_row] = query_span(p, bl, l == L - 1);  // first query, its row in the chunk's buffers
  const int nq = static_cast<int>(p.end - q_lo + 1);
  auto floor_of = [&](int64_t pos) {  // the oldest key a query at `pos` attends to
    return p.floor >= 0 ? p.floor : std::max<int64_t>(0, 3 * (pos / 3 - K_ + 1));
  };
  // Key slots [s0, s0 + n): the window [floor_of(q_lo), end] as one run when its slots do not wrap, else the whole
  // ring, in whole runs of kSlotRun. Slots outside the window get weight 0 below.
  int s0 = static_cast<int>(floor_of(q_lo) % R), s1 = static_cast<int>(p.end % R);
  if (s0 > s1) s0 = 0, s1 = R - 1;
  s0 -= s0 % kSlotRun;
  const int n = std::min((s1 - s0 + kSlotRun) / kSlotRun * kSlotRun, Rp - s0);
  const int nv = std::min(n, R - s0);  // slots in the ring
  // Queries (nq rows): layer 0 of exact reads the cached q0 rows (ring slots, copied out in order); a layer that
  // caches inputs W_k q (C values per head); the others their c_attn output rows.
  const float* q;
  int ldq;
  if (inputs) {
    q = st.q_abs.data() + q_row * H * C, ldq = H * C;
  } else if (l == 0) {
    for (int i = 0; i < nq; ++i)
      std::copy_n(cache_.q0.data() + (b * R + (q_lo + i) % R) * C, C, st.att_q.data() + i * C);
    q = st.att_q.data(), ldq = C;
  } else {
    q = st.qkv.data() + q_row * 3 * C, ldq = 3 * C;
  }
  // Outputs (nq rows): attention outputs, or with cached inputs sum_j a_j x_j (C values per head).
  float* out = inputs ? st.x_mix.data() + q_row * H * C : st.att.data() + q_row * C;
  const int ldo = inputs ? H * C : C;
  float* sc = st.scores.data();  // (nq, Rp) scores of one head, then attention weights
  // dist[j]: how many positions before s_t the key in slot s0 + j is (slots past the ring: never valid).
  int* dist = st.dist.data();
  const int end_slot = static_cast<int>(p.end % R);
  for (int j = 0; j < n; ++j) {
    const int d = end_slot - s0 - j;
    dist[j] = s0 + j >= R ? std::numeric_limits<int>::max() : d >= 0 ? d : d + R;
  }
  const int dk = inputs ? C : hs;  // width of a head's queries, keys and values
  for (int hd = 0; hd < H; ++hd) {
    const int col = inputs ? 0 : hd * hs, q_col = hd * dk;
    if (inputs)  // keys are the cached rows x_j (slots past the ring: scores stay as they were, and are masked)
      kernels_.matmul_nt(sc, Rp, q + q_col, ldq, vc + static_cast<int64_t>(s0) * C, C, nq, nv, C);
    else kernels_.matmul(sc, Rp, q + q_col, ldq, kt + static_cast<int64_t>(col) * Rp + s0, Rp, nullptr, nq, hs, n);
    for (int i = 0; i < nq; ++i) {  // query at position q_lo + i sees keys [floor_of(q_lo + i), q_lo + i]
      const int64_t pos = q_lo + i;
      kernels_.masked_softmax(sc + static_cast<int64_t>(i) * Rp, dist, n, static_cast<int>(p.end - pos),
                              static_cast<int>(p.end - floor_of(pos)), scale);
    }
    kernels_.matmul(out + q_col, ldo, sc, Rp, vc + static_cast<int64_t>(s0) * C + col, C, nullptr, nq, nv, dk);
  }
}

void Engine::layer(RunState& st, int64_t b0, int64_t nb, int l, int64_t rows_in) {
  const bool last = l == model_.config.n_layer - 1;
  const RowPlan& back = st.plan[nb - 1];  // its span ends the chunk's packed rows
  const LayerRows rows{l, last, caches_inputs(l), l == 0 ? back.new_off + (back.end - back.new_lo + 1) : rows_in,
                       last ? nb : rows_in};  // rows_kv: cache_span of every row; rows_q: query_span of every row
  ln_1(st, nb, rows);
  attention_inputs(st, rows);
  for (int64_t bl = 0; bl < nb; ++bl) {
    const RowCache kv = row_cache(st, l, b0 + bl, bl);
    write_cache(st, rows, b0 + bl, bl, kv);
    attend(st, l, b0 + bl, bl, kv.kt, kv.v);
  }
  // Rolling: the next attention of this thread reads this chunk at layer l + 1, or the next chunk at layer 0.
  if (mode_ == Mode::Rolling) st.pf = last ? cache_lines(0, st.next_b0, st.next_rows) : cache_lines(l + 1, b0, nb);
  attention_output(st, rows);
  mlp(st, nb, rows);
}

void Engine::ln_1(RunState& st, int64_t nb, const LayerRows& rows) {
  const Config& c = model_.config;
  const LayerWeights& w = model_.weights.layers[rows.l];
  const int C = c.hidden_size;
  for (int64_t bl = 0; bl < nb; ++bl) {
    const RowPlan& p = st.plan[bl];
    const TokenSpan s = cache_span(p, rows.l);
    for (int64_t pos = s.lo; pos <= p.end; ++pos)
      kernels_.layer_norm(st.xb.data() + (s.off + pos - s.lo) * C, st.h.data() + (p.h_off + pos - p.lo) * C, w.ln_1_w,
                          w.ln_1_b, C, c.ln_eps);
    if (rows.inputs && rows.last) std::copy_n(st.xb.data() + (s.off + p.end - s.lo) * C, C, st.xq.data() + bl * C);
  }
}

void Engine::attention_inputs(RunState& st, const LayerRows& rows) {
  const int C = model_.config.hidden_size, H = model_.config.n_head;
  const PackedLayer& pw = packed_layers_[rows.l];
  if (rows.inputs)  // W_k q of every head, from ln_1 in one product
    mm(st.q_abs.data(), H * C, rows.last ? st.xq.data() : st.xb.data(), C, pw.qk, pw.qk_bias.data(), rows.rows_q, false,
       &st.pf);
  else mm(st.qkv.data(), 3 * C, st.xb.data(), C, pw.qkv, model_.weights.layers[rows.l].attn_b, rows.rows_kv);
}

Engine::RowCache Engine::row_cache(RunState& st, int l, int64_t b, int64_t bl) {
  const int64_t C = model_.config.hidden_size;
  const bool keys = !caches_inputs(l);
  if (l > 0 && st.plan[bl].recompute) return {keys ? st.kt_scratch.data() : nullptr, st.v_scratch.data()};
  return {keys ? cache_.kt.data() + (l * B_ + b) * C * Rp_ : nullptr, cache_.v.data() + (l * B_ + b) * R_ * C};
}

void Engine::write_cache(RunState& st, const LayerRows& rows, int64_t b, int64_t bl, const RowCache& kv) {
  const int C = model_.config.hidden_size;
  const RowPlan& p = st.plan[bl];
  const TokenSpan s = cache_span(p, rows.l);
  if (rows.inputs) {  // the ln_1 outputs of positions lo.., one row each
    for (int64_t pos = s.lo; pos <= p.end; ++pos)
      std::copy_n(st.xb.data() + (s.off + pos - s.lo) * C, C, kv.v + (pos % R_) * C);
    return;
  }
  // c_attn output rows of positions lo.. (3C each: query, key, value): keys transposed, values, q0 at layer 0
  const float* src_rows = st.qkv.data() + s.off * 3 * C;
  auto put_keys = [&](int64_t slot0, int64_t k0, int64_t count) {  // tokens k0.. into slots slot0..
    for (int i = 0; i < C; ++i) {  // one pass over the key cache's C lines for every token
      float* dst = kv.kt + i * Rp_ + slot0;
      const float* src = src_rows + k0 * 3 * C + C + i;
      for (int64_t k = 0; k < count; ++k) dst[k] = src[k * 3 * C];
    }
  };
  const int64_t n_tok = p.end - s.lo + 1, first = s.lo % R_;
  const int64_t n1 = std::min(n_tok, R_ - first);  // the ring wraps at most once
  put_keys(first, 0, n1);
  if (n_tok > n1) put_keys(0, n1, n_tok - n1);
  for (int64_t pos = s.lo; pos <= p.end; ++pos) {
    const int64_t slot = pos % R_;
    std::copy_n(src_rows + (pos - s.lo) * 3 * C + 2 * C, C, kv.v + slot * C);
    if (rows.l == 0) std::copy_n(src_rows + (pos - s.lo) * 3 * C, C, cache_.q0.data() + (b * R_ + slot) * C);
  }
}

void Engine::attention_output(RunState& st, const LayerRows& rows) {
  const int C = model_.config.hidden_size, H = model_.config.n_head;
  const PackedLayer& pw = packed_layers_[rows.l];
  if (rows.inputs)  // c_proj of (sum_j a_j x_j) W_v + b_v, every head in one product
    mm(st.xb.data(), C, st.x_mix.data(), H * C, pw.vo, pw.vo_bias.data(), rows.rows_q, false, &st.pf);
  else mm(st.xb.data(), C, st.att.data(), C, pw.proj, model_.weights.layers[rows.l].proj_b, rows.rows_q);
}

void Engine::mlp(RunState& st, int64_t nb, const LayerRows& rows) {
  const Config& c = model_.config;
  const LayerWeights& w = model_.weights.layers[rows.l];
  const PackedLayer& pw = packed_layers_[rows.l];
  const int C = c.hidden_size, I = c.n_inner;
  for (int64_t bl = 0; bl < nb; ++bl) {  // the residual stream of the queries, then ln_2
    const RowPlan& p = st.plan[bl];
    const TokenSpan q = query_span(p, bl, rows.last);
    for (int64_t pos = q.lo; pos <= p.end; ++pos) {
      const int64_t r = q.off + pos - q.lo;
      const float* hin = st.h.data() + (p.h_off + pos - p.lo) * C;
      float* hout = st.h2.data() + r * C;
      const float* proj = st.xb.data() + r * C;
      for (int i = 0; i < C; ++i) hout[i] = hin[i] + proj[i];
      kernels_.layer_norm(st.xb.data() + r * C, hout, w.ln_2_w, w.ln_2_b, C, c.ln_eps);
    }
  }
  const bool relu = c.activation == Activation::Relu;  // fused into the fc matmul
  mm(st.ff.data(), I, st.xb.data(), C, pw.fc, w.fc_b, rows.rows_q, relu, &st.pf);
  if (!relu) activate(st.ff.data(), rows.rows_q * I, c.activation);
  mm(st.xb.data(), C, st.ff.data(), I, pw.fc_proj, w.fc_proj_b, rows.rows_q, false, &st.pf);
  for (int64_t i = 0; i < rows.rows_q * C; ++i) st.h2[i] += st.xb[i];
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
    p.recompute = recompute;
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
  if (seed_) {  // out holds loc: each row's action is sampled around it (sampling.h)
    float* raw = st.log_std.data();
    kernels_.matmul(raw, A, st.xb.data(), C, w.predict_action_log_std_w, A, w.predict_action_log_std_b,
                    static_cast<int>(nb), C, A);
    for (int64_t bl = 0; bl < nb; ++bl) {
      const uint32_t counter = noise_counter(*seed_, static_cast<uint64_t>(b0 + bl), draws_[b0 + bl]);
      for (int j = 0; j < A; ++j)
        out[bl * A + j] = tanh_normal_sample(out[bl * A + j], raw[bl * A + j], normal_noise(counter, j));
    }
  } else if (c.action_tanh) {
    activate(out, nb * A, Activation::Tanh);
  }
}

void Engine::step(const std::unique_lock<std::mutex>& held, const float* states, const float* returns_to_go,
                  const int64_t* timesteps, float* actions) {
  DT_CHECK(held.mutex() == &mu_ && held.owns_lock(), "Engine::step: `held` is not this engine's lock, locked");
  const Config& c = model_.config;
  const int A = c.act_dim;
  for (int64_t b = 0; b < B_; ++b)
    DT_CHECK(timesteps[b] >= 0 && timesteps[b] < c.max_ep_len, "timesteps[", b, "] = ", timesteps[b],
             " is outside [0, max_ep_len=", c.max_ep_len, ")");
  const int64_t n_chunks = (B_ + chunk_ - 1) / chunk_;
  auto rows = [&](int64_t k) { return k < n_chunks ? std::min<int64_t>(chunk_, B_ - k * chunk_) : 0; };
  // Chunks go to whichever thread is free: a thread slowed by another process runs fewer of them. Each thread
  // claims its next chunk before it runs the current one, so the current one's last layer can prefetch it.
  std::atomic<int64_t> claimed{0};
  auto body = [&](int tid) {
    RunState& st = states_[tid];
    int64_t k = claimed.fetch_add(1);
    if (mode_ == Mode::Rolling) st.pf = cache_lines(0, k * chunk_, rows(k));
    while (k < n_chunks) {
      const int64_t next = claimed.fetch_add(1);
      st.next_b0 = next * chunk_;
      st.next_rows = rows(next);
      run_chunk(st, k * chunk_, rows(k), states, returns_to_go, timesteps, actions);
      k = next;
    }
  };
  pool_->run(body);
  for (int64_t b = 0; b < B_; ++b) {
    std::copy_n(actions + b * A, A, prev_action_.data() + b * A);
    prev_timestep_[b] = timesteps[b];
    ++n_steps_[b];
    if (seed_) ++draws_[b];
  }
}

}  // namespace dt
