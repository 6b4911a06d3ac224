/* node.c — the tree of persisted files and directories: hashes by ino, by
 * (parent, name) and by Drive id, path lookup, directory listings merged
 * from Drive, and the tree operations of cache.h (getattr, readdir, mkdir,
 * rmdir, unlink, rename, chmod, utimens). Content lives in version.c.
 *
 * A directory listed from Drive stays authoritative until the changes feed
 * says it changed, so a negative lookup costs no request.
 */
#include <errno.h>
#include <linux/fs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache_int.h"
#include "lock.h"

static uint64_t hash_str(uint64_t h, const char *s)
{
	while (*s)
		h = (h ^ (unsigned char)*s++) * 1099511628211ULL;
	return h;
}

static unsigned kid_slot(uint64_t parent, const char *name)
{
	return hash_str(14695981039346656037ULL ^ parent, name) % CACHE_HASH;
}

static unsigned id_slot(const char *id)
{
	return hash_str(14695981039346656037ULL, id) % CACHE_HASH;
}

struct cnode *node_by_ino(struct cache *c, uint64_t ino)
{
	struct cnode *n;

	for (n = c->by_ino[ino % CACHE_HASH]; n; n = n->h_ino)
		if (n->ino == ino)
			return n;
	return NULL;
}

struct cnode *node_by_id(struct cache *c, const char *id)
{
	struct cnode *n;

	if (!id || !id[0])
		return NULL;
	for (n = c->by_id[id_slot(id)]; n; n = n->h_id)
		if (strcmp(n->drive_id, id) == 0)
			return n;
	return NULL;
}

struct cnode *node_child(struct cache *c, struct cnode *dir, const char *name)
{
	struct cnode *n;

	for (n = c->by_kid[kid_slot(dir->ino, name)]; n; n = n->h_kid)
		if (n->parent == dir && strcmp(n->name, name) == 0)
			return n;
	return NULL;
}

static void unhash(struct cnode **head, struct cnode *n,
		   size_t off /* of the chain pointer */)
{
	struct cnode **pp = head;

	while (*pp) {
		if (*pp == n) {
			*pp = *(struct cnode **)((char *)n + off);
			return;
		}
		pp = (struct cnode **)((char *)*pp + off);
	}
}

void node_hash_add(struct cache *c, struct cnode *n)
{
	unsigned s = n->ino % CACHE_HASH;

	n->h_ino = c->by_ino[s];
	c->by_ino[s] = n;
}

void node_set_drive_id(struct cache *c, struct cnode *n, const char *id)
{
	if (n->drive_id[0] && !n->unlinked)
		unhash(&c->by_id[id_slot(n->drive_id)], n,
		       offsetof(struct cnode, h_id));
	snprintf(n->drive_id, sizeof(n->drive_id), "%s", id ? id : "");
	if (n->drive_id[0] && !n->unlinked) {
		unsigned s = id_slot(n->drive_id);

		n->h_id = c->by_id[s];
		c->by_id[s] = n;
	}
}

void node_attach(struct cache *c, struct cnode *p, struct cnode *n)
{
	unsigned s = kid_slot(p->ino, n->name);

	n->parent = p;
	n->sib_prev = NULL;
	n->sib_next = p->kids;
	if (p->kids)
		p->kids->sib_prev = n;
	p->kids = n;
	n->h_kid = c->by_kid[s];
	c->by_kid[s] = n;
}

/* Takes n out of its parent (but keeps it in the other hashes). */
void node_unparent(struct cache *c, struct cnode *n)
{
	struct cnode *p = n->parent;

	if (!p)
		return;
	unhash(&c->by_kid[kid_slot(p->ino, n->name)], n,
	       offsetof(struct cnode, h_kid));
	if (n->sib_prev)
		n->sib_prev->sib_next = n->sib_next;
	else
		p->kids = n->sib_next;
	if (n->sib_next)
		n->sib_next->sib_prev = n->sib_prev;
	n->sib_next = n->sib_prev = NULL;
}

void node_free(struct cnode *n)
{
	free(n->name);
	free(n->remote_name);
	free(n);
}

void node_put(struct cache *c, struct cnode *n)
{
	if (--n->refs <= 0 && n->unlinked && !n->vers && !n->queued)
		node_free(n);
}

/* Removes n from the tree for good: rows, hashes, its versions (readers
 * keep theirs through their references). The struct lives on while
 * referenced. */
