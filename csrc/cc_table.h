/* cc_table: a thread-safe hash table from NUL-terminated string keys to
 * opaque pointers, used by the operation registry.
 *
 * Pure C11 + pthreads. Keys are copied; values are opaque (the binding stores
 * PyObject* and manages their reference counts itself). Every operation takes
 * the table's mutex, so it may be used from any thread. Cost of set/get/remove
 * is O(1) on average whatever the number of entries (open addressing with
 * linear probing and tombstones, grown at 50% load).
 */
#ifndef CC_TABLE_H
#define CC_TABLE_H

#include <pthread.h>
#include <stddef.h>

/* Marker stored in cc_table_entry.key for a deleted slot (never dereferenced). */
extern char cc_table_tombstone_marker;
#define CC_TABLE_TOMBSTONE (&cc_table_tombstone_marker)

typedef struct cc_table_entry {
    char *key; /* NULL: empty; CC_TABLE_TOMBSTONE: deleted */
    size_t hash;
    void *value;
} cc_table_entry;

typedef struct cc_table {
    pthread_mutex_t lock;
    cc_table_entry *entries;
    size_t cap;  /* power of two */
    size_t len;  /* live entries */
    size_t used; /* live + tombstones */
} cc_table;

/* 0 on success, -1 on failure. */
int cc_table_init(cc_table *t);
/* Frees keys and storage and destroys the mutex (values are not touched: drain them
 * first). The table may be initialised again afterwards. */
void cc_table_destroy(cc_table *t);
/* Insert or replace. If a previous value existed it is stored in *old (else *old = NULL).
 * Returns 0 on success, -1 on allocation failure (table unchanged). */
int cc_table_set(cc_table *t, const char *key, void *value, void **old);
/* The value for key, or NULL. */
void *cc_table_get(cc_table *t, const char *key);
/* Remove key; returns its value, or NULL if absent. */
void *cc_table_remove(cc_table *t, const char *key);
size_t cc_table_len(cc_table *t);
/* Copy up to max values into out (in unspecified order); returns how many were copied.
 * Call with max = cc_table_len() under no concurrent writers, or loop until it fits. */
size_t cc_table_values(cc_table *t, void **out, size_t max);
/* Remove every entry, calling fn(value, arg) for each removed value (fn may be NULL).
 * The table is emptied atomically under the lock; fn runs after the lock is released,
 * so it may use the table (e.g. a Py_DECREF whose finaliser touches the registry). */
void cc_table_clear(cc_table *t, void (*fn)(void *value, void *arg), void *arg);
/* Call fn(value, arg) for every live value, under the lock (fn must not use the table).
 * Stops at the first non-zero return of fn and returns it; 0 when every call returned 0.
 * Shaped for tp_traverse: fn may be a visitproc wrapper. */
int cc_table_foreach(cc_table *t, int (*fn)(void *value, void *arg), void *arg);

#endif
