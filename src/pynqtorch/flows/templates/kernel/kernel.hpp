// @NAME@: one fixed @TILE@x@TILE@x@TILE@ int8 GEMM tile, int32 results, multipliers built from @IMPL_TEXT@.
//
// Interface (AXI4-Lite bundle CTRL, registers as Vitis HLS generates them):
//   0x00 ap_ctrl   0x10 in1 (A, @TILE@x@TILE@ row-major)   0x1c in2 (B, @TILE@x@TILE@ row-major)   0x28 out (C)
// Every port is a 32-bit int per element; the kernel uses the low 8 bits of each A/B word as a signed
// operand and writes the int32 accumulator (wrapping, two's complement) to C.
//
// Cycle model (description.json perf.cycles = "k*n + m*(k + n)"): load the B tile once at one word per
// cycle, then per row of A load the row and produce one output per cycle with a fully unrolled dot product.
#ifndef @UNAME@_HPP
#define @UNAME@_HPP

#include "ap_int.h"

#define @UNAME@_DIM @TILE@

typedef ap_int<8> @NAME@_op_t;    // operand: low 8 bits of an int word
typedef ap_int<16> @NAME@_prod_t; // exact int8 x int8 product
typedef ap_int<32> @NAME@_acc_t;  // accumulator, wraps modulo 2^32

void @NAME@(const int *in1, const int *in2, int *out);

#endif
