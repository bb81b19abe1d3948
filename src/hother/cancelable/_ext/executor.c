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
 *
 * The spawned task runs _hook_runner(aw), a coroutine implemented here in C (no Python source
 * is compiled at import): it behaves as
 *     async def _hook_runner(aw):
 *         try:
 *             await aw
 *         except Exception as exc:
 *             _report_error("hother.cancelable: async token callback raised", exc)
 * (BaseExceptions such as CancelledError propagate), and it is a collections.abc.Coroutine
 * (send, throw, close, __await__), which loop.create_task and trio's spawn_system_task need.
 */
#include "engine.h"

/* Module-level objects owned by this file (created once at init, never freed: the module
 * uses single-phase init with m_size -1). */
static PyObject *run_hook_obj;    /* the _engine._run_hook builtin */
static PyObject *hook_runner;     /* the _engine._hook_runner builtin (for trio) */
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

/* ------------------------------------------------------------------------------------- */
/* the hook runner coroutine                                                              */

static const char runner_where[] = "hother.cancelable: async token callback raised";

enum { RUNNER_NEW, RUNNER_AWAITING, RUNNER_DONE };

typedef struct HookRunner {
    PyObject_HEAD PyObject *aw; /* the awaitable, until the first send */
    PyObject *it;               /* its await iterator while awaiting it */
    int state;
    int running;   /* inside send/throw/close (re-entry is refused) */
    int abandoned; /* the engine could not spawn it (reported): finishes at once, quietly */
} HookRunner;

static PyTypeObject HookRunner_Type;

static int is_awaitable(PyObject *obj)
{
    if (PyCoro_CheckExact(obj)) {
        return 1;
    }
    PyAsyncMethods *am = Py_TYPE(obj)->tp_as_async;
    return am != NULL && am->am_await != NULL;
}

/* New HookRunner for awaitable aw (checked by the caller). */
static PyObject *runner_create(PyObject *aw)
{
    HookRunner *r = PyObject_GC_New(HookRunner, &HookRunner_Type);
    if (r == NULL) {
        return NULL;
    }
    r->aw = Py_NewRef(aw);
    r->it = NULL;
    r->state = RUNNER_NEW;
    r->running = 0;
    r->abandoned = 0;
    PyObject_GC_Track((PyObject *)r);
    return (PyObject *)r;
}

/* The iterator `await aw` drives (new reference), or NULL with an exception. */
static PyObject *await_iter(PyObject *aw)
{
    if (PyCoro_CheckExact(aw)) {
        return Py_NewRef(aw);
    }
    PyAsyncMethods *am = Py_TYPE(aw)->tp_as_async;
    if (am == NULL || am->am_await == NULL) {
        PyErr_Format(PyExc_TypeError, "object %.100s can't be used in 'await' expression",
                     Py_TYPE(aw)->tp_name);
        return NULL;
    }
    PyObject *it = am->am_await(aw);
    if (it == NULL) {
        return NULL;
    }
    if (PyCoro_CheckExact(it)) {
        Py_DECREF(it);
        PyErr_SetString(PyExc_TypeError, "__await__() returned a coroutine");
        return NULL;
    }
    if (!PyIter_Check(it)) {
        PyErr_Format(PyExc_TypeError, "__await__() returned non-iterator of type '%.100s'",
                     Py_TYPE(it)->tp_name);
        Py_DECREF(it);
        return NULL;
    }
    return it;
}

/* The runner is finished: drop what it holds. */
static void runner_finish(HookRunner *r)
{
    r->state = RUNNER_DONE;
    Py_CLEAR(r->it);
    Py_CLEAR(r->aw);
}

/* The current exception reached the runner's body inside its try: report an Exception and
 * return normally (PYGEN_RETURN, *result None), let any other BaseException propagate. */
static PySendResult runner_except(HookRunner *r, PyObject **result)
{
    runner_finish(r);
    if (!PyErr_ExceptionMatches(PyExc_Exception)) {
        *result = NULL;
        return PYGEN_ERROR;
    }
    engine_report_error(runner_where);
    *result = Py_NewRef(Py_None);
    return PYGEN_RETURN;
}

