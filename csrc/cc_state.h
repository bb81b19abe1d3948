/* cc_state: the one-shot, thread-safe cancellation state of a token.
 *
 * Pure C11 with <stdatomic.h>. A state moves ACTIVE -> CANCELLING -> CANCELLED
 * exactly once; cc_state_try_begin() is the single transition that decides the
 * winner among concurrent cancellers (any thread). The winner records the reason
 * code and wall-clock time, then publishes with cc_state_finish(). Readers use
 * cc_state_is_cancelled() (acquire) and see either ACTIVE or a fully published
 * CANCELLED state (CANCELLING reads as "cancelled requested, not yet published";
 * cc_state_is_requested() is true from CANCELLING on).
 */
#ifndef CC_STATE_H
#define CC_STATE_H

#include <stdatomic.h>
#include <stdint.h>

enum { CC_ACTIVE = 0, CC_CANCELLING = 1, CC_CANCELLED = 2 };

typedef struct cc_state {
    _Atomic int phase;
    int reason;          /* opaque reason code chosen by the caller; valid once CANCELLED */
    double cancelled_at; /* seconds since the epoch (CLOCK_REALTIME); valid once CANCELLED */
} cc_state;

void cc_state_init(cc_state *s);
/* Returns 1 if the caller won the transition ACTIVE -> CANCELLING, 0 otherwise. */
int cc_state_try_begin(cc_state *s);
/* Called once by the winner: stores reason and time and publishes CANCELLED. */
void cc_state_finish(cc_state *s, int reason);
/* Mark a state as cancelled at construction (no race possible). */
void cc_state_set_cancelled(cc_state *s, int reason, double when);
/* The current phase (CC_ACTIVE, CC_CANCELLING or CC_CANCELLED), acquire load. */
int cc_state_phase(const cc_state *s);
int cc_state_is_cancelled(const cc_state *s); /* phase == CANCELLED */
int cc_state_is_requested(const cc_state *s); /* phase != ACTIVE */
/* Wall-clock now in seconds since the epoch. */
double cc_now_realtime(void);
/* Monotonic now in seconds. */
double cc_now_monotonic(void);

#endif
