/* Shared declarations of the CPython binding module hother.cancelable._engine.
 *
 * The binding is split by type: module.c (module init, cached objects,
 * introspection), scope.c (asyncio CancelScope + per-loop engine), token.c
 * (token core), executor.c (capturing and dispatching to the caller's event
 * loop from any thread), registry.c (registry table). The pure C core they use
 * lives in csrc/ (cc_heap, cc_state, cc_table).
 *
 * Rules: every function that touches a PyObject holds the GIL; every new
 * reference is released on every path; every argument from Python is validated.
 */
#ifndef HOTHER_ENGINE_H
#define HOTHER_ENGINE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

typedef struct engine_state {
    /* asyncio functions and types, cached at import */
    PyObject *get_running_loop; /* asyncio.events._get_running_loop: loop or None, never raises */
    PyObject *current_task;     /* asyncio.current_task */
    PyObject *CancelledError;   /* asyncio.CancelledError */
    PyObject *FutureType;       /* asyncio.Future */
    /* interned attribute names */
    PyObject *s_cancel, *s_uncancel, *s_cancelling, *s_call_at, *s_call_soon,
        *s_call_soon_threadsafe, *s_time, *s_fut_waiter, *s_must_cancel, *s_done,
        *s_is_closed, *s_run_sync_soon, *s_add_done_callback, *s_split;
    /* logging hook: callable(where: str, exc: BaseException) set from Python */
    PyObject *error_handler;
    /* live instance counters (introspection, leak tests) */
    Py_ssize_t live_scopes;
    Py_ssize_t live_loop_engines;
    Py_ssize_t live_tokens;
    Py_ssize_t live_tables;
} engine_state;

extern engine_state G;

/* Per-type initialisers, called by PyInit__engine: add the types/functions to m.
 * Return 0 on success, -1 with an exception set. */
int engine_scope_init(PyObject *m);
int engine_token_init(PyObject *m);
int engine_executor_init(PyObject *m);
int engine_registry_init(PyObject *m);

/* Report an exception that must not propagate (a raising callback, a closed loop):
 * consumes the current exception and hands it to G.error_handler (Python logging),
 * or PyErr_WriteUnraisable when no handler is set. Never raises. */
void engine_report_error(const char *where);

/* The running asyncio loop of this thread (new reference) or NULL without an error set. */
PyObject *engine_running_loop(void);

/* executor.c -------------------------------------------------------------
 * An "executor" is what a callback registered from async code must run on:
 * the running asyncio loop, the current trio run's TrioToken, or None (no
 * async context: run in whatever thread triggers it). */

/* New reference: the running loop, else the current TrioToken, else Py_None. */
PyObject *engine_capture_executor(void);
/* Non-zero when the calling thread is currently running inside executor
 * (Py_None counts as "here"). */
int engine_executor_is_here(PyObject *executor);
/* Run fn(arg) now if the caller is inside executor, else schedule it there
 * thread-safely (loop.call_soon_threadsafe / TrioToken.run_sync_soon).
 * Errors from fn, or a closed loop / finished trio run, are reported through
 * engine_report_error and 0 is returned; -1 only on a hard failure (MemoryError). */
int engine_dispatch(PyObject *executor, PyObject *fn, PyObject *arg);

#endif
