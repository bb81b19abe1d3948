/* token.c: _engine.TokenCore, the state and hook engine of a cancellation token.
 *
 * The one-shot transition is a cc_state (atomic compare-exchange): exactly one caller, from
 * any thread, wins the cancellation. The winner stores reason/message, publishes, and runs
 * the hooks in registration order (they can no longer be added, removed or unlinked: to
 * everyone else a cancelled token has no hooks; each array is freed once its hooks ran):
 *   - a LINK hook holds a weak reference to a target token; the target is cancelled at once,
 *     on this thread, and its own hooks run before the source's next hook (depth first; an
 *     explicit stack instead of C recursion, so a long chain of links cannot overflow the C
 *     stack; cycles stop because the second attempt on a token loses). The stack is a list
 *     through the tokens themselves (cascade_up), so running the hooks never allocates: once
 *     a cancellation is won, every hook runs and every link is followed;
 *   - a call hook runs fn(token) on the executor captured when it was registered
 *     (engine_dispatch: at once when the canceller runs there, else thread-safely).
 * Errors from hooks are reported through engine_report_error, never raised.
 *
 * Costs: a fresh token allocates nothing but the object. The id (a uuid4 string) is created
 * on first read; the hook array on the first registration; the cancelled_at datetime on
 * first read. Hooks are kept in an array sorted by handle: removal is a binary search plus a
 * tombstone; tombstones and links to dead targets are compacted when the array is full.
 */
#include "engine.h"

#include <datetime.h>
#include <stddef.h>

#include "cc_state.h"

#if defined(__linux__)
#include <sys/random.h>
#define HAVE_GETRANDOM 1
#elif defined(__APPLE__) || defined(__FreeBSD__) || defined(__OpenBSD__) || defined(__NetBSD__)
#include <stdlib.h>
#define HAVE_ARC4RANDOM 1
#endif

enum { HOOK_CALL = 0, HOOK_LINK = 1 };

typedef struct hook_entry {
    Py_ssize_t handle;
    PyObject *fn;       /* callable; for a LINK, a weak reference to the target; NULL: removed */
    PyObject *executor; /* executor of a call hook; NULL for a LINK */
    int kind;
    int preserve_reason;
} hook_entry;

typedef struct TokenCore {
    PyObject_HEAD cc_state state;
    PyObject *reason;       /* reason enum member, NULL until cancelled (or cancelled w/o reason) */
    PyObject *message;      /* str, or NULL for None */
    PyObject *id;           /* str, NULL until first read */
    PyObject *cancelled_at; /* datetime cache, NULL until first read */
    hook_entry *hooks;
    Py_ssize_t nhooks; /* used slots, tombstones included */
    Py_ssize_t cap;
    Py_ssize_t nlive;
    Py_ssize_t next_handle;
    /* While run_cascade runs the hooks of this (cancelled) token: the index of the next hook
     * and the token whose cascade reached this one (NULL for the first). */
    Py_ssize_t cascade_next;
    struct TokenCore *cascade_up;
    PyObject *weakreflist;
} TokenCore;

/* The reason enum (set from Python by _set_reason_type) and its cached members. */
static PyObject *reason_type;
static PyObject *reason_members; /* tuple(reason_type) */
static PyObject *reason_parent;
static PyObject *reason_manual;

static PyObject *s_timestamp;

/* ------------------------------------------------------------------------------------- */
/* small helpers                                                                          */

static int is_awaitable(PyObject *obj)
{
    if (PyCoro_CheckExact(obj)) {
        return 1;
    }
    PyAsyncMethods *am = Py_TYPE(obj)->tp_as_async;
    return am != NULL && am->am_await != NULL;
}

static void close_quietly(PyObject *obj)
{
    if (!PyCoro_CheckExact(obj)) {
        return;
    }
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyObject *r = PyObject_CallMethod(obj, "close", NULL);
    if (r == NULL) {
        PyErr_Clear();
    }
    Py_XDECREF(r);
    PyErr_Restore(type, value, tb);
}

/* New reference to the target of a weak reference, or NULL (dead; no error). */
static PyObject *weak_target(PyObject *ref)
{
#if PY_VERSION_HEX >= 0x030D0000
    PyObject *obj = NULL;
    if (PyWeakref_GetRef(ref, &obj) < 0) {
        PyErr_Clear();
        return NULL;
    }
    return obj;
#else
    PyObject *obj = PyWeakref_GetObject(ref); /* borrowed */
    if (obj == NULL) {
        PyErr_Clear();
        return NULL;
    }
    if (obj == Py_None) {
        return NULL;
    }
    Py_INCREF(obj);
    return obj;
#endif
}

/* Non-zero while the weakly referenced object is alive (no new reference, no error). */
static int weak_alive(PyObject *ref)
{
    PyObject *obj = weak_target(ref);
    Py_XDECREF(obj);
    return obj != NULL;
}

