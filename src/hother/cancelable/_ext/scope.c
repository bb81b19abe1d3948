/* scope.c: the asyncio cancel scope (anyio/trio semantics on asyncio) and the
 * per-event-loop engine that schedules deadlines and re-delivers cancellation.
 *
 * Model (see docs/architecture.md):
 *  - Every task that is inside at least one scope has an entry in the module
 *    dict `tasks` of its loop's engine: task -> its innermost scope. Tasks adopted by a task
 *    group (adopt_task) have the group's scope as their root entry.
 *  - Scopes form a tree: a scope's parent is the task's innermost scope at
 *    enter time (possibly a scope of another task, for adopted tasks). Children
 *    are kept in an intrusive list (no allocation).
 *  - A scope is "effectively cancelled" when it or an ancestor up to the first
 *    shield is cancel_called. A task is cancelled when its innermost scope is.
 *  - Delivery: Task.cancel() on every task whose innermost scope lies in the
 *    cancelled subtree, except the task currently running (it is cancelled on
 *    the next loop iteration, so a scope can be exited without an await).
 *    Tasks that still sit in a cancelled scope are kept in the engine's
 *    `pending` set and re-cancelled when they block again (level-triggered),
 *    by at most one coalesced call_soon callback per loop iteration.
 *  - Deadlines: one heap per loop (cc_heap), one loop timer armed for the
 *    earliest deadline. A later deadline never re-arms; an earlier one does.
 *  - Task.cancel()/uncancel() bookkeeping: cancels sent to a scope's host task
 *    are counted on the task's innermost scope and handed to the parent on
 *    exit until the scope that catches the cancellation uncancels them. If the
 *    task's cancelling() count is still above its value at enter, somebody
 *    else (asyncio.timeout, TaskGroup, a user Task.cancel()) also cancelled it
 *    and the CancelledError propagates.
 */
#include "engine.h"

#include <math.h>
#include <stddef.h>

#include "cc_heap.h"
#include "cc_state.h"

/* ------------------------------------------------------------------------- */
/* Types                                                                      */

struct LoopEngine {
    PyObject_HEAD PyObject *loop_ref; /* weakref to the loop */
    PyObject *timer;                  /* weakref to the armed TimerHandle, or NULL */
    double timer_when;
    PyObject *redeliver; /* weakref to the Handle of the coalesced callback, or NULL */
    PyObject *weakreflist;
    PyObject *pending;    /* set of tasks to re-check */
    cc_pmap hosts;        /* task -> its innermost scope, for scopes the task entered itself
                           * (intrusive: the node is the scope's hnode, keyed by its host) */
    PyObject *adopted;    /* dict task -> task-group scope: the root of adopted tasks (and
                           * entries written through the _task_scopes view) */
    PyObject *on_timer;   /* bound builtin: engine._on_timer */
    PyObject *on_release; /* bound builtin: engine._release_task (done callback of adopted tasks) */
    PyObject *on_redeliver;
    double resolution;
    int stdlib_time; /* loop.time is asyncio's own (time.monotonic): read the clock in C */
    cc_heap heap;
    Py_ssize_t active_scopes;
};

static PyTypeObject Scope_Type;
static PyTypeObject LoopEngine_Type;
static PyTypeObject ScopeView_Type;

/* The CancelScope API of an embedded scope (the scope of a running Cancellable): a
 * CancelScope subclass whose methods act on `target`. Cached (borrowed) in target->x->view
 * while it lives, so `op.scope is op.scope`. */
typedef struct {
    Scope base; /* unused */
    Scope *target;
} ScopeView;

#define RESOLVE(o) (Py_TYPE(o) == &ScopeView_Type ? ((ScopeView *)(o))->target : (Scope *)(o))

static PyObject *last_loop_ref;   /* weakref: the loop of the last engine used (fast path) */
static PyObject *last_engine_ref; /* weakref: that engine */
static LoopEngine *cached_engine(PyObject *loop);
static PyObject *base_loop_time;     /* asyncio.BaseEventLoop.time (the function) */
static PyObject *abstract_loop_type; /* asyncio.AbstractEventLoop */
static PyObject *s_get_coro, *s_cr_running, *s_cr_suspended, *s_cr_frame;

#define SCOPE_FROM_NODE(n) ((Scope *)((char *)(n)-offsetof(Scope, node)))
#define SCOPE_FROM_HNODE(n) ((Scope *)((char *)(n)-offsetof(Scope, hnode)))
/* a rare field of s, or NULL */
#define SX(s, f) ((s)->x != NULL ? (s)->x->f : NULL)

size_t engine_embedded_x_size = sizeof(ScopeX);

ScopeX *scope_ext(Scope *s)
{
    if (s->x == NULL) {
        size_t n = s->embedded ? engine_embedded_x_size : sizeof(ScopeX);
        s->x = (ScopeX *)PyMem_Calloc(1, n);
        if (s->x == NULL) {
            PyErr_NoMemory();
            return NULL;
        }
    }
    return s->x;
}

/* Drop the host reference (the scope must not be in a host map any more). */
static void clear_host(Scope *s)
{
    PyObject *h = (PyObject *)s->hnode.key;
    s->hnode.key = NULL;
    Py_XDECREF(h);
}

/* ------------------------------------------------------------------------- */
/* Small helpers                                                              */

static PyObject *engine_loop(LoopEngine *e)
{
    PyObject *loop = PyWeakref_GetObject(e->loop_ref); /* borrowed */
    if (loop == Py_None) {
        return NULL;
    }
    return loop;
}

/* loop.time() as a double; -1 on error (exception set). */
static int loop_time(PyObject *loop, double *out)
{
    LoopEngine *cached = cached_engine(loop);
    if (cached != NULL && cached->stdlib_time) {
        *out = cc_now_monotonic(); /* BaseEventLoop.time() is time.monotonic() */
        return 0;
    }
    PyObject *t = PyObject_CallMethodNoArgs(loop, G.s_time);
    if (t == NULL) {
        return -1;
    }
    double v = PyFloat_AsDouble(t);
    Py_DECREF(t);
    if (v == -1.0 && PyErr_Occurred()) {
        return -1;
    }
    *out = v;
    return 0;
}

static PyObject *current_task_of(PyObject *loop)
{
    return engine_current_task(loop); /* may be Py_None */
}

static int effectively_cancelled(Scope *s)
{
    while (s != NULL) {
        if (s->cancel_called) {
            return 1;
        }
        if (s->shield) {
            return 0;
        }
        s = s->parent;
    }
    return 0;
}

