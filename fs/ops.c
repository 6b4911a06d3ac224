/* ops.c — the FUSE operations of vectur-mount: routing each path to the
 * local directory under the mount point, to the persisted tree (cache/),
 * or to the virtual .vectur/ control directory.
 *
 * Local paths are served with *at() calls on v->dirfd, the directory
 * opened before mounting (DESIGN.md §3): after the mount it can no longer
 * be reached by name, only through that fd. Open local files keep their
 * own fd in the file handle so reads and writes are one pread/pwrite.
 *
 * Persisted paths go to cache_*(). Merged directories (the root, and any
 * directory that is a strict prefix of a persist pattern) are the union of
 * both; a persisted name wins and the local entry it hides is reported,
 * never touched. Renames across the boundary copy content through
 * cache_import/cache_export under v->rename_lock, so `os.replace(tmp,
 * "experiments/work_graph.json")` works without EXDEV.
 *
 * `.vectur/local/` (a read-only view of the directory underneath, for
 * local files hidden by persisted ones) is served here too.
 *
 * Every operation returns 0 or -errno. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <syslog.h>
#include <unistd.h>

#include <json-c/json.h>

#include "kernel.h"
#include "vfs.h"

/* Persisted inode numbers are small SQLite row ids; this bit keeps them
 * apart from the local filesystem's numbers (use_ino). */
#define VFS_CACHE_INO_BIT (1ULL << 62)

/* Cap on entries the mount-time shadow scan looks at. */
#define VFS_SCAN_MAX 10000

enum route { R_LOCAL, R_MERGED, R_PERSIST, R_CTL };

enum fh_kind { FH_LOCAL, FH_CACHE, FH_CTL, FH_DIR };

/* An open file or directory. With nullpath_ok (needed so that unlinked
 * open files keep working under hard_remove) libfuse passes no path to
 * operations on an open handle, so the handle keeps what they need.
 *
 * A handle writing a file that a rename moves across the persist boundary
 * moves with it (see "handles that move" below): its kind turns from
 * FH_LOCAL to FH_CACHE or back. Operations on a handle hold `sw` shared,
 * the move holds it exclusive. */
struct fh {
	_Atomic(enum fh_kind) kind;
	int fd;			 /* FH_LOCAL */
	struct cache_handle *ch; /* FH_CACHE */
	void *ctl;		 /* FH_CTL */
	char *rel;		 /* FH_CTL, FH_DIR: path relative to root */
	bool ro;		 /* a hidden local file under .vectur/local */
	bool writable;		 /* FH_CACHE opened for writing */
	pid_t opener;		 /* FH_CACHE: the thread that opened it */
	atomic_bool flushed;	 /* FH_CACHE: counted in v->closing */
	int flags;		 /* open(2) flags */
	pthread_rwlock_t sw;	 /* see above */
	bool opener_closed;	 /* FH_LOCAL: its opener close(2)d it */
	/* In v->writers (a file open for writing), known by the local
	 * file's dev/ino, or dev 0 and the persisted file's ino; `pins`:
	 * moves holding it (v->fh_lock). */
	bool listed_w;
	int pins;
	dev_t w_dev;
	uint64_t w_ino;
	struct fh *w_next, *w_prev;
	struct dent *ents; /* FH_DIR: the listing taken at offset 0 */
	int nents, capents;
	bool listed;
};

/* One entry of a directory listing, kept in its handle so that each
 * READDIR(PLUS) call goes on from an offset (its index + 1). */
struct dent {
	char *name;
	struct stat st;
	bool has_st;
	bool full; /* st holds every attribute: fit for READDIRPLUS */
};

/* ".vectur/local[/X]" → "X" ("" for the directory itself), else NULL:
 * the read-only view of the directory under the mount point, through
 * which local files hidden by persisted ones can still be read. */
static const char *ctl_local_sub(const char *rel)
{
	static const char pfx[] = VFS_CTL_DIR "/local";
	size_t n = sizeof(pfx) - 1;

	if (strncmp(rel, pfx, n) != 0)
		return NULL;
	if (rel[n] == '\0')
		return "";
	return rel[n] == '/' ? rel + n + 1 : NULL;
}

static struct vfs *vfs_get(void)
{
	return fuse_get_context()->private_data;
}

static struct fh *fh_of(const struct fuse_file_info *fi)
{
	return fi ? (struct fh *)(uintptr_t)fi->fh : NULL;
}

