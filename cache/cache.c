/* cache.c — the life of a struct cache: cache_open (lock, store, recovery,
 * threads), cache_close (drain with progress, stop, free), cache_sync,
 * the status document, and the housekeeping thread (feed polls, probes of
 * a Drive in trouble, long-open snapshots, eviction). The work itself lives in
 * the other files.
 */
#include <errno.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cache_int.h"
#include "lock.h"

int64_t cache_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t cache_wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void cache_last_error(struct cache *c, char *out, size_t len)
{
	pthread_mutex_lock(&c->lock);
	snprintf(out, len, "%s", c->last_error);
	pthread_mutex_unlock(&c->lock);
}

bool cache_drive_trouble(struct cache *c, char *out, size_t len,
			 int64_t *for_ms)
{
	return c->dc && drive_trouble(c->dc, out, len, for_ms);
}

void cache_set_error(struct cache *c, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(c->last_error, sizeof(c->last_error), fmt, ap);
	va_end(ap);
}

void cache_wait(struct cache *c, int ms)
{
	struct timespec ts;

	drive_mono_ts_in(&ts, ms);
	pthread_cond_timedwait(&c->changed, &c->lock, &ts);
}

void cache_note_inval(struct cache *c, struct cnode *n)
{
	char *p;

	if (!c->o.invalidate || n->unlinked)
		return;
	if (c->ninval == c->inval_cap) {
		int cap = c->inval_cap ? c->inval_cap * 2 : 16;
		char **ni = realloc(c->inval, cap * sizeof(*ni));

		if (!ni)
			return;
		c->inval = ni;
		c->inval_cap = cap;
	}
	p = node_path(n);
	if (p)
		c->inval[c->ninval++] = p;
}

void cache_run_inval(struct cache *c)
{
	char **list;
	int n, i;

	if (!c->o.invalidate)
		return;
	pthread_mutex_lock(&c->lock);
	list = c->inval;
	n = c->ninval;
	c->inval = NULL;
	c->ninval = c->inval_cap = 0;
	pthread_mutex_unlock(&c->lock);
	for (i = 0; i < n; i++) {
		c->o.invalidate(list[i], c->o.ud);
		free(list[i]);
	}
	free(list);
}

/* ---- housekeeping ------------------------------------------------------ */

#define TROUBLE_PROBE_MS 5000

/* Logs held open for writing still reach Drive: every long_open_upload_s
 * the current bytes of a file written through O_APPEND become a CLOSED
 * snapshot. Any other file reaches Drive at close or fsync only: a
 * checkpoint that takes minutes to write is never sent half-written. */
static void snapshot_long_open(struct cache *c)
{
	int64_t now = cache_now_ms(), age = c->o.long_open_upload_s * 1000LL;
	struct cver *v;
	bool again = true;

	while (again && !c->stopping) {
		again = false;
		for (v = c->vers; v; v = v->gnext) {
			if (v->state != CV_OPEN || v->writers == 0 ||
			    !v->appending || v->preparing || v->dropped ||
			    now - v->opened_ms < age)
				continue;
			v->opened_ms = now;
			v->refs++;
			v->node->refs++;
			ver_snapshot(c, v);
			node_put(c, v->node);
			ver_put(c, v);
			again = true; /* the list may have changed meanwhile */
			break;
		}
	}
}

/* drive_trouble() says requests are failing until one is answered; on a
 * mount that asks Drive nothing (poll_interval=0, nothing to upload or
 * read) status would say so long after Drive came back. So while it says
 * so and the feed has not been read for TROUBLE_PROBE_MS, the cheapest
 * request there is (changes.getStartPageToken) asks: an answer clears it,
 * a failure keeps it honest. Under a deadline of half that period: the
 * housekeeping thread has snapshots and eviction to do. Called and
 * returns with c->lock held. */
