// softmax_rows: softmax over rows of floats; see softmax_rows.hpp for semantics and cycle model.
#include <cmath>

#include "softmax_rows.hpp"

void softmax_rows(const float *x, float *out, int rows, int cols) {
#pragma HLS INTERFACE mode=m_axi port=x offset=slave bundle=gmem0 depth=65536 max_read_burst_length=64
#pragma HLS INTERFACE mode=m_axi port=out offset=slave bundle=gmem1 depth=65536 max_write_burst_length=64
#pragma HLS INTERFACE mode=s_axilite port=x bundle=CTRL
#pragma HLS INTERFACE mode=s_axilite port=out bundle=CTRL
#pragma HLS INTERFACE mode=s_axilite port=rows bundle=CTRL
#pragma HLS INTERFACE mode=s_axilite port=cols bundle=CTRL
#pragma HLS INTERFACE mode=s_axilite port=return bundle=CTRL
    float buf[SOFTMAX_ROWS_MAX_COLS];
    float lanes[SOFTMAX_ROWS_LANES];
#pragma HLS ARRAY_PARTITION variable=lanes type=complete
row:
    for (int r = 0; r < rows; r++) {
#pragma HLS LOOP_TRIPCOUNT min=1 max=SOFTMAX_ROWS_MAX_ROWS
        const float *xr = x + r * cols;
        float *outr = out + r * cols;
        float mx = -INFINITY;
        bool nan = false;
    load:
        for (int c = 0; c < cols; c++) {
#pragma HLS PIPELINE II=1
#pragma HLS LOOP_TRIPCOUNT min=1 max=SOFTMAX_ROWS_MAX_COLS
            float v = xr[c];
            buf[c] = v;
            nan |= v != v;
            mx = v > mx ? v : mx;
        }
        if (nan) mx = NAN;
        for (int l = 0; l < SOFTMAX_ROWS_LANES; l++) lanes[l] = 0.0f;
    exponent:
        for (int c = 0; c < cols; c++) {
#pragma HLS PIPELINE II=1
#pragma HLS DEPENDENCE variable=lanes type=inter distance=SOFTMAX_ROWS_LANES true
#pragma HLS LOOP_TRIPCOUNT min=1 max=SOFTMAX_ROWS_MAX_COLS
            // Adds in LUT fabric: the overlay's DSP48 slices go to the GEMM unit.
            float d = buf[c] - mx;
#pragma HLS BIND_OP variable=d op=fsub impl=fabric
            float e = std::exp(d);
            buf[c] = e;
            float acc = lanes[c % SOFTMAX_ROWS_LANES] + e;
#pragma HLS BIND_OP variable=acc op=fadd impl=fabric
            lanes[c % SOFTMAX_ROWS_LANES] = acc;
        }
        float sum = 0.0f;
        for (int l = 0; l < SOFTMAX_ROWS_LANES; l++) sum += lanes[l];
    store:
        for (int c = 0; c < cols; c++) {
#pragma HLS PIPELINE II=1
#pragma HLS LOOP_TRIPCOUNT min=1 max=SOFTMAX_ROWS_MAX_COLS
            outr[c] = buf[c] / sum;
        }
    }
}