/* 1 if obj has attribute name, 0 if not (AttributeError), -1 on any other error (kept). */
static int has_attr_strict(PyObject *obj, const char *name)
{
    PyObject *v = PyObject_GetAttrString(obj, name);
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

/* Parse a deadline argument: a real number, not NaN. */
static int parse_deadline(PyObject *value, double *out)
{
    if (value == NULL) {
        PyErr_SetString(PyExc_TypeError, "deadline cannot be deleted");
        return -1;
    }
    int floaty = PyFloat_Check(value) || PyLong_Check(value);
    if (!floaty && !PyBool_Check(value)) {
        floaty = has_attr_strict(value, "__float__");
        if (floaty < 0) {
            return -1;
        }
    }
    if (PyBool_Check(value) || !floaty) {
        PyErr_Format(PyExc_TypeError, "deadline must be a real number, not %.100s",
                     Py_TYPE(value)->tp_name);
        return -1;
    }
    double d = PyFloat_AsDouble(value);
    if (d == -1.0 && PyErr_Occurred()) {
        if (PyErr_ExceptionMatches(PyExc_OverflowError)) {
            PyErr_Clear();
            int neg = PyObject_RichCompareBool(value, Py_False, Py_LT);
            if (neg < 0) {
                return -1;
            }
            d = neg ? -INFINITY : INFINITY;
        } else {
            return -1;
        }
    }
    if (isnan(d)) {
        PyErr_SetString(PyExc_ValueError, "deadline must not be NaN");
        return -1;
    }
    *out = d;
    return 0;
}

/* ------------------------------------------------------------------------- */
/* Loop engine                                                                */

/* Where an engine lives: in the loop's own __dict__ (attribute ENGINE_ATTR), so the engine
 * dies with its loop (every reference the engine holds that leads back to the loop — pending
 * tasks, handle callbacks — is a cycle the garbage collector can see). The module keeps only
 * weak references (a list for armed_timers(), and the last-used cache). */
#define ENGINE_ATTR "_hother_cancelable_engine"

static PyObject *s_engine_attr;
static PyObject *all_engines; /* list of weakrefs to live engines */

static LoopEngine *cached_engine(PyObject *loop)
{
    if (last_loop_ref != NULL && PyWeakref_GetObject(last_loop_ref) == loop) {
        PyObject *e = PyWeakref_GetObject(last_engine_ref);
        if (e != Py_None) {
            return (LoopEngine *)e;
        }
    }
    return NULL;
}

static void remember(LoopEngine *e)
{
    PyObject *er = PyWeakref_NewRef((PyObject *)e, NULL);
    if (er == NULL) {
        PyErr_Clear();
        return;
    }
    Py_XSETREF(last_engine_ref, er);
    Py_INCREF(e->loop_ref);
    Py_XSETREF(last_loop_ref, e->loop_ref);
}

/* The engine of `loop` (borrowed), or NULL (no error) when it has none yet. */
static LoopEngine *find_engine(PyObject *loop)
{
    LoopEngine *e = cached_engine(loop);
    if (e != NULL) {
        return e;
    }
    PyObject *eng = PyObject_GetAttr(loop, s_engine_attr);
    if (eng == NULL) {
        PyErr_Clear();
        return NULL;
    }
    Py_DECREF(eng); /* the loop keeps it alive */
    if (!PyObject_TypeCheck(eng, &LoopEngine_Type)) {
        return NULL;
    }
    remember((LoopEngine *)eng);
    return (LoopEngine *)eng;
}

/* Borrowed reference to the engine of `loop`, created on first use. */
static LoopEngine *get_engine(PyObject *loop)
{
    LoopEngine *found = find_engine(loop);
    if (found != NULL) {
        return found;
    }
    LoopEngine *e = PyObject_GC_New(LoopEngine, &LoopEngine_Type);
    if (e == NULL) {
        return NULL;
    }
    e->loop_ref = NULL;
    e->timer = NULL;
    e->timer_when = INFINITY;
    e->redeliver = NULL;
    e->pending = NULL;
    e->adopted = NULL;
    cc_pmap_init(&e->hosts);
    e->on_release = NULL;
    e->on_timer = NULL;
    e->on_redeliver = NULL;
    e->weakreflist = NULL;
    e->resolution = 1e-9;
    e->stdlib_time = 0;
    e->active_scopes = 0;
    cc_heap_init(&e->heap);
    G.live_loop_engines++;
    PyObject_GC_Track(e);
    e->loop_ref = PyWeakref_NewRef(loop, NULL);
    e->pending = PySet_New(NULL);
    e->adopted = PyDict_New();
    e->on_release = PyObject_GetAttrString((PyObject *)e, "_release_task");
    e->on_timer = PyObject_GetAttrString((PyObject *)e, "_on_timer");
    e->on_redeliver = PyObject_GetAttrString((PyObject *)e, "_redeliver");
    if (e->loop_ref == NULL || e->pending == NULL || e->adopted == NULL || e->on_release == NULL ||
        e->on_timer == NULL || e->on_redeliver == NULL) {
        Py_DECREF(e);
        return NULL;
    }
    PyObject *res = PyObject_GetAttrString(loop, "_clock_resolution");
    if (res == NULL) {
        PyErr_Clear();
    } else {
        double r = PyFloat_AsDouble(res);
        Py_DECREF(res);
        if (r == -1.0 && PyErr_Occurred()) {
            PyErr_Clear();
        } else if (r >= 0 && r < 1.0) {
            e->resolution = r;
        }
    }
    PyObject *tm = PyObject_GetAttrString((PyObject *)Py_TYPE(loop), "time");
    if (tm == NULL) {
        PyErr_Clear();
    } else {
        e->stdlib_time = base_loop_time != NULL && tm == base_loop_time;
        Py_DECREF(tm);
    }
    if (PyObject_SetAttr(loop, s_engine_attr, (PyObject *)e) < 0) {
        /* a loop type without a __dict__ */
        PyErr_Clear();
        PyErr_Format(PyExc_TypeError,
                     "hother.cancelable: the event loop type %.100s does not accept attributes; "
                     "the engine needs to attach its state to the loop",
                     Py_TYPE(loop)->tp_name);
        Py_DECREF(e);
        return NULL;
    }
    PyObject *er = PyWeakref_NewRef((PyObject *)e, NULL);
    if (er != NULL) {
        /* prune dead entries now and then, keep the list short */
        Py_ssize_t n = PyList_GET_SIZE(all_engines);
        for (Py_ssize_t i = n - 1; i >= 0; i--) {
            if (PyWeakref_GetObject(PyList_GET_ITEM(all_engines, i)) == Py_None) {
                if (PySequence_DelItem(all_engines, i) < 0) {
                    PyErr_Clear(); /* pruning is best effort */
                }
            }
        }
        if (PyList_Append(all_engines, er) < 0) {
            PyErr_Clear();
        }
        Py_DECREF(er);
    } else {
        PyErr_Clear();
    }
    Py_DECREF(e); /* the loop holds it */
    remember(e);
    return e;
}

/* The engine keeps only weak references to its loop handles: the loop owns them (a
 * strong reference would keep a closed loop alive through handle -> loop). */
static PyObject *handle_of(PyObject *ref)
{
    if (ref == NULL) {
        return NULL;
    }
    PyObject *h = PyWeakref_GetObject(ref); /* borrowed */
    return h == Py_None ? NULL : h;
}

/* Make sure a timer is armed at or before `when`. */
static int engine_arm(LoopEngine *e, PyObject *loop, double when)
{
    PyObject *armed = handle_of(e->timer);
    if (armed != NULL && e->timer_when <= when) {
        return 0;
    }
    if (armed != NULL) {
        PyObject *r = PyObject_CallMethodNoArgs(armed, G.s_cancel);
        if (r == NULL) {
            return -1;
        }
        Py_DECREF(r);
    }
    Py_CLEAR(e->timer);
    e->timer_when = INFINITY;
    PyObject *w = PyFloat_FromDouble(when);
    if (w == NULL) {
        return -1;
    }
    PyObject *h = PyObject_CallMethodObjArgs(loop, G.s_call_at, w, e->on_timer, NULL);
    Py_DECREF(w);
    if (h == NULL) {
        return -1;
    }
    e->timer = PyWeakref_NewRef(h, NULL);
    Py_DECREF(h); /* the loop holds the handle until it runs or is cancelled */
    if (e->timer == NULL) {
        return -1;
    }
    e->timer_when = when;
    return 0;
}

static int engine_schedule_redeliver(LoopEngine *e, PyObject *loop)
{
    if (handle_of(e->redeliver) != NULL) {
        return 0;
    }
    Py_CLEAR(e->redeliver);
    PyObject *h = PyObject_CallMethodOneArg(loop, G.s_call_soon, e->on_redeliver);
    if (h == NULL) {
        return -1;
    }
    e->redeliver = PyWeakref_NewRef(h, NULL);
    Py_DECREF(h);
    return e->redeliver == NULL ? -1 : 0;
}

/* ------------------------------------------------------------------------- */
/* Interop with anyio's own scopes on asyncio                                 */
/* anyio keeps, per task, its innermost anyio CancelScope (anyio._backends._asyncio._task_states,
 * a WeakKeyDictionary of TaskState objects). An `anyio.CancelScope(shield=True)` entered inside
 * one of our cancelled scopes must protect its body, as anyio and trio guarantee: each of our
 * scopes remembers the task's innermost anyio scope at enter, and delivery skips a task whose
 * anyio scopes entered since then include a shielded one. Nothing is read unless anyio's
 * asyncio backend is imported. */
static PyObject *anyio_states; /* _task_states.data (dict weakref(task) -> TaskState) */
static int anyio_state;        /* 0 unknown / not imported yet, 1 usable, -1 unusable */
static PyObject *s_cancel_scope, *s_parent_scope, *s_shield_attr;

static int anyio_ready(void)
{
    if (anyio_state != 0) {
        return anyio_state > 0;
    }
    PyObject *modules = PyImport_GetModuleDict();
    PyObject *mod = PyDict_GetItemString(modules, "anyio._backends._asyncio");
    if (mod == NULL) {
        return 0; /* not imported (yet): ask again next time */
    }
    anyio_state = -1;
    PyObject *ts = PyObject_GetAttrString(mod, "_task_states");
    if (ts == NULL) {
        PyErr_Clear();
        return 0;
    }
    PyObject *data = PyObject_GetAttrString(ts, "data");
    Py_DECREF(ts);
    if (data == NULL || !PyDict_Check(data)) {
        Py_XDECREF(data);
        PyErr_Clear();
        return 0;
    }
    anyio_states = data;
    anyio_state = 1;
    return 1;
}

/* New reference to the task's innermost anyio scope, or NULL (no error). */
static PyObject *anyio_scope_of(PyObject *task)
{
    if (!anyio_ready()) {
        return NULL;
    }
    PyObject *wr = PyWeakref_NewRef(task, NULL);
    if (wr == NULL) {
        PyErr_Clear();
        return NULL;
    }
    PyObject *state = PyDict_GetItemWithError(anyio_states, wr); /* borrowed */
    Py_DECREF(wr);
    if (state == NULL) {
        PyErr_Clear();
        return NULL;
    }
    PyObject *scope = PyObject_GetAttr(state, s_cancel_scope);
    if (scope == NULL) {
        PyErr_Clear();
        return NULL;
    }
    if (scope == Py_None) {
        Py_DECREF(scope);
        return NULL;
    }
    return scope;
}

/* Non-zero when an anyio scope entered in `task` after `boundary` is shielded. */
static int anyio_shield_inside(PyObject *task, PyObject *boundary)
{
    PyObject *cur = anyio_scope_of(task);
    int depth = 0;
    while (cur != NULL && cur != boundary && depth++ < 10000) {
        PyObject *sh = PyObject_GetAttr(cur, s_shield_attr);
        if (sh == NULL) {
            PyErr_Clear();
            Py_DECREF(cur);
            return 0;
        }
        int shielded = sh == Py_True;
        Py_DECREF(sh);
        if (shielded) {
            Py_DECREF(cur);
            return 1;
        }
        PyObject *parent = PyObject_GetAttr(cur, s_parent_scope);
        Py_DECREF(cur);
        if (parent == NULL) {
            PyErr_Clear();
            return 0;
        }
        if (parent == Py_None) {
            Py_DECREF(parent);
            return 0;
        }
        cur = parent;
    }
    Py_XDECREF(cur);
    return 0;
}

/* ------------------------------------------------------------------------- */
/* Delivery                                                                   */

static int task_started(PyObject *task)
{
    PyObject *coro = PyObject_CallMethodNoArgs(task, s_get_coro);
    if (coro == NULL) {
        PyErr_Clear();
        return 1;
    }
    int started = 1;
    PyObject *v = PyObject_GetAttr(coro, s_cr_running);
    if (v != NULL && v == Py_False) {
        Py_DECREF(v);
        v = PyObject_GetAttr(coro, s_cr_suspended);
        if (v != NULL && v == Py_False) {
            Py_DECREF(v);
            v = PyObject_GetAttr(coro, s_cr_frame);
            started = (v == NULL || v == Py_None);
        }
    }
    Py_XDECREF(v);
    PyErr_Clear();
    Py_DECREF(coro);
    return started;
}

/* The innermost scope of `task` (borrowed) or NULL. */
static Scope *innermost_of(LoopEngine *e, PyObject *task)
{
    if (e == NULL) {
        return NULL;
    }
    cc_pmap_node *n = cc_pmap_get(&e->hosts, task);
    if (n != NULL) {
        return SCOPE_FROM_HNODE(n);
    }
    if (e->adopted == NULL || PyDict_GET_SIZE(e->adopted) == 0) {
        return NULL;
    }
    PyObject *s = PyDict_GetItemWithError(e->adopted, task);
    if (s == NULL) {
        PyErr_Clear();
        return NULL;
    }
    return (Scope *)s; /* the dict is private: only scopes are stored */
}

/* Make `to` the innermost scope of `task` in the host map: `to` (a scope entered by task)
 * takes the task's map entry; NULL or a scope of another task (an adopted root, found in
 * e->adopted) removes the entry. 0, or -1 with MemoryError (nothing changed). */
static int set_innermost(LoopEngine *e, PyObject *task, Scope *to)
{
    cc_pmap_node *cur = cc_pmap_get(&e->hosts, task);
    if (to != NULL && SCOPE_HOST(to) == task) {
        if (cur == &to->hnode) {
            return 0;
        }
        if (cur != NULL) {
            cc_pmap_replace(&e->hosts, cur, &to->hnode);
            return 0;
        }
        if (cc_pmap_insert(&e->hosts, &to->hnode) < 0) {
            PyErr_NoMemory();
            return -1;
        }
        return 0;
    }
    if (cur != NULL) {
        cc_pmap_remove(&e->hosts, cur);
    }
    return 0;
}

/* The closest cancel_called scope above (and including) s, stopping at a shield. */
static Scope *cancel_origin(Scope *s)
{
    while (s != NULL) {
        if (s->cancel_called) {
            return s;
        }
        if (s->shield) {
            return NULL;
        }
        s = s->parent;
    }
    return NULL;
}

/* Try to cancel one task now. `current` is the running task (or None). The task
 * is always added to the pending set so it is re-checked next iteration.
 * Returns 0, or -1 on a hard error. */
static int deliver_to_task(LoopEngine *e, PyObject *task, PyObject *current, int is_host)
{
    if (task != current) {
        PyObject *done = PyObject_CallMethodNoArgs(task, G.s_done);
        if (done == NULL) {
            return -1;
        }
        int is_done = PyObject_IsTrue(done);
        Py_DECREF(done);
        if (is_done) {
            return 0;
        }
    }
    if (PySet_Add(e->pending, task) < 0) {
        return -1;
    }
    if (task == current) {
        return 0; /* deferred to the coalesced callback */
    }
    PyObject *mc = PyObject_GetAttr(task, G.s_must_cancel);
    if (mc == NULL) {
        return -1;
    }
    int must = PyObject_IsTrue(mc);
    Py_DECREF(mc);
    if (must) {
        return 0;
    }
    if (!is_host && !task_started(task)) {
        return 0; /* like trio: a new task runs until its first checkpoint */
    }
    PyObject *waiter = PyObject_GetAttr(task, G.s_fut_waiter);
    if (waiter == NULL) {
        return -1;
    }
    int deliver = 1;
    if (waiter != Py_None) {
        PyObject *wd = PyObject_CallMethodNoArgs(waiter, G.s_done);
        if (wd == NULL) {
            Py_DECREF(waiter);
            return -1;
        }
        deliver = !PyObject_IsTrue(wd);
        Py_DECREF(wd);
    }
    Py_DECREF(waiter);
    if (!deliver) {
        return 0;
    }
    Scope *inner = innermost_of(e, task);
    Scope *origin = cancel_origin(inner);
    /* the anyio scopes that belong to the cancelled region start after the origin's own
     * companion shield (or after what was there when the origin was entered) */
    PyObject *boundary = NULL;
    if (origin != NULL) {
        boundary =
            SX(origin, anyio_shield) != NULL ? SX(origin, anyio_shield) : SX(origin, anyio_outer);
    }
    if (anyio_shield_inside(task, boundary)) {
        return 0; /* an anyio shield inside the cancelled scope: re-checked next iteration */
    }
    PyObject *msg = origin != NULL && SX(origin, reason) != NULL ? SX(origin, reason) : Py_None;
    PyObject *r = PyObject_CallMethodOneArg(task, G.s_cancel, msg);
    if (r == NULL) {
        return -1;
    }
    int ok = PyObject_IsTrue(r);
    Py_DECREF(r);
    if (ok && inner != NULL && SCOPE_HOST(inner) == task && inner->state == 1 &&
        inner->cancel_count < INT16_MAX) {
        inner->cancel_count++;
    }
    return 0;
}

/* Deliver to every task whose innermost scope lies in s's subtree. */
static int deliver_scope(LoopEngine *e, Scope *s, PyObject *current)
{
    if (s->state != 1) {
        return 0;
    }
    if (s->host_inside) {
        if (deliver_to_task(e, SCOPE_HOST(s), current, 1) < 0) {
            return -1;
        }
    }
    if (SX(s, members) != NULL) {
        for (Py_ssize_t i = 0; SX(s, members) != NULL && i < PyList_GET_SIZE(s->x->members); i++) {
            PyObject *t = PyList_GET_ITEM(s->x->members, i);
            if (innermost_of(e, t) == s) {
                Py_INCREF(t);
                int rc = deliver_to_task(e, t, current, 0);
                Py_DECREF(t);
                if (rc < 0) {
                    return -1;
                }
            }
        }
    }
    for (Scope *c = s->first_child; c != NULL; c = c->next_sib) {
        if (!c->shield && !c->cancel_called) {
            if (deliver_scope(e, c, current) < 0) {
                return -1;
            }
        }
    }
    return 0;
}

/* Mark s cancelled and deliver now (we are on the loop thread). */
static int scope_cancel_here(Scope *s, PyObject *loop, PyObject *reason_text, int from_deadline)
{
    if (s->cancel_called) {
        return 0;
    }
    s->cancel_called = 1;
    if (from_deadline) {
        s->deadline_reached = 1;
    }
    if (SX(s, reason) == NULL) {
        ScopeX *x = scope_ext(s);
        if (x == NULL) {
            return -1;
        }
        if (reason_text != NULL && reason_text != Py_None) {
            x->reason = PyUnicode_FromFormat("Cancelled by cancel scope %p; reason: %U", (void *)s,
                                             reason_text);
        } else {
            x->reason = PyUnicode_FromFormat("Cancelled by cancel scope %p", (void *)s);
        }
        if (x->reason == NULL) {
            return -1;
        }
    }
    if (s->state != 1 || s->engine == NULL) {
        return 0;
    }
    LoopEngine *e = s->engine;
    if (cc_heap_contains(&s->node)) {
        cc_heap_remove(&e->heap, &s->node);
    }
    PyObject *current = current_task_of(loop);
    if (current == NULL) {
        return -1;
    }
    int rc = deliver_scope(e, s, current);
    if (rc == 0 && PySet_GET_SIZE(e->pending) > 0) {
        rc = engine_schedule_redeliver(e, loop);
    }
    Py_DECREF(current);
    return rc;
}

static PyObject *engine_on_timer(PyObject *self, PyObject *Py_UNUSED(args))
{
    LoopEngine *e = (LoopEngine *)self;
    Py_CLEAR(e->timer);
    e->timer_when = INFINITY;
    PyObject *loop = engine_loop(e);
    if (loop == NULL) {
        Py_RETURN_NONE;
    }
    Py_INCREF(loop);
    double now;
    if (loop_time(loop, &now) < 0) {
        Py_DECREF(loop);
        return NULL;
    }
    cc_heap_node *n;
    while ((n = cc_heap_peek(&e->heap)) != NULL && n->deadline <= now + e->resolution) {
        cc_heap_pop(&e->heap);
        Scope *s = SCOPE_FROM_NODE(n);
        Py_INCREF(s);
        int rc = scope_cancel_here(s, loop, NULL, 1);
        Py_DECREF(s);
        if (rc < 0) {
            engine_report_error("hother.cancelable: delivering a deadline cancellation");
        }
    }
    if ((n = cc_heap_peek(&e->heap)) != NULL) {
        if (engine_arm(e, loop, n->deadline) < 0) {
            Py_DECREF(loop);
            return NULL;
        }
    }
    Py_DECREF(loop);
    Py_RETURN_NONE;
}

static PyObject *engine_redeliver(PyObject *self, PyObject *Py_UNUSED(args))
{
    LoopEngine *e = (LoopEngine *)self;
    Py_CLEAR(e->redeliver);
    PyObject *loop = engine_loop(e);
    if (loop == NULL || PySet_GET_SIZE(e->pending) == 0) {
        Py_RETURN_NONE;
    }
    Py_INCREF(loop);
    PyObject *tasks = PySequence_List(e->pending);
    if (tasks == NULL) {
        Py_DECREF(loop);
        return NULL;
    }
    if (PySet_Clear(e->pending) < 0) {
        Py_DECREF(tasks);
        Py_DECREF(loop);
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(tasks);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *t = PyList_GET_ITEM(tasks, i);
        Scope *inner = innermost_of(e, t);
        if (inner == NULL || !effectively_cancelled(inner)) {
            continue;
        }
        int is_host = SCOPE_HOST(inner) == t;
        if (deliver_to_task(e, t, Py_None, is_host) < 0) {
            engine_report_error("hother.cancelable: re-delivering a cancellation");
        }
    }
    Py_DECREF(tasks);
    /* Drop tasks that are done so the set does not keep them. */
    if (PySet_GET_SIZE(e->pending) > 0) {
        if (engine_schedule_redeliver(e, loop) < 0) {
            Py_DECREF(loop);
            return NULL;
        }
    }
    Py_DECREF(loop);
    Py_RETURN_NONE;
}

static PyObject *engine_stats(LoopEngine *e)
{
    return Py_BuildValue("{s:i,s:n,s:n,s:n,s:d}", "armed_timers", handle_of(e->timer) != NULL,
                         "deadlines", (Py_ssize_t)cc_heap_len(&e->heap), "pending_redelivery",
                         PySet_GET_SIZE(e->pending), "active_scopes", e->active_scopes,
                         "timer_when", e->timer_when);
}

static int LoopEngine_traverse(LoopEngine *e, visitproc visit, void *arg)
{
    Py_VISIT(e->timer);
    Py_VISIT(e->redeliver);
    Py_VISIT(e->pending);
    Py_VISIT(e->adopted);
    Py_VISIT(e->on_release);
    Py_VISIT(e->on_timer);
    Py_VISIT(e->on_redeliver);
    return 0;
}

static int LoopEngine_clear(LoopEngine *e)
{
    Py_CLEAR(e->timer);
    Py_CLEAR(e->redeliver);
    Py_CLEAR(e->pending);
    Py_CLEAR(e->adopted);
    Py_CLEAR(e->on_release);
    Py_CLEAR(e->on_timer);
    Py_CLEAR(e->on_redeliver);
    return 0;
}

static void LoopEngine_dealloc(LoopEngine *e)
{
    PyObject_GC_UnTrack(e);
    LoopEngine_clear(e);
    if (e->weakreflist != NULL) {
        PyObject_ClearWeakRefs((PyObject *)e);
    }
    Py_CLEAR(e->loop_ref);
    cc_heap_free(&e->heap);
    cc_pmap_free(&e->hosts); /* empty: every entered scope holds its engine */
    G.live_loop_engines--;
    PyObject_GC_Del(e);
}

static PyObject *release_task(PyObject *self, PyObject *task);

static PyMethodDef LoopEngine_methods[] = {
    {"_on_timer", engine_on_timer, METH_NOARGS, NULL},
    {"_redeliver", engine_redeliver, METH_NOARGS, NULL},
    {"_release_task", release_task, METH_O, NULL},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject LoopEngine_Type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "hother.cancelable._engine.LoopEngine",
    .tp_basicsize = sizeof(LoopEngine),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Per-event-loop engine state: deadline heap, the armed timer, pending re-delivery.",
    .tp_traverse = (traverseproc)LoopEngine_traverse,
    .tp_clear = (inquiry)LoopEngine_clear,
    .tp_dealloc = (destructor)LoopEngine_dealloc,
    .tp_methods = LoopEngine_methods,
    .tp_weaklistoffset = offsetof(LoopEngine, weakreflist),
};

/* ------------------------------------------------------------------------- */
/* Scope                                                                      */

static void unlink_child(Scope *s)
{
    Scope *p = s->parent;
    if (p == NULL) {
        return;
    }
    if (s->prev_sib != NULL) {
        s->prev_sib->next_sib = s->next_sib;
    } else if (p->first_child == s) {
        p->first_child = s->next_sib;
    }
    if (s->next_sib != NULL) {
        s->next_sib->prev_sib = s->prev_sib;
    }
    s->prev_sib = s->next_sib = NULL;
}

static PyObject *Scope_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"deadline", "shield", NULL};
    PyObject *deadline = NULL, *sh = NULL;
    int shield = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|OO:CancelScope", kwlist, &deadline, &sh)) {
        return NULL;
    }
    if (sh != NULL) {
        if (!PyBool_Check(sh)) {
            PyErr_Format(PyExc_TypeError, "shield must be a bool, not %.100s",
                         Py_TYPE(sh)->tp_name);
            return NULL;
        }
        shield = sh == Py_True;
    }
    double d = INFINITY;
    if (deadline != NULL && parse_deadline(deadline, &d) < 0) {
        return NULL;
    }
    Scope *s = (Scope *)type->tp_alloc(type, 0);
    if (s == NULL) {
        return NULL;
    }
    scope_init_fields(s, shield, 0);
    s->node.deadline = d;
    return (PyObject *)s;
}

