// Self-checking testbench for gemm_i8_dsp: packs A (along K) and B^T (along K) eight int8 per 64-bit word,
// compares every output with a plain C++ reference on random, extreme and sign-alternating tiles.
// Exits non-zero on the first failing case.
#include <cstdint>
#include <cstdio>
#include <vector>

#include "gemm_i8_dsp.hpp"

static const int D = GEMM_I8_DSP_DIM;
static const int LANES = GEMM_I8_DSP_LANES;

static uint32_t lcg_state = 12345u;
static uint32_t lcg() {
    lcg_state = lcg_state * 1664525u + 1013904223u;
    return lcg_state;
}

// Packs a D x D int8 matrix along its rows into words of eight lanes (lane 0 in bits 7:0).
static std::vector<gemm_i8_dsp_word_t> pack(const std::vector<int8_t> &x) {
    std::vector<gemm_i8_dsp_word_t> w(D * D / LANES);
    for (int r = 0; r < D; r++) {
        for (int t = 0; t < D / LANES; t++) {
            uint64_t word = 0;
            for (int l = 0; l < LANES; l++) word |= (uint64_t)(uint8_t)x[r * D + t * LANES + l] << (8 * l);
            w[r * D / LANES + t] = word;
        }
    }
    return w;
}

// a is A (row-major), bt is B transposed (bt[j*D + k] = B[k][j]).
static int check(const char *name, const std::vector<int8_t> &a, const std::vector<int8_t> &bt) {
    std::vector<gemm_i8_dsp_word_t> aw = pack(a), bw = pack(bt);
    std::vector<int> got(D * D, 0x5a5a5a5a);
    gemm_i8_dsp(aw.data(), bw.data(), got.data());
    int bad = 0;
    for (int i = 0; i < D; i++) {
        for (int j = 0; j < D; j++) {
            int64_t s = 0;
            for (int k = 0; k < D; k++) s += (int64_t)a[i * D + k] * bt[j * D + k];
            const int want = (int32_t)(uint32_t)(uint64_t)s;
            if (got[i * D + j] != want) {
                if (bad == 0) printf("FAIL %s: C[%d][%d] = %d, expected %d\n", name, i, j, got[i * D + j], want);
                bad++;
            }
        }
    }
    if (bad) {
        printf("FAIL %s: %d of %d outputs differ\n", name, bad, D * D);
        return 1;
    }
    printf("ok   %s\n", name);
    return 0;
}

int main() {
    std::vector<int8_t> a(D * D), bt(D * D);
    int failures = 0;

    for (int idx = 0; idx < D * D; idx++) { a[idx] = (int8_t)(lcg() >> 24); bt[idx] = (int8_t)(lcg() >> 24); }
    failures += check("random", a, bt);

    for (int idx = 0; idx < D * D; idx++) { a[idx] = -128; bt[idx] = -128; }
    failures += check("all -128", a, bt);

    for (int idx = 0; idx < D * D; idx++) { a[idx] = -128; bt[idx] = 127; }
    failures += check("-128 x 127", a, bt);

    for (int idx = 0; idx < D * D; idx++) {
        a[idx] = (idx % 2) ? -128 : 127;
        bt[idx] = ((idx / D) % 2) ? 127 : -128;
    }
    failures += check("alternating signs", a, bt);

    if (failures) {
        printf("FAILED: %d case(s)\n", failures);
        return 1;
    }
    printf("PASSED\n");
    return 0;
}