/* Borrowed: is ref a weak reference to obj? */
static int weak_points_to(PyObject *ref, PyObject *obj)
{
    PyObject *t = weak_target(ref);
    Py_XDECREF(t);
    return t == obj;
}

static int fill_random(unsigned char *buf, size_t n)
{
#if defined(HAVE_GETRANDOM)
    size_t got = 0;
    while (got < n) {
        ssize_t r = getrandom(buf + got, n - got, 0);
        if (r <= 0) {
            return -1;
        }
        got += (size_t)r;
    }
    return 0;
#elif defined(HAVE_ARC4RANDOM)
    arc4random_buf(buf, n);
    return 0;
#else
    (void)buf;
    (void)n;
    return -1;
#endif
}

/* A new uuid4 string (36 characters, lowercase hex). */
static PyObject *make_uuid4(void)
{
    unsigned char b[16];
    if (fill_random(b, sizeof b) < 0) {
        PyObject *os = PyImport_ImportModule("os");
        if (os == NULL) {
            return NULL;
        }
        PyObject *bytes = PyObject_CallMethod(os, "urandom", "i", 16);
        Py_DECREF(os);
        if (bytes == NULL) {
            return NULL;
        }
        if (!PyBytes_Check(bytes) || PyBytes_GET_SIZE(bytes) != 16) {
            Py_DECREF(bytes);
            PyErr_SetString(PyExc_RuntimeError, "os.urandom(16) returned unexpected data");
            return NULL;
        }
        memcpy(b, PyBytes_AS_STRING(bytes), 16);
        Py_DECREF(bytes);
    }
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x40); /* version 4 */
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80); /* RFC 4122 variant */
    static const char hex[] = "0123456789abcdef";
    char out[36];
    int j = 0;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10) {
            out[j++] = '-';
        }
        out[j++] = hex[b[i] >> 4];
        out[j++] = hex[b[i] & 0x0f];
    }
    return PyUnicode_FromStringAndSize(out, 36);
}

/* Borrowed reference to the token's id, created on first use; NULL on error. */
static PyObject *token_id(TokenCore *self)
{
    if (self->id == NULL) {
        self->id = make_uuid4();
    }
    return self->id;
}

static int reason_code(PyObject *reason)
{
    if (reason == NULL || reason_members == NULL) {
        return -1;
    }
    Py_ssize_t n = PyTuple_GET_SIZE(reason_members);
    for (Py_ssize_t i = 0; i < n; i++) {
        if (PyTuple_GET_ITEM(reason_members, i) == reason) {
            return (int)i;
        }
    }
    return -1;
}

/* 0 when reason is a member of the reason enum (or None when allow_none), else -1 + error. */
static int check_reason(PyObject *reason, int allow_none)
{
    if (allow_none && reason == Py_None) {
        return 0;
    }
    if (reason_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "the cancellation reason type is not set; import "
                                            "hother.cancelable.core.token first");
        return -1;
    }
    int ok = PyObject_IsInstance(reason, reason_type);
    if (ok < 0) {
        return -1;
    }
    if (!ok) {
        PyErr_Format(PyExc_TypeError, "reason must be a CancellationReason%s, got %.100s",
                     allow_none ? " or None" : "", Py_TYPE(reason)->tp_name);
        return -1;
    }
    return 0;
}

static int check_message(PyObject *message)
{
    if (message != Py_None && !PyUnicode_Check(message)) {
        PyErr_Format(PyExc_TypeError, "message must be a str or None, got %.100s",
                     Py_TYPE(message)->tp_name);
        return -1;
    }
    return 0;
}

/* 1 if obj has the attribute, 0 if not (AttributeError), -1 on any other error (kept). */
static int has_attr_strict(PyObject *obj, PyObject *name)
{
    PyObject *v = PyObject_GetAttr(obj, name);
    if (v != NULL) {
        Py_DECREF(v);
        return 1;
    }
    if (PyErr_ExceptionMatches(PyExc_AttributeError)) {
        PyErr_Clear();
        return 0;
    }
    return -1;
}

static int check_executor(PyObject *executor)
{
    if (executor == Py_None) {
        return 0;
    }
    int has = has_attr_strict(executor, G.s_call_soon_threadsafe);
    if (has == 0) {
        has = has_attr_strict(executor, G.s_run_sync_soon);
    }
    if (has < 0) {
        return -1;
    }
    if (has) {
        return 0;
    }
    PyErr_Format(PyExc_TypeError,
                 "executor must be an asyncio event loop, a trio TrioToken or None, got %.100s",
                 Py_TYPE(executor)->tp_name);
    return -1;
}

/* ------------------------------------------------------------------------------------- */
/* hook array                                                                             */

