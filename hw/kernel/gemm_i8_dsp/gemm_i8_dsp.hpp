// gemm_i8_dsp: one fixed 256x256x256 int8 GEMM tile, int32 results, multipliers bound to DSP48E1 slices.
//
// Interface (AXI4-Lite bundle CTRL, registers as Vitis HLS generates them):
//   0x00 ap_ctrl   0x10 in1 (A)   0x1c in2 (B)   0x28 out (C, 256x256 int32 row-major)
// Operands are packed eight int8 per 64-bit word (one beat of a Zynq HP port), lane 0 in bits 7:0:
//   in1: A row-major packed along K: word i*32 + t holds A[i][8t .. 8t+7];
//   in2: B transposed (N x K) packed along K: word j*32 + t holds B[8t .. 8t+7][j].
// The accumulator is int32 and wraps (two's complement).
//
// Architecture: B stays on chip in 16 banks of 64-bit words (word t of column j in bank t % 16), i.e.
// 16 x 512 x 64 bits = 32 BRAM18. Per row of A: load the row (32 beats), then one pipelined loop over
// (column j, half h of K) does 16 words x 8 lanes = 128 MACs per cycle (128 DSP48E1), one output every
// two cycles, written in one burst per row.
//
// Cycle model (description.json perf.terms): load B (8,192 beats + read latency), then per row: read
// latency + 32 beats of A + 512 compute cycles + pipeline depth + the row's write response; about
// 171 K cycles per call.
#ifndef GEMM_I8_DSP_HPP
#define GEMM_I8_DSP_HPP

#include "ap_int.h"

#define GEMM_I8_DSP_DIM 256
#define GEMM_I8_DSP_LANES 8
#define GEMM_I8_DSP_KW 32     // words per row of A / column of B
#define GEMM_I8_DSP_BANKS 16  // words of K read per cycle (half a column)
#define GEMM_I8_DSP_BANK_DEPTH 512

typedef ap_uint<64> gemm_i8_dsp_word_t; // eight packed int8 operands
typedef ap_int<8> gemm_i8_dsp_op_t;
typedef ap_int<16> gemm_i8_dsp_prod_t;  // exact int8 x int8 product
typedef ap_int<32> gemm_i8_dsp_acc_t;   // accumulator, wraps modulo 2^32

void gemm_i8_dsp(const gemm_i8_dsp_word_t *in1, const gemm_i8_dsp_word_t *in2, int *out);

#endif
