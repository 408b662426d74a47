// The Decision Transformer's interleaved token embedding in training on CPU, before embed_ln (the LayerNorm op
// follows): per step t of each row, R_t = rtg w_return + b_return + E[t], s_t = W_state state + b_state + E[t],
// a_t = W_action action + b_action + E[t], written as (R_1, s_1, a_1, R_2, ...). Forward and the weight gradients
// split among the team's threads by blocks of steps (the blocks' sums added in order); the timestep table's
// gradient is one scatter-add in step order. The inputs (states, actions, returns-to-go) get no gradient.
#pragma once

#include <cstdint>

#include "train/context.h"

namespace dt {

struct EmbedShape {
  int64_t steps;       // N = batch x steps per window
  int S, A, C;         // state_dim, act_dim, hidden size
  int64_t table_rows;  // max_ep_len: timesteps must lie in [0, table_rows)
};

// x: (3N, C). The weights in nn.Linear layout: w_return (C, 1), w_state (C, S), w_action (C, A); table (rows, C).
void embed_forward(TrainContext& ctx, const float* states, const float* actions, const float* rtg,
                   const int64_t* timesteps, const float* w_return, const float* b_return, const float* w_state,
                   const float* b_state, const float* w_action, const float* b_action, const float* table, float* x,
                   const EmbedShape& s);

// From dx (3N, C): the gradients of the weights above (their layouts) and of the table (rows, C).
void embed_backward(TrainContext& ctx, const float* dx, const float* states, const float* actions, const float* rtg,
                    const int64_t* timesteps, float* dw_return, float* db_return, float* dw_state, float* db_state,
                    float* dw_action, float* db_action, float* dtable, const EmbedShape& s);

}  // namespace dt
