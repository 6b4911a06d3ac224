/* ctl.c — the virtual, read-only `.vectur/` directory at the mount root,
 * and the client side of `vectur-mount --sync`. Never persisted, never
 * passed to the local directory.
 *
 *   .vectur/status  JSON: cache_status_json() plus a "mount" object
 *                   (remote, mount id, pid, version, persist set, shadowed
 *                   local paths). Generated at open, so one open reads one
 *                   consistent document.
 *   .vectur/sync    Opening it starts cache_sync(); reading it blocks and
 *                   returns text lines as they happen:
 *                       vectur-sync 1
 *                       progress FILES_LEFT BYTES_LEFT     (about 2/s)
 *                       ok                                 (last line)
 *                   or  error ERRNO MESSAGE                (last line)
 *                   then EOF. Everything closed before the open is
 *                   covered. `cat .vectur/sync` is a usable sync too.
 *   .vectur/local/  the directory under the mount point, read-only (served
 *                   by ops.c): local files hidden by persisted ones can be
 *                   read (and copied onto Drive) without unmounting.
 *
 * Both are served with direct_io: their size is unknown (reported as 0)
 * and reads must reach us, not the page cache. */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#include "vfs.h"

#define CTL_INO_DIR    VFS_CTL_INO
#define CTL_INO_STATUS (CTL_INO_DIR + 1)
#define CTL_INO_SYNC   (CTL_INO_DIR + 2)

enum ctl_kind { CTL_STATUS, CTL_SYNC };

/* One open of .vectur/sync. Shared by the FUSE handle and the thread
 * running cache_sync(); freed by whichever lets go last (refs). */
struct sync_session {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	char *text;
	size_t len, cap;
	bool done;
	int refs;
	struct vfs *v;
	char told[640];	 /* the Drive trouble last said ("" none) */
	int64_t told_ms; /* when (drive_mono_ms) */
};

struct ctl_handle {
	enum ctl_kind kind;
	char *text; /* CTL_STATUS */
	size_t len;
	struct sync_session *sync;
};

bool ctl_is_ctl_path(const char *rel)
{
	size_t n = strlen(VFS_CTL_DIR);

	return strncmp(rel, VFS_CTL_DIR, n) == 0 &&
	       (rel[n] == '\0' || rel[n] == '/');
}

static int ctl_kind_of(const char *rel, enum ctl_kind *kind)
{
	if (strcmp(rel, VFS_CTL_DIR "/status") == 0)
		*kind = CTL_STATUS;
	else if (strcmp(rel, VFS_CTL_DIR "/sync") == 0)
		*kind = CTL_SYNC;
	else
		return -ENOENT;
	return 0;
}

int ctl_getattr(struct vfs *v, const char *rel, struct stat *st)
{
	enum ctl_kind kind;

	memset(st, 0, sizeof(*st));
	st->st_uid = v->uid;
	st->st_gid = v->gid;
	st->st_mtime = st->st_ctime = st->st_atime = v->started;
	if (strcmp(rel, VFS_CTL_DIR) == 0) {
		st->st_ino = CTL_INO_DIR;
		st->st_mode = S_IFDIR | 0555;
		st->st_nlink = 2;
		return 0;
	}
	if (ctl_kind_of(rel, &kind) < 0)
		return -ENOENT;
	st->st_ino = kind == CTL_STATUS ? CTL_INO_STATUS : CTL_INO_SYNC;
	st->st_mode = S_IFREG | 0444;
	st->st_nlink = 1;
	st->st_mtime = time(NULL);
	return 0;
}

int ctl_readdir(struct vfs *v, const char *rel, void *buf,
		fuse_fill_dir_t filler)
{
	struct stat st;

	if (strcmp(rel, VFS_CTL_DIR) != 0)
		return -ENOTDIR;
	filler(buf, ".", NULL, 0, 0);
	filler(buf, "..", NULL, 0, 0);
	ctl_getattr(v, VFS_CTL_DIR "/status", &st);
	filler(buf, "status", &st, 0, 0);
	ctl_getattr(v, VFS_CTL_DIR "/sync", &st);
	filler(buf, "sync", &st, 0, 0);
	if (fstat(v->dirfd, &st) == 0)
		filler(buf, "local", &st, 0, 0);
	return 0;
}

/* ---- status ---------------------------------------------------------- */

