/* The decode ceiling: how fast this machine reads N MiB from memory with T threads, each thread
 * summing its contiguous part of one buffer with 32-byte loads (no kernel math). Decode reads every
 * weight once per token, so MiB / this time is the most tokens/s any engine can reach here.
 *
 *   cc -O2 -mavx2 -pthread -o /tmp/read-roofline benches/read-roofline.c
 *   /tmp/read-roofline 86 1      # q4_0 SmolLM2-135M's weights, one thread
 *   /tmp/read-roofline 86 1 8    # the same, each thread reading 8 streams of its part at once
 *
 * Prints the best and mean wall time of 10 passes (after 2 warm-up passes); a pass runs from the
 * first thread's start to the last thread's end. */
#include <immintrin.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { PASSES = 12, WARM = 2, MAX_THREADS = 64 };

static char *buf;
static size_t len;
static int threads, streams = 1;
static pthread_barrier_t barrier;
static double start[MAX_THREADS][PASSES], end[MAX_THREADS][PASSES];
static volatile int sink;

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static void *reader(void *arg) {
    long id = (long)arg;
    size_t part = len / threads / 128 * 128;
    const char *lo = buf + part * id, *hi = lo + part;
    for (int pass = 0; pass < PASSES; pass++) {
        pthread_barrier_wait(&barrier);
        start[id][pass] = now();
        __m256i a = _mm256_setzero_si256(), b = a, c = a, d = a;
        size_t step = (size_t)(hi - lo) / streams / 128 * 128;
        for (size_t off = 0; off < step; off += 128) {
            for (int s = 0; s < streams; s++) {
                const char *p = lo + s * step + off;
                a = _mm256_add_epi8(a, _mm256_load_si256((const void *)p));
                b = _mm256_add_epi8(b, _mm256_load_si256((const void *)(p + 32)));
                c = _mm256_add_epi8(c, _mm256_load_si256((const void *)(p + 64)));
                d = _mm256_add_epi8(d, _mm256_load_si256((const void *)(p + 96)));
            }
        }
        a = _mm256_add_epi8(_mm256_add_epi8(a, b), _mm256_add_epi8(c, d));
        sink += _mm256_extract_epi8(a, 0);
        end[id][pass] = now();
        pthread_barrier_wait(&barrier);
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 3 || argc > 4 || atol(argv[1]) <= 0 || atoi(argv[2]) < 1 ||
        atoi(argv[2]) > MAX_THREADS || (argc == 4 && (atoi(argv[3]) < 1 || atoi(argv[3]) > 64))) {
        fprintf(stderr, "usage: %s MIB THREADS [STREAMS]   (THREADS 1..%d, STREAMS 1..64)\n", argv[0],
                MAX_THREADS);
        return 2;
    }
    len = (size_t)atol(argv[1]) << 20;
    threads = atoi(argv[2]);
    if (argc == 4) streams = atoi(argv[3]);
    buf = aligned_alloc(64, len);
    if (!buf) {
        fprintf(stderr, "cannot allocate %s MiB\n", argv[1]);
        return 1;
    }
    memset(buf, 1, len); /* fault every page in before timing */
    pthread_barrier_init(&barrier, NULL, threads + 1);
    pthread_t th[MAX_THREADS];
    for (long i = 0; i < threads; i++) pthread_create(&th[i], NULL, reader, (void *)i);
    double best = 1e30, sum = 0;
    for (int pass = 0; pass < PASSES; pass++) {
        pthread_barrier_wait(&barrier); /* go */
        pthread_barrier_wait(&barrier); /* all done */
        double first = 1e30, last = 0;
        for (int i = 0; i < threads; i++) {
            if (start[i][pass] < first) first = start[i][pass];
            if (end[i][pass] > last) last = end[i][pass];
        }
        if (pass >= WARM) {
            sum += last - first;
            if (last - first < best) best = last - first;
        }
    }
    for (int i = 0; i < threads; i++) pthread_join(th[i], NULL);
    double mean = sum / (PASSES - WARM);
    printf("%s MiB, %d thread(s) x %d stream(s): best %.3f ms, mean %.3f ms (%.1f GB/s); ceiling %.0f reads/s\n",
           argv[1], threads, streams, best * 1e3, mean * 1e3, len / mean / 1e9, 1.0 / mean);
    return 0;
}
