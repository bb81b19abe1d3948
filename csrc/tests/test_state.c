/* Unit tests of cc_state: transitions, publication, clocks, and a 16-thread race
 * on cc_state_try_begin (exactly one winner per state). */
#define _POSIX_C_SOURCE 200809L

#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <time.h>

#include "cc_state.h"
#include "harness.h"

TEST(state_init)
{
    cc_state s;
    cc_state_init(&s);
    CHECK_EQ(cc_state_phase(&s), CC_ACTIVE);
    CHECK(!cc_state_is_cancelled(&s));
    CHECK(!cc_state_is_requested(&s));
}

TEST(state_transitions)
{
    cc_state s;
    cc_state_init(&s);
    CHECK_EQ(cc_state_try_begin(&s), 1);
    CHECK_EQ(cc_state_phase(&s), CC_CANCELLING);
    CHECK(cc_state_is_requested(&s));
    CHECK(!cc_state_is_cancelled(&s));
    CHECK_EQ(cc_state_try_begin(&s), 0); /* one-shot */
    double before = cc_now_realtime();
    cc_state_finish(&s, 7);
    double after = cc_now_realtime();
    CHECK_EQ(cc_state_phase(&s), CC_CANCELLED);
    CHECK(cc_state_is_cancelled(&s));
    CHECK(cc_state_is_requested(&s));
    CHECK_EQ(s.reason, 7);
    CHECK(s.cancelled_at >= before && s.cancelled_at <= after);
    CHECK_EQ(cc_state_try_begin(&s), 0);
    /* A second finish (caller bug) must not overwrite the published state. */
    cc_state_finish(&s, 9);
    CHECK_EQ(s.reason, 7);
    CHECK_EQ(cc_state_phase(&s), CC_CANCELLED);
}

TEST(state_finish_requires_begin)
{
    cc_state s;
    cc_state_init(&s);
    cc_state_finish(&s, 4); /* not the winner of anything: ignored */
    CHECK_EQ(cc_state_phase(&s), CC_ACTIVE);
    CHECK_EQ(s.reason, 0);
    CHECK_EQ(cc_state_try_begin(&s), 1);
}

TEST(state_set_cancelled)
{
    cc_state s;
    cc_state_init(&s);
    cc_state_set_cancelled(&s, 3, 12.5);
    CHECK(cc_state_is_cancelled(&s));
    CHECK(cc_state_is_requested(&s));
    CHECK_EQ(s.reason, 3);
    CHECK(s.cancelled_at == 12.5);
    CHECK_EQ(cc_state_try_begin(&s), 0);
    cc_state_finish(&s, 8);
    CHECK_EQ(s.reason, 3);
    CHECK(s.cancelled_at == 12.5);
}

TEST(state_clocks)
{
    double rt = cc_now_realtime();
    double wall = (double)time(NULL);
    /* Generous window: only checks the unit (seconds since the epoch). */
    CHECK(rt > wall - 60.0 && rt < wall + 60.0);
    double prev = cc_now_monotonic();
    CHECK(prev > 0.0);
    for (int i = 0; i < 1000; i++) {
        double m = cc_now_monotonic();
        CHECK(m >= prev);
        prev = m;
    }
}

/* --- threaded race --------------------------------------------------------- */

enum { RACE_THREADS = 16, RACE_STATES = 10000 };

typedef struct race {
    cc_state states[RACE_STATES];
    atomic_int wins[RACE_STATES];
    atomic_int winner[RACE_STATES];
    atomic_long total_wins;
    atomic_int go; /* start flag: the racers spin on it so they start together */
} race;

typedef struct racer {
    race *r;
    int id;
} racer;

static void *race_body(void *arg)
{
    racer *me = arg;
    race *r = me->r;
    while (!atomic_load(&r->go))
        sched_yield();
    for (int i = 0; i < RACE_STATES; i++) {
        cc_state *s = &r->states[i];
        if (cc_state_try_begin(s)) {
            atomic_fetch_add(&r->wins[i], 1);
            atomic_store(&r->winner[i], me->id);
            atomic_fetch_add(&r->total_wins, 1);
            cc_state_finish(s, me->id);
        } else if (cc_state_is_cancelled(s)) {
            /* A loser that sees CANCELLED must see the winner's reason and time. */
            CHECK_OR(s->reason >= 0 && s->reason < RACE_THREADS, NULL);
            CHECK_OR(s->cancelled_at > 0.0, NULL);
        } else {
            CHECK_OR(cc_state_is_requested(s), NULL);
        }
    }
    return NULL;
}

TEST(state_threaded_one_winner)
{
    race *r = calloc(1, sizeof(*r));
    CHECK(r != NULL);
    for (int i = 0; i < RACE_STATES; i++) {
        cc_state_init(&r->states[i]);
        atomic_init(&r->wins[i], 0);
        atomic_init(&r->winner[i], -1);
    }
    atomic_init(&r->total_wins, 0);
    atomic_init(&r->go, 0);
    pthread_t threads[RACE_THREADS];
    racer racers[RACE_THREADS];
    int started = 0;
    for (int t = 0; t < RACE_THREADS; t++) {
        racers[t].r = r;
        racers[t].id = t;
        if (pthread_create(&threads[t], NULL, race_body, &racers[t]) != 0)
            break;
        started++;
    }
    atomic_store(&r->go, 1);
    for (int t = 0; t < started; t++)
        pthread_join(threads[t], NULL);
    if (started != RACE_THREADS) {
        harness_fail(__FILE__, __LINE__, "pthread_create failed after %d threads", started);
    } else {
        EXPECT(atomic_load(&r->total_wins) == RACE_STATES);
        for (int i = 0; i < RACE_STATES; i++) {
            if (atomic_load(&r->wins[i]) != 1 || !cc_state_is_cancelled(&r->states[i]) ||
                r->states[i].reason != atomic_load(&r->winner[i])) {
                harness_fail(__FILE__, __LINE__, "state %d: %d winners, reason %d, winner %d", i,
                             atomic_load(&r->wins[i]), r->states[i].reason,
                             atomic_load(&r->winner[i]));
                break;
            }
        }
    }
    free(r);
}

void suite_state(void)
{
    RUN_TEST(state_init);
    RUN_TEST(state_transitions);
    RUN_TEST(state_finish_requires_begin);
    RUN_TEST(state_set_cancelled);
    RUN_TEST(state_clocks);
    RUN_TEST(state_threaded_one_winner);
}
