/* lock.c — lock files that hold across machines: the Drive protocol that
 * decides an exclusive create, and the mount's lease keeping (DESIGN.md §3
 * "Locks"; the contract is lock.h).
 *
 * Drive has no create-if-absent and allows duplicate names, so a lock is
 * decided after the fact, by every contender alike:
 *
 *   lock_create_candidate  create our entry (generated id, lease TTL in
 *                          appProperties, holder JSON as content)
 *   lock_list_contenders   list the folder BY PARENT and keep the entries
 *                          with the name (name-filtered lists lag creates)
 *   lock_drop_expired      delete entries whose lease ran out, judged on
 *                          the server's clock (Date vs modifiedTime)
 *   lock_pick_winner       the live entry with the smallest (createdTime,
 *                          id) holds the lock; a loser deletes its own
 *                          candidate (lock_withdraw) and gets EEXIST
 *
 * Why one winner: of two contenders, the one whose create committed second
 * lists after both exist, sees the other's older entry and yields. A tie on
 * createdTime is yielded by whoever sees it (lock_is_mine), since the other
 * may have listed alone.
 *
 * A holder keeps its lease alive by touching its entry every ttl/3 (Drive
 * moves modifiedTime to its own clock). A holder that finds it could not
 * renew for a whole TTL (paused, partitioned) gives the lock up instead of
 * renewing it: a contender may have judged it expired in the meantime, and
 * a lease that lapsed is never revived.
 *
 * The mount's side (second half): O_CREAT and mkdir under locks/ go
 * through the protocol and read the changes feed before returning (acquire
 * barrier); unlink/rmdir of a lock first pushes every write of this mount
 * to Drive (release barrier, lock_barrier: files closed an instant before
 * included) and then deletes it synchronously; only the holding mount may
 * release a lock (EPERM otherwise), so a holder that was paused past its
 * TTL cannot delete its successor's. One lease thread per mount renews,
 * drops lost locks from the view, and reaps expired locks of dead mounts
 * from the view so that waiting processes get to arbitrate again. An
 * expired folder is deleted only when empty: "locks/stages" may hold other
 * holders' locks.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#include "cache_int.h"
#include "lease.h"
#include "lock.h"

#define LOCK_ID_BATCH	   100
#define LOCK_DEFAULT_TTL_S 60

/* ---- the decision (pure) ----------------------------------------------- */

bool lock_expired(const struct lock_entry *e, int64_t server_ms)
{
	/* No TTL: not a lease we understand (made by another tool): it is
	 * never ours to delete. No Date: we cannot judge, so nothing is. */
	if (e->ttl_s <= 0 || server_ms <= 0)
		return false;
	return server_ms - e->modified_ms > (int64_t)e->ttl_s * 1000;
}

static bool entry_before(const struct lock_entry *a, const struct lock_entry *b)
{
	if (a->created_ms != b->created_ms)
		return a->created_ms < b->created_ms;
	return strcmp(a->id, b->id) < 0;
}

int lock_pick_winner(const struct lock_entry *e, int n, int64_t server_ms)
{
	int i, w = -1;

	for (i = 0; i < n; i++) {
		if (lock_expired(&e[i], server_ms))
			continue;
		if (w < 0 || entry_before(&e[i], &e[w]))
			w = i;
	}
	return w;
}

bool lock_is_mine(const struct lock_entry *e, int n, int64_t server_ms,
		  const char *id)
{
	int w = lock_pick_winner(e, n, server_ms), i;

	if (w < 0 || strcmp(e[w].id, id) != 0)
		return false;
	for (i = 0; i < n; i++)
		if (i != w && !lock_expired(&e[i], server_ms) &&
		    e[i].created_ms == e[w].created_ms)
			return false;
	return true;
}

/* ---- ids ----------------------------------------------------------------- */

struct lock_ids {
	pthread_mutex_t mu; /* a leaf; held across the refill request */
	char ids[LOCK_ID_BATCH][128];
	int n;
};

struct lock_ids *lock_ids_new(void)
{
	struct lock_ids *p = calloc(1, sizeof(*p));

	if (p)
		pthread_mutex_init(&p->mu, NULL);
	return p;
}

void lock_ids_free(struct lock_ids *p)
{
	if (!p)
		return;
	pthread_mutex_destroy(&p->mu);
	free(p);
}

static int lock_take_id(struct drive_client *dc, struct lock_ids *p,
			char out[128], struct drive_err *err)
{
	char one[1][128];
	int rc = 0;

	if (!p) {
		if (drive_generate_ids(dc, 1, one, err) < 0)
			return -1;
		memcpy(out, one[0], 128);
		return 0;
	}
	pthread_mutex_lock(&p->mu);
	if (p->n == 0) {
		rc = drive_generate_ids(dc, LOCK_ID_BATCH, p->ids, err);
		if (rc == 0)
			p->n = LOCK_ID_BATCH;
	}
	if (rc == 0)
		memcpy(out, p->ids[--p->n], 128);
	pthread_mutex_unlock(&p->mu);
	return rc;
}

/* ---- the protocol, step by step ---------------------------------------- */

struct lock_list {
	struct lock_entry *e;
	int n, cap;
};

static int lock_collect(const struct drive_lease_entry *le, void *ud)
{
	struct lock_list *l = ud;

	if (l->n == l->cap) {
		int cap = l->cap ? l->cap * 2 : 8;
		struct lock_entry *ne = realloc(l->e, cap * sizeof(*ne));

		if (!ne)
			return 1;
		l->e = ne;
		l->cap = cap;
	}
	snprintf(l->e[l->n].id, sizeof(l->e[l->n].id), "%s", le->f.id);
	l->e[l->n].created_ms = le->f.created_ms;
	l->e[l->n].modified_ms = le->f.modified_ms;
	l->e[l->n].ttl_s = le->ttl_s;
	l->e[l->n].is_folder = le->f.is_folder;
	l->n++;
	return 0;
}

static int lock_create_candidate(struct drive_client *dc, struct lock_ids *ids,
				 const char *parent_id, const char *name,
				 const char *holder_json, const char *note,
				 int ttl_s, struct drive_file *out,
				 struct drive_err *err)
{
	char id[128];

	if (lock_take_id(dc, ids, id, err) < 0)
		return -1;
	return drive_lease_create(dc, parent_id, name, id, holder_json,
				  holder_json ? strlen(holder_json) : 0, note,
				  ttl_s, out, NULL, err);
}

