/* cancellable.c: the C base of hother.cancelable.Cancellable (the hot path).
 *
 * `CancellableCore` holds the state of an operation in C fields, exposed to the
 * Python subclass (core/cancellable.py) under the attribute names it uses, so the
 * Python methods (the rarely used features: sources, callbacks, registry, links,
 * shields) and this file share one state.
 *
 * Fast path: `async with Cancellable()` / `Cancellable.with_timeout(t)` /
 * `Cancellable.with_token(t)` on the native asyncio backend (and under trio) with no
 * other sources, no callbacks, parent, linked operations or registry entry. Enter and exit
 * then run here (with_token adds the link of the operation's token to the external one),
 * and their awaitables complete at once (an `Immediate` object with am_send: no
 * scheduling, no StopIteration object).
 * Everything else goes through the Python methods `_aenter_slow` / `_aexit_slow`.
 *
 * Lazy state: the operation id (uuid4), the token, the OperationContext model,
 * the default name, the metadata dict and every list are created on first use.
 */
#include "engine.h"

#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <structmember.h>

#include "cc_state.h"

/* ------------------------------------------------------------------------- */
/* Immediate: an awaitable that completes at once with a value               */

typedef struct {
    PyObject_HEAD PyObject *value;
} Immediate;

static PyTypeObject Immediate_Type;
#define IMM_FREELIST 32
static Immediate *imm_free[IMM_FREELIST];
static int imm_nfree;

static PyObject *immediate_new(PyObject *value)
{
    Immediate *im;
    if (imm_nfree > 0) {
        im = imm_free[--imm_nfree];
        _Py_NewReference((PyObject *)im);
    } else {
        im = PyObject_New(Immediate, &Immediate_Type);
        if (im == NULL) {
            return NULL;
        }
    }
    Py_INCREF(value);
    im->value = value;
    return (PyObject *)im;
}

static void immediate_dealloc(Immediate *im)
{
    Py_CLEAR(im->value);
    if (imm_nfree < IMM_FREELIST) {
        imm_free[imm_nfree++] = im;
        return;
    }
    PyObject_Free(im);
}

static PyObject *immediate_await(PyObject *self)
{
    Py_INCREF(self);
    return self;
}

static PySendResult immediate_send(PyObject *self, PyObject *Py_UNUSED(arg), PyObject **result)
{
    Immediate *im = (Immediate *)self;
    if (im->value == NULL) {
        Py_INCREF(Py_None);
        *result = Py_None;
        return PYGEN_RETURN;
    }
    *result = im->value; /* steal */
    im->value = NULL;
    return PYGEN_RETURN;
}

static PyObject *immediate_next(PyObject *self)
{
    Immediate *im = (Immediate *)self;
    PyObject *value = im->value != NULL ? im->value : Py_None;
    PyObject *stop = PyObject_CallOneArg(PyExc_StopIteration, value);
    Py_CLEAR(im->value);
    if (stop == NULL) {
        return NULL;
    }
    PyErr_SetObject(PyExc_StopIteration, stop);
    Py_DECREF(stop);
    return NULL;
}

static PyObject *immediate_send_meth(PyObject *self, PyObject *Py_UNUSED(arg))
{
    return immediate_next(self);
}

static PyObject *immediate_throw(PyObject *Py_UNUSED(self), PyObject *const *args, Py_ssize_t n)
{
    if (n < 1) {
        PyErr_SetString(PyExc_TypeError, "throw expects at least 1 argument");
        return NULL;
    }
    PyObject *typ = args[0];
    PyObject *val = n > 1 ? args[1] : NULL;
    if (!PyExceptionInstance_Check(typ) && !PyExceptionClass_Check(typ)) {
        PyErr_Format(PyExc_TypeError,
                     "exceptions must be classes or instances deriving from BaseException, not "
                     "%.100s",
                     Py_TYPE(typ)->tp_name);
        return NULL;
    }
    if (PyExceptionInstance_Check(typ)) {
        PyErr_SetObject((PyObject *)Py_TYPE(typ), typ);
    } else if (val != NULL && val != Py_None) {
        PyErr_SetObject(typ, val);
    } else {
        PyErr_SetNone(typ);
    }
    return NULL;
}

static PyObject *immediate_close(PyObject *self, PyObject *Py_UNUSED(a))
{
    Py_CLEAR(((Immediate *)self)->value);
    Py_RETURN_NONE;
}

static PyAsyncMethods immediate_as_async = {
    .am_await = immediate_await,
    .am_send = immediate_send,
};

static PyMethodDef immediate_methods[] = {
    {"send", immediate_send_meth, METH_O, NULL},
    {"throw", (PyCFunction)(void (*)(void))immediate_throw, METH_FASTCALL, NULL},
    {"close", immediate_close, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject Immediate_Type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "hother.cancelable._engine._Immediate",
    .tp_basicsize = sizeof(Immediate),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "An awaitable that completes immediately with a value.",
    .tp_dealloc = (destructor)immediate_dealloc,
    .tp_as_async = &immediate_as_async,
    .tp_iter = PyObject_SelfIter,
    .tp_iternext = immediate_next,
    .tp_methods = immediate_methods,
};

/* ------------------------------------------------------------------------- */
/* CancellableCore                                                            */

/* Layout (memory per live operation is a target, see docs/performance.md):
 *  - Core embeds the asyncio cancel scope (Scope s): on the asyncio fast path the operation
 *    and its scope are one object, and the scope's spare bytes hold Core's flags;
 *  - everything a plain `async with Cancellable.with_timeout(t)` does not use lives in
 *    CoreX, allocated on first use (s.x points to it; its first member is the scope's ScopeX).
 */
typedef struct {
    ScopeX sx; /* first: the embedded scope's rare fields */
    PyObject *id, *name, *metadata, *ctx, *status_obj;
    PyObject *cancel_reason, *cancel_message, *error, *partial_result;
    PyObject *token, *backend, *cv_token;
    PyObject *sources, *shields, *external_tokens, *to_link, *linked_to;
    PyObject *progress_cbs, *start_cbs, *complete_cbs, *cancel_cbs, *error_cbs;
    PyObject *children, *parent_ref, *parent_id;
    PyObject *source_reason, *hook_reason, *source_error;
    PyObject *timeout_given; /* a timeout a double cannot give back exactly (a huge int) */
    Py_ssize_t hook;
    double end_time; /* while CF_END_IN_X: an end time set while current_operation is ours */
} CoreX;

typedef struct {
    Scope s;           /* the asyncio fast path's scope (c_fast == 1) */
    double start_time; /* epoch seconds; NAN when unset */
    union {
        double end_time;   /* epoch seconds, NAN when unset (when CF_VARSET is clear) */
        PyObject *prev_op; /* while CF_VARSET: current_operation before the block (a value,
                            * or a contextvars.Token when CF_VAR_TOKEN), a strong reference */
    } u;
    double timeout; /* with_timeout seconds (INFINITY: none); CF_TIMEOUT_INT: given as int */
} Core;
static void trio_release(Core *c);
static int trio_cancel(Core *c);
static PyObject *trio_scope_of(Core *c);
/* the backend's scope object (slow path and trio fast path): the embedded scope's alt slot */
#define BSCOPE(c) ((c)->s.alt)

/* Core flags in the scope's spare bytes */
#define c_entered(c) ((c)->s.c_entered)
#define c_fast(c) ((c)->s.c_fast) /* 0 slow path, 1 asyncio (embedded scope), 2 trio */
enum {
    CF_VARSET = 1,       /* current_operation was set by the fast enter */
    CF_VAR_TOKEN = 2,    /* prev_op is a contextvars.Token */
    CF_FAST_TIMEOUT = 4, /* timeout is still the fast timeout (no TimeoutSource yet) */
    CF_END_IN_X = 8,     /* the end time is in CoreX (set while CF_VARSET) */
    CF_TIMEOUT_INT = 16, /* the timeout was given as an int */
    CF_TRIO_DL = 32,     /* trio: the deadline is in the run's TrioDeadlines heap */
    CF_TIMED_OUT = 64,   /* trio: TrioDeadlines cancelled the scope at the deadline */
};
/* status: an index into status_objs, or ST_OTHER (CoreX.status_obj) */
enum { ST_PENDING, ST_RUNNING, ST_COMPLETED, ST_CANCELLED, ST_FAILED, ST_OTHER };
/* trio fast path: the run's TrioToken (late token hooks run there) is kept in the unused
 * host slot of the never-entered embedded scope, which owns and releases it like a host */
#define TRIO_EXECUTOR(c) SCOPE_HOST(&(c)->s)
#define CX(c) ((CoreX *)(c)->s.x)
/* a rare field, or NULL */
#define XF(c, f) ((c)->s.x != NULL ? CX(c)->f : NULL)

static PyTypeObject Core_Type;

/* Python objects the core needs, handed over by core/cancellable.py at import. */
static PyObject *st_pending, *st_running, *st_completed, *st_cancelled, *st_failed;
static PyObject *rs_timeout, *rs_manual;
static PyObject *LinkedTokenClass, *TimeoutSourceClass, *CancellationErrorClass, *WeakSetClass;
static PyObject *asyncio_backend;                  /* the cached AsyncioBackend instance */
static PyObject *anyio_backend, *anyio_backend_fn; /* the cached AnyioBackend instance */
/* trio fast path (trio >= 0.27: CancelScope(relative_deadline=...)); looked up on first use */
static PyObject *trio_scope_cls, *trio_cancelled, *trio_current_time, *kw_relative_deadline;
static int trio_fast_state; /* 0 unknown, 1 available, -1 unavailable */
static PyObject *s_enter, *s_exit, *s_cancel_called, *s_deadline;
static PyObject *validate_timeout_fn, *asyncio_backend_fn, *datetime_from_ts, *utc;
static PyObject *debug_enabled_fn;           /* logger.isEnabledFor */
static PyObject *logger_cache, *debug_level; /* logger._cache, int 10 */
static PyObject *current_operation_var;
static PyObject *detection_override, *sniffio_local, *sniffio_cvar;
static PyObject *environ_data, *environ_key; /* os.environ._data, the encoded variable name */
static PyObject *s_aenter_slow, *s_aexit_slow, *s_on_token_cancelled, *s_name_attr, *s_operation_id,
    *s_add, *s_timestamp, *s_log_finished;
static PyObject *timeout_text; /* "Operation timed out" */
static PyObject *closed_text;  /* GeneratorExit message */

#define SET(x) ((x) != NULL && (x) != Py_None)

static int ready(void)
{
    if (st_running == NULL) {
        PyErr_SetString(PyExc_RuntimeError,
                        "hother.cancelable._engine: _set_classes() was not called "
                        "(import hother.cancelable first)");
        return 0;
    }
    return 1;
}

static PyObject *Core_new(PyTypeObject *type, PyObject *Py_UNUSED(a), PyObject *Py_UNUSED(k))
{
    Core *c = (Core *)type->tp_alloc(type, 0);
    if (c == NULL) {
        return NULL;
    }
    scope_init_fields(&c->s, 0, 1);
    c->s.c_status = ST_PENDING;
    c->start_time = NAN;
    c->u.end_time = NAN;
    c->timeout = INFINITY;
    return (PyObject *)c;
}

/* The rare-field block, allocated on first use; NULL with MemoryError. */
static CoreX *cx(Core *c)
{
    return (CoreX *)scope_ext(&c->s);
}

/* Store a new reference in a rare field (allocating the block). 0 or -1. */
static int set_x(Core *c, size_t off, PyObject *value)
{
    if (value == NULL && c->s.x == NULL) {
        return 0;
    }
    CoreX *x = cx(c);
    if (x == NULL) {
        Py_XDECREF(value);
        return -1;
    }
    PyObject **slot = (PyObject **)((char *)x + off);
    Py_XSETREF(*slot, value);
    return 0;
}
#define SETX(c, f, v) set_x((c), offsetof(CoreX, f), (v))

static PyObject *status_obj(Core *c)
{
    switch (c->s.c_status) {
    case ST_PENDING:
        return st_pending;
    case ST_RUNNING:
        return st_running;
    case ST_COMPLETED:
        return st_completed;
    case ST_CANCELLED:
        return st_cancelled;
    case ST_FAILED:
        return st_failed;
    default:
        return XF(c, status_obj);
    }
}

static void set_status_idx(Core *c, int idx)
{
    c->s.c_status = (unsigned char)idx;
    if (c->s.x != NULL) {
        Py_CLEAR(CX(c)->status_obj);
    }
}

static int check_opt_str(PyObject *v, const char *what)
{
    if (v != NULL && v != Py_None && !PyUnicode_Check(v)) {
        PyErr_Format(PyExc_TypeError, "%s must be a str or None, not %.100s", what,
                     Py_TYPE(v)->tp_name);
        return -1;
    }
    return 0;
}

static PyObject *core_operation_id(Core *c)
{
    return PyObject_GetAttr((PyObject *)c, s_operation_id);
}

static int Core_init(Core *c, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"operation_id",      "name", "parent", "metadata",
                             "register_globally", NULL};
    PyObject *op_id = NULL, *name = NULL, *parent = NULL, *metadata = NULL, *reg = NULL;
    if (PyTuple_GET_SIZE(args) == 0 && (kwds == NULL || PyDict_GET_SIZE(kwds) == 0)) {
        return ready() ? 0 : -1; /* Cancellable(): nothing to parse */
    }
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|OOOOO:Cancellable", kwlist, &op_id, &name,
                                     &parent, &metadata, &reg)) {
        return -1;
    }
    if (!ready()) {
        return -1;
    }
    if (check_opt_str(op_id, "operation_id") < 0 || check_opt_str(name, "name") < 0) {
        return -1;
    }
    if (parent != NULL && parent != Py_None && !PyObject_TypeCheck(parent, &Core_Type)) {
        PyErr_Format(PyExc_TypeError, "parent must be a Cancellable or None, not %.100s",
                     Py_TYPE(parent)->tp_name);
        return -1;
    }
    if (metadata != NULL && metadata != Py_None && !PyDict_Check(metadata)) {
        PyErr_Format(PyExc_TypeError, "metadata must be a dict or None, not %.100s",
                     Py_TYPE(metadata)->tp_name);
        return -1;
    }
    if (reg != NULL && !PyBool_Check(reg)) {
        PyErr_Format(PyExc_TypeError, "register_globally must be a bool, not %.100s",
                     Py_TYPE(reg)->tp_name);
        return -1;
    }
    if (SET(op_id)) {
        Py_INCREF(op_id);
        if (SETX(c, id, op_id) < 0) {
            return -1;
        }
    }
    if (SET(name)) {
        Py_INCREF(name);
        if (SETX(c, name, name) < 0) {
            return -1;
        }
    }
    if (SET(metadata)) {
        Py_INCREF(metadata);
        if (SETX(c, metadata, metadata) < 0) {
            return -1;
        }
    }
    c->s.c_register_globally = reg == Py_True;
    if (SET(parent)) {
        Core *p = (Core *)parent;
        PyObject *ref = PyWeakref_NewRef(parent, NULL);
        if (ref == NULL || SETX(c, parent_ref, ref) < 0) {
            return -1;
        }
        PyObject *pid = core_operation_id(p);
        if (pid == NULL || SETX(c, parent_id, pid) < 0) {
            return -1;
        }
        if (!SET(XF(p, children))) {
            PyObject *ws = PyObject_CallNoArgs(WeakSetClass);
            if (ws == NULL || SETX(p, children, ws) < 0) {
                return -1;
            }
        }
        PyObject *r = PyObject_CallMethodOneArg(CX(p)->children, s_add, (PyObject *)c);
        if (r == NULL) {
            return -1;
        }
        Py_DECREF(r);
    }
    return 0;
}