void scope_init_fields(Scope *s, int shield, int embedded)
{
    /* the object comes zeroed from tp_alloc */
    cc_heap_node_init(&s->node);
    s->node.deadline = INFINITY;
    s->shield = shield != 0;
    s->embedded = embedded != 0;
    if (!embedded) {
        G.live_scopes++; /* live_objects()["CancelScope"]: the plain scope objects */
    }
}

int scope_traverse_fields(Scope *s, visitproc visit, void *arg)
{
    Py_VISIT(s->engine);
    Py_VISIT(SCOPE_HOST(s));
    Py_VISIT(s->parent);
    if (s->x != NULL) {
        Py_VISIT(s->x->members);
        Py_VISIT(s->x->anyio_outer);
        Py_VISIT(s->x->anyio_shield);
    }
    return 0;
}

void scope_clear_fields(Scope *s)
{
    if (s->engine != NULL && s->state == 1) {
        if (cc_heap_contains(&s->node)) {
            cc_heap_remove(&s->engine->heap, &s->node);
        }
        if (s->hnode.key != NULL && cc_pmap_get(&s->engine->hosts, s->hnode.key) == &s->hnode) {
            cc_pmap_remove(&s->engine->hosts, &s->hnode);
        }
        if (s->state == 1) {
            s->engine->active_scopes--;
            s->state = 2;
        }
    }
    unlink_child(s);
    Py_CLEAR(s->engine);
    clear_host(s);
    Py_CLEAR(s->parent);
    if (s->x != NULL) {
        Py_CLEAR(s->x->members);
        Py_CLEAR(s->x->reason);
        Py_CLEAR(s->x->anyio_outer);
        Py_CLEAR(s->x->anyio_shield);
    }
}