/* Name-filtered lists lag behind creates on Drive (its search index); a
 * list by parent shows our own candidate and every committed rival. */
static int lock_list_contenders(struct drive_client *dc, const char *parent_id,
				const char *name, struct lock_list *l,
				int64_t *server_ms, struct drive_err *err)
{
	l->n = 0;
	*server_ms = 0;
	return drive_lease_list(dc, parent_id, name, lock_collect, l, server_ms,
				err);
}

static int lock_found_one(const struct drive_file *f, void *ud)
{
	*(bool *)ud = true;
	return 1;
}

/* Whether folder id is empty on Drive (false when unsure). */
static bool lock_folder_empty(struct drive_client *dc, const char *id)
{
	struct drive_err err;
	bool found = false;

	if (drive_list(dc, id, NULL, lock_found_one, &found, NULL, &err) < 0)
		return false;
	return !found;
}

/* An expired folder lock that holds anything is no longer treated as a
 * lease: deleting it would take other holders' locks inside with it (a
 * mkdir'd "locks/stages" holding stage locks). It stays, as a live entry. */
static void lock_keep_full_folders(struct drive_client *dc, struct lock_list *l,
				   int64_t server_ms)
{
	int i;

	for (i = 0; i < l->n; i++)
		if (l->e[i].is_folder && lock_expired(&l->e[i], server_ms) &&
		    !lock_folder_empty(dc, l->e[i].id))
			l->e[i].ttl_s = 0;
}

/* Deletes the entries whose lease ran out (never `mine`). A failed delete
 * changes nothing: the entry is expired whoever removes it. */
static int lock_drop_expired(struct drive_client *dc, struct lock_list *l,
			     int64_t server_ms, const char *mine)
{
	struct drive_err err;
	int i, dropped = 0;

	for (i = 0; i < l->n; i++) {
		if (!lock_expired(&l->e[i], server_ms) ||
		    (mine && strcmp(l->e[i].id, mine) == 0))
			continue;
		if (drive_delete(dc, l->e[i].id, &err) == 0 ||
		    err.status == 404)
			dropped++;
	}
	return dropped;
}

/* A loser removes its candidate at once: left behind, it would be the
 * oldest live entry once the holder leaves, and block everyone for a TTL. */
static int lock_withdraw(struct drive_client *dc, const char *id,
			 struct drive_err *err)
{
	if (drive_delete(dc, id, err) == 0 || err->status == 404)
		return 0;
	return -1;
}

int lock_acquire(struct drive_client *dc, struct lock_ids *ids,
		 const char *parent_id, const char *name,
		 const char *holder_json, const char *note, int ttl_s,
		 struct lock_result *res, char *orphan_id,
		 struct drive_err *err)
{
	struct lock_list l = {0};
	struct drive_err werr;
	int rc = -1, w;

	memset(res, 0, sizeof(*res));
	if (orphan_id)
		orphan_id[0] = '\0';
	drive_err_clear(err);
	if (lock_create_candidate(dc, ids, parent_id, name, holder_json, note,
				  ttl_s, &res->file, err) < 0)
		return -1;
	if (lock_list_contenders(dc, parent_id, name, &l, &res->server_ms,
				 err) < 0)
		goto withdraw;
	res->contenders = l.n;
	lock_keep_full_folders(dc, &l, res->server_ms);
	res->expired = lock_drop_expired(dc, &l, res->server_ms, res->file.id);
	res->won = lock_is_mine(l.e, l.n, res->server_ms, res->file.id);
	rc = 0;
	if (res->won)
		goto out;
	w = lock_pick_winner(l.e, l.n, res->server_ms);
	if (w >= 0 && strcmp(l.e[w].id, res->file.id) != 0)
		snprintf(res->holder_id, sizeof(res->holder_id), "%s",
			 l.e[w].id);
withdraw:
	drive_err_clear(&werr);
	if (lock_withdraw(dc, res->file.id, &werr) < 0 && orphan_id)
		snprintf(orphan_id, 128, "%s", res->file.id);
out:
	free(l.e);
	return rc;
}

int lock_refresh(struct drive_client *dc, const char *id,
		 struct drive_file *out, int64_t *back_ms,
		 struct drive_err *err)
{
	int64_t date_ms = 0, lag;

	*back_ms = 0;
	if (drive_touch(dc, id, out, &date_ms, err) < 0)
		return -1;
	if (date_ms <= 0) {
		drive_err_set(err, 0, "leaseNotRenewed",
			      "a lock renewal's response had no Date");
		return -1;
	}
	/* Drive's clock when the touch was sent was before the response,
	 * made in the second date_ms names: under date_ms + 1000. So the
	 * stamp M lags that moment by less than lag, and the lease runs at
	 * least TTL - lag from the send. A Drive that stamped the touch
	 * gives lag <= 1000 (give or take the second boundary); a stamp
	 * older than the response's second was not this touch's. */
	lag = date_ms + 1000 - out->modified_ms;
	if (lag <= 1000) {
		*back_ms = lag > 0 ? lag : 0;
		return 0;
	}
	if (drive_update_meta(dc, id, NULL, NULL, NULL, date_ms, out, err) < 0)
		return -1;
	*back_ms = 1000;
	return 1;
}

int lock_delete(struct drive_client *dc, const char *id, struct drive_err *err)
{
	return drive_delete(dc, id, err);
}

int lock_still_ours(struct drive_client *dc, const char *parent_id,
		    const char *name, const char *id, bool *ours,
		    struct drive_err *err)
{
	struct lock_list l = {0};
	int64_t server_ms;
	int w, rc;

	*ours = false;
	rc = lock_list_contenders(dc, parent_id, name, &l, &server_ms, err);
	if (rc == 0) {
		w = lock_pick_winner(l.e, l.n, server_ms);
		*ours = w >= 0 && strcmp(l.e[w].id, id) == 0;
	}
	free(l.e);
	return rc;
}

/* ---- the mount's lease table ------------------------------------------- */

/* A lock this mount holds. sent_ms: when the newest successful refresh (or
 * the create) was SENT, by the monotonic clock: Drive stamped the entry
 * after that, so the lease cannot have run out before sent_ms + TTL. */