#define CORE_X_FIELDS(F)                                                                           \
    F(id)                                                                                          \
    F(name)                                                                                        \
    F(metadata)                                                                                    \
    F(ctx)                                                                                         \
    F(status_obj)                                                                                  \
    F(cancel_reason)                                                                               \
    F(cancel_message)                                                                              \
    F(error)                                                                                       \
    F(partial_result)                                                                              \
    F(token)                                                                                       \
    F(backend)                                                                                     \
    F(cv_token)                                                                                    \
    F(sources)                                                                                     \
    F(shields)                                                                                     \
    F(external_tokens)                                                                             \
    F(to_link)                                                                                     \
    F(linked_to)                                                                                   \
    F(progress_cbs)                                                                                \
    F(start_cbs)                                                                                   \
    F(complete_cbs)                                                                                \
    F(cancel_cbs)                                                                                  \
    F(error_cbs)                                                                                   \
    F(children)                                                                                    \
    F(parent_ref)                                                                                  \
    F(parent_id)                                                                                   \
    F(source_reason)                                                                               \
    F(hook_reason)                                                                                 \
    F(source_error)                                                                                \
    F(timeout_given)

static int Core_traverse(Core *c, visitproc visit, void *arg)
{
    if (scope_traverse_fields(&c->s, visit, arg) < 0) {
        return -1;
    }
    if (c_fast(c) == 2) {
        Py_VISIT(c->s.trio_task);
        Py_VISIT(c->s.trio_parent);
    }
    if (c->s.c_flags & CF_VARSET) {
        Py_VISIT(c->u.prev_op);
    }
    CoreX *x = CX(c);
    if (x != NULL) {
#define VISIT_X(f) Py_VISIT(x->f);
        CORE_X_FIELDS(VISIT_X)
#undef VISIT_X
    }
    return 0;
}

static int Core_clear(Core *c)
{
    trio_release(c);
    scope_clear_fields(&c->s);
    if (c->s.c_flags & CF_VARSET) {
        Py_CLEAR(c->u.prev_op);
        c->s.c_flags &= ~CF_VARSET;
        c->u.end_time = NAN;
    }
    CoreX *x = CX(c);
    if (x != NULL) {
#define CLEAR_X(f) Py_CLEAR(x->f);
        CORE_X_FIELDS(CLEAR_X)
#undef CLEAR_X
    }
    return 0;
}

static void Core_dealloc(Core *c)
{
    /* a heap subclass's subtype_dealloc releases the type itself */
    PyObject_GC_UnTrack(c);
    if (c->s.weakreflist != NULL) {
        PyObject_ClearWeakRefs((PyObject *)c);
    }
    Core_clear(c);
    scope_dealloc_fields(&c->s); /* weakrefs, the scope's fields, the rare block */
    Py_TYPE(c)->tp_free((PyObject *)c);
}

/* --- timeout parsing (same rules as sources.timeout.validate_timeout) --- */
static int parse_timeout(PyObject *timeout, double *out, PyObject **as_given)
{
    double d;
    if (PyFloat_CheckExact(timeout)) {
        d = PyFloat_AS_DOUBLE(timeout);
    } else if (PyLong_CheckExact(timeout)) {
        d = PyLong_AsDouble(timeout);
        if (d == -1.0 && PyErr_Occurred()) {
            if (!PyErr_ExceptionMatches(PyExc_OverflowError)) {
                return -1;
            }
            PyErr_Clear();
            if (_PyLong_Sign(timeout) < 0) {
                PyErr_Format(PyExc_ValueError, "timeout must be > 0 seconds, got %R", timeout);
                return -1;
            }
            d = INFINITY; /* an integer too large for a float: never fires */
        }
    } else {
        /* timedelta, subclasses, bad types: the Python validator decides (and words the error) */
        PyObject *r = PyObject_CallOneArg(validate_timeout_fn, timeout);
        if (r == NULL) {
            return -1;
        }
        d = PyFloat_AsDouble(r);
        if (d == -1.0 && PyErr_Occurred()) {
            Py_DECREF(r);
            return -1;
        }
        *out = d;
        *as_given = r; /* the float seconds */
        return 0;
    }
    if (isnan(d)) {
        PyErr_SetString(PyExc_ValueError, "timeout must be a positive number of seconds, got NaN");
        return -1;
    }
    if (d <= 0) {
        PyErr_Format(PyExc_ValueError, "timeout must be > 0 seconds, got %R", timeout);
        return -1;
    }
    *out = d;
    Py_INCREF(timeout);
    *as_given = timeout;
    return 0;
}

static PyObject *Core_with_timeout(PyObject *cls, PyObject *const *args, Py_ssize_t nargs,
                                   PyObject *kwnames)
{
    if (!ready()) {
        return NULL;
    }
    PyObject *timeout = NULL, *op_id = Py_None, *name = Py_None;
    Py_ssize_t nkw = kwnames != NULL ? PyTuple_GET_SIZE(kwnames) : 0;
    if (nargs < 1 || nargs > 3) {
        if (nargs == 0 && nkw > 0) {
            /* timeout given as a keyword: handled below */
        } else {
            PyErr_SetString(PyExc_TypeError,
                            "with_timeout(timeout, operation_id=None, name=None, **kwargs)");
            return NULL;
        }
    }
    if (nargs >= 1) {
        timeout = args[0];
    }
    if (nargs >= 2) {
        op_id = args[1];
    }
    if (nargs >= 3) {
        name = args[2];
    }
    PyObject *extra = NULL; /* other keywords, forwarded to the constructor */
    for (Py_ssize_t i = 0; i < nkw; i++) {
        PyObject *k = PyTuple_GET_ITEM(kwnames, i);
        PyObject *v = args[nargs + i];
        if (PyUnicode_CompareWithASCIIString(k, "timeout") == 0 && timeout == NULL) {
            timeout = v;
        } else if (PyUnicode_CompareWithASCIIString(k, "operation_id") == 0) {
            op_id = v;
        } else if (PyUnicode_CompareWithASCIIString(k, "name") == 0) {
            name = v;
        } else {
            if (extra == NULL && (extra = PyDict_New()) == NULL) {
                return NULL;
            }
            if (PyDict_SetItem(extra, k, v) < 0) {
                Py_DECREF(extra);
                return NULL;
            }
        }
    }
    if (timeout == NULL) {
        Py_XDECREF(extra);
        PyErr_SetString(PyExc_TypeError, "with_timeout() missing required argument 'timeout'");
        return NULL;
    }
    double seconds;
    PyObject *given = NULL;
    if (parse_timeout(timeout, &seconds, &given) < 0) {
        Py_XDECREF(extra);
        return NULL;
    }
    if (check_opt_str(op_id, "operation_id") < 0 || check_opt_str(name, "name") < 0) {
        Py_XDECREF(extra);
        Py_DECREF(given);
        return NULL;
    }
    PyObject *obj;
    PyTypeObject *tp = (PyTypeObject *)cls;
    if (extra == NULL && tp->tp_init == (initproc)Core_init) {
        obj = tp->tp_new(tp, NULL, NULL);
        if (obj != NULL) {
            Core *c = (Core *)obj;
            if (op_id != Py_None) {
                Py_INCREF(op_id);
                if (SETX(c, id, op_id) < 0) {
                    Py_CLEAR(obj);
                }
            }
            if (obj != NULL && name != Py_None) {
                Py_INCREF(name);
                if (SETX(c, name, name) < 0) {
                    Py_CLEAR(obj);
                }
            }
        }
    } else {
        if (extra == NULL && (extra = PyDict_New()) == NULL) {
            Py_DECREF(given);
            return NULL;
        }
        if (PyDict_SetItemString(extra, "operation_id", op_id) < 0 ||
            PyDict_SetItemString(extra, "name", name) < 0) {
            Py_DECREF(extra);
            Py_DECREF(given);
            return NULL;
        }
        PyObject *empty = PyTuple_New(0);
        obj = empty != NULL ? PyObject_Call(cls, empty, extra) : NULL;
        Py_XDECREF(empty);
    }
    Py_XDECREF(extra);
    if (obj == NULL) {
        Py_DECREF(given);
        return NULL;
    }
    if (!PyObject_TypeCheck(obj, &Core_Type)) {
        Py_DECREF(given);
        Py_DECREF(obj);
        PyErr_SetString(PyExc_TypeError, "with_timeout(): cls must build a Cancellable");
        return NULL;
    }
    Core *c = (Core *)obj;
    c->timeout = seconds;
    c->s.c_flags |= CF_FAST_TIMEOUT;
    if (PyLong_Check(given)) {
        c->s.c_flags |= CF_TIMEOUT_INT;
        if (!(fabs(seconds) <= 9007199254740992.0)) { /* not exact as a double */
            Py_INCREF(given);
            if (SETX(c, timeout_given, given) < 0) {
                Py_DECREF(given);
                Py_DECREF(obj);
                return NULL;
            }
        }
    }
    Py_DECREF(given);
    c->s.c_timeout_name = !SET(XF(c, name));
    return obj;
}

/* --- backend check: which fast path may serve the caller? --- */
enum { MODE_OTHER = 0, MODE_ASYNCIO = 1, MODE_TRIO = 2 };

/* The trio fast path cannot be used (the error is cleared): for good when trio lacks what it
 * needs; a MemoryError is transient, and the next enter checks again. */
static int trio_fast_failed(void)
{
    trio_fast_state = PyErr_ExceptionMatches(PyExc_MemoryError) ? 0 : -1;
    PyErr_Clear();
    return 0;
}

static int trio_fast_ready(void)
{
    if (trio_fast_state != 0) {
        return trio_fast_state > 0;
    }
    PyObject *trio = PyImport_ImportModule("trio");
    if (trio == NULL) {
        return trio_fast_failed();
    }
    Py_XSETREF(trio_scope_cls, PyObject_GetAttrString(trio, "CancelScope"));
    Py_XSETREF(trio_cancelled,
               trio_scope_cls != NULL ? PyObject_GetAttrString(trio, "Cancelled") : NULL);
    Py_XSETREF(trio_current_time,
               trio_cancelled != NULL ? PyObject_GetAttrString(trio, "current_time") : NULL);
    Py_DECREF(trio);
    if (kw_relative_deadline == NULL && trio_current_time != NULL) {
        kw_relative_deadline = Py_BuildValue("(s)", "relative_deadline");
    }
    if (trio_current_time == NULL || kw_relative_deadline == NULL) {
        return trio_fast_failed();
    }
    /* CancelScope(relative_deadline=...) exists from trio 0.27 on */
    PyObject *one = PyFloat_FromDouble(1.0);
    PyObject *probe =
        one != NULL ? PyObject_Vectorcall(trio_scope_cls, &one, 0, kw_relative_deadline) : NULL;
    Py_XDECREF(one);
    if (probe == NULL) {
        return trio_fast_failed();
    }
    Py_DECREF(probe);
    trio_fast_state = 1;
    return 1;
}

/* MODE_ASYNCIO (with *loop_out set), MODE_TRIO, or MODE_OTHER (the Python path decides,
 * and raises the detection errors). Mirrors backends/detection.py. */
