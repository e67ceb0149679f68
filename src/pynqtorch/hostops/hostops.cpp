// Fused host-side passes of the GEMM engine: symmetric int8 quantization and dequantization, small exact GEMMs,
// and the steps of recurrent layers (product and LSTM/GRU cell).
//
// Each function does in one or two passes over memory what takes several torch ops, with the same
// IEEE float32 arithmetic as the torch path in pynqtorch.engine.quant (bit-identical results):
//   amax  = max |x| over a line (row, column or whole tensor)
//   scale = amax > 0 ? amax / qmax : 1,  inv = 1 / scale
//   q     = round_half_even(x * inv)     (|x * inv| <= qmax, so no clamp)
//   out   = ((float) acc * sa) * sb      (dequantization)
// max |x| is taken on the bit patterns with the sign cleared: for IEEE floats their unsigned order is
// the order of magnitudes, and Inf/NaN patterns exceed every finite one, so one integer max reduction
// (which vectorizes without fast-math) gives both the amax and the presence of a non-finite value.
// Rounding adds 1.5 * 2**23, which rounds half to even in the default rounding mode for |y| < 2**22,
// and reads the integer from the sum's mantissa. Compile without -ffast-math and with -ffp-contract=off.
// With OpenMP (-fopenmp) passes over at least kParallel elements split their rows over the threads of the
// OpenMP runtime PyTorch itself uses; every element is computed the same way whatever the split.
#include <cstdint>
#include <cstring>
#include <vector>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#include <immintrin.h>
#endif

// On x86-64 each entry point is also built for AVX2 and picked at load time (the baseline is SSE2,
// which has no 32-bit integer max).
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define PYNQTORCH_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define PYNQTORCH_CLONES
#endif

namespace {

const uint32_t kAbsMask = 0x7fffffffu;
const uint32_t kInfBits = 0x7f800000u;
const uint32_t kTinyBits = 0x0d800000u;  // 2**-100: non-zero amax below it needs float64 scales
const float kRound = 12582912.0f;        // 1.5 * 2**23
const int32_t kRoundBits = 0x4b400000;   // its bit pattern

const int64_t kParallel = int64_t(1) << 15;
const int kRows = 4;  // rows of A per pass over B in pynqtorch_gemm_rows
// Rows per strip (per parallel work item) of pynqtorch_dequantize_into's transposed write.
const int64_t kStripRows = 64;

enum Status { kOk = 0, kNonFinite = 1, kTiny = 2, kNotTaken = 3 };

// The first non-OK status reported by any thread (OpenMP loops cannot return early).
inline void report(int* status, int st) {
  if (st != kOk) {
#pragma omp atomic write
    *status = st;
  }
}

inline uint32_t bits(float x) {
  uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  return u;
}

inline float from_bits(uint32_t u) {
  float x;
  std::memcpy(&x, &u, sizeof x);
  return x;
}

inline uint32_t row_amax_bits(const float* x, int64_t n) {
  uint32_t m = 0;
  for (int64_t i = 0; i < n; ++i) {
    uint32_t u = bits(x[i]) & kAbsMask;
    m = u > m ? u : m;
  }
  return m;
}

inline int check(uint32_t m) {
  if (m >= kInfBits) return kNonFinite;
  if (m != 0 && m < kTinyBits) return kTiny;
  return kOk;
}

inline float scale_of(uint32_t m, float qmax) { return m == 0 ? 1.0f : from_bits(m) / qmax; }

// The guard of engine.quant.Scheme.dequantize on the scales' largest bit patterns (scales are positive):
// (2**31 - 1) * max(sa) * max(1, max(sb)) >= FLT_MAX in float64, evaluated in the same order; also true when a
// scale is not finite.
inline bool overflow_risk(uint32_t sa_max, uint32_t sb_max) {
  if (sa_max >= kInfBits || sb_max >= kInfBits) return true;
  const double sbm = static_cast<double>(from_bits(sb_max));
  return 2147483647.0 * static_cast<double>(from_bits(sa_max)) * (sbm > 1.0 ? sbm : 1.0) >= 3.4028234663852886e38;
}

// round_half_even(y) for |y| < 2**22: y + 1.5 * 2**23 rounds y to an integer held in the low mantissa bits.
inline int8_t round_to_int8(float y) {
  return static_cast<int8_t>(static_cast<int32_t>(bits(y + kRound)) - kRoundBits);
}

inline void quantize_row(const float* x, int64_t n, float inv, int8_t* q) {
  for (int64_t i = 0; i < n; ++i) q[i] = round_to_int8(x[i] * inv);
}

inline void quantize_row_cols(const float* x, int64_t n, const float* inv, int8_t* q) {
  for (int64_t i = 0; i < n; ++i) q[i] = round_to_int8(x[i] * inv[i]);
}

// out[r, j] = sum_t qa[r, t] * b[t, j] for R rows of qa ([R, k]) and b [k, n] (rows ldb >= n floats apart), float32
// holding int8 values, in float32: exact under pynqtorch_gemm_rows's bound. Columns go in blocks of 16 held in vector
// registers (GCC vector extensions: AVX2 registers in the AVX2 clone, pairs of SSE or NEON registers elsewhere), each
// B row read once for all R rows; a last block of fewer than 16 columns too when the rows of b are padded to it (ldb),
// else column by column.
typedef float F8 __attribute__((vector_size(32)));

__attribute__((always_inline)) inline void load8(F8& v, const float* p) { std::memcpy(&v, p, sizeof v); }

template <int R>
__attribute__((always_inline)) inline void product_rows(const float* qa, int64_t k, const float* b, int64_t ldb,
                                                        int64_t n, float* out) {
  int64_t j0 = 0;
  for (; j0 < n && j0 + 16 <= ldb; j0 += 16) {
    F8 lo[R], hi[R];
    for (int r = 0; r < R; ++r) lo[r] = hi[r] = F8{};
    for (int64_t t = 0; t < k; ++t) {
      F8 b0, b1;
      load8(b0, b + t * ldb + j0);
      load8(b1, b + t * ldb + j0 + 8);
      for (int r = 0; r < R; ++r) {
        const F8 q = F8{} + qa[r * k + t];
        lo[r] += q * b0;
        hi[r] += q * b1;
      }
    }
    const int64_t w = n - j0 < 16 ? n - j0 : 16;
    for (int r = 0; r < R; ++r) {
      float part[16];
      std::memcpy(part, &lo[r], sizeof(F8));
      std::memcpy(part + 8, &hi[r], sizeof(F8));
      std::memcpy(out + r * n + j0, part, static_cast<size_t>(w) * sizeof(float));
    }
  }
  for (int r = 0; r < R && j0 < n; ++r) {
    float* dst = out + r * n;
    for (int64_t j = j0; j < n; ++j) dst[j] = 0.0f;
    for (int64_t t = 0; t < k; ++t) {
      const float q = qa[r * k + t];
      for (int64_t j = j0; j < n; ++j) dst[j] += q * b[t * ldb + j];
    }
  }
}

}  // namespace