static PySendResult runner_am_send(HookRunner *r, PyObject *arg, PyObject **result)
{
    *result = NULL;
    if (r->running) {
        PyErr_SetString(PyExc_ValueError, "coroutine already executing");
        return PYGEN_ERROR;
    }
    if (r->state == RUNNER_DONE) {
        if (r->abandoned) {
            *result = Py_NewRef(Py_None);
            return PYGEN_RETURN;
        }
        PyErr_SetString(PyExc_RuntimeError, "cannot reuse already awaited coroutine");
        return PYGEN_ERROR;
    }
    if (r->state == RUNNER_NEW) {
        if (arg != Py_None) {
            PyErr_SetString(PyExc_TypeError,
                            "can't send non-None value to a just-started coroutine");
            return PYGEN_ERROR;
        }
        r->running = 1;
        PyObject *it = await_iter(r->aw);
        r->running = 0;
        if (it == NULL) {
            return runner_except(r, result);
        }
        Py_CLEAR(r->aw);
        r->it = it;
        r->state = RUNNER_AWAITING;
    }
    PyObject *it = Py_NewRef(r->it);
    r->running = 1;
    PySendResult status = PyIter_Send(it, arg, result);
    r->running = 0;
    Py_DECREF(it);
    if (status == PYGEN_NEXT) {
        return PYGEN_NEXT;
    }
    if (status == PYGEN_RETURN) {
        Py_SETREF(*result, Py_NewRef(Py_None)); /* `await aw` done: the runner returns None */
        runner_finish(r);
        return PYGEN_RETURN;
    }
    return runner_except(r, result);
}

/* A send result as a send()/__next__ result: the yielded value, or NULL with StopIteration
 * (the value is always None) or the error. */
static PyObject *runner_result(PySendResult status, PyObject *result, int stop_iteration)
{
    if (status == PYGEN_NEXT) {
        return result;
    }
    if (status == PYGEN_RETURN) {
        Py_DECREF(result);
        if (stop_iteration) {
            PyErr_SetNone(PyExc_StopIteration);
        }
    }
    return NULL;
}

static PyObject *runner_iternext(HookRunner *r)
{
    PyObject *result;
    PySendResult status = runner_am_send(r, Py_None, &result);
    return runner_result(status, result, 0);
}

static PyObject *runner_send(HookRunner *r, PyObject *arg)
{
    PyObject *result;
    PySendResult status = runner_am_send(r, arg, &result);
    return runner_result(status, result, 1);
}

/* Close the await iterator (its close() if it has one). 0, or -1 with an exception. */
static int close_iter(PyObject *it)
{
    PyObject *close = PyObject_GetAttrString(it, "close");
    if (close == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_AttributeError)) {
            return -1;
        }
        PyErr_Clear();
        return 0;
    }
    PyObject *res = PyObject_CallNoArgs(close);
    Py_DECREF(close);
    if (res == NULL) {
        return -1;
    }
    Py_DECREF(res);
    return 0;
}

/* Set the exception throw(typ, val, tb) raises: 0, or -1 with a TypeError when the
 * arguments are invalid (then nothing was thrown). */
static int raise_thrown(PyObject *typ, PyObject *val, PyObject *tb)
{
    if (tb == Py_None) {
        tb = NULL;
    } else if (tb != NULL && !PyTraceBack_Check(tb)) {
        PyErr_SetString(PyExc_TypeError, "throw() third argument must be a traceback object");
        return -1;
    }
    if (PyExceptionClass_Check(typ)) {
        Py_INCREF(typ);
        Py_XINCREF(val);
        Py_XINCREF(tb);
        PyErr_NormalizeException(&typ, &val, &tb);
        if (tb != NULL && val != NULL) {
            PyException_SetTraceback(val, tb);
        }
        PyErr_Restore(typ, val, tb);
        return 0;
    }
    if (!PyExceptionInstance_Check(typ)) {
        PyErr_Format(PyExc_TypeError,
                     "exceptions must be classes or instances deriving from BaseException, "
                     "not %.100s",
                     Py_TYPE(typ)->tp_name);
        return -1;
    }
    if (val != NULL && val != Py_None) {
        PyErr_SetString(PyExc_TypeError, "instance exception may not have a separate value");
        return -1;
    }
    PyObject *exc = typ;
    if (tb == NULL) {
        tb = PyException_GetTraceback(exc); /* new reference or NULL */
    } else {
        Py_INCREF(tb);
    }
    PyErr_Restore(Py_NewRef((PyObject *)Py_TYPE(exc)), Py_NewRef(exc), tb);
    return 0;
}

/* After an exception was raised where the runner awaits (inside its try): the outcome of
 * throw()/close() as a send result turned into StopIteration or the error. */
static PyObject *runner_throw_here(HookRunner *r, int awaiting)
{
    if (!awaiting) { /* not started (raised before the try) or finished: propagates */
        runner_finish(r);
        return NULL;
    }
    PyObject *result;
    PySendResult status = runner_except(r, &result);
    return runner_result(status, result, 1);
}