struct lease {
	char id[128];
	char *path;
	bool is_dir;
	int64_t sent_ms;
	int64_t due_ms;
	struct lease *next;
};

struct lock_table {
	struct cache *c;
	int ttl_s;
	char mount_id[64];
	char host[256];
	struct lock_ids *ids;

	pthread_mutex_t mu; /* everything below; after c->lock */
	pthread_cond_t cv;
	pthread_t thr;
	bool started, stopping;
	struct lease *held;
	char (*orphans)[128]; /* losers' candidates whose delete failed */
	int norphans, orphans_cap;
	int64_t reap_due_ms;
	bool stamps_set; /* a renewal had to set modifiedTime (said once) */

	struct lock_table *next; /* the registry */
};

/* The tables, by struct cache. Kept here rather than as a field of struct
 * cache so that cache/'s structs do not depend on this file. */
static pthread_mutex_t reg_mu = PTHREAD_MUTEX_INITIALIZER;
static struct lock_table *reg;

static int64_t mono_ms(void)
{
	return cache_now_ms();
}

static int64_t lease_period_ms(struct lock_table *lt)
{
	int64_t p = (int64_t)lt->ttl_s * 1000 / 3;

	return p < 500 ? 500 : p;
}

static void *lease_main(void *arg);

static struct lock_table *lt_find(struct cache *c)
{
	struct lock_table *lt;

	for (lt = reg; lt; lt = lt->next)
		if (lt->c == c)
			return lt;
	return NULL;
}

static struct lock_table *lt_new(struct cache *c, int ttl_s,
				 const char *mount_id)
{
	struct lock_table *lt = calloc(1, sizeof(*lt));
	pthread_condattr_t ca;
	unsigned char r[8];
	int i, fd;

	if (!lt)
		return NULL;
	lt->c = c;
	lt->ttl_s = ttl_s > 0 ? ttl_s : LOCK_DEFAULT_TTL_S;
	lt->ids = lock_ids_new();
	if (!lt->ids) {
		free(lt);
		return NULL;
	}
	if (mount_id && *mount_id) {
		snprintf(lt->mount_id, sizeof(lt->mount_id), "%s", mount_id);
	} else {
		memset(r, 0, sizeof(r));
		fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
		if (fd >= 0) {
			if (read(fd, r, sizeof(r)) < 0)
				r[0] = (unsigned char)getpid();
			close(fd);
		}
		for (i = 0; i < 8; i++)
			sprintf(lt->mount_id + 2 * i, "%02x", r[i]);
	}
	if (gethostname(lt->host, sizeof(lt->host)) < 0)
		snprintf(lt->host, sizeof(lt->host), "unknown");
	pthread_mutex_init(&lt->mu, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&lt->cv, &ca);
	pthread_condattr_destroy(&ca);
	if (c->dc && pthread_create(&lt->thr, NULL, lease_main, lt) == 0)
		lt->started = true;
	return lt;
}

/* The table of c, made with defaults on first use. */
static struct lock_table *lt_get(struct cache *c)
{
	struct lock_table *lt;

	pthread_mutex_lock(&reg_mu);
	lt = lt_find(c);
	if (!lt) {
		lt = lt_new(c, 0, NULL);
		if (lt) {
			lt->next = reg;
			reg = lt;
		}
	}
	pthread_mutex_unlock(&reg_mu);
	return lt;
}

int cache_locks_start(struct cache *c, int ttl_s, const char *mount_id)
{
	struct lock_table *lt;

	pthread_mutex_lock(&reg_mu);
	lt = lt_find(c);
	if (lt) {
		pthread_mutex_lock(&lt->mu);
		if (ttl_s > 0)
			lt->ttl_s = ttl_s;
		if (mount_id && *mount_id)
			snprintf(lt->mount_id, sizeof(lt->mount_id), "%s",
				 mount_id);
		pthread_mutex_unlock(&lt->mu);
	} else {
		lt = lt_new(c, ttl_s, mount_id);
		if (lt) {
			lt->next = reg;
			reg = lt;
		}
	}
	pthread_mutex_unlock(&reg_mu);
	return lt ? 0 : -ENOMEM;
}

static bool lt_holds(struct lock_table *lt, const char *id)
{
	struct lease *h;
	bool yes = false;

	pthread_mutex_lock(&lt->mu);
	for (h = lt->held; h && !yes; h = h->next)
		yes = strcmp(h->id, id) == 0;
	pthread_mutex_unlock(&lt->mu);
	return yes;
}

static int lt_add(struct lock_table *lt, const char *id, const char *path,
		  bool is_dir, int64_t sent_ms)
{
	struct lease *h = calloc(1, sizeof(*h));

	if (!h || !(h->path = strdup(path))) {
		free(h);
		return -ENOMEM;
	}
	snprintf(h->id, sizeof(h->id), "%s", id);
	h->is_dir = is_dir;
	h->sent_ms = sent_ms;
	pthread_mutex_lock(&lt->mu);
	h->due_ms = sent_ms + lease_period_ms(lt);
	h->next = lt->held;
	lt->held = h;
	pthread_cond_broadcast(&lt->cv);
	pthread_mutex_unlock(&lt->mu);
	return 0;
}

/* Takes id out of the table; false if it was not there. */
static bool lt_remove(struct lock_table *lt, const char *id)
{
	struct lease **pp, *h;
	bool found = false;

	pthread_mutex_lock(&lt->mu);
	for (pp = &lt->held; *pp; pp = &(*pp)->next) {
		if (strcmp((*pp)->id, id) == 0) {
			h = *pp;
			*pp = h->next;
			free(h->path);
			free(h);
			found = true;
			break;
		}
	}
	pthread_mutex_unlock(&lt->mu);
	return found;
}

/* Whether id is in the table (*held) and its lease cannot have run out:
 * renewed (or created) less than a TTL ago. */
static bool lt_fresh(struct lock_table *lt, const char *id, bool *held)
{
	struct lease *h;
	bool fresh = false;

	*held = false;
	pthread_mutex_lock(&lt->mu);
	for (h = lt->held; h; h = h->next) {
		if (strcmp(h->id, id) == 0) {
			*held = true;
			fresh = mono_ms() - h->sent_ms <=
				(int64_t)lt->ttl_s * 1000;
		}
	}
	pthread_mutex_unlock(&lt->mu);
	return fresh;
}

