/* Template body of fp_math.h: included once per floating type. Do not include directly. */
#define FN(name) CAT(name, SFX)

/* sigmoid without overflow for any finite z: exp of a non-positive number only. */
static inline TYPE FN(fp_sigmoid)(TYPE z)
{
    TYPE e = EXP(-FABS(z));
    TYPE r = (TYPE)1 / ((TYPE)1 + e);
    return z >= 0 ? r : e * r;
}

/* a := g(z) elementwise over n values, for every code but softmax. */
static FP_CLONES void FN(fp_act_forward)(int code, const TYPE *z, TYPE *a, ptrdiff_t n)
{
    ptrdiff_t i;
    const TYPE slope = (TYPE)FP_LEAKY_SLOPE, thr = (TYPE)FP_SOFTPLUS_THRESHOLD;
    const TYPE inv_sqrt2 = (TYPE)0.70710678118654752440;
    switch (code) {
    case FP_RELU:
        for (i = 0; i < n; i++) a[i] = z[i] > 0 ? z[i] : (TYPE)0;
        break;
    case FP_LEAKY_RELU:
        for (i = 0; i < n; i++) {
            TYPE v = z[i];
            a[i] = v > 0 ? v : slope * v;
        }
        break;
    case FP_ELU: /* expm1 of min(z, 0): never overflows */
        for (i = 0; i < n; i++) {
            TYPE neg = z[i] < 0 ? z[i] : (TYPE)0;
            a[i] = z[i] > 0 ? z[i] : EXPM1(neg);
        }
        break;
    case FP_GELU: /* exact form z * Phi(z); Phi(z) = erfc(-z / sqrt 2) / 2 keeps the lower tail */
        for (i = 0; i < n; i++) a[i] = (TYPE)0.5 * z[i] * ERFC(-z[i] * inv_sqrt2);
        break;
    case FP_SIGMOID:
        for (i = 0; i < n; i++) a[i] = FN(fp_sigmoid)(z[i]);
        break;
    case FP_TANH:
        for (i = 0; i < n; i++) a[i] = TANH(z[i]);
        break;
    case FP_SOFTPLUS: /* log1p(exp(z)) below the threshold, z above it (as PyTorch) */
        for (i = 0; i < n; i++) {
            TYPE zc = z[i] < thr ? z[i] : thr;
            TYPE s = LOG1P(EXP(zc));
            a[i] = z[i] > thr ? z[i] : s;
        }
        break;
    case FP_SILU:
        for (i = 0; i < n; i++) a[i] = z[i] * FN(fp_sigmoid)(z[i]);
        break;
    default: /* identity */
        if (a != z)
            for (i = 0; i < n; i++) a[i] = z[i];
        break;
    }
}

/* dz := da * g'(z) elementwise, for every code but softmax; a = g(z) is given too so that
 * sigmoid and tanh reuse it instead of recomputing. */
