// gelu_f32: element-wise GELU, out[i] = x[i] * Phi(x[i]) = 0.5 * x[i] * (1 + erf(x[i] / sqrt(2))), float32.
//
// Binds aten::gelu with approximate="none" (torch's default). One call reads n <= GELU_F32_BLOCK floats of x
// and writes n floats of out, streaming (no on-chip buffer): a pipelined loop at II = 1 with the erf and the
// multiplies in single-precision cores.
// NaN/Inf: computed as written: NaN -> NaN, +Inf -> +Inf, -Inf -> NaN (-Inf * 0), large negative x -> -0.
// torch's CPU kernel agrees except at the limits: gelu(+Inf) is NaN there and x near FLT_MAX overflows to
// +Inf (it forms x * (1 + erf) first); this kernel returns +Inf and x. Both are non-finite at +Inf, which
// is what verify checks; the verified extremes stop at 1e30.
//
// Cycle model (description.json perf.cycles), fill latency of the float pipeline included:
//   n + 60      one element per cycle after about 60 cycles of erf/multiply latency
#ifndef GELU_F32_HPP
#define GELU_F32_HPP

#define GELU_F32_BLOCK 4096

void gelu_f32(const float *x, float *out, int n);

#endif
