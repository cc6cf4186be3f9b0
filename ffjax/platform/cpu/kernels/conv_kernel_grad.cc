// Kernel gradient of a 2D convolution on CPU, as an XLA FFI custom call.
//
//   dw[ky, kx, c, o] = sum_{n, h, w} x[n, h*sh + ky - pt, w*sw + kx - pl, c] * dy[n, h, w, o]
//
// x is NHWC [N, H, W, C], dy NHWC [N, Ho, Wo, O], dw HWIO [KH, KW, C, O], float32; zero
// padding (pt, pl) is implicit (out-of-image rows and columns are skipped), dilation 1, no
// feature groups. For one tap and one output row the pixels of x it reads are evenly spaced
// (stride sw*C floats) and the pixels of dy contiguous, so each tap is a sum of small
// A^T B products with K = pixels. They run in register tiles (MB x NB vectors of
// accumulators, A broadcast, B loaded), vectorised over the wider of C and O. Work items
// are blocks of output rows of one image (~512 pixels), handed out to XLA's intra-op thread
// pool and the calling thread; they are summed in chunks whose order does not depend on
// thread timing (DeterministicSum), so the result is bit-reproducible. Why and how fast: docs/performance.md.
#include <algorithm>
#include <cstdint>
#include <vector>

#include "common.h"

