// @NAME@: C = A x B on one @TILE@x@TILE@x@TILE@ int8 tile; see @NAME@.hpp for interface and cycle model.
#include "@NAME@.hpp"

void @NAME@(const int *in1, const int *in2, int *out) {
#pragma HLS INTERFACE mode=m_axi port=in1 offset=slave bundle=gmem0 depth=@DEPTH@ max_read_burst_length=256
#pragma HLS INTERFACE mode=m_axi port=in2 offset=slave bundle=gmem1 depth=@DEPTH@ max_read_burst_length=256
#pragma HLS INTERFACE mode=m_axi port=out offset=slave bundle=gmem2 depth=@DEPTH@ max_write_burst_length=256
#pragma HLS INTERFACE mode=s_axilite port=in1 bundle=CTRL
#pragma HLS INTERFACE mode=s_axilite port=in2 bundle=CTRL
#pragma HLS INTERFACE mode=s_axilite port=out bundle=CTRL
#pragma HLS INTERFACE mode=s_axilite port=return bundle=CTRL
    const int D = @UNAME@_DIM;

    // B stays on chip for the whole call; one bank per k so a column is read in one cycle.
    @NAME@_op_t b_tile[@UNAME@_DIM][@UNAME@_DIM];
#pragma HLS ARRAY_PARTITION variable=b_tile dim=1 type=complete
    @NAME@_op_t a_row[@UNAME@_DIM];
#pragma HLS ARRAY_PARTITION variable=a_row type=complete

load_b:
    for (int kk = 0; kk < D; kk++) {
        for (int j = 0; j < D; j++) {
#pragma HLS PIPELINE II=1
            b_tile[kk][j] = in2[kk * D + j];  // keeps the low 8 bits
        }
    }

rows:
    for (int i = 0; i < D; i++) {
    load_a:
        for (int kk = 0; kk < D; kk++) {
#pragma HLS PIPELINE II=1
            a_row[kk] = in1[i * D + kk];
        }
    cols:
        for (int j = 0; j < D; j++) {
#pragma HLS PIPELINE II=1
            @NAME@_acc_t acc = 0;
        dot:
            for (int kk = 0; kk < D; kk++) {
                @NAME@_prod_t prod = a_row[kk] * b_tile[kk][j];
#pragma HLS BIND_OP variable=prod op=mul impl=@IMPL@
                acc += prod;
            }
            out[i * D + j] = acc.to_int();
        }
    }
}
