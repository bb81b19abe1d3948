/* Unit tests of cc_table: set/get/replace/remove, key copies, many keys, tombstone
 * reuse and flat memory under insert/remove cycles, values/foreach/clear, allocation
 * failures, a randomised comparison with a naive model, and concurrent threads. */
#define _POSIX_C_SOURCE 200809L

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cc_alloc.h"
#include "cc_table.h"
#include "harness.h"

static int is_live_slot(const cc_table_entry *e)
{
    return e->key != NULL && e->key != CC_TABLE_TOMBSTONE;
}

/* Structural invariants (single-threaded use only): counters, load, findability. */
static int table_valid(cc_table *t)
{
    size_t live = 0, used = 0;
    if (t->cap == 0)
        return t->entries == NULL && t->len == 0 && t->used == 0;
    if ((t->cap & (t->cap - 1)) != 0 || t->used * 2 > t->cap)
        return 0;
    for (size_t i = 0; i < t->cap; i++) {
        cc_table_entry *e = &t->entries[i];
        if (e->key != NULL)
            used++;
        if (is_live_slot(e)) {
            live++;
            if (cc_table_get(t, e->key) != e->value)
                return 0;
        }
    }
    return live == t->len && used == t->used;
}

static void key_of(char *buf, size_t size, const char *prefix, size_t i)
{
    snprintf(buf, size, "%s-%zu", prefix, i);
}

TEST(table_basic)
{
    cc_table t;
    int a, b;
    void *old = &a;
    CHECK_EQ(cc_table_init(&t), 0);
    CHECK_EQ(cc_table_len(&t), 0);
    CHECK(cc_table_get(&t, "x") == NULL);
    CHECK(cc_table_remove(&t, "x") == NULL);
    CHECK_EQ(cc_table_set(&t, "x", &a, &old), 0);
    CHECK(old == NULL);
    CHECK(cc_table_get(&t, "x") == &a);
    CHECK_EQ(cc_table_len(&t), 1);
    CHECK_EQ(cc_table_set(&t, "x", &b, &old), 0); /* replace */
    CHECK(old == &a);
    CHECK(cc_table_get(&t, "x") == &b);
    CHECK_EQ(cc_table_len(&t), 1);
    CHECK_EQ(cc_table_set(&t, "x", &a, NULL), 0); /* old may be NULL */
    CHECK(cc_table_get(&t, "x") == &a);
    CHECK(cc_table_remove(&t, "x") == &a);
    CHECK(cc_table_remove(&t, "x") == NULL);
    CHECK(cc_table_get(&t, "x") == NULL);
    CHECK_EQ(cc_table_len(&t), 0);
    /* A NULL value is storable (get cannot tell it from absent, len can). */
    CHECK_EQ(cc_table_set(&t, "null", NULL, &old), 0);
    CHECK_EQ(cc_table_len(&t), 1);
    CHECK(table_valid(&t));
    cc_table_destroy(&t);
}

TEST(table_keys)
{
    cc_table t;
    int a, b, c;
    char buf[16] = "mutable";
    CHECK_EQ(cc_table_init(&t), 0);
    /* Keys are copied. */
    CHECK_EQ(cc_table_set(&t, buf, &a, NULL), 0);
    strcpy(buf, "changed");
    CHECK(cc_table_get(&t, "mutable") == &a);
    CHECK(cc_table_get(&t, "changed") == NULL);
    /* Empty key, long keys, keys differing only at the end, non-ASCII bytes. */
    CHECK_EQ(cc_table_set(&t, "", &b, NULL), 0);
    CHECK(cc_table_get(&t, "") == &b);
    size_t n = 10000;
    char *long1 = malloc(n + 1), *long2 = malloc(n + 1);
    CHECK(long1 != NULL && long2 != NULL);
    memset(long1, 'k', n);
    memset(long2, 'k', n);
    long1[n] = long2[n] = '\0';
    long2[n - 1] = 'K';
    EXPECT(cc_table_set(&t, long1, &a, NULL) == 0);
    EXPECT(cc_table_set(&t, long2, &c, NULL) == 0);
    EXPECT(cc_table_get(&t, long1) == &a);
    EXPECT(cc_table_get(&t, long2) == &c);
    free(long1);
    free(long2);
    CHECK_EQ(cc_table_set(&t, "caf\xc3\xa9", &c, NULL), 0);
    CHECK(cc_table_get(&t, "caf\xc3\xa9") == &c);
    CHECK(cc_table_get(&t, "cafe") == NULL);
    /* NULL keys are rejected, never dereferenced. */
    void *old = &a;
    CHECK_EQ(cc_table_set(&t, NULL, &a, &old), -1);
    CHECK(old == NULL);
    CHECK(cc_table_get(&t, NULL) == NULL);
    CHECK(cc_table_remove(&t, NULL) == NULL);
    CHECK_EQ(cc_table_len(&t), 5);
    CHECK(table_valid(&t));
    cc_table_destroy(&t);
}

