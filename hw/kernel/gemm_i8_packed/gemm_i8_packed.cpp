// gemm_i8_packed: C = A x B with runtime m, n, k; see gemm_i8_packed.hpp for layout, architecture and cycle model.
#include "gemm_i8_packed.hpp"

typedef gemm_i8_packed_word_t word_t;
typedef gemm_i8_packed_cvec_t cvec_t;
typedef gemm_i8_packed_op_t op_t;
typedef gemm_i8_packed_prod_t prod_t;
typedef gemm_i8_packed_pair_t pair_t;
typedef gemm_i8_packed_dsp_t dsp_t;
typedef gemm_i8_packed_sum8_t sum8_t;
typedef gemm_i8_packed_acc_t acc_t;

// Dot products of eight A operands with lanes of two B words (columns 2q, 2q+1), two products per multiply:
// p = (y1 * 2^16 + y0) * x = y1*x * 2^16 + y0*x with |y0*x| <= 2^14, so the low 16 bits of p, signed, are
// y0*x and (p >> 16) + p[15] (undoing the borrow of a negative low product) is y1*x, both exact.
static void dsp_pair(const op_t x[GEMM_I8_PACKED_LANES], word_t y0, word_t y1, sum8_t &s0, sum8_t &s1) {
#pragma HLS INLINE
    sum8_t t0 = 0;
    sum8_t t1 = 0;
    const unsigned long long w0 = y0.to_uint64();
    const unsigned long long w1 = y1.to_uint64();
lanes:
    for (int l = 0; l < GEMM_I8_PACKED_LANES; l++) {
#pragma HLS UNROLL
        const signed char lo = (signed char)(w0 >> (8 * l));  // lane l: bits 8l+7 .. 8l (wiring)
        const signed char hi = (signed char)(w1 >> (8 * l));
        pair_t w = hi * 65536 + lo;
        op_t xl = x[l];
        dsp_t p = w * xl;
#pragma HLS BIND_OP variable=p op=mul impl=dsp
        const long long pv = p.to_int64();
        prod_t p0 = (short)pv;                              // low 16 bits, signed
        prod_t p1 = (short)((pv >> 16) + ((pv >> 15) & 1)); // undo the borrow of a negative low product
        t0 += p0;
        t1 += p1;
    }
    s0 = t0;
    s1 = t1;
}

static void load_b(const word_t *b, word_t b_buf[GEMM_I8_PACKED_PAR][GEMM_I8_PACKED_B_DEPTH], int n, int kw) {
    // Column j = g * 32 + p goes to bank p at (g * kw + t); the whole of B is one burst stream.
    int p = 0;
    int base = 0;
    int t = 0;
words:
    for (int x = 0; x < n * kw; x++) {
#pragma HLS LOOP_TRIPCOUNT max=32768
#pragma HLS PIPELINE II=1
        b_buf[p][base + t] = b[x];
        if (t == kw - 1) {
            t = 0;
            if (p == GEMM_I8_PACKED_PAR - 1) {
                p = 0;
                base += kw;
            } else {
                p++;
            }
        } else {
            t++;
        }
    }
}

static void read_a(const word_t *a, hls::stream<word_t> &a_s, int m, int kw) {
beats:
    for (int x = 0; x < m * kw; x++) {
#pragma HLS LOOP_TRIPCOUNT max=131072
#pragma HLS PIPELINE II=1
        a_s.write(a[x]);
    }
}