void scope_dealloc_fields(Scope *s)
{
    if (s->weakreflist != NULL) {
        PyObject_ClearWeakRefs((PyObject *)s);
    }
    /* children keep a strong reference to their parent, so none is linked here */
    scope_clear_fields(s);
    PyMem_Free(s->x);
    s->x = NULL;
    if (!s->embedded) {
        G.live_scopes--;
    }
}

static int Scope_traverse(Scope *s, visitproc visit, void *arg)
{
    return scope_traverse_fields(s, visit, arg);
}

static int Scope_clear(Scope *s)
{
    scope_clear_fields(s);
    return 0;
}

static void Scope_dealloc(Scope *s)
{
    PyObject_GC_UnTrack(s);
    scope_dealloc_fields(s);
    Py_TYPE(s)->tp_free((PyObject *)s);
}

static void scope_detach(Scope *s);

/* What only an active scope needs (the parent is kept: cheap, and keeps
 * effectively-cancelled queries meaningful for late cancel() calls). The scope must no
 * longer be in the host map. */
static void release_active(Scope *s)
{
    clear_host(s);
    Py_CLEAR(s->engine);
    if (s->x != NULL) {
        Py_CLEAR(s->x->members);
        Py_CLEAR(s->x->anyio_outer);
    }
}

static int scope_enter_impl(Scope *s, PyObject *loop, PyObject *task, double now)
{
    LoopEngine *e = get_engine(loop);
    if (e == NULL) {
        return -1;
    }
    PyObject *cl = PyObject_CallMethodNoArgs(task, G.s_cancelling);
    if (cl == NULL) {
        return -1;
    }
    Py_ssize_t cancelling = PyLong_AsSsize_t(cl);
    Py_DECREF(cl);
    if (cancelling == -1 && PyErr_Occurred()) {
        return -1;
    }
    PyObject *outer = anyio_state >= 0 ? anyio_scope_of(task) : NULL;
    if (outer != NULL) {
        ScopeX *x = scope_ext(s);
        if (x == NULL) {
            Py_DECREF(outer);
            return -1;
        }
        Py_XSETREF(x->anyio_outer, outer);
    }
    Scope *parent = innermost_of(e, task);
    Py_INCREF(task);
    s->hnode.key = task;
    if (set_innermost(e, task, s) < 0) {
        clear_host(s);
        if (s->x != NULL) {
            Py_CLEAR(s->x->anyio_outer);
        }
        return -1;
    }
    Py_XINCREF(parent);
    s->cancelling_at_enter =
        cancelling > INT16_MAX ? INT16_MAX : (cancelling < 0 ? 0 : (int16_t)cancelling);
    Py_INCREF(e);
    s->engine = e;
    if (parent != NULL) {
        s->parent = parent; /* the reference taken above */
        if (SCOPE_HOST(parent) == task) {
            parent->host_inside = 0;
        }
        s->next_sib = parent->first_child;
        if (parent->first_child != NULL) {
            parent->first_child->prev_sib = s;
        }
        parent->first_child = s;
    }
    s->host_inside = 1;
    s->state = 1;
    e->active_scopes++;
    if (!s->cancel_called && s->node.deadline != INFINITY) {
        if (isnan(now) && loop_time(loop, &now) < 0) {
            goto undo;
        }
        if (s->node.deadline <= now) {
            if (scope_cancel_here(s, loop, NULL, 1) < 0) {
                goto undo;
            }
        } else {
            if (cc_heap_push(&e->heap, &s->node, s->node.deadline) < 0) {
                PyErr_NoMemory();
                goto undo;
            }
            if (engine_arm(e, loop, s->node.deadline) < 0) {
                goto undo;
            }
        }
    }
    if (effectively_cancelled(s)) {
        if (PySet_Add(e->pending, task) < 0 || engine_schedule_redeliver(e, loop) < 0) {
            goto undo;
        }
    }
    return 0;
undo : {
    /* a failed __enter__ gets no __exit__: leave the task where it was */
    PyObject *et, *ev, *etb;
    PyErr_Fetch(&et, &ev, &etb);
    scope_detach(s);
    PyErr_Restore(et, ev, etb);
    return -1;
}
}

/* A shielded engine scope must also stop cancellation coming from anyio's own scopes on
 * asyncio (anyio cancels tasks itself, with Task.cancel): when anyio's asyncio backend is
 * loaded, a shielded scope enters a companion anyio.CancelScope(shield=True). */
static PyObject *anyio_cancel_scope_cls;

static int enter_anyio_shield(Scope *s)
{
    if (!anyio_ready()) {
        return 0;
    }
    if (anyio_cancel_scope_cls == NULL) {
        PyObject *anyio = PyImport_ImportModule("anyio");
        if (anyio == NULL) {
            return -1;
        }
        anyio_cancel_scope_cls = PyObject_GetAttrString(anyio, "CancelScope");
        Py_DECREF(anyio);
        if (anyio_cancel_scope_cls == NULL) {
            return -1;
        }
    }
    PyObject *kw = Py_BuildValue("{s:O}", "shield", Py_True);
    if (kw == NULL) {
        return -1;
    }
    PyObject *empty = PyTuple_New(0);
    PyObject *a = empty != NULL ? PyObject_Call(anyio_cancel_scope_cls, empty, kw) : NULL;
    Py_XDECREF(empty);
    Py_DECREF(kw);
    if (a == NULL) {
        return -1;
    }
    PyObject *r = PyObject_CallMethod(a, "__enter__", NULL);
    if (r == NULL) {
        Py_DECREF(a);
        return -1;
    }
    Py_DECREF(r);
    ScopeX *x = scope_ext(s);
    if (x == NULL) {
        PyObject *et, *ev, *etb;
        PyErr_Fetch(&et, &ev, &etb); /* the MemoryError is what the caller raises */
        PyObject *res = PyObject_CallMethod(a, "__exit__", "OOO", Py_None, Py_None, Py_None);
        Py_XDECREF(res);
        PyErr_Clear();
        PyErr_Restore(et, ev, etb);
        Py_DECREF(a);
        return -1;
    }
    x->anyio_shield = a;
    return 0;
}

static int exit_anyio_shield(Scope *s, PyObject *const *args)
{
    PyObject *a = SX(s, anyio_shield);
    if (a == NULL) {
        return 0;
    }
    s->x->anyio_shield = NULL;
    PyObject *r = PyObject_CallMethod(a, "__exit__", "OOO", args[0], args[1], args[2]);
    Py_DECREF(a);
    if (r == NULL) {
        return -1;
    }
    Py_DECREF(r);
    return 0;
}

static PyObject *Scope_exit_now(Scope *s, PyObject *exc);