static void lt_add_orphan(struct lock_table *lt, const char *id)
{
	pthread_mutex_lock(&lt->mu);
	if (lt->norphans == lt->orphans_cap) {
		int cap = lt->orphans_cap ? lt->orphans_cap * 2 : 8;
		char(*no)[128] = realloc(lt->orphans, cap * sizeof(*no));

		if (!no) {
			pthread_mutex_unlock(&lt->mu);
			return; /* it expires by itself */
		}
		lt->orphans = no;
		lt->orphans_cap = cap;
	}
	snprintf(lt->orphans[lt->norphans++], 128, "%s", id);
	pthread_mutex_unlock(&lt->mu);
}

int cache_locks_list(struct cache *c, char ***paths)
{
	struct lock_table *lt;
	struct lease *h;
	char **v = NULL;
	int n = 0, i = 0;

	*paths = NULL;
	pthread_mutex_lock(&reg_mu);
	lt = lt_find(c);
	if (lt) {
		pthread_mutex_lock(&lt->mu);
		for (h = lt->held; h; h = h->next)
			n++;
		v = n ? calloc(n, sizeof(*v)) : NULL;
		for (h = lt->held; v && h; h = h->next)
			if ((v[i] = strdup(h->path)) != NULL)
				i++;
		pthread_mutex_unlock(&lt->mu);
	}
	pthread_mutex_unlock(&reg_mu);
	*paths = v;
	return i;
}

int cache_locks_held(struct cache *c)
{
	struct lock_table *lt;
	struct lease *h;
	int n = 0;

	pthread_mutex_lock(&reg_mu);
	lt = lt_find(c);
	if (lt) {
		pthread_mutex_lock(&lt->mu);
		for (h = lt->held; h; h = h->next)
			n++;
		pthread_mutex_unlock(&lt->mu);
	}
	pthread_mutex_unlock(&reg_mu);
	return n;
}

/* ---- the view ------------------------------------------------------------ */

bool cache_lock_path(const char *path)
{
	return strncmp(path, "locks/", 6) == 0 && path[6] && path[6] != '/';
}

/* Takes lock node n out of the view without touching Drive: the lock is
 * no longer ours (or no longer anyone's). c->lock held. */
void lock_view_drop_node(struct cache *c, struct cnode *n)
{
	if (!n || n->unlinked || !n->parent)
		return;
	cache_note_inval(c, n);
	cache_note_inval(c, n->parent);
	if (n->is_dir)
		node_forget(c, n); /* keeps dirty files put inside it */
	else
		node_detach(c, n);
	pthread_cond_broadcast(&c->changed);
}

static void lock_view_drop(struct cache *c, const char *id)
{
	lock_view_drop_node(c, node_by_id(c, id));
}

static void lock_view_drop_unlocked(struct cache *c, const char *id)
{
	pthread_mutex_lock(&c->lock);
	lock_view_drop(c, id);
	pthread_mutex_unlock(&c->lock);
	cache_run_inval(c);
}

static char *lock_holder_json(struct lock_table *lt, const char *path)
{
	struct json_object *o = json_object_new_object();
	char when[64], *s;
	struct timespec ts;
	struct tm tm;

	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	snprintf(when, sizeof(when), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ",
		 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
		 tm.tm_min, tm.tm_sec, (int)(ts.tv_nsec / 1000000));
	json_object_object_add(o, "host", json_object_new_string(lt->host));
	json_object_object_add(o, "pid", json_object_new_int(getpid()));
	json_object_object_add(o, "mount_id",
			       json_object_new_string(lt->mount_id));
	json_object_object_add(o, "path", json_object_new_string(path));
	json_object_object_add(o, "acquired_at", json_object_new_string(when));
	json_object_object_add(o, "ttl_s", json_object_new_int(lt->ttl_s));
	s = NULL;
	if (asprintf(&s, "%s\n",
		     json_object_to_json_string_ext(
			     o, JSON_C_TO_STRING_PLAIN |
					JSON_C_TO_STRING_NOSLASHESCAPE)) < 0)
		s = NULL;
	json_object_put(o);
	return s;
}

/* The lock's folder must exist on Drive before a candidate can be put in
 * it: created now, in this thread (c->lock held, dropped by the queue). */
static int lock_parent_ready(struct cache *c, struct cnode *d)
{
	int rc = 0, waits = 0;

	if (!d->parent || d->remote_exists)
		return 0;
	d->refs++;
	do /* waits for a reconcile of d another thread runs: bounded */
		rc = upload_reconcile_now(c, d);
	while (rc == -EAGAIN && d->busy && !d->unlinked && ++waits < 120);
	node_put(c, d);
	if (d->unlinked)
		return -ENOENT;
	if (!d->remote_exists)
		return rc < 0 ? rc : -EIO;
	return 0;
}

/* Puts the lock we won into the view: the node, its Drive identity, and
 * (files) the holder JSON as its CLEAN content, so `cat` shows it without
 * a download. A node of that name already in the view is a stale copy of a
 * lock that no longer is (we just won): it goes. c->lock held. */
static struct cnode *lock_view_adopt(struct cache *c, struct cnode *d,
				     const char *name, mode_t mode,
				     const struct drive_file *f,
				     const char *content)
{
	struct cnode *n = node_by_id(c, f->id), *o;
	struct cver *v;
	size_t len = content ? strlen(content) : 0;

	if (n && (n->parent != d || n->unlinked))
		return NULL;
	if (!n) {
		o = node_child(c, d, name);
		if (o) {
			cache_note_inval(c, o);
			node_detach(c, o);
		}
		n = node_new(c, d, name, f->is_folder, mode);
		if (!n)
			return NULL;
	}
	node_apply_remote(c, n, f);
	if (f->is_folder) {
		n->listed = true; /* just made: nothing inside */
	} else if (!n->cur) {
		v = ver_new(c, n, CV_CLEAN);
		/* A few hundred bytes into a file nobody else can see yet:
		 * cheap enough to do under c->lock. */
		if (v && pwrite(v->fd, content, len, 0) == (ssize_t)len) {
			v->size = (int64_t)len;
			v->mtime = cache_ts_of_ms(f->modified_ms);
			n->cur = v;
			store_save_version(c, v);
		} else if (v) {
			ver_drop(c, v); /* read from Drive instead */
		}
	}
	store_save_node(c, n);
	d->mtime = n->mtime;
	return n;
}

