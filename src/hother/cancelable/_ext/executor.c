/* executor.c: capture "where a callback must run" and dispatch to it from any thread.
 *
 * An executor is the running asyncio loop of the caller, the TrioToken of the current trio
 * run, or None (no async context). engine_dispatch() runs fn(arg) at once when the calling
 * thread is inside the executor, otherwise schedules it thread-safely
 * (loop.call_soon_threadsafe / TrioToken.run_sync_soon). A closed loop or a finished trio run
 * is reported through engine_report_error(), never raised.
 *
 * _run_hook(fn, arg) calls fn(arg); an awaitable result is spawned on the executor of the
 * thread running the hook (asyncio: a task kept alive in a module-level set until done;
 * trio: a system task). Exceptions are reported, never raised.
 */
#include "engine.h"

/* Module-level objects owned by this file (created once at init, never freed: the module
 * uses single-phase init with m_size -1). */
static PyObject *run_hook_obj;    /* the _engine._run_hook builtin */
static PyObject *hook_runner;     /* async def _hook_runner(aw): await aw, report errors */
static PyObject *pending_tasks;   /* set of asyncio tasks spawned by _run_hook */
static PyObject *pending_discard; /* bound method pending_tasks.discard */
static PyObject *s_create_task;

/* Lazily resolved trio objects (only once trio is imported by the application). */
static PyObject *trio_current_token; /* trio.lowlevel.current_trio_token */
static PyObject *trio_token_type;    /* trio.lowlevel.TrioToken */
static PyObject *trio_run_finished;  /* trio.RunFinishedError */
static PyObject *trio_spawn_system;  /* trio.lowlevel.spawn_system_task */

/* Returns 1 when trio is loaded and its objects are cached, 0 when trio is not imported,
 * -1 on error (exception set). Never imports trio itself. */
static int trio_loaded(void)
{
    if (trio_current_token != NULL) {
        return 1;
    }
    PyObject *modules = PyImport_GetModuleDict();           /* borrowed */
    PyObject *trio = PyDict_GetItemString(modules, "trio"); /* borrowed, no error */
    if (trio == NULL || trio == Py_None) {
        return 0;
    }
    PyObject *lowlevel = PyObject_GetAttrString(trio, "lowlevel");
    if (lowlevel == NULL) {
        /* trio is being imported right now (partially initialised): not usable yet */
        PyErr_Clear();
        return 0;
    }
    PyObject *cur = PyObject_GetAttrString(lowlevel, "current_trio_token");
    PyObject *tt = PyObject_GetAttrString(lowlevel, "TrioToken");
    PyObject *spawn = PyObject_GetAttrString(lowlevel, "spawn_system_task");
    PyObject *rf = PyObject_GetAttrString(trio, "RunFinishedError");
    Py_DECREF(lowlevel);
    if (cur == NULL || tt == NULL || spawn == NULL || rf == NULL) {
        Py_XDECREF(cur);
        Py_XDECREF(tt);
        Py_XDECREF(spawn);
        Py_XDECREF(rf);
        PyErr_Clear();
        return 0;
    }
    trio_token_type = tt;
    trio_spawn_system = spawn;
    trio_run_finished = rf;
    trio_current_token = cur; /* set last: it is the "cached" flag */
    return 1;
}

/* trio's per-thread run context (trio._core._run.GLOBAL_RUN_CONTEXT), when it has one: its
 * `runner.trio_token` is what trio.lowlevel.current_trio_token() returns, read here without
 * the two Python wrappers of that function (the hot path of an operation under trio).
 * Anything unexpected falls back to the public function. */
static PyObject *trio_run_context;
static PyObject *s_runner, *s_trio_token;
static int trio_ctx_state; /* 0 unknown, 1 usable, -1 not available */

static PyObject *fast_trio_token(void)
{
    if (trio_ctx_state == 0) {
        trio_ctx_state = -1;
        PyObject *run = PyImport_ImportModule("trio._core._run");
        if (run != NULL) {
            trio_run_context = PyObject_GetAttrString(run, "GLOBAL_RUN_CONTEXT");
            Py_DECREF(run);
        }
        s_runner = PyUnicode_InternFromString("runner");
        s_trio_token = PyUnicode_InternFromString("trio_token");
        if (trio_run_context != NULL && s_runner != NULL && s_trio_token != NULL) {
            trio_ctx_state = 1;
        }
        PyErr_Clear();
    }
    if (trio_ctx_state < 0) {
        return NULL;
    }
    PyObject *runner = PyObject_GetAttr(trio_run_context, s_runner);
    if (runner == NULL) {
        PyErr_Clear(); /* not in a trio run */
        return NULL;
    }
    PyObject *tok = PyObject_GetAttr(runner, s_trio_token);
    Py_DECREF(runner);
    if (tok == NULL) {
        PyErr_Clear();
        return NULL;
    }
    if (trio_token_type != NULL && (PyObject *)Py_TYPE(tok) == trio_token_type) {
        return tok;
    }
    Py_DECREF(tok); /* None until first requested: let the public function create it */
    return NULL;
}

