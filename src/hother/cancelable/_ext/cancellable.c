/* cancellable.c: the C base of hother.cancelable.Cancellable (the hot path).
 *
 * `CancellableCore` holds the state of an operation in C fields, exposed to the
 * Python subclass (core/cancellable.py) under the attribute names it uses, so the
 * Python methods (the rarely used features: sources, callbacks, registry, links,
 * shields) and this file share one state.
 *
 * Fast path: `async with Cancellable()` / `Cancellable.with_timeout(t)` on the
 * native asyncio backend with no sources, callbacks, parent, shared tokens or
 * registry entry. Enter and exit then run here without any Python-level call
 * except loop.time() and the contextvar, and their awaitables complete at once
 * (an `Immediate` object with am_send: no scheduling, no StopIteration object).
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

typedef struct {
    PyObject_HEAD PyObject *id, *name, *metadata, *ctx, *status;
    double start_time, end_time; /* epoch seconds; NAN when unset */
    PyObject *cancel_reason, *cancel_message, *error, *partial_result;
    PyObject *token, *scope, *backend, *cv_token;
    PyObject *sources, *shields, *external_tokens, *to_link, *linked_to;
    PyObject *progress_cbs, *start_cbs, *complete_cbs, *cancel_cbs, *error_cbs;
    PyObject *children, *parent_ref, *parent_id;
    PyObject *source_reason, *hook_reason, *source_error;
    PyObject *timeout_obj; /* the timeout as given (fast with_timeout), or NULL */
    PyObject *executor;    /* trio fast path: the TrioToken of the run (for late token hooks) */
    double timeout;        /* INFINITY: none */
    Py_ssize_t hook;
    char entered, registered, register_globally, fast, timeout_name;
} Core;

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
    c->start_time = NAN;
    c->end_time = NAN;
    c->timeout = INFINITY;
    if (st_pending != NULL) {
        Py_INCREF(st_pending);
        c->status = st_pending;
    }
    return (PyObject *)c;
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
        Py_XSETREF(c->id, op_id);
    }
    if (SET(name)) {
        Py_INCREF(name);
        Py_XSETREF(c->name, name);
    }
    if (SET(metadata)) {
        Py_INCREF(metadata);
        Py_XSETREF(c->metadata, metadata);
    }
    c->register_globally = reg == Py_True;
    if (SET(parent)) {
        Core *p = (Core *)parent;
        PyObject *ref = PyWeakref_NewRef(parent, NULL);
        if (ref == NULL) {
            return -1;
        }
        Py_XSETREF(c->parent_ref, ref);
        PyObject *pid = core_operation_id(p);
        if (pid == NULL) {
            return -1;
        }
        Py_XSETREF(c->parent_id, pid);
        if (p->children == NULL || p->children == Py_None) {
            PyObject *ws = PyObject_CallNoArgs(WeakSetClass);
            if (ws == NULL) {
                return -1;
            }
            Py_XSETREF(p->children, ws);
        }
        PyObject *r = PyObject_CallMethodOneArg(p->children, s_add, (PyObject *)c);
        if (r == NULL) {
            return -1;
        }
        Py_DECREF(r);
    }
    return 0;
}

static int Core_traverse(Core *c, visitproc visit, void *arg)
{
    Py_VISIT(c->id);
    Py_VISIT(c->name);
    Py_VISIT(c->metadata);
    Py_VISIT(c->ctx);
    Py_VISIT(c->status);
    Py_VISIT(c->cancel_reason);
    Py_VISIT(c->cancel_message);
    Py_VISIT(c->error);
    Py_VISIT(c->partial_result);
    Py_VISIT(c->token);
    Py_VISIT(c->scope);
    Py_VISIT(c->backend);
    Py_VISIT(c->cv_token);
    Py_VISIT(c->sources);
    Py_VISIT(c->shields);
    Py_VISIT(c->external_tokens);
    Py_VISIT(c->to_link);
    Py_VISIT(c->linked_to);
    Py_VISIT(c->progress_cbs);
    Py_VISIT(c->start_cbs);
    Py_VISIT(c->complete_cbs);
    Py_VISIT(c->cancel_cbs);
    Py_VISIT(c->error_cbs);
    Py_VISIT(c->children);
    Py_VISIT(c->parent_ref);
    Py_VISIT(c->parent_id);
    Py_VISIT(c->source_reason);
    Py_VISIT(c->hook_reason);
    Py_VISIT(c->source_error);
    Py_VISIT(c->timeout_obj);
    Py_VISIT(c->executor);
    return 0;
}