/* Drop tombstones and links whose target died, keeping order. Runs no Python code except
 * weakref deallocation (which has no callback here). */
static void hooks_compact(TokenCore *self)
{
    Py_ssize_t j = 0;
    for (Py_ssize_t i = 0; i < self->nhooks; i++) {
        hook_entry e = self->hooks[i];
        if (e.fn == NULL) {
            continue;
        }
        if (e.kind == HOOK_LINK && !weak_alive(e.fn)) {
            Py_DECREF(e.fn);
            continue;
        }
        self->hooks[j++] = e;
    }
    self->nhooks = j;
    self->nlive = j;
}

/* Make room for one more entry. 0 or -1 (MemoryError). */
static int hooks_reserve(TokenCore *self)
{
    if (self->nhooks < self->cap) {
        return 0;
    }
    hooks_compact(self);
    if (self->cap > 0 && self->nhooks * 2 <= self->cap) {
        return 0;
    }
    Py_ssize_t ncap = self->cap < 4 ? 4 : self->cap * 2;
    if ((size_t)ncap > PY_SSIZE_T_MAX / sizeof(hook_entry)) {
        PyErr_NoMemory();
        return -1;
    }
    hook_entry *h = PyMem_Realloc(self->hooks, (size_t)ncap * sizeof(hook_entry));
    if (h == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    self->hooks = h;
    self->cap = ncap;
    return 0;
}

/* Append an entry (steals nothing: increments fn and executor). Returns its handle or -1. */
static Py_ssize_t hooks_append(TokenCore *self, PyObject *fn, PyObject *executor, int kind,
                               int preserve_reason)
{
    if (hooks_reserve(self) < 0) {
        return -1;
    }
    hook_entry *e = &self->hooks[self->nhooks++];
    e->handle = self->next_handle++;
    Py_INCREF(fn);
    e->fn = fn;
    Py_XINCREF(executor);
    e->executor = executor;
    e->kind = kind;
    e->preserve_reason = preserve_reason;
    self->nlive++;
    return e->handle;
}

/* Tombstone entry i and release its references (after the array is consistent). */
static void hooks_remove_at(TokenCore *self, Py_ssize_t i)
{
    PyObject *fn = self->hooks[i].fn;
    PyObject *executor = self->hooks[i].executor;
    self->hooks[i].fn = NULL;
    self->hooks[i].executor = NULL;
    self->nlive--;
    if (self->nlive == 0) {
        self->nhooks = 0;
    }
    Py_XDECREF(fn);
    Py_XDECREF(executor);
}

/* 1 removed, 0 not found (a cancelled token has no hooks left to remove). */
static int hooks_remove_handle(TokenCore *self, Py_ssize_t handle)
{
    if (cc_state_is_requested(&self->state)) {
        return 0;
    }
    Py_ssize_t lo = 0, hi = self->nhooks;
    while (lo < hi) {
        Py_ssize_t mid = lo + (hi - lo) / 2;
        Py_ssize_t h = self->hooks[mid].handle;
        if (h == handle) {
            if (self->hooks[mid].fn == NULL || self->hooks[mid].kind != HOOK_CALL) {
                return 0;
            }
            hooks_remove_at(self, mid);
            return 1;
        }
        if (h < handle) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return 0;
}

/* Detach the hook array (ownership moves to the caller). */
static void hooks_detach(TokenCore *self, hook_entry **hooks, Py_ssize_t *n)
{
    *hooks = self->hooks;
    *n = self->nhooks;
    self->hooks = NULL;
    self->nhooks = self->cap = self->nlive = 0;
}

static void hooks_release(hook_entry *hooks, Py_ssize_t n)
{
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_XDECREF(hooks[i].fn);
        Py_XDECREF(hooks[i].executor);
    }
    PyMem_Free(hooks);
}

/* ------------------------------------------------------------------------------------- */
/* cancellation                                                                           */

/* Free the hook array of a cancelled token whose hooks all ran (every entry consumed). */
static void hooks_free_consumed(TokenCore *self)
{
    hook_entry *h = self->hooks;
    self->hooks = NULL;
    self->nhooks = self->cap = self->nlive = 0;
    PyMem_Free(h);
}

/* Try to win the cancellation. On a win: reason/message stored and published, the hooks
 * left in the array for run_cascade, which the caller must call next (nothing here can
 * fail); returns 1. Returns 0 when another caller already won. reason may be NULL or None
 * (no reason), message NULL or None (no message). Runs no Python code. */
static int token_begin_cancel(TokenCore *self, PyObject *reason, PyObject *message)
{
    if (!cc_state_try_begin(&self->state)) {
        return 0;
    }
    PyObject *old_reason = self->reason, *old_message = self->message;
    self->reason = (reason == NULL || reason == Py_None) ? NULL : Py_NewRef(reason);
    self->message = (message == NULL || message == Py_None) ? NULL : Py_NewRef(message);
    cc_state_finish(&self->state, reason_code(self->reason));
    self->nlive = 0; /* _hook_count: a cancelled token has no hooks */
    Py_XDECREF(old_reason);
    Py_XDECREF(old_message);
    return 1;
}

/* Reason and message a linked target gets from its cancelled source (new references).
 * *msg may be set even on failure; returns 0 or -1 with an error set. */
static int link_reason(TokenCore *src, int preserve, PyObject **reason, PyObject **msg)
{
    *reason = NULL;
    *msg = NULL;
    if (preserve && src->reason != NULL) {
        *reason = Py_NewRef(src->reason);
    } else if (reason_parent != NULL) {
        *reason = Py_NewRef(reason_parent);
    }
    if (preserve && src->message != NULL) {
        *msg = Py_NewRef(src->message);
        return 0;
    }
    PyObject *id = token_id(src);
    if (id == NULL) {
        return -1;
    }
    PyObject *id8 = PyUnicode_Substring(id, 0, 8);
    if (id8 == NULL) {
        return -1;
    }
    *msg = PyUnicode_FromFormat("Linked token %U was cancelled", id8);
    Py_DECREF(id8);
    return *msg == NULL ? -1 : 0;
}

/* Run one call hook for token tok. With collect (a list), a hook whose executor is "here"
 * is called directly and an awaitable result is appended to collect. Never raises. */
static void run_call_hook(PyObject *fn, PyObject *executor, PyObject *tok, PyObject *collect)
{
    if (collect != NULL && engine_executor_is_here(executor)) {
        PyObject *res = PyObject_CallOneArg(fn, tok);
        if (res == NULL) {
            engine_report_error("hother.cancelable: token callback raised");
            return;
        }
        if (res != Py_None && is_awaitable(res)) {
            if (PyList_Append(collect, res) < 0) {
                close_quietly(res);
                engine_report_error("hother.cancelable: cannot collect async token callback");
            }
        }
        Py_DECREF(res);
        return;
    }
    if (engine_dispatch(executor, fn, tok) < 0) {
        engine_report_error("hother.cancelable: cannot dispatch token callback");
    }
}

/* Run the hooks of root, which the caller just cancelled (token_begin_cancel won), following
 * links depth first. Each hook is taken out of its token's array just before it runs; a
 * token's array is freed after its last hook. The explicit stack is the list of the tokens
 * being run, through their cascade_up (each token is cancelled once, so it is in at most one
 * cascade): nothing is allocated, so nothing is dropped. Never raises. */
static void run_cascade(TokenCore *root, PyObject *collect)
{
    if (root->nhooks == 0) {
        hooks_free_consumed(root);
        return;
    }
    Py_INCREF(root);
    root->cascade_next = 0;
    root->cascade_up = NULL;
    TokenCore *top = root;
    while (top != NULL) {
        if (top->cascade_next >= top->nhooks) {
            TokenCore *up = top->cascade_up;
            top->cascade_up = NULL;
            hooks_free_consumed(top);
            Py_DECREF(top);
            top = up;
            continue;
        }
        /* index again on every step: the array is only read here, never moved */
        hook_entry *slot = &top->hooks[top->cascade_next++];
        hook_entry e = *slot; /* we now own e.fn / e.executor */
        slot->fn = NULL;
        slot->executor = NULL;
        if (e.fn == NULL) {
            continue;
        }
        if (e.kind == HOOK_CALL) {
            run_call_hook(e.fn, e.executor, (PyObject *)top, collect);
            Py_DECREF(e.fn);
            Py_XDECREF(e.executor);
            continue;
        }
        /* LINK: cancel the target now, then run its hooks before our next one */
        PyObject *target = weak_target(e.fn);
        Py_DECREF(e.fn);
        if (target == NULL) {
            continue;
        }
        TokenCore *t = (TokenCore *)target;
        if (cc_state_is_requested(&t->state)) {
            Py_DECREF(target);
            continue;
        }
        PyObject *reason, *msg;
        if (link_reason(top, e.preserve_reason, &reason, &msg) < 0) {
            engine_report_error("hother.cancelable: cannot build the linked cancellation message");
        }
        int won = token_begin_cancel(t, reason, msg);
        Py_XDECREF(reason);
        Py_XDECREF(msg);
        if (!won) {
            Py_DECREF(target);
            continue;
        }
        if (t->nhooks == 0) {
            hooks_free_consumed(t);
            Py_DECREF(target);
            continue;
        }
        t->cascade_next = 0;
        t->cascade_up = top;
        top = t; /* takes the target reference */
    }
}

/* Cancel self (no collection) with the reason derived from a cancelled source. */
static void cancel_from_source(TokenCore *self, TokenCore *src, int preserve)
{
    PyObject *reason, *msg;
    if (link_reason(src, preserve, &reason, &msg) < 0) {
        engine_report_error("hother.cancelable: cannot build the linked cancellation message");
    }
    int won = token_begin_cancel(self, reason, msg);
    Py_XDECREF(reason);
    Py_XDECREF(msg);
    if (won) {
        run_cascade(self, NULL);
    }
}

/* ------------------------------------------------------------------------------------- */
/* C API for the other files of the binding                                              */

int token_is_cancelled(PyObject *tok)
{
    return cc_state_is_requested(&((TokenCore *)tok)->state);
}

/* Register fn; 0 when the token was already cancelled (fn dispatched at once), else the
 * handle (>= 1); -1 on error. */
static Py_ssize_t token_add_hook_impl(TokenCore *self, PyObject *fn, PyObject *executor)
{
    if (cc_state_is_requested(&self->state)) {
        return engine_dispatch(executor, fn, (PyObject *)self) < 0 ? -1 : 0;
    }
    return hooks_append(self, fn, executor, HOOK_CALL, 0);
}

PyObject *token_add_hook_c(PyObject *tok, PyObject *fn, PyObject *executor)
{
    PyObject *ex = executor != NULL ? Py_NewRef(executor) : engine_capture_executor();
    if (ex == NULL) {
        return NULL;
    }
    Py_ssize_t h = token_add_hook_impl((TokenCore *)tok, fn, ex);
    Py_DECREF(ex);
    return h < 0 ? NULL : PyLong_FromSsize_t(h);
}

int token_remove_hook_c(PyObject *tok, Py_ssize_t handle)
{
    return hooks_remove_handle((TokenCore *)tok, handle);
}

/* ------------------------------------------------------------------------------------- */
/* the type                                                                               */

static PyObject *token_new(PyTypeObject *type, PyObject *Py_UNUSED(args), PyObject *Py_UNUSED(kwds))
{
    TokenCore *self = (TokenCore *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    cc_state_init(&self->state);
    self->next_handle = 1;
    G.live_tokens++;
    return (PyObject *)self;
}

static int token_init(TokenCore *self, PyObject *args, PyObject *kwds)
{
    if (PyTuple_GET_SIZE(args) != 0) {
        PyErr_Format(PyExc_TypeError, "%.100s() takes no positional arguments",
                     Py_TYPE(self)->tp_name);
        return -1;
    }
    if (kwds == NULL || PyDict_GET_SIZE(kwds) == 0) {
        return 0;
    }
    static char *kwlist[] = {"id", "is_cancelled", "reason", "message", "cancelled_at", NULL};
    PyObject *id = Py_None, *is_cancelled = Py_False, *reason = Py_None, *message = Py_None,
             *cancelled_at = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|$OOOOO:TokenCore", kwlist, &id, &is_cancelled,
                                     &reason, &message, &cancelled_at)) {
        return -1;
    }
    if (id != Py_None && !PyUnicode_Check(id)) {
        PyErr_Format(PyExc_TypeError, "id must be a str or None, got %.100s", Py_TYPE(id)->tp_name);
        return -1;
    }
    if (!PyBool_Check(is_cancelled)) {
        PyErr_Format(PyExc_TypeError, "is_cancelled must be a bool, got %.100s",
                     Py_TYPE(is_cancelled)->tp_name);
        return -1;
    }
    if (check_reason(reason, 1) < 0 || check_message(message) < 0) {
        return -1;
    }
    if (cancelled_at != Py_None && !PyDateTime_Check(cancelled_at)) {
        PyErr_Format(PyExc_TypeError, "cancelled_at must be a datetime or None, got %.100s",
                     Py_TYPE(cancelled_at)->tp_name);
        return -1;
    }
    int cancelled = is_cancelled == Py_True;
    if (!cancelled && (reason != Py_None || message != Py_None || cancelled_at != Py_None)) {
        PyErr_SetString(PyExc_ValueError,
                        "reason, message and cancelled_at can only be given together with "
                        "is_cancelled=True");
        return -1;
    }
    double when = 0.0;
    if (cancelled) {
        if (cc_state_is_requested(&self->state)) {
            PyErr_SetString(PyExc_ValueError, "the token is already cancelled");
            return -1;
        }
        if (cancelled_at != Py_None) {
            PyObject *ts = PyObject_CallMethodNoArgs(cancelled_at, s_timestamp);
            if (ts == NULL) {
                return -1;
            }
            when = PyFloat_AsDouble(ts);
            Py_DECREF(ts);
            if (when == -1.0 && PyErr_Occurred()) {
                return -1;
            }
        } else {
            when = cc_now_realtime();
        }
    }
    if (id != Py_None) {
        Py_INCREF(id);
        Py_XSETREF(self->id, id);
    }
    if (cancelled) {
        if (!token_begin_cancel(self, reason, message)) {
            PyErr_SetString(PyExc_ValueError, "the token is already cancelled");
            return -1;
        }
        /* override the time recorded by the transition with the given one */
        cc_state_set_cancelled(&self->state, reason_code(self->reason), when);
        if (cancelled_at != Py_None) {
            Py_INCREF(cancelled_at);
            Py_XSETREF(self->cancelled_at, cancelled_at);
        }
        run_cascade(self, NULL);
    }
    return 0;
}