static int fast_mode(PyObject **loop_out)
{
    int forced = 0; /* 0: none, 1: asyncio, 2: anyio */
    PyObject *v = NULL;
    if (detection_override == NULL || sniffio_cvar == NULL || sniffio_local == NULL ||
        environ_data == NULL) {
        return MODE_OTHER;
    }
    if (PyContextVar_Get(detection_override, Py_None, &v) < 0) {
        PyErr_Clear();
        return MODE_OTHER;
    }
    if (v != Py_None) {
        int ok = PyUnicode_Check(v);
        if (ok && PyUnicode_CompareWithASCIIString(v, "asyncio") == 0) {
            forced = 1;
        } else if (ok && PyUnicode_CompareWithASCIIString(v, "anyio") == 0) {
            forced = 2;
        } else {
            Py_DECREF(v);
            return MODE_OTHER;
        }
    } else {
        /* os.environ's own mapping, as detection.py reads it (getenv() would scan every
         * variable of the environment on each enter) */
        PyObject *env = PyDict_GetItemWithError(environ_data, environ_key); /* borrowed */
        if (env == NULL && PyErr_Occurred()) {
            PyErr_Clear();
            Py_DECREF(v);
            return MODE_OTHER;
        }
        const char *text = env == NULL                 ? ""
                           : PyBytes_CheckExact(env)   ? PyBytes_AS_STRING(env)
                           : PyUnicode_CheckExact(env) ? PyUnicode_AsUTF8(env)
                                                       : NULL;
        if (text == NULL) {
            PyErr_Clear();
            Py_DECREF(v);
            return MODE_OTHER; /* detection decides */
        }
        if (text[0] != '\0') {
            if (strcmp(text, "asyncio") == 0) {
                forced = 1;
            } else if (strcmp(text, "anyio") == 0) {
                forced = 2;
            } else {
                Py_DECREF(v);
                return MODE_OTHER; /* invalid value: detection raises */
            }
        }
    }
    Py_DECREF(v);
    if (PyContextVar_Get(sniffio_cvar, Py_None, &v) < 0) {
        PyErr_Clear();
        return MODE_OTHER;
    }
    int other = v != Py_None;
    Py_DECREF(v);
    if (other) {
        return MODE_OTHER;
    }
    v = PyObject_GetAttr(sniffio_local, s_name_attr);
    if (v == NULL) {
        PyErr_Clear();
        return MODE_OTHER;
    }
    if (v != Py_None) {
        int is_trio = PyUnicode_Check(v) && PyUnicode_CompareWithASCIIString(v, "trio") == 0;
        Py_DECREF(v);
        if (is_trio && forced != 1 && trio_fast_ready()) {
            return MODE_TRIO;
        }
        return MODE_OTHER;
    }
    Py_DECREF(v);
    if (forced == 2) {
        return MODE_OTHER; /* the anyio backend forced on asyncio */
    }
    PyObject *loop = engine_running_loop();
    if (loop == NULL) {
        return MODE_OTHER;
    }
    *loop_out = loop;
    return MODE_ASYNCIO;
}

static int fast_enter_ok(Core *c)
{
    if (c->s.c_register_globally) {
        return 0;
    }
    CoreX *x = CX(c);
    if (x == NULL) {
        return 1;
    }
    if (SET(x->sources) && (!PyList_Check(x->sources) || PyList_GET_SIZE(x->sources) > 0)) {
        return 0;
    }
    if (SET(x->parent_ref) || SET(x->ctx)) {
        return 0;
    }
#define NONEMPTY(l) (SET(l) && (!PyList_Check(l) || PyList_GET_SIZE(l) > 0))
    if (NONEMPTY(x->to_link) || NONEMPTY(x->start_cbs)) {
        return 0;
    }
    /* with_token: the external tokens must be a list of tokens (linked at enter) */
    if (SET(x->external_tokens) && !PyList_Check(x->external_tokens)) {
        return 0;
    }
    return 1;
}

static int fast_exit_ok(Core *c)
{
    if (!c_fast(c)) {
        return 0;
    }
    CoreX *x = CX(c);
    return x == NULL || (!SET(x->ctx) && !NONEMPTY(x->complete_cbs) && !NONEMPTY(x->cancel_cbs) &&
                         !NONEMPTY(x->error_cbs) && !NONEMPTY(x->shields) &&
                         !SET(x->source_error) && !NONEMPTY(x->sources));
}

/* The fast timeout in seconds (INFINITY: none). */
static double core_timeout(Core *c)
{
    return (c->s.c_flags & CF_FAST_TIMEOUT) ? c->timeout : INFINITY;
}

/* New reference: the with_timeout timeout as it was given (an int or a float). */
static PyObject *timeout_object(Core *c)
{
    PyObject *given = XF(c, timeout_given);
    if (given != NULL) {
        Py_INCREF(given);
        return given;
    }
    if (c->s.c_flags & CF_TIMEOUT_INT) {
        return PyLong_FromDouble(c->timeout);
    }
    return PyFloat_FromDouble(c->timeout);
}

static int add_token_hook(Core *c)
{
    PyObject *fn = PyObject_GetAttr((PyObject *)c, s_on_token_cancelled);
    if (fn == NULL) {
        return -1;
    }
    PyObject *ex = c_fast(c) == 2 ? TRIO_EXECUTOR(c) : NULL;
    PyObject *h = token_add_hook_c(CX(c)->token, fn, ex);
    Py_DECREF(fn);
    if (h == NULL) {
        return -1;
    }
    Py_ssize_t handle = PyLong_AsSsize_t(h);
    Py_DECREF(h);
    if (handle == -1 && PyErr_Occurred()) {
        return -1;
    }
    CX(c)->hook = handle;
    return 0;
}

static void remove_token_hook(Core *c)
{
    CoreX *x = CX(c);
    if (x != NULL && x->hook > 0) {
        if (SET(x->token)) {
            token_remove_hook_c(x->token, x->hook);
        }
        x->hook = 0;
    }
}

static PyObject *get_token(Core *c, void *Py_UNUSED(x));
static PyObject *lazy_list(Core *c, size_t off);

/* Undo the links of the operation's token (link_external, and the Python path's parent and
 * linked operations): it stops following the tokens in _linked_to. Never raises (a bad
 * entry put there by hand is reported). */
static void unlink_external(Core *c)
{
    CoreX *x = CX(c);
    if (x == NULL || !SET(x->linked_to)) {
        return;
    }
    PyObject *held = x->linked_to;
    x->linked_to = NULL;
    PyObject *tok = x->token;
    PyObject *linked = SET(tok) ? PySequence_Fast(held, "_linked_to must be a list") : NULL;
    Py_ssize_t n = linked != NULL ? PySequence_Fast_GET_SIZE(linked) : 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (token_unlink_from_c(tok, PySequence_Fast_GET_ITEM(linked, i)) < 0) {
            engine_report_error("hother.cancelable: unlinking an operation's token");
        }
    }
    if (SET(tok) && linked == NULL) {
        engine_report_error("hother.cancelable: unlinking an operation's token");
    }
    Py_XDECREF(linked);
    Py_DECREF(held);
}

/* with_token: the operation's own token (created now) follows each external token, keeping
 * its reason, as the Python path did; the tokens linked are recorded in _linked_to for
 * unlink_external. 0, or -1 with an exception and every link of the token undone. */
static int link_external(Core *c)
{
    CoreX *x = CX(c);
    if (x == NULL || !SET(x->external_tokens) ||
        (PyList_Check(x->external_tokens) && PyList_GET_SIZE(x->external_tokens) == 0)) {
        return 0;
    }
    PyObject *ext = PySequence_List(x->external_tokens); /* a snapshot */
    PyObject *tok = ext != NULL ? get_token(c, NULL) : NULL;
    PyObject *linked = tok != NULL ? lazy_list(c, offsetof(CoreX, linked_to)) : NULL;
    int rc = linked != NULL ? 0 : -1;
    for (Py_ssize_t i = 0; rc == 0 && i < PyList_GET_SIZE(ext); i++) {
        PyObject *src = PyList_GET_ITEM(ext, i);
        rc = token_link_from_c(tok, src, 1);
        if (rc == 0 && PyList_Append(linked, src) < 0) {
            (void)token_unlink_from_c(tok, src); /* linked, not recorded; cannot fail now */
            rc = -1;
        }
    }
    Py_XDECREF(linked);
    Py_XDECREF(tok);
    Py_XDECREF(ext);
    if (rc < 0) {
        PyObject *et, *ev, *etb;
        PyErr_Fetch(&et, &ev, &etb);
        unlink_external(c);
        PyErr_Restore(et, ev, etb);
    }
    return rc;
}

static PyObject *get_sources(Core *c, void *Py_UNUSED(x));

/* The Python enter (any backend, every feature); the fast timeout becomes a source. */
static PyObject *enter_slow(Core *c)
{
    if (c->s.c_flags & CF_FAST_TIMEOUT) {
        PyObject *l = get_sources(c, NULL);
        if (l == NULL) {
            return NULL;
        }
        Py_DECREF(l);
    }
    c_entered(c) = 1;
    return PyObject_CallMethodNoArgs((PyObject *)c, s_aenter_slow);
}

/* Make c the current operation; the previous value is kept in prev_op. `keep_token`: keep the
 * contextvars.Token (reset at exit, cheaper) rather than the previous value (smaller). */
static int set_current(Core *c, int keep_token)
{
    PyObject *prev = NULL;
    if (!keep_token && PyContextVar_Get(current_operation_var, NULL, &prev) < 0) {
        return -1;
    }
    PyObject *tok = PyContextVar_Set(current_operation_var, (PyObject *)c);
    if (tok == NULL) {
        Py_XDECREF(prev);
        return -1;
    }
    if (keep_token) {
        prev = tok;
        c->s.c_flags |= CF_VAR_TOKEN;
    } else {
        Py_DECREF(tok);
        c->s.c_flags &= ~CF_VAR_TOKEN;
    }
    if (c->s.c_flags & CF_VARSET) {
        Py_XSETREF(c->u.prev_op, prev);
    } else {
        c->u.prev_op = prev; /* replaces the (unset) end time */
        c->s.c_flags |= CF_VARSET;
    }
    return 0;
}

/* Undo set_current (never raises). */
static void restore_current(Core *c)
{
    if (!(c->s.c_flags & CF_VARSET)) {
        return;
    }
    PyObject *prev = c->u.prev_op;
    c->s.c_flags &= ~CF_VARSET;
    c->u.end_time = NAN;
    if (c->s.c_flags & CF_END_IN_X) {
        c->u.end_time = CX(c)->end_time;
        c->s.c_flags &= ~CF_END_IN_X;
    }
    int ok = 0;
    if (prev != NULL && (c->s.c_flags & CF_VAR_TOKEN)) {
        ok = PyContextVar_Reset(current_operation_var, prev) == 0;
    } else if (prev != NULL) {
        PyObject *t = PyContextVar_Set(current_operation_var, prev);
        ok = t != NULL;
        Py_XDECREF(t);
    }
    if (!ok) {
        PyErr_Clear();
        PyObject *t = PyContextVar_Set(current_operation_var, Py_None);
        if (t == NULL) {
            PyErr_Clear();
        }
        Py_XDECREF(t);
    }
    Py_XDECREF(prev);
}

/* trio: the clock of the current run, when it is trio's SystemClock: deadline = offset +
 * perf_counter(), computed here instead of by trio.current_time() (two Python calls). What
 * a run gives (its TrioToken, its clock offset) is cached for the last run seen, keyed by a
 * weak reference to the run's Runner. */
static PyObject *trio_run_ctx, *trio_system_clock, *perf_counter_fn;
static PyObject *s_runner, *s_clock, *s_offset, *s_trio_token, *kw_deadline;
static int trio_clock_state; /* 0 unknown, 1 usable, -1 not */
static PyObject *run_ref;    /* weakref to the Runner the cache below belongs to */
static PyObject *run_token;  /* its TrioToken (strong), or NULL */
static double run_offset;    /* its SystemClock offset, NAN when the clock is another one */
static PyObject *run_dl;     /* its TrioDeadlines (strong), Py_None: unavailable, NULL: none yet */
static PyObject *trio_dl_start, *trio_run_state; /* from _set_classes (optional) */
/* the lazy trio scope (from _set_classes, optional): see trio_scope_of */
static PyObject *trio_attach_fn, *trio_lazy_check_fn, *s_task, *s_cancel_status;
static int trio_lazy_state; /* 0 unknown, 1 usable, -1 not, -2 turned off (_set_trio_lazy) */

/* ------------------------------------------------------------------------- */
/* TrioDeadlines: the deadlines of with_timeout operations of one trio run.
 *
 * Giving trio.CancelScope a deadline costs it about 1 us per block (its deadline registry
 * runs Python code at enter and at exit). Instead, the fast path enters a scope without a
 * deadline and keeps the deadline here: a heap of the operations (their embedded scope's
 * node; one strong reference per entry), served by one system task per run
 * (core/cancellable.py: _trio_deadline_service) that sleeps in a scope whose deadline is the
 * earliest one and cancels the operations whose deadline passed. Adding a later deadline
 * or removing one is a heap operation in C; only an earlier deadline moves the service's
 * scope deadline (a trio call). */
typedef struct {
    PyObject_HEAD cc_heap heap;
    PyObject *waker; /* the service's current trio.CancelScope, or NULL */
    double armed;    /* the waker's deadline (INFINITY: none) */
    int closed;
} TrioDeadlines;

static PyTypeObject TrioDeadlines_Type;
static PyObject *trio_run_info(double *deadline);

static void dl_drain(TrioDeadlines *d)
{
    cc_heap_node *n;
    while ((n = cc_heap_pop(&d->heap)) != NULL) {
        Scope *sc = (Scope *)((char *)n - offsetof(Scope, node));
        sc->c_flags &= ~CF_TRIO_DL;
        Py_DECREF(sc);
    }
}

