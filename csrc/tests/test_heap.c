/* Unit tests of cc_heap: ordering, removal, re-keying, index bookkeeping, growth,
 * allocation failure, NaN/inf deadlines, and a randomised comparison with a naive model. */
#define _POSIX_C_SOURCE 200809L

#include <math.h>
#include <stdlib.h>

#include "cc_alloc.h"
#include "cc_heap.h"
#include "harness.h"

/* Same order as the heap: '<' with NaN after everything. */
static int dl_less(double a, double b)
{
    if (isnan(a))
        return 0;
    if (isnan(b))
        return 1;
    return a < b;
}

static int dl_cmp(const void *pa, const void *pb)
{
    double a = *(const double *)pa, b = *(const double *)pb;
    return dl_less(a, b) ? -1 : dl_less(b, a) ? 1 : 0;
}

static int dl_same(double a, double b)
{
    return (isnan(a) && isnan(b)) || a == b;
}

/* Heap invariant and index bookkeeping; returns 1 when valid. */
static int heap_valid(const cc_heap *h)
{
    if (h->len > h->cap)
        return 0;
    for (size_t i = 0; i < h->len; i++) {
        if (h->items[i] == NULL || h->items[i]->index != i)
            return 0;
        if (i > 0 && dl_less(h->items[i]->deadline, h->items[(i - 1) / 2]->deadline))
            return 0;
    }
    return 1;
}

static double random_deadline(uint64_t *rng)
{
    /* Many duplicates, negative and positive values. */
    return ((double)harness_below(rng, 2000) - 500.0) / 8.0;
}

TEST(heap_empty)
{
    cc_heap h;
    cc_heap_node n;
    cc_heap_init(&h);
    cc_heap_node_init(&n);
    CHECK(cc_heap_peek(&h) == NULL);
    CHECK(cc_heap_pop(&h) == NULL);
    CHECK_EQ(cc_heap_len(&h), 0);
    CHECK(!cc_heap_contains(&n));
    cc_heap_remove(&h, &n); /* not in the heap: no-op */
    n.deadline = 3.0;
    cc_heap_update(&h, &n, 1.0); /* not in the heap: no-op */
    CHECK(n.deadline == 3.0);
    CHECK(!cc_heap_contains(&n));
    CHECK_EQ(cc_heap_len(&h), 0);
    cc_heap_free(&h);
    cc_heap_free(&h); /* idempotent */
    CHECK(h.items == NULL && h.len == 0 && h.cap == 0);
}

TEST(heap_single)
{
    cc_heap h;
    cc_heap_node n;
    cc_heap_init(&h);
    cc_heap_node_init(&n);
    CHECK_EQ(cc_heap_push(&h, &n, 5.0), 0);
    CHECK(cc_heap_contains(&n));
    CHECK_EQ(n.index, 0);
    CHECK(cc_heap_peek(&h) == &n);
    CHECK(cc_heap_pop(&h) == &n);
    CHECK(!cc_heap_contains(&n));
    CHECK(cc_heap_pop(&h) == NULL);
    /* A popped node can be pushed again. */
    CHECK_EQ(cc_heap_push(&h, &n, 1.0), 0);
    CHECK(cc_heap_peek(&h) == &n && n.deadline == 1.0);
    cc_heap_free(&h);
    CHECK(!cc_heap_contains(&n));
}

/* Push random deadlines, pop everything, compare with a sorted copy. */
static void push_pop_sorted(size_t count, uint64_t *rng)
{
    cc_heap h;
    cc_heap_node *nodes = malloc(count * sizeof(*nodes) + 1);
    double *expected = malloc(count * sizeof(double) + 1);
    CHECK(nodes != NULL && expected != NULL);
    cc_heap_init(&h);
    for (size_t i = 0; i < count; i++) {
        cc_heap_node_init(&nodes[i]);
        expected[i] = random_deadline(rng);
        if (cc_heap_push(&h, &nodes[i], expected[i]) != 0)
            harness_fail(__FILE__, __LINE__, "push %zu failed", i);
    }
    EXPECT(heap_valid(&h));
    EXPECT(cc_heap_len(&h) == count);
    qsort(expected, count, sizeof(double), dl_cmp);
    for (size_t i = 0; i < count && harness_failures() == 0; i++) {
        cc_heap_node *top = cc_heap_pop(&h);
        if (top == NULL || top->deadline != expected[i] || cc_heap_contains(top))
            harness_fail(__FILE__, __LINE__, "pop %zu of %zu out of order", i, count);
        if (i % 64 == 0)
            EXPECT(heap_valid(&h));
    }
    EXPECT(cc_heap_pop(&h) == NULL);
    cc_heap_free(&h);
    free(nodes);
    free(expected);
}