static FP_CLONES void FN(fp_act_backward)(int code, const TYPE *z, const TYPE *a, const TYPE *da, TYPE *dz,
                                ptrdiff_t n)
{
    ptrdiff_t i;
    const TYPE slope = (TYPE)FP_LEAKY_SLOPE, thr = (TYPE)FP_SOFTPLUS_THRESHOLD;
    const TYPE inv_sqrt2 = (TYPE)0.70710678118654752440;
    const TYPE inv_sqrt2pi = (TYPE)0.39894228040143267794;
    switch (code) {
    case FP_RELU: /* da loaded unconditionally: a conditional load kept gcc from if-converting
                   * and vectorizing, and the branchy loop was 10 % of a digits training run */
        for (i = 0; i < n; i++) {
            TYPE d = da[i];
            dz[i] = z[i] > 0 ? d : (TYPE)0;
        }
        break;
    case FP_LEAKY_RELU:
        for (i = 0; i < n; i++) {
            TYPE d = da[i];
            dz[i] = z[i] > 0 ? d : slope * d;
        }
        break;
    case FP_ELU: /* g' = exp(z) for z <= 0 (exp(z), not a + 1: exact for very negative z) */
        for (i = 0; i < n; i++) {
            TYPE neg = z[i] < 0 ? z[i] : (TYPE)0;
            dz[i] = z[i] > 0 ? da[i] : da[i] * EXP(neg);
        }
        break;
    case FP_GELU: /* Phi(z) + z * phi(z) */
        for (i = 0; i < n; i++) {
            TYPE cdf = (TYPE)0.5 * ERFC(-z[i] * inv_sqrt2);
            TYPE pdf = inv_sqrt2pi * EXP((TYPE)-0.5 * z[i] * z[i]);
            dz[i] = da[i] * (cdf + z[i] * pdf);
        }
        break;
    case FP_SIGMOID:
        for (i = 0; i < n; i++) dz[i] = da[i] * a[i] * ((TYPE)1 - a[i]);
        break;
    case FP_TANH:
        for (i = 0; i < n; i++) dz[i] = da[i] * ((TYPE)1 - a[i] * a[i]);
        break;
    case FP_SOFTPLUS:
        for (i = 0; i < n; i++) dz[i] = z[i] > thr ? da[i] : da[i] * FN(fp_sigmoid)(z[i]);
        break;
    case FP_SILU: /* s * (1 + z * (1 - s)) */
        for (i = 0; i < n; i++) {
            TYPE s = FN(fp_sigmoid)(z[i]);
            dz[i] = da[i] * s * ((TYPE)1 + z[i] * ((TYPE)1 - s));
        }
        break;
    default: /* identity */
        if (dz != da)
            for (i = 0; i < n; i++) dz[i] = da[i];
        break;
    }
}

/* a := softmax(z) row by row, (rows x cols) row-major; shifted by the row max, so exp never
 * overflows and the row sum is >= 1. */
static FP_CLONES void FN(fp_softmax_forward)(const TYPE *z, TYPE *a, ptrdiff_t rows,
                                             ptrdiff_t cols)
{
    ptrdiff_t r, j;
    for (r = 0; r < rows; r++) {
        const TYPE *zr = z + r * cols;
        TYPE *ar = a + r * cols, m = zr[0];
        for (j = 1; j < cols; j++) m = zr[j] > m ? zr[j] : m;
        for (j = 0; j < cols; j++) ar[j] = zr[j] - m;
    }
    /* one flat loop over the block: it vectorizes however short the rows are */
    for (j = 0; j < rows * cols; j++) a[j] = SOFTMAX_EXP(a[j]);
    for (r = 0; r < rows; r++) {
        TYPE *ar = a + r * cols, s = 0;
        for (j = 0; j < cols; j++) s += ar[j];
        s = (TYPE)1 / s;
        for (j = 0; j < cols; j++) ar[j] *= s;
    }
}

/* dz := a * (da - sum_j(da * a)) row by row: the softmax Jacobian-vector product. */
static FP_CLONES void FN(fp_softmax_backward)(const TYPE *a, const TYPE *da, TYPE *dz, ptrdiff_t rows,
                                    ptrdiff_t cols)
{
    ptrdiff_t r, j;
    for (r = 0; r < rows; r++) {
        const TYPE *ar = a + r * cols, *dar = da + r * cols;
        TYPE *dzr = dz + r * cols;
        double dot = 0;
        for (j = 0; j < cols; j++) dot += (double)dar[j] * ar[j];
        for (j = 0; j < cols; j++) dzr[j] = ar[j] * (dar[j] - (TYPE)dot);
    }
}