void node_detach(struct cache *c, struct cnode *n)
{
	struct cver *v;

	if (n->unlinked)
		return;
	/* One commit with its versions' rows: a file closed twice keeps the
	 * older CLOSED version until the newer is synced, and a kill between
	 * the two rows brought that older content back. */
	store_begin(c);
	while (n->kids)
		node_detach(c, n->kids);
	node_unparent(c, n);
	n->parent = NULL; /* it may go first: a handle keeps only n */
	unhash(&c->by_ino[n->ino % CACHE_HASH], n,
	       offsetof(struct cnode, h_ino));
	if (n->drive_id[0])
		unhash(&c->by_id[id_slot(n->drive_id)], n,
		       offsetof(struct cnode, h_id));
	n->unlinked = true;
	while ((v = n->vers) != NULL)
		ver_drop(c, v);
	n->cur = NULL;
	if (n->queued) {
		if (n->q_prev)
			n->q_prev->q_next = n->q_next;
		else
			c->queue = n->q_next;
		if (n->q_next)
			n->q_next->q_prev = n->q_prev;
		n->queued = false;
	}
	store_delete_node(c, n->ino);
	store_commit(c);
	if (n->refs <= 0)
		node_free(n);
}

struct cnode *node_new(struct cache *c, struct cnode *parent, const char *name,
		       bool is_dir, mode_t mode)
{
	struct cnode *n = calloc(1, sizeof(*n));

	if (!n)
		return NULL;
	n->ino = c->next_ino++;
	n->name = strdup(name);
	n->remote_name = strdup("");
	if (!n->name || !n->remote_name) {
		node_free(n);
		return NULL;
	}
	n->is_dir = is_dir;
	n->mode = mode & 07777;
	clock_gettime(CLOCK_REALTIME, &n->mtime);
	n->ctime = n->mtime;
	node_hash_add(c, n);
	node_attach(c, parent, n);
	return n;
}

bool node_under_locks(struct cnode *n)
{
	while (n->parent && n->parent->parent)
		n = n->parent;
	return n->parent && strcmp(n->name, "locks") == 0;
}

bool node_dirty(struct cnode *n)
{
	struct cver *v;

	if (!n->parent)
		return false;
	if (!n->remote_exists || n->mtime_dirty)
		return true;
	for (v = n->vers; v; v = v->nnext)
		if (v->state != CV_CLEAN)
			return true;
	if (!node_named(n, n->remote_name))
		return true;
	return strcmp(n->remote_parent, n->parent->drive_id) != 0;
}

bool node_named(const struct cnode *n, const char *local)
{
	char a[1024], b[1024];

	if (strcmp(n->name, local) == 0)
		return true;
	return drive_name_from_local(n->name, a, sizeof(a)) == 0 &&
	       drive_name_from_local(local, b, sizeof(b)) == 0 &&
	       strcmp(a, b) == 0;
}

char *node_path(struct cnode *n)
{
	size_t len = 1;
	struct cnode *p;
	char *s, *e;

	for (p = n; p->parent; p = p->parent)
		len += strlen(p->name) + 1;
	s = malloc(len);
	if (!s)
		return NULL;
	e = s + len - 1;
	*e = 0;
	for (p = n; p->parent; p = p->parent) {
		size_t l = strlen(p->name);

		if (p != n)
			*--e = '/';
		e -= l;
		memcpy(e, p->name, l);
	}
	if (e != s)
		memmove(s, e, strlen(e) + 1);
	return s;
}

void node_fill_attr(struct cnode *n, struct cache_attr *a)
{
	memset(a, 0, sizeof(*a));
	a->ino = n->ino;
	a->is_dir = n->is_dir;
	a->mode = (n->is_dir ? S_IFDIR : S_IFREG) | (n->mode & 07777);
	if (n->is_dir) {
		a->size = 4096;
		a->mtime = n->mtime;
	} else if (n->cur) {
		a->size = n->cur->size;
		a->mtime = n->cur->mtime;
	} else {
		a->size = n->rsize;
		a->mtime = n->mtime;
	}
	a->ctime = n->ctime;
	a->dirty = node_dirty(n);
}

bool node_told_other(const struct cnode *n, int64_t size, struct timespec mtime)
{
	return n->told &&
	       (n->told_size != size || n->told_mtime.tv_sec != mtime.tv_sec ||
		n->told_mtime.tv_nsec != mtime.tv_nsec);
}

void node_told(struct cnode *n, int64_t size, struct timespec mtime)
{
	if (n->is_dir)
		return;
	if (node_told_other(n, size, mtime))
		n->told_moved = true;
	n->told = true;
	n->told_size = size;
	n->told_mtime = mtime;
}

void node_kernel_attr(struct cnode *n, struct cache_attr *a)
{
	node_fill_attr(n, a);
	if (node_kv_busy(n)) {
		/* The kernel keeps one size per file: while this mount still
		 * reads the previous version, that is the one it is told. */
		a->size = n->kv->size;
		a->mtime = n->kv->mtime;
	}
	node_told(n, a->size, a->mtime);
}