/* New reference to the current TrioToken, or NULL without an error when not in a trio run. */
static PyObject *current_trio_token(void)
{
    int loaded = trio_loaded();
    if (loaded <= 0) {
        if (loaded < 0) {
            PyErr_Clear();
        }
        return NULL;
    }
    PyObject *fast = fast_trio_token();
    if (fast != NULL) {
        return fast;
    }
    PyObject *tok = PyObject_CallNoArgs(trio_current_token);
    if (tok == NULL) {
        PyErr_Clear(); /* RuntimeError: must be called from async context */
    }
    return tok;
}

PyObject *engine_capture_executor(void)
{
    PyObject *loop = engine_running_loop();
    if (loop != NULL) {
        return loop;
    }
    PyObject *tok = current_trio_token();
    if (tok != NULL) {
        return tok;
    }
    Py_RETURN_NONE;
}

static int is_trio_token(PyObject *ex)
{
    return trio_token_type != NULL && (PyObject *)Py_TYPE(ex) == trio_token_type;
}

int engine_executor_is_here(PyObject *executor)
{
    if (executor == Py_None) {
        return 1;
    }
    if (trio_loaded() > 0 && is_trio_token(executor)) {
        PyObject *tok = current_trio_token();
        int here = tok == executor;
        Py_XDECREF(tok);
        return here;
    }
    PyObject *loop = engine_running_loop();
    int here = loop != NULL && loop == executor;
    Py_XDECREF(loop);
    return here;
}

/* Close a coroutine that will never run, so that Python does not warn "was never awaited".
 * Preserves the current exception. */
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

/* Spawn awaitable aw on the executor of the calling thread. Returns 0, or -1 with an
 * exception set (the caller reports it). */
static int spawn_awaitable(PyObject *aw)
{
    PyObject *loop = engine_running_loop();
    if (loop != NULL) {
        PyObject *coro = PyObject_CallOneArg(hook_runner, aw);
        if (coro == NULL) {
            Py_DECREF(loop);
            close_quietly(aw);
            return -1;
        }
        PyObject *task = PyObject_CallMethodOneArg(loop, s_create_task, coro);
        Py_DECREF(loop);
        if (task == NULL) {
            close_quietly(coro);
            Py_DECREF(coro);
            close_quietly(aw);
            return -1;
        }
        Py_DECREF(coro);
        /* keep a strong reference until the task is done (the loop only keeps a weak one) */
        PyObject *r = PyObject_CallMethodOneArg(task, G.s_add_done_callback, pending_discard);
        if (r == NULL) {
            Py_DECREF(task);
            return -1;
        }
        Py_DECREF(r);
        int rc = PySet_Add(pending_tasks, task); /* discarded by the callback when done */
        Py_DECREF(task);
        return rc;
    }
    PyObject *tok = current_trio_token();
    if (tok != NULL) {
        Py_DECREF(tok);
        /* trio keeps system tasks alive itself; the runner swallows (reports) Exceptions,
         * which would otherwise crash the whole run. */
        PyObject *r = PyObject_CallFunctionObjArgs(trio_spawn_system, hook_runner, aw, NULL);
        if (r == NULL) {
            close_quietly(aw);
            return -1;
        }
        Py_DECREF(r);
        return 0;
    }
    close_quietly(aw);
    PyErr_SetString(PyExc_RuntimeError,
                    "a token callback returned an awaitable, but it was triggered in a thread "
                    "with no running event loop or trio run; register async callbacks from "
                    "async code");
    return -1;
}

static int is_awaitable(PyObject *obj)
{
    if (PyCoro_CheckExact(obj)) {
        return 1;
    }
    PyAsyncMethods *am = Py_TYPE(obj)->tp_as_async;
    return am != NULL && am->am_await != NULL;
}

/* Call fn(arg); spawn an awaitable result; report every error. Never raises. */
static void run_hook(PyObject *fn, PyObject *arg)
{
    PyObject *res = PyObject_CallOneArg(fn, arg);
    if (res == NULL) {
        engine_report_error("hother.cancelable: token callback raised");
        return;
    }
    if (res != Py_None && is_awaitable(res)) {
        if (spawn_awaitable(res) < 0) {
            engine_report_error("hother.cancelable: cannot run async token callback");
        }
    }
    Py_DECREF(res);
}

static PyObject *py_run_hook(PyObject *Py_UNUSED(self), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError, "_run_hook(fn, arg) takes 2 arguments (%zd given)", nargs);
        return NULL;
    }
    if (!PyCallable_Check(args[0])) {
        PyErr_Format(PyExc_TypeError, "fn must be callable, got %.100s", Py_TYPE(args[0])->tp_name);
        return NULL;
    }
    run_hook(args[0], args[1]);
    Py_RETURN_NONE;
}

