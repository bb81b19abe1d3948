/* hother.cancelable._engine: module init, cached objects, introspection. */
#include "engine.h"

#include <string.h>
#if !defined(MS_WINDOWS)
#include <pthread.h>
#include <unistd.h>
#endif

engine_state G;

void engine_report_error(const char *where)
{
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    if (type == NULL) {
        return;
    }
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb != NULL && value != NULL) {
        PyException_SetTraceback(value, tb);
    }
    if (G.error_handler != NULL && G.error_handler != Py_None && value != NULL) {
        PyObject *res = PyObject_CallFunction(G.error_handler, "sO", where, value);
        if (res == NULL) {
            PyErr_WriteUnraisable(G.error_handler);
        }
        Py_XDECREF(res);
        Py_XDECREF(type);
        Py_XDECREF(value);
        Py_XDECREF(tb);
        return;
    }
    PyErr_Restore(type, value, tb);
    PyErr_WriteUnraisable(NULL);
}

/* The running loop without a system call on Python 3.11.
 * There, asyncio._get_running_loop() calls getpid() on every call (a loop inherited through
 * fork() must not count as running in the child), and getpid() is a real system call: about
 * a third of a fast `async with Cancellable()` went into the two made by enter and exit.
 * The engine reads the same record itself: asyncio keeps, in the thread state's dict, a
 * _RunningLoopHolder {loop, pid of the process that set it}. The pid it compares with is
 * taken once and again after every fork (pthread_atfork), so the answer is asyncio's.
 * The record is recognised once (type name and size, and the loop it holds checked against
 * asyncio's own answer); anything else (another Python, the pure-Python asyncio) uses
 * asyncio's function. Python 3.12 dropped the getpid() call and the holder. */
#if PY_VERSION_HEX < 0x030C0000 && !defined(MS_WINDOWS)
#define HC_LOOP_HOLDER 1
typedef struct {
    PyObject_HEAD PyObject *rl_loop;
    pid_t rl_pid;
} RunningLoopHolder; /* asyncio's PyRunningLoopHolder (Modules/_asynciomodule.c, <= 3.11) */

static PyTypeObject *holder_type; /* recognised on first sight (borrowed: a static type) */
static int holder_state;          /* 0 not seen yet, 1 usable, -1 not usable */
static pid_t holder_pid;          /* this process's pid; 0 until read (and after a fork) */
static PyObject *holder_key;      /* "__asyncio_running_event_loop__" */

static void holder_after_fork(void)
{
    holder_pid = 0;
}

static int holder_init(void)
{
    if (holder_key == NULL) { /* kept across a retried import */
        holder_key = PyUnicode_InternFromString("__asyncio_running_event_loop__");
    }
    if (holder_key == NULL) {
        return -1;
    }
    /* asyncio's function must be the C one that reads the holder */
    PyObject *mod =
        PyCFunction_Check(G.get_running_loop) ? PyCFunction_GET_SELF(G.get_running_loop) : NULL;
    const char *name = mod != NULL && PyModule_Check(mod) ? PyModule_GetName(mod) : NULL;
    if (name == NULL || strcmp(name, "_asyncio") != 0) {
        PyErr_Clear();
        holder_state = -1;
        return 0;
    }
    static int registered;
    if (!registered) {
        if (pthread_atfork(NULL, NULL, holder_after_fork) != 0) {
            holder_state = -1;
            return 0;
        }
        registered = 1;
    }
    holder_pid = 0;
    return 0;
}

