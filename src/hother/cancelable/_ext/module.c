/* hother.cancelable._engine: module init, cached objects, introspection. */
#include "engine.h"

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

PyObject *engine_running_loop(void)
{
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
