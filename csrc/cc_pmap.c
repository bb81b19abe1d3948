/* cc_pmap: intrusive pointer-keyed hash map (see cc_pmap.h).
 *
 * Separate chaining; the bucket array has a power-of-two size, grows x2 when len would exceed
 * nbuckets (load factor <= 1) and halves, best effort, when len < nbuckets / 8. A resize
 * allocates the new array before touching the old one, so a failed resize changes nothing.
 */
#define _POSIX_C_SOURCE 200809L

#include "cc_pmap.h"

#include <assert.h>
#include <stdint.h>

#include "cc_alloc.h"

#define CC_PMAP_MIN_BUCKETS 16

/* Bucket of a key. The splitmix64 finaliser is a bijection of the whole address whose low bits
 * depend on every input bit, so consecutive (16-byte aligned) objects spread over the buckets. */
static size_t slot_of(const void *key, size_t nbuckets)
{
    uint64_t h = (uint64_t)(uintptr_t)key;
    h = (h ^ (h >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    h = (h ^ (h >> 27)) * UINT64_C(0x94d049bb133111eb);
    h ^= h >> 31;
    return (size_t)h & (nbuckets - 1);
}

void cc_pmap_init(cc_pmap *m)
{
    m->buckets = NULL;
    m->nbuckets = 0;
    m->len = 0;
}

void cc_pmap_free(cc_pmap *m)
{
    cc_free(m->buckets);
    cc_pmap_init(m);
}

/* Rehash into n buckets (a power of two). 0, or -1 when the allocation fails (map unchanged). */
static int resize(cc_pmap *m, size_t n)
{
    cc_pmap_node **b = cc_calloc(n, sizeof(cc_pmap_node *));
    if (b == NULL)
        return -1;
    for (size_t i = 0; i < m->nbuckets; i++) {
        cc_pmap_node *node = m->buckets[i];
        while (node != NULL) {
            cc_pmap_node *next = node->next;
            size_t j = slot_of(node->key, n);
            node->next = b[j];
            b[j] = node;
            node = next;
        }
    }
    cc_free(m->buckets);
    m->buckets = b;
    m->nbuckets = n;
    return 0;
}

int cc_pmap_insert(cc_pmap *m, cc_pmap_node *node)
{
    if (node == NULL)
        return -1;
    assert(cc_pmap_get(m, node->key) == NULL);
    if (m->nbuckets == 0) {
        if (resize(m, CC_PMAP_MIN_BUCKETS) < 0)
            return -1;
    } else if (m->len >= m->nbuckets) { /* len + 1 would exceed nbuckets */
        if (m->nbuckets > SIZE_MAX / 2 / sizeof(cc_pmap_node *) || resize(m, m->nbuckets * 2) < 0)
            return -1;
    }
    size_t j = slot_of(node->key, m->nbuckets);
    node->next = m->buckets[j];
    m->buckets[j] = node;
    m->len++;
    return 0;
}

cc_pmap_node *cc_pmap_get(const cc_pmap *m, const void *key)
{
    if (m->len == 0)
        return NULL;
    cc_pmap_node *node = m->buckets[slot_of(key, m->nbuckets)];
    while (node != NULL && node->key != key)
        node = node->next;
    return node;
}

/* The link (bucket slot or predecessor's next) that points to node, or NULL when node is not
 * in m. */
static cc_pmap_node **link_of(cc_pmap *m, const cc_pmap_node *node)
{
    if (node == NULL || m->len == 0)
        return NULL;
    cc_pmap_node **link = &m->buckets[slot_of(node->key, m->nbuckets)];
    while (*link != NULL && *link != node)
        link = &(*link)->next;
    return *link == node ? link : NULL;
}

int cc_pmap_remove(cc_pmap *m, cc_pmap_node *node)
{
    cc_pmap_node **link = link_of(m, node);
    if (link == NULL)
        return 0;
    *link = node->next;
    node->next = NULL;
    m->len--;
    if (m->nbuckets > CC_PMAP_MIN_BUCKETS && m->len < m->nbuckets / 8)
        (void)resize(m, m->nbuckets / 2); /* best effort: a failure keeps the larger array */
    return 1;
}

void cc_pmap_replace(cc_pmap *m, cc_pmap_node *old, cc_pmap_node *repl)
{
    if (repl == NULL || repl == old)
        return;
    cc_pmap_node **link = link_of(m, old);
    if (link == NULL)
        return;
    repl->key = old->key;
    repl->next = old->next;
    *link = repl;
    old->next = NULL;
}

size_t cc_pmap_len(const cc_pmap *m)
{
    return m->len;
}

cc_pmap_node *cc_pmap_next(const cc_pmap *m, size_t *pos_bucket, cc_pmap_node **pos_node)
{
    cc_pmap_node *cur = *pos_node;
    if (cur != NULL) {
        if (cur->next != NULL) {
            *pos_node = cur->next;
            return cur->next;
        }
        (*pos_bucket)++;
    }
    while (*pos_bucket < m->nbuckets) {
        cc_pmap_node *first = m->buckets[*pos_bucket];
        if (first != NULL) {
            *pos_node = first;
            return first;
        }
        (*pos_bucket)++;
    }
    *pos_node = NULL;
    return NULL;
}