/* 1: *loop_out is the running loop (new reference) or NULL (none); 0: use asyncio's call. */
static int holder_loop(PyObject **loop_out)
{
    PyObject *d = PyThreadState_GetDict(); /* borrowed; NULL without an error */
    if (d == NULL) {
        return 0;
    }
    PyObject *rl = PyDict_GetItemWithError(d, holder_key); /* borrowed */
    if (rl == NULL) {
        if (PyErr_Occurred()) {
            PyErr_Clear();
            return 0;
        }
        *loop_out = NULL; /* no loop was ever set in this thread */
        return 1;
    }
    if (Py_TYPE(rl) != holder_type) {
        if (holder_state != 0) {
            return 0;
        }
        /* first sight: the type asyncio 3.11 defines, holding the loop asyncio reports */
        PyTypeObject *t = Py_TYPE(rl);
        if (strcmp(t->tp_name, "_RunningLoopHolder") != 0 ||
            t->tp_basicsize != (Py_ssize_t)sizeof(RunningLoopHolder) ||
            (t->tp_flags & Py_TPFLAGS_HEAPTYPE)) {
            holder_state = -1;
            return 0;
        }
        PyObject *ref = PyObject_CallNoArgs(G.get_running_loop);
        if (ref == NULL) {
            PyErr_Clear();
            return 0;
        }
        int same = ref != Py_None && ((RunningLoopHolder *)rl)->rl_loop == ref;
        Py_DECREF(ref);
        if (!same) {
            return 0; /* not conclusive (no loop running, or forked): ask asyncio */
        }
        holder_type = t;
        holder_state = 1;
    }
    RunningLoopHolder *h = (RunningLoopHolder *)rl;
    if (holder_pid == 0) {
        holder_pid = getpid();
    }
    if (h->rl_loop == Py_None || h->rl_pid != holder_pid) {
        *loop_out = NULL;
        return 1;
    }
    Py_INCREF(h->rl_loop);
    *loop_out = h->rl_loop;
    return 1;
}
#endif

PyObject *engine_running_loop(void)
{
#ifdef HC_LOOP_HOLDER
    if (holder_state >= 0) {
        PyObject *loop;
        if (holder_loop(&loop)) {
            return loop;
        }
    }
#endif
    PyObject *loop = PyObject_CallNoArgs(G.get_running_loop);
    if (loop == NULL) {
        PyErr_Clear();
        return NULL;
    }
    if (loop == Py_None) {
        Py_DECREF(loop);
        return NULL;
    }
    return loop;
}

/* Tests: whether the running loop is read without asyncio's call (1), not yet known (0),
 * or through asyncio's call (-1). */
static PyObject *loop_read_mode(PyObject *Py_UNUSED(self), PyObject *Py_UNUSED(args))
{
#ifdef HC_LOOP_HOLDER
    return PyLong_FromLong(holder_state);
#else
    return PyLong_FromLong(-1);
#endif
}

PyObject *engine_current_task(PyObject *loop)
{
    if (G.current_tasks != NULL) {
        PyObject *t = PyDict_GetItemWithError(G.current_tasks, loop);
        if (t == NULL) {
            if (PyErr_Occurred()) {
                return NULL;
            }
            t = Py_None;
        }
        Py_INCREF(t);
        return t;
    }
    return PyObject_CallOneArg(G.current_task, loop);
}

static PyObject *set_error_handler(PyObject *Py_UNUSED(self), PyObject *handler)
{
    if (handler != Py_None && !PyCallable_Check(handler)) {
        PyErr_SetString(PyExc_TypeError, "handler must be callable or None");
        return NULL;
    }
    Py_INCREF(handler);
    Py_XSETREF(G.error_handler, handler);
    Py_RETURN_NONE;
}

static PyObject *live_objects(PyObject *Py_UNUSED(self), PyObject *Py_UNUSED(args))
{
    return Py_BuildValue("{s:n,s:n,s:n,s:n}", "CancelScope", G.live_scopes, "LoopEngine",
                         G.live_loop_engines, "TokenCore", G.live_tokens, "RegistryTable",
                         G.live_tables);
}