static char *status_text(struct vfs *v)
{
	struct json_object *root = NULL, *m, *arr;
	char *cache_json = v->cache ? cache_status_json(v->cache) : NULL;
	char *out = NULL;
	const char *s;

	if (cache_json)
		root = json_tokener_parse(cache_json);
	if (!root || !json_object_is_type(root, json_type_object)) {
		if (root)
			json_object_put(root);
		root = json_object_new_object();
		if (cache_json)
			json_object_object_add(
				root, "cache_raw",
				json_object_new_string(cache_json));
	}
	free(cache_json);

	m = json_object_new_object();
	json_object_object_add(m, "remote", json_object_new_string(v->remote));
	json_object_object_add(m, "path", json_object_new_string(v->rpath));
	json_object_object_add(m, "mountpoint",
			       json_object_new_string(v->mountpoint));
	json_object_object_add(m, "cache_dir",
			       json_object_new_string(v->cache_dir));
	json_object_object_add(m, "mount_id",
			       json_object_new_string(v->mount_id));
	json_object_object_add(m, "pid", json_object_new_int(getpid()));
	json_object_object_add(m, "version",
			       json_object_new_string(VECTUR_VERSION));
	json_object_object_add(m, "started", json_object_new_int64(v->started));
	json_object_object_add(m, "persist_source",
			       json_object_new_string(v->persist_source));
	arr = json_object_new_array();
	for (int i = 0; i < persist_count(v->ps); i++)
		json_object_array_add(
			arr, json_object_new_string(persist_pattern(v->ps, i)));
	json_object_object_add(m, "persist", arr);
	arr = json_object_new_array();
	pthread_mutex_lock(&v->shadow_lock);
	for (int i = 0; i < v->nshadowed; i++)
		json_object_array_add(arr,
				      json_object_new_string(v->shadowed[i]));
	pthread_mutex_unlock(&v->shadow_lock);
	json_object_object_add(m, "shadowed", arr);
	json_object_object_add(root, "mount", m);

	s = json_object_to_json_string_ext(
		root, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE);
	if (s && asprintf(&out, "%s\n", s) < 0)
		out = NULL;
	json_object_put(root);
	return out;
}

/* ---- sync ------------------------------------------------------------ */

static void session_append(struct sync_session *s, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void session_append(struct sync_session *s, const char *fmt, ...)
{
	char line[640];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n >= sizeof(line))
		n = sizeof(line) - 1;
	pthread_mutex_lock(&s->lock);
	if (s->len + n + 1 > s->cap) {
		size_t cap = (s->cap ? s->cap * 2 : 1024) + n;
		char *t = realloc(s->text, cap);

		if (!t) {
			pthread_mutex_unlock(&s->lock);
			return;
		}
		s->text = t;
		s->cap = cap;
	}
	memcpy(s->text + s->len, line, n);
	s->len += n;
	pthread_cond_broadcast(&s->cond);
	pthread_mutex_unlock(&s->lock);
}

static void session_put(struct sync_session *s)
{
	bool last;

	pthread_mutex_lock(&s->lock);
	last = --s->refs == 0;
	pthread_mutex_unlock(&s->lock);
	if (!last)
		return;
	pthread_mutex_destroy(&s->lock);
	pthread_cond_destroy(&s->cond);
	free(s->text);
	free(s);
}

static void sync_progress(int64_t files_left, int64_t bytes_left, void *ud)
{
	struct sync_session *s = ud;
	char why[640];
	int64_t ms, now = drive_mono_ms();

	session_append(s, "progress %lld %lld\n", (long long)files_left,
		       (long long)bytes_left);
	/* Drive unreachable or throttled: say so when it starts, changes,
	 * and every 30 s, so that a sync that cannot end is not silent. */
	if (!s->v->cache ||
	    !cache_drive_trouble(s->v->cache, why, sizeof(why), &ms)) {
		s->told[0] = '\0';
		return;
	}
	for (char *p = why; *p; p++)
		if (*p == '\n')
			*p = ' ';
	if (strcmp(why, s->told) == 0 && now - s->told_ms < 30000)
		return;
	snprintf(s->told, sizeof(s->told), "%s", why);
	s->told_ms = now;
	session_append(s, "waiting %lld %s\n", (long long)(ms / 1000), why);
}

