// Engine: Decision Transformer inference on the CPU, one environment step at a time, for B independent rows
// (one episode each), with a per-layer KV cache. No Python, no libtorch. Shapes in comments use B batch rows,
// L layers, C hidden size, I MLP width, S state_dim, A act_dim, K context length (steps), R = 3K + 3 ring slots.
//
// Tokens of a row are numbered from its reset: step j has R_j at 3j, s_j at 3j + 1, a_j at 3j + 2. A step
// embeds the tokens that became known (a_{t-1} with the action the engine returned, R_t, s_t) and returns the
// action read from s_t. The current step's zero a_t placeholder of the blog's window comes after s_t, so by
// causality it never changes the action: it is never computed.
//
// Modes:
//   Exact   - the action of the blog's get_action window recompute (the last K steps), to float tolerance.
//             While t < K the window starts at token 0 and the KV cache is exact. Once it slides, the window's
//             layers >= 1 change and are recomputed over the 3K - 1 window tokens; layer 0 is not: a token's
//             layer-0 input, query, key and value depend only on its own embedding and are cached for good.
//             The last layer computes query, attention, MLP and head only for s_t.
//   Rolling - APPROXIMATE after K steps, O(1) work per step: each token attends to the cached keys/values of the
//             tokens of its own step and the K - 1 steps before it (a sliding window per layer, the same span the
//             blog's window gives s_t), and nothing is recomputed. Equal to Exact while t < K; a different
//             function afterwards, because deeper-layer keys of old tokens were computed from longer histories.
//
// Cached inputs instead of keys and values (every layer in rolling mode, the last layer when L > 1 in exact
// mode): with x_j the ln_1 output of token j and q = x W_q + b_q the query, q.k_j = x_j.(W_k q) + q.b_k, and the
// constant q.b_k cancels in the softmax; the weighted sum of values is (sum_j a_j x_j) W_v + b_v, because the
// weights sum to 1. So such a layer caches x_j (C floats per token, half of a key and a value), maps a query's
// ln_1 output x straight to W_k q = x W_qk + b_qk with W_qk = W_q W_k^T, b_qk = b_q W_k^T, and maps
// sum_j a_j x_j straight to the c_proj output with W_vo = W_v W_o, b_vo = b_v W_o + b_o (products computed
// once, in double). Per head h the same holds with W_q, W_k, W_v restricted to h's columns and W_o to h's rows.
// With one head that is 2 C x C per query instead of 4 C x C per token (c_attn and c_proj), and half the cache
// to read; with H heads the two products are H times larger.
//
// The ring holds R = 3K + 3 slots per row and layer (token p in slot p % R): the last K + 1 steps, enough for the
// oldest key a_{t-1} still needs while R_t and s_t are written in the same step.
//
// Weights: the engine packs every layer matrix into panels (kernels.h, pack_panels) so each matmul streams its
// weights in contiguous runs.
// Threads: the batch is cut into chunks of rows (at most kChunkTokens token rows each, so a chunk's scratch stays
// in L2; as many chunks as would give every thread the same number, of equal size as far as B allows); threads
// claim whole chunks as they become free (a thread slowed by another process runs fewer) and run each with their
// own RunState. When the batch is one chunk (batch 1, or one thread), the threads (if several) split the columns
// of every layer matmul instead (a SpinTeam): each streams only its share of the weights (2.4 MB for the blog's
// model, more than one core's L2), which is what batch-1 latency is bound by. Outputs are the same bits with any
// number of threads.
// Memory: at large B the cache outgrows every cache level (rolling, blog's model: 32 KB per row and layer, 25 MB
// at B = 256), and attention would wait on DRAM for it. So in rolling mode a thread prefetches the rows its next
// attention reads (this chunk at the next layer, or its next chunk at layer 0) while the matmuls before that
// attention run, one cache line per k step of their register tiles (kernels.h, Prefetch), and a chunk holds at
// most kChunkCacheBytes of one layer's cache so that those rows are still in L2 when attention reads them.
// All buffers are allocated at construction; step() allocates nothing.
// Sampling: a stochastic model (with the log-std head of the Online Decision Transformer) can return sampled
// actions instead of its mean action (set_sampling, engine/sampling.h). The noise of a row's step is keyed by
// (seed, row, the row's draw counter), so a row's actions are the same bits whatever the batch's chunks and the
// threads; the counter starts at 0 when the engine is built or the seed is set and advances by one per step of
// the row (reset() does not restart it: a row's next episode draws new noise). The action fed back as a_{t-1} is
// the one returned, sampled or not: what the environment executed.
// Weights: load_weights replaces them (same config) without building a new engine; the caches hold keys of the old
// weights, so every row then starts a new episode.
// Thread safety: each engine has its own lock, held by every method that reads or writes its state (step, reset,
// steps_taken, set_sampling, sample_seed, load_weights), so calls from several threads on one engine run one after the
// other, and two engines still step in parallel. The lock is here rather than in the Python binding so that every
// caller (dt_fast._C, which releases the GIL around a step; csrc/examples/control_loop.cpp; any C++ program) gets it;
// uncontended, it costs one atomic acquire and release per call (benchmarks/bench_policy.py measures it). Two threads
// stepping one episode is still a usage error even though it no longer crashes: which thread's call comes first, and so
// which observations each action answers, is up to the scheduler.
//
// Errors throw std::invalid_argument (common/check.h); nothing calls exit().
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "engine/config.h"
#include "engine/kernels.h"
#include "engine/spin_team.h"
#include "engine/thread_pool.h"
#include "engine/weights.h"

