// method=merge's merge on an x86 CPU with AVX2 and FMA, or AVX-512, fused: out = weight + left @ right, one pass
// over the weight.
//
// The product has a small inner size k (the merged experts' ranks, 8-32), so it costs as much as reading the
// weight once; torch computes it into a scratch block and casts that in a second pass. Here each tile of RB rows x
// 4 registers of columns keeps its sums in registers over k, adds the weight's tile and writes it (rounded to bf16
// where `out` is bf16), with streaming stores where `out` is a buffer of its own (it is not read first), while the
// rows below are prefetched, so the pass over the weight overlaps the products. The sums run in the same order as
// MKL's sgemm (over t, fused multiply-adds, then the weight added), so the merged weights are the same as torch's
// path on the CPUs measured. Written with GCC's vector types: one source for both widths, built at -march=native.
#include <torch/extension.h>
#include <immintrin.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

namespace {
#if defined(__AVX512F__)
constexpr int64_t BYTES = 64, RB = 4;  // 32 registers: a tile of 4 rows x 4 registers of sums
#elif defined(__AVX2__) && defined(__FMA__)
constexpr int64_t BYTES = 32, RB = 2;  // 16 registers: 2 rows x 4 of sums, 4 of the right factor
#else
#error "the fused merge needs AVX2 and FMA (kernel.py builds it only where the CPU has them)"
#endif
typedef float vec __attribute__((vector_size(BYTES)));
typedef uint32_t bits_vec __attribute__((vector_size(BYTES)));
typedef uint16_t half_vec __attribute__((vector_size(BYTES / 2)));
constexpr int64_t V = BYTES / 4, NV = 4, CB = V * NV;  // a tile: RB rows x CB columns
constexpr int64_t LINE = 64 / sizeof(float);  // floats a cache line: one prefetch each
constexpr int64_t GRAIN = 1 << 16;  // elements a thread takes at least: well above a task's start-up cost

template <typename T> inline T load(const void* p) { T v; std::memcpy(&v, p, sizeof(v)); return v; }
template <typename T> inline void store(void* p, T v) { std::memcpy(p, &v, sizeof(v)); }

inline uint16_t to_bf16(float x) {  // round to nearest even, any NaN to 0xFFFF: torch's vectorised cast
  const uint32_t bits = load<uint32_t>(&x);
  if ((bits & 0x7FFFFFFFu) > 0x7F800000u) return 0xFFFF;
  return uint16_t((bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16);
}

inline half_vec to_bf16(vec x) {  // the same rule, every lane
  const bits_vec b = load<bits_vec>(&x);
  const bits_vec rounded = (b + 0x7FFFu + ((b >> 16) & 1u)) >> 16;
  const bits_vec nan = (bits_vec)((b & 0x7FFFFFFFu) > 0x7F800000u);  // all ones where NaN
  return __builtin_convertvector((rounded & ~nan) | (nan & 0xFFFFu), half_vec);
}

template <typename T> inline void stream(T* p, const T& v) {  // p aligned to sizeof(T), checked by the caller
  if constexpr (sizeof(T) == 64) _mm512_stream_ps(reinterpret_cast<float*>(p), load<__m512>(&v));
  else if constexpr (sizeof(T) == 32) _mm256_stream_si256(reinterpret_cast<__m256i*>(p), load<__m256i>(&v));
  else _mm_stream_si128(reinterpret_cast<__m128i*>(p), load<__m128i>(&v));
}

// `weight` and `out` may be the same memory (a merge in place): each tile reads its weights before writing them.
template <int64_t R, typename Out>
inline void tile(const float* w, const float* __restrict l, const float* __restrict r, Out* out, int64_t cols,
                 int64_t k, int64_t j0, const float* below, int64_t below_rows, bool streaming) {
  for (int64_t i = 0; i < below_rows; ++i)
    for (int64_t j = 0; j < CB; j += LINE) __builtin_prefetch(below + i * cols + j0 + j, 0, 0);
  vec sums[R][NV];
  for (int64_t i = 0; i < R; ++i)
    for (int64_t q = 0; q < NV; ++q) sums[i][q] = vec{};
  for (int64_t t = 0; t < k; ++t) {
    vec right[NV];
    for (int64_t q = 0; q < NV; ++q) right[q] = load<vec>(r + t * cols + j0 + q * V);
    for (int64_t i = 0; i < R; ++i) {
      const float c = l[i * k + t];
      for (int64_t q = 0; q < NV; ++q) sums[i][q] += c * right[q];
    }
  }
  for (int64_t i = 0; i < R; ++i)
    for (int64_t q = 0; q < NV; ++q) {
      const int64_t at = i * cols + j0 + q * V;
      const vec sum = load<vec>(w + at) + sums[i][q];
      if constexpr (std::is_same_v<Out, uint16_t>) {
        const half_vec halves = to_bf16(sum);
        if (streaming) stream(reinterpret_cast<half_vec*>(out + at), halves); else store(out + at, halves);
      } else {
        if (streaming) stream(reinterpret_cast<vec*>(out + at), sum); else store(out + at, sum);
      }
    }
}

// Rows [begin, end) of the merge: whole tiles, then single rows, then the columns past the last whole tile.
template <typename Out>
void merge_rows(const float* w, const float* l, const float* r, Out* out, int64_t rows, int64_t cols, int64_t k,
                int64_t begin, int64_t end, bool streaming) {
  const int64_t whole = cols - cols % CB;
  int64_t i0 = begin;
  for (; i0 + RB <= end; i0 += RB) {
    const int64_t below = std::min(RB, rows - i0 - RB);
    for (int64_t j0 = 0; j0 < whole; j0 += CB)
      tile<RB>(w + i0 * cols, l + i0 * k, r, out + i0 * cols, cols, k, j0, w + (i0 + RB) * cols, below, streaming);
  }
  for (; i0 < end; ++i0)
    for (int64_t j0 = 0; j0 < whole; j0 += CB)
      tile<1>(w + i0 * cols, l + i0 * k, r, out + i0 * cols, cols, k, j0, nullptr, 0, streaming);
  for (int64_t i = begin; i < end; ++i)
    for (int64_t j = whole; j < cols; ++j) {
      float s = 0.f;
      for (int64_t t = 0; t < k; ++t) s = std::fma(l[i * k + t], r[t * cols + j], s);
      const float sum = w[i * cols + j] + s;
      if constexpr (std::is_same_v<Out, uint16_t>) out[i * cols + j] = to_bf16(sum); else out[i * cols + j] = sum;
    }
  if (streaming) _mm_sfence();  // this thread's streaming stores seen before the caller reads `out`
}

// Over torch's intra-op threads, as the scoring and torch's addmm are: the pass is bound by memory, and one core
// cannot draw what several can. Each row is computed alike by whichever thread takes it, so the result does not
// depend on the number of threads.
template <typename Out>
void merge(const float* w, const float* l, const float* r, Out* out, int64_t rows, int64_t cols, int64_t k) {
  // Streaming stores need every store aligned to its size, and `out` not read first (not the weight itself).
  const int64_t store_bytes = std::is_same_v<Out, uint16_t> ? BYTES / 2 : BYTES;
  const bool streaming = static_cast<const void*>(out) != static_cast<const void*>(w) &&
                         reinterpret_cast<uintptr_t>(out) % store_bytes == 0 &&
                         (cols * int64_t(sizeof(Out))) % store_bytes == 0;
  const int64_t tiles = (rows + RB - 1) / RB, grain = std::max<int64_t>(1, GRAIN / (RB * cols));
  at::parallel_for(0, tiles, grain, [&](int64_t begin, int64_t end) {
    merge_rows(w, l, r, out, rows, cols, k, begin * RB, std::min(end * RB, rows), streaming);
  });
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