static void *sync_thread(void *arg)
{
	struct sync_session *s = arg;
	struct vfs *v = s->v;
	int rc;

	/* A close(2) just before the sync sends its RELEASE asynchronously:
	 * wait (bounded: a dup'd fd may keep a flushed file open) until the
	 * flushed handles are released, so those versions are counted. */
	for (int i = 0; i < 400 && atomic_load(&v->closing) > 0; i++) {
		struct timespec ts = {0, 5 * 1000 * 1000};

		nanosleep(&ts, NULL);
	}
	rc = v->cache ? cache_sync(v->cache, sync_progress, s) : -ENOTCONN;
	if (rc < 0) {
		char why[512] = "";

		if (v->cache)
			cache_last_error(v->cache, why, sizeof(why));
		/* One line: the reader splits on newlines. */
		for (char *p = why; *p; p++)
			if (*p == '\n')
				*p = ' ';
		session_append(s, "error %d %s%s%s%s\n", -rc, strerror(-rc),
			       why[0] ? " (last error: " : "", why,
			       why[0] ? ")" : "");
	} else
		session_append(s, "ok\n");
	pthread_mutex_lock(&s->lock);
	s->done = true;
	pthread_cond_broadcast(&s->cond);
	pthread_mutex_unlock(&s->lock);
	session_put(s);
	pthread_mutex_lock(&v->sync_lock);
	v->syncs_active--;
	pthread_cond_broadcast(&v->sync_cond);
	pthread_mutex_unlock(&v->sync_lock);
	return NULL;
}

bool ctl_syncs_wait(struct vfs *v, int timeout_s)
{
	struct timespec until;
	bool idle;

	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += timeout_s;
	pthread_mutex_lock(&v->sync_lock);
	while (v->syncs_active > 0 &&
	       pthread_cond_timedwait(&v->sync_cond, &v->sync_lock, &until) !=
		       ETIMEDOUT)
		;
	idle = v->syncs_active == 0;
	pthread_mutex_unlock(&v->sync_lock);
	return idle;
}

static int sync_start(struct vfs *v, struct sync_session **out)
{
	struct sync_session *s = calloc(1, sizeof(*s));
	pthread_attr_t attr;
	pthread_t t;
	int rc;

	if (!s)
		return -ENOMEM;
	pthread_mutex_init(&s->lock, NULL);
	pthread_cond_init(&s->cond, NULL);
	s->refs = 2; /* the handle and the thread */
	s->v = v;
	session_append(s, "vectur-sync 1\n");
	pthread_mutex_lock(&v->sync_lock);
	v->syncs_active++;
	pthread_mutex_unlock(&v->sync_lock);
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	rc = pthread_create(&t, &attr, sync_thread, s);
	pthread_attr_destroy(&attr);
	if (rc) {
		pthread_mutex_lock(&v->sync_lock);
		v->syncs_active--;
		pthread_mutex_unlock(&v->sync_lock);
		s->refs = 1;
		session_put(s);
		return -rc;
	}
	*out = s;
	return 0;
}

static int sync_read(struct sync_session *s, char *buf, size_t size, off_t off)
{
	size_t n;

	pthread_mutex_lock(&s->lock);
	while ((size_t)off >= s->len && !s->done)
		pthread_cond_wait(&s->cond, &s->lock);
	n = (size_t)off < s->len ? s->len - off : 0;
	if (n > size)
		n = size;
	memcpy(buf, s->text + off, n);
	pthread_mutex_unlock(&s->lock);
	return (int)n;
}

/* ---- handles ----------------------------------------------------------- */

int ctl_open(struct vfs *v, const char *rel, struct fuse_file_info *fi,
	     void **handle)
{
	struct ctl_handle *h;
	enum ctl_kind kind;
	int rc;

	if (strcmp(rel, VFS_CTL_DIR) == 0)
		return -EISDIR;
	if (ctl_kind_of(rel, &kind) < 0)
		return -ENOENT;
	if ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC))
		return -EACCES;
	h = calloc(1, sizeof(*h));
	if (!h)
		return -ENOMEM;
	h->kind = kind;
	if (kind == CTL_STATUS) {
		h->text = status_text(v);
		if (!h->text) {
			free(h);
			return -ENOMEM;
		}
		h->len = strlen(h->text);
	} else {
		rc = sync_start(v, &h->sync);
		if (rc < 0) {
			free(h);
			return rc;
		}
	}
	fi->direct_io = 1;
	fi->nonseekable = kind == CTL_SYNC;
	*handle = h;
	return 0;
}

int ctl_read(struct vfs *v, void *handle, char *buf, size_t size, off_t off)
{
	struct ctl_handle *h = handle;
	size_t n;

	if (h->kind == CTL_SYNC)
		return sync_read(h->sync, buf, size, off);
	if ((size_t)off >= h->len)
		return 0;
	n = h->len - off;
	if (n > size)
		n = size;
	memcpy(buf, h->text + off, n);
	return (int)n;
}

