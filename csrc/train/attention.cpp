#include "train/attention.h"

#include <algorithm>
#include <vector>

#include "common/check.h"
#include "train/dropout.h"

namespace dt {

namespace {

void check(const char* who, const AttentionLayout& s) {
  DT_CHECK(s.batch >= 0 && s.heads >= 1 && s.tq >= 1 && s.tk >= 1 && s.hs >= 1, who, ": bad shape (batch ", s.batch,
           ", heads ", s.heads, ", tq ", s.tq, ", tk ", s.tk, ", head size ", s.hs, ")");
  DT_CHECK(s.ldq >= s.heads * s.hs && s.ldk >= s.heads * s.hs, who, ": leading dimensions ", s.ldq, ", ", s.ldk,
           " below heads x head size ", s.heads * s.hs);
  DT_CHECK(s.batch * s.heads * s.tq * s.tk < (int64_t{1} << 32), who, ": at most 2^32 scores");
}

}  // namespace

namespace {

constexpr int kBlock = 12;  // queries per block (two register tiles of the engine's matmul)
constexpr int kPad = 16;    // key columns of a block's scores are computed in multiples of this

int round_up(int n, int m) { return (n + m - 1) / m * m; }

// The keys each query of batch row b may attend end before extent[i] (its last allowed key + 1, 0 if none);
// then per block of kBlock queries the largest extent, so that a block's products stop at its last key.
void extents(const uint8_t* mask, const uint8_t* causal, int64_t b, int tq, int tk, int* extent, int* block_extent) {
  for (int i = 0; i < tq; ++i) {
    const uint8_t* allowed = mask ? mask + (b * tq + i) * tk : causal + static_cast<int64_t>(i) * tk;
    int n = tk;
    while (n > 0 && !allowed[n - 1]) --n;
    extent[i] = n;
  }
  for (int i0 = 0; i0 < tq; i0 += kBlock) {
    int e = 0;
    for (int i = i0; i < std::min(tq, i0 + kBlock); ++i) e = std::max(e, extent[i]);
    block_extent[i0 / kBlock] = e;
  }
}

// The first query whose extent passes key j0, for each block of kBlock keys: rows before it are zero in every
// column from j0 on, so the products over queries (dv = out^T dy, dk = ds^T q) of that key block start there.
void first_queries(const int* extent, int tq, int tk, int* first) {
  for (int j0 = 0; j0 < tk; j0 += kBlock) {
    int i = 0;
    while (i < tq && extent[i] <= j0) ++i;
    first[j0 / kBlock] = i;
  }
}

// (tk, hs) rows of keys (leading dimension ld) as (hs, tp) columns, the columns past tk zero.
void keys_transposed(const TrainKernels& kern, const float* k, int ld, int tk, int hs, int tp, float* kt) {
  kern.transpose(k, ld, kt, tp, tk, hs);
  for (int64_t c = 0; c < hs; ++c) std::fill(kt + c * tp + tk, kt + (c + 1) * tp, 0.0f);
}

}  // namespace

void attention_forward(TrainContext& ctx, const float* q, const float* k, const float* v, const uint8_t* mask,
                       const AttentionLayout& s, float scale, float p, uint64_t seed, float* probs, float* out,
                       float* y) {
  check("attention_forward", s);
  DT_CHECK(mask != nullptr || s.tq == s.tk, "attention_forward: a causal mask needs tq == tk, got ", s.tq, " and ",
           s.tk);
  DT_CHECK(p >= 0.0f && p < 1.0f, "attention_forward: p must be in [0, 1), got ", p);
  const Kernels& mm = ctx.mm();
  const TrainKernels& kern = ctx.k();
  const int tq = s.tq, tk = s.tk, hs = s.hs, C = s.heads * s.hs, tp = round_up(tk, kPad);
  const int blocks = (tq + kBlock - 1) / kBlock;
  std::vector<uint8_t> causal;
  if (!mask) {
    causal.resize(static_cast<size_t>(tq) * tk);
    for (int i = 0; i < tq; ++i)
      for (int j = 0; j < tk; ++j) causal[static_cast<size_t>(i) * tk + j] = j <= i;
  }
  const int64_t square = static_cast<int64_t>(tq) * tk;
  // per member: scores (tq, tp), keys transposed (hs, tp), extents (tq + blocks ints)
  const int64_t per = static_cast<int64_t>(tq) * tp + static_cast<int64_t>(hs) * tp + tq + blocks;
  float* scratch = ctx.buffer(TrainContext::kScratch, static_cast<size_t>(per * ctx.threads()));
  const DropoutKey key = dropout_key(p, seed, 0);
  ctx.parallel(s.batch * s.heads, [&](int64_t u, int part) {
    const int64_t b = u / s.heads;
    const int h = static_cast<int>(u % s.heads);
    const float* qh = q + b * tq * s.ldq + h * hs;
    const float* kh = k + b * tk * s.ldk + h * hs;
    const float* vh = v + b * tk * s.ldk + h * hs;
    float* sc = scratch + part * per;
    float* kt = sc + static_cast<int64_t>(tq) * tp;
    int* extent = reinterpret_cast<int*>(kt + static_cast<int64_t>(hs) * tp);
    int* block_extent = extent + tq;
    extents(mask, causal.data(), b, tq, tk, extent, block_extent);
    keys_transposed(kern, kh, s.ldk, tk, hs, tp, kt);
    float* pr = probs + u * square;
    float* o = out + u * square;
    for (int i0 = 0, blk = 0; i0 < tq; i0 += kBlock, ++blk) {
      const int rows = std::min(kBlock, tq - i0), e = block_extent[blk];
      if (e > 0) mm.matmul(sc + i0 * tp, tp, qh + i0 * s.ldq, s.ldq, kt, tp, nullptr, rows, hs, round_up(e, kPad));
      for (int i = i0; i < i0 + rows; ++i) {
        const uint8_t* allowed = mask ? mask + (b * tq + i) * tk : causal.data() + static_cast<int64_t>(i) * tk;
        kern.softmax_dropout_row(sc + i * tp, allowed, extent[i], pr + i * tk, o + i * tk, tk, scale, key,
                                 static_cast<uint32_t>(u * square + i * tk));
      }
      float* yb = y + (b * tq + i0) * C + h * hs;
      if (e > 0) mm.matmul(yb, C, o + i0 * tk, tk, vh, s.ldk, nullptr, rows, e, hs);
      else
        for (int i = 0; i < rows; ++i) std::fill(yb + i * C, yb + i * C + hs, 0.0f);
    }
  });
}

void attention_backward(TrainContext& ctx, const float* dy, const float* q, const float* k, const float* v,
                        const float* probs, const float* out, const AttentionLayout& s, float scale, float* dq,
                        float* dk, float* dv) {
  check("attention_backward", s);
  const Kernels& mm = ctx.mm();
  const TrainKernels& kern = ctx.k();
  const int tq = s.tq, tk = s.tk, hs = s.hs, C = s.heads * s.hs, tp = round_up(tk, kPad);
  const int blocks = (tq + kBlock - 1) / kBlock, key_blocks = (tk + kBlock - 1) / kBlock;
  const int64_t square = static_cast<int64_t>(tq) * tk;
  // per member: the gradient of out, then of the scores (tq, tp); a transposed (tk, tq) matrix; values transposed
  // (hs, tp); extents (tq + blocks + key_blocks ints)
  const int64_t per = static_cast<int64_t>(tq) * tp + square + static_cast<int64_t>(hs) * tp + tq + blocks + key_blocks;
  float* scratch = ctx.buffer(TrainContext::kScratch, static_cast<size_t>(per * ctx.threads()));
  ctx.parallel(s.batch * s.heads, [&](int64_t u, int part) {
    const int64_t b = u / s.heads;
    const int h = static_cast<int>(u % s.heads);
    const int64_t qo = b * tq * s.ldq + h * hs, ko = b * tk * s.ldk + h * hs;
    const float* g = dy + b * tq * C + h * hs;  // (tq, hs), leading dimension C
    const float* pr = probs + u * square;
    const float* o = out + u * square;
    float* ds = scratch + part * per;                // (tq, tp)
    float* tr = ds + static_cast<int64_t>(tq) * tp;  // (tk, tq): out^T, then ds^T
    float* vt = tr + square;                         // (hs, tp)
    int* extent = reinterpret_cast<int*>(vt + static_cast<int64_t>(hs) * tp);
    int* block_extent = extent + tq;
    int* first = block_extent + blocks;
    // the extents are those of the forward: a row's probabilities end at its last allowed key
    for (int i = 0; i < tq; ++i) {
      int n = tk;
      while (n > 0 && pr[i * tk + n - 1] == 0.0f) --n;
      extent[i] = n;
    }
    for (int i0 = 0, blk = 0; i0 < tq; i0 += kBlock, ++blk) {
      int e = 0;
      for (int i = i0; i < std::min(tq, i0 + kBlock); ++i) e = std::max(e, extent[i]);
      block_extent[blk] = e;
    }
    first_queries(extent, tq, tk, first);
    keys_transposed(kern, v + ko, s.ldk, tk, hs, tp, vt);
    for (int i0 = 0, blk = 0; i0 < tq; i0 += kBlock, ++blk) {
      const int rows = std::min(kBlock, tq - i0), e = block_extent[blk];
      float* dqb = dq + qo + static_cast<int64_t>(i0) * s.ldq;
      if (e == 0) {
        for (int i = 0; i < rows; ++i) std::fill(dqb + i * s.ldq, dqb + i * s.ldq + hs, 0.0f);
        continue;
      }
      mm.matmul(ds + i0 * tp, tp, g + i0 * C, C, vt, tp, nullptr, rows, hs, round_up(e, kPad));  // dy v^T
      for (int i = i0; i < i0 + rows; ++i)
        kern.softmax_dropout_grad_row(ds + i * tp, pr + i * tk, o + i * tk, ds + i * tp, e, scale);
      mm.matmul(dqb, s.ldq, ds + i0 * tp, tp, k + ko, s.ldk, nullptr, rows, e, hs);  // dq = ds k
    }
    kern.transpose(o, tk, tr, tq, tq, tk);
    for (int j0 = 0, blk = 0; j0 < tk; j0 += kBlock, ++blk) {  // dv = out^T dy
      const int rows = std::min(kBlock, tk - j0), i0 = first[blk];
      float* dvb = dv + ko + static_cast<int64_t>(j0) * s.ldk;
      if (i0 == tq)
        for (int j = 0; j < rows; ++j) std::fill(dvb + j * s.ldk, dvb + j * s.ldk + hs, 0.0f);
      else mm.matmul(dvb, s.ldk, tr + j0 * tq + i0, tq, g + i0 * C, C, nullptr, rows, tq - i0, hs);
    }
    for (int i = 0; i < tq; ++i)  // the scores' gradient past a row's extent is zero (not computed above)
      std::fill(ds + i * tp + extent[i], ds + i * tp + tk, 0.0f);
    kern.transpose(ds, tp, tr, tq, tq, tk);
    for (int j0 = 0, blk = 0; j0 < tk; j0 += kBlock, ++blk) {  // dk = ds^T q
      const int rows = std::min(kBlock, tk - j0), i0 = first[blk];
      float* dkb = dk + ko + static_cast<int64_t>(j0) * s.ldk;
      if (i0 == tq)
        for (int j = 0; j < rows; ++j) std::fill(dkb + j * s.ldk, dkb + j * s.ldk + hs, 0.0f);
      else
        mm.matmul(dkb, s.ldk, tr + j0 * tq + i0, tq, q + qo + static_cast<int64_t>(i0) * s.ldq, s.ldq, nullptr, rows,
                  tq - i0, hs);
    }
  });
}

}  // namespace dt
