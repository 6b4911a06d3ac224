/* fetch.c — downloads: a file not in the cache becomes a sparse CLEAN
 * version (complete = false) filled by `transfers` threads with ranged
 * downloads (1, 1, 2, 4, then 8 MiB pieces) in file order, except that a chunk
 * a reader is waiting for jumps the line. A reader waits only for the chunks
 * covering its range, and gets EIO once no chunk of the file has arrived for
 * read_timeout_s (a whole-file wait, for a writer, may take longer while
 * chunks keep arriving). Chunks are fetched
 * only while some handle holds the version, so an abandoned partial file costs
 * no bandwidth. Partial versions are not kept across restarts (recover.c drops
 * them).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cache_int.h"

enum { CH_MISSING = 0, CH_INFLIGHT = 1, CH_DONE = 2 };

#define FETCH_CHUNK (8 << 20)

struct cfetch {
	char id[128];
	/* The revision this content is on Drive ("" = unknown: the file's
	 * current content is fetched, which may by then be a newer one). */
	char rev[96];
	int64_t size;
	int64_t *off; /* chunk k is [off[k], off[k+1]) */
	int nchunks;
	unsigned char *st;
	int *want; /* readers waiting for each chunk */
	int next;  /* lowest chunk maybe missing, for in-order prefetch */
	int done;
	int err; /* permanent error (-errno) */
	int attempts;
	int64_t retry_at;
};

/* Chunk boundaries: 1, 1, 2, 4 MiB, then FETCH_CHUNK pieces. Big pieces
 * make per-request overhead vanish; small first ones let a reader start
 * after one quick request instead of a full 8 MiB. (Not the upload
 * chunk_size: that one is about resumable-upload granularity.) */
static int64_t *chunk_offsets(int64_t size, int *n)
{
	static const int64_t ramp[] = {1 << 20, 1 << 20, 2 << 20, 4 << 20};
	int64_t pos = 0, *off;
	int k = 0, cap;

	cap = (int)(size / FETCH_CHUNK) + 6;
	off = malloc((cap + 1) * sizeof(*off));
	if (!off)
		return NULL;
	while (pos < size) {
		off[k++] = pos;
		pos += k <= 4 ? ramp[k - 1] : FETCH_CHUNK;
	}
	off[k] = size;
	*n = k;
	return off;
}

/* The chunk holding byte pos (pos < size). */
static int chunk_of(struct cfetch *f, int64_t pos)
{
	int lo = 0, hi = f->nchunks - 1;

	while (lo < hi) {
		int mid = (lo + hi + 1) / 2;

		if (f->off[mid] <= pos)
			lo = mid;
		else
			hi = mid - 1;
	}
	return lo;
}

static void fetching_remove(struct cache *c, struct cver *v)
{
	int i;

	for (i = 0; i < c->nfetching; i++) {
		if (c->fetching[i] == v) {
			c->fetching[i] = c->fetching[--c->nfetching];
			return;
		}
	}
}

void fetch_free(struct cache *c, struct cver *v)
{
	struct cfetch *f = v->fetch;

	if (!f)
		return;
	fetching_remove(c, v);
	v->fetch = NULL;
	free(f->st);
	free(f->want);
	free(f->off);
	free(f);
	v->refs--; /* the fetch list's reference; the caller checks refs */
	pthread_cond_broadcast(&c->changed);
}

