#include "train/attention.h"

#include <algorithm>
#include <cstdint>
#include <cstring>

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

constexpr int kRows = 6;  // queries per block of the products over keys; keys per block of those over queries
constexpr int kPad = 16;  // floats (and mask bytes) past tk that the row kernels may read and write in scratch

int round_up(int n, int m) { return (n + m - 1) / m * m; }

// Keys [lo, hi), or queries [lo, hi); empty when lo >= hi.
struct Span {
  int32_t lo, hi;
};
static_assert(sizeof(Span) == 2 * sizeof(int32_t), "spans are saved as pairs of int32");

uint64_t word(const uint8_t* p) {
  uint64_t w;
  std::memcpy(&w, p, sizeof w);
  return w;
}

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "nonzero_bytes reads the first byte of a word lowest");

// The bytes [lo, hi) of x[0, n) from its first nonzero byte to its last (lo = hi = 0 if none): 32 bytes at a time,
// then a word, then the byte within it.
Span nonzero_bytes(const uint8_t* x, int n) {
  auto zero32 = [&](int at) { return (word(x + at) | word(x + at + 8) | word(x + at + 16) | word(x + at + 24)) == 0; };
  int lo = 0;
  while (lo + 32 <= n && zero32(lo)) lo += 32;
  while (lo + 8 <= n && word(x + lo) == 0) lo += 8;
  if (lo + 8 <= n) lo += __builtin_ctzll(word(x + lo)) / 8;
  while (lo < n && !x[lo]) ++lo;
  if (lo == n) return {0, 0};
  int hi = n;
  while (hi - 32 >= lo && zero32(hi - 32)) hi -= 32;
  while (hi - 8 >= lo && word(x + hi - 8) == 0) hi -= 8;
  if (hi - 8 >= lo) hi -= __builtin_clzll(word(x + hi - 8)) / 8;
  while (!x[hi - 1]) --hi;
  return {lo, hi};
}

// Whether every byte of x[0, n) is nonzero.
bool all_nonzero(const uint8_t* x, int n) {
  constexpr uint64_t kOnes = 0x0101010101010101ULL, kHigh = 0x8080808080808080ULL;
  int j = 0;
  for (; j + 8 <= n; j += 8) {
    const uint64_t w = word(x + j);
    if ((w - kOnes) & ~w & kHigh) return false;  // a zero byte
  }
  for (; j < n; ++j)
    if (!x[j]) return false;
  return true;
}

// Per query of batch row b: the keys from its first allowed to its last (lo = hi = 0 if none), and whether every
// key between is allowed (dense: then the softmax reads no mask bytes).
void key_spans(const AttentionKeys& keys, int64_t b, int tq, int tk, Span* span, uint8_t* dense) {
  if (!keys.mask) {
    const int lo = keys.start ? keys.start[b] : 0;
    for (int i = 0; i < tq; ++i) {
      const int hi = keys.query_first + i * keys.query_step + 1;
      span[i] = lo < hi ? Span{lo, hi} : Span{0, 0};
      dense[i] = 1;
    }
    return;
  }
  for (int i = 0; i < tq; ++i) {
    const uint8_t* allowed = keys.mask + (b * tq + i) * tk;
    span[i] = nonzero_bytes(allowed, tk);
    dense[i] = all_nonzero(allowed + span[i].lo, span[i].hi - span[i].lo);
  }
}

// The keys that queries [i0, i1) attend between them.
Span block_keys(const Span* span, int i0, int i1) {
  Span keys{INT32_MAX, 0};
  for (int i = i0; i < i1; ++i)
    if (span[i].lo < span[i].hi) keys = {std::min(keys.lo, span[i].lo), std::max(keys.hi, span[i].hi)};
  return keys;
}

// The queries whose keys meet [j0, j1): from the first to the last (the rows between may not: theirs are zero).
Span block_queries(const Span* span, int tq, int j0, int j1) {
  Span queries{tq, 0};
  for (int i = 0; i < tq; ++i)
    if (span[i].lo < j1 && span[i].hi > j0 && span[i].lo < span[i].hi)
      queries = {std::min(queries.lo, i), std::max(queries.hi, i + 1)};
  return queries;
}

// The columns [tk, tp) of a (rows, tp) matrix zero: the padding of keys or values transposed, which the products
// in whole vectors read.
void zero_padding(float* x, int tp, int tk, int rows) {
  for (int r = 0; r < rows; ++r)
    std::fill(x + static_cast<int64_t>(r) * tp + tk, x + static_cast<int64_t>(r + 1) * tp, 0.0f);
}