static int token_traverse(TokenCore *self, visitproc visit, void *arg)
{
    Py_VISIT(self->reason);
    Py_VISIT(self->message);
    Py_VISIT(self->id);
    Py_VISIT(self->cancelled_at);
    for (Py_ssize_t i = 0; i < self->nhooks; i++) {
        Py_VISIT(self->hooks[i].fn);
        Py_VISIT(self->hooks[i].executor);
    }
    return 0;
}

static int token_clear(TokenCore *self)
{
    hook_entry *h;
    Py_ssize_t n;
    hooks_detach(self, &h, &n);
    Py_CLEAR(self->reason);
    Py_CLEAR(self->message);
    Py_CLEAR(self->id);
    Py_CLEAR(self->cancelled_at);
    if (h != NULL) {
        hooks_release(h, n);
    }
    return 0;
}

static void token_dealloc(TokenCore *self)
{
    PyObject_GC_UnTrack(self);
    if (self->weakreflist != NULL) {
        PyObject_ClearWeakRefs((PyObject *)self);
    }
    token_clear(self);
    G.live_tokens--;
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* --- properties --- */

static PyObject *token_get_id(TokenCore *self, void *Py_UNUSED(c))
{
    return Py_XNewRef(token_id(self));
}

static PyObject *token_get_is_cancelled(TokenCore *self, void *Py_UNUSED(c))
{
    return PyBool_FromLong(cc_state_is_requested(&self->state));
}

static PyObject *token_get_reason(TokenCore *self, void *Py_UNUSED(c))
{
    if (!cc_state_is_cancelled(&self->state) || self->reason == NULL) {
        Py_RETURN_NONE;
    }
    return Py_NewRef(self->reason);
}

static PyObject *token_get_message(TokenCore *self, void *Py_UNUSED(c))
{
    if (!cc_state_is_cancelled(&self->state) || self->message == NULL) {
        Py_RETURN_NONE;
    }
    return Py_NewRef(self->message);
}

static PyObject *token_get_cancelled_at(TokenCore *self, void *Py_UNUSED(c))
{
    if (!cc_state_is_cancelled(&self->state)) {
        Py_RETURN_NONE;
    }
    if (self->cancelled_at == NULL) {
        PyObject *args = Py_BuildValue("(dO)", self->state.cancelled_at, PyDateTime_TimeZone_UTC);
        if (args == NULL) {
            return NULL;
        }
        PyObject *dt = PyDateTime_FromTimestamp(args);
        Py_DECREF(args);
        if (dt == NULL) {
            return NULL;
        }
        self->cancelled_at = dt;
    }
    return Py_NewRef(self->cancelled_at);
}

static PyObject *token_get_hook_count(TokenCore *self, void *Py_UNUSED(c))
{
    return PyLong_FromSsize_t(self->nlive);
}

static PyGetSetDef token_getset[] = {
    {"id", (getter)token_get_id, NULL, "The token id (a uuid4 string unless one was given).", NULL},
    {"is_cancelled", (getter)token_get_is_cancelled, NULL, "True once the token is cancelled.",
     NULL},
    {"reason", (getter)token_get_reason, NULL,
     "The CancellationReason of the cancellation, or None.", NULL},
    {"message", (getter)token_get_message, NULL, "The cancellation message, or None.", NULL},
    {"cancelled_at", (getter)token_get_cancelled_at, NULL,
     "When the token was cancelled (an aware UTC datetime), or None.", NULL},
    {"_hook_count", (getter)token_get_hook_count, NULL,
     "Number of registered hooks and links (introspection for tests).", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

/* --- methods --- */

static PyObject *token_cancel(TokenCore *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"reason", "message", "collect", NULL};
    PyObject *reason, *message = Py_None;
    int collect = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|Op:_cancel", kwlist, &reason, &message,
                                     &collect)) {
        return NULL;
    }
    if (check_reason(reason, 0) < 0 || check_message(message) < 0) {
        return NULL;
    }
    /* allocate everything that can fail before the transition: a won cancellation runs
     * every hook and hands back every collected awaitable */
    PyObject *list = NULL, *result = NULL;
    if (collect) {
        list = PyList_New(0);
        result = list != NULL ? PyTuple_New(2) : NULL;
        if (result == NULL) {
            Py_XDECREF(list);
            return NULL;
        }
    }
    int won = token_begin_cancel(self, reason, message);
    if (won) {
        run_cascade(self, list);
    }
    if (!collect) {
        return PyBool_FromLong(won);
    }
    PyTuple_SET_ITEM(result, 0, PyBool_FromLong(won));
    PyTuple_SET_ITEM(result, 1, list);
    return result;
}

