/*
 * insn-count: a QEMU TCG plugin that counts the guest instructions a program executes, summed over
 * all its threads, and prints the total when the program exits.
 *
 *   qemu-aarch64 -plugin ./insn-count.so[,out=FILE][,mode=vcpu|inline][,syms=N] prog args...
 *
 * Written for QEMU 7.2's plugin API (version 1), whose header Debian does not ship in a binary
 * package, so the few declarations used are written out below from the documented API (what
 * matters is the ABI: names, argument order, enum values and the qemu_info_t layout).
 *
 * Two ways of counting, the same result when one guest thread runs at a time:
 *   vcpu (default)    each translated block calls back with its instruction count, added to a
 *                     per-vCPU slot (in linux-user one vCPU per guest thread), summed at exit.
 *                     Exact with concurrent threads; a 4-instruction loop runs 1.25x slower than
 *                     inline under QEMU 7.2.
 *   inline            at translation, each translated block gets an inline "add n to the counter"
 *                     (n = its instruction count) that runs before the block. Cheap (no call),
 *                     but the add is a plain load/add/store on one shared counter, so two guest
 *                     threads executing at the same moment lose counts (4 threads of a tight
 *                     loop: 20% lost).
 * A block counts all its instructions even if a fault leaves it early (system calls end a block,
 * so they do not); for compute-bound code that is noise.
 *
 * Output, one line: "insns TOTAL" (in vcpu mode also "vcpus N"), to the out= file, else to stderr
 * (a guest that closes its fd 2 silences the latter: use out=). With syms=N (vcpu mode) also the N
 * symbols that executed the most, one "sym COUNT NAME" line each: a block is charged to the symbol
 * of its first instruction (QEMU reads the symbols of the main executable only; "?" is the rest:
 * shared libraries, stripped code).
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* --- the subset of QEMU's plugin API used here ------------------------------------------------ */
typedef uint64_t qemu_plugin_id_t;
struct qemu_plugin_tb;
typedef struct {
    const char *target_name;
    int version_min;
    int version_cur;
    bool system_emulation;
    union {
        struct {
            int smp_vcpus;
            int max_vcpus;
        } system;
    };
} qemu_info_t;
enum qemu_plugin_cb_flags { QEMU_PLUGIN_CB_NO_REGS, QEMU_PLUGIN_CB_R_REGS, QEMU_PLUGIN_CB_RW_REGS };
enum qemu_plugin_op { QEMU_PLUGIN_INLINE_ADD_U64 };
typedef void (*qemu_plugin_udata_cb_t)(qemu_plugin_id_t id, void *userdata);
typedef void (*qemu_plugin_vcpu_udata_cb_t)(unsigned int vcpu_index, void *userdata);
typedef void (*qemu_plugin_vcpu_tb_trans_cb_t)(qemu_plugin_id_t id, struct qemu_plugin_tb *tb);
void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id, qemu_plugin_vcpu_tb_trans_cb_t cb);
struct qemu_plugin_insn;
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb);
struct qemu_plugin_insn *qemu_plugin_tb_get_insn(const struct qemu_plugin_tb *tb, size_t idx);
const char *qemu_plugin_insn_symbol(const struct qemu_plugin_insn *insn);
void qemu_plugin_register_vcpu_tb_exec_inline(struct qemu_plugin_tb *tb, enum qemu_plugin_op op,
                                              void *ptr, uint64_t imm);
void qemu_plugin_register_vcpu_tb_exec_cb(struct qemu_plugin_tb *tb, qemu_plugin_vcpu_udata_cb_t cb,
                                          enum qemu_plugin_cb_flags flags, void *userdata);
void qemu_plugin_register_atexit_cb(qemu_plugin_id_t id, qemu_plugin_udata_cb_t cb, void *userdata);

#define QEMU_PLUGIN_EXPORT __attribute__((visibility("default")))
/* 7.2 accepts plugins declaring version 0 or 1; nothing here needs more than version 0. */
QEMU_PLUGIN_EXPORT int qemu_plugin_version = 1;

/* --- the plugin ------------------------------------------------------------------------------ */
/* vcpu mode: one slot per vCPU index, padded to a cache line so threads do not share lines.
 * Indices past the table (a program with more than MAX_VCPUS threads alive over its life) fall
 * back to one atomic counter. */
#define MAX_VCPUS 1024
struct slot {
    uint64_t n;
    char pad[56];
};
static struct slot per_vcpu[MAX_VCPUS];
static uint64_t overflow;
static uint64_t shared_count; /* inline mode */
static bool vcpu_mode = true;

/* syms=N: a table of symbols (QEMU's name pointers are stable, so the pointer is the key), filled at
 * translation under a lock, counted at execution with atomics. */
#define MAX_SYMS 8192
struct sym {
    const char *name;
    uint64_t n;
};
struct tb_info {
    uint64_t n;
    struct sym *sym;
};
static struct sym syms[MAX_SYMS];
static struct sym syms_full = {"(symbol table full)", 0};
static unsigned syms_wanted;
static pthread_mutex_t syms_lock = PTHREAD_MUTEX_INITIALIZER;