static void compute(hls::stream<word_t> &a_s, const word_t b_buf[GEMM_I8_PACKED_PAR][GEMM_I8_PACKED_B_DEPTH],
                    hls::stream<cvec_t> &c_s, int m, int n, int kw) {
    word_t a_row[GEMM_I8_PACKED_MAX_KW];
    acc_t acc[GEMM_I8_PACKED_PAR];
#pragma HLS ARRAY_PARTITION variable=acc type=complete
    const int groups = n / GEMM_I8_PACKED_PAR;
    int t = 0;
    int g = 0;
    // One flat pipelined loop over (row, group of 32 columns, beat of K): no refill per row or group.
steps:
    for (int x = 0; x < m * groups * kw; x++) {
#pragma HLS LOOP_TRIPCOUNT max=1048576
#pragma HLS PIPELINE II=1
        word_t aw;
        if (g == 0) {
            aw = a_s.read();  // the first group of a row reads the row from the stream and keeps it
            a_row[t] = aw;
        } else {
            aw = a_row[t];
        }
        op_t av[GEMM_I8_PACKED_LANES];
#pragma HLS ARRAY_PARTITION variable=av type=complete
        const unsigned long long aw64 = aw.to_uint64();
    split_a:
        for (int l = 0; l < GEMM_I8_PACKED_LANES; l++) {
            av[l] = (op_t)(aw64 >> (8 * l));
        }
    pairs:
        for (int q = 0; q < GEMM_I8_PACKED_PAIRS; q++) {
#pragma HLS UNROLL
            sum8_t s0, s1;
            dsp_pair(av, b_buf[2 * q][g * kw + t], b_buf[2 * q + 1][g * kw + t], s0, s1);
            acc[2 * q] = (t == 0 ? (acc_t)0 : acc[2 * q]) + s0;
            acc[2 * q + 1] = (t == 0 ? (acc_t)0 : acc[2 * q + 1]) + s1;
        }
        if (t == kw - 1) {
            cvec_t out = 0;
        pack_c:
            for (int p = 0; p < GEMM_I8_PACKED_PAR; p++) {
                out.range(32 * p + 31, 32 * p) = acc[p].range(31, 0);
            }
            c_s.write(out);
            t = 0;
            g = (g == groups - 1) ? 0 : g + 1;
        } else {
            t++;
        }
    }
}

static void write_c(hls::stream<cvec_t> &c_s, int *c, int m, int n) {
    cvec_t v = 0;
    int p = 0;
    // All of C is contiguous (row-major, n per row): one burst stream, every row written in one burst.
words:
    for (int x = 0; x < m * n; x++) {
#pragma HLS LOOP_TRIPCOUNT max=262144
#pragma HLS PIPELINE II=1
        if (p == 0) {
            v = c_s.read();
        }
        c[x] = (int)(ap_int<32>)v.range(31, 0);
        v >>= 32;
        p = (p == GEMM_I8_PACKED_PAR - 1) ? 0 : p + 1;
    }
}

static void rows(const word_t *a, const word_t b_buf[GEMM_I8_PACKED_PAR][GEMM_I8_PACKED_B_DEPTH], int *c, int m,
                 int n, int kw) {
#pragma HLS DATAFLOW
    hls::stream<word_t> a_s;
#pragma HLS STREAM variable=a_s depth=256
    hls::stream<cvec_t> c_s;
#pragma HLS STREAM variable=c_s depth=2
    read_a(a, a_s, m, kw);
    compute(a_s, b_buf, c_s, m, n, kw);
    write_c(c_s, c, m, n);
}

void gemm_i8_packed(const word_t *a, const word_t *b, int *c, int m, int n, int k) {
#pragma HLS INTERFACE mode=m_axi port=a offset=slave bundle=gmem0 depth=131072 max_read_burst_length=64 num_read_outstanding=4
#pragma HLS INTERFACE mode=m_axi port=b offset=slave bundle=gmem1 depth=32768 max_read_burst_length=64 num_read_outstanding=4
#pragma HLS INTERFACE mode=m_axi port=c offset=slave bundle=gmem2 depth=262144 max_write_burst_length=64 num_write_outstanding=4
#pragma HLS INTERFACE mode=s_axilite port=a bundle=CTRL
#pragma HLS INTERFACE mode=s_axilite port=b bundle=CTRL
#pragma HLS INTERFACE mode=s_axilite port=c bundle=CTRL
#pragma HLS INTERFACE mode=s_axilite port=m bundle=CTRL
#pragma HLS INTERFACE mode=s_axilite port=n bundle=CTRL
#pragma HLS INTERFACE mode=s_axilite port=k bundle=CTRL
#pragma HLS INTERFACE mode=s_axilite port=return bundle=CTRL
    const int kw = k / GEMM_I8_PACKED_LANES;  // words per row of A and per column of B
    word_t b_buf[GEMM_I8_PACKED_PAR][GEMM_I8_PACKED_B_DEPTH];
#pragma HLS ARRAY_PARTITION variable=b_buf dim=1 type=complete
    load_b(b, b_buf, n, kw);
    rows(a, b_buf, c, m, n, kw);
}
