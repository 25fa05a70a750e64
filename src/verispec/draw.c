/* The sampled plain step's draw (draw.py): one inverse-CDF draw from softmax(x / T) over float32 logits x[n],
 * with the uniform u in (0, 1). The same two-level search as sampling.inverse_cdf, in double precision:
 * weights exp(((double) x_i - max) / T), sums of blocks of 256, the first block whose running sum passes
 * u * total, then the first token of that block whose running sum passes the rest; a zero-weight token is
 * never returned. exp is glibc's vector exp (libmvec, at most 4 ulp in double).
 *
 * Returns the token, or -1 where the caller's own path must decide (it raises a clear error there): no
 * finite maximum (every logit -inf, a +inf logit), or a total mass that is not positive and finite (a NaN).
 */
#include <math.h>
#include <stdlib.h>

#pragma omp declare simd notinbranch
extern double exp(double);

#define BLOCK 256

static void weights(const float *x, long lo, long hi, double m, double inv_t, double *w)
{
#pragma omp simd
    for (long i = lo; i < hi; i++) w[i - lo] = exp(((double)x[i] - m) * inv_t);
}

long draw_softmax(const float *x, long n, double inv_t, double u)
{
    float mf = -INFINITY;
#pragma omp simd reduction(max:mf)
    for (long i = 0; i < n; i++) mf = x[i] > mf ? x[i] : mf;  /* a NaN is skipped here, caught by the total */
    if (!isfinite(mf) || n <= 0) return -1;
    const double m = mf;
    const long nb = (n + BLOCK - 1) / BLOCK;
    double *sums = malloc(nb * sizeof(double)), w[BLOCK], total = 0.0;
    if (!sums) return -1;
    for (long b = 0; b < nb; b++) {
        long lo = b * BLOCK, hi = lo + BLOCK < n ? lo + BLOCK : n;
        double s = 0.0;
        weights(x, lo, hi, m, inv_t, w);
#pragma omp simd reduction(+:s)
        for (long i = 0; i < hi - lo; i++) s += w[i];
        sums[b] = s;
        total += s;  /* in block order: the running sums below are these partial totals */
    }
    if (!(total > 0.0) || !isfinite(total)) { free(sums); return -1; }
    const double target = u * total;
    double before = 0.0;
    long b = 0;
    for (; b < nb && !(before + sums[b] > target); b++) before += sums[b];
    if (b == nb) {  /* rounding put u * total at the end (u ~ 1): the last block with mass */
        for (b = nb - 1; b > 0 && !(sums[b] > 0.0); b--) {}
        before = 0.0;
        for (long i = 0; i < b; i++) before += sums[i];
    }
    free(sums);
    const long lo = b * BLOCK, len = (lo + BLOCK < n ? lo + BLOCK : n) - lo;
    weights(x, lo, lo + len, m, inv_t, w);
    const double rest = target - before;
    double run = 0.0;
    long j = 0;
    for (; j < len; j++) {
        run += w[j];
        if (run > rest) break;
    }
    if (j == len) j = len - 1;
    while (j > 0 && !(w[j] > 0.0)) j--;  /* only where rounding put rest past the block's end */
    return lo + j;
}
