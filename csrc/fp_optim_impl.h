/* Template body of fp_optim.h: included once per floating type. Do not include directly. */
#define FN(name) CAT(name, SFX)

/* Adam / AdamW over n values (torch.optim semantics), in TYPE arithmetic:
 *   p *= shrink (AdamW's decoupled decay; 1 otherwise);  d = g + wd * p (Adam's L2; wd = 0
 *   for AdamW);  m += one_minus_b1 * (d - m);  v = b2 * v + one_minus_b2 * d * d;
 *   vmax = max(vmax, v) and v = vmax (amsgrad);  p -= step_size * m / (sqrt(v) / bc2_sqrt + eps)
 * with step_size = lr / (1 - b1^t) and bc2_sqrt = sqrt(1 - b2^t). */
static FP_CLONES void FN(fp_adam)(TYPE *p, const TYPE *g, TYPE *m, TYPE *v, TYPE *vmax,
                                  ptrdiff_t n, TYPE shrink, TYPE wd, TYPE one_minus_b1, TYPE b2,
                                  TYPE one_minus_b2, TYPE step_size, TYPE bc2_sqrt, TYPE eps,
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
            p[i] = pi - step_size * (mi / (SQRT(vm) / bc2_sqrt + eps));
        }
        return;
    }
    for (i = 0; i < n; i++) {
        TYPE pi = p[i] * shrink, d = g[i] + wd * pi, mi = m[i], vi;
        mi = mi + one_minus_b1 * (d - mi);
        vi = v[i] * b2 + one_minus_b2 * d * d;
        m[i] = mi;
        v[i] = vi;
        p[i] = pi - step_size * (mi / (SQRT(vi) / bc2_sqrt + eps));
    }
}

#undef FN
