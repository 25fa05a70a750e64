/* o = softmax(q k^T / sqrt(D) + causal mask) v for a whole prompt: the torch prefill's attention (attend.py).
 *
 * Shapes: q float32 [T, H, D], k and v float16 [T, Hk, D] (the cache's type), o float32 [T, H, D]; query head h
 * reads key/value head h / (H / Hk) (grouped-query attention); D = 64. The arithmetic is flash attention's
 * (Dao et al. 2022, arXiv 2205.14135, Algorithm 1) in float32: blocks of BQ queries against blocks of BK keys, a
 * running maximum m and sum l per query, the output rescaled by exp(m_old - m_new) when the maximum grows, divided
 * by l at the end. One task is a block of BQ queries of the G = H / Hk heads sharing a key/value head, so each
 * key/value block is widened from float16 once for G heads. Keys are transposed while widened (Kt [D, BK]) so that
 * a block of scores is RT x BK accumulators over d, and P V is RT x D accumulators over the keys: register tiles,
 * the vectors GCC's vector extension makes (16 lanes with AVX-512, 8 with AVX2). exp is a degree-6 polynomial after
 * a reduction by ln 2 (relative error ~2e-7). Threads: OpenMP over tasks, the runtime torch loaded (attend.py). */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <immintrin.h>

#define D 64
#define BQ 64
#define BK 64
#ifdef __AVX512F__
#define VW 16
#define RT 4
#else
#define VW 8
#define RT 2
#endif
#define NB (BK / VW) /* vectors in a row of scores */
#define ND (D / VW)  /* vectors in a row of q, k, v, o */

typedef float vf __attribute__((vector_size(VW * 4)));
typedef float vfu __attribute__((vector_size(VW * 4), aligned(4)));
typedef int32_t vi __attribute__((vector_size(VW * 4)));

static inline vf splat(float x) { return (vf){} + x; }
static inline vf ld(const float *p) { return *(const vfu *)p; }
static inline void st(float *p, vf v) { *(vfu *)p = v; }

/* e^x for x <= 0 (x >= -87.3 exactly; below, ~1e-38): x = n ln2 + r, |r| <= ln2 / 2, e^r by its Taylor series */
static inline vf vexp(vf x) {
    vi low = x < splat(-87.3f);
    x = (vf)(((vi)x & ~low) | ((vi)splat(-87.3f) & low));
    vf n = (x * splat(1.44269504f) + splat(12582912.0f)) - splat(12582912.0f); /* round to nearest */
    vf r = x - n * splat(0.693359375f) - n * splat(-2.12194440e-4f);
    vf p = splat(1.0f / 720);
    p = p * r + splat(1.0f / 120);
    p = p * r + splat(1.0f / 24);
    p = p * r + splat(1.0f / 6);
    p = p * r + splat(0.5f);
    p = p * r + splat(1.0f);
    p = p * r + splat(1.0f);
    vi e = (__builtin_convertvector(n, vi) + 127) << 23;
    return p * (vf)e;
}

static inline vf vmax(vf a, vf b) {
    vi gt = a > b;
    return (vf)(((vi)a & gt) | ((vi)b & ~gt));
}

static inline float hmax(vf v) {
    float m = v[0];
    for (int i = 1; i < VW; i++) m = v[i] > m ? v[i] : m;
    return m;
}

static inline float hsum(vf v) {
    float s = 0;
    for (int i = 0; i < VW; i++) s += v[i];
    return s;
}

static void widen(const uint16_t *src, float *dst, int n) { /* float16 -> float32, 8 at a time */
    for (int i = 0; i < n; i += 8)
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i))));
}

/* S [BQ, BK] = Q [BQ, D] Kt [D, BK] */
static void scores(const float *Q, const float *Kt, float *S) {
    for (int r0 = 0; r0 < BQ; r0 += RT) {
        vf acc[RT][NB] = {};
        for (int d = 0; d < D; d++) {
            vf kv[NB];
            for (int b = 0; b < NB; b++) kv[b] = ld(Kt + d * BK + b * VW);
            for (int i = 0; i < RT; i++) {
                vf qv = splat(Q[(r0 + i) * D + d]);
                for (int b = 0; b < NB; b++) acc[i][b] += qv * kv[b];
            }
        }
        for (int i = 0; i < RT; i++)
            for (int b = 0; b < NB; b++) st(S + (r0 + i) * BK + b * VW, acc[i][b]);
    }
}

/* O [BQ, D] = O * corr (per row) + P [BQ, BK] V [BK, D], keys 0 .. nk - 1 */
static void accumulate(const float *P, const float *V, float *O, const float *corr, int nk) {
    for (int r0 = 0; r0 < BQ; r0 += RT) {
        vf acc[RT][ND];
        for (int i = 0; i < RT; i++)
            for (int x = 0; x < ND; x++) acc[i][x] = ld(O + (r0 + i) * D + x * VW) * splat(corr[r0 + i]);
        for (int c = 0; c < nk; c++) {
            vf vv[ND];
            for (int x = 0; x < ND; x++) vv[x] = ld(V + c * D + x * VW);
            for (int i = 0; i < RT; i++) {
                vf pv = splat(P[(r0 + i) * BK + c]);
                for (int x = 0; x < ND; x++) acc[i][x] += pv * vv[x];
            }
        }
        for (int i = 0; i < RT; i++)
            for (int x = 0; x < ND; x++) st(O + (r0 + i) * D + x * VW, acc[i][x]);
    }
}