void node_apply_remote(struct cache *c, struct cnode *n,
		       const struct drive_file *f)
{
	char local[1024];

	if (f->id[0] && strcmp(f->id, n->drive_id) != 0)
		node_set_drive_id(c, n, f->id);
	n->remote_exists = true;
	snprintf(n->remote_parent, sizeof(n->remote_parent), "%s", f->parent);
	if (drive_name_to_local(f->name, local, sizeof(local)) == 0) {
		free(n->remote_name);
		n->remote_name = strdup(local);
		if (!n->remote_name)
			n->remote_name = strdup("");
	}
	snprintf(n->md5, sizeof(n->md5), "%s", f->md5);
	snprintf(n->rev, sizeof(n->rev), "%s", f->rev);
	n->rsize = f->size;
	if (f->created_ms > 0)
		n->created_ms = f->created_ms;
	if (f->version > n->rversion)
		n->rversion = f->version;
	if (f->modified_ms > 0 && !n->cur) {
		n->mtime = cache_ts_of_ms(f->modified_ms);
	} else if (f->modified_ms > 0 && n->cur->state == CV_CLEAN &&
		   !n->mtime_dirty &&
		   cache_ms_of(n->cur->mtime) != f->modified_ms) {
		/* Drive's copy is the one here (callers drop it when the
		 * content differs): a touch elsewhere shows (stat reads the
		 * version's time). */
		n->cur->mtime = cache_ts_of_ms(f->modified_ms);
		n->mtime = n->cur->mtime;
		store_save_version(c, n->cur);
	}
	n->remote_seq = ++c->remote_seq;
}

void node_tomb(struct cache *c, struct cnode *n)
{
	/* An id is given just before the first create request: with one
	 * the file may be on Drive even if no answer said so (a lost
	 * response, a kill -9). A delete of nothing costs a 404. */
	if (!n->drive_id[0])
		return;
	upload_add_tomb(c, n->drive_id, !c->o.use_trash || node_under_locks(n),
			n, 0);
}

/* Drive has no atomic replace, but a media update of one file is atomic:
 * so when n takes the place of Drive file f (a rename over a file, or n
 * giving way to a file of the same name another instance created first),
 * n's content goes into f as a new revision. Readers of the path on Drive
 * see f's old content until n's is there, never no file and never two.
 * n's own Drive file, if it has one, is trashed only once n's content has
 * landed in f: until then it may be the only copy on Drive (a preempted
 * machine takes its cache along). */
void node_retarget(struct cache *c, struct cnode *n, const struct drive_file *f,
		   bool exists)
{
	char old[128];
	int64_t after;
	struct cver *v;

	/* One transaction (nested in a rename's): the tomb of n's old file
	 * saved before n's row names f, a kill in between left n on the old
	 * file, whose upload then satisfied the tomb, which trashed it with
	 * n's content. */
	store_begin(c);
	snprintf(old, sizeof(old), "%s", n->drive_id);
	after = ver_reclose(c, n);
	n->id_gen++;
	for (v = n->vers; v; v = v->nnext) {
		/* Sessions and identities were about the old file: a version
		 * "as Drive has it" (modified in place from a clean one, a
		 * copy or snapshot of one) is not in f, and must go there. */
		v->same_as = 0;
		v->was_clean = false;
		v->copy_of = 0;
		v->snap_of = 0;
		v->snap_gen = 0;
		if (v->session_url && v->session_url[0])
			ver_forget_session(c, v);
	}
	node_set_drive_id(c, n, f->id);
	node_apply_remote(c, n, f);
	n->remote_exists = exists;
	n->rversion = f->version; /* f's own, not the old file's */
	n->created_ms = f->created_ms;
	n->created_here = false;
	n->landed_seq = 0;
	n->rival_id[0] = '\0';
	/* A request to f made for the node n replaces may still run. */
	n->settle = upload_inflight(c, f->id) || upload_settling(c, f->id);
	if (old[0] && strcmp(old, f->id) != 0)
		upload_add_tomb(c, old, !c->o.use_trash, n, after);
	store_save_node(c, n);
	store_commit(c);
	upload_queue(c, n, cache_now_ms() + c->o.write_back_ms);
}

bool node_note_rival(struct cache *c, struct cnode *n,
		     const struct drive_file *f)
{
	if (n->is_dir || f->is_folder || n->unlinked || node_under_locks(n) ||
	    strncmp(f->mime_type, "application/vnd.google-apps.", 28) == 0 ||
	    strcmp(f->id, n->drive_id) == 0 || upload_tombed(c, f->id))
		return false;
	/* A duplicate another tool made is shown as before (the one this
	 * node is on); only a file this mount created, or is about to
	 * create, gives way. */
	if (n->remote_exists && !n->created_here)
		return false;
	if (n->rival_id[0] && n->rival_ms &&
	    (f->created_ms > n->rival_ms ||
	     (f->created_ms == n->rival_ms && strcmp(f->id, n->rival_id) > 0)))
		return true; /* the older rival noted before decides */
	snprintf(n->rival_id, sizeof(n->rival_id), "%s", f->id);
	n->rival_ms = f->created_ms;
	store_save_node(c, n);
	upload_queue(c, n, cache_now_ms());
	return true;
}

