// gemm_i8_packed: int8 GEMM with runtime M, N, K, packed operands, on-chip K accumulation and two int8
// multiply-accumulates per DSP48E1.
//
// One call computes C (m x n, int32, row-major) = A (m x k) x B (k x n), with
//   1 <= m <= 1024, n a multiple of 32 up to 256, k a multiple of 8 up to 1024 (s_axilite scalars).
// Operands are packed eight int8 per 64-bit word, i.e. one beat of a Zynq HP port:
//   a: A row-major, packed along K: word i*k/8 + t holds A[i][8t .. 8t+7], A[i][8t] in bits 7:0;
//   b: B transposed ("nk" layout, N x K row-major), packed along K: word j*k/8 + t holds B[8t .. 8t+7][j].
//
// Architecture (the numbers `pynqtorch fit gemm_i8_packed` estimates):
// * B (up to 256 x 1024 int8 = 256 KiB) is loaded once per call into 32 banks of 64-bit words (column j
//   in bank j % 32): 32 x 1024 x 64 bits = 128 BRAM18 of the 7020's 280.
// * A DATAFLOW region runs three processes concurrently: `read_a` streams all of A in one long burst
//   (a FIFO of two rows double-buffers it), `compute` does 32 columns x 8 lanes = 256 MACs per cycle,
//   `write_c` writes C, every row in one burst. `compute` is one pipelined loop over rows, groups of 32
//   columns and beats of K, so the pipeline fills once per call, not per row or group.
// * Two int8 products per DSP48E1: columns 2q and 2q+1 share the A operand, so one 25 x 18 multiply
//   (B[2q+1] * 2^16 + B[2q]) * A gives both products (`dsp_pair`): 16 pairs x 8 lanes = 128 DSP48E1.
//
// Cycle model (description.json perf.terms, AXI parameters in perf.params), one call:
//   start      s_axilite start/done handshake and dataflow start
//   load_b     n*k/8 beats, one burst stream, plus one read latency
//   compute    m*(n/32)*(k/8): one beat of K for 32 columns per cycle
//   c_stall    when writing C (n words per row) is slower than computing the row (k < 256)
//   fill       first A row's read latency + its beats, pipeline depth, last row's write and response
// e.g. m = n = k = 256: 8,192 + 65,536 + fill; 1024^3 in four calls of 1024 x 256 x 1024: ~4.33 M cycles.
#ifndef GEMM_I8_PACKED_HPP
#define GEMM_I8_PACKED_HPP

#include "ap_int.h"
#include "hls_stream.h"

#define GEMM_I8_PACKED_LANES 8    // int8 operands per 64-bit word
#define GEMM_I8_PACKED_PAR 32     // output columns computed in parallel (the N tile)
#define GEMM_I8_PACKED_PAIRS 16   // column pairs, one DSP48E1 per pair and lane
#define GEMM_I8_PACKED_MAX_M 1024
#define GEMM_I8_PACKED_MAX_N 256
#define GEMM_I8_PACKED_MAX_K 1024
#define GEMM_I8_PACKED_MAX_KW 128 // GEMM_I8_PACKED_MAX_K / GEMM_I8_PACKED_LANES
#define GEMM_I8_PACKED_B_DEPTH 1024 // words per bank: MAX_N / PAR * MAX_KW

typedef ap_uint<64> gemm_i8_packed_word_t;   // eight packed int8 operands
typedef ap_uint<1024> gemm_i8_packed_cvec_t; // 32 int32 results of one column group
typedef ap_int<8> gemm_i8_packed_op_t;
typedef ap_int<16> gemm_i8_packed_prod_t;    // exact int8 x int8 product
typedef ap_int<25> gemm_i8_packed_pair_t;    // two int8 operands: hi * 2^16 + lo (DSP48E1 A port)
typedef ap_int<33> gemm_i8_packed_dsp_t;     // 25 x 8-bit product
typedef ap_int<19> gemm_i8_packed_sum8_t;    // exact sum of eight products
typedef ap_int<32> gemm_i8_packed_acc_t;     // accumulator, wraps modulo 2^32

void gemm_i8_packed(const gemm_i8_packed_word_t *a, const gemm_i8_packed_word_t *b, int *c, int m, int n,
                    int k);

#endif