static PyMethodDef module_methods[] = {
    {"_set_error_handler", set_error_handler, METH_O,
     "Set the callable(where, exc) that logs errors the engine must swallow."},
    {"_loop_read_mode", loop_read_mode, METH_NOARGS,
     "_loop_read_mode() -> int: tests: 1 the running loop is read from asyncio's record "
     "without a system call, 0 not known yet, -1 asyncio's function is called."},
    {"live_objects", live_objects, METH_NOARGS,
     "live_objects() -> dict[str, int]: live instances of each C type (leak checks)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef engine_module = {
    PyModuleDef_HEAD_INIT,
    "hother.cancelable._engine",
    "The C engine of hother.cancelable: cancel scopes for asyncio, per-loop deadline "
    "scheduling, token state and the registry table.",
    -1,
    module_methods,
    NULL,
    NULL,
    NULL,
    NULL,
};

#define INTERN(field, text)                                                                        \
    do {                                                                                           \
        G.field = PyUnicode_InternFromString(text);                                                \
        if (G.field == NULL) {                                                                     \
            goto error;                                                                            \
        }                                                                                          \
    } while (0)

PyMODINIT_FUNC PyInit__engine(void)
{
    PyObject *m = NULL, *asyncio = NULL, *events = NULL;
    m = PyModule_Create(&engine_module);
    if (m == NULL) {
        return NULL;
    }
    asyncio = PyImport_ImportModule("asyncio");
    if (asyncio == NULL) {
        goto error;
    }
    events = PyImport_ImportModule("asyncio.events");
    if (events == NULL) {
        goto error;
    }
    /* one call at a time: none may run with the exception of a failed one set */
    G.get_running_loop = PyObject_GetAttrString(events, "_get_running_loop");
    if (G.get_running_loop == NULL) {
        goto error;
    }
    G.current_task = PyObject_GetAttrString(asyncio, "current_task");
    if (G.current_task == NULL) {
        goto error;
    }
    G.CancelledError = PyObject_GetAttrString(asyncio, "CancelledError");
    if (G.CancelledError == NULL) {
        goto error;
    }
    G.FutureType = PyObject_GetAttrString(asyncio, "Future");
    if (G.FutureType == NULL) {
        goto error;
    }
    {
        PyObject *tasks_mod = PyImport_ImportModule("asyncio.tasks");
        if (tasks_mod == NULL) {
            goto error;
        }
        PyObject *ct = PyObject_GetAttrString(tasks_mod, "_current_tasks");
        Py_DECREF(tasks_mod);
        if (ct == NULL) {
            /* a Python without the dict: asyncio.current_task() is used instead */
            if (!PyErr_ExceptionMatches(PyExc_AttributeError)) {
                goto error;
            }
            PyErr_Clear();
        } else if (PyDict_CheckExact(ct)) {
            G.current_tasks = ct;
        } else {
            Py_DECREF(ct);
        }
    }
    INTERN(s_cancel, "cancel");
    INTERN(s_uncancel, "uncancel");
    INTERN(s_cancelling, "cancelling");
    INTERN(s_call_at, "call_at");
    INTERN(s_call_soon, "call_soon");
    INTERN(s_call_soon_threadsafe, "call_soon_threadsafe");
    INTERN(s_time, "time");
    INTERN(s_fut_waiter, "_fut_waiter");
    INTERN(s_must_cancel, "_must_cancel");
    INTERN(s_done, "done");
    INTERN(s_is_closed, "is_closed");
    INTERN(s_run_sync_soon, "run_sync_soon");
    INTERN(s_add_done_callback, "add_done_callback");
    INTERN(s_split, "split");
#ifdef HC_LOOP_HOLDER
    if (holder_init() < 0) {
        goto error;
    }
#endif
    Py_DECREF(asyncio);
    Py_DECREF(events);
    asyncio = events = NULL;
    if (engine_scope_init(m) < 0 || engine_token_init(m) < 0 || engine_executor_init(m) < 0 ||
        engine_registry_init(m) < 0 || engine_cancellable_init(m) < 0) {
        goto error;
    }
    return m;
error:
    Py_XDECREF(asyncio);
    Py_XDECREF(events);
    Py_XDECREF(m);
    /* a later import attempt starts again from scratch */
    Py_CLEAR(G.get_running_loop);
    Py_CLEAR(G.current_task);
    Py_CLEAR(G.current_tasks);
    Py_CLEAR(G.CancelledError);
    Py_CLEAR(G.FutureType);
    return NULL;
}