/* Drive removed n (or moved it out of view). Dirty data is never lost: a
 * dirty file or a directory holding one is kept and recreated instead. */
void node_caught_up(struct cache *c, struct cnode *n)
{
	if (!n->remote_missed)
		return;
	n->remote_missed = false;
	n->refresh = true;
	upload_queue(c, n, cache_now_ms());
}

/* n waits, clean, for Drive's word on it: a file or folder a reconcile
 * held when Drive removed it (its state is read again once that ends), or
 * a folder kept only for such. */
/* n has something of ours Drive does not: a change of its own, or a
 * version not clean (open, closed, uploading). */
static bool node_has_ours(struct cnode *n)
{
	return node_dirty(n) || (n->cur && n->cur->state != CV_CLEAN);
}

static bool node_waits_word(struct cnode *n)
{
	struct cnode *k;

	if (node_has_ours(n) || !(n->remote_missed || n->gone_pending))
		return false;
	for (k = n->kids; k; k = k->sib_next)
		if (!node_waits_word(k))
			return false;
	return true;
}

/* dir lost a child: if Drive removed dir and kept it only for the files
 * a reconcile held then, it goes now that the last of them has — in a
 * reconcile of its own, which reads Drive's word on it again: the child
 * that left may still be held, and points at it. */
void node_left(struct cache *c, struct cnode *dir)
{
	if (!dir || !dir->gone_pending || dir->kids || dir->unlinked)
		return;
	dir->refresh = true;
	upload_queue(c, dir, cache_now_ms());
}

void node_forget(struct cache *c, struct cnode *n)
{
	struct cnode *k, *next, *p = n->parent;
	bool kids_wait = true;

	if (!p)
		return; /* the root is what the mount was given: never lost */

	for (k = n->kids; k; k = next) {
		next = k->sib_next;
		node_forget(c, k);
	}
	cache_note_inval(c, n);
	for (k = n->kids; k; k = k->sib_next)
		kids_wait = kids_wait && node_waits_word(k);
	if ((n->busy || n->kids) && kids_wait && !node_has_ours(n)) {
		/* Nothing of ours to make again, only a reconcile holding it
		 * (or such files in it): it stays as it is until that ends,
		 * when Drive's state, read again (node_caught_up), decides. */
		if (n->busy)
			n->remote_missed = true;
		else
			n->gone_pending = true;
		return;
	}
	if (n->kids || n->busy || node_has_ours(n)) {
		/* Made again from what is here: a file only renamed or
		 * touched here sends its clean copy; one with no whole copy
		 * here has nothing to make again. Not a lock (decided on
		 * Drive: one gone there is not made again from a copy). */
		if (!n->is_dir && node_dirty(n) && !node_under_locks(n) &&
		    !ver_reclose(c, n) && !n->busy) {
			node_detach(c, n);
			node_left(c, p);
			return;
		}
		n->gone_pending = false;
		n->remote_exists = false;
		node_set_drive_id(c, n, "");
		n->listed = true;
		store_save_node(c, n);
		upload_queue(c, n, cache_now_ms());
		return;
	}
	node_detach(c, n);
	node_left(c, p);
}

/* ---- listing ----------------------------------------------------------- */

struct listing {
	struct drive_file *f;
	int n, cap;
};

static int list_cb(const struct drive_file *f, void *ud)
{
	struct listing *l = ud;

	if (!f->is_folder &&
	    strncmp(f->mime_type, "application/vnd.google-apps.", 28) == 0)
		return 0; /* Google docs have no bytes to serve */
	if (l->n == l->cap) {
		int cap = l->cap ? l->cap * 2 : 64;
		struct drive_file *nf = realloc(l->f, cap * sizeof(*nf));

		if (!nf)
			return 1;
		l->f = nf;
		l->cap = cap;
	}
	l->f[l->n++] = *f;
	return 0;
}

/* Merges a fresh listing into dir (c->lock held). Nodes whose Drive state
 * we changed after the listing started (remote_seq) are left alone: the
 * listing may predate our own upload. */