extern "C" {

// x: float32 [nb, nr, nc], element strides (sb, sr, 1); q: int8 contiguous [nb, nr, nc].
// One scale per row: scale is [nb * nr]. Returns the status of a non-finite or tiny row, if any (then q
// and scale are incomplete).
PYNQTORCH_CLONES int pynqtorch_quantize_rows(const float* x, int64_t nb, int64_t nr, int64_t nc, int64_t sb,
                                             int64_t sr, float qmax, int8_t* q, float* scale) {
  int status = kOk;
#pragma omp parallel for if (nb * nr * nc >= kParallel)
  for (int64_t l = 0; l < nb * nr; ++l) {
    const float* row = x + (l / nr) * sb + (l % nr) * sr;
    uint32_t m = row_amax_bits(row, nc);
    int st = check(m);
    if (st != kOk) {
      report(&status, st);
      continue;
    }
    float s = scale_of(m, qmax);
    scale[l] = s;
    quantize_row(row, nc, 1.0f / s, q + l * nc);
  }
  return status;
}

// As above with one scale per column: scale is [nb * nc]; `work` holds nc uint32 and nc floats.
PYNQTORCH_CLONES int pynqtorch_quantize_cols(const float* x, int64_t nb, int64_t nr, int64_t nc, int64_t sb,
                                             int64_t sr, float qmax, int8_t* q, float* scale, uint32_t* work) {
  uint32_t* m = work;
  float* inv = reinterpret_cast<float*>(work + nc);
  const bool par = nr * nc >= kParallel;
  const int64_t cb = 64;  // columns per parallel block of the max pass
  for (int64_t b = 0; b < nb; ++b) {
    const float* xb = x + b * sb;
#pragma omp parallel for if (par)
    for (int64_t c0 = 0; c0 < nc; c0 += cb) {
      const int64_t c1 = nc - c0 < cb ? nc : c0 + cb;
      for (int64_t c = c0; c < c1; ++c) m[c] = 0;
      for (int64_t r = 0; r < nr; ++r) {
        const float* row = xb + r * sr;
        for (int64_t c = c0; c < c1; ++c) {
          uint32_t u = bits(row[c]) & kAbsMask;
          m[c] = u > m[c] ? u : m[c];
        }
      }
    }
    for (int64_t c = 0; c < nc; ++c) {
      int st = check(m[c]);
      if (st != kOk) return st;
      float s = scale_of(m[c], qmax);
      scale[b * nc + c] = s;
      inv[c] = 1.0f / s;
    }
#pragma omp parallel for if (par)
    for (int64_t r = 0; r < nr; ++r) quantize_row_cols(xb + r * sr, nc, inv, q + (b * nr + r) * nc);
  }
  return kOk;
}

// As above with one scale for the whole tensor (scale points to one float).
PYNQTORCH_CLONES int pynqtorch_quantize_tensor(const float* x, int64_t nb, int64_t nr, int64_t nc, int64_t sb,
                                               int64_t sr, float qmax, int8_t* q, float* scale) {
  const bool par = nb * nr * nc >= kParallel;
  uint32_t m = 0;
#pragma omp parallel for if (par) reduction(max : m)
  for (int64_t l = 0; l < nb * nr; ++l) {
    uint32_t ml = row_amax_bits(x + (l / nr) * sb + (l % nr) * sr, nc);
    m = ml > m ? ml : m;
  }
  int st = check(m);
  if (st != kOk) return st;
  float s = scale_of(m, qmax);
  *scale = s;
  const float inv = 1.0f / s;
#pragma omp parallel for if (par)
  for (int64_t l = 0; l < nb * nr; ++l) quantize_row(x + (l / nr) * sb + (l % nr) * sr, nc, inv, q + l * nc);
  return kOk;
}

namespace {

// The window geometry of pynqtorch_im2col_quantize and the gather of one patch-matrix row.
struct Windows {
  const float* x;
  int64_t n, c, h, w, sn, sh, sw, groups, kh, kw, st_h, st_w, pad_h, pad_w, dil_h, dil_w, oh, ow, sc;
  int64_t cg, k, rows;
  bool runs;  // a kernel row's kw pixels are one run of kw*c floats (adjacent, all channels used)

  explicit Windows(const float* x_, const int64_t* geo)
      : x(x_), n(geo[0]), c(geo[1]), h(geo[2]), w(geo[3]), sn(geo[4]), sh(geo[5]), sw(geo[6]), groups(geo[7]),
        kh(geo[8]), kw(geo[9]), st_h(geo[10]), st_w(geo[11]), pad_h(geo[12]), pad_w(geo[13]), dil_h(geo[14]),
        dil_w(geo[15]), oh(geo[16]), ow(geo[17]), sc(geo[18]), cg(c / groups), k(kh * kw * cg),
        rows(n * oh * ow), runs(groups == 1 && dil_w == 1 && sc == 1 && sw == c) {}

  // Line l = g * rows + (b * oh + oy) * ow + ox of the patch matrices, walked without divisions (`next`).
  struct Pos {
    int64_t g, b, oy, ox;
  };

  Pos at(int64_t l) const { return {l / rows, l % rows / (oh * ow), l % rows / ow % oh, l % ow}; }

  void next(Pos& p) const {
    if (++p.ox < ow) return;
    p.ox = 0;
    if (++p.oy < oh) return;
    p.oy = 0;
    if (++p.b < n) return;
    p.b = 0;
    ++p.g;
  }

  void gather(const Pos& p, float* dst) const {
    const int64_t g = p.g, b = p.b, oy = p.oy, ox = p.ox;
    const int64_t x0 = ox * st_w - pad_w;
    for (int64_t i = 0; i < kh; ++i) {
      const int64_t y = oy * st_h - pad_h + i * dil_h;
      const float* src = x + b * sn + y * sh + g * cg * sc;
      if (y < 0 || y >= h) {
        for (int64_t t = 0; t < kw * cg; ++t) dst[t] = 0.0f;
        dst += kw * cg;
      } else if (runs && x0 >= 0 && x0 + kw <= w) {
        src += x0 * sw;
        for (int64_t t = 0; t < kw * cg; ++t) dst[t] = src[t];
        dst += kw * cg;
      } else if (cg == 1) {  // depthwise: one channel plane
        for (int64_t j = 0; j < kw; ++j) {
          const int64_t xx = x0 + j * dil_w;
          dst[j] = xx < 0 || xx >= w ? 0.0f : src[xx * sw];
        }
        dst += kw;
      } else {
        for (int64_t j = 0; j < kw; ++j, dst += cg) {
          const int64_t xx = x0 + j * dil_w;
          if (xx < 0 || xx >= w) {
            for (int64_t t = 0; t < cg; ++t) dst[t] = 0.0f;
          } else {
            for (int64_t t = 0; t < cg; ++t) dst[t] = src[xx * sw + t * sc];
          }
        }
      }
    }
  }
};

}  // namespace

// Quantized im2col of a 2-D convolution input, without the float patch matrix: x is float32 [N, H, W, C]
// with element strides (sn, sh, sw, sc) (channels-last for plain convolutions, any layout for grouped ones:
// a depthwise window reads one channel plane); geo holds
//   {n, c, h, w, sn, sh, sw, groups, kh, kw, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, oh, ow, sc}.
// The patch matrix of group g has one row per output position (n, oy, ox) and columns (i, j, c) for the
// cg = c / groups channels of the group, zero outside the input. q is int8 [groups, n*oh*ow, kh*kw*cg];
// scale is [groups * n*oh*ow] (per_row) or one float: the same values pynqtorch_quantize_rows/_tensor give
// on the materialized matrix.
PYNQTORCH_CLONES int pynqtorch_im2col_quantize(const float* x, const int64_t* geo, int per_row, float qmax,
                                               int8_t* q, float* scale) {
  const Windows win(x, geo);
  const int64_t k = win.k, rows = win.rows, lines = win.groups * rows;
  // Rows go in chunks: gathered into a buffer, their scales computed together, then quantized in one pass
  // over the chunk with a per-element inverse (rows of a small kernel are too short for vector loops).
  const int64_t chunk = k >= 256 ? 1 : 256 / k + 1;
  const bool par = lines * k >= kParallel / 2;  // gathering makes each element dearer
  float whole = 0.0f;
  if (!per_row) {  // the max over all windows first
    uint32_t all = 0;
#pragma omp parallel if (par)
    {
      std::vector<float> buf(static_cast<size_t>(k));
#pragma omp for reduction(max : all)
      for (int64_t l = 0; l < lines; ++l) {
        win.gather(win.at(l), buf.data());
        uint32_t ml = row_amax_bits(buf.data(), k);
        all = ml > all ? ml : all;
      }
    }
    int st = check(all);
    if (st != kOk) return st;
    whole = scale_of(all, qmax);
    *scale = whole;
  }
  int status = kOk;
#pragma omp parallel if (par)
  {
    std::vector<float> buf(static_cast<size_t>(chunk * k)), inv(static_cast<size_t>(chunk * k));
    std::vector<uint32_t> amax(static_cast<size_t>(chunk));
    std::vector<float> row_scale(static_cast<size_t>(chunk)), row_inv(static_cast<size_t>(chunk));
#pragma omp for
    for (int64_t l0 = 0; l0 < lines; l0 += chunk) {
      const int64_t nl = lines - l0 < chunk ? lines - l0 : chunk;
      Windows::Pos pos = win.at(l0);
      for (int64_t i = 0; i < nl; ++i, win.next(pos)) win.gather(pos, buf.data() + i * k);
      int st = kOk;
      if (per_row) {  // the chunk's scales in loops over its rows (vectorized divisions)
        for (int64_t i = 0; i < nl; ++i) amax[i] = row_amax_bits(buf.data() + i * k, k);
        for (int64_t i = 0; i < nl && st == kOk; ++i) st = check(amax[i]);
        if (st == kOk) {
          for (int64_t i = 0; i < nl; ++i) row_scale[i] = scale_of(amax[i], qmax);
          for (int64_t i = 0; i < nl; ++i) row_inv[i] = 1.0f / row_scale[i];
          for (int64_t i = 0; i < nl; ++i) scale[l0 + i] = row_scale[i];
        }
      } else {
        for (int64_t i = 0; i < nl; ++i) row_inv[i] = 1.0f / whole;
      }
      if (st != kOk) {
        report(&status, st);
        continue;
      }
      for (int64_t i = 0; i < nl; ++i) {
        for (int64_t t = 0; t < k; ++t) inv[i * k + t] = row_inv[i];
      }
      quantize_row_cols(buf.data(), nl * k, inv.data(), q + l0 * k);
    }
  }
  return status;
}

}  // extern "C"

namespace {

// Output elements per vector pass of pynqtorch_depthwise_conv, and its integer vectors (GCC vector extensions,
// like F8).
const int kLanes = 8;
typedef int32_t I8 __attribute__((vector_size(32)));
typedef uint32_t U8 __attribute__((vector_size(32)));

template <bool Bcast>
__attribute__((always_inline)) inline void load_weight(const int32_t* w, I8& v) {
  if (Bcast) {
    v = I8{} + *w;
  } else {
    std::memcpy(&v, w, sizeof v);
  }
}

inline bool any(const I8& v) {
  uint64_t w[4];
  std::memcpy(w, &v, sizeof w);
  return (w[0] | w[1] | w[2] | w[3]) != 0;
}

// Output channels j0 .. j0 + NJ - 1 of conv_lanes's float products: acc_j = sum_t q_t * w[j * wjs + t * ws] over the
// k taps' integers qf (kLanes floats each), w one float per tap broadcast to the lanes (Bcast) or a vector. Every
// product and partial sum is an integer below 2**24 (the caller's bound), so each is exact and the float sums equal
// the int32 sums in any order.
template <int NJ, bool Bcast, class Emit>
__attribute__((always_inline)) inline void product_chunk(const float* qf, int64_t k, const float* w, int64_t ws,
                                                         int64_t wjs, int64_t j0, const F8& sa, const Emit& emit) {
  F8 acc[NJ];
  for (int j = 0; j < NJ; ++j) acc[j] = F8{};
  for (int64_t t = 0; t < k; ++t) {
    F8 q;
    load8(q, qf + t * kLanes);
    for (int j = 0; j < NJ; ++j) {
      F8 wv;
      if (Bcast) {
        const float wb = w[j * wjs + t * ws];
        wv = F8{wb, wb, wb, wb, wb, wb, wb, wb};
      } else {
        load8(wv, w + j * wjs + t * ws);
      }
      acc[j] += q * wv;
    }
  }
  for (int j = 0; j < NJ; ++j) {
    const I8 a = __builtin_convertvector(acc[j], I8);
    emit(j0 + j, a, sa);
  }
}

// One vector pass of pynqtorch_depthwise_conv: kLanes windows quantized per lane exactly as
// pynqtorch_im2col_quantize quantizes a patch row (amax, scale_of, the same reciprocal and rounding), multiplied
// with the weight as exact int32 sums, dequantized and emitted.
// taps(f) calls f(t, x) with the lanes' values x of every kernel tap t inside the input (taps it skips read
// zeros, which change neither the amax nor the sums). w + j * wjs + t * ws holds tap t's weight for output channel
// j of the lanes' groups: one int32 for all lanes (Bcast: taps then visits every tap, and wsum is the sum of the
// first channel's k weights) or a vector. amax, if not null, holds the lanes' max |x| bit patterns (else taps gives
// them). `valid` has all bits set in the lanes that count (the others may hold anything); smax grows to their
// largest scale's bits. emit(j, acc, sa) gets the sums of output channel j and the scales. qbuf (k * kLanes int32)
// holds the integers when a group has several output channels; wf, if not null, holds the weights as floats (same
// layout as w) and the caller guarantees k * (qmax + 1) * 128 <= 2**24: several output channels then take float sums of
// products of integers, all exact (`product_chunk`). Returns the first non-OK status of the valid lanes.
// Inlined with its lambdas: one call per tap would cost more than the tap.
template <bool Bcast, class Taps, class Emit>
__attribute__((always_inline)) inline int conv_lanes(const Taps& taps, int64_t k, const int32_t* w, const float* wf,
                                                     int64_t ws,
                                                     int64_t mult, int64_t wjs, const int32_t* amax, int32_t wsum,
                                                     const I8& valid, float qmax, int32_t* qbuf, I8& smax,
                                                     const Emit& emit) {
  I8 m = I8{};
  if (amax != nullptr) {
    std::memcpy(&m, amax, sizeof m);
  } else {
    taps([&](int64_t, const F8& x) __attribute__((always_inline)) {
      I8 u;
      std::memcpy(&u, &x, sizeof u);
      u &= static_cast<int32_t>(kAbsMask);
      m = u > m ? u : m;
    });
  }
  if (any((m >= static_cast<int32_t>(kInfBits)) & valid)) return kNonFinite;
  if (any((m != 0) & (m < static_cast<int32_t>(kTinyBits)) & valid)) return kTiny;
  F8 am;
  std::memcpy(&am, &m, sizeof am);
  const F8 one = F8{} + 1.0f;
  const F8 sa = m == 0 ? one : am / qmax;
  const F8 inv = one / sa;
  I8 sbits;
  std::memcpy(&sbits, &sa, sizeof sbits);
  sbits &= valid;
  smax = sbits > smax ? sbits : smax;
  auto quant = [&inv](const F8& x, I8& q) {
    const F8 y = x * inv;  // rounded, then the rounding addition: no contraction (-ffp-contract=off)
    const F8 r = y + kRound;
    std::memcpy(&q, &r, sizeof q);
    q -= kRoundBits;
  };
  if (Bcast && mult == 1) {  // sum_t (r_t - R) w_t = sum_t r_t w_t - R sum_t w_t, modulo 2**32: exact in int32
    U8 acc = U8{};
    taps([&](int64_t t, const F8& x) __attribute__((always_inline)) {
      const F8 r = x * inv + kRound;  // two roundings (-ffp-contract=off), as in quant
      U8 rb;
      std::memcpy(&rb, &r, sizeof rb);
      acc += rb * static_cast<uint32_t>(w[t * ws]);
    });
    acc -= static_cast<uint32_t>(kRoundBits) * static_cast<uint32_t>(wsum);
    I8 sacc;
    std::memcpy(&sacc, &acc, sizeof sacc);
    emit(0, sacc, sa);
    return kOk;
  }
  if (mult == 1) {
    I8 acc = I8{};
    taps([&](int64_t t, const F8& x) __attribute__((always_inline)) {
      I8 q, wv;
      quant(x, q);
      load_weight<Bcast>(w + t * ws, wv);
      acc += q * wv;
    });
    emit(0, acc, sa);
    return kOk;
  }
  if (wf != nullptr) {
    float* qf = reinterpret_cast<float*>(qbuf);
    if (!Bcast) std::memset(qf, 0, static_cast<size_t>(k * kLanes) * sizeof(float));  // taps skipped: zeros
    taps([&](int64_t t, const F8& x) __attribute__((always_inline)) {
      const F8 y = x * inv;  // as quant, then r - kRound: the rounded integer, exactly
      const F8 r = y + kRound;
      const F8 qv = r - kRound;
      std::memcpy(qf + t * kLanes, &qv, sizeof qv);
    });
    for (int64_t j0 = 0; j0 < mult; j0 += 8) {  // up to 8 independent sums per pass over the taps
      const float* wj = wf + j0 * wjs;
      switch (mult - j0) {
        case 2: product_chunk<2, Bcast>(qf, k, wj, ws, wjs, j0, sa, emit); break;
        case 3: product_chunk<3, Bcast>(qf, k, wj, ws, wjs, j0, sa, emit); break;
        case 4: product_chunk<4, Bcast>(qf, k, wj, ws, wjs, j0, sa, emit); break;
        case 5: product_chunk<5, Bcast>(qf, k, wj, ws, wjs, j0, sa, emit); break;
        case 6: product_chunk<6, Bcast>(qf, k, wj, ws, wjs, j0, sa, emit); break;
        case 7: product_chunk<7, Bcast>(qf, k, wj, ws, wjs, j0, sa, emit); break;
        case 1: product_chunk<1, Bcast>(qf, k, wj, ws, wjs, j0, sa, emit); break;
        default: product_chunk<8, Bcast>(qf, k, wj, ws, wjs, j0, sa, emit); break;
      }
    }
    return kOk;
  }
  std::memset(qbuf, 0, static_cast<size_t>(k * kLanes) * sizeof(int32_t));
  taps([&](int64_t t, const F8& x) __attribute__((always_inline)) {
    I8 q;
    quant(x, q);
    std::memcpy(qbuf + t * kLanes, &q, sizeof q);
  });
  for (int64_t j = 0; j < mult; ++j) {
    I8 acc = I8{};
    for (int64_t t = 0; t < k; ++t) {
      I8 qv, wv;
      std::memcpy(&qv, qbuf + t * kLanes, sizeof qv);
      load_weight<Bcast>(w + j * wjs + t * ws, wv);
      acc += qv * wv;
    }
    emit(j, acc, sa);
  }
  return kOk;
}

// ((float) acc * sa) * sb (+ bias) per lane, as pynqtorch_dequantize and torch's float32 add compute it, stored to
// dst[v * step] for the first `valid` lanes; sb and bias (null: none) hold kLanes floats.
inline void dequantize_lanes(const I8& acc, const F8& sa, const float* sb, const float* bias, int valid,
                             float* dst, int64_t step) {
  F8 s, r;
  std::memcpy(&s, sb, sizeof s);
  r = (__builtin_convertvector(acc, F8) * sa) * s;
  if (bias != nullptr) {
    F8 b;
    std::memcpy(&b, bias, sizeof b);
    r = r + b;
  }
  if (valid == kLanes && step == 1) {
    std::memcpy(dst, &r, sizeof r);
  } else {
    for (int v = 0; v < valid; ++v) dst[v * step] = r[v];
  }
}

// The kernel taps [lo, hi) of one dimension that fall inside the input for a window starting at `origin`.
inline void tap_range(int64_t origin, int64_t taps, int64_t dil, int64_t size, int64_t& lo, int64_t& hi) {
  lo = origin >= 0 ? 0 : (-origin + dil - 1) / dil;
  hi = origin >= size ? 0 : (size - origin + dil - 1) / dil;
  if (hi > taps) hi = taps;
  if (lo > hi) lo = hi;
}

}  // namespace

