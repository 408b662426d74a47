// Returns-to-go: the discounted sum of future rewards inside each episode.
#pragma once

#include <cstdint>

namespace dt {

// rtg[t] = rewards[t] + gamma * rtg[t + 1] inside [offsets[e], offsets[e + 1]), zero after the end.
// rewards, rtg: [n_steps]; offsets: [n_episodes + 1], offsets[0] == 0, non-decreasing, last == n_steps.
// Accumulates in double so that long episodes with gamma = 1 lose no precision. Throws on bad offsets.
void returns_to_go(const float* rewards, int64_t n_steps, const int64_t* offsets, int64_t n_offsets,
                   double gamma, float* rtg);

}  // namespace dt
