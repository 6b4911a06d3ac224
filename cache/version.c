/* version.c — content versions and the open-file calls of cache.h: which
 * version an open gets, pread/pwrite on content files, close turning an
 * OPEN version into a CLOSED (queued) one, fsync snapshots, import/export.
 *
 * The rules (cache.h has the model): an open for writing shares an OPEN
 * version, modifies a CLEAN one in place, and otherwise writes a NEW
 * version (empty with O_TRUNC, else a reflinked/copied one), so a CLOSED
 * version — queued or uploading — is never changed under the uploader.
 * Writes never touch SQLite: size and mtime live in struct cver and are
 * persisted at close/fsync.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/fs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cache_int.h"
#include "lock.h"

static int ver_begin_clean(struct cache *c, struct cnode *n, struct cver **out);

struct cver *ver_new(struct cache *c, struct cnode *n, int state)
{
	struct cver *v = calloc(1, sizeof(*v));
	char path[4096];

	if (!v) {
		errno = ENOMEM;
		return NULL;
	}
	v->vid = c->next_vid++;
	store_data_path(c, v->vid, path, sizeof(path));
	v->fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (v->fd < 0) {
		free(v);
		return NULL;
	}
	v->session_url = strdup("");
	v->node = n;
	v->state = state;
	v->complete = true;
	v->opened_ms = cache_now_ms();
	v->atime_ms = cache_wall_ms();
	clock_gettime(CLOCK_REALTIME, &v->mtime);
	pthread_rwlock_init(&v->rw, NULL);
	pthread_mutex_init(&v->fetch_wmu, NULL);
	v->nnext = n->vers;
	n->vers = v;
	v->gnext = c->vers;
	if (c->vers)
		c->vers->gprev = v;
	c->vers = v;
	return v;
}

int ver_fd(struct cache *c, struct cver *v)
{
	char path[4096];

	if (v->fd >= 0)
		return v->fd;
	store_data_path(c, v->vid, path, sizeof(path));
	v->fd = open(path, O_RDWR | O_CLOEXEC);
	return v->fd >= 0 ? v->fd : -errno;
}

void ver_get(struct cver *v)
{
	v->refs++;
}

static void ver_free(struct cver *v)
{
	if (v->fd >= 0)
		close(v->fd);
	pthread_rwlock_destroy(&v->rw);
	pthread_mutex_destroy(&v->fetch_wmu);
	free(v->session_url);
	free(v);
}

void ver_put(struct cache *c, struct cver *v)
{
	/* A dropped version's download goes on for its readers (ver_drop);
	 * the last of them gone, it stops. */
	if (--v->refs == 1 && v->dropped && v->fetch)
		fetch_free(c, v);
	if (v->refs > 0)
		return;
	if (v->dropped) {
		ver_free(v);
		return;
	}
	/* Keep fds only for versions in use: a big cache must not run the
	 * process out of descriptors. */
	if (v->state != CV_OPEN && !v->fetch && v->fd >= 0) {
		close(v->fd);
		v->fd = -1;
	}
}

void ver_drop(struct cache *c, struct cver *v)
{
	struct cnode *n = v->node;
	struct cver **pp;

	if (v->dropped)
		return;
	for (pp = &n->vers; *pp; pp = &(*pp)->nnext) {
		if (*pp == v) {
			*pp = v->nnext;
			break;
		}
	}
	if (n->cur == v)
		n->cur = NULL;
	if (v->gprev)
		v->gprev->gnext = v->gnext;
	else
		c->vers = v->gnext;
	if (v->gnext)
		v->gnext->gprev = v->gprev;
	/* Handles still reading a partial download (a file replaced on
	 * Drive meanwhile, an O_TRUNC here) must go on reading that version
	 * whole: its download, by revision, goes on until they close. */
	if (v->fetch && v->refs <= 1)
		fetch_free(c, v);
	v->dropped = true;
	store_delete_version(c, v->vid);
	store_drop_data(c, v->vid);
	pthread_cond_broadcast(&c->changed);
	if (v->refs <= 0)
		ver_free(v);
}

struct cver *ver_newest_closed(struct cnode *n)
{
	struct cver *v, *best = NULL;

	for (v = n->vers; v; v = v->nnext)
		if ((v->state == CV_CLOSED || v->state == CV_UPLOADING) &&
		    (!best || v->close_seq > best->close_seq))
			best = v;
	return best;
}

/* A closed version on disk supersedes every older one not already on its
 * way to Drive; the one uploading may finish. c->lock held. */
void ver_drop_superseded(struct cache *c, struct cver *v)
{
	struct cver *o, *next;

	for (o = v->node->vers; o; o = next) {
		next = o->nnext;
		if (o == v || o->state == CV_UPLOADING || o->state == CV_OPEN)
			continue;
		if (o->state == CV_CLOSED && o->close_seq > v->close_seq)
			continue; /* newer than v */
		ver_drop(c, o);
	}
}

void ver_mark_closed(struct cache *c, struct cver *v)
{
	struct cnode *n = v->node;
	char buf[32];

	if (v->dropped)
		return; /* its row and file are gone: it is nothing now */
	v->state = CV_CLOSED;
	v->complete = true;
	v->close_seq = ++c->close_seq;
	if (n->pend_seq <= n->landed_seq)
		n->pend_seq = v->close_seq;
	/* Numbers are reserved in batches, before any row uses them: the
	 * next mount starts above every number given out, even if the rows
	 * that had the highest ones are gone by then. */
	if (c->close_seq > c->close_seq_saved) {
		snprintf(buf, sizeof(buf), "%" PRId64,
			 c->close_seq + CLOSE_SEQ_BATCH);
		if (store_set_meta(c, "close_seq", buf) == 0)
			c->close_seq_saved = c->close_seq + CLOSE_SEQ_BATCH;
	}
	store_save_version(c, v);
	/* Only once v's row says CLOSED: a crash between the two leaves
	 * both, and recovery keeps the newer. (Dropped first, a kill in
	 * between lost v's predecessor and v: nothing closed was left.)
	 * An unsynced version keeps what it supersedes until its bytes are
	 * on disk: after a power loss recovery drops it and falls back. */
	if (!v->unsynced)
		ver_drop_superseded(c, v);
	n->failed = false;
	n->attempts = 0;
	pthread_cond_broadcast(&c->changed);
}