extern "C" {

// A depthwise 2-D convolution (one input channel per group, `mult` output channels per group: o = g * mult + j)
// of float32 input x in one pass, without the patch matrix, equal bit for bit to pynqtorch_im2col_quantize (per
// row), the exact integer product with the weight, pynqtorch_dequantize and torch's float32 bias add:
//   out[b, o, oy, ox] = ((float) sum_t q[t] * wq[g, t, j] * sa) * sb[o * sbo] (+ bias[o])
// where q and sa quantize the window of (b, g, oy, ox) (geo and the layout of x as in pynqtorch_im2col_quantize,
// with groups == c). wq: int8 [groups, kh*kw, mult] (the caller guarantees kh*kw * qmax * max|wq| < 2**31); sb: the
// weight's scales at stride sbo (0: one scale); bias: groups*mult floats or null; out: float32 [n, groups*mult,
// oh, ow] at element strides ostride. kLanes outputs share each vector pass: adjacent channels when the channels of
// x are contiguous (channels-last) or the planes small (the lanes read the same pixels, taps outside the input are
// skipped; for contiguous channels the window max comes from per-row maxima), else adjacent output positions of a row
// of one channel plane, read from a zero-padded copy of the plane (adjacent, every other, or gathered pixels).
// Several output channels per group take float sums of the integer products (exact, see product_chunk). Returns the
// status of a non-finite or tiny window (1, 2) or 3 when pynqtorch_dequantize's overflow guard trips on the scales;
// out is then incomplete and the caller takes the general path.
PYNQTORCH_CLONES int pynqtorch_depthwise_conv(const float* x, const int64_t* geo, int64_t mult, float qmax,
                                              const int8_t* wq, const float* sb, int64_t sbo, const float* bias,
                                              float* out, const int64_t* ostride) {
  const Windows win(x, geo);
  const int64_t groups = win.groups, kh = win.kh, kw = win.kw, k = kh * kw, oh = win.oh, ow = win.ow;
  const int64_t on = ostride[0], oc = ostride[1], ohs = ostride[2], ows = ostride[3];
  // Weights as int32 [mult][k][gp], channels padded to whole vectors with zeros.
  const int64_t gp = (groups + kLanes - 1) / kLanes * kLanes;
  std::vector<int32_t> wl(static_cast<size_t>(mult * k * gp), 0);
  for (int64_t g = 0; g < groups; ++g) {
    for (int64_t t = 0; t < k; ++t) {
      for (int64_t j = 0; j < mult; ++j) wl[(j * k + t) * gp + g] = wq[(g * k + t) * mult + j];
    }
  }
  // The same as floats for the float products of several output channels per group: exact while every partial sum
  // stays below 2**24 (|q| <= qmax, |w| <= 128).
  std::vector<float> wlf;
  if (mult > 1 && static_cast<double>(k) * (qmax + 1.0) * 128.0 <= 16777216.0) wlf.assign(wl.begin(), wl.end());
  const float* wfl = wlf.empty() ? nullptr : wlf.data();
  I8 lane_valid[kLanes + 1];  // [v]: all bits set in the first v lanes
  for (int v = 0; v <= kLanes; ++v) {
    for (int l = 0; l < kLanes; ++l) lane_valid[v][l] = l < v ? -1 : 0;
  }
  // Lanes over channels where they are adjacent in memory, or where a plane has too few outputs to fill vectors.
  const int64_t npos = oh * ow;
  const bool by_channel = groups >= kLanes && (win.sc == 1 || npos < 4 * kLanes);
  // Lanes over positions: each plane copied with its zero padding, wide enough for the last block of a row to read
  // kLanes windows (kLanes - 1 more pixels for a stride of 2); the taps' offsets in that copy.
  const int64_t span_w = (kw - 1) * win.dil_w, blocks_w = (ow + kLanes - 1) / kLanes * kLanes;
  const int64_t hp = by_channel ? 0 : win.h + 2 * win.pad_h;
  const int64_t wp_min = (blocks_w - 1) * win.st_w + span_w + 1;
  const int64_t wp = win.w + 2 * win.pad_w > wp_min ? win.w + 2 * win.pad_w : wp_min;
  std::vector<int64_t> poff(static_cast<size_t>(k));
  for (int64_t i = 0; i < kh; ++i) {
    for (int64_t j = 0; j < kw; ++j) poff[i * kw + j] = i * win.dil_h * wp + j * win.dil_w;
  }
  // Tap offsets from a window's origin.
  std::vector<int64_t> toff(static_cast<size_t>(k));
  for (int64_t i = 0; i < kh; ++i) {
    for (int64_t j = 0; j < kw; ++j) toff[i * kw + j] = i * win.dil_h * win.sh + j * win.dil_w * win.sw;
  }
  const int64_t items = by_channel ? win.n * (gp / kLanes) : win.n * groups;
  const bool par = win.n * groups * mult * npos * k >= kParallel / 2;
  int status = kOk;
  uint32_t sa_max = 0;
#pragma omp parallel if (par) reduction(max : sa_max)
  {
    std::vector<float> buf(static_cast<size_t>(k * kLanes));
    std::vector<int32_t> rmax(static_cast<size_t>(by_channel ? win.h * ow * kLanes : 0));
    std::vector<int32_t> qbuf(static_cast<size_t>(k * kLanes));
    std::vector<float> plane(static_cast<size_t>(hp * wp)), rowmax(plane.size());
    // Per output channel j of the item: the lanes' weight scales and biases.
    std::vector<float> sbv(static_cast<size_t>(mult * kLanes)), bv(static_cast<size_t>(mult * kLanes));
    I8 smax = I8{};
#pragma omp for schedule(static)
    for (int64_t it = 0; it < items; ++it) {
      int st = kOk;
      if (by_channel) {  // lanes: channels g0 .. g0 + valid - 1 at one output position
        const int64_t b = it / (gp / kLanes), g0 = it % (gp / kLanes) * kLanes;
        const int valid = static_cast<int>(groups - g0 < kLanes ? groups - g0 : kLanes);
        for (int64_t j = 0; j < mult; ++j) {
          for (int v = 0; v < kLanes; ++v) {
            const int64_t o = (g0 + (v < valid ? v : 0)) * mult + j;
            sbv[j * kLanes + v] = sb[o * sbo];
            bv[j * kLanes + v] = bias != nullptr ? bias[o] : 0.0f;
          }
        }
        const float* xb = x + b * win.sn + g0 * win.sc;
        const bool direct = valid == kLanes && win.sc == 1;
        const int64_t step_w = win.dil_w * win.sw;
        if (direct) {  // max |x| over each input row's part of each output's window, for every output column
          for (int64_t y = 0; y < win.h; ++y) {
            for (int64_t ox = 0; ox < ow; ++ox) {
              const int64_t x0 = ox * win.st_w - win.pad_w;
              int64_t j0, j1;
              tap_range(x0, kw, win.dil_w, win.w, j0, j1);
              const float* src = xb + y * win.sh + (x0 + j0 * win.dil_w) * win.sw;
              I8 m = I8{};
              for (int64_t j = j0; j < j1; ++j, src += step_w) {
                I8 u;
                std::memcpy(&u, src, sizeof u);
                u &= static_cast<int32_t>(kAbsMask);
                m = u > m ? u : m;
              }
              std::memcpy(&rmax[(y * ow + ox) * kLanes], &m, sizeof m);
            }
          }
        }
        for (int64_t oy = 0; oy < oh && st == kOk; ++oy) {
          const int64_t y0 = oy * win.st_h - win.pad_h;
          int64_t i0, i1;
          tap_range(y0, kh, win.dil_h, win.h, i0, i1);
          for (int64_t ox = 0; ox < ow && st == kOk; ++ox) {
            const int64_t x0 = ox * win.st_w - win.pad_w;
            int64_t j0, j1;
            tap_range(x0, kw, win.dil_w, win.w, j0, j1);
            const float* origin = xb + y0 * win.sh + x0 * win.sw;
            // The taps inside the input, read from x (all lanes adjacent) or from buf, gathered there first.
            const float* from = direct ? origin : buf.data();
            const int64_t lane = direct ? 1 : kLanes;
            if (!direct) {
              for (int64_t i = i0; i < i1; ++i) {
                for (int64_t j = j0; j < j1; ++j) {
                  const float* src = origin + toff[i * kw + j];
                  float* dst = buf.data() + (i * kw + j) * kLanes;
                  for (int l = 0; l < kLanes; ++l) dst[l] = l < valid ? src[l * win.sc] : 0.0f;
                }
              }
            }
            auto taps = [&](auto f) __attribute__((always_inline)) {
              for (int64_t i = i0; i < i1; ++i) {
                const float* src = from + (direct ? toff[i * kw + j0] : (i * kw + j0) * lane);
                for (int64_t t = i * kw + j0; t < i * kw + j1; ++t, src += direct ? step_w : lane) {
                  F8 v;
                  std::memcpy(&v, src, sizeof v);
                  f(t, v);
                }
              }
            };
            int32_t am[kLanes];
            if (direct) {
              I8 m = I8{};
              for (int64_t i = i0; i < i1; ++i) {
                I8 u;
                std::memcpy(&u, &rmax[((y0 + i * win.dil_h) * ow + ox) * kLanes], sizeof u);
                m = u > m ? u : m;
              }
              std::memcpy(am, &m, sizeof m);
            }
            float* ob = out + b * on + oy * ohs + ox * ows + g0 * mult * oc;
            st = conv_lanes<false>(taps, k, wl.data() + g0, wfl == nullptr ? nullptr : wfl + g0, gp, mult, k * gp,
                                   direct ? am : nullptr, 0, lane_valid[valid], qmax, qbuf.data(),
                                   smax, [&](int64_t j, const I8& acc, const F8& sa) {
                                     dequantize_lanes(acc, sa, &sbv[j * kLanes],
                                                      bias != nullptr ? &bv[j * kLanes] : nullptr, valid, ob + j * oc,
                                                      mult * oc);
                                   });
          }
        }
      } else {  // lanes: kLanes adjacent output positions of a row of the plane (b, g), read from a zero-padded copy
        const int64_t b = it / groups, g = it % groups;
        for (int64_t j = 0; j < mult; ++j) {
          const int64_t o = g * mult + j;
          for (int v = 0; v < kLanes; ++v) {
            sbv[j * kLanes + v] = sb[o * sbo];
            bv[j * kLanes + v] = bias != nullptr ? bias[o] : 0.0f;
          }
        }
        int32_t wsum = 0;
        for (int64_t t = 0; t < k; ++t) wsum += wl[t * gp + g];
        const float* xp = x + b * win.sn + g * win.sc;
        for (int64_t yy = 0; yy < hp; ++yy) {
          float* dst = plane.data() + yy * wp;
          const int64_t y = yy - win.pad_h;
          if (y < 0 || y >= win.h) {
            std::memset(dst, 0, static_cast<size_t>(wp) * sizeof(float));
            continue;
          }
          std::memset(dst, 0, static_cast<size_t>(win.pad_w) * sizeof(float));
          const float* src = xp + y * win.sh;
          if (win.sw == 1) {
            std::memcpy(dst + win.pad_w, src, static_cast<size_t>(win.w) * sizeof(float));
          } else {
            for (int64_t xx = 0; xx < win.w; ++xx) dst[win.pad_w + xx] = src[xx * win.sw];
          }
          std::memset(dst + win.pad_w + win.w, 0, static_cast<size_t>(wp - win.pad_w - win.w) * sizeof(float));
        }
        const int32_t* wg = wl.data() + g;
        const float* wfg = wfl == nullptr ? nullptr : wfl + g;
        // Row maxima: max |x| bit patterns over the kw pixels of a window's row starting at each column.
        // wp - span_w >= kLanes columns, in vectors (the last one overlapping the one before).
        for (int64_t yy = 0; yy < hp; ++yy) {
          const float* row = plane.data() + yy * wp;
          for (int64_t xx = 0;; xx += kLanes) {
            if (xx + kLanes > wp - span_w) xx = wp - span_w - kLanes;
            I8 m = I8{};
            for (int64_t j = 0; j < kw; ++j) {
              I8 u;
              std::memcpy(&u, row + xx + j * win.dil_w, sizeof u);
              u &= static_cast<int32_t>(kAbsMask);
              m = u > m ? u : m;
            }
            std::memcpy(rowmax.data() + yy * wp + xx, &m, sizeof m);
            if (xx + kLanes >= wp - span_w) break;
          }
        }
        float* op = out + b * on + g * mult * oc;
        // All rows of output blocks with `load` reading the kLanes values of a block's lanes from the copy's pixel of
        // the first lane (or from the row maxima at that place).
        auto rows = [&](const auto& load) __attribute__((always_inline)) {
          for (int64_t oy = 0; oy < oh && st == kOk; ++oy) {
            for (int64_t ox0 = 0; ox0 < ow && st == kOk; ox0 += kLanes) {
              const int valid = static_cast<int>(ow - ox0 < kLanes ? ow - ox0 : kLanes);
              const int64_t origin = oy * win.st_h * wp + ox0 * win.st_w;
              I8 m = I8{};
              for (int64_t i = 0; i < kh; ++i) {
                F8 v;
                load(rowmax.data() + origin + i * win.dil_h * wp, v);
                I8 u;
                std::memcpy(&u, &v, sizeof u);
                m = u > m ? u : m;  // bit patterns without the sign: signed order is theirs
              }
              int32_t am[kLanes];
              std::memcpy(am, &m, sizeof am);
              const float* src = plane.data() + origin;
              float* ob = op + oy * ohs + ox0 * ows;
              auto taps = [&](auto f) __attribute__((always_inline)) {
                for (int64_t t = 0; t < k; ++t) {
                  F8 v;
                  load(src + poff[t], v);
                  f(t, v);
                }
              };
              st = conv_lanes<true>(taps, k, wg, wfg, gp, mult, k * gp, am, wsum, lane_valid[valid], qmax, qbuf.data(),
                                    smax, [&](int64_t j, const I8& acc, const F8& sa) {
                                      dequantize_lanes(acc, sa, &sbv[j * kLanes],
                                                       bias != nullptr ? &bv[j * kLanes] : nullptr, valid,
                                                       ob + j * oc, ows);
                                    });
            }
          }
        };
        if (win.st_w == 1) {  // kLanes adjacent pixels
          rows([](const float* p, F8& v) __attribute__((always_inline)) { std::memcpy(&v, p, sizeof v); });
        } else if (win.st_w == 2) {  // every other pixel: the even ones of two overlapping runs
          rows([](const float* p, F8& v) __attribute__((always_inline)) {
            F8 a, c;
            std::memcpy(&a, p, sizeof a);
            std::memcpy(&c, p + kLanes - 1, sizeof c);
            v = __builtin_shuffle(a, c, I8{0, 2, 4, 6, 9, 11, 13, 15});
          });
        } else {
          const int64_t step = win.st_w;
          rows([step](const float* p, F8& v) __attribute__((always_inline)) {
            for (int l = 0; l < kLanes; ++l) v[l] = p[l * step];
          });
        }
      }
      report(&status, st);
    }
    for (int v = 0; v < kLanes; ++v) {
      const uint32_t u = static_cast<uint32_t>(smax[v]);
      sa_max = u > sa_max ? u : sa_max;
    }
  }
  if (status != kOk) return status;
  uint32_t sb_max = 0;
  for (int64_t o = 0; o < (sbo ? groups * mult : 1); ++o) {
    const uint32_t u = bits(sb[o * sbo]) & kAbsMask;
    sb_max = u > sb_max ? u : sb_max;
  }
  return overflow_risk(sa_max, sb_max) ? 3 : kOk;
}

// pynqtorch_im2col_quantize for a plain convolution (groups == 1) with one scale per patch row, walking one output
// image row (b, oy) at a time with the output positions ox innermost: each (kernel pixel, channel) is one strided
// run of the input across ox, so the window maxima build up vectorized over ox and the int8 values are written
// without gathering float rows first; the input may have any layout (no channels-last copy). Cheaper than the
// row gather when windows are short (few channels, small kernels) or the channels are not contiguous. Same
// arguments (geo[7] must be 1), values, scales and statuses as pynqtorch_im2col_quantize(per_row = 1).
PYNQTORCH_CLONES int pynqtorch_im2col_quantize_runs(const float* x, const int64_t* geo, float qmax, int8_t* q,
                                                    float* scale) {
  const Windows win(x, geo);
  if (win.groups != 1) return kNotTaken;
  const int64_t k = win.k, ow = win.ow, lines = win.n * win.oh;
  const bool pad = win.pad_h != 0 || win.pad_w != 0;
  // The range [lo, hi) of ox whose pixel of kernel column j lies inside the input (others read the zero padding).
  std::vector<int64_t> lo(static_cast<size_t>(win.kw)), hi(static_cast<size_t>(win.kw));
  for (int64_t j = 0; j < win.kw; ++j) {
    const int64_t off = j * win.dil_w - win.pad_w;  // input column of ox = 0
    const int64_t l = off >= 0 ? 0 : (-off + win.st_w - 1) / win.st_w;
    const int64_t h = win.w - 1 - off < 0 ? 0 : (win.w - 1 - off) / win.st_w + 1;
    hi[j] = h < ow ? h : ow;
    lo[j] = l < hi[j] ? l : hi[j];
  }
  const int64_t step = win.st_w * win.sw;
  int status = kOk;
#pragma omp parallel if (lines * ow * k >= kParallel / 2)
  {
    std::vector<uint32_t> amax(static_cast<size_t>(ow));
    std::vector<float> inv(static_cast<size_t>(ow));
#pragma omp for
    for (int64_t line = 0; line < lines; ++line) {
      const int64_t b = line / win.oh, oy = line % win.oh;
      for (int64_t ox = 0; ox < ow; ++ox) amax[ox] = 0;
      for (int64_t i = 0; i < win.kh; ++i) {
        const int64_t y = oy * win.st_h - win.pad_h + i * win.dil_h;
        if (y < 0 || y >= win.h) continue;  // zero padding: |0| adds nothing to a max
        for (int64_t j = 0; j < win.kw; ++j) {
          const float* src = x + b * win.sn + y * win.sh + (j * win.dil_w - win.pad_w) * win.sw;
          for (int64_t ch = 0; ch < win.c; ++ch, src += win.sc) {
            for (int64_t ox = lo[j]; ox < hi[j]; ++ox) {
              const uint32_t u = bits(src[ox * step]) & kAbsMask;
              amax[ox] = u > amax[ox] ? u : amax[ox];
            }
          }
        }
      }
      int st = kOk;
      for (int64_t ox = 0; ox < ow && st == kOk; ++ox) st = check(amax[ox]);
      if (st != kOk) {
        report(&status, st);
        continue;
      }
      float* srow = scale + line * ow;
      for (int64_t ox = 0; ox < ow; ++ox) srow[ox] = scale_of(amax[ox], qmax);
      for (int64_t ox = 0; ox < ow; ++ox) inv[ox] = 1.0f / srow[ox];
      int8_t* qline = q + line * ow * k;
      if (pad) std::memset(qline, 0, static_cast<size_t>(ow * k));
      for (int64_t i = 0; i < win.kh; ++i) {
        const int64_t y = oy * win.st_h - win.pad_h + i * win.dil_h;
        if (y < 0 || y >= win.h) continue;
        for (int64_t j = 0; j < win.kw; ++j) {
          const float* src = x + b * win.sn + y * win.sh + (j * win.dil_w - win.pad_w) * win.sw;
          int8_t* dst = qline + (i * win.kw + j) * win.c;
          for (int64_t ch = 0; ch < win.c; ++ch, src += win.sc, ++dst) {
            for (int64_t ox = lo[j]; ox < hi[j]; ++ox) dst[ox * k] = round_to_int8(src[ox * step] * inv[ox]);
          }
        }
      }
    }
  }
  return status;
}

namespace {

typedef int8_t B32 __attribute__((vector_size(32)));
const B32 kLowBytes{0, 4, 8, 12, 16, 20, 24, 28, 0, 4, 8, 12, 16, 20, 24, 28,
                    0, 4, 8, 12, 16, 20, 24, 28, 0, 4, 8, 12, 16, 20, 24, 28};  // the low byte of each int32 first

// row_amax_bits in vectors of 8 (the last one overlapping the one before) for runs of at least 8 floats.
inline uint32_t run_amax_bits(const float* x, int64_t n) {
  if (n < kLanes) return row_amax_bits(x, n);
  I8 m = I8{};
  for (int64_t t = 0;; t += kLanes) {
    if (t + kLanes > n) t = n - kLanes;
    I8 u;
    std::memcpy(&u, x + t, sizeof u);
    u &= static_cast<int32_t>(kAbsMask);  // sign cleared: signed order is the order of the bit patterns
    m = u > m ? u : m;
    if (t + kLanes >= n) break;
  }
  uint32_t r = 0;
  for (int l = 0; l < kLanes; ++l) r = static_cast<uint32_t>(m[l]) > r ? static_cast<uint32_t>(m[l]) : r;
  return r;
}

// quantize_row in vectors of 8 (the last one overlapping the one before: it writes the same values again) for runs
// of at least 8 floats.
inline void quantize_run(const float* x, int64_t n, float inv, int8_t* q) {
  if (n < kLanes) {
    quantize_row(x, n, inv, q);
    return;
  }
  const F8 iv = F8{} + inv;
  for (int64_t t = 0;; t += kLanes) {
    if (t + kLanes > n) t = n - kLanes;
    F8 v;
    load8(v, x + t);
    const F8 y = v * iv;  // rounded, then the rounding addition (-ffp-contract=off), as round_to_int8
    const F8 r = y + kRound;
    B32 rb;  // the int8 value is the low byte of r's bits (kRoundBits ends in a zero byte)
    std::memcpy(&rb, &r, sizeof rb);
    const B32 qb = __builtin_shuffle(rb, kLowBytes);
    std::memcpy(q + t, &qb, kLanes);
    if (t + kLanes >= n) break;
  }
}

}  // namespace

// pynqtorch_im2col_quantize for a plain convolution (groups == 1) with one scale per patch row, from a zero-padded
// channels-last copy of the input rows each work item needs (a block of output rows: an image where it fits about a
// megabyte and there are at least four images), built here from x in any layout: a kernel row's pixels are then one
// run of kw * c floats (kw runs of c with dilation), read in vectors without bounds checks. The window maxima come
// from per-row maxima (each input row's part of each output column's window, computed once for the kh windows that
// share it), and the int8 values are written run by run. Same arguments (geo[7] must be 1), values, scales and
// statuses as pynqtorch_im2col_quantize(per_row = 1).
PYNQTORCH_CLONES int pynqtorch_im2col_quantize_padded(const float* x, const int64_t* geo, float qmax, int8_t* q,
                                                      float* scale) {
  const Windows win(x, geo);
  if (win.groups != 1) return kNotTaken;
  const int64_t c = win.c, k = win.k, kh = win.kh, kw = win.kw, oh = win.oh, ow = win.ow, w = win.w;
  const int64_t pad_w = win.pad_w, rs = (w + 2 * pad_w) * c;  // floats per padded row
  const int64_t nrun = win.dil_w == 1 ? 1 : kw, len = win.dil_w == 1 ? kw * c : c, rstep = win.dil_w * c;
  const int64_t span_h = (kh - 1) * win.dil_h, xstep = win.st_w * c;
  // Items: blocks of blk output rows, whose bands hold at most about 2**18 floats (or the rows of one window), and
  // at least four blocks per image when there are fewer than four images (work for several threads).
  const int64_t band_rows = (int64_t(1) << 18) / rs > span_h + 1 ? (int64_t(1) << 18) / rs : span_h + 1;
  int64_t blk = (band_rows - span_h - 1) / win.st_h + 1;
  if (win.n < 4 && blk > (oh + 3) / 4) blk = (oh + 3) / 4;
  if (blk > oh) blk = oh;
  const int64_t ipb = (oh + blk - 1) / blk;
  int status = kOk;
#pragma omp parallel if (win.rows * k >= kParallel / 2)
  {
    std::vector<float> band;
    std::vector<uint32_t> rmax, amax(static_cast<size_t>(ow));
    std::vector<float> inv(static_cast<size_t>(ow));
#pragma omp for schedule(static)
    for (int64_t it = 0; it < win.n * ipb; ++it) {
      const int64_t b = it / ipb, oy0 = it % ipb * blk, oy1 = oh - oy0 < blk ? oh : oy0 + blk;
      const int64_t y0 = oy0 * win.st_h, rows = (oy1 - 1) * win.st_h + span_h + 1 - y0;  // padded rows [y0, y0+rows)
      band.resize(static_cast<size_t>(rows * rs));
      rmax.resize(static_cast<size_t>(rows * ow));
      for (int64_t r = 0; r < rows; ++r) {
        float* dst = band.data() + r * rs;
        const int64_t y = y0 + r - win.pad_h;
        if (y < 0 || y >= win.h) {
          std::memset(dst, 0, static_cast<size_t>(rs) * sizeof(float));
        } else {
          std::memset(dst, 0, static_cast<size_t>(pad_w * c) * sizeof(float));
          std::memset(dst + (pad_w + w) * c, 0, static_cast<size_t>(pad_w * c) * sizeof(float));
          const float* src = x + b * win.sn + y * win.sh;
          float* row = dst + pad_w * c;
          if (win.sc == 1 && win.sw == c) {
            std::memcpy(row, src, static_cast<size_t>(w * c) * sizeof(float));
          } else if (win.sw == 1) {  // planes: read each channel's row contiguously
            for (int64_t ch = 0; ch < c; ++ch) {
              for (int64_t xx = 0; xx < w; ++xx) row[xx * c + ch] = src[ch * win.sc + xx];
            }
          } else {
            for (int64_t xx = 0; xx < w; ++xx) {
              for (int64_t ch = 0; ch < c; ++ch) row[xx * c + ch] = src[xx * win.sw + ch * win.sc];
            }
          }
        }
        for (int64_t ox = 0; ox < ow; ++ox) {
          uint32_t m = 0;
          for (int64_t j = 0; j < nrun; ++j) {
            const uint32_t mj = run_amax_bits(dst + ox * xstep + j * rstep, len);
            m = mj > m ? mj : m;
          }
          rmax[r * ow + ox] = m;
        }
      }
      int st = kOk;
      for (int64_t oy = oy0; oy < oy1 && st == kOk; ++oy) {
        const int64_t yb = oy * win.st_h - y0;
        for (int64_t ox = 0; ox < ow; ++ox) amax[ox] = 0;
        for (int64_t i = 0; i < kh; ++i) {
          const uint32_t* rm = rmax.data() + (yb + i * win.dil_h) * ow;
          for (int64_t ox = 0; ox < ow; ++ox) amax[ox] = rm[ox] > amax[ox] ? rm[ox] : amax[ox];
        }
        for (int64_t ox = 0; ox < ow && st == kOk; ++ox) st = check(amax[ox]);
        if (st != kOk) break;
        const int64_t line = b * oh + oy;
        float* srow = scale + line * ow;
        for (int64_t ox = 0; ox < ow; ++ox) srow[ox] = scale_of(amax[ox], qmax);
        for (int64_t ox = 0; ox < ow; ++ox) inv[ox] = 1.0f / srow[ox];
        for (int64_t ox = 0; ox < ow; ++ox) {
          int8_t* dst = q + (line * ow + ox) * k;
          for (int64_t i = 0; i < kh; ++i) {
            const float* src = band.data() + (yb + i * win.dil_h) * rs + ox * xstep;
            for (int64_t j = 0; j < nrun; ++j, dst += len) quantize_run(src + j * rstep, len, inv[ox], dst);
          }
        }
      }
      report(&status, st);
    }
  }
  return status;
}

namespace {

// dst[j * sd + i] = r[i][j] for an 8 x 8 block.
__attribute__((always_inline)) inline void store_transposed8(const F8* r, float* dst, int64_t sd) {
  typedef int32_t Idx __attribute__((vector_size(32)));
  const Idx lo{0, 8, 1, 9, 4, 12, 5, 13}, hi{2, 10, 3, 11, 6, 14, 7, 15};
  const Idx lo2{0, 1, 8, 9, 4, 5, 12, 13}, hi2{2, 3, 10, 11, 6, 7, 14, 15};
  const Idx lo4{0, 1, 2, 3, 8, 9, 10, 11}, hi4{4, 5, 6, 7, 12, 13, 14, 15};
  F8 t[8], u[8];
  for (int i = 0; i < 8; i += 2) {
    t[i] = __builtin_shuffle(r[i], r[i + 1], lo);
    t[i + 1] = __builtin_shuffle(r[i], r[i + 1], hi);
  }
  for (int i = 0; i < 8; i += 4) {
    u[i] = __builtin_shuffle(t[i], t[i + 2], lo2);
    u[i + 1] = __builtin_shuffle(t[i], t[i + 2], hi2);
    u[i + 2] = __builtin_shuffle(t[i + 1], t[i + 3], lo2);
    u[i + 3] = __builtin_shuffle(t[i + 1], t[i + 3], hi2);
  }
  for (int j = 0; j < 4; ++j) {
    const F8 c0 = __builtin_shuffle(u[j], u[j + 4], lo4), c1 = __builtin_shuffle(u[j], u[j + 4], hi4);
    std::memcpy(dst + j * sd, &c0, sizeof c0);
    std::memcpy(dst + (j + 4) * sd, &c1, sizeof c1);
  }
}

// pynqtorch_dequantize_into for rows [i0, i1) of one batch entry whose rows are adjacent in out (out[i + j * soj]):
// 8 x 8 blocks dequantized as rows of acc, then transposed; the edges element by element.
__attribute__((always_inline)) inline void dequantize_transposed(const int32_t* acc, int64_t n, const float* sa,
                                                                 int64_t sai, const float* sb, int64_t sbj,
                                                                 const float* bias, float* out, int64_t soj,
                                                                 int64_t i0, int64_t i1) {
  const int64_t i8 = i0 + (i1 - i0) / 8 * 8, j8 = n / 8 * 8;
  for (int64_t j = 0; j < j8; j += 8) {
    F8 s, bv = F8{};
    for (int l = 0; l < 8; ++l) s[l] = sb[(j + l) * sbj];
    if (bias != nullptr) load8(bv, bias + j);
    for (int64_t i = i0; i < i8; i += 8) {
      F8 r[8];
      for (int l = 0; l < 8; ++l) {
        I8 v;
        std::memcpy(&v, acc + (i + l) * n + j, sizeof v);
        r[l] = (__builtin_convertvector(v, F8) * sa[(i + l) * sai]) * s;
        if (bias != nullptr) r[l] = r[l] + bv;
      }
      store_transposed8(r, out + i + j * soj, soj);
    }
  }
  for (int64_t j = 0; j < n; ++j) {
    const float s = sb[j * sbj];
    for (int64_t i = j < j8 ? i8 : i0; i < i1; ++i) {
      const float v = (static_cast<float>(acc[i * n + j]) * sa[i * sai]) * s;
      out[i + j * soj] = bias == nullptr ? v : v + bias[j];
    }
  }
}

}  // namespace

// out[b, i, j] = ((float) acc[b, i, j] * sa[b * sab + i * sai]) * sb[b * sbb + j * sbj] for a contiguous acc
// [nb, m, n]; a zero stride broadcasts a scale (0-dim scales have every stride 0). out[b, i, j] is at
// out[b * sob + i * soi + j * soj] (any layout, e.g. a convolution's channels-first result, written in transposed
// 8 x 8 blocks when rows are adjacent: soi == 1); if bias is not null,
// bias[j] is added as a separate float32 rounding (torch's add of the dequantized product and the bias).
// Returns 1 without writing when float32 could overflow where the result is finite: the guard of
// engine.quant.Scheme.dequantize, (2**31 - 1) * max(sa) * max(1, max(sb)) >= FLT_MAX in float64, evaluated in the
// same order (also when a scale is not finite: the caller then decides); 0 after writing out.
PYNQTORCH_CLONES int pynqtorch_dequantize_into(const int32_t* acc, int64_t nb, int64_t m, int64_t n, const float* sa,
                                               int64_t sab, int64_t sai, const float* sb, int64_t sbb, int64_t sbj,
                                               const float* bias, float* out, int64_t sob, int64_t soi, int64_t soj) {
  uint32_t sa_max = 0, sb_max = 0;  // scales are positive: the largest bit pattern is the largest value
  for (int64_t b = 0; b < (sab || sbb ? nb : 1); ++b) {
    for (int64_t i = 0; i < (sai ? m : 1); ++i) {
      const uint32_t u = bits(sa[b * sab + i * sai]) & kAbsMask;
      sa_max = u > sa_max ? u : sa_max;
    }
    for (int64_t j = 0; j < (sbj ? n : 1); ++j) {
      const uint32_t u = bits(sb[b * sbb + j * sbj]) & kAbsMask;
      sb_max = u > sb_max ? u : sb_max;
    }
  }
  if (overflow_risk(sa_max, sb_max)) return 1;
  const bool par = nb * m * n >= kParallel;
  if (soi == 1 && soj != 1) {  // rows adjacent in out (a channels-first result): transposed in strips of rows
    const int64_t strips = (m + kStripRows - 1) / kStripRows;
#pragma omp parallel for collapse(2) if (par)
    for (int64_t b = 0; b < nb; ++b) {
      for (int64_t t = 0; t < strips; ++t) {
        const int64_t i0 = t * kStripRows, i1 = m - i0 < kStripRows ? m : i0 + kStripRows;
        dequantize_transposed(acc + b * m * n, n, sa + b * sab, sai, sb + b * sbb, sbj, bias, out + b * sob, soj, i0,
                              i1);
      }
    }
    return 0;
  }
#pragma omp parallel for collapse(2) if (par)
  for (int64_t b = 0; b < nb; ++b) {
    for (int64_t i = 0; i < m; ++i) {  // (b, i) counted, not divided out of a line number: short rows are common
      const float* sbr = sb + b * sbb;
      const float a = sa[b * sab + i * sai];
      const int32_t* src = acc + (b * m + i) * n;
      float* dst = out + b * sob + i * soi;
      if (soj == 1 && bias == nullptr) {  // the plain layout: contiguous rows
        if (sbj == 0) {
          const float s = sbr[0];
          for (int64_t j = 0; j < n; ++j) dst[j] = (static_cast<float>(src[j]) * a) * s;
        } else {
          for (int64_t j = 0; j < n; ++j) dst[j] = (static_cast<float>(src[j]) * a) * sbr[j * sbj];
        }
      } else {
        for (int64_t j = 0; j < n; ++j) {
          const float v = (static_cast<float>(src[j]) * a) * sbr[j * sbj];
          dst[j * soj] = bias == nullptr ? v : v + bias[j];
        }
      }
    }
  }
  return 0;
}

}  // extern "C"

