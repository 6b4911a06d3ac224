/* queue.c — the reconcile (upload) queue and its workers: brings Drive in line
 * with each dirty node (delete tombstones, create parent folders first,
 * create or media-update the newest CLOSED version, rename/move), with
 * pre-generated ids so that a retried create never makes a duplicate, and
 * resumable sessions persisted in the version row so that an upload
 * resumes after a restart. Retryable errors back off and stay queued;
 * permanent ones are recorded (status last_error) and the data is kept.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cache_int.h"

#define ID_BATCH 100

void upload_queue(struct cache *c, struct cnode *n, int64_t due)
{
	if (n->unlinked || !n->parent)
		return;
	if (n->queued) {
		if (due > n->due_ms)
			n->due_ms =
				due; /* write_back counts from the last close */
		if (n->attempts && due <= cache_now_ms())
			n->due_ms = due; /* fsync/drain: now */
	} else {
		n->due_ms = due;
		n->queued = true;
		n->q_prev = NULL;
		n->q_next = c->queue;
		if (c->queue)
			c->queue->q_prev = n;
		c->queue = n;
	}
	/* Each wake makes every idle worker look through the whole queue:
	 * only wake them when this is due before they would wake anyway
	 * (busy workers look again when they finish). Thousands of files
	 * created in a row would otherwise pay a queue scan each. */
	for (int i = 0; i < c->nworkers; i++) {
		if (c->sleep_until[i] && n->due_ms < c->sleep_until[i]) {
			pthread_cond_broadcast(&c->work);
			break;
		}
	}
}

static void dequeue(struct cache *c, struct cnode *n)
{
	if (!n->queued)
		return;
	if (n->q_prev)
		n->q_prev->q_next = n->q_next;
	else
		c->queue = n->q_next;
	if (n->q_next)
		n->q_next->q_prev = n->q_prev;
	n->q_next = n->q_prev = NULL;
	n->queued = false;
}

void upload_add_tomb(struct cache *c, const char *drive_id, bool hard,
		     struct cnode *n, int64_t after_seq)
{
	struct ctomb *t = calloc(1, sizeof(*t));

	if (!t)
		return;
	snprintf(t->drive_id, sizeof(t->drive_id), "%s", drive_id);
	t->hard = hard;
	t->after_seq = after_seq;
	t->ino = n ? n->ino : 0;
	t->n = n;
	if (n)
		n->refs++;
	t->next = c->tombs;
	c->tombs = t;
	store_save_tomb(c, t);
	pthread_cond_broadcast(&c->work);
}

bool upload_tombed(struct cache *c, const char *drive_id)
{
	struct ctomb *t;

	for (t = c->tombs; t; t = t->next)
		if (strcmp(t->drive_id, drive_id) == 0)
			return true;
	return false;
}

static bool idset_has(const struct cidset *s, const char *id)
{
	int i;

	for (i = 0; id[0] && i < s->n; i++)
		if (strcmp(s->ids[i], id) == 0)
			return true;
	return false;
}

static void idset_add(struct cidset *s, const char *id)
{
	if (s->n == s->cap) {
		int cap = s->cap ? s->cap * 2 : 8;
		char(*ni)[128] = realloc(s->ids, cap * sizeof(*ni));

		if (!ni)
			return; /* only the ordering it was for is lost */
		s->ids = ni;
		s->cap = cap;
	}
	snprintf(s->ids[s->n++], 128, "%s", id);
}

static void idset_del(struct cidset *s, const char *id)
{
	int i;

	for (i = 0; i < s->n; i++) {
		if (strcmp(s->ids[i], id) == 0) {
			memcpy(s->ids[i], s->ids[--s->n], 128);
			return;
		}
	}
}

bool upload_inflight(struct cache *c, const char *drive_id)
{
	return idset_has(&c->inflight, drive_id);
}

void upload_settle(struct cache *c, const char *drive_id, int64_t ms)
{
	if (!drive_id[0] || idset_has(&c->settling, drive_id))
		return;
	idset_add(&c->settling, drive_id);
	if (c->settle_until < cache_now_ms() + ms)
		c->settle_until = cache_now_ms() + ms;
}

bool upload_settling(struct cache *c, const char *drive_id)
{
	if (c->settling.n && cache_now_ms() >= c->settle_until)
		c->settling.n = 0;
	return idset_has(&c->settling, drive_id);
}

/* Around a request to a Drive file (c->lock held): a node that takes the
 * file over meanwhile (node_retarget) sends its own requests after. */
static void inflight_add(struct cache *c, const char *id)
{
	idset_add(&c->inflight, id);
}

static void inflight_del(struct cache *c, const char *id)
{
	idset_del(&c->inflight, id);
	pthread_cond_broadcast(&c->work);
}

static int64_t backoff_ms(int attempts)
{
	int64_t ms = 1000LL << (attempts < 6 ? attempts : 6);

	if (ms > 60000)
		ms = 60000;
	return ms + rand() % 1000;
}

static bool meta_differs(struct cnode *n)
{
	return n->remote_exists &&
	       (!node_named(n, n->remote_name) ||
		strcmp(n->remote_parent, n->parent->drive_id) != 0 ||
		n->mtime_dirty);
}

bool upload_synced(struct cnode *n, int64_t seq)
{
	/* Not while a metadata update is on its way (see upload_pending).
	 * Only that: a reconcile may be sending content closed after seq,
	 * which a wait for seq need not wait for (a lock's release waited
	 * for every newer upload of the file that followed at once). */
	return n->landed_seq >= seq && n->remote_exists && !n->sending_meta &&
	       !meta_differs(n);
}