namespace dt {

enum class Mode { Exact, Rolling };

// Parse "exact" / "rolling"; throws on anything else.
Mode parse_mode(const std::string& name);

struct Model {
  Config config;
  Weights weights;
};

// Load `dir`/config.json and `dir`/model.safetensors (as written by transformers' save_pretrained).
Model load_checkpoint(const std::string& dir);

struct KVCache {
  // Layer-major, so that attention over a chunk's rows at one layer reads one run of memory.
  std::vector<float> kt;  // (L, B, C, Rp): keys transposed, the row's token p at layer l in column p % R (exact)
  std::vector<float> v;   // (L, B, R, C): values, or ln_1 outputs at a layer that caches inputs; row p % R
  std::vector<float> x0;  // (B, R, C): layer-0 input of each token (embed_ln output + wpe[0])
  std::vector<float> q0;  // (B, R, C): layer-0 query of each token (exact)
};

// A layer matrix (K, N) in panel layout (kernels.h, pack_panels).
struct PackedMatrix {
  const float* w = nullptr;
  int K = 0, N = 0;
};

// The packed matrices of one layer: qkv and proj for a layer that caches keys and values; qk and vo (with their
// biases, see "Cached inputs") for a layer that caches inputs; fc and fc_proj for both.
struct PackedLayer {
  PackedMatrix qkv, proj, qk, vo, fc, fc_proj;
  std::vector<float> qk_bias, vo_bias;  // (H * C), (C)
};

// Token ranges of one row in the current step (absolute token positions, inclusive).
struct RowPlan {
  int64_t end;      // position of s_t, the last token computed
  int64_t new_lo;   // first token embedded this step
  int64_t lo;       // first token whose residual stream is computed (window start when recomputing)
  int64_t floor;    // >= 0: every query attends to keys >= floor (exact recompute); -1: per-step sliding window
  int64_t h_off;    // first row of this batch row in its chunk's packed residual buffers
  int64_t new_off;  // first row of this batch row among its chunk's packed new tokens
  bool recompute;   // exact mode with the window sliding: layers >= 1 keep their keys/values in RunState scratch
};

// Scratch of one chunk of G batch rows (rows = G * 3K in exact mode, G * 3 in rolling mode).
struct RunState {
  std::vector<float> h;    // (rows, C) residual stream entering a layer, batch rows packed one after another
  std::vector<float> h2;   // (rows, C) residual stream leaving it
  std::vector<float> xb;   // (rows, C) LayerNorm and projection outputs
  std::vector<float> qkv;  // (rows, 3C) c_attn outputs of the tokens computed at a layer that caches keys
  std::vector<float> xq;   // (G, C) ln_1 of s_t at the last layer
  // At a layer that caches inputs, for each query (rows in rolling mode, the G s_t rows in exact mode):
  std::vector<float> q_abs;    // (queries, H, C) W_k q of every head
  std::vector<float> x_mix;    // (queries, H, C) sum_j a_j x_j of every head
  std::vector<float> att;      // (rows, C) attention outputs, packed by query (layers that cache keys and values)
  std::vector<float> ff;       // (rows, I) MLP hidden layer
  std::vector<float> scores;   // (R, Rp) scores of every query and key slot of one head, then attention weights
  std::vector<int> dist;       // (Rp) positions between s_t and the key in each slot attention reads
  std::vector<RowPlan> plan;   // (G)
  std::vector<float> log_std;  // (G, A) the log-std head's raw outputs of the chunk's rows (when sampling)
  // Rolling mode: the cache rows the next attention reads, fetched under the matmuls before it (kernels.h).
  Prefetch pf;
  int64_t next_b0 = 0, next_rows = 0;  // the chunk this thread runs after the current one (next_rows 0: none)
  // Exact mode only:
  std::vector<float> att_q;       // (R, C) layer-0 queries of the window, copied out of the ring in order
  std::vector<float> kt_scratch;  // (C, Rp) keys of a recomputed window at a layer >= 1, laid out as the cache
  std::vector<float> v_scratch;   // (R, C) its values or, at the last layer, its ln_1 outputs (this step only)
};

class Engine {
 public:
  // Largest context_len accepted: far above any Decision Transformer's (the blog's is 20; the attention scratch
  // grows as K^2, 36 MB of scores per thread at K = 1000), and ring positions (3K + 3) stay small ints.
  static constexpr int kMaxContextLen = 100000;