namespace {

#define PYNQTORCH_INLINE __attribute__((always_inline)) inline

// The quantized weight of a rows pass: its int8 values as float32 [k, n] (bf), scales sb (n of them, or one with
// sbj = 0), and optionally, on CPUs with AVX-512 VNNI, the same values packed for vpdpbusd (bv: [ceil(n/16)]
// [ceil(k/4)][16][4] int8, zero beyond k and n) with bsum = 128 * the column sums (int32, padded to ceil(n/16) * 16).
struct RowsWeight {
  const float* bf;  // rows ldb floats apart
  const int8_t* bv;
  const int32_t* bsum;
  int64_t k, n, ldb;
  const float* sb;
  int64_t sbj;
};

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define PYNQTORCH_VNNI 1
#define PYNQTORCH_AVX512VNNI __attribute__((target("avx512f,avx512bw,avx512vnni")))

// The first w (1..16) lanes of v to out: as float32 (exact: |v| <= 2**24 where the rows pass uses it) or int32.
PYNQTORCH_AVX512VNNI inline void store_lanes(float* out, __mmask16 mask, __m512i v) {
  _mm512_mask_storeu_ps(out, mask, _mm512_maskz_cvtepi32_ps(mask, v));
}
PYNQTORCH_AVX512VNNI inline void store_lanes(int32_t* out, __mmask16 mask, __m512i v) {
  _mm512_mask_storeu_epi32(out, mask, v);
}

// out[r, j] (float32 or int32, exact) = sum_t qa[r, t] * b[t, j] for R rows given as ua = qa + 128 (uint8, rows of
// 4 * k4 bytes): vpdpbusd sums (qa + 128) * b, minus 128 * the column sums. Exact: every term and sum is an integer
// below 2**31 (k * 255 * 128 < 2**31, checked by the caller).
template <int R, typename Out>
PYNQTORCH_AVX512VNNI void product_vnni(const uint8_t* ua, int64_t k4, const int8_t* bv, const int32_t* bsum,
                                       int64_t n, Out* out) {
  const int64_t nb = (n + 15) / 16;
  for (int64_t jb = 0; jb < nb; ++jb) {
    __m512i acc[R];
    for (int r = 0; r < R; ++r) acc[r] = _mm512_setzero_si512();
    const int8_t* bp = bv + jb * k4 * 64;
    for (int64_t t = 0; t < k4; ++t) {
      const __m512i bt = _mm512_loadu_si512(bp + t * 64);
      for (int r = 0; r < R; ++r) {
        int32_t a4;
        std::memcpy(&a4, ua + r * k4 * 4 + t * 4, sizeof a4);
        acc[r] = _mm512_dpbusd_epi32(acc[r], _mm512_set1_epi32(a4), bt);
      }
    }
    const __m512i sum = _mm512_loadu_si512(bsum + jb * 16);
    const int64_t w = n - jb * 16 < 16 ? n - jb * 16 : 16;
    const __mmask16 mask = static_cast<__mmask16>((1u << w) - 1);
    for (int r = 0; r < R; ++r) store_lanes(out + r * n + jb * 16, mask, _mm512_sub_epi32(acc[r], sum));
  }
}

// product_vnni for m rows (rows of 4 * k4 bytes in ua), kRows at a time so that each B block read serves them all.
template <typename Out>
void vnni_rows(const uint8_t* ua, int64_t m, int64_t k4, const int8_t* bv, const int32_t* bsum, int64_t n, Out* out) {
  for (int64_t i0 = 0; i0 < m; i0 += kRows) {
    const uint8_t* u = ua + i0 * k4 * 4;
    switch (m - i0 < kRows ? m - i0 : kRows) {
      case 1: product_vnni<1>(u, k4, bv, bsum, n, out + i0 * n); break;
      case 2: product_vnni<2>(u, k4, bv, bsum, n, out + i0 * n); break;
      case 3: product_vnni<3>(u, k4, bv, bsum, n, out + i0 * n); break;
      default: product_vnni<kRows>(u, k4, bv, bsum, n, out + i0 * n); break;
    }
  }
}
#else
#define PYNQTORCH_VNNI 0
#endif

// The product of pynqtorch_gemm_rows for m rows: qa as floats ([m, k]) or, with w.bv, as uint8 qa + 128 (rows of
// 4 * ceil(k / 4) bytes).
PYNQTORCH_INLINE void rows_product(const float* qa, const uint8_t* ua, int64_t m, const RowsWeight& w, float* out) {
  const int64_t k = w.k, n = w.n;
#if PYNQTORCH_VNNI
  if (w.bv != nullptr) {
    vnni_rows(ua, m, (k + 3) / 4, w.bv, w.bsum, n, out);
    return;
  }
#endif
  for (int64_t i0 = 0; i0 < m; i0 += kRows) {  // rows in groups, so that each B row read serves all of them
    const int64_t rows = m - i0 < kRows ? m - i0 : kRows;
    switch (rows) {
      case 1: product_rows<1>(qa + i0 * k, k, w.bf, w.ldb, n, out + i0 * n); break;
      case 2: product_rows<2>(qa + i0 * k, k, w.bf, w.ldb, n, out + i0 * n); break;
      case 3: product_rows<3>(qa + i0 * k, k, w.bf, w.ldb, n, out + i0 * n); break;
      default: product_rows<kRows>(qa + i0 * k, k, w.bf, w.ldb, n, out + i0 * n); break;
    }
  }
  (void)ua;
}

// The body of pynqtorch_gemm_rows (see there); work holds m * (k + 4) + m floats.
PYNQTORCH_INLINE int rows_pass(const float* a, int64_t m, int64_t sr, int per_row, float qmax, const RowsWeight& w,
                     const float* bias, const float* add, int64_t sadd, float* out, float* work) {
  const int64_t k = w.k, n = w.n, k4 = (k + 3) / 4;
  float* sa = work;
  float* qa = work + m;
  uint8_t* ua = reinterpret_cast<uint8_t*>(work + m);
  uint32_t whole = 0;
  if (!per_row) {
    for (int64_t i = 0; i < m; ++i) {
      const uint32_t mi = row_amax_bits(a + i * sr, k);
      whole = mi > whole ? mi : whole;
    }
  }
  uint32_t sa_max = 0, sb_max = 0;
  for (int64_t i = 0; i < m; ++i) {
    const float* row = a + i * sr;
    const uint32_t mi = per_row ? row_amax_bits(row, k) : whole;
    const int st = check(mi);
    if (st != kOk) return st;
    const float s = scale_of(mi, qmax);
    sa[i] = s;
    const uint32_t u = bits(s);
    sa_max = u > sa_max ? u : sa_max;
    const float inv = 1.0f / s;
    if (w.bv != nullptr) {
      uint8_t* dst = ua + i * k4 * 4;
      for (int64_t t = 0; t < k; ++t) dst[t] = static_cast<uint8_t>(round_to_int8(row[t] * inv) + 128);
      for (int64_t t = k; t < k4 * 4; ++t) dst[t] = 128;
    } else {
      for (int64_t t = 0; t < k; ++t) qa[i * k + t] = static_cast<float>(round_to_int8(row[t] * inv));
    }
  }
  for (int64_t j = 0; j < (w.sbj ? n : 1); ++j) {
    const uint32_t u = bits(w.sb[j * w.sbj]) & kAbsMask;
    sb_max = u > sb_max ? u : sb_max;
  }
  if (overflow_risk(sa_max, sb_max)) return 1;
  rows_product(qa, ua, m, w, out);
  for (int64_t i = 0; i < m; ++i) {
    float* dst = out + i * n;
    const float s = sa[i];
    if (w.sbj == 0) {
      const float s1 = w.sb[0];
      for (int64_t j = 0; j < n; ++j) dst[j] = (dst[j] * s) * s1;
    } else {
      for (int64_t j = 0; j < n; ++j) dst[j] = (dst[j] * s) * w.sb[j * w.sbj];
    }
    if (bias != nullptr) {
      for (int64_t j = 0; j < n; ++j) dst[j] = dst[j] + bias[j];
    }
    if (add != nullptr) {
      const float* src = add + i * sadd;
      for (int64_t j = 0; j < n; ++j) dst[j] = dst[j] + src[j];
    }
  }
  return 0;
}

// The recurrent cells' activations, eight lanes at a time, with IEEE float32 operations only (no FMA, no approximate
// reciprocals), so that every build computes the same bits; pynqtorch.ops.cells defines the same arithmetic in torch
// ops. exp: Cody-Waite reduction by ln 2 and Cephes' degree-5 polynomial, argument clamped to [-87, 88] (a NaN stays
// NaN); sigmoid(x) = 1 / (1 + exp(-x)); tanh: Cephes' odd polynomial for |x| < 0.625, else (e - 1) / (e + 1) with
// e = exp(2|x|) and x's sign. Within a few ulp of the exact functions (tested against torch's).
typedef uint32_t U8 __attribute__((vector_size(32)));

// Results through references: no function passes or returns a vector by value (an ABI note on the SSE2 baseline).
PYNQTORCH_INLINE void exp8(F8& y, const F8& arg) {
  const F8 lo = F8{} - 87.0f, hi = F8{} + 88.0f;
  F8 x = arg < lo ? lo : arg;
  x = x > hi ? hi : x;
  const F8 t = x * 1.44269504088896341f + kRound;  // round(x / ln 2) in the low mantissa bits
  const F8 nf = t - kRound;
  const F8 r = (x - nf * 0.693359375f) - nf * -2.12194440e-4f;
  F8 p = F8{} + 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const U8 e = ((U8)t - static_cast<uint32_t>(kRoundBits - 127)) << 23;  // 2**round(x / ln 2)
  y = ((p * (r * r) + r) + 1.0f) * (F8)e;
}

PYNQTORCH_INLINE void sigmoid8(F8& y, const F8& x) {
  F8 e;
  exp8(e, -x);
  y = 1.0f / (1.0f + e);
}

PYNQTORCH_INLINE void tanh8(F8& y, const F8& x) {
  const U8 sign = (U8)x & 0x80000000u;
  const F8 a = (F8)((U8)x & kAbsMask);
  const F8 z = x * x;
  F8 p = F8{} - 5.70498872745e-3f;
  p = p * z + 2.06390887954e-2f;
  p = p * z - 5.37397155531e-2f;
  p = p * z + 1.33314422036e-1f;
  p = p * z - 3.33332819422e-1f;
  const F8 small = (p * z) * x + x;
  F8 e;
  exp8(e, a + a);
  const F8 big = (F8)((U8)((e - 1.0f) / (e + 1.0f)) | sign);
  y = a < 0.625f ? small : big;
}

// Up to eight floats in and out of a vector (the lanes beyond w are zero and not stored).
PYNQTORCH_INLINE void load_part(F8& v, const float* p, int64_t w) {
  if (w == 8) {
    std::memcpy(&v, p, sizeof v);
  } else {
    v = F8{};
    std::memcpy(&v, p, static_cast<size_t>(w) * sizeof(float));
  }
}

PYNQTORCH_INLINE void store_part(float* p, const F8& v, int64_t w) {
  if (w == 8) {
    std::memcpy(p, &v, sizeof v);
  } else {
    std::memcpy(p, &v, static_cast<size_t>(w) * sizeof(float));
  }
}

// One batch row of the LSTM cell: gates [4 * hid] (i, f, g, o), c [hid] updated in place, h_out [hid]:
// c' = sigmoid(f) * c + sigmoid(i) * tanh(g), h' = sigmoid(o) * tanh(c').
PYNQTORCH_INLINE void lstm_cell(const float* gates, int64_t hid, float* c, float* h_out) {
  for (int64_t j = 0; j < hid; j += 8) {
    const int64_t w = hid - j < 8 ? hid - j : 8;
    F8 i, f, g, o, cv, tc;
    load_part(i, gates + j, w);
    load_part(f, gates + hid + j, w);
    load_part(g, gates + 2 * hid + j, w);
    load_part(o, gates + 3 * hid + j, w);
    load_part(cv, c + j, w);
    sigmoid8(i, i);
    sigmoid8(f, f);
    tanh8(g, g);
    sigmoid8(o, o);
    cv = f * cv + i * g;
    store_part(c + j, cv, w);
    tanh8(tc, cv);
    store_part(h_out + j, o * tc, w);
  }
}

// One batch row of the GRU cell: input projection gx and recurrent gh [3 * hid] (r, z, n), previous h [hid]:
// r = sigmoid(xr + hr), z = sigmoid(xz + hz), n = tanh(hn * r + xn), h' = (h - n) * z + n.
PYNQTORCH_INLINE void gru_cell(const float* gx, const float* gh, const float* h, int64_t hid, float* h_out) {
  for (int64_t j = 0; j < hid; j += 8) {
    const int64_t w = hid - j < 8 ? hid - j : 8;
    F8 xr, xz, xn, hr, hz, hn, hv, r, z, nn;
    load_part(xr, gx + j, w);
    load_part(xz, gx + hid + j, w);
    load_part(xn, gx + 2 * hid + j, w);
    load_part(hr, gh + j, w);
    load_part(hz, gh + hid + j, w);
    load_part(hn, gh + 2 * hid + j, w);
    load_part(hv, h + j, w);
    sigmoid8(r, xr + hr);
    sigmoid8(z, xz + hz);
    tanh8(nn, hn * r + xn);
    store_part(h_out + j, (hv - nn) * z + nn, w);
  }
}

}  // namespace