TEST(heap_push_pop_random_order)
{
    uint64_t rng = harness_seed();
    static const size_t sizes[] = {1, 2, 3, 7, 8, 9, 31, 100, 1000, 5000};
    for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++)
        push_pop_sorted(sizes[s], &rng);
}

TEST(heap_remove_middle)
{
    enum { N = 300 };
    static cc_heap_node nodes[N];
    static int present[N];
    uint64_t rng = harness_seed() ^ 0xabc;
    cc_heap h;
    cc_heap_init(&h);
    for (size_t i = 0; i < N; i++) {
        cc_heap_node_init(&nodes[i]);
        CHECK_EQ(cc_heap_push(&h, &nodes[i], random_deadline(&rng)), 0);
        present[i] = 1;
    }
    /* Remove 2/3 of the nodes in random order, checking after each removal. */
    for (size_t k = 0; k < 2 * N / 3; k++) {
        size_t i;
        do
            i = harness_below(&rng, N);
        while (!present[i]);
        size_t len = cc_heap_len(&h);
        cc_heap_remove(&h, &nodes[i]);
        present[i] = 0;
        CHECK(!cc_heap_contains(&nodes[i]));
        CHECK_EQ(cc_heap_len(&h), len - 1);
        CHECK(heap_valid(&h));
        cc_heap_remove(&h, &nodes[i]); /* second removal: no-op */
        CHECK_EQ(cc_heap_len(&h), len - 1);
    }
    /* The rest pops in order and is exactly the nodes still present. */
    double last = -INFINITY;
    size_t popped = 0;
    for (cc_heap_node *n; (n = cc_heap_pop(&h)) != NULL; popped++) {
        size_t i = (size_t)(n - nodes);
        CHECK(i < N && present[i]);
        present[i] = 0;
        CHECK(!dl_less(n->deadline, last));
        last = n->deadline;
    }
    CHECK_EQ(popped, N - 2 * N / 3);
    cc_heap_free(&h);
}

TEST(heap_remove_root_and_last)
{
    cc_heap h;
    cc_heap_node a, b, c;
    cc_heap_init(&h);
    cc_heap_node_init(&a);
    cc_heap_node_init(&b);
    cc_heap_node_init(&c);
    CHECK_EQ(cc_heap_push(&h, &a, 1.0), 0);
    CHECK_EQ(cc_heap_push(&h, &b, 2.0), 0);
    CHECK_EQ(cc_heap_push(&h, &c, 3.0), 0);
    cc_heap_remove(&h, &c); /* the last slot */
    CHECK(heap_valid(&h) && cc_heap_len(&h) == 2);
    cc_heap_remove(&h, &a); /* the root */
    CHECK(heap_valid(&h) && cc_heap_peek(&h) == &b);
    cc_heap_free(&h);
}

TEST(heap_update_up_and_down)
{
    enum { N = 200 };
    static cc_heap_node nodes[N];
    uint64_t rng = harness_seed() ^ 0xdef;
    cc_heap h;
    cc_heap_init(&h);
    for (size_t i = 0; i < N; i++) {
        cc_heap_node_init(&nodes[i]);
        CHECK_EQ(cc_heap_push(&h, &nodes[i], (double)i), 0);
    }
    /* Root moves down to the bottom. */
    cc_heap_node *root = cc_heap_peek(&h);
    cc_heap_update(&h, root, 1e9);
    CHECK(heap_valid(&h));
    CHECK(cc_heap_peek(&h) != root);
    /* The last leaf moves up to the top. */
    cc_heap_node *leaf = h.items[h.len - 1];
    cc_heap_update(&h, leaf, -1e9);
    CHECK(heap_valid(&h));
    CHECK(cc_heap_peek(&h) == leaf);
    /* Random re-keying both ways. */
    for (int k = 0; k < 2000; k++) {
        cc_heap_node *n = &nodes[harness_below(&rng, N)];
        double d =
            n->deadline + (harness_below(&rng, 2) ? 1.0 : -1.0) * (double)harness_below(&rng, 100);
        cc_heap_update(&h, n, d);
        CHECK(n->deadline == d);
        CHECK(heap_valid(&h));
    }
    /* Same value: nothing moves. */
    size_t idx = nodes[7].index;
    cc_heap_update(&h, &nodes[7], nodes[7].deadline);
    CHECK_EQ(nodes[7].index, idx);
    CHECK_EQ(cc_heap_len(&h), N);
    double last = -INFINITY;
    for (cc_heap_node *n; (n = cc_heap_pop(&h)) != NULL;) {
        CHECK(!dl_less(n->deadline, last));
        last = n->deadline;
    }
    cc_heap_free(&h);
}