/* A move waiting for `sw` goes before new operations on the handle. */
static void sw_init(struct fh *fh)
{
	pthread_rwlockattr_t at;

	pthread_rwlockattr_init(&at);
	pthread_rwlockattr_setkind_np(
		&at, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
	pthread_rwlock_init(&fh->sw, &at);
	pthread_rwlockattr_destroy(&at);
}

/* "/a/b" → "a/b"; "/" → "". */
static const char *rel_of(const char *path)
{
	while (path && *path == '/')
		path++;
	return path ? path : "";
}

/* The name to give *at() calls: the root is ".". */
static const char *at_name(const char *rel)
{
	return *rel ? rel : ".";
}

static enum route route_of(struct vfs *v, const char *rel)
{
	if (ctl_is_ctl_path(rel))
		return R_CTL;
	switch (persist_classify(v->ps, rel)) {
	case PERSIST_PERSISTED:
		return R_PERSIST;
	case PERSIST_MERGED:
		return R_MERGED;
	default:
		return R_LOCAL;
	}
}

/* Copies the parent of rel into buf ("" for top-level names). */
static void parent_of(const char *rel, char *buf, size_t len)
{
	const char *slash = strrchr(rel, '/');
	size_t n = slash ? (size_t)(slash - rel) : 0;

	if (n >= len)
		n = len - 1;
	memcpy(buf, rel, n);
	buf[n] = '\0';
}

static int join(char *buf, size_t len, const char *dir, const char *name)
{
	int n = *dir ? snprintf(buf, len, "%s/%s", dir, name)
		     : snprintf(buf, len, "%s", name);

	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

static void attr_to_stat(struct vfs *v, const struct cache_attr *a,
			 struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = a->ino | VFS_CACHE_INO_BIT;
	st->st_mode = a->mode;
	if (!(st->st_mode & S_IFMT))
		st->st_mode |= a->is_dir ? S_IFDIR : S_IFREG;
	st->st_nlink = a->is_dir ? 2 : 1;
	st->st_uid = v->uid;
	st->st_gid = v->gid;
	st->st_size = a->size;
	st->st_blksize = 4096;
	st->st_blocks = (a->size + 511) / 512;
	st->st_mtim = a->mtime;
	st->st_atim = a->mtime;
	st->st_ctim = a->ctime.tv_sec ? a->ctime : a->mtime;
}

void vfs_report_shadow(struct vfs *v, const char *path, const char *why)
{
	char **nl;

	pthread_mutex_lock(&v->shadow_lock);
	for (int i = 0; i < v->nshadowed; i++) {
		if (strcmp(v->shadowed[i], path) == 0) {
			pthread_mutex_unlock(&v->shadow_lock);
			return;
		}
	}
	nl = realloc(v->shadowed, (v->nshadowed + 1) * sizeof(char *));
	if (nl) {
		v->shadowed = nl;
		nl[v->nshadowed] = strdup(path);
		if (nl[v->nshadowed])
			v->nshadowed++;
	}
	pthread_mutex_unlock(&v->shadow_lock);
	vfs_log(LOG_WARNING,
		"local '%s' is hidden by %s; it stays untouched under the "
		"mount point and readable as " VFS_CTL_DIR "/local/%s",
		path, why, path);
}

/* A persisted path whose parent is merged may hide a local entry of the
 * same name: say so once. Deeper paths are covered by their ancestor. */
static void check_shadow(struct vfs *v, const char *rel)
{
	char parent[PATH_MAX];
	struct stat st;

	parent_of(rel, parent, sizeof(parent));
	if (route_of(v, parent) != R_MERGED)
		return;
	if (fstatat(v->dirfd, rel, &st, AT_SYMLINK_NOFOLLOW) == 0)
		vfs_report_shadow(v, rel,
				  "the persist set (it lives on Drive)");
}

static void scan_dir(struct vfs *v, const char *rel, int *budget)
{
	int fd = openat(v->dirfd, at_name(rel),
			O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *d;
	struct dirent *de;

	if (fd < 0)
		return;
	d = fdopendir(fd);
	if (!d) {
		close(fd);
		return;
	}
	while ((de = readdir(d)) && (*budget)-- > 0) {
		char child[PATH_MAX];

		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (join(child, sizeof(child), rel, de->d_name) < 0)
			continue;
		switch (route_of(v, child)) {
		case R_CTL:
			vfs_report_shadow(v, child, "the control directory");
			break;
		case R_PERSIST:
			vfs_report_shadow(
				v, child,
				"the persist set (it lives on Drive)");
			break;
		case R_MERGED:
			if (de->d_type == DT_DIR)
				scan_dir(v, child, budget);
			break;
		case R_LOCAL:
			break;
		}
	}
	closedir(d);
}

void vfs_scan_shadows(struct vfs *v)
{
	int budget = VFS_SCAN_MAX;

	scan_dir(v, "", &budget);
}

/* Makes sure the local parent directory of `rel` exists before a local
 * create: a merged directory may so far exist only on Drive (created by
 * another instance), and the user sees it, so creating a local file in it
 * must work. */
static int local_parent_ready(struct vfs *v, const char *rel)
{
	char parent[PATH_MAX];
	struct stat st;
	struct cache_attr a;
	int rc;

	parent_of(rel, parent, sizeof(parent));
	if (!*parent)
		return 0;
	if (fstatat(v->dirfd, parent, &st, 0) == 0)
		return S_ISDIR(st.st_mode) ? 0 : -ENOTDIR;
	if (errno != ENOENT)
		return -errno;
	if (route_of(v, parent) != R_MERGED)
		return -ENOENT;
	rc = cache_getattr(v->cache, parent, &a);
	if (rc < 0)
		return rc;
	if (!a.is_dir)
		return -ENOTDIR;
	rc = local_parent_ready(v, parent);
	if (rc < 0)
		return rc;
	if (mkdirat(v->dirfd, parent, a.mode & 07777) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

/* Makes sure the persisted tree has the merged ancestors of `rel` before a
 * persisted create. cache_mkdir (and Drive) need the parent to exist; a
 * merged directory the user sees (e.g. a local "experiments/") may not be
 * in the cache yet. Persisted ancestors are not created: like any mkdir,
 * creating "runs/a/b" needs "runs/a" to exist (-ENOENT otherwise). */
static int cache_parents_ready(struct vfs *v, const char *rel)
{
	char parent[PATH_MAX], anc[PATH_MAX];
	const char *p;
	int rc;

	parent_of(rel, parent, sizeof(parent));
	for (p = parent; *p; p++) {
		struct cache_attr a;
		struct stat st;
		size_t n;

		/* Ancestors, shallowest first: "a", "a/b", ... */
		p = strchrnul(p, '/');
		n = p - parent;
		memcpy(anc, parent, n);
		anc[n] = '\0';
		if (route_of(v, anc) != R_MERGED)
			break;
		rc = cache_getattr(v->cache, anc, &a);
		if (rc == 0) {
			if (!a.is_dir)
				return -ENOTDIR;
		} else if (rc == -ENOENT) {
			if (fstatat(v->dirfd, anc, &st, 0) < 0)
				return -ENOENT;
			if (!S_ISDIR(st.st_mode))
				return -ENOTDIR;
			rc = cache_mkdir(v->cache, anc, st.st_mode & 07777);
			if (rc < 0 && rc != -EEXIST)
				return rc;
		} else {
			return rc;
		}
		if (!*p)
			break;
	}
	return 0;
}

/* ---- attributes ------------------------------------------------------- */

static int vfs_getattr(const char *path, struct stat *st,
		       struct fuse_file_info *fi)
{
	struct vfs *v = vfs_get();
	struct fh *fh = fh_of(fi);
	const char *rel = rel_of(path), *sub;
	struct cache_attr a;
	int rc;

	if (fh && fh->kind == FH_LOCAL)
		return fstat(fh->fd, st) < 0 ? -errno : 0;
	if (fh && fh->kind == FH_CACHE) {
		rc = cache_fgetattr(fh->ch, &a);
		if (rc == 0)
			attr_to_stat(v, &a, st);
		return rc;
	}
	if (fh && fh->rel && !path)
		rel = fh->rel;
	else if (!path)
		return -ENOENT;
	switch (route_of(v, rel)) {
	case R_CTL:
		if ((sub = ctl_local_sub(rel)))
			return fstatat(v->dirfd, at_name(sub), st,
				       AT_SYMLINK_NOFOLLOW) < 0
				       ? -errno
				       : 0;
		return ctl_getattr(v, rel, st);
	case R_LOCAL:
		return fstatat(v->dirfd, at_name(rel), st,
			       AT_SYMLINK_NOFOLLOW) < 0
			       ? -errno
			       : 0;
	case R_MERGED:
		if (fstatat(v->dirfd, at_name(rel), st, AT_SYMLINK_NOFOLLOW) ==
		    0)
			return 0;
		if (errno != ENOENT)
			return -errno;
		/* A merged directory so far only on Drive. */
		rc = cache_getattr(v->cache, rel, &a);
		if (rc < 0)
			return rc;
		if (!a.is_dir)
			return -ENOENT;
		attr_to_stat(v, &a, st);
		return 0;
	case R_PERSIST:
		rc = cache_getattr(v->cache, rel, &a);
		if (rc < 0)
			return rc;
		attr_to_stat(v, &a, st);
		check_shadow(v, rel);
		return 0;
	}
	return -EIO;
}

static int vfs_access(const char *path, int mask)
{
	struct vfs *v = vfs_get();
	const char *rel = rel_of(path);
	struct cache_attr a;
	int rc;

	switch (route_of(v, rel)) {
	case R_CTL:
		if (mask & W_OK)
			return -EACCES;
		if (ctl_local_sub(rel))
			return faccessat(v->dirfd, at_name(ctl_local_sub(rel)),
					 mask, 0) < 0
				       ? -errno
				       : 0;
		return 0;
	case R_LOCAL:
		return faccessat(v->dirfd, at_name(rel), mask, 0) < 0 ? -errno
								      : 0;
	case R_MERGED:
		if (faccessat(v->dirfd, at_name(rel), mask, 0) == 0)
			return 0;
		if (errno != ENOENT)
			return -errno;
		/* only on Drive */
		/* fallthrough */
	case R_PERSIST:
		rc = cache_getattr(v->cache, rel, &a);
		if (rc < 0)
			return rc;
		if ((mask & X_OK) && !a.is_dir && !(a.mode & 0111))
			return -EACCES;
		return 0;
	}
	return -EIO;
}

static int vfs_readlink(const char *path, char *buf, size_t size)
{
	struct vfs *v = vfs_get();
	const char *rel = rel_of(path);
	ssize_t n;

	if (ctl_local_sub(rel))
		rel = ctl_local_sub(rel);
	else if (route_of(v, rel) == R_PERSIST || route_of(v, rel) == R_CTL)
		return -EINVAL; /* nothing persisted is a symlink */
	n = readlinkat(v->dirfd, at_name(rel), buf, size - 1);
	if (n < 0)
		return -errno;
	buf[n] = '\0';
	return 0;
}

static int vfs_chmod(const char *path, mode_t mode, struct fuse_file_info *fi)
{
	struct vfs *v = vfs_get();
	struct fh *fh = fh_of(fi);
	const char *rel = rel_of(path);

	if (fh && fh->ro)
		return -EROFS;
	if (fh && fh->kind == FH_LOCAL)
		return fchmod(fh->fd, mode) < 0 ? -errno : 0;
	if (!path)
		return -ENOENT;
	switch (route_of(v, rel)) {
	case R_CTL:
		return -EACCES;
	case R_PERSIST:
		return cache_chmod(v->cache, rel, mode);
	case R_MERGED:
		if (fchmodat(v->dirfd, at_name(rel), mode, 0) == 0)
			return 0;
		if (errno != ENOENT)
			return -errno;
		return cache_chmod(v->cache, rel, mode); /* only on Drive */
	default:
		return fchmodat(v->dirfd, at_name(rel), mode, 0) < 0 ? -errno
								     : 0;
	}
}

static int vfs_chown(const char *path, uid_t uid, gid_t gid,
		     struct fuse_file_info *fi)
{
	struct vfs *v = vfs_get();
	struct fh *fh = fh_of(fi);
	const char *rel = rel_of(path);
	enum route r;

	if (fh && fh->ro)
		return -EROFS;
	if (fh && fh->kind == FH_LOCAL)
		return fchown(fh->fd, uid, gid) < 0 ? -errno : 0;
	r = path ? route_of(v, rel) : R_PERSIST;
	if (r == R_LOCAL || r == R_MERGED) {
		if (fchownat(v->dirfd, at_name(rel), uid, gid,
			     AT_SYMLINK_NOFOLLOW) == 0)
			return 0;
		if (r == R_LOCAL || errno != ENOENT)
			return -errno;
		/* a merged directory only on Drive: as persisted */
	}
	if (r == R_CTL)
		return -EACCES;
	/* Drive has one owner: the mount's. Accept no-op chowns (cp -p). */
	if ((uid == (uid_t)-1 || uid == v->uid) &&
	    (gid == (gid_t)-1 || gid == v->gid))
		return 0;
	return -EPERM;
}

static int vfs_utimens(const char *path, const struct timespec tv[2],
		       struct fuse_file_info *fi)
{
	struct vfs *v = vfs_get();
	struct fh *fh = fh_of(fi);
	const char *rel = rel_of(path);
	struct timespec t[2];
	struct cache_attr a;
	int rc;

	if (fh && fh->ro)
		return -EROFS;
	if (fh && fh->kind == FH_LOCAL)
		return futimens(fh->fd, tv) < 0 ? -errno : 0;
	if (!path)
		return -ENOENT;
	switch (route_of(v, rel)) {
	case R_CTL:
		return -EACCES;
	case R_PERSIST:
		break;
	case R_MERGED:
		if (utimensat(v->dirfd, at_name(rel), tv,
			      AT_SYMLINK_NOFOLLOW) == 0)
			return 0;
		if (errno != ENOENT)
			return -errno;
		break; /* only on Drive */
	default:
		return utimensat(v->dirfd, at_name(rel), tv,
				 AT_SYMLINK_NOFOLLOW) < 0
			       ? -errno
			       : 0;
	}
	/* cache/ stores plain times: resolve UTIME_NOW and UTIME_OMIT. */
	rc = cache_getattr(v->cache, rel, &a);
	if (rc < 0)
		return rc;
	for (int i = 0; i < 2; i++) {
		t[i] = tv ? tv[i] : (struct timespec){0, UTIME_NOW};
		if (t[i].tv_nsec == UTIME_NOW)
			clock_gettime(CLOCK_REALTIME, &t[i]);
		else if (t[i].tv_nsec == UTIME_OMIT)
			t[i] = a.mtime;
	}
	return cache_utimens(v->cache, rel, t);
}

static int vfs_truncate(const char *path, off_t size, struct fuse_file_info *fi)
{
	struct vfs *v = vfs_get();
	struct fh *fh = fh_of(fi);
	const char *rel = rel_of(path);
	int fd, rc = 0;

	if (fh && fh->ro)
		return -EROFS;
	if (fh && fh->kind == FH_LOCAL)
		return ftruncate(fh->fd, size) < 0 ? -errno : 0;
	if (fh && fh->kind == FH_CACHE)
		return cache_ftruncate(fh->ch, size);
	if (!path)
		return -ENOENT;
	switch (route_of(v, rel)) {
	case R_CTL:
		return -EACCES;
	case R_PERSIST:
		return cache_truncate(v->cache, rel, size);
	default:
		fd = openat(v->dirfd, at_name(rel),
			    O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
		if (fd < 0)
			return -errno;
		if (ftruncate(fd, size) < 0)
			rc = -errno;
		close(fd);
		return rc;
	}
}

/* ---- directories -------------------------------------------------------- */

struct name_set {
	char **names;
	int n, cap;
};

static int name_set_add(struct name_set *s, const char *name)
{
	if (s->n == s->cap) {
		int cap = s->cap ? s->cap * 2 : 16;
		char **nn = realloc(s->names, cap * sizeof(char *));

		if (!nn)
			return -ENOMEM;
		s->names = nn;
		s->cap = cap;
	}
	s->names[s->n] = strdup(name);
	if (!s->names[s->n])
		return -ENOMEM;
	s->n++;
	return 0;
}

static bool name_set_has(const struct name_set *s, const char *name)
{
	for (int i = 0; i < s->n; i++)
		if (strcmp(s->names[i], name) == 0)
			return true;
	return false;
}

static void name_set_free(struct name_set *s)
{
	for (int i = 0; i < s->n; i++)
		free(s->names[i]);
	free(s->names);
}

struct fill_ctx {
	struct vfs *v;
	const char *dir;
	void *buf;
	fuse_fill_dir_t filler;
	bool merged;	       /* filter to names that belong to Drive */
	struct name_set *seen; /* names emitted (merged only) */
};

static int fill_cached(const char *name, const struct cache_attr *a, void *ud)
{
	struct fill_ctx *fc = ud;
	struct stat st;

	if (fc->merged) {
		char child[PATH_MAX];
		enum route r;

		if (join(child, sizeof(child), fc->dir, name) < 0)
			return 0;
		/* Drive entries outside the persist set are not reachable:
		 * leave them out rather than list what getattr denies. */
		r = route_of(fc->v, child);
		if (r == R_CTL || r == R_LOCAL)
			return 0;
		if (r == R_MERGED && !a->is_dir)
			return 0;
		/* A merged directory present on both sides is listed from
		 * the local side, as getattr reports it. */
		if (r == R_MERGED &&
		    fstatat(fc->v->dirfd, child, &st, AT_SYMLINK_NOFOLLOW) == 0)
			return 0;
		if (name_set_add(fc->seen, name) < 0)
			return -ENOMEM;
	}
	attr_to_stat(fc->v, a, &st);
	if (fc->filler(fc->buf, name, &st, 0, FUSE_FILL_DIR_PLUS))
		return 1;
	return 0;
}

static int list_local(struct vfs *v, const char *rel, void *buf,
		      fuse_fill_dir_t filler, const struct name_set *skip)
{
	int fd = openat(v->dirfd, at_name(rel),
			O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	struct dirent *de;
	DIR *d;

	if (fd < 0)
		return -errno;
	d = fdopendir(fd);
	if (!d) {
		close(fd);
		return -errno;
	}
	while ((de = readdir(d))) {
		struct stat st = {0};

		if (skip) {
			char child[PATH_MAX];

			if (!strcmp(de->d_name, ".") ||
			    !strcmp(de->d_name, ".."))
				continue;
			if (join(child, sizeof(child), rel, de->d_name) < 0)
				continue;
			switch (route_of(v, child)) {
			case R_CTL:
				vfs_report_shadow(v, child,
						  "the control directory");
				continue;
			case R_PERSIST:
				vfs_report_shadow(
					v, child,
					"the persist set (it lives on Drive)");
				continue;
			default:
				break;
			}
			if (name_set_has(skip, de->d_name))
				continue;
		}
		st.st_ino = de->d_ino;
		st.st_mode = DTTOIF(de->d_type);
		if (filler(buf, de->d_name, &st, 0, 0))
			break;
	}
	closedir(d);
	return 0;
}

/* Every entry of rel, through filler (with offset 0). */
static int list_dir(struct vfs *v, const char *rel, void *buf,
		    fuse_fill_dir_t filler)
{
	struct name_set seen = {0};
	struct fill_ctx fc = {v, rel, buf, filler, false, &seen};
	int rc, lrc;

	switch (route_of(v, rel)) {
	case R_CTL:
		if (ctl_local_sub(rel))
			return list_local(v, ctl_local_sub(rel), buf, filler,
					  NULL);
		return ctl_readdir(v, rel, buf, filler);
	case R_LOCAL:
		return list_local(v, rel, buf, filler, NULL);
	case R_PERSIST:
		filler(buf, ".", NULL, 0, 0);
		filler(buf, "..", NULL, 0, 0);
		rc = cache_readdir(v->cache, rel, fill_cached, &fc);
		return rc > 0 ? 0 : rc;
	case R_MERGED:
		break;
	}

	filler(buf, ".", NULL, 0, 0);
	filler(buf, "..", NULL, 0, 0);
	/* .vectur is reachable by name but not listed (as ZFS's .zfs): find,
	 * du, grep -r and git add -A in the code directory must not walk into
	 * .vectur/local (the root again) nor read .vectur/sync (a sync). */
	if (!*rel)
		name_set_add(&seen, VFS_CTL_DIR);
	fc.merged = true;
	rc = cache_readdir(v->cache, rel, fill_cached, &fc);
	if (rc < 0 && rc != -ENOENT && rc != -ENOTDIR)
		/* Drive unreachable: the local side is still worth showing
		 * (the user's code must stay usable). */
		vfs_log(LOG_WARNING, "listing '%s' on Drive failed: %s",
			*rel ? rel : "/", strerror(-rc));
	lrc = list_local(v, rel, buf, filler, &seen);
	if (lrc < 0 && !(lrc == -ENOENT && rc >= 0))
		rc = lrc;
	else
		rc = 0;
	name_set_free(&seen);
	return rc;
}

static void dents_free(struct fh *fh)
{
	for (int i = 0; i < fh->nents; i++)
		free(fh->ents[i].name);
	free(fh->ents);
	fh->ents = NULL;
	fh->nents = fh->capents = 0;
	fh->listed = false;
}

/* The filler list_dir() is given: keeps each entry in the handle. */
static int collect(void *buf, const char *name, const struct stat *st,
		   off_t off, enum fuse_fill_dir_flags flags)
{
	struct fh *fh = buf;
	struct dent *e;

	(void)off;
	if (fh->nents == fh->capents) {
		int cap = fh->capents ? fh->capents * 2 : 64;
		struct dent *ne = realloc(fh->ents, cap * sizeof(*ne));

		if (!ne)
			return 1;
		fh->ents = ne;
		fh->capents = cap;
	}
	e = &fh->ents[fh->nents];
	memset(e, 0, sizeof(*e));
	e->name = strdup(name);
	if (!e->name)
		return 1;
	if (st) {
		e->st = *st;
		e->has_st = true;
		e->full = flags & FUSE_FILL_DIR_PLUS;
	}
	fh->nents++;
	return 0;
}

/* The listing is taken once, at offset 0 (opendir or rewinddir), and
 * handed out from the offset each call asks for: with READDIRPLUS the
 * kernel gets the attributes of persisted entries with the names, and
 * `ls -l` needs no LOOKUP per entry. */
static int vfs_readdir(const char *path, void *buf, fuse_fill_dir_t filler,
		       off_t off, struct fuse_file_info *fi,
		       enum fuse_readdir_flags flags)
{
	struct vfs *v = vfs_get();
	struct fh *fh = fh_of(fi);
	int rc;

	if (off == 0 || !fh->listed) {
		dents_free(fh);
		rc = list_dir(v, fh->rel, fh, collect);
		if (rc < 0) {
			dents_free(fh);
			return rc;
		}
		fh->listed = true;
	}
	for (off_t i = off; i < fh->nents; i++) {
		const struct dent *e = &fh->ents[i];
		enum fuse_fill_dir_flags ff = 0;

		if ((flags & FUSE_READDIR_PLUS) && e->full)
			ff = FUSE_FILL_DIR_PLUS;
		if (filler(buf, e->name, e->has_st ? &e->st : NULL, i + 1, ff))
			break;
	}
	return 0;
}

static int vfs_opendir(const char *path, struct fuse_file_info *fi)
{
	struct fh *fh = calloc(1, sizeof(*fh));

	if (!fh)
		return -ENOMEM;
	sw_init(fh);
	fh->kind = FH_DIR;
	fh->fd = -1;
	fh->rel = strdup(rel_of(path));
	if (!fh->rel) {
		free(fh);
		return -ENOMEM;
	}
	fi->fh = (uintptr_t)fh;
	return 0;
}

static int vfs_releasedir(const char *path, struct fuse_file_info *fi)
{
	struct fh *fh = fh_of(fi);

	if (fh) {
		dents_free(fh);
		free(fh->rel);
		free(fh);
	}
	return 0;
}

static int vfs_mkdir(const char *path, mode_t mode)
{
	struct vfs *v = vfs_get();
	const char *rel = rel_of(path);
	int rc;

	switch (route_of(v, rel)) {
	case R_CTL:
		return -EACCES;
	case R_PERSIST:
		rc = cache_parents_ready(v, rel);
		return rc < 0 ? rc : cache_mkdir(v->cache, rel, mode);
	default:
		/* A merged directory is made locally only; its Drive side
		 * appears when something persisted is first put in it
		 * (cache_parents_ready), so code dirs don't fill Drive with
		 * empty folders. */
		rc = local_parent_ready(v, rel);
		if (rc < 0)
			return rc;
		return mkdirat(v->dirfd, rel, mode) < 0 ? -errno : 0;
	}
}

static int vfs_rmdir(const char *path)
{
	struct vfs *v = vfs_get();
	const char *rel = rel_of(path);
	struct cache_attr a;
	int rc;

	switch (route_of(v, rel)) {
	case R_CTL:
		return -EACCES;
	case R_PERSIST:
		return cache_rmdir(v->cache, rel);
	case R_LOCAL:
		return unlinkat(v->dirfd, rel, AT_REMOVEDIR) < 0 ? -errno : 0;
	case R_MERGED:
		break;
	}
	if (!*rel)
		return -EBUSY;
	/* Both sides must be empty; the Drive side goes first because its
	 * emptiness is what the user cannot see locally. */
	rc = cache_getattr(v->cache, rel, &a);
	if (rc == 0) {
		rc = cache_rmdir(v->cache, rel);
		if (rc < 0)
			return rc;
		if (unlinkat(v->dirfd, rel, AT_REMOVEDIR) < 0 &&
		    errno != ENOENT)
			return -errno;
		return 0;
	}
	return unlinkat(v->dirfd, rel, AT_REMOVEDIR) < 0 ? -errno : 0;
}

/* ---- names ----------------------------------------------------------------
 */

static int vfs_unlink(const char *path)
{
	struct vfs *v = vfs_get();
	const char *rel = rel_of(path);

	switch (route_of(v, rel)) {
	case R_CTL:
		return -EACCES;
	case R_PERSIST:
		return cache_unlink(v->cache, rel);
	default:
		return unlinkat(v->dirfd, rel, 0) < 0 ? -errno : 0;
	}
}

static int vfs_symlink(const char *target, const char *path)
{
	struct vfs *v = vfs_get();
	const char *rel = rel_of(path);
	int rc;

	switch (route_of(v, rel)) {
	case R_CTL:
		return -EACCES;
	case R_PERSIST:
		return -EPERM; /* Drive has no symlinks */
	default:
		rc = local_parent_ready(v, rel);
		if (rc < 0)
			return rc;
		return symlinkat(target, v->dirfd, rel) < 0 ? -errno : 0;
	}
}

static int vfs_mknod(const char *path, mode_t mode, dev_t rdev)
{
	struct vfs *v = vfs_get();
	const char *rel = rel_of(path);
	int rc;

	switch (route_of(v, rel)) {
	case R_CTL:
		return -EACCES;
	case R_PERSIST:
		return -EPERM; /* no fifos, sockets or devices on Drive */
	default:
		rc = local_parent_ready(v, rel);
		if (rc < 0)
			return rc;
		return mknodat(v->dirfd, rel, mode, rdev) < 0 ? -errno : 0;
	}
}

static int vfs_link(const char *from, const char *to)
{
	struct vfs *v = vfs_get();
	const char *rf = rel_of(from), *rt = rel_of(to);
	enum route a = route_of(v, rf), b = route_of(v, rt);

	if (a == R_CTL || b == R_CTL)
		return -EACCES;
	if (a == R_PERSIST || b == R_PERSIST)
		return -EPERM; /* Drive has no hard links */
	return linkat(v->dirfd, rf, v->dirfd, rt, 0) < 0 ? -errno : 0;
}

/* ---- handles that move with a renamed file -------------------------------
 *
 * A rename across the persist boundary copies the file. Handles still
 * writing it (v->writers, by the local file's dev/ino, or dev 0 and the
 * persisted file's ino) move with it, so that later writes land in the
 * renamed file as on a local disk. A writable open is in v->opening from
 * before the open until listed; a rename sets v->moving (its source path)
 * and waits for the opens of that path under way, and later ones wait
 * until the move is over: so none is missed, and other files' opens and
 * renames do not wait for each other. Each moved handle's `sw` is held
 * exclusive from before the copy until it points at the new side, so no
 * write lands on the old side after the copy. Everything the new side
 * needs is made before the rename commits; the old side is let go after
 * it. (All under v->fh_lock, waits on v->fh_cond.) */

struct opening {
	const char *rel;
	struct opening *next;
};

static bool opening_of(struct vfs *v, const char *rel)
{
	for (struct opening *o = v->opening; o; o = o->next)
		if (strcmp(o->rel, rel) == 0)
			return true;
	return false;
}

/* The file fh is open on: dev/ino of a local file, (0, cache ino) of a
 * persisted one. */
static void fh_file_id(const struct fh *fh, dev_t *dev, uint64_t *ino)
{
	struct stat st;

	*dev = 0;
	*ino = 0;
	if (fh->kind == FH_CACHE) {
		*ino = cache_handle_ino(fh->ch);
	} else if (fstat(fh->fd, &st) == 0) {
		*dev = st.st_dev;
		*ino = st.st_ino;
	}
}

static void fh_set_id(struct vfs *v, struct fh *fh)
{
	dev_t dev;
	uint64_t ino;

	fh_file_id(fh, &dev, &ino);
	pthread_mutex_lock(&v->fh_lock);
	fh->w_dev = dev;
	fh->w_ino = ino;
	pthread_mutex_unlock(&v->fh_lock);
}

static bool fh_is_writer(const struct fh *fh)
{
	return (fh->flags & O_ACCMODE) != O_RDONLY && !fh->ro &&
	       (fh->kind == FH_LOCAL || fh->kind == FH_CACHE);
}

/* A file opened for writing joins v->writers (in v->opening since before
 * the open). */
static void fh_list_writer(struct vfs *v, struct fh *fh)
{
	dev_t dev;
	uint64_t ino;

	if (!fh_is_writer(fh))
		return;
	fh_file_id(fh, &dev, &ino);
	pthread_mutex_lock(&v->fh_lock);
	fh->w_dev = dev;
	fh->w_ino = ino;
	fh->w_prev = NULL;
	fh->w_next = v->writers;
	if (v->writers)
		v->writers->w_prev = fh;
	v->writers = fh;
	fh->listed_w = true;
	pthread_mutex_unlock(&v->fh_lock);
}

/* At the release: out of the list, once a move holding it is done. */
static void fh_unlist_writer(struct vfs *v, struct fh *fh)
{
	if (!fh->listed_w)
		return;
	pthread_mutex_lock(&v->fh_lock);
	if (fh->w_prev)
		fh->w_prev->w_next = fh->w_next;
	else
		v->writers = fh->w_next;
	if (fh->w_next)
		fh->w_next->w_prev = fh->w_prev;
	fh->listed_w = false;
	while (fh->pins > 0)
		pthread_cond_wait(&v->fh_cond, &v->fh_lock);
	pthread_mutex_unlock(&v->fh_lock);
}

/* A move of `from` begins once the opens of `from` under way are listed;
 * later ones wait for move_end (rename_lock held: one move at a time). */
static void move_begin(struct vfs *v, const char *from)
{
	pthread_mutex_lock(&v->fh_lock);
	v->moving = from;
	while (opening_of(v, from))
		pthread_cond_wait(&v->fh_cond, &v->fh_lock);
	pthread_mutex_unlock(&v->fh_lock);
}

static void move_end(struct vfs *v)
{
	pthread_mutex_lock(&v->fh_lock);
	v->moving = NULL;
	pthread_cond_broadcast(&v->fh_cond);
	pthread_mutex_unlock(&v->fh_lock);
}

/* Lets go of a handle fh_hold_writers held. */
static void fh_unpin(struct vfs *v, struct fh *fh)
{
	pthread_rwlock_unlock(&fh->sw);
	pthread_mutex_lock(&v->fh_lock);
	fh->pins--;
	pthread_cond_broadcast(&v->fh_cond);
	pthread_mutex_unlock(&v->fh_lock);
}

static void fh_unhold(struct vfs *v, struct fh **arr, int n)
{
	for (int i = 0; i < n; i++)
		fh_unpin(v, arr[i]);
	free(arr);
}

/* The handles writing file (dev, ino), each with `sw` held exclusive
 * (operations in flight finish first): *out, malloc'd, count returned
 * (< 0: -errno). A persisted file's handles that write a version since
 * replaced (or a file since unlinked) are not its writers. Release them
 * with fh_unhold. */
static int fh_hold_writers(struct vfs *v, dev_t dev, uint64_t ino,
			   struct fh ***out)
{
	struct fh *fh, **arr = NULL, **a;
	int n = 0, cap = 0, kept = 0;

	*out = NULL;
	pthread_mutex_lock(&v->fh_lock);
	for (fh = v->writers; fh; fh = fh->w_next) {
		if (fh->w_dev != dev || fh->w_ino != ino)
			continue;
		if (n == cap) {
			cap = cap ? 2 * cap : 4;
			a = realloc(arr, (size_t)cap * sizeof(*arr));
			if (!a) {
				for (int i = 0; i < n; i++)
					arr[i]->pins--;
				pthread_cond_broadcast(&v->fh_cond);
				pthread_mutex_unlock(&v->fh_lock);
				free(arr);
				return -ENOMEM;
			}
			arr = a;
		}
		fh->pins++; /* its release waits for us */
		arr[n++] = fh;
	}
	pthread_mutex_unlock(&v->fh_lock);
	for (int i = 0; i < n; i++) {
		pthread_rwlock_wrlock(&arr[i]->sw);
		if (arr[i]->kind == FH_CACHE &&
		    !cache_handle_current(arr[i]->ch))
			fh_unpin(v, arr[i]);
		else
			arr[kept++] = arr[i];
	}
	*out = arr;
	return kept;
}

static int64_t ts_ns(struct timespec t)
{
	return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

/* The note of a rename across the boundary (cache_move_note): JSON, as
 * paths may hold any byte but NUL. "import": once the content is in the
 * cache, the local file `from` is to go. "export": `tmp` is being made;
 * with `from` set, it is filled and about to be renamed to `to`, and
 * `from` is to go once it has been.
 *
 * A note may outlive its rename (a kill, or a clear that failed) while the
 * files it names change: the next mount acts only on the very files the
 * rename was moving. So it names them: `st`, the local file (dev/ino, and
 * for an import its size, mtime and ctime: a file rewritten in place keeps
 * its inode), `node`, the cache's node of an export's `from` (0: none).
 * Returns the text to free, or NULL. */
static char *move_note(const char *op, const char *from, const char *tmp,
		       const struct stat *st, const char *to, int64_t seq,
		       uint64_t node)
{
	struct json_object *o = json_object_new_object();
	char *s;

	if (!o)
		return NULL;
	json_object_object_add(o, "op", json_object_new_string(op));
	if (from)
		json_object_object_add(o, "from", json_object_new_string(from));
	if (tmp)
		json_object_object_add(o, "tmp", json_object_new_string(tmp));
	if (to) {
		json_object_object_add(o, "to", json_object_new_string(to));
		json_object_object_add(o, "seq", json_object_new_int64(seq));
	}
	if (node)
		json_object_object_add(o, "node",
				       json_object_new_int64((int64_t)node));
	if (st) {
		json_object_object_add(
			o, "dev", json_object_new_int64((int64_t)st->st_dev));
		json_object_object_add(
			o, "ino", json_object_new_int64((int64_t)st->st_ino));
		json_object_object_add(
			o, "size", json_object_new_int64((int64_t)st->st_size));
		json_object_object_add(
			o, "mtime", json_object_new_int64(ts_ns(st->st_mtim)));
		json_object_object_add(
			o, "ctime", json_object_new_int64(ts_ns(st->st_ctim)));
	}
	s = strdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
	json_object_put(o);
	return s;
}

static const char *note_str(struct json_object *o, const char *k)
{
	struct json_object *x;

	return json_object_object_get_ex(o, k, &x) ? json_object_get_string(x)
						   : NULL;
}

static int64_t note_int(struct json_object *o, const char *k)
{
	struct json_object *x;

	return json_object_object_get_ex(o, k, &x) ? json_object_get_int64(x)
						   : -1;
}

/* Whether local `path` is still the file the note names: same inode and,
 * with `unchanged`, same size, mtime and ctime (not rewritten in place). A
 * note without them names nothing. */
static bool note_names_local(struct vfs *v, struct json_object *o,
			     const char *path, bool unchanged)
{
	struct stat st;

	if (!path || fstatat(v->dirfd, path, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return false;
	if ((int64_t)st.st_dev != note_int(o, "dev") ||
	    (int64_t)st.st_ino != note_int(o, "ino"))
		return false;
	return !unchanged || ((int64_t)st.st_size == note_int(o, "size") &&
			      ts_ns(st.st_mtim) == note_int(o, "mtime") &&
			      ts_ns(st.st_ctim) == note_int(o, "ctime"));
}

/* Whether persisted `path` is still the node the note names (not a file
 * made at that path since). */
static bool note_names_node(struct vfs *v, struct json_object *o,
			    const char *path)
{
	struct cache_attr a;

	return path && cache_getattr(v->cache, path, &a) == 0 &&
	       (int64_t)a.ino == note_int(o, "node");
}

void vfs_finish_move(struct vfs *v)
{
	char note[3 * PATH_MAX];
	struct json_object *o;
	const char *op, *from, *tmp, *to;

	cache_move_pending(v->cache, note, sizeof(note));
	if (!note[0])
		return;
	o = json_tokener_parse(note);
	op = o ? note_str(o, "op") : NULL;
	from = o ? note_str(o, "from") : NULL;
	tmp = o ? note_str(o, "tmp") : NULL;
	to = o ? note_str(o, "to") : NULL;
	if (op && strcmp(op, "import") == 0 && from) {
		/* The content is in the cache if `to` has a version closed
		 * after the note (one written there still had to close: it
		 * may have, from a release racing the rename, or been
		 * dropped as never closed): then the local file goes, if it
		 * is still the one renamed, as it was. */
		if (!note_names_local(v, o, from, true))
			vfs_log(LOG_INFO,
				"rename note: local '%s' is not the file the "
				"rename cut short by a crash was moving; kept",
				from);
		else if ((!to || cache_closed_since(v->cache, to,
						    note_int(o, "seq"))) &&
			 unlinkat(v->dirfd, from, 0) == 0)
			vfs_log(LOG_INFO,
				"rename cut short by a crash: removed local "
				"'%s', now on Drive",
				from);
	} else if (op && strcmp(op, "export") == 0 && tmp) {
		/* tmp still there: the rename into place never happened,
		 * the file stays on Drive. Gone, with `to` being it and
		 * `from` the node it was made from: it did, and the Drive
		 * side goes as the rename meant. Else (the target removed
		 * since, a new file at `from`) both stay. */
		if (unlinkat(v->dirfd, tmp, 0) == 0)
			vfs_log(LOG_INFO,
				"rename cut short by a crash: removed local "
				"temp file '%s'",
				tmp);
		else if (errno != ENOENT || !from)
			;
		else if (!note_names_local(v, o, to, false) ||
			 !note_names_node(v, o, from))
			vfs_log(LOG_WARNING,
				"rename note: '%s' or '%s' is not the file the "
				"rename cut short by a crash was moving; both "
				"kept",
				to ? to : "?", from);
		else if (cache_unlink(v->cache, from) == 0)
			vfs_log(LOG_INFO,
				"rename cut short by a crash: removed '%s' "
				"from Drive, now local",
				from);
	} else {
		vfs_log(LOG_WARNING, "ignoring a bad rename note: %s", note);
	}
	json_object_put(o);
	cache_move_note(v->cache, "");
}

/* What an import's note names, for import_note. */
struct import_what {
	const char *from, *to;
	const struct stat *st;
};

/* cache_note_fn of rename_import: the note, with the close number
 * cache_import takes at its commit. */
static char *import_note(int64_t seq, void *arg)
{
	const struct import_what *w = arg;

	return move_note("import", w->from, NULL, w->st, w->to, seq, 0);
}

/* rename(local → persisted): the content becomes a new version of the
 * persisted file, then the local file goes. Handles still writing it move
 * with it (above): the version stays open until they close. */
static int rename_import(struct vfs *v, const char *from, const char *to,
			 unsigned int flags)
{
	struct cache_handle **chs = NULL;
	struct cache_attr a;
	struct stat st, now;
	struct fh **held = NULL, *fh;
	struct import_what imp;
	int fd = -1, rc, nheld = 0, *wflags = NULL;

	if (flags & RENAME_EXCHANGE)
		return -EINVAL;
	pthread_mutex_lock(&v->rename_lock);
	move_begin(v, from);
	if (fstatat(v->dirfd, from, &st, AT_SYMLINK_NOFOLLOW) < 0) {
		rc = -errno;
		goto out;
	}
	if (S_ISDIR(st.st_mode)) {
		/* mv copes with EXDEV by copying file by file, each of
		 * which lands on the right side. */
		rc = -EXDEV;
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		rc = -EPERM;
		goto out;
	}
	rc = cache_getattr(v->cache, to, &a);
	if (rc == 0 && (flags & RENAME_NOREPLACE)) {
		rc = -EEXIST;
		goto out;
	}
	if (rc == 0 && a.is_dir) {
		rc = -EISDIR;
		goto out;
	}
	if (rc < 0 && rc != -ENOENT)
		goto out;
	rc = cache_parents_ready(v, to);
	if (rc < 0)
		goto out;
	/* Writers of a file with another name (a hard link) write it there. */
	if (st.st_nlink == 1) {
		nheld = fh_hold_writers(v, st.st_dev, st.st_ino, &held);
		if (nheld < 0) {
			rc = nheld;
			nheld = 0;
			goto out;
		}
	}
	if (nheld > 0) {
		chs = calloc((size_t)nheld, sizeof(*chs));
		wflags = calloc((size_t)nheld, sizeof(*wflags));
		if (!chs || !wflags) {
			rc = -ENOMEM;
			goto out;
		}
		for (int i = 0; i < nheld; i++)
			wflags[i] = held[i]->flags & (O_ACCMODE | O_APPEND);
	}
	fd = openat(v->dirfd, from, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0) {
		rc = -errno;
		goto out;
	}
	/* Also with writers (the version stays open): a handle the app
	 * closed already may be released, and its version closed, before
	 * the local file goes below; then a crash left both names. The next
	 * mount removes the local file only once `to` has a version closed
	 * since this note (a version still open is dropped by a crash, and
	 * the content is then only in the local file, which stays). It
	 * names the file as it is now, its writers held: one changed since
	 * is not removed. */
	if (fstat(fd, &now) < 0) {
		rc = -errno;
		goto out;
	}
	imp.from = from;
	imp.to = to;
	imp.st = &now;
	rc = cache_import(v->cache, to, fd, &st, nheld, wflags, chs,
			  import_note, &imp);
	if (rc < 0)
		goto out;
	for (int i = 0; i < nheld; i++) {
		fh = held[i];
		close(fh->fd);
		fh->fd = -1;
		fh->ch = chs[i];
		fh->writable = true;
		fh->kind = FH_CACHE;
		fh_set_id(v, fh);
		/* Closed already, released soon: --sync waits for that. */
		if (fh->opener_closed && !atomic_exchange(&fh->flushed, true))
			atomic_fetch_add(&v->closing, 1);
	}
	if (unlinkat(v->dirfd, from, 0) < 0)
		vfs_log(LOG_WARNING,
			"rename: '%s' is now on Drive as '%s' but the local "
			"file could not be removed: %s",
			from, to, strerror(errno));
	cache_move_note(v->cache, "");
	rc = 0;
out:
	fh_unhold(v, held, nheld);
	free(chs);
	free(wflags);
	if (fd >= 0)
		close(fd);
	move_end(v);
	pthread_mutex_unlock(&v->rename_lock);
	return rc;
}

/* Makes a rename into local directory `dir` ("" the top) survive a power
 * loss. */
static int fsync_dir(struct vfs *v, const char *dir)
{
	int fd, rc = 0;

	fd = openat(v->dirfd, *dir ? dir : ".",
		    O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (fsync(fd) < 0)
		rc = -errno;
	close(fd);
	return rc;
}

/* rename(persisted → local): the content goes to a temp file next to the
 * target, renamed into place, then the persisted file goes. Handles still
 * writing it move with it (above), each on a descriptor of its own opened
 * on the temp file before the rename. */
static int rename_export(struct vfs *v, const char *from, const char *to,
			 unsigned int flags)
{
	char dir[PATH_MAX], tmp[PATH_MAX + 256];
	const char *base;
	struct cache_handle **olds = NULL;
	struct cache_attr a;
	struct stat st;
	struct fh **held = NULL, *fh;
	uint32_t rnd = 0;
	int fd = -1, rc, nheld = 0, *nfd = NULL;
	char *note = NULL;
	bool noted = false;

	if (flags & RENAME_EXCHANGE)
		return -EINVAL;
	pthread_mutex_lock(&v->rename_lock);
	move_begin(v, from);
	rc = cache_getattr(v->cache, from, &a);
	if (rc < 0)
		goto out;
	if (a.is_dir) {
		rc = -EXDEV;
		goto out;
	}
	if (fstatat(v->dirfd, to, &st, AT_SYMLINK_NOFOLLOW) == 0) {
		if (flags & RENAME_NOREPLACE) {
			rc = -EEXIST;
			goto out;
		}
		if (S_ISDIR(st.st_mode)) {
			rc = -EISDIR;
			goto out;
		}
	}
	rc = local_parent_ready(v, to);
	if (rc < 0)
		goto out;
	nheld = fh_hold_writers(v, 0, a.ino, &held);
	if (nheld < 0) {
		rc = nheld;
		nheld = 0;
		goto out;
	}
	nfd = malloc((size_t)(nheld ? nheld : 1) * sizeof(*nfd));
	olds = calloc((size_t)(nheld ? nheld : 1), sizeof(*olds));
	if (!nfd || !olds) {
		rc = -ENOMEM;
		goto out;
	}
	for (int i = 0; i < nheld; i++)
		nfd[i] = -1;
	parent_of(to, dir, sizeof(dir));
	base = strrchr(to, '/');
	base = base ? base + 1 : to;
	if (getrandom(&rnd, sizeof(rnd), 0) < 0)
		rnd = (uint32_t)getpid() ^ (uint32_t)time(NULL);
	if (snprintf(tmp, sizeof(tmp), "%s%s.%.200s.vectur-%08x", dir,
		     *dir ? "/" : "", base, rnd) >= (int)sizeof(tmp)) {
		rc = -ENAMETOOLONG;
		goto out;
	}
	/* Noted before it exists: a crash leaves no stray temp file. */
	note = move_note("export", NULL, tmp, NULL, NULL, 0, 0);
	rc = note ? cache_move_note(v->cache, note) : -ENOMEM;
	if (rc < 0)
		goto out;
	noted = true;
	/* 0600 until filled: the movers' descriptors are opened first. */
	fd = openat(v->dirfd, tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0) {
		rc = -errno;
		goto out;
	}
	for (int i = 0; i < nheld && rc == 0; i++) {
		nfd[i] = openat(v->dirfd, tmp,
				(held[i]->flags & (O_ACCMODE | O_APPEND)) |
					O_CLOEXEC);
		if (nfd[i] < 0)
			rc = -errno;
	}
	if (rc == 0)
		rc = cache_export(v->cache, from, fd);
	if (rc == 0) {
		struct timespec t[2] = {a.mtime, a.mtime};

		futimens(fd, t);
		if (fchmod(fd, a.mode & 07777) < 0)
			rc = -errno;
	}
	/* The local rename is the step that decides: a crash after it
	 * (tmp gone) has the next mount unlink `from`, before it (tmp
	 * there) remove tmp. A crash between it and cache_unlink left the
	 * file under both names. Its bytes are on disk before the rename
	 * (and the rename before cache_unlink, below): after a power loss
	 * the renamed file could otherwise be empty or torn while the
	 * Drive copy is gone. */
	if (rc == 0 && (fsync(fd) < 0 || fstat(fd, &st) < 0))
		rc = -errno;
	if (rc == 0) {
		free(note);
		note = move_note("export", from, tmp, &st, to, 0, a.ino);
		rc = note ? cache_move_note(v->cache, note) : -ENOMEM;
	}
	if (rc == 0 && renameat(v->dirfd, tmp, v->dirfd, to) < 0)
		rc = -errno;
	if (rc < 0) {
		/* The note first: tmp gone under a note naming `from` says
		 * the rename happened. */
		if (cache_move_note(v->cache, "") == 0)
			unlinkat(v->dirfd, tmp, 0);
		noted = false;
		goto out;
	}
	for (int i = 0; i < nheld; i++) {
		fh = held[i];
		olds[i] = fh->ch;
		fh->ch = NULL;
		fh->fd = nfd[i];
		nfd[i] = -1;
		fh->kind = FH_LOCAL;
		fh_set_id(v, fh);
	}
	rc = fsync_dir(v, dir);
	if (rc < 0)
		vfs_log(LOG_WARNING,
			"rename: cannot fsync the directory of local '%s': %s",
			to, strerror(-rc));
	rc = cache_unlink(v->cache, from);
	if (rc < 0)
		vfs_log(LOG_WARNING,
			"rename: '%s' was copied to local '%s' but could not "
			"be removed from Drive: %s",
			from, to, strerror(-rc));
	/* After the unlink: their version must not close and upload. */
	for (int i = 0; i < nheld; i++)
		cache_release(olds[i]);
out:
	if (noted)
		cache_move_note(v->cache, "");
	free(note);
	fh_unhold(v, held, nheld);
	for (int i = 0; nfd && i < nheld; i++)
		if (nfd[i] >= 0)
			close(nfd[i]);
	free(nfd);
	free(olds);
	if (fd >= 0)
		close(fd);
	move_end(v);
	pthread_mutex_unlock(&v->rename_lock);
	return rc;
}

struct visible_ctx {
	struct vfs *v;
	const char *dir;
	bool any;
};

static int any_visible(const char *name, const struct cache_attr *a, void *ud)
{
	struct visible_ctx *x = ud;
	char child[PATH_MAX];
	enum route r;

	if (join(child, sizeof(child), x->dir, name) < 0)
		return 0;
	r = route_of(x->v, child);
	if (r == R_PERSIST || (r == R_MERGED && a->is_dir)) {
		x->any = true;
		return 1;
	}
	return 0;
}

/* Whether merged directory rel has Drive entries seen through the mount:
 * 1, 0, or -errno. */
static int drive_side_visible(struct vfs *v, const char *rel)
{
	struct visible_ctx x = {v, rel, false};
	int rc = cache_readdir(v->cache, rel, any_visible, &x);

	return rc < 0 ? rc : x.any;
}

static int vfs_rename(const char *from, const char *to, unsigned int flags)
{
	struct vfs *v = vfs_get();
	const char *rf = rel_of(from), *rt = rel_of(to);
	enum route a = route_of(v, rf), b = route_of(v, rt);
	bool pa = a == R_PERSIST, pb = b == R_PERSIST;
	struct cache_attr ca;
	int rc;

	if (a == R_CTL || b == R_CTL)
		return -EACCES;
	if (pa && pb) {
		rc = cache_parents_ready(v, rt);
		return rc < 0 ? rc : cache_rename(v->cache, rf, rt, flags);
	}
	if (!pa && pb)
		return rename_import(v, rf, rt, flags);
	if (pa && !pb)
		return rename_export(v, rf, rt, flags);
	/* Local to local. A merged directory with a Drive side cannot be
	 * moved as one piece. */
	if (a == R_MERGED && cache_getattr(v->cache, rf, &ca) == 0 &&
	    ca.is_dir && *rf)
		return -EXDEV;
	/* Onto one: what its Drive side holds counts as the target's
	 * content (the local rename alone would merge the two). */
	if (b == R_MERGED && *rt && cache_getattr(v->cache, rt, &ca) == 0 &&
	    ca.is_dir) {
		struct stat st;

		/* An exchange would swap the local sides only. */
		if (flags & RENAME_EXCHANGE) {
			rc = drive_side_visible(v, rt);
			if (rc != 0)
				return rc < 0 ? rc : -EXDEV;
			goto local;
		}
		if (fstatat(v->dirfd, rf, &st, AT_SYMLINK_NOFOLLOW) < 0)
			return -errno;
		if (!S_ISDIR(st.st_mode))
			return -EISDIR;
		if (flags & RENAME_NOREPLACE)
			return -EEXIST;
		rc = drive_side_visible(v, rt);
		if (rc != 0)
			return rc < 0 ? rc : -ENOTEMPTY;
	}
local:
	rc = local_parent_ready(v, rt);
	if (rc < 0)
		return rc;
	if (flags)
		return renameat2(v->dirfd, rf, v->dirfd, rt, flags) < 0 ? -errno
									: 0;
	return renameat(v->dirfd, rf, v->dirfd, rt) < 0 ? -errno : 0;
}

/* ---- files ----------------------------------------------------------------
 */

static int fh_new(struct fuse_file_info *fi, enum fh_kind kind, int fd,
		  struct cache_handle *ch, void *ctl, const char *rel)
{
	struct fh *fh = calloc(1, sizeof(*fh));

	if (!fh)
		return -ENOMEM;
	if (rel) {
		fh->rel = strdup(rel);
		if (!fh->rel) {
			free(fh);
			return -ENOMEM;
		}
	}
	fh->kind = kind;
	fh->fd = fd;
	fh->ch = ch;
	fh->ctl = ctl;
	fh->opener = fuse_get_context()->pid;
	fh->flags = fi->flags;
	sw_init(fh);
	fi->fh = (uintptr_t)fh;
	return 0;
}

/* The process (thread group) a thread id belongs to, or 0. */
static pid_t tgid_of(pid_t tid)
{
	char path[64], line[128];
	pid_t tgid = 0;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)tid);
	f = fopen(path, "re");
	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "Tgid: %d", &tgid) == 1)
			break;
	fclose(f);
	return tgid;
}

/* Whether thread `tid` is of the process that opened the handle. When
 * that cannot be told (a thread gone), yes: as if every close counted. */
static bool of_opener(const struct fh *fh, pid_t tid)
{
	pid_t a, b;

	if (tid == fh->opener || tid <= 0 || fh->opener <= 0)
		return true;
	a = tgid_of(fh->opener);
	b = tgid_of(tid);
	return !a || !b || a == b;
}

static int open_common(const char *path, mode_t mode, struct fuse_file_info *fi,
		       bool create)
{
	struct vfs *v = vfs_get();
	const char *rel = rel_of(path);
	struct cache_handle *ch = NULL;
	void *ctl = NULL;
	int fd, rc, flags = fi->flags;

	switch (route_of(v, rel)) {
	case R_CTL:
		if (create)
			return -EACCES;
		if (ctl_local_sub(rel)) {
			if ((flags & O_ACCMODE) != O_RDONLY ||
			    (flags & O_TRUNC))
				return -EROFS;
			fd = openat(v->dirfd, at_name(ctl_local_sub(rel)),
				    O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
			if (fd < 0)
				return -errno;
			rc = fh_new(fi, FH_LOCAL, fd, NULL, NULL, NULL);
			if (rc < 0) {
				close(fd);
				return rc;
			}
			fh_of(fi)->ro = true;
			return 0;
		}
		rc = ctl_open(v, rel, fi, &ctl);
		if (rc < 0)
			return rc;
		rc = fh_new(fi, FH_CTL, -1, NULL, ctl, rel);
		if (rc < 0)
			ctl_release(v, ctl);
		return rc;
	case R_PERSIST:
		if (create) {
			rc = cache_parents_ready(v, rel);
			if (rc < 0)
				return rc;
			flags |= O_CREAT;
		}
		rc = cache_open_file(v->cache, rel, flags, mode, &ch);
		if (rc < 0)
			return rc;
		/* The handle reads one version; the kernel must not serve it
		 * another's size or pages. Dropped now, before the open
		 * returns (the queued invalidation may come later), so the
		 * first read asks for this handle's size. */
		if (cache_kernel_stale(ch))
			fuse_invalidate_path(v->fuse, path);
		fi->keep_cache = !cache_kernel_stale(ch);
		rc = fh_new(fi, FH_CACHE, -1, ch, NULL, NULL);
		if (rc < 0) {
			cache_release(ch);
			return rc;
		}
		fh_of(fi)->writable = (flags & O_ACCMODE) != O_RDONLY;
		fh_list_writer(v, fh_of(fi));
		return 0;
	default:
		if (create) {
			rc = local_parent_ready(v, rel);
			if (rc < 0)
				return rc;
			flags |= O_CREAT;
		}
		fd = openat(v->dirfd, at_name(rel),
			    (flags & ~O_NOFOLLOW) | O_CLOEXEC, mode);
		if (fd < 0)
			return -errno;
		/* The directory underneath is reached only through this
		 * mount: the kernel's pages stay true. */
		fi->keep_cache = 1;
		rc = fh_new(fi, FH_LOCAL, fd, NULL, NULL, NULL);
		if (rc < 0) {
			close(fd);
			return rc;
		}
		fh_list_writer(v, fh_of(fi));
		return 0;
	}
}

/* A writable open is listed before a rename across the boundary may look
 * for it (see "handles that move"). */
static int open_listed(const char *path, mode_t mode, struct fuse_file_info *fi,
		       bool create)
{
	struct vfs *v = vfs_get();
	bool w = (fi->flags & O_ACCMODE) != O_RDONLY;
	struct opening me = {rel_of(path), NULL}, **pp;
	int rc;

	if (!w)
		return open_common(path, mode, fi, create);
	pthread_mutex_lock(&v->fh_lock);
	/* The file is being moved: open it where it lands. */
	while (v->moving && strcmp(v->moving, me.rel) == 0)
		pthread_cond_wait(&v->fh_cond, &v->fh_lock);
	me.next = v->opening;
	v->opening = &me;
	pthread_mutex_unlock(&v->fh_lock);
	rc = open_common(path, mode, fi, create);
	pthread_mutex_lock(&v->fh_lock);
	for (pp = &v->opening; *pp != &me; pp = &(*pp)->next)
		;
	*pp = me.next;
	pthread_cond_broadcast(&v->fh_cond);
	pthread_mutex_unlock(&v->fh_lock);
	return rc;
}

static int vfs_open(const char *path, struct fuse_file_info *fi)
{
	return open_listed(path, 0, fi, false);
}

static int vfs_create(const char *path, mode_t mode, struct fuse_file_info *fi)
{
	return open_listed(path, mode, fi, true);
}

/* Files with a descriptor (the cache's content file, a local file) are
 * read by handing libfuse the descriptor: with splice the bytes go from the
 * page cache to /dev/fuse without a copy through this process, which is
 * what a cold read of a large checkpoint is limited by. The status file
 * fills a buffer. (libfuse calls read_buf instead of read when both are
 * set, so there is no read.) */
static int vfs_read_buf(const char *path, struct fuse_bufvec **bufp,
			size_t size, off_t off, struct fuse_file_info *fi)
{
	struct fh *fh = fh_of(fi);
	struct fuse_bufvec *bv;
	ssize_t n;
	int fd = -1, rc;
	bool copy = false;
	char *mem;

	switch (fh->kind) {
	case FH_LOCAL:
		fd = fh->fd;
		break;
	case FH_CACHE:
		rc = cache_read_fd(fh->ch, size, off, &fd);
		if (rc < 0)
			return rc;
		copy = rc > 0; /* moved to this mount's rewrite */
		break;
	case FH_CTL:
		break;
	case FH_DIR:
		return -EISDIR;
	default:
		return -EIO;
	}
	bv = malloc(sizeof(*bv));
	if (!bv)
		return -ENOMEM;
	*bv = FUSE_BUFVEC_INIT(size);
	if (fd >= 0 && !fh->listed_w && !copy) {
		bv->buf[0].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK;
		bv->buf[0].fd = fd;
		bv->buf[0].pos = off;
		*bufp = bv;
		return 0;
	}
	/* Into memory: the status file, or a writer's descriptor, which a
	 * rename moving it may let go once this returns (libfuse would read
	 * it later), or a reader a rewrite here moved (the same). */
	mem = malloc(size ? size : 1);
	if (!mem)
		rc = -ENOMEM;
	else if (copy)
		rc = (int)cache_read(fh->ch, mem, size, off);
	else if (fd >= 0)
		rc = (n = pread(fd, mem, size, off)) < 0 ? -errno : (int)n;
	else
		rc = ctl_read(vfs_get(), fh->ctl, mem, size, off);
	if (rc < 0) {
		free(mem);
		free(bv);
		return rc;
	}
	bv->buf[0].mem = mem;
	bv->buf[0].size = (size_t)rc;
	*bufp = bv;
	return 0;
}

static int vfs_write(const char *path, const char *buf, size_t size, off_t off,
		     struct fuse_file_info *fi)
{
	struct fh *fh = fh_of(fi);
	ssize_t n;

	switch (fh->kind) {
	case FH_LOCAL:
		n = pwrite(fh->fd, buf, size, off);
		return n < 0 ? -errno : (int)n;
	case FH_CACHE:
		return (int)cache_write(fh->ch, buf, size, off);
	case FH_CTL:
	case FH_DIR:
		return -EBADF;
	}
	return -EIO;
}

static int vfs_flush(const char *path, struct fuse_file_info *fi)
{
	struct fh *fh = fh_of(fi);
	int fd;

	switch (fh->kind) {
	case FH_LOCAL:
		if (fh->listed_w && of_opener(fh, fuse_get_context()->pid))
			fh->opener_closed = true;
		/* close(2) of a dup drops POSIX locks held through this
		 * file, as a close of the application's fd would. */
		fd = dup(fh->fd);
		if (fd < 0)
			return -errno;
		return close(fd) < 0 ? -errno : 0;
	case FH_CACHE:
		/* FUSE flushes at every close(2) of the file, a copy that a
		 * forked child inherited too (a DataLoader worker exiting while
		 * a checkpoint is being written): only a close by the process
		 * that opened it ends the version there; else the release, when
		 * the last copy goes, does. */
		if (fh->writable && !of_opener(fh, fuse_get_context()->pid))
			return 0;
		/* Two close(2)s of dup'd fds may race: count it once. */
		if (fh->writable && !atomic_exchange(&fh->flushed, true))
			atomic_fetch_add(&vfs_get()->closing, 1);
		return cache_flush(fh->ch);
	case FH_CTL:
	case FH_DIR:
		return 0;
	}
	return 0;
}

static int vfs_release(const char *path, struct fuse_file_info *fi)
{
	struct vfs *v = vfs_get();
	struct fh *fh = fh_of(fi);
	int rc = 0;

	fh_unlist_writer(v, fh);
	switch (fh->kind) {
	case FH_LOCAL:
		close(fh->fd);
		break;
	case FH_CACHE:
		rc = cache_release(fh->ch);
		break;
	case FH_CTL:
		ctl_release(v, fh->ctl);
		break;
	case FH_DIR:
		break;
	}
	/* Flushed as persisted, maybe moved to a local file since. */
	if (atomic_load(&fh->flushed))
		atomic_fetch_sub(&v->closing, 1);
	if (rc < 0)
		vfs_log(LOG_ERR, "closing a persisted file failed: %s",
			strerror(-rc));
	pthread_rwlock_destroy(&fh->sw);
	free(fh->rel);
	free(fh);
	return rc;
}

static int vfs_fsync(const char *path, int datasync, struct fuse_file_info *fi)
{
	struct fh *fh = fh_of(fi);
	int rc;

	switch (fh->kind) {
	case FH_LOCAL:
		rc = datasync ? fdatasync(fh->fd) : fsync(fh->fd);
		return rc < 0 ? -errno : 0;
	case FH_CACHE:
		return cache_fsync(fh->ch);
	case FH_CTL:
	case FH_DIR:
		return 0;
	}
	return 0;
}

static int vfs_fallocate(const char *path, int mode, off_t off, off_t len,
			 struct fuse_file_info *fi)
{
	struct fh *fh = fh_of(fi);

	if (fh->kind != FH_LOCAL)
		return -EOPNOTSUPP;
	return fallocate(fh->fd, mode, off, len) < 0 ? -errno : 0;
}

static int vfs_statfs(const char *path, struct statvfs *st)
{
	struct vfs *v = vfs_get();

	/* Where persisted data lands before Drive: the cache dir's disk. */
	return statvfs(v->cache_dir, st) < 0 ? -errno : 0;
}

/* ---- extended attributes: none ----------------------------------------
 *
 * No xattr operation is implemented, on any path. The kernel asks
 * getxattr("security.capability") before every write(2) to a FUSE file
 * (to drop file capabilities) unless the filesystem answered ENOSYS once;
 * that doubled the round trips of every write. With no handlers libfuse
 * answers ENOSYS, the kernel stops asking, and xattr calls through the
 * mount fail with EOPNOTSUPP (Drive has nothing to map them to anyway).
 */

/* ---- lifecycle ---------------------------------------------------------- */

static void *vfs_init(struct fuse_conn_info *conn, struct fuse_config *cfg)
{
	vfs_kernel_settings(conn, cfg);
	return vfs_get();
}

static void vfs_destroy(void *private_data)
{
	struct vfs *v = private_data;

	/* The mount is gone: drain the upload queue (bounded), then stop. A
	 * `--sync` whose reader went away may still be inside cache_sync():
	 * it finishes as the queue drains; if it does not, the cache is left
	 * open (its queue is durable: the next mount resumes it) rather than
	 * freed under that thread. */
	if (!v->cache)
		return;
	if (!ctl_syncs_wait(v, (int)(v->o->drain_timeout + 0.5))) {
		vfs_log(LOG_WARNING, "a sync is still running; leaving the "
				     "queue for the next mount");
		v->cache_abandoned = true;
		return;
	}
	cache_close(v->cache, (int)(v->o->drain_timeout + 0.5));
	v->cache = NULL;
}

/* Operations on an open handle run with its `sw` held shared, so that a
 * rename moving it across the persist boundary (struct fh) waits for them
 * and they see one kind of handle throughout. */
#define FH_SHARED(fi, call)                                                    \
	({                                                                     \
		struct fh *fh_ = fh_of(fi);                                    \
		int rc_;                                                       \
		if (fh_)                                                       \
			pthread_rwlock_rdlock(&fh_->sw);                       \
		rc_ = (call);                                                  \
		if (fh_)                                                       \
			pthread_rwlock_unlock(&fh_->sw);                       \
		rc_;                                                           \
	})

static int sh_getattr(const char *p, struct stat *st, struct fuse_file_info *fi)
{
	return FH_SHARED(fi, vfs_getattr(p, st, fi));
}

static int sh_chmod(const char *p, mode_t mode, struct fuse_file_info *fi)
{
	return FH_SHARED(fi, vfs_chmod(p, mode, fi));
}

static int sh_chown(const char *p, uid_t u, gid_t g, struct fuse_file_info *fi)
{
	return FH_SHARED(fi, vfs_chown(p, u, g, fi));
}

static int sh_truncate(const char *p, off_t size, struct fuse_file_info *fi)
{
	return FH_SHARED(fi, vfs_truncate(p, size, fi));
}

static int sh_read_buf(const char *p, struct fuse_bufvec **bufp, size_t size,
		       off_t off, struct fuse_file_info *fi)
{
	return FH_SHARED(fi, vfs_read_buf(p, bufp, size, off, fi));
}

static int sh_write(const char *p, const char *buf, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	return FH_SHARED(fi, vfs_write(p, buf, size, off, fi));
}

static int sh_flush(const char *p, struct fuse_file_info *fi)
{
	return FH_SHARED(fi, vfs_flush(p, fi));
}

static int sh_fsync(const char *p, int datasync, struct fuse_file_info *fi)
{
	return FH_SHARED(fi, vfs_fsync(p, datasync, fi));
}

static int sh_utimens(const char *p, const struct timespec tv[2],
		      struct fuse_file_info *fi)
{
	return FH_SHARED(fi, vfs_utimens(p, tv, fi));
}

static int sh_fallocate(const char *p, int mode, off_t off, off_t len,
			struct fuse_file_info *fi)
{
	return FH_SHARED(fi, vfs_fallocate(p, mode, off, len, fi));
}

const struct fuse_operations vfs_ops = {
	.getattr = sh_getattr,
	.readlink = vfs_readlink,
	.mknod = vfs_mknod,
	.mkdir = vfs_mkdir,
	.unlink = vfs_unlink,
	.rmdir = vfs_rmdir,
	.symlink = vfs_symlink,
	.rename = vfs_rename,
	.link = vfs_link,
	.chmod = sh_chmod,
	.chown = sh_chown,
	.truncate = sh_truncate,
	.open = vfs_open,
	.read_buf = sh_read_buf,
	.write = sh_write,
	.statfs = vfs_statfs,
	.flush = sh_flush,
	.release = vfs_release,
	.fsync = sh_fsync,
	.opendir = vfs_opendir,
	.readdir = vfs_readdir,
	.releasedir = vfs_releasedir,
	.init = vfs_init,
	.destroy = vfs_destroy,
	.access = vfs_access,
	.create = vfs_create,
	.utimens = sh_utimens,
	.fallocate = sh_fallocate,
};