static struct sym *sym_slot(const char *name)
{
    static const char unknown[] = "?";
    if (!name)
        name = unknown;
    size_t h = ((uintptr_t)name >> 3) % MAX_SYMS;
    pthread_mutex_lock(&syms_lock);
    for (size_t i = 0; i < MAX_SYMS; i++, h = (h + 1) % MAX_SYMS) {
        if (syms[h].name == name || syms[h].name == NULL) {
            syms[h].name = name;
            pthread_mutex_unlock(&syms_lock);
            return &syms[h];
        }
    }
    pthread_mutex_unlock(&syms_lock);
    return &syms_full;
}

static void on_tb_exec_sym(unsigned int vcpu, void *udata)
{
    const struct tb_info *tb = udata;
    if (vcpu < MAX_VCPUS) {
        per_vcpu[vcpu].n += tb->n;
    } else {
        __atomic_fetch_add(&overflow, tb->n, __ATOMIC_RELAXED);
    }
    __atomic_fetch_add(&tb->sym->n, tb->n, __ATOMIC_RELAXED);
}

static int by_count_desc(const void *a, const void *b)
{
    uint64_t x = ((const struct sym *)a)->n, y = ((const struct sym *)b)->n;
    return x < y ? 1 : x > y ? -1 : 0;
}
static char *out_path;

static void on_tb_exec(unsigned int vcpu, void *udata)
{
    uint64_t n = (uint64_t)(uintptr_t)udata;
    if (vcpu < MAX_VCPUS) {
        per_vcpu[vcpu].n += n; /* only this vCPU's thread writes its slot */
    } else {
        __atomic_fetch_add(&overflow, n, __ATOMIC_RELAXED);
    }
}

static void on_tb_trans(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    (void)id;
    size_t n = qemu_plugin_tb_n_insns(tb);
    if (syms_wanted) {
        /* One small allocation per translation, never freed: blocks are translated once or a few
         * times, so this stays in the megabytes. */
        struct tb_info *info = malloc(sizeof *info);
        if (info) {
            info->n = n;
            info->sym = sym_slot(qemu_plugin_insn_symbol(qemu_plugin_tb_get_insn(tb, 0)));
            qemu_plugin_register_vcpu_tb_exec_cb(tb, on_tb_exec_sym, QEMU_PLUGIN_CB_NO_REGS, info);
            return;
        }
    }
    if (vcpu_mode) {
        qemu_plugin_register_vcpu_tb_exec_cb(tb, on_tb_exec, QEMU_PLUGIN_CB_NO_REGS,
                                             (void *)(uintptr_t)n);
    } else {
        qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &shared_count, n);
    }
}

static void on_program_exit(qemu_plugin_id_t id, void *udata)
{
    (void)id;
    (void)udata;
    char line[128];
    if (vcpu_mode) {
        uint64_t total = __atomic_load_n(&overflow, __ATOMIC_RELAXED);
        unsigned vcpus = 0;
        for (unsigned i = 0; i < MAX_VCPUS; i++) {
            total += per_vcpu[i].n;
            vcpus += per_vcpu[i].n != 0;
        }
        snprintf(line, sizeof line, "insns %" PRIu64 " vcpus %u\n", total, vcpus);
    } else {
        snprintf(line, sizeof line, "insns %" PRIu64 "\n", shared_count);
    }
    FILE *f = out_path ? fopen(out_path, "w") : NULL;
    if (out_path && !f) {
        fprintf(stderr, "insn-count: cannot write %s; printing instead\n", out_path);
    }
    if (!f) {
        f = stderr;
    }
    fputs(line, f);
    if (syms_wanted) {
        if (syms_full.n) {
            fprintf(f, "sym %" PRIu64 " %s\n", syms_full.n, syms_full.name);
        }
        qsort(syms, MAX_SYMS, sizeof syms[0], by_count_desc);
        for (unsigned i = 0; i < syms_wanted && i < MAX_SYMS && syms[i].n; i++) {
            fprintf(f, "sym %" PRIu64 " %s\n", syms[i].n, syms[i].name);
        }
    }
    if (f != stderr) {
        fclose(f);
    }
}

/* Not qemu_plugin_outs for the output: in 7.2 that writes to QEMU's log, shown only under -d plugin. */
QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc,
                                           char **argv)
{
    (void)info;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (strncmp(a, "out=", 4) == 0) {
            out_path = strdup(a + 4);
        } else if (strcmp(a, "mode=inline") == 0) {
            vcpu_mode = false;
        } else if (strcmp(a, "mode=vcpu") == 0) {
            vcpu_mode = true;
        } else if (strncmp(a, "syms=", 5) == 0) {
            syms_wanted = (unsigned)strtoul(a + 5, NULL, 10);
        } else {
            fprintf(stderr, "insn-count: unknown argument %s (out=FILE, mode=vcpu|inline, syms=N)\n", a);
            return -1;
        }
    }
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_tb_trans);
    qemu_plugin_register_atexit_cb(id, on_program_exit, NULL);
    return 0;
}
