/* cc_heap: intrusive binary min-heap of deadlines (see cc_heap.h).
 *
 * Ordering: deadlines compare with '<', except that NaN sorts after every
 * other value (including +inf), so a NaN deadline can never break the heap
 * invariant. Equal deadlines come out in an unspecified order.
 */
#define _POSIX_C_SOURCE 200809L

#include "cc_heap.h"

#include <stdint.h>

#include "cc_alloc.h"

#define CC_HEAP_MIN_CAP 8

/* Strict weak order on deadlines with NaN greater than everything. */
static int deadline_less(double a, double b)
{
    if (a != a) /* NaN */
        return 0;
    if (b != b)
        return 1;
    return a < b;
}

static int node_less(const cc_heap_node *a, const cc_heap_node *b)
{
    return deadline_less(a->deadline, b->deadline);
}

static void place(cc_heap *h, size_t i, cc_heap_node *n)
{
    h->items[i] = n;
    n->index = i;
}

/* Move the node at i towards the root while it is smaller than its parent. */
static void sift_up(cc_heap *h, size_t i)
{
    cc_heap_node *n = h->items[i];
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!node_less(n, h->items[parent]))
            break;
        place(h, i, h->items[parent]);
        i = parent;
    }
    place(h, i, n);
}

/* Move the node at i towards the leaves while a child is smaller. */
static void sift_down(cc_heap *h, size_t i)
{
    cc_heap_node *n = h->items[i];
    size_t len = h->len;
    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= len)
            break;
        if (child + 1 < len && node_less(h->items[child + 1], h->items[child]))
            child++;
        if (!node_less(h->items[child], n))
            break;
        place(h, i, h->items[child]);
        i = child;
    }
    place(h, i, n);
}

/* Restore the invariant around i after its node changed. */
static void fix(cc_heap *h, size_t i)
{
    if (i > 0 && node_less(h->items[i], h->items[(i - 1) / 2]))
        sift_up(h, i);
    else
        sift_down(h, i);
}

static int in_heap(const cc_heap *h, const cc_heap_node *n)
{
    return n->index < h->len && h->items[n->index] == n;
}

void cc_heap_init(cc_heap *h)
{
    h->items = NULL;
    h->len = 0;
    h->cap = 0;
}

void cc_heap_free(cc_heap *h)
{
    for (size_t i = 0; i < h->len; i++)
        h->items[i]->index = CC_HEAP_NOT_IN_HEAP;
    cc_free(h->items);
    cc_heap_init(h);
}

void cc_heap_node_init(cc_heap_node *n)
{
    n->deadline = 0.0;
    n->index = CC_HEAP_NOT_IN_HEAP;
}

static int grow(cc_heap *h)
{
    size_t cap = h->cap ? h->cap : CC_HEAP_MIN_CAP / 2;
    if (cap > SIZE_MAX / 2 / sizeof(cc_heap_node *))
        return -1;
    cap *= 2;
    cc_heap_node **items = cc_realloc(h->items, cap * sizeof(cc_heap_node *));
    if (items == NULL)
        return -1;
    h->items = items;
    h->cap = cap;
    return 0;
}

int cc_heap_push(cc_heap *h, cc_heap_node *n, double deadline)
{
    if (in_heap(h, n)) { /* already here: behave as an update */
        cc_heap_update(h, n, deadline);
        return 0;
    }
    if (cc_heap_contains(n)) /* in another heap: refuse rather than corrupt both */
        return -1;
    if (h->len == h->cap && grow(h) < 0)
        return -1;
    n->deadline = deadline;
    place(h, h->len, n);
    h->len++;
    sift_up(h, h->len - 1);
    return 0;
}

void cc_heap_remove(cc_heap *h, cc_heap_node *n)
{
    if (!in_heap(h, n))
        return;
    size_t i = n->index;
    n->index = CC_HEAP_NOT_IN_HEAP;
    h->len--;
    if (i == h->len)
        return;
    place(h, i, h->items[h->len]);
    fix(h, i);
}

void cc_heap_update(cc_heap *h, cc_heap_node *n, double deadline)
{
    if (!in_heap(h, n))
        return;
    n->deadline = deadline;
    fix(h, n->index);
}

cc_heap_node *cc_heap_peek(const cc_heap *h)
{
    return h->len ? h->items[0] : NULL;
}

cc_heap_node *cc_heap_pop(cc_heap *h)
{
    cc_heap_node *top = cc_heap_peek(h);
    if (top != NULL)
        cc_heap_remove(h, top);
    return top;
}

size_t cc_heap_len(const cc_heap *h)
{
    return h->len;
}

int cc_heap_contains(const cc_heap_node *n)
{
    return n->index != CC_HEAP_NOT_IN_HEAP;
}