/* Is there something the queue can do for n now? (An OPEN version is
 * dirty but waits for its close.) */
bool upload_needs_work(struct cnode *n)
{
	struct cver *v;

	if (n->unlinked || !n->parent)
		return false;
	if (n->is_dir)
		return !n->remote_exists || meta_differs(n);
	if (n->rival_id[0])
		return true;
	for (v = n->vers; v; v = v->nnext)
		if (v->state == CV_CLOSED)
			return true;
	return meta_differs(n);
}

/* Gives n a Drive id from the pool before its first create request, and
 * persists it, so the create can be retried without a duplicate. */
static int assign_id(struct cache *c, struct cnode *n)
{
	char(*batch)[128] = NULL;
	struct drive_err err;
	int rc = 0, i;

	if (n->drive_id[0])
		return 0;
	if (c->nids == 0) {
		pthread_mutex_unlock(&c->lock);
		pthread_mutex_lock(&c->id_lock);
		pthread_mutex_lock(&c->lock);
		if (c->nids == 0) {
			pthread_mutex_unlock(&c->lock);
			batch = calloc(ID_BATCH, sizeof(*batch));
			drive_err_clear(&err);
			if (!batch)
				rc = -ENOMEM;
			else if (drive_generate_ids(c->dc, ID_BATCH, batch,
						    &err) < 0)
				rc = drive_err_retryable(&err)
					     ? -EAGAIN
					     : -drive_err_errno(&err);
			pthread_mutex_lock(&c->lock);
			if (rc < 0)
				cache_set_error(c, "generateIds: %s",
						err.message);
			for (i = 0; rc == 0 && i < ID_BATCH; i++)
				memcpy(c->ids[c->nids++], batch[i], 128);
		}
		pthread_mutex_unlock(&c->id_lock);
		free(batch);
		if (rc < 0)
			return rc;
	}
	if (n->drive_id[0] || n->unlinked)
		return 0;
	node_set_drive_id(c, n, c->ids[--c->nids]);
	return store_save_node(c, n);
}

/* Maps a Drive error to the queue's view: -EAGAIN = retry later,
 * anything else = permanent (recorded, data kept). */
static int classify(struct cache *c, struct cnode *n, const char *what,
		    struct drive_err *err)
{
	char *path = node_path(n);

	cache_set_error(c, "%s %s: %s%s%s", what, path ? path : "?",
			err->message, err->reason[0] ? " " : "", err->reason);
	free(path);
	if (drive_err_retryable(err) || err->status == 0)
		return -EAGAIN;
	return -drive_err_errno(err);
}

struct oldest_folder {
	struct cache *c;
	const char *name;
	const char *self_id; /* the id the folder being made will have */
	struct drive_file best;
	bool found;
};

/* Whether Drive folder f is another folder of ours: one renamed or moved
 * away here whose rename has not reached Drive yet (`mv runs/exp
 * runs/exp.old; mkdir runs/exp`). Adopting it would put the new folder's
 * files in the old one, moved away with it. */
static bool folder_of_another_node(struct oldest_folder *o,
				   const struct drive_file *f)
{
	bool other;

	if (strcmp(f->id, o->self_id) == 0)
		return false;
	pthread_mutex_lock(&o->c->lock);
	other = node_by_id(o->c, f->id) != NULL;
	pthread_mutex_unlock(&o->c->lock);
	return other;
}

static int pick_oldest_folder(const struct drive_file *f, void *ud)
{
	struct oldest_folder *o = ud;

	if (!f->is_folder || strcmp(f->name, o->name) != 0 ||
	    folder_of_another_node(o, f))
		return 0;
	if (!o->found || f->created_ms < o->best.created_ms ||
	    (f->created_ms == o->best.created_ms &&
	     strcmp(f->id, o->best.id) < 0)) {
		o->best = *f;
		o->found = true;
	}
	return 0;
}

/* The oldest folder named `name` in `parent`, by (createdTime, id) — the
 * same order every instance computes. Lists by parent: name queries lag
 * behind creates. 1 = found, 0 = none, -1 = error. */
static int oldest_folder(struct cache *c, const char *parent, const char *name,
			 const char *self_id, struct drive_file *out,
			 struct drive_err *err)
{
	struct oldest_folder o;

	memset(&o, 0, sizeof(o));
	o.c = c;
	o.name = name;
	o.self_id = self_id;
	if (drive_list(c->dc, parent, NULL, pick_oldest_folder, &o, NULL, err) <
	    0)
		return -1;
	if (o.found)
		*out = o.best;
	return o.found;
}

/* Two instances creating runs/ or locks/ at the same moment both succeed
 * (Drive allows duplicate names), which would split lock decisions and
 * listings between two folders. So a folder already on Drive is adopted,
 * and after a create the oldest of the same name wins: a loser deletes its
 * own (still empty: children wait for their parent) folder and adopts the
 * winner. Drive calls only; c->lock not held. */
static int mkdir_or_adopt(struct cache *c, const char *parent, const char *name,
			  const char *id, struct drive_file *out,
			  struct drive_err *err)
{
	struct drive_file win;
	struct drive_err ignored;
	int rc;

