/* y [n, out] = x [n, in] @ w [out, in]^T for a few float32 rows of x (n small), AVX2 + FMA, reading w once.
 *
 * Compiled and loaded by skinny.py (which says why and when it is used). w is float32 (`skinny_f32`) or bfloat16
 * (`skinny_bf16`: each value widened exactly to float32 in a register, so the products are those of its float32
 * copy, from half the bytes). Each w row is read from memory once for up to 8 rows of x, which stay in L1; every
 * output element is the same 8-lane FMA chain over k followed by the same horizontal sum, so a row of y has the
 * same bits whatever n is, and whichever of the two weight types holds the same values. Threads: OpenMP, the
 * runtime torch itself loaded (skinny.py checks), as many as torch uses (`threads`), over blocks of BLOCK rows of w.
 * `in` must be a multiple of 8. */
#include <immintrin.h>
#include <stdint.h>

#define BLOCK 32

static inline float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

static inline __m256 load_f32(const float *p) { return _mm256_loadu_ps(p); }

static inline __m256 load_bf16(const uint16_t *p) { /* bfloat16 is float32's upper half: shift it into place */
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p)), 16));
}

/* rows o0 .. o1 - 1 of w against N rows of x: y[j, o] for j < N */
#define ROWS(T, N)                                                                                          \
    static void rows_##T##_##N(const float *x, const T *w, float *y, long in, long out, long o0, long o1) { \
        for (long o = o0; o < o1; o++) {                                                                    \
            const T *wo = w + o * in;                                                                       \
            __m256 acc[N];                                                                                  \
            for (int j = 0; j < N; j++) acc[j] = _mm256_setzero_ps();                                       \
            for (long k = 0; k < in; k += 8) {                                                              \
                __m256 wv = LOAD_##T(wo + k);                                                               \
                for (int j = 0; j < N; j++) acc[j] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x + j * in + k), acc[j]); \
            }                                                                                               \
            for (int j = 0; j < N; j++) y[j * out + o] = hsum(acc[j]);                                      \
        }                                                                                                   \
    }

/* the entry point for weights of type T: x rows 8 at a time per block of w (in L2 after the first 8) */
#define ENTRY(T, NAME)                                                                                      \
    ROWS(T, 1) ROWS(T, 2) ROWS(T, 3) ROWS(T, 4) ROWS(T, 5) ROWS(T, 6) ROWS(T, 7) ROWS(T, 8)                 \
    typedef void (*rows_##T)(const float *, const T *, float *, long, long, long, long);                    \
    static const rows_##T BY_N_##T[9] = {0, rows_##T##_1, rows_##T##_2, rows_##T##_3, rows_##T##_4,        \
                                         rows_##T##_5, rows_##T##_6, rows_##T##_7, rows_##T##_8};           \
    void NAME(const float *x, const T *w, float *y, long n, long in, long out, int threads) {               \
        long blocks = (out + BLOCK - 1) / BLOCK;                                                            \
        _Pragma("omp parallel for schedule(static) num_threads(threads)")                                   \
        for (long b = 0; b < blocks; b++) {                                                                 \
            long o0 = b * BLOCK, o1 = o0 + BLOCK < out ? o0 + BLOCK : out;                                  \
            for (long j = 0; j < n; j += 8)                                                                 \
                BY_N_##T[n - j < 8 ? n - j : 8](x + j * in, w, y + j * out, in, out, o0, o1);               \
        }                                                                                                   \
    }

#define LOAD_float load_f32
#define LOAD_uint16_t load_bf16
ENTRY(float, skinny_f32)
ENTRY(uint16_t, skinny_bf16)