TEST(table_many_keys)
{
    enum { N = 20000 };
    static int vals[N];
    char key[32];
    cc_table t;
    CHECK_EQ(cc_table_init(&t), 0);
    for (size_t i = 0; i < N; i++) {
        key_of(key, sizeof key, "key", i);
        CHECK_EQ(cc_table_set(&t, key, &vals[i], NULL), 0);
    }
    CHECK_EQ(cc_table_len(&t), N);
    CHECK(t.used * 2 <= t.cap);
    for (size_t i = 0; i < N; i++) {
        key_of(key, sizeof key, "key", i);
        CHECK(cc_table_get(&t, key) == &vals[i]);
    }
    for (size_t i = 1; i < N; i += 2) {
        key_of(key, sizeof key, "key", i);
        CHECK(cc_table_remove(&t, key) == &vals[i]);
    }
    CHECK_EQ(cc_table_len(&t), N / 2);
    for (size_t i = 0; i < N; i++) {
        key_of(key, sizeof key, "key", i);
        CHECK(cc_table_get(&t, key) == ((i % 2) ? NULL : &vals[i]));
    }
    CHECK(table_valid(&t));
    /* Removing everything shrinks the storage back to the minimum. */
    for (size_t i = 0; i < N; i += 2) {
        key_of(key, sizeof key, "key", i);
        CHECK(cc_table_remove(&t, key) == &vals[i]);
    }
    CHECK_EQ(cc_table_len(&t), 0);
    CHECK(t.cap <= 16);
    CHECK(table_valid(&t));
    cc_table_destroy(&t);
}

TEST(table_tombstone_reuse)
{
    enum { N = 1000 };
    static int vals[N];
    char key[32];
    cc_table t;
    size_t tombstones = 0;
    CHECK_EQ(cc_table_init(&t), 0);
    for (size_t i = 0; i < N; i++) {
        key_of(key, sizeof key, "tomb", i);
        CHECK_EQ(cc_table_set(&t, key, &vals[i], NULL), 0);
    }
    size_t cap = t.cap;
    for (size_t i = 0; i < N; i++) {
        key_of(key, sizeof key, "tomb", i);
        size_t used = t.used;
        CHECK(cc_table_remove(&t, key) == &vals[i]);
        if (t.used == used) { /* the removal left a tombstone: re-inserting reuses a slot */
            tombstones++;
            CHECK_EQ(cc_table_set(&t, key, &vals[i], NULL), 0);
            CHECK_EQ(t.used, used);
            CHECK_EQ(t.cap, cap);
            CHECK(cc_table_get(&t, key) == &vals[i]);
        } else {
            CHECK(t.used < used);
            CHECK_EQ(cc_table_set(&t, key, &vals[i], NULL), 0);
        }
        CHECK_EQ(cc_table_len(&t), N);
    }
    CHECK(tombstones > 0); /* at 25-50% load some probe runs are longer than one slot */
    CHECK(table_valid(&t));
    cc_table_destroy(&t);
}

TEST(table_insert_remove_cycles_stay_flat)
{
    enum { PERMANENT = 100, CYCLES = 100000 };
    static int vals[PERMANENT];
    int v;
    char key[32];
    cc_table t;
    CHECK_EQ(cc_table_init(&t), 0);
    for (size_t i = 0; i < PERMANENT; i++) {
        key_of(key, sizeof key, "perm", i);
        CHECK_EQ(cc_table_set(&t, key, &vals[i], NULL), 0);
    }
    size_t max_cap = t.cap;
    /* Every cycle uses a fresh key (the worst case for tombstones). */
    for (size_t c = 0; c < CYCLES; c++) {
        key_of(key, sizeof key, "cycle", c);
        CHECK_EQ(cc_table_set(&t, key, &v, NULL), 0);
        CHECK(cc_table_remove(&t, key) == &v);
        if (t.cap > max_cap)
            max_cap = t.cap;
        CHECK(t.used * 2 <= t.cap);
    }
    CHECK_EQ(cc_table_len(&t), PERMANENT);
    /* Sized for ~100 live entries (<= 512 slots at 25% after a rehash), never more. */
    CHECK(max_cap <= 1024);
    CHECK(table_valid(&t));
    for (size_t i = 0; i < PERMANENT; i++) {
        key_of(key, sizeof key, "perm", i);
        CHECK(cc_table_get(&t, key) == &vals[i]);
    }
    cc_table_destroy(&t);
}