	rc = oldest_folder(c, parent, name, id, out, err);
	if (rc != 0)
		return rc < 0 ? -1 : 0;
	rc = drive_mkdir_id(c->dc, parent, name, id[0] ? id : NULL, out, err);
	if (rc < 0)
		return -1;
	if (oldest_folder(c, parent, name, id, &win, err) == 1 &&
	    strcmp(win.id, out->id) != 0) {
		drive_delete(c->dc, out->id, &ignored);
		*out = win;
	}
	return 0;
}

/* Whether a create's error says its parent folder (Drive id `parent`) is
 * not on Drive. */
bool upload_parent_404(const struct drive_err *err, const char *parent)
{
	return err->status == 404 && parent[0] && strstr(err->message, parent);
}

/* n's create into `parent` found that folder gone from Drive (deleted, or
 * trashed: `trashed` is the created file, landed in the trash there), by
 * another instance or the web UI, before the feed said so. Drive removed
 * all under it, so n's parent is forgotten as the feed would have: what is
 * dirty (n at least) is kept and made again, parent first; -EAGAIN retries
 * n. The mount's own folder is not made again: -ENOENT fails n. A trashed
 * file elsewhere (an id reused after n moved) says nothing of n's parent:
 * n only takes a new id. c->lock held. */
static int parent_gone(struct cache *c, struct cnode *n, const char *parent,
		       const struct drive_file *trashed)
{
	struct cnode *p = n->parent;
	char *path;

	if (!p || n->unlinked)
		return 0;
	if (trashed) {
		n->remote_exists = false;
		node_set_drive_id(c, n, ""); /* that id is in the trash */
		store_save_node(c, n);
		if (strcmp(trashed->parent, parent) != 0)
			return -EAGAIN;
	}
	if (strcmp(p->drive_id, parent) != 0)
		return -EAGAIN; /* found out (and made again), or moved */
	if (!p->parent) {
		cache_set_error(c, "the mount's folder is gone from Drive "
				   "(deleted or in the trash)");
		return -ENOENT;
	}
	path = node_path(p);
	fprintf(stderr,
		"vectur: folder %s is gone from Drive: making it "
		"again\n",
		path ? path : "?");
	free(path);
	node_forget(c, p);
	return -EAGAIN;
}

static int create_dir(struct cache *c, struct cnode *n)
{
	struct drive_file out;
	struct drive_err err;
	char name[1024], parent[128], id[128];
	int rc;

	rc = assign_id(c, n);
	if (rc < 0 || n->unlinked || n->remote_exists)
		return rc;
	if (drive_name_from_local(n->name, name, sizeof(name)) < 0)
		return -ENAMETOOLONG;
	snprintf(parent, sizeof(parent), "%s", n->parent->drive_id);
	snprintf(id, sizeof(id), "%s", n->drive_id);
	pthread_mutex_unlock(&c->lock);
	drive_err_clear(&err);
	rc = mkdir_or_adopt(c, parent, name, id, &out, &err);
	pthread_mutex_lock(&c->lock);
	if (rc < 0)
		return upload_parent_404(&err, parent)
			       ? parent_gone(c, n, parent, NULL)
			       : classify(c, n, "mkdir", &err);
	if (out.trashed) /* made in a trashed folder */
		return parent_gone(c, n, parent, &out);
	/* An adopted folder (made by another instance) may hold entries we
	 * have not seen: list it on the next lookup. */
	if (strcmp(out.id, id) != 0)
		n->listed = false;
	node_apply_remote(c, n, &out);
	return store_save_node(c, n);
}

/* Folders are created parent-first: walks up to the highest ancestor not
 * yet on Drive and creates it, or waits while another worker does. */
static int ensure_parents(struct cache *c, struct cnode *n)
{
	struct cnode *a;
	int rc;

	while (n->parent && n->parent->parent && !n->parent->remote_exists) {
		for (a = n->parent;
		     a->parent->parent && !a->parent->remote_exists;
		     a = a->parent)
			;
		if (a->busy) {
			/* Another worker is creating it: it is one request. */
			cache_wait(c, 100);
			if (n->unlinked)
				return 0;
			continue;
		}
		a->busy = true;
		a->refs++;
		rc = create_dir(c, a);
		a->busy = false;
		if (!upload_needs_work(a))
			dequeue(c, a);
		node_put(c, a);
		pthread_cond_broadcast(&c->changed);
		if (rc < 0)
			return rc;
		if (n->unlinked)
			return 0;
	}
	return 0;
}

struct up_ctx {
	struct cache *c;
	struct cnode *n;
	struct cver *v;
	int64_t counted;
	uint64_t gen; /* n->id_gen when the upload began */
};

/* The node moved onto another Drive file since the request began. */
static bool moved(struct up_ctx *u)
{
	return __atomic_load_n(&u->n->id_gen, __ATOMIC_RELAXED) != u->gen;
}

static void on_session(const char *url, void *ud)
{
	struct up_ctx *u = ud;
	struct cache *c = u->c;
	char *s = strdup(url);

	pthread_mutex_lock(&c->lock);
	if (moved(u)) {
		free(s); /* a session for the file the node left */
		s = NULL;
	} else if (s) {
		free(u->v->session_url);
		u->v->session_url = s;
		u->v->session_off = 0;
		if (!u->v->dropped)
			store_save_session(c, u->v->vid, url, 0);
	}
	pthread_mutex_unlock(&c->lock);
}

static void count_bytes(struct cache *c, int64_t bytes)
{
	int64_t now = cache_now_ms();

	c->up_bytes_window += bytes;
	if (now - c->up_window_start >= 2000) {
		c->up_rate = c->up_bytes_window * 1000.0 /
			     (double)(now - c->up_window_start);
		c->up_bytes_window = 0;
		c->up_window_start = now;
	}
}

