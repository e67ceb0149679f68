// Self-checking testbench for @NAME@: random rows over [-20, 20] at several shapes against a
// double-precision reference. Exits non-zero when an element is off by more than @TOL_ABS@ + @TOL_REL@ * |want|.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <vector>

#include "@NAME@.hpp"

static uint32_t state = 5u;
static float uniform() {
    state = state * 1664525u + 1013904223u;
    return -20.0f + 40.0f * (state >> 8) / 16777216.0f;
}

static int run(int rows, int cols) {
    std::vector<float> x(rows * cols), out(rows * cols);
    for (auto &v : x) v = uniform();
    @NAME@(x.data(), out.data(), rows, cols);
    int bad = 0;
    for (int r = 0; r < rows; r++) {
        double mx = -INFINITY, sum = 0.0;
        for (int c = 0; c < cols; c++) mx = std::fmax(mx, x[r * cols + c]);
        for (int c = 0; c < cols; c++) sum += std::exp(x[r * cols + c] - mx);
        for (int c = 0; c < cols; c++) {
            double d = x[r * cols + c] - mx;
            double want = @REF@;
            float got = out[r * cols + c];
            if (!(std::fabs(got - want) <= @TOL_ABS@ + @TOL_REL@ * std::fabs(want)) && bad++ < 5)
                std::printf("row %d col %d: got %g, want %g\n", r, c, got, want);
        }
    }
    return bad;
}

int main() {
    int bad = run(1, 1) + run(7, 77) + run(@UNAME@_MAX_ROWS, @UNAME@_MAX_COLS);
    std::printf("@NAME@: %d elements out of tolerance\n", bad);
    return bad != 0;
}
