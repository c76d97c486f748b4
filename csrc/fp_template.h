/* The one-body-for-both-types template of csrc/: a header fp_X.h defines TYPE (float or double),
 * SFX (_f or _d) and the math functions for that type, then includes fp_X_impl.h, whose
 * functions are named FN(name) = name ## SFX. Do this twice and both types exist. */
#ifndef FP_TEMPLATE_H
#define FP_TEMPLATE_H
#define CAT_(a, b) a##b
#define CAT(a, b) CAT_(a, b)
#endif