static void on_progress(int64_t done, int64_t total, void *ud)
{
	struct up_ctx *u = ud;
	struct cache *c = u->c;

	pthread_mutex_lock(&c->lock);
	if (!moved(u)) {
		u->v->session_off = done;
		if (!u->v->dropped)
			store_save_session(c, u->v->vid, u->v->session_url,
					   done);
	}
	if (done > u->counted) {
		count_bytes(c, done - u->counted);
		u->counted = done;
	}
	pthread_mutex_unlock(&c->lock);
}

/* A superseded or deleted version, or an unmount past its drain
 * timeout, stops between chunks; the session stays resumable. */
static int should_abort(void *ud)
{
	struct up_ctx *u = ud;

	return __atomic_load_n(&u->c->abort_uploads, __ATOMIC_RELAXED) ||
	       __atomic_load_n(&u->n->unlinked, __ATOMIC_RELAXED) ||
	       __atomic_load_n(&u->v->dropped, __ATOMIC_RELAXED) || moved(u);
}

/* Drive has v now: it becomes the clean read cache, or gives way to a
 * newer version. Returns, with a reference, a twin made CLEAN in v's place
 * whose bytes were never synced (upload_sync_twin), else NULL. */
static struct cver *version_landed(struct cache *c, struct cnode *n,
				   struct cver *v)
{
	struct cver *newer = ver_newest_closed(n);

	if (v->close_seq > n->landed_seq)
		n->landed_seq = v->close_seq;
	/* Our content went over whatever the feed passed over: local wins. */
	n->remote_missed = false;
	v->session_url[0] = 0;
	v->session_off = 0;
	c->uploaded_files++;
	if (newer && newer != v && newer->same_as == v->vid &&
	    newer->state == CV_CLOSED) {
		/* Closed identical to what just landed: nothing to send. */
		newer->state = CV_CLEAN;
		newer->same_as = 0;
		n->landed_seq = newer->close_seq;
		store_save_version(c, newer);
		ver_drop(c, v);
		if (!newer->unsynced)
			return NULL;
		newer->refs++;
		return newer;
	}
	if (v == n->cur || (n->cur && n->cur->state == CV_OPEN &&
			    v->snap_of == n->cur->vid && !newer)) {
		v->state = CV_CLEAN;
		store_save_version(c, v);
		return NULL;
	}
	if (newer == v) {
		v->state = CV_CLEAN;
		store_save_version(c, v);
		return NULL;
	}
	ver_drop(c, v);
	return NULL;
}

/* t, closed by a flush (never synced), turned out identical to the
 * version that just landed and took its place as the clean copy: its
 * bytes reach the disk here, or a new boot would drop it as possibly torn
 * and the next read download it again. c->lock held; dropped meanwhile. */
static void upload_sync_twin(struct cache *c, struct cver *t)
{
	int fd = ver_fd(c, t);

	pthread_mutex_unlock(&c->lock);
	if (fd >= 0 && fdatasync(fd) < 0)
		fd = -1;
	pthread_mutex_lock(&c->lock);
	if (fd >= 0 && !t->dropped && t->state == CV_CLEAN) {
		t->unsynced = false;
		store_save_version(c, t);
	}
	ver_put(c, t);
}

/* The upload of v answered for a Drive file n has left since (it moved
 * onto another, node_retarget): v has still to go to the new one, unless
 * a newer close supersedes it. c->lock held. */
static void upload_left_behind(struct cache *c, struct cnode *n, struct cver *v)
{
	struct cver *y;

	for (y = n->vers; y; y = y->nnext)
		if (y->same_as == v->vid)
			y->same_as = 0;
	if (v->dropped)
		return;
	if (ver_newest_closed(n) != v) {
		ver_drop(c, v);
		return;
	}
	v->state = CV_CLOSED;
	ver_forget_session(c, v);
	store_save_version(c, v);
}

