/* test_lock.c — the lock protocol of cache/lock.c.
 *
 * Offline: the decision rules on made-up listings (expiry on the server's
 * clock, the oldest live entry wins, ties are yielded, foreign entries
 * never expire). Against the Drive emulator (VECTUR_TEST_ENDPOINT set; else
 * those tests print "skipped"): racing acquirers get exactly one winner and
 * leave no candidate behind, an expired holder is taken over, a refresh
 * moves modifiedTime on the server's clock and a taken-over holder's
 * refresh says 404, and the requests of one uncontended acquire + release.
 * tests/integration/test_locks.py runs it with the emulator, also under
 * faults and name-query delay.
 */
#include <curl/curl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "drive.h"
#include "lease.h"
#include "lock.h"
#include "t.h"

/* ---- offline: the decision ---------------------------------------------- */

static struct lock_entry ent(const char *id, int64_t created, int64_t mod,
			     int ttl)
{
	struct lock_entry e;

	memset(&e, 0, sizeof(e));
	snprintf(e.id, sizeof(e.id), "%s", id);
	e.created_ms = created;
	e.modified_ms = mod;
	e.ttl_s = ttl;
	return e;
}

static void test_oldest_live_entry_wins(void)
{
	struct lock_entry e[3] = {ent("c", 300, 300, 60),
				  ent("a", 100, 100, 60),
				  ent("b", 200, 200, 60)};

	CHECK_INT(lock_pick_winner(e, 3, 1000), 1);
	CHECK(lock_is_mine(e, 3, 1000, "a"));
	CHECK(!lock_is_mine(e, 3, 1000, "b"));
	CHECK(!lock_is_mine(e, 3, 1000, "c"));
}

static void test_expiry_is_judged_on_server_clock(void)
{
	struct lock_entry e = ent("a", 0, 10000, 5);

	CHECK(!lock_expired(&e, 15000)); /* exactly the TTL: still live */
	CHECK(lock_expired(&e, 15001));
	CHECK(!lock_expired(&e, 0)); /* no Date: cannot judge */
}

static void test_expired_holder_loses_to_newer_live_entry(void)
{
	struct lock_entry e[2] = {ent("old", 100, 100, 5),
				  ent("new", 9000, 9000, 5)};

	CHECK_INT(lock_pick_winner(e, 2, 10000), 1);
	CHECK(lock_is_mine(e, 2, 10000, "new"));
	/* A refresh (modifiedTime moved) keeps the old holder. */
	e[0].modified_ms = 8000;
	CHECK(lock_is_mine(e, 2, 10000, "old"));
}

static void test_entry_without_lease_never_expires(void)
{
	struct lock_entry e[2] = {ent("foreign", 100, 100, 0),
				  ent("mine", 90000000, 90000000, 5)};

	CHECK(!lock_expired(&e[0], 99999999));
	CHECK(!lock_is_mine(e, 2, 99999999, "mine"));
}

static void test_created_tie_is_yielded_by_both(void)
{
	struct lock_entry e[2] = {ent("b", 500, 500, 60),
				  ent("a", 500, 500, 60)};

	/* Same createdTime: "a" sorts first but must not claim the lock, or
	 * "b" (which may have listed before "a" existed) could hold it too. */
	CHECK_INT(lock_pick_winner(e, 2, 1000), 1);
	CHECK(!lock_is_mine(e, 2, 1000, "a"));
	CHECK(!lock_is_mine(e, 2, 1000, "b"));
	/* Alone, either may win. */
	CHECK(lock_is_mine(&e[1], 1, 1000, "a"));
}

static void test_tie_with_expired_entry_does_not_block(void)
{
	struct lock_entry e[2] = {ent("x", 500, 500, 1),
				  ent("y", 500, 9000, 60)};

	CHECK(lock_is_mine(e, 2, 5000, "y"));
}

static void test_no_entries_no_winner(void)
{
	CHECK_INT(lock_pick_winner(NULL, 0, 1000), -1);
	CHECK(!lock_is_mine(NULL, 0, 1000, "a"));
}

static void test_lock_paths(void)
{
	CHECK(cache_lock_path("locks/a"));
	CHECK(cache_lock_path("locks/a/b"));
	CHECK(!cache_lock_path("locks"));
	CHECK(!cache_lock_path("locks/"));
	CHECK(!cache_lock_path("lockss/a"));
	CHECK(!cache_lock_path("runs/locks/a"));
}

