#include "sampler/returns.h"

#include <cmath>

#include "common/check.h"

namespace dt {

void check_offsets(const int64_t* offsets, int64_t n_offsets, int64_t n_steps) {
  DT_CHECK(n_offsets >= 1, "episode offsets must hold at least one entry, got ", n_offsets);
  DT_CHECK(offsets[0] == 0, "episode offsets must start at 0, got ", offsets[0]);
  DT_CHECK(offsets[n_offsets - 1] == n_steps, "last episode offset (", offsets[n_offsets - 1],
           ") must equal the number of steps (", n_steps, ")");
  for (int64_t e = 0; e + 1 < n_offsets; ++e) {
    DT_CHECK(offsets[e] <= offsets[e + 1], "episode offsets must be non-decreasing: offsets[", e, "] = ", offsets[e],
             " > offsets[", e + 1, "] = ", offsets[e + 1]);
  }
}

void returns_to_go(const float* rewards, int64_t n_steps, const int64_t* offsets, int64_t n_offsets, double gamma,
                   double scale, float* rtg) {
  DT_CHECK(std::isfinite(scale) && scale != 0.0, "scale must be finite and non-zero, got ", scale);
  check_offsets(offsets, n_offsets, n_steps);
  for (int64_t e = 0; e + 1 < n_offsets; ++e) {
    double acc = 0.0;
    for (int64_t t = offsets[e + 1] - 1; t >= offsets[e]; --t) {
      acc = static_cast<double>(rewards[t]) + gamma * acc;
      rtg[t] = static_cast<float>(acc / scale);
    }
  }
}

}  // namespace dt