extern "C" {

// One small float GEMM against a quantized weight in one pass, for products the golden model defines as the exact
// integer sum: a (float32 [m, k], rows at element stride sr) is quantized as pynqtorch_quantize_rows (per_row) or
// _tensor give it, multiplied by the quantized weight b (float32 [k, n], contiguous, holding its int8 values) with
// float sums, exact because
// the caller guarantees k * qmax * max|b| <= 2**24 (every partial sum is an integer float32 holds, in any order),
// and dequantized as pynqtorch_dequantize_into gives it (sb: n scales, or one with sbj = 0); b's rows are ldb >= n
// floats apart (padded with zero columns to a multiple of 16, the product's last block of columns is vectors too).
// Then, optionally, out += bias (n floats) and out += add ([m, n], rows at element stride sadd), each a separate
// float32 rounding as torch's add_. Returns the quantization's status, or 1 when the dequantization guard trips
// (nothing useful is written then: the caller takes the general path).
PYNQTORCH_CLONES int pynqtorch_gemm_rows(const float* a, int64_t m, int64_t k, int64_t sr, int per_row, float qmax,
                                         const float* b, int64_t ldb, int64_t n, const float* sb, int64_t sbj,
                                         const float* bias, const float* add, int64_t sadd, float* out) {
  const RowsWeight w{b, nullptr, nullptr, k, n, ldb, sb, sbj};
  std::vector<float> work(static_cast<size_t>(m * k + m));
  return rows_pass(a, m, sr, per_row, qmax, w, bias, add, sadd, out, work.data());
}

// Whether this CPU runs the AVX-512 VNNI product of the recurrent steps (then pynqtorch_rnn_steps takes a packed
// weight, see RowsWeight).
int pynqtorch_rnn_vnni() {
#if PYNQTORCH_VNNI
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vnni");
#else
  return 0;
#endif
}

// The steps of one recurrent layer in one direction, each one rows pass and the cell (lstm_cell / gru_cell): hid =
// k, n = 4 * hid (LSTM, gru = 0) or 3 * hid (GRU). Step s reads its input projection gx + s * sgx ([m, n], b_ih added)
// and the previous hidden state (h0 for s = 0, else step s - 1's output; rows of hid floats), and writes its hidden
// state to out + s * sout ([m, hid]); the strides may be negative (a reverse direction). The LSTM's cell state c
// ([m, hid]) is updated in place. The product: bv/bsum (VNNI, when not null) or bf (rows ldb floats apart), as
// RowsWeight. work holds
// m * (n + k + 5) floats. Returns the number of steps done; when below `steps`, *status is the rows pass's status
// for the next step (nothing of it written: the caller computes it another way and resumes).
PYNQTORCH_CLONES int64_t pynqtorch_rnn_steps(int gru, int64_t steps, int64_t m, int per_row, float qmax,
                                             const float* bf, int64_t ldb, const int8_t* bv, const int32_t* bsum,
                                             int64_t k, int64_t n, const float* sb, int64_t sbj, const float* bias,
                                             const float* gx, int64_t sgx, const float* h0, float* c, float* out,
                                             int64_t sout, float* work, int* status) {
  const RowsWeight w{bf, bv, bsum, k, n, ldb, sb, sbj};
  float* gates = work;
  for (int64_t s = 0; s < steps; ++s) {
    const float* h = s == 0 ? h0 : out + (s - 1) * sout;
    const float* x = gx + s * sgx;
    const int st = rows_pass(h, m, k, per_row, qmax, w, bias, gru ? nullptr : x, n, gates, work + m * n);
    if (st != kOk) {
      *status = st;
      return s;
    }
    float* dst = out + s * sout;
    for (int64_t i = 0; i < m; ++i) {
      if (gru) {
        gru_cell(x + i * n, gates + i * n, h + i * k, k, dst + i * k);
      } else {
        lstm_cell(gates + i * n, k, c + i * k, dst + i * k);
      }
    }
  }
  *status = kOk;
  return steps;
}

// One step's cell alone (targets whose product is not computed here): gates are the LSTM's [m, 4 * hid] (recurrent
// product + b_hh + the input projection; gx unused) or the GRU's recurrent [m, 3 * hid] (+ b_hh) with its input
// projection gx [m, 3 * hid]; h the previous hidden state, c the LSTM's cell state (updated in place), h_out the new
// hidden state; all contiguous.
PYNQTORCH_CLONES void pynqtorch_rnn_cell(int gru, int64_t m, int64_t hid, const float* gx, const float* gates,
                                         const float* h, float* c, float* h_out) {
  const int64_t n = (gru ? 3 : 4) * hid;
  for (int64_t i = 0; i < m; ++i) {
    if (gru) {
      gru_cell(gx + i * n, gates + i * n, h + i * hid, hid, h_out + i * hid);
    } else {
      lstm_cell(gates + i * n, hid, c + i * hid, h_out + i * hid);
    }
  }
}

}  // extern "C"

