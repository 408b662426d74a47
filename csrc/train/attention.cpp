#include "train/attention.h"

#include <climits>
#include <cmath>
#include <cstring>
#include <vector>

#include "common/check.h"
#include "train/dropout.h"

namespace dt {

namespace {

// exp(x) for x <= 0 (softmax after subtracting the row maximum): Cephes' expf polynomial, relative error below
// 2e-7, exactly 0 under -87 (where float32 runs out). Branch-free with integer selects only, so that rows
// vectorise under the default -ftrapping-math (a float compare-and-select would not).
inline float exp_nonpositive(float x) {
  const float n = (x * 1.44269504f + 12582912.0f) - 12582912.0f;  // round(x / ln 2): 1.5 * 2^23 forces it
  const float r = x - n * 0.693359375f + n * 2.12194440e-4f;       // x - n ln 2, ln 2 in two parts
  float y = 1.9875691500e-4f;
  y = y * r + 1.3981999507e-3f;
  y = y * r + 8.3334519073e-3f;
  y = y * r + 4.1665795894e-2f;
  y = y * r + 1.6666665459e-1f;
  y = y * r + 5.0000001201e-1f;
  y = y * r * r + r + 1.0f;
  const int32_t e = static_cast<int32_t>(n);
  const int32_t bits = e < -126 ? 0 : (e + 127) << 23;  // 2^n, or 0 below the normal range
  float two_n;
  std::memcpy(&two_n, &bits, sizeof two_n);
  return y * two_n;
}

// Sum of x[0..n) in eight interleaved partial sums, so that it vectorises without -ffast-math.
inline float sum8(const float* x, int64_t n) {
  float acc[8] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    for (int k = 0; k < 8; ++k) acc[k] += x[j + k];
  }
  float sum = 0.0f;
  for (; j < n; ++j) sum += x[j];
  for (int k = 0; k < 8; ++k) sum += acc[k];
  return sum;
}

// One row of t scores; allowed[j]: whether key j may be attended; `first`: the row's flat index for the mask.
__attribute__((target_clones("avx2", "default")))
void forward_row(const float* __restrict s, const uint8_t* __restrict allowed, float* __restrict probs,
                 float* __restrict out, int64_t t, float scale, DropoutKey key, uint32_t first) {
  int64_t n = t;  // keys past the last allowed one (half the row, when causal) are skipped
  while (n > 0 && !allowed[n - 1]) --n;
  int32_t max_key = INT32_MIN;  // the maximum as an order-preserving integer key: the loop vectorises
  for (int64_t j = 0; j < n; ++j) {
    const float v = s[j] * scale;
    int32_t k;
    std::memcpy(&k, &v, sizeof k);
    k = k >= 0 ? k : k ^ INT32_MAX;
    const int32_t a = -static_cast<int32_t>(allowed[j] != 0);  // all ones where allowed
    k = (k & a) | (INT32_MIN & ~a);
    max_key = k > max_key ? k : max_key;
  }
  const int32_t max_bits = max_key >= 0 ? max_key : max_key ^ INT32_MAX;
  float max;
  std::memcpy(&max, &max_bits, sizeof max);
  std::memset(probs + n, 0, sizeof(float) * (t - n));
  std::memset(out + n, 0, sizeof(float) * (t - n));
  if (n == 0) return;  // no key: zero output and gradient, as SDPA
  for (int64_t j = 0; j < n; ++j) {
    const float e = exp_nonpositive(s[j] * scale - max);
    const uint32_t keep = allowed[j] ? ~0u : 0u;  // an integer select, as in exp_nonpositive
    uint32_t bits;
    std::memcpy(&bits, &e, sizeof bits);
    bits &= keep;
    std::memcpy(&probs[j], &bits, sizeof bits);
  }
  const float inv = 1.0f / sum8(probs, n);
  for (int64_t j = 0; j < n; ++j) {
    probs[j] *= inv;
    out[j] = probs[j] * dropout_value(key, first + static_cast<uint32_t>(j));
  }
}

__attribute__((target_clones("avx2", "default")))
void backward_row(const float* g, const float* probs, const float* out, float* gs, int64_t t, float scale) {
  float prod[8];
  float dot = 0.0f;
  for (int64_t j0 = 0; j0 < t; j0 += 8) {  // dot(g, out) in blocks of eight, vectorised as sum8
    const int64_t n = t - j0 < 8 ? t - j0 : 8;
    for (int64_t k = 0; k < n; ++k) prod[k] = g[j0 + k] * out[j0 + k];
    dot += sum8(prod, n);
  }
  for (int64_t j = 0; j < t; ++j) gs[j] = scale * (g[j] * out[j] - probs[j] * dot);
}

}  // namespace

void softmax_dropout_forward(const float* scores, const uint8_t* mask, float* probs, float* out, int64_t batch,
                             int64_t heads, int64_t tq, int64_t tk, float scale, float p, uint64_t seed) {
  DT_CHECK(batch >= 0 && heads >= 0 && tq >= 0 && tk >= 0, "softmax_dropout: negative shape (", batch, ", ", heads,
           ", ", tq, ", ", tk, ")");
  DT_CHECK(mask != nullptr || tq == tk, "softmax_dropout: a causal mask needs tq == tk, got ", tq, " and ", tk);
  DT_CHECK(p >= 0.0f && p < 1.0f, "softmax_dropout: p must be in [0, 1), got ", p);
  DT_CHECK(batch * heads * tq * tk < (int64_t{1} << 32), "softmax_dropout: at most 2^32 scores, got ",
           batch * heads * tq * tk);
  const DropoutKey key = dropout_key(p, seed, 0);
  std::vector<uint8_t> causal(static_cast<size_t>(tk));
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t h = 0; h < heads; ++h) {
      for (int64_t i = 0; i < tq; ++i) {
        const int64_t row = ((b * heads + h) * tq + i) * tk;
        if (!mask) {
          for (int64_t j = 0; j < tk; ++j) causal[j] = j <= i;
        }
        const uint8_t* allowed = mask ? mask + (b * tq + i) * tk : causal.data();
        forward_row(scores + row, allowed, probs + row, out + row, tk, scale, key, static_cast<uint32_t>(row));
      }
    }
  }
}

void softmax_dropout_backward(const float* grad_out, const float* probs, const float* out, float* grad_scores,
                              int64_t rows, int64_t t, float scale) {
  DT_CHECK(rows >= 0 && t >= 0, "softmax_dropout_backward: negative shape (", rows, ", ", t, ")");
  for (int64_t r = 0; r < rows; ++r) {
    backward_row(grad_out + r * t, probs + r * t, out + r * t, grad_scores + r * t, t, scale);
  }
}

}  // namespace dt
