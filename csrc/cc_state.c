/* cc_state: one-shot, thread-safe cancellation state (see cc_state.h).
 *
 * Memory ordering: the winning compare-exchange is acq_rel; the winner then
 * writes reason/cancelled_at with plain stores and publishes them with a
 * release store of CC_CANCELLED. Readers load the phase with acquire, so a
 * reader that sees CC_CANCELLED also sees the reason and time.
 */
#define _POSIX_C_SOURCE 200809L

#include "cc_state.h"

#include <time.h>

void cc_state_init(cc_state *s)
{
    atomic_init(&s->phase, CC_ACTIVE);
    s->reason = 0;
    s->cancelled_at = 0.0;
}

int cc_state_try_begin(cc_state *s)
{
    int expected = CC_ACTIVE;
    return atomic_compare_exchange_strong_explicit(&s->phase, &expected, CC_CANCELLING,
                                                   memory_order_acq_rel, memory_order_acquire);
}

void cc_state_finish(cc_state *s, int reason)
{
    /* Only the winner of cc_state_try_begin() may publish; anything else is a
     * caller bug that must not overwrite a published state. */
    if (atomic_load_explicit(&s->phase, memory_order_relaxed) != CC_CANCELLING)
        return;
    s->reason = reason;
    s->cancelled_at = cc_now_realtime();
    atomic_store_explicit(&s->phase, CC_CANCELLED, memory_order_release);
}

void cc_state_set_cancelled(cc_state *s, int reason, double when)
{
    s->reason = reason;
    s->cancelled_at = when;
    atomic_store_explicit(&s->phase, CC_CANCELLED, memory_order_release);
}

int cc_state_phase(const cc_state *s)
{
    return atomic_load_explicit(&s->phase, memory_order_acquire);
}

int cc_state_is_cancelled(const cc_state *s)
{
    return cc_state_phase(s) == CC_CANCELLED;
}

int cc_state_is_requested(const cc_state *s)
{
    return cc_state_phase(s) != CC_ACTIVE;
}

static double now(clockid_t clock)
{
    struct timespec ts;
    if (clock_gettime(clock, &ts) != 0)
        return 0.0; /* cannot happen for these clocks on POSIX systems */
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

double cc_now_realtime(void)
{
    return now(CLOCK_REALTIME);
}

double cc_now_monotonic(void)
{
    return now(CLOCK_MONOTONIC);
}
