// Self-checking testbench for layernorm_rows: random rows with a random affine, a constant row (variance 0:
// rstd = 1/sqrt(eps)), large magnitudes, a row with NaN and one with Inf, and the largest call, against a
// double-precision reference. Exits non-zero when out, mean or rstd is off by more than
// 1e-5 + 1e-4 * |want| or a non-finite value differs.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <vector>

#include "layernorm_rows.hpp"

static uint32_t state = 11u;
static float uniform(float lo, float hi) {
    state = state * 1664525u + 1013904223u;
    return lo + (hi - lo) * (state >> 8) / 16777216.0f;
}

static int bad = 0;
static void expect(const char *what, int r, int c, float got, double want) {
    bool ok = std::isnan(want) ? std::isnan(got)
              : std::isinf(want) ? got == (float)want
                                 : std::fabs(got - want) <= 1e-5 + 1e-4 * std::fabs(want);
    if (!ok && bad++ < 5) std::printf("%s row %d col %d: got %g, want %g\n", what, r, c, got, want);
}

static void run(int rows, int cols, float eps, const std::vector<float> &x) {
    std::vector<float> w(cols), b(cols), out(rows * cols), mean(rows), rstd(rows);
    for (int c = 0; c < cols; c++) { w[c] = uniform(-2.0f, 2.0f); b[c] = uniform(-1.0f, 1.0f); }
    layernorm_rows(x.data(), w.data(), b.data(), out.data(), mean.data(), rstd.data(), rows, cols, eps);
    for (int r = 0; r < rows; r++) {
        double mu = 0.0, var = 0.0;
        for (int c = 0; c < cols; c++) mu += x[r * cols + c];
        mu /= cols;
        for (int c = 0; c < cols; c++) var += (x[r * cols + c] - mu) * (x[r * cols + c] - mu);
        double rs = 1.0 / std::sqrt(var / cols + eps);
        expect("mean", r, 0, mean[r], mu);
        expect("rstd", r, 0, rstd[r], rs);
        for (int c = 0; c < cols; c++) expect("out", r, c, out[r * cols + c], (x[r * cols + c] - mu) * rs * w[c] + b[c]);
    }
}

int main() {
    const int rows = 6, cols = 384;
    std::vector<float> x(rows * cols);
    for (auto &v : x) v = uniform(-4.0f, 4.0f);
    for (int c = 0; c < cols; c++) x[1 * cols + c] = 2.5f;
    for (int c = 0; c < cols; c++) x[2 * cols + c] = uniform(-1e4f, 1e4f);
    x[3 * cols + 7] = NAN;
    x[4 * cols + 9] = std::numeric_limits<float>::infinity();
    run(rows, cols, 1e-12f, x);
    std::vector<float> big(LAYERNORM_ROWS_MAX_ROWS * LAYERNORM_ROWS_MAX_COLS);
    for (auto &v : big) v = uniform(-8.0f, 8.0f);
    run(LAYERNORM_ROWS_MAX_ROWS, LAYERNORM_ROWS_MAX_COLS, 1e-5f, big);
    std::printf("layernorm_rows: %d values out of tolerance\n", bad);
    return bad != 0;
}
