// layernorm_rows: layer norm over rows of floats; see layernorm_rows.hpp for semantics and cycle model.
#include <cmath>

#include "layernorm_rows.hpp"

static float lane_sum(const float lanes[LAYERNORM_ROWS_LANES]) {
#pragma HLS INLINE
    float s = 0.0f;
    for (int l = 0; l < LAYERNORM_ROWS_LANES; l++) s += lanes[l];
    return s;
}

void layernorm_rows(const float *x, const float *weight, const float *bias, float *out, float *mean, float *rstd,
                    int rows, int cols, float eps) {
#pragma HLS INTERFACE mode=m_axi port=x offset=slave bundle=gmem0 depth=65536 max_read_burst_length=64
#pragma HLS INTERFACE mode=m_axi port=weight offset=slave bundle=gmem0 depth=1024 max_read_burst_length=64
#pragma HLS INTERFACE mode=m_axi port=bias offset=slave bundle=gmem0 depth=1024 max_read_burst_length=64
#pragma HLS INTERFACE mode=m_axi port=out offset=slave bundle=gmem1 depth=65536 max_write_burst_length=64
#pragma HLS INTERFACE mode=m_axi port=mean offset=slave bundle=gmem1 depth=64
#pragma HLS INTERFACE mode=m_axi port=rstd offset=slave bundle=gmem1 depth=64
#pragma HLS INTERFACE mode=s_axilite port=x bundle=CTRL
#pragma HLS INTERFACE mode=s_axilite port=weight bundle=CTRL
#pragma HLS INTERFACE mode=s_axilite port=bias bundle=CTRL
#pragma HLS INTERFACE mode=s_axilite port=out bundle=CTRL
#pragma HLS INTERFACE mode=s_axilite port=mean bundle=CTRL
#pragma HLS INTERFACE mode=s_axilite port=rstd bundle=CTRL
#pragma HLS INTERFACE mode=s_axilite port=rows bundle=CTRL
#pragma HLS INTERFACE mode=s_axilite port=cols bundle=CTRL
#pragma HLS INTERFACE mode=s_axilite port=eps bundle=CTRL
#pragma HLS INTERFACE mode=s_axilite port=return bundle=CTRL
    float w[LAYERNORM_ROWS_MAX_COLS], b[LAYERNORM_ROWS_MAX_COLS], buf[LAYERNORM_ROWS_MAX_COLS];
    float lanes[LAYERNORM_ROWS_LANES];
#pragma HLS ARRAY_PARTITION variable=lanes type=complete
affine:
    for (int c = 0; c < cols; c++) {
#pragma HLS PIPELINE II=1
#pragma HLS LOOP_TRIPCOUNT min=1 max=LAYERNORM_ROWS_MAX_COLS
        w[c] = weight[c];
        b[c] = bias[c];
    }
    const float inv_cols = 1.0f / cols;
row:
    for (int r = 0; r < rows; r++) {
#pragma HLS LOOP_TRIPCOUNT min=1 max=LAYERNORM_ROWS_MAX_ROWS
        const float *xr = x + r * cols;
        float *outr = out + r * cols;
        // Sums of x - x[0] (the row's first element): rows whose spread is small next to their mean keep
        // their precision (x - x0 is exact for x within a factor of two of x0).
        const float x0 = xr[0];
        for (int l = 0; l < LAYERNORM_ROWS_LANES; l++) lanes[l] = 0.0f;
    load:
        for (int c = 0; c < cols; c++) {
#pragma HLS PIPELINE II=1
#pragma HLS DEPENDENCE variable=lanes type=inter distance=LAYERNORM_ROWS_LANES true
#pragma HLS LOOP_TRIPCOUNT min=1 max=LAYERNORM_ROWS_MAX_COLS
            // Float operators in LUT fabric: the overlay's DSP48 slices go to the GEMM unit.
            float v = xr[c] - x0;
#pragma HLS BIND_OP variable=v op=fsub impl=fabric
            buf[c] = v;
            float acc = lanes[c % LAYERNORM_ROWS_LANES] + v;
#pragma HLS BIND_OP variable=acc op=fadd impl=fabric
            lanes[c % LAYERNORM_ROWS_LANES] = acc;
        }
        const float mu = lane_sum(lanes) * inv_cols;  // mean of the shifted row
        for (int l = 0; l < LAYERNORM_ROWS_LANES; l++) lanes[l] = 0.0f;
    deviation:
        for (int c = 0; c < cols; c++) {
#pragma HLS PIPELINE II=1
#pragma HLS DEPENDENCE variable=lanes type=inter distance=LAYERNORM_ROWS_LANES true
#pragma HLS LOOP_TRIPCOUNT min=1 max=LAYERNORM_ROWS_MAX_COLS
            float d = buf[c] - mu;
#pragma HLS BIND_OP variable=d op=fsub impl=fabric
            buf[c] = d;
            float sq = d * d;
#pragma HLS BIND_OP variable=sq op=fmul impl=fabric
            float acc = lanes[c % LAYERNORM_ROWS_LANES] + sq;
#pragma HLS BIND_OP variable=acc op=fadd impl=fabric
            lanes[c % LAYERNORM_ROWS_LANES] = acc;
        }
        const float rs = 1.0f / std::sqrt(lane_sum(lanes) * inv_cols + eps);
    store:
        for (int c = 0; c < cols; c++) {
#pragma HLS PIPELINE II=1
#pragma HLS LOOP_TRIPCOUNT min=1 max=LAYERNORM_ROWS_MAX_COLS
            float n = buf[c] * rs;
#pragma HLS BIND_OP variable=n op=fmul impl=fabric
            float a = n * w[c];
#pragma HLS BIND_OP variable=a op=fmul impl=fabric
            float o = a + b[c];
#pragma HLS BIND_OP variable=o op=fadd impl=fabric
            outr[c] = o;
        }
        mean[r] = x0 + mu;
        rstd[r] = rs;
    }
}
