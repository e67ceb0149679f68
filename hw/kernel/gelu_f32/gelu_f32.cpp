// gelu_f32: GELU over a block of floats; see gelu_f32.hpp for semantics and cycle model.
#include <cmath>

#include "gelu_f32.hpp"

void gelu_f32(const float *x, float *out, int n) {
#pragma HLS INTERFACE mode=m_axi port=x offset=slave bundle=gmem0 depth=4096 max_read_burst_length=64
#pragma HLS INTERFACE mode=m_axi port=out offset=slave bundle=gmem1 depth=4096 max_write_burst_length=64
#pragma HLS INTERFACE mode=s_axilite port=x bundle=CTRL
#pragma HLS INTERFACE mode=s_axilite port=out bundle=CTRL
#pragma HLS INTERFACE mode=s_axilite port=n bundle=CTRL
#pragma HLS INTERFACE mode=s_axilite port=return bundle=CTRL
elements:
    for (int i = 0; i < n; i++) {
#pragma HLS PIPELINE II=1
#pragma HLS LOOP_TRIPCOUNT min=1 max=GELU_F32_BLOCK
        // Multiplies and the add in LUT fabric: the overlay's DSP48 slices go to the GEMM unit.
        float v = x[i];
        float t = v * 0.70710678118654752f;
#pragma HLS BIND_OP variable=t op=fmul impl=fabric
        float s = 1.0f + std::erf(t);
#pragma HLS BIND_OP variable=s op=fadd impl=fabric
        float h = 0.5f * v;
#pragma HLS BIND_OP variable=h op=fmul impl=fabric
        float o = h * s;
#pragma HLS BIND_OP variable=o op=fmul impl=fabric
        out[i] = o;
    }
}