namespace {

// c = a @ b for int8 a [m, k] and b [k, n] (strides in elements: rows ar / br, columns ac / bc), int32 c (row-major):
// sums of int32 products the compiler vectorizes along n for a row-major b (exact while k * 2**14 < 2**31).
PYNQTORCH_INLINE void stack_product_plain(const int8_t* a, int64_t ar, int64_t ac, const int8_t* b, int64_t br,
                                          int64_t bc, int64_t m, int64_t k, int64_t n, int32_t* c) {
  for (int64_t i = 0; i < m; ++i) {
    int32_t* dst = c + i * n;
    for (int64_t j = 0; j < n; ++j) dst[j] = 0;
    for (int64_t t = 0; t < k; ++t) {
      const int32_t av = a[i * ar + t * ac];
      const int8_t* row = b + t * br;
      if (bc == 1) {
        for (int64_t j = 0; j < n; ++j) dst[j] += av * row[j];
      } else {
        for (int64_t j = 0; j < n; ++j) dst[j] += av * row[j * bc];
      }
    }
  }
}

#if PYNQTORCH_VNNI
// b [k, n] (element strides br, bc) as RowsWeight's bv (zeroed by the caller) and bsum: blocks of 4 rows and 16
// columns of a row-major b are transposed with SSE2 byte and word interleaves, the 4 values of a column-major b's
// column are one 4-byte copy, the rest element by element.
PYNQTORCH_INLINE void pack_vnni(const int8_t* b, int64_t br, int64_t bc, int64_t k, int64_t n, int8_t* bv,
                                int32_t* bsum) {
  const int64_t k4 = (k + 3) / 4, nb = (n + 15) / 16;
  for (int64_t jb = 0; jb < nb; ++jb) {
    const int64_t w = n - jb * 16 < 16 ? n - jb * 16 : 16;
    int8_t* blk = bv + jb * k4 * 64;
    const int8_t* col = b + jb * 16 * bc;
    int64_t t = 0;
    if (bc == 1 && w == 16) {
      for (; t + 4 <= k; t += 4) {
        const __m128i r0 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(col + t * br));
        const __m128i r1 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(col + (t + 1) * br));
        const __m128i r2 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(col + (t + 2) * br));
        const __m128i r3 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(col + (t + 3) * br));
        const __m128i lo01 = _mm_unpacklo_epi8(r0, r1), hi01 = _mm_unpackhi_epi8(r0, r1);
        const __m128i lo23 = _mm_unpacklo_epi8(r2, r3), hi23 = _mm_unpackhi_epi8(r2, r3);
        __m128i* dst = reinterpret_cast<__m128i*>(blk + (t >> 2) * 64);
        _mm_storeu_si128(dst, _mm_unpacklo_epi16(lo01, lo23));
        _mm_storeu_si128(dst + 1, _mm_unpackhi_epi16(lo01, lo23));
        _mm_storeu_si128(dst + 2, _mm_unpacklo_epi16(hi01, hi23));
        _mm_storeu_si128(dst + 3, _mm_unpackhi_epi16(hi01, hi23));
      }
    } else if (br == 1) {
      for (; t + 4 <= k; t += 4) {
        int8_t* dst = blk + (t >> 2) * 64;
        for (int64_t jj = 0; jj < w; ++jj) std::memcpy(dst + jj * 4, col + jj * bc + t, 4);
      }
    }
    for (; t < k; ++t) {
      int8_t* dst = blk + (t >> 2) * 64 + (t & 3);
      for (int64_t jj = 0; jj < w; ++jj) dst[jj * 4] = col[t * br + jj * bc];
    }
  }
  if (bc == 1) {
    for (int64_t t = 0; t < k; ++t) {
      for (int64_t j = 0; j < n; ++j) bsum[j] += b[t * br + j];
    }
  } else {
    for (int64_t j = 0; j < n; ++j) {
      int32_t sum = 0;
      for (int64_t t = 0; t < k; ++t) sum += b[t * br + j * bc];
      bsum[j] = sum;
    }
  }
  for (int64_t j = 0; j < n; ++j) bsum[j] *= 128;
}

