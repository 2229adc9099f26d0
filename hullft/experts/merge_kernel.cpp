// method=merge's merge on a CPU with AVX-512, fused: out = weight + left @ right, one pass over the weight.
//
// The product has a small inner size k (the merged experts' ranks, 8-32), so it costs as much as reading the
// weight once; torch computes it into a scratch block and casts that in a second pass. Here each tile of 4 rows x
// 64 columns keeps its sums in registers over k, adds the weight's tile and writes it (rounded to bf16 where
// `out` is bf16, with streaming stores: the buffer is not read first), while the 4 rows below are prefetched, so
// the pass over the weight overlaps the products. The sums run in the same order as MKL's sgemm (over t, fused
// multiply-adds, then the weight added), so the merged weights are the same as torch's path on the CPUs measured.
#include <torch/extension.h>
#include <immintrin.h>

#include <cstdint>
#include <cstring>

namespace {
typedef float vec __attribute__((vector_size(64)));  // 16 floats, one AVX-512 register
constexpr int64_t V = 16, NV = 4, CB = V * NV, RB = 4;  // a tile: RB rows x CB columns, NV registers a row

inline vec load(const float* p) { vec v; std::memcpy(&v, p, sizeof(v)); return v; }

inline uint16_t to_bf16(float x) {  // round to nearest even, any NaN to 0xFFFF: torch's vectorised cast
  uint32_t bits;
  std::memcpy(&bits, &x, 4);
  if ((bits & 0x7FFFFFFFu) > 0x7F800000u) return 0xFFFF;
  return uint16_t((bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16);
}

inline __m256i to_bf16(__m512 x) {  // the same rule, 16 lanes
  const __m512i b = _mm512_castps_si512(x);
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(b, 16), _mm512_set1_epi32(1));
  __m512i r = _mm512_srli_epi32(_mm512_add_epi32(_mm512_add_epi32(b, _mm512_set1_epi32(0x7FFF)), lsb), 16);
  const __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(b, _mm512_set1_epi32(0x7FFFFFFF)),
                                                _mm512_set1_epi32(0x7F800000));
  return _mm512_cvtepi32_epi16(_mm512_mask_mov_epi32(r, nan, _mm512_set1_epi32(0xFFFF)));
}

// `weight` and `out` may be the same memory (a merge in place): each tile reads its weights before writing them.
template <int64_t R, typename Out>
inline void tile(const float* w, const float* __restrict l, const float* __restrict r, Out* out, int64_t cols,
                 int64_t k, int64_t j0, const float* below, int64_t below_rows, bool stream) {
  for (int64_t i = 0; i < below_rows; ++i)
    for (int64_t j = 0; j < CB; j += V) __builtin_prefetch(below + i * cols + j0 + j, 0, 0);
  vec sums[R][NV];
  for (int64_t i = 0; i < R; ++i)
    for (int64_t q = 0; q < NV; ++q) sums[i][q] = vec{};
  for (int64_t t = 0; t < k; ++t) {
    vec right[NV];
    for (int64_t q = 0; q < NV; ++q) right[q] = load(r + t * cols + j0 + q * V);
    for (int64_t i = 0; i < R; ++i) {
      const float c = l[i * k + t];
      for (int64_t q = 0; q < NV; ++q) sums[i][q] += c * right[q];
    }
  }
  for (int64_t i = 0; i < R; ++i)
    for (int64_t q = 0; q < NV; ++q) {
      const int64_t at = i * cols + j0 + q * V;
      __m512 s;
      std::memcpy(&s, &sums[i][q], sizeof(s));
      s = _mm512_add_ps(_mm512_loadu_ps(w + at), s);
      if constexpr (std::is_same_v<Out, uint16_t>) {
        __m256i* p = reinterpret_cast<__m256i*>(out + at);
        if (stream) _mm256_stream_si256(p, to_bf16(s)); else _mm256_storeu_si256(p, to_bf16(s));
      } else {
        _mm512_storeu_ps(out + at, s);
      }
    }
}

template <typename Out>
void merge(const float* w, const float* l, const float* r, Out* out, int64_t rows, int64_t cols, int64_t k) {
  const int64_t whole = cols - cols % CB;
  const bool stream = std::is_same_v<Out, uint16_t> && reinterpret_cast<uintptr_t>(out) % 32 == 0 && cols % 16 == 0;
  int64_t i0 = 0;
  for (; i0 + RB <= rows; i0 += RB) {
    const int64_t below = std::min(RB, rows - i0 - RB);
    for (int64_t j0 = 0; j0 < whole; j0 += CB)
      tile<RB>(w + i0 * cols, l + i0 * k, r, out + i0 * cols, cols, k, j0, w + (i0 + RB) * cols, below, stream);
  }
  for (; i0 < rows; ++i0)
    for (int64_t j0 = 0; j0 < whole; j0 += CB)
      tile<1>(w + i0 * cols, l + i0 * k, r, out + i0 * cols, cols, k, j0, nullptr, 0, stream);
  for (int64_t i = 0; i < rows; ++i)  // the columns past the last whole tile
    for (int64_t j = whole; j < cols; ++j) {
      float s = 0.f;
      for (int64_t t = 0; t < k; ++t) s = std::fma(l[i * k + t], r[t * cols + j], s);
      const float sum = w[i * cols + j] + s;
      if constexpr (std::is_same_v<Out, uint16_t>) out[i * cols + j] = to_bf16(sum); else out[i * cols + j] = sum;
    }
  if (stream) _mm_sfence();
}
}  // namespace

void merge_into(torch::Tensor weight, torch::Tensor left, torch::Tensor right, torch::Tensor out) {
  TORCH_CHECK(weight.dim() == 2 && weight.scalar_type() == torch::kFloat32 && weight.is_contiguous(), "weight");
  TORCH_CHECK(left.scalar_type() == torch::kFloat32 && left.is_contiguous() && left.size(0) == weight.size(0), "left");
  TORCH_CHECK(right.scalar_type() == torch::kFloat32 && right.is_contiguous() && right.size(0) == left.size(1) &&
              right.size(1) == weight.size(1), "right");
  TORCH_CHECK(out.sizes() == weight.sizes() && out.is_contiguous(), "out");
  const int64_t rows = weight.size(0), cols = weight.size(1), k = left.size(1);
  const float *w = weight.data_ptr<float>(), *l = left.data_ptr<float>(), *r = right.data_ptr<float>();
  if (out.scalar_type() == torch::kBFloat16)
    merge(w, l, r, static_cast<uint16_t*>(out.data_ptr()), rows, cols, k);
  else if (out.scalar_type() == torch::kFloat32)
    merge(w, l, r, out.data_ptr<float>(), rows, cols, k);
  else
    TORCH_CHECK(false, "out must be float32 or bfloat16");
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) { m.def("merge_into", &merge_into); }
