/* The roofline's peer: a[i] += s*b[i] over N floats with OpenMP, median GB/s of R passes
 * (12 bytes per element), to check that `gradlab bench`'s in-process roofline is not slower
 * than the machine's (its fraction would then be too generous).
 *
 *   gcc -O3 -march=native -fopenmp bench/peers/rmw.c -o target/rmw
 *   OMP_NUM_THREADS=2 target/rmw 16000000 20
 *   python3 bench/peers/roofline.py   # both, interleaved, median of 3
 */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>

static int cmp(const void *x, const void *y) {
    double a = *(const double *)x, b = *(const double *)y;
    return (a > b) - (a < b);
}

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 16000000;
    int reps = argc > 2 ? atoi(argv[2]) : 20;
    float *a = aligned_alloc(64, ((n * sizeof(float) + 63) / 64) * 64);
    float *b = aligned_alloc(64, ((n * sizeof(float) + 63) / 64) * 64);
    if (!a || !b) return 1;
#pragma omp parallel for schedule(static)
    for (long i = 0; i < n; i++) { a[i] = 1.0f; b[i] = 1e-3f; }
    double *t = malloc(sizeof(double) * reps);
    const float s = 0.5f;
    for (int r = 0; r < reps + 2; r++) {
        double t0 = omp_get_wtime();
#pragma omp parallel for schedule(static)
        for (long i = 0; i < n; i++) a[i] += s * b[i];
        double dt = omp_get_wtime() - t0;
        if (r >= 2) t[r - 2] = dt;
    }
    qsort(t, reps, sizeof(double), cmp);
    printf("{\"gbps\": %.2f, \"threads\": %d, \"check\": %g}\n",
           12.0 * n / t[reps / 2] / 1e9, omp_get_max_threads(), (double)a[n / 2]);
    return 0;
}
