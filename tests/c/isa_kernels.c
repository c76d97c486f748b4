/* Runs every cloned C kernel of csrc/ on fixed pseudo-random inputs and writes the raw output
 * bytes to stdout. tests/test_isa_clones.py builds it once per instruction set (-DFP_NO_CLONES
 * with -mavx512f, -mavx2 or the baseline, and setup.py's -O3 -fno-math-errno
 * -fno-trapping-math -ffp-contract=off) and checks that the three outputs are identical: the
 * AVX-512 / AVX2 / SSE2 clones of the extension modules are these same builds. */
#include <stdio.h>
#include <stdlib.h>
#include "fp_math.h"
#include "fp_loss.h"
#include "fp_optim.h"

#define N 1003 /* odd: vector loops and their scalar tails both run */
#define ROWS 17
#define COLS 59 /* ROWS * COLS = N */

static uint64_t state = 12345;
static double uniform(double lo, double hi) { return lo + (hi - lo) * fp_rng_uniform(&state); }

#define OUT(p, n) fwrite((p), sizeof *(p), (size_t)(n), stdout)

#define RUN(T, S)                                                                            \
    do {                                                                                     \
        static T z[N], a[N], da[N], dz[N], y[N], w[ROWS], p[N], g[N], m[N], v[N], vm[N];    \
        static long long lab[ROWS];                                                          \
        static int64_t idx[ROWS];                                                            \
        T db[COLS] = {0};                                                                    \
        double r;                                                                            \
        int code, loss, i;                                                                   \
        for (i = 0; i < N; i++) {                                                            \
            z[i] = (T)uniform(-30, 30); da[i] = (T)uniform(-2, 2);                           \
            y[i] = (T)uniform(0, 1); p[i] = (T)uniform(-1, 1); g[i] = (T)uniform(-1, 1);     \
            m[i] = (T)uniform(-0.1, 0.1); v[i] = (T)uniform(0, 0.1); vm[i] = v[i];           \
        }                                                                                    \
        for (i = 0; i < ROWS; i++) {                                                         \
            w[i] = (T)uniform(0, 2); lab[i] = (long long)(uniform(0, COLS));                 \
            idx[i] = (int64_t)uniform(0, ROWS);                                              \
        }                                                                                    \
        for (code = 0; code < 9; code++) {                                                   \
            fp_act_forward##S(code, z, a, N); OUT(a, N);                                     \
            fp_act_backward##S(code, z, a, da, dz, N); OUT(dz, N);                           \
        }                                                                                    \
        fp_softmax_forward##S(z, a, ROWS, COLS); OUT(a, N);                                  \
        fp_softmax_backward##S(a, da, dz, ROWS, COLS); OUT(dz, N);                           \
        fp_colsum_add##S(dz, db, ROWS, COLS); OUT(db, COLS);                                 \
        fp_gather_rows##S(z, idx, a, ROWS, COLS); OUT(a, N);                                 \
        r = fp_max_abs##S(z, N); OUT(&r, 1);                                                 \
        r = fp_softmax_cross_entropy##S(z, a, NULL, lab, w, 0.5, ROWS, COLS, dz);            \
        OUT(&r, 1); OUT(dz, N);                                                              \
        fp_act_forward##S(5, z, a, N);                                                       \
        r = fp_sigmoid_binary_cross_entropy##S(z, a, y, w, 0.5, ROWS, COLS, dz);             \
        OUT(&r, 1); OUT(dz, N);                                                              \
        for (loss = 0; loss < 3; loss++) {                                                   \
            r = fp_pointwise_loss##S(loss, a, y, w, 0.5, ROWS, COLS, dz); OUT(&r, 1);       \
            OUT(dz, N);                                                                      \
        }                                                                                    \
        fp_adam##S(p, g, m, v, vm, N, (T)0.999, (T)0.01, (T)0.1, (T)0.999, (T)0.001,        \
                   (T)0.01, (T)1.2, (T)1e-8, 0); OUT(p, N); OUT(m, N); OUT(v, N);            \
        fp_adam##S(p, g, m, v, vm, N, (T)1, (T)0, (T)0.1, (T)0.999, (T)0.001, (T)0.01,      \
                   (T)1.2, (T)1e-8, 1); OUT(p, N); OUT(vm, N);                               \
        fp_sgd##S(p, g, m, N, 0.01, 0.9, 1e-4, 0.9, 0.9, 1); OUT(p, N); OUT(m, N);           \
        fp_sgd##S(p, g, m, N, 0.01, 0.0, 0.0, 0.0, 1.0, 0); OUT(p, N);                       \
        fp_rmsprop##S(p, g, v, m, y, N, 0.01, 0.9, 1e-4, 0.99, 1e-8, 1); OUT(p, N);          \
        OUT(v, N); OUT(m, N); OUT(y, N);                                                     \
        fp_adagrad##S(p, g, v, N, 0.01, 1e-4, 1e-10); OUT(p, N); OUT(v, N);                  \
    } while (0)

int main(void)
{
    static float x[N], e[N];
    int i;
    RUN(float, _f);
    RUN(double, _d);
    for (i = 0; i < N; i++) x[i] = (float)uniform(-104, 89);
    for (i = 0; i < N; i++) e[i] = fp_expf(x[i]);
    OUT(e, N);
    return 0;
}
