/* Template body of fp_norm.h: included once per floating type. Do not include directly. */
#define FN(name) CAT(name, SFX)

/* Column sums of a (n, w) block into work[0:w] (double; rows outer, so each column's sum is
 * taken in row order and the inner loop vectorizes across columns). */
static FP_CLONES void FN(fp_col_sum)(ptrdiff_t n, ptrdiff_t w, const TYPE *x, double *s)
{
    ptrdiff_t i, j;
    for (j = 0; j < w; j++)
        s[j] = 0.0;
    for (i = 0; i < n; i++) {
        const TYPE *xi = x + i * w;
        for (j = 0; j < w; j++)
            s[j] += (double)xi[j];
    }
}

/* Moves the running statistics towards a batch's (PyTorch BatchNorm1d):
 *   running_mean = (1 - momentum) * running_mean + momentum * mean,
 *   running_var = (1 - momentum) * running_var + momentum * var  (var: the unbiased variance).
 * IN stats: 2 * w doubles, mean then unbiased variance (what fp_batchnorm_train_forward leaves
 * in its work). IN/OUT running_mean, running_var (w,). */
static void FN(fp_batchnorm_update_running)(ptrdiff_t w, const double *stats, double momentum,
                                            TYPE *running_mean, TYPE *running_var)
{
    ptrdiff_t j;
    for (j = 0; j < w; j++) {
        running_mean[j] = (TYPE)((1.0 - momentum) * (double)running_mean[j] +
                                 momentum * stats[j]);
        running_var[j] = (TYPE)((1.0 - momentum) * (double)running_var[j] +
                                momentum * stats[w + j]);
    }
}

/* x_hat = (x - mean) * is (in double, rounded to TYPE), y = x_hat * gamma + beta, per column,
 * over n rows of width w: the normalization both BatchNorm forwards share (inlined into
 * each ISA clone of its callers). */
static inline void FN(fp_batchnorm_apply)(ptrdiff_t n, ptrdiff_t w, const TYPE *x,
                                          const double *mean, const double *is,
                                          const TYPE *gamma, const TYPE *beta, TYPE *x_hat,
                                          TYPE *y)
{
    ptrdiff_t i, j;
    for (i = 0; i < n; i++) {
        const TYPE *xi = x + i * w;
        TYPE *hi = x_hat + i * w, *yi = y + i * w;
        for (j = 0; j < w; j++) {
            TYPE h = (TYPE)(((double)xi[j] - mean[j]) * is[j]);
            hi[j] = h;
            yi[j] = h * gamma[j] + beta[j];
        }
    }
}

/* BatchNorm1d forward, training mode, over a batch of n >= 2 rows of width w:
 *   mean_j = sum_i x_ij / n,  var_j = sum_i (x_ij - mean_j)^2 / n  (biased; two passes),
 *   inv_std_j = 1 / sqrt(var_j + eps),  x_hat = (x - mean) * inv_std,  y = x_hat * gamma + beta.
 * OUT x_hat (n, w), inv_std (w,), y (n, w); work: 3 * w doubles, left holding the batch mean
 * and the unbiased batch variance (var * n / (n - 1)) in its first 2 * w. When running_mean /
 * running_var are not NULL they are updated from them (fp_batchnorm_update_running); a caller
 * that must decide first (the tape commits them only with an accepted step) passes NULL and
 * updates later.
 * y may alias x (each element is read before it is written); x_hat may not. */
