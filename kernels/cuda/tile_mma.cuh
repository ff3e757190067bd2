// Building blocks of the tensor-core attention tiles (kernels/cuda/nsa_decode.cu,
// kernels/cuda/nsa_prefill.cu): asynchronous row copies into padded shared memory and the bf16
// mma.sync m16n8k16 with its fragment helpers.
//
// Fragment layout (PTX ISA, m16n8k16): lane = 4 g + t. A: rows g and g + 8, columns 2t, 2t + 1
// and 2t + 8, 2t + 9; B: k = 2t, 2t + 1 and 2t + 8, 2t + 9, column g; C: rows g and g + 8,
// columns 2t and 2t + 1.
#pragma once

#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_pipeline.h>

namespace nsa::cuda::tile {

// Shared-memory rows are padded by 8 bf16 (16 bytes): with a stride of dim + 8 the 8 rows a
// fragment load (or one ldmatrix phase) touches start 4 banks apart, so they hit 32 banks.
constexpr int kPad = 8;
constexpr int kTileRows = 64;  // rows of a K/V tile: 64 summaries, or one page of tokens
constexpr int kRowTiles = kTileRows / 8;  // 8-row tiles of S

// One asynchronous 16-byte copy from global memory into shared memory (cp.async.cg: cached in L2
// only), committed and waited for with __pipeline_commit / __pipeline_wait_prior. No "memory"
// clobber (as CUTLASS's): nothing reads the destination before the wait and the barrier after it,
// which are the compiler's fences.
__device__ __forceinline__ void CpAsync16(uint32_t dst, const void* src) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(dst), "l"(src));
}

__device__ __forceinline__ uint32_t SmemAddr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// Copies `rows` rows of `dim` bf16 (dim % 8 == 0) from `row_ptr(r)` into shared memory (row stride
// dim + kPad) with asynchronous 16-byte copies spread over the whole block: every load is in
// flight at once, so a tile costs one memory latency, not one per row. Thread x copies vector
// x % (dim / 8) of rows x / (dim / 8) + k dr, dr = blockDim.x / (dim / 8) (threads past
// dr (dim / 8) copy nothing: none for dims 64 and 128): a copy is the row's pointer, the copy and
// two increments, with no division and no (row, vector) bookkeeping. The decode kernel's form: its
// copy loops were a quarter of its instructions at 7b 32 x 64k (ncu, thirteenth session), 21 SASS
// instructions a copy in StridedCopyRows' form; this one made 7b 1 x 64k 1 us and 32 x 64k 1-2%
// faster, e2e decode steps 2-5%. The prefill kernels were 1-3% slower with it (bench/NOTES.md),
// so they keep the strided forms below. The caller commits the copies (__pipeline_commit), waits
// for them (__pipeline_wait_prior) and synchronises the block.
template <typename RowPtr>
__device__ __forceinline__ void LoadRows(__nv_bfloat16* dst, int rows, int dim, RowPtr row_ptr) {
  const int vectors = dim / 8;
  int r = threadIdx.x / vectors;
  const int v = threadIdx.x - r * vectors, dr = blockDim.x / vectors;
  if (r >= dr) return;
  uint32_t d = SmemAddr(dst + r * (dim + kPad) + 8 * v);
  const uint32_t step = static_cast<uint32_t>(dr * (dim + kPad) * sizeof(__nv_bfloat16));
  for (; r < rows; r += dr, d += step) CpAsync16(d, row_ptr(r) + 8 * v);
}

// `rows` rows stored one after another from src (a page's run of tokens, a query's heads).
__device__ __forceinline__ void LoadContiguousRows(__nv_bfloat16* dst, int rows, int dim, const __nv_bfloat16* src) {
  LoadRows(dst, rows, dim, [src, dim](int r) { return src + static_cast<int64_t>(r) * dim; });
}

// Row r at base + row_off[r] (element offsets, one a row, in shared memory).
__device__ __forceinline__ void LoadGatheredRows(__nv_bfloat16* dst, int rows, int dim, const __nv_bfloat16* base,
                                                 const int64_t* row_off) {
  LoadRows(dst, rows, dim, [base, row_off](int r) { return base + row_off[r]; });
}

// The prefill kernels' copies (the form before the thirteenth session): copy i = r (dim / 8) + v of
// the block's copies is thread i % blockDim.x's, which steps (r, v) by a fixed increment. Measured
// faster than LoadRows' form in every prefill kernel but the window branch's (7b 64k selected 29.8
// against 30.7 ms, paper 64k compressed 27.9 against 29.0): the reason is not known.
template <typename Src>
__device__ __forceinline__ void StridedCopyRows(__nv_bfloat16* dst, int rows, int dim, Src src) {
  static_assert(kPad == 8, "dst + 8 (i + r) assumes rows padded by 8 bf16");
  const int vectors = dim / 8, total = rows * vectors;
  const int dr = blockDim.x / vectors, dv = blockDim.x - dr * vectors;
  int i = threadIdx.x, r = i / vectors, v = i - r * vectors;
  for (; i < total; i += blockDim.x) {
    __pipeline_memcpy_async(dst + 8 * (i + r), src(r, v, i), 16);
    r += dr, v += dv;
    if (v >= vectors) v -= vectors, ++r;
  }
}

