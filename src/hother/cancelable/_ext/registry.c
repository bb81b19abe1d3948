/* _engine.RegistryTable: a thread-safe str -> object table on csrc/cc_table.
 *
 * Holds a strong reference to every stored value (INCREF on set, DECREF when the
 * value is replaced, popped, cleared or the table dies). Every call holds the GIL and
 * never runs Python code while the C table's mutex is held, so values can be
 * released (running arbitrary finalisers) without any risk of re-entering the
 * locked table. GC-aware: tp_traverse visits the values under the table lock.
 *
 * Keys are str without NUL characters, encodable as UTF-8 (the C table stores
 * NUL-terminated UTF-8 copies).
 */
#include "engine.h"

#include <string.h>

#include "cc_table.h"

typedef struct {
    PyObject_HEAD cc_table table;
    int ready; /* cc_table_init succeeded */
} RegistryTable;

static PyTypeObject RegistryTable_Type;

/* UTF-8 view of key (owned by the str object), or NULL with TypeError/ValueError set. */
static const char *key_utf8(PyObject *key)
{
    if (!PyUnicode_Check(key)) {
        PyErr_Format(PyExc_TypeError, "key must be a str, not %.100s", Py_TYPE(key)->tp_name);
        return NULL;
    }
    Py_ssize_t size = 0;
    const char *s = PyUnicode_AsUTF8AndSize(key, &size);
    if (s == NULL) {
        if (PyErr_ExceptionMatches(PyExc_UnicodeEncodeError)) {
            PyErr_Clear();
            PyErr_SetString(PyExc_ValueError,
                            "key must be encodable as UTF-8 (it contains a lone surrogate)");
        }
        return NULL;
    }
    if ((size_t)size != strlen(s)) {
        PyErr_SetString(PyExc_ValueError, "key must not contain NUL characters");
        return NULL;
    }
    return s;
}

/* Argument count check of the METH_FASTCALL methods. */
static int check_nargs(const char *name, Py_ssize_t nargs, Py_ssize_t min, Py_ssize_t max)
{
    if (nargs < min || nargs > max) {
        if (min == max) {
            PyErr_Format(PyExc_TypeError, "%s() takes exactly %zd arguments (%zd given)", name, min,
                         nargs);
        } else {
            PyErr_Format(PyExc_TypeError, "%s() takes from %zd to %zd arguments (%zd given)", name,
                         min, max, nargs);
        }
        return 0;
    }
    return 1;
}

static void decref_value(void *value, void *Py_UNUSED(arg))
{
    Py_DECREF((PyObject *)value);
}

/* cc_table_clear callback collecting the removed (owned) references into a buffer. */
typedef struct {
    PyObject **items;
    size_t cap;
    size_t n;
} collect_state;

static void collect_value(void *value, void *arg)
{
    collect_state *st = (collect_state *)arg;
    if (st->n < st->cap) {
        st->items[st->n++] = (PyObject *)value;
    } else {
        /* Cannot happen (no Python code runs between cc_table_len and cc_table_clear).
         * The entry is already detached and the table lock released: drop it. */
        Py_DECREF((PyObject *)value);
    }
}

/* Build a list from n owned references in items (steals them, also on failure). */
static PyObject *list_from_owned(PyObject **items, size_t n)
{
    PyObject *list = PyList_New((Py_ssize_t)n);
    if (list == NULL) {
        for (size_t i = 0; i < n; i++) {
            Py_DECREF(items[i]);
        }
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        PyList_SET_ITEM(list, (Py_ssize_t)i, items[i]);
    }
    return list;
}

/* ---- type slots ------------------------------------------------------------------ */

static PyObject *table_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    if ((args != NULL && PyTuple_GET_SIZE(args) != 0) ||
        (kwds != NULL && PyDict_GET_SIZE(kwds) != 0)) {
        PyErr_SetString(PyExc_TypeError, "RegistryTable() takes no arguments");
        return NULL;
    }
    RegistryTable *self = (RegistryTable *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    if (cc_table_init(&self->table) != 0) {
        self->ready = 0;
        Py_DECREF(self);
        PyErr_SetString(PyExc_MemoryError, "RegistryTable: cannot initialise the table lock");
        return NULL;
    }
    self->ready = 1;
    G.live_tables++;
    return (PyObject *)self;
}

typedef struct {
    visitproc visit;
    void *arg;
} traverse_state;