/* db += column sums of dz (rows x cols), accumulated in double in blocks of 256 columns. */
static FP_CLONES void FN(fp_colsum_add)(const TYPE *dz, TYPE *db, ptrdiff_t rows, ptrdiff_t cols)
{
    double acc[256];
    ptrdiff_t c0, r, j, w;
    for (c0 = 0; c0 < cols; c0 += 256) {
        w = cols - c0 < 256 ? cols - c0 : 256;
        for (j = 0; j < w; j++) acc[j] = 0;
        for (r = 0; r < rows; r++) {
            const TYPE *row = dz + r * cols + c0;
            for (j = 0; j < w; j++) acc[j] += row[j];
        }
        for (j = 0; j < w; j++) db[c0 + j] += (TYPE)acc[j];
    }
}

/* out[r, :] := b for every row: seeds a GEMM with beta = 1 so the bias add is free. */
static FP_CLONES void FN(fp_fill_rows)(TYPE *out, const TYPE *b, ptrdiff_t rows, ptrdiff_t cols)
{
    ptrdiff_t r, j;
    for (r = 0; r < rows; r++)
        for (j = 0; j < cols; j++) out[r * cols + j] = b[j];
}

/* Inverted dropout: mask := (u >= rate) / (1 - rate) with u uniform, out := x * mask.
 * Active only in training; in inference the layer is the identity. */
static FP_CLONES void FN(fp_dropout_forward)(const TYPE *x, TYPE *out, TYPE *mask, ptrdiff_t n, double rate,
                                   uint64_t *state)
{
    ptrdiff_t i;
    const TYPE scale = (TYPE)(1.0 / (1.0 - rate));
    for (i = 0; i < n; i++) mask[i] = fp_rng_uniform(state) >= rate ? scale : (TYPE)0;
    for (i = 0; i < n; i++) out[i] = x[i] * mask[i];
}

/* x *= y elementwise (dropout backward: da_prev *= mask) */
static FP_CLONES void FN(fp_mul_inplace)(TYPE *x, const TYPE *y, ptrdiff_t n)
{
    ptrdiff_t i;
    for (i = 0; i < n; i++) x[i] *= y[i];
}

/* Gather rows: out[i, :] := src[idx[i], :] for i < n (minibatches without Python copies). */
static FP_CLONES void FN(fp_gather_rows)(const TYPE *src, const int64_t *idx, TYPE *out, ptrdiff_t n,
                               ptrdiff_t cols)
{
    ptrdiff_t i, j;
    for (i = 0; i < n; i++) {
        const TYPE *row = src + idx[i] * cols;
        TYPE *o = out + i * cols;
        for (j = 0; j < cols; j++) o[j] = row[j];
    }
}

/* 1 if every value is finite. Tests the exponent bits with an integer OR-reduction, which
 * vectorizes (a float reduction would not without fast-math). */
static FP_CLONES int FN(fp_all_finite)(const TYPE *x, ptrdiff_t n)
{
    const BITS *u = (const BITS *)x;
    BITS bad = 0;
    ptrdiff_t i;
    for (i = 0; i < n; i++) bad |= (BITS)((u[i] & INF_BITS) == INF_BITS);
    return bad == 0;
}

/* max |x| over n >= 0 values, inf when any value is NaN or inf (0 for n = 0). An unsigned
 * max-reduction over the bits without the sign: for IEEE numbers that order is the order of
 * magnitudes, with inf and NaN above every finite value; integer reductions vectorize. */
static FP_CLONES double FN(fp_max_abs)(const TYPE *x, ptrdiff_t n)
{
    const BITS *u = (const BITS *)x;
    BITS m = 0;
    TYPE f;
    ptrdiff_t i;
    for (i = 0; i < n; i++) {
        BITS v = u[i] & ABS_BITS;
        m = v > m ? v : m;
    }
    if (m >= INF_BITS) return INFINITY;
    memcpy(&f, &m, sizeof f);
    return f;
}

/* 1 if every value lies in [0, 1] (targets of binary cross-entropy) */
static FP_CLONES int FN(fp_all_unit)(const TYPE *x, ptrdiff_t n)
{
    int bad = 0;
    ptrdiff_t i;
    for (i = 0; i < n; i++) bad |= (x[i] < 0) | (x[i] > 1);
    return bad == 0;
}

#undef FN