void ver_forget_session(struct cache *c, struct cver *v)
{
	free(v->session_url);
	v->session_url = strdup("");
	v->session_off = 0;
	if (!v->dropped)
		store_save_session(c, v->vid, "", 0);
}

int64_t ver_reclose(struct cache *c, struct cnode *n)
{
	struct cver *v = ver_newest_closed(n);

	if (v)
		return v->close_seq;
	v = n->cur;
	if (v && v->state == CV_OPEN)
		return c->close_seq + 1;
	if (!v || v->state != CV_CLEAN)
		return 0;
	if (!v->complete) {
		ver_drop(c, v); /* a partial download of the old file */
		return 0;
	}
	/* Downloaded bytes were never fdatasynced: the uploader does it
	 * first, and a power loss drops the version (the old Drive file then
	 * stays where it was, its tombstone waiting). */
	v->unsynced = true;
	ver_mark_closed(c, v);
	upload_queue(c, n, cache_now_ms() + c->o.write_back_ms);
	return v->close_seq;
}

/* n has no version here: its Drive content becomes one (empty, or a
 * download under way). */
static int ver_begin_clean(struct cache *c, struct cnode *n, struct cver **out)
{
	struct cver *v;

	if (n->remote_exists && n->rsize > 0)
		return fetch_begin(c, n, out);
	v = ver_new(c, n, CV_CLEAN);
	if (!v)
		return -errno;
	v->mtime = n->mtime;
	n->cur = v;
	store_save_version(c, v);
	*out = v;
	return 0;
}

int ver_fetch_all(struct cache *c, struct cnode *n)
{
	struct cver *v = n->cur;
	int rc;

	if (v && (v->state != CV_CLEAN || v->complete))
		return 0;
	if (!v) {
		rc = ver_begin_clean(c, n, &v);
		if (rc < 0)
			return rc;
	}
	v->refs++;
	rc = fetch_wait(c, v, 0, v->size);
	ver_put(c, v);
	return rc;
}

int64_t ver_bytes(struct cache *c, bool clean_only)
{
	struct cver *v;
	int64_t sum = 0;

	for (v = c->vers; v; v = v->gnext)
		if (!clean_only || v->state == CV_CLEAN)
			sum += v->size;
	return sum;
}

int ver_copy_fd(int src, int dst, int64_t len, int64_t *copied)
{
	struct stat st;
	int64_t done = 0;
	char buf[65536];
	ssize_t r;

	if (len < 0) {
		if (fstat(src, &st) < 0)
			return -errno;
		len = st.st_size;
	}
	/* FICLONE shares extents (btrfs, xfs): a multi-GB checkpoint copies
	 * in microseconds. It copies the whole file, hence the size check. */
	if (fstat(src, &st) == 0 && st.st_size == len &&
	    ioctl(dst, FICLONE, src) == 0) {
		done = len;
		goto out;
	}
	if (ftruncate(dst, 0) < 0)
		return -errno;
	while (done < len) {
		loff_t in = done, outp = done;

		r = copy_file_range(src, &in, dst, &outp, len - done, 0);
		if (r < 0 && (errno == EXDEV || errno == ENOSYS ||
			      errno == EINVAL || errno == EOPNOTSUPP))
			break;
		if (r < 0)
			return -errno;
		if (r == 0)
			break;
		done += r;
	}
	while (done < len) {
		r = pread(src, buf, sizeof(buf), done);
		if (r < 0)
			return -errno;
		if (r == 0)
			break;
		if (pwrite(dst, buf, r, done) != r)
			return errno ? -errno : -EIO;
		done += r;
	}
out:
	if (copied)
		*copied = done;
	return 0;
}

/* s, a snapshot of v being made, takes v's bytes by becoming a second
 * name of v's content file: a multi-GB checkpoint's fsync copies nothing.
 * v copies them before it changes (ver_lock_change). Fails, leaving s as
 * it was, where the filesystem has no hard links. v->rw held exclusive;
 * s is new and nobody else uses its fd. */
static int ver_link_into(struct cache *c, struct cver *v, struct cver *s,
			 int64_t size)
{
	char vpath[4096], spath[4096], tmp[4200];
	struct stat st, pst;
	int fd;

	store_data_path(c, v->vid, vpath, sizeof(vpath));
	store_data_path(c, s->vid, spath, sizeof(spath));
	/* The name links what is there; only if that is v's own file (not
	 * after a drop, nor a copy cut short) does it hold v's bytes. */
	if (fstat(v->fd, &st) < 0 || st.st_size != size ||
	    stat(vpath, &pst) < 0 || pst.st_ino != st.st_ino ||
	    pst.st_dev != st.st_dev)
		return -EINVAL;
	snprintf(tmp, sizeof(tmp), "%s.cow", spath);
	unlink(tmp);
	if (link(vpath, tmp) < 0)
		return -errno;
	fd = open(tmp, O_RDWR | O_CLOEXEC);
	if (fd < 0 || rename(tmp, spath) < 0) {
		int e = -errno;

		if (fd >= 0)
			close(fd);
		unlink(tmp);
		return e;
	}
	close(s->fd);
	s->fd = fd;
	v->linked = true;
	return 0;
}

/* v's content file has another name (ver_link_into): v gets a file of
 * its own holding its first `keep` bytes (-1: all) before they change, so
 * the snapshot keeps the bytes it was taken with. The descriptor number
 * stays (dup3): reads under way go on with the same bytes. A dropped v
 * (unlinked, replaced) gets a file without a name. v->rw held exclusive;
 * takes c->lock. */