static void dl_dealloc(TrioDeadlines *d)
{
    PyObject_GC_UnTrack(d);
    dl_drain(d);
    cc_heap_free(&d->heap);
    Py_CLEAR(d->waker);
    PyObject_GC_Del(d);
}

static int dl_traverse(TrioDeadlines *d, visitproc visit, void *arg)
{
    Py_VISIT(d->waker);
    return 0;
}

static int dl_clear(TrioDeadlines *d)
{
    Py_CLEAR(d->waker);
    return 0;
}

static PyObject *dl_next(TrioDeadlines *d, PyObject *Py_UNUSED(a))
{
    cc_heap_node *n = cc_heap_peek(&d->heap);
    return PyFloat_FromDouble(n != NULL ? n->deadline : INFINITY);
}

static PyObject *dl_set_waker(TrioDeadlines *d, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "_set_waker(scope, deadline)");
        return NULL;
    }
    double when = PyFloat_AsDouble(args[1]);
    if (when == -1.0 && PyErr_Occurred()) {
        return NULL;
    }
    PyObject *w = args[0] == Py_None ? NULL : args[0];
    Py_XINCREF(w);
    Py_XSETREF(d->waker, w);
    d->armed = w != NULL ? when : INFINITY;
    Py_RETURN_NONE;
}

/* Cancel the operations whose deadline is <= now (trio time). Never raises. */
static PyObject *dl_fire(TrioDeadlines *d, PyObject *arg)
{
    double now = PyFloat_AsDouble(arg);
    if (now == -1.0 && PyErr_Occurred()) {
        return NULL;
    }
    cc_heap_node *n;
    while ((n = cc_heap_peek(&d->heap)) != NULL && n->deadline <= now) {
        cc_heap_pop(&d->heap);
        Core *c = (Core *)((char *)n - offsetof(Scope, node));
        c->s.c_flags &= ~CF_TRIO_DL;
        if (c->s.c_entered && (c->s.c_flags & CF_VARSET) &&
            (BSCOPE(c) != NULL || c->s.trio_task != NULL)) {
            c->s.c_flags |= CF_TIMED_OUT;
            if (trio_cancel(c) < 0) {
                engine_report_error("hother.cancelable: cancelling a trio scope at its deadline");
            }
        }
        Py_DECREF(c);
    }
    Py_RETURN_NONE;
}

static PyObject *dl_close(TrioDeadlines *d, PyObject *Py_UNUSED(a))
{
    d->closed = 1;
    Py_CLEAR(d->waker);
    d->armed = INFINITY;
    dl_drain(d);
    Py_RETURN_NONE;
}

static PyObject *dl_len(TrioDeadlines *d, PyObject *Py_UNUSED(a))
{
    return PyLong_FromSize_t(cc_heap_len(&d->heap));
}

static PyMethodDef dl_methods[] = {
    {"_next", (PyCFunction)dl_next, METH_NOARGS, "The earliest deadline (math.inf: none)."},
    {"_set_waker", (PyCFunction)(void (*)(void))dl_set_waker, METH_FASTCALL,
     "_set_waker(scope, deadline): the service's scope (None: not sleeping)."},
    {"_fire", (PyCFunction)dl_fire, METH_O, "_fire(now): cancel what is due."},
    {"_close", (PyCFunction)dl_close, METH_NOARGS, "Release every entry (end of the run)."},
    {"_len", (PyCFunction)dl_len, METH_NOARGS, "Number of pending deadlines."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject TrioDeadlines_Type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "hother.cancelable._engine.TrioDeadlines",
    .tp_basicsize = sizeof(TrioDeadlines),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "The with_timeout deadlines of one trio run (served by one system task).",
    .tp_dealloc = (destructor)dl_dealloc,
    .tp_traverse = (traverseproc)dl_traverse,
    .tp_clear = (inquiry)dl_clear,
    .tp_methods = dl_methods,
};

/* The TrioDeadlines of the cached run (borrowed), started on first use; NULL when the run
 * cannot have one (no service: the caller gives trio the deadline itself). Never raises. */
static TrioDeadlines *trio_run_deadlines(void)
{
    if (run_dl == Py_None) {
        return NULL;
    }
    if (run_dl != NULL) {
        TrioDeadlines *d = (TrioDeadlines *)run_dl;
        return d->closed ? NULL : d;
    }
    PyObject *runner = run_ref != NULL ? PyWeakref_GET_OBJECT(run_ref) : Py_None;
    if (trio_dl_start == NULL || runner == Py_None) {
        Py_INCREF(Py_None);
        run_dl = Py_None;
        return NULL;
    }
    TrioDeadlines *d = PyObject_GC_New(TrioDeadlines, &TrioDeadlines_Type);
    if (d == NULL) {
        PyErr_Clear();
        return NULL;
    }
    cc_heap_init(&d->heap);
    d->waker = NULL;
    d->armed = INFINITY;
    d->closed = 0;
    PyObject_GC_Track(d);
    Py_INCREF(runner);
    PyObject *r = PyObject_CallFunctionObjArgs(trio_dl_start, (PyObject *)d, runner, NULL);
    Py_DECREF(runner);
    if (r == NULL) {
        /* no system task for this run (it is ending, say): trio keeps the deadlines */
        engine_report_error("hother.cancelable: starting the trio deadline service");
        Py_DECREF(d);
        Py_INCREF(Py_None);
        run_dl = Py_None;
        return NULL;
    }
    Py_DECREF(r);
    run_dl = (PyObject *)d;
    return d;
}

/* Put c's deadline in d (a strong reference); move the service's wake-up earlier if needed.
 * 0, or -1 with an exception (c not added). */
static int dl_push(TrioDeadlines *d, Core *c, double deadline)
{
    if (cc_heap_push(&d->heap, &c->s.node, deadline) < 0) {
        PyErr_NoMemory();
        return -1;
    }
    Py_INCREF(c);
    c->s.c_flags |= CF_TRIO_DL;
    if (deadline < d->armed && d->waker != NULL) {
        PyObject *when = PyFloat_FromDouble(deadline);
        int rc = when != NULL ? PyObject_SetAttr(d->waker, s_deadline, when) : -1;
        Py_XDECREF(when);
        if (rc < 0) {
            cc_heap_remove(&d->heap, &c->s.node);
            c->s.c_flags &= ~CF_TRIO_DL;
            Py_DECREF(c);
            return -1;
        }
        d->armed = deadline;
    }
    return 0;
}

/* Take c's deadline out of the run's heap (at exit). Never raises. */
static void dl_remove(Core *c)
{
    if (!(c->s.c_flags & CF_TRIO_DL)) {
        return;
    }
    for (int attempt = 0; attempt < 2; attempt++) {
        if (run_dl != NULL && run_dl != Py_None) {
            /* a no-op unless the node is in this very heap */
            cc_heap_remove(&((TrioDeadlines *)run_dl)->heap, &c->s.node);
            if (!cc_heap_contains(&c->s.node)) {
                c->s.c_flags &= ~CF_TRIO_DL;
                Py_DECREF(c); /* the caller holds c */
                return;
            }
        }
        if (attempt == 0) {
            double unused = INFINITY;
            PyObject *tok = trio_run_info(&unused); /* the cache was another run's: refresh */
            Py_XDECREF(tok);
        }
    }
    /* not in the current run's heap (a block left in another run cannot happen): the entry
     * goes when its deadline fires or when its run ends */
}

static int trio_clock_init(void)
{
    trio_clock_state = -1;
    PyObject *run = PyImport_ImportModule("trio._core._run");
    PyObject *time_mod = run != NULL ? PyImport_ImportModule("time") : NULL;
    if (time_mod != NULL) {
        trio_run_ctx = PyObject_GetAttrString(run, "GLOBAL_RUN_CONTEXT");
        trio_system_clock = PyObject_GetAttrString(run, "SystemClock");
        perf_counter_fn = PyObject_GetAttrString(time_mod, "perf_counter");
    }
    Py_XDECREF(run);
    Py_XDECREF(time_mod);
    s_runner = PyUnicode_InternFromString("runner");
    s_clock = PyUnicode_InternFromString("clock");
    s_offset = PyUnicode_InternFromString("offset");
    s_trio_token = PyUnicode_InternFromString("trio_token");
    kw_deadline = Py_BuildValue("(s)", "deadline");
    if (trio_run_ctx != NULL && trio_system_clock != NULL && perf_counter_fn != NULL &&
        s_runner != NULL && s_clock != NULL && s_offset != NULL && s_trio_token != NULL &&
        kw_deadline != NULL) {
        trio_clock_state = 1;
    }
    PyErr_Clear();
    return trio_clock_state;
}

/* Fill the cache from `runner` (errors cleared: a field that cannot be read is not cached). */
static void trio_run_cache(PyObject *runner)
{
    PyObject *ref = PyWeakref_NewRef(runner, NULL);
    if (ref == NULL) {
        PyErr_Clear();
        return;
    }
    PyObject *tok = PyObject_GetAttr(runner, s_trio_token);
    if (tok == Py_None) {
        Py_CLEAR(tok); /* created on first request: not cached until then */
    }
    double offset = NAN;
    PyObject *clock = PyObject_GetAttr(runner, s_clock);
    if (clock != NULL && (PyObject *)Py_TYPE(clock) == trio_system_clock) {
        PyObject *off = PyObject_GetAttr(clock, s_offset);
        if (off != NULL && PyFloat_CheckExact(off)) {
            offset = PyFloat_AS_DOUBLE(off);
        }
        Py_XDECREF(off);
    }
    Py_XDECREF(clock);
    PyErr_Clear();
    PyObject *dl = NULL;
    if (trio_run_state != NULL) {
        dl = PyObject_CallMethod(trio_run_state, "get", "O", runner);
        if (dl == NULL || !PyObject_TypeCheck(dl, &TrioDeadlines_Type)) {
            PyErr_Clear();
            Py_XDECREF(dl);
            dl = NULL;
        }
    }
    Py_XSETREF(run_ref, ref);
    Py_XSETREF(run_token, tok);
    Py_XSETREF(run_dl, dl);
    run_offset = offset;
}

/* perf_counter(): CLOCK_MONOTONIC on Linux (what CPython reads), else the function. */
static double perf_counter_now(void)
{
#ifdef __linux__
    return cc_now_monotonic();
#else
    PyObject *now = PyObject_CallNoArgs(perf_counter_fn);
    double d = now != NULL && PyFloat_CheckExact(now) ? PyFloat_AS_DOUBLE(now) : NAN;
    Py_XDECREF(now);
    PyErr_Clear();
    return d;
#endif
}

/* New reference to the run's TrioToken, or NULL (no error) when it cannot be read fast;
 * *deadline (in/out): relative seconds in, absolute deadline out (NAN: compute it the
 * public way). */
static PyObject *trio_run_info(double *deadline)
{
    double rel = *deadline;
    *deadline = NAN;
    if (trio_clock_state == 0 && trio_clock_init() < 0) {
        return NULL;
    }
    if (trio_clock_state < 0) {
        return NULL;
    }
    PyObject *runner = PyObject_GetAttr(trio_run_ctx, s_runner);
    if (runner == NULL) {
        PyErr_Clear();
        return NULL;
    }
    if (run_ref == NULL || PyWeakref_GET_OBJECT(run_ref) != runner || run_token == NULL) {
        trio_run_cache(runner);
    }
    Py_DECREF(runner);
    if (run_ref == NULL) {
        return NULL;
    }
    if (rel != INFINITY && !isnan(rel) && !isnan(run_offset)) {
        *deadline = run_offset + perf_counter_now() + rel;
    }
    Py_XINCREF(run_token);
    return run_token;
}

/* --- the lazy trio scope ---
 * Entering and exiting trio.CancelScope is most of what a block costs on trio (its Python
 * __init__/__enter__/__exit__, a CancelStatus with two sets, the task moved between
 * statuses). A block that is never cancelled does not need one: the fast path records the
 * task and the task's CancelStatus at enter (trio_task, trio_parent), and a cancel, the
 * deadline, or a request for op.scope makes the scope then (core/cancellable.py:
 * _trio_attach_scope): a trio.CancelScope whose CancelStatus is put between trio_parent
 * and what the block entered since, where entering it eagerly would have put it. From then
 * on it is trio's own scope (its cancel, delivery, exit). An enclosing fast block with the
 * same trio_parent (nothing of trio's lies between them) that got its scope after this block
 * was entered takes this block's scope under its own (trio_outer_scope). */
static int trio_lazy_ok(void)
{
    if (trio_lazy_state != 0) {
        return trio_lazy_state > 0;
    }
    trio_lazy_state = -1;
    if (trio_attach_fn == NULL || trio_lazy_check_fn == NULL || trio_clock_state <= 0) {
        return 0;
    }
    if (s_task == NULL) {
        s_task = PyUnicode_InternFromString("task");
        s_cancel_status = PyUnicode_InternFromString("_cancel_status");
        if (s_task == NULL || s_cancel_status == NULL) {
            PyErr_Clear();
            return 0;
        }
    }
    PyObject *r = PyObject_CallNoArgs(trio_lazy_check_fn);
    int ok = r != NULL && PyObject_IsTrue(r) == 1;
    Py_XDECREF(r);
    PyErr_Clear();
    if (ok) {
        trio_lazy_state = 1;
    }
    return ok;
}

/* Drop what a lazy trio block recorded at enter (its exit, or a failed enter). */
static void trio_release(Core *c)
{
    if (c_fast(c) != 2) {
        return;
    }
    Py_CLEAR(c->s.trio_task);
    Py_CLEAR(c->s.trio_parent);
}

/* New reference: the operation that was current when c was entered (the old value of the
 * contextvars.Token c keeps while it runs) if it is a running lazy trio block of the same
 * task entered at the same trio status, else Py_None. NULL with an exception. */
static PyObject *trio_enclosing(Core *c)
{
    if ((c->s.c_flags & (CF_VARSET | CF_VAR_TOKEN)) != (CF_VARSET | CF_VAR_TOKEN)) {
        Py_RETURN_NONE;
    }
    PyObject *prev = PyObject_GetAttrString(c->u.prev_op, "old_value");
    if (prev == NULL) {
        return NULL;
    }
    if (PyObject_TypeCheck(prev, &Core_Type)) {
        Core *o = (Core *)prev;
        if (c_fast(o) == 2 && o->s.trio_task == c->s.trio_task &&
            o->s.trio_parent == c->s.trio_parent) {
            return prev;
        }
    }
    Py_DECREF(prev);
    Py_RETURN_NONE;
}

/* New reference: the scope of the nearest enclosing block that shares c's trio status and
 * has its scope (made after c was entered; c's scope goes under it), or Py_None. NULL with
 * an exception. */
static PyObject *trio_outer_scope(Core *c)
{
    PyObject *o = trio_enclosing(c);
    while (o != NULL && o != Py_None) {
        if (BSCOPE((Core *)o) != NULL) {
            PyObject *scope = BSCOPE((Core *)o);
            Py_INCREF(scope);
            Py_DECREF(o);
            return scope;
        }
        Py_SETREF(o, trio_enclosing((Core *)o));
    }
    return o;
}

/* The trio scope of a running trio fast-path block (borrowed), made on first need. NULL
 * with an exception (not running; not in the run's thread). */
static PyObject *trio_scope_of(Core *c)
{
    if (BSCOPE(c) != NULL) {
        return BSCOPE(c);
    }
    if (c_fast(c) != 2 || c->s.trio_task == NULL || trio_attach_fn == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "this Cancellable is not running");
        return NULL;
    }
    PyObject *outer = trio_outer_scope(c);
    if (outer == NULL) {
        return NULL;
    }
    PyObject *scope =
        PyObject_CallFunctionObjArgs(trio_attach_fn, c->s.trio_task, c->s.trio_parent, outer, NULL);
    Py_DECREF(outer);
    if (scope == NULL) {
        return NULL;
    }
    Py_XSETREF(BSCOPE(c), scope);
    return scope;
}