void zero_rows(float* x, int64_t ld, int rows, int cols) {
  for (int r = 0; r < rows; ++r) std::fill(x + r * ld, x + r * ld + cols, 0.0f);
}

// The cache lines of the batch row to come, brought toward the core a few at a time while the current one computes:
// the arrays of a training step are tens of MB, and the rows of a batch row (q, k, v, and the backward's dy, probs,
// out) would otherwise come from L3 or memory when first read (the backward ran at 2/3 of its speed on 64 batch rows
// than on 8; fetching the rows to be written too did not pay). Ranges of bytes, overlapping ones merged.
class Lookahead {
 public:
  void add(const void* p, int64_t bytes) {
    Range r{reinterpret_cast<uintptr_t>(p) & ~(kLine - 1), reinterpret_cast<uintptr_t>(p) + bytes};
    for (int i = 0; i < n_;)
      if (ranges_[i].next <= r.end && r.next <= ranges_[i].end) {  // merge
        r = {std::min(r.next, ranges_[i].next), std::max(r.end, ranges_[i].end)};
        ranges_[i] = ranges_[--n_];
        i = 0;
      } else {
        ++i;
      }
    if (n_ < kRanges) ranges_[n_++] = r;
  }

  int64_t lines() const {
    int64_t total = 0;
    for (int i = 0; i < n_; ++i) total += (ranges_[i].end - ranges_[i].next + kLine - 1) / kLine;
    return total;
  }

  // The next `count` lines, range after range.
  void issue(int64_t count) {
    for (; count > 0 && at_ < n_; ++at_) {
      Range& r = ranges_[at_];
      for (; count > 0 && r.next < r.end; --count, r.next += kLine)
        __builtin_prefetch(reinterpret_cast<const void*>(r.next), 0, 2);
      if (r.next < r.end) return;
    }
  }

 private:
  static constexpr uintptr_t kLine = 64;
  static constexpr int kRanges = 8;
  struct Range {
    uintptr_t next, end;  // addresses as integers: a range's rows may end past its array (a hint never faults)
  };
  Range ranges_[kRanges];
  int n_ = 0, at_ = 0;
};

// Rows [b * t, (b + 1) * t) of a matrix with leading dimension ld, from x's column on, of each batch row b.
void add_rows(Lookahead& ahead, const float* x, int64_t b, int t, int ld) {
  ahead.add(x + b * t * ld, static_cast<int64_t>(t) * ld * sizeof(float));
}

// Batch rows per chunk of work of a team member: about 8 chunks each, so that a slowed member takes fewer.
int64_t batch_rows_per_chunk(int64_t batch, int threads) { return std::max<int64_t>(1, batch / (8 * threads)); }

}  // namespace