static void merge_listing(struct cache *c, struct cnode *dir, struct listing *l,
			  uint64_t seq0)
{
	struct cnode *n, *next;
	char local[1024];
	int i;

	for (n = dir->kids; n; n = n->sib_next)
		n->mark = false;
	for (i = 0; i < l->n; i++) {
		struct drive_file *f = &l->f[i];

		if (drive_name_to_local(f->name, local, sizeof(local)) < 0)
			continue;
		n = node_by_id(c, f->id);
		if (n && n->parent == dir) {
			n->mark = true;
			if (node_dirty(n) || n->remote_seq > seq0 ||
			    f->version <= n->rversion)
				continue;
			if (!node_named(n, local)) {
				/* Renamed elsewhere: follow, or the queue would
				 * rename it back. */
				char *nn = strdup(local);

				if (!nn || node_child(c, dir, local)) {
					free(nn);
					continue;
				}
				cache_note_inval(c, n);
				node_unparent(c, n);
				free(n->name);
				n->name = nn;
				node_attach(c, dir, n);
			}
			if (strcmp(f->md5, n->md5) != 0 && n->cur &&
			    n->cur->state == CV_CLEAN) {
				ver_drop(c, n->cur);
				cache_note_inval(c, n);
			}
			node_apply_remote(c, n, f);
			store_save_node(c, n);
			continue;
		}
		if (n)
			continue; /* known elsewhere: the feed will move it */
		if (upload_tombed(c, f->id))
			continue; /* ours, on its way to the trash */
		n = node_child(c, dir, local);
		if (n) {
			/* A duplicate name, or a local create. */
			node_note_rival(c, n, f);
			continue;
		}
		n = node_new(c, dir, local, f->is_folder,
			     f->is_folder ? 0755 : 0644);
		if (!n)
			break;
		n->mark = true;
		node_apply_remote(c, n, f);
		if (f->modified_ms > 0) {
			n->mtime = cache_ts_of_ms(f->modified_ms);
			n->ctime = n->mtime;
		}
		store_save_node(c, n);
	}
	/* What was on Drive before and is not now was deleted elsewhere. */
	for (n = dir->kids; n; n = next) {
		next = n->sib_next;
		if (!n->mark && n->remote_exists && n->remote_seq <= seq0 &&
		    !n->busy && !node_dirty(n))
			node_forget(c, n);
	}
}

int node_ensure_listed(struct cache *c, struct cnode *dir)
{
	struct listing l = {0};
	struct drive_err err;
	char id[128];
	uint64_t seq0;
	int64_t outer;
	int rc = 0;

	while (dir->listing)
		cache_wait(c, 1000);
	if (dir->listed || dir->unlinked)
		return 0;
	if (!c->dc || !dir->remote_exists) {
		/* Nothing on Drive to list: what we have is everything. */
		dir->listed = true;
		store_save_node(c, dir);
		return 0;
	}
	dir->listing = true;
	dir->refs++;
	seq0 = c->remote_seq;
	snprintf(id, sizeof(id), "%s", dir->drive_id);
	pthread_mutex_unlock(&c->lock);
	drive_err_clear(&err);
	/* Someone waits (an open, a stat): with Drive unreachable, EIO after
	 * read_timeout like an uncached read, not after minutes of retries. */
	outer = drive_deadline(drive_mono_ms() + c->o.read_timeout_s * 1000LL);
	if (drive_list(c->dc, id, NULL, list_cb, &l, NULL, &err) < 0)
		rc = -drive_err_errno(&err);
	drive_deadline_restore(outer);
	pthread_mutex_lock(&c->lock);
	if (rc < 0) {
		cache_set_error(c, "list %s: %s", id, err.message);
		if (err.status == 404 && !dir->unlinked) {
			/* The folder went away on Drive. */
			node_forget(c, dir);
			rc = -ENOENT;
		}
	} else if (!dir->unlinked) {
		merge_listing(c, dir, &l, seq0);
		dir->listed = true;
		store_save_node(c, dir);
	}
	dir->listing = false;
	node_put(c, dir);
	pthread_cond_broadcast(&c->changed);
	free(l.f);
	return rc;
}

int node_lookup(struct cache *c, const char *path, struct cnode **out)
{
	struct cnode *n = c->root, *k;
	const char *p = path;
	char name[1024];
	int rc;

	while (*p) {
		size_t l = strcspn(p, "/");

		if (l == 0) {
			p++;
			continue;
		}
		if (l >= sizeof(name))
			return -ENAMETOOLONG;
		if (!n->is_dir)
			return -ENOTDIR;
		memcpy(name, p, l);
		name[l] = 0;
		p += l;
		k = node_child(c, n, name);
		if (!k && !n->listed) {
			n->refs++;
			rc = node_ensure_listed(c, n);
			node_put(c, n);
			if (rc < 0)
				return rc;
			if (n->unlinked)
				return -ENOENT;
			k = node_child(c, n, name);
		}
		if (!k)
			return -ENOENT;
		n = k;
	}
	*out = n;
	return 0;
}