static int ver_own(struct cache *c, struct cver *v, int64_t keep)
{
	char path[4096], tmp[4200];
	struct stat fst, pst;
	int fd, rc;

	store_data_path(c, v->vid, path, sizeof(path));
	if (fstat(v->fd, &fst) == 0 && fst.st_nlink <= 1 &&
	    stat(path, &pst) == 0 && pst.st_ino == fst.st_ino) {
		v->linked = false; /* the other name is gone meanwhile */
		return 0;
	}
	snprintf(tmp, sizeof(tmp), "%s.cow", path);
	fd = open(tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	rc = ver_copy_fd(v->fd, fd, keep, NULL);
	if (rc == 0) {
		/* ver_drop unlinks v's name under c->lock: a dropped version's
		 * file must not come back under it. */
		pthread_mutex_lock(&c->lock);
		if (v->dropped)
			unlink(tmp);
		else if (rename(tmp, path) < 0)
			rc = -errno;
		pthread_mutex_unlock(&c->lock);
	}
	if (rc < 0) {
		unlink(tmp);
		close(fd);
		return rc; /* ENOSPC reaches the writer; the snapshot stays */
	}
	/* Cannot fail for two open descriptors but for a signal; should it,
	 * v->linked stays set and the next change copies again (the check
	 * above compares the file at v's path with v->fd). */
	while ((rc = dup3(fd, v->fd, O_CLOEXEC)) < 0 && errno == EINTR)
		;
	rc = rc < 0 ? -errno : 0;
	close(fd);
	if (rc == 0)
		v->linked = false;
	return rc;
}

/* Takes v->rw to change v's bytes — exclusive with `excl`, else shared
 * with other writers — after giving v a file of its own if a snapshot
 * shares it (keeping its first `keep` bytes, -1: all). */
static int ver_lock_change(struct cache *c, struct cver *v, bool excl,
			   int64_t keep)
{
	int rc;

	if (excl)
		pthread_rwlock_wrlock(&v->rw);
	else
		pthread_rwlock_rdlock(&v->rw);
	while (v->linked) {
		if (!excl) {
			pthread_rwlock_unlock(&v->rw);
			pthread_rwlock_wrlock(&v->rw);
		}
		rc = v->linked ? ver_own(c, v, keep) : 0;
		if (rc < 0) {
			pthread_rwlock_unlock(&v->rw);
			return rc;
		}
		if (!excl) {
			pthread_rwlock_unlock(&v->rw);
			pthread_rwlock_rdlock(&v->rw);
		}
	}
	return 0;
}

/* A new version of n that starts as a copy of src (NULL = empty). Made
 * cur at once with `preparing` set so that other opens wait for the copy,
 * which runs without c->lock. */
static void kv_set(struct cnode *n, struct cver *v);
static void kv_unset(struct cache *c, struct cnode *n, struct cver *v);

/* The versions h was moved from after its first move, once no read
 * through it is under way (c->lock held). */
static void held_let_go(struct cache *c, struct cache_handle *h)
{
	if (__atomic_load_n(&h->pins, __ATOMIC_SEQ_CST) > 0)
		return;
	while (h->nheld > 1)
		ver_put(c, h->held[--h->nheld]);
}

/* This mount wrote a new version v of n over old (old was still being
 * sent, or an O_TRUNC open): its readers read v from now on, as on a local
 * disk, where the kernel's pages and size already are. (Another instance's
 * version does not take them over: a handle reads what it opened.) c->lock
 * held. */
static void readers_follow(struct cache *c, struct cnode *n, struct cver *old,
			   struct cver *v)
{
	struct cache_handle *h;
	struct cver **held;

	for (h = n->readers; old && h; h = h->rnext) {
		if (h->v != old)
			continue;
		held = realloc(h->held, (h->nheld + 1) * sizeof(*held));
		if (!held)
			continue; /* it reads old, as before */
		h->held = held;
		h->held[h->nheld++] = old; /* with the handle's reference */
		kv_unset(c, n, old);
		v->refs++;
		kv_set(n, v);
		/* moved before v: a read that finds v finds it moved (and
		 * does not splice v, which may go at the next move). */
		__atomic_store_n(&h->moved, true, __ATOMIC_SEQ_CST);
		__atomic_store_n(&h->v, v, __ATOMIC_SEQ_CST);
		held_let_go(c, h);
	}
}

static int ver_new_copy(struct cache *c, struct cnode *n, struct cver *src,
			struct cver **out)
{
	struct cver *v, *old = n->cur;
	int64_t got = 0;
	int rc = 0, sfd;

	v = ver_new(c, n, CV_OPEN);
	if (!v)
		return -errno;
	n->cur = v;
	v->refs++;
	v->writers = 1;
	if (old && old->state == CV_CLEAN)
		ver_drop(c, old); /* partial fetch, no longer wanted */
	if (!src) {
		readers_follow(c, n, old, v);
		*out = v;
		return 0;
	}
	v->copy_of = src->vid;
	v->mtime = src->mtime;
	v->preparing = true;
	src->refs++;
	sfd = ver_fd(c, src);
	pthread_mutex_unlock(&c->lock);
	rc = sfd < 0 ? sfd : ver_copy_fd(sfd, v->fd, src->size, &got);
	pthread_mutex_lock(&c->lock);
	v->preparing = false;
	v->size = got;
	pthread_cond_broadcast(&c->changed);
	if (rc < 0) {
		/* ENOSPC and friends: the file stays as it was. */
		v->writers = 0;
		ver_drop(c, v);
		ver_put(c, v);
		if (!src->dropped && !n->cur)
			n->cur = src;
		ver_put(c, src);
		return rc;
	}
	ver_put(c, src);
	readers_follow(c, n, old, v);
	*out = v;
	return 0;
}

/* Picks (or makes) the version a handle opened with `flags` uses. c->lock
 * held; may drop it to copy or fetch. */
static int ver_for_open(struct cache *c, struct cnode *n, int flags,
			struct cver **out)
{
	bool writer = (flags & O_ACCMODE) != O_RDONLY;
	bool trunc = writer && (flags & O_TRUNC);
	struct cver *v;
	int rc;

again:
	if (n->unlinked)
		return -ENOENT;
	v = n->cur;
	if (v && v->preparing) {
		cache_wait(c, 1000);
		goto again;
	}
	if (!writer) {
		if (!v) {
			rc = ver_begin_clean(c, n, &v);
			if (rc < 0)
				return rc;
		}
		v->refs++;
		*out = v;
		return 0;
	}
	if (v && v->state == CV_OPEN) {
		v->refs++;
		v->writers++;
		goto trunc;
	}
	if (v && v->state == CV_CLEAN && v->complete) {
		/* In place: Drive still holds these bytes, so a crash while
		 * it is OPEN costs only a fetch. Only once the row says so:
		 * a row still CLEAN (or CLOSED: the landing that made it
		 * CLEAN not saved) would pass the changed bytes for Drive's
		 * or upload them half-written after a crash. */
		v->state = CV_OPEN;
		v->was_clean = true;
		rc = store_save_version(c, v);
		if (rc < 0) {
			v->state = CV_CLEAN;
			v->was_clean = false;
			return rc;
		}
		v->gen = 0;
		v->opened_ms = cache_now_ms();
		v->refs++;
		v->writers = 1;
		goto trunc;
	}
	if (trunc || (!v && (!n->remote_exists || n->rsize == 0)))
		return ver_new_copy(c, n, NULL, out);
	if (v && v->state != CV_CLEAN)
		return ver_new_copy(c, n, v, out);
	/* Not (fully) here: fetch it all, then modify it in place. */
	rc = ver_fetch_all(c, n);
	if (rc < 0)
		return rc;
	goto again;
trunc:
	if (trunc && v->size) {
		/* A CLEAN version's fd is closed while nobody uses it
		 * (ver_put): reopen it, or the truncate silently misses. */
		rc = ver_fd(c, v);
		pthread_mutex_unlock(&c->lock);
		if (rc >= 0 && (rc = ver_lock_change(c, v, false, 0)) == 0) {
			rc = ftruncate(v->fd, 0) < 0 ? -errno : 0;
			pthread_rwlock_unlock(&v->rw);
		}
		pthread_mutex_lock(&c->lock);
		if (rc < 0) {
			v->writers--;
			ver_put(c, v);
			return rc;
		}
		v->size = 0;
		v->gen++;
		clock_gettime(CLOCK_REALTIME, &v->mtime);
	}
	*out = v;
	return 0;
}

/* The kernel's view of n is a version other handles still read, and not
 * the one a new open would get from Drive (a version written on this
 * mount is the kernel's own doing: local semantics, no wait). */
bool node_kv_busy(const struct cnode *n)
{
	return n->kv && n->kv->handles > 0 && n->kv != n->cur &&
	       (!n->cur || n->cur->state == CV_CLEAN);
}

/* After an open: what the kernel knows of n is v, and only v. */
static void kv_told(struct cnode *n, const struct cver *v)
{
	n->told = false;
	node_told(n, v->size, v->mtime);
	n->told_moved = false;
}

/* Whether the kernel may cache, for n, pages of another version than v
 * or another size or mtime: what it was told since may have come from
 * any version current at that moment. An O_TRUNC open (also a create)
 * empties the kernel's cache itself. */
static bool kernel_stale(const struct cnode *n, const struct cver *v, int flags)
{
	if (flags & O_TRUNC)
		return false;
	if (n->kv_vid && n->kv_vid != v->vid)
		return true;
	if (n->told_moved)
		return true;
	return node_told_other(n, v->size, v->mtime);
}

/* v is open by one more handle, and what the kernel caches for n. */
static void kv_set(struct cnode *n, struct cver *v)
{
	v->handles++;
	n->kv = v;
	n->kv_vid = v->vid;
	kv_told(n, v);
}

/* A handle of v closed (or moved to another version). */
static void kv_unset(struct cache *c, struct cnode *n, struct cver *v)
{
	if (--v->handles > 0)
		return;
	if (n->kv == v)
		n->kv = NULL;
	pthread_cond_broadcast(&c->changed);
}

bool cache_kernel_stale(const struct cache_handle *h)
{
	return h->kernel_stale;
}

uint64_t cache_handle_ino(const struct cache_handle *h)
{
	return h->n->ino;
}

int cache_open_file(struct cache *c, const char *path, int flags, mode_t mode,
		    struct cache_handle **out)
{
	bool writer = (flags & O_ACCMODE) != O_RDONLY;
	struct cache_handle *h;
	struct cnode *d, *n = NULL;
	struct cver *v = NULL;
	const char *name;
	int64_t wait_until = 0;
	int rc;

	h = calloc(1, sizeof(*h));
	if (!h)
		return -ENOMEM;
	/* Close-to-open: an open that will see existing bytes first reads
	 * the feed (if older than 1 s), so other instances' writes made
	 * before it are seen. A write-only or truncating open skips it:
	 * it keeps creates at local speed. */
	if (!(flags & O_TRUNC) &&
	    ((flags & O_ACCMODE) != O_WRONLY || (flags & O_APPEND)))
		feed_revalidate(c);
	pthread_mutex_lock(&c->lock);
again:
	if (flags & O_CREAT) {
		rc = node_lookup_parent(c, path, &d, &name);
		if (rc < 0)
			goto out;
		n = node_child(c, d, name);
		if (n && (flags & O_EXCL)) {
			rc = -EEXIST;
			goto out;
		}
		if (!n && !drive_name_local_ok(name)) {
			rc = -EINVAL; /* Drive would give another name back */
			goto out;
		}
		if (!n && cache_lock_path(path)) {
			/* A lock: decided on Drive, not by our view. */
			rc = cache_lock_create(c, path, d, name, mode, &n);
			if (rc < 0)
				goto out;
			flags &= ~O_TRUNC; /* born holding its holder JSON */
		}
		if (!n) {
			n = node_new(c, d, name, false, mode);
			if (!n) {
				rc = -ENOMEM;
				goto out;
			}
			rc = store_save_node(c, n);
			if (rc < 0) {
				/* Not made (ENOSPC: the cache disk is full). */
				node_detach(c, n);
				goto out;
			}
			d->mtime = n->mtime;
			flags |= O_TRUNC;
			if (!writer)
				flags = (flags & ~O_ACCMODE) | O_RDWR;
			writer = true;
		}
	} else {
		rc = node_lookup(c, path, &n);
		if (rc < 0)
			goto out;
	}
	if (n->is_dir) {
		rc = -EISDIR;
		goto out;
	}
	if (!writer && node_kv_busy(n)) {
		/* Let this mount's readers of the previous version finish
		 * first (bounded: a reader may keep it open for hours). */
		if (!wait_until)
			wait_until = cache_now_ms() + CACHE_KV_WAIT_MS;
		if (cache_now_ms() < wait_until) {
			n->refs++;
			cache_wait(c, 50);
			node_put(c, n);
			n = NULL;
			goto again;
		}
	}
	n->refs++;
	rc = ver_for_open(c, n, flags, &v);
	if (rc < 0) {
		node_put(c, n);
		goto out;
	}
	rc = ver_fd(c, v);
	if (rc < 0) {
		if (writer)
			v->writers--;
		ver_put(c, v);
		node_put(c, n);
		goto out;
	}
	v->atime_ms = cache_wall_ms();
	if (writer && (flags & O_APPEND))
		v->appending = true;
	h->kernel_stale = kernel_stale(n, v, flags);
	kv_set(n, v);
	h->c = c;
	h->n = n;
	h->v = v;
	h->flags = flags;
	h->writer = writer;
	if (!writer) {
		h->rnext = n->readers;
		if (n->readers)
			n->readers->rprev = h;
		n->readers = h;
	}
	*out = h;
	h = NULL;
	rc = 0;
out:
	pthread_mutex_unlock(&c->lock);
	cache_run_inval(c);
	free(h);
	return rc;
}

/* Waits until [off, off + size) of v is here (c->lock not held). */
static int ver_wait_range(struct cache *c, struct cver *v, size_t size,
			  off_t off)
{
	int rc = 0;

	if (!v->complete) {
		pthread_mutex_lock(&c->lock);
		if (off < v->size)
			rc = fetch_wait(c, v, off,
					(int64_t)size < v->size - off
						? (int64_t)size
						: v->size - off);
		pthread_mutex_unlock(&c->lock);
	}
	return rc;
}

int cache_read_fd(struct cache_handle *h, size_t size, off_t off, int *fd)
{
	struct cver *v = __atomic_load_n(&h->v, __ATOMIC_SEQ_CST);
	int rc;

	if (__atomic_load_n(&h->moved, __ATOMIC_SEQ_CST))
		return 1; /* through cache_read: see readers_follow */
	rc = ver_wait_range(h->c, v, size, off);
	*fd = v->fd;
	return rc;
}

ssize_t cache_read(struct cache_handle *h, void *buf, size_t size, off_t off)
{
	struct cache *c = h->c;
	struct cver *v;
	ssize_t r;

	/* Pinned before v is read: a move that sees no pin moved it
	 * before this read could find the version it lets go. */
	__atomic_add_fetch(&h->pins, 1, __ATOMIC_SEQ_CST);
	v = __atomic_load_n(&h->v, __ATOMIC_SEQ_CST);
	r = ver_wait_range(c, v, size, off);
	if (r == 0 && (r = pread(v->fd, buf, size, off)) < 0)
		r = -errno;
	if (__atomic_sub_fetch(&h->pins, 1, __ATOMIC_SEQ_CST) == 0 &&
	    __atomic_load_n(&h->nheld, __ATOMIC_SEQ_CST) > 1) {
		pthread_mutex_lock(&c->lock);
		held_let_go(c, h);
		pthread_mutex_unlock(&c->lock);
	}
	return r;
}

static void note_write(struct cache *c, struct cver *v, int64_t end,
		       bool set_size)
{
	pthread_mutex_lock(&c->lock);
	if (set_size || end > v->size)
		v->size = end;
	v->gen++;
	clock_gettime(CLOCK_REALTIME, &v->mtime);
	pthread_mutex_unlock(&c->lock);
}

static int handle_reopen(struct cache_handle *h);

ssize_t cache_write(struct cache_handle *h, const void *buf, size_t size,
		    off_t off)
{
	struct cache *c = h->c;
	struct cver *v = h->v;
	ssize_t r;

	if (!h->writer)
		return -EBADF;
	if (h->closed && (r = handle_reopen(h)) < 0)
		return r;
	v = h->v;
	/* With O_APPEND the end of file and the write must be one step. */
	r = ver_lock_change(c, v, h->flags & O_APPEND, -1);
	if (r < 0)
		return r;
	if (h->flags & O_APPEND)
		off = v->size;
	r = pwrite(v->fd, buf, size, off);
	if (r < 0)
		r = -errno; /* ENOSPC reaches the writer; nothing queued moves
			     */
	else if (r > 0)
		note_write(c, v, off + r, false);
	pthread_rwlock_unlock(&v->rw);
	return r;
}

int cache_fgetattr(struct cache_handle *h, struct cache_attr *out)
{
	struct cache *c = h->c;

	pthread_mutex_lock(&c->lock);
	node_fill_attr(h->n, out);
	out->size = h->v->size;
	out->mtime = h->v->mtime;
	node_told(h->n, out->size, out->mtime);
	pthread_mutex_unlock(&c->lock);
	return 0;
}

int cache_ftruncate(struct cache_handle *h, off_t size)
{
	struct cver *v = h->v;
	int rc = 0;

	if (!h->writer)
		return -EBADF;
	if (size < 0)
		return -EINVAL;
	if (h->closed && (rc = handle_reopen(h)) < 0)
		return rc;
	v = h->v;
	rc = ver_lock_change(h->c, v, false, size);
	if (rc < 0)
		return rc;
	if (ftruncate(v->fd, size) < 0)
		rc = -errno;
	else
		note_write(h->c, v, size, true);
	pthread_rwlock_unlock(&v->rw);
	return rc;
}

int cache_truncate(struct cache *c, const char *path, off_t size)
{
	struct cache_handle *h;
	int rc, rc2;

	rc = cache_open_file(c, path, O_WRONLY | (size == 0 ? O_TRUNC : 0), 0,
			     &h);
	if (rc < 0)
		return rc;
	if (size != 0 || h->v->size != 0)
		rc = cache_ftruncate(h, size);
	rc2 = cache_release(h);
	return rc < 0 ? rc : rc2;
}

int64_t ver_snapshot(struct cache *c, struct cver *v)
{
	struct cnode *n = v->node;
	struct cver *s;
	uint64_t gen;
	int64_t got = 0, size, seq;
	int rc;

	for (s = n->vers; s; s = s->nnext)
		if (s->snap_of == v->vid && s->snap_gen == v->gen &&
		    s->state != CV_OPEN)
			return s->close_seq; /* nothing written since */
	s = ver_new(c, n, CV_OPEN);
	if (!s)
		return -errno;
	s->refs++;
	s->preparing = true;
	s->snap_of = v->vid;
	pthread_mutex_unlock(&c->lock);
	/* Exclusive: no write lands halfway through the copy. */
	pthread_rwlock_wrlock(&v->rw);
	pthread_mutex_lock(&c->lock);
	gen = v->gen;
	size = v->size;
	s->mtime = v->mtime;
	pthread_mutex_unlock(&c->lock);
	rc = ver_link_into(c, v, s, size);
	if (rc == 0)
		got = size;
	else
		rc = ver_copy_fd(v->fd, s->fd, size, &got);
	pthread_rwlock_unlock(&v->rw);
	if (rc == 0 && fdatasync(s->fd) < 0)
		rc = -errno;
	pthread_mutex_lock(&c->lock);
	s->preparing = false;
	/* Unlinked, or replaced (a rename of a local file over it drops
	 * every version, s too) while c->lock was let go: nothing to keep. */
	if (rc < 0 || n->unlinked || s->dropped || v->dropped) {
		ver_drop(c, s);
		ver_put(c, s);
		return rc < 0 ? rc : -ENOENT;
	}
	s->size = got;
	s->snap_gen = gen;
	ver_mark_closed(c, s);
	upload_queue(c, n, cache_now_ms());
	seq = s->close_seq;
	ver_put(c, s);
	return seq;
}

int cache_fsync(struct cache_handle *h)
{
	struct cache *c = h->c;
	struct cnode *n = h->n;
	struct cver *v;
	int64_t target = 0, deadline;
	int rc = 0;

	pthread_mutex_lock(&c->lock);
	v = h->v;
	if (n->unlinked || v->dropped)
		goto out; /* deleted (or replaced) meanwhile: nothing to keep */
	if (v->state == CV_OPEN) {
		if (v->was_clean && v->gen == 0)
			goto out; /* untouched: Drive has it */
		target = ver_snapshot(c, v);
		if (target < 0) {
			/* -ENOENT: deleted or replaced meanwhile, as above */
			rc = target == -ENOENT ? 0 : (int)target;
			goto out;
		}
	} else if (v->state == CV_CLOSED || v->state == CV_UPLOADING) {
		target = v->close_seq;
	}
	if (!c->dc) {
		/* offline: durable locally, that is all we have */
		rc = c->store_err;
		goto out;
	}
	deadline = cache_now_ms() + 60000;
	for (;;) {
		if (n->unlinked)
			break;
		if (upload_synced(n, target))
			break;
		if (n->failed) {
			rc = -EIO;
			break;
		}
		rc = upload_reconcile_now(c, n);
		if (rc < 0 && rc != -EAGAIN)
			break;
		if (upload_synced(n, target) || n->unlinked) {
			rc = 0;
			break;
		}
		/* Backing off after errors, or waiting for a parent folder
		 * another thread creates: bounded, the data stays queued. */
		if (cache_now_ms() > deadline) {
			rc = -EIO;
			break;
		}
		cache_wait(c, rc == -EAGAIN ? 200 : 50);
		rc = 0;
	}
out:
	pthread_mutex_unlock(&c->lock);
	return rc;
}

/* The last writer closed v: it becomes CLOSED and queued, unless it is
 * byte-for-byte a version Drive has or is getting. c->lock held. With
 * `sync` the bytes are fdatasynced first; without (a close() waiting in
 * flush) the version is marked unsynced and the uploader syncs it. */
static void ver_last_close(struct cache *c, struct cnode *n, struct cver *v,
			   bool sync)
{
	struct cver *y;

	if (v->was_clean && v->gen == 0) {
		v->state = CV_CLEAN;
		store_save_version(c, v);
		node_caught_up(c, n);
		return;
	}
	for (y = n->vers; y; y = y->nnext) {
		if (y == v)
			continue;
		if ((y->snap_of == v->vid && y->snap_gen == v->gen &&
		     y->state != CV_OPEN) ||
		    (v->copy_of == y->vid && v->gen == 0))
			break;
	}
	if (y && y->state == CV_CLEAN) {
		/* v's bytes are on disk as y's are where they are y's very
		 * file (an fsync snapshot's hard link, synced when taken);
		 * a copy of y was never synced. Not the flag v had (a
		 * download's): a new boot dropped a synced log that way, and
		 * trusted an unsynced copy. No writer is left to change
		 * `linked`. */
		v->unsynced =
			!(v->linked && y->snap_of == v->vid) || y->unsynced;
		v->state = CV_CLEAN;
		v->close_seq = y->close_seq;
		v->complete = true;
		store_save_version(c, v); /* before y goes: never neither */
		ver_drop(c, y);
		return;
	}
	if (sync) {
		pthread_mutex_unlock(&c->lock);
		/* The bytes reach the disk before the row says CLOSED
		 * (store.c). */
		fdatasync(v->fd);
		pthread_mutex_lock(&c->lock);
		if (v->writers > 0 || v->state != CV_OPEN || v->dropped)
			return; /* a writer came back meanwhile */
	}
	v->unsynced = !sync;
	/* One commit for the version, what it supersedes and the node's
	 * mtime: a close costs one WAL commit, not four. */
	store_begin(c);
	ver_mark_closed(c, v);
	for (y = n->vers; y; y = y->nnext)
		if (y != v && y->state == CV_UPLOADING &&
		    ((y->snap_of == v->vid && y->snap_gen == v->gen) ||
		     (v->copy_of == y->vid && v->gen == 0)))
			v->same_as = y->vid;
	n->mtime = v->mtime;
	store_save_node(c, n);
	store_commit(c);
	upload_queue(c, n, cache_now_ms() + c->o.write_back_ms);
}

/* close(2) waits for FLUSH but not for RELEASE, which the kernel sends
 * later. A version must therefore be CLOSED (committed in SQLite) before
 * flush returns, or a mount killed right after close() returned would
 * drop it as still OPEN at recovery. Done here when this handle is the
 * last writer; the fdatasync is left to the uploader so that close()
 * stays at local-disk speed (a kill -9 keeps the page cache; a power loss
 * is caught by recovery's boot-id check). */
int cache_flush(struct cache_handle *h)
{
	struct cache *c = h->c;
	struct cnode *n = h->n;
	struct cver *v = h->v;
	int rc = 0;

	if (!h->writer)
		return 0;
	pthread_mutex_lock(&c->lock);
	if (!h->closed && v->writers == 1 && v->state == CV_OPEN &&
	    !v->dropped && !n->unlinked) {
		h->closed = true;
		v->writers = 0;
		ver_last_close(c, n, v, false);
		/* Closed in memory, queued, but not on disk: say so. */
		rc = c->store_err;
	}
	pthread_mutex_unlock(&c->lock);
	return rc;
}

/* A write through a handle whose version flush() closed (a dup'd fd, or
 * mmap'd pages written back after close): like a new open for writing,
 * it gets an OPEN version of its own. */
static int handle_reopen(struct cache_handle *h)
{
	struct cache *c = h->c;
	struct cver *v;
	int rc = 0;

	pthread_mutex_lock(&c->lock);
	/* The kernel writes a mapping back in parallel after the close:
	 * one of those writes reopens (ver_for_open may drop c->lock to
	 * copy), the rest use what it opened. */
	while (h->reopening)
		pthread_cond_wait(&c->changed, &c->lock);
	if (h->closed) {
		h->reopening = true;
		rc = ver_for_open(c, h->n,
				  h->flags & ~(O_TRUNC | O_CREAT | O_EXCL), &v);
		/* A CLEAN version nobody had open has its fd closed. */
		if (rc == 0 && (rc = ver_fd(c, v)) < 0) {
			v->writers--;
			ver_put(c, v);
		}
		if (rc >= 0) {
			rc = 0;
			if (h->flags & O_APPEND)
				v->appending = true;
			kv_unset(c, h->n, h->v);
			ver_put(c, h->v);
			kv_set(h->n, v);
			h->v = v;
			h->closed = false;
		}
		h->reopening = false;
		pthread_cond_broadcast(&c->changed);
	}
	pthread_mutex_unlock(&c->lock);
	return rc;
}

int cache_release(struct cache_handle *h)
{
	struct cache *c = h->c;
	struct cnode *n = h->n;
	struct cver *v;
	int rc = 0;

	pthread_mutex_lock(&c->lock);
	v = h->v; /* under the lock: a writer's open may move the handle */
	v->atime_ms = cache_wall_ms();
	if (h->writer && !h->closed && --v->writers == 0 &&
	    v->state == CV_OPEN && !v->dropped && !n->unlinked) {
		ver_last_close(c, n, v, true);
		rc = c->store_err; /* as in cache_flush */
	}
	kv_unset(c, n, v);
	ver_put(c, v);
	if (!h->writer) {
		if (h->rprev)
			h->rprev->rnext = h->rnext;
		else
			n->readers = h->rnext;
		if (h->rnext)
			h->rnext->rprev = h->rprev;
	}
	while (h->nheld > 0)
		ver_put(c, h->held[--h->nheld]);
	node_put(c, n);
	pthread_mutex_unlock(&c->lock);
	free(h->held);
	free(h);
	return rc;
}

int cache_import(struct cache *c, const char *path, int src_fd,
		 const struct stat *st, int nw, const int *flags,
		 struct cache_handle **out, cache_note_fn note_fn,
		 void *note_arg)
{
	struct cache_handle **hs = NULL;
	char *note = NULL;
	struct cnode *d, *n;
	struct cver *v, *o, *next;
	const char *name;
	bool created = false;
	int64_t got = 0;
	int rc, i;

	/* The handles first: once the content is in, nothing may fail. */
	if (nw > 0) {
		hs = calloc((size_t)nw, sizeof(*hs));
		for (i = 0; hs && i < nw; i++)
			if (!(hs[i] = calloc(1, sizeof(**hs))))
				break;
		if (!hs || i < nw) {
			for (i = 0; hs && i < nw; i++)
				free(hs[i]);
			free(hs);
			return -ENOMEM;
		}
	}
	pthread_mutex_lock(&c->lock);
	rc = node_lookup_parent(c, path, &d, &name);
	if (rc < 0)
		goto out;
	n = node_child(c, d, name);
	if (n && n->is_dir) {
		rc = -EISDIR;
		goto out;
	}
	if (!n && !drive_name_local_ok(name)) {
		rc = -EINVAL;
		goto out;
	}
	if (!n) {
		n = node_new(c, d, name, false, st->st_mode);
		if (!n) {
			rc = -ENOMEM;
			goto out;
		}
		created = true;
	}
	n->refs++;
	v = ver_new(c, n, CV_OPEN);
	if (!v) {
		rc = -errno;
		goto out_put;
	}
	v->refs++;
	v->preparing = true;
	pthread_mutex_unlock(&c->lock);
	rc = ver_copy_fd(src_fd, v->fd, -1, &got);
	if (rc == 0 && nw == 0 && fdatasync(v->fd) < 0)
		rc = -errno;
	pthread_mutex_lock(&c->lock);
	v->preparing = false;
	/* The number now, under the lock the commit below is made in: one
	 * taken before the copy let a close of `path` by another handle
	 * during it pass, after a kill, for this import's version closed. */
	if (rc == 0 && !n->unlinked && note_fn &&
	    !(note = note_fn(c->close_seq, note_arg)))
		rc = -ENOMEM;
	if (rc < 0 || n->unlinked) {
		ver_drop(c, v);
		ver_put(c, v);
		rc = rc < 0 ? rc : -ENOENT;
		/* The rename failed: the name it made goes too, unless
		 * someone opened it meanwhile. */
		if (created && n->refs == 1 && !n->vers)
			node_detach(c, n);
		goto out_put;
	}
	/* One commit for the version, the node and fs/'s note: a kill
	 * between them left the content here with no note saying that the
	 * local file is to go, and both names stayed. On disk before the
	 * caller unlinks the local file: after a power loss that kept the
	 * unlink, a commit rolled back would leave the content nowhere. */
	if (note)
		store_begin_durably(c);
	else
		store_begin(c);
	n->mode = st->st_mode & 07777;
	v->size = got;
	v->mtime = st->st_mtim;
	n->mtime = st->st_mtim;
	clock_gettime(CLOCK_REALTIME, &n->ctime);
	/* The file is replaced: writers still holding the old content keep
	 * it detached, like an fd on a file renamed over. */
	for (o = n->vers; o; o = next) {
		next = o->nnext;
		if (o != v && o->state == CV_OPEN)
			ver_drop(c, o);
	}
	n->cur = v;
	/* The kernel's inode at the path is now the renamed file's, whose
	 * cache holds these very bytes; old handles stay on the old one. */
	n->kv = NULL;
	n->kv_vid = v->vid;
	kv_told(n, v);
	if (nw == 0) {
		ver_mark_closed(c, v);
		upload_queue(c, n, cache_now_ms() + c->o.write_back_ms);
	} else {
		/* Still open for writing: closed (and sent) when they close,
		 * as if opened here. */
		v->opened_ms = cache_now_ms();
		for (i = 0; i < nw; i++) {
			hs[i]->c = c;
			hs[i]->n = n;
			hs[i]->v = v;
			hs[i]->flags = flags[i];
			hs[i]->writer = true;
			n->refs++;
			v->refs++;
			v->writers++;
			if (flags[i] & O_APPEND)
				v->appending = true;
			kv_set(n, v);
			out[i] = hs[i];
			hs[i] = NULL;
		}
	}
	store_save_node(c, n);
	if (note)
		store_set_meta(c, "move", note);
	rc = store_commit(c);
	ver_put(c, v);
out_put:
	node_put(c, n);
out:
	pthread_mutex_unlock(&c->lock);
	free(note);
	for (i = 0; i < nw; i++)
		free(hs[i]);
	free(hs);
	return rc;
}

int cache_move_note(struct cache *c, const char *note)
{
	int rc, rc2;

	pthread_mutex_lock(&c->lock);
	/* A note is on disk before the local step it covers (a temp file
	 * made, renamed into place); its clear need not be: a note left
	 * over acts only on the files it names. */
	if (note[0])
		store_begin_durably(c);
	else
		store_begin(c);
	rc = store_set_meta(c, "move", note);
	/* Behind, the row write only says so: the commit's resync decides
	 * whether the note is on disk. */
	rc2 = store_commit(c);
	pthread_mutex_unlock(&c->lock);
	return rc == -ENOMEM ? rc : rc2;
}

bool cache_closed_since(struct cache *c, const char *path, int64_t seq)
{
	struct cnode *n;
	struct cver *v;
	bool yes = false;

	pthread_mutex_lock(&c->lock);
	if (node_lookup(c, path, &n) == 0) {
		yes = n->landed_seq > seq;
		for (v = n->vers; v && !yes; v = v->nnext)
			yes = v->state != CV_OPEN && v->close_seq > seq;
	}
	pthread_mutex_unlock(&c->lock);
	return yes;
}

int cache_move_pending(struct cache *c, char *out, size_t len)
{
	pthread_mutex_lock(&c->lock);
	if (store_get_meta(c, "move", out, len) < 0 && len)
		out[0] = '\0';
	pthread_mutex_unlock(&c->lock);
	return 0;
}

bool cache_handle_current(struct cache_handle *h)
{
	struct cache *c = h->c;
	bool cur;

	pthread_mutex_lock(&c->lock);
	cur = !h->n->unlinked && !h->v->dropped && h->n->cur == h->v;
	pthread_mutex_unlock(&c->lock);
	return cur;
}

int cache_export(struct cache *c, const char *path, int dst_fd)
{
	struct cache_handle *h;
	int rc;

	struct cver *v;

	rc = cache_open_file(c, path, O_RDONLY, 0, &h);
	if (rc < 0)
		return rc;
	pthread_mutex_lock(&c->lock);
	v = h->v; /* the version opened, whatever a writer does meanwhile */
	v->refs++;
	if (v->fetch)
		rc = fetch_wait(c, v, 0, v->size);
	pthread_mutex_unlock(&c->lock);
	if (rc == 0)
		rc = ver_copy_fd(v->fd, dst_fd, v->size, NULL);
	pthread_mutex_lock(&c->lock);
	ver_put(c, v);
	pthread_mutex_unlock(&c->lock);
	cache_release(h);
	return rc;
}