// The same product with vpdpbusd (vnni_rows): b packed as RowsWeight's bv and bsum, a as uint8 a + 128 (a ^ 0x80)
// in rows of 4 * k4 bytes padded with 128 (b's padding is 0, so the padding adds nothing).
PYNQTORCH_INLINE void stack_product_vnni(const int8_t* a, int64_t ar, int64_t ac, const int8_t* b, int64_t br,
                                         int64_t bc, int64_t m, int64_t k, int64_t n, int32_t* c,
                                         std::vector<uint8_t>& ua, std::vector<int8_t>& bv,
                                         std::vector<int32_t>& bsum) {
  const int64_t k4 = (k + 3) / 4, nb = (n + 15) / 16;
  ua.resize(m * k4 * 4);
  bv.assign(nb * k4 * 64, 0);
  bsum.assign(nb * 16, 0);
  for (int64_t i = 0; i < m; ++i) {
    uint8_t* dst = ua.data() + i * k4 * 4;
    const int8_t* src = a + i * ar;
    if (ac == 1) {
      for (int64_t t = 0; t < k; ++t) dst[t] = static_cast<uint8_t>(src[t] ^ 0x80);
    } else {
      for (int64_t t = 0; t < k; ++t) dst[t] = static_cast<uint8_t>(src[t * ac] ^ 0x80);
    }
    for (int64_t t = k; t < k4 * 4; ++t) dst[t] = 128;
  }
  pack_vnni(b, br, bc, k, n, bv.data(), bsum.data());
  vnni_rows(ua.data(), m, k4, bv.data(), bsum.data(), n, c);
}
#endif