typedef struct {
    float Kt[D * BK], V[BK * D], S[BQ * BK], corr[BQ], m[BQ], l[BQ];
} Scratch;

/* queries i0 .. i0 + nq - 1 of head h against keys 0 .. i0 + nq - 1; Q, O [BQ, D] this head's block */
static void block_row(Scratch *w, const float *Q, float *O, float *m, float *l, long i0, int nq, long j0, int nk,
                      float scale) {
    scores(Q, w->Kt, w->S);
    for (int r = 0; r < BQ; r++) {
        float *s = w->S + r * BK;
        long lim = i0 + r - j0 + 1; /* causal: keys j0 .. i0 + r */
        int n = lim < nk ? (int)(lim > 0 ? lim : 0) : nk;
        if (r >= nq || n == 0) { /* a padding row, or a row with no key in this block */
            memset(s, 0, sizeof(float) * BK);
            w->corr[r] = 1.0f;
            continue;
        }
        for (int c = n; c < BK; c++) s[c] = -INFINITY;
        vf mx = splat(-INFINITY);
        for (int b = 0; b < NB; b++) mx = vmax(mx, ld(s + b * VW));
        float m_new = hmax(mx) * scale;
        if (m_new < m[r]) m_new = m[r];
        vf sum = {};
        for (int b = 0; b < NB; b++) {
            vf p = vexp(ld(s + b * VW) * splat(scale) - splat(m_new));
            st(s + b * VW, p);
            sum += p;
        }
        for (int c = n; c < BK; c++) sum[c % VW] -= s[c], s[c] = 0.0f; /* masked keys: exactly 0 */
        w->corr[r] = m[r] == -INFINITY ? 0.0f : expf(m[r] - m_new);
        l[r] = l[r] * w->corr[r] + hsum(sum);
        m[r] = m_new;
    }
    accumulate(w->S, w->V, O, w->corr, nk);
}

/* returns 0, or -1 if D is not this kernel's */
int attend_causal(const float *q, const uint16_t *k, const uint16_t *v, float *o, long T, int H, int Hk, int d,
                  int threads) {
    if (d != D || H % Hk) return -1;
    int G = H / Hk;
    long nqb = (T + BQ - 1) / BQ, tasks = nqb * Hk;
    float scale = 1.0f / sqrtf((float)D);
    #pragma omp parallel num_threads(threads)
    {
        Scratch *w = aligned_alloc(64, sizeof(Scratch));
        float *Qb = aligned_alloc(64, sizeof(float) * G * BQ * D), *Ob = aligned_alloc(64, sizeof(float) * G * BQ * D);
        float *ml = malloc(sizeof(float) * 2 * G * BQ);
        #pragma omp for schedule(dynamic, 1)
        for (long t = 0; t < tasks; t++) {
            long qb = nqb - 1 - t / Hk; /* the longest rows first */
            int g = (int)(t % Hk);
            long i0 = qb * BQ;
            int nq = T - i0 < BQ ? (int)(T - i0) : BQ;
            memset(Qb, 0, sizeof(float) * G * BQ * D);
            memset(Ob, 0, sizeof(float) * G * BQ * D);
            for (int j = 0; j < G; j++)
                for (int r = 0; r < nq; r++) {
                    memcpy(Qb + (j * BQ + r) * D, q + ((i0 + r) * H + g * G + j) * D, sizeof(float) * D);
                    ml[j * BQ + r] = -INFINITY, ml[G * BQ + j * BQ + r] = 0.0f;
                }
            for (long j0 = 0; j0 < i0 + nq; j0 += BK) {
                int nk = i0 + nq - j0 < BK ? (int)(i0 + nq - j0) : BK;
                float row[D];
                for (int c = 0; c < BK; c++) {
                    if (c < nk) {
                        widen(k + ((j0 + c) * Hk + g) * D, row, D);
                        widen(v + ((j0 + c) * Hk + g) * D, w->V + c * D, D);
                    } else {
                        memset(row, 0, sizeof row);
                        memset(w->V + c * D, 0, sizeof row);
                    }
                    for (int x = 0; x < D; x++) w->Kt[x * BK + c] = row[x];
                }
                for (int j = 0; j < G; j++)
                    block_row(w, Qb + j * BQ * D, Ob + j * BQ * D, ml + j * BQ, ml + G * BQ + j * BQ, i0, nq, j0, nk,
                              scale);
            }
            for (int j = 0; j < G; j++)
                for (int r = 0; r < nq; r++) {
                    float inv = 1.0f / ml[G * BQ + j * BQ + r];
                    float *dst = o + ((i0 + r) * H + g * G + j) * D;
                    for (int x = 0; x < D; x++) dst[x] = Ob[(j * BQ + r) * D + x] * inv;
                }
        }
        free(w), free(Qb), free(Ob), free(ml);
    }
    return 0;
}
