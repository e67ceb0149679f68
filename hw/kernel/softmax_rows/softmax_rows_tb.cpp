// Self-checking testbench for softmax_rows: rows of random values, a full-length row, large magnitudes,
// a row with NaN, one with +Inf, one of all -Inf and one with some -Inf, against a double-precision
// reference. Exits non-zero when an element is off by more than 1e-7 + 1e-5 * |want| or NaN differs.
#include <cmath>
#include <cstdio>
#include <cstdint>
#include <limits>
#include <vector>

#include "softmax_rows.hpp"

static uint32_t state = 7u;
static float uniform(float lo, float hi) {
    state = state * 1664525u + 1013904223u;
    return lo + (hi - lo) * (state >> 8) / 16777216.0f;
}

static int check(const std::vector<float> &x, const std::vector<float> &out, int rows, int cols) {
    int bad = 0;
    for (int r = 0; r < rows; r++) {
        double mx = -INFINITY, sum = 0.0;
        bool nan = false;
        for (int c = 0; c < cols; c++) { nan |= std::isnan(x[r * cols + c]); mx = std::fmax(mx, x[r * cols + c]); }
        for (int c = 0; c < cols; c++) sum += std::exp((double)x[r * cols + c] - mx);
        for (int c = 0; c < cols; c++) {
            double want = nan ? NAN : std::exp((double)x[r * cols + c] - mx) / sum;
            float got = out[r * cols + c];
            bool ok = std::isnan(want) ? std::isnan(got) : std::fabs(got - want) <= 1e-7 + 1e-5 * std::fabs(want);
            if (!ok && bad++ < 5) std::printf("row %d col %d: got %g, want %g\n", r, c, got, want);
        }
    }
    return bad;
}

int main() {
    const float inf = std::numeric_limits<float>::infinity();
    int bad = 0;
    {   // random rows, then special rows
        const int rows = 8, cols = 37;
        std::vector<float> x(rows * cols), out(rows * cols);
        for (auto &v : x) v = uniform(-8.0f, 8.0f);
        x[1 * cols + 3] = NAN;
        x[2 * cols + 5] = inf;
        for (int c = 0; c < cols; c++) x[3 * cols + c] = -inf;
        x[4 * cols + 0] = -inf;
        x[5 * cols + 1] = 1e4f;
        x[5 * cols + 2] = -1e4f;
        for (int c = 0; c < cols; c++) x[6 * cols + c] = 0.0f;
        softmax_rows(x.data(), out.data(), rows, cols);
        bad += check(x, out, rows, cols);
    }
    {   // the largest call
        const int rows = SOFTMAX_ROWS_MAX_ROWS, cols = SOFTMAX_ROWS_MAX_COLS;
        std::vector<float> x(rows * cols), out(rows * cols);
        for (auto &v : x) v = uniform(-20.0f, 20.0f);
        softmax_rows(x.data(), out.data(), rows, cols);
        bad += check(x, out, rows, cols);
    }
    std::printf("softmax_rows: %d elements out of tolerance\n", bad);
    return bad != 0;
}
