/* cc_table: thread-safe string -> pointer hash table (see cc_table.h).
 *
 * Open addressing with linear probing. A removed slot becomes a tombstone,
 * or becomes empty again (with the tombstones just before it) when the next
 * slot is empty, since no probe sequence can then pass through it.
 *
 * Sizing: an insertion that would take an empty slot past 50% occupancy
 * (live + tombstones) rehashes into a table sized for the live entries only
 * (at least 4 slots per live entry, min CC_TABLE_MIN_CAP): that grows the
 * table when it is full of live entries and flushes the tombstones at the
 * same (or a smaller) size when they pile up, so endless insert/remove
 * cycles keep a bounded table. A removal that leaves the table below 1/8
 * occupancy shrinks it. Rehashing moves keys, it never copies them.
 */
#define _POSIX_C_SOURCE 200809L

#include "cc_table.h"

#include <stdint.h>
#include <string.h>

#include "cc_alloc.h"

#define CC_TABLE_MIN_CAP 8
#define NOT_FOUND SIZE_MAX

char cc_table_tombstone_marker;

/* FNV-1a 64 with a final avalanche (the low bits pick the slot). */
static size_t hash_key(const char *key)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (const unsigned char *p = (const unsigned char *)key; *p; p++) {
        h ^= *p;
        h *= 0x100000001b3ULL;
    }
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    return (size_t)h;
}

static int is_live(const cc_table_entry *e)
{
    return e->key != NULL && e->key != CC_TABLE_TOMBSTONE;
}

/* Smallest power of two >= CC_TABLE_MIN_CAP holding n live entries at <= 25% load,
 * or 0 on overflow. */
static size_t cap_for(size_t n)
{
    size_t cap = CC_TABLE_MIN_CAP;
    while (cap / 4 < n) {
        if (cap > SIZE_MAX / 2 / sizeof(cc_table_entry))
            return 0;
        cap *= 2;
    }
    return cap;
}

/* Index of key's slot (*found = 1), or of the slot where it would be inserted:
 * the first tombstone on its probe sequence, else the empty slot that ends it
 * (*found = 0). NOT_FOUND when the table has no storage. Lock held. */
static size_t find(const cc_table *t, const char *key, size_t hash, int *found)
{
    *found = 0;
    if (t->cap == 0)
        return NOT_FOUND;
    size_t mask = t->cap - 1;
    size_t tomb = NOT_FOUND;
    size_t i = hash & mask;
    for (size_t n = 0; n < t->cap; n++, i = (i + 1) & mask) {
        const cc_table_entry *e = &t->entries[i];
        if (e->key == NULL)
            return tomb != NOT_FOUND ? tomb : i;
        if (e->key == CC_TABLE_TOMBSTONE) {
            if (tomb == NOT_FOUND)
                tomb = i;
        } else if (e->hash == hash && strcmp(e->key, key) == 0) {
            *found = 1;
            return i;
        }
    }
    return tomb; /* unreachable while used < cap, which the sizing guarantees */
}

/* Move every live entry into a fresh array of new_cap slots. Lock held.
 * Returns -1 (table unchanged) on allocation failure. */
static int rehash(cc_table *t, size_t new_cap)
{
    if (new_cap == 0)
        return -1;
    cc_table_entry *entries = cc_calloc(new_cap, sizeof(cc_table_entry));
    if (entries == NULL)
        return -1;
    size_t mask = new_cap - 1;
    for (size_t i = 0; i < t->cap; i++) {
        cc_table_entry *e = &t->entries[i];
        if (!is_live(e))
            continue;
        size_t j = e->hash & mask;
        while (entries[j].key != NULL)
            j = (j + 1) & mask;
        entries[j] = *e;
    }
    cc_free(t->entries);
    t->entries = entries;
    t->cap = new_cap;
    t->used = t->len;
    return 0;
}

int cc_table_init(cc_table *t)
{
    t->entries = NULL;
    t->cap = 0;
    t->len = 0;
    t->used = 0;
    return pthread_mutex_init(&t->lock, NULL) == 0 ? 0 : -1;
}

void cc_table_destroy(cc_table *t)
{
    for (size_t i = 0; i < t->cap; i++) {
        if (is_live(&t->entries[i]))
            cc_free(t->entries[i].key);
    }
    cc_free(t->entries);
    t->entries = NULL;
    t->cap = t->len = t->used = 0;
    pthread_mutex_destroy(&t->lock);
}

