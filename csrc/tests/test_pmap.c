/* Unit tests of cc_pmap: insert/get/remove/replace, 100k consecutive keys (spread, load factor,
 * shrinking after mass removal), iteration, allocation failures on the first insert, on growth
 * and on shrinking, and a randomised comparison with an array model. */
#define _POSIX_C_SOURCE 200809L

#include <stdlib.h>
#include <string.h>

#include "cc_alloc.h"
#include "cc_pmap.h"
#include "harness.h"

/* Keys are addresses of distinct 16-byte aligned objects, like the tasks the binding uses. */
typedef struct key_obj {
    _Alignas(16) unsigned char pad[16];
} key_obj;

/* Structural invariants: power-of-two array, load factor <= 1, len matches the chains, every
 * chained node is found by its key and appears once. Returns 1 when valid. */
static int pmap_valid(const cc_pmap *m)
{
    if (m->nbuckets == 0)
        return m->buckets == NULL && m->len == 0;
    if (m->buckets == NULL || (m->nbuckets & (m->nbuckets - 1)) != 0 || m->len > m->nbuckets)
        return 0;
    size_t count = 0;
    for (size_t i = 0; i < m->nbuckets; i++) {
        for (cc_pmap_node *n = m->buckets[i]; n != NULL; n = n->next) {
            if (++count > m->len || cc_pmap_get(m, n->key) != n)
                return 0;
        }
    }
    return count == m->len;
}

static size_t longest_chain(const cc_pmap *m)
{
    size_t longest = 0;
    for (size_t i = 0; i < m->nbuckets; i++) {
        size_t len = 0;
        for (const cc_pmap_node *n = m->buckets[i]; n != NULL; n = n->next)
            len++;
        if (len > longest)
            longest = len;
    }
    return longest;
}

/* Iterate m and count the visits of each of nodes[0..n) in seen[]; returns the number of
 * nodes returned, or (size_t)-1 when the iteration yields a node outside nodes[]. */
static size_t iterate(const cc_pmap *m, cc_pmap_node *nodes, size_t n, unsigned *seen)
{
    size_t bucket = 0, count = 0;
    cc_pmap_node *cursor = NULL, *node;
    memset(seen, 0, n * sizeof *seen);
    while ((node = cc_pmap_next(m, &bucket, &cursor)) != NULL) {
        uintptr_t off = (uintptr_t)node - (uintptr_t)nodes;
        if (off >= n * sizeof *nodes || off % sizeof *nodes != 0)
            return (size_t)-1;
        seen[off / sizeof *nodes]++;
        count++;
    }
    /* At the end it keeps returning NULL. */
    if (cc_pmap_next(m, &bucket, &cursor) != NULL || cursor != NULL)
        return (size_t)-1;
    return count;
}

TEST(pmap_empty)
{
    cc_pmap m;
    key_obj k;
    cc_pmap_node n = {&k, NULL}, n2 = {&k, NULL};
    size_t bucket = 0;
    cc_pmap_node *cursor = NULL;
    cc_pmap_init(&m);
    CHECK(m.buckets == NULL && m.nbuckets == 0 && m.len == 0);
    CHECK_EQ(cc_pmap_len(&m), 0);
    CHECK(cc_pmap_get(&m, &k) == NULL);
    CHECK(cc_pmap_get(&m, NULL) == NULL);
    CHECK_EQ(cc_pmap_remove(&m, &n), 0);
    cc_pmap_replace(&m, &n, &n2); /* not in the map: no-op */
    CHECK(n2.next == NULL);
    CHECK(cc_pmap_next(&m, &bucket, &cursor) == NULL);
    CHECK(bucket == 0 && cursor == NULL);
    CHECK(m.buckets == NULL && m.len == 0); /* nothing above allocated */
    cc_pmap_free(&m);
    cc_pmap_free(&m); /* idempotent */
    CHECK(m.buckets == NULL && m.nbuckets == 0 && m.len == 0);
}