void attention_forward(TrainContext& ctx, const float* q, const float* k, const float* v, const AttentionKeys& keys,
                       const AttentionLayout& s, float scale, float p, uint64_t seed, float* probs, float* y,
                       int32_t* spans) {
  check("attention_forward", s);
  DT_CHECK(keys.mask || (keys.query_first >= 0 && keys.query_step >= 1 &&
                         keys.query_first + int64_t{s.tq - 1} * keys.query_step < s.tk),
           "attention_forward: without a mask the queries' tokens ", keys.query_first, " + ", keys.query_step,
           " i (i < ", s.tq, ") must lie among the ", s.tk, " keys");
  DT_CHECK(p >= 0.0f && p < 1.0f, "attention_forward: p must be in [0, 1), got ", p);
  const TrainKernels& kern = ctx.k();
  const int tq = s.tq, tk = s.tk, hs = s.hs, C = s.heads * s.hs, tp = round_up(tk, kPad) + kPad;
  const int64_t square = static_cast<int64_t>(tq) * tk;
  // per member: keys transposed (hs, tp); scores (tq, tp); out (tq, tk); spans (tq); dense flags (tq bytes) and one
  // mask row (tp bytes)
  const int64_t per = static_cast<int64_t>(hs + tq) * tp + square + 2 * tq + (tq + tp + 3) / 4;
  float* scratch = ctx.buffer(TrainContext::kScratch, static_cast<size_t>(per * ctx.threads()));
  for (int m = 0; m < ctx.threads(); ++m) zero_padding(scratch + m * per, tp, tk, hs);
  const DropoutKey key = dropout_key(p, seed, 0);
  ctx.parallel(s.batch * s.heads, [&](int64_t u, int part) {
    const int64_t b = u / s.heads;
    const int h = static_cast<int>(u % s.heads);
    const float* qh = q + b * tq * s.ldq + h * hs;
    const float* kh = k + b * tk * s.ldk + h * hs;
    const float* vh = v + b * tk * s.ldk + h * hs;
    float* kt = scratch + part * per;
    float* sc = kt + static_cast<int64_t>(hs) * tp;
    float* o = sc + static_cast<int64_t>(tq) * tp;
    Span* span = reinterpret_cast<Span*>(o + square);
    uint8_t* dense = reinterpret_cast<uint8_t*>(span + tq);
    uint8_t* row_mask = dense + tq;
    key_spans(keys, b, tq, tk, span, dense);
    if (h == 0) std::memcpy(spans + b * tq * 2, span, sizeof(Span) * tq);
    kern.transpose_blocks(kh, s.ldk, kt, tp, tk, hs);
    float* pr = probs + u * square;
    Lookahead ahead;
    if (h == s.heads - 1 && b + 1 < s.batch) {  // the next batch row's queries, keys and values
      add_rows(ahead, q, b + 1, tq, s.ldq);
      add_rows(ahead, k, b + 1, tk, s.ldk);
      add_rows(ahead, v, b + 1, tk, s.ldk);
    }
    const int64_t per_block = ahead.lines() / ((tq + kRows - 1) / kRows) + 1;
    for (int i0 = 0; i0 < tq; i0 += kRows) {
      ahead.issue(per_block);
      const int rows = std::min(kRows, tq - i0);
      const Span block = block_keys(span, i0, i0 + rows);
      const int n = block.hi - block.lo;
      if (n > 0)  // scores = q k^T over the block's keys, in whole vectors (into the padding)
        kern.matmul_strided(sc + i0 * tp + block.lo, tp, qh + static_cast<int64_t>(i0) * s.ldq, s.ldq, 1, kt + block.lo,
                            tp, rows, hs, round_up(n, kPad));
      for (int i = i0; i < i0 + rows; ++i) {
        const uint8_t* allowed = nullptr;
        if (!dense[i]) {  // a mask with gaps: its row, padded for the kernel's vectors
          std::memcpy(row_mask, keys.mask + (b * tq + i) * tk, tk);
          std::memset(row_mask + tk, 0, tp - tk);
          allowed = row_mask;
        }
        kern.softmax_dropout_row(sc + i * tp, allowed, span[i].lo, span[i].hi, pr + i * tk, o + i * tk, tk, scale, key,
                                 static_cast<uint32_t>(u * square + i * tk));
      }
      float* yb = y + (b * tq + i0) * C + h * hs;
      if (n > 0)
        kern.matmul_strided(yb, C, o + i0 * tk + block.lo, tk, 1, vh + static_cast<int64_t>(block.lo) * s.ldk, s.ldk,
                            rows, n, hs);
      else zero_rows(yb, C, rows, hs);
    }
  });
}