static int traverse_value(void *value, void *arg)
{
    traverse_state *st = (traverse_state *)arg;
    return st->visit((PyObject *)value, st->arg);
}

static int table_traverse(RegistryTable *self, visitproc visit, void *arg)
{
    if (!self->ready) {
        return 0;
    }
    traverse_state st = {visit, arg};
    return cc_table_foreach(&self->table, traverse_value, &st);
}

static int table_clear_slot(RegistryTable *self)
{
    if (self->ready) {
        /* Values are released after the table is emptied and its lock released. */
        cc_table_clear(&self->table, decref_value, NULL);
    }
    return 0;
}

static void table_dealloc(RegistryTable *self)
{
    PyObject_GC_UnTrack(self);
    if (self->ready) {
        cc_table_clear(&self->table, decref_value, NULL);
        cc_table_destroy(&self->table);
        self->ready = 0;
        G.live_tables--;
    }
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *table_repr(RegistryTable *self)
{
    return PyUnicode_FromFormat("<%s len=%zu>", Py_TYPE(self)->tp_name,
                                self->ready ? cc_table_len(&self->table) : (size_t)0);
}

static Py_ssize_t table_length(RegistryTable *self)
{
    return self->ready ? (Py_ssize_t)cc_table_len(&self->table) : 0;
}

static int table_contains(RegistryTable *self, PyObject *key)
{
    const char *k = key_utf8(key);
    if (k == NULL) {
        return -1;
    }
    return cc_table_get(&self->table, k) != NULL;
}

/* ---- methods --------------------------------------------------------------------- */

/* Store value under k; returns the previous value (new reference) or None. */
static PyObject *do_set(RegistryTable *self, const char *k, PyObject *value)
{
    void *old = NULL;
    Py_INCREF(value);
    if (cc_table_set(&self->table, k, value, &old) != 0) {
        Py_DECREF(value);
        return PyErr_NoMemory();
    }
    if (old == NULL) {
        Py_RETURN_NONE;
    }
    return (PyObject *)old; /* the table's reference becomes the caller's */
}

static PyObject *table_set(RegistryTable *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (!check_nargs("set", nargs, 2, 2)) {
        return NULL;
    }
    const char *k = key_utf8(args[0]);
    if (k == NULL) {
        return NULL;
    }
    return do_set(self, k, args[1]);
}

static PyObject *table_get(RegistryTable *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (!check_nargs("get", nargs, 1, 2)) {
        return NULL;
    }
    const char *k = key_utf8(args[0]);
    if (k == NULL) {
        return NULL;
    }
    PyObject *v = (PyObject *)cc_table_get(&self->table, k);
    if (v == NULL) {
        v = nargs > 1 ? args[1] : Py_None;
    }
    Py_INCREF(v);
    return v;
}

static PyObject *table_pop(RegistryTable *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (!check_nargs("pop", nargs, 1, 2)) {
        return NULL;
    }
    const char *k = key_utf8(args[0]);
    if (k == NULL) {
        return NULL;
    }
    PyObject *v = (PyObject *)cc_table_remove(&self->table, k);
    if (v != NULL) {
        return v; /* the table's reference becomes the caller's */
    }
    v = nargs > 1 ? args[1] : Py_None;
    Py_INCREF(v);
    return v;
}

static PyObject *table_discard(RegistryTable *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (!check_nargs("discard", nargs, 2, 2)) {
        return NULL;
    }
    const char *k = key_utf8(args[0]);
    if (k == NULL) {
        return NULL;
    }
    /* get + remove is atomic: every user of the table holds the GIL and no Python
     * code runs between the two calls. */
    if (cc_table_get(&self->table, k) != (void *)args[1]) {
        Py_RETURN_FALSE;
    }
    PyObject *v = (PyObject *)cc_table_remove(&self->table, k);
    Py_XDECREF(v);
    Py_RETURN_TRUE;
}

static PyObject *table_values(RegistryTable *self, PyObject *Py_UNUSED(ignored))
{
    size_t n = cc_table_len(&self->table);
    PyObject **buf = PyMem_New(PyObject *, n ? n : 1);
    if (buf == NULL) {
        return PyErr_NoMemory();
    }
    /* No Python code can run between cc_table_len and here: the table is unchanged. */
    size_t m = cc_table_values(&self->table, (void **)buf, n);
    for (size_t i = 0; i < m; i++) {
        Py_INCREF(buf[i]);
    }
    PyObject *list = list_from_owned(buf, m);
    PyMem_Free(buf);
    return list;
}

static PyObject *table_clear(RegistryTable *self, PyObject *Py_UNUSED(ignored))
{
    size_t n = cc_table_len(&self->table);
    PyObject **buf = PyMem_New(PyObject *, n ? n : 1);
    if (buf == NULL) {
        return PyErr_NoMemory();
    }
    collect_state st = {buf, n, 0};
    cc_table_clear(&self->table, collect_value, &st);
    PyObject *list = list_from_owned(buf, st.n);
    PyMem_Free(buf);
    return list;
}

/* ---- mapping protocol ------------------------------------------------------------ */

static PyObject *table_subscript(RegistryTable *self, PyObject *key)
{
    const char *k = key_utf8(key);
    if (k == NULL) {
        return NULL;
    }
    PyObject *v = (PyObject *)cc_table_get(&self->table, k);
    if (v == NULL) {
        PyErr_SetObject(PyExc_KeyError, key);
        return NULL;
    }
    Py_INCREF(v);
    return v;
}

static int table_ass_subscript(RegistryTable *self, PyObject *key, PyObject *value)
{
    const char *k = key_utf8(key);
    if (k == NULL) {
        return -1;
    }
    if (value != NULL) {
        PyObject *old = do_set(self, k, value);
        if (old == NULL) {
            return -1;
        }
        Py_DECREF(old);
        return 0;
    }
    PyObject *v = (PyObject *)cc_table_remove(&self->table, k);
    if (v == NULL) {
        PyErr_SetObject(PyExc_KeyError, key);
        return -1;
    }
    Py_DECREF(v);
    return 0;
}

static PyMethodDef table_methods[] = {
    {"set", (PyCFunction)(void (*)(void))table_set, METH_FASTCALL,
     "set(key, value, /) -> previous value or None\n\nStore value under key (a str)."},
    {"get", (PyCFunction)(void (*)(void))table_get, METH_FASTCALL,
     "get(key, default=None, /) -> the value stored under key, else default."},
    {"pop", (PyCFunction)(void (*)(void))table_pop, METH_FASTCALL,
     "pop(key, default=None, /) -> remove key and return its value, else default."},
    {"discard", (PyCFunction)(void (*)(void))table_discard, METH_FASTCALL,
     "discard(key, value, /) -> bool\n\nRemove key only if it maps to this very object "
     "(identity); True if removed."},
    {"values", (PyCFunction)table_values, METH_NOARGS,
     "values() -> list: snapshot of the stored values (unspecified order)."},
    {"clear", (PyCFunction)table_clear, METH_NOARGS,
     "clear() -> list: remove every entry atomically and return the removed values."},
    {NULL, NULL, 0, NULL},
};

static PySequenceMethods table_as_sequence = {
    .sq_length = (lenfunc)table_length,
    .sq_contains = (objobjproc)table_contains,
};

static PyMappingMethods table_as_mapping = {
    .mp_length = (lenfunc)table_length,
    .mp_subscript = (binaryfunc)table_subscript,
    .mp_ass_subscript = (objobjargproc)table_ass_subscript,
};

static PyTypeObject RegistryTable_Type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "hother.cancelable._engine.RegistryTable",
    .tp_basicsize = sizeof(RegistryTable),
    .tp_dealloc = (destructor)table_dealloc,
    .tp_repr = (reprfunc)table_repr,
    .tp_as_sequence = &table_as_sequence,
    .tp_as_mapping = &table_as_mapping,
    .tp_hash = PyObject_HashNotImplemented,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "RegistryTable()\n--\n\nThread-safe table from str keys to objects (strong "
              "references), backing the operation registry.",
    .tp_traverse = (traverseproc)table_traverse,
    .tp_clear = (inquiry)table_clear_slot,
    .tp_methods = table_methods,
    .tp_new = table_new,
};

int engine_registry_init(PyObject *m)
{
    if (PyType_Ready(&RegistryTable_Type) < 0) {
        return -1;
    }
    Py_INCREF(&RegistryTable_Type);
    if (PyModule_AddObject(m, "RegistryTable", (PyObject *)&RegistryTable_Type) < 0) {
        Py_DECREF(&RegistryTable_Type);
        return -1;
    }
    return 0;
}