static PyObject *token_add_hook(TokenCore *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"fn", "executor", NULL};
    PyObject *fn, *executor = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|$O:_add_hook", kwlist, &fn, &executor)) {
        return NULL;
    }
    if (!PyCallable_Check(fn)) {
        PyErr_Format(PyExc_TypeError, "fn must be callable, got %.100s", Py_TYPE(fn)->tp_name);
        return NULL;
    }
    if (executor != NULL && check_executor(executor) < 0) {
        return NULL;
    }
    return token_add_hook_c((PyObject *)self, fn, executor);
}

static PyObject *token_remove_hook(TokenCore *self, PyObject *handle)
{
    if (!PyLong_Check(handle) || PyBool_Check(handle)) {
        PyErr_Format(PyExc_TypeError, "handle must be an int, got %.100s",
                     Py_TYPE(handle)->tp_name);
        return NULL;
    }
    Py_ssize_t h = PyLong_AsSsize_t(handle);
    if (h == -1 && PyErr_Occurred()) {
        if (!PyErr_ExceptionMatches(PyExc_OverflowError)) {
            return NULL;
        }
        PyErr_Clear();
        Py_RETURN_FALSE; /* no such handle */
    }
    return PyBool_FromLong(hooks_remove_handle(self, h));
}

static int check_source(TokenCore *self, PyObject *source)
{
    if (!PyObject_TypeCheck(source, &TokenCore_Type)) {
        PyErr_Format(PyExc_TypeError, "source must be a cancellation token, got %.100s",
                     Py_TYPE(source)->tp_name);
        return -1;
    }
    if (source == (PyObject *)self) {
        PyErr_SetString(PyExc_ValueError, "source: a token cannot be linked to itself");
        return -1;
    }
    return 0;
}

