// gemm_i8_dsp: one fixed 256x256x256 int8 GEMM tile, int32 results, multipliers bound to DSP48 slices.
//
// Interface (AXI4-Lite bundle CTRL, registers as Vitis HLS generates them):
//   0x00 ap_ctrl   0x10 in1 (A, 256x256 row-major)   0x1c in2 (B, 256x256 row-major)   0x28 out (C)
// Every port is a 32-bit int per element; the kernel uses the low 8 bits of each A/B word as a signed
// operand and writes the int32 accumulator (wrapping, two's complement) to C.
//
// Cycle model (description.json perf.cycles = "k*n + m*(k + n)"): load the B tile once at one word per
// cycle (k*n = 65,536), then per row of A load the row (k = 256) and produce one output per cycle with
// a fully unrolled 256-MAC dot product (n = 256): 65,536 + 256 * 512 = 196,608 cycles per call.
#ifndef GEMM_I8_DSP_HPP
#define GEMM_I8_DSP_HPP

#include "ap_int.h"

#define GEMM_I8_DSP_DIM 256

typedef ap_int<8> gemm_i8_dsp_op_t;    // operand: low 8 bits of an int word
typedef ap_int<16> gemm_i8_dsp_prod_t; // exact int8 x int8 product
typedef ap_int<32> gemm_i8_dsp_acc_t;  // accumulator, wraps modulo 2^32

void gemm_i8_dsp(const int *in1, const int *in2, int *out);

#endif