static PyObject *Scope_enter(PyObject *self, PyObject *Py_UNUSED(args))
{
    Scope *s = RESOLVE(self);
    if (s->state != 0) {
        PyErr_SetString(PyExc_RuntimeError,
                        "Each CancelScope may only be used for a single 'with' block");
        return NULL;
    }
    PyObject *loop = engine_running_loop();
    if (loop == NULL) {
        PyErr_SetString(PyExc_RuntimeError,
                        "CancelScope must be entered inside a running asyncio event loop");
        return NULL;
    }
    PyObject *task = current_task_of(loop);
    if (task == NULL) {
        Py_DECREF(loop);
        return NULL;
    }
    if (task == Py_None) {
        Py_DECREF(task);
        Py_DECREF(loop);
        PyErr_SetString(PyExc_RuntimeError, "CancelScope must be entered inside an asyncio task");
        return NULL;
    }
    int rc = scope_enter_impl(s, loop, task, NAN);
    Py_DECREF(task);
    Py_DECREF(loop);
    if (rc < 0) {
        return NULL;
    }
    if (s->shield && enter_anyio_shield(s) < 0) {
        PyObject *et, *ev, *etb;
        PyErr_Fetch(&et, &ev, &etb);
        PyObject *r = Scope_exit_now(s, Py_None);
        Py_XDECREF(r);
        PyErr_Clear();
        PyErr_Restore(et, ev, etb);
        return NULL;
    }
    Py_INCREF(self);
    return self;
}

/* Uncancel the host `n` times. */
static int uncancel_n(PyObject *task, Py_ssize_t n)
{
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *r = PyObject_CallMethodNoArgs(task, G.s_uncancel);
        if (r == NULL) {
            return -1;
        }
        Py_DECREF(r);
    }
    return 0;
}

/* Returns 1 (swallow), 0 (propagate) or -1 (error set: raise it instead). */
static int scope_exit_impl(Scope *s, PyObject *loop, PyObject *exc)
{
    PyObject *task = SCOPE_HOST(s); /* strong until the caller clears it */
    LoopEngine *e = s->engine;
    Scope *parent = s->parent;
    int result = 0;

    /* the host map first: it is the only step that can fail (allocation) */
    if (set_innermost(e, task, parent) < 0) {
        return -1;
    }
    s->state = 2;
    e->active_scopes--;
    if (cc_heap_contains(&s->node)) {
        cc_heap_remove(&e->heap, &s->node);
    }
    unlink_child(s);
    if (parent != NULL) {
        if (SCOPE_HOST(parent) == task) {
            parent->host_inside = 1;
        }
        if (effectively_cancelled(parent)) {
            if (PySet_Add(e->pending, task) < 0 || engine_schedule_redeliver(e, loop) < 0) {
                return -1;
            }
        }
    }
    int parent_visible = parent != NULL && !s->shield && effectively_cancelled(parent);
    if (s->cancel_called && !parent_visible) {
        if (uncancel_n(task, (Py_ssize_t)s->cancel_count) < 0) {
            return -1;
        }
        s->cancel_count = 0;
        PyObject *cl = PyObject_CallMethodNoArgs(task, G.s_cancelling);
        if (cl == NULL) {
            return -1;
        }
        Py_ssize_t now_cancelling = PyLong_AsSsize_t(cl);
        Py_DECREF(cl);
        if (now_cancelling == -1 && PyErr_Occurred()) {
            return -1;
        }
        if (now_cancelling > s->cancelling_at_enter) {
            return 0; /* a cancel that is not ours is pending: let it through */
        }
        if (exc == NULL || exc == Py_None) {
            return 0;
        }
        if (PyObject_TypeCheck(exc, (PyTypeObject *)G.CancelledError)) {
            s->cancelled_caught = 1;
            return 1;
        }
        if (PyObject_TypeCheck(exc, (PyTypeObject *)PyExc_BaseExceptionGroup)) {
            PyObject *parts = PyObject_CallMethodOneArg(exc, G.s_split, G.CancelledError);
            if (parts == NULL) {
                return -1;
            }
            if (!PyTuple_Check(parts) || PyTuple_GET_SIZE(parts) != 2) {
                Py_DECREF(parts);
                PyErr_SetString(PyExc_RuntimeError, "unexpected result of ExceptionGroup.split");
                return -1;
            }
            PyObject *matched = PyTuple_GET_ITEM(parts, 0);
            PyObject *rest = PyTuple_GET_ITEM(parts, 1);
            if (matched == Py_None) {
                Py_DECREF(parts);
                return 0;
            }
            s->cancelled_caught = 1;
            if (rest == Py_None) {
                Py_DECREF(parts);
                return 1;
            }
            PyObject *ctx = PyException_GetContext(rest);
            PyErr_SetObject((PyObject *)Py_TYPE(rest), rest);
            PyException_SetContext(rest, ctx); /* steals ctx */
            Py_DECREF(parts);
            return -1;
        }
        return 0;
    }
    if (s->cancel_count > 0) {
        if (parent != NULL && SCOPE_HOST(parent) == task && parent->state == 1) {
            int sum = (int)parent->cancel_count + s->cancel_count;
            parent->cancel_count = sum > INT16_MAX ? INT16_MAX : (int16_t)sum;
        }
        s->cancel_count = 0;
    }
    return result;
}

/* A coroutine closed outside its loop (garbage collection, loop closed): GeneratorExit
 * passes through the scope and the engine forgets it, without touching the task. */
static void scope_detach(Scope *s)
{
    LoopEngine *e = s->engine;
    PyObject *task = SCOPE_HOST(s);
    Scope *parent = s->parent;
    s->state = 2;
    if (e != NULL) {
        e->active_scopes--;
        if (cc_heap_contains(&s->node)) {
            cc_heap_remove(&e->heap, &s->node);
        }
        if (task != NULL && innermost_of(e, task) == s) {
            if (set_innermost(e, task, parent) < 0) {
                /* no memory to give the parent its entry back: at least forget s */
                PyErr_Clear();
                cc_pmap_remove(&e->hosts, &s->hnode);
            }
            if (parent != NULL && SCOPE_HOST(parent) == task) {
                parent->host_inside = 1;
            }
        }
        if (cc_pmap_get(&e->hosts, task) == &s->hnode) {
            cc_pmap_remove(&e->hosts, &s->hnode);
        }
    }
    unlink_child(s);
    s->cancel_count = 0;
    if (s->x != NULL) {
        Py_CLEAR(s->x->anyio_shield); /* anyio's own scope is finalised by anyio */
    }
    release_active(s);
}

int scope_detach_c(PyObject *scope)
{
    Scope *s = (Scope *)scope;
    if (s->state == 1) {
        scope_detach(s);
    }
    return 0;
}

static PyObject *Scope_exit(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    Scope *s = RESOLVE(self);
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "__exit__ expects 3 arguments");
        return NULL;
    }
    if (s->state != 1) {
        PyErr_SetString(PyExc_RuntimeError, "This cancel scope is not active");
        return NULL;
    }
    int closing =
        args[1] != Py_None && PyObject_TypeCheck(args[1], (PyTypeObject *)PyExc_GeneratorExit);
    PyObject *loop = engine_loop(s->engine);
    if (loop == NULL) {
        if (closing) {
            scope_detach(s);
            Py_RETURN_FALSE;
        }
        PyErr_SetString(PyExc_RuntimeError, "the event loop of this cancel scope is gone");
        return NULL;
    }
    Py_INCREF(loop);
    PyObject *running = engine_running_loop();
    if (running != loop && closing) {
        Py_XDECREF(running);
        Py_DECREF(loop);
        scope_detach(s);
        Py_RETURN_FALSE;
    }
    if (running != loop) {
        Py_XDECREF(running);
        Py_DECREF(loop);
        PyErr_SetString(
            PyExc_RuntimeError,
            "Attempted to exit a cancel scope outside the event loop it was entered in");
        return NULL;
    }
    Py_DECREF(running);
    PyObject *task = current_task_of(loop);
    if (task == NULL) {
        Py_DECREF(loop);
        return NULL;
    }
    if (task != SCOPE_HOST(s)) {
        Py_DECREF(task);
        Py_DECREF(loop);
        if (closing) {
            scope_detach(s);
            Py_RETURN_FALSE;
        }
        PyErr_SetString(
            PyExc_RuntimeError,
            "Attempted to exit cancel scope in a different task than it was entered in");
        return NULL;
    }
    Py_DECREF(task);
    if (innermost_of(s->engine, SCOPE_HOST(s)) != s) {
        Py_DECREF(loop);
        PyErr_SetString(PyExc_RuntimeError, "Attempted to exit a cancel scope that isn't the "
                                            "current task's current cancel scope");
        return NULL;
    }
    if (SX(s, anyio_shield) != NULL && exit_anyio_shield(s, args) < 0) {
        /* anyio refused (out of order): report, our own exit still runs */
        engine_report_error("hother.cancelable: exiting the companion anyio shield");
    }
    int rc = scope_exit_impl(s, loop, args[1]);
    Py_DECREF(loop);
    if (s->state == 2) {
        release_active(s);
    }
    if (rc < 0) {
        return NULL;
    }
    return PyBool_FromLong(rc);
}

static PyObject *Scope_exit_now(Scope *s, PyObject *exc)
{
    PyObject *args[3] = {Py_None, exc, Py_None};
    return Scope_exit((PyObject *)s, args, 3);
}

static PyObject *scope_cancel_cb(PyObject *self, PyObject *reason)
{
    Scope *s = (Scope *)self;
    if (s->state == 1 && s->engine != NULL) {
        PyObject *loop = engine_loop(s->engine);
        if (loop != NULL) {
            Py_INCREF(loop);
            int rc = scope_cancel_here(s, loop, reason, 0);
            Py_DECREF(loop);
            if (rc < 0) {
                return NULL;
            }
            Py_RETURN_NONE;
        }
    }
    s->cancel_called = 1;
    Py_RETURN_NONE;
}

static PyMethodDef scope_cancel_def = {"_cancel_on_loop", scope_cancel_cb, METH_O, NULL};

