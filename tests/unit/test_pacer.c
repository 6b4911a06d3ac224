/* test_pacer.c — the client-wide token bucket, its pause after rate limits,
 * and the retry backoff delays. Timing tests use generous upper bounds:
 * they prove the rate is held, not the scheduler's punctuality. */
#include <pthread.h>

#include "http.h"
#include "t.h"

struct worker {
	struct drive_pacer *p;
	int n;
};

static void *worker_run(void *arg)
{
	struct worker *w = arg;
	int i;

	for (i = 0; i < w->n; i++)
		drive_pacer_wait(w->p);
	return NULL;
}

/* Runs `threads` threads doing `each` waits; returns elapsed ms. */
static int64_t run_threads(struct drive_pacer *p, int threads, int each)
{
	pthread_t tid[16];
	struct worker w = {p, each};
	int64_t t0 = drive_mono_ms();
	int i;

	for (i = 0; i < threads; i++)
		pthread_create(&tid[i], NULL, worker_run, &w);
	for (i = 0; i < threads; i++)
		pthread_join(tid[i], NULL);
	return drive_mono_ms() - t0;
}

static void test_burst_goes_at_once(void)
{
	struct drive_pacer *p = drive_pacer_new(1, 20);
	int64_t t0 = drive_mono_ms();
	int i;

	for (i = 0; i < 20; i++)
		drive_pacer_wait(p);
	CHECK(drive_mono_ms() - t0 < 100);
	/* The 21st waits for a refill: one second at 1/s. */
	t0 = drive_mono_ms();
	drive_pacer_wait(p);
	CHECK(drive_mono_ms() - t0 >= 900);
	drive_pacer_free(p);
}

static void test_rate_holds_under_threads(void)
{
	/* 8 threads, 100 requests, burst 10 at 100/s: the 90 after the
	 * burst need at least 0.9 s however many threads ask. */
	struct drive_pacer *p = drive_pacer_new(100, 10);
	int64_t ms = run_threads(p, 8, 100 / 8 + 1); /* 104 requests */

	CHECK(ms >= (104 - 10) * 10 - 20);
	CHECK(ms < (104 - 10) * 10 + 600);
	drive_pacer_free(p);
}

static void test_rate_holds_for_a_single_thread(void)
{
	struct drive_pacer *p = drive_pacer_new(50, 1);
	int64_t ms = run_threads(p, 1, 26);

	/* 25 intervals of 20 ms after the first. */
	CHECK(ms >= 25 * 20 - 20);
	CHECK(ms < 25 * 20 + 400);
	drive_pacer_free(p);
}

static void test_idle_bucket_refills_to_burst_only(void)
{
	struct drive_pacer *p = drive_pacer_new(100, 5);
	int64_t t0;
	int i;

	drive_sleep_ms(200); /* would be 20 tokens if uncapped */
	t0 = drive_mono_ms();
	for (i = 0; i < 5 + 10; i++)
		drive_pacer_wait(p);
	/* 5 at once, 10 more at 10 ms each. */
	CHECK(drive_mono_ms() - t0 >= 10 * 10 - 15);
	drive_pacer_free(p);
}

static void test_pause_holds_everyone_then_no_stampede(void)
{
	struct drive_pacer *p = drive_pacer_new(50, 50);
	int64_t t0;

	drive_pacer_pause(p, 300);
	t0 = drive_mono_ms();
	drive_pacer_wait(p);
	CHECK(drive_mono_ms() - t0 >= 280);
	/* After the pause the burst is spent: 10 more take 10 intervals. */
	t0 = drive_mono_ms();
	run_threads(p, 4, 3); /* 12 requests */
	CHECK(drive_mono_ms() - t0 >= 11 * 20 - 20);
	drive_pacer_free(p);
}

static void test_data_plane_waits_out_a_pause_without_a_token(void)
{
	struct drive_pacer *p = drive_pacer_new(1, 1);
	int64_t t0 = drive_mono_ms();

	/* No pause: goes at once, and twice in a row, though the bucket
	 * (burst 1 at 1/s) would make the second wait a second. */
	drive_pacer_wait_pause(p);
	drive_pacer_wait_pause(p);
	CHECK(drive_mono_ms() - t0 < 50);
	drive_pacer_wait(p); /* the bucket's token is still there */
	CHECK(drive_mono_ms() - t0 < 50);
	drive_pacer_pause(p, 200);
	t0 = drive_mono_ms();
	drive_pacer_wait_pause(p);
	CHECK(drive_mono_ms() - t0 >= 180);
	drive_pacer_free(p);
}

static void test_backoff_doubles_with_jitter_and_caps(void)
{
	int n, i;

	for (i = 0; i < 200; i++) {
		for (n = 0; n < 5; n++) {
			int64_t d = drive_backoff_ms(1000, n);
			int64_t lo = ((int64_t)1 << n) * 1000;

			CHECK(d >= lo);
			CHECK(d < lo + 1000);
			CHECK(d <= 32000);
		}
		CHECK_INT(drive_backoff_ms(1000, 5), 32000);
		CHECK_INT(drive_backoff_ms(1000, 12), 32000);
	}
	CHECK_INT(drive_backoff_ms(0, 3), 0);
	CHECK(drive_backoff_ms(10, 0) < 20);
}

static void test_backoff_jitter_varies(void)
{
	int64_t first = drive_backoff_ms(1000, 0);
	int i, differ = 0;

	for (i = 0; i < 50; i++)
		differ |= drive_backoff_ms(1000, 0) != first;
	CHECK(differ);
}

int main(void)
{
	RUN(test_burst_goes_at_once);
	RUN(test_rate_holds_under_threads);
	RUN(test_rate_holds_for_a_single_thread);
	RUN(test_idle_bucket_refills_to_burst_only);
	RUN(test_pause_holds_everyone_then_no_stampede);
	RUN(test_data_plane_waits_out_a_pause_without_a_token);
	RUN(test_backoff_doubles_with_jitter_and_caps);
	RUN(test_backoff_jitter_varies);
	return t_done();
}