TEST(pmap_basic)
{
    key_obj k[4];
    cc_pmap_node a = {&k[0], NULL}, b = {&k[1], NULL}, c = {&k[2], NULL};
    cc_pmap m;
    cc_pmap_init(&m);
    CHECK_EQ(cc_pmap_insert(&m, &a), 0);
    CHECK_EQ(m.nbuckets, 16); /* the first insert allocates 16 buckets */
    CHECK_EQ(cc_pmap_insert(&m, &b), 0);
    CHECK_EQ(cc_pmap_insert(&m, &c), 0);
    CHECK_EQ(cc_pmap_len(&m), 3);
    CHECK(cc_pmap_get(&m, &k[0]) == &a);
    CHECK(cc_pmap_get(&m, &k[1]) == &b);
    CHECK(cc_pmap_get(&m, &k[2]) == &c);
    CHECK(cc_pmap_get(&m, &k[3]) == NULL);
    CHECK(cc_pmap_get(&m, NULL) == NULL);
    CHECK(pmap_valid(&m));
    /* Remove the middle one; removing it again, or a node never inserted, is a no-op. */
    CHECK_EQ(cc_pmap_remove(&m, &b), 1);
    CHECK(b.next == NULL);
    CHECK_EQ(cc_pmap_remove(&m, &b), 0);
    cc_pmap_node stranger = {&k[0], NULL}; /* same key as a, but not a */
    CHECK_EQ(cc_pmap_remove(&m, &stranger), 0);
    CHECK_EQ(cc_pmap_remove(&m, NULL), 0);
    CHECK_EQ(cc_pmap_len(&m), 2);
    CHECK(cc_pmap_get(&m, &k[1]) == NULL);
    CHECK(cc_pmap_get(&m, &k[0]) == &a);
    CHECK(cc_pmap_get(&m, &k[2]) == &c);
    /* Re-insert under a new key. */
    b.key = &k[3];
    CHECK_EQ(cc_pmap_insert(&m, &b), 0);
    CHECK(cc_pmap_get(&m, &k[3]) == &b);
    CHECK_EQ(cc_pmap_insert(&m, NULL), -1);
    CHECK_EQ(cc_pmap_len(&m), 3);
    CHECK(pmap_valid(&m));
    /* A NULL key is an ordinary key (compared, never dereferenced). */
    cc_pmap_node z = {NULL, NULL};
    CHECK_EQ(cc_pmap_insert(&m, &z), 0);
    CHECK(cc_pmap_get(&m, NULL) == &z);
    CHECK_EQ(cc_pmap_remove(&m, &z), 1);
    CHECK(cc_pmap_get(&m, NULL) == NULL);
    /* Free, then reuse. */
    cc_pmap_free(&m);
    CHECK(m.buckets == NULL && m.nbuckets == 0 && cc_pmap_len(&m) == 0);
    CHECK(cc_pmap_get(&m, &k[0]) == NULL);
    CHECK_EQ(cc_pmap_insert(&m, &a), 0);
    CHECK(cc_pmap_get(&m, &k[0]) == &a);
    CHECK_EQ(cc_pmap_len(&m), 1);
    cc_pmap_free(&m);
}

