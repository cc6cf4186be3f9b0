// Input gradient of the 3x3 max pool with padding 1 (padding never wins), stride s, NHWC
// float32: each output pixel's gradient goes to the first tap (row-major) of its window that
// holds the window's maximum, as XLA's select-and-scatter does on ties. Work items are
// (image, channel block) pairs, so windows that overlap between output pixels never write
// to the same place from two threads. (The XLA form, the fallback in cpu_ops, writes one
// padded array per tap and adds them up.)
#include <algorithm>
#include <cstdint>

#include "common.h"

namespace ffjax {

ffi::Error MaxPool3x3GradImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x,
                              ffi::Buffer<ffi::F32> y, ffi::Buffer<ffi::F32> g,
                              ffi::ResultBuffer<ffi::F32> dx, int64_t stride) {
  auto xd = x.dimensions();
  auto yd = y.dimensions();
  if (xd.size() != 4 || yd.size() != 4 || !SameDims(g.dimensions(), yd) ||
      !SameDims(dx->dimensions(), xd) || yd[0] != xd[0] || yd[3] != xd[3] || stride < 1 ||
      yd[1] != (xd[1] - 1) / stride + 1 || yd[2] != (xd[2] - 1) / stride + 1)
    return ffi::Error::InvalidArgument(
        "ffjax_max_pool_3x3_grad: x [N,H,W,C], y and g [N,Ho,Wo,C], dx [N,H,W,C] and the "
        "stride disagree");
  const int64_t N = xd[0], H = xd[1], W = xd[2], C = xd[3], Ho = yd[1], Wo = yd[2];
  const float* xp = x.typed_data();
  const float* yp = y.typed_data();
  const float* gp = g.typed_data();
  float* out = dx->typed_data();
  constexpr int64_t kBlock = 4 * V;  // channels per work item
  const int64_t blocks = CeilDiv(C, kBlock);
  ParallelFor(pool, N * blocks, [&](int64_t, int64_t it) {
    const int64_t n = it / blocks, c0 = (it % blocks) * kBlock;
    const int64_t c1 = std::min(C, c0 + kBlock);
    for (int64_t p = n * H * W; p < (n + 1) * H * W; ++p)
      std::memset(out + p * C + c0, 0, (c1 - c0) * sizeof(float));
    for (int64_t i = 0; i < Ho; ++i) {
      const int64_t r0 = std::max<int64_t>(0, i * stride - 1), r1 = std::min(H, i * stride + 2);
      for (int64_t j = 0; j < Wo; ++j) {
        const int64_t q0 = std::max<int64_t>(0, j * stride - 1), q1 = std::min(W, j * stride + 2);
        const int64_t o = ((n * Ho + i) * Wo + j) * C;
        for (int64_t c = c0; c < c1; c += V) {
          const int m = static_cast<int>(std::min<int64_t>(V, c1 - c));
          const vf yv = LoadN(yp + o + c, m), gv = LoadN(gp + o + c, m);
          vi taken = vi{};  // lanes whose maximum an earlier tap held
          for (int64_t r = r0; r < r1; ++r) {
            for (int64_t q = q0; q < q1; ++q) {
              const int64_t p = ((n * H + r) * W + q) * C + c;
              const vi hit = (LoadN(xp + p, m) == yv) & ~taken;
              taken |= hit;
              StoreN(out + p, LoadN(out + p, m) + (hit ? gv : vf{}), m);
            }
          }
        }
      }
    }
  });
  return ffi::Error::Success();
}

}  // namespace ffjax

XLA_FFI_DEFINE_HANDLER_SYMBOL(FfjaxMaxPool3x3Grad, ffjax::MaxPool3x3GradImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("stride"));