/* The arbitration behind both exclusive creates and mkdirs (c->lock held,
 * dropped while Drive decides). */
static int lock_view_acquire(struct cache *c, const char *path, struct cnode *d,
			     const char *name, mode_t mode, bool is_dir,
			     struct cnode **out)
{
	struct lock_table *lt = lt_get(c);
	char parent[128], dname[1024], orphan[128];
	struct lock_result res;
	struct drive_err err;
	char *holder = NULL;
	struct cnode *n;
	int64_t sent;
	int rc, ttl;

	if (!lt)
		return -ENOMEM;
	if (!c->dc)
		return -EROFS; /* offline: nobody can decide a lock */
	rc = lock_parent_ready(c, d);
	if (rc < 0)
		return rc;
	if (drive_name_from_local(name, dname, sizeof(dname)) < 0)
		return -ENAMETOOLONG;
	holder = lock_holder_json(lt, path);
	if (!holder)
		return -ENOMEM;
	snprintf(parent, sizeof(parent), "%s", d->drive_id);
	pthread_mutex_lock(&lt->mu);
	ttl = lt->ttl_s;
	pthread_mutex_unlock(&lt->mu);
	d->refs++;
	pthread_mutex_unlock(&c->lock);

	sent = mono_ms();
	rc = lock_acquire(c->dc, lt->ids, parent, dname, is_dir ? NULL : holder,
			  is_dir ? holder : NULL, ttl, &res, orphan, &err);
	if (orphan[0])
		lt_add_orphan(lt, orphan);

	pthread_mutex_lock(&c->lock);
	if (rc < 0) {
		rc = -drive_err_errno(&err);
		cache_set_error(c, "lock %s: %s", path, err.message);
		if (upload_parent_404(&err, parent) && !d->unlinked &&
		    d->parent && strcmp(d->drive_id, parent) == 0) {
			/* The folder went on Drive (a folder lock broken
			 * once it expired): forgotten as the feed would, so
			 * that mkdir makes it again instead of EEXIST. */
			node_forget(c, d);
			rc = -ENOENT;
		}
		goto out;
	}
	if (!res.won) {
		/* Someone holds it: list the folder again at the next lookup
		 * so the holder shows (and `cat` says who). */
		d->listed = false;
		cache_note_inval(c, d);
		rc = -EEXIST;
		goto out;
	}
	n = d->unlinked ? NULL
			: lock_view_adopt(c, d, name, mode, &res.file, holder);
	if (!n) {
		pthread_mutex_unlock(&c->lock);
		lock_delete(c->dc, res.file.id, &err);
		pthread_mutex_lock(&c->lock);
		rc = d->unlinked ? -ENOENT : -ENOMEM;
		goto out;
	}
	lt_add(lt, res.file.id, path, is_dir, sent);
	/* The acquire barrier: whatever the previous holder pushed before
	 * releasing is in the feed; read it before the caller reads data. */
	n->refs++;
	pthread_mutex_unlock(&c->lock);
	rc = feed_poll(c);
	pthread_mutex_lock(&c->lock);
	if (rc == 0 && n->unlinked)
		rc = -ENOENT;
	if (rc < 0) {
		/* Without the barrier the caller could read stale data under
		 * the lock: give it back rather than pretend. */
		lt_remove(lt, res.file.id);
		lock_view_drop(c, res.file.id);
		pthread_mutex_unlock(&c->lock);
		lock_delete(c->dc, res.file.id, &err);
		pthread_mutex_lock(&c->lock);
		node_put(c, n);
		goto out;
	}
	node_put(c, n);
	*out = n;
	rc = 0;
out:
	node_put(c, d);
	free(holder);
	return rc;
}

int cache_lock_create(struct cache *c, const char *path, struct cnode *dir,
		      const char *name, mode_t mode, struct cnode **out)
{
	return lock_view_acquire(c, path, dir, name, mode, false, out);
}

int cache_lock_mkdir(struct cache *c, const char *path, struct cnode *dir,
		     const char *name, mode_t mode)
{
	struct cnode *n;

	return lock_view_acquire(c, path, dir, name, mode, true, &n);
}

/* ---- the release barrier ------------------------------------------------ */

struct sync_target {
	uint64_t ino;
	int64_t seq;
};

/* A close(2) ends its version in FUSE's flush, which close() waits for;
 * one in progress here is waited for. A file still open for writing has
 * no complete version to push, with one exception: a log (written through
 * O_APPEND), whose every prefix is whole, is snapshotted into a CLOSED
 * version (what fsync does locally). A checkpoint another process is
 * writing must not reach Drive half-written because a lock was released.
 * c->lock held. */
static bool barrier_closing(struct cache *c)
{
	struct cver *v;

	for (v = c->vers; v; v = v->gnext)
		if (v->state == CV_OPEN && v->writers == 0 && !v->dropped &&
		    !(v->was_clean && v->gen == 0) && !v->node->unlinked)
			return true;
	return false;
}

static int barrier_snapshot_open(struct cache *c)
{
	int64_t deadline = cache_now_ms() + 5000, *vids = NULL, seq;
	struct cver *v;
	int n = 0, cap = 0, i, rc = 0;

	/* A last close in progress (between its writers-- and CLOSED, while
	 * it fdatasyncs without c->lock) is about to be queued: wait for it,
	 * or cache_sync would not count it. */
	while (barrier_closing(c) && cache_now_ms() < deadline)
		cache_wait(c, 10);
	for (v = c->vers; v; v = v->gnext) {
		if (v->state != CV_OPEN || v->writers == 0 || v->dropped ||
		    !v->appending || (v->was_clean && v->gen == 0) ||
		    v->node->unlinked)
			continue;
		if (n == cap) {
			int64_t *nv;

			cap = cap ? cap * 2 : 16;
			nv = realloc(vids, cap * sizeof(*nv));
			if (!nv) {
				free(vids);
				return -ENOMEM;
			}
			vids = nv;
		}
		vids[n++] = v->vid;
	}
	for (i = 0; i < n && rc == 0; i++) {
		for (v = c->vers; v && v->vid != vids[i]; v = v->gnext)
			;
		if (!v || v->state != CV_OPEN || v->dropped)
			continue; /* closed meanwhile: queued already */
		while (v->preparing)
			cache_wait(c, 100);
		v->refs++;
		seq = ver_snapshot(c, v);
		ver_put(c, v);
		if (seq < 0 && seq != -ENOENT)
			rc = (int)seq;
	}
	free(vids);
	return rc;
}

