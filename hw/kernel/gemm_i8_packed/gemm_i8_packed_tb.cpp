// Self-checking testbench for gemm_i8_packed: packs A (M x K, along K) and B^T (N x K, along K) eight
// int8 per 64-bit word, runs several runtime shapes (smallest, odd M, largest K and N) on random,
// extreme and sign-alternating data, and compares with a plain C++ reference. Exits non-zero on mismatch.
#include <cstdint>
#include <cstdio>
#include <vector>

#include "gemm_i8_packed.hpp"

static const int LANES = GEMM_I8_PACKED_LANES;

static uint32_t lcg_state = 2024u;
static uint32_t lcg() {
    lcg_state = lcg_state * 1664525u + 1013904223u;
    return lcg_state;
}

enum Fill { RANDOM, ALL_MIN, ALL_MAX, ALTERNATING };

static int8_t value(Fill fill, int r, int col, bool is_a) {
    switch (fill) {
    case ALL_MIN: return -128;
    case ALL_MAX: return 127;
    case ALTERNATING: return ((is_a ? col : r) % 2) ? -128 : 127;
    default: return (int8_t)(lcg() >> 24);
    }
}

// Packs a rows x cols int8 matrix along its rows into words of eight lanes (lane 0 in bits 7:0).
static std::vector<gemm_i8_packed_word_t> pack(const std::vector<int8_t> &x, int rows, int cols) {
    std::vector<gemm_i8_packed_word_t> w(rows * cols / LANES);
    for (int r = 0; r < rows; r++) {
        for (int t = 0; t < cols / LANES; t++) {
            uint64_t word = 0;
            for (int l = 0; l < LANES; l++) {
                word |= (uint64_t)(uint8_t)x[r * cols + t * LANES + l] << (8 * l);
            }
            w[r * cols / LANES + t] = word;
        }
    }
    return w;
}

static int run_case(const char *name, Fill fill, int m, int n, int k) {
    std::vector<int8_t> a(m * k), bt(n * k);  // bt is B transposed: bt[j*k + kk] = B[kk][j]
    for (int i = 0; i < m; i++)
        for (int kk = 0; kk < k; kk++) a[i * k + kk] = value(fill, i, kk, true);
    for (int j = 0; j < n; j++)
        for (int kk = 0; kk < k; kk++) bt[j * k + kk] = value(fill, kk, j, false);
    std::vector<gemm_i8_packed_word_t> aw = pack(a, m, k), bw = pack(bt, n, k);
    std::vector<int> got(m * n, 0x5a5a5a5a);
    gemm_i8_packed(aw.data(), bw.data(), got.data(), m, n, k);

    int bad = 0;
    for (int i = 0; i < m; i++) {
        for (int j = 0; j < n; j++) {
            int64_t s = 0;
            for (int kk = 0; kk < k; kk++) s += (int64_t)a[i * k + kk] * bt[j * k + kk];
            int want = (int32_t)(uint32_t)(uint64_t)s;
            if (got[i * n + j] != want) {
                if (bad == 0) {
                    printf("FAIL %s m=%d n=%d k=%d: C[%d][%d] = %d, expected %d\n", name, m, n, k, i, j,
                           got[i * n + j], want);
                }
                bad++;
            }
        }
    }
    if (bad) {
        printf("FAIL %s m=%d n=%d k=%d: %d of %d outputs differ\n", name, m, n, k, bad, m * n);
        return 1;
    }
    printf("ok   %s m=%d n=%d k=%d\n", name, m, n, k);
    return 0;
}

int main() {
    int failures = 0;
    failures += run_case("random", RANDOM, 1, 32, 8);
    failures += run_case("random", RANDOM, 5, 96, 40);
    failures += run_case("random", RANDOM, 33, 256, 256);
    failures += run_case("random", RANDOM, 3, 256, GEMM_I8_PACKED_MAX_K);
    failures += run_case("random", RANDOM, 300, 32, 8);
    failures += run_case("all -128", ALL_MIN, 2, 256, GEMM_I8_PACKED_MAX_K);
    failures += run_case("all 127", ALL_MAX, 2, 256, GEMM_I8_PACKED_MAX_K);
    failures += run_case("alternating signs", ALTERNATING, 9, 64, 128);
    if (failures) {
        printf("FAILED: %d case(s)\n", failures);
        return 1;
    }
    printf("PASSED\n");
    return 0;
}
