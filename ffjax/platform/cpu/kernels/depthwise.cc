// Depthwise 2D convolution on CPU (XLA FFI custom calls): stride 1, zero padding
// (KH/2, KW/2) ('same' for odd kernels), NHWC float32, one filter per channel.
//
//   y[n, h, w, c]  = sum_{ky, kx} x[n, h + ky - KH/2, w + kx - KW/2, c] * k[ky, kx, c]
//   dk[ky, kx, c]  = sum_{n, h, w} x[n, h + ky - KH/2, w + kx - KW/2, c] * g[n, h, w, c]
//
// The input gradient is the forward pass of g with the kernel flipped (the caller flips it).
// Both stream over channels in vectors, one output row per work item (the kernel gradient
// summed in a fixed order: DeterministicSum); XLA's fused shifted-slice form reads and
// writes the same arrays several times (docs/performance.md).
#include <algorithm>
#include <cstdint>
#include <vector>

#include "common.h"

namespace ffjax {

ffi::Error DepthwiseConvImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x,
                             ffi::Buffer<ffi::F32> k, ffi::ResultBuffer<ffi::F32> y) {
  auto xd = x.dimensions();
  auto kd = k.dimensions();
  if (xd.size() != 4 || kd.size() != 3 || kd[2] != xd[3] || !SameDims(y->dimensions(), xd))
    return ffi::Error::InvalidArgument(
        "ffjax_depthwise_conv: x [N,H,W,C], k [KH,KW,C] and y [N,H,W,C] disagree");
  const int64_t N = xd[0], H = xd[1], W = xd[2], C = xd[3];
  const int64_t KH = kd[0], KW = kd[1], ph = KH / 2, pw = KW / 2;
  const float* xp = x.typed_data();
  const float* kp = k.typed_data();
  float* yp = y->typed_data();
  ParallelFor(pool, N * H, [&](int64_t, int64_t row) {
    const int64_t n = row / H, h = row % H;
    const int64_t ky0 = std::max<int64_t>(0, ph - h), ky1 = std::min(KH, H + ph - h);
    float* out = yp + row * W * C;
    for (int64_t w = 0; w < W; ++w) {
      const int64_t kx0 = std::max<int64_t>(0, pw - w), kx1 = std::min(KW, W + pw - w);
      for (int64_t c = 0; c < C; c += V) {
        const int m = static_cast<int>(std::min<int64_t>(V, C - c));
        vf acc = vf{};
        for (int64_t ky = ky0; ky < ky1; ++ky) {
          const float* xr = xp + ((n * H + h + ky - ph) * W + (w - pw)) * C + c;
          const float* kr = kp + ky * KW * C + c;
          if (m == V) {
            for (int64_t kx = kx0; kx < kx1; ++kx) acc += LoadU(xr + kx * C) * LoadU(kr + kx * C);
          } else {
            for (int64_t kx = kx0; kx < kx1; ++kx) acc += LoadN(xr + kx * C, m) * LoadN(kr + kx * C, m);
          }
        }
        if (m == V)
          StoreU(out + w * C + c, acc);
        else
          StoreN(out + w * C + c, acc, m);
      }
    }
  });
  return ffi::Error::Success();
}

ffi::Error DepthwiseKernelGradImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x,
                                   ffi::Buffer<ffi::F32> g, ffi::ResultBuffer<ffi::F32> dk) {
  auto xd = x.dimensions();
  auto kd = dk->dimensions();
  if (xd.size() != 4 || kd.size() != 3 || kd[2] != xd[3] || !SameDims(g.dimensions(), xd))
    return ffi::Error::InvalidArgument(
        "ffjax_depthwise_kernel_grad: x [N,H,W,C], g [N,H,W,C] and dk [KH,KW,C] disagree");
  const int64_t N = xd[0], H = xd[1], W = xd[2], C = xd[3];
  const int64_t KH = kd[0], KW = kd[1], ph = KH / 2, pw = KW / 2;
  const int64_t size = KH * KW * C;
  const float* xp = x.typed_data();
  const float* gp = g.typed_data();
  float* out = dk->typed_data();
  DeterministicSum(pool, N * H, size, out, [&](float* acc, int64_t row) {
    const int64_t n = row / H, h = row % H;
    const int64_t ky0 = std::max<int64_t>(0, ph - h), ky1 = std::min(KH, H + ph - h);
    const float* grow = gp + row * W * C;
    for (int64_t w = 0; w < W; ++w) {
      const int64_t kx0 = std::max<int64_t>(0, pw - w), kx1 = std::min(KW, W + pw - w);
      for (int64_t c = 0; c < C; c += V) {
        const int m = static_cast<int>(std::min<int64_t>(V, C - c));
        const vf gv = m == V ? LoadU(grow + w * C + c) : LoadN(grow + w * C + c, m);
        for (int64_t ky = ky0; ky < ky1; ++ky) {
          const float* xr = xp + ((n * H + h + ky - ph) * W + (w - pw)) * C + c;
          float* ar = acc + ky * KW * C + c;
          if (m == V) {
            for (int64_t kx = kx0; kx < kx1; ++kx)
              StoreU(ar + kx * C, LoadU(ar + kx * C) + LoadU(xr + kx * C) * gv);
          } else {
            for (int64_t kx = kx0; kx < kx1; ++kx)
              StoreN(ar + kx * C, LoadN(ar + kx * C, m) + LoadN(xr + kx * C, m) * gv, m);
          }
        }
      }
    }
  });
  return ffi::Error::Success();
}

}  // namespace ffjax

XLA_FFI_DEFINE_HANDLER_SYMBOL(FfjaxDepthwiseConv, ffjax::DepthwiseConvImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(FfjaxDepthwiseKernelGrad, ffjax::DepthwiseKernelGradImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());