static void probe_trouble(struct cache *c)
{
	char why[640], tok[256];
	struct drive_err err;
	int64_t now = cache_now_ms(), ms, saved;

	if (!c->dc || now - c->probe_mono < TROUBLE_PROBE_MS ||
	    now - c->last_poll_mono < TROUBLE_PROBE_MS ||
	    !cache_drive_trouble(c, why, sizeof(why), &ms))
		return;
	c->probe_mono = now;
	pthread_mutex_unlock(&c->lock);
	saved = drive_deadline(drive_mono_ms() + TROUBLE_PROBE_MS / 2);
	drive_changes_start(c->dc, tok, sizeof(tok), &err);
	drive_deadline_restore(saved);
	pthread_mutex_lock(&c->lock);
}

static void *hk_main(void *arg)
{
	struct cache *c = arg;
	struct timespec ts;
	int64_t last;

	pthread_mutex_lock(&c->lock);
	while (!c->stopping) {
		last = c->last_poll_mono;
		if (c->dc && (c->poll_wanted ||
			      (c->o.poll_interval_s > 0 &&
			       cache_now_ms() - last >=
				       c->o.poll_interval_s * 1000LL))) {
			c->poll_wanted = false;
			pthread_mutex_unlock(&c->lock);
			feed_poll(c);
			pthread_mutex_lock(&c->lock);
			if (c->last_poll_mono == last)
				c->last_poll_mono =
					cache_now_ms(); /* failed: wait */
		}
		probe_trouble(c);
		if (c->o.long_open_upload_s > 0)
			snapshot_long_open(c);
		evict_run(c);
		/* meta.db behind after a failed write (a full disk): try to
		 * save it all again, without waiting for the next write. */
		store_catch_up(c);
		drive_mono_ts_in(&ts, 1000);
		pthread_cond_timedwait(&c->hk_cv, &c->lock, &ts);
	}
	pthread_mutex_unlock(&c->lock);
	return NULL;
}

int hk_start(struct cache *c)
{
	if (pthread_create(&c->hk, NULL, hk_main, c) != 0)
		return -EAGAIN;
	c->hk_started = true;
	return 0;
}

void hk_stop(struct cache *c)
{
	if (!c->hk_started)
		return;
	pthread_mutex_lock(&c->lock);
	c->stopping = true;
	pthread_cond_broadcast(&c->hk_cv);
	pthread_mutex_unlock(&c->lock);
	pthread_join(c->hk, NULL);
	c->hk_started = false;
}

/* ---- open / close ------------------------------------------------------ */

