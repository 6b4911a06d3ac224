/* pacer.c — when the next request to Drive may go: one token bucket for the
 * whole client (all threads), a global pause after rate-limit answers, and
 * the exponential backoff delays of retries. Owns no HTTP state.
 *
 * Drive's quota is per user, not per connection, so the bucket is shared:
 * with N threads each pacing itself we would send N times the rate and
 * collect 403 userRateLimitExceeded. rclone's defaults (10/s after a burst
 * of 100) are ours.
 *
 * The bucket is kept as a "theoretical arrival time" (GCRA): tat is when
 * the bucket would be full again; a request may go at tat - tolerance,
 * where tolerance = (burst - 1) / rate. Each caller reserves its slot under
 * the lock and sleeps outside it, so callers are served in arrival order
 * and no thread spins.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "http.h"

struct drive_pacer {
	pthread_mutex_t lock; /* guards tat and pause_until */
	double interval_ms;   /* 1000 / rate */
	double tolerance_ms;  /* (burst - 1) * interval */
	double tat;	      /* theoretical arrival time, monotonic ms */
	double pause_until;   /* end of the last rate-limit pause */
};

int64_t drive_mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void drive_mono_ts_in(struct timespec *ts, int64_t ms)
{
	clock_gettime(CLOCK_MONOTONIC, ts);
	ts->tv_sec += ms / 1000;
	ts->tv_nsec += (long)(ms % 1000) * 1000000;
	if (ts->tv_nsec >= 1000000000) {
		ts->tv_sec++;
		ts->tv_nsec -= 1000000000;
	}
}

static double mono_ms_f(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

void drive_sleep_ms(int64_t ms)
{
	struct timespec ts;

	if (ms <= 0)
		return;
	ts.tv_sec = ms / 1000;
	ts.tv_nsec = (ms % 1000) * 1000000;
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static void sleep_ms_f(double ms)
{
	struct timespec ts;

	if (ms <= 0)
		return;
	ts.tv_sec = (time_t)(ms / 1000.0);
	ts.tv_nsec = (long)((ms - (double)ts.tv_sec * 1000.0) * 1e6);
	if (ts.tv_nsec >= 1000000000)
		ts.tv_nsec = 999999999;
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

struct drive_pacer *drive_pacer_new(double rate, int burst)
{
	struct drive_pacer *p = calloc(1, sizeof(*p));

	if (!p)
		return NULL;
	if (rate <= 0)
		rate = 10;
	if (burst < 1)
		burst = 1;
	pthread_mutex_init(&p->lock, NULL);
	p->interval_ms = 1000.0 / rate;
	p->tolerance_ms = (burst - 1) * p->interval_ms;
	/* Starts full: the first `burst` requests go at once. */
	p->tat = mono_ms_f();
	return p;
}

void drive_pacer_free(struct drive_pacer *p)
{
	if (!p)
		return;
	pthread_mutex_destroy(&p->lock);
	free(p);
}

void drive_pacer_wait(struct drive_pacer *p)
{
	double now, at;

	if (!p)
		return;
	pthread_mutex_lock(&p->lock);
	now = mono_ms_f();
	if (p->tat < now)
		p->tat = now;
	at = p->tat - p->tolerance_ms;
	p->tat += p->interval_ms;
	pthread_mutex_unlock(&p->lock);
	if (at > now)
		sleep_ms_f(at - now);
}

void drive_pacer_wait_pause(struct drive_pacer *p)
{
	double now, until;

	if (!p)
		return;
	pthread_mutex_lock(&p->lock);
	until = p->pause_until;
	pthread_mutex_unlock(&p->lock);
	now = mono_ms_f();
	if (until > now)
		sleep_ms_f(until - now);
}

void drive_pacer_pause(struct drive_pacer *p, int64_t ms)
{
	double until;

	if (!p || ms <= 0)
		return;
	pthread_mutex_lock(&p->lock);
	until = mono_ms_f() + (double)ms;
	if (p->pause_until < until)
		p->pause_until = until;
	/* The first request after the pause goes at `until`, the next ones
	 * at the sustained rate: the burst is spent. */
	if (p->tat < until + p->tolerance_ms)
		p->tat = until + p->tolerance_ms;
	pthread_mutex_unlock(&p->lock);
}

/* xorshift64*, one state per thread: jitter only, not crypto. */
static uint64_t jitter_rand(void)
{
	static __thread uint64_t s;

	if (!s) {
		struct timespec ts;

		clock_gettime(CLOCK_REALTIME, &ts);
		s = ((uint64_t)ts.tv_nsec << 20) ^ (uint64_t)ts.tv_sec ^
		    ((uint64_t)getpid() << 40) ^ (uint64_t)(uintptr_t)&s;
		if (!s)
			s = 0x9E3779B97F4A7C15ull;
	}
	s ^= s >> 12;
	s ^= s << 25;
	s ^= s >> 27;
	return s * 0x2545F4914F6CDD1Dull;
}

int64_t drive_backoff_ms(int base_ms, int n)
{
	int64_t cap, d;

	if (base_ms <= 0)
		return 0;
	cap = 32 * (int64_t)base_ms;
	if (n < 0)
		n = 0;
	if (n > 5)
		return cap; /* 2^5 * base is the cap already */
	d = ((int64_t)1 << n) * base_ms +
	    (int64_t)(jitter_rand() % (uint64_t)base_ms);
	return d < cap ? d : cap;
}