static PyObject *runner_throw(HookRunner *r, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 1 || nargs > 3) {
        PyErr_Format(PyExc_TypeError, "throw expected 1 to 3 arguments, got %zd", nargs);
        return NULL;
    }
    PyObject *typ = args[0], *val = nargs > 1 ? args[1] : NULL, *tb = nargs > 2 ? args[2] : NULL;
    if (r->running) {
        PyErr_SetString(PyExc_ValueError, "coroutine already executing");
        return NULL;
    }
    if (r->state != RUNNER_AWAITING) {
        if (raise_thrown(typ, val, tb) < 0) {
            return NULL;
        }
        if (r->state == RUNNER_NEW) {
            close_quietly(r->aw); /* it will never be awaited */
        }
        return runner_throw_here(r, 0);
    }
    PyObject *it = Py_NewRef(r->it);
    if (PyErr_GivenExceptionMatches(typ, PyExc_GeneratorExit)) {
        /* as `await` does: close the iterator, then raise GeneratorExit at the await */
        r->running = 1;
        int rc = close_iter(it);
        r->running = 0;
        Py_DECREF(it);
        if (rc == 0 && raise_thrown(typ, val, tb) < 0) {
            return NULL;
        }
        return runner_throw_here(r, 1);
    }
    PyObject *throw_meth = PyObject_GetAttrString(it, "throw");
    if (throw_meth == NULL) {
        Py_DECREF(it);
        if (!PyErr_ExceptionMatches(PyExc_AttributeError)) {
            return NULL; /* as `await` does: raised by throw(), the runner stays suspended */
        }
        PyErr_Clear();
        if (raise_thrown(typ, val, tb) < 0) {
            return NULL;
        }
        return runner_throw_here(r, 1);
    }
    r->running = 1;
    PyObject *res = PyObject_Vectorcall(throw_meth, args, (size_t)nargs, NULL);
    r->running = 0;
    Py_DECREF(throw_meth);
    Py_DECREF(it);
    if (res != NULL) {
        return res; /* the iterator yielded: still awaiting */
    }
    if (PyErr_ExceptionMatches(PyExc_StopIteration)) {
        PyErr_Clear(); /* `await aw` done: the runner returns None */
        runner_finish(r);
        PyErr_SetNone(PyExc_StopIteration);
        return NULL;
    }
    return runner_throw_here(r, 1);
}

static PyObject *runner_close(HookRunner *r, PyObject *Py_UNUSED(unused))
{
    if (r->running) {
        PyErr_SetString(PyExc_ValueError, "coroutine already executing");
        return NULL;
    }
    if (r->state != RUNNER_AWAITING) {
        if (r->state == RUNNER_NEW) {
            close_quietly(r->aw); /* it will never be awaited */
        }
        runner_finish(r);
        Py_RETURN_NONE;
    }
    PyObject *it = Py_NewRef(r->it);
    r->running = 1;
    int rc = close_iter(it);
    r->running = 0;
    Py_DECREF(it);
    if (rc == 0) {
        runner_finish(r); /* GeneratorExit raised at the await: the runner is closed */
        Py_RETURN_NONE;
    }
    /* the iterator's close() raised: that reaches the runner's try */
    PyObject *result;
    if (runner_except(r, &result) == PYGEN_ERROR) {
        return NULL;
    }
    Py_DECREF(result);
    Py_RETURN_NONE;
}

static PyObject *runner_await(PyObject *self)
{
    return Py_NewRef(self);
}

static PyObject *runner_name(PyObject *Py_UNUSED(self), void *Py_UNUSED(closure))
{
    return PyUnicode_FromString("_hook_runner");
}

static int runner_traverse(HookRunner *r, visitproc visit, void *arg)
{
    Py_VISIT(r->aw);
    Py_VISIT(r->it);
    return 0;
}

static int runner_clear(HookRunner *r)
{
    Py_CLEAR(r->aw);
    Py_CLEAR(r->it);
    return 0;
}

static void runner_dealloc(HookRunner *r)
{
    PyObject_GC_UnTrack(r);
    runner_clear(r);
    PyObject_GC_Del(r);
}