void attention_backward(TrainContext& ctx, const float* dy, const float* q, const float* k, const float* v,
                        const float* probs, const int32_t* spans, const AttentionLayout& s, float scale, float p,
                        uint64_t seed, float* dq, float* dk, float* dv) {
  check("attention_backward", s);
  DT_CHECK(p >= 0.0f && p < 1.0f, "attention_backward: p must be in [0, 1), got ", p);
  const TrainKernels& kern = ctx.k();
  const int tq = s.tq, tk = s.tk, hs = s.hs, C = s.heads * s.hs, tp = round_up(tk, kPad) + kPad;
  const int64_t square = static_cast<int64_t>(tq) * tk;
  // per member: values transposed (hs, tp); the gradient of out, then of the scores (tq, tp); out (tq, tk); spans (tq)
  const int64_t per = static_cast<int64_t>(hs + tq) * tp + square + 2 * tq;
  const DropoutKey key = dropout_key(p, seed, 0);
  float* scratch = ctx.buffer(TrainContext::kScratch, static_cast<size_t>(per * ctx.threads()));
  for (int m = 0; m < ctx.threads(); ++m) zero_padding(scratch + m * per, tp, tk, hs);
  const int64_t rows_per_chunk = batch_rows_per_chunk(s.batch, ctx.threads());
  ctx.parallel((s.batch + rows_per_chunk - 1) / rows_per_chunk, [&](int64_t c, int part) {
    const int64_t b_end = std::min(s.batch, (c + 1) * rows_per_chunk);
    for (int64_t b = c * rows_per_chunk; b < b_end; ++b) {
      Lookahead ahead;
      if (b + 1 < b_end) {
        add_rows(ahead, q, b + 1, tq, s.ldq);
        add_rows(ahead, k, b + 1, tk, s.ldk);
        add_rows(ahead, v, b + 1, tk, s.ldk);
        add_rows(ahead, dy, b + 1, tq, C);
        ahead.add(probs + (b + 1) * s.heads * square, s.heads * square * sizeof(float));
      }
      const int64_t per_step = ahead.lines() / (static_cast<int64_t>(s.heads) * (tq + (tk + kRows - 1) / kRows)) + 1;
      float* vt = scratch + part * per;
      float* ds = vt + static_cast<int64_t>(hs) * tp;
      float* redrawn = ds + static_cast<int64_t>(tq) * tp;
      Span* span = reinterpret_cast<Span*>(redrawn + square);
      std::memcpy(span, spans + b * tq * 2, sizeof(Span) * tq);  // the keys of the forward
      for (int h = 0; h < s.heads; ++h) {
        const int64_t u = b * s.heads + h;
        const int64_t qo = b * tq * s.ldq + h * hs, ko = b * tk * s.ldk + h * hs;
        const float* g = dy + b * tq * C + h * hs;  // (tq, hs), leading dimension C
        const float* pr = probs + u * square;
        const float* o = p > 0.0f ? redrawn : pr;  // out = probs * the forward's dropout mask, redrawn
        for (int i = 0; p > 0.0f && i < tq; ++i) {
          float* row = redrawn + i * tk;
          std::memset(row, 0, sizeof(float) * tk);
          kern.dropout_rows(pr + i * tk + span[i].lo, row + span[i].lo, span[i].hi - span[i].lo, key,
                            static_cast<uint32_t>(u * square + i * tk + span[i].lo));
        }
        kern.transpose_blocks(v + ko, s.ldk, vt, tp, tk, hs);
        for (int i0 = 0; i0 < tq; i0 += kRows) {
          const int rows = std::min(kRows, tq - i0);
          const Span keys = block_keys(span, i0, i0 + rows);
          const int n = keys.hi - keys.lo;
          if (n > 0)  // the gradient of out: dy v^T over the block's keys, in whole vectors (into the padding)
            kern.matmul_strided(ds + i0 * tp + keys.lo, tp, g + static_cast<int64_t>(i0) * C, C, 1, vt + keys.lo, tp,
                                rows, hs, round_up(n, kPad));
          for (int i = i0; i < i0 + rows; ++i) {
            kern.softmax_dropout_grad_row(ds + i * tp, pr + i * tk, o + i * tk, span[i].lo, span[i].hi, tk, scale);
            ahead.issue(per_step);
          }
          float* dqb = dq + qo + static_cast<int64_t>(i0) * s.ldq;
          if (n > 0)  // dq = ds k
            kern.matmul_strided(dqb, s.ldq, ds + i0 * tp + keys.lo, tp, 1,
                                k + ko + static_cast<int64_t>(keys.lo) * s.ldk, s.ldk, rows, n, hs);
          else zero_rows(dqb, s.ldq, rows, hs);
        }
        for (int j0 = 0; j0 < tk; j0 += kRows) {  // dv = out^T dy, dk = ds^T q over the queries of each key block
          const int cols = std::min(kRows, tk - j0);
          const Span queries = block_queries(span, tq, j0, j0 + cols);
          const int m = queries.hi - queries.lo;
          float* dvb = dv + ko + static_cast<int64_t>(j0) * s.ldk;
          float* dkb = dk + ko + static_cast<int64_t>(j0) * s.ldk;
          ahead.issue(per_step);
          if (m <= 0) {
            zero_rows(dvb, s.ldk, cols, hs);
            zero_rows(dkb, s.ldk, cols, hs);
            continue;
          }
          kern.matmul_strided(dvb, s.ldk, o + queries.lo * tk + j0, 1, tk, g + static_cast<int64_t>(queries.lo) * C, C,
                              cols, m, hs);
          kern.matmul_strided(dkb, s.ldk, ds + queries.lo * tp + j0, 1, tp,
                              q + qo + static_cast<int64_t>(queries.lo) * s.ldq, s.ldq, cols, m, hs);
        }
      }
    }
  });
}

}  // namespace dt