int token_link_from_c(PyObject *tok, PyObject *source, int preserve)
{
    TokenCore *self = (TokenCore *)tok;
    if (check_source(self, source) < 0) {
        return -1;
    }
    TokenCore *src = (TokenCore *)source;
    if (cc_state_is_requested(&self->state)) {
        return 0; /* already cancelled: a link can change nothing */
    }
    if (cc_state_is_requested(&src->state)) {
        cancel_from_source(self, src, preserve);
        return 0;
    }
    PyObject *ref = PyWeakref_NewRef((PyObject *)self, NULL);
    if (ref == NULL) {
        return -1;
    }
    if (cc_state_is_requested(&src->state) || cc_state_is_requested(&self->state)) {
        /* the allocation ran a collection whose finalizers cancelled one of them */
        Py_DECREF(ref);
        if (!cc_state_is_requested(&self->state)) {
            cancel_from_source(self, src, preserve);
        }
        return 0;
    }
    Py_ssize_t h = hooks_append(src, ref, NULL, HOOK_LINK, preserve);
    Py_DECREF(ref);
    return h < 0 ? -1 : 0;
}

static PyObject *token_link_from(TokenCore *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"source", "preserve_reason", NULL};
    PyObject *source;
    int preserve = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|p:_link_from", kwlist, &source, &preserve)) {
        return NULL;
    }
    if (token_link_from_c((PyObject *)self, source, preserve) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

int token_unlink_from_c(PyObject *tok, PyObject *source)
{
    TokenCore *self = (TokenCore *)tok;
    if (check_source(self, source) < 0) {
        return -1;
    }
    TokenCore *src = (TokenCore *)source;
    if (cc_state_is_requested(&src->state)) {
        return 0; /* its links ran (or are running): nothing left to remove */
    }
    /* newest first: operations usually exit in reverse order of entry */
    for (Py_ssize_t i = src->nhooks - 1; i >= 0; i--) {
        hook_entry *e = &src->hooks[i];
        if (e->fn != NULL && e->kind == HOOK_LINK && weak_points_to(e->fn, (PyObject *)self)) {
            hooks_remove_at(src, i);
            return 1;
        }
    }
    return 0;
}

static PyObject *token_unlink_from(TokenCore *self, PyObject *source)
{
    int r = token_unlink_from_c((PyObject *)self, source);
    return r < 0 ? NULL : PyBool_FromLong(r);
}

static PyMethodDef token_methods[] = {
    {"_cancel", (PyCFunction)(void (*)(void))token_cancel, METH_VARARGS | METH_KEYWORDS,
     "_cancel(reason, message=None, collect=False) -> bool | (bool, list)\n\n"
     "Cancel the token (exactly one caller wins, from any thread) and run its hooks. With "
     "collect=True, awaitables returned by hooks that run on the caller's executor are "
     "returned instead of being spawned."},
    {"_add_hook", (PyCFunction)(void (*)(void))token_add_hook, METH_VARARGS | METH_KEYWORDS,
     "_add_hook(fn, *, executor=<captured>) -> int\n\n"
     "Call fn(token) on cancellation, on the executor (event loop / trio token / None). "
     "Returns a handle for _remove_hook, or 0 when the token is already cancelled (fn was "
     "dispatched at once)."},
    {"_remove_hook", (PyCFunction)token_remove_hook, METH_O,
     "_remove_hook(handle) -> bool: unregister a hook; False if it is not registered."},
    {"_link_from", (PyCFunction)(void (*)(void))token_link_from, METH_VARARGS | METH_KEYWORDS,
     "_link_from(source, preserve_reason=False): cancel this token whenever source is "
     "cancelled (the source keeps only a weak reference to this token)."},
    {"_unlink_from", (PyCFunction)token_unlink_from, METH_O,
     "_unlink_from(source) -> bool: remove one link made by _link_from(source)."},
    {NULL, NULL, 0, NULL},
};

PyTypeObject TokenCore_Type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "hother.cancelable._engine.TokenCore",
    .tp_basicsize = sizeof(TokenCore),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "TokenCore(*, id=None, is_cancelled=False, reason=None, message=None, "
              "cancelled_at=None)\n\n"
              "The C core of a cancellation token: one-shot thread-safe state, hooks, links.",
    .tp_new = token_new,
    .tp_init = (initproc)token_init,
    .tp_dealloc = (destructor)token_dealloc,
    .tp_traverse = (traverseproc)token_traverse,
    .tp_clear = (inquiry)token_clear,
    .tp_weaklistoffset = offsetof(TokenCore, weakreflist),
    .tp_getset = token_getset,
    .tp_methods = token_methods,
};