static PyMethodDef runner_methods[] = {
    {"send", (PyCFunction)runner_send, METH_O,
     "send(value): resume the awaited callback; StopIteration once it is done."},
    {"throw", (PyCFunction)(void (*)(void))runner_throw, METH_FASTCALL,
     "throw(typ[, val[, tb]]): raise an exception where the runner awaits."},
    {"close", (PyCFunction)runner_close, METH_NOARGS, "close(): close the awaited callback."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef runner_getset[] = {
    {"__name__", runner_name, NULL, NULL, NULL},
    {"__qualname__", runner_name, NULL, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyAsyncMethods runner_as_async = {
    .am_await = runner_await,
    .am_send = (sendfunc)runner_am_send,
};

static PyTypeObject HookRunner_Type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "hother.cancelable._engine._HookRunner",
    .tp_basicsize = sizeof(HookRunner),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "The coroutine of _hook_runner(aw): await aw, report an Exception it raises.",
    .tp_dealloc = (destructor)runner_dealloc,
    .tp_traverse = (traverseproc)runner_traverse,
    .tp_clear = (inquiry)runner_clear,
    .tp_as_async = &runner_as_async,
    .tp_iternext = (iternextfunc)runner_iternext,
    .tp_methods = runner_methods,
    .tp_getset = runner_getset,
};

/* The engine gives up on a runner it could not spawn properly (and reports why): the
 * awaitable is closed, and a task that got scheduled anyway finishes at once without running
 * it. Preserves the current exception. */
static void runner_abandon(PyObject *runner)
{
    HookRunner *r = (HookRunner *)runner;
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    if (r->state == RUNNER_NEW) {
        close_quietly(r->aw);
    }
    runner_finish(r);
    r->abandoned = 1;
    PyErr_Restore(type, value, tb);
}

static PyObject *py_hook_runner(PyObject *Py_UNUSED(self), PyObject *aw)
{
    if (!is_awaitable(aw)) {
        PyErr_Format(PyExc_TypeError, "aw must be awaitable, got %.100s", Py_TYPE(aw)->tp_name);
        return NULL;
    }
    return runner_create(aw);
}

/* ------------------------------------------------------------------------------------- */
/* spawning and dispatching                                                               */

/* Spawn awaitable aw on the executor of the calling thread. Returns 0, or -1 with an
 * exception set (the caller reports it). */
static int spawn_awaitable(PyObject *aw)
{
    PyObject *loop = engine_running_loop();
    if (loop != NULL) {
        PyObject *coro = runner_create(aw);
        if (coro == NULL) {
            Py_DECREF(loop);
            close_quietly(aw);
            return -1;
        }
        /* on a failure below, the task may have been scheduled all the same (e.g. create_task
         * failing after Task.__init__ scheduled the first step): the runner is abandoned so
         * that the callback does not run after it was reported as not run */
        PyObject *task = PyObject_CallMethodOneArg(loop, s_create_task, coro);
        Py_DECREF(loop);
        if (task == NULL) {
            runner_abandon(coro);
            Py_DECREF(coro);
            return -1;
        }
        /* keep a strong reference until the task is done (the loop only keeps a weak one) */
        PyObject *r = PyObject_CallMethodOneArg(task, G.s_add_done_callback, pending_discard);
        int rc = r != NULL ? PySet_Add(pending_tasks, task) : -1; /* discarded when done */
        Py_XDECREF(r);
        if (rc < 0) {
            runner_abandon(coro);
        }
        Py_DECREF(coro);
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

/* _report_error(where, exc): hand an exception object to engine_report_error. */
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
    {"_hook_runner", py_hook_runner, METH_O,
     "_hook_runner(aw) -> coroutine: await aw; an Exception it raises is reported (never "
     "raised). What the engine spawns for an async token callback."},
    {NULL, NULL, 0, NULL},
};

int engine_executor_init(PyObject *m)
{
    if (PyType_Ready(&HookRunner_Type) < 0 || PyModule_AddFunctions(m, executor_methods) < 0) {
        return -1;
    }
    if ((run_hook_obj = PyObject_GetAttrString(m, "_run_hook")) == NULL) {
        return -1;
    }
    if ((hook_runner = PyObject_GetAttrString(m, "_hook_runner")) == NULL) {
        return -1;
    }
    if ((s_create_task = PyUnicode_InternFromString("create_task")) == NULL) {
        return -1;
    }
    if ((pending_tasks = PySet_New(NULL)) == NULL) {
        return -1;
    }
    if ((pending_discard = PyObject_GetAttrString(pending_tasks, "discard")) == NULL) {
        return -1;
    }
    Py_INCREF(pending_tasks);
    if (PyModule_AddObject(m, "_pending_hook_tasks", pending_tasks) < 0) {
        Py_DECREF(pending_tasks);
        return -1;
    }
    return 0;
}
