// Runs the convolution passes of hostops.cpp on fixed pseudo-random inputs and prints, per case, its status and a
// hash of everything it wrote: test_hostops_arm.py builds this for the host and for 32-bit ARM (run under qemu) and
// compares the lines, so the board's build (NEON, no AVX2 clone) computes the bits the host's build does (which the
// other tests compare with torch).
#include "../src/pynqtorch/hostops/hostops.cpp"

#include <cstdio>
#include <vector>

namespace {

uint64_t g_state = 88172645463325252ull;

// xorshift64: values in [-1, 1) times a magnitude of 2**-6 .. 2**6.
float next_value() {
  g_state ^= g_state << 13;
  g_state ^= g_state >> 7;
  g_state ^= g_state << 17;
  const float u = static_cast<float>(static_cast<int64_t>(g_state >> 40) - (1 << 23)) / static_cast<float>(1 << 23);
  return u * static_cast<float>(1 << (g_state % 13)) / 64.0f;
}

uint64_t fnv(const void* p, size_t n) {
  uint64_t h = 1469598103934665603ull;
  const unsigned char* b = static_cast<const unsigned char*>(p);
  for (size_t i = 0; i < n; ++i) h = (h ^ b[i]) * 1099511628211ull;
  return h;
}

template <class T>
uint64_t hash(const std::vector<T>& v) {
  return fnv(v.data(), v.size() * sizeof(T));
}

// An input [n, c, h, w] filled in channels-first (planar) or channels-last order, and the geometry numbers of the
// passes (see pynqtorch_im2col_quantize).
struct Conv {
  int64_t n, c, h, w, groups, kh, kw, sh, sw, ph, pw, dh, dw;
  bool channels_last;
  std::vector<float> x;
  int64_t oh() const { return (h + 2 * ph - dh * (kh - 1) - 1) / sh + 1; }
  int64_t ow() const { return (w + 2 * pw - dw * (kw - 1) - 1) / sw + 1; }
  std::vector<int64_t> geo() {
    x.resize(static_cast<size_t>(n * c * h * w));
    for (float& v : x) v = next_value();
    const int64_t sc = channels_last ? 1 : h * w, sx = channels_last ? c : 1, sy = sx * w;
    return {n, c, h, w, c * h * w, sy, sx, groups, kh, kw, sh, sw, ph, pw, dh, dw, oh(), ow(), sc};
  }
};

void im2col_case(const char* name, Conv cv) {
  std::vector<int64_t> geo = cv.geo();
  const int64_t rows = cv.n * cv.oh() * cv.ow(), k = cv.kh * cv.kw * cv.c;
  std::vector<int8_t> q(static_cast<size_t>(rows * k)), q2(q.size());
  std::vector<float> s(static_cast<size_t>(rows)), s2(s.size());
  const int st = pynqtorch_im2col_quantize_padded(cv.x.data(), geo.data(), 127.0f, q.data(), s.data());
  const int st2 = pynqtorch_im2col_quantize(cv.x.data(), geo.data(), 1, 127.0f, q2.data(), s2.data());
  // The padded pass equals the row gather on every build, and both print their bits.
  std::printf("%s %d %d %d %016llx %016llx\n", name, st, st2, q == q2 && s == s2,
              static_cast<unsigned long long>(hash(q)), static_cast<unsigned long long>(hash(s)));
}

void depthwise_case(const char* name, Conv cv, int64_t mult, bool out_channels_last) {
  std::vector<int64_t> geo = cv.geo();
  const int64_t k = cv.kh * cv.kw, oc = cv.c * mult, oh = cv.oh(), ow = cv.ow();
  std::vector<int8_t> wq(static_cast<size_t>(cv.c * k * mult));
  for (int8_t& v : wq) v = static_cast<int8_t>(static_cast<int>(next_value() * 1000.0f) % 128);
  std::vector<float> sb(static_cast<size_t>(oc)), bias(sb.size());
  for (float& v : sb) v = 0.01f + next_value() * next_value();
  for (float& v : bias) v = next_value();
  std::vector<float> out(static_cast<size_t>(cv.n * oc * oh * ow));
  const int64_t ostride[4] = {oc * oh * ow, out_channels_last ? 1 : oh * ow, out_channels_last ? ow * oc : ow,
                              out_channels_last ? oc : 1};
  const int st = pynqtorch_depthwise_conv(cv.x.data(), geo.data(), mult, 127.0f, wq.data(), sb.data(), 1,
                                          bias.data(), out.data(), ostride);
  std::printf("%s %d %016llx\n", name, st, static_cast<unsigned long long>(hash(out)));
}

void dequantize_case(const char* name, int64_t nb, int64_t m, int64_t n, bool with_bias) {
  std::vector<int32_t> acc(static_cast<size_t>(nb * m * n));
  for (int32_t& v : acc) v = static_cast<int32_t>(next_value() * 1e6f);
  std::vector<float> sa(static_cast<size_t>(nb * m)), sb(static_cast<size_t>(n)), bias(sb.size());
  for (float& v : sa) v = 1e-3f + next_value() * next_value();
  for (float& v : sb) v = 1e-4f * (1.0f + next_value() * next_value());
  for (float& v : bias) v = next_value();
  std::vector<float> out(acc.size());  // channels-first: out[b, j, i] at b * m * n + j * m + i
  const int st = pynqtorch_dequantize_into(acc.data(), nb, m, n, sa.data(), m, 1, sb.data(), 0, 1,
                                           with_bias ? bias.data() : nullptr, out.data(), m * n, 1, m);
  std::printf("%s %d %016llx\n", name, st, static_cast<unsigned long long>(hash(out)));
}

}  // namespace

int main() {
  // n, c, h, w, groups, kh, kw, sh, sw, ph, pw, dh, dw, channels_last
  im2col_case("padded_stem", {2, 3, 13, 11, 1, 3, 3, 2, 1, 1, 2, 1, 1, false, {}});
  im2col_case("padded_cl_dilated", {1, 5, 9, 10, 1, 2, 3, 1, 2, 0, 1, 1, 2, true, {}});
  im2col_case("padded_short_runs", {3, 2, 7, 9, 1, 3, 3, 1, 1, 1, 1, 1, 1, false, {}});
  im2col_case("padded_long_runs", {2, 8, 9, 9, 1, 3, 3, 1, 1, 1, 1, 1, 1, true, {}});
  depthwise_case("dw_one_channel_mult6", {2, 1, 12, 12, 1, 5, 5, 1, 1, 2, 2, 1, 1, false, {}}, 6, false);
  depthwise_case("dw_planes_stride2", {2, 16, 11, 13, 16, 3, 3, 2, 2, 1, 1, 1, 1, false, {}}, 1, true);
  depthwise_case("dw_stride3_mult3", {1, 3, 9, 23, 3, 3, 3, 3, 3, 1, 0, 1, 1, false, {}}, 3, false);
  depthwise_case("dw_channels_last_mult2", {2, 12, 11, 10, 12, 3, 5, 2, 1, 2, 1, 2, 1, true, {}}, 2, true);
  depthwise_case("dw_dilated_mult9", {1, 1, 6, 40, 1, 2, 3, 1, 1, 0, 1, 1, 3, false, {}}, 9, false);
  dequantize_case("dequantize_channels_first", 3, 135, 13, false);
  dequantize_case("dequantize_channels_first_bias", 2, 64, 48, true);
  return 0;
}
