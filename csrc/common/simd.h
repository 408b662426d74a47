// SIMD helpers shared by the engine's kernels (csrc/engine/kernels_impl.h) and the training kernels
// (csrc/train/kernels_impl.h): horizontal sums and the exp polynomial of the softmax, over GCC/Clang vector
// extension types of 4, 8 or 16 floats.
//
// Each ISA build (AVX-512, AVX2+FMA, portable) includes this header with its own target flags, so everything here
// has internal linkage (an anonymous namespace): every build compiles its own copy, and the linker can never hand
// one build another build's instructions, as it could with inline functions of external linkage.
#pragma once

#include <cstdint>

namespace dt {
namespace simd {
namespace {

typedef float f2 __attribute__((vector_size(2 * sizeof(float))));
typedef float f4 __attribute__((vector_size(4 * sizeof(float))));
typedef float f8 __attribute__((vector_size(8 * sizeof(float))));

template <typename V>
constexpr int lanes() {
  return static_cast<int>(sizeof(V) / sizeof(float));
}

// Every lane x.
template <typename V>
inline V splat(float x) {
  return V{} + x;
}

// Sums of lanes, pairwise: the upper half added to the lower half until one lane is left, in registers.
inline float hsum4(f4 v) {
  const f2 h = __builtin_shufflevector(v, v, 0, 1) + __builtin_shufflevector(v, v, 2, 3);
  return h[0] + h[1];
}

inline float hsum8(f8 v) {
  return hsum4(__builtin_shufflevector(v, v, 0, 1, 2, 3) + __builtin_shufflevector(v, v, 4, 5, 6, 7));
}

// The sum of the lanes of a vector of 4, 8 or 16 floats.
template <typename V>
inline float hsum(V v) {
  static_assert(lanes<V>() == 4 || lanes<V>() == 8 || lanes<V>() == 16, "vectors of 4, 8 or 16 floats");
  if constexpr (lanes<V>() == 16) {
    return hsum8(__builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7) +
                 __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15));
  } else if constexpr (lanes<V>() == 8) {
    return hsum4(__builtin_shufflevector(v, v, 0, 1, 2, 3) + __builtin_shufflevector(v, v, 4, 5, 6, 7));
  } else {
    return hsum4(__builtin_shufflevector(v, v, 0, 1, 2, 3));
  }
}

// The lane sums of four vectors at once, as one vector of four: halves of pairs added, then quarters, and so on.
template <typename V>
inline f4 hsum_x4(V a, V b, V c, V d) {
  static_assert(lanes<V>() == 4 || lanes<V>() == 8 || lanes<V>() == 16, "vectors of 4, 8 or 16 floats");
  if constexpr (lanes<V>() == 16) {
    const V ab = __builtin_shufflevector(a, b, 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23) +
                 __builtin_shufflevector(a, b, 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31);
    const V cd = __builtin_shufflevector(c, d, 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23) +
                 __builtin_shufflevector(c, d, 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31);
    const V q = __builtin_shufflevector(ab, cd, 0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27) +
                __builtin_shufflevector(ab, cd, 4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30, 31);
    const f8 e = __builtin_shufflevector(q, q, 0, 1, 4, 5, 8, 9, 12, 13) +
                 __builtin_shufflevector(q, q, 2, 3, 6, 7, 10, 11, 14, 15);
    return __builtin_shufflevector(e, e, 0, 2, 4, 6) + __builtin_shufflevector(e, e, 1, 3, 5, 7);
  } else if constexpr (lanes<V>() == 8) {
    const V ab = __builtin_shufflevector(a, b, 0, 1, 2, 3, 8, 9, 10, 11) +
                 __builtin_shufflevector(a, b, 4, 5, 6, 7, 12, 13, 14, 15);
    const V cd = __builtin_shufflevector(c, d, 0, 1, 2, 3, 8, 9, 10, 11) +
                 __builtin_shufflevector(c, d, 4, 5, 6, 7, 12, 13, 14, 15);
    const V e = __builtin_shufflevector(ab, cd, 0, 1, 4, 5, 8, 9, 12, 13) +
                __builtin_shufflevector(ab, cd, 2, 3, 6, 7, 10, 11, 14, 15);
    return __builtin_shufflevector(e, e, 0, 2, 4, 6) + __builtin_shufflevector(e, e, 1, 3, 5, 7);
  } else {
    const V ab = __builtin_shufflevector(a, b, 0, 1, 4, 5) + __builtin_shufflevector(a, b, 2, 3, 6, 7);
    const V cd = __builtin_shufflevector(c, d, 0, 1, 4, 5) + __builtin_shufflevector(c, d, 2, 3, 6, 7);
    return __builtin_shufflevector(ab, cd, 0, 2, 4, 6) + __builtin_shufflevector(ab, cd, 1, 3, 5, 7);
  }
}

// exp(x) for x in [-87, 88] (inputs outside are clamped to it), within 2 ulp of expf: Cephes' expf, x = n ln2 + r,
// a degree-5 polynomial in r, times 2^n. The softmax of the engine and of the training attention.
template <typename V>
inline V vexp(V x) {
  using I = decltype(x < x);  // the integer vector of the same lanes
  x = x < splat<V>(-87.0f) ? splat<V>(-87.0f) : x;
  x = x > splat<V>(88.0f) ? splat<V>(88.0f) : x;
  const V t = x * 1.44269504088896341f + 0.5f;
  V n = __builtin_convertvector(__builtin_convertvector(t, I), V);
  n = n > t ? n - 1.0f : n;  // floor(t): the conversion truncates toward zero
  x = x - n * 0.693359375f + n * 2.12194440e-4f;
  const V p = ((((1.9875691500e-4f * x + 1.3981999507e-3f) * x + 8.3334519073e-3f) * x + 4.1665795894e-2f) * x +
               1.6666665459e-1f) *
                  x +
              5.0000001201e-1f;
  const I e = (__builtin_convertvector(n, I) + 127) << 23;
  return (p * x * x + x + 1.0f) * (V)e;
}

}  // namespace
}  // namespace simd
}  // namespace dt