/* Steady churn: WINDOW live keys, each cycle removes a random one and inserts a fresh
 * key. Removals inside probe runs leave tombstones; at this live count (the most a
 * 512-slot table holds at 25%) they reach the 50% threshold, and must then be flushed
 * by a rehash at the same size, never answered by growing the table. */
TEST(table_churn_flushes_tombstones_in_place)
{
    enum { WINDOW = 128, CYCLES = 100000 };
    static size_t live[WINDOW];
    int v;
    char key[32];
    cc_table t;
    uint64_t rng = harness_seed() ^ 0xc4u;
    size_t next = 0, warm_cap = 0, resizes_when_warm = 0, in_place = 0;
    CHECK_EQ(cc_table_init(&t), 0);
    for (size_t i = 0; i < WINDOW; i++) {
        key_of(key, sizeof key, "w", next);
        live[i] = next++;
        CHECK_EQ(cc_table_set(&t, key, &v, NULL), 0);
    }
    for (size_t c = 0; c < CYCLES; c++) {
        size_t j = harness_below(&rng, WINDOW);
        key_of(key, sizeof key, "w", live[j]);
        CHECK(cc_table_remove(&t, key) == &v);
        size_t used = t.used, cap = t.cap;
        key_of(key, sizeof key, "w", next);
        live[j] = next++;
        CHECK_EQ(cc_table_set(&t, key, &v, NULL), 0);
        if (t.cap == cap && t.used < used)
            in_place++;
        CHECK(t.used * 2 <= t.cap);
        if (c == 1000)
            warm_cap = t.cap;
        else if (c > 1000 && t.cap != warm_cap)
            resizes_when_warm++;
    }
    CHECK_EQ(cc_table_len(&t), WINDOW);
    CHECK(warm_cap <= 512);
    CHECK(in_place > 0);            /* the flush path ran */
    CHECK_EQ(resizes_when_warm, 0); /* a steady live count keeps a steady size */
    CHECK(table_valid(&t));
    cc_table_destroy(&t);
}

TEST(table_values)
{
    enum { N = 100 };
    static int vals[N];
    void *out[N + 1];
    char key[32];
    cc_table t;
    CHECK_EQ(cc_table_init(&t), 0);
    CHECK_EQ(cc_table_values(&t, out, N), 0);
    for (size_t i = 0; i < N; i++) {
        key_of(key, sizeof key, "v", i);
        CHECK_EQ(cc_table_set(&t, key, &vals[i], NULL), 0);
    }
    CHECK_EQ(cc_table_values(&t, out, N + 1), N);
    int seen[N] = {0};
    for (size_t i = 0; i < N; i++) {
        size_t j = (size_t)((int *)out[i] - vals);
        CHECK(j < N);
        CHECK(!seen[j]);
        seen[j] = 1;
    }
    CHECK_EQ(cc_table_values(&t, out, 10), 10);
    CHECK_EQ(cc_table_values(&t, out, 0), 0);
    cc_table_destroy(&t);
}

static int sum_values(void *value, void *arg)
{
    *(long *)arg += *(int *)value;
    return 0;
}

static int stop_at_negative(void *value, void *arg)
{
    (void)arg;
    return *(int *)value < 0 ? *(int *)value : 0;
}