/* ------------------------------------------------------------------------------------- */
/* module functions                                                                       */

static PyObject *set_reason_type(PyObject *Py_UNUSED(m), PyObject *enum_cls)
{
    if (!PyType_Check(enum_cls)) {
        PyErr_Format(PyExc_TypeError, "enum_cls must be an Enum class, got %.100s",
                     Py_TYPE(enum_cls)->tp_name);
        return NULL;
    }
    PyObject *parent = PyObject_GetAttrString(enum_cls, "PARENT");
    PyObject *manual = parent != NULL ? PyObject_GetAttrString(enum_cls, "MANUAL") : NULL;
    PyObject *members = manual != NULL ? PySequence_Tuple(enum_cls) : NULL;
    if (parent == NULL || manual == NULL || members == NULL) {
        Py_XDECREF(parent);
        Py_XDECREF(manual);
        Py_XDECREF(members);
        if (PyErr_ExceptionMatches(PyExc_AttributeError) ||
            PyErr_ExceptionMatches(PyExc_TypeError)) {
            PyErr_Clear();
            PyErr_SetString(PyExc_ValueError,
                            "enum_cls must be an Enum class with PARENT and MANUAL members");
        }
        return NULL;
    }
    if (PyObject_IsInstance(parent, enum_cls) != 1 || PyObject_IsInstance(manual, enum_cls) != 1) {
        Py_DECREF(parent);
        Py_DECREF(manual);
        Py_DECREF(members);
        PyErr_Clear();
        PyErr_SetString(PyExc_ValueError,
                        "enum_cls must be an Enum class with PARENT and MANUAL members");
        return NULL;
    }
    Py_INCREF(enum_cls);
    Py_XSETREF(reason_type, enum_cls);
    Py_XSETREF(reason_parent, parent);
    Py_XSETREF(reason_manual, manual);
    Py_XSETREF(reason_members, members);
    Py_RETURN_NONE;
}

static PyMethodDef token_module_methods[] = {
    {"_set_reason_type", set_reason_type, METH_O,
     "_set_reason_type(enum_cls): the CancellationReason enum the token core validates "
     "against (called by hother.cancelable.core.token at import)."},
    {NULL, NULL, 0, NULL},
};

int engine_token_init(PyObject *m)
{
    PyDateTime_IMPORT;
    if (PyDateTimeAPI == NULL) {
        return -1;
    }
    s_timestamp = PyUnicode_InternFromString("timestamp");
    if (s_timestamp == NULL) {
        return -1;
    }
    if (PyType_Ready(&TokenCore_Type) < 0) {
        return -1;
    }
    Py_INCREF(&TokenCore_Type);
    if (PyModule_AddObject(m, "TokenCore", (PyObject *)&TokenCore_Type) < 0) {
        Py_DECREF(&TokenCore_Type);
        return -1;
    }
    return PyModule_AddFunctions(m, token_module_methods);
}