/* What must be on Drive: every closed version, per node. c->lock held. */
static int barrier_targets(struct cache *c, struct sync_target **out)
{
	struct sync_target *t = NULL;
	struct cver *v;
	int n = 0, cap = 0;

	for (v = c->vers; v; v = v->gnext) {
		if (v->state != CV_CLOSED && v->state != CV_UPLOADING)
			continue;
		if (n == cap) {
			struct sync_target *nt;

			cap = cap ? cap * 2 : 16;
			nt = realloc(t, cap * sizeof(*nt));
			if (!nt)
				break;
			t = nt;
		}
		t[n].ino = v->node->ino;
		t[n].seq = v->close_seq;
		n++;
	}
	*out = t;
	return n;
}

/* Pushes every write this mount made so far to Drive. cache_sync() waits
 * for the versions closed before it, but a newer close of the same file
 * supersedes the one it waits for; so each file is also waited for until
 * Drive has that version or a newer one (upload_synced). c->lock NOT held. */
static int lock_barrier(struct cache *c)
{
	struct sync_target *t = NULL;
	int64_t deadline;
	struct cnode *n;
	int rc, cnt, i;

	pthread_mutex_lock(&c->lock);
	rc = barrier_snapshot_open(c);
	cnt = rc == 0 ? barrier_targets(c, &t) : 0;
	pthread_mutex_unlock(&c->lock);
	if (rc < 0)
		return rc;
	rc = cache_sync_writes(c);
	pthread_mutex_lock(&c->lock);
	deadline = cache_now_ms() + 120000;
	for (i = 0; i < cnt && rc == 0; i++) {
		while ((n = node_by_ino(c, t[i].ino)) && !n->unlinked &&
		       !upload_synced(n, t[i].seq)) {
			if (n->failed || cache_now_ms() > deadline) {
				rc = -EIO;
				break;
			}
			if (n->queued && !n->attempts)
				n->due_ms = cache_now_ms();
			pthread_cond_broadcast(&c->work);
			cache_wait(c, 50);
		}
	}
	pthread_mutex_unlock(&c->lock);
	free(t);
	return rc;
}

/* A lock that never reached Drive (made while offline, or a plain file
 * moved in) is removed the ordinary way. c->lock held. */
static int lock_unlink_plain(struct cache *c, struct cnode *n)
{
	int rc;

	store_begin(c); /* one change, as cache_unlink */
	node_tomb(c, n);
	node_detach(c, n);
	rc = store_commit(c);
	pthread_cond_broadcast(&c->changed);
	return rc;
}

int cache_lock_unlink(struct cache *c, const char *path, bool dir)
{
	struct lock_table *lt = lt_get(c);
	struct drive_err err;
	struct cnode *n;
	char id[128];
	bool gone, held = false, fresh = false;
	int rc;

	pthread_mutex_lock(&c->lock);
	rc = node_lookup(c, path, &n);
	if (rc < 0)
		goto out;
	if (n->is_dir != dir) {
		rc = dir ? -ENOTDIR : -EISDIR;
		goto out;
	}
	if (dir) {
		n->refs++;
		rc = node_ensure_listed(c, n); /* children on Drive count */
		node_put(c, n);
		if (rc == 0 && n->unlinked)
			rc = -ENOENT;
		if (rc == 0 && n->kids)
			rc = -ENOTEMPTY;
		if (rc < 0)
			goto out;
	}
	if (!c->dc || !n->remote_exists || !n->drive_id[0]) {
		rc = lock_unlink_plain(c, n);
		goto out;
	}
	snprintf(id, sizeof(id), "%s", n->drive_id);
	if (lt && !lt_holds(lt, id)) {
		/* Another mount's lock (or one we lost while paused): only
		 * its holder releases it; a dead holder's lease expires. A
		 * stale holder thus cannot delete its successor's lock. */
		rc = -EPERM;
		goto out;
	}
	n->refs++;
	pthread_mutex_unlock(&c->lock);

	/* The release barrier: what this mount wrote under the lock is on
	 * Drive before anyone else can take it. */
	rc = lock_barrier(c);
	if (rc < 0) {
		/* Not released: the next holder would miss our writes. Nor
		 * kept alive: one upload failing for good (quota) must not
		 * block every machine forever. The lease runs out. */
		fprintf(stderr,
			"vectur: lock %s not released: writes of this mount "
			"could not be put on Drive (%s); no longer renewed, it "
			"expires in %d s\n",
			path, strerror(-rc), lt ? lt->ttl_s : 0);
		if (lt)
			lt_remove(lt, id);
		pthread_mutex_lock(&c->lock);
		lock_view_drop(c, id);
		node_put(c, n);
		goto out;
	}
	drive_err_clear(&err);
	fresh = lt && lt_fresh(lt, id, &held);
	rc = lock_delete(c->dc, id, &err);
	gone = rc < 0 && err.status == 404;
	if (rc < 0 && !gone) {
		pthread_mutex_lock(&c->lock);
		cache_set_error(c, "release %s: %s", path, err.message);
		node_put(c, n);
		rc = -drive_err_errno(&err);
		goto out;
	}
	if (lt)
		lt_remove(lt, id);
	pthread_mutex_lock(&c->lock);
	lock_view_drop(c, id);
	node_put(c, n);
	/* A lease of ours that lapsed (we were paused past the TTL) may have
	 * been taken over meanwhile: say so rather than pretend the release
	 * worked. A 404 on a fresh lease is our own delete retried after a
	 * lost answer (or a removal by hand): released all the same. */
	if (held)
		rc = fresh ? 0 : -ENOENT;
	else
		rc = gone ? -ENOENT : 0;
out:
	pthread_mutex_unlock(&c->lock);
	cache_run_inval(c);
	return rc;
}

/* ---- the lease thread -----------------------------------------------------
 */

struct due_lock {
	char id[128];
	char path[1024];
	int64_t sent_ms;
};

/* A held lock could not be renewed for a whole TTL: a contender may have
 * taken it, so it is given up, never renewed. Our entry is deleted (by id:
 * it can only be ours) so that nobody waits for it to expire. */