  // `n_threads` 0 = every hardware thread. `isa`: see kernels_select.
  Engine(Model model, int batch, int context_len, Mode mode, int n_threads = 0, const std::string& isa = "auto");

  // Start a new episode in row `row` (the next step is its step 0).
  void reset(int64_t row);
  // One environment step for every row.
  //   states    (B, S) normalised observations; returns_to_go (B) already divided by scale;
  //   timesteps (B) in [0, max_ep_len); actions (B, A) written. Throws (state unchanged) on a bad timestep.
  void step(const float* states, const float* returns_to_go, const int64_t* timesteps, float* actions) {
    step(lock(), states, returns_to_go, timesteps, actions);
  }
  // The engine's lock, for a caller that makes several calls one critical section: it passes the lock to
  // step(held, ...) (the pattern of flockfile and putc_unlocked). step(held, ...) throws unless `held` is this
  // engine's lock, locked.
  std::unique_lock<std::mutex> lock() const { return std::unique_lock<std::mutex>(mu_); }
  void step(const std::unique_lock<std::mutex>& held, const float* states, const float* returns_to_go,
            const int64_t* timesteps, float* actions);

  const Config& config() const { return model_.config; }
  int batch() const { return B_; }
  int context_len() const { return K_; }
  Mode mode() const { return mode_; }
  int threads() const { return std::max(pool_->size(), team_->size()); }
  const char* isa() const { return kernels_.name; }
  // Steps since the row's last reset.
  int64_t steps_taken(int64_t row) const;
  size_t weight_bytes() const { return model_.weights.bytes(); }
  // Whether the model has the log-std head (predict_action_log_std) that sampling needs.
  bool has_log_std() const { return log_std_; }
  // Sample actions with the noise of `seed` from the next step on, every row's draw counter restarted at 0; or,
  // with std::nullopt, return the mean action (the default). Throws if a seed is given and the model has no
  // log-std head.
  void set_sampling(std::optional<uint64_t> seed);
  std::optional<uint64_t> sample_seed() const;
  // Replace the weights by `model`'s, whose config must equal the engine's and whose log-std head must be there if
  // and only if the engine's is (throws otherwise, changing nothing); re-packs them and starts a new episode in
  // every row. The sampling seed and the draw counters are kept.
  void load_weights(Model model);

 private:
  // Token rows one chunk of batch rows computes at most: 4 batch rows of the blog's exact window (3K = 60 rows each)
  // or 80 in rolling mode (3 each), a multiple of every kernel's row tile (6, 4). At the blog's sizes the largest
  // matmul of a chunk, the MLP's c_fc, reads 240 x C and writes 240 x I floats (123 KB + 492 KB), which stay in a
  // 1 MB L2 beside the weight panels it streams; the chunk's whole scratch (RunState, about 1.4 MB) does not.
  static constexpr size_t kChunkTokens = 240;
  // Rolling mode: bytes of one layer's cache a chunk's rows hold at most, so that the rows prefetched for the next
  // attention stay in L2 while the matmuls before it run.
  static constexpr size_t kChunkCacheBytes = 768 << 10;
  // Key slots come in runs of 16 floats (64 bytes: a cache line, an AVX-512 vector): the key cache's row length Rp
  // is R rounded up to it, and attention reads slots [s0, s0 + n) with s0 and n multiples of it, so each key row's
  // run starts on the same boundary as the row and the score product and softmax have no scalar tail on any ISA.
  static constexpr int kSlotRun = 16;

  // Rows of a chunk one layer computes, and which of the mode's paths it takes.
  struct LayerRows {
    int l;
    bool last;        // the last layer: queries, attention output and MLP for s_t alone (the head reads only s_t)
    bool inputs;      // the layer caches ln_1 outputs instead of keys and values (caches_inputs)
    int64_t rows_kv;  // token rows whose cache entries the layer writes, packed over the chunk's batch rows
    int64_t rows_q;   // query rows, packed likewise
  };
  // Where one batch row's keys (transposed; null when the layer caches inputs) and values of a layer are written.
  struct RowCache {
    float* kt;
    float* v;
  };