int engine_dispatch(PyObject *executor, PyObject *fn, PyObject *arg)
{
    if (engine_executor_is_here(executor)) {
        run_hook(fn, arg);
        return 0;
    }
    PyObject *res;
    int trio = is_trio_token(executor);
    if (trio) {
        res = PyObject_CallMethodObjArgs(executor, G.s_run_sync_soon, run_hook_obj, fn, arg, NULL);
    } else {
        res = PyObject_CallMethodObjArgs(executor, G.s_call_soon_threadsafe, run_hook_obj, fn, arg,
                                         NULL);
    }
    if (res != NULL) {
        Py_DECREF(res);
        return 0;
    }
    if (PyErr_ExceptionMatches(PyExc_MemoryError)) {
        return -1;
    }
    if (trio && trio_run_finished != NULL && PyErr_ExceptionMatches(trio_run_finished)) {
        engine_report_error("hother.cancelable: token callback dropped, its trio run has finished");
    } else if (!trio && PyErr_ExceptionMatches(PyExc_RuntimeError)) {
        engine_report_error("hother.cancelable: token callback dropped, its event loop is closed");
    } else {
        engine_report_error("hother.cancelable: cannot schedule token callback");
    }
    return 0;
}

static PyObject *py_capture_executor(PyObject *Py_UNUSED(self), PyObject *Py_UNUSED(args))
{
    return engine_capture_executor();
}

/* _report_error(where, exc): hand an exception object to engine_report_error (used by the
 * Python-level hook runner below). */
static PyObject *py_report_error(PyObject *Py_UNUSED(self), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyUnicode_Check(args[0]) || !PyExceptionInstance_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "_report_error(where: str, exc: BaseException)");
        return NULL;
    }
    const char *where = PyUnicode_AsUTF8(args[0]);
    if (where == NULL) {
        return NULL;
    }
    PyObject *exc = args[1];
    PyObject *type = (PyObject *)Py_TYPE(exc);
    PyObject *tb = PyException_GetTraceback(exc); /* new ref or NULL */
    Py_INCREF(type);
    Py_INCREF(exc);
    PyErr_Restore(type, exc, tb);
    engine_report_error(where);
    Py_RETURN_NONE;
}

static PyMethodDef executor_methods[] = {
    {"_run_hook", (PyCFunction)(void (*)(void))py_run_hook, METH_FASTCALL,
     "_run_hook(fn, arg): call fn(arg) now, spawn an awaitable result on the current event "
     "loop or trio run, report (never raise) errors."},
    {"capture_executor", py_capture_executor, METH_NOARGS,
     "capture_executor() -> the running asyncio loop, else the current trio TrioToken, "
     "else None."},
    {"_report_error", (PyCFunction)(void (*)(void))py_report_error, METH_FASTCALL,
     "_report_error(where, exc): log an exception through the engine's error handler."},
    {NULL, NULL, 0, NULL},
};

static const char runner_src[] =
    "async def _hook_runner(aw):\n"
    "    try:\n"
    "        await aw\n"
    "    except Exception as exc:\n"
    "        _report_error('hother.cancelable: async token callback raised', exc)\n";

int engine_executor_init(PyObject *m)
{
    if (PyModule_AddFunctions(m, executor_methods) < 0) {
        return -1;
    }
    run_hook_obj = PyObject_GetAttrString(m, "_run_hook");
    pending_tasks = PySet_New(NULL);
    if (run_hook_obj == NULL || pending_tasks == NULL) {
        return -1;
    }
    Py_INCREF(pending_tasks);
    if (PyModule_AddObject(m, "_pending_hook_tasks", pending_tasks) < 0) {
        Py_DECREF(pending_tasks);
        return -1;
    }
    pending_discard = PyObject_GetAttrString(pending_tasks, "discard");
    s_create_task = PyUnicode_InternFromString("create_task");
    if (pending_discard == NULL || s_create_task == NULL) {
        return -1;
    }
    /* the hook runner: a tiny coroutine function compiled in its own namespace */
    PyObject *ns = PyDict_New();
    if (ns == NULL) {
        return -1;
    }
    PyObject *report = PyObject_GetAttrString(m, "_report_error");
    if (report == NULL || PyDict_SetItemString(ns, "_report_error", report) < 0 ||
        PyDict_SetItemString(ns, "__builtins__", PyEval_GetBuiltins()) < 0) {
        Py_XDECREF(report);
        Py_DECREF(ns);
        return -1;
    }
    Py_DECREF(report);
    PyObject *code = Py_CompileString(runner_src, "<hother.cancelable._engine>", Py_file_input);
    if (code == NULL) {
        Py_DECREF(ns);
        return -1;
    }
    PyObject *r = PyEval_EvalCode(code, ns, ns);
    Py_DECREF(code);
    if (r == NULL) {
        Py_DECREF(ns);
        return -1;
    }
    Py_DECREF(r);
    hook_runner = PyDict_GetItemString(ns, "_hook_runner"); /* borrowed */
    Py_XINCREF(hook_runner);
    Py_DECREF(ns);
    if (hook_runner == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "cannot build the hook runner");
        return -1;
    }
    return 0;
}