static void lease_lapse(struct lock_table *lt, const struct due_lock *d,
			int64_t late_ms)
{
	struct cache *c = lt->c;
	struct drive_err err;

	fprintf(stderr,
		"vectur: lock %s lost: not renewed for %" PRId64
		" ms (TTL %d s; the mount was paused or cut off); dropped\n",
		d->path, late_ms, lt->ttl_s);
	lt_remove(lt, d->id);
	lock_view_drop_unlocked(c, d->id);
	drive_err_clear(&err);
	lock_delete(c->dc, d->id, &err);
}

static void lease_lost(struct lock_table *lt, const struct due_lock *d)
{
	fprintf(stderr,
		"vectur: lock %s lost: deleted on Drive (taken over after "
		"its lease expired, or removed by hand); dropped\n",
		d->path);
	lt_remove(lt, d->id);
	lock_view_drop_unlocked(lt->c, d->id);
}

/* The refresh sent at `sent` worked; its stamp may lie up to back_ms
 * before that (lock_refresh), and was set by us if `stamped`. */
static void lease_renewed(struct lock_table *lt, const struct due_lock *d,
			  int64_t sent, int64_t back_ms, bool stamped,
			  const struct drive_file *f)
{
	struct cache *c = lt->c;
	struct lease *h;
	struct cnode *n;

	pthread_mutex_lock(&lt->mu);
	if (stamped && !lt->stamps_set) {
		lt->stamps_set = true;
		fprintf(stderr,
			"vectur: lock %s: a renewal came back with a "
			"modifiedTime Drive had not moved; vectur set it to "
			"Drive's Date itself (said once)\n",
			d->path);
	}
	for (h = lt->held; h; h = h->next) {
		if (strcmp(h->id, d->id) == 0) {
			h->sent_ms = sent - back_ms;
			h->due_ms = sent + lease_period_ms(lt);
		}
	}
	pthread_mutex_unlock(&lt->mu);
	/* Our own touch comes back through the changes feed: knowing its
	 * version makes the feed ignore it. */
	pthread_mutex_lock(&c->lock);
	n = node_by_id(c, d->id);
	if (n && f->version > n->rversion)
		n->rversion = f->version;
	pthread_mutex_unlock(&c->lock);
}

static int lease_collect_due(struct lock_table *lt, struct due_lock **out)
{
	struct lease *h;
	struct due_lock *v = NULL;
	int64_t now = mono_ms();
	int n = 0, cap = 0;

	pthread_mutex_lock(&lt->mu);
	for (h = lt->held; h; h = h->next) {
		if (h->due_ms > now &&
		    now - h->sent_ms <= (int64_t)lt->ttl_s * 1000)
			continue;
		if (n == cap) {
			struct due_lock *nv;

			cap = cap ? cap * 2 : 8;
			nv = realloc(v, cap * sizeof(*nv));
			if (!nv)
				break;
			v = nv;
		}
		snprintf(v[n].id, sizeof(v[n].id), "%s", h->id);
		snprintf(v[n].path, sizeof(v[n].path), "%s", h->path);
		v[n].sent_ms = h->sent_ms;
		n++;
	}
	pthread_mutex_unlock(&lt->mu);
	*out = v;
	return n;
}

static void lease_refresh_due(struct lock_table *lt)
{
	int64_t ttl_ms = (int64_t)lt->ttl_s * 1000, sent, back;
	int rc;
	struct due_lock *due;
	struct drive_file f;
	struct drive_err err;
	struct lease *h;
	int i, n;

	n = lease_collect_due(lt, &due);
	for (i = 0; i < n && !lt->stopping; i++) {
		sent = mono_ms();
		if (sent - due[i].sent_ms > ttl_ms) {
			lease_lapse(lt, &due[i], sent - due[i].sent_ms);
			continue;
		}
		drive_err_clear(&err);
		rc = lock_refresh(lt->c->dc, due[i].id, &f, &back, &err);
		if (rc >= 0) {
			if (mono_ms() - due[i].sent_ms > ttl_ms) {
				/* The renewal itself took us past the TTL:
				 * someone may have judged us expired. */
				lease_lapse(lt, &due[i],
					    mono_ms() - due[i].sent_ms);
				continue;
			}
			lease_renewed(lt, &due[i], sent, back, rc == 1, &f);
		} else if (err.status == 404) {
			lease_lost(lt, &due[i]);
		} else {
			/* Try again soon; the lapse check above ends it if
			 * Drive stays out of reach for a TTL. */
			pthread_mutex_lock(&lt->mu);
			for (h = lt->held; h; h = h->next)
				if (strcmp(h->id, due[i].id) == 0)
					h->due_ms = mono_ms() + 1000;
			pthread_mutex_unlock(&lt->mu);
		}
	}
	free(due);
}

static void lease_retry_orphans(struct lock_table *lt)
{
	struct drive_err err;
	char id[128];

	for (;;) {
		pthread_mutex_lock(&lt->mu);
		if (lt->norphans == 0 || lt->stopping) {
			pthread_mutex_unlock(&lt->mu);
			return;
		}
		memcpy(id, lt->orphans[--lt->norphans], 128);
		pthread_mutex_unlock(&lt->mu);
		drive_err_clear(&err);
		if (drive_delete(lt->c->dc, id, &err) < 0 &&
		    err.status != 404) {
			lt_add_orphan(lt, id);
			return; /* Drive is unwell: next round */
		}
	}
}

/* ---- reaping other mounts' dead locks from the view ---------------------- */

/* A lock of another mount stays in our view until the changes feed says it
 * was deleted. A dead mount never deletes it, and processes here that wait
 * for it get EEXIST from the view without asking Drive: so every lease
 * period we list the folders holding such locks, delete the expired ones
 * (the protocol's step 3, done on the holder's behalf) and drop from the
 * view what is no longer on Drive. */
struct reap_item {
	char id[128];
	char parent[128];
};

static void reap_collect_node(struct lock_table *lt, struct cnode *n,
			      struct reap_item **v, int *cnt, int *cap)
{
	struct cnode *k;

	for (k = n->kids; k; k = k->sib_next) {
		if (k->remote_exists && k->drive_id[0] &&
		    !lt_holds(lt, k->drive_id)) {
			if (*cnt == *cap) {
				int nc = *cap ? *cap * 2 : 16;
				struct reap_item *nv =
					realloc(*v, nc * sizeof(**v));

				if (!nv)
					return;
				*v = nv;
				*cap = nc;
			}
			snprintf((*v)[*cnt].id, 128, "%s", k->drive_id);
			snprintf((*v)[*cnt].parent, 128, "%s", n->drive_id);
			(*cnt)++;
		}
		if (k->is_dir)
			reap_collect_node(lt, k, v, cnt, cap);
	}
}

