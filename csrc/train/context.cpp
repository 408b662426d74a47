#include "train/context.h"

#include <algorithm>
#include <memory>
#include <new>

#include "common/check.h"

namespace dt {

namespace {

int checked_threads(int threads) {
  DT_CHECK(threads >= 1, "threads must be >= 1, got ", threads);
  return threads;
}

}  // namespace

TrainContext::TrainContext(const std::string& isa, int threads)
    : mm_(kernels_select(isa)),
      k_(train_kernels_select(isa)),
      team_(checked_threads(threads)),
      cursors_(std::make_unique<Cursor[]>(threads)) {}

float* TrainContext::buffer(Slot slot, size_t n) {
  Buffer& b = buffers_[slot];
  if (b.size < n) {
    const size_t bytes = (std::max<size_t>(n, 1) * sizeof(float) + 63) / 64 * 64;
    float* p = static_cast<float*>(std::aligned_alloc(64, bytes));
    if (!p) throw std::bad_alloc();
    b.data.reset(p);
    b.size = n;
  }
  return b.data.get();
}

}  // namespace dt
