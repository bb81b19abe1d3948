/* A tiny unit-test harness for the pure C core.
 *
 * A test is a `TEST(name) { ... }` function; a suite function calls
 * RUN_TEST(name) for each. Checks record a failure (with file:line and the
 * expression) and return from the current function; they are thread-safe, so
 * worker threads may use CHECK_OR / EXPECT too. main() (run_tests.c) prints
 * failures, then exactly one closing line "N passed, N failed", and exits
 * non-zero when a test failed (or none ran).
 *
 * Usage: run_tests [-v] [SUBSTRING...]   (-v: one line per test; SUBSTRINGs
 * select the tests whose name contains one of them). CC_TEST_SEED=<n>
 * changes the seed of the randomised tests.
 */
#ifndef CC_TEST_HARNESS_H
#define CC_TEST_HARNESS_H

#ifndef CC_ALLOC_FAILPOINTS
#error "build the C tests with -DCC_ALLOC_FAILPOINTS (see the Makefile)"
#endif

#include <stdatomic.h>
#include <stdint.h>

void harness_fail(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void harness_run(const char *name, void (*fn)(void));
/* Number of failures recorded so far in the running test. */
int harness_failures(void);
/* Seed for the randomised tests (CC_TEST_SEED, default fixed). */
uint64_t harness_seed(void);

/* xorshift64*: deterministic, seedable, good enough for test data. */
static inline uint64_t harness_rand(uint64_t *state)
{
    uint64_t x = *state ? *state : 0x9e3779b97f4a7c15ULL;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * 0x2545f4914f6cdd1dULL;
}

/* Uniform-ish integer in [0, n). */
static inline size_t harness_below(uint64_t *state, size_t n)
{
    return (size_t)(harness_rand(state) % (uint64_t)n);
}

#define TEST(name) static void name(void)
#define RUN_TEST(name) harness_run(#name, name)

/* Record a failure and go on. */
#define EXPECT(cond)                                                                               \
    do {                                                                                           \
        if (!(cond))                                                                               \
            harness_fail(__FILE__, __LINE__, "%s", #cond);                                         \
    } while (0)

/* Record a failure and return ret from the current function (thread bodies). */
#define CHECK_OR(cond, ret)                                                                        \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            harness_fail(__FILE__, __LINE__, "%s", #cond);                                         \
            return ret;                                                                            \
        }                                                                                          \
    } while (0)

/* Record a failure and return from the current (void) function. */
#define CHECK(cond) CHECK_OR(cond, )

/* Integer equality, printing both values on failure. */
#define CHECK_EQ(a, b)                                                                             \
    do {                                                                                           \
        long long check_a_ = (long long)(a), check_b_ = (long long)(b);                            \
        if (check_a_ != check_b_) {                                                                \
            harness_fail(__FILE__, __LINE__, "%s == %s (%lld != %lld)", #a, #b, check_a_,          \
                         check_b_);                                                                \
            return;                                                                                \
        }                                                                                          \
    } while (0)

/* Suites (one per core module). */
void suite_heap(void);
void suite_pmap(void);
void suite_state(void);
void suite_table(void);

#endif