int fetch_begin(struct cache *c, struct cnode *n, struct cver **out)
{
	struct cfetch *f;
	struct cver *v;
	int rc = 0;

	if (!c->dc || !n->remote_exists || !n->drive_id[0])
		return -EIO;
	if (c->nfetching == c->fetching_cap) {
		int cap = c->fetching_cap ? c->fetching_cap * 2 : 16;
		struct cver **nf = realloc(c->fetching, cap * sizeof(*nf));

		if (!nf)
			return -ENOMEM;
		c->fetching = nf;
		c->fetching_cap = cap;
	}
	f = calloc(1, sizeof(*f));
	if (!f)
		return -ENOMEM;
	f->size = n->rsize;
	f->off = chunk_offsets(f->size, &f->nchunks);
	f->st = calloc(f->nchunks + 1, 1);
	f->want = calloc(f->nchunks + 1, sizeof(int));
	snprintf(f->id, sizeof(f->id), "%s", n->drive_id);
	snprintf(f->rev, sizeof(f->rev), "%s", n->rev);
	v = ver_new(c, n, CV_CLEAN);
	if (!f->off || !f->st || !f->want || !v) {
		rc = v ? -ENOMEM : -errno;
		goto fail;
	}
	/* Sparse: holes until the chunks land. */
	if (ftruncate(v->fd, f->size) < 0) {
		rc = -errno;
		goto fail;
	}
	v->size = f->size;
	v->mtime = n->mtime;
	v->complete = false;
	v->fetch = f;
	v->refs++;
	c->fetching[c->nfetching++] = v;
	if (n->cur && n->cur != v && n->cur->state == CV_CLEAN)
		ver_drop(c, n->cur);
	n->cur = v;
	store_save_version(c, v);
	pthread_cond_broadcast(&c->fetch_cv);
	*out = v;
	return 0;
fail:
	if (v)
		ver_drop(c, v);
	free(f->off);
	free(f->st);
	free(f->want);
	free(f);
	return rc;
}

/* Picks the next chunk to fetch: one a reader waits for, else the next
 * in file order of a version somebody has open. */
static struct cver *pick(struct cache *c, int *chunk)
{
	int64_t now = cache_now_ms();
	struct cfetch *f;
	struct cver *v;
	int i, k;

	for (i = 0; i < c->nfetching; i++) {
		v = c->fetching[i];
		f = v->fetch;
		if (f->err || f->retry_at > now)
			continue;
		for (k = 0; k < f->nchunks; k++) {
			if (f->want[k] && f->st[k] == CH_MISSING) {
				*chunk = k;
				return v;
			}
		}
	}
	for (i = 0; i < c->nfetching; i++) {
		v = c->fetching[i];
		f = v->fetch;
		/* Read ahead only while a handle reads it: not for readers a
		 * rewrite here took over (readers_follow), which hold it. */
		if (f->err || f->retry_at > now || v->handles <= 0)
			continue;
		while (f->next < f->nchunks && f->st[f->next] == CH_DONE)
			f->next++;
		for (k = f->next; k < f->nchunks; k++) {
			if (f->st[k] == CH_MISSING) {
				*chunk = k;
				return v;
			}
		}
	}
	return NULL;
}

static void chunk_done(struct cache *c, struct cver *v)
{
	struct cfetch *f = v->fetch;

	if (f->done < f->nchunks)
		return;
	v->complete = true;
	v->atime_ms = cache_wall_ms();
	/* Never fdatasynced: a new boot drops it (recover.c). */
	v->unsynced = true;
	fetch_free(c, v);
	if (v->dropped)
		return; /* finished for its readers only: no row, no name */
	store_save_version(c, v);
	evict_run(c);
}

