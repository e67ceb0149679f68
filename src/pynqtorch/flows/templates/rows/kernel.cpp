// @NAME@: @OP@ over rows of floats; see @NAME@.hpp.
#include <cmath>

#include "@NAME@.hpp"

void @NAME@(const float *x, float *out, int rows, int cols) {
#pragma HLS INTERFACE mode=m_axi port=x offset=slave bundle=gmem0 depth=65536 max_read_burst_length=64
#pragma HLS INTERFACE mode=m_axi port=out offset=slave bundle=gmem1 depth=65536 max_write_burst_length=64
#pragma HLS INTERFACE mode=s_axilite port=x bundle=CTRL
#pragma HLS INTERFACE mode=s_axilite port=out bundle=CTRL
#pragma HLS INTERFACE mode=s_axilite port=rows bundle=CTRL
#pragma HLS INTERFACE mode=s_axilite port=cols bundle=CTRL
#pragma HLS INTERFACE mode=s_axilite port=return bundle=CTRL
    float buf[@UNAME@_MAX_COLS];
    float lanes[@UNAME@_LANES];
#pragma HLS ARRAY_PARTITION variable=lanes type=complete
row:
    for (int r = 0; r < rows; r++) {
#pragma HLS LOOP_TRIPCOUNT min=1 max=@UNAME@_MAX_ROWS
        const float *xr = x + r * cols;
        float *outr = out + r * cols;
        float mx = -INFINITY;
        bool nan = false;
    load:
        for (int c = 0; c < cols; c++) {
#pragma HLS PIPELINE II=1
#pragma HLS LOOP_TRIPCOUNT min=1 max=@UNAME@_MAX_COLS
            float v = xr[c];
            buf[c] = v;
            nan |= v != v;
            mx = v > mx ? v : mx;
        }
        if (nan) mx = NAN;
        for (int l = 0; l < @UNAME@_LANES; l++) lanes[l] = 0.0f;
    exponent:
        for (int c = 0; c < cols; c++) {
#pragma HLS PIPELINE II=1
#pragma HLS DEPENDENCE variable=lanes type=inter distance=@UNAME@_LANES true
#pragma HLS LOOP_TRIPCOUNT min=1 max=@UNAME@_MAX_COLS
            float d = buf[c] - mx;
            buf[c] = d;
            lanes[c % @UNAME@_LANES] += std::exp(d);
        }
        float sum = 0.0f;
        for (int l = 0; l < @UNAME@_LANES; l++) sum += lanes[l];
        @ROW@
    store:
        for (int c = 0; c < cols; c++) {
#pragma HLS PIPELINE II=1
#pragma HLS LOOP_TRIPCOUNT min=1 max=@UNAME@_MAX_COLS
            float d = buf[c];
            outr[c] = @STORE@;
        }
    }
}
