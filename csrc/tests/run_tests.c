/* Test runner: runs every suite and prints the closing "N passed, N failed" line. */
#define _POSIX_C_SOURCE 200809L

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "harness.h"

/* The allocation failpoint of csrc/cc_alloc.h (-1: disarmed). */
_Atomic long cc_alloc_failpoint = -1;

static atomic_int current_failures;
static int passed, failed, verbose;
static char **filters;
static int n_filters;
static uint64_t seed = 0x5eed1234abcdULL;
static pthread_mutex_t print_lock = PTHREAD_MUTEX_INITIALIZER;

void harness_fail(const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    atomic_fetch_add(&current_failures, 1);
    pthread_mutex_lock(&print_lock);
    fprintf(stdout, "  %s:%d: check failed: ", file, line);
    va_start(ap, fmt);
    vfprintf(stdout, fmt, ap);
    va_end(ap);
    fputc('\n', stdout);
    fflush(stdout);
    pthread_mutex_unlock(&print_lock);
}

int harness_failures(void)
{
    return atomic_load(&current_failures);
}

uint64_t harness_seed(void)
{
    return seed;
}

static int selected(const char *name)
{
    if (n_filters == 0)
        return 1;
    for (int i = 0; i < n_filters; i++) {
        if (strstr(name, filters[i]) != NULL)
            return 1;
    }
    return 0;
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

void harness_run(const char *name, void (*fn)(void))
{
    if (!selected(name))
        return;
    atomic_store(&current_failures, 0);
    atomic_store(&cc_alloc_failpoint, -1);
    double start = now_ms();
    fn();
    double elapsed = now_ms() - start;
    atomic_store(&cc_alloc_failpoint, -1); /* a failing test must not leak an armed failpoint */
    if (atomic_load(&current_failures) == 0) {
        passed++;
        if (verbose)
            printf("ok   %s (%.1f ms)\n", name, elapsed);
    } else {
        failed++;
        printf("FAIL %s (seed %llu)\n", name, (unsigned long long)seed);
    }
    fflush(stdout);
}

int main(int argc, char **argv)
{
    const char *env_seed = getenv("CC_TEST_SEED");
    if (env_seed != NULL && *env_seed != '\0')
        seed = strtoull(env_seed, NULL, 0);
    filters = calloc((size_t)argc, sizeof(char *));
    if (filters == NULL)
        return 2;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-v") == 0)
            verbose = 1;
        else
            filters[n_filters++] = argv[i];
    }
    suite_heap();
    suite_pmap();
    suite_state();
    suite_table();
    free(filters);
    printf("%d passed, %d failed\n", passed, failed);
    return (failed == 0 && passed > 0) ? 0 : 1;
}
