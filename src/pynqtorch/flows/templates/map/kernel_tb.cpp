// Self-checking testbench for @NAME@: a full block over [-8, 8] against a double-precision reference.
// Exits non-zero when an element is off by more than @TOL_ABS@ + @TOL_REL@ * |want|.
#include <cmath>
#include <cstdio>
#include <vector>

#include "@NAME@.hpp"

static double reference(double v) { return @REF@; }

int main() {
    const int n = @UNAME@_BLOCK;
    std::vector<float> x(n), out(n);
    for (int i = 0; i < n; i++) x[i] = -8.0f + 16.0f * i / (n - 1);
    @NAME@(x.data(), out.data(), n);
    int bad = 0;
    for (int i = 0; i < n; i++) {
        double want = reference(x[i]);
        if (!(std::fabs(out[i] - want) <= @TOL_ABS@ + @TOL_REL@ * std::fabs(want)) && bad++ < 5)
            std::printf("x[%d] = %g: got %g, want %g\n", i, x[i], out[i], want);
    }
    std::printf("@NAME@: %d of %d elements out of tolerance\n", bad, n);
    return bad != 0;
}
