/* One core's read bandwidth on an ARM board, for calibrating the chip table of benches/arm-model
 * (benches/read-roofline.c is the x86 one: it uses AVX2). Sums a buffer of N MiB with four
 * independent 16-byte NEON accumulators, no other arithmetic; prints the best and mean of 10 passes
 * after 2 warm-up passes, and the GB/s of the best.
 *
 *   gcc -O2 -o /tmp/read-bandwidth benches/arm-model/read-bandwidth.c
 *   /tmp/read-bandwidth 86      # q4_0 SmolLM2-135M's weights
 */
#include <arm_neon.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { PASSES = 12, WARM = 2 };

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
    size_t mib = argc > 1 ? strtoul(argv[1], NULL, 10) : 86;
    size_t len = mib << 20;
    uint8_t *buf = aligned_alloc(64, len);
    if (!buf) {
        fprintf(stderr, "read-bandwidth: cannot allocate %zu MiB\n", mib);
        return 1;
    }
    memset(buf, 1, len); /* touch every page before timing */
    double best = 1e9, sum = 0;
    volatile uint8_t sink = 0;
    for (int pass = 0; pass < PASSES; pass++) {
        double t0 = now();
        uint8x16_t a = vdupq_n_u8(0), b = a, c = a, d = a;
        for (size_t i = 0; i + 64 <= len; i += 64) {
            a = vaddq_u8(a, vld1q_u8(buf + i));
            b = vaddq_u8(b, vld1q_u8(buf + i + 16));
            c = vaddq_u8(c, vld1q_u8(buf + i + 32));
            d = vaddq_u8(d, vld1q_u8(buf + i + 48));
        }
        sink += vgetq_lane_u8(vaddq_u8(vaddq_u8(a, b), vaddq_u8(c, d)), 0);
        double t = now() - t0;
        if (pass >= WARM) {
            best = t < best ? t : best;
            sum += t;
        }
    }
    printf("%zu MiB: best %.3f ms, mean %.3f ms, %.1f GB/s\n", mib, best * 1e3,
           sum / (PASSES - WARM) * 1e3, len / best / 1e9);
    free(buf);
    return 0;
}
