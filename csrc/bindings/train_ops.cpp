// Python face of the training ops (csrc/train): dt_fast._C.TrainOps, a context (ISA build, thread team, scratch)
// whose methods run one op each with the GIL released. Every array argument is used in place, without conversion
// (bindings/arrays.h): the Python side (dt_fast/train_ops) hands over contiguous float32 tensors' numpy views.
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <pybind11/stl.h>

#include "bindings/arrays.h"
#include "bindings/bindings.h"
#include "engine/activation.h"
#include "train/adamw.h"
#include "train/attention.h"
#include "train/block.h"
#include "train/context.h"
#include "train/dropout.h"
#include "train/embed.h"
#include "train/layer_norm.h"
#include "train/linear.h"

namespace dt_py {

namespace {

using Ctx = dt::TrainContext;
using OptArray = std::optional<py::array>;

dt::Epilogue parse_epilogue(const std::string& name) {
  if (name == "none") return dt::Epilogue::kNone;
  if (name == "relu") return dt::Epilogue::kRelu;
  if (name == "dropout_add") return dt::Epilogue::kDropoutAdd;
  throw py::value_error("epilogue must be 'none', 'relu' or 'dropout_add', got '" + name + "'");
}

int narrow(int64_t n, const char* who, const char* what) {
  if (n > INT32_MAX) throw py::value_error(std::string(who) + ": " + what + " above 2^31");
  return static_cast<int>(n);
}

float* out(const py::array& a, const char* who, const char* name, std::initializer_list<int64_t> shape) {
  return checked_data<float>(a, who, name, shape, true);
}

const float* in(const py::array& a, const char* who, const char* name, std::initializer_list<int64_t> shape) {
  return checked_data<float>(a, who, name, shape, false);
}

void linear_forward(Ctx& ctx, const py::array& x, const py::array& w, const OptArray& b, const py::array& y,
                    const std::string& epilogue, const OptArray& residual, float p, uint64_t seed) {
  constexpr const char* who = "linear_forward";
  const dt::Epilogue e = parse_epilogue(epilogue);
  const RowMatrix xm = checked_rows(x, who, "x");
  const int64_t M = xm.rows, K = xm.cols;
  const float* wd = in(w, who, "w", {-1, K});
  const int64_t N = w.shape(0);
  const float* bd = b ? in(*b, who, "b", {N}) : nullptr;
  float* yd = out(y, who, "y", {M, N});
  if ((e == dt::Epilogue::kDropoutAdd) != residual.has_value())
    throw py::value_error("linear_forward: residual is required by epilogue 'dropout_add' and by no other");
  const float* rd = residual ? in(*residual, who, "residual", {M, N}) : nullptr;
  py::gil_scoped_release release;
  auto lock = ctx.lock();
  dt::linear_forward(ctx, xm.data, xm.ld, wd, bd, yd, M, narrow(K, who, "K"), narrow(N, who, "N"), e, rd, p, seed);
}

void linear_backward(Ctx& ctx, const py::array& dy, const py::array& x, const py::array& w, const OptArray& y,
                     const OptArray& dx, const py::array& dw, const OptArray& db, const std::string& epilogue, float p,
                     uint64_t seed) {
  constexpr const char* who = "linear_backward";
  const dt::Epilogue e = parse_epilogue(epilogue);
  const RowMatrix xm = checked_rows(x, who, "x");
  const int64_t M = xm.rows, K = xm.cols;
  const float* wd = in(w, who, "w", {-1, K});
  const int64_t N = w.shape(0);
  const float* dyd = in(dy, who, "dy", {M, N});
  if ((e == dt::Epilogue::kRelu) != y.has_value())
    throw py::value_error("linear_backward: y (the forward's output) is required by epilogue 'relu' and no other");
  const float* yd = y ? in(*y, who, "y", {M, N}) : nullptr;
  float* dxd = dx ? out(*dx, who, "dx", {M, K}) : nullptr;
  float* dwd = out(dw, who, "dw", {N, K});
  float* dbd = db ? out(*db, who, "db", {N}) : nullptr;
  py::gil_scoped_release release;
  auto lock = ctx.lock();
  dt::linear_backward(ctx, dyd, xm.data, xm.ld, wd, yd, dxd, dwd, dbd, M, narrow(K, who, "K"), narrow(N, who, "N"), e,
                      p, seed);
}

void layer_norm_forward(Ctx& ctx, const py::array& x, const py::array& w, const py::array& b, const py::array& y,
                        const py::array& mean, const py::array& rstd, float eps) {
  constexpr const char* who = "layer_norm_forward";
  const float* xd = in(x, who, "x", {-1, -1});
  const int64_t rows = x.shape(0), n = x.shape(1);
  const float* wd = in(w, who, "w", {n});
  const float* bd = in(b, who, "b", {n});
  float* yd = out(y, who, "y", {rows, n});
  float* md = out(mean, who, "mean", {rows});
  float* rd = out(rstd, who, "rstd", {rows});
  py::gil_scoped_release release;
  auto lock = ctx.lock();
  dt::layer_norm_forward(ctx, xd, wd, bd, yd, md, rd, rows, narrow(n, who, "width"), eps);
}

void layer_norm_backward(Ctx& ctx, const py::array& dy, const py::array& x, const py::array& w, const py::array& mean,
                         const py::array& rstd, const py::array& dx, const py::array& dw, const py::array& db,
                         const OptArray& dres, int64_t tokens, int start, int step) {
  constexpr const char* who = "layer_norm_backward";
  const float* xd = in(x, who, "x", {-1, -1});
  const int64_t rows = x.shape(0), n = x.shape(1);
  const float* dyd = in(dy, who, "dy", {rows, n});
  const float* wd = in(w, who, "w", {n});
  const float* md = in(mean, who, "mean", {rows});
  const float* rd = in(rstd, who, "rstd", {rows});
  float* dxd = out(dx, who, "dx", {rows, n});
  float* dwd = out(dw, who, "dw", {n});
  float* dbd = out(db, who, "db", {n});
  if (dres && (tokens < 1 || step < 1 || start < 0 || start >= tokens || rows % tokens != 0))
    throw py::value_error(
        "layer_norm_backward: residual rows need 0 <= start < tokens, step >= 1 and tokens "
        "dividing the rows");
  const int count = dres ? narrow((tokens - start + step - 1) / step, who, "residual rows") : 0;
  const float* resd = dres ? in(*dres, who, "dres", {rows / tokens * count, n}) : nullptr;
  py::gil_scoped_release release;
  auto lock = ctx.lock();
  dt::layer_norm_backward(ctx, dyd, xd, wd, md, rd, dxd, dwd, dbd, rows, narrow(n, who, "width"), resd,
                          {tokens, start, step, count});
}

// The forward's key spans handed back to a backward: n pairs [lo, hi) within [0, keys] (`keys_name` names keys in the
// message), else a ValueError: the backward indexes with them.
void check_spans(const char* who, const int32_t* spans, int64_t n, int keys, const char* keys_name) {
  for (int64_t i = 0; i < n; ++i)
    if (spans[2 * i] < 0 || spans[2 * i] > spans[2 * i + 1] || spans[2 * i + 1] > keys)
      throw py::value_error(std::string(who) + ": spans must be the forward's, [lo, hi) within [0, " + keys_name +
                            " = " + std::to_string(keys) + "]");
}

// The layout of the heads in q (B, tq, Wq) and kv (B, tk, Wk): queries in columns [0, C) of q, keys in
// [Wk - 2C, Wk - C) and values in [Wk - C, Wk) of kv (q and kv may be one array, the c_attn output).
dt::AttentionLayout attention_layout(const char* who, const py::array& q, const py::array& kv, int64_t C, int heads) {
  if (q.ndim() != 3 || kv.ndim() != 3 || q.shape(0) != kv.shape(0))
    throw py::value_error(std::string(who) + ": q and kv must be (batch, tokens, width) arrays of one batch, got " +
                          describe_array(q) + " and " + describe_array(kv));
  if (heads < 1 || C % heads != 0)
    throw py::value_error(std::string(who) + ": heads=" + std::to_string(heads) + " must divide the width " +
                          std::to_string(C));
  if (q.shape(2) < C || kv.shape(2) < 2 * C)
    throw py::value_error(std::string(who) + ": q needs at least " + std::to_string(C) + " columns and kv " +
                          std::to_string(2 * C) + ", got " + describe_array(q) + " and " + describe_array(kv));
  return {q.shape(0),
          heads,
          narrow(q.shape(1), who, "tq"),
          narrow(kv.shape(1), who, "tk"),
          static_cast<int>(C / heads),
          narrow(q.shape(2), who, "q width"),
          narrow(kv.shape(2), who, "kv width")};
}

// The keys of each query: the mask (B, tq, tk) uint8, or without one the causal run from start[b] (start (B,) int32
// in [0, tk], or None: 0) to the query's token query_first + i * query_step, which must be below tk.
dt::AttentionKeys attention_keys(const dt::AttentionLayout& s, const OptArray& mask, const OptArray& start,
                                 int query_first, int query_step) {
  constexpr const char* who = "attention_forward";
  if (mask) {
    if (start) throw py::value_error("attention_forward: pass a mask or start, not both");
    return {checked_data<uint8_t>(*mask, who, "mask", {s.batch, s.tq, s.tk}, false), nullptr, 0, 1};
  }
  if (query_first < 0 || query_step < 1 || query_first + int64_t{s.tq - 1} * query_step >= s.tk)
    throw py::value_error("attention_forward: a causal mask (None) needs every query's token, " +
                          std::to_string(query_first) + " + " + std::to_string(query_step) +
                          " i for i < tq = " + std::to_string(s.tq) + ", below tk = " + std::to_string(s.tk));
  const int32_t* sd = start ? checked_data<int32_t>(*start, who, "start", {s.batch}, false) : nullptr;
  for (int64_t b = 0; sd && b < s.batch; ++b)
    if (sd[b] < 0 || sd[b] > s.tk)
      throw py::value_error("attention_forward: start[" + std::to_string(b) + "] = " + std::to_string(sd[b]) +
                            " outside [0, tk = " + std::to_string(s.tk) + "]");
  return {nullptr, sd, query_first, query_step};
}

void attention_forward(Ctx& ctx, const py::array& q, const py::array& kv, const OptArray& mask, const OptArray& start,
                       int heads, float scale, float p, uint64_t seed, const py::array& probs, const py::array& y,
                       const py::array& spans, int query_first, int query_step) {
  constexpr const char* who = "attention_forward";
  if (y.ndim() != 3) throw py::value_error("attention_forward: y must be (batch, tq, width), got " + describe_array(y));
  const dt::AttentionLayout s = attention_layout(who, q, kv, y.shape(2), heads);
  const float* qd = in(q, who, "q", {s.batch, s.tq, s.ldq});
  const float* kvd = in(kv, who, "kv", {s.batch, s.tk, s.ldk});
  const int64_t C = int64_t{s.heads} * s.hs;
  float* yd = out(y, who, "y", {s.batch, s.tq, C});
  float* pd = out(probs, who, "probs", {s.batch, s.heads, s.tq, s.tk});
  int32_t* sd = checked_data<int32_t>(spans, who, "spans", {s.batch, s.tq, 2}, true);
  const dt::AttentionKeys keys = attention_keys(s, mask, start, query_first, query_step);
  py::gil_scoped_release release;
  auto lock = ctx.lock();
  dt::attention_forward(ctx, qd, kvd + s.ldk - 2 * C, kvd + s.ldk - C, keys, s, scale, p, seed, pd, yd, sd);
}

void attention_backward(Ctx& ctx, const py::array& dy, const py::array& q, const py::array& kv, int heads, float scale,
                        float p, uint64_t seed, const py::array& probs, const py::array& spans, const py::array& dq,
                        const py::array& dkv) {
  constexpr const char* who = "attention_backward";
  if (dy.ndim() != 3)
    throw py::value_error("attention_backward: dy must be (batch, tq, width), got " + describe_array(dy));
  const dt::AttentionLayout s = attention_layout(who, q, kv, dy.shape(2), heads);
  const int64_t C = int64_t{s.heads} * s.hs;
  const float* dyd = in(dy, who, "dy", {s.batch, s.tq, C});
  const float* qd = in(q, who, "q", {s.batch, s.tq, s.ldq});
  const float* kvd = in(kv, who, "kv", {s.batch, s.tk, s.ldk});
  const float* pd = in(probs, who, "probs", {s.batch, s.heads, s.tq, s.tk});
  const int32_t* sd = checked_data<int32_t>(spans, who, "spans", {s.batch, s.tq, 2}, false);
  check_spans(who, sd, s.batch * s.tq, s.tk, "tk");
  float* dqd = out(dq, who, "dq", {s.batch, s.tq, s.ldq});
  float* dkvd = out(dkv, who, "dkv", {s.batch, s.tk, s.ldk});
  py::gil_scoped_release release;
  auto lock = ctx.lock();
  dt::attention_backward(ctx, dyd, qd, kvd + s.ldk - 2 * C, kvd + s.ldk - C, pd, sd, s, scale, p, seed, dqd,
                         dkvd + s.ldk - 2 * C, dkvd + s.ldk - C);
}

// A block's arguments checked against x (batch, T, C) and `queries` query tokens: shape, weights (12 arrays, in
// BlockWeights' order) and the forward's arrays (15, in BlockSaved's order; hq and residual None with every token,
// pre and f one array for ReLU), writeable for the forward.
struct BlockArgs {
  dt::BlockShape s;
  dt::BlockWeights w;
  dt::BlockSaved v;
};

BlockArgs block_args(const char* who, const py::array& x, int64_t queries, const std::vector<py::array>& weights,
                     const std::vector<OptArray>& saved, int heads, float scale, float attn_p, float resid_p,
                     float eps_1, float eps_2, const std::vector<uint64_t>& seeds, const std::string& activation,
                     int query_first, int query_step, bool forward) {
  if (x.ndim() != 3) throw py::value_error(std::string(who) + ": x must be (batch, T, C), got " + describe_array(x));
  if (weights.size() != 12 || saved.size() != 15 || seeds.size() != 3)
    throw py::value_error(std::string(who) + ": 12 weights, 15 saved arrays and 3 seeds expected");
  const int64_t B = x.shape(0), T = x.shape(1), C = x.shape(2);
  if (weights[8].ndim() != 2) throw py::value_error(std::string(who) + ": c_fc weight must be (inner, C)");
  const int64_t inner = weights[8].shape(0);
  if (heads < 1 || C % heads != 0)
    throw py::value_error(std::string(who) + ": heads=" + std::to_string(heads) +
                          " must divide C=" + std::to_string(C));
  if (!(attn_p >= 0.0f && attn_p < 1.0f && resid_p >= 0.0f && resid_p < 1.0f))
    throw py::value_error(std::string(who) + ": dropout probabilities must be in [0, 1)");
  const bool all = queries == T && query_first == 0 && query_step == 1;
  if (!all && (queries < 1 || query_first < 0 || query_step < 1 || query_first + (queries - 1) * query_step >= T))
    throw py::value_error(std::string(who) + ": the queries' tokens " + std::to_string(query_first) + " + " +
                          std::to_string(query_step) + " i (i < " + std::to_string(queries) +
                          ") must lie below T = " + std::to_string(T));
  BlockArgs a{};
  a.s = {B,
         narrow(T, who, "T"),
         narrow(C, who, "C"),
         narrow(inner, who, "inner"),
         heads,
         all,
         query_first,
         query_step,
         narrow(queries, who, "queries"),
         scale,
         attn_p,
         resid_p,
         eps_1,
         eps_2,
         seeds[0],
         seeds[1],
         seeds[2],
         dt::parse_activation(activation, who)};
  const char* names[12] = {"ln_1.weight",        "ln_1.bias",        "c_attn.weight",     "c_attn.bias",
                           "attn.c_proj.weight", "attn.c_proj.bias", "ln_2.weight",       "ln_2.bias",
                           "c_fc.weight",        "c_fc.bias",        "mlp.c_proj.weight", "mlp.c_proj.bias"};
  const std::vector<std::vector<int64_t>> wshapes = {{C}, {C}, {3 * C, C}, {3 * C}, {C, C},     {C},
                                                     {C}, {C}, {inner, C}, {inner}, {C, inner}, {C}};
  const float* wd[12];
  for (int i = 0; i < 12; ++i) {
    const auto& sh = wshapes[i];
    wd[i] = sh.size() == 1 ? in(weights[i], who, names[i], {sh[0]}) : in(weights[i], who, names[i], {sh[0], sh[1]});
  }
  a.w = {wd[0], wd[1], wd[2], wd[3], wd[4], wd[5], wd[6], wd[7], wd[8], wd[9], wd[10], wd[11]};
  const int64_t N = B * T, M = B * queries;
  auto arr = [&](int i, const char* name, std::initializer_list<int64_t> shape) -> float* {
    if (!saved[i]) throw py::value_error(std::string(who) + ": saved array " + name + " is required");
    return checked_data<float>(*saved[i], who, name, shape, forward);
  };
  a.v.h1 = arr(0, "h1", {N, C});
  a.v.mean1 = arr(1, "mean1", {N});
  a.v.rstd1 = arr(2, "rstd1", {N});
  a.v.qkv = arr(3, "qkv", {all ? 3 * N * C : M * C + 2 * N * C});
  if (!all) {
    a.v.hq = arr(4, "hq", {M, C});
    a.v.residual = arr(5, "residual", {M, C});
  }
  a.v.probs = arr(6, "probs", {B, heads, queries, T});
  if (!saved[7]) throw py::value_error(std::string(who) + ": saved array spans is required");
  a.v.spans = checked_data<int32_t>(*saved[7], who, "spans", {B, queries, 2}, forward);
  a.v.y = arr(8, "y", {M, C});
  a.v.x1 = arr(9, "x1", {M, C});
  a.v.h2 = arr(10, "h2", {M, C});
  a.v.mean2 = arr(11, "mean2", {M});
  a.v.rstd2 = arr(12, "rstd2", {M});
  a.v.pre = arr(13, "pre", {M, inner});
  a.v.f = arr(14, "f", {M, inner});
  if ((a.s.act == dt::Activation::Relu) != (a.v.pre == a.v.f))
    throw py::value_error(std::string(who) + ": pre and f must be one array for relu and two for any other activation");
  return a;
}

void block_forward(Ctx& ctx, const py::array& x, const OptArray& mask, const OptArray& start,
                   const std::vector<py::array>& weights, const std::vector<OptArray>& saved, const py::array& out_,
                   int heads, float scale, float attn_p, float resid_p, float eps_1, float eps_2,
                   const std::vector<uint64_t>& seeds, const std::string& activation, int query_first, int query_step) {
  constexpr const char* who = "block_forward";
  if (out_.ndim() != 3)
    throw py::value_error("block_forward: out must be (batch, queries, C), got " + describe_array(out_));
  const BlockArgs a = block_args(who, x, out_.shape(1), weights, saved, heads, scale, attn_p, resid_p, eps_1, eps_2,
                                 seeds, activation, query_first, query_step, true);
  const float* xd = in(x, who, "x", {a.s.batch, a.s.tokens, a.s.width});
  float* od = out(out_, who, "out", {a.s.batch, a.s.queries, a.s.width});
  const dt::AttentionLayout layout{a.s.batch, heads, a.s.queries, a.s.tokens, a.s.width / heads, 0, 0};
  const dt::AttentionKeys keys = attention_keys(layout, mask, start, a.s.all_tokens ? 0 : query_first,
                                                a.s.all_tokens ? 1 : query_step);
  py::gil_scoped_release release;
  auto lock = ctx.lock();
  dt::block_forward(ctx, xd, keys, a.s, a.w, a.v, od);
}

void block_backward(Ctx& ctx, const py::array& dout, const py::array& x, const std::vector<py::array>& weights,
                    const std::vector<OptArray>& saved, const std::vector<py::array>& grads, const py::array& dx,
                    int heads, float scale, float attn_p, float resid_p, const std::vector<uint64_t>& seeds,
                    const std::string& activation, int query_first, int query_step) {
  constexpr const char* who = "block_backward";
  if (dout.ndim() != 3)
    throw py::value_error("block_backward: dout must be (batch, queries, C), got " + describe_array(dout));
  const BlockArgs a = block_args(who, x, dout.shape(1), weights, saved, heads, scale, attn_p, resid_p, 0.0f, 0.0f,
                                 seeds, activation, query_first, query_step, false);
  const float* dod = in(dout, who, "dout", {a.s.batch, a.s.queries, a.s.width});
  const float* xd = in(x, who, "x", {a.s.batch, a.s.tokens, a.s.width});
  float* dxd = out(dx, who, "dx", {a.s.batch, a.s.tokens, a.s.width});
  check_spans(who, a.v.spans, a.s.batch * a.s.queries, a.s.tokens, "T");
  if (grads.size() != 12) throw py::value_error("block_backward: 12 gradients expected");
  float* gd[12];
  for (int i = 0; i < 12; ++i) {
    if (grads[i].size() != weights[i].size())
      throw py::value_error("block_backward: gradient " + std::to_string(i) + " must have its weight's size");
    gd[i] = checked_flat<float>(grads[i], who, "grads", true);
  }
  const dt::BlockGrads g{gd[0], gd[1], gd[2], gd[3], gd[4], gd[5], gd[6], gd[7], gd[8], gd[9], gd[10], gd[11]};
  py::gil_scoped_release release;
  auto lock = ctx.lock();
  dt::block_backward(ctx, dod, xd, a.s, a.w, a.v, g, dxd);
}

void shift_dropout_forward(Ctx& ctx, const py::array& x, const py::array& shift, const py::array& y, float p,
                           uint64_t seed) {
  constexpr const char* who = "shift_dropout_forward";
  const float* xd = in(x, who, "x", {-1, -1});
  const int64_t rows = x.shape(0), n = x.shape(1);
  const float* sd = in(shift, who, "shift", {n});
  float* yd = out(y, who, "out", {rows, n});
  py::gil_scoped_release release;
  auto lock = ctx.lock();
  dt::shift_dropout_forward(ctx, xd, sd, yd, rows, narrow(n, who, "width"), p, seed);
}

void shift_dropout_backward(Ctx& ctx, const py::array& dy, const py::array& dx, const py::array& dshift, float p,
                            uint64_t seed) {
  constexpr const char* who = "shift_dropout_backward";
  const float* dyd = in(dy, who, "dy", {-1, -1});
  const int64_t rows = dy.shape(0), n = dy.shape(1);
  float* dxd = out(dx, who, "dx", {rows, n});
  float* dsd = out(dshift, who, "dshift", {n});
  py::gil_scoped_release release;
  auto lock = ctx.lock();
  dt::shift_dropout_backward(ctx, dyd, dxd, dsd, rows, narrow(n, who, "width"), p, seed);
}

// The shape of the embedding's arguments: states (N, S), actions (N, A), table (rows, C) from their arrays.
dt::EmbedShape embed_shape(const char* who, const py::array& states, const py::array& actions, const py::array& table) {
  if (states.ndim() != 2 || actions.ndim() != 2 || table.ndim() != 2 || actions.shape(0) != states.shape(0))
    throw py::value_error(std::string(who) + ": states (N, S), actions (N, A) and table (rows, C) expected, got " +
                          describe_array(states) + ", " + describe_array(actions) + ", " + describe_array(table));
  return {states.shape(0), narrow(states.shape(1), who, "state_dim"), narrow(actions.shape(1), who, "act_dim"),
          narrow(table.shape(1), who, "hidden size"), table.shape(0)};
}

void embed_forward(Ctx& ctx, const py::array& states, const py::array& actions, const py::array& rtg,
                   const py::array& timesteps, const py::array& w_return, const py::array& b_return,
                   const py::array& w_state, const py::array& b_state, const py::array& w_action,
                   const py::array& b_action, const py::array& table, const py::array& x) {
  constexpr const char* who = "embed_forward";
  const dt::EmbedShape s = embed_shape(who, states, actions, table);
  const int64_t N = s.steps, C = s.C;
  const float* sd = in(states, who, "states", {N, s.S});
  const float* ad = in(actions, who, "actions", {N, s.A});
  const float* rd = in(rtg, who, "rtg", {N});
  const int64_t* td = checked_data<int64_t>(timesteps, who, "timesteps", {N}, false);
  const float* wr = in(w_return, who, "w_return", {C, 1});
  const float* br = in(b_return, who, "b_return", {C});
  const float* ws = in(w_state, who, "w_state", {C, s.S});
  const float* bs = in(b_state, who, "b_state", {C});
  const float* wa = in(w_action, who, "w_action", {C, s.A});
  const float* ba = in(b_action, who, "b_action", {C});
  const float* tab = in(table, who, "table", {s.table_rows, C});
  float* xd = out(x, who, "x", {3 * N, C});
  py::gil_scoped_release release;
  auto lock = ctx.lock();
  dt::embed_forward(ctx, sd, ad, rd, td, wr, br, ws, bs, wa, ba, tab, xd, s);
}

void embed_backward(Ctx& ctx, const py::array& dx, const py::array& states, const py::array& actions,
                    const py::array& rtg, const py::array& timesteps, const py::array& dw_return,
                    const py::array& db_return, const py::array& dw_state, const py::array& db_state,
                    const py::array& dw_action, const py::array& db_action, const py::array& dtable) {
  constexpr const char* who = "embed_backward";
  const dt::EmbedShape s = embed_shape(who, states, actions, dtable);
  const int64_t N = s.steps, C = s.C;
  const float* dxd = in(dx, who, "dx", {3 * N, C});
  const float* sd = in(states, who, "states", {N, s.S});
  const float* ad = in(actions, who, "actions", {N, s.A});
  const float* rd = in(rtg, who, "rtg", {N});
  const int64_t* td = checked_data<int64_t>(timesteps, who, "timesteps", {N}, false);
  float* dwr = out(dw_return, who, "dw_return", {C, 1});
  float* dbr = out(db_return, who, "db_return", {C});
  float* dws = out(dw_state, who, "dw_state", {C, s.S});
  float* dbs = out(db_state, who, "db_state", {C});
  float* dwa = out(dw_action, who, "dw_action", {C, s.A});
  float* dba = out(db_action, who, "db_action", {C});
  float* dtab = out(dtable, who, "dtable", {s.table_rows, C});
  py::gil_scoped_release release;
  auto lock = ctx.lock();
  dt::embed_backward(ctx, dxd, sd, ad, rd, td, dwr, dbr, dws, dbs, dwa, dba, dtab, s);
}

double adamw(Ctx& ctx, const std::vector<py::array>& params, const std::vector<py::array>& grads,
             const std::vector<py::array>& exp_avgs, const std::vector<py::array>& exp_avg_sqs,
             const std::vector<py::array>& steps, float lr, float beta1, float beta2, float eps, float weight_decay,
             float max_grad_norm) {
  constexpr const char* who = "adamw";
  const size_t n = params.size();
  if (grads.size() != n || exp_avgs.size() != n || exp_avg_sqs.size() != n || steps.size() != n)
    throw py::value_error("adamw: params, grads, exp_avgs, exp_avg_sqs and steps must have one length");
  std::vector<dt::AdamWTensor> tensors(n);
  for (size_t i = 0; i < n; ++i) {
    const std::string at = " [" + std::to_string(i) + "]";
    const int64_t size = params[i].size();
    for (const py::array* a : {&grads[i], &exp_avgs[i], &exp_avg_sqs[i]}) {
      if (a->size() != size)
        throw py::value_error("adamw: tensor " + std::to_string(i) + " has " + std::to_string(size) +
                              " parameters but a gradient or moment of " + std::to_string(a->size()));
    }
    tensors[i] = {checked_flat<float>(params[i], who, ("params" + at).c_str(), true),
                  checked_flat<float>(grads[i], who, ("grads" + at).c_str(), false),
                  checked_flat<float>(exp_avgs[i], who, ("exp_avgs" + at).c_str(), true),
                  checked_flat<float>(exp_avg_sqs[i], who, ("exp_avg_sqs" + at).c_str(), true),
                  size,
                  checked_data<float>(steps[i], who, ("steps" + at).c_str(), {}, true)};
  }
  py::gil_scoped_release release;
  auto lock = ctx.lock();
  return dt::adamw_step(ctx, tensors, {lr, beta1, beta2, eps, weight_decay, max_grad_norm});
}

}  // namespace

void bind_train_ops(py::module_& m) {
  py::class_<Ctx>(m, "TrainOps",
                  "The CPU training ops (csrc/train) on one ISA build and a team of `threads` threads; one op runs at "
                  "a time. Every array is used in place: float32 (uint8 for masks), C-contiguous unless noted.")
      .def(py::init([](const std::string& isa, int threads) { return std::make_unique<Ctx>(isa, threads); }),
           py::arg("isa") = "auto", py::arg("threads") = 1)
      .def_property_readonly("isa", [](const Ctx& c) { return c.k().name; })
      .def_property_readonly("threads", &Ctx::threads)
      .def(
          "profile", [](Ctx& c, bool on) { c.set_profiling(on); }, py::arg("on"),
          "Sum the seconds of the ops inside each block call by family while on (turning it on resets the sums).")
      .def_property_readonly(
          "block_seconds",
          [](const Ctx& c) {
            const auto& s = c.seconds();
            py::dict d;
            d["GEMM"] = s[Ctx::kGemm];
            d["attention"] = s[Ctx::kAttention];
            d["elementwise"] = s[Ctx::kElementwise];
            return d;
          },
          "Seconds per op family (GEMM, attention, elementwise) inside the block calls while profiling.")
      .def("linear_forward", &linear_forward, py::arg("x").noconvert(), py::arg("w").noconvert(),
           py::arg("b").noconvert(), py::arg("y").noconvert(), py::arg("epilogue"), py::arg("residual").noconvert(),
           py::arg("p"), py::arg("seed"),
           "y = epilogue(x w^T + b): 'none', 'relu', or 'dropout_add' (residual + dropout(.)); x (M, K) may have "
           "spaced rows, w (N, K), y (M, N).")
      .def("linear_backward", &linear_backward, py::arg("dy").noconvert(), py::arg("x").noconvert(),
           py::arg("w").noconvert(), py::arg("y").noconvert(), py::arg("dx").noconvert(), py::arg("dw").noconvert(),
           py::arg("db").noconvert(), py::arg("epilogue"), py::arg("p"), py::arg("seed"),
           "dx (M, K) (None: skipped), dw (N, K), db (N,) (None: skipped) from dy (M, N); y: the forward's output "
           "for 'relu', else None.")
      .def("layer_norm_forward", &layer_norm_forward, py::arg("x").noconvert(), py::arg("w").noconvert(),
           py::arg("b").noconvert(), py::arg("y").noconvert(), py::arg("mean").noconvert(), py::arg("rstd").noconvert(),
           py::arg("eps"), "y = LayerNorm(x) over rows of x (rows, n); mean, rstd (rows,).")
      .def("layer_norm_backward", &layer_norm_backward, py::arg("dy").noconvert(), py::arg("x").noconvert(),
           py::arg("w").noconvert(), py::arg("mean").noconvert(), py::arg("rstd").noconvert(),
           py::arg("dx").noconvert(), py::arg("dw").noconvert(), py::arg("db").noconvert(),
           py::arg("dres").noconvert() = py::none(), py::arg("tokens") = 1, py::arg("start") = 0, py::arg("step") = 1,
           "dx (rows, n), dw and db (n,) of LayerNorm from dy and the forward's x, mean, rstd; plus dres, the gradient "
           "of the rows start, start + step, ... of each run of `tokens` rows of x (its residual), added into them.")
      .def("attention_forward", &attention_forward, py::arg("q").noconvert(), py::arg("kv").noconvert(),
           py::arg("mask").noconvert(), py::arg("start").noconvert(), py::arg("heads"), py::arg("scale"), py::arg("p"),
           py::arg("seed"), py::arg("probs").noconvert(), py::arg("y").noconvert(), py::arg("spans").noconvert(),
           py::arg("query_first") = 0, py::arg("query_step") = 1,
           "y (B, tq, C) = dropout(softmax(scale q k^T, mask)) v per head: queries in columns [0, C) of q "
           "(B, tq, Wq), keys and values in the last 2C columns of kv (B, tk, Wk); mask (B, tq, tk) uint8, or None: "
           "query i attends keys start[b] (start (B,) int32, or None: 0) to its token query_first + query_step i; "
           "probs (B, heads, tq, tk) and spans (B, tq, 2) int32 are saved for the backward.")
      .def("attention_backward", &attention_backward, py::arg("dy").noconvert(), py::arg("q").noconvert(),
           py::arg("kv").noconvert(), py::arg("heads"), py::arg("scale"), py::arg("p"), py::arg("seed"),
           py::arg("probs").noconvert(), py::arg("spans").noconvert(), py::arg("dq").noconvert(),
           py::arg("dkv").noconvert(),
           "Gradients into the query columns of dq (laid out as q) and the key and value columns of dkv (as kv), "
           "from the forward's probs and spans and its dropout (p, seed); dq and dkv may be one array.")
      .def("block_forward", &block_forward, py::arg("x").noconvert(), py::arg("mask").noconvert(),
           py::arg("start").noconvert(), py::arg("weights"), py::arg("saved"), py::arg("out").noconvert(),
           py::arg("heads"), py::arg("scale"), py::arg("attn_p"), py::arg("resid_p"), py::arg("eps_1"),
           py::arg("eps_2"), py::arg("seeds"), py::arg("activation"), py::arg("query_first") = 0,
           py::arg("query_step") = 1,
           "A pre-norm GPT-2 block (csrc/train/block.h) from x (B, T, C) into out (B, queries, C): weights as "
           "BlockWeights, saved the forward's arrays for the backward (BlockSaved), keys as attention_forward's, "
           "seeds of the attention, attn_proj and mlp_proj dropout masks.")
      .def("block_backward", &block_backward, py::arg("dout").noconvert(), py::arg("x").noconvert(), py::arg("weights"),
           py::arg("saved"), py::arg("grads"), py::arg("dx").noconvert(), py::arg("heads"), py::arg("scale"),
           py::arg("attn_p"), py::arg("resid_p"), py::arg("seeds"), py::arg("activation"), py::arg("query_first") = 0,
           py::arg("query_step") = 1,
           "dx (B, T, C) and the 12 weights' gradients of block_forward from dout (B, queries, C) and its saved "
           "arrays.")
      .def("shift_dropout_forward", &shift_dropout_forward, py::arg("x").noconvert(), py::arg("shift").noconvert(),
           py::arg("out").noconvert(), py::arg("p"), py::arg("seed"),
           "out = (x + shift) * dropout_mask(p, seed) over the flat index: x and out (rows, n), shift (n,).")
      .def("shift_dropout_backward", &shift_dropout_backward, py::arg("dy").noconvert(), py::arg("dx").noconvert(),
           py::arg("dshift").noconvert(), py::arg("p"), py::arg("seed"),
           "dx = dy * dropout_mask(p, seed) and dshift (n,) its column sums, from dy (rows, n).")
      .def("embed_forward", &embed_forward, py::arg("states").noconvert(), py::arg("actions").noconvert(),
           py::arg("rtg").noconvert(), py::arg("timesteps").noconvert(), py::arg("w_return").noconvert(),
           py::arg("b_return").noconvert(), py::arg("w_state").noconvert(), py::arg("b_state").noconvert(),
           py::arg("w_action").noconvert(), py::arg("b_action").noconvert(), py::arg("table").noconvert(),
           py::arg("x").noconvert(),
           "The interleaved tokens before embed_ln into x (3N, C): states (N, S), actions (N, A), rtg (N,), "
           "timesteps (N,) int64 in [0, table rows), the Linear weights (out, in), table (rows, C).")
      .def("embed_backward", &embed_backward, py::arg("dx").noconvert(), py::arg("states").noconvert(),
           py::arg("actions").noconvert(), py::arg("rtg").noconvert(), py::arg("timesteps").noconvert(),
           py::arg("dw_return").noconvert(), py::arg("db_return").noconvert(), py::arg("dw_state").noconvert(),
           py::arg("db_state").noconvert(), py::arg("dw_action").noconvert(), py::arg("db_action").noconvert(),
           py::arg("dtable").noconvert(), "The weight and table gradients of embed_forward from dx (3N, C).")
      .def("adamw", &adamw, py::arg("params"), py::arg("grads"), py::arg("exp_avgs"), py::arg("exp_avg_sqs"),
           py::arg("steps"), py::arg("lr"), py::arg("beta1"), py::arg("beta2"), py::arg("eps"), py::arg("weight_decay"),
           py::arg("max_grad_norm"),
           "One AdamW step (torch.optim.AdamW's) of every tensor, params and moments in place, each gradient first "
           "scaled by min(1, max_grad_norm / (norm + 1e-6)) (max_grad_norm <= 0: not); steps: each tensor's step "
           "count, a 0-d float32 array incremented in place first. Returns the gradients' global 2-norm.");
}

}  // namespace dt_py