/* ---- against the emulator ------------------------------------------------ */

static const char *endpoint;
static char conf_path[256];
static struct drive_client *dc;
static char top_id[128];

static int new_client(struct drive_client **out)
{
	struct drive_client_opts co = {0};
	struct drive_config cfg;
	struct drive_err err;
	int rc;

	if (drive_config_load(conf_path, "emu", &cfg, &err) < 0) {
		fprintf(stderr, "config: %s\n", err.message);
		return -1;
	}
	co.endpoint = endpoint;
	co.pacer_rate = 1000;
	co.pacer_burst = 1000;
	rc = drive_client_new(out, &cfg, &co, &err);
	drive_config_free(&cfg);
	return rc;
}

static int setup(void)
{
	const char *given = getenv("VECTUR_TEST_RCLONE_CONFIG");
	struct drive_file root, f;
	struct drive_err err;
	char name[64], d[] = "/tmp/vectur-lockconf-XXXXXX";
	FILE *fp;

	if (given) {
		snprintf(conf_path, sizeof(conf_path), "%s", given);
	} else {
		if (!mkdtemp(d))
			return -1;
		snprintf(conf_path, sizeof(conf_path), "%s/rclone.conf", d);
		fp = fopen(conf_path, "w");
		if (!fp)
			return -1;
		fprintf(fp, "[emu]\ntype = drive\nscope = drive\n"
			    "token = {\"access_token\":\"x\",\"token_type\":"
			    "\"Bearer\",\"refresh_token\":\"test-refresh-"
			    "token\",\"expiry\":\"2000-01-01T00:00:00Z\"}\n");
		fclose(fp);
	}
	if (new_client(&dc) < 0 || drive_root(dc, &root, &err) < 0)
		return -1;
	snprintf(name, sizeof(name), "lock-test-%d-%ld", (int)getpid(),
		 (long)time(NULL));
	if (drive_mkdir(dc, root.id, name, &f, &err) < 0)
		return -1;
	snprintf(top_id, sizeof(top_id), "%s", f.id);
	return 0;
}

struct named {
	const char *name;
	int n;
};

static int count_cb(const struct drive_lease_entry *e, void *ud)
{
	struct named *c = ud;

	if (strcmp(e->f.name, c->name) == 0)
		c->n++;
	return 0;
}

static int live_entries(const char *name)
{
	struct named c = {name, 0};
	struct drive_err err;
	int64_t ms;

	if (drive_lease_list(dc, top_id, NULL, count_cb, &c, &ms, &err) < 0)
		return -1;
	return c.n;
}

/* Under injected resets a delete whose answer was lost is retried and then
 * finds nothing: 404 means deleted too. */
static bool deleted(int rc, const struct drive_err *err)
{
	return rc == 0 || err->status == 404;
}

struct racer {
	struct lock_ids *ids;
	const char *name;
	struct lock_result res;
	int rc;
	pthread_barrier_t *go;
};

static void *race(void *arg)
{
	struct racer *r = arg;
	struct drive_err err;

	pthread_barrier_wait(r->go);
	r->rc = lock_acquire(dc, r->ids, top_id, r->name, "{\"t\":1}\n", NULL,
			     60, &r->res, NULL, &err);
	if (r->rc < 0)
		fprintf(stderr, "acquire: %s\n", err.message);
	return NULL;
}

static void test_racing_acquirers_one_winner_no_leftovers(void)
{
	enum { N = 8, ROUNDS = 5 };
	struct racer r[N];
	pthread_t th[N];
	pthread_barrier_t go;
	struct lock_ids *ids = lock_ids_new();
	struct drive_err err;
	char name[32];
	int i, k, won;

	for (k = 0; k < ROUNDS; k++) {
		snprintf(name, sizeof(name), "race-%d.lock", k);
		pthread_barrier_init(&go, NULL, N);
		for (i = 0; i < N; i++) {
			memset(&r[i], 0, sizeof(r[i]));
			r[i].ids = ids;
			r[i].name = name;
			r[i].go = &go;
			pthread_create(&th[i], NULL, race, &r[i]);
		}
		for (won = 0, i = 0; i < N; i++) {
			pthread_join(th[i], NULL);
			CHECK_INT(r[i].rc, 0);
			won += r[i].res.won;
		}
		pthread_barrier_destroy(&go);
		/* At most one; none is possible (everyone saw a rival that
		 * later withdrew), never two. */
		CHECK(won <= 1);
		CHECK_INT(live_entries(name), won);
		for (i = 0; i < N; i++)
			if (r[i].res.won)
				CHECK(lock_delete(dc, r[i].res.file.id, &err) ==
					      0 ||
				      err.status == 404);
		CHECK_INT(live_entries(name), 0);
	}
	lock_ids_free(ids);
}