#if PYNQTORCH_VNNI
// Buffers of one thread of pynqtorch_stack_gemm.
struct StackGemmWork {
  std::vector<uint8_t> ua;
  std::vector<int8_t> qb, bv;
  std::vector<int32_t> bsum, acc;
  std::vector<uint32_t> mx;
  std::vector<float> sa, sb, inv, row;
};

// pynqtorch_stack_gemm for one stack entry: a [m, k] (rows ar apart, contiguous; times `pre` unless it is 1), b [k, n]
// (rows br, columns bc apart, one of them 1), out [m, n] (rows orow apart, contiguous). Returns a Status; out is
// written only with kOk.
PYNQTORCH_INLINE int stack_gemm_entry(const float* a, int64_t ar, float pre, const float* b, int64_t br, int64_t bc,
                                      float* out, int64_t orow, int64_t m, int64_t k, int64_t n, float qmax,
                                      StackGemmWork& w) {
  const int64_t k4 = (k + 3) / 4, nb = (n + 15) / 16;
  w.ua.resize(m * k4 * 4);
  w.qb.resize(k * n);
  w.bv.assign(nb * k4 * 64, 0);
  w.bsum.assign(nb * 16, 0);
  w.acc.resize(m * n);
  w.sa.resize(m);
  w.sb.resize(n);
  w.row.resize(k);
  uint32_t sa_max = 0, sb_max = 0;
  for (int64_t i = 0; i < m; ++i) {  // A per row, as pynqtorch_quantize_rows, stored + 128 for vpdpbusd
    const float* row = a + i * ar;
    if (pre != 1.0f) {  // the row of a * pre, as torch multiplies by a float32 scalar
      for (int64_t t = 0; t < k; ++t) w.row[t] = row[t] * pre;
      row = w.row.data();
    }
    const uint32_t mi = row_amax_bits(row, k);
    const int st = check(mi);
    if (st != kOk) return st;
    const float scale = scale_of(mi, qmax);
    w.sa[i] = scale;
    sa_max = bits(scale) > sa_max ? bits(scale) : sa_max;
    const float inv = 1.0f / scale;
    uint8_t* dst = w.ua.data() + i * k4 * 4;
    for (int64_t t = 0; t < k; ++t) dst[t] = static_cast<uint8_t>(round_to_int8(row[t] * inv) + 128);
    for (int64_t t = k; t < k4 * 4; ++t) dst[t] = 128;
  }
  float* sb = w.sb.data();
  if (br == 1) {  // B's columns contiguous: each quantized as a row (pynqtorch_quantize_rows of the transpose)
    for (int64_t j = 0; j < n; ++j) {
      const float* col = b + j * bc;
      const uint32_t mj = row_amax_bits(col, k);
      const int st = check(mj);
      if (st != kOk) return st;
      sb[j] = scale_of(mj, qmax);
      quantize_row(col, k, 1.0f / sb[j], w.qb.data() + j * k);
    }
    pack_vnni(w.qb.data(), 1, k, k, n, w.bv.data(), w.bsum.data());
  } else {  // B's rows contiguous: per column across rows, as pynqtorch_quantize_cols
    w.inv.resize(n);
    w.mx.assign(n, 0);
    uint32_t* mx = w.mx.data();
    for (int64_t t = 0; t < k; ++t) {
      const float* row = b + t * br;
      for (int64_t j = 0; j < n; ++j) {
        const uint32_t u = bits(row[j]) & kAbsMask;
        mx[j] = u > mx[j] ? u : mx[j];
      }
    }
    for (int64_t j = 0; j < n; ++j) {
      const int st = check(mx[j]);
      if (st != kOk) return st;
      sb[j] = scale_of(mx[j], qmax);
      w.inv[j] = 1.0f / sb[j];
    }
    for (int64_t t = 0; t < k; ++t) quantize_row_cols(b + t * br, n, w.inv.data(), w.qb.data() + t * n);
    pack_vnni(w.qb.data(), n, 1, k, n, w.bv.data(), w.bsum.data());
  }
  for (int64_t j = 0; j < n; ++j) sb_max = bits(sb[j]) > sb_max ? bits(sb[j]) : sb_max;
  if (overflow_risk(sa_max, sb_max)) return kNotTaken;
  vnni_rows(w.ua.data(), m, k4, w.bv.data(), w.bsum.data(), n, w.acc.data());
  for (int64_t i = 0; i < m; ++i) {  // ((float) acc * sa) * sb, as pynqtorch_dequantize
    float* dst = out + i * orow;
    const int32_t* src = w.acc.data() + i * n;
    const float s = w.sa[i];
    for (int64_t j = 0; j < n; ++j) dst[j] = (static_cast<float>(src[j]) * s) * sb[j];
  }
  return kOk;
}
#endif

}  // namespace

extern "C" {

// The exact products of a stack of int8 matrices, as pynqtorch.targets.base.golden_stack defines them while no sum
// can reach the accumulator's limit: c[i] = a[i] @ b[i] (int32, [bt, m, n] row-major) for a [bt, m, k] and
// b [bt, k, n] with element strides sa and sb (batch, row, column); the caller guarantees k * 2**14 < 2**31. With
// `vnni` (pynqtorch_rnn_vnni()) and k * 255 * 128 < 2**31 the products use AVX-512 VNNI dot products, else int32
// sums; the same integers either way. Large stacks split their entries over the OpenMP threads.
PYNQTORCH_CLONES void pynqtorch_stack_product(const int8_t* a, const int64_t* sa, const int8_t* b, const int64_t* sb,
                                              int64_t bt, int64_t m, int64_t k, int64_t n, int vnni, int32_t* c) {
#pragma omp parallel if (bt > 1 && bt * m * k * n >= 64 * kParallel)
  {
    std::vector<uint8_t> ua;
    std::vector<int8_t> bv;
    std::vector<int32_t> bsum;
#pragma omp for schedule(static)
    for (int64_t i = 0; i < bt; ++i) {
      const int8_t* ai = a + i * sa[0];
      const int8_t* bi = b + i * sb[0];
      int32_t* ci = c + i * m * n;
#if PYNQTORCH_VNNI
      if (vnni && k * 255 * 128 < (int64_t(1) << 31)) {
        stack_product_vnni(ai, sa[1], sa[2], bi, sb[1], sb[2], m, k, n, ci, ua, bv, bsum);
        continue;
      }
#endif
      stack_product_plain(ai, sa[1], sa[2], bi, sb[1], sb[2], m, k, n, ci);
    }
  }
  (void)vnni;
}

// The float32 GEMM of a stack with the activation scheme on both operands, in one pass per entry: out[i1, i2] =
// (a[i1, i2] * pre) @ b[i1, i2] for a [b1, b2, m, k], b [b1, b2, k, n] and out [b1, b2, m, n] (element strides sa, sb,
// so; a's and out's rows contiguous, b's rows or columns), quantized per row of a * pre (a float32 multiply, skipped
// for pre = 1) and per column of b (pynqtorch_quantize_rows / _cols), their exact integer product with AVX-512 VNNI
// (vnni_rows) and the dequantization ((acc * sa) * sb, as pynqtorch_dequantize) — the same operations, so the same
// bits, as those passes with the golden model's product. Returns a Status (out incomplete unless kOk): kNotTaken
// without VNNI, for other layouts, k * 255 * 128 >= 2**31 or the dequantization's overflow guard; kNonFinite /
// kTiny for a line the per-line scheme cannot take here.
PYNQTORCH_CLONES int pynqtorch_stack_gemm(const float* a, const int64_t* sa, float pre, const float* b,
                                          const int64_t* sb, float* out, const int64_t* so, int64_t b1, int64_t b2,
                                          int64_t m, int64_t k, int64_t n, float qmax, int vnni) {
#if PYNQTORCH_VNNI
  if (!vnni || sa[3] != 1 || so[3] != 1 || (sb[2] != 1 && sb[3] != 1) || k * 255 * 128 >= (int64_t(1) << 31)) {
    return kNotTaken;
  }
  int status = kOk;
#pragma omp parallel if (b1 * b2 > 1 && b1 * b2 * m * k * n >= 64 * kParallel)
  {
    StackGemmWork w;
#pragma omp for schedule(static)
    for (int64_t e = 0; e < b1 * b2; ++e) {
      const int64_t i1 = e / b2, i2 = e % b2;
      report(&status, stack_gemm_entry(a + i1 * sa[0] + i2 * sa[1], sa[2], pre, b + i1 * sb[0] + i2 * sb[1], sb[2],
                                       sb[3], out + i1 * so[0] + i2 * so[1], so[2], m, k, n, qmax, w));
    }
  }
  return status;
#else
  (void)a, (void)sa, (void)pre, (void)b, (void)sb, (void)out, (void)so, (void)b1, (void)b2, (void)m, (void)k, (void)n;
  (void)qmax, (void)vnni;
  return kNotTaken;
#endif
}

}  // extern "C"