static int init_sync(struct cache *c)
{
	pthread_condattr_t ca;
	pthread_cond_t *cv[] = {&c->work, &c->changed, &c->fetch_cv, &c->hk_cv};
	size_t i;

	pthread_mutex_init(&c->lock, NULL);
	pthread_mutex_init(&c->poll_lock, NULL);
	pthread_mutex_init(&c->id_lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	for (i = 0; i < sizeof(cv) / sizeof(cv[0]); i++)
		pthread_cond_init(cv[i], &ca);
	pthread_condattr_destroy(&ca);
	return 0;
}

static void free_all(struct cache *c)
{
	struct cnode *n, *next;
	struct cver *v, *vn;
	struct ctomb *t;
	int i;

	for (v = c->vers; v; v = vn) {
		vn = v->gnext;
		if (v->fetch) {
			v->refs = 1;
			fetch_free(c, v);
		}
		if (v->fd >= 0)
			close(v->fd);
		pthread_rwlock_destroy(&v->rw);
		pthread_mutex_destroy(&v->fetch_wmu);
		free(v->session_url);
		free(v);
	}
	c->vers = NULL;
	for (i = 0; i < CACHE_HASH; i++) {
		for (n = c->by_ino[i]; n; n = next) {
			next = n->h_ino;
			free(n->name);
			free(n->remote_name);
			free(n);
		}
	}
	while ((t = c->tombs) != NULL) {
		c->tombs = t->next;
		/* A node removed locally lives on only through its tomb. */
		if (t->n && t->n->unlinked && t->n->refs <= 1) {
			free(t->n->name);
			free(t->n->remote_name);
			free(t->n);
		}
		free(t);
	}
	for (i = 0; i < c->ninval; i++)
		free(c->inval[i]);
	free(c->inval);
	free(c->fetching);
	free(c->inflight.ids);
	free(c->settling.ids);
	free(c->ids);
	free(c->workers);
	free(c->sleep_until);
	free(c->fetchers);
	free(c->dir);
	free(c->root_id);
}

int cache_open(struct cache **out, const struct cache_opts *opts,
	       struct drive_client *dc, const char *root_id, char *errbuf,
	       size_t errlen)
{
	struct cache *c;
	char buf[256];
	int rc;

	if (errlen)
		errbuf[0] = 0;
	if (!opts || !opts->dir) {
		snprintf(errbuf, errlen, "no cache dir");
		return -EINVAL;
	}
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->o = *opts;
	if (c->o.transfers <= 0)
		c->o.transfers = 4;
	if (c->o.chunk_size == 0)
		c->o.chunk_size = 8 << 20;
	if (c->o.read_timeout_s <= 0)
		c->o.read_timeout_s = 60;
	if (c->o.settle_ms <= 0)
		c->o.settle_ms = 10000;
	if (c->o.write_back_ms < 0)
		c->o.write_back_ms = 0;
	c->dir = strdup(opts->dir);
	c->root_id = strdup(root_id ? root_id : "");
	c->dc = dc;
	c->crash_at = opts->crash_at;
	c->lock_fd = -1;
	c->next_ino = 2;
	c->next_vid = 1;
	c->up_window_start = cache_now_ms();
	init_sync(c);
	c->root = calloc(1, sizeof(*c->root));
	if (!c->dir || !c->root_id || !c->root) {
		rc = -ENOMEM;
		goto fail;
	}
	c->root->ino = 1;
	c->root->name = strdup("");
	c->root->remote_name = strdup("");
	c->root->is_dir = true;
	c->root->mode = 0755;
	c->root->refs = 1;
	clock_gettime(CLOCK_REALTIME, &c->root->mtime);
	c->root->ctime = c->root->mtime;
	node_hash_add(c, c->root);

	rc = store_lock_dir(c, errbuf, errlen);
	if (rc < 0)
		goto fail_free;
	rc = store_open(c, errbuf, errlen);
	if (rc < 0)
		goto fail;
	pthread_mutex_lock(&c->lock);
	/* One cache dir belongs to one Drive folder: mixing two trees
	 * would upload one remote's files into the other. */
	if (dc && store_get_meta(c, "root_id", buf, sizeof(buf)) == 0 &&
	    buf[0] && strcmp(buf, c->root_id) != 0) {
		pthread_mutex_unlock(&c->lock);
		snprintf(errbuf, errlen,
			 "cache dir %s belongs to Drive folder %s, not %s; "
			 "use another cache_dir",
			 c->dir, buf, c->root_id);
		rc = -EINVAL;
		goto fail;
	}
	if (dc)
		store_set_meta(c, "root_id", c->root_id);
	rc = store_load(c);
	if (rc == 0) {
		node_set_drive_id(c, c->root, c->root_id);
		c->root->remote_exists = true;
		if (!dc)
			c->root->listed = true;
		store_save_node(c, c->root);
		rc = recover_run(c);
	}
	pthread_mutex_unlock(&c->lock);
	if (rc < 0) {
		snprintf(errbuf, errlen, "cannot load %s/meta.db: %s", c->dir,
			 c->last_error);
		goto fail;
	}
	/* Without a token yet, take it before the first listing, so that no
	 * change between the two is missed. A failure here is not fatal:
	 * the poller tries again. */
	feed_init(c);
	rc = upload_start(c);
	if (rc == 0)
		rc = fetch_start(c);
	if (rc == 0)
		rc = hk_start(c);
	if (rc < 0) {
		snprintf(errbuf, errlen, "cannot start cache threads");
		upload_stop(c);
		fetch_stop(c);
		goto fail;
	}
	*out = c;
	return 0;
fail:
	store_close(c);
fail_free:
	free_all(c);
	free(c);
	return rc;
}

static void print_progress(int64_t files, int64_t bytes, int64_t left_ms)
{
	fprintf(stderr,
		"vectur: draining upload queue: %" PRId64 " file(s), %.1f MiB "
		"left (%" PRId64 " s before giving up)\n",
		files, bytes / 1048576.0, left_ms / 1000);
}

void cache_close(struct cache *c, int drain_timeout_s)
{
	int64_t deadline = cache_now_ms() + drain_timeout_s * 1000LL;
	int64_t files, bytes, last = 0;
	bool failed;

	if (!c)
		return;
	pthread_mutex_lock(&c->lock);
	if (c->dc) {
		c->draining = true;
		pthread_cond_broadcast(&c->work);
		for (;;) {
			files = upload_pending(c, -1, &bytes, &failed);
			if (files == 0 || cache_now_ms() >= deadline)
				break;
			if (cache_now_ms() - last >= 1000) {
				print_progress(files, bytes,
					       deadline - cache_now_ms());
				last = cache_now_ms();
			}
			cache_wait(c, 250);
		}
	}
	pthread_mutex_unlock(&c->lock);
	/* What is still queued stays for the next mount. Drive calls get
	 * 10 s more (a lock release), then retries and transfers under way
	 * stop: with Drive unreachable, a worker in a long backoff would
	 * otherwise hold the unmount for minutes. */
	if (c->dc)
		drive_client_give_up_in(c->dc, 10000);
	/* After the drain: held locks are released only if what was
	 * written under them made it to Drive. */
	cache_locks_stop(c);
	hk_stop(c);
	upload_stop(c);
	fetch_stop(c);
	/* Every thread of ours is gone: the client is the caller's again. */
	if (c->dc)
		drive_client_give_up_in(c->dc, -1);
	pthread_mutex_lock(&c->lock);
	files = upload_pending(c, -1, &bytes, &failed);
	{
		struct cver *v;
		int64_t stuck = 0;

		for (v = c->vers; v; v = v->gnext)
			if ((v->state == CV_CLOSED ||
			     v->state == CV_UPLOADING) &&
			    v->node->failed)
				stuck++;
		files += stuck + tombs_failed(c);
	}
	if (files > 0)
		fprintf(stderr,
			"vectur: %" PRId64 " item(s) (%.1f MiB) stay queued in "
			"%s for the next mount%s%s\n",
			files, bytes / 1048576.0, c->dir,
			c->last_error[0] ? "; last error: " : "",
			c->last_error);
	else if (c->dc)
		fprintf(stderr, "vectur: upload queue drained\n");
	if (store_catch_up(c) < 0)
		fprintf(stderr,
			"vectur: the cache metadata in %s could not be saved "
			"(%s): the next mount starts from its last save, "
			"changes made since are lost\n",
			c->dir, c->last_error);
	pthread_mutex_unlock(&c->lock);
	store_close(c);
	free_all(c);
	free(c);
}

/* cache_sync; with `deletes` off, a delete Drive refused for good is
 * neither tried again nor a failure (what a lock release waits for). */
static int sync_common(struct cache *c, bool deletes,
		       void (*progress)(int64_t files_left, int64_t bytes_left,
					void *ud),
		       void *ud)
{
	int64_t upto, files, bytes, last = 0;
	struct ctomb *t;
	struct cnode *n;
	bool failed;
	int rc = 0;

	pthread_mutex_lock(&c->lock);
	upto = c->close_seq;
	/* A delete Drive refused for good is tried once more now (the
	 * owner may have fixed its permissions), then reported. */
	for (t = c->tombs; deletes && t; t = t->next) {
		if (t->failed) {
			t->failed = false;
			t->due_ms = cache_now_ms();
		}
	}
	for (;;) {
		files = upload_pending(c, upto, &bytes, &failed);
		if (failed || (deletes && files == 0 && tombs_failed(c))) {
			rc = -EIO;
			break;
		}
		if (files == 0)
			break;
		if (!c->dc) {
			rc = -ENOTCONN;
			break;
		}
		/* What sync waits for goes now, not write_back later. */
		for (n = c->queue; n; n = n->q_next)
			if (!n->attempts && n->due_ms > cache_now_ms())
				n->due_ms = cache_now_ms();
		pthread_cond_broadcast(&c->work);
		if (progress && cache_now_ms() - last >= 500) {
			last = cache_now_ms();
			pthread_mutex_unlock(&c->lock);
			progress(files, bytes, ud);
			pthread_mutex_lock(&c->lock);
		}
		cache_wait(c, 250);
	}
	pthread_mutex_unlock(&c->lock);
	if (progress)
		progress(0, 0, ud);
	return rc;
}

int cache_sync(struct cache *c,
	       void (*progress)(int64_t files_left, int64_t bytes_left,
				void *ud),
	       void *ud)
{
	return sync_common(c, true, progress, ud);
}

int cache_sync_writes(struct cache *c)
{
	return sync_common(c, false, NULL, NULL);
}

char *cache_status_json(struct cache *c)
{
	struct json_object *o = json_object_new_object();
	struct cnode *n;
	struct cver *v;
	int64_t files, bytes, dirty = 0;
	bool failed;
	char *s;
	int i;

	pthread_mutex_lock(&c->lock);
	files = upload_pending(c, -1, &bytes, &failed);
	for (i = 0; i < CACHE_HASH; i++)
		for (n = c->by_ino[i]; n; n = n->h_ino)
			if (!n->is_dir && node_dirty(n))
				dirty++;
	(void)v;
	json_object_object_add(o, "queue_files", json_object_new_int64(files));
	json_object_object_add(o, "queue_bytes", json_object_new_int64(bytes));
	json_object_object_add(o, "uploading",
			       json_object_new_int(c->uploading));
	{
		/* The finished window's rate, or the running one once it is
		 * long enough: an idle queue decays to 0. */
		int64_t el = cache_now_ms() - c->up_window_start;
		double rate = el >= 2000 ? c->up_bytes_window * 1000.0 / el
					 : c->up_rate;

		json_object_object_add(o, "upload_rate_bps",
				       json_object_new_int64((int64_t)rate));
	}
	json_object_object_add(o, "uploaded_files",
			       json_object_new_int64(c->uploaded_files));
	json_object_object_add(
		o, "failed",
		json_object_new_boolean(failed || tombs_failed(c) > 0));
	json_object_object_add(o, "last_error",
			       json_object_new_string(c->last_error));
	/* false: the cache's own records are behind (a full cache disk) */
	json_object_object_add(o, "metadata_saved",
			       json_object_new_boolean(c->store_err == 0));
	if (c->last_poll_ms) {
		char buf[64];
		time_t t = c->last_poll_ms / 1000;
		struct tm tm;

		gmtime_r(&t, &tm);
		strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
		json_object_object_add(o, "last_poll",
				       json_object_new_string(buf));
	} else {
		json_object_object_add(o, "last_poll", NULL);
	}
	json_object_object_add(o, "cache_bytes",
			       json_object_new_int64(ver_bytes(c, false)));
	json_object_object_add(o, "cache_max",
			       json_object_new_int64(c->o.max_size));
	json_object_object_add(o, "dirty_files", json_object_new_int64(dirty));
	json_object_object_add(o, "offline", json_object_new_boolean(!c->dc));
	{
		/* Requests failing and retried now: the mount is cut off
		 * from Drive (or throttled) although not offline. */
		char why[640];
		int64_t ms;
		bool trouble = cache_drive_trouble(c, why, sizeof(why), &ms);

		json_object_object_add(o, "drive_trouble",
				       trouble ? json_object_new_string(why)
					       : NULL);
		json_object_object_add(
			o, "drive_trouble_s",
			json_object_new_int64(trouble ? ms / 1000 : 0));
	}
	{
		struct json_object *held = json_object_new_array();
		char **paths;
		int i, k = cache_locks_list(c, &paths);

		for (i = 0; i < k; i++) {
			json_object_array_add(held,
					      json_object_new_string(paths[i]));
			free(paths[i]);
		}
		free(paths);
		json_object_object_add(o, "locks_held", held);
	}
	pthread_mutex_unlock(&c->lock);
	s = strdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
	json_object_put(o);
	return s;
}