/* Cancel the trio scope of c (made if needed). 0, or -1 with an exception. */
static int trio_cancel(Core *c)
{
    PyObject *scope = trio_scope_of(c);
    if (scope == NULL) {
        return -1;
    }
    Py_INCREF(scope); /* trio's cancel runs Python code */
    PyObject *r = PyObject_CallMethodNoArgs(scope, G.s_cancel);
    Py_DECREF(scope);
    Py_XDECREF(r);
    return r == NULL ? -1 : 0;
}

/* Record the task and its CancelStatus for a lazy block (c_fast is 2 already). */
static int trio_lazy_record(Core *c)
{
    PyObject *task = PyObject_GetAttr(trio_run_ctx, s_task);
    if (task == NULL) {
        return -1;
    }
    PyObject *status = PyObject_GetAttr(task, s_cancel_status);
    if (status == NULL) {
        Py_DECREF(task);
        return -1;
    }
    c->s.trio_task = task;
    c->s.trio_parent = status;
    return 0;
}

/* The trio fast path: no anyio in between; the trio scope is made lazily (trio_scope_of)
 * or, when the lazy scope is not available, a trio.CancelScope entered here. */
static PyObject *enter_trio(Core *c)
{
    double timeout = core_timeout(c);
    double deadline = timeout;
    PyObject *ex = trio_run_info(&deadline);
    if (ex == NULL) {
        ex = engine_capture_executor();
        if (ex == NULL) {
            return NULL;
        }
    }
    TrioDeadlines *dl = NULL;
    if (!isnan(deadline) && timeout != INFINITY) {
        dl = trio_run_deadlines();
    }
    /* lazy: unless a deadline must be given to trio (no deadline service for this run) */
    int lazy = (dl != NULL || timeout == INFINITY) && trio_lazy_ok();
    PyObject *scope = NULL;
    if (lazy) {
        c_fast(c) = 2;
        if (trio_lazy_record(c) < 0) {
            Py_DECREF(ex);
            return NULL;
        }
    } else {
        if (dl != NULL) {
            scope = PyObject_CallNoArgs(trio_scope_cls); /* the deadline is kept by dl */
        } else if (!isnan(deadline)) {
            PyObject *d = PyFloat_FromDouble(deadline);
            scope = d != NULL ? PyObject_Vectorcall(trio_scope_cls, &d, 0, kw_deadline) : NULL;
            Py_XDECREF(d);
        } else if (timeout != INFINITY) {
            PyObject *t = PyFloat_FromDouble(timeout);
            scope =
                t != NULL ? PyObject_Vectorcall(trio_scope_cls, &t, 0, kw_relative_deadline) : NULL;
            Py_XDECREF(t);
        } else {
            scope = PyObject_CallNoArgs(trio_scope_cls);
        }
        if (scope == NULL) {
            Py_DECREF(ex);
            return NULL;
        }
        PyObject *r = PyObject_CallMethodNoArgs(scope, s_enter);
        if (r == NULL) {
            Py_DECREF(ex);
            Py_DECREF(scope);
            return NULL;
        }
        Py_DECREF(r);
        c_fast(c) = 2;
        Py_XSETREF(BSCOPE(c), scope);
    }
    c_entered(c) = 1;
    /* the run's TrioToken: a token created later from another thread must still cancel
     * this scope in the trio thread */
    PyObject *old = TRIO_EXECUTOR(c);
    c->s.hnode.key = ex;
    Py_XDECREF(old);
    if (link_external(c) < 0) {
        goto undo;
    }
    if (SET(XF(c, token))) {
        if (add_token_hook(c) < 0) {
            goto undo;
        }
    }
    if (dl != NULL) {
        if (deadline <= run_offset + perf_counter_now()) {
            /* already expired: cancelled at once, as trio's own __enter__ does */
            c->s.c_flags |= CF_TIMED_OUT;
            if (trio_cancel(c) < 0) {
                goto undo;
            }
        } else if (dl_push(dl, c, deadline) < 0) {
            goto undo;
        }
    }
    c->s.c_status = ST_RUNNING;
    c->start_time = cc_now_realtime();
    if (set_current(c, 1) < 0) {
        goto undo;
    }
    return immediate_new((PyObject *)c);
undo : {
    PyObject *et, *ev, *etb;
    PyErr_Fetch(&et, &ev, &etb);
    dl_remove(c);
    remove_token_hook(c);
    unlink_external(c);
    trio_release(c);
    if (BSCOPE(c) != NULL) {
        PyObject *res =
            PyObject_CallMethodObjArgs(BSCOPE(c), s_exit, Py_None, Py_None, Py_None, NULL);
        if (res == NULL) {
            PyErr_Clear();
        }
        Py_XDECREF(res);
    }
    set_status_idx(c, ST_FAILED);
    PyErr_Restore(et, ev, etb);
    return NULL;
}
}

static PyObject *Core_aenter(Core *c, PyObject *Py_UNUSED(a))
{
    if (!ready()) {
        return NULL;
    }
    if (c_entered(c)) {
        PyErr_SetString(PyExc_RuntimeError,
                        "this Cancellable was already entered: a Cancellable runs one block only; "
                        "create a new one for each operation");
        return NULL;
    }
    PyObject *loop = NULL;
    if (!fast_enter_ok(c)) {
        return enter_slow(c);
    }
    int mode = fast_mode(&loop);
    if (mode == MODE_TRIO) {
        return enter_trio(c);
    }
    if (mode != MODE_ASYNCIO) {
        return enter_slow(c);
    }
    PyObject *task = engine_current_task(loop);
    if (task == NULL || task == Py_None) {
        Py_XDECREF(task);
        Py_DECREF(loop);
        PyErr_Clear();
        return enter_slow(c);
    }
    if (asyncio_backend == NULL) {
        asyncio_backend = PyObject_CallNoArgs(asyncio_backend_fn);
        if (asyncio_backend == NULL) {
            goto fail_early;
        }
    }
    if (scope_enter_c((PyObject *)c, loop, task, core_timeout(c)) < 0) {
        goto fail_early;
    }
    c_entered(c) = 1;
    c_fast(c) = 1;
    if (link_external(c) < 0) {
        goto fail_entered;
    }
    if (SET(XF(c, token))) {
        if (add_token_hook(c) < 0) {
            goto fail_entered;
        }
    }
    c->s.c_status = ST_RUNNING;
    c->start_time = cc_now_realtime();
    if (set_current(c, 0) < 0) {
        goto fail_entered;
    }
    Py_DECREF(task);
    Py_DECREF(loop);
    return immediate_new((PyObject *)c);

fail_entered : {
    /* undo: exit the scope we entered */
    PyObject *et, *ev, *etb;
    PyErr_Fetch(&et, &ev, &etb);
    remove_token_hook(c);
    unlink_external(c);
    if (scope_exit_c((PyObject *)c, loop, task, Py_None) < 0) {
        PyErr_Clear();
    }
    set_status_idx(c, ST_FAILED);
    PyErr_Restore(et, ev, etb);
    Py_DECREF(task);
    Py_DECREF(loop);
    return NULL;
}
fail_early:
    Py_XDECREF(task);
    Py_DECREF(loop);
    return NULL;
}

static int set_reason(Core *c, PyObject *reason, PyObject *message)
{
    Py_INCREF(reason);
    if (SETX(c, cancel_reason, reason) < 0) {
        return -1;
    }
    Py_INCREF(message);
    return SETX(c, cancel_message, message);
}

/* cancel_called of a trio scope, and whether its deadline has passed (trio.current_time()). */
static void trio_scope_flags(PyObject *scope, int *called, int *reached)
{
    *called = *reached = 0;
    if (scope == NULL) {
        return; /* a lazy trio block that never needed its scope was not cancelled */
    }
    PyObject *cc = PyObject_GetAttr(scope, s_cancel_called);
    if (cc == NULL) {
        PyErr_Clear();
        return;
    }
    *called = cc == Py_True;
    Py_DECREF(cc);
    if (!*called) {
        return;
    }
    PyObject *dl = PyObject_GetAttr(scope, s_deadline);
    PyObject *now = dl != NULL ? PyObject_CallNoArgs(trio_current_time) : NULL;
    if (dl != NULL && now != NULL) {
        double d = PyFloat_AsDouble(dl), n = PyFloat_AsDouble(now);
        *reached = !PyErr_Occurred() && d != INFINITY && n >= d;
    }
    Py_XDECREF(dl);
    Py_XDECREF(now);
    PyErr_Clear();
}