static PyObject *Scope_cancel(PyObject *self, PyObject *args, PyObject *kwds)
{
    Scope *s = RESOLVE(self);
    static char *kwlist[] = {"reason", NULL};
    PyObject *reason = Py_None;
    if (args != NULL && !PyArg_ParseTupleAndKeywords(args, kwds, "|O:cancel", kwlist, &reason)) {
        return NULL;
    }
    if (reason != Py_None && !PyUnicode_Check(reason)) {
        PyErr_Format(PyExc_TypeError, "reason must be a str or None, not %.100s",
                     Py_TYPE(reason)->tp_name);
        return NULL;
    }
    if (s->cancel_called) {
        Py_RETURN_NONE;
    }
    if (s->state != 1 || s->engine == NULL) {
        s->cancel_called = 1;
        if (reason != Py_None && SX(s, reason) == NULL) {
            ScopeX *x = scope_ext(s);
            if (x == NULL) {
                return NULL;
            }
            x->reason =
                PyUnicode_FromFormat("Cancelled by cancel scope %p; reason: %U", (void *)s, reason);
            if (x->reason == NULL) {
                return NULL;
            }
        }
        Py_RETURN_NONE;
    }
    PyObject *loop = engine_loop(s->engine);
    if (loop == NULL) {
        s->cancel_called = 1;
        Py_RETURN_NONE;
    }
    Py_INCREF(loop);
    PyObject *running = engine_running_loop();
    int here = running == loop;
    Py_XDECREF(running);
    if (here) {
        int rc = scope_cancel_here(s, loop, reason, 0);
        Py_DECREF(loop);
        if (rc < 0) {
            return NULL;
        }
        Py_RETURN_NONE;
    }
    /* Another thread: Task.cancel is not thread-safe, hop onto the loop. */
    PyObject *cb = PyCFunction_New(&scope_cancel_def, (PyObject *)s);
    if (cb == NULL) {
        Py_DECREF(loop);
        return NULL;
    }
    PyObject *r = PyObject_CallMethodObjArgs(loop, G.s_call_soon_threadsafe, cb, reason, NULL);
    Py_DECREF(cb);
    Py_DECREF(loop);
    if (r == NULL) {
        if (PyErr_ExceptionMatches(PyExc_RuntimeError)) {
            /* the loop is closed: nothing runs in it any more */
            PyErr_Clear();
            s->cancel_called = 1;
            Py_RETURN_NONE;
        }
        return NULL;
    }
    Py_DECREF(r);
    Py_RETURN_NONE;
}

static PyObject *Scope_get_deadline(PyObject *self, void *Py_UNUSED(c))
{
    Scope *s = RESOLVE(self);
    return PyFloat_FromDouble(s->node.deadline);
}

static int Scope_set_deadline(PyObject *self, PyObject *value, void *Py_UNUSED(c))
{
    Scope *s = RESOLVE(self);
    double d;
    if (parse_deadline(value, &d) < 0) {
        return -1;
    }
    if (cc_heap_contains(&s->node) && s->engine != NULL && s->state == 1) {
        cc_heap_update(&s->engine->heap, &s->node, d); /* keeps the heap ordered */
    } else {
        s->node.deadline = d;
    }
    if (s->state != 1 || s->engine == NULL || s->cancel_called) {
        return 0;
    }
    LoopEngine *e = s->engine;
    PyObject *loop = engine_loop(e);
    if (loop == NULL) {
        return 0;
    }
    PyObject *running = engine_running_loop();
    Py_XDECREF(running);
    if (running != loop) {
        PyErr_SetString(PyExc_RuntimeError,
                        "the deadline of an active cancel scope can only be changed from the "
                        "thread running its event loop");
        return -1;
    }
    Py_INCREF(loop);
    int rc = 0;
    if (d == INFINITY) {
        cc_heap_remove(&e->heap, &s->node);
        s->node.deadline = d;
    } else {
        double now;
        if (loop_time(loop, &now) < 0) {
            rc = -1;
        } else if (d <= now) {
            rc = scope_cancel_here(s, loop, NULL, 1);
        } else {
            if (cc_heap_contains(&s->node)) {
                cc_heap_update(&e->heap, &s->node, d);
            } else if (cc_heap_push(&e->heap, &s->node, d) < 0) {
                PyErr_NoMemory();
                rc = -1;
            }
            if (rc == 0) {
                rc = engine_arm(e, loop, d);
            }
        }
    }
    Py_DECREF(loop);
    return rc;
}

static PyObject *Scope_get_shield(PyObject *self, void *Py_UNUSED(c))
{
    Scope *s = RESOLVE(self);
    return PyBool_FromLong(s->shield);
}

static int Scope_set_shield(PyObject *self, PyObject *value, void *Py_UNUSED(c))
{
    Scope *s = RESOLVE(self);
    if (value == NULL || !PyBool_Check(value)) {
        PyErr_Format(PyExc_TypeError, "shield must be a bool, not %.100s",
                     value == NULL ? "nothing" : Py_TYPE(value)->tp_name);
        return -1;
    }
    int v = value == Py_True;
    if (v == s->shield) {
        return 0;
    }
    s->shield = (unsigned char)v;
    if (SX(s, anyio_shield) != NULL &&
        PyObject_SetAttrString(s->x->anyio_shield, "shield", value) < 0) {
        return -1;
    }
    if (!v && s->state == 1 && s->engine != NULL && s->parent != NULL &&
        effectively_cancelled(s->parent)) {
        /* unshielding inside a cancelled parent: deliver */
        PyObject *loop = engine_loop(s->engine);
        if (loop != NULL) {
            Py_INCREF(loop);
            PyObject *current = current_task_of(loop);
            int rc = -1;
            if (current != NULL) {
                rc = deliver_scope(s->engine, s, current);
                if (rc == 0) {
                    rc = engine_schedule_redeliver(s->engine, loop);
                }
                Py_DECREF(current);
            }
            Py_DECREF(loop);
            return rc;
        }
    }
    return 0;
}

static PyObject *Scope_get_flag(PyObject *self, void *closure)
{
    Scope *s = RESOLVE(self);
    switch ((int)(intptr_t)closure) {
    case 0:
        return PyBool_FromLong(s->cancel_called);
    case 1:
        return PyBool_FromLong(s->cancelled_caught);
    case 2:
        return PyBool_FromLong(s->deadline_reached);
    case 3:
        return PyBool_FromLong(s->state == 1);
    default:
        return PyBool_FromLong(s->state == 1 && effectively_cancelled(s));
    }
}

static PyObject *Scope_get_host(PyObject *self, void *Py_UNUSED(c))
{
    Scope *s = RESOLVE(self);
    PyObject *h = SCOPE_HOST(s);
    if (h == NULL) {
        Py_RETURN_NONE;
    }
    Py_INCREF(h);
    return h;
}

static PyObject *Scope_repr(PyObject *self)
{
    Scope *s = RESOLVE(self);
    const char *state = s->state == 0 ? "new" : (s->state == 1 ? "active" : "exited");
    PyObject *d = PyFloat_FromDouble(s->node.deadline);
    if (d == NULL) {
        return NULL;
    }
    PyObject *r =
        PyUnicode_FromFormat("<CancelScope %s deadline=%R shield=%s cancel_called=%s>", state, d,
                             s->shield ? "True" : "False", s->cancel_called ? "True" : "False");
    Py_DECREF(d);
    return r;
}

