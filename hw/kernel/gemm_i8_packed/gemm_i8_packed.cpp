// gemm_i8_packed: C = A x B with runtime m, n, k; see gemm_i8_packed.hpp for layout and cycle model.
#include "gemm_i8_packed.hpp"

typedef gemm_i8_packed_word_t word_t;

// Dot product of eight int8 operands `x` (one beat of A, already split) with the eight lanes of word `y`.
static gemm_i8_packed_sum8_t dot8(const gemm_i8_packed_op_t x[GEMM_I8_PACKED_LANES], word_t y) {
#pragma HLS INLINE
    gemm_i8_packed_sum8_t s = 0;
lanes:
    for (int l = 0; l < GEMM_I8_PACKED_LANES; l++) {
#pragma HLS UNROLL
        gemm_i8_packed_op_t yb = y.range(8 * l + 7, 8 * l);
        gemm_i8_packed_prod_t p = x[l] * yb;
#pragma HLS BIND_OP variable=p op=mul impl=dsp
        s += p;
    }
    return s;
}

void gemm_i8_packed(const word_t *a, const word_t *b, int *c, int m, int n, int k) {
#pragma HLS INTERFACE mode=m_axi port=a offset=slave bundle=gmem0 depth=131072 max_read_burst_length=128
#pragma HLS INTERFACE mode=m_axi port=b offset=slave bundle=gmem1 depth=32768 max_read_burst_length=128
#pragma HLS INTERFACE mode=m_axi port=c offset=slave bundle=gmem2 depth=262144 max_write_burst_length=16
#pragma HLS INTERFACE mode=s_axilite port=a bundle=CTRL
#pragma HLS INTERFACE mode=s_axilite port=b bundle=CTRL
#pragma HLS INTERFACE mode=s_axilite port=c bundle=CTRL
#pragma HLS INTERFACE mode=s_axilite port=m bundle=CTRL
#pragma HLS INTERFACE mode=s_axilite port=n bundle=CTRL
#pragma HLS INTERFACE mode=s_axilite port=k bundle=CTRL
#pragma HLS INTERFACE mode=s_axilite port=return bundle=CTRL
    const int P = GEMM_I8_PACKED_PAR;
    const int kw = k / GEMM_I8_PACKED_LANES;  // words per row of A and per column of B
    const int groups = n / P;

    // Bank p holds columns p, p + 16, ...; column j's words start at (j / 16) * kw.
    word_t b_buf[GEMM_I8_PACKED_PAR][GEMM_I8_PACKED_MAX_N / GEMM_I8_PACKED_PAR * GEMM_I8_PACKED_MAX_K /
                                     GEMM_I8_PACKED_LANES];
#pragma HLS ARRAY_PARTITION variable=b_buf dim=1 type=complete
    word_t a_buf[GEMM_I8_PACKED_MAX_K / GEMM_I8_PACKED_LANES];
    gemm_i8_packed_acc_t acc[GEMM_I8_PACKED_PAR];
#pragma HLS ARRAY_PARTITION variable=acc type=complete

load_b:
    for (int j = 0; j < n; j++) {
#pragma HLS LOOP_TRIPCOUNT max=256
        for (int t = 0; t < kw; t++) {
#pragma HLS LOOP_TRIPCOUNT max=128
#pragma HLS PIPELINE II=1
            b_buf[j % P][(j / P) * kw + t] = b[j * kw + t];
        }
    }

rows:
    for (int i = 0; i < m; i++) {
#pragma HLS LOOP_TRIPCOUNT max=1024
    load_a:
        for (int t = 0; t < kw; t++) {
#pragma HLS LOOP_TRIPCOUNT max=128
#pragma HLS PIPELINE II=1
            a_buf[t] = a[i * kw + t];
        }
    col_groups:
        for (int g = 0; g < groups; g++) {
#pragma HLS LOOP_TRIPCOUNT max=16
        clear:
            for (int p = 0; p < P; p++) {
#pragma HLS UNROLL
                acc[p] = 0;
            }
        beats:
            for (int t = 0; t < kw; t++) {
#pragma HLS LOOP_TRIPCOUNT max=128
#pragma HLS PIPELINE II=1
                gemm_i8_packed_op_t av[GEMM_I8_PACKED_LANES];
#pragma HLS ARRAY_PARTITION variable=av type=complete
            split_a:
                for (int l = 0; l < GEMM_I8_PACKED_LANES; l++) {
#pragma HLS UNROLL
                    av[l] = a_buf[t].range(8 * l + 7, 8 * l);
                }
            columns:
                for (int p = 0; p < P; p++) {
#pragma HLS UNROLL
                    acc[p] += dot8(av, b_buf[p][g * kw + t]);
                }
            }
        write_c:
            for (int p = 0; p < P; p++) {
#pragma HLS PIPELINE II=1
                c[i * n + g * P + p] = acc[p].to_int();
            }
        }
    }
}
