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

#undef FN
