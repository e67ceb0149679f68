// Self-checking testbench for gelu_f32: a full block of values over [-8, 8], zeros, large magnitudes and
// NaN/Inf, against a double-precision reference. Exits non-zero when an element is off by more than
// 1e-6 + 1e-5 * |want| or a non-finite result differs from the reference's.
#include <cmath>
#include <cstdio>
#include <limits>
#include <vector>

#include "gelu_f32.hpp"

static double reference(double v) { return 0.5 * v * (1.0 + std::erf(v / std::sqrt(2.0))); }

int main() {
    const int n = GELU_F32_BLOCK;
    std::vector<float> x(n), out(n, 123.0f);
    for (int i = 0; i < n; i++) x[i] = -8.0f + 16.0f * i / (n - 1);
    const float inf = std::numeric_limits<float>::infinity();
    const float specials[] = {0.0f, -0.0f, 1e4f, -1e4f, 3e38f, -3e38f, inf, -inf, std::nanf("")};
    for (unsigned s = 0; s < sizeof(specials) / sizeof(specials[0]); s++) x[s] = specials[s];
    gelu_f32(x.data(), out.data(), n);
    int bad = 0;
    for (int i = 0; i < n; i++) {
        double want = reference(x[i]);
        bool ok = std::isnan(want) ? std::isnan(out[i])
                  : std::isinf(want) ? out[i] == (float)want
                                     : std::fabs(out[i] - want) <= 1e-6 + 1e-5 * std::fabs(want);
        if (!ok && bad++ < 5) std::printf("x[%d] = %g: got %g, want %g\n", i, x[i], out[i], want);
    }
    // A shorter call must leave the rest of the buffer alone.
    std::vector<float> tail(8, 7.0f);
    gelu_f32(x.data() + 100, tail.data(), 5);
    for (int i = 5; i < 8; i++) bad += tail[i] != 7.0f;
    std::printf("gelu_f32: %d of %d elements out of tolerance\n", bad, n);
    return bad != 0;
}
