// softmax_rows: softmax over the last dim, float32: out[r][c] = exp(x[r][c] - max_r) / sum_c exp(x[r][c] - max_r).
//
// Binds aten::_softmax with dim = the last dim. One call takes rows <= SOFTMAX_ROWS_MAX_ROWS rows of
// cols <= SOFTMAX_ROWS_MAX_COLS floats (row-major). Per row, three pipelined passes over an on-chip row
// buffer (cols floats, one BRAM18 at the maximum): read + running max; exp(x - max) + sum; divide + write.
// The sum is kept in SOFTMAX_ROWS_LANES interleaved partial sums so the float adder's latency does not
// limit the loop to one element every few cycles; the lanes are added at the end of the row.
// NaN/Inf, as torch: a NaN anywhere in a row makes the row NaN; +Inf in a row gives NaN (Inf - Inf);
// a row of all -Inf gives NaN; other -Inf elements give 0.
//
// Cycle model (description.json perf.cycles), every pass at II = 1:
//   rows * (3*cols + 50)     three passes per row, about 50 cycles of exp/divide/adder-tree latency per row
#ifndef SOFTMAX_ROWS_HPP
#define SOFTMAX_ROWS_HPP

#define SOFTMAX_ROWS_MAX_COLS 1024
#define SOFTMAX_ROWS_MAX_ROWS 64
#define SOFTMAX_ROWS_LANES 8

void softmax_rows(const float *x, float *out, int rows, int cols);

#endif
