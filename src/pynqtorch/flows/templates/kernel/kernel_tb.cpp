// Self-checking testbench for @NAME@: compares every output with a plain C++ reference on random,
// extreme and sign-alternating tiles, and on words whose upper 24 bits are garbage (only the low 8 bits
// are operands). Exits non-zero on the first failing case.
#include <cstdint>
#include <cstdio>
#include <vector>

#include "@NAME@.hpp"

static const int D = @UNAME@_DIM;

static uint32_t lcg_state = 12345u;
static uint32_t lcg() {
    lcg_state = lcg_state * 1664525u + 1013904223u;
    return lcg_state;
}

// Reference: exact int64 dot products of the sign-extended low bytes, wrapped to int32.
static void reference(const std::vector<int> &a, const std::vector<int> &b, std::vector<int> &c) {
    for (int i = 0; i < D; i++) {
        for (int j = 0; j < D; j++) {
            int64_t s = 0;
            for (int k = 0; k < D; k++) {
                s += (int64_t)(int8_t)(a[i * D + k] & 0xff) * (int8_t)(b[k * D + j] & 0xff);
            }
            c[i * D + j] = (int32_t)(uint32_t)(uint64_t)s;
        }
    }
}

static int check(const char *name, const std::vector<int> &a, const std::vector<int> &b) {
    std::vector<int> got(D * D, 0x5a5a5a5a), want(D * D);
    @NAME@(a.data(), b.data(), got.data());
    reference(a, b, want);
    int bad = 0;
    for (int idx = 0; idx < D * D; idx++) {
        if (got[idx] != want[idx]) {
            if (bad == 0) {
                printf("FAIL %s: C[%d][%d] = %d, expected %d\n", name, idx / D, idx % D, got[idx], want[idx]);
            }
            bad++;
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
    std::vector<int> a(D * D), b(D * D);
    int failures = 0;

    for (int idx = 0; idx < D * D; idx++) { a[idx] = (int8_t)lcg(); b[idx] = (int8_t)lcg(); }
    failures += check("random", a, b);

    for (int idx = 0; idx < D * D; idx++) { a[idx] = -128; b[idx] = -128; }
    failures += check("all -128", a, b);

    for (int idx = 0; idx < D * D; idx++) { a[idx] = 127; b[idx] = 127; }
    failures += check("all 127", a, b);

    for (int idx = 0; idx < D * D; idx++) {
        a[idx] = (idx % 2) ? -128 : 127;
        b[idx] = ((idx / D) % 2) ? -128 : 127;
    }
    failures += check("alternating signs", a, b);

    for (int idx = 0; idx < D * D; idx++) { a[idx] = (int)lcg(); b[idx] = (int)lcg(); }
    failures += check("garbage upper bits", a, b);

    if (failures) {
        printf("FAILED: %d case(s)\n", failures);
        return 1;
    }
    printf("PASSED\n");
    return 0;
}