void ctl_release(struct vfs *v, void *handle)
{
	struct ctl_handle *h = handle;

	if (!h)
		return;
	if (h->sync)
		session_put(h->sync);
	free(h->text);
	free(h);
}

/* ---- vectur-mount --sync (client) ---------------------------------------- */

static void human(char *buf, size_t len, double b)
{
	const char *u[] = {"B", "KiB", "MiB", "GiB", "TiB"};
	int i = 0;

	while (b >= 1024 && i < 4) {
		b /= 1024;
		i++;
	}
	snprintf(buf, len, i ? "%.1f %s" : "%.0f %s", b, u[i]);
}

static void draw_bar(long long files, long long bytes, long long max_bytes,
		     long long max_files)
{
	char left[32];
	double frac;
	int width = 30, fill;

	if (max_bytes > 0)
		frac = 1.0 - (double)bytes / max_bytes;
	else if (max_files > 0)
		frac = 1.0 - (double)files / max_files;
	else
		frac = 1.0;
	fill = (int)lround(frac * width);
	human(left, sizeof(left), bytes);
	fprintf(stderr, "\r[");
	for (int i = 0; i < width; i++)
		fputc(i < fill ? '#' : ' ', stderr);
	fprintf(stderr, "] %3d%%  %lld file%s, %s to go   ",
		(int)lround(frac * 100), files, files == 1 ? "" : "s", left);
	fflush(stderr);
}

int ctl_sync_client(const char *mountpoint)
{
	char path[PATH_MAX], buf[4096], line[1024];
	size_t llen = 0;
	long long max_bytes = 0, max_files = 0, last_files = 0, last_bytes = 0;
	long long secs;
	bool tty = isatty(2), drew = false, seen_header = false;
	int fd, rc = 1;
	ssize_t n;

	snprintf(path, sizeof(path), "%s/" VFS_CTL_DIR "/sync", mountpoint);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		fprintf(stderr,
			"vectur-mount: cannot open %s: %s (is %s a vectur "
			"mount?)\n",
			path, strerror(errno), mountpoint);
		return 2;
	}
	while ((n = read(fd, buf, sizeof(buf))) > 0) {
		for (ssize_t i = 0; i < n; i++) {
			long long files, bytes;

			if (buf[i] != '\n') {
				if (llen < sizeof(line) - 1)
					line[llen++] = buf[i];
				continue;
			}
			line[llen] = '\0';
			llen = 0;
			if (strncmp(line, "vectur-sync ", 12) == 0) {
				seen_header = true;
			} else if (sscanf(line, "progress %lld %lld", &files,
					  &bytes) == 2) {
				last_files = files;
				last_bytes = bytes;
				if (bytes > max_bytes)
					max_bytes = bytes;
				if (files > max_files)
					max_files = files;
				if (tty) {
					draw_bar(files, bytes, max_bytes,
						 max_files);
					drew = true;
				} else {
					fprintf(stderr,
						"sync: %lld file%s, %lld bytes "
						"to go\n",
						files, files == 1 ? "" : "s",
						bytes);
				}
			} else if (sscanf(line, "waiting %lld", &secs) == 1) {
				const char *why = strchr(line + 8, ' ');

				if (drew)
					fputc('\n', stderr);
				fprintf(stderr,
					"sync: waiting for Drive, failing for "
					"%lld s: %s\n",
					secs, why ? why + 1 : "?");
				if (drew)
					draw_bar(last_files, last_bytes,
						 max_bytes, max_files);
			} else if (strcmp(line, "ok") == 0) {
				if (drew) {
					draw_bar(0, 0, max_bytes, max_files);
					fputc('\n', stderr);
				}
				fprintf(stderr,
					"sync: everything is on Drive\n");
				rc = 0;
			} else if (strncmp(line, "error ", 6) == 0) {
				const char *msg = strchr(line + 6, ' ');

				if (drew)
					fputc('\n', stderr);
				fprintf(stderr,
					"vectur-mount: sync failed: %s\n",
					msg ? msg + 1 : line + 6);
				rc = 1;
			}
		}
	}
	if (n < 0) {
		fprintf(stderr, "vectur-mount: reading %s: %s\n", path,
			strerror(errno));
		rc = 1;
	} else if (!seen_header) {
		fprintf(stderr, "vectur-mount: %s is not a vectur sync file\n",
			path);
		rc = 2;
	}
	close(fd);
	return rc;
}