TEST(pmap_replace)
{
    enum { N = 1000 };
    key_obj *keys = calloc(N, sizeof *keys);
    cc_pmap_node *olds = calloc(N, sizeof *olds), *repls = calloc(N, sizeof *repls);
    unsigned *seen = calloc(N, sizeof *seen);
    cc_pmap m;
    cc_pmap_init(&m);
    CHECK(keys != NULL && olds != NULL && repls != NULL && seen != NULL);
    for (size_t i = 0; i < N; i++) {
        olds[i].key = &keys[i];
        CHECK_EQ(cc_pmap_insert(&m, &olds[i]), 0);
    }
    /* With N nodes some chains are longer than one: every position in a chain is exercised. */
    CHECK(longest_chain(&m) > 1);
    cc_pmap_node **buckets = m.buckets;
    size_t nbuckets = m.nbuckets;
    /* Replacing never allocates: an armed failpoint stays armed. */
    atomic_store(&cc_alloc_failpoint, 0);
    for (size_t i = 0; i < N; i++) {
        repls[i].key = NULL; /* replace sets it */
        repls[i].next = &olds[0];
        cc_pmap_replace(&m, &olds[i], &repls[i]);
        CHECK(repls[i].key == &keys[i]);
        CHECK(olds[i].next == NULL);
        CHECK_EQ(cc_pmap_len(&m), N);
        CHECK(cc_pmap_get(&m, &keys[i]) == &repls[i]);
    }
    CHECK_EQ(atomic_load(&cc_alloc_failpoint), 0);
    atomic_store(&cc_alloc_failpoint, -1);
    CHECK(m.buckets == buckets && m.nbuckets == nbuckets);
    CHECK(pmap_valid(&m));
    /* Only the replacements are left in the map; the old nodes are out of it. */
    CHECK_EQ(iterate(&m, repls, N, seen), N);
    for (size_t i = 0; i < N; i++)
        CHECK_EQ(seen[i], 1);
    for (size_t i = 0; i < N; i++)
        CHECK_EQ(cc_pmap_remove(&m, &olds[i]), 0);
    CHECK_EQ(cc_pmap_len(&m), N);
    /* No-op cases: old not in the map, repl == old, NULL repl. */
    cc_pmap_replace(&m, &olds[0], &olds[1]);
    CHECK(cc_pmap_get(&m, &keys[0]) == &repls[0] && olds[1].key == &keys[1]);
    cc_pmap_replace(&m, &repls[0], &repls[0]);
    cc_pmap_replace(&m, &repls[0], NULL);
    cc_pmap_replace(&m, NULL, &olds[0]);
    CHECK(cc_pmap_get(&m, &keys[0]) == &repls[0]);
    CHECK_EQ(cc_pmap_len(&m), N);
    CHECK(pmap_valid(&m));
    /* Replace back and forth, then remove the current holder. */
    cc_pmap_replace(&m, &repls[7], &olds[7]);
    CHECK(cc_pmap_get(&m, &keys[7]) == &olds[7]);
    CHECK_EQ(cc_pmap_remove(&m, &repls[7]), 0);
    CHECK_EQ(cc_pmap_remove(&m, &olds[7]), 1);
    CHECK(cc_pmap_get(&m, &keys[7]) == NULL);
    CHECK_EQ(cc_pmap_len(&m), N - 1);
    CHECK(pmap_valid(&m));
    cc_pmap_free(&m);
    free(keys);
    free(olds);
    free(repls);
    free(seen);
}