static FP_CLONES void FN(fp_batchnorm_train_forward)(
    ptrdiff_t n, ptrdiff_t w, const TYPE *x, const TYPE *gamma, const TYPE *beta,
    TYPE *running_mean, TYPE *running_var, double momentum, double eps, TYPE *x_hat,
    TYPE *inv_std, TYPE *y, double *work)
{
    ptrdiff_t i, j;
    double *mean = work, *ssq = work + w, *is = work + 2 * w;
    FN(fp_col_sum)(n, w, x, mean);
    for (j = 0; j < w; j++) {
        mean[j] /= (double)n;
        ssq[j] = 0.0;
    }
    for (i = 0; i < n; i++) {
        const TYPE *xi = x + i * w;
        for (j = 0; j < w; j++) {
            double d = (double)xi[j] - mean[j];
            ssq[j] += d * d;
        }
    }
    for (j = 0; j < w; j++) {
        is[j] = 1.0 / sqrt(ssq[j] / (double)n + eps);
        inv_std[j] = (TYPE)is[j];
        ssq[j] /= (double)(n - 1);               /* from here on: the unbiased variance */
    }
    FN(fp_batchnorm_apply)(n, w, x, mean, is, gamma, beta, x_hat, y);
    if (running_mean != NULL && running_var != NULL)
        FN(fp_batchnorm_update_running)(w, work, momentum, running_mean, running_var);
}

/* BatchNorm1d forward, evaluation mode (running statistics): inv_std_j = 1 / sqrt(rv_j + eps),
 * x_hat = (x - rm) * inv_std, y = x_hat * gamma + beta. OUT x_hat (n, w), inv_std (w,), y. */
static FP_CLONES void FN(fp_batchnorm_eval_forward)(
    ptrdiff_t n, ptrdiff_t w, const TYPE *x, const TYPE *gamma, const TYPE *beta,
    const TYPE *running_mean, const TYPE *running_var, double eps, TYPE *x_hat, TYPE *inv_std,
    TYPE *y, double *work)
{
    ptrdiff_t i, j;
    double *mean = work, *is = work + w;
    for (j = 0; j < w; j++) {
        mean[j] = (double)running_mean[j];
        is[j] = 1.0 / sqrt((double)running_var[j] + eps);
        inv_std[j] = (TYPE)is[j];
    }
    FN(fp_batchnorm_apply)(n, w, x, mean, is, gamma, beta, x_hat, y);
}

/* BatchNorm1d backward. sums: s_b = sum_i dy_ij, s_g = sum_i dy_ij * x_hat_ij (double);
 * dbeta += s_b, dgamma += s_g;
 *   training: dx = gamma * inv_std / n * (n * dy - s_b - x_hat * s_g)  (the batch statistics
 *             depend on x);
 *   eval:     dx = gamma * inv_std * dy  (running statistics are constants).
 * IN dy, x_hat (n, w), gamma, inv_std (w,); OUT dx (n, w) (may alias dy); IN/OUT dgamma,
 * dbeta (w,); work: 2 * w doubles. */
static FP_CLONES void FN(fp_batchnorm_backward)(
    ptrdiff_t n, ptrdiff_t w, const TYPE *dy, const TYPE *x_hat, const TYPE *gamma,
    const TYPE *inv_std, int training, TYPE *dx, TYPE *dgamma, TYPE *dbeta, double *work)
{
    ptrdiff_t i, j;
    double *sb = work, *sg = work + w;
    for (j = 0; j < w; j++)
        sb[j] = sg[j] = 0.0;
    for (i = 0; i < n; i++) {
        const TYPE *di = dy + i * w, *hi = x_hat + i * w;
        for (j = 0; j < w; j++) {
            double d = (double)di[j];
            sb[j] += d;
            sg[j] += d * (double)hi[j];
        }
    }
    for (j = 0; j < w; j++) {
        dbeta[j] = (TYPE)((double)dbeta[j] + sb[j]);
        dgamma[j] = (TYPE)((double)dgamma[j] + sg[j]);
    }
    if (training) {
        double inv_n = 1.0 / (double)n;
        for (j = 0; j < w; j++) {        /* sb, sg become the per-column means */
            sb[j] *= inv_n;
            sg[j] *= inv_n;
        }
        for (i = 0; i < n; i++) {
            const TYPE *di = dy + i * w, *hi = x_hat + i * w;
            TYPE *oi = dx + i * w;
            for (j = 0; j < w; j++)
                oi[j] = (TYPE)((double)gamma[j] * (double)inv_std[j] *
                               ((double)di[j] - sb[j] - (double)hi[j] * sg[j]));
        }
        return;
    }
    for (i = 0; i < n; i++) {
        const TYPE *di = dy + i * w;
        TYPE *oi = dx + i * w;
        for (j = 0; j < w; j++)
            oi[j] = (TYPE)((double)gamma[j] * (double)inv_std[j] * (double)di[j]);
    }
}

