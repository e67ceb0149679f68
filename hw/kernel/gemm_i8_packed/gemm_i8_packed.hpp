// gemm_i8_packed: int8 GEMM with runtime M, N, K, packed operands and on-chip K accumulation.
//
// One call computes C (m x n, int32, row-major) = A (m x k) x B (k x n), with
//   1 <= m <= 1024, n a multiple of 16 up to 256, k a multiple of 8 up to 1024 (s_axilite scalars).
// Operands are packed eight int8 per 64-bit word, i.e. one beat of a Zynq HP port:
//   a: A row-major, packed along K: word i*k/8 + t holds A[i][8t .. 8t+7], A[i][8t] in bits 7:0;
//   b: B transposed ("nk" layout, N x K row-major), packed along K: word j*k/8 + t holds B[8t .. 8t+7][j].
// so one beat of a row of A and one beat of a column of B feed eight multiply-accumulates.
//
// Architecture: the whole B block (up to 1024 x 256 int8 = 256 KiB, 64 BRAM36 of the 7020's 140) is
// loaded once into 16 banks (column j lives in bank j % 16) and stays on chip for all m rows of A.
// Per row: load the row of A (k/8 beats) into a small buffer, then for each group of 16 columns run a
// pipelined loop over the k/8 beats that does 16 x 8 = 128 MACs per cycle (128 multipliers on DSP48,
// within the 7020's 220), accumulating K entirely on chip in 32-bit wrapping accumulators, then write
// the 16 int32 results.
//
// Cycle model (description.json perf.cycles), every loop pipelined at II = 1, fill/drain latency and
// AXI burst set-up ignored as in the fixed 256-tile kernels' model:
//   load B          n*k/8            one 64-bit beat per cycle
//   per row of A    k/8              load the row
//                 + (n/16)*(k/8)     16 column groups, one beat of K per cycle
//                 + n                write 16 results per group, one per cycle
//   total = n*k/8 + m*(k/8 + n*k/128 + n)
// e.g. m = n = k = 256: 8,192 + 256 * (32 + 512 + 256) = 212,992 cycles (the fixed DSP tile: 196,608),
// but m = 1, k = 1024, n = 256: 32,768 + 2,432 = 35,200 cycles for work the fixed tile needs four
// padded 196,608-cycle calls for.
#ifndef GEMM_I8_PACKED_HPP
#define GEMM_I8_PACKED_HPP

#include "ap_int.h"

#define GEMM_I8_PACKED_LANES 8    // int8 operands per 64-bit word
#define GEMM_I8_PACKED_PAR 16     // output columns computed in parallel (the N tile)
#define GEMM_I8_PACKED_MAX_M 1024
#define GEMM_I8_PACKED_MAX_N 256
#define GEMM_I8_PACKED_MAX_K 1024

typedef ap_uint<64> gemm_i8_packed_word_t; // eight packed int8 operands
typedef ap_int<8> gemm_i8_packed_op_t;
typedef ap_int<16> gemm_i8_packed_prod_t;  // exact int8 x int8 product
typedef ap_int<19> gemm_i8_packed_sum8_t;  // exact sum of eight products
typedef ap_int<32> gemm_i8_packed_acc_t;   // accumulator, wraps modulo 2^32

void gemm_i8_packed(const gemm_i8_packed_word_t *a, const gemm_i8_packed_word_t *b, int *c, int m, int n,
                    int k);

#endif