TEST(table_foreach)
{
    static int vals[] = {1, 2, 3, 4, 5};
    int negative = -7;
    char key[32];
    long sum = 0;
    cc_table t;
    CHECK_EQ(cc_table_init(&t), 0);
    CHECK_EQ(cc_table_foreach(&t, sum_values, &sum), 0);
    CHECK_EQ(sum, 0);
    for (size_t i = 0; i < 5; i++) {
        key_of(key, sizeof key, "f", i);
        CHECK_EQ(cc_table_set(&t, key, &vals[i], NULL), 0);
    }
    CHECK_EQ(cc_table_foreach(&t, sum_values, &sum), 0);
    CHECK_EQ(sum, 15);
    CHECK_EQ(cc_table_foreach(&t, stop_at_negative, NULL), 0);
    CHECK_EQ(cc_table_set(&t, "neg", &negative, NULL), 0);
    CHECK_EQ(cc_table_foreach(&t, stop_at_negative, NULL), -7);
    cc_table_destroy(&t);
}

typedef struct clear_probe {
    cc_table *t;
    int calls;
    int table_was_empty;
    int seen[64];
    int *vals;
} clear_probe;

static void on_clear(void *value, void *arg)
{
    clear_probe *p = arg;
    p->calls++;
    /* The table is already empty and unlocked: the callback may use it. */
    if (cc_table_len(p->t) != 0 && p->calls == 1)
        p->table_was_empty = 0;
    size_t j = (size_t)((int *)value - p->vals);
    if (j < 64)
        p->seen[j]++;
    cc_table_set(p->t, "from-callback", value, NULL);
}

TEST(table_clear)
{
    enum { N = 50 };
    static int vals[N];
    char key[32];
    cc_table t;
    CHECK_EQ(cc_table_init(&t), 0);
    cc_table_clear(&t, on_clear, NULL); /* empty: no calls */
    for (size_t i = 0; i < N; i++) {
        key_of(key, sizeof key, "c", i);
        CHECK_EQ(cc_table_set(&t, key, &vals[i], NULL), 0);
    }
    for (size_t i = 0; i < N; i += 3) { /* leave some tombstones behind */
        key_of(key, sizeof key, "c", i);
        CHECK(cc_table_remove(&t, key) == &vals[i]);
    }
    clear_probe p = {.t = &t, .table_was_empty = 1, .vals = vals};
    cc_table_clear(&t, on_clear, &p);
    CHECK(p.table_was_empty);
    for (size_t i = 0; i < N; i++)
        CHECK_EQ(p.seen[i], (i % 3) ? 1 : 0);
    CHECK_EQ(p.calls, N - (N + 2) / 3);
    CHECK_EQ(cc_table_len(&t), 1); /* the key set by the callback */
    CHECK(table_valid(&t));
    /* A NULL callback just drops the entries (keys freed: checked by ASan/valgrind). */
    cc_table_clear(&t, NULL, NULL);
    CHECK_EQ(cc_table_len(&t), 0);
    CHECK_EQ(cc_table_set(&t, "again", &vals[0], NULL), 0);
    CHECK(cc_table_get(&t, "again") == &vals[0]);
    cc_table_destroy(&t);
    /* A destroyed table can be initialised again. */
    CHECK_EQ(cc_table_init(&t), 0);
    CHECK_EQ(cc_table_set(&t, "reborn", &vals[1], NULL), 0);
    cc_table_destroy(&t);
}