static void *fetch_main(void *arg)
{
	struct cache *c = arg;
	struct drive_err err;
	struct cfetch *f;
	struct cver *v;
	char id[128], rev[96];
	int64_t off, len, got;
	int k, rc, fd;

	pthread_mutex_lock(&c->lock);
	while (!c->stopping) {
		v = pick(c, &k);
		if (!v) {
			struct timespec ts;

			drive_mono_ts_in(&ts, 200);
			pthread_cond_timedwait(&c->fetch_cv, &c->lock, &ts);
			continue;
		}
		f = v->fetch;
		f->st[k] = CH_INFLIGHT;
		off = f->off[k];
		len = f->off[k + 1] - off;
		snprintf(id, sizeof(id), "%s", f->id);
		snprintf(rev, sizeof(rev), "%s", f->rev);
		fd = v->fd;
		v->refs++;
		pthread_mutex_unlock(&c->lock);
		drive_err_clear(&err);
		got = 0;
		/* By revision: a file replaced on Drive while it is read here
		 * must not fill this version with the new bytes. */
		rc = drive_download_rev_fd(c->dc, id, rev, off, len, fd, off,
					   &v->fetch_wmu, &got, &err);
		if (rc == 0 && got != len) {
			rc = -1;
			drive_err_set(&err, 0, "short",
				      "short read: %lld of "
				      "%lld bytes",
				      (long long)got, (long long)len);
			err.curl_code = 18; /* CURLE_PARTIAL_FILE: retry */
		}
		pthread_mutex_lock(&c->lock);
		if (v->fetch == f) {
			if (rc == 0) {
				f->st[k] = CH_DONE;
				f->done++;
				f->attempts = 0;
				pthread_cond_broadcast(&c->changed);
				chunk_done(c, v);
			} else if (rev[0] && err.status == 404 &&
				   !strcmp(f->rev, rev) && !v->dropped) {
				/* Drive no longer keeps that revision: the
				 * file's current content, as before. */
				f->st[k] = CH_MISSING;
				f->rev[0] = '\0';
			} else {
				f->st[k] = CH_MISSING;
				cache_set_error(c, "download %s: %s", id,
						err.message);
				if (drive_err_retryable(&err) &&
				    ++f->attempts < 10) {
					f->retry_at = cache_now_ms() +
						      (250LL << f->attempts);
				} else {
					f->err = -drive_err_errno(&err);
					if (f->err == 0)
						f->err = -EIO;
					pthread_cond_broadcast(&c->changed);
				}
			}
		}
		ver_put(c, v);
	}
	pthread_mutex_unlock(&c->lock);
	return NULL;
}

int fetch_wait(struct cache *c, struct cver *v, int64_t off, int64_t len)
{
	int64_t timeout = (int64_t)c->o.read_timeout_s * 1000;
	int64_t deadline = cache_now_ms() + timeout;
	struct cfetch *f = v->fetch;
	int first, last, k, rc = 0, done;

	if (!f)
		return v->complete ? 0 : -EIO;
	if (len <= 0)
		return 0;
	if (off + len > f->size)
		len = f->size - off;
	if (len <= 0)
		return 0;
	first = chunk_of(f, off);
	last = chunk_of(f, off + len - 1);
	v->refs++;
	for (k = first; k <= last; k++)
		f->want[k]++;
	pthread_cond_broadcast(&c->fetch_cv);
	done = f->done;
	for (;;) {
		if (v->fetch != f) {
			rc = v->complete ? 0 : -EIO;
			break;
		}
		if (f->err) {
			/* A retry with a new reader may succeed. */
			rc = -EIO;
			f->err = 0;
			f->attempts = 0;
			break;
		}
		for (k = first; k <= last; k++)
			if (f->st[k] != CH_DONE)
				break;
		if (k > last)
			break;
		if (f->done != done) {
			/* Drive is answering: read_timeout is about getting
			 * nothing, not about a big range taking long. */
			done = f->done;
			deadline = cache_now_ms() + timeout;
		}
		if (cache_now_ms() >= deadline || c->stopping) {
			rc = -EIO;
			break;
		}
		cache_wait(c, 200);
	}
	if (v->fetch == f)
		for (k = first; k <= last; k++)
			f->want[k]--;
	ver_put(c, v);
	return rc;
}

int fetch_start(struct cache *c)
{
	int i, n = c->o.transfers > 0 ? c->o.transfers : 4;

	if (!c->dc)
		return 0;
	c->fetchers = calloc(n, sizeof(*c->fetchers));
	if (!c->fetchers)
		return -ENOMEM;
	for (i = 0; i < n; i++) {
		if (pthread_create(&c->fetchers[i], NULL, fetch_main, c) != 0)
			break;
		c->nfetchers++;
	}
	return 0;
}

void fetch_stop(struct cache *c)
{
	int i;

	pthread_mutex_lock(&c->lock);
	c->stopping = true;
	pthread_cond_broadcast(&c->fetch_cv);
	pthread_cond_broadcast(&c->changed);
	pthread_mutex_unlock(&c->lock);
	for (i = 0; i < c->nfetchers; i++)
		pthread_join(c->fetchers[i], NULL);
	c->nfetchers = 0;
}