static PyObject *Core_aexit(Core *c, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "__aexit__ expects 3 arguments");
        return NULL;
    }
    PyObject *exc = args[1];
    if (!c_entered(c) ||
        (c_fast(c) != 1 && !SET(BSCOPE(c)) && !(c_fast(c) == 2 && c->s.trio_task != NULL))) {
        PyErr_SetString(
            PyExc_RuntimeError,
            "this Cancellable is not running: __aexit__ without a successful __aenter__");
        return NULL;
    }
    int simple_exc =
        exc == Py_None || (!PyObject_TypeCheck(exc, (PyTypeObject *)PyExc_BaseExceptionGroup) &&
                           !PyObject_IsInstance(exc, CancellationErrorClass));
    if (PyErr_Occurred()) {
        return NULL;
    }
    if (!fast_exit_ok(c) || !simple_exc) {
        return PyObject_VectorcallMethod(
            s_aexit_slow, (PyObject *[]){(PyObject *)c, args[0], args[1], args[2]}, 4, NULL);
    }
    int rc;
    PyObject *cancel_cls;
    if (c_fast(c) == 2) {
        rc = 0;
        if (BSCOPE(c) == NULL) {
            /* a lazy block: trio has nothing to check; the blocks of this task must still
             * leave in order (an inner one still running is current_operation) */
            PyObject *cur = NULL;
            if (PyContextVar_Get(current_operation_var, NULL, &cur) < 0) {
                rc = -1;
            } else if (cur != (PyObject *)c && (c->s.c_flags & CF_VARSET)) {
                PyErr_SetString(PyExc_RuntimeError,
                                "Cancellable exited out of order: an operation entered "
                                "inside it is still running (exit the innermost scope first)");
                rc = -1;
            }
            Py_XDECREF(cur);
        }
        trio_release(c); /* no trio scope made after this point */
        if (BSCOPE(c) != NULL) {
            PyObject *r = PyObject_VectorcallMethod(
                s_exit, (PyObject *[]){BSCOPE(c), args[0], args[1], args[2]}, 4, NULL);
            rc = r == NULL ? -1 : 0;
            Py_XDECREF(r);
        }
        cancel_cls = trio_cancelled;
        dl_remove(c);
        PyObject *ex = TRIO_EXECUTOR(c);
        c->s.hnode.key = NULL;
        Py_XDECREF(ex);
    } else {
        PyObject *loop = engine_running_loop();
        int closing =
            exc != Py_None && PyObject_TypeCheck(exc, (PyTypeObject *)PyExc_GeneratorExit);
        if (loop == NULL) {
            if (!closing) {
                PyErr_SetString(PyExc_RuntimeError,
                                "Cancellable exited outside the event loop it was entered in");
                return NULL;
            }
            /* the coroutine is closed outside its loop: let GeneratorExit through */
            rc = scope_detach_c((PyObject *)c);
        } else {
            PyObject *task = engine_current_task(loop);
            if (task == NULL) {
                Py_DECREF(loop);
                return NULL;
            }
            if (closing && task == Py_None) {
                rc = scope_detach_c((PyObject *)c);
            } else {
                rc = scope_exit_c((PyObject *)c, loop, task, exc);
            }
            Py_DECREF(task);
            Py_DECREF(loop);
        }
        cancel_cls = G.CancelledError;
    }
    PyObject *scope_err_t = NULL, *scope_err_v = NULL, *scope_err_tb = NULL;
    if (rc < 0) {
        PyErr_Fetch(&scope_err_t, &scope_err_v, &scope_err_tb);
    }
    /* outcome */
    int status;
    PyObject *source_reason = XF(c, source_reason), *hook_reason = XF(c, hook_reason);
    PyObject *token = XF(c, token);
    if (exc == Py_None) {
        status = ST_COMPLETED;
    } else if (PyObject_TypeCheck(exc, (PyTypeObject *)cancel_cls)) {
        status = ST_CANCELLED;
        if (SET(source_reason) && PyTuple_Check(source_reason) &&
            PyTuple_GET_SIZE(source_reason) == 2) {
            set_reason(c, PyTuple_GET_ITEM(source_reason, 0), PyTuple_GET_ITEM(source_reason, 1));
        } else if (SET(hook_reason) && PyTuple_Check(hook_reason) &&
                   PyTuple_GET_SIZE(hook_reason) == 2) {
            set_reason(c, PyTuple_GET_ITEM(hook_reason, 0), PyTuple_GET_ITEM(hook_reason, 1));
        } else if (SET(token) && token_is_cancelled(token)) {
            PyObject *r = PyObject_GetAttrString(token, "reason");
            PyObject *m = r != NULL ? PyObject_GetAttrString(token, "message") : NULL;
            if (r == NULL || m == NULL) {
                Py_XDECREF(r);
                engine_report_error("hother.cancelable: reading a token's reason");
                set_reason(c, rs_manual, Py_None);
            } else {
                set_reason(c, r == Py_None ? rs_manual : r, m);
                Py_DECREF(r);
                Py_DECREF(m);
            }
        } else {
            int called = 0, reached = 0;
            if (c->s.c_flags & CF_TIMED_OUT) {
                called = reached = 1;
            } else if (c_fast(c) == 2) {
                trio_scope_flags(BSCOPE(c), &called, &reached);
            } else {
                scope_flags((PyObject *)c, &called, &reached);
            }
            if (called && reached) {
                set_reason(c, rs_timeout, timeout_text);
            } else {
                set_reason(c, rs_manual, Py_None);
            }
        }
    } else if (PyObject_TypeCheck(exc, (PyTypeObject *)PyExc_GeneratorExit)) {
        /* an async generator closed by its consumer: stopped early, not failed */
        status = ST_CANCELLED;
        set_reason(c, rs_manual, closed_text);
    } else {
        status = ST_FAILED;
        PyObject *text = PyObject_Str(exc);
        if (text == NULL) {
            PyErr_Clear();
            text = PyUnicode_FromString("<unprintable exception>");
        }
        if (text != NULL && SETX(c, error, text) < 0) {
            PyErr_Clear();
        }
    }
    PyErr_Clear(); /* a failed (out of memory) reason or error text does not stop the exit */
    set_status_idx(c, status);
    /* cleanup */
    remove_token_hook(c);
    unlink_external(c);
    restore_current(c);
    c->u.end_time = cc_now_realtime();
    if (debug_enabled_fn != NULL) {
        /* logging guarded in C: Logger._cache answers without a call once warm
         * (the logging module clears it whenever a level changes) */
        PyObject *en =
            logger_cache != NULL ? PyDict_GetItemWithError(logger_cache, debug_level) : NULL;
        if (en != NULL) {
            Py_INCREF(en);
        } else {
            PyErr_Clear();
            en = PyObject_CallOneArg(debug_enabled_fn, debug_level);
        }
        if (en == NULL) {
            PyErr_Clear();
        } else {
            if (en == Py_True) {
                PyObject *r = PyObject_CallMethodNoArgs((PyObject *)c, s_log_finished);
                if (r == NULL) {
                    PyErr_Clear();
                }
                Py_XDECREF(r);
            }
            Py_DECREF(en);
        }
    }
    if (scope_err_t != NULL) {
        if (scope_err_v != exc) {
            PyErr_Restore(scope_err_t, scope_err_v, scope_err_tb);
            return NULL;
        }
        Py_XDECREF(scope_err_t);
        Py_XDECREF(scope_err_v);
        Py_XDECREF(scope_err_tb);
    }
    return immediate_new(Py_False);
}

/* --- __aexit__: a light bound method ---
 * `async with` keeps the bound __aexit__ for the whole block, so its size is part of every
 * live operation: a builtin method object is 72 bytes. __aexit__ is instead a descriptor
 * whose binding is a 40-byte object (the operation and a GC header), recycled through a
 * small free list; calling it runs Core_aexit. */
typedef struct {
    PyObject_HEAD Core *self;
} BoundAexit;

static PyTypeObject BoundAexit_Type;
#define BAX_FREELIST 64
static BoundAexit *bax_free[BAX_FREELIST];
static int bax_nfree;

static PyObject *bax_new(Core *self)
{
    BoundAexit *b;
    if (bax_nfree > 0) {
        b = bax_free[--bax_nfree];
        _Py_NewReference((PyObject *)b);
    } else {
        b = PyObject_GC_New(BoundAexit, &BoundAexit_Type);
        if (b == NULL) {
            return NULL;
        }
    }
    Py_INCREF(self);
    b->self = self;
    PyObject_GC_Track(b);
    return (PyObject *)b;
}

static void bax_dealloc(BoundAexit *b)
{
    PyObject_GC_UnTrack(b);
    Py_CLEAR(b->self);
    if (bax_nfree < BAX_FREELIST) {
        bax_free[bax_nfree++] = b;
        return;
    }
    PyObject_GC_Del(b);
}

static int bax_traverse(BoundAexit *b, visitproc visit, void *arg)
{
    Py_VISIT(b->self);
    return 0;
}

static int bax_clear(BoundAexit *b)
{
    Py_CLEAR(b->self);
    return 0;
}

static PyObject *bax_call(BoundAexit *b, PyObject *args, PyObject *kwds)
{
    if (kwds != NULL && PyDict_GET_SIZE(kwds) > 0) {
        PyErr_SetString(PyExc_TypeError, "__aexit__ takes no keyword arguments");
        return NULL;
    }
    if (b->self == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "__aexit__ of a released operation");
        return NULL;
    }
    return Core_aexit(b->self, &PyTuple_GET_ITEM(args, 0), PyTuple_GET_SIZE(args));
}

static PyObject *bax_repr(BoundAexit *b)
{
    return PyUnicode_FromFormat("<bound method __aexit__ of %R>", (PyObject *)b->self);
}

static PyObject *bax_get_self(BoundAexit *b, void *Py_UNUSED(x))
{
    PyObject *s = b->self != NULL ? (PyObject *)b->self : Py_None;
    Py_INCREF(s);
    return s;
}

static PyGetSetDef bax_getset[] = {
    {"__self__", (getter)bax_get_self, NULL, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject BoundAexit_Type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "hother.cancelable._engine.BoundAexit",
    .tp_basicsize = sizeof(BoundAexit),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Cancellable.__aexit__ bound to an operation.",
    .tp_dealloc = (destructor)bax_dealloc,
    .tp_traverse = (traverseproc)bax_traverse,
    .tp_clear = (inquiry)bax_clear,
    .tp_call = (ternaryfunc)bax_call,
    .tp_repr = (reprfunc)bax_repr,
    .tp_getset = bax_getset,
};

/* The descriptor stored as CancellableCore.__aexit__. */
typedef struct {
    PyObject_HEAD
} AexitDescr;

static PyObject *aexit_descr_get(PyObject *self, PyObject *obj, PyObject *Py_UNUSED(type))
{
    if (obj == NULL || obj == Py_None) {
        Py_INCREF(self); /* looked up on the class */
        return self;
    }
    if (!PyObject_TypeCheck(obj, &Core_Type)) {
        PyErr_Format(PyExc_TypeError, "__aexit__ needs a Cancellable, not %.100s",
                     Py_TYPE(obj)->tp_name);
        return NULL;
    }
    return bax_new((Core *)obj);
}

static PyObject *aexit_descr_call(PyObject *Py_UNUSED(self), PyObject *args, PyObject *kwds)
{
    /* Cancellable.__aexit__(op, exc_type, exc, tb) */
    if ((kwds != NULL && PyDict_GET_SIZE(kwds) > 0) || PyTuple_GET_SIZE(args) != 4 ||
        !PyObject_TypeCheck(PyTuple_GET_ITEM(args, 0), &Core_Type)) {
        PyErr_SetString(PyExc_TypeError,
                        "Cancellable.__aexit__(operation, exc_type, exc, tb) expects 4 arguments");
        return NULL;
    }
    return Core_aexit((Core *)PyTuple_GET_ITEM(args, 0), &PyTuple_GET_ITEM(args, 1), 3);
}

static PyObject *aexit_descr_repr(PyObject *Py_UNUSED(self))
{
    return PyUnicode_FromString("<method '__aexit__' of 'CancellableCore' objects>");
}

static PyTypeObject AexitDescr_Type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "hother.cancelable._engine.AexitDescriptor",
    .tp_basicsize = sizeof(AexitDescr),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Exit the operation; never suppresses the exception.",
    .tp_descr_get = aexit_descr_get,
    .tp_call = aexit_descr_call,
    .tp_repr = (reprfunc)aexit_descr_repr,
};

/* --- attributes (rare fields live in CoreX) --- */

/* Getter/setter of a plain rare field: NULL reads as None. */
static PyObject *get_xfield(Core *c, void *off)
{
    PyObject *v = c->s.x != NULL ? *(PyObject **)((char *)c->s.x + (size_t)off) : NULL;
    if (v == NULL) {
        Py_RETURN_NONE;
    }
    Py_INCREF(v);
    return v;
}

static int set_xfield(Core *c, PyObject *v, void *off)
{
    Py_XINCREF(v);
    return set_x(c, (size_t)off, v);
}

/* A list field created on first read. */
static PyObject *lazy_list(Core *c, size_t off)
{
    CoreX *x = cx(c);
    if (x == NULL) {
        return NULL;
    }
    PyObject **slot = (PyObject **)((char *)x + off);
    if (*slot == NULL || *slot == Py_None) {
        PyObject *l = PyList_New(0);
        if (l == NULL) {
            return NULL;
        }
        Py_XSETREF(*slot, l);
    }
    Py_INCREF(*slot);
    return *slot;
}

static PyObject *get_xlist(Core *c, void *off)
{
    return lazy_list(c, (size_t)off);
}

static PyObject *get_sources(Core *c, void *Py_UNUSED(x))
{
    PyObject *l = lazy_list(c, offsetof(CoreX, sources));
    if (l == NULL) {
        return NULL;
    }
    if ((c->s.c_flags & CF_FAST_TIMEOUT) && !c_entered(c)) {
        /* materialise the fast timeout as a real TimeoutSource (0.1 compatibility) */
        PyObject *t = timeout_object(c);
        PyObject *src = t != NULL ? PyObject_CallOneArg(TimeoutSourceClass, t) : NULL;
        Py_XDECREF(t);
        if (src == NULL) {
            Py_DECREF(l);
            return NULL;
        }
        int rc = PyList_Insert(l, 0, src);
        Py_DECREF(src);
        if (rc < 0) {
            Py_DECREF(l);
            return NULL;
        }
        c->s.c_flags &= ~CF_FAST_TIMEOUT;
    }
    return l;
}

static int set_sources(Core *c, PyObject *v, void *Py_UNUSED(x))
{
    if ((c->s.c_flags & CF_FAST_TIMEOUT) && !c_entered(c)) {
        PyObject *cur = get_sources(c, NULL); /* keep the timeout */
        Py_XDECREF(cur);
        if (cur == NULL) {
            return -1;
        }
    }
    return set_xfield(c, v, (void *)offsetof(CoreX, sources));
}

static PyObject *get_children(Core *c, void *Py_UNUSED(x))
{
    if (!SET(XF(c, children))) {
        PyObject *ws = PyObject_CallNoArgs(WeakSetClass);
        if (ws == NULL || SETX(c, children, ws) < 0) {
            return NULL;
        }
    }
    Py_INCREF(CX(c)->children);
    return CX(c)->children;
}

static PyObject *get_metadata(Core *c, void *Py_UNUSED(x))
{
    if (!SET(XF(c, metadata))) {
        PyObject *d = PyDict_New();
        if (d == NULL || SETX(c, metadata, d) < 0) {
            return NULL;
        }
    }
    Py_INCREF(CX(c)->metadata);
    return CX(c)->metadata;
}

static PyObject *get_name(Core *c, void *Py_UNUSED(x))
{
    if (!SET(XF(c, name)) && c->s.c_timeout_name) { /* set by with_timeout only */
        PyObject *t = timeout_object(c);
        PyObject *n = t != NULL ? PyUnicode_FromFormat("timeout_%Ss", t) : NULL;
        Py_XDECREF(t);
        if (n == NULL || SETX(c, name, n) < 0) {
            return NULL;
        }
    }
    return get_xfield(c, (void *)offsetof(CoreX, name));
}

static int set_name(Core *c, PyObject *v, void *Py_UNUSED(x))
{
    c->s.c_timeout_name = 0;
    return set_xfield(c, v, (void *)offsetof(CoreX, name));
}

