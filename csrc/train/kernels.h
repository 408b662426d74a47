// The training ops' vector kernels, row by row: LayerNorm, the Linear layers' epilogues and gradient prologues,
// the product A^T B of the weight gradients, the attention softmax with dropout and the attention's small products,
// dropout alone, AdamW and the sum of squares of the gradient clip.
// Three builds of one implementation (kernels_impl.h), as the engine's matmul (csrc/engine/kernels.h): AVX-512,
// AVX2+FMA, and a portable fallback; train_kernels_select() picks one at run time, or the one asked for.
// Every matrix is row-major [rows, cols] with the leading dimension given (or cols when none is).
#pragma once

#include <cstdint>
#include <string>

#include "train/dropout.h"

namespace dt {

// Hyper-parameters of one AdamW step (torch.optim.AdamW's update, decoupled weight decay).
struct AdamWStep {
  float lr, beta1, beta2, eps, weight_decay;
  float bias_correction1;       // 1 - beta1^step
  float bias_correction2_sqrt;  // sqrt(1 - beta2^step)
  float grad_scale;             // the gradient is multiplied by this first (the clip coefficient, or 1)
};

// The weights of the three token embeddings, the state and action matrices transposed ((S, C) and (A, C)), and
// the timestep table (rows, C).
struct EmbedWeights {
  const float *w_return, *b_return, *wt_state, *b_state, *wt_action, *b_action, *table;
};

struct TrainKernels {
  // y = (x - mean) * rstd * w + b per row of n values, (biased variance, as torch); mean and rstd saved per row.
  void (*layer_norm_forward)(const float* x, const float* w, const float* b, float* y, float* mean, float* rstd,
                             int64_t rows, int n, float eps);
  // dx = rstd * (g - mean(g) - xhat * mean(g * xhat)) with g = dy * w, xhat = (x - mean) * rstd; dw += sum of
  // dy * xhat and db += sum of dy over the rows (accumulated, not overwritten).
  void (*layer_norm_backward)(const float* dy, const float* x, const float* w, const float* mean, const float* rstd,
                              float* dx, float* dw, float* db, int64_t rows, int n);
  // out = residual + y * mask over rows [0, rows) of a (.., cols) matrix whose first row has flat index `first`
  // in the mask of `key`; out may alias y or residual.
  void (*dropout_add_rows)(const float* y, const float* residual, float* out, int64_t rows, int cols,
                           const DropoutKey& key, uint32_t first);
  // out = x * mask over n values from flat index `first`; out may alias x.
  void (*dropout_rows)(const float* x, float* out, int64_t n, const DropoutKey& key, uint32_t first);
  // The gradient entering a Linear layer's matmuls from the gradient of its output, for rows [0, rows):
  // g = dy * mask (dropout, key non-null; flat index from `first`) or dy where y > 0 (relu, y non-null) or dy;
  // g is written (unless null) and its column sums are added to db.
  void (*linear_grad_rows)(const float* dy, const float* y, const DropoutKey* key, uint32_t first, float* g, float* db,
                           int64_t rows, int cols);
  // Rows [row0, row0 + rows) of a (total_rows, cols) matrix into the panel layout of the engine's matmul_packed
  // (engine/kernels.h pack_panels, panel width P, a multiple of the vector width) at dst, from src (leading
  // dimension lds).
  void (*pack_panels_rows)(const float* src, int64_t lds, int64_t rows, int cols, int P, float* dst, int64_t total_rows,
                           int64_t row0);
  // dst[c * ldd + r] = src[r * lds + c] for rows x cols values.
  void (*transpose)(const float* src, int64_t lds, float* dst, int64_t ldd, int64_t rows, int64_t cols);
  // out[i * ldo + n] = (or += with accumulate) sum over k in [0, K) of a[k * lda + i] * B[k, n] for i in
  // [0, rows) and n in [n0, n1): A^T B with A (K, rows) read as it lies (no transpose; the tiles of matmul_strided)
  // and B (K, N) packed by pack_panels_rows in panels of `panel` columns (total_rows K); n0 a multiple of the panel,
  // n1 one too or N.
  void (*matmul_tn)(float* out, int64_t ldo, const float* a, int64_t lda, const float* bp, int64_t K, int rows, int N,
                    int n0, int n1, bool accumulate);
  // dst[c * ldd + r] = src[r * lds + c] for rows x cols values, in blocks of a vector's width through registers;
  // dst's columns [rows, round_up(rows, 16)) are written 0 or left alone (the rows of a last block that has fewer).
  void (*transpose_blocks)(const float* src, int64_t lds, float* dst, int64_t ldd, int rows, int cols);
  // Attention probabilities of one query row of t keys: probs = softmax of scale * s over the keys j in [lo, hi)
  // with allowed[j] (allowed null: every one), 0 elsewhere (a row with none, lo >= hi, all zero); out = probs *
  // mask from flat index `first`. s is a scratch row of the scores (at least hi + 15 floats, the padding read and
  // overwritten): its values in [lo, hi) become exponentials. allowed, if not null, is read up to hi + 15 too.
  void (*softmax_dropout_row)(float* s, const uint8_t* allowed, int lo, int hi, float* probs, float* out, int t,
                              float scale, const DropoutKey& key, uint32_t first);
  // Gradient of softmax_dropout_row with respect to s, in place in g (a scratch row of at least t + 15 floats):
  // g = scale * (g * out - probs * dot(g, out)) in [lo, hi), where the row's probs may be nonzero, 0 in the rest
  // of [0, t).
  void (*softmax_dropout_grad_row)(float* g, const float* probs, const float* out, int lo, int hi, int t, float scale);
  // out[m * ldo + n] = sum_k a[m * sm + k * sk] * w[k * ldw + n]: (M, N) = (M, K) x (K, N), a read with any
  // strides (a row-major a: sm = lda, sk = 1; a transposed one: sm = 1, sk = lda), so that the attention's small
  // products read the probabilities and their gradient in place.
  void (*matmul_strided)(float* out, int ldo, const float* a, int sm, int sk, const float* w, int ldw, int M, int K,
                         int N);
  // The tokens R_t, s_t, a_t of `rows` steps before embed_ln, interleaved: x[3n + 0] = rtg[n] w_return + b_return
  // + E[t[n]], x[3n + 1] = states[n] W_state^T + b_state + E[t[n]], x[3n + 2] likewise of actions; x: (3 rows, C).
  void (*embed_rows)(const float* states, const float* actions, const float* rtg, const int64_t* timesteps,
                     const EmbedWeights& w, float* x, int64_t rows, int S, int A, int C);
  // The weight and bias gradients of embed_rows from dx (3 rows, C), added to acc: w_return (C), b_return (C),
  // W_state^T (S, C), b_state (C), W_action^T (A, C), b_action (C), one after another.
  void (*embed_grad_rows)(const float* dx, const float* states, const float* actions, const float* rtg, float* acc,
                          int64_t rows, int S, int A, int C);
  // One AdamW step over n parameters p with gradients g and moments m, v (updated in place).
  void (*adamw)(float* p, const float* g, float* m, float* v, int64_t n, const AdamWStep& s);
  // Sum of x[i]^2 over n values, in double.
  double (*sum_squares)(const float* x, int64_t n);
  int panel;         // columns per panel of matmul_tn's B
  const char* name;  // "avx512", "avx2" or "generic"
};

#define DT_DECLARE_TRAIN_KERNELS(ns)                                                                                   \
  namespace ns {                                                                                                       \
  void layer_norm_forward(const float*, const float*, const float*, float*, float*, float*, int64_t, int, float);      \
  void layer_norm_backward(const float*, const float*, const float*, const float*, const float*, float*, float*,       \
                           float*, int64_t, int);                                                                      \
  void dropout_add_rows(const float*, const float*, float*, int64_t, int, const DropoutKey&, uint32_t);                \
  void dropout_rows(const float*, float*, int64_t, const DropoutKey&, uint32_t);                                       \
  void linear_grad_rows(const float*, const float*, const DropoutKey*, uint32_t, float*, float*, int64_t, int);        \
  void pack_panels_rows(const float*, int64_t, int64_t, int, int, float*, int64_t, int64_t);                           \
  void transpose(const float*, int64_t, float*, int64_t, int64_t, int64_t);                                            \
  void matmul_tn(float*, int64_t, const float*, int64_t, const float*, int64_t, int, int, int, int, bool);             \
  extern const int panel_width;                                                                                        \
  void transpose_blocks(const float*, int64_t, float*, int64_t, int, int);                                             \
  void softmax_dropout_row(float*, const uint8_t*, int, int, float*, float*, int, float, const DropoutKey&, uint32_t); \
  void softmax_dropout_grad_row(float*, const float*, const float*, int, int, int, float);                             \
  void matmul_strided(float*, int, const float*, int, int, const float*, int, int, int, int);                          \
  void embed_rows(const float*, const float*, const float*, const int64_t*, const EmbedWeights&, float*, int64_t, int, \
                  int, int);                                                                                           \
  void embed_grad_rows(const float*, const float*, const float*, const float*, float*, int64_t, int, int, int);        \
  void adamw(float*, const float*, float*, float*, int64_t, const AdamWStep&);                                         \
  double sum_squares(const float*, int64_t);                                                                           \
  }
namespace train {
DT_DECLARE_TRAIN_KERNELS(avx512)
DT_DECLARE_TRAIN_KERNELS(avx2)
DT_DECLARE_TRAIN_KERNELS(generic)
}  // namespace train
#undef DT_DECLARE_TRAIN_KERNELS

// "auto" picks the widest the CPU supports; "avx512", "avx2", "generic" force one (throws if unsupported).
TrainKernels train_kernels_select(const std::string& isa);

}  // namespace dt
