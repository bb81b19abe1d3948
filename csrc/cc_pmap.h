/* cc_pmap: an intrusive hash map from pointer keys to nodes embedded in the caller's objects.
 *
 * Pure C11 (no Python.h). The binding keeps one map per event loop: task -> that task's
 * innermost cancel scope, the node being embedded in the scope. The map owns only its bucket
 * array (separate chaining through node->next, load factor <= 1), so an entry costs the two
 * pointers of the node inside the object plus 1 to 2 bucket pointers (up to 8 after mass
 * removals: the array shrinks lazily). Keys are
 * compared by address only and are never dereferenced (NULL is a valid key). Not thread-safe:
 * the caller serialises access (one map per event loop, used only on that loop's thread).
 */
#ifndef CC_PMAP_H
#define CC_PMAP_H

#include <stddef.h>

typedef struct cc_pmap_node {
    const void *key;           /* set by the caller before insert; never changed while in a map */
    struct cc_pmap_node *next; /* chain; owned by the map */
} cc_pmap_node;

typedef struct cc_pmap {
    cc_pmap_node **buckets; /* NULL until the first insert */
    size_t nbuckets;        /* 0 or a power of two */
    size_t len;
} cc_pmap;

/* Initialise an empty map (no allocation until the first insert). */
void cc_pmap_init(cc_pmap *m);
/* Free the bucket array; the nodes are not touched. The map is empty and reusable afterwards
 * (freeing twice is harmless). */
void cc_pmap_free(cc_pmap *m);
/* Insert node, whose key the caller has set and which must not be in a map; no node with the
 * same key may be in m (the caller guarantees it; checked by assert() in debug builds).
 * The first insert allocates 16 buckets; the array doubles when len would exceed nbuckets.
 * Returns 0 on success, -1 on allocation failure or a NULL node (map unchanged, node not
 * inserted). */
int cc_pmap_insert(cc_pmap *m, cc_pmap_node *node);
/* The node with this key, or NULL when absent. */
cc_pmap_node *cc_pmap_get(const cc_pmap *m, const void *key);
/* Remove node: returns 1 when it was in m, 0 (and changes nothing) when it was not, or when
 * node is NULL. May halve the bucket array when it is mostly empty (len < nbuckets / 8 and
 * nbuckets > 16): that is the only allocation, and when it fails the map keeps its array. */
int cc_pmap_remove(cc_pmap *m, cc_pmap_node *node);
/* Put repl (not in any map) in the place of old (in m): repl->key is set to old->key, old
 * leaves the map, len is unchanged. Never allocates, never fails; O(chain length). A no-op
 * when old is not in m, when repl is old, or when either is NULL. */
void cc_pmap_replace(cc_pmap *m, cc_pmap_node *old, cc_pmap_node *repl);
/* Number of nodes. */
size_t cc_pmap_len(const cc_pmap *m);
/* Iteration (for introspection): start with *pos_bucket = 0 and *pos_node = NULL; each call
 * returns the next node, or NULL at the end (and again on later calls). Every node is visited
 * exactly once, in no particular order. The map must not be modified during an iteration. */
cc_pmap_node *cc_pmap_next(const cc_pmap *m, size_t *pos_bucket, cc_pmap_node **pos_node);

#endif