TEST(heap_index_bookkeeping)
{
    enum { N = 64 };
    static cc_heap_node nodes[N];
    cc_heap h;
    cc_heap_init(&h);
    for (size_t i = 0; i < N; i++) {
        cc_heap_node_init(&nodes[i]);
        CHECK_EQ(nodes[i].index, CC_HEAP_NOT_IN_HEAP);
        /* Decreasing deadlines: every push sifts to the root. */
        CHECK_EQ(cc_heap_push(&h, &nodes[i], (double)(N - i)), 0);
        CHECK(cc_heap_peek(&h) == &nodes[i]);
        CHECK_EQ(nodes[i].index, 0);
        CHECK(heap_valid(&h));
    }
    for (size_t i = 0; i < N; i++)
        CHECK(h.items[nodes[i].index] == &nodes[i]);
    /* Pushing a node that is already in this heap re-keys it. */
    CHECK_EQ(cc_heap_push(&h, &nodes[0], -5.0), 0);
    CHECK_EQ(cc_heap_len(&h), N);
    CHECK(cc_heap_peek(&h) == &nodes[0]);
    /* A node of another heap is refused, both heaps unchanged. */
    cc_heap other;
    cc_heap_init(&other);
    CHECK_EQ(cc_heap_push(&other, &nodes[1], 0.0), -1);
    CHECK_EQ(cc_heap_len(&other), 0);
    CHECK(h.items[nodes[1].index] == &nodes[1]);
    cc_heap_free(&other);
    /* Free resets every node. */
    cc_heap_free(&h);
    for (size_t i = 0; i < N; i++)
        CHECK(!cc_heap_contains(&nodes[i]));
    /* And the heap is usable again. */
    CHECK_EQ(cc_heap_push(&h, &nodes[3], 1.0), 0);
    cc_heap_free(&h);
}

TEST(heap_growth)
{
    enum { N = 20000 };
    cc_heap_node *nodes = malloc(N * sizeof(*nodes));
    CHECK(nodes != NULL);
    cc_heap h;
    cc_heap_init(&h);
    size_t last_cap = 0;
    for (size_t i = 0; i < N; i++) {
        cc_heap_node_init(&nodes[i]);
        /* Alternate small and large deadlines. */
        double d = (i % 2) ? (double)i : -(double)i;
        if (cc_heap_push(&h, &nodes[i], d) != 0) {
            harness_fail(__FILE__, __LINE__, "push %zu failed", i);
            break;
        }
        if (h.cap != last_cap) {
            EXPECT(h.cap >= h.len && (last_cap == 0 || h.cap == 2 * last_cap));
            last_cap = h.cap;
        }
    }
    EXPECT(cc_heap_len(&h) == N);
    EXPECT(heap_valid(&h));
    double last = -INFINITY;
    for (cc_heap_node *n; (n = cc_heap_pop(&h)) != NULL;) {
        if (n->deadline < last) {
            harness_fail(__FILE__, __LINE__, "out of order");
            break;
        }
        last = n->deadline;
    }
    cc_heap_free(&h);
    free(nodes);
}

TEST(heap_alloc_failure)
{
    enum { N = 9 };
    cc_heap_node nodes[N];
    cc_heap h;
    cc_heap_init(&h);
    for (size_t i = 0; i < N; i++)
        cc_heap_node_init(&nodes[i]);
    /* First push allocates: make it fail. */
    atomic_store(&cc_alloc_failpoint, 0);
    CHECK_EQ(cc_heap_push(&h, &nodes[0], 1.0), -1);
    CHECK(!cc_heap_contains(&nodes[0]));
    CHECK(h.len == 0 && h.items == NULL);
    CHECK_EQ(atomic_load(&cc_alloc_failpoint), -1);
    /* Fill the initial capacity. */
    for (size_t i = 0; i < N - 1; i++)
        CHECK_EQ(cc_heap_push(&h, &nodes[i], (double)(N - i)), 0);
    CHECK_EQ(h.len, h.cap);
    /* The growing push fails, heap unchanged. */
    cc_heap_node **items = h.items;
    size_t cap = h.cap;
    atomic_store(&cc_alloc_failpoint, 0);
    CHECK_EQ(cc_heap_push(&h, &nodes[N - 1], -1.0), -1);
    CHECK(h.items == items && h.cap == cap && h.len == N - 1);
    CHECK(!cc_heap_contains(&nodes[N - 1]));
    CHECK(heap_valid(&h));
    /* Disarmed again: it succeeds. */
    CHECK_EQ(cc_heap_push(&h, &nodes[N - 1], -1.0), 0);
    CHECK(cc_heap_peek(&h) == &nodes[N - 1]);
    CHECK(heap_valid(&h));
    cc_heap_free(&h);
}