/* Lists one folder and deletes the expired leases in it that are not ours;
 * l gets what remains live. */
static int reap_folder(struct lock_table *lt, const char *parent,
		       struct lock_list *l)
{
	struct drive_client *dc = lt->c->dc;
	struct drive_err err;
	int64_t server_ms = 0;
	int i, live = 0;

	l->n = 0;
	drive_err_clear(&err);
	if (drive_lease_list(dc, parent, NULL, lock_collect, l, &server_ms,
			     &err) < 0)
		return -1;
	lock_keep_full_folders(dc, l, server_ms);
	for (i = 0; i < l->n; i++) {
		if (lock_expired(&l->e[i], server_ms) &&
		    !lt_holds(lt, l->e[i].id) &&
		    (drive_delete(dc, l->e[i].id, &err) == 0 ||
		     err.status == 404)) {
			fprintf(stderr,
				"vectur: lock entry %s expired (its holder "
				"stopped renewing it): deleted\n",
				l->e[i].id);
			continue;
		}
		l->e[live++] = l->e[i];
	}
	l->n = live;
	return 0;
}

static bool reap_is_live(const struct lock_list *l, const char *id)
{
	int i;

	for (i = 0; i < l->n; i++)
		if (strcmp(l->e[i].id, id) == 0)
			return true;
	return false;
}

static void lease_reap(struct lock_table *lt)
{
	struct cache *c = lt->c;
	struct reap_item *v = NULL;
	struct lock_list l = {0};
	struct cnode *locks, *n;
	int cnt = 0, cap = 0, i, j;

	pthread_mutex_lock(&c->lock);
	locks = node_child(c, c->root, "locks");
	if (locks && locks->is_dir)
		reap_collect_node(lt, locks, &v, &cnt, &cap);
	pthread_mutex_unlock(&c->lock);
	for (i = 0; i < cnt && !lt->stopping; i++) {
		if (!v[i].parent[0])
			continue; /* judged with an earlier item's folder */
		if (reap_folder(lt, v[i].parent, &l) < 0)
			continue;
		pthread_mutex_lock(&c->lock);
		for (j = cnt - 1; j >= i; j--) {
			if (strcmp(v[j].parent, v[i].parent) != 0)
				continue;
			n = node_by_id(c, v[j].id);
			if (n && !reap_is_live(&l, v[j].id) &&
			    !lt_holds(lt, v[j].id) && !node_dirty(n) &&
			    !n->busy)
				lock_view_drop(c, v[j].id);
			v[j].parent[0] = '\0';
		}
		pthread_mutex_unlock(&c->lock);
		cache_run_inval(c);
	}
	free(l.e);
	free(v);
}

/* ---- the thread ------------------------------------------------------------
 */

static void deadline_at(struct timespec *ts, int64_t mono)
{
	ts->tv_sec = mono / 1000;
	ts->tv_nsec = (mono % 1000) * 1000000;
}

/* Wakes at least every second: a lapse must be noticed right after a
 * SIGCONT, before the next renewal would be due. */
static void *lease_main(void *arg)
{
	struct lock_table *lt = arg;
	struct lease *h;
	struct timespec ts;
	int64_t next;

	pthread_mutex_lock(&lt->mu);
	lt->reap_due_ms = mono_ms() + lease_period_ms(lt);
	while (!lt->stopping) {
		next = mono_ms() + 1000;
		for (h = lt->held; h; h = h->next)
			if (h->due_ms < next)
				next = h->due_ms;
		if (lt->reap_due_ms < next)
			next = lt->reap_due_ms;
		deadline_at(&ts, next);
		pthread_cond_timedwait(&lt->cv, &lt->mu, &ts);
		if (lt->stopping)
			break;
		pthread_mutex_unlock(&lt->mu);
		lease_refresh_due(lt);
		lease_retry_orphans(lt);
		if (mono_ms() >= lt->reap_due_ms) {
			lease_reap(lt);
			lt->reap_due_ms = mono_ms() + lease_period_ms(lt);
		}
		pthread_mutex_lock(&lt->mu);
	}
	pthread_mutex_unlock(&lt->mu);
	return NULL;
}

/* At unmount (after the queue drained): a lock whose writes are all on
 * Drive is released; otherwise it is left to expire, so the next holder
 * does not read state older than what was written under it. */
void cache_locks_stop(struct cache *c)
{
	struct lock_table *lt, **pp;
	struct lease *h;
	struct drive_err err;
	int64_t pending = 0;

	pthread_mutex_lock(&reg_mu);
	for (pp = &reg; *pp && (*pp)->c != c; pp = &(*pp)->next)
		;
	lt = *pp;
	if (lt)
		*pp = lt->next;
	pthread_mutex_unlock(&reg_mu);
	if (!lt)
		return;
	pthread_mutex_lock(&lt->mu);
	lt->stopping = true;
	pthread_cond_broadcast(&lt->cv);
	pthread_mutex_unlock(&lt->mu);
	if (lt->started)
		pthread_join(lt->thr, NULL);
	if (c->dc) {
		pthread_mutex_lock(&c->lock);
		pending = upload_pending(c, -1, NULL, NULL);
		pthread_mutex_unlock(&c->lock);
	}
	while ((h = lt->held) != NULL) {
		lt->held = h->next;
		if (c->dc && pending == 0 &&
		    (!h->is_dir || lock_folder_empty(c->dc, h->id)) &&
		    (lock_delete(c->dc, h->id, &err) == 0 || err.status == 404))
			fprintf(stderr, "vectur: lock %s released at unmount\n",
				h->path);
		else
			fprintf(stderr,
				"vectur: lock %s left to expire (TTL %d s): "
				"writes under it are still queued, or it is a "
				"folder holding something\n",
				h->path, lt->ttl_s);
		free(h->path);
		free(h);
	}
	pthread_cond_destroy(&lt->cv);
	pthread_mutex_destroy(&lt->mu);
	lock_ids_free(lt->ids);
	free(lt->orphans);
	free(lt);
}