static PyMethodDef Scope_methods[] = {
    {"__enter__", (PyCFunction)Scope_enter, METH_NOARGS, "Enter the scope in the current task."},
    {"__exit__", (PyCFunction)(void (*)(void))Scope_exit, METH_FASTCALL,
     "Exit the scope; returns True when it swallows its own cancellation."},
    {"cancel", (PyCFunction)(void (*)(void))Scope_cancel, METH_VARARGS | METH_KEYWORDS,
     "cancel(reason=None): cancel this scope (callable from any thread)."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Scope_getset[] = {
    {"deadline", (getter)Scope_get_deadline, (setter)Scope_set_deadline,
     "Absolute deadline in loop time (math.inf: none). Past values mean already expired.", NULL},
    {"shield", (getter)Scope_get_shield, (setter)Scope_set_shield,
     "When True, cancellation of enclosing scopes does not reach inside.", NULL},
    {"cancel_called", (getter)Scope_get_flag, NULL,
     "True once cancel() ran or the deadline passed.", (void *)0},
    {"cancelled_caught", (getter)Scope_get_flag, NULL,
     "True when this scope swallowed its own cancellation on exit.", (void *)1},
    {"deadline_reached", (getter)Scope_get_flag, NULL,
     "True when the cancellation came from the deadline.", (void *)2},
    {"active", (getter)Scope_get_flag, NULL, "True between enter and exit.", (void *)3},
    {"effectively_cancelled", (getter)Scope_get_flag, NULL,
     "True when code inside this (active) scope is being cancelled.", (void *)4},
    {"host_task", (getter)Scope_get_host, NULL, "The task that entered the scope (while active).",
     NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject Scope_Type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "hother.cancelable._engine.CancelScope",
    .tp_basicsize = sizeof(Scope),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "CancelScope(deadline=math.inf, shield=False)\n\n"
              "A cancel scope for asyncio with anyio/trio semantics: a plain `with` block, "
              "single use.",
    .tp_new = Scope_new,
    .tp_traverse = (traverseproc)Scope_traverse,
    .tp_clear = (inquiry)Scope_clear,
    .tp_dealloc = (destructor)Scope_dealloc,
    .tp_methods = Scope_methods,
    .tp_getset = Scope_getset,
    .tp_repr = (reprfunc)Scope_repr,
    .tp_weaklistoffset = offsetof(Scope, weakreflist),
};

static int ScopeView_traverse(ScopeView *v, visitproc visit, void *arg)
{
    Py_VISIT(v->target);
    return 0;
}

static int ScopeView_clear(ScopeView *v)
{
    Scope *t = v->target;
    if (t != NULL) {
        if (t->x != NULL && t->x->view == (PyObject *)v) {
            t->x->view = NULL;
        }
        v->target = NULL;
        Py_DECREF(t);
    }
    return 0;
}

static void ScopeView_dealloc(ScopeView *v)
{
    PyObject_GC_UnTrack(v);
    if (v->base.weakreflist != NULL) {
        PyObject_ClearWeakRefs((PyObject *)v);
    }
    ScopeView_clear(v);
    Py_TYPE(v)->tp_free((PyObject *)v);
}

static PyObject *ScopeView_new(PyTypeObject *Py_UNUSED(t), PyObject *Py_UNUSED(a),
                               PyObject *Py_UNUSED(k))
{
    PyErr_SetString(PyExc_TypeError,
                    "the scope view of an operation cannot be created directly (use op.scope)");
    return NULL;
}

static PyTypeObject ScopeView_Type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "hother.cancelable._engine.OperationScope",
    .tp_basicsize = sizeof(ScopeView),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "The cancel scope of a running Cancellable (a CancelScope acting on the operation).",
    .tp_base = &Scope_Type,
    .tp_new = ScopeView_new,
    .tp_traverse = (traverseproc)ScopeView_traverse,
    .tp_clear = (inquiry)ScopeView_clear,
    .tp_dealloc = (destructor)ScopeView_dealloc,
};

PyObject *scope_public(Scope *s)
{
    if (!s->embedded) {
        Py_INCREF(s);
        return (PyObject *)s;
    }
    ScopeX *x = scope_ext(s);
    if (x == NULL) {
        return NULL;
    }
    if (x->view != NULL) {
        Py_INCREF(x->view);
        return x->view;
    }
    ScopeView *v = PyObject_GC_New(ScopeView, &ScopeView_Type);
    if (v == NULL) {
        return NULL;
    }
    memset((char *)v + sizeof(PyObject), 0, sizeof(ScopeView) - sizeof(PyObject));
    cc_heap_node_init(&v->base.node);
    v->base.node.deadline = INFINITY;
    Py_INCREF(s);
    v->target = s;
    x->view = (PyObject *)v; /* borrowed: cleared by the view's dealloc */
    PyObject_GC_Track(v);
    return (PyObject *)v;
}

/* Drop every entry of `task` (host map and adopted root). Never raises. */
static void forget_task(LoopEngine *e, PyObject *task)
{
    cc_pmap_node *n = cc_pmap_get(&e->hosts, task);
    if (n != NULL) {
        cc_pmap_remove(&e->hosts, n);
    }
    if (e->adopted != NULL && PyDict_GET_SIZE(e->adopted) > 0 &&
        PyDict_DelItem(e->adopted, task) < 0) {
        PyErr_Clear();
    }
}

/* Number of tasks with an innermost scope in e. */
static Py_ssize_t engine_task_count(LoopEngine *e)
{
    Py_ssize_t n = (Py_ssize_t)cc_pmap_len(&e->hosts);
    Py_ssize_t pos = 0;
    PyObject *k, *v;
    while (e->adopted != NULL && PyDict_Next(e->adopted, &pos, &k, &v)) {
        n += cc_pmap_get(&e->hosts, k) == NULL;
    }
    return n;
}

/* Append the tasks with an innermost scope in e to list. 0 or -1. */
static int engine_task_keys(LoopEngine *e, PyObject *list)
{
    size_t bucket = 0;
    cc_pmap_node *cursor = NULL, *n;
    while ((n = cc_pmap_next(&e->hosts, &bucket, &cursor)) != NULL) {
        if (PyList_Append(list, (PyObject *)n->key) < 0) {
            return -1;
        }
    }
    Py_ssize_t pos = 0;
    PyObject *k, *v;
    while (e->adopted != NULL && PyDict_Next(e->adopted, &pos, &k, &v)) {
        if (cc_pmap_get(&e->hosts, k) == NULL && PyList_Append(list, k) < 0) {
            return -1;
        }
    }
    return 0;
}

/* ------------------------------------------------------------------------- */
/* C API for the other files of the binding (declared in engine.h)           */

int scope_enter_c(PyObject *scope, PyObject *loop, PyObject *task, double timeout)
{
    Scope *s = (Scope *)scope;
    if (s->state != 0) {
        PyErr_SetString(PyExc_RuntimeError,
                        "Each CancelScope may only be used for a single 'with' block");
        return -1;
    }
    double now = NAN;
    if (timeout != INFINITY) {
        if (loop_time(loop, &now) < 0) {
            return -1;
        }
        s->node.deadline = now + timeout;
    }
    return scope_enter_impl(s, loop, task, now);
}

int scope_exit_c(PyObject *scope, PyObject *loop, PyObject *task, PyObject *exc)
{
    Scope *s = (Scope *)scope;
    if (s->state != 1) {
        PyErr_SetString(PyExc_RuntimeError, "This cancel scope is not active");
        return -1;
    }
    if (task != SCOPE_HOST(s)) {
        PyErr_SetString(
            PyExc_RuntimeError,
            "Attempted to exit cancel scope in a different task than it was entered in");
        return -1;
    }
    if (innermost_of(s->engine, SCOPE_HOST(s)) != s) {
        PyErr_SetString(PyExc_RuntimeError, "Attempted to exit a cancel scope that isn't the "
                                            "current task's current cancel scope");
        return -1;
    }
    int rc = scope_exit_impl(s, loop, exc);
    if (s->state == 2) {
        release_active(s);
    }
    return rc;
}

void scope_flags(PyObject *scope, int *cancel_called, int *deadline_reached)
{
    Scope *s = (Scope *)scope;
    *cancel_called = s->cancel_called;
    *deadline_reached = s->deadline_reached;
}

/* ------------------------------------------------------------------------- */
/* _engine._task_scopes: a view over the per-loop task dicts (introspection)  */
/* Reads and writes go to the engine of the task's loop; values must be scopes. */

typedef struct {
    PyObject_HEAD
} TaskScopesView;

static LoopEngine *engine_of_task(PyObject *task, int create)
{
    int ok = PyObject_IsInstance(task, G.FutureType);
    if (ok < 0) {
        return NULL;
    }
    if (!ok) {
        PyErr_Format(PyExc_TypeError, "key must be an asyncio.Task, not %.100s",
                     Py_TYPE(task)->tp_name);
        return NULL;
    }
    PyObject *loop = PyObject_CallMethod(task, "get_loop", NULL);
    if (loop == NULL) {
        return NULL;
    }
    LoopEngine *e = create ? get_engine(loop) : find_engine(loop);
    Py_DECREF(loop);
    return e;
}

static PyObject *view_get(PyObject *Py_UNUSED(self), PyObject *const *args, Py_ssize_t n)
{
    if (n < 1 || n > 2) {
        PyErr_SetString(PyExc_TypeError, "get(task, default=None)");
        return NULL;
    }
    LoopEngine *e = engine_of_task(args[0], 0);
    if (e == NULL && PyErr_Occurred()) {
        return NULL;
    }
    Scope *s = innermost_of(e, args[0]);
    if (s != NULL) {
        return scope_public(s);
    }
    PyObject *r = n == 2 ? args[1] : Py_None;
    Py_INCREF(r);
    return r;
}

static PyObject *view_pop(PyObject *Py_UNUSED(self), PyObject *const *args, Py_ssize_t n)
{
    if (n < 1 || n > 2) {
        PyErr_SetString(PyExc_TypeError, "pop(task[, default])");
        return NULL;
    }
    LoopEngine *e = engine_of_task(args[0], 0);
    if (e == NULL && PyErr_Occurred()) {
        return NULL;
    }
    Scope *s = innermost_of(e, args[0]);
    if (s == NULL) {
        if (n == 2) {
            Py_INCREF(args[1]);
            return args[1];
        }
        PyErr_SetObject(PyExc_KeyError, args[0]);
        return NULL;
    }
    PyObject *r = scope_public(s);
    if (r == NULL) {
        return NULL;
    }
    forget_task(e, args[0]);
    return r;
}

static PyObject *view_subscript(PyObject *self, PyObject *key)
{
    LoopEngine *e = engine_of_task(key, 0);
    (void)self;
    if (e == NULL && PyErr_Occurred()) {
        return NULL;
    }
    Scope *s = innermost_of(e, key);
    if (s == NULL) {
        PyErr_SetObject(PyExc_KeyError, key);
        return NULL;
    }
    return scope_public(s);
}

static int view_ass_subscript(PyObject *Py_UNUSED(self), PyObject *key, PyObject *value)
{
    LoopEngine *e = engine_of_task(key, value != NULL);
    if (e == NULL) {
        if (!PyErr_Occurred()) {
            PyErr_SetObject(PyExc_KeyError, key);
        }
        return -1;
    }
    if (value == NULL) {
        if (innermost_of(e, key) == NULL) {
            PyErr_SetObject(PyExc_KeyError, key);
            return -1;
        }
        forget_task(e, key);
        return 0;
    }
    if (!PyObject_TypeCheck(value, &Scope_Type)) {
        PyErr_Format(PyExc_TypeError, "value must be a CancelScope, not %.100s",
                     Py_TYPE(value)->tp_name);
        return -1;
    }
    Scope *to = RESOLVE(value);
    if (SCOPE_HOST(to) == key) {
        if (PyDict_GET_SIZE(e->adopted) > 0 && PyDict_DelItem(e->adopted, key) < 0) {
            PyErr_Clear();
        }
        return set_innermost(e, key, to);
    }
    if (PyDict_SetItem(e->adopted, key, (PyObject *)to) < 0) {
        return -1;
    }
    return set_innermost(e, key, NULL);
}

static Py_ssize_t view_len(PyObject *Py_UNUSED(self))
{
    Py_ssize_t n = 0;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(all_engines); i++) {
        PyObject *e = PyWeakref_GetObject(PyList_GET_ITEM(all_engines, i));
        if (e != Py_None) {
            n += engine_task_count((LoopEngine *)e);
        }
    }
    return n;
}

static int view_contains(PyObject *Py_UNUSED(self), PyObject *key)
{
    LoopEngine *e = engine_of_task(key, 0);
    if (e == NULL) {
        if (PyErr_Occurred()) {
            if (PyErr_ExceptionMatches(PyExc_TypeError)) {
                PyErr_Clear();
                return 0;
            }
            return -1;
        }
        return 0;
    }
    return innermost_of(e, key) != NULL;
}

static PyObject *view_iter(PyObject *Py_UNUSED(self))
{
    PyObject *keys = PyList_New(0);
    if (keys == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(all_engines); i++) {
        PyObject *e = PyWeakref_GetObject(PyList_GET_ITEM(all_engines, i));
        if (e == Py_None) {
            continue;
        }
        if (engine_task_keys((LoopEngine *)e, keys) < 0) {
            Py_DECREF(keys);
            return NULL;
        }
    }
    PyObject *it = PyObject_GetIter(keys);
    Py_DECREF(keys);
    return it;
}

static PyMethodDef view_methods[] = {
    {"get", (PyCFunction)(void (*)(void))view_get, METH_FASTCALL, NULL},
    {"pop", (PyCFunction)(void (*)(void))view_pop, METH_FASTCALL, NULL},
    {NULL, NULL, 0, NULL},
};

static PyMappingMethods view_as_mapping = {
    .mp_length = view_len,
    .mp_subscript = view_subscript,
    .mp_ass_subscript = view_ass_subscript,
};

static PySequenceMethods view_as_sequence = {
    .sq_contains = view_contains,
};

static PyTypeObject TaskScopesView_Type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "hother.cancelable._engine._TaskScopesView",
    .tp_basicsize = sizeof(TaskScopesView),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Introspection: task -> its innermost engine scope, across every loop's engine.",
    .tp_methods = view_methods,
    .tp_as_mapping = &view_as_mapping,
    .tp_as_sequence = &view_as_sequence,
    .tp_iter = view_iter,
};

/* ------------------------------------------------------------------------- */
/* Module functions                                                           */

