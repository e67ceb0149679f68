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

enum Status { kOk = 0, kNonFinite = 1, kTiny = 2 };

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

}  // namespace

extern "C" {

// x: float32 [nb, nr, nc], element strides (sb, sr, 1); q: int8 contiguous [nb, nr, nc].
// One scale per row: scale is [nb * nr]. Stops at the first non-finite or tiny row (returns its status).
PYNQTORCH_CLONES int pynqtorch_quantize_rows(const float* x, int64_t nb, int64_t nr, int64_t nc, int64_t sb, int64_t sr,
                            float qmax, int8_t* q, float* scale) {
  for (int64_t b = 0; b < nb; ++b) {
    for (int64_t r = 0; r < nr; ++r) {
      const float* row = x + b * sb + r * sr;
      uint32_t m = row_amax_bits(row, nc);
      int st = check(m);
      if (st != kOk) return st;
      float s = scale_of(m, qmax);
      scale[b * nr + r] = s;
      quantize_row(row, nc, 1.0f / s, q + (b * nr + r) * nc);
    }
  }
  return kOk;
}

// As above with one scale per column: scale is [nb * nc]; `work` holds nc uint32 and nc floats.
PYNQTORCH_CLONES int pynqtorch_quantize_cols(const float* x, int64_t nb, int64_t nr, int64_t nc, int64_t sb, int64_t sr,
                            float qmax, int8_t* q, float* scale, uint32_t* work) {
  uint32_t* m = work;
  float* inv = reinterpret_cast<float*>(work + nc);
  for (int64_t b = 0; b < nb; ++b) {
    const float* xb = x + b * sb;
    for (int64_t c = 0; c < nc; ++c) m[c] = 0;
    for (int64_t r = 0; r < nr; ++r) {
      const float* row = xb + r * sr;
      for (int64_t c = 0; c < nc; ++c) {
        uint32_t u = bits(row[c]) & kAbsMask;
        m[c] = u > m[c] ? u : m[c];
      }
    }
    for (int64_t c = 0; c < nc; ++c) {
      int st = check(m[c]);
      if (st != kOk) return st;
      float s = scale_of(m[c], qmax);
      scale[b * nc + c] = s;
      inv[c] = 1.0f / s;
    }
    for (int64_t r = 0; r < nr; ++r) quantize_row_cols(xb + r * sr, nc, inv, q + (b * nr + r) * nc);
  }
  return kOk;
}

// As above with one scale for the whole tensor (scale points to one float).
PYNQTORCH_CLONES int pynqtorch_quantize_tensor(const float* x, int64_t nb, int64_t nr, int64_t nc, int64_t sb, int64_t sr,
                              float qmax, int8_t* q, float* scale) {
  uint32_t m = 0;
  for (int64_t b = 0; b < nb; ++b) {
    for (int64_t r = 0; r < nr; ++r) {
      uint32_t mr = row_amax_bits(x + b * sb + r * sr, nc);
      m = mr > m ? mr : m;
    }
  }
  int st = check(m);
  if (st != kOk) return st;
  float s = scale_of(m, qmax);
  *scale = s;
  float inv = 1.0f / s;
  for (int64_t b = 0; b < nb; ++b)
    for (int64_t r = 0; r < nr; ++r) quantize_row(x + b * sb + r * sr, nc, inv, q + (b * nr + r) * nc);
  return kOk;
}

// Quantized im2col of a 2-D convolution input, without the float patch matrix: x is float32 [N, H, W, C]
// (channels contiguous) with element strides (sn, sh, sw, 1); geo holds
//   {n, c, h, w, sn, sh, sw, groups, kh, kw, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, oh, ow}.
// The patch matrix of group g has one row per output position (n, oy, ox) and columns (i, j, c) for the
// cg = c / groups channels of the group, zero outside the input. q is int8 [groups, n*oh*ow, kh*kw*cg];
// scale is [groups * n*oh*ow] (per_row) or one float: the same values pynqtorch_quantize_rows/_tensor give
// on the materialized matrix.
PYNQTORCH_CLONES int pynqtorch_im2col_quantize(const float* x, const int64_t* geo, int per_row, float qmax,
                                               int8_t* q, float* scale) {
  const int64_t n = geo[0], c = geo[1], h = geo[2], w = geo[3], sn = geo[4], sh = geo[5], sw = geo[6];
  const int64_t groups = geo[7], kh = geo[8], kw = geo[9], st_h = geo[10], st_w = geo[11];
  const int64_t pad_h = geo[12], pad_w = geo[13], dil_h = geo[14], dil_w = geo[15], oh = geo[16], ow = geo[17];
  const int64_t cg = c / groups, k = kh * kw * cg, rows = n * oh * ow;
  // Rows go in chunks: gathered into `buf`, their amaxes and scales computed together, then quantized in one
  // pass over the chunk with a per-element inverse (rows of a small kernel are too short for vector loops).
  const int64_t chunk = k >= 256 ? 1 : 256 / k + 1;
  std::vector<float> buf(static_cast<size_t>(chunk * k)), inv(static_cast<size_t>(chunk * k));
  std::vector<uint32_t> m(static_cast<size_t>(chunk));
  // A kernel row's kw window pixels are one run of kw*c floats when they are adjacent and all channels used.
  const bool runs = groups == 1 && dil_w == 1 && sw == c;
  auto gather = [&](int64_t g, int64_t r, float* dst) {
    const int64_t b = r / (oh * ow), oy = (r / ow) % oh, ox = r % ow;
    const int64_t x0 = ox * st_w - pad_w;
    for (int64_t i = 0; i < kh; ++i) {
      const int64_t y = oy * st_h - pad_h + i * dil_h;
      const float* src = x + b * sn + y * sh + g * cg;
      if (y < 0 || y >= h) {
        for (int64_t t = 0; t < kw * cg; ++t) dst[t] = 0.0f;
        dst += kw * cg;
      } else if (runs && x0 >= 0 && x0 + kw <= w) {
        src += x0 * sw;
        for (int64_t t = 0; t < kw * cg; ++t) dst[t] = src[t];
        dst += kw * cg;
      } else {
        for (int64_t j = 0; j < kw; ++j, dst += cg) {
          const int64_t xx = x0 + j * dil_w;
          if (xx < 0 || xx >= w) {
            for (int64_t t = 0; t < cg; ++t) dst[t] = 0.0f;
          } else {
            for (int64_t t = 0; t < cg; ++t) dst[t] = src[xx * sw + t];
          }
        }
      }
    }
  };
  // Pass 1 (per-tensor only): the max over all windows. Pass 2: quantize chunk by chunk.
  float whole = 0.0f;
  if (!per_row) {
    uint32_t all = 0;
    for (int64_t g = 0; g < groups; ++g) {
      for (int64_t r = 0; r < rows; ++r) {
        gather(g, r, buf.data());
        uint32_t mr = row_amax_bits(buf.data(), k);
        all = mr > all ? mr : all;
      }
    }
    int st = check(all);
    if (st != kOk) return st;
    whole = scale_of(all, qmax);
    *scale = whole;
  }
  for (int64_t g = 0; g < groups; ++g) {
    for (int64_t r0 = 0; r0 < rows; r0 += chunk) {
      const int64_t nr = rows - r0 < chunk ? rows - r0 : chunk;
      for (int64_t i = 0; i < nr; ++i) gather(g, r0 + i, buf.data() + i * k);
      for (int64_t i = 0; i < nr; ++i) {
        float s = whole;
        if (per_row) {
          m[i] = row_amax_bits(buf.data() + i * k, k);
          int st = check(m[i]);
          if (st != kOk) return st;
          s = scale_of(m[i], qmax);
          scale[g * rows + r0 + i] = s;
        }
        const float v = 1.0f / s;
        for (int64_t t = 0; t < k; ++t) inv[i * k + t] = v;
      }
      quantize_row_cols(buf.data(), nr * k, inv.data(), q + (g * rows + r0) * k);
    }
  }
  return kOk;
}

// out[b, i, j] = ((float) acc[b, i, j] * sa[b * sab + i * sai]) * sb[b * sbb + j * sbj], all contiguous
// [nb, m, n]; a zero stride broadcasts a scale (0-dim scales have every stride 0).
PYNQTORCH_CLONES void pynqtorch_dequantize(const int32_t* acc, int64_t nb, int64_t m, int64_t n, const float* sa, int64_t sab,
                          int64_t sai, const float* sb, int64_t sbb, int64_t sbj, float* out) {
  for (int64_t b = 0; b < nb; ++b) {
    const float* sbr = sb + b * sbb;
    for (int64_t i = 0; i < m; ++i) {
      const float a = sa[b * sab + i * sai];
      const int32_t* src = acc + (b * m + i) * n;
      float* dst = out + (b * m + i) * n;
      if (sbj == 0) {
        const float s = sbr[0];
        for (int64_t j = 0; j < n; ++j) dst[j] = (static_cast<float>(src[j]) * a) * s;
      } else {
        for (int64_t j = 0; j < n; ++j) dst[j] = (static_cast<float>(src[j]) * a) * sbr[j * sbj];
      }
    }
  }
}

}  // extern "C"