static void test_held_lock_gives_eexist_then_free_after_release(void)
{
	struct lock_result a, b;
	struct drive_err err;

	CHECK_INT(lock_acquire(dc, NULL, top_id, "held.lock", "{}", NULL, 60,
			       &a, NULL, &err),
		  0);
	CHECK(a.won);
	CHECK_INT(lock_acquire(dc, NULL, top_id, "held.lock", "{}", NULL, 60,
			       &b, NULL, &err),
		  0);
	CHECK(!b.won);
	CHECK_STR(b.holder_id, a.file.id);
	CHECK_INT(live_entries("held.lock"), 1);
	CHECK(deleted(lock_delete(dc, a.file.id, &err), &err));
	CHECK_INT(lock_acquire(dc, NULL, top_id, "held.lock", "{}", NULL, 60,
			       &b, NULL, &err),
		  0);
	CHECK(b.won);
	lock_delete(dc, b.file.id, &err);
}

static void test_expired_holder_is_taken_over_and_its_refresh_fails(void)
{
	struct lock_result a, b;
	struct drive_file f;
	struct drive_err err;
	int64_t back;
	bool ours = true;

	CHECK_INT(lock_acquire(dc, NULL, top_id, "ttl.lock", "{}", NULL, 1, &a,
			       NULL, &err),
		  0);
	CHECK(a.won);
	/* Date has 1 s resolution: wait past TTL + 1 s. */
	usleep(2300 * 1000);
	CHECK_INT(lock_acquire(dc, NULL, top_id, "ttl.lock", "{}", NULL, 60, &b,
			       NULL, &err),
		  0);
	CHECK(b.won);
	CHECK_INT(b.expired, 1);
	CHECK_INT(lock_refresh(dc, a.file.id, &f, &back, &err), -1);
	CHECK_INT(err.status, 404);
	CHECK_INT(
		lock_still_ours(dc, top_id, "ttl.lock", b.file.id, &ours, &err),
		0);
	CHECK(ours);
	lock_delete(dc, b.file.id, &err);
}

static void test_refresh_moves_modified_time_and_keeps_lock(void)
{
	struct lock_result a, b;
	struct drive_file f;
	struct drive_err err;
	int64_t stamp, back = -1;
	int i;

	CHECK_INT(lock_acquire(dc, NULL, top_id, "renew.lock", "{}", NULL, 2,
			       &a, NULL, &err),
		  0);
	CHECK(a.won);
	stamp = a.file.modified_ms;
	for (i = 0; i < 4; i++) {
		usleep(700 * 1000);
		/* Drive moved it (0: not stamped by us), to a time within a
		 * second of its Date. */
		CHECK_INT(lock_refresh(dc, a.file.id, &f, &back, &err), 0);
		CHECK(f.modified_ms > stamp);
		CHECK(back >= 0 && back <= 1000);
		stamp = f.modified_ms;
	}
	/* 2.8 s after creation with a 2 s TTL, but renewed: still held. */
	CHECK_INT(lock_acquire(dc, NULL, top_id, "renew.lock", "{}", NULL, 2,
			       &b, NULL, &err),
		  0);
	CHECK(!b.won);
	CHECK_INT(live_entries("renew.lock"), 1);
	lock_delete(dc, a.file.id, &err);
}

static void test_mkdir_lock_is_a_folder_with_a_lease(void)
{
	struct lock_result a, b;
	struct drive_err err;

	CHECK_INT(lock_acquire(dc, NULL, top_id, "dir.lock", NULL, "{\"h\":1}",
			       30, &a, NULL, &err),
		  0);
	CHECK(a.won);
	CHECK(a.file.is_folder);
	CHECK_INT(lock_acquire(dc, NULL, top_id, "dir.lock", NULL, "{}", 30, &b,
			       NULL, &err),
		  0);
	CHECK(!b.won);
	lock_delete(dc, a.file.id, &err);
}