static int Core_clear(Core *c)
{
    Py_CLEAR(c->id);
    Py_CLEAR(c->name);
    Py_CLEAR(c->metadata);
    Py_CLEAR(c->ctx);
    Py_CLEAR(c->status);
    Py_CLEAR(c->cancel_reason);
    Py_CLEAR(c->cancel_message);
    Py_CLEAR(c->error);
    Py_CLEAR(c->partial_result);
    Py_CLEAR(c->token);
    Py_CLEAR(c->scope);
    Py_CLEAR(c->backend);
    Py_CLEAR(c->cv_token);
    Py_CLEAR(c->sources);
    Py_CLEAR(c->shields);
    Py_CLEAR(c->external_tokens);
    Py_CLEAR(c->to_link);
    Py_CLEAR(c->linked_to);
    Py_CLEAR(c->progress_cbs);
    Py_CLEAR(c->start_cbs);
    Py_CLEAR(c->complete_cbs);
    Py_CLEAR(c->cancel_cbs);
    Py_CLEAR(c->error_cbs);
    Py_CLEAR(c->children);
    Py_CLEAR(c->parent_ref);
    Py_CLEAR(c->parent_id);
    Py_CLEAR(c->source_reason);
    Py_CLEAR(c->hook_reason);
    Py_CLEAR(c->source_error);
    Py_CLEAR(c->timeout_obj);
    Py_CLEAR(c->executor);
    return 0;
}

static void Core_dealloc(Core *c)
{
    /* a heap subclass's subtype_dealloc releases the type itself */
    PyObject_GC_UnTrack(c);
    Core_clear(c);
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
                c->id = op_id;
            }
            if (name != Py_None) {
                Py_INCREF(name);
                c->name = name;
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
    Py_XSETREF(c->timeout_obj, given);
    c->timeout_name = !SET(c->name);
    return obj;
}

/* --- backend check: which fast path may serve the caller? --- */
enum { MODE_OTHER = 0, MODE_ASYNCIO = 1, MODE_TRIO = 2 };

