// Fused host-side passes of the GEMM engine: symmetric int8 quantization and dequantization.
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

enum Status { kOk = 0, kNonFinite = 1, kTiny = 2 };

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

// out[r, j] = sum_t qa[r, t] * b[t, j] for R rows of qa ([R, k]) and b [k, n], float32 holding int8 values, in
// float32: exact under pynqtorch_gemm_rows's bound. Columns go in blocks of 16 held in vector registers (GCC vector
// extensions: AVX2 registers in the AVX2 clone, pairs of SSE or NEON registers elsewhere), each B row read once
// for all R rows.
typedef float F8 __attribute__((vector_size(32)));

__attribute__((always_inline)) inline void load8(F8& v, const float* p) { std::memcpy(&v, p, sizeof v); }

template <int R>
__attribute__((always_inline)) inline void product_rows(const float* qa, int64_t k, const float* b, int64_t n,
                                                        float* out) {
  int64_t j0 = 0;
  for (; j0 + 16 <= n; j0 += 16) {
    F8 lo[R], hi[R];
    for (int r = 0; r < R; ++r) lo[r] = hi[r] = F8{};
    for (int64_t t = 0; t < k; ++t) {
      F8 b0, b1;
      load8(b0, b + t * n + j0);
      load8(b1, b + t * n + j0 + 8);
      for (int r = 0; r < R; ++r) {
        const F8 q = F8{} + qa[r * k + t];
        lo[r] += q * b0;
        hi[r] += q * b1;
      }
    }
    for (int r = 0; r < R; ++r) {
      std::memcpy(out + r * n + j0, &lo[r], sizeof(F8));
      std::memcpy(out + r * n + j0 + 8, &hi[r], sizeof(F8));
    }
  }
  for (int r = 0; r < R && j0 < n; ++r) {
    float* dst = out + r * n;
    for (int64_t j = j0; j < n; ++j) dst[j] = 0.0f;
    for (int64_t t = 0; t < k; ++t) {
      const float q = qa[r * k + t];
      for (int64_t j = j0; j < n; ++j) dst[j] += q * b[t * n + j];
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

// out[b, i, j] = ((float) acc[b, i, j] * sa[b * sab + i * sai]) * sb[b * sbb + j * sbj], all contiguous
// [nb, m, n]; a zero stride broadcasts a scale (0-dim scales have every stride 0). Returns 1 without writing
// when float32 could overflow where the result is finite: the guard of engine.quant.Scheme.dequantize,
// (2**31 - 1) * max(sa) * max(1, max(sb)) >= FLT_MAX in float64, evaluated in the same order (also when a
// scale is not finite: the caller then decides); 0 after writing out.
PYNQTORCH_CLONES int pynqtorch_dequantize(const int32_t* acc, int64_t nb, int64_t m, int64_t n, const float* sa,
                                          int64_t sab, int64_t sai, const float* sb, int64_t sbb, int64_t sbj,
                                          float* out) {
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
#pragma omp parallel for collapse(2) if (nb * m * n >= kParallel)
  for (int64_t b = 0; b < nb; ++b) {
    for (int64_t i = 0; i < m; ++i) {  // (b, i) counted, not divided out of a line number: short rows are common
      const int64_t l = b * m + i;
      const float* sbr = sb + b * sbb;
      const float a = sa[b * sab + i * sai];
      const int32_t* src = acc + l * n;
      float* dst = out + l * n;
      if (sbj == 0) {
        const float s = sbr[0];
        for (int64_t j = 0; j < n; ++j) dst[j] = (static_cast<float>(src[j]) * a) * s;
      } else {
        for (int64_t j = 0; j < n; ++j) dst[j] = (static_cast<float>(src[j]) * a) * sbr[j * sbj];
      }
    }
  }
  return 0;
}

// One small float GEMM against a quantized weight in one pass, for products the golden model defines as the exact
// integer sum: a (float32 [m, k], rows at element stride sr) is quantized as pynqtorch_quantize_rows (per_row) or
// _tensor give it, multiplied by the quantized weight b (float32 [k, n], contiguous, holding its int8 values) with
// float sums, exact because
// the caller guarantees k * qmax * max|b| <= 2**24 (every partial sum is an integer float32 holds, in any order),
// and dequantized as pynqtorch_dequantize gives it (sb: n scales, or one with sbj = 0).
// Then, optionally, out += bias (n floats) and out += add ([m, n], rows at element stride sadd), each a separate
// float32 rounding as torch's add_. work holds m * k + m floats. Returns the quantization's status, or 1 when the
// dequantization guard trips (nothing useful is written then: the caller takes the general path).
PYNQTORCH_CLONES int pynqtorch_gemm_rows(const float* a, int64_t m, int64_t k, int64_t sr, int per_row, float qmax,
                                         const float* b, int64_t n, const float* sb, int64_t sbj, const float* bias,
                                         const float* add, int64_t sadd, float* out, float* work) {
  float* qa = work;
  float* sa = work + m * k;
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
    for (int64_t t = 0; t < k; ++t) qa[i * k + t] = static_cast<float>(round_to_int8(row[t] * inv));
  }
  for (int64_t j = 0; j < (sbj ? n : 1); ++j) {
    const uint32_t u = bits(sb[j * sbj]) & kAbsMask;
    sb_max = u > sb_max ? u : sb_max;
  }
  if (overflow_risk(sa_max, sb_max)) return 1;
  for (int64_t i0 = 0; i0 < m; i0 += kRows) {  // rows in groups, so that each B row read serves all of them
    switch (m - i0 < kRows ? m - i0 : kRows) {
      case 1: product_rows<1>(qa + i0 * k, k, b, n, out + i0 * n); break;
      case 2: product_rows<2>(qa + i0 * k, k, b, n, out + i0 * n); break;
      case 3: product_rows<3>(qa + i0 * k, k, b, n, out + i0 * n); break;
      default: product_rows<kRows>(qa + i0 * k, k, b, n, out + i0 * n); break;
    }
  }
  for (int64_t i = 0; i < m; ++i) {
    float* dst = out + i * n;
    const float s = sa[i];
    if (sbj == 0) {
      const float s1 = sb[0];
      for (int64_t j = 0; j < n; ++j) dst[j] = (dst[j] * s) * s1;
    } else {
      for (int64_t j = 0; j < n; ++j) dst[j] = (dst[j] * s) * sb[j * sbj];
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

}  // extern "C"
