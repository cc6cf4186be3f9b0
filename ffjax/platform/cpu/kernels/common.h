// Shared by the ffjax CPU kernels: the vector type and work sharing over XLA's thread pool.
#ifndef FFJAX_CPU_KERNELS_COMMON_H_
#define FFJAX_CPU_KERNELS_COMMON_H_

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace ffjax {

// Vector width V (floats) and the number of accumulator registers R for the target.
#if defined(__AVX512F__)
constexpr int V = 16;
constexpr int R = 24;
#elif defined(__AVX__)
constexpr int V = 8;
constexpr int R = 12;
#else
constexpr int V = 4;
constexpr int R = 12;
#endif
typedef float vf __attribute__((vector_size(V * 4)));
typedef int32_t vi __attribute__((vector_size(V * 4)));  // lane masks of vf comparisons

inline vf LoadU(const float* p) {
  vf v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline void StoreU(float* p, vf v) { std::memcpy(p, &v, sizeof v); }
// The first n <= V floats; the rest of the vector is zero. (The n == V branch keeps whole
// vectors off the variable-length memcpy.)
inline vf LoadN(const float* p, int n) {
  if (n == V) return LoadU(p);
  vf v = vf{};
  std::memcpy(&v, p, n * 4);
  return v;
}
inline void StoreN(float* p, vf v, int n) {
  if (n == V) return StoreU(p, v);
  std::memcpy(p, &v, n * 4);
}

template <typename A, typename B>
bool SameDims(const A& a, const B& b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin());
}

inline int64_t CeilDiv(int64_t a, int64_t b) { return a >= 0 ? (a + b - 1) / b : -((-a) / b); }

// Runs fn(participant, item) for item in [0, items) on the calling thread and up to
// pool.num_threads() tasks of XLA's intra-op pool, handing items out through an atomic
// counter; returns when every item is done. Participant ids are < Participants(pool, items)
// and each runs on one thread at a time (for per-thread partial sums). The calling thread
// never waits for a task that has not started, so a busy pool cannot deadlock it; the
// shared state outlives the call for tasks that start late (they find no items).
inline int64_t Participants(const ffi::ThreadPool& pool, int64_t items) {
  return std::max<int64_t>(1, std::min<int64_t>(pool.num_threads() + 1, items));
}

template <typename F>
void ParallelFor(ffi::ThreadPool& pool, int64_t items, F fn) {
  if (items <= 0) return;
  struct State {
    std::atomic<int64_t> next{0}, done{0}, joined{0};
    std::mutex mu;
    std::condition_variable cv;
  };
  auto st = std::make_shared<State>();
  const int64_t participants = Participants(pool, items);
  auto work = [st, items, participants, fn]() {
    const int64_t id = st->joined.fetch_add(1);
    if (id >= participants) return;  // defensive: exactly `participants` callers join
    int64_t mine = 0;
    for (int64_t it; (it = st->next.fetch_add(1)) < items; ++mine) fn(id, it);
    if (mine > 0 && st->done.fetch_add(mine) + mine == items) {
      std::lock_guard<std::mutex> lock(st->mu);
      st->cv.notify_all();
    }
  };
  for (int64_t t = 1; t < participants; ++t) pool.Schedule(std::function<void()>(work));
  work();
  std::unique_lock<std::mutex> lock(st->mu);
  st->cv.wait(lock, [&] { return st->done.load() == items; });
}

// Sums fn(acc, item)'s contributions over items into sum[0, size), in an order fixed by
// items and size alone (not by thread timing or count), so results are bit-reproducible:
// items are split into contiguous chunks, each chunk is summed in item order into its own
// buffer on one thread, and the caller adds the buffers in chunk order. Up to 32 chunks,
// fewer where the buffers would pass 16 MiB.
template <typename F>
void DeterministicSum(ffi::ThreadPool& pool, int64_t items, int64_t size, float* sum, F fn) {
  std::memset(sum, 0, size * sizeof(float));
  if (items <= 0 || size <= 0) return;
  const int64_t by_memory = std::max<int64_t>(1, (int64_t{1} << 22) / size);
  const int64_t chunks = std::min({items, int64_t{32}, by_memory});
  std::vector<std::vector<float>> partial(chunks);
  ParallelFor(pool, chunks, [&](int64_t, int64_t c) {
    partial[c].assign(size, 0.f);
    for (int64_t it = c * items / chunks; it < (c + 1) * items / chunks; ++it)
      fn(partial[c].data(), it);
  });
  for (const auto& p : partial)
    for (int64_t i = 0; i < size; ++i) sum[i] += p[i];
}

}  // namespace ffjax

#endif  // FFJAX_CPU_KERNELS_COMMON_H_