/* LayerNorm over the w features of each of n rows (PyTorch LayerNorm(w)):
 *   mean_i = sum_j x_ij / w,  var_i = sum_j (x_ij - mean_i)^2 / w  (biased; two passes),
 *   inv_std_i = 1 / sqrt(var_i + eps),  x_hat = (x - mean) * inv_std,  y = x_hat * gamma + beta.
 * OUT x_hat (n, w), inv_std (n,), y (n, w). */
static FP_CLONES void FN(fp_layernorm_forward)(
    ptrdiff_t n, ptrdiff_t w, const TYPE *x, const TYPE *gamma, const TYPE *beta, double eps,
    TYPE *x_hat, TYPE *inv_std, TYPE *y)
{
    ptrdiff_t i, j;
    for (i = 0; i < n; i++) {
        const TYPE *xi = x + i * w;
        TYPE *hi = x_hat + i * w, *yi = y + i * w;
        double s = 0.0, q = 0.0, mean, is;
        for (j = 0; j < w; j++)
            s += (double)xi[j];
        mean = s / (double)w;
        for (j = 0; j < w; j++) {
            double d = (double)xi[j] - mean;
            q += d * d;
        }
        is = 1.0 / sqrt(q / (double)w + eps);
        inv_std[i] = (TYPE)is;
        for (j = 0; j < w; j++) {
            TYPE h = (TYPE)(((double)xi[j] - mean) * is);
            hi[j] = h;
            yi[j] = h * gamma[j] + beta[j];
        }
    }
}

/* LayerNorm backward: g = dy * gamma; per row r_b = sum_j g_ij / w, r_g = sum_j g_ij x_hat_ij / w;
 * dx = inv_std_i * (g - r_b - x_hat * r_g); dgamma += sum_i dy * x_hat, dbeta += sum_i dy.
 * IN dy, x_hat (n, w), gamma (w,), inv_std (n,); OUT dx (n, w) (may alias dy); IN/OUT
 * dgamma, dbeta (w,); work: 2 * w doubles. */
static FP_CLONES void FN(fp_layernorm_backward)(
    ptrdiff_t n, ptrdiff_t w, const TYPE *dy, const TYPE *x_hat, const TYPE *gamma,
    const TYPE *inv_std, TYPE *dx, TYPE *dgamma, TYPE *dbeta, double *work)
{
    ptrdiff_t i, j;
    double *sb = work, *sg = work + w;
    for (j = 0; j < w; j++)
        sb[j] = sg[j] = 0.0;
    for (i = 0; i < n; i++) {
        const TYPE *di = dy + i * w, *hi = x_hat + i * w;
        TYPE *oi = dx + i * w;
        double rb = 0.0, rg = 0.0, is = (double)inv_std[i];
        for (j = 0; j < w; j++) {
            double d = (double)di[j], h = (double)hi[j], g = d * (double)gamma[j];
            sb[j] += d;
            sg[j] += d * h;
            rb += g;
            rg += g * h;
        }
        rb /= (double)w;
        rg /= (double)w;
        for (j = 0; j < w; j++)
            oi[j] = (TYPE)(is * ((double)di[j] * (double)gamma[j] - rb - (double)hi[j] * rg));
    }
    for (j = 0; j < w; j++) {
        dbeta[j] = (TYPE)((double)dbeta[j] + sb[j]);
        dgamma[j] = (TYPE)((double)dgamma[j] + sg[j]);
    }
}

#undef FN