// Rows at row_ptr(r), the copies spread like StridedCopyRows' ((row, vector) stepped by blockDim).
template <typename RowPtr>
__device__ __forceinline__ void StridedLoadRows(__nv_bfloat16* dst, int rows, int dim, RowPtr row_ptr) {
  const int vectors = dim / 8;
  int r = threadIdx.x / vectors, v = threadIdx.x % vectors;
  const int dr = blockDim.x / vectors, dv = blockDim.x % vectors;
  for (; r < rows; r += dr) {
    __pipeline_memcpy_async(dst + r * (dim + kPad) + v * 8, row_ptr(r) + v * 8, 16);
    v += dv;
    if (v >= vectors) v -= vectors, ++r;
  }
}

// StridedCopyRows of rows stored one after another from src.
__device__ __forceinline__ void StridedLoadContiguousRows(__nv_bfloat16* dst, int rows, int dim,
                                                          const __nv_bfloat16* src) {
  StridedCopyRows(dst, rows, dim, [src](int, int, int i) { return src + 8 * i; });
}

// Rows [rows, kTileRows) of a tile are zeroed: their P is 0, and 0 times garbage could be NaN.
// 16 bytes a store (a row is dim + kPad bf16, a multiple of 8).
__device__ __forceinline__ void ZeroRows(__nv_bfloat16* tile, int rows, int dim) {
  uint4* t = reinterpret_cast<uint4*>(tile);
  const int vectors = (dim + kPad) / 8;
  for (int i = rows * vectors + threadIdx.x; i < kTileRows * vectors; i += blockDim.x) t[i] = make_uint4(0, 0, 0, 0);
}

__device__ __forceinline__ void Mma(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0,
                                    uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

__device__ __forceinline__ uint32_t Pack(float lo, float hi) {
  __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&v);
}

// Four 8x8 matrices of bf16 from shared memory (ldmatrix .x4): lane i gives the address of row
// i % 8 of matrix i / 8 (16-byte aligned); r[m] receives matrix m's row lane / 4, columns
// 2 (lane % 4) and 2 (lane % 4) + 1: an A or B fragment of the m16n8k16 MMA, one instruction for
// what takes eight 32-bit loads. kTrans (.trans): r[m] receives matrix m's rows 2 (lane % 4) and
// 2 (lane % 4) + 1 of column lane / 4 instead: the B fragment of P V from V stored a key a row.
template <bool kTrans = false>
__device__ __forceinline__ void LdMatrixX4(uint32_t (&r)[4], const __nv_bfloat16* row) {
  const uint32_t addr = static_cast<uint32_t>(__cvta_generic_to_shared(row));
  if constexpr (kTrans) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr)
                 : "memory");
  } else {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr)
                 : "memory");
  }
}

// Two 8x8 matrices, transposed (ldmatrix .x2.trans): lanes 0-15 give the row addresses (lane i
// row i % 8 of matrix i / 8; the other lanes' are ignored); r[m] as in LdMatrixX4<true>.
__device__ __forceinline__ void LdMatrixX2Trans(uint32_t (&r)[2], const __nv_bfloat16* row) {
  const uint32_t addr = static_cast<uint32_t>(__cvta_generic_to_shared(row));
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0,%1}, [%2];\n"
               : "=r"(r[0]), "=r"(r[1])
               : "r"(addr)
               : "memory");
}

// S = Q K^T of a warp's 16 query rows (q: [16][hd + kPad]) against 8 NT keys (ks:
// [8 NT][hd + kPad]; a whole tile of 64 by default), unscaled: s[j][c] is row g (+ 8 for
// c >= 2), key 8 j + 2 t + (c & 1), where lane = 4 g + t.
template <int NT = kRowTiles>  // 8-key tiles (even): 64 keys by default
__device__ __forceinline__ void QkTile(const __nv_bfloat16* q, const __nv_bfloat16* ks, int hd, float (&s)[NT][4]) {
  // Fragments through ldmatrix (lane i addresses row i % 8 of matrix i / 8): Q's a0-a3 from
  // (rows 0-7 | 8-15) x (dims kk | kk + 8); K's b0, b1 of key tiles j and j + 1 from
  // (keys 8 j | 8 (j + 1)) x (dims kk | kk + 8).
  const int lane = threadIdx.x % 32, r8 = lane % 8, m = lane / 8;
  const int qstride = hd + kPad;
#pragma unroll
  for (int j = 0; j < NT; ++j) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.f;
  for (int kk = 0; kk < hd; kk += 16) {
    uint32_t a[4];
    LdMatrixX4(a, q + (r8 + 8 * (m & 1)) * qstride + kk + 8 * (m >> 1));
#pragma unroll
    for (int j = 0; j < NT; j += 2) {
      uint32_t b[4];
      LdMatrixX4(b, ks + (8 * (j + (m >> 1)) + r8) * qstride + kk + 8 * (m & 1));
      Mma(s[j], a[0], a[1], a[2], a[3], b[0], b[1]);
      Mma(s[j + 1], a[0], a[1], a[2], a[3], b[2], b[3]);
    }
  }
}

}  // namespace nsa::cuda::tile
