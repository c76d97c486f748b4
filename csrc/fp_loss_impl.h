/* Template body of fp_loss.h: included once per floating type. Do not include directly. */
#define FN(name) CAT(name, SFX)

/* 1 / sum_i w_i, summed in double; 1 / n when w is NULL (plain mean). */
static FP_CLONES double FN(fp_inv_weight_sum)(const TYPE *w, ptrdiff_t n)
{
    ptrdiff_t i;
    double s = 0;
    if (w == NULL)
        return 1.0 / (double)n;
    for (i = 0; i < n; i++) s += w[i];
    return 1.0 / s;
}

/* Regression losses on the activations a (n x k) against dense targets y (n x k), d = a - y:
 *   mse   l = d^2                                     l' = 2 d
 *   mae   l = |d|                                     l' = sign(d), 0 at 0 (as torch)
 *   huber l = d^2 / 2 if |d| < 1 else |d| - 1/2        l' = clip(d, -1, 1)
 * Returns c * sum_i w_i * mean_j l(d_ij); da (may be NULL) := c * w_i / k * l'(d). */
static FP_CLONES double FN(fp_pointwise_loss)(int loss, const TYPE *a, const TYPE *y, const TYPE *w,
                                    double c, ptrdiff_t n, ptrdiff_t k, TYPE *da)
{
    const double delta = FP_HUBER_DELTA;
    const TYPE tdelta = (TYPE)FP_HUBER_DELTA;
    double total = 0;
    ptrdiff_t i, j;
    for (i = 0; i < n; i++) {
        const TYPE *ar = a + i * k, *yr = y + i * k;
        TYPE *dar = da == NULL ? NULL : da + i * k;
        double wi = w == NULL ? 1.0 : (double)w[i];
        TYPE g = (TYPE)(c * wi / (double)k); /* this row's gradient scale */
        double row = 0;
        switch (loss) {
        case FP_MAE:
            for (j = 0; j < k; j++) {
                TYPE d = ar[j] - yr[j];
                row += FABS(d);
                if (dar) dar[j] = g * (TYPE)((d > 0) - (d < 0));
            }
            break;
        case FP_HUBER:
            for (j = 0; j < k; j++) {
                TYPE d = ar[j] - yr[j];
                double ad = FABS(d);
                TYPE clip = d > tdelta ? tdelta : (d < -tdelta ? -tdelta : d);
                row += ad < delta ? 0.5 * ad * ad : delta * (ad - 0.5 * delta);
                if (dar) dar[j] = g * clip;
            }
            break;
        default: /* mse */
            for (j = 0; j < k; j++) {
                TYPE d = ar[j] - yr[j];
                row += (double)d * d;
                if (dar) dar[j] = (TYPE)2 * g * d;
            }
            break;
        }
        total += wi * row;
    }
    return total * c / (double)k;
}

/* max of a row of k >= 1 values */
static inline TYPE FN(fp_row_max)(const TYPE *x, ptrdiff_t k)
{
    TYPE m = x[0];
    ptrdiff_t j;
    for (j = 1; j < k; j++) m = x[j] > m ? x[j] : m;
    return m;
}

/* Softmax cross-entropy from the logits z (n x k) and p = softmax(z): per sample
 * l_i = sum_j y_ij (lse_i - z_ij) with lse_i = logsumexp(z_i) = m + log(sum_j exp(z_ij - m)),
 * m = max_j z_ij: exp never overflows, the sum is >= 1, so no log(0) and l_i is finite for any
 * finite z. Targets: integer labels (n), or y (n x k) rows when labels is NULL.
 * Returns c * sum_i w_i l_i; dz (may be NULL) := c * w_i * (p * sum_j y_ij - y), the exact
 * gradient (PyTorch's too), which is c * w_i * (p - y) for rows that sum to 1. */
static FP_CLONES double FN(fp_softmax_cross_entropy)(const TYPE *z, const TYPE *p, const TYPE *y,
                                           const long long *labels, const TYPE *w, double c,
                                           ptrdiff_t n, ptrdiff_t k, TYPE *dz)
{
    double total = 0;
    ptrdiff_t i, j;
    if (dz != NULL) {
        /* exp(z - m) of the whole block into dz first: one flat loop, which vectorizes however
         * short the rows are (10 classes: shorter than one AVX-512 vector) */
        for (i = 0; i < n; i++) {
            const TYPE *zr = z + i * k;
            TYPE *dzr = dz + i * k, m = FN(fp_row_max)(zr, k);
            for (j = 0; j < k; j++) dzr[j] = zr[j] - m;
        }
        for (j = 0; j < n * k; j++) dz[j] = SOFTMAX_EXP(dz[j]);
    }
    for (i = 0; i < n; i++) {
        const TYPE *zr = z + i * k, *pr = p + i * k;
        TYPE *dzr = dz == NULL ? NULL : dz + i * k;
        double wi = w == NULL ? 1.0 : (double)w[i];
        TYPE g = (TYPE)(c * wi);
        TYPE m = FN(fp_row_max)(zr, k);
        double s = 0, lse, row;
        if (dzr)
            for (j = 0; j < k; j++) s += dzr[j];
        else
            for (j = 0; j < k; j++) s += SOFTMAX_EXP(zr[j] - m);
        lse = (double)m + log(s);
        if (labels != NULL) {
            ptrdiff_t t = (ptrdiff_t)labels[i];
            row = lse - (double)zr[t];
            if (dzr)
                for (j = 0; j < k; j++) dzr[j] = g * (pr[j] - (TYPE)(j == t));
        } else {
            const TYPE *yr = y + i * k;
            double sy = 0;
            row = 0;
            for (j = 0; j < k; j++) {
                sy += yr[j];
                row += (double)yr[j] * (lse - (double)zr[j]);
            }
            if (dzr) {
                TYPE tsy = (TYPE)sy;
                for (j = 0; j < k; j++) dzr[j] = g * (pr[j] * tsy - yr[j]);
            }
        }
        total += wi * row;
    }
    return total * c;
}

/* Sigmoid binary cross-entropy from the logits z (n x k) and p = sigmoid(z), elementwise
 * l = max(z, 0) - y z + log1p(exp(-|z|)) (= -y log p - (1 - y) log(1 - p), without overflow or
 * log(0)); as torch.nn.BCEWithLogitsLoss. Returns c * sum_i w_i * mean_j l_ij;
 * dz (may be NULL) := c * w_i / k * (p - y). */
static FP_CLONES double FN(fp_sigmoid_binary_cross_entropy)(const TYPE *z, const TYPE *p, const TYPE *y,
                                                  const TYPE *w, double c, ptrdiff_t n,
                                                  ptrdiff_t k, TYPE *dz)
{
    double total = 0;
    ptrdiff_t i, j;
    for (i = 0; i < n; i++) {
        const TYPE *zr = z + i * k, *pr = p + i * k, *yr = y + i * k;
        TYPE *dzr = dz == NULL ? NULL : dz + i * k;
        double wi = w == NULL ? 1.0 : (double)w[i];
        TYPE g = (TYPE)(c * wi / (double)k);
        double row = 0;
        for (j = 0; j < k; j++) {
            TYPE x = zr[j], t = yr[j];
            double relu = x > 0 ? (double)x : 0.0;
            row += relu - (double)t * x + (double)LOG1P(EXP(-FABS(x)));
            if (dzr) dzr[j] = g * (pr[j] - t);
        }
        total += wi * row;
    }
    return total * c / (double)k;
}

#undef FN