TEST(table_alloc_failure)
{
    int a, b;
    void *old = &a;
    char key[32];
    cc_table t;
    CHECK_EQ(cc_table_init(&t), 0);
    /* First insertion: the key copy fails. */
    atomic_store(&cc_alloc_failpoint, 0);
    CHECK_EQ(cc_table_set(&t, "k", &a, &old), -1);
    CHECK(old == NULL);
    CHECK(cc_table_len(&t) == 0 && cc_table_get(&t, "k") == NULL);
    /* First insertion: the key copy succeeds, the storage allocation fails. */
    atomic_store(&cc_alloc_failpoint, 1);
    CHECK_EQ(cc_table_set(&t, "k", &a, NULL), -1);
    CHECK(cc_table_len(&t) == 0 && t.entries == NULL);
    CHECK(table_valid(&t));
    /* Fill up to the growth threshold, then fail the growth. */
    size_t i = 0;
    for (;;) {
        key_of(key, sizeof key, "g", i);
        if ((t.used + 1) * 2 > t.cap && t.cap != 0)
            break;
        CHECK_EQ(cc_table_set(&t, key, &a, NULL), 0);
        i++;
    }
    size_t cap = t.cap, len = t.len;
    atomic_store(&cc_alloc_failpoint, 1);
    CHECK_EQ(cc_table_set(&t, key, &b, NULL), -1);
    CHECK(t.cap == cap && t.len == len);
    CHECK(cc_table_get(&t, key) == NULL);
    CHECK(table_valid(&t));
    /* Replacing an existing key allocates nothing: succeeds with an armed failpoint. */
    atomic_store(&cc_alloc_failpoint, 0);
    CHECK_EQ(cc_table_set(&t, "g-0", &b, &old), 0);
    CHECK(old == &a);
    CHECK_EQ(atomic_load(&cc_alloc_failpoint), 0);
    atomic_store(&cc_alloc_failpoint, -1);
    /* Disarmed: the growth works. */
    CHECK_EQ(cc_table_set(&t, key, &b, NULL), 0);
    CHECK(t.cap > cap);
    CHECK(table_valid(&t));
    /* A failing shrink on removal is harmless: value returned, table consistent. */
    cc_table_clear(&t, NULL, NULL);
    for (size_t k = 0; k < 64; k++) {
        key_of(key, sizeof key, "s", k);
        CHECK_EQ(cc_table_set(&t, key, &a, NULL), 0);
    }
    size_t k = 64;
    size_t shrink_failures = 0;
    while (k > 0) {
        key_of(key, sizeof key, "s", k - 1);
        cap = t.cap;
        atomic_store(&cc_alloc_failpoint, 0);
        CHECK(cc_table_remove(&t, key) == &a);
        if (atomic_load(&cc_alloc_failpoint) == -1) { /* a shrink was attempted and failed */
            shrink_failures++;
            CHECK_EQ(t.cap, cap);
        }
        atomic_store(&cc_alloc_failpoint, -1);
        CHECK(table_valid(&t));
        k--;
    }
    CHECK(shrink_failures > 0);
    CHECK_EQ(cc_table_len(&t), 0);
    cc_table_destroy(&t);
}

/* Random set/get/remove against a naive model over a small key universe. */
TEST(table_random_ops_vs_model)
{
    enum { KEYS = 300, OPS = 30000 };
    static int vals[2][KEYS];
    static int *model[KEYS];
    uint64_t rng = harness_seed() ^ 0x7ab1e;
    char key[32];
    cc_table t;
    size_t count = 0;
    CHECK_EQ(cc_table_init(&t), 0);
    for (size_t i = 0; i < KEYS; i++)
        model[i] = NULL;
    for (int op = 0; op < OPS; op++) {
        size_t i = harness_below(&rng, KEYS);
        key_of(key, sizeof key, "m", i);
        switch (harness_below(&rng, 3)) {
        case 0: {
            int *v = &vals[harness_below(&rng, 2)][i];
            void *old = &rng;
            CHECK_EQ(cc_table_set(&t, key, v, &old), 0);
            CHECK(old == model[i]);
            if (model[i] == NULL)
                count++;
            model[i] = v;
            break;
        }
        case 1:
            CHECK(cc_table_get(&t, key) == model[i]);
            break;
        default:
            CHECK(cc_table_remove(&t, key) == model[i]);
            if (model[i] != NULL)
                count--;
            model[i] = NULL;
        }
        CHECK_EQ(cc_table_len(&t), count);
        if (op % 1000 == 0)
            CHECK(table_valid(&t));
    }
    CHECK(table_valid(&t));
    cc_table_destroy(&t);
}

/* --- threads ----------------------------------------------------------------- */

enum { TT_THREADS = 8, TT_KEYS = 200, TT_ROUNDS = 20, TT_SHARED = 16 };

typedef struct table_worker {
    cc_table *t;
    int id;
    int own[TT_KEYS];
    atomic_int *stop;
} table_worker;

static int shared_markers[TT_THREADS];

static int is_shared_marker(const void *p)
{
    return p == NULL ||
           ((const int *)p >= shared_markers && (const int *)p < shared_markers + TT_THREADS);
}

