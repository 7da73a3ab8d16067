/* The bilinear interpolation of ccfkit's Numba kernel (`_interpolate`), in C,
 * three ways, to find what the CPU allows (docs/performance.md, "Where one thread's time goes"):
 *
 *   scalar  the kernel's loop: 4 scalar pixel loads, 2 lerps along x, 1 along y;
 *   gather  AVX2, 8 samples at a time, four _mm256_i32gather_ps;
 *   pairs   AVX2, each row's two pixels as one 64-bit element of a pair image
 *           (pairs[i] = (I[i], I[i + 1])), two _mm256_i32gather_pd per 4 samples.
 *
 * Q = 224 rings x P = 512 angles on a 259 x 259 image, centre (129, 129),
 * r_max 129 px; every result is checked against the scalar loop.
 *
 *   gcc -O3 -march=native -o /tmp/gather_floor benchmarks/gather_floor.c -lm
 *   taskset -c 0 /tmp/gather_floor
 */
#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

enum { W = 259, H = 259, Q = 224, P = 512, N = Q * P, REPEAT = 200 };

static void scalar(const float *restrict img, const uint32_t *restrict corner,
                   const float *restrict fx, const float *restrict fy, float *restrict out) {
    for (long s = 0; s < N; s++) {
        uint32_t i = corner[s];
        float upper = img[i] + fx[s] * (img[i + 1] - img[i]);
        float lower = img[i + W] + fx[s] * (img[i + W + 1] - img[i + W]);
        out[s] = upper + fy[s] * (lower - upper);
    }
}

static void gather(const float *restrict img, const uint32_t *restrict corner,
                   const float *restrict fx, const float *restrict fy, float *restrict out) {
    const __m256i one = _mm256_set1_epi32(1), row = _mm256_set1_epi32(W);
    for (long s = 0; s < N; s += 8) {
        __m256i i = _mm256_loadu_si256((const __m256i *)(corner + s));
        __m256i j = _mm256_add_epi32(i, row);
        __m256 a = _mm256_i32gather_ps(img, i, 4), b = _mm256_i32gather_ps(img, _mm256_add_epi32(i, one), 4);
        __m256 c = _mm256_i32gather_ps(img, j, 4), d = _mm256_i32gather_ps(img, _mm256_add_epi32(j, one), 4);
        __m256 x = _mm256_loadu_ps(fx + s), y = _mm256_loadu_ps(fy + s);
        __m256 upper = _mm256_fmadd_ps(x, _mm256_sub_ps(b, a), a);
        __m256 lower = _mm256_fmadd_ps(x, _mm256_sub_ps(d, c), c);
        _mm256_storeu_ps(out + s, _mm256_fmadd_ps(y, _mm256_sub_ps(lower, upper), upper));
    }
}

/* (a0 b0 a1 b1 | a2 b2 a3 b3), (a4 b4 ...) -> (a0 .. a7), (b0 .. b7) */
static inline void split(__m256 lo, __m256 hi, __m256 *a, __m256 *b) {
    __m256 even = _mm256_shuffle_ps(lo, hi, 0x88), odd = _mm256_shuffle_ps(lo, hi, 0xDD);
    *a = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(even), 0xD8));
    *b = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(odd), 0xD8));
}

static void pairs(const double *restrict pair, const uint32_t *restrict corner,
                  const float *restrict fx, const float *restrict fy, float *restrict out) {
    const __m128i row = _mm_set1_epi32(W);
    for (long s = 0; s < N; s += 8) {
        __m128i i0 = _mm_loadu_si128((const __m128i *)(corner + s));
        __m128i i1 = _mm_loadu_si128((const __m128i *)(corner + s + 4));
        __m256 t0 = _mm256_castpd_ps(_mm256_i32gather_pd(pair, i0, 8));
        __m256 t1 = _mm256_castpd_ps(_mm256_i32gather_pd(pair, i1, 8));
        __m256 u0 = _mm256_castpd_ps(_mm256_i32gather_pd(pair, _mm_add_epi32(i0, row), 8));
        __m256 u1 = _mm256_castpd_ps(_mm256_i32gather_pd(pair, _mm_add_epi32(i1, row), 8));
        __m256 a, b, c, d;
        split(t0, t1, &a, &b);
        split(u0, u1, &c, &d);
        __m256 x = _mm256_loadu_ps(fx + s), y = _mm256_loadu_ps(fy + s);
        __m256 upper = _mm256_fmadd_ps(x, _mm256_sub_ps(b, a), a);
        __m256 lower = _mm256_fmadd_ps(x, _mm256_sub_ps(d, c), c);
        _mm256_storeu_ps(out + s, _mm256_fmadd_ps(y, _mm256_sub_ps(lower, upper), upper));
    }
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

int main(void) {
    float *img = calloc(W * H + 2 * W + 4, sizeof *img);
    float *pair_floats = calloc(2 * (W * H + 2 * W + 4), sizeof *pair_floats);
    uint32_t *corner = malloc(N * sizeof *corner);
    float *fx = malloc(N * sizeof *fx), *fy = malloc(N * sizeof *fy);
    float *expected = malloc(N * sizeof *expected), *out = malloc(N * sizeof *out);
    srand(0);
    for (int i = 0; i < W * H; i++) img[i] = rand() / (float)RAND_MAX;
    for (int i = 0; i < W * H + W + 2; i++) {
        pair_floats[2 * i] = img[i];
        pair_floats[2 * i + 1] = img[i + 1];
    }
    for (int k = 0; k < Q; k++)
        for (int p = 0; p < P; p++) {
            double r = (k + 0.5) * 129.0 / Q, phi = 2 * M_PI * p / P;
            double x = 129 + r * cos(phi), y = 129 + r * sin(phi);
            int x0 = (int)floor(x), y0 = (int)floor(y);
            corner[k * P + p] = (uint32_t)(y0 * W + x0);
            fx[k * P + p] = (float)(x - x0);
            fy[k * P + p] = (float)(y - y0);
        }
    scalar(img, corner, fx, fy, expected);
    const char *names[] = {"scalar", "gather", "pairs"};
    for (int round = 0; round < 3; round++) {
        printf("round %d:", round + 1);
        for (int way = 0; way < 3; way++) {
            double start = now();
            for (int r = 0; r < REPEAT; r++) {
                if (way == 0) scalar(img, corner, fx, fy, out);
                if (way == 1) gather(img, corner, fx, fy, out);
                if (way == 2) pairs((const double *)pair_floats, corner, fx, fy, out);
            }
            double per_image = (now() - start) / REPEAT;
            float worst = 0;
            for (long s = 0; s < N; s++) worst = fmaxf(worst, fabsf(out[s] - expected[s]));
            printf("  %s %.3f ms (%.2f ns/sample, max diff %.1e)", names[way], 1e3 * per_image,
                   1e9 * per_image / N, worst);
        }
        printf("\n");
    }
    return 0;
}