static int upload_version(struct cache *c, struct cnode *n, struct cver *v)
{
	struct up_ctx u = {c, n, v, 0, 0};
	struct cver *twin = NULL;
	struct drive_upload up;
	struct drive_file out;
	struct drive_err err;
	char name[1024], parent[128], id[128];
	bool create = !n->remote_exists, unsynced, vanished, trashed = false;
	int rc = -1, fd;

	if (create && node_under_locks(n)) {
		/* A lock is made only with its lease (cache_lock_create):
		 * one gone from Drive (broken or released elsewhere) while
		 * its holder here wrote it is not made again from the copy,
		 * a file without a lease that nobody could take or remove. */
		fprintf(stderr,
			"vectur: lock %s is gone from Drive (broken or "
			"released elsewhere): not made again\n",
			n->name);
		lock_view_drop_node(c, n);
		return 0;
	}
	if (create) {
		rc = assign_id(c, n);
		if (rc < 0 || n->unlinked || v->dropped ||
		    v->state != CV_CLOSED)
			return rc;
		create = !n->remote_exists;
	}
	if (drive_name_from_local(n->name, name, sizeof(name)) < 0)
		return -ENAMETOOLONG;
	fd = ver_fd(c, v);
	if (fd < 0)
		return fd;
	memset(&up, 0, sizeof(up));
	snprintf(parent, sizeof(parent), "%s", n->parent->drive_id);
	snprintf(id, sizeof(id), "%s", n->drive_id);
	snprintf(up.session_url, sizeof(up.session_url), "%s",
		 v->session_url ? v->session_url : "");
	if (create) {
		up.parent = parent;
		up.name = name;
		up.new_id = id[0] ? id : NULL;
	} else {
		up.id = id;
	}
	/* Under locks/ Drive stamps the upload with its own clock: the
	 * lock's modifiedTime is its lease (see cache_utimens). */
	up.modified_ms = node_under_locks(n) ? 0 : cache_ms_of(v->mtime);
	up.fd = fd;
	up.size = v->size;
	up.chunk_size = c->o.chunk_size;
	up.on_session = on_session;
	up.on_progress = on_progress;
	up.should_abort = should_abort;
	up.ud = &u;
	u.gen = n->id_gen;
	v->state = CV_UPLOADING;
	v->refs++;
	store_save_version(c, v);
	c->uploading++;
	inflight_add(c, id);
	unsynced = v->unsynced;
	pthread_mutex_unlock(&c->lock);
	drive_err_clear(&err);
	/* A version closed without fdatasync (see cache_flush) reaches the
	 * disk before any of it reaches Drive, and says so in a commit that
	 * is itself on disk before the upload: a machine that goes down
	 * mid-upload must find it synced (a new boot drops unsynced ones,
	 * and the older version it superseded would go to Drive instead). */
	if (unsynced && fdatasync(fd) < 0) {
		drive_err_set(&err, 0, "localIO",
			      "fdatasync of a cached version: %s",
			      strerror(errno));
		rc = -1;
	} else {
		rc = 0;
		if (unsynced) {
			pthread_mutex_lock(&c->lock);
			if (!v->dropped) {
				v->unsynced = false;
				/* synced in a commit before what it
				 * supersedes goes (see ver_mark_closed) */
				rc = store_save_version_durably(c, v);
				if (rc == 0)
					ver_drop_superseded(c, v);
				else
					v->unsynced = true;
			}
			pthread_mutex_unlock(&c->lock);
		}
		/* Not sent while the row says unsynced: after a power loss
		 * recovery would drop it and send the older version it
		 * superseded over it. Retried (the cache disk is full). */
		if (rc < 0)
			drive_err_set(&err, 0, "localIO",
				      "cannot record a synced version: %s",
				      strerror(-rc));
		else
			rc = drive_upload(c->dc, &up, &out, &err);
	}
	pthread_mutex_lock(&c->lock);
	inflight_del(c, id);
	c->uploading--;
	if (moved(&u)) {
		upload_left_behind(c, n, v);
		ver_put(c, v);
		return 0;
	}
	if (rc == 0 && out.trashed) {
		/* Another instance trashed it while we wrote to it (or its
		 * folder, where a create lands in the trash): what landed
		 * there is out of sight, so it is sent again. */
		trashed = true;
		rc = -1;
		drive_err_set(&err, 404, "trashed", "file %s is in the trash",
			      id);
	}
	if (rc == 0) {
		count_bytes(c, v->size - u.counted);
		/* One commit: a version saved CLEAN with its node's landed_seq
		 * not yet saved made recovery think a rename over a file never
		 * landed and show the replaced file's old name again. */
		store_begin(c);
		node_apply_remote(c, n, &out);
		if (create)
			n->created_here = true;
		if (!v->dropped)
			twin = version_landed(c, n, v);
		store_save_node(c, n);
		store_commit(c);
		ver_put(c, v);
		if (twin)
			upload_sync_twin(c, twin);
		pthread_cond_broadcast(&c->changed);
		return 0;
	}
	vanished = err.status == 404 &&
		   (!create || strcmp(err.reason, "trashed") == 0);
	if (!v->dropped) {
		v->state = CV_CLOSED;
		if (vanished)
			ver_forget_session(c, v); /* it was that file's */
		store_save_version(c, v);
	}
	ver_put(c, v);
	if (n->unlinked || v->dropped)
		return 0; /* aborted: nothing left to do for it */
	if (c->abort_uploads)
		return -EAGAIN;
	if (create && upload_parent_404(&err, parent))
		return parent_gone(c, n, parent, NULL);
	if (create && trashed)
		return parent_gone(c, n, parent, &out);
	if (vanished) {
		/* Deleted on Drive meanwhile: local data wins, create it
		 * again under a new id. */
		n->remote_exists = false;
		node_set_drive_id(c, n, "");
		store_save_node(c, n);
		cache_set_error(c, "file vanished on Drive, creating again");
		return -EAGAIN;
	}
	return classify(c, n, "upload", &err);
}

