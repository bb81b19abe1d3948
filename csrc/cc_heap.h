/* cc_heap: an intrusive binary min-heap of deadlines.
 *
 * Pure C11 (no Python.h). Each item embeds a cc_heap_node; the heap stores
 * pointers to nodes and keeps node->index up to date, so removal and
 * re-keying of an arbitrary node are O(log n). Not thread-safe: the caller
 * serialises access (the binding keeps one heap per event loop, used only on
 * that loop's thread).
 */
#ifndef CC_HEAP_H
#define CC_HEAP_H

#include <stddef.h>

#define CC_HEAP_NOT_IN_HEAP ((size_t)-1)

typedef struct cc_heap_node {
    double deadline;
    size_t index; /* position in the heap, CC_HEAP_NOT_IN_HEAP when absent */
} cc_heap_node;

typedef struct cc_heap {
    cc_heap_node **items;
    size_t len;
    size_t cap;
} cc_heap;

/* Initialise an empty heap (no allocation until the first push). */
void cc_heap_init(cc_heap *h);
/* Free the storage; nodes are not touched except that their index is reset. */
void cc_heap_free(cc_heap *h);
/* Initialise a node that is not in any heap. */
void cc_heap_node_init(cc_heap_node *n);
/* Insert n (which must not be in a heap) with the given deadline.
 * Returns 0 on success, -1 on allocation failure (heap unchanged).
 * If n is already in h this acts as cc_heap_update(); if n is in another heap
 * it returns -1 and changes nothing. Deadlines order with '<', NaN last. */
int cc_heap_push(cc_heap *h, cc_heap_node *n, double deadline);
/* Remove n if it is in h; a no-op otherwise. */
void cc_heap_remove(cc_heap *h, cc_heap_node *n);
/* Change the deadline of a node that is in h. */
void cc_heap_update(cc_heap *h, cc_heap_node *n, double deadline);
/* The node with the smallest deadline, or NULL when empty. */
cc_heap_node *cc_heap_peek(const cc_heap *h);
/* Remove and return the node with the smallest deadline, or NULL. */
cc_heap_node *cc_heap_pop(cc_heap *h);
/* Number of nodes. */
size_t cc_heap_len(const cc_heap *h);
/* Non-zero when n is currently in a heap. */
int cc_heap_contains(const cc_heap_node *n);

#endif