TEST(pmap_100k)
{
    enum { N = 100000 };
    key_obj *keys = calloc(N, sizeof *keys);
    cc_pmap_node *nodes = calloc(N, sizeof *nodes);
    cc_pmap m;
    cc_pmap_init(&m);
    CHECK(keys != NULL && nodes != NULL);
    for (size_t i = 0; i < N; i++) {
        nodes[i].key = &keys[i];
        CHECK_EQ(cc_pmap_insert(&m, &nodes[i]), 0);
        CHECK(m.len <= m.nbuckets); /* load factor <= 1 at every step */
    }
    CHECK_EQ(cc_pmap_len(&m), N);
    CHECK_EQ(m.nbuckets, 131072); /* 16 doubled until >= N */
    CHECK(pmap_valid(&m));
    /* Consecutive 16-byte objects spread: no long chains (uniform hashing at load 0.76 gives a
     * longest chain of about 8; keeping the low bits of the address would give chains of 16+). */
    CHECK(longest_chain(&m) <= 12);
    for (size_t i = 0; i < N; i++)
        CHECK(cc_pmap_get(&m, &keys[i]) == &nodes[i]);
    /* Remove every other node. */
    for (size_t i = 0; i < N; i += 2)
        CHECK_EQ(cc_pmap_remove(&m, &nodes[i]), 1);
    CHECK_EQ(cc_pmap_len(&m), N / 2);
    CHECK_EQ(m.nbuckets, 131072); /* no shrinking while len >= nbuckets / 8 */
    for (size_t i = 0; i < N; i++)
        CHECK(cc_pmap_get(&m, &keys[i]) == (i % 2 ? &nodes[i] : NULL));
    CHECK(pmap_valid(&m));
    /* Remove the rest: the array shrinks back to its minimum instead of staying huge. */
    for (size_t i = 1; i < N; i += 2) {
        CHECK_EQ(cc_pmap_remove(&m, &nodes[i]), 1);
        CHECK(m.nbuckets == 16 || m.len >= m.nbuckets / 16); /* shrinking keeps up */
    }
    CHECK_EQ(cc_pmap_len(&m), 0);
    CHECK_EQ(m.nbuckets, 16);
    CHECK(pmap_valid(&m));
    cc_pmap_free(&m);
    free(keys);
    free(nodes);
}

TEST(pmap_iteration)
{
    enum { N = 777 };
    key_obj *keys = calloc(N, sizeof *keys);
    cc_pmap_node *nodes = calloc(N, sizeof *nodes);
    unsigned *seen = calloc(N, sizeof *seen);
    cc_pmap m;
    cc_pmap_init(&m);
    CHECK(keys != NULL && nodes != NULL && seen != NULL);
    CHECK_EQ(iterate(&m, nodes, N, seen), 0);
    for (size_t i = 0; i < N; i++) {
        nodes[i].key = &keys[i];
        CHECK_EQ(cc_pmap_insert(&m, &nodes[i]), 0);
    }
    CHECK(longest_chain(&m) > 1); /* chains of several nodes are walked too */
    CHECK_EQ(iterate(&m, nodes, N, seen), N);
    for (size_t i = 0; i < N; i++)
        CHECK_EQ(seen[i], 1);
    /* After removing every third node, the others are visited once, the removed ones never. */
    for (size_t i = 0; i < N; i += 3)
        CHECK_EQ(cc_pmap_remove(&m, &nodes[i]), 1);
    CHECK_EQ(iterate(&m, nodes, N, seen), cc_pmap_len(&m));
    for (size_t i = 0; i < N; i++)
        CHECK_EQ(seen[i], i % 3 ? 1 : 0);
    /* Emptied map that still has buckets: nothing visited. */
    for (size_t i = 0; i < N; i++)
        (void)cc_pmap_remove(&m, &nodes[i]);
    CHECK(m.buckets != NULL && cc_pmap_len(&m) == 0);
    CHECK_EQ(iterate(&m, nodes, N, seen), 0);
    cc_pmap_free(&m);
    free(keys);
    free(nodes);
    free(seen);
}

