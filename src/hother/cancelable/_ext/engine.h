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
#include <stdint.h>

#include "cc_heap.h"
#include "cc_pmap.h"

typedef struct engine_state {
    /* asyncio functions and types, cached at import */
    PyObject *get_running_loop; /* asyncio.events._get_running_loop: loop or None, never raises */
    PyObject *current_task;     /* asyncio.current_task */
    PyObject *current_tasks;    /* asyncio.tasks._current_tasks (dict) or NULL */
    PyObject *CancelledError;   /* asyncio.CancelledError */
    PyObject *FutureType;       /* asyncio.Future */
    /* interned attribute names */
    PyObject *s_cancel, *s_uncancel, *s_cancelling, *s_call_at, *s_call_soon,
        *s_call_soon_threadsafe, *s_time, *s_fut_waiter, *s_must_cancel, *s_done, *s_is_closed,
        *s_run_sync_soon, *s_add_done_callback, *s_split;
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

/* The current task of `loop` (new reference, Py_None when none) or NULL with an error.
 * Reads asyncio's current-task dict directly when it has one (3.11-3.13), else calls
 * asyncio.current_task(loop). */
PyObject *engine_current_task(PyObject *loop);

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

/* token.c (h2) -----------------------------------------------------------
 * C-level access to _engine.TokenCore for the other files of the binding
 * (no Python attribute lookups). tok must be a TokenCore (or subclass) instance. */
extern PyTypeObject TokenCore_Type;
/* Non-zero once the token is cancelled (any thread may have cancelled it). */
int token_is_cancelled(PyObject *tok);
/* Register fn(token) to run on executor when the token is cancelled (executor NULL:
 * capture the caller's). New reference to the int handle (> 0), or to 0 when the token
 * was already cancelled (fn was dispatched at once); NULL with an exception on error. */
PyObject *token_add_hook_c(PyObject *tok, PyObject *fn, PyObject *executor);
/* 1 if the hook was registered and is now removed, 0 otherwise. Never raises. */
int token_remove_hook_c(PyObject *tok, Py_ssize_t handle);
/* _link_from: tok is cancelled whenever source is (keeping source's reason if preserve);
 * at once when source is cancelled already. 0, or -1 with an exception (source not a
 * token, or tok itself; no memory). */
int token_link_from_c(PyObject *tok, PyObject *source, int preserve);
/* _unlink_from: remove one link made by token_link_from_c(tok, source). 1 removed, 0 none,
 * -1 with an exception (source not a token, or tok itself). */
int token_unlink_from_c(PyObject *tok, PyObject *source);
/* end token.c (h2) ------------------------------------------------------- */

/* scope.c: the scope structure ---------------------------------------------
 * A Scope is the asyncio cancel scope of the engine. It is either a plain
 * `_engine.CancelScope` object, or embedded as the base of a CancellableCore (the
 * `embedded` flag), so that a running operation is one object, not two. */
typedef struct LoopEngine LoopEngine;

/* Rarely used fields of a scope, allocated on first use (PyMem), freed with the scope.
 * A CancellableCore allocates a larger block whose first member is this struct. */
typedef struct ScopeX {
    PyObject *members;      /* list of adopted tasks (task groups), or NULL */
    PyObject *reason;       /* the cancel message (str), or NULL */
    PyObject *anyio_outer;  /* the task's innermost anyio scope when this scope was entered */
    PyObject *anyio_shield; /* shielded scopes: a companion anyio shield (anyio loaded) */
    PyObject *view;         /* embedded scopes: the cached CancelScope-compatible view */
} ScopeX;

typedef struct Scope {
    PyObject_HEAD cc_heap_node node; /* node.deadline is the deadline, in or out of the heap */
    union {
        LoopEngine *engine; /* strong while entered (state 1) */
        PyObject *alt;      /* embedded scopes never entered (trio and slow paths): the
                             * operation's backend scope, strong. Only state 1 reads engine. */
    };
    cc_pmap_node hnode;   /* key: the host task, a strong reference while entered */
    struct Scope *parent; /* strong */
    union {
        struct {
            struct Scope *first_child, *next_sib, *prev_sib; /* borrowed; unlinked at exit */
        };
        /* an embedded scope on the trio fast path (c_fast 2, never entered here): what the
         * block needs to get its trio scope later (cancellable.c: trio_scope_of), strong */
        struct {
            PyObject *trio_task;   /* the block's trio task */
            PyObject *trio_parent; /* the task's CancelStatus when the block was entered */
        };
    };
    ScopeX *x; /* rare fields, or NULL */
    PyObject *weakreflist;
    int16_t cancel_count;        /* saturating */
    int16_t cancelling_at_enter; /* saturating */
    unsigned char state : 2;     /* 0 new, 1 active, 2 exited */
    unsigned char shield : 1;
    unsigned char cancel_called : 1;
    unsigned char cancelled_caught : 1;
    unsigned char deadline_reached : 1;
    unsigned char host_inside : 1; /* the host task's innermost scope is this one */
    unsigned char embedded : 1;    /* the base of a CancellableCore */
    /* bits owned by the embedding CancellableCore (unused by plain scopes) */
    unsigned short c_status : 3, c_fast : 2, c_entered : 1, c_registered : 1,
        c_register_globally : 1, c_timeout_name : 1;
    unsigned char c_flags;
} Scope;

#define SCOPE_HOST(s) ((PyObject *)(s)->hnode.key)

/* Size of the ScopeX block an embedded scope allocates (set by cancellable.c). */
extern size_t engine_embedded_x_size;
/* The rare-field block of s, allocated (zeroed) on first use; NULL with MemoryError. */
ScopeX *scope_ext(Scope *s);
/* Initialise the scope part of a freshly allocated (zeroed) object. */
void scope_init_fields(Scope *s, int shield, int embedded);
int scope_traverse_fields(Scope *s, visitproc visit, void *arg);
void scope_clear_fields(Scope *s);
/* Dealloc helper: clear weakrefs and fields, free the ext block (not the object). */
void scope_dealloc_fields(Scope *s);
/* New reference: the Python CancelScope API object of s (s itself, or the cached view of
 * an embedded scope). NULL with an exception. */
PyObject *scope_public(Scope *s);

/* scope.c C API -------------------------------------------------------------
 * For cancellable.c: the asyncio CancelScope without Python-level calls. */
/* Enter `scope` in `task` on `loop`; timeout (relative seconds, INFINITY: none) sets the
 * deadline from loop.time(). 0 or -1 with an exception. */
int scope_enter_c(PyObject *scope, PyObject *loop, PyObject *task, double timeout);
/* Exit: 1 when the scope swallowed its own cancellation, 0 to propagate, -1 on error
 * (out-of-order exit, or an exception to raise instead, e.g. an ExceptionGroup's rest). */
int scope_exit_c(PyObject *scope, PyObject *loop, PyObject *task, PyObject *exc);
/* Forget an active scope whose coroutine is being closed outside its loop (GeneratorExit). */
int scope_detach_c(PyObject *scope);
void scope_flags(PyObject *scope, int *cancel_called, int *deadline_reached);

/* cancellable.c */
int engine_cancellable_init(PyObject *m);

#endif