TEST(heap_nan_and_infinities)
{
    static const double ds[] = {NAN, 3.0, INFINITY, -INFINITY, NAN, 0.0, -0.0, 1e308, -1e308, 2.0};
    enum { N = sizeof(ds) / sizeof(ds[0]) };
    cc_heap_node nodes[N];
    double sorted[N];
    cc_heap h;
    cc_heap_init(&h);
    for (size_t i = 0; i < N; i++) {
        cc_heap_node_init(&nodes[i]);
        sorted[i] = ds[i];
        CHECK_EQ(cc_heap_push(&h, &nodes[i], ds[i]), 0);
        CHECK(heap_valid(&h));
    }
    qsort(sorted, N, sizeof(double), dl_cmp);
    CHECK(isinf(sorted[0]) && sorted[0] < 0);
    CHECK(isnan(sorted[N - 1]));
    /* Re-key a NaN to a finite value and back. */
    cc_heap_update(&h, &nodes[0], 2.5);
    CHECK(heap_valid(&h));
    cc_heap_update(&h, &nodes[0], NAN);
    CHECK(heap_valid(&h));
    for (size_t i = 0; i < N; i++) {
        cc_heap_node *n = cc_heap_pop(&h);
        CHECK(n != NULL);
        CHECK(dl_same(n->deadline, sorted[i]));
        CHECK(heap_valid(&h));
    }
    cc_heap_free(&h);
}

/* Random push/remove/update/pop against a naive array model. */
TEST(heap_random_ops_vs_model)
{
    enum { N = 128, OPS = 40000 };
    static cc_heap_node nodes[N];
    static int in[N];
    uint64_t rng = harness_seed() ^ 0x777;
    cc_heap h;
    cc_heap_init(&h);
    size_t count = 0;
    for (size_t i = 0; i < N; i++) {
        cc_heap_node_init(&nodes[i]);
        in[i] = 0;
    }
    for (int op = 0; op < OPS; op++) {
        size_t i = harness_below(&rng, N);
        switch (harness_below(&rng, 4)) {
        case 0: /* push (or re-key when present) */
            CHECK_EQ(cc_heap_push(&h, &nodes[i], random_deadline(&rng)), 0);
            if (!in[i]) {
                in[i] = 1;
                count++;
            }
            break;
        case 1: /* remove */
            cc_heap_remove(&h, &nodes[i]);
            if (in[i]) {
                in[i] = 0;
                count--;
            }
            break;
        case 2: /* update */
            cc_heap_update(&h, &nodes[i], random_deadline(&rng));
            break;
        default: { /* pop: must be a node with the model's minimum deadline */
            double min = INFINITY;
            for (size_t j = 0; j < N; j++)
                if (in[j] && nodes[j].deadline < min)
                    min = nodes[j].deadline;
            cc_heap_node *n = cc_heap_pop(&h);
            if (count == 0) {
                CHECK(n == NULL);
            } else {
                CHECK(n != NULL);
                size_t j = (size_t)(n - nodes);
                CHECK(j < N && in[j]);
                CHECK(n->deadline == min);
                in[j] = 0;
                count--;
            }
        }
        }
        CHECK_EQ(cc_heap_len(&h), count);
        CHECK_EQ(cc_heap_contains(&nodes[i]), in[i]);
        if (op % 16 == 0)
            CHECK(heap_valid(&h));
    }
    cc_heap_free(&h);
}

void suite_heap(void)
{
    RUN_TEST(heap_empty);
    RUN_TEST(heap_single);
    RUN_TEST(heap_push_pop_random_order);
    RUN_TEST(heap_remove_middle);
    RUN_TEST(heap_remove_root_and_last);
    RUN_TEST(heap_update_up_and_down);
    RUN_TEST(heap_index_bookkeeping);
    RUN_TEST(heap_growth);
    RUN_TEST(heap_alloc_failure);
    RUN_TEST(heap_nan_and_infinities);
    RUN_TEST(heap_random_ops_vs_model);
}
