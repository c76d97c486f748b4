/* Runs the normalization kernels of csrc/fp_norm.h on fixed pseudo-random inputs, both types,
 * and writes the raw output bytes to stdout. tests/test_norm_isa.py builds it once per
 * instruction set (as tests/test_isa_clones.py does for the other kernels) and checks that the
 * outputs are identical. */
#include <stdint.h>
#include <stdio.h>
#include "fp_norm.h"

#define ROWS 19
#define COLS 37 /* odd widths: vector loops and their scalar tails both run */
#define N (ROWS * COLS)

static uint64_t state = 12345;
static double uniform(double lo, double hi)
{
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    return lo + (hi - lo) * (double)(state >> 11) * (1.0 / 9007199254740992.0);
}

#define OUT(p, n) fwrite((p), sizeof *(p), (size_t)(n), stdout)

#define RUN(T, S)                                                                            \
    do {                                                                                     \
        static T x[N], dy[N], xh[N], y[N], dx[N];                                            \
        T g[COLS], b[COLS], rm[COLS], rv[COLS], is[ROWS > COLS ? ROWS : COLS];              \
        T dg[COLS], dbt[COLS];                                                               \
        double work[3 * COLS];                                                               \
        int i, tr;                                                                           \
        for (i = 0; i < N; i++) {                                                            \
            x[i] = (T)uniform(-5, 9); dy[i] = (T)uniform(-2, 2);                             \
        }                                                                                    \
        for (i = 0; i < COLS; i++) {                                                         \
            g[i] = (T)uniform(0.5, 1.5); b[i] = (T)uniform(-1, 1);                           \
            rm[i] = (T)uniform(-1, 1); rv[i] = (T)uniform(0.5, 2); dg[i] = dbt[i] = 0;      \
        }                                                                                    \
        for (tr = 0; tr < 2; tr++) {                                                         \
            if (tr)                                                                          \
                fp_batchnorm_train_forward##S(ROWS, COLS, x, g, b, rm, rv, 0.1, 1e-5, xh,    \
                                              is, y, work);                                  \
            else                                                                             \
                fp_batchnorm_eval_forward##S(ROWS, COLS, x, g, b, rm, rv, 1e-5, xh, is, y,   \
                                             work);                                          \
            OUT(y, N); OUT(xh, N); OUT(is, COLS); OUT(rm, COLS); OUT(rv, COLS);              \
            fp_batchnorm_backward##S(ROWS, COLS, dy, xh, g, is, tr, dx, dg, dbt, work);      \
            OUT(dx, N); OUT(dg, COLS); OUT(dbt, COLS);                                       \
        }                                                                                    \
        fp_layernorm_forward##S(ROWS, COLS, x, g, b, 1e-5, xh, is, y);                       \
        OUT(y, N); OUT(xh, N); OUT(is, ROWS);                                                \
        fp_layernorm_backward##S(ROWS, COLS, dy, xh, g, is, dx, dg, dbt, work);              \
        OUT(dx, N); OUT(dg, COLS); OUT(dbt, COLS);                                           \
    } while (0)

int main(void)
{
    RUN(float, _f);
    RUN(double, _d);
    return 0;
}
