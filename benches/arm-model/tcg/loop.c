/* A known instruction count for checking insn-count: argv[1] iterations of a two-instruction loop
 * (subs, b.ne) written in assembly, so the compiler cannot change it. Two runs with the same number
 * of digits in argv[1] (same work in strtol) differ by exactly 2 x the difference in iterations. */
#include <stdlib.h>

int main(int argc, char **argv)
{
    long n = argc > 1 ? strtol(argv[1], NULL, 10) : 1000;
    if (n < 1)
        return 1;
    __asm__ volatile("1: subs %0, %0, #1\n\tb.ne 1b" : "+r"(n) : : "cc");
    return 0;
}