static void test_expired_folder_lock_is_kept_while_it_holds_locks(void)
{
	struct lock_result a, b;
	struct drive_file inner;
	struct drive_err err;

	/* "locks/stages" made by mkdir on a mount that went away: expired,
	 * but deleting it would delete the stage locks inside. */
	CHECK_INT(lock_acquire(dc, NULL, top_id, "stages", NULL, "{}", 1, &a,
			       NULL, &err),
		  0);
	CHECK(a.won);
	CHECK_INT(drive_mkdir(dc, a.file.id, "inner.lock", &inner, &err), 0);
	usleep(2300 * 1000);
	CHECK_INT(lock_acquire(dc, NULL, top_id, "stages", NULL, "{}", 1, &b,
			       NULL, &err),
		  0);
	CHECK(!b.won);
	CHECK_INT(live_entries("stages"), 1);
	/* Empty, it is an expired lock like any other. */
	CHECK(deleted(drive_delete(dc, inner.id, &err), &err));
	CHECK_INT(lock_acquire(dc, NULL, top_id, "stages", NULL, "{}", 1, &b,
			       NULL, &err),
		  0);
	CHECK(b.won);
	CHECK_INT(b.expired, 1);
	lock_delete(dc, b.file.id, &err);
}

static void test_uncontended_acquire_release_requests(void)
{
	struct lock_ids *ids = lock_ids_new();
	struct drive_stats s0, s1;
	struct lock_result a;
	struct drive_err err;
	int i;

	/* Fill the id pool first: its one request serves 100 acquires. */
	CHECK_INT(lock_acquire(dc, ids, top_id, "count.lock", "{}", NULL, 60,
			       &a, NULL, &err),
		  0);
	lock_delete(dc, a.file.id, &err);
	drive_stats_get(dc, &s0);
	for (i = 0; i < 10; i++) {
		CHECK_INT(lock_acquire(dc, ids, top_id, "count.lock", "{}",
				       NULL, 60, &a, NULL, &err),
			  0);
		CHECK(a.won);
		/* Under faults a delete whose answer was lost is retried and
		 * then finds nothing: 404 is a release too. */
		CHECK(lock_delete(dc, a.file.id, &err) == 0 ||
		      err.status == 404);
	}
	drive_stats_get(dc, &s1);
	printf("protocol requests per uncontended acquire+release: %.1f\n",
	       (double)(s1.requests - s0.requests) / 10);
	/* create + list + delete (no retries without faults) */
	if (!getenv("VECTUR_TEST_FAULTS"))
		CHECK_INT(s1.requests - s0.requests, 30);
	lock_ids_free(ids);
}

#define TRY(fn)                                                                \
	do {                                                                   \
		if (!only || strstr(#fn, only))                                \
			RUN(fn);                                               \
	} while (0)

int main(void)
{
	const char *only = getenv("VECTUR_TEST_ONLY");

	TRY(test_oldest_live_entry_wins);
	TRY(test_expiry_is_judged_on_server_clock);
	TRY(test_expired_holder_loses_to_newer_live_entry);
	TRY(test_entry_without_lease_never_expires);
	TRY(test_created_tie_is_yielded_by_both);
	TRY(test_tie_with_expired_entry_does_not_block);
	TRY(test_no_entries_no_winner);
	TRY(test_lock_paths);

	endpoint = getenv("VECTUR_TEST_ENDPOINT");
	if (!endpoint || !*endpoint) {
		printf("skipped emulator tests (VECTUR_TEST_ENDPOINT not "
		       "set)\n");
		return t_done();
	}
	curl_global_init(CURL_GLOBAL_DEFAULT);
	if (setup() < 0) {
		fprintf(stderr, "setup against %s failed\n", endpoint);
		return 1;
	}
	TRY(test_racing_acquirers_one_winner_no_leftovers);
	TRY(test_held_lock_gives_eexist_then_free_after_release);
	TRY(test_expired_holder_is_taken_over_and_its_refresh_fails);
	TRY(test_refresh_moves_modified_time_and_keeps_lock);
	TRY(test_mkdir_lock_is_a_folder_with_a_lease);
	TRY(test_expired_folder_lock_is_kept_while_it_holds_locks);
	TRY(test_uncontended_acquire_release_requests);
	drive_client_free(dc);
	return t_done();
}