int node_lookup_parent(struct cache *c, const char *path, struct cnode **dir,
		       const char **name)
{
	const char *slash = strrchr(path, '/');
	char buf[4096];
	struct cnode *d;
	int rc;

	if (!path[0])
		return -EINVAL;
	if (!slash) {
		d = c->root;
		*name = path;
	} else {
		if ((size_t)(slash - path) >= sizeof(buf))
			return -ENAMETOOLONG;
		memcpy(buf, path, slash - path);
		buf[slash - path] = 0;
		rc = node_lookup(c, buf, &d);
		if (rc < 0)
			return rc;
		*name = slash + 1;
	}
	if (!d->is_dir)
		return -ENOTDIR;
	if (strlen(*name) > 255)
		return -ENAMETOOLONG;
	if (!d->listed) {
		d->refs++;
		rc = node_ensure_listed(c, d);
		node_put(c, d);
		if (rc < 0)
			return rc;
		if (d->unlinked)
			return -ENOENT;
	}
	*dir = d;
	return 0;
}

/* ---- cache.h: the tree ------------------------------------------------- */

int cache_getattr(struct cache *c, const char *path, struct cache_attr *out)
{
	struct cnode *n;
	int rc;

	pthread_mutex_lock(&c->lock);
	rc = node_lookup(c, path, &n);
	if (rc == 0)
		node_kernel_attr(n, out);
	pthread_mutex_unlock(&c->lock);
	cache_run_inval(c);
	return rc;
}

struct dirent_buf {
	char *name;
	struct cache_attr a;
};

int cache_readdir(struct cache *c, const char *path, cache_dir_cb cb, void *ud)
{
	struct dirent_buf *ents = NULL;
	struct cnode *d, *k;
	int rc, n = 0, cap = 0, i;

	pthread_mutex_lock(&c->lock);
	rc = node_lookup(c, path, &d);
	if (rc < 0)
		goto out_unlock;
	if (!d->is_dir) {
		rc = -ENOTDIR;
		goto out_unlock;
	}
	d->refs++;
	rc = node_ensure_listed(c, d);
	node_put(c, d);
	if (rc < 0)
		goto out_unlock;
	for (k = d->unlinked ? NULL : d->kids; k; k = k->sib_next) {
		if (n == cap) {
			struct dirent_buf *ne;

			cap = cap ? cap * 2 : 32;
			ne = realloc(ents, cap * sizeof(*ents));
			if (!ne) {
				rc = -ENOMEM;
				goto out_unlock;
			}
			ents = ne;
		}
		ents[n].name = strdup(k->name);
		if (!ents[n].name) {
			rc = -ENOMEM;
			goto out_unlock;
		}
		node_kernel_attr(k, &ents[n].a);
		n++;
	}
out_unlock:
	pthread_mutex_unlock(&c->lock);
	cache_run_inval(c);
	/* The callback runs without c->lock: it may be fs/'s filler, which
	 * must be free to call back into us. */
	for (i = 0; i < n; i++) {
		if (rc == 0 && cb(ents[i].name, &ents[i].a, ud) != 0)
			rc = 1;
		free(ents[i].name);
	}
	free(ents);
	return rc < 0 ? rc : 0;
}

int cache_mkdir(struct cache *c, const char *path, mode_t mode)
{
	struct cnode *d, *n;
	const char *name;
	int rc;

	pthread_mutex_lock(&c->lock);
	rc = node_lookup_parent(c, path, &d, &name);
	if (rc < 0)
		goto out;
	if (node_child(c, d, name)) {
		rc = -EEXIST;
		goto out;
	}
	if (!drive_name_local_ok(name)) {
		rc = -EINVAL; /* Drive would give another name back */
		goto out;
	}
	if (cache_lock_path(path)) {
		/* The mkdir-lock idiom: decided on Drive (lock.c). */
		rc = cache_lock_mkdir(c, path, d, name, mode);
		goto out;
	}
	n = node_new(c, d, name, true, mode);
	if (!n) {
		rc = -ENOMEM;
		goto out;
	}
	n->listed = true; /* new: nothing on Drive to list */
	rc = store_save_node(c, n);
	if (rc < 0) {
		/* Not made, not shown (ENOSPC: the cache disk is full). */
		node_detach(c, n);
		goto out;
	}
	d->mtime = n->mtime;
	upload_queue(c, n, cache_now_ms());
out:
	pthread_mutex_unlock(&c->lock);
	return rc;
}

/* Before a folder is trashed as empty (rmdir, a rename over it): its
 * children on Drive count, also those another instance made since it was
 * last listed (the feed may be up to poll_interval behind), so it is
 * listed again. Drive out of reach: what was seen. c->lock held, may be
 * dropped; n referenced. */
