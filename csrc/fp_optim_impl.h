/* Template body of fp_optim.h: included once per floating type. Do not include directly. */
#define FN(name) CAT(name, SFX)

/* Adam / AdamW over n values (torch.optim semantics), in TYPE arithmetic:
 *   p *= shrink (AdamW's decoupled decay; 1 otherwise);  d = g + wd * p (Adam's L2; wd = 0
 *   for AdamW);  m += one_minus_b1 * (d - m);  v = b2 * v + one_minus_b2 * d * d;
 *   vmax = max(vmax, v) and v = vmax (amsgrad);  p -= step_size * m / (sqrt(v) * inv_bc2 + eps)
 * with step_size = lr / (1 - b1^t) and inv_bc2 = 1 / sqrt(1 - b2^t). torch divides by
 * sqrt(1 - b2^t) instead; multiplying by its inverse differs by at most an ulp and leaves one
 * division per element instead of two (division and sqrt bound this loop). */
static FP_CLONES void FN(fp_adam)(TYPE *p, const TYPE *g, TYPE *m, TYPE *v, TYPE *vmax,
                                  ptrdiff_t n, TYPE shrink, TYPE wd, TYPE one_minus_b1, TYPE b2,
                                  TYPE one_minus_b2, TYPE step_size, TYPE inv_bc2, TYPE eps,
                                  int amsgrad)
{
    ptrdiff_t i;
    if (amsgrad) {
        for (i = 0; i < n; i++) {
            TYPE pi = p[i] * shrink, d = g[i] + wd * pi, mi = m[i], vi, vm;
            mi = mi + one_minus_b1 * (d - mi);
            vi = v[i] * b2 + one_minus_b2 * d * d;
            m[i] = mi;
            v[i] = vi;
            vm = vmax[i] > vi ? vmax[i] : vi;
            vmax[i] = vm;
            p[i] = pi - step_size * (mi / (SQRT(vm) * inv_bc2 + eps));
        }
        return;
    }
    for (i = 0; i < n; i++) {
        TYPE pi = p[i] * shrink, d = g[i] + wd * pi, mi = m[i], vi;
        mi = mi + one_minus_b1 * (d - mi);
        vi = v[i] * b2 + one_minus_b2 * d * d;
        m[i] = mi;
        v[i] = vi;
        p[i] = pi - step_size * (mi / (SQRT(vi) * inv_bc2 + eps));
    }
}

/* SGD (torch.optim.SGD): d = g + wd * p;  mu == 0: p -= lr * d;  else b = keep * b + take * d
 * (keep = 0, take = 1 on the first step: the buffer starts as the gradient; then keep = mu,
 * take = 1 - dampening) and p -= lr * (nesterov ? d + mu * b : b). Per element in double,
 * rounded once on store, so float32 is never less accurate than torch's float32 arithmetic. */
static FP_CLONES void FN(fp_sgd)(TYPE *p, const TYPE *g, TYPE *buf, ptrdiff_t n, double lr,
                                 double mu, double wd, double keep, double take, int nesterov)
{
    ptrdiff_t i;
    if (mu == 0) {
        for (i = 0; i < n; i++) {
            double pi = p[i], d = g[i] + wd * pi;
            p[i] = (TYPE)(pi - lr * d);
        }
        return;
    }
    if (nesterov) {
        for (i = 0; i < n; i++) {
            double pi = p[i], d = g[i] + wd * pi, b = keep * buf[i] + take * d;
            buf[i] = (TYPE)b;
            p[i] = (TYPE)(pi - lr * (d + mu * b));
        }
        return;
    }
    for (i = 0; i < n; i++) {
        double pi = p[i], d = g[i] + wd * pi, b = keep * buf[i] + take * d;
        buf[i] = (TYPE)b;
        p[i] = (TYPE)(pi - lr * b);
    }
}

/* RMSprop (torch.optim.RMSprop): d = g + wd * p;  sq = alpha * sq + (1 - alpha) * d^2;
 * centered: gavg += (1 - alpha) * (d - gavg), s = max(sq - gavg^2, 0), else s = sq;
 * r = d / (sqrt(s) + eps);  momentum > 0: b = mu * b + r, p -= lr * b;  else p -= lr * r.
 * Per element in double. The flags are loop-invariant: gcc -O3 unswitches them into one
 * straight-line vector loop per combination. */
static FP_CLONES void FN(fp_rmsprop)(TYPE *p, const TYPE *g, TYPE *sq, TYPE *buf, TYPE *gavg,
                                     ptrdiff_t n, double lr, double mu, double wd, double alpha,
                                     double eps, int centered)
{
    ptrdiff_t i;
    const int use_momentum = mu > 0;
    for (i = 0; i < n; i++) {
        double pi = p[i], d = g[i] + wd * pi, s = sq[i] * alpha + (1.0 - alpha) * d * d, r;
        sq[i] = (TYPE)s;
        if (centered) {
            double a = gavg[i];
            a = a + (1.0 - alpha) * (d - a);
            gavg[i] = (TYPE)a;
            s = s - a * a;
            s = s > 0 ? s : 0.0;   /* a variance: rounding must not make its sqrt NaN */
        }
        r = d / (sqrt(s) + eps);
        if (use_momentum) {
            double b = buf[i] * mu + r;
            buf[i] = (TYPE)b;
            r = b;
        }
        p[i] = (TYPE)(pi - lr * r);
    }
}

/* Adagrad (torch.optim.Adagrad): d = g + wd * p;  acc += d^2;  p -= clr * d / (sqrt(acc) + eps)
 * with clr = lr / (1 + (t - 1) * lr_decay). Per element in double. */
static FP_CLONES void FN(fp_adagrad)(TYPE *p, const TYPE *g, TYPE *acc, ptrdiff_t n, double clr,
                                     double wd, double eps)
{
    ptrdiff_t i;
    for (i = 0; i < n; i++) {
        double pi = p[i], d = g[i] + wd * pi, s = acc[i] + d * d;
        acc[i] = (TYPE)s;
        p[i] = (TYPE)(pi - clr * (d / (sqrt(s) + eps)));
    }
}

#undef FN