static int update_meta(struct cache *c, struct cnode *n)
{
	char name[1024], add[128], rem[128], id[128];
	bool rename = !node_named(n, n->remote_name);
	bool move = strcmp(n->remote_parent, n->parent->drive_id) != 0;
	/* Drive stamps a renamed file with the time of the rename: the time
	 * it has goes along, as rclone's move sends it (not under locks/,
	 * where Drive's own stamp is the lease). */
	bool keep = (rename || move) && !node_under_locks(n) &&
		    !n->remote_missed; /* Drive's is newer than ours then */
	int64_t mtime = n->mtime_dirty || keep ? cache_ms_of(n->mtime) : 0;
	struct drive_file out;
	struct drive_err err;
	struct cver *v;
	uint64_t gen;
	int rc;

	if (drive_name_from_local(n->name, name, sizeof(name)) < 0)
		return -ENAMETOOLONG;
	snprintf(add, sizeof(add), "%s", n->parent->drive_id);
	snprintf(rem, sizeof(rem), "%s", n->remote_parent);
	snprintf(id, sizeof(id), "%s", n->drive_id);
	gen = n->id_gen;
	inflight_add(c, id);
	n->sending_meta = true;
	pthread_mutex_unlock(&c->lock);
	drive_err_clear(&err);
	rc = drive_update_meta(c->dc, id, rename ? name : NULL,
			       move ? add : NULL, move && rem[0] ? rem : NULL,
			       mtime, &out, &err);
	pthread_mutex_lock(&c->lock);
	n->sending_meta = false;
	inflight_del(c, id);
	if (n->id_gen != gen)
		return 0; /* about a file n has left */
	if (rc == 0) {
		if (n->unlinked)
			return 0;
		n->mtime_dirty = false;
		/* The answer tells Drive's content too: a change the feed
		 * passed over while this rename or touch was pending must not
		 * leave our clean copy in place as if current. */
		if (!n->is_dir && strcmp(out.md5, n->md5) != 0 && n->cur &&
		    n->cur->state == CV_CLEAN) {
			ver_drop(c, n->cur);
			cache_note_inval(c, n);
		}
		node_apply_remote(c, n, &out);
		return store_save_node(c, n);
	}
	if (err.status == 404 && !n->unlinked) {
		n->remote_exists = false;
		node_set_drive_id(c, n, "");
		v = n->cur;
		if (!n->is_dir && v && v->state == CV_CLEAN && v->complete)
			ver_mark_closed(c, v); /* send our copy again */
		store_save_node(c, n);
		return -EAGAIN;
	}
	return classify(c, n, "rename", &err);
}

/* (created_ms, id): the order in which every instance ranks two files
 * of one name. */
static bool older_than(const struct drive_file *f, int64_t created_ms,
		       const char *id)
{
	return f->created_ms < created_ms ||
	       (f->created_ms == created_ms && strcmp(f->id, id) < 0);
}

/* Another instance put a file with n's name in n's folder (n->rival_id,
 * from the feed or a listing). Drive keeps both; a path must have one.
 * The older file (createdTime, then id: the same order on every
 * instance) keeps the name. If n created the newer one, n gives way:
 * it moves onto the older file, its content goes there as a new revision
 * (last upload wins, as with two rclone mounts writing one path) and its
 * own file is trashed once that has landed (node_retarget). A node not
 * yet on Drive adopts the other file before creating anything. The
 * instance holding the older file does nothing. c->lock held, n busy. */
static int settle_rival(struct cache *c, struct cnode *n)
{
	struct drive_file rival, own;
	struct drive_err err;
	char rid[128], oid[128], local[1024];
	uint64_t gen = n->id_gen;
	bool need_own;
	int rc;

	if (!n->rival_id[0])
		return 0;
	if (!n->remote_exists && n->drive_id[0]) {
		/* Our create was tried and may have landed: decide after the
		 * next try says, if there is one. */
		if (ver_newest_closed(n))
			return 0;
		n->rival_id[0] = '\0';
		return store_save_node(c, n);
	}
	if (n->remote_exists && !n->created_here) {
		n->rival_id[0] = '\0'; /* not ours to give up */
		return store_save_node(c, n);
	}
	snprintf(rid, sizeof(rid), "%s", n->rival_id);
	snprintf(oid, sizeof(oid), "%s", n->drive_id);
	need_own = n->remote_exists && !n->created_ms;
	pthread_mutex_unlock(&c->lock);
	drive_err_clear(&err);
	rc = drive_get(c->dc, rid, &rival, &err);
	if (rc == 0 && need_own)
		rc = drive_get(c->dc, oid, &own, &err);
	pthread_mutex_lock(&c->lock);
	if (rc < 0 && drive_err_retryable(&err))
		return classify(c, n, "look at a file of the same name", &err);
	if (n->unlinked || n->id_gen != gen || strcmp(n->rival_id, rid) != 0)
		return 0; /* things moved meanwhile: the next pass sees */
	/* Saved with the move onto the rival's file when n gives way
	 * (node_retarget): saved alone first, a kill before that move
	 * forgot the rival, and both files kept the name. */
	n->rival_id[0] = '\0';
	if (need_own && rc == 0)
		n->created_ms = own.created_ms;
	if (rc < 0 || rival.trashed || rival.is_folder ||
	    strcmp(rival.parent, n->parent->drive_id) != 0 ||
	    drive_name_to_local(rival.name, local, sizeof(local)) < 0 ||
	    strcmp(local, n->name) != 0 ||
	    /* ours is older: the other instance gives way */
	    (n->remote_exists && !older_than(&rival, n->created_ms, oid))) {
		store_save_node(c, n); /* gone, or no longer the same path */
		return 0;
	}
	{
		char *path = node_path(n);

		fprintf(stderr,
			"vectur: %s: another instance created it too; our "
			"content goes into its older Drive file %s%s%s\n",
			path ? path : "?", rival.id,
			n->remote_exists ? ", then ours is trashed: " : "",
			n->remote_exists ? oid : "");
		free(path);
	}
	node_retarget(c, n, &rival, true);
	return 0;
}

/* A request to n's Drive file that is not n's own may still be on its
 * way: n's requests to it wait (see node_retarget). */
static bool waits_for_other(struct cache *c, struct cnode *n)
{
	return upload_inflight(c, n->drive_id) ||
	       (n->settle && upload_settling(c, n->drive_id));
}

