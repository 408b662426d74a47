// Returns-to-go: the discounted sum of future rewards inside each episode.
#pragma once

#include <cstdint>

namespace dt {

// Throws unless offsets [n_offsets] are episode boundaries of n_steps steps: offsets[0] == 0, non-decreasing,
// last == n_steps.
void check_offsets(const int64_t* offsets, int64_t n_offsets, int64_t n_steps);

// rtg[t] = (rewards[t] + gamma * R[t + 1]) / scale inside [offsets[e], offsets[e + 1]), R zero after the end.
// rewards, rtg: [n_steps]; offsets: [n_episodes + 1], offsets[0] == 0, non-decreasing, last == n_steps.
// Accumulates and divides in double (as the blog's numpy collator does), then rounds once to float.
// Throws on bad offsets or a zero / non-finite scale.
void returns_to_go(const float* rewards, int64_t n_steps, const int64_t* offsets, int64_t n_offsets, double gamma,
                   double scale, float* rtg);

}  // namespace dt