static int trio_fast_ready(void)
{
    if (trio_fast_state != 0) {
        return trio_fast_state > 0;
    }
    trio_fast_state = -1;
    PyObject *trio = PyImport_ImportModule("trio");
    if (trio == NULL) {
        PyErr_Clear();
        return 0;
    }
    trio_scope_cls = PyObject_GetAttrString(trio, "CancelScope");
    trio_cancelled = PyObject_GetAttrString(trio, "Cancelled");
    trio_current_time = PyObject_GetAttrString(trio, "current_time");
    Py_DECREF(trio);
    kw_relative_deadline = Py_BuildValue("(s)", "relative_deadline");
    if (trio_scope_cls == NULL || trio_cancelled == NULL || trio_current_time == NULL ||
        kw_relative_deadline == NULL) {
        PyErr_Clear();
        return 0;
    }
    /* CancelScope(relative_deadline=...) exists from trio 0.27 on */
    PyObject *one = PyFloat_FromDouble(1.0);
    PyObject *probe =
        one != NULL ? PyObject_Vectorcall(trio_scope_cls, &one, 0, kw_relative_deadline) : NULL;
    Py_XDECREF(one);
    if (probe == NULL) {
        PyErr_Clear();
        return 0;
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
    if (detection_override == NULL || sniffio_cvar == NULL || sniffio_local == NULL) {
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
        const char *env = getenv("HOTHER_CANCELABLE_BACKEND");
        if (env != NULL && env[0] != '\0') {
            if (strcmp(env, "asyncio") == 0) {
                forced = 1;
            } else if (strcmp(env, "anyio") == 0) {
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
    if (SET(c->sources) && PyList_Check(c->sources) && PyList_GET_SIZE(c->sources) > 0) {
        return 0;
    }
    if (SET(c->sources) && !PyList_Check(c->sources)) {
        return 0;
    }
    if (SET(c->parent_ref) || c->register_globally || SET(c->ctx)) {
        return 0;
    }
#define NONEMPTY(l) (SET(l) && (!PyList_Check(l) || PyList_GET_SIZE(l) > 0))
    if (NONEMPTY(c->external_tokens) || NONEMPTY(c->to_link) || NONEMPTY(c->start_cbs)) {
        return 0;
    }
    return 1;
}

static int fast_exit_ok(Core *c)
{
    return c->fast && !SET(c->ctx) && !NONEMPTY(c->complete_cbs) && !NONEMPTY(c->cancel_cbs) &&
           !NONEMPTY(c->error_cbs) && !NONEMPTY(c->shields) && !SET(c->source_error) &&
           !NONEMPTY(c->sources);
}

static int add_token_hook(Core *c)
{
    PyObject *fn = PyObject_GetAttr((PyObject *)c, s_on_token_cancelled);
    if (fn == NULL) {
        return -1;
    }
    PyObject *h = token_add_hook_c(c->token, fn, SET(c->executor) ? c->executor : NULL);
    Py_DECREF(fn);
    if (h == NULL) {
        return -1;
    }
    Py_ssize_t handle = PyLong_AsSsize_t(h);
    Py_DECREF(h);
    if (handle == -1 && PyErr_Occurred()) {
        return -1;
    }
    c->hook = handle;
    return 0;
}

static PyObject *get_sources(Core *c, void *Py_UNUSED(x));

/* The Python enter (any backend, every feature); the fast timeout becomes a source. */
static PyObject *enter_slow(Core *c)
{
    if (c->timeout != INFINITY) {
        PyObject *l = get_sources(c, NULL);
        if (l == NULL) {
            return NULL;
        }
        Py_DECREF(l);
    }
    c->entered = 1;
    return PyObject_CallMethodNoArgs((PyObject *)c, s_aenter_slow);
}

/* The trio fast path: a trio.CancelScope entered directly (no anyio in between). */
static PyObject *enter_trio(Core *c)
{
    if (!SET(c->backend)) {
        if (anyio_backend == NULL) {
            anyio_backend = PyObject_CallNoArgs(anyio_backend_fn);
            if (anyio_backend == NULL) {
                return NULL;
            }
        }
        Py_INCREF(anyio_backend);
        Py_XSETREF(c->backend, anyio_backend);
    }
    PyObject *scope;
    if (c->timeout != INFINITY) {
        PyObject *t = PyFloat_FromDouble(c->timeout);
        if (t == NULL) {
            return NULL;
        }
        scope = PyObject_Vectorcall(trio_scope_cls, &t, 0, kw_relative_deadline);
        Py_DECREF(t);
    } else {
        scope = PyObject_CallNoArgs(trio_scope_cls);
    }
    if (scope == NULL) {
        return NULL;
    }
    PyObject *r = PyObject_CallMethodNoArgs(scope, s_enter);
    if (r == NULL) {
        Py_DECREF(scope);
        return NULL;
    }
    Py_DECREF(r);
    c->entered = 1;
    c->fast = 2;
    Py_XSETREF(c->scope, scope);
    /* the run's TrioToken: a token created later from another thread must still cancel
     * this scope in the trio thread */
    PyObject *ex = engine_capture_executor();
    if (ex == NULL) {
        goto undo;
    }
    Py_XSETREF(c->executor, ex);
    if (SET(c->token)) {
        if (add_token_hook(c) < 0) {
            goto undo;
        }
    }
    Py_INCREF(st_running);
    Py_XSETREF(c->status, st_running);
    c->start_time = cc_now_realtime();
    PyObject *tok = PyContextVar_Set(current_operation_var, (PyObject *)c);
    if (tok == NULL) {
        goto undo;
    }
    Py_XSETREF(c->cv_token, tok);
    return immediate_new((PyObject *)c);
undo : {
    PyObject *et, *ev, *etb;
    PyErr_Fetch(&et, &ev, &etb);
    if (c->hook > 0) {
        token_remove_hook_c(c->token, c->hook);
        c->hook = 0;
    }
    PyObject *res = PyObject_CallMethodObjArgs(c->scope, s_exit, Py_None, Py_None, Py_None, NULL);
    if (res == NULL) {
        PyErr_Clear();
    }
    Py_XDECREF(res);
    Py_INCREF(st_failed);
    Py_XSETREF(c->status, st_failed);
    PyErr_Restore(et, ev, etb);
    return NULL;
}
}

static PyObject *Core_aenter(Core *c, PyObject *Py_UNUSED(a))
{
    if (!ready()) {
        return NULL;
    }
    if (c->entered) {
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
    PyObject *backend = NULL;
    if (!SET(c->backend)) {
        if (asyncio_backend == NULL) {
            asyncio_backend = PyObject_CallNoArgs(asyncio_backend_fn);
            if (asyncio_backend == NULL) {
                goto fail_early;
            }
        }
        backend = asyncio_backend;
        Py_INCREF(backend);
    }
    PyObject *scope = scope_create(0);
    if (scope == NULL) {
        Py_XDECREF(backend);
        goto fail_early;
    }
    if (scope_enter_c(scope, loop, task, c->timeout) < 0) {
        Py_DECREF(scope);
        Py_XDECREF(backend);
        goto fail_early;
    }
    c->entered = 1;
    c->fast = 1;
    Py_XSETREF(c->scope, scope);
    if (backend != NULL) {
        Py_XSETREF(c->backend, backend);
    }
    if (SET(c->token)) {
        if (add_token_hook(c) < 0) {
            goto fail_entered;
        }
    }
    Py_INCREF(st_running);
    Py_XSETREF(c->status, st_running);
    c->start_time = cc_now_realtime();
    PyObject *tok = PyContextVar_Set(current_operation_var, (PyObject *)c);
    if (tok == NULL) {
        goto fail_entered;
    }
    Py_XSETREF(c->cv_token, tok);
    Py_DECREF(task);
    Py_DECREF(loop);
    return immediate_new((PyObject *)c);

fail_entered : {
    /* undo: exit the scope we entered */
    PyObject *et, *ev, *etb;
    PyErr_Fetch(&et, &ev, &etb);
    if (c->hook > 0) {
        token_remove_hook_c(c->token, c->hook);
        c->hook = 0;
    }
    if (scope_exit_c(c->scope, loop, task, Py_None) < 0) {
        PyErr_Clear();
    }
    Py_INCREF(st_failed);
    Py_XSETREF(c->status, st_failed);
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
    Py_XSETREF(c->cancel_reason, reason);
    Py_INCREF(message);
    Py_XSETREF(c->cancel_message, message);
    return 0;
}

/* cancel_called of a trio scope, and whether its deadline has passed (trio.current_time()). */
static void trio_scope_flags(PyObject *scope, int *called, int *reached)
{
    *called = *reached = 0;
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
    if (!c->entered || !SET(c->scope)) {
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
    if (c->fast == 2) {
        PyObject *r = PyObject_VectorcallMethod(
            s_exit, (PyObject *[]){c->scope, args[0], args[1], args[2]}, 4, NULL);
        rc = r == NULL ? -1 : 0;
        Py_XDECREF(r);
        cancel_cls = trio_cancelled;
        Py_CLEAR(c->executor);
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
            rc = scope_detach_c(c->scope);
        } else {
            PyObject *task = engine_current_task(loop);
            if (task == NULL) {
                Py_DECREF(loop);
                return NULL;
            }
            if (closing && task == Py_None) {
                rc = scope_detach_c(c->scope);
            } else {
                rc = scope_exit_c(c->scope, loop, task, exc);
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
    PyObject *status;
    if (exc == Py_None) {
        status = st_completed;
    } else if (PyObject_TypeCheck(exc, (PyTypeObject *)cancel_cls)) {
        status = st_cancelled;
        if (SET(c->source_reason) && PyTuple_Check(c->source_reason) &&
            PyTuple_GET_SIZE(c->source_reason) == 2) {
            set_reason(c, PyTuple_GET_ITEM(c->source_reason, 0),
                       PyTuple_GET_ITEM(c->source_reason, 1));
        } else if (SET(c->hook_reason) && PyTuple_Check(c->hook_reason) &&
                   PyTuple_GET_SIZE(c->hook_reason) == 2) {
            set_reason(c, PyTuple_GET_ITEM(c->hook_reason, 0), PyTuple_GET_ITEM(c->hook_reason, 1));
        } else if (SET(c->token) && token_is_cancelled(c->token)) {
            PyObject *r = PyObject_GetAttrString(c->token, "reason");
            PyObject *m = r != NULL ? PyObject_GetAttrString(c->token, "message") : NULL;
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
            if (c->fast == 2) {
                trio_scope_flags(c->scope, &called, &reached);
            } else {
                scope_flags(c->scope, &called, &reached);
            }
            if (called && reached) {
                set_reason(c, rs_timeout, timeout_text);
            } else {
                set_reason(c, rs_manual, Py_None);
            }
        }
    } else if (PyObject_TypeCheck(exc, (PyTypeObject *)PyExc_GeneratorExit)) {
        /* an async generator closed by its consumer: stopped early, not failed */
        status = st_cancelled;
        set_reason(c, rs_manual, closed_text);
    } else {
        status = st_failed;
        PyObject *text = PyObject_Str(exc);
        if (text == NULL) {
            PyErr_Clear();
            text = PyUnicode_FromString("<unprintable exception>");
        }
        Py_XSETREF(c->error, text);
    }
    Py_INCREF(status);
    Py_XSETREF(c->status, status);
    c->end_time = cc_now_realtime();
    /* cleanup */
    if (c->hook > 0 && SET(c->token)) {
        token_remove_hook_c(c->token, c->hook);
    }
    c->hook = 0;
    if (SET(c->cv_token)) {
        if (PyContextVar_Reset(current_operation_var, c->cv_token) < 0) {
            PyErr_Clear();
            PyObject *t = PyContextVar_Set(current_operation_var, Py_None);
            if (t == NULL) {
                PyErr_Clear();
            }
            Py_XDECREF(t);
        }
        Py_CLEAR(c->cv_token);
    }
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

/* --- lazy attributes --- */
static PyObject *lazy_list(PyObject **slot)
{
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

static int set_slot(PyObject **slot, PyObject *value)
{
    Py_XINCREF(value);
    Py_XSETREF(*slot, value);
    return 0;
}

#define LIST_GETSET(field, pyname)                                                                 \
    static PyObject *get_##field(Core *c, void *Py_UNUSED(x))                                      \
    {                                                                                              \
        return lazy_list(&c->field);                                                               \
    }                                                                                              \
    static int set_##field(Core *c, PyObject *v, void *Py_UNUSED(x))                               \
    {                                                                                              \
        return set_slot(&c->field, v);                                                             \
    }

LIST_GETSET(shields, "_shields")
LIST_GETSET(external_tokens, "_external_tokens")
LIST_GETSET(to_link, "_cancellables_to_link")
LIST_GETSET(linked_to, "_linked_to")
LIST_GETSET(progress_cbs, "_progress_callbacks")
LIST_GETSET(start_cbs, "_start_callbacks")
LIST_GETSET(complete_cbs, "_complete_callbacks")
LIST_GETSET(cancel_cbs, "_cancel_callbacks")
LIST_GETSET(error_cbs, "_error_callbacks")

static PyObject *get_sources(Core *c, void *Py_UNUSED(x))
{
    PyObject *l = lazy_list(&c->sources);
    if (l == NULL) {
        return NULL;
    }
    if (c->timeout != INFINITY && !c->entered) {
        /* materialise the fast timeout as a real TimeoutSource (0.1 compatibility) */
        PyObject *src = PyObject_CallOneArg(TimeoutSourceClass, c->timeout_obj);
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
        c->timeout = INFINITY;
    }
    return l;
}

static int set_sources(Core *c, PyObject *v, void *Py_UNUSED(x))
{
    if (c->timeout != INFINITY && !c->entered) {
        PyObject *cur = get_sources(c, NULL); /* keep the timeout */
        Py_XDECREF(cur);
        if (cur == NULL) {
            return -1;
        }
    }
    return set_slot(&c->sources, v);
}

static PyObject *get_children(Core *c, void *Py_UNUSED(x))
{
    if (!SET(c->children)) {
        PyObject *ws = PyObject_CallNoArgs(WeakSetClass);
        if (ws == NULL) {
            return NULL;
        }
        Py_XSETREF(c->children, ws);
    }
    Py_INCREF(c->children);
    return c->children;
}

static int set_children(Core *c, PyObject *v, void *Py_UNUSED(x))
{
    return set_slot(&c->children, v);
}

static PyObject *get_metadata(Core *c, void *Py_UNUSED(x))
{
    if (!SET(c->metadata)) {
        PyObject *d = PyDict_New();
        if (d == NULL) {
            return NULL;
        }
        Py_XSETREF(c->metadata, d);
    }
    Py_INCREF(c->metadata);
    return c->metadata;
}

static int set_metadata(Core *c, PyObject *v, void *Py_UNUSED(x))
{
    return set_slot(&c->metadata, v);
}

static PyObject *get_name(Core *c, void *Py_UNUSED(x))
{
    if (!SET(c->name) && c->timeout_name && c->timeout_obj != NULL) {
        PyObject *n = PyUnicode_FromFormat("timeout_%Ss", c->timeout_obj);
        if (n == NULL) {
            return NULL;
        }
        Py_XSETREF(c->name, n);
    }
    if (c->name == NULL) {
        Py_RETURN_NONE;
    }
    Py_INCREF(c->name);
    return c->name;
}

static int set_name(Core *c, PyObject *v, void *Py_UNUSED(x))
{
    c->timeout_name = 0;
    return set_slot(&c->name, v);
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
    return get_time(c->end_time);
}
static int set_end_time(Core *c, PyObject *v, void *Py_UNUSED(x))
{
    return set_time(&c->end_time, v);
}

static PyObject *get_token(Core *c, void *Py_UNUSED(x))
{
    if (!SET(c->token)) {
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
        Py_XSETREF(c->token, t);
        /* a token created while the fast path runs must still cancel the scope */
        if (c->fast && SET(c->scope) && SET(c->cv_token) && c->hook == 0) {
            /* trio: c->executor (the run's TrioToken, captured at enter) makes the hook run
             * in the trio thread even when the token is created from another thread */
            if (add_token_hook(c) < 0) {
                return NULL;
            }
        }
    }
    Py_INCREF(c->token);
    return c->token;
}

static PyObject *get_token_obj(Core *c, void *Py_UNUSED(x))
{
    PyObject *t = c->token != NULL ? c->token : Py_None;
    Py_INCREF(t);
    return t;
}

static int set_token_obj(Core *c, PyObject *v, void *Py_UNUSED(x))
{
    if (v != NULL && v != Py_None && !PyObject_TypeCheck(v, &TokenCore_Type)) {
        PyErr_Format(PyExc_TypeError, "_token_obj must be a CancellationToken or None, not %.100s",
                     Py_TYPE(v)->tp_name);
        return -1;
    }
    if (c->hook > 0) {
        PyErr_SetString(PyExc_RuntimeError, "the token of a running operation cannot be replaced");
        return -1;
    }
    return set_slot(&c->token, v == Py_None ? NULL : v);
}

static PyObject *get_scope(Core *c, void *Py_UNUSED(x))
{
    PyObject *t = c->scope != NULL ? c->scope : Py_None;
    Py_INCREF(t);
    return t;
}

static int set_scope(Core *c, PyObject *v, void *Py_UNUSED(x))
{
    if (c->fast && SET(c->cv_token)) {
        PyErr_SetString(PyExc_RuntimeError, "the scope of a running operation cannot be replaced");
        return -1;
    }
    return set_slot(&c->scope, v == Py_None ? NULL : v);
}

static PyObject *get_timeout(Core *c, void *Py_UNUSED(x))
{
    if (c->timeout == INFINITY) {
        Py_RETURN_NONE;
    }
    return PyFloat_FromDouble(c->timeout);
}

static PyGetSetDef Core_getset[] = {
    {"_sources", (getter)get_sources, (setter)set_sources, NULL, NULL},
    {"_shields", (getter)get_shields, (setter)set_shields, NULL, NULL},
    {"_external_tokens", (getter)get_external_tokens, (setter)set_external_tokens, NULL, NULL},
    {"_cancellables_to_link", (getter)get_to_link, (setter)set_to_link, NULL, NULL},
    {"_linked_to", (getter)get_linked_to, (setter)set_linked_to, NULL, NULL},
    {"_progress_callbacks", (getter)get_progress_cbs, (setter)set_progress_cbs, NULL, NULL},
    {"_start_callbacks", (getter)get_start_cbs, (setter)set_start_cbs, NULL, NULL},
    {"_complete_callbacks", (getter)get_complete_cbs, (setter)set_complete_cbs, NULL, NULL},
    {"_cancel_callbacks", (getter)get_cancel_cbs, (setter)set_cancel_cbs, NULL, NULL},
    {"_error_callbacks", (getter)get_error_cbs, (setter)set_error_cbs, NULL, NULL},
    {"_children", (getter)get_children, (setter)set_children, NULL, NULL},
    {"_metadata", (getter)get_metadata, (setter)set_metadata, NULL, NULL},
    {"_name", (getter)get_name, (setter)set_name, NULL, NULL},
    {"_start_time", (getter)get_start_time, (setter)set_start_time, NULL, NULL},
    {"_end_time", (getter)get_end_time, (setter)set_end_time, NULL, NULL},
    {"_token_obj", (getter)get_token_obj, (setter)set_token_obj,
     "The operation's token if it was created, else None.", NULL},
    {"_scope", (getter)get_scope, (setter)set_scope,
     "The backend cancel scope of the running block (None before enter).", NULL},
    {"_token", (getter)get_token, NULL, "The operation's own token (created on first use).", NULL},
    {"_fast_timeout", (getter)get_timeout, NULL,
     "The timeout kept in C by with_timeout() until a source object is needed.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

#define OBJ(name, field)                                                                           \
    {                                                                                              \
        name, T_OBJECT, offsetof(Core, field), 0, NULL                                             \
    }
static PyMemberDef Core_members[] = {
    OBJ("_id", id),
    OBJ("_ctx", ctx),
    OBJ("_status", status),
    OBJ("_cancel_reason", cancel_reason),
    OBJ("_cancel_message", cancel_message),
    OBJ("_error", error),
    OBJ("_partial_result", partial_result),
    OBJ("_backend", backend),
    OBJ("_cv_token", cv_token),
    OBJ("_parent_ref", parent_ref),
    OBJ("_parent_id", parent_id),
    OBJ("_source_reason", source_reason),
    OBJ("_hook_reason", hook_reason),
    OBJ("_source_error", source_error),
    {"_hook", T_PYSSIZET, offsetof(Core, hook), 0, NULL},
    {"_entered", T_BOOL, offsetof(Core, entered), 0, NULL},
    {"_registered", T_BOOL, offsetof(Core, registered), 0, NULL},
    {"_register_globally", T_BOOL, offsetof(Core, register_globally), 0, NULL},
    {"_fast", T_BOOL, offsetof(Core, fast), READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyMethodDef Core_methods[] = {
    {"__aenter__", (PyCFunction)Core_aenter, METH_NOARGS, "Enter the operation."},
    {"__aexit__", (PyCFunction)(void (*)(void))Core_aexit, METH_FASTCALL,
     "Exit the operation; never suppresses the exception."},
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
    .tp_doc = "C base of Cancellable: operation state and the enter/exit hot path.",
    .tp_new = Core_new,
    .tp_init = (initproc)Core_init,
    .tp_traverse = (traverseproc)Core_traverse,
    .tp_clear = (inquiry)Core_clear,
    .tp_dealloc = (destructor)Core_dealloc,
    .tp_methods = Core_methods,
    .tp_members = Core_members,
    .tp_getset = Core_getset,
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
        take(d, "sniffio_cvar", &sniffio_cvar) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyMethodDef cancellable_module_methods[] = {
    {"_set_classes", set_classes, METH_O, "Hand the Python objects the core uses to the engine."},
    {"current_operation", py_current_operation, METH_NOARGS,
     "current_operation() -> Cancellable | None"},
    {NULL, NULL, 0, NULL},
};

int engine_cancellable_init(PyObject *m)
{
    if (PyType_Ready(&Immediate_Type) < 0 || PyType_Ready(&Core_Type) < 0) {
        return -1;
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