  void pack_weights();
  // out (M, w.N) = in (M, w.K) @ w + bias, the columns split across the team.
  // relu: the bias is followed by max(0, x). pf: lines to prefetch meanwhile (used when the team is one thread).
  void mm(float* out, int ldo, const float* in, int ldi, const PackedMatrix& w, const float* bias, int64_t M,
          bool relu = false, Prefetch* pf = nullptr);
  void embed(int64_t b, const float* state, float rtg, int64_t timestep);
  void run_chunk(RunState& st, int64_t b0, int64_t nb, const float* states, const float* returns_to_go,
                 const int64_t* timesteps, float* actions);
  // Layer l over the chunk's residual stream st.h (rows_in token rows), leaving its output in st.h, in the steps
  // below: ln_1, attention_inputs; per batch row row_cache, write_cache, attend; attention_output, mlp.
  void layer(RunState& st, int64_t b0, int64_t nb, int l, int64_t rows_in);
  // ln_1 of the tokens whose cache entries the layer writes: the new tokens at layer 0 (older tokens keep their
  // layer-0 entries for good), every row of the residual stream after it (the new tokens, or the whole window when
  // exact mode recomputes it, t >= K). At a last layer that caches inputs, s_t's row is also set apart: its query.
  void ln_1(RunState& st, int64_t nb, const LayerRows& rows);
  // From ln_1: c_attn of those tokens at a layer that caches keys and values (exact mode, every layer but the last);
  // W_k q of every head of the queries at one that caches inputs (every layer of rolling; the last layer of exact).
  void attention_inputs(RunState& st, const LayerRows& rows);
  // The keys and values row `b` (local `bl`) reads and writes at layer l: its ring in the cache, or RunState scratch
  // when exact mode recomputes the window at layers >= 1 (those keys serve this step only).
  RowCache row_cache(RunState& st, int l, int64_t b, int64_t bl);
  // The cache write of the tokens ln_1 ran on: their ln_1 outputs (a layer that caches inputs), or their keys,
  // transposed, and values, plus at layer 0 their queries (exact mode keeps them for later recomputes).
  void write_cache(RunState& st, const LayerRows& rows, int64_t b, int64_t bl, const RowCache& kv);
  // Attention over the ring of row `b` (local `bl`) at layer l, for its queries: keys kt (C, Rp) and values
  // v (R, C) by ring slot, or cached inputs v (R, C) with kt unused.
  void attend(RunState& st, int l, int64_t b, int64_t bl, const float* kt, const float* v);
  // c_proj of the attention outputs, or W_vo of sum_j a_j x_j at a layer that caches inputs.
  void attention_output(RunState& st, const LayerRows& rows);
  // The queries' residual stream plus attention, ln_2, the MLP and its residual; the result becomes st.h.
  void mlp(RunState& st, int64_t nb, const LayerRows& rows);
  // Whether layer l caches ln_1 outputs rather than keys and values (see the top of this file).
  bool caches_inputs(int l) const { return mode_ == Mode::Rolling || (l == model_.config.n_layer - 1 && l > 0); }
  // Rolling mode: the cache rows [first, first + count) of layer l, as lines to prefetch.
  Prefetch cache_lines(int l, int64_t first, int64_t count) const;

  mutable std::mutex mu_;  // held by every call that reads or writes the state below (see "Thread safety")
  Model model_;
  int B_, K_, R_, Rp_;  // Rp: R rounded up to kSlotRun, the key cache's row length
  Mode mode_;
  Kernels kernels_;
  std::unique_ptr<ThreadPool> pool_;        // threads over chunks of rows
  std::unique_ptr<SpinTeam> team_;          // threads over matmul columns (size 1 unless the batch is one chunk)
  std::vector<float> packed_;               // every PackedMatrix's storage
  std::vector<PackedLayer> packed_layers_;  // (L)
  KVCache cache_;
  int chunk_;                           // batch rows per chunk (a unit of work for one thread)
  std::vector<RunState> states_;        // (threads) scratch of the chunk each thread runs
  std::vector<int64_t> n_steps_;        // (B) steps taken since the row's reset
  std::vector<int64_t> prev_timestep_;  // (B) timestep of the previous step (embeds a_{t-1})
  std::vector<float> prev_action_;      // (B, A) action returned at the previous step
  bool log_std_;                        // the model has the log-std head
  std::optional<uint64_t> seed_;        // sampling seed, or none: mean actions
  std::vector<uint64_t> draws_;         // (B) sampled steps of each row since the seed was set
};

}  // namespace dt