TEST(pmap_alloc_failure)
{
    enum { N = 256 };
    key_obj keys[N];
    cc_pmap_node nodes[N];
    cc_pmap m;
    cc_pmap_init(&m);
    for (size_t i = 0; i < N; i++)
        nodes[i] = (cc_pmap_node){&keys[i], NULL};
    /* The first insert allocates the buckets: make it fail. */
    atomic_store(&cc_alloc_failpoint, 0);
    CHECK_EQ(cc_pmap_insert(&m, &nodes[0]), -1);
    CHECK_EQ(atomic_load(&cc_alloc_failpoint), -1); /* the failure was consumed */
    CHECK(m.buckets == NULL && m.nbuckets == 0 && m.len == 0);
    CHECK(cc_pmap_get(&m, &keys[0]) == NULL);
    /* Usable afterwards: fill up to the growth threshold. */
    for (size_t i = 0; i < 16; i++)
        CHECK_EQ(cc_pmap_insert(&m, &nodes[i]), 0);
    CHECK(m.nbuckets == 16 && m.len == 16);
    /* The growing insert fails: map unchanged, the node not inserted. */
    cc_pmap_node **buckets = m.buckets;
    atomic_store(&cc_alloc_failpoint, 0);
    CHECK_EQ(cc_pmap_insert(&m, &nodes[16]), -1);
    CHECK_EQ(atomic_load(&cc_alloc_failpoint), -1);
    CHECK(m.buckets == buckets && m.nbuckets == 16 && m.len == 16);
    CHECK(cc_pmap_get(&m, &keys[16]) == NULL);
    CHECK_EQ(cc_pmap_remove(&m, &nodes[16]), 0);
    for (size_t i = 0; i < 16; i++)
        CHECK(cc_pmap_get(&m, &keys[i]) == &nodes[i]);
    CHECK(pmap_valid(&m));
    /* Get, remove and replace below the shrink threshold allocate nothing. */
    atomic_store(&cc_alloc_failpoint, 0);
    CHECK(cc_pmap_get(&m, &keys[3]) == &nodes[3]);
    CHECK_EQ(cc_pmap_remove(&m, &nodes[3]), 1);
    cc_pmap_replace(&m, &nodes[4], &nodes[3]);
    CHECK(cc_pmap_get(&m, &keys[4]) == &nodes[3]);
    cc_pmap_replace(&m, &nodes[3], &nodes[4]);
    CHECK(cc_pmap_get(&m, &keys[4]) == &nodes[4]);
    nodes[3].key = &keys[3];                    /* the replace gave it key 4 */
    CHECK_EQ(cc_pmap_insert(&m, &nodes[3]), 0); /* len 15 < 16: no growth */
    CHECK_EQ(atomic_load(&cc_alloc_failpoint), 0);
    atomic_store(&cc_alloc_failpoint, -1);
    /* Disarmed: the growth works. */
    for (size_t i = 16; i < N; i++)
        CHECK_EQ(cc_pmap_insert(&m, &nodes[i]), 0);
    CHECK(m.nbuckets == N && m.len == N);
    CHECK(pmap_valid(&m));
    /* Remove everything with an armed failpoint on each removal: every attempted shrink
     * fails, is ignored, and the map stays consistent with the larger array. */
    size_t shrink_failures = 0;
    for (size_t i = 0; i < N; i++) {
        size_t nbuckets = m.nbuckets;
        atomic_store(&cc_alloc_failpoint, 0);
        CHECK_EQ(cc_pmap_remove(&m, &nodes[i]), 1);
        if (atomic_load(&cc_alloc_failpoint) == -1) { /* a shrink was attempted and failed */
            shrink_failures++;
            CHECK_EQ(m.nbuckets, nbuckets);
        }
        atomic_store(&cc_alloc_failpoint, -1);
        CHECK(cc_pmap_get(&m, &keys[i]) == NULL);
        if (i + 1 < N)
            CHECK(cc_pmap_get(&m, &keys[i + 1]) == &nodes[i + 1]);
        if (i % 16 == 0)
            CHECK(pmap_valid(&m));
    }
    CHECK(shrink_failures > 0);
    CHECK(m.len == 0 && m.nbuckets == N); /* no shrink succeeded */
    CHECK(pmap_valid(&m));
    /* Disarmed: the next removal that qualifies shrinks; an empty map still shrinks on insert
     * + remove cycles down to its minimum. */
    for (size_t round = 0; m.nbuckets > 16 && round < 16; round++) {
        CHECK_EQ(cc_pmap_insert(&m, &nodes[0]), 0);
        CHECK_EQ(cc_pmap_remove(&m, &nodes[0]), 1);
    }
    CHECK_EQ(m.nbuckets, 16);
    CHECK(pmap_valid(&m));
    cc_pmap_free(&m);
}

