/* alloc.c: the allocator of the C core (csrc/ is built with -DCC_ALLOC_EXTERN).
 *
 * The core's arrays (deadline heaps, host maps, registry tables) are allocated through
 * CPython's raw domain: thread-safe without the GIL (the registry table is used from any
 * thread), and visible to tracemalloc, so memory measurements include them. */
#include "engine.h"

#include "cc_alloc.h"

void *cc_host_malloc(size_t n)
{
    return PyMem_RawMalloc(n);
}

void *cc_host_calloc(size_t count, size_t size)
{
    return PyMem_RawCalloc(count, size);
}

void *cc_host_realloc(void *p, size_t n)
{
    return PyMem_RawRealloc(p, n);
}

void cc_host_free(void *p)
{
    PyMem_RawFree(p);
}