static PyObject *release_task(PyObject *self, PyObject *task)
{
    LoopEngine *e = (LoopEngine *)self;
    if (e->adopted == NULL || PyDict_GET_SIZE(e->adopted) == 0) {
        Py_RETURN_NONE;
    }
    PyObject *found = PyDict_GetItemWithError(e->adopted, task);
    if (found == NULL) {
        PyErr_Clear(); /* unhashable: never adopted */
        Py_RETURN_NONE;
    }
    /* the task's root is an adopted membership: drop it */
    Scope *scope = (Scope *)found;
    Py_INCREF(scope);
    PyObject *members = SX(scope, members);
    if (members != NULL) {
        Py_ssize_t n = PyList_GET_SIZE(members);
        for (Py_ssize_t i = 0; i < n; i++) {
            if (PyList_GET_ITEM(members, i) == task) {
                if (PySequence_DelItem(members, i) < 0) {
                    Py_DECREF(scope);
                    return NULL;
                }
                break;
            }
        }
    }
    Py_DECREF(scope);
    if (PyDict_DelItem(e->adopted, task) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *adopt_task(PyObject *Py_UNUSED(m), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "adopt_task(task, scope) takes 2 arguments");
        return NULL;
    }
    PyObject *task = args[0];
    if (!PyObject_TypeCheck(args[1], &Scope_Type)) {
        PyErr_Format(PyExc_TypeError, "scope must be a CancelScope, not %.100s",
                     Py_TYPE(args[1])->tp_name);
        return NULL;
    }
    Scope *s = RESOLVE(args[1]);
    if (s->state != 1) {
        PyErr_SetString(PyExc_RuntimeError, "adopt_task: the scope is not active");
        return NULL;
    }
    int is_future = PyObject_IsInstance(task, G.FutureType);
    if (is_future < 0) {
        return NULL;
    }
    int coro_ok = is_future ? has_attr_strict(task, "get_coro") : 0;
    if (coro_ok < 0) {
        return NULL;
    }
    if (!coro_ok) {
        PyErr_Format(PyExc_TypeError, "task must be an asyncio.Task, not %.100s",
                     Py_TYPE(task)->tp_name);
        return NULL;
    }
    LoopEngine *e = s->engine;
    int present = innermost_of(e, task) != NULL;
    if (present) {
        PyErr_SetString(PyExc_RuntimeError, "adopt_task: the task is already inside a scope");
        return NULL;
    }
    /* the release callback first: whatever fails after it, the task is released when done */
    PyObject *r = PyObject_CallMethodOneArg(task, G.s_add_done_callback, e->on_release);
    if (r == NULL) {
        return NULL;
    }
    Py_DECREF(r);
    ScopeX *x = scope_ext(s);
    if (x == NULL) {
        return NULL;
    }
    if (x->members == NULL) {
        x->members = PyList_New(0);
        if (x->members == NULL) {
            return NULL;
        }
    }
    if (PyList_Append(x->members, task) < 0) {
        return NULL;
    }
    if (PyDict_SetItem(e->adopted, task, (PyObject *)s) < 0) {
        return NULL;
    }
    if (effectively_cancelled(s)) {
        PyObject *loop = engine_loop(s->engine);
        if (loop != NULL) {
            Py_INCREF(loop);
            int rc = PySet_Add(s->engine->pending, task);
            if (rc == 0) {
                rc = engine_schedule_redeliver(s->engine, loop);
            }
            Py_DECREF(loop);
            if (rc < 0) {
                return NULL;
            }
        }
    }
    Py_RETURN_NONE;
}

static PyObject *current_scope(PyObject *Py_UNUSED(m), PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"task", NULL};
    PyObject *task = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|O:current_scope", kwlist, &task)) {
        return NULL;
    }
    PyObject *loop = NULL, *owned = NULL;
    if (task != Py_None) {
        int ok = PyObject_IsInstance(task, G.FutureType);
        if (ok < 0) {
            return NULL;
        }
        int coro_ok = ok ? has_attr_strict(task, "get_coro") : 0;
        if (coro_ok < 0) {
            return NULL;
        }
        if (!coro_ok) {
            PyErr_Format(PyExc_TypeError, "task must be an asyncio.Task or None, not %.100s",
                         Py_TYPE(task)->tp_name);
            return NULL;
        }
        loop = PyObject_CallMethod(task, "get_loop", NULL);
        if (loop == NULL) {
            return NULL;
        }
    } else {
        loop = engine_running_loop();
        if (loop == NULL) {
            Py_RETURN_NONE;
        }
        owned = engine_current_task(loop);
        if (owned == NULL) {
            Py_DECREF(loop);
            return NULL;
        }
        task = owned;
    }
    Scope *s = innermost_of(find_engine(loop), task);
    Py_DECREF(loop);
    Py_XDECREF(owned);
    if (s == NULL) {
        Py_RETURN_NONE;
    }
    return scope_public(s);
}

static PyObject *loop_stats(PyObject *Py_UNUSED(m), PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"loop", NULL};
    PyObject *loop = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|O:loop_stats", kwlist, &loop)) {
        return NULL;
    }
    PyObject *owned = NULL;
    if (loop == Py_None) {
        owned = engine_running_loop();
        if (owned == NULL) {
            PyErr_SetString(PyExc_RuntimeError, "loop_stats(): no running event loop; pass loop=");
            return NULL;
        }
        loop = owned;
    } else {
        int ok = PyObject_IsInstance(loop, abstract_loop_type);
        if (ok < 0) {
            return NULL;
        }
        if (!ok) {
            PyErr_Format(PyExc_TypeError, "loop must be an asyncio event loop or None, not %.100s",
                         Py_TYPE(loop)->tp_name);
            return NULL;
        }
    }
    LoopEngine *eng = find_engine(loop);
    Py_XDECREF(owned);
    if (eng == NULL) {
        return Py_BuildValue("{s:i,s:i,s:i,s:i,s:d}", "armed_timers", 0, "deadlines", 0,
                             "pending_redelivery", 0, "active_scopes", 0, "timer_when", INFINITY);
    }
    return engine_stats(eng);
}

static PyObject *armed_timers(PyObject *Py_UNUSED(m), PyObject *Py_UNUSED(args))
{
    Py_ssize_t n = 0;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(all_engines); i++) {
        PyObject *e = PyWeakref_GetObject(PyList_GET_ITEM(all_engines, i));
        if (e != Py_None) {
            n += handle_of(((LoopEngine *)e)->timer) != NULL;
        }
    }
    return PyLong_FromSsize_t(n);
}

static PyMethodDef scope_module_methods[] = {
    {"adopt_task", (PyCFunction)(void (*)(void))adopt_task, METH_FASTCALL,
     "adopt_task(task, scope): run a not-yet-started task inside `scope` (task groups)."},
    {"current_scope", (PyCFunction)(void (*)(void))current_scope, METH_VARARGS | METH_KEYWORDS,
     "current_scope(task=None): the innermost engine scope of a task, or None."},
    {"loop_stats", (PyCFunction)(void (*)(void))loop_stats, METH_VARARGS | METH_KEYWORDS,
     "loop_stats(loop=None) -> dict: armed_timers, deadlines, pending_redelivery, "
     "active_scopes, timer_when."},
    {"armed_timers", armed_timers, METH_NOARGS,
     "armed_timers() -> int: loop timers currently armed by the engine, all loops together."},
    {NULL, NULL, 0, NULL},
};

int engine_scope_init(PyObject *m)
{
    if (PyType_Ready(&Scope_Type) < 0 || PyType_Ready(&LoopEngine_Type) < 0 ||
        PyType_Ready(&ScopeView_Type) < 0) {
        return -1;
    }
    /* one call at a time: none may run with the exception of a failed one set */
    if ((all_engines = PyList_New(0)) == NULL) {
        return -1;
    }
    if ((s_engine_attr = PyUnicode_InternFromString(ENGINE_ATTR)) == NULL) {
        return -1;
    }
    if ((s_cancel_scope = PyUnicode_InternFromString("cancel_scope")) == NULL) {
        return -1;
    }
    if ((s_parent_scope = PyUnicode_InternFromString("_parent_scope")) == NULL) {
        return -1;
    }
    if ((s_shield_attr = PyUnicode_InternFromString("shield")) == NULL) {
        return -1;
    }
    {
        PyObject *be = PyImport_ImportModule("asyncio.base_events");
        if (be == NULL) {
            return -1;
        }
        PyObject *cls = PyObject_GetAttrString(be, "BaseEventLoop");
        Py_DECREF(be);
        if (cls == NULL) {
            return -1;
        }
        base_loop_time = PyObject_GetAttrString(cls, "time");
        Py_DECREF(cls);
        if (base_loop_time == NULL) {
            return -1;
        }
        PyObject *ev = PyImport_ImportModule("asyncio.events");
        if (ev == NULL) {
            return -1;
        }
        abstract_loop_type = PyObject_GetAttrString(ev, "AbstractEventLoop");
        Py_DECREF(ev);
        if (abstract_loop_type == NULL) {
            return -1;
        }
    }
    if ((s_get_coro = PyUnicode_InternFromString("get_coro")) == NULL) {
        return -1;
    }
    if ((s_cr_running = PyUnicode_InternFromString("cr_running")) == NULL) {
        return -1;
    }
    if ((s_cr_suspended = PyUnicode_InternFromString("cr_suspended")) == NULL) {
        return -1;
    }
    if ((s_cr_frame = PyUnicode_InternFromString("cr_frame")) == NULL) {
        return -1;
    }
    Py_INCREF(&Scope_Type);
    if (PyModule_AddObject(m, "CancelScope", (PyObject *)&Scope_Type) < 0) {
        Py_DECREF(&Scope_Type);
        return -1;
    }
    if (PyModule_AddType(m, &ScopeView_Type) < 0) {
        return -1;
    }
    Py_INCREF(&LoopEngine_Type);
    if (PyModule_AddObject(m, "LoopEngine", (PyObject *)&LoopEngine_Type) < 0) {
        Py_DECREF(&LoopEngine_Type);
        return -1;
    }
    if (PyModule_AddFunctions(m, scope_module_methods) < 0) {
        return -1;
    }
    if (PyType_Ready(&TaskScopesView_Type) < 0) {
        return -1;
    }
    PyObject *view = PyType_GenericNew(&TaskScopesView_Type, NULL, NULL);
    if (view == NULL || PyModule_AddObject(m, "_task_scopes", view) < 0) {
        Py_XDECREF(view);
        return -1;
    }
    return 0;
}
