/* cc_alloc: allocation wrappers of the C core (private to csrc/).
 *
 * In normal builds these are plain malloc/calloc/realloc/free (the binding builds the core
 * with -DCC_ALLOC_EXTERN: its own allocator). The C unit tests
 * compile the core with -DCC_ALLOC_FAILPOINTS to inject allocation failures:
 * set cc_alloc_failpoint to N >= 0 and the allocation after N successful ones
 * fails (once; the failpoint then disarms itself back to -1).
 */
#ifndef CC_ALLOC_H
#define CC_ALLOC_H

#include <stddef.h>
#include <stdlib.h>

#ifdef CC_ALLOC_FAILPOINTS
#include <stdatomic.h>

/* Defined by the test harness; -1 means disarmed. */
extern _Atomic long cc_alloc_failpoint;

static inline int cc_alloc_should_fail(void)
{
    if (atomic_load_explicit(&cc_alloc_failpoint, memory_order_relaxed) < 0)
        return 0;
    if (atomic_fetch_sub_explicit(&cc_alloc_failpoint, 1, memory_order_relaxed) == 0) {
        atomic_store_explicit(&cc_alloc_failpoint, -1, memory_order_relaxed);
        return 1;
    }
    return 0;
}
#else
static inline int cc_alloc_should_fail(void)
{
    return 0;
}
#endif

#ifdef CC_ALLOC_EXTERN
/* The host provides the allocator (the Python binding: PyMem_Raw*, so that tracemalloc and
 * the interpreter's memory tools see the core's memory). Thread-safe, no GIL needed. */
void *cc_host_malloc(size_t n);
void *cc_host_calloc(size_t count, size_t size);
void *cc_host_realloc(void *p, size_t n);
void cc_host_free(void *p);
#define CC_SYS_MALLOC cc_host_malloc
#define CC_SYS_CALLOC cc_host_calloc
#define CC_SYS_REALLOC cc_host_realloc
#define CC_SYS_FREE cc_host_free
#else
#define CC_SYS_MALLOC malloc
#define CC_SYS_CALLOC calloc
#define CC_SYS_REALLOC realloc
#define CC_SYS_FREE free
#endif

static inline void *cc_malloc(size_t n)
{
    return cc_alloc_should_fail() ? NULL : CC_SYS_MALLOC(n);
}

static inline void *cc_calloc(size_t count, size_t size)
{
    return cc_alloc_should_fail() ? NULL : CC_SYS_CALLOC(count, size);
}

static inline void *cc_realloc(void *p, size_t n)
{
    return cc_alloc_should_fail() ? NULL : CC_SYS_REALLOC(p, n);
}

static inline void cc_free(void *p)
{
    CC_SYS_FREE(p);
}

#endif