/* One pass over n (c->lock held, n->busy set by the caller). */
/* n turned clean after the feed passed over a change of it on Drive
 * (node_caught_up): its Drive state is read again and applied. */
static int refresh_remote(struct cache *c, struct cnode *n)
{
	struct drive_change ch;
	struct drive_err err;
	uint64_t gen = n->id_gen;
	int rc;

	memset(&ch, 0, sizeof(ch));
	snprintf(ch.file_id, sizeof(ch.file_id), "%s", n->drive_id);
	n->refresh = false;
	pthread_mutex_unlock(&c->lock);
	drive_err_clear(&err);
	rc = drive_get(c->dc, ch.file_id, &ch.file, &err);
	pthread_mutex_lock(&c->lock);
	if (n->id_gen != gen || n->unlinked || node_dirty(n))
		return 0; /* moved on meanwhile: local changes win again */
	if (rc < 0 && err.status != 404) {
		n->refresh = true;
		return classify(c, n, "refresh", &err);
	}
	ch.removed = rc < 0;
	ch.has_file = rc == 0;
	n->gone_pending = false; /* the answer decides again */
	/* As the feed would, which passes over a node a reconcile holds:
	 * this reconcile is the one, and c->lock is held throughout. */
	n->busy = false;
	feed_apply(c, &ch);
	n->busy = !n->unlinked;
	return 0;
}

static int reconcile(struct cache *c, struct cnode *n)
{
	struct cver *v;
	int rc;

	if (n->unlinked)
		return 0;
	/* n took over a Drive file another node of ours was still sending
	 * to (or the killed previous mount may have been): that request
	 * reaches Drive first. */
	while (waits_for_other(c, n) && !n->unlinked)
		cache_wait(c, 100);
	if (n->settle && !n->unlinked) {
		n->settle = false;
		store_save_node(c, n);
	}
	rc = ensure_parents(c, n);
	if (rc < 0 || n->unlinked)
		return rc;
	if (n->is_dir && !n->remote_exists) {
		rc = create_dir(c, n);
		if (rc < 0)
			return rc;
	}
	if (!n->is_dir) {
		rc = settle_rival(c, n);
		if (rc < 0 || n->unlinked)
			return rc;
		v = ver_newest_closed(n);
		if (v && v->state == CV_CLOSED) {
			rc = upload_version(c, n, v);
			if (rc < 0 || n->unlinked)
				return rc;
		}
		rc = settle_rival(c, n); /* after a create */
		if (rc < 0 || n->unlinked)
			return rc;
	}
	if (!n->unlinked && meta_differs(n) && n->parent->remote_exists)
		rc = update_meta(c, n);
	if (rc == 0 && n->refresh && n->remote_exists && !n->unlinked &&
	    !node_dirty(n))
		rc = refresh_remote(c, n);
	return rc;
}

/* Runs a reconcile of n in this thread and requeues n as its result says.
 * c->lock held. */
static int run_one(struct cache *c, struct cnode *n)
{
	int rc;

	n->busy = true;
	n->refs++;
	rc = reconcile(c, n);
	n->busy = false;
	if (!node_dirty(n))
		node_caught_up(c, n);
	if (rc == -EAGAIN) {
		n->attempts++;
		if (!n->queued)
			upload_queue(c, n, 0);
		n->due_ms = cache_now_ms() + backoff_ms(n->attempts);
	} else if (rc < 0) {
		n->failed = true;
		dequeue(c, n);
	} else {
		n->attempts = 0;
		if (upload_needs_work(n))
			upload_queue(c, n, cache_now_ms());
		else
			dequeue(c, n);
	}
	pthread_cond_broadcast(&c->changed);
	node_put(c, n);
	return rc;
}

int upload_reconcile_now(struct cache *c, struct cnode *n)
{
	/* Another thread's reconcile of n: the caller's own deadline decides
	 * how long to wait for it (-EAGAIN: not yet). */
	if (n->busy && !n->unlinked)
		cache_wait(c, 1000);
	if (n->busy && !n->unlinked)
		return -EAGAIN;
	if (n->unlinked)
		return 0;
	if (n->attempts && n->queued && n->due_ms > cache_now_ms())
		return -EAGAIN; /* backing off after an error */
	return run_one(c, n);
}

static void run_tomb(struct cache *c, struct ctomb *t)
{
	struct ctomb **pp;
	struct drive_err err;
	char id[128];
	int rc;

	t->busy = true;
	snprintf(id, sizeof(id), "%s", t->drive_id);
	pthread_mutex_unlock(&c->lock);
	drive_err_clear(&err);
	rc = t->hard ? drive_delete(c->dc, id, &err)
		     : drive_trash(c->dc, id, &err);
	pthread_mutex_lock(&c->lock);
	t->busy = false;
	if (rc == 0 || err.status == 404) {
		for (pp = &c->tombs; *pp; pp = &(*pp)->next) {
			if (*pp == t) {
				*pp = t->next;
				break;
			}
		}
		store_delete_tomb(c, t->tid);
		if (t->n)
			node_put(c, t->n);
		free(t);
	} else {
		cache_set_error(c, "delete %s: %s", id, err.message);
		t->attempts++;
		/* A delete Drive refuses for good is retried rarely: it
		 * loses no data, only leaves a file behind. Local errors
		 * back off as uploads do (classify). */
		t->failed = err.status != 0 && !drive_err_retryable(&err);
		t->due_ms = cache_now_ms() +
			    (t->failed ? 300000 : backoff_ms(t->attempts));
	}
	pthread_cond_broadcast(&c->changed);
}