/* Random insert/remove/replace/get against an array model: each of K keys has two nodes (for
 * replace) and the model records which one, if any, is in the map. */
TEST(pmap_random_ops_vs_model)
{
    enum { K = 600, OPS = 60000 };
    key_obj *keys = calloc(K, sizeof *keys);
    cc_pmap_node *nodes = calloc(2 * K, sizeof *nodes); /* nodes[2k], nodes[2k+1]: key k */
    int *holder = calloc(K, sizeof *holder);            /* -1 absent, else 0/1 */
    unsigned *seen = calloc(2 * K, sizeof *seen);
    uint64_t rng = harness_seed() ^ 0x706d6170ULL;
    size_t count = 0, grows = 0, shrinks = 0;
    cc_pmap m;
    cc_pmap_init(&m);
    CHECK(keys != NULL && nodes != NULL && holder != NULL && seen != NULL);
    for (size_t k = 0; k < K; k++)
        holder[k] = -1;
    for (size_t op = 0; op < OPS; op++) {
        /* Phases that favour insertion (about 510 nodes) or removal (about 45 nodes), so the
         * size sweeps up and down and the array both grows and shrinks. */
        int filling = (op / 5000) % 2 == 0;
        size_t k = harness_below(&rng, K);
        int which = (int)harness_below(&rng, 2);
        cc_pmap_node *n = &nodes[2 * k + (size_t)which];
        size_t r = harness_below(&rng, 100);
        size_t nbuckets = m.nbuckets;
        if (r < (filling ? 60u : 3u)) { /* insert */
            if (holder[k] < 0) {
                n->key = &keys[k];
                CHECK_EQ(cc_pmap_insert(&m, n), 0);
                holder[k] = which;
                count++;
            }
        } else if (r < 80) { /* remove (either node: may be the holder, may not) */
            int removed = cc_pmap_remove(&m, n);
            CHECK_EQ(removed, holder[k] == which);
            if (removed) {
                holder[k] = -1;
                count--;
            }
        } else if (r < 88) { /* replace the holder by the other node */
            if (holder[k] >= 0) {
                cc_pmap_node *old = &nodes[2 * k + (size_t)holder[k]];
                cc_pmap_node *repl = &nodes[2 * k + (size_t)(1 - holder[k])];
                cc_pmap_replace(&m, old, repl);
                holder[k] = 1 - holder[k];
            }
        } else { /* get */
            cc_pmap_node *want = holder[k] < 0 ? NULL : &nodes[2 * k + (size_t)holder[k]];
            CHECK(cc_pmap_get(&m, &keys[k]) == want);
        }
        CHECK_EQ(cc_pmap_len(&m), count);
        CHECK(m.len <= m.nbuckets);
        grows += m.nbuckets > nbuckets;
        shrinks += m.nbuckets < nbuckets;
        if (op % 2000 == 0) {
            CHECK(pmap_valid(&m));
            CHECK_EQ(iterate(&m, nodes, 2 * K, seen), count);
            for (size_t j = 0; j < K; j++) {
                CHECK_EQ(seen[2 * j], holder[j] == 0);
                CHECK_EQ(seen[2 * j + 1], holder[j] == 1);
                cc_pmap_node *want = holder[j] < 0 ? NULL : &nodes[2 * j + (size_t)holder[j]];
                CHECK(cc_pmap_get(&m, &keys[j]) == want);
            }
        }
    }
    CHECK(pmap_valid(&m));
    CHECK(grows > 0 && shrinks > 0);
    cc_pmap_free(&m);
    free(keys);
    free(nodes);
    free(holder);
    free(seen);
}

void suite_pmap(void)
{
    RUN_TEST(pmap_empty);
    RUN_TEST(pmap_basic);
    RUN_TEST(pmap_replace);
    RUN_TEST(pmap_100k);
    RUN_TEST(pmap_iteration);
    RUN_TEST(pmap_alloc_failure);
    RUN_TEST(pmap_random_ops_vs_model);
}