static void *table_worker_body(void *arg)
{
    table_worker *w = arg;
    char key[48];
    for (int r = 0; r < TT_ROUNDS; r++) {
        /* Disjoint keys: exact expectations. */
        for (size_t k = 0; k < TT_KEYS; k++) {
            snprintf(key, sizeof key, "t%d-k%zu", w->id, k);
            void *old = NULL;
            CHECK_OR(cc_table_set(w->t, key, &w->own[k], &old) == 0, NULL);
            CHECK_OR(old == (r == 0 || k % 2 == 0 ? NULL : &w->own[k]), NULL);
        }
        for (size_t k = 0; k < TT_KEYS; k++) {
            snprintf(key, sizeof key, "t%d-k%zu", w->id, k);
            CHECK_OR(cc_table_get(w->t, key) == &w->own[k], NULL);
            if (k % 2 == 0)
                CHECK_OR(cc_table_remove(w->t, key) == &w->own[k], NULL);
        }
        /* Shared keys: any thread's marker or absent. */
        for (size_t k = 0; k < TT_SHARED; k++) {
            snprintf(key, sizeof key, "shared-%zu", k);
            void *old = NULL;
            CHECK_OR(cc_table_set(w->t, key, &shared_markers[w->id], &old) == 0, NULL);
            CHECK_OR(is_shared_marker(old), NULL);
            CHECK_OR(is_shared_marker(cc_table_get(w->t, key)), NULL);
            if ((k + (size_t)r + (size_t)w->id) % 3 == 0)
                CHECK_OR(is_shared_marker(cc_table_remove(w->t, key)), NULL);
        }
    }
    return NULL;
}

/* Reads snapshots while the workers write. */
static void *table_reader_body(void *arg)
{
    table_worker *w = arg;
    void **out = malloc(sizeof(void *) * (TT_THREADS * TT_KEYS + TT_SHARED));
    CHECK_OR(out != NULL, NULL);
    while (!atomic_load(w->stop)) {
        size_t n = cc_table_values(w->t, out, TT_THREADS * TT_KEYS + TT_SHARED);
        if (n > TT_THREADS * TT_KEYS + TT_SHARED) {
            harness_fail(__FILE__, __LINE__, "values() returned %zu", n);
            break;
        }
        for (size_t i = 0; i < n; i++) {
            if (out[i] == NULL) {
                harness_fail(__FILE__, __LINE__, "values() returned NULL");
                break;
            }
        }
        (void)cc_table_len(w->t);
    }
    free(out);
    return NULL;
}

TEST(table_threaded)
{
    cc_table t;
    atomic_int stop;
    static table_worker workers[TT_THREADS + 1];
    pthread_t threads[TT_THREADS + 1];
    atomic_init(&stop, 0);
    CHECK_EQ(cc_table_init(&t), 0);
    int started = 0;
    for (int i = 0; i <= TT_THREADS; i++) {
        workers[i].t = &t;
        workers[i].id = i;
        workers[i].stop = &stop;
        void *(*body)(void *) = i < TT_THREADS ? table_worker_body : table_reader_body;
        if (pthread_create(&threads[i], NULL, body, &workers[i]) != 0)
            break;
        started++;
    }
    /* Join the writers first, then stop the reader. */
    for (int i = 0; i < started && i < TT_THREADS; i++)
        pthread_join(threads[i], NULL);
    atomic_store(&stop, 1);
    if (started == TT_THREADS + 1)
        pthread_join(threads[TT_THREADS], NULL);
    EXPECT(started == TT_THREADS + 1);
    /* Final state: odd own keys of every thread, plus whatever shared keys remain. */
    char key[48];
    size_t shared = 0;
    for (size_t k = 0; k < TT_SHARED; k++) {
        snprintf(key, sizeof key, "shared-%zu", k);
        void *v = cc_table_get(&t, key);
        CHECK(is_shared_marker(v));
        shared += v != NULL;
    }
    for (int i = 0; i < TT_THREADS; i++) {
        for (size_t k = 0; k < TT_KEYS; k++) {
            snprintf(key, sizeof key, "t%d-k%zu", i, k);
            CHECK(cc_table_get(&t, key) == (k % 2 ? &workers[i].own[k] : NULL));
        }
    }
    CHECK_EQ(cc_table_len(&t), (size_t)TT_THREADS * TT_KEYS / 2 + shared);
    CHECK(table_valid(&t));
    cc_table_destroy(&t);
}

void suite_table(void)
{
    RUN_TEST(table_basic);
    RUN_TEST(table_keys);
    RUN_TEST(table_many_keys);
    RUN_TEST(table_tombstone_reuse);
    RUN_TEST(table_insert_remove_cycles_stay_flat);
    RUN_TEST(table_churn_flushes_tombstones_in_place);
    RUN_TEST(table_values);
    RUN_TEST(table_foreach);
    RUN_TEST(table_clear);
    RUN_TEST(table_alloc_failure);
    RUN_TEST(table_random_ops_vs_model);
    RUN_TEST(table_threaded);
}