static int node_list_afresh(struct cache *c, struct cnode *n)
{
	if (c->dc && n->remote_exists && n->listed && !n->listing) {
		n->listed = false;
		if (node_ensure_listed(c, n) < 0 && !n->unlinked &&
		    !n->listed) {
			n->listed = true;
			store_save_node(c, n);
		}
	}
	return node_ensure_listed(c, n);
}

int cache_rmdir(struct cache *c, const char *path)
{
	struct cnode *n, *p;
	int rc;

	if (cache_lock_path(path))
		return cache_lock_unlink(c, path, true); /* a release */
	pthread_mutex_lock(&c->lock);
	rc = node_lookup(c, path, &n);
	if (rc < 0)
		goto out;
	if (!n->is_dir) {
		rc = -ENOTDIR;
		goto out;
	}
	if (!n->parent) {
		rc = -EBUSY;
		goto out;
	}
	n->refs++;
	rc = node_list_afresh(c, n);
	node_put(c, n);
	if (rc < 0)
		goto out;
	if (n->unlinked) {
		rc = -ENOENT;
		goto out;
	}
	if (n->kids) {
		rc = -ENOTEMPTY;
		goto out;
	}
	p = n->parent;
	/* The tomb with the rows it replaces (see cache_unlink). */
	store_begin(c);
	node_tomb(c, n);
	node_detach(c, n);
	node_left(c, p);
	rc = store_commit(c);
out:
	pthread_mutex_unlock(&c->lock);
	return rc;
}

int cache_unlink(struct cache *c, const char *path)
{
	struct cnode *n, *p;
	int rc;

	if (cache_lock_path(path))
		return cache_lock_unlink(c, path, false); /* a release */
	pthread_mutex_lock(&c->lock);
	rc = node_lookup(c, path, &n);
	if (rc < 0)
		goto out;
	if (n->is_dir) {
		rc = -EISDIR;
		goto out;
	}
	p = n->parent;
	/* One transaction: a kill after the tomb's row and before the node's
	 * went left the file in view with its Drive file on its way to the
	 * trash. */
	store_begin(c);
	node_tomb(c, n);
	node_detach(c, n);
	node_left(c, p);
	rc = store_commit(c);
	pthread_cond_broadcast(&c->changed);
out:
	pthread_mutex_unlock(&c->lock);
	return rc;
}

static bool is_ancestor(struct cnode *a, struct cnode *n)
{
	for (; n; n = n->parent)
		if (n == a)
			return true;
	return false;
}

/* Can rename(src over dst) keep dst's Drive file and send src's content
 * into it (node_retarget)? For files whose target has a Drive file, or one
 * on its way; not for locks, whose Drive files are leases, nor for
 * directories (Drive folders hold their children: an empty one replaced
 * is trashed, and the moved one renamed). */
static bool rename_keeps_file(struct cnode *src, struct cnode *dst)
{
	return !src->is_dir && !dst->is_dir && dst->drive_id[0] &&
	       !node_under_locks(src) && !node_under_locks(dst);
}

/* src takes dst's Drive file (see node_retarget). */
static void rename_take_over(struct cache *c, struct cnode *src,
			     struct cnode *dst)
{
	struct drive_file f;

	memset(&f, 0, sizeof(f));
	snprintf(f.id, sizeof(f.id), "%s", dst->drive_id);
	if (drive_name_from_local(dst->remote_name, f.name, sizeof(f.name)) < 0)
		f.name[0] = '\0';
	snprintf(f.parent, sizeof(f.parent), "%s", dst->remote_parent);
	snprintf(f.md5, sizeof(f.md5), "%s", dst->md5);
	snprintf(f.rev, sizeof(f.rev), "%s", dst->rev);
	f.size = dst->rsize;
	f.version = dst->rversion;
	f.created_ms = dst->created_ms;
	node_retarget(c, src, &f, dst->remote_exists);
	src->created_here = dst->created_here;
}