int cc_table_set(cc_table *t, const char *key, void *value, void **old)
{
    if (old != NULL)
        *old = NULL;
    if (key == NULL)
        return -1;
    size_t hash = hash_key(key);
    int found;
    pthread_mutex_lock(&t->lock);
    size_t i = find(t, key, hash, &found);
    if (found) {
        if (old != NULL)
            *old = t->entries[i].value;
        t->entries[i].value = value;
        pthread_mutex_unlock(&t->lock);
        return 0;
    }
    size_t size = strlen(key) + 1;
    char *copy = cc_malloc(size);
    if (copy == NULL)
        goto fail;
    memcpy(copy, key, size);
    if (i == NOT_FOUND || (t->entries[i].key == NULL && (t->used + 1) * 2 > t->cap)) {
        if (rehash(t, cap_for(t->len + 1)) < 0) {
            cc_free(copy);
            goto fail;
        }
        i = find(t, key, hash, &found);
    }
    if (t->entries[i].key == NULL)
        t->used++;
    t->entries[i].key = copy;
    t->entries[i].hash = hash;
    t->entries[i].value = value;
    t->len++;
    pthread_mutex_unlock(&t->lock);
    return 0;
fail:
    pthread_mutex_unlock(&t->lock);
    return -1;
}

void *cc_table_get(cc_table *t, const char *key)
{
    if (key == NULL)
        return NULL;
    size_t hash = hash_key(key);
    int found;
    void *value = NULL;
    pthread_mutex_lock(&t->lock);
    size_t i = find(t, key, hash, &found);
    if (found)
        value = t->entries[i].value;
    pthread_mutex_unlock(&t->lock);
    return value;
}

void *cc_table_remove(cc_table *t, const char *key)
{
    if (key == NULL)
        return NULL;
    size_t hash = hash_key(key);
    int found;
    pthread_mutex_lock(&t->lock);
    size_t i = find(t, key, hash, &found);
    if (!found) {
        pthread_mutex_unlock(&t->lock);
        return NULL;
    }
    cc_table_entry *e = &t->entries[i];
    void *value = e->value;
    cc_free(e->key);
    e->value = NULL;
    t->len--;
    size_t mask = t->cap - 1;
    if (t->entries[(i + 1) & mask].key == NULL) {
        /* End of every probe run through i: empty it and the tombstones before it. */
        e->key = NULL;
        t->used--;
        for (size_t j = (i - 1) & mask; t->entries[j].key == CC_TABLE_TOMBSTONE;
             j = (j - 1) & mask) {
            t->entries[j].key = NULL;
            t->used--;
        }
    } else {
        e->key = CC_TABLE_TOMBSTONE;
    }
    if (t->cap > CC_TABLE_MIN_CAP && t->len * 8 < t->cap)
        (void)rehash(t, cap_for(t->len)); /* best effort: a failed shrink changes nothing */
    pthread_mutex_unlock(&t->lock);
    return value;
}

size_t cc_table_len(cc_table *t)
{
    pthread_mutex_lock(&t->lock);
    size_t len = t->len;
    pthread_mutex_unlock(&t->lock);
    return len;
}

size_t cc_table_values(cc_table *t, void **out, size_t max)
{
    size_t n = 0;
    pthread_mutex_lock(&t->lock);
    for (size_t i = 0; i < t->cap && n < max; i++) {
        if (is_live(&t->entries[i]))
            out[n++] = t->entries[i].value;
    }
    pthread_mutex_unlock(&t->lock);
    return n;
}

void cc_table_clear(cc_table *t, void (*fn)(void *value, void *arg), void *arg)
{
    pthread_mutex_lock(&t->lock);
    cc_table_entry *entries = t->entries;
    size_t cap = t->cap;
    t->entries = NULL;
    t->cap = t->len = t->used = 0;
    pthread_mutex_unlock(&t->lock);
    for (size_t i = 0; i < cap; i++) {
        if (!is_live(&entries[i]))
            continue;
        cc_free(entries[i].key);
        if (fn != NULL)
            fn(entries[i].value, arg);
    }
    cc_free(entries);
}

int cc_table_foreach(cc_table *t, int (*fn)(void *value, void *arg), void *arg)
{
    int rc = 0;
    pthread_mutex_lock(&t->lock);
    for (size_t i = 0; i < t->cap && rc == 0; i++) {
        if (is_live(&t->entries[i]))
            rc = fn(t->entries[i].value, arg);
    }
    pthread_mutex_unlock(&t->lock);
    return rc;
}