/* A tomb waits while the node it came from is being reconciled: its
 * upload may be creating the very file the tomb deletes. */
static bool tomb_blocked(struct ctomb *t)
{
	struct cnode *n = t->n;

	if (!n)
		return false;
	if (n->busy)
		return true;
	/* The file n left (node_retarget) goes once n's content is in the
	 * one it moved onto. */
	return t->after_seq && !n->unlinked && n->landed_seq < t->after_seq;
}

/* A tomb that waits for content n has not queued (still open, or dropped
 * by a power loss): sync does not wait for it, and the old file stays. */
static bool tomb_stuck(struct ctomb *t)
{
	return tomb_blocked(t) && !t->n->busy && !ver_newest_closed(t->n);
}

static void *worker_main(void *arg)
{
	struct cache *c = arg;
	struct cnode *n, *best;
	struct ctomb *t;
	int64_t now, wait;
	int me;

	pthread_mutex_lock(&c->lock);
	me = c->worker_seq++;
	while (!c->stopping) {
		now = cache_now_ms();
		wait = 1000;
		for (t = c->tombs; t; t = t->next)
			if (!t->busy && t->due_ms <= now && !tomb_blocked(t) &&
			    !upload_settling(c, t->drive_id))
				break;
		if (t) {
			run_tomb(c, t);
			continue;
		}
		best = NULL;
		for (n = c->queue; n; n = n->q_next) {
			int64_t due = n->due_ms;

			if (n->busy || n->failed || waits_for_other(c, n))
				continue;
			if (c->draining && !n->attempts)
				due = 0;
			if (due > now) {
				if (due - now < wait)
					wait = due - now;
				continue;
			}
			if (!best || due < best->due_ms)
				best = n;
		}
		if (best) {
			run_one(c, best);
			continue;
		}
		{
			struct timespec ts;

			drive_mono_ts_in(&ts, wait);
			c->sleep_until[me] = now + wait;
			pthread_cond_timedwait(&c->work, &c->lock, &ts);
			c->sleep_until[me] = 0;
		}
	}
	pthread_mutex_unlock(&c->lock);
	return NULL;
}

int upload_start(struct cache *c)
{
	int i, n = c->o.transfers > 0 ? c->o.transfers : 4;

	if (!c->dc)
		return 0;
	c->ids = calloc(ID_BATCH, sizeof(*c->ids));
	c->workers = calloc(n, sizeof(*c->workers));
	c->sleep_until = calloc(n, sizeof(*c->sleep_until));
	if (!c->ids || !c->workers || !c->sleep_until)
		return -ENOMEM;
	for (i = 0; i < n; i++) {
		if (pthread_create(&c->workers[i], NULL, worker_main, c) != 0)
			break;
		c->nworkers++;
	}
	return c->nworkers ? 0 : -EAGAIN;
}

void upload_stop(struct cache *c)
{
	int i;

	pthread_mutex_lock(&c->lock);
	c->stopping = true;
	c->abort_uploads = true;
	pthread_cond_broadcast(&c->work);
	pthread_cond_broadcast(&c->changed);
	pthread_mutex_unlock(&c->lock);
	for (i = 0; i < c->nworkers; i++)
		pthread_join(c->workers[i], NULL);
	c->nworkers = 0;
}

/* A delete Drive refused for good (403: someone else's file), not being
 * tried again right now. */
static bool tomb_refused(const struct ctomb *t)
{
	return t->failed && !t->busy;
}

int tombs_failed(struct cache *c)
{
	struct ctomb *t;
	int n = 0;

	for (t = c->tombs; t; t = t->next)
		if (tomb_refused(t))
			n++;
	return n;
}

int64_t upload_pending(struct cache *c, int64_t upto, int64_t *bytes,
		       bool *failed)
{
	struct cver *v;
	struct cnode *n;
	struct ctomb *t;
	int64_t files = 0, b = 0;

	if (failed)
		*failed = false;
	for (v = c->vers; v; v = v->gnext) {
		if (v->state != CV_CLOSED && v->state != CV_UPLOADING)
			continue;
		/* Closed after `upto`: waited for only when it carries a
		 * close before `upto` that it superseded before that one
		 * landed (what is on Drive is older than sync promises). */
		n = v->node;
		if (upto >= 0 && v->close_seq > upto &&
		    !(n->pend_seq > n->landed_seq && n->pend_seq <= upto &&
		      !n->unlinked && v == ver_newest_closed(n)))
			continue;
		if (v->node->failed) {
			if (failed)
				*failed = true;
			continue;
		}
		files++;
		b += v->size;
	}
	/* Folders, renames and deletes are part of "on Drive" too. So is a
	 * metadata update on its way: what it sends may be a name since
	 * changed back to the one Drive had when it left (nothing differs
	 * now, and the change back is to follow once it lands). A rename is
	 * waited for also when the file's newest content was closed after
	 * `upto` (which, sent first, is waited for too). */
	for (n = c->queue; n; n = n->q_next)
		if (!n->failed && (n->sending_meta || meta_differs(n) ||
				   ((n->is_dir || !ver_newest_closed(n)) &&
				    upload_needs_work(n))))
			files++;
	for (t = c->tombs; t; t = t->next)
		if (!tomb_refused(t) && !tomb_stuck(t))
			files++;
	if (bytes)
		*bytes = b;
	return files;
}