namespace ffjax {
namespace {

// A panel: rows (h) of K pixels (k); pixel (h, k) starts at base + h * row + k * step.
struct Panel {
  const float* base;
  int64_t step;
  int64_t row;
};

// acc[i, j] += sum_{h < nrows, k < K} a(h, k)[i] * b(h, k)[j] for i < MB, j < NB * V;
// acc rows at stride ldc.
template <int MB, int NB>
void Tile(Panel a, Panel b, int64_t nrows, int64_t K, float* __restrict acc, int64_t ldc) {
  vf c[MB][NB];
  for (int i = 0; i < MB; ++i)
    for (int j = 0; j < NB; ++j) c[i][j] = LoadU(acc + i * ldc + j * V);
  for (int64_t h = 0; h < nrows; ++h) {
    const float* __restrict ah = a.base + h * a.row;
    const float* __restrict bh = b.base + h * b.row;
    for (int64_t k = 0; k < K; ++k) {
      vf bv[NB];
      for (int j = 0; j < NB; ++j) bv[j] = LoadU(bh + k * b.step + j * V);
      const float* ak = ah + k * a.step;
      for (int i = 0; i < MB; ++i) {
        const float s = ak[i];
        for (int j = 0; j < NB; ++j) c[i][j] += s * bv[j];
      }
    }
  }
  for (int i = 0; i < MB; ++i)
    for (int j = 0; j < NB; ++j) StoreU(acc + i * ldc + j * V, c[i][j]);
}

// The last n < V columns: Tile<MB, 1> with partial loads and stores.
template <int MB>
void TailTile(Panel a, Panel b, int64_t nrows, int64_t K, float* __restrict acc, int64_t ldc,
              int n) {
  vf c[MB];
  for (int i = 0; i < MB; ++i) c[i] = LoadN(acc + i * ldc, n);
  for (int64_t h = 0; h < nrows; ++h) {
    const float* __restrict ah = a.base + h * a.row;
    const float* __restrict bh = b.base + h * b.row;
    for (int64_t k = 0; k < K; ++k) {
      const vf bv = LoadN(bh + k * b.step, n);
      const float* ak = ah + k * a.step;
      for (int i = 0; i < MB; ++i) c[i] += ak[i] * bv;
    }
  }
  for (int i = 0; i < MB; ++i) StoreN(acc + i * ldc, c[i], n);
}

// Run-time mb -> Tile<mb, NB> (or TailTile<mb>) for mb in 1..MB.
template <int NB, int MB>
void TileN(int mb, Panel a, Panel b, int64_t nrows, int64_t K, float* acc, int64_t ldc) {
  if constexpr (MB > 0) {
    if (mb == MB) return Tile<MB, NB>(a, b, nrows, K, acc, ldc);
    return TileN<NB, MB - 1>(mb, a, b, nrows, K, acc, ldc);
  }
}
template <int MB>
void TailTileN(int mb, Panel a, Panel b, int64_t nrows, int64_t K, float* acc, int64_t ldc,
               int n) {
  if constexpr (MB > 0) {
    if (mb == MB) return TailTile<MB>(a, b, nrows, K, acc, ldc, n);
    return TailTileN<MB - 1>(mb, a, b, nrows, K, acc, ldc, n);
  }
}

// acc[M, N] += sum over the panel pixels of a[:M]^T b[:N], M split into equal row blocks.
template <int NB>
void GemmTN(Panel a, Panel b, int64_t nrows, int64_t K, int64_t M, int64_t N, float* acc) {
  constexpr int kMaxRows = R / NB;
  const int64_t nfull = N - N % (NB * V);
  const int64_t blocks = (M + kMaxRows - 1) / kMaxRows;
  for (int64_t j = 0; j < nfull; j += NB * V) {
    int64_t i = 0;
    for (int64_t blk = 0; blk < blocks; ++blk) {
      const int64_t mb = (M - i) / (blocks - blk);
      TileN<NB, kMaxRows>(static_cast<int>(mb), Panel{a.base + i, a.step, a.row},
                          Panel{b.base + j, b.step, b.row}, nrows, K, acc + i * N + j, N);
      i += mb;
    }
  }
  // Columns left over: whole vectors, then a partial one.
  const int64_t tblocks = (M + R - 1) / R;
  for (int64_t j = nfull; j < N; j += V) {
    const int n = static_cast<int>(std::min<int64_t>(V, N - j));
    int64_t i = 0;
    for (int64_t blk = 0; blk < tblocks; ++blk) {
      const int64_t mb = (M - i) / (tblocks - blk);
      TailTileN<R>(static_cast<int>(mb), Panel{a.base + i, a.step, a.row},
                   Panel{b.base + j, b.step, b.row}, nrows, K, acc + i * N + j, N, n);
      i += mb;
    }
  }
}

void Gemm(Panel a, Panel b, int64_t nrows, int64_t K, int64_t M, int64_t N, float* acc) {
  if (N >= 4 * V)
    GemmTN<4>(a, b, nrows, K, M, N, acc);
  else if (N >= 2 * V)
    GemmTN<2>(a, b, nrows, K, M, N, acc);
  else
    GemmTN<1>(a, b, nrows, K, M, N, acc);
}

}  // namespace

ffi::Error ConvKernelGradImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x,
                              ffi::Buffer<ffi::F32> dy, ffi::ResultBuffer<ffi::F32> dw,
                              int64_t stride_h, int64_t stride_w, int64_t pad_top,
                              int64_t pad_left) {
  auto xd = x.dimensions();
  auto gd = dy.dimensions();
  auto wd = dw->dimensions();
  if (xd.size() != 4 || gd.size() != 4 || wd.size() != 4)
    return ffi::Error::InvalidArgument("ffjax_conv_kernel_grad: operands must be rank 4");
  const int64_t N = xd[0], H = xd[1], W = xd[2], C = xd[3];
  const int64_t Ho = gd[1], Wo = gd[2], O = gd[3];
  const int64_t KH = wd[0], KW = wd[1];
  if (gd[0] != N || wd[2] != C || wd[3] != O || stride_h < 1 || stride_w < 1)
    return ffi::Error::InvalidArgument(
        "ffjax_conv_kernel_grad: x [N,H,W,C], dy [N,Ho,Wo,O] and dw [KH,KW,C,O] disagree");
  const float* xp = x.typed_data();
  const float* gp = dy.typed_data();
  float* out = dw->typed_data();
  const int64_t taps = KH * KW, tapsize = C * O;
  if (N == 0 || Ho == 0 || Wo == 0 || tapsize == 0) {
    std::memset(out, 0, taps * tapsize * sizeof(float));
    return ffi::Error::Success();
  }

  // Vectorise over the wider of C and O; partial sums are [tap, C, O] or [tap, O, C].
  const bool over_c = C > O;
  const int64_t rb = std::clamp<int64_t>(512 / Wo, 1, Ho);  // output rows per work item
  const int64_t blocks_per_image = CeilDiv(Ho, rb);
  const int64_t items = N * blocks_per_image;
  // Partial sums in a fixed order (bit-reproducible), then into dw's [tap, C, O] layout.
  std::vector<float> transposed(over_c ? taps * tapsize : 0);
  float* sum = over_c ? transposed.data() : out;
  DeterministicSum(pool, items, taps * tapsize, sum, [&](float* acc, int64_t it) {
    const int64_t n = it / blocks_per_image;
    const int64_t hb0 = (it % blocks_per_image) * rb;
    const int64_t hb1 = std::min(Ho, hb0 + rb);
    for (int64_t ky = 0; ky < KH; ++ky) {
      // Output rows whose input row h * stride_h + ky - pad_top lies inside the image.
      const int64_t h0 = std::max(hb0, CeilDiv(pad_top - ky, stride_h));
      const int64_t h1 = std::min(hb1, CeilDiv(H + pad_top - ky, stride_h));
      if (h1 <= h0) continue;
      for (int64_t kx = 0; kx < KW; ++kx) {
        const int64_t w0 = std::max<int64_t>(0, CeilDiv(pad_left - kx, stride_w));
        const int64_t w1 = std::min(Wo, CeilDiv(W + pad_left - kx, stride_w));
        if (w1 <= w0) continue;
        const Panel a{xp + ((n * H + h0 * stride_h + ky - pad_top) * W +
                            (w0 * stride_w + kx - pad_left)) * C,
                      stride_w * C, stride_h * W * C};
        const Panel b{gp + ((n * Ho + h0) * Wo + w0) * O, O, Wo * O};
        float* t = acc + (ky * KW + kx) * tapsize;
        if (over_c)
          Gemm(b, a, h1 - h0, w1 - w0, O, C, t);
        else
          Gemm(a, b, h1 - h0, w1 - w0, C, O, t);
      }
    }
  });
  if (over_c) {
    for (int64_t t = 0; t < taps; ++t)
      for (int64_t c = 0; c < C; ++c)
        for (int64_t o = 0; o < O; ++o)
          out[t * tapsize + c * O + o] = transposed[t * tapsize + o * C + c];
  }
  return ffi::Error::Success();
}

}  // namespace ffjax

XLA_FFI_DEFINE_HANDLER_SYMBOL(FfjaxConvKernelGrad, ffjax::ConvKernelGradImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("stride_h")
                                  .Attr<int64_t>("stride_w")
                                  .Attr<int64_t>("pad_top")
                                  .Attr<int64_t>("pad_left"));
