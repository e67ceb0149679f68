// @NAME@: element-wise @OP@ over a block of floats; see @NAME@.hpp.
#include <cmath>

#include "@NAME@.hpp"

void @NAME@(const float *x, float *out, int n) {
#pragma HLS INTERFACE mode=m_axi port=x offset=slave bundle=gmem0 depth=4096 max_read_burst_length=64
#pragma HLS INTERFACE mode=m_axi port=out offset=slave bundle=gmem1 depth=4096 max_write_burst_length=64
#pragma HLS INTERFACE mode=s_axilite port=x bundle=CTRL
#pragma HLS INTERFACE mode=s_axilite port=out bundle=CTRL
#pragma HLS INTERFACE mode=s_axilite port=n bundle=CTRL
#pragma HLS INTERFACE mode=s_axilite port=return bundle=CTRL
elements:
    for (int i = 0; i < n; i++) {
#pragma HLS PIPELINE II=1
#pragma HLS LOOP_TRIPCOUNT min=1 max=@UNAME@_BLOCK
        float v = x[i];
        out[i] = @EXPR@;
    }
}