int cache_rename(struct cache *c, const char *from, const char *to,
		 unsigned int flags)
{
	struct cnode *src, *dst, *d, *was;
	const char *name;
	char *nn = NULL;
	bool keep = false;
	int rc, tries = 0;

	if (flags & ~RENAME_NOREPLACE)
		return -EINVAL;
	pthread_mutex_lock(&c->lock);
again:
	rc = node_lookup(c, from, &src);
	if (rc < 0)
		goto out;
	if (!src->parent) {
		rc = -EBUSY;
		goto out;
	}
	src->refs++;
	rc = node_lookup_parent(c, to, &d, &name);
	if (rc == 0 && (src->unlinked || d->unlinked))
		rc = -ENOENT;
	if (rc == 0 && src->is_dir && is_ancestor(src, d))
		rc = -EINVAL;
	if (rc < 0)
		goto out_put;
	dst = node_child(c, d, name);
	if (dst == src)
		goto out_put;
	if (!dst && !drive_name_local_ok(name)) {
		rc = -EINVAL; /* Drive would give another name back */
		goto out_put;
	}
	if (dst) {
		if (flags & RENAME_NOREPLACE) {
			rc = -EEXIST;
			goto out_put;
		}
		if (src->is_dir && !dst->is_dir) {
			rc = -ENOTDIR;
			goto out_put;
		}
		if (!src->is_dir && dst->is_dir) {
			rc = -EISDIR;
			goto out_put;
		}
		keep = rename_keeps_file(src, dst);
		d->refs++;
		dst->refs++;
		if (dst->is_dir) {
			rc = node_list_afresh(c, dst);
			if (rc == 0 && dst->kids)
				rc = -ENOTEMPTY;
		} else if (keep && !ver_newest_closed(src)) {
			/* src's content goes into dst's Drive file: it must be
			 * here (src was only on Drive so far). */
			rc = ver_fetch_all(c, src);
		}
		/* Those may have dropped the lock: look again. */
		if (rc == 0 && (src->unlinked || d->unlinked ||
				node_child(c, d, name) != dst))
			rc = -EAGAIN;
		node_put(c, dst);
		node_put(c, d);
		if (rc == -EAGAIN && ++tries < 5) {
			node_put(c, src);
			goto again;
		}
		if (rc < 0)
			goto out_put;
	}
	nn = strdup(name);
	if (!nn) {
		rc = -ENOMEM;
		goto out_put;
	}
	/* One transaction: a kill -9 halfway must not leave the target gone
	 * and the source still under its old name. */
	store_begin(c);
	if (dst) {
		if (keep)
			rename_take_over(c, src, dst);
		else
			node_tomb(c, dst);
		node_detach(c, dst);
	}
	was = src->parent;
	node_unparent(c, src);
	free(src->name);
	src->name = nn;
	node_attach(c, d, src);
	if (was != d)
		node_left(c, was);
	clock_gettime(CLOCK_REALTIME, &src->ctime);
	src->rival_id[0] = '\0'; /* a rival for the old name is not one now */
	store_save_node(c, src);
	rc = store_commit(c);
	if (!src->queued || src->due_ms < cache_now_ms())
		upload_queue(c, src, cache_now_ms() + c->o.write_back_ms);
	pthread_cond_broadcast(&c->changed);
out_put:
	node_put(c, src);
out:
	pthread_mutex_unlock(&c->lock);
	return rc;
}

int cache_chmod(struct cache *c, const char *path, mode_t mode)
{
	struct cnode *n;
	int rc;

	pthread_mutex_lock(&c->lock);
	rc = node_lookup(c, path, &n);
	if (rc == 0) {
		/* Drive has no modes: they are kept locally only. */
		n->mode = mode & 07777;
		clock_gettime(CLOCK_REALTIME, &n->ctime);
		rc = store_save_node(c, n);
	}
	pthread_mutex_unlock(&c->lock);
	return rc;
}

int cache_utimens(struct cache *c, const char *path,
		  const struct timespec tv[2])
{
	struct timespec now, m;
	struct cnode *n;
	bool same;
	int rc;

	clock_gettime(CLOCK_REALTIME, &now);
	pthread_mutex_lock(&c->lock);
	rc = node_lookup(c, path, &n);
	if (rc < 0 || !tv || tv[1].tv_nsec == UTIME_OMIT)
		goto out;
	m = tv[1].tv_nsec == UTIME_NOW ? now : tv[1];
	/* The same time to Drive's millisecond (cp -p, rsync -t of an
	 * unchanged file) is no change to send. */
	same = cache_ms_of(m) == cache_ms_of(n->mtime);
	n->mtime = m;
	n->ctime = now;
	if (n->cur && n->cur->state != CV_CLEAN) {
		n->cur->mtime = m;
		if (n->cur->state != CV_OPEN)
			store_save_version(c, n->cur);
	} else if (n->cur) {
		n->cur->mtime = m;
		store_save_version(c, n->cur);
	}
	/* A lock's modifiedTime is its lease, on Drive's clock: a time set
	 * here (touch -d, or a clock behind Drive's) would make a live lock
	 * look expired to every other instance. It stays local. */
	if (!n->is_dir && n->remote_exists && !node_under_locks(n) && !same) {
		n->mtime_dirty = true;
		upload_queue(c, n, cache_now_ms() + c->o.write_back_ms);
	}
	rc = store_save_node(c, n);
out:
	pthread_mutex_unlock(&c->lock);
	return rc;
}