static PyObject *get_time(double t)
{
    if (isnan(t)) {
        Py_RETURN_NONE;
    }
    PyObject *ts = PyFloat_FromDouble(t);
    if (ts == NULL) {
        return NULL;
    }
    PyObject *r = PyObject_CallFunctionObjArgs(datetime_from_ts, ts, utc, NULL);
    Py_DECREF(ts);
    return r;
}

static int set_time(double *slot, PyObject *v)
{
    if (v == NULL || v == Py_None) {
        *slot = NAN;
        return 0;
    }
    PyObject *ts = PyObject_CallMethodNoArgs(v, s_timestamp);
    if (ts == NULL) {
        return -1;
    }
    double d = PyFloat_AsDouble(ts);
    Py_DECREF(ts);
    if (d == -1.0 && PyErr_Occurred()) {
        return -1;
    }
    *slot = d;
    return 0;
}

static PyObject *get_start_time(Core *c, void *Py_UNUSED(x))
{
    return get_time(c->start_time);
}
static int set_start_time(Core *c, PyObject *v, void *Py_UNUSED(x))
{
    return set_time(&c->start_time, v);
}
static PyObject *get_end_time(Core *c, void *Py_UNUSED(x))
{
    if (c->s.c_flags & CF_END_IN_X) {
        return get_time(CX(c)->end_time);
    }
    return get_time((c->s.c_flags & CF_VARSET) ? NAN : c->u.end_time);
}
static int set_end_time(Core *c, PyObject *v, void *Py_UNUSED(x))
{
    if (!(c->s.c_flags & CF_VARSET)) {
        return set_time(&c->u.end_time, v);
    }
    /* the slot holds the previous current_operation until the block is left */
    CoreX *x = cx(c);
    if (x == NULL || set_time(&x->end_time, v) < 0) {
        return -1;
    }
    c->s.c_flags |= CF_END_IN_X;
    return 0;
}

static PyObject *get_cflag(Core *c, void *which)
{
    switch ((int)(intptr_t)which) {
    case 0:
        return PyBool_FromLong(c->s.c_entered);
    case 1:
        return PyBool_FromLong(c->s.c_registered);
    case 2:
        return PyBool_FromLong(c->s.c_register_globally);
    case 3:
        return PyBool_FromLong(c->s.c_fast != 0);
    default:
        return PyBool_FromLong((c->s.c_flags & CF_TIMED_OUT) != 0);
    }
}

static int set_cflag(Core *c, PyObject *v, void *which)
{
    if (v == NULL || !PyBool_Check(v)) {
        PyErr_SetString(PyExc_TypeError, "expected a bool");
        return -1;
    }
    int b = v == Py_True;
    switch ((int)(intptr_t)which) {
    case 0:
        c->s.c_entered = b;
        break;
    case 1:
        c->s.c_registered = b;
        break;
    default:
        c->s.c_register_globally = b;
        break;
    }
    return 0;
}

static PyObject *get_status(Core *c, void *Py_UNUSED(x))
{
    PyObject *v = status_obj(c);
    if (v == NULL) {
        Py_RETURN_NONE;
    }
    Py_INCREF(v);
    return v;
}

static int set_status(Core *c, PyObject *v, void *Py_UNUSED(x))
{
    if (v == NULL) {
        PyErr_SetString(PyExc_TypeError, "_status cannot be deleted");
        return -1;
    }
    PyObject *known[] = {st_pending, st_running, st_completed, st_cancelled, st_failed};
    for (int i = 0; i < 5; i++) {
        if (v == known[i]) {
            set_status_idx(c, i);
            return 0;
        }
    }
    Py_INCREF(v);
    if (SETX(c, status_obj, v) < 0) {
        return -1;
    }
    c->s.c_status = ST_OTHER;
    return 0;
}

static PyObject *get_backend(Core *c, void *Py_UNUSED(x))
{
    PyObject *b = XF(c, backend);
    if (b == NULL && c_fast(c) == 1) {
        b = asyncio_backend;
    } else if (b == NULL && c_fast(c) == 2) {
        if (anyio_backend == NULL) {
            anyio_backend = PyObject_CallNoArgs(anyio_backend_fn);
            if (anyio_backend == NULL) {
                return NULL;
            }
        }
        b = anyio_backend;
    }
    if (b == NULL) {
        Py_RETURN_NONE;
    }
    Py_INCREF(b);
    return b;
}

static PyObject *get_hook(Core *c, void *Py_UNUSED(x))
{
    return PyLong_FromSsize_t(c->s.x != NULL ? CX(c)->hook : 0);
}

