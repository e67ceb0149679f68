// layernorm_rows: layer normalization over the last dim, float32, with eps and an affine weight and bias:
//   mean_r = sum_c x[r][c] / cols,  var_r = sum_c (x[r][c] - mean_r)^2 / cols,  rstd_r = 1 / sqrt(var_r + eps),
//   out[r][c] = (x[r][c] - mean_r) * rstd_r * weight[c] + bias[c];   mean and rstd are written per row.
//
// Binds aten::native_layer_norm over the last dim (normalized_shape of one dim; the host passes ones and
// zeros when weight or bias is None). One call takes rows <= LAYERNORM_ROWS_MAX_ROWS rows of
// cols <= LAYERNORM_ROWS_MAX_COLS floats. weight and bias are loaded once per call into on-chip buffers;
// per row three pipelined passes over a row buffer: read + sum; squared deviations; normalize + write.
// The sums run over x - x[r][0] (shifted data), so a row whose spread is small next to its mean keeps its
// precision (found by `pynqtorch verify`'s sweep: without the shift such rows lost 1e-4 absolute).
// Sums use LAYERNORM_ROWS_LANES interleaved partial sums (II = 1 despite the float adder's latency).
// NaN/Inf: a NaN or Inf in a row makes the row's out and rstd NaN (Inf - Inf), as in torch; its mean is
// NaN for a NaN and ±Inf for an Inf (torch's running mean gives NaN there: both non-finite).
//
// Cycle model (description.json perf.cycles), every pass at II = 1:
//   2*cols + rows * (3*cols + 70)   weight and bias, then three passes per row and about 70 cycles of
//                                   divide/sqrt/adder-tree latency per row
#ifndef LAYERNORM_ROWS_HPP
#define LAYERNORM_ROWS_HPP

#define LAYERNORM_ROWS_MAX_COLS 1024
#define LAYERNORM_ROWS_MAX_ROWS 64
#define LAYERNORM_ROWS_LANES 8

void layernorm_rows(const float *x, const float *weight, const float *bias, float *out, float *mean, float *rstd,
                    int rows, int cols, float eps);

#endif
