// gemm_i8_fabric: C = A x B on one 256x256x256 int8 tile; see gemm_i8_fabric.hpp for interface, architecture and cycle model.
#include "gemm_i8_fabric.hpp"

typedef gemm_i8_fabric_word_t word_t;
typedef gemm_i8_fabric_op_t op_t;
typedef gemm_i8_fabric_prod_t prod_t;
typedef gemm_i8_fabric_acc_t acc_t;

void gemm_i8_fabric(const word_t *in1, const word_t *in2, int *out) {
#pragma HLS INTERFACE mode=m_axi port=in1 offset=slave bundle=gmem0 depth=8192 max_read_burst_length=32 num_read_outstanding=4
#pragma HLS INTERFACE mode=m_axi port=in2 offset=slave bundle=gmem1 depth=8192 max_read_burst_length=64 num_read_outstanding=4
#pragma HLS INTERFACE mode=m_axi port=out offset=slave bundle=gmem2 depth=65536 max_write_burst_length=64 num_write_outstanding=4
#pragma HLS INTERFACE mode=s_axilite port=in1 bundle=CTRL
#pragma HLS INTERFACE mode=s_axilite port=in2 bundle=CTRL
#pragma HLS INTERFACE mode=s_axilite port=out bundle=CTRL
#pragma HLS INTERFACE mode=s_axilite port=return bundle=CTRL
    const int D = GEMM_I8_FABRIC_DIM;
    const int KW = GEMM_I8_FABRIC_KW;
    const int NB = GEMM_I8_FABRIC_BANKS;

    // B stays on chip for the whole call: word t of column j in bank t % 16 at (t / 16) * 256 + j.
    word_t b_buf[GEMM_I8_FABRIC_BANKS][GEMM_I8_FABRIC_BANK_DEPTH];
#pragma HLS ARRAY_PARTITION variable=b_buf dim=1 type=complete
    word_t a_row[GEMM_I8_FABRIC_KW];
#pragma HLS ARRAY_PARTITION variable=a_row type=complete

load_b:
    for (int x = 0; x < D * KW; x++) {
#pragma HLS PIPELINE II=1
        const int j = x / KW;
        const int t = x % KW;
        b_buf[t % NB][(t / NB) * D + j] = in2[x];
    }

rows:
    for (int i = 0; i < D; i++) {
    load_a:
        for (int t = 0; t < KW; t++) {
#pragma HLS PIPELINE II=1
            a_row[t] = in1[i * KW + t];
        }
        acc_t acc = 0;
    cols:
        for (int x = 0; x < 2 * D; x++) {
#pragma HLS PIPELINE II=1
            const int j = x / 2;
            const int h = x % 2;
            int s = 0;  // at most 128 * 2^14 in magnitude
        words:
            for (int w = 0; w < NB; w++) {
                const unsigned long long aw = a_row[h * NB + w].to_uint64();
                const unsigned long long bw = b_buf[w][h * D + j].to_uint64();
            lanes:
                for (int l = 0; l < GEMM_I8_FABRIC_LANES; l++) {
                    op_t av = (signed char)(aw >> (8 * l));  // lane l: bits 8l+7 .. 8l (constant shifts: wiring)
                    op_t bv = (signed char)(bw >> (8 * l));
                    prod_t prod = av * bv;
#pragma HLS BIND_OP variable=prod op=mul impl=fabric
                    s += prod.to_int();
                }
            }
            acc = (h == 0 ? (acc_t)0 : acc) + s;
            if (h == 1) {
                out[i * D + j] = acc.to_int();
            }
        }
    }
}