static int set_hook(Core *c, PyObject *v, void *Py_UNUSED(x))
{
    if (v == NULL) {
        PyErr_SetString(PyExc_TypeError, "_hook cannot be deleted");
        return -1;
    }
    Py_ssize_t h = PyLong_AsSsize_t(v);
    if (h == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (h == 0 && c->s.x == NULL) {
        return 0;
    }
    CoreX *x = cx(c);
    if (x == NULL) {
        return -1;
    }
    x->hook = h;
    return 0;
}

static PyObject *get_token(Core *c, void *Py_UNUSED(x))
{
    if (!SET(XF(c, token))) {
        if (!ready()) {
            return NULL;
        }
        PyObject *t = PyObject_CallNoArgs(LinkedTokenClass);
        if (t == NULL) {
            return NULL;
        }
        if (!PyObject_TypeCheck(t, &TokenCore_Type)) {
            Py_DECREF(t);
            PyErr_SetString(PyExc_TypeError, "the token class must derive from TokenCore");
            return NULL;
        }
        if (SETX(c, token, t) < 0) {
            return NULL;
        }
        /* a token created while the fast path runs must still cancel the scope */
        if (c_fast(c) && (c->s.c_flags & CF_VARSET) && CX(c)->hook == 0) {
            /* trio: TRIO_EXECUTOR (the run's TrioToken, captured at enter) makes the hook
             * run in the trio thread even when the token is created from another thread */
            if (add_token_hook(c) < 0) {
                return NULL;
            }
        }
    }
    Py_INCREF(CX(c)->token);
    return CX(c)->token;
}

static PyObject *get_token_obj(Core *c, void *Py_UNUSED(x))
{
    return get_xfield(c, (void *)offsetof(CoreX, token));
}

static int set_token_obj(Core *c, PyObject *v, void *Py_UNUSED(x))
{
    if (v != NULL && v != Py_None && !PyObject_TypeCheck(v, &TokenCore_Type)) {
        PyErr_Format(PyExc_TypeError, "_token_obj must be a CancellationToken or None, not %.100s",
                     Py_TYPE(v)->tp_name);
        return -1;
    }
    if (c->s.x != NULL && CX(c)->hook > 0) {
        PyErr_SetString(PyExc_RuntimeError, "the token of a running operation cannot be replaced");
        return -1;
    }
    return set_xfield(c, v == Py_None ? NULL : v, (void *)offsetof(CoreX, token));
}

static PyObject *get_scope(Core *c, void *Py_UNUSED(x))
{
    if (c_fast(c) == 1) {
        return scope_public(&c->s);
    }
    PyObject *t = BSCOPE(c) != NULL ? BSCOPE(c) : Py_None;
    Py_INCREF(t);
    return t;
}

/* op.scope: like _scope, but a running lazy trio block gets its trio scope made */
static PyObject *get_live_scope(Core *c, void *Py_UNUSED(x))
{
    if (c_fast(c) == 2 && BSCOPE(c) == NULL && c->s.trio_task != NULL) {
        PyObject *scope = trio_scope_of(c);
        Py_XINCREF(scope);
        return scope;
    }
    return get_scope(c, NULL);
}

static int set_scope(Core *c, PyObject *v, void *Py_UNUSED(x))
{
    if (c_fast(c) && (c->s.c_flags & CF_VARSET)) {
        PyErr_SetString(PyExc_RuntimeError, "the scope of a running operation cannot be replaced");
        return -1;
    }
    if (c_fast(c) == 1) {
        if (v == NULL || v == Py_None) {
            return 0; /* the embedded scope stays (an exited scope) */
        }
        PyErr_SetString(PyExc_RuntimeError,
                        "the scope of an operation on the asyncio fast path is its own");
        return -1;
    }
    Py_XINCREF(v);
    Py_XSETREF(BSCOPE(c), v == Py_None ? NULL : v);
    if (v == Py_None) {
        Py_DECREF(v);
    }
    return 0;
}

static PyObject *get_timeout(Core *c, void *Py_UNUSED(x))
{
    double t = core_timeout(c);
    if (t == INFINITY) {
        Py_RETURN_NONE;
    }
    return PyFloat_FromDouble(t);
}

#define XOFF(f) ((void *)offsetof(CoreX, f))
#define XOBJ(name, f)                                                                              \
    {                                                                                              \
        name, (getter)get_xfield, (setter)set_xfield, NULL, XOFF(f)                                \
    }
#define XLIST(name, f)                                                                             \
    {                                                                                              \
        name, (getter)get_xlist, (setter)set_xfield, NULL, XOFF(f)                                 \
    }

static PyGetSetDef Core_getset[] = {
    {"_sources", (getter)get_sources, (setter)set_sources, NULL, NULL},
    XLIST("_shields", shields),
    XLIST("_external_tokens", external_tokens),
    XLIST("_cancellables_to_link", to_link),
    XLIST("_linked_to", linked_to),
    XLIST("_progress_callbacks", progress_cbs),
    XLIST("_start_callbacks", start_cbs),
    XLIST("_complete_callbacks", complete_cbs),
    XLIST("_cancel_callbacks", cancel_cbs),
    XLIST("_error_callbacks", error_cbs),
    {"_children", (getter)get_children, (setter)set_xfield, NULL, XOFF(children)},
    {"_metadata", (getter)get_metadata, (setter)set_xfield, NULL, XOFF(metadata)},
    {"_name", (getter)get_name, (setter)set_name, NULL, NULL},
    {"_start_time", (getter)get_start_time, (setter)set_start_time, NULL, NULL},
    {"_end_time", (getter)get_end_time, (setter)set_end_time, NULL, NULL},
    {"_entered", (getter)get_cflag, (setter)set_cflag, NULL, (void *)0},
    {"_registered", (getter)get_cflag, (setter)set_cflag, NULL, (void *)1},
    {"_register_globally", (getter)get_cflag, (setter)set_cflag, NULL, (void *)2},
    {"_fast", (getter)get_cflag, NULL, NULL, (void *)3},
    {"_timed_out", (getter)get_cflag, NULL,
     "trio: the engine cancelled the block at its with_timeout deadline.", (void *)4},
    {"_status", (getter)get_status, (setter)set_status, NULL, NULL},
    {"_backend", (getter)get_backend, (setter)set_xfield, NULL, XOFF(backend)},
    {"_hook", (getter)get_hook, (setter)set_hook, NULL, NULL},
    XOBJ("_id", id),
    XOBJ("_ctx", ctx),
    XOBJ("_cancel_reason", cancel_reason),
    XOBJ("_cancel_message", cancel_message),
    XOBJ("_error", error),
    XOBJ("_partial_result", partial_result),
    XOBJ("_cv_token", cv_token),
    XOBJ("_parent_ref", parent_ref),
    XOBJ("_parent_id", parent_id),
    XOBJ("_source_reason", source_reason),
    XOBJ("_hook_reason", hook_reason),
    XOBJ("_source_error", source_error),
    {"_token_obj", (getter)get_token_obj, (setter)set_token_obj,
     "The operation's token if it was created, else None.", NULL},
    {"_scope", (getter)get_scope, (setter)set_scope,
     "The backend cancel scope of the running block (None before enter).", NULL},
    {"_live_scope", (getter)get_live_scope, NULL,
     "The backend scope of the running block; a lazy trio block gets its trio scope made.", NULL},
    {"_token", (getter)get_token, NULL, "The operation's own token (created on first use).", NULL},
    {"_fast_timeout", (getter)get_timeout, NULL,
     "The timeout kept in C by with_timeout() until a source object is needed.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

/* The token hook's cancel: the running block's scope (a lazy trio one made first) gets
 * cancel() unless it is cancelled already; nothing when the block is not running. */
static PyObject *Core_cancel_scope(Core *c, PyObject *Py_UNUSED(a))
{
    if (c_fast(c) == 2 && BSCOPE(c) == NULL) {
        if (c->s.trio_task != NULL && trio_cancel(c) < 0) {
            return NULL;
        }
        Py_RETURN_NONE;
    }
    PyObject *scope = get_scope(c, NULL);
    if (scope == NULL) {
        return NULL;
    }
    int rc = 0;
    if (scope != Py_None) {
        PyObject *called = PyObject_GetAttr(scope, s_cancel_called);
        rc = called != NULL ? PyObject_IsTrue(called) : -1;
        Py_XDECREF(called);
        if (rc == 0) {
            PyObject *r = PyObject_CallMethodNoArgs(scope, G.s_cancel);
            rc = r != NULL ? 0 : -1;
            Py_XDECREF(r);
        }
    }
    Py_DECREF(scope);
    if (rc < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* The Python path's token links: with_token's external tokens (link_external). */
static PyObject *Core_link_external(Core *c, PyObject *Py_UNUSED(a))
{
    if (link_external(c) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* The Python path's exit: the token hook removed and every link of the token undone. */
static PyObject *Core_release_token(Core *c, PyObject *Py_UNUSED(a))
{
    remove_token_hook(c);
    unlink_external(c);
    Py_RETURN_NONE;
}

/* Slow exit: forget what a lazy trio block recorded; True if it was such a running block. */
static PyObject *Core_trio_release(Core *c, PyObject *Py_UNUSED(a))
{
    int was = c_fast(c) == 2 && c->s.trio_task != NULL;
    trio_release(c);
    return PyBool_FromLong(was);
}

static PyObject *Core_restore_current(Core *c, PyObject *Py_UNUSED(a))
{
    trio_release(c);
    dl_remove(c);
    restore_current(c);
    Py_RETURN_NONE;
}

/* --- with_timeout without a bound method per call ---
 * `Cancellable.with_timeout(t)` looks a classmethod up and binds it on every call: a new
 * builtin method object, tracked by the GC and freed right after. Warm that is 0.1 us; with
 * the caches cold (an operation of real work between calls) it cost ~7 us, more than the
 * whole block. Each subclass of CancellableCore therefore gets `with_timeout` in its own
 * dict already bound to it (a builtin method is no descriptor: the lookup returns it as is),
 * unless the class or a base between defines its own. */
static PyMethodDef with_timeout_bound_def = {
    "with_timeout", (PyCFunction)(void (*)(void))Core_with_timeout, METH_FASTCALL | METH_KEYWORDS,
    "with_timeout(timeout, operation_id=None, name=None, **kwargs) -> Cancellable\n\n"
    "An operation cancelled `timeout` seconds after it is entered (reason TIMEOUT). "
    "`timeout` is a positive number of seconds or a timedelta; NaN, zero or negative "
    "values raise ValueError, other types TypeError."};

static int is_bound_with_timeout(PyObject *v)
{
    return PyCFunction_Check(v) && ((PyCFunctionObject *)v)->m_ml == &with_timeout_bound_def;
}

static PyObject *Core_init_subclass(PyObject *cls, PyObject *args, PyObject *kwds)
{
    /* cooperative: super(CancellableCore, cls).__init_subclass__(*args, **kwds) */
    PyObject *sup =
        PyObject_CallFunctionObjArgs((PyObject *)&PySuper_Type, (PyObject *)&Core_Type, cls, NULL);
    PyObject *next = sup != NULL ? PyObject_GetAttrString(sup, "__init_subclass__") : NULL;
    Py_XDECREF(sup);
    PyObject *r = next != NULL ? PyObject_Call(next, args, kwds) : NULL;
    Py_XDECREF(next);
    if (r == NULL) {
        return NULL;
    }
    Py_DECREF(r);
    if (!PyType_Check(cls) || !PyType_IsSubtype((PyTypeObject *)cls, &Core_Type)) {
        Py_RETURN_NONE;
    }
    PyObject *mro = ((PyTypeObject *)cls)->tp_mro;
    if (mro == NULL || !PyTuple_Check(mro)) {
        Py_RETURN_NONE;
    }
    PyObject *name = PyUnicode_InternFromString("with_timeout");
    if (name == NULL) {
        return NULL;
    }
    int inherit_fast = 0;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(mro); i++) {
        PyTypeObject *base = (PyTypeObject *)PyTuple_GET_ITEM(mro, i);
        PyObject *v = base->tp_dict != NULL ? PyDict_GetItemWithError(base->tp_dict, name) : NULL;
        if (v == NULL && PyErr_Occurred()) {
            Py_DECREF(name);
            return NULL;
        }
        if (v == NULL) {
            continue;
        }
        /* the nearest definition decides: ours (the C classmethod or a bound copy) or not */
        inherit_fast = i > 0 && (base == &Core_Type || is_bound_with_timeout(v));
        break;
    }
    int rc = 0;
    if (inherit_fast) {
        PyObject *bound = PyCFunction_NewEx(&with_timeout_bound_def, cls, NULL);
        rc = bound != NULL ? PyObject_SetAttr(cls, name, bound) : -1;
        Py_XDECREF(bound);
    }
    Py_DECREF(name);
    if (rc < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyMethodDef Core_methods[] = {
    {"__init_subclass__", (PyCFunction)(void (*)(void))Core_init_subclass,
     METH_VARARGS | METH_KEYWORDS | METH_CLASS,
     "Give the subclass `with_timeout` bound to it (no bound method per call)."},
    {"__aenter__", (PyCFunction)Core_aenter, METH_NOARGS, "Enter the operation."},
    {"_cancel_scope", (PyCFunction)Core_cancel_scope, METH_NOARGS,
     "Cancel the running block's backend scope (a lazy trio one is made first)."},
    {"_link_external", (PyCFunction)Core_link_external, METH_NOARGS,
     "Link the operation's token to the with_token tokens (undone on failure)."},
    {"_release_token", (PyCFunction)Core_release_token, METH_NOARGS,
     "Remove the operation's token hook and undo every link of its token."},
    {"_trio_release", (PyCFunction)Core_trio_release, METH_NOARGS,
     "Slow exit: forget the trio task and status a lazy trio block recorded at enter; True "
     "if it was such a running block."},
    {"_restore_current", (PyCFunction)Core_restore_current, METH_NOARGS,
     "Release what the fast enter took: current_operation gets back its previous value, a "
     "trio deadline leaves the run's heap (a no-op otherwise)."},
    {"with_timeout", (PyCFunction)(void (*)(void))Core_with_timeout,
     METH_FASTCALL | METH_KEYWORDS | METH_CLASS,
     "with_timeout(timeout, operation_id=None, name=None, **kwargs) -> Cancellable\n\n"
     "An operation cancelled `timeout` seconds after it is entered (reason TIMEOUT). "
     "`timeout` is a positive number of seconds or a timedelta; NaN, zero or negative "
     "values raise ValueError, other types TypeError."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject Core_Type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "hother.cancelable._engine.CancellableCore",
    .tp_basicsize = sizeof(Core),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "C base of Cancellable: operation state, its asyncio cancel scope and the "
              "enter/exit hot path.",
    .tp_new = Core_new,
    .tp_init = (initproc)Core_init,
    .tp_traverse = (traverseproc)Core_traverse,
    .tp_clear = (inquiry)Core_clear,
    .tp_dealloc = (destructor)Core_dealloc,
    .tp_methods = Core_methods,
    .tp_getset = Core_getset,
    .tp_weaklistoffset = offsetof(Core, s.weakreflist),
};

/* ------------------------------------------------------------------------- */
/* Module functions                                                           */

static PyObject *py_current_operation(PyObject *Py_UNUSED(m), PyObject *Py_UNUSED(a))
{
    PyObject *v;
    if (PyContextVar_Get(current_operation_var, Py_None, &v) < 0) {
        return NULL;
    }
    return v;
}

static int take(PyObject *d, const char *key, PyObject **slot)
{
    PyObject *v = PyDict_GetItemString(d, key);
    if (v == NULL) {
        PyErr_Format(PyExc_KeyError, "_set_classes: missing %s", key);
        return -1;
    }
    Py_INCREF(v);
    Py_XSETREF(*slot, v);
    return 0;
}

/* Two optional entries that go together: both taken (1), or neither (0). */
static int take_pair(PyObject *d, const char *k1, PyObject **slot1, const char *k2,
                     PyObject **slot2)
{
    PyObject *v1 = PyDict_GetItemString(d, k1), *v2 = PyDict_GetItemString(d, k2);
    if (v1 == NULL || v2 == NULL) {
        return 0;
    }
    Py_INCREF(v1);
    Py_XSETREF(*slot1, v1);
    Py_INCREF(v2);
    Py_XSETREF(*slot2, v2);
    return 1;
}

static PyObject *set_classes(PyObject *Py_UNUSED(m), PyObject *d)
{
    if (!PyDict_Check(d)) {
        PyErr_SetString(PyExc_TypeError, "_set_classes expects a dict");
        return NULL;
    }
    if (take(d, "pending", &st_pending) < 0 || take(d, "running", &st_running) < 0 ||
        take(d, "completed", &st_completed) < 0 || take(d, "cancelled", &st_cancelled) < 0 ||
        take(d, "failed", &st_failed) < 0 || take(d, "reason_timeout", &rs_timeout) < 0 ||
        take(d, "reason_manual", &rs_manual) < 0 ||
        take(d, "LinkedCancellationToken", &LinkedTokenClass) < 0 ||
        take(d, "TimeoutSource", &TimeoutSourceClass) < 0 ||
        take(d, "CancellationError", &CancellationErrorClass) < 0 ||
        take(d, "WeakSet", &WeakSetClass) < 0 ||
        take(d, "validate_timeout", &validate_timeout_fn) < 0 ||
        take(d, "asyncio_backend", &asyncio_backend_fn) < 0 ||
        take(d, "anyio_backend", &anyio_backend_fn) < 0 ||
        take(d, "datetime_fromtimestamp", &datetime_from_ts) < 0 || take(d, "utc", &utc) < 0 ||
        take(d, "debug_enabled", &debug_enabled_fn) < 0 ||
        take(d, "logger_cache", &logger_cache) < 0 ||
        take(d, "backend_override", &detection_override) < 0 ||
        take(d, "sniffio_local", &sniffio_local) < 0 ||
        take(d, "sniffio_cvar", &sniffio_cvar) < 0 || take(d, "environ_key", &environ_key) < 0 ||
        take(d, "environ_data", &environ_data) < 0) {
        return NULL;
    }
    if (!PyDict_Check(environ_data)) {
        PyErr_SetString(PyExc_TypeError, "_set_classes: environ_data must be a dict");
        Py_CLEAR(environ_data);
        return NULL;
    }
    /* optional: the trio deadline service (without them trio keeps the deadlines) */
    take_pair(d, "trio_deadline_start", &trio_dl_start, "trio_run_state", &trio_run_state);
    /* optional: the lazy trio scope (without them the fast path enters trio.CancelScope) */
    if (take_pair(d, "trio_attach", &trio_attach_fn, "trio_lazy_check", &trio_lazy_check_fn) &&
        trio_lazy_state != -2) {
        trio_lazy_state = 0;
    }
    Py_RETURN_NONE;
}

/* Tests: turn the lazy trio scope off (every trio fast block enters trio.CancelScope) or
 * back on; the previous setting is returned. */
static PyObject *set_trio_lazy(PyObject *Py_UNUSED(m), PyObject *on)
{
    int v = PyObject_IsTrue(on);
    if (v < 0) {
        return NULL;
    }
    int was = trio_lazy_state != -2;
    trio_lazy_state = v ? 0 : -2;
    return PyBool_FromLong(was);
}

static PyMethodDef cancellable_module_methods[] = {
    {"_set_classes", set_classes, METH_O, "Hand the Python objects the core uses to the engine."},
    {"_set_trio_lazy", set_trio_lazy, METH_O,
     "_set_trio_lazy(on) -> bool: tests: the lazy trio scope on or off (returns the old "
     "setting)."},
    {"current_operation", py_current_operation, METH_NOARGS,
     "current_operation() -> Cancellable | None"},
    {NULL, NULL, 0, NULL},
};

int engine_cancellable_init(PyObject *m)
{
    engine_embedded_x_size = sizeof(CoreX);
    if (PyType_Ready(&Immediate_Type) < 0 || PyType_Ready(&Core_Type) < 0 ||
        PyType_Ready(&TrioDeadlines_Type) < 0 || PyType_Ready(&BoundAexit_Type) < 0 ||
        PyType_Ready(&AexitDescr_Type) < 0) {
        return -1;
    }
    {
        PyObject *d = PyType_GenericNew(&AexitDescr_Type, NULL, NULL);
        if (d == NULL || PyDict_SetItemString(Core_Type.tp_dict, "__aexit__", d) < 0) {
            Py_XDECREF(d);
            return -1;
        }
        Py_DECREF(d);
        PyType_Modified(&Core_Type);
    }
    current_operation_var = PyContextVar_New("current_operation", Py_None);
    s_aenter_slow = PyUnicode_InternFromString("_aenter_slow");
    s_aexit_slow = PyUnicode_InternFromString("_aexit_slow");
    s_on_token_cancelled = PyUnicode_InternFromString("_on_token_cancelled");
    s_name_attr = PyUnicode_InternFromString("name");
    s_operation_id = PyUnicode_InternFromString("operation_id");
    s_add = PyUnicode_InternFromString("add");
    s_timestamp = PyUnicode_InternFromString("timestamp");
    s_log_finished = PyUnicode_InternFromString("_log_finished");
    timeout_text = PyUnicode_InternFromString("Operation timed out");
    closed_text = PyUnicode_InternFromString("Closed before completion (GeneratorExit)");
    s_enter = PyUnicode_InternFromString("__enter__");
    s_exit = PyUnicode_InternFromString("__exit__");
    s_cancel_called = PyUnicode_InternFromString("cancel_called");
    s_deadline = PyUnicode_InternFromString("deadline");
    if (!s_enter || !s_exit || !s_cancel_called || !s_deadline) {
        return -1;
    }
    if (closed_text == NULL) {
        return -1;
    }
    debug_level = PyLong_FromLong(10);
    if (debug_level == NULL) {
        return -1;
    }
    if (!current_operation_var || !s_aenter_slow || !s_aexit_slow || !s_on_token_cancelled ||
        !s_name_attr || !s_operation_id || !s_add || !s_timestamp || !s_log_finished ||
        !timeout_text) {
        return -1;
    }
    if (PyModule_AddType(m, &TrioDeadlines_Type) < 0) {
        return -1;
    }
    Py_INCREF(&Core_Type);
    if (PyModule_AddObject(m, "CancellableCore", (PyObject *)&Core_Type) < 0) {
        Py_DECREF(&Core_Type);
        return -1;
    }
    Py_INCREF(current_operation_var);
    if (PyModule_AddObject(m, "current_operation_var", current_operation_var) < 0) {
        Py_DECREF(current_operation_var);
        return -1;
    }
    return PyModule_AddFunctions(m, cancellable_module_methods);
}
