/* test_cache.c — the local half of cache/, offline (no Drive client):
 * version rules, crash recovery, tree semantics, the single-mount lock,
 * eviction. The Drive half is tests/unit/test_cache_drive.c. */
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <fcntl.h>
#include <inttypes.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <sqlite3.h>

#include "cache.h"
#include "cache_int.h"
#include "t.h"

static char tmpl[64];

static const char *new_dir(void)
{
	snprintf(tmpl, sizeof(tmpl), "/tmp/vectur-cache-XXXXXX");
	if (!mkdtemp(tmpl))
		abort();
	return tmpl;
}

static void rm_rf(const char *dir)
{
	char cmd[256];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "rm -rf %s failed\n", dir);
}

static struct cache *open_cache(const char *dir, int64_t max_size)
{
	struct cache_opts o = {0};
	struct cache *c = NULL;
	char err[256];
	int rc;

	o.dir = dir;
	o.max_size = max_size;
	o.write_back_ms = 0;
	o.transfers = 2;
	rc = cache_open(&c, &o, NULL, "root", err, sizeof(err));
	if (rc < 0)
		fprintf(stderr, "cache_open: %d %s\n", rc, err);
	return c;
}

static int put(struct cache *c, const char *path, const char *data, int flags)
{
	struct cache_handle *h;
	int rc;

	rc = cache_open_file(c, path, O_WRONLY | O_CREAT | flags, 0644, &h);
	if (rc < 0)
		return rc;
	rc = (int)cache_write(h, data, strlen(data), 0);
	cache_release(h);
	return rc < 0 ? rc : 0;
}

/* Reads the whole file into a static buffer. */
static const char *get(struct cache *c, const char *path)
{
	static char buf[4096];
	struct cache_handle *h;
	ssize_t n;

	if (cache_open_file(c, path, O_RDONLY, 0, &h) < 0)
		return NULL;
	n = cache_read(h, buf, sizeof(buf) - 1, 0);
	cache_release(h);
	if (n < 0)
		return NULL;
	buf[n] = 0;
	return buf;
}

static int count_state(struct cache *c, const char *path, int state)
{
	struct cnode *n;
	struct cver *v;
	int k = 0;

	pthread_mutex_lock(&c->lock);
	if (node_lookup(c, path, &n) == 0)
		for (v = n->vers; v; v = v->nnext)
			k += v->state == state;
	pthread_mutex_unlock(&c->lock);
	return k;
}

static void test_write_close_read_back(void)
{
	const char *dir = new_dir();
	struct cache *c = open_cache(dir, 0);
	struct cache_attr a;

	CHECK(c != NULL);
	CHECK_INT(cache_mkdir(c, "runs", 0755), 0);
	CHECK_INT(put(c, "runs/a.txt", "hello", 0), 0);
	CHECK_STR(get(c, "runs/a.txt"), "hello");
	CHECK_INT(cache_getattr(c, "runs/a.txt", &a), 0);
	CHECK_INT(a.size, 5);
	CHECK(a.dirty);
	CHECK(!a.is_dir);
	CHECK_INT(count_state(c, "runs/a.txt", CV_CLOSED), 1);
	CHECK_INT(cache_getattr(c, "runs/nope", &a), -ENOENT);
	CHECK_INT(cache_getattr(c, "runs/a.txt/x", &a), -ENOTDIR);
	cache_close(c, 0);
	rm_rf(dir);
}

static void test_otrunc_writes_a_new_version(void)
{
	const char *dir = new_dir();
	struct cache *c = open_cache(dir, 0);
	struct cache_handle *h;
	struct cver *old;
	char path[4096], buf[16] = {0};
	int fd;

	CHECK_INT(put(c, "f", "first", 0), 0);
	pthread_mutex_lock(&c->lock);
	old = node_child(c, c->root, "f")->cur;
	store_data_path(c, old->vid, path, sizeof(path));
	pthread_mutex_unlock(&c->lock);
	CHECK_INT(cache_open_file(c, "f", O_WRONLY | O_TRUNC, 0, &h), 0);
	CHECK(h->v != old);
	CHECK_INT(h->v->size, 0);
	CHECK_INT(cache_write(h, "second!", 7, 0), 7);
	/* The closed version on disk is untouched while the new one is open. */
	fd = open(path, O_RDONLY);
	CHECK(fd >= 0);
	CHECK_INT(pread(fd, buf, sizeof(buf) - 1, 0), 5);
	CHECK_STR(buf, "first");
	close(fd);
	cache_release(h);
	CHECK_STR(get(c, "f"), "second!");
	/* The newer close superseded the older one before any upload. */
	CHECK_INT(count_state(c, "f", CV_CLOSED), 1);
	CHECK(access(path, F_OK) < 0);
	cache_close(c, 0);
	rm_rf(dir);
}

static void test_writers_share_an_open_version(void)
{
	const char *dir = new_dir();
	struct cache *c = open_cache(dir, 0);
	struct cache_handle *h1, *h2, *r;
	char buf[16] = {0};

	CHECK_INT(cache_open_file(c, "s", O_RDWR | O_CREAT, 0644, &h1), 0);
	CHECK_INT(cache_open_file(c, "s", O_RDWR, 0, &h2), 0);
	CHECK(h1->v == h2->v);
	CHECK_INT(cache_write(h1, "aaaa", 4, 0), 4);
	CHECK_INT(cache_write(h2, "bb", 2, 4), 2);
	/* A reader opened meanwhile sees the open version. */
	CHECK_INT(cache_open_file(c, "s", O_RDONLY, 0, &r), 0);
	CHECK_INT(cache_read(r, buf, sizeof(buf) - 1, 0), 6);
	CHECK_STR(buf, "aaaabb");
	cache_release(r);
	cache_release(h1);
	CHECK_INT(count_state(c, "s", CV_OPEN), 1);
	CHECK_INT(count_state(c, "s", CV_CLOSED), 0);
	cache_release(h2);
	CHECK_INT(count_state(c, "s", CV_OPEN), 0);
	CHECK_INT(count_state(c, "s", CV_CLOSED), 1);
	cache_close(c, 0);
	rm_rf(dir);
}

static void test_closed_version_not_modified_by_later_writer(void)
{
	const char *dir = new_dir();
	struct cache *c = open_cache(dir, 0);
	struct cache_handle *h;
	struct cver *closed;
	char path[4096], buf[16] = {0};
	int fd;

	CHECK_INT(put(c, "g", "12345", 0), 0);
	pthread_mutex_lock(&c->lock);
	closed = node_child(c, c->root, "g")->cur;
	/* Pretend the uploader holds it, so it is not superseded. */
	closed->state = CV_UPLOADING;
	store_data_path(c, closed->vid, path, sizeof(path));
	pthread_mutex_unlock(&c->lock);
	CHECK_INT(cache_open_file(c, "g", O_RDWR, 0, &h), 0);
	CHECK(h->v != closed);
	CHECK_INT(h->v->size, 5); /* a copy, not an empty file */
	CHECK_INT(cache_write(h, "X", 1, 0), 1);
	cache_release(h);
	fd = open(path, O_RDONLY);
	CHECK_INT(pread(fd, buf, sizeof(buf) - 1, 0), 5);
	CHECK_STR(buf, "12345");
	close(fd);
	CHECK_STR(get(c, "g"), "X2345");
	pthread_mutex_lock(&c->lock);
	closed->state = CV_CLOSED;
	pthread_mutex_unlock(&c->lock);
	cache_close(c, 0);
	rm_rf(dir);
}

static void test_clean_version_modified_in_place(void)
{
	const char *dir = new_dir();
	struct cache *c = open_cache(dir, 0);
	struct cache_handle *h;
	struct cver *v;

	CHECK_INT(put(c, "k", "abc", 0), 0);
	pthread_mutex_lock(&c->lock);
	v = node_child(c, c->root, "k")->cur;
	v->state = CV_CLEAN; /* as if uploaded */
	pthread_mutex_unlock(&c->lock);
	CHECK_INT(cache_open_file(c, "k", O_RDWR, 0, &h), 0);
	CHECK(h->v == v);
	CHECK_INT(v->state, CV_OPEN);
	cache_release(h);
	/* Opened for writing but never written: still identical to Drive. */
	CHECK_INT(v->state, CV_CLEAN);
	cache_close(c, 0);
	rm_rf(dir);
}

/* A child process writes and is killed: what it closed must survive,
 * what it had open must not be uploaded. */
static void test_recovery_drops_open_keeps_closed(void)
{
	const char *dir = new_dir();
	struct cache *c;
	struct cache_attr a;
	int st;
	pid_t pid;

	pid = fork();
	if (pid == 0) {
		struct cache_handle *h;

		c = open_cache(dir, 0);
		put(c, "closed.txt", "complete", 0);
		cache_open_file(c, "open.txt", O_WRONLY | O_CREAT, 0644, &h);
		cache_write(h, "half", 4, 0);
		put(c, "both.txt", "v1", 0);
		cache_open_file(c, "both.txt", O_WRONLY | O_TRUNC, 0, &h);
		cache_write(h, "v2-torn", 7, 0);
		kill(getpid(), SIGKILL);
		_exit(0);
	}
	waitpid(pid, &st, 0);
	CHECK(WIFSIGNALED(st));
	c = open_cache(dir, 0);
	CHECK(c != NULL);
	if (!c)
		return;
	CHECK_STR(get(c, "closed.txt"), "complete");
	CHECK_INT(count_state(c, "closed.txt", CV_CLOSED), 1);
	CHECK_INT(cache_getattr(c, "open.txt", &a), -ENOENT);
	CHECK_STR(get(c, "both.txt"), "v1");
	CHECK_INT(count_state(c, "both.txt", CV_CLOSED), 1);
	CHECK_INT(count_state(c, "both.txt", CV_OPEN), 0);
	cache_close(c, 0);
	rm_rf(dir);
}

/* close(2) returns after FLUSH; RELEASE comes later. A mount killed in
 * between must still treat the version as closed (it dropped it as OPEN). */
static void test_close_is_durable_at_flush_before_release(void)
{
	const char *dir = new_dir();
	struct cache *c;
	int st;
	pid_t pid;

	pid = fork();
	if (pid == 0) {
		struct cache_handle *h;

		c = open_cache(dir, 0);
		cache_open_file(c, "ckpt.bin", O_WRONLY | O_CREAT, 0644, &h);
		cache_write(h, "weights", 7, 0);
		cache_flush(h); /* close(2) returned; no release yet */
		kill(getpid(), SIGKILL);
		_exit(0);
	}
	waitpid(pid, &st, 0);
	CHECK(WIFSIGNALED(st));
	c = open_cache(dir, 0);
	CHECK(c != NULL);
	if (!c)
		return;
	CHECK_STR(get(c, "ckpt.bin"), "weights");
	CHECK_INT(count_state(c, "ckpt.bin", CV_CLOSED), 1);
	cache_close(c, 0);
	rm_rf(dir);
}

static int64_t newest_seq(struct cache *c, const char *path)
{
	struct cnode *n;
	struct cver *v;
	int64_t seq = -1;

	pthread_mutex_lock(&c->lock);
	if (node_lookup(c, path, &n) == 0 && (v = ver_newest_closed(n)))
		seq = v->close_seq;
	pthread_mutex_unlock(&c->lock);
	return seq;
}

/* Closes as close(2) makes them: flush, then release. */
static void put_flushed(struct cache *c, const char *path, const char *data)
{
	struct cache_handle *h;

	if (cache_open_file(c, path, O_WRONLY | O_CREAT | O_TRUNC, 0644, &h) <
	    0)
		return;
	cache_write(h, data, strlen(data), 0);
	cache_flush(h);
	cache_release(h);
}

static int count_commit(void *ud)
{
	(*(int *)ud)++;
	return 0;
}

/* A close is one commit, and close numbers are reserved in batches (no
 * meta row per close). The next mount still numbers its closes above
 * every one given out before, after a clean close or a kill, even once
 * the rows that had the highest are gone. */
static void test_a_close_is_one_commit_and_close_numbers_only_grow(void)
{
	const char *dir = new_dir();
	struct cache *c = open_cache(dir, 0);
	struct cache_handle *h;
	int64_t top;
	int commits = 0, fds[2], st, i, k;
	char name[32];
	pid_t pid;

	if (!c)
		return;
	put_flushed(c, "a", "1");
	CHECK_INT(cache_open_file(c, "a", O_WRONLY | O_TRUNC, 0, &h), 0);
	cache_write(h, "22", 2, 0);
	sqlite3_commit_hook(c->db, count_commit, &commits);
	CHECK_INT(cache_flush(h), 0);
	sqlite3_commit_hook(c->db, NULL, NULL);
	CHECK_INT(commits, 1);
	cache_release(h);
	put_flushed(c, "b", "3");
	top = newest_seq(c, "b");
	CHECK(top > newest_seq(c, "a"));
	CHECK_INT(cache_unlink(c, "a"), 0);
	CHECK_INT(cache_unlink(c, "b"), 0);
	cache_close(c, 0);

	c = open_cache(dir, 0);
	CHECK(c != NULL);
	if (!c)
		return;
	put_flushed(c, "c", "4");
	CHECK(newest_seq(c, "c") > top);
	cache_close(c, 0);

	/* Past a batch, then killed with the newest rows gone. */
	CHECK_INT(pipe(fds), 0);
	pid = fork();
	if (pid == 0) {
		close(fds[0]);
		c = open_cache(dir, 0);
		for (i = 0; c && i < CLOSE_SEQ_BATCH + 10; i++) {
			snprintf(name, sizeof(name), "f%d", i % 4);
			put_flushed(c, name, "x");
			k = (int)newest_seq(c, name);
			if (write(fds[1], &k, sizeof(k)) != sizeof(k))
				_exit(1);
		}
		for (i = 0; c && i < 4; i++) {
			snprintf(name, sizeof(name), "f%d", i);
			cache_unlink(c, name);
		}
		kill(getpid(), SIGKILL);
		_exit(0);
	}
	close(fds[1]);
	k = t_last_int(fds[0], -1);
	waitpid(pid, &st, 0);
	CHECK(WIFSIGNALED(st));
	CHECK(k > top + CLOSE_SEQ_BATCH);
	c = open_cache(dir, 0);
	CHECK(c != NULL);
	if (!c)
		return;
	put_flushed(c, "d", "5");
	CHECK(newest_seq(c, "d") > k);
	cache_close(c, 0);
	rm_rf(dir);
}

/* A write through a handle after its flush (a dup'd fd) must not modify
 * the version that flush closed: it gets a new one. */
static void test_write_after_flush_makes_a_new_version(void)
{
	const char *dir = new_dir();
	struct cache *c = open_cache(dir, 0);
	struct cache_handle *h;

	cache_open_file(c, "log.txt", O_WRONLY | O_CREAT, 0644, &h);
	cache_write(h, "one\n", 4, 0);
	cache_flush(h);
	CHECK_INT(count_state(c, "log.txt", CV_CLOSED), 1);
	CHECK_INT(cache_write(h, "two\n", 4, 4), 4);
	CHECK_INT(count_state(c, "log.txt", CV_CLOSED), 1);
	CHECK_INT(count_state(c, "log.txt", CV_OPEN), 1);
	cache_release(h);
	CHECK_STR(get(c, "log.txt"), "one\ntwo\n");
	cache_close(c, 0);
	rm_rf(dir);
}

/* A version closed without fdatasync is trusted after a kill -9 in the
 * same boot, but not after the machine went down (its bytes may be torn):
 * then the previous version stays. */
static void test_unsynced_close_dropped_after_a_reboot(void)
{
	const char *dir = new_dir();
	char db[4096];
	struct cache *c;
	sqlite3 *s;
	int st;
	pid_t pid;

	c = open_cache(dir, 0);
	put(c, "g.json", "old", 0);
	cache_close(c, 0);
	pid = fork();
	if (pid == 0) {
		struct cache_handle *h;

		c = open_cache(dir, 0);
		cache_open_file(c, "g.json", O_WRONLY | O_TRUNC, 0, &h);
		cache_write(h, "new", 3, 0);
		cache_flush(h);
		kill(getpid(), SIGKILL);
		_exit(0);
	}
	waitpid(pid, &st, 0);
	snprintf(db, sizeof(db), "%s/meta.db", dir);
	CHECK(sqlite3_open(db, &s) == SQLITE_OK);
	CHECK(sqlite3_exec(s,
			   "UPDATE meta SET v='another-boot' WHERE k='boot_id'",
			   NULL, NULL, NULL) == SQLITE_OK);
	sqlite3_close(s);
	c = open_cache(dir, 0);
	CHECK(c != NULL);
	if (!c)
		return;
	CHECK_STR(get(c, "g.json"), "old");
	cache_close(c, 0);
	rm_rf(dir);
}

static void test_second_open_on_same_dir_is_busy(void)
{
	const char *dir = new_dir();
	struct cache *c = open_cache(dir, 0), *c2 = NULL;
	struct cache_opts o = {0};
	char err[256], pid[32];

	o.dir = dir;
	CHECK_INT(cache_open(&c2, &o, NULL, "root", err, sizeof(err)), -EBUSY);
	snprintf(pid, sizeof(pid), "pid %d", (int)getpid());
	CHECK(strstr(err, "in use by another vectur-mount") != NULL);
	CHECK(strstr(err, pid) != NULL);
	cache_close(c, 0);
	/* Released at close. */
	CHECK_INT(cache_open(&c2, &o, NULL, "root", err, sizeof(err)), 0);
	cache_close(c2, 0);
	rm_rf(dir);
}

static void test_dir_modes_are_private(void)
{
	const char *dir = new_dir();
	struct cache *c;
	char path[4096];
	struct stat st;

	rmdir(dir);
	c = open_cache(dir, 0);
	CHECK_INT(put(c, "x", "1", 0), 0);
	CHECK_INT(stat(dir, &st), 0);
	CHECK_INT(st.st_mode & 0777, 0700);
	snprintf(path, sizeof(path), "%s/meta.db", dir);
	CHECK_INT(stat(path, &st), 0);
	CHECK_INT(st.st_mode & 0777, 0600);
	snprintf(path, sizeof(path), "%s/lock", dir);
	CHECK_INT(stat(path, &st), 0);
	CHECK_INT(st.st_mode & 0777, 0600);
	cache_close(c, 0);
	rm_rf(dir);
}

static int collect_names(const char *name, const struct cache_attr *a, void *ud)
{
	char *s = ud;

	strcat(s, name);
	strcat(s, a->is_dir ? "/ " : " ");
	return 0;
}

static void test_tree_mkdir_rmdir_unlink(void)
{
	const char *dir = new_dir();
	struct cache *c = open_cache(dir, 0);
	struct cache_attr a;
	char names[256] = "";

	CHECK_INT(cache_mkdir(c, "d", 0755), 0);
	CHECK_INT(cache_mkdir(c, "d", 0755), -EEXIST);
	CHECK_INT(cache_mkdir(c, "x/y", 0755), -ENOENT);
	CHECK_INT(put(c, "d/f", "1", 0), 0);
	CHECK_INT(cache_rmdir(c, "d"), -ENOTEMPTY);
	CHECK_INT(cache_rmdir(c, "d/f"), -ENOTDIR);
	CHECK_INT(cache_unlink(c, "d"), -EISDIR);
	CHECK_INT(cache_readdir(c, "", collect_names, names), 0);
	CHECK_STR(names, "d/ ");
	CHECK_INT(cache_unlink(c, "d/f"), 0);
	CHECK_INT(cache_getattr(c, "d/f", &a), -ENOENT);
	CHECK_INT(cache_rmdir(c, "d"), 0);
	CHECK_INT(cache_getattr(c, "d", &a), -ENOENT);
	CHECK_INT(cache_rmdir(c, ""), -EBUSY);
	cache_close(c, 0);
	rm_rf(dir);
}

static void test_rename_over_an_existing_file(void)
{
	const char *dir = new_dir();
	struct cache *c = open_cache(dir, 0);
	struct cache_attr a, b;

	CHECK_INT(cache_mkdir(c, "runs", 0755), 0);
	CHECK_INT(put(c, "runs/g.json.tmp", "new", 0), 0);
	CHECK_INT(put(c, "runs/g.json", "old", 0), 0);
	CHECK_INT(cache_getattr(c, "runs/g.json.tmp", &a), 0);
	CHECK_INT(cache_rename(c, "runs/g.json.tmp", "runs/g.json",
			       RENAME_NOREPLACE),
		  -EEXIST);
	CHECK_INT(cache_rename(c, "runs/g.json.tmp", "runs/g.json", 0), 0);
	CHECK_INT(cache_getattr(c, "runs/g.json.tmp", &b), -ENOENT);
	CHECK_INT(cache_getattr(c, "runs/g.json", &b), 0);
	CHECK_INT(b.ino, a.ino);
	CHECK_STR(get(c, "runs/g.json"), "new");
	/* Directories: into itself is refused, over a non-empty one too. */
	CHECK_INT(cache_mkdir(c, "runs/sub", 0755), 0);
	CHECK_INT(cache_rename(c, "runs", "runs/sub/x", 0), -EINVAL);
	CHECK_INT(cache_mkdir(c, "other", 0755), 0);
	CHECK_INT(cache_rename(c, "other", "runs", 0), -ENOTEMPTY);
	CHECK_INT(cache_rename(c, "runs/g.json", "other", 0), -EISDIR);
	CHECK_INT(cache_rename(c, "other", "runs/g.json", 0), -ENOTDIR);
	CHECK_INT(cache_rename(c, "runs/sub", "other", 0), 0);
	CHECK_INT(cache_getattr(c, "other", &a), 0);
	CHECK(a.is_dir);
	CHECK_INT(cache_rename(c, "a", "b", RENAME_EXCHANGE), -EINVAL);
	cache_close(c, 0);
	rm_rf(dir);
}

static void test_truncate_append_and_attrs(void)
{
	const char *dir = new_dir();
	struct cache *c = open_cache(dir, 0);
	struct cache_handle *h;
	struct cache_attr a;

	CHECK_INT(put(c, "t", "0123456789", 0), 0);
	CHECK_INT(cache_truncate(c, "t", 4), 0);
	CHECK_STR(get(c, "t"), "0123");
	CHECK_INT(cache_open_file(c, "t", O_WRONLY | O_APPEND, 0, &h), 0);
	CHECK_INT(cache_write(h, "ab", 2, 0), 2);
	CHECK_INT(cache_fgetattr(h, &a), 0);
	CHECK_INT(a.size, 6);
	cache_release(h);
	CHECK_STR(get(c, "t"), "0123ab");
	CHECK_INT(cache_chmod(c, "t", 0600), 0);
	CHECK_INT(cache_getattr(c, "t", &a), 0);
	CHECK_INT(a.mode, S_IFREG | 0600);
	CHECK_INT(put(c, "t", "x", O_EXCL), -EEXIST);
	cache_close(c, 0);
	rm_rf(dir);
}

static void test_fsync_snapshot_then_close_queues_once(void)
{
	const char *dir = new_dir();
	struct cache *c = open_cache(dir, 0);
	struct cache_handle *h;

	CHECK_INT(cache_open_file(c, "log", O_WRONLY | O_CREAT, 0644, &h), 0);
	CHECK_INT(cache_write(h, "line1\n", 6, 0), 6);
	CHECK_INT(cache_fsync(h), 0);
	/* The snapshot is closed and queued; the writer goes on. */
	CHECK_INT(count_state(c, "log", CV_CLOSED), 1);
	CHECK_INT(count_state(c, "log", CV_OPEN), 1);
	CHECK_INT(cache_write(h, "line2\n", 6, 6), 6);
	cache_release(h);
	CHECK_INT(count_state(c, "log", CV_CLOSED), 1);
	CHECK_INT(count_state(c, "log", CV_OPEN), 0);
	CHECK_STR(get(c, "log"), "line1\nline2\n");
	cache_close(c, 0);
	rm_rf(dir);
}

/* The versions of `path` in state `state`, newest first (at most 4). */
static int vers_in(struct cache *c, const char *path, int state,
		   struct cver **out)
{
	struct cnode *n;
	struct cver *v;
	int k = 0;

	pthread_mutex_lock(&c->lock);
	if (node_lookup(c, path, &n) == 0)
		for (v = n->vers; v && k < 4; v = v->nnext)
			if (v->state == state)
				out[k++] = v;
	pthread_mutex_unlock(&c->lock);
	return k;
}

static ino_t data_ino(struct cache *c, struct cver *v)
{
	char path[4096];
	struct stat st;

	store_data_path(c, v->vid, path, sizeof(path));
	return stat(path, &st) == 0 ? st.st_ino : 0;
}

static const char *data_of(struct cache *c, struct cver *v)
{
	static char buf[64];
	char path[4096];
	ssize_t n;
	int fd;

	store_data_path(c, v->vid, path, sizeof(path));
	fd = open(path, O_RDONLY);
	n = fd < 0 ? -1 : read(fd, buf, sizeof(buf) - 1);
	if (fd >= 0)
		close(fd);
	buf[n < 0 ? 0 : n] = 0;
	return buf;
}

/* An fsync snapshot of a multi-GB checkpoint must not copy it: the
 * snapshot is a second name of the open version's file, and whatever
 * changes the open version next (write, append, truncate, O_TRUNC) gives
 * it a file of its own first — the snapshot keeps its bytes. */
static void test_fsync_snapshot_shares_the_file_until_the_next_change(void)
{
	static const struct {
		const char *what;
		int flags;
	} ways[] = {{"write", 0},
		    {"append", O_APPEND},
		    {"truncate", 0},
		    {"otrunc", 0}};
	const char *dir = new_dir();
	struct cache *c = open_cache(dir, 0);
	struct cache_handle *h, *h2;
	struct cver *snap[4], *open_v[4];
	size_t i;

	for (i = 0; i < sizeof(ways) / sizeof(ways[0]); i++) {
		const char *p = ways[i].what;

		CHECK_INT(cache_open_file(c, p,
					  O_WRONLY | O_CREAT | ways[i].flags,
					  0644, &h),
			  0);
		CHECK_INT(cache_write(h, "step-1", 6, 0), 6);
		CHECK_INT(cache_fsync(h), 0);
		CHECK_INT(vers_in(c, p, CV_CLOSED, snap), 1);
		CHECK_INT(vers_in(c, p, CV_OPEN, open_v), 1);
		CHECK(data_ino(c, snap[0]) != 0);
		CHECK(data_ino(c, snap[0]) == data_ino(c, open_v[0]));
		if (i == 0) {
			CHECK_INT(cache_write(h, "STEP", 4, 0), 4);
		} else if (i == 1) {
			CHECK_INT(cache_write(h, "+2", 2, 0), 2);
		} else if (i == 2) {
			CHECK_INT(cache_ftruncate(h, 4), 0);
		} else {
			CHECK_INT(cache_open_file(c, p, O_WRONLY | O_TRUNC, 0,
						  &h2),
				  0);
			CHECK_INT(cache_write(h2, "new", 3, 0), 3);
			cache_release(h2);
		}
		CHECK(data_ino(c, snap[0]) != data_ino(c, open_v[0]));
		CHECK_STR(data_of(c, snap[0]), "step-1");
		cache_release(h);
	}
	CHECK_STR(get(c, "write"), "STEP-1");
	CHECK_STR(get(c, "append"), "step-1+2");
	CHECK_STR(get(c, "truncate"), "step");
	CHECK_STR(get(c, "otrunc"), "new");
	cache_close(c, 0);
	rm_rf(dir);
}

/* A mount killed while an fsync snapshot shares the open version's file:
 * the snapshot comes back whole, and a copy cut short by the kill (a
 * stray N.cow in the data dir) is removed. */
static void test_a_snapshot_sharing_a_file_survives_a_kill(void)
{
	const char *dir = new_dir();
	struct cache_handle *h;
	struct cache *c;
	char stray[4096];
	int st;
	pid_t pid;

	pid = fork();
	if (pid == 0) {
		c = open_cache(dir, 0);
		cache_open_file(c, "ck", O_WRONLY | O_CREAT, 0644, &h);
		cache_write(h, "weights", 7, 0);
		cache_fsync(h);
		kill(getpid(), SIGKILL);
		_exit(0);
	}
	waitpid(pid, &st, 0);
	CHECK(WIFSIGNALED(st));
	snprintf(stray, sizeof(stray), "%s/data/999.cow", dir);
	close(open(stray, O_WRONLY | O_CREAT, 0600));
	c = open_cache(dir, 0);
	CHECK(c != NULL);
	if (!c)
		return;
	CHECK(access(stray, F_OK) < 0);
	CHECK_STR(get(c, "ck"), "weights");
	CHECK_INT(count_state(c, "ck", CV_CLOSED), 1);
	CHECK_INT(count_state(c, "ck", CV_OPEN), 0);
	CHECK_INT(put(c, "ck", "W", 0), 0);
	CHECK_STR(get(c, "ck"), "Weights");
	cache_close(c, 0);
	rm_rf(dir);
}

/* A file unlinked while open for writing, after an fsync: its writer goes
 * on writing to the unlinked version, which must not bring a content file
 * back under the dropped version's name (nothing would ever delete it). */
static void test_writing_an_unlinked_fsynced_file_leaves_no_content_file(void)
{
	const char *dir = new_dir();
	struct cache *c = open_cache(dir, 0);
	struct cache_handle *h;
	char path[4096];
	int64_t vid;

	CHECK_INT(cache_open_file(c, "gone", O_RDWR | O_CREAT, 0644, &h), 0);
	CHECK_INT(cache_write(h, "before", 6, 0), 6);
	CHECK_INT(cache_fsync(h), 0);
	vid = h->v->vid;
	CHECK_INT(cache_unlink(c, "gone"), 0);
	CHECK_INT(cache_write(h, "AFTER!", 6, 0), 6);
	{
		char buf[8] = {0};

		CHECK_INT(cache_read(h, buf, 6, 0), 6);
		CHECK_STR(buf, "AFTER!");
	}
	store_data_path(c, vid, path, sizeof(path));
	CHECK(access(path, F_OK) < 0);
	cache_release(h);
	CHECK(access(path, F_OK) < 0);
	cache_close(c, 0);
	rm_rf(dir);
}

static struct cache_handle *race_h;

static void *fsync_thread(void *arg)
{
	*(int *)arg = cache_fsync(race_h);
	return NULL;
}

/* `mv local_file runs/log` landing while an fsync of runs/log (or its
 * periodic long-open snapshot) is taking its snapshot: the snapshot,
 * dropped by the import, used to be closed anyway and superseded the
 * imported file, which was lost. */
static void test_an_import_during_a_snapshot_is_kept(void)
{
	const char *dir = new_dir();
	struct cache *c = open_cache(dir, 0);
	char src[4096];
	struct stat st;
	pthread_t th;
	int fd, frc = -1;

	CHECK_INT(cache_open_file(c, "log", O_WRONLY | O_CREAT, 0644, &race_h),
		  0);
	CHECK_INT(cache_write(race_h, "old-writer", 10, 0), 10);
	/* A write under way: the snapshot waits for it without c->lock. */
	pthread_rwlock_wrlock(&race_h->v->rw);
	CHECK_INT(pthread_create(&th, NULL, fsync_thread, &frc), 0);
	usleep(200 * 1000);
	snprintf(src, sizeof(src), "%s/local-src", dir);
	fd = open(src, O_RDWR | O_CREAT | O_TRUNC, 0644);
	CHECK_INT(write(fd, "IMPORTED", 8), 8);
	fstat(fd, &st);
	CHECK_INT(cache_import(c, "log", fd, &st, 0, NULL, NULL, NULL, NULL),
		  0);
	close(fd);
	pthread_rwlock_unlock(&race_h->v->rw);
	pthread_join(th, NULL);
	CHECK_INT(frc, 0); /* replaced meanwhile: nothing of it to keep */
	cache_release(race_h);
	CHECK_STR(get(c, "log"), "IMPORTED");
	CHECK_INT(count_state(c, "log", CV_CLOSED), 1);
	cache_close(c, 0);
	rm_rf(dir);
}

/* A reader open while this mount rewrites the file reads what is written,
 * as on a local disk: a rewrite while the previous version was still
 * queued (a copy), then an O_TRUNC one. The reader kept the old version,
 * while the kernel, which keeps one size per file, told the new size: old
 * bytes cut to the new length. */
static void test_a_reader_follows_this_mount_s_rewrites(void)
{
	const char *dir = new_dir();
	struct cache *c = open_cache(dir, 0);
	struct cache_handle *r, *w;
	struct cache_attr a;
	char old[10000], got[64];

	memset(old, '1', sizeof(old));
	CHECK_INT(cache_open_file(c, "f", O_WRONLY | O_CREAT, 0644, &w), 0);
	CHECK_INT((int)cache_write(w, old, sizeof(old), 0), (int)sizeof(old));
	cache_release(w); /* CLOSED: queued, not on Drive */
	CHECK_INT(cache_open_file(c, "f", O_RDONLY, 0, &r), 0);
	CHECK_INT((int)cache_read(r, got, 4, 0), 4);
	CHECK_INT(cache_open_file(c, "f", O_RDWR, 0, &w), 0);
	CHECK_INT((int)cache_write(w, "2222", 4, 0), 4);
	CHECK_INT((int)cache_read(r, got, 5, 0), 5);
	CHECK(memcmp(got, "22221", 5) == 0);
	cache_release(w);
	CHECK_INT(cache_open_file(c, "f", O_WRONLY | O_TRUNC, 0, &w), 0);
	CHECK_INT((int)cache_write(w, "33333", 5, 0), 5);
	cache_release(w);
	CHECK_INT(cache_fgetattr(r, &a), 0);
	CHECK_INT((int)a.size, 5);
	CHECK_INT((int)cache_read(r, got, sizeof(got), 0), 5);
	CHECK(memcmp(got, "33333", 5) == 0);
	cache_release(r);
	cache_close(c, 0);
	rm_rf(dir);
}

/* Descriptors of this process on deleted files under dir. */
static int deleted_fds(const char *dir)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	char p[300], t[4096];
	int k = 0;

	while (d && (e = readdir(d))) {
		ssize_t n;

		snprintf(p, sizeof(p), "/proc/self/fd/%s", e->d_name);
		n = readlink(p, t, sizeof(t) - 1);
		if (n <= 0)
			continue;
		t[n] = 0;
		k += strstr(t, dir) && strstr(t, "(deleted)");
	}
	if (d)
		closedir(d);
	return k;
}

/* A reader open while the file is rewritten 40 times here holds the
 * version it read first, not every one it was moved from (40 deleted
 * content files kept open until it closed). */
static void test_a_reader_does_not_hold_every_rewrite(void)
{
	const char *dir = new_dir();
	struct cache *c = open_cache(dir, 0);
	struct cache_handle *r;
	char data[2] = "a", got[2];
	int i;

	CHECK_INT(put(c, "f", "first", 0), 0);
	CHECK_INT(cache_open_file(c, "f", O_RDONLY, 0, &r), 0);
	for (i = 0; i < 40; i++) {
		data[0] = (char)('a' + i % 26);
		CHECK_INT(put(c, "f", data, O_TRUNC), 0);
		CHECK_INT((int)cache_read(r, got, 1, 0), 1);
		CHECK(got[0] == data[0]);
	}
	CHECK(deleted_fds(dir) <= 2);
	cache_release(r);
	CHECK_INT(deleted_fds(dir), 0);
	cache_close(c, 0);
	rm_rf(dir);
}

static struct cache *race_c;
static struct cache_handle *race_r;

static void *release_thread(void *arg)
{
	(void)arg;
	cache_release(race_r);
	return NULL;
}

static void *retrunc_thread(void *arg)
{
	(void)arg;
	put(race_c, "f", "new", O_TRUNC);
	return NULL;
}

/* A reader's release racing a rewrite that moves it: the release read
 * the handle's version before taking the lock, put the old version twice
 * and the new one never (a reference and a handle leaked, or a version
 * freed while in use). */
static void test_a_release_racing_a_move_counts_right(void)
{
	const char *dir = new_dir();
	struct cnode *n;
	struct cver *v;
	pthread_t ta, tb;
	int i, left;

	race_c = open_cache(dir, 0);
	for (i = 0; i < 5; i++) {
		CHECK_INT(put(race_c, "f", "old content", 0), 0);
		CHECK_INT(cache_open_file(race_c, "f", O_RDONLY, 0, &race_r),
			  0);
		pthread_mutex_lock(&race_c->lock);
		pthread_create(&ta, NULL, retrunc_thread, NULL);
		usleep(20000);
		pthread_create(&tb, NULL, release_thread, NULL);
		usleep(20000);
		pthread_mutex_unlock(&race_c->lock);
		pthread_join(ta, NULL);
		pthread_join(tb, NULL);
		left = 0;
		pthread_mutex_lock(&race_c->lock);
		if (node_lookup(race_c, "f", &n) == 0)
			for (v = n->vers; v; v = v->nnext)
				left += v->handles + v->refs;
		pthread_mutex_unlock(&race_c->lock);
		CHECK_INT(left, 0);
	}
	cache_close(race_c, 0);
	rm_rf(dir);
}

struct late_write {
	struct cache_handle *h;
	pthread_barrier_t *go;
	off_t off;
	ssize_t rc;
};

static void *late_write_thread(void *arg)
{
	struct late_write *w = arg;

	pthread_barrier_wait(w->go);
	w->rc = cache_write(w->h, "X", 1, w->off);
	return NULL;
}

/* numpy.memmap: after the opener's close() the kernel writes the mapping
 * back in parallel WRITEs through the flushed handle. Each of them that
 * came while the first was copying the closed version into a new one
 * opened it again as a writer of its own: the count never fell back to
 * zero, the version stayed open, and Drive kept the old content (and so
 * did every later write of the file, with --sync saying done). */
static void test_parallel_writes_after_flush_reopen_once(void)
{
	const char *dir = new_dir();
	struct cache *c = open_cache(dir, 0);
	size_t len = 32 << 20, i;
	char *buf = calloc(1, len), got[4];
	struct late_write w[6];
	pthread_t th[6];
	pthread_barrier_t go;
	struct cache_handle *h, *r;

	CHECK(buf != NULL);
	CHECK_INT(cache_open_file(c, "m", O_RDWR | O_CREAT, 0644, &h), 0);
	CHECK_INT(cache_write(h, buf, len, 0), (int)len);
	CHECK_INT(cache_flush(h), 0); /* CLOSED: a write copies it */
	pthread_barrier_init(&go, NULL, 6);
	for (i = 0; i < 6; i++) {
		w[i] = (struct late_write){h, &go, (off_t)(i * (len / 6)), -1};
		pthread_create(&th[i], NULL, late_write_thread, &w[i]);
	}
	for (i = 0; i < 6; i++) {
		pthread_join(th[i], NULL);
		CHECK_INT((int)w[i].rc, 1);
	}
	pthread_barrier_destroy(&go);
	cache_release(h);
	CHECK_INT(count_state(c, "m", CV_OPEN), 0);
	CHECK_INT(count_state(c, "m", CV_CLOSED),
		  1); /* the old one superseded */
	CHECK_INT(cache_open_file(c, "m", O_RDONLY, 0, &r), 0);
	for (i = 0; i < 6; i++) {
		CHECK_INT((int)cache_read(r, got, 1, (off_t)(i * (len / 6))),
			  1);
		CHECK(got[0] == 'X');
	}
	cache_release(r);
	free(buf);
	cache_close(c, 0);
	rm_rf(dir);
}

/* A write through a handle after its flush (a dup'd fd, mmap write-back)
 * reopens the file's current version. When that is a clean copy nobody had
 * open, its descriptor was closed (ver_put): the write must reopen it, not
 * fail with EBADF. */
static void test_a_write_after_flush_reopens_a_clean_version_s_file(void)
{
	const char *dir = new_dir();
	struct cache *c = open_cache(dir, 0);
	struct cache_handle *h;
	struct cver *v;

	CHECK_INT(cache_open_file(c, "r", O_WRONLY | O_CREAT, 0644, &h), 0);
	CHECK_INT(cache_write(h, "abc", 3, 0), 3);
	CHECK_INT(cache_flush(h), 0);
	/* White-box: as if uploaded, then its fd closed by the last put
	 * (the feed replacing it with a fresh download does the same). */
	pthread_mutex_lock(&c->lock);
	v = h->n->cur;
	v->state = CV_CLEAN;
	close(v->fd);
	v->fd = -1;
	pthread_mutex_unlock(&c->lock);
	CHECK_INT(cache_write(h, "X", 1, 0), 1);
	cache_release(h);
	CHECK_STR(get(c, "r"), "Xbc");
	cache_close(c, 0);
	rm_rf(dir);
}

static void test_import_and_export(void)
{
	const char *dir = new_dir();
	struct cache *c = open_cache(dir, 0);
	char src[4096], dst[4096], buf[32] = {0};
	struct stat st;
	int fd;

	snprintf(src, sizeof(src), "%s/src", dir);
	snprintf(dst, sizeof(dst), "%s/dst", dir);
	fd = open(src, O_RDWR | O_CREAT, 0640);
	CHECK_INT(write(fd, "imported", 8), 8);
	fstat(fd, &st);
	CHECK_INT(cache_import(c, "work_graph.json", fd, &st, 0, NULL, NULL,
			       NULL, NULL),
		  0);
	close(fd);
	CHECK_STR(get(c, "work_graph.json"), "imported");
	CHECK_INT(count_state(c, "work_graph.json", CV_CLOSED), 1);
	fd = open(dst, O_RDWR | O_CREAT, 0600);
	CHECK_INT(cache_export(c, "work_graph.json", fd), 0);
	CHECK_INT(pread(fd, buf, sizeof(buf), 0), 8);
	CHECK_STR(buf, "imported");
	close(fd);
	cache_close(c, 0);
	rm_rf(dir);
}

struct import_race {
	struct cache *c;
	int src;
	struct stat st;
	struct cache_handle *moved; /* the writer that moved with the file */
	int64_t seq;		    /* what the note was made with */
	int rc;
};

static char *race_note(int64_t seq, void *arg)
{
	char *s;

	((struct import_race *)arg)->seq = seq;
	return asprintf(&s, "%" PRId64, seq) < 0 ? NULL : s;
}

static void *import_main(void *arg)
{
	struct import_race *r = arg;
	int wflags = O_WRONLY;

	r->rc = cache_import(r->c, "f", r->src, &r->st, 1, &wflags, &r->moved,
			     race_note, r);
	return NULL;
}

/* Whether a version of `path` is being filled by an import now. */
static bool importing(struct cache *c, const char *path)
{
	struct cnode *n;
	struct cver *v;
	bool yes = false;

	pthread_mutex_lock(&c->lock);
	if (node_lookup(c, path, &n) == 0)
		for (v = n->vers; v; v = v->nnext)
			yes |= v->preparing;
	pthread_mutex_unlock(&c->lock);
	return yes;
}

/* mv big.bin runs/f while the file is still written through a moved
 * handle (its version stays OPEN), and another handle of runs/f closes
 * during the copy; then the mount is killed before the local unlink. The
 * note's close number was taken before the copy, so that other close
 * counted at the next mount as the import's version closed, and the local
 * file, the only copy of the content (the OPEN version is dropped), was
 * removed. The number is taken at the import's commit now. */
static void test_an_import_note_is_not_fooled_by_a_close_during_the_copy(void)
{
	const char *dir = new_dir();
	struct import_race r = {0};
	struct cache_handle *other;
	char src[4096], note[64];
	int64_t before;
	pthread_t th;
	pid_t pid;
	int p[2], status, i;

	snprintf(src, sizeof(src), "%s/big.bin", dir);
	CHECK_INT(pipe(p), 0);
	pid = fork();
	if (pid == 0) {
		/* The child is the mount: it dies as kill -9 would. */
		r.c = open_cache(dir, 0);
		if (!r.c ||
		    cache_open_file(r.c, "f", O_WRONLY | O_CREAT, 0644,
				    &other) < 0 ||
		    cache_write(other, "other", 5, 0) != 5)
			_exit(3);
		r.src = open(src, O_RDWR | O_CREAT | O_TRUNC, 0644);
		/* Long enough a copy to close `other` during it. */
		if (r.src < 0 || ftruncate(r.src, 256 << 20) < 0 ||
		    fstat(r.src, &r.st) < 0)
			_exit(4);
		pthread_mutex_lock(&r.c->lock);
		before = r.c->close_seq; /* what the note used to say */
		pthread_mutex_unlock(&r.c->lock);
		pthread_create(&th, NULL, import_main, &r);
		for (i = 0; i < 200000 && !importing(r.c, "f"); i++)
			usleep(50);
		cache_release(other);
		if (importing(r.c, "f") == false)
			_exit(5); /* the copy ended first: no race made */
		pthread_join(th, NULL);
		if (r.rc < 0 || write(p[1], &before, sizeof(before)) < 0)
			_exit(6);
		_exit(99); /* before the local unlink */
	}
	close(p[1]);
	before = -1;
	if (read(p[0], &before, sizeof(before)) != sizeof(before))
		before = -1;
	close(p[0]);
	waitpid(pid, &status, 0);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 99);
	r.c = open_cache(dir, 0);
	cache_move_pending(r.c, note, sizeof(note));
	/* The import's version died OPEN; the other close is older than
	 * the note: nothing says the local file may go. */
	CHECK(note[0] != '\0');
	CHECK(!cache_closed_since(r.c, "f", strtoll(note, NULL, 10)));
	/* The number taken before the copy would have said it may. */
	CHECK(before >= 0 && cache_closed_since(r.c, "f", before));
	cache_close(r.c, 0);
	rm_rf(dir);
}

/* Crash points: the mount dies before each row write of a script of the
 * operations training code does, in turn. After recovery every file must
 * be as the last operation that returned left it, or as the one under way
 * would have (never older, never a mix). ver_mark_closed used to drop the
 * previous closed version before saving the new one: a kill between the
 * two left neither (the torture test against Drive caught it 1 run in 60). */
#define CP_STEPS 13

static const char *const cp_want[CP_STEPS][2] = {
	{"a0", NULL},	{"a1", NULL},	 {"a2", NULL},	 {"a2", "b0"},
	{"b0", NULL},	{"b0+x", NULL},	 {"b0+x", "f1"}, {"b0+x", "f1f2"},
	{NULL, "f1f2"}, {"imp", "f1f2"}, {"imp", "f1"},	 {NULL, "imp"},
	{"a3", "imp"},
};

static void cp_report(int fd, int k)
{
	if (write(fd, &k, sizeof(k)) != sizeof(k))
		_exit(4);
}

static void cp_script(struct cache *c, const char *dir, int fd)
{
	struct cache_handle *h;
	char src[4096];
	struct stat st;
	int sfd;

	put(c, "a", "a0", 0);
	cp_report(fd, 0);
	put(c, "a", "a1", O_TRUNC);
	cp_report(fd, 1);
	put(c, "a", "a2", O_TRUNC);
	cp_report(fd, 2);
	put(c, "b", "b0", 0);
	cp_report(fd, 3);
	cache_rename(c, "b", "a", 0);
	cp_report(fd, 4);
	/* (The opens fail only on a full disk: test_a_failed_commit_...) */
	if (cache_open_file(c, "a", O_WRONLY, 0, &h) == 0) {
		cache_write(h, "+x", 2, 2);
		cache_release(h);
	}
	cp_report(fd, 5);
	if (cache_open_file(c, "b", O_WRONLY | O_CREAT, 0644, &h) == 0) {
		cache_write(h, "f1", 2, 0);
		cache_fsync(h);
		cp_report(fd, 6);
		cache_write(h, "f2", 2, 2);
		cache_release(h);
	}
	cp_report(fd, 7);
	cache_unlink(c, "a");
	cp_report(fd, 8);
	snprintf(src, sizeof(src), "%s/src", dir);
	sfd = open(src, O_RDWR | O_CREAT | O_TRUNC, 0640);
	if (sfd < 0 || write(sfd, "imp", 3) != 3 || fstat(sfd, &st) < 0)
		_exit(5);
	cache_import(c, "a", sfd, &st, 0, NULL, NULL, NULL, NULL);
	close(sfd);
	cp_report(fd, 9);
	cache_truncate(c, "b", 2);
	cp_report(fd, 10);
	cache_rename(c, "a", "b", 0);
	cp_report(fd, 11);
	put(c, "a", "a3", 0);
	cp_report(fd, 12);
}

static bool cp_same(const char *got, const char *want)
{
	return got ? want && strcmp(got, want) == 0 : !want;
}

/* Runs the script dying at row write `at` (0: never). Returns the last
 * step reported, -2 if the script ran to its end. */
static int cp_run(const char *dir, int64_t at)
{
	int p[2], last, st;
	pid_t pid;

	if (pipe(p) < 0)
		return -3;
	pid = fork();
	if (pid == 0) {
		struct cache *c = open_cache(dir, 0);

		close(p[0]);
		if (!c)
			_exit(3);
		c->crash_at = at;
		cp_script(c, dir, p[1]);
		_exit(0);
	}
	close(p[1]);
	last = t_last_int(p[0], -1);
	waitpid(pid, &st, 0);
	if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
		return -2;
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 99)
		return -3;
	return last;
}

static void test_a_crash_at_any_row_write_keeps_what_returned(void)
{
	static const char *const names[2] = {"a", "b"};
	struct cache *c;
	const char *got;
	char dir[64];
	int64_t at;
	int last, f, bad = 0;
	bool ok;

	for (at = 1; at < 1000; at++) {
		snprintf(dir, sizeof(dir), "%s", new_dir());
		last = cp_run(dir, at);
		CHECK(last != -3);
		if (last < -1) {
			rm_rf(dir);
			break;
		}
		c = open_cache(dir, 0);
		CHECK(c != NULL);
		for (f = 0; c && f < 2; f++) {
			got = get(c, names[f]);
			ok = (last >= 0 && cp_same(got, cp_want[last][f])) ||
			     (last + 1 < CP_STEPS &&
			      cp_same(got, cp_want[last + 1][f])) ||
			     (last < 0 && !got);
			if (!ok && bad++ < 5)
				fprintf(stderr,
					"crash at row write %lld after step "
					"%d: %s is %s\n",
					(long long)at, last, names[f],
					got ? got : "(absent)");
			CHECK(ok);
		}
		if (c)
			cache_close(c, 0);
		rm_rf(dir);
	}
	CHECK(at > 10 && at < 1000); /* the script ran out of row writes */
}

/* As close(2) does it: FLUSH closes the version (unsynced, the uploader
 * syncs it), RELEASE comes after. */
static void put_closed(struct cache *c, const char *path, const char *data,
		       int flags)
{
	struct cache_handle *h;

	if (cache_open_file(c, path, O_WRONLY | O_CREAT | flags, 0644, &h) < 0)
		_exit(5);
	cache_write(h, data, strlen(data), 0);
	cache_flush(h);
	cache_release(h);
}

/* An unlink is one change: a file closed twice without an upload in
 * between has two CLOSED versions (the older stays until the newer is
 * synced), and a kill after the newer one's row went, before the older
 * one's and the node's, brought the older content back. */
static void test_a_crash_during_unlink_never_brings_back_older_content(void)
{
	struct cache *c;
	const char *got;
	char dir[64];
	int p[2], last, st, bad = 0;
	int64_t at;
	pid_t pid;

	for (at = 1; at < 100; at++) {
		snprintf(dir, sizeof(dir), "%s", new_dir());
		if (pipe(p) < 0)
			abort();
		pid = fork();
		if (pid == 0) {
			close(p[0]);
			c = open_cache(dir, 0);
			if (!c)
				_exit(3);
			cache_mkdir(c, "d", 0755);
			put_closed(c, "d/a", "v1", 0);
			put_closed(c, "d/a", "v2", O_TRUNC);
			cp_report(p[1], 0);
			c->crash_at = c->steps + at;
			cache_unlink(c, "d/a");
			cp_report(p[1], 1);
			cache_rmdir(c, "d");
			cp_report(p[1], 2);
			_exit(0);
		}
		close(p[1]);
		last = t_last_int(p[0], -1);
		waitpid(pid, &st, 0);
		CHECK(WIFEXITED(st) &&
		      (WEXITSTATUS(st) == 0 || WEXITSTATUS(st) == 99));
		CHECK(last >= 0);
		if (WIFEXITED(st) && WEXITSTATUS(st) == 0) {
			rm_rf(dir);
			break;
		}
		c = open_cache(dir, 0);
		CHECK(c != NULL);
		if (c) {
			got = get(c, "d/a");
			if (!cp_same(got, last == 0 ? "v2" : NULL) &&
			    !cp_same(got, NULL) && bad++ < 5)
				fprintf(stderr,
					"crash at row write %lld of the "
					"unlink: "
					"d/a is %s\n",
					(long long)at, got ? got : "(absent)");
			CHECK(cp_same(got, last == 0 ? "v2" : NULL) ||
			      cp_same(got, NULL));
			cache_close(c, 0);
		}
		rm_rf(dir);
	}
	CHECK(at > 1 && at < 100);
}

/* What a mount killed mid-upload leaves (built white-box, offline): "up",
 * whose version was UPLOADING to its Drive file, and "d/moved", which
 * took another Drive file over by a rename and lost the content it was to
 * send there (its old file's tombstone waits for that content); and
 * "torn", closed without fdatasync before a power loss. Ends like a kill
 * -9: no close. */
static void rcp_setup(const char *dir)
{
	struct cache *c;
	struct cnode *n, *d;

	if (fork() == 0) {
		c = open_cache(dir, 0);
		if (!c || put(c, "up", "u0", 0) < 0 ||
		    cache_mkdir(c, "d", 0755) < 0 ||
		    put(c, "d/moved", "m0", 0) < 0)
			_exit(3);
		pthread_mutex_lock(&c->lock);
		n = node_child(c, c->root, "up");
		node_set_drive_id(c, n, "id-up");
		n->remote_exists = true;
		store_save_node(c, n);
		n->cur->state = CV_UPLOADING;
		store_save_version(c, n->cur);
		d = node_child(c, c->root, "d");
		d->listed = true;
		store_save_node(c, d);
		n = node_child(c, d, "moved");
		node_set_drive_id(c, n, "id-taken-over");
		n->remote_exists = true;
		ver_drop(c, n->cur);
		store_save_node(c, n);
		upload_add_tomb(c, "id-own", false, n, c->close_seq + 1);
		/* Closed unsynced, and the machine went down since. */
		pthread_mutex_unlock(&c->lock);
		if (put(c, "torn", "t0", 0) < 0)
			_exit(3);
		pthread_mutex_lock(&c->lock);
		n = node_child(c, c->root, "torn");
		n->cur->unsynced = true;
		store_save_version(c, n->cur);
		store_set_meta(c, "boot_id", "a boot before this one");
		_exit(0);
	}
	wait(NULL);
}

/* Crash points in recovery itself: the next mount dies before each row
 * write of its recovery in turn, and the one after must still recover
 * as if the first had not begun: "up" waits settle_ms before it is sent
 * again (the dead mount's request may still reach Drive), the file
 * "d/moved" left keeps its Drive file, so d is listed again to show it,
 * and "torn" (never on Drive) is gone, not uploaded as if whole. */
static void test_a_crash_in_recovery_loses_none_of_its_steps(void)
{
	struct cache_opts o = {0};
	struct cache *c;
	struct cnode *n;
	char dir[64], err[256];
	int64_t at;
	int st, bad = 0;
	bool ok;

	for (at = 1; at < 100; at++) {
		snprintf(dir, sizeof(dir), "%s", new_dir());
		rcp_setup(dir);
		if (fork() == 0) {
			o.dir = dir;
			o.crash_at = at;
			if (cache_open(&c, &o, NULL, "root", err, sizeof(err)) <
			    0)
				_exit(3);
			_exit(0);
		}
		wait(&st);
		CHECK(WIFEXITED(st) &&
		      (WEXITSTATUS(st) == 99 || WEXITSTATUS(st) == 0));
		c = open_cache(dir, 0);
		CHECK(c != NULL);
		if (!c)
			break;
		pthread_mutex_lock(&c->lock);
		n = node_child(c, c->root, "up");
		ok = n && n->queued &&
		     n->due_ms > cache_now_ms() + c->o.settle_ms / 2 &&
		     upload_settling(c, "id-up");
		if (!ok && bad++ < 5)
			fprintf(stderr,
				"crash at recovery row write %lld: up is sent "
				"without waiting\n",
				(long long)at);
		CHECK(ok);
		n = node_child(c, c->root, "d");
		ok = n && !n->listed && !upload_tombed(c, "id-own");
		if (!ok && bad++ < 5)
			fprintf(stderr,
				"crash at recovery row write %lld: d/moved's "
				"own file %s\n",
				(long long)at,
				upload_tombed(c, "id-own") ? "is deleted"
							   : "stays hidden");
		CHECK(ok);
		ok = node_child(c, c->root, "torn") == NULL;
		if (!ok && bad++ < 5)
			fprintf(stderr,
				"crash at recovery row write %lld: torn is "
				"kept\n",
				(long long)at);
		CHECK(ok);
		pthread_mutex_unlock(&c->lock);
		cache_close(c, 0);
		rm_rf(dir);
		if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
			break; /* recovery ran out of row writes */
	}
	CHECK(at > 2 && at < 100);
}

/* ---- failed commits (a full cache disk) -------------------------------
 *
 * c->full_from..full_to make those commits fail as SQLITE_FULL does: the
 * change stays in memory and SQLite rolls its rows back. The store must
 * say so (ENOSPC) to whoever needed it durable, keep serving what memory
 * holds, and once commits succeed again save it all: a mount killed then
 * starts with exactly what the running one showed. */

struct dump {
	char **e;
	int n, cap;
};

static int dump_one(const char *name, const struct cache_attr *a, void *ud)
{
	struct dump *d = ud;
	char **grown;

	(void)a;
	if (d->n == d->cap) {
		d->cap = d->cap ? 2 * d->cap : 16;
		grown = realloc(d->e, d->cap * sizeof(*grown));
		if (!grown)
			abort();
		d->e = grown;
	}
	d->e[d->n++] = strdup(name);
	return 0;
}

static int dump_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Appends "path=content\n" (or "path/\n") for everything under dir,
 * sorted, to out. */
static void dump_dir(struct cache *c, const char *dir, char *out, size_t len)
{
	struct dump d = {0};
	struct cache_attr a;
	char path[1024];
	const char *got;
	int i;

	cache_readdir(c, dir, dump_one, &d);
	if (d.n)
		qsort(d.e, d.n, sizeof(*d.e), dump_cmp);
	for (i = 0; i < d.n; i++) {
		snprintf(path, sizeof(path), "%s%s%s", dir, dir[0] ? "/" : "",
			 d.e[i]);
		if (cache_getattr(c, path, &a) == 0 && a.is_dir) {
			snprintf(out + strlen(out), len - strlen(out), "%s/\n",
				 path);
			dump_dir(c, path, out, len);
		} else {
			got = get(c, path);
			snprintf(out + strlen(out), len - strlen(out),
				 "%s=%s\n", path, got ? got : "(unreadable)");
		}
		free(d.e[i]);
	}
	free(d.e);
}

static void dump_tree(struct cache *c, char *out, size_t len)
{
	out[0] = 0;
	dump_dir(c, "", out, len);
}

/* The rows of meta.db in dir as a next mount finds them, before its
 * recovery: no version or node without its node or folder, and the
 * content file of every version that is complete. Returns how many are
 * wrong (and says which). */
static int store_faults(const char *dir)
{
	static const char *const orphans[] = {
		"SELECT 'version '||vid||' of no node' FROM versions WHERE ino "
		"NOT IN (SELECT ino FROM nodes)",
		"SELECT 'node '||ino||' in no folder' FROM nodes WHERE ino != "
		"1 "
		"AND parent NOT IN (SELECT ino FROM nodes WHERE is_dir)",
		"SELECT 'tomb '||tid||' of no node' FROM tombs WHERE after_seq "
		"AND ino NOT IN (SELECT ino FROM nodes)",
	};
	char path[4200];
	sqlite3_stmt *st;
	sqlite3 *db;
	struct stat sb;
	size_t i;
	int bad = 0;

	snprintf(path, sizeof(path), "%s/meta.db", dir);
	if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL) != 0)
		return 1;
	for (i = 0; i < sizeof(orphans) / sizeof(orphans[0]); i++) {
		if (sqlite3_prepare_v2(db, orphans[i], -1, &st, NULL) != 0)
			bad++;
		while (sqlite3_step(st) == SQLITE_ROW && ++bad)
			fprintf(stderr, "meta.db: %s\n",
				sqlite3_column_text(st, 0));
		sqlite3_finalize(st);
	}
	sqlite3_prepare_v2(db,
			   "SELECT vid FROM versions WHERE complete AND "
			   "state != 0",
			   -1, &st, NULL);
	while (sqlite3_step(st) == SQLITE_ROW) {
		snprintf(path, sizeof(path), "%s/data/%lld", dir,
			 (long long)sqlite3_column_int64(st, 0));
		if (stat(path, &sb) < 0 && ++bad)
			fprintf(stderr, "meta.db: version %s has no content\n",
				path);
	}
	sqlite3_finalize(st);
	sqlite3_close(db);
	return bad;
}

/* Runs body(c, dir, arg) in a child that then dies as by kill -9, and
 * checks the rows it left; then whether a new mount shows `want`, or
 * (NULL) what the child's cache showed last. Returns the child's exit
 * code (0, or 77: the body ran out of commits to fail), -1 if wrong. */
static int shown_after_kill(const char *dir,
			    int (*body)(struct cache *, const char *, int),
			    int arg, const char *want)
{
	static char was[65536], now[65536];
	struct cache *c;
	int p[2], st, rc;
	ssize_t n, got = 0;

	if (pipe(p) < 0)
		abort();
	if (fork() == 0) {
		close(p[0]);
		c = open_cache(dir, 0);
		if (!c)
			_exit(3);
		st = body(c, dir, arg);
		dump_tree(c, was, sizeof(was));
		if (write(p[1], was, strlen(was)) < 0)
			_exit(4);
		_exit(st); /* no cache_close: a kill */
	}
	close(p[1]);
	while ((n = read(p[0], was + got, sizeof(was) - 1 - got)) > 0)
		got += n;
	was[got] = 0;
	close(p[0]);
	wait(&st);
	rc = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
	if (rc != 0 && rc != 77) {
		fprintf(stderr, "arg %d: the script said %d\n", arg, rc);
		rc = -1;
	}
	if (store_faults(dir))
		rc = -1;
	c = open_cache(dir, 0);
	if (!c)
		return -1;
	dump_tree(c, now, sizeof(now));
	cache_close(c, 0);
	if (strcmp(want ? want : was, now) != 0) {
		fprintf(stderr, "arg %d: wanted\n%s-- the next mount shows\n%s",
			arg, want ? want : was, now);
		rc = -1;
	}
	return rc;
}

/* A note that is always the same text. */
static char *fixed_note(int64_t seq, void *arg)
{
	(void)seq;
	return strdup(arg);
}

static int import_text(struct cache *c, const char *dir, const char *path,
		       const char *text)
{
	char src[4096];
	struct stat st;
	int fd, rc;

	snprintf(src, sizeof(src), "%s/src", dir);
	fd = open(src, O_RDWR | O_CREAT | O_TRUNC, 0640);
	if (fd < 0 || write(fd, text, strlen(text)) != (ssize_t)strlen(text) ||
	    fstat(fd, &st) < 0)
		abort();
	rc = cache_import(c, path, fd, &st, 0, NULL, NULL, fixed_note, "note");
	close(fd);
	return rc;
}

static void disk_full_from_now(struct cache *c, bool full)
{
	pthread_mutex_lock(&c->lock);
	c->full_from = full ? c->commits + 1 : 0;
	c->full_to = INT64_MAX;
	pthread_mutex_unlock(&c->lock);
}

/* Stays full until the end (arg 1: killed so) or has room again and
 * takes one more change (arg 0). */
static int full_script(struct cache *c, const char *dir, int arg)
{
	struct cache_handle *h;
	struct cache_attr a;
	char path[4200];
	struct stat sb;
	int64_t vid;
	int bad = 0;

	if (put(c, "a", "a0", 0) || put(c, "b", "b0", 0) ||
	    cache_mkdir(c, "d", 0755) || put(c, "d/x", "x0", 0) ||
	    cache_open_file(c, "f", O_WRONLY | O_CREAT, 0644, &h))
		return 10;
	vid = node_child(c, c->root, "a")->cur->vid;
	disk_full_from_now(c, true);
	/* Each says the disk is full, and the mount shows the change. */
	bad += cache_rename(c, "b", "a", 0) != -ENOSPC;
	bad += !cp_same(get(c, "a"), "b0") || get(c, "b");
	/* a0's content file stays: its row may be all there is on disk. */
	snprintf(path, sizeof(path), "%s/data/%lld", dir, (long long)vid);
	bad += stat(path, &sb) != 0;
	bad += cache_unlink(c, "d/x") != -ENOSPC;
	bad += cache_getattr(c, "d/x", &a) != -ENOENT;
	bad += import_text(c, dir, "d/imp", "imp") != -ENOSPC;
	bad += !cp_same(get(c, "d/imp"), "imp");
	bad += cache_write(h, "f1", 2, 0) != 2;
	bad += cache_fsync(h) != -ENOSPC;
	bad += cache_flush(h) != -ENOSPC;
	cache_release(h);
	bad += !cp_same(get(c, "f"), "f1");
	/* What it cannot save it does not make. */
	bad += cache_mkdir(c, "e", 0755) != -ENOSPC;
	bad += cache_open_file(c, "g", O_WRONLY | O_CREAT, 0644, &h) != -ENOSPC;
	bad += cache_getattr(c, "e", &a) != -ENOENT;
	bad += cache_getattr(c, "g", &a) != -ENOENT;
	bad += cache_chmod(c, "a", 0600) != -ENOSPC;
	if (bad)
		return 20 + bad;
	if (arg == 1)
		return 0;
	disk_full_from_now(c, false);
	if (put(c, "h", "h0", 0))
		return 31;
	if (stat(path, &sb) == 0)
		return 32; /* saved: a0's file goes with its row */
	return 0;
}

static void test_a_failed_commit_keeps_what_the_mount_shows(void)
{
	char dir[64];

	snprintf(dir, sizeof(dir), "%s", new_dir());
	CHECK_INT(shown_after_kill(dir, full_script, 0, NULL), 0);
	rm_rf(dir);
	/* Killed while still full: the last save, whole (f, never closed,
	 * goes as after any kill). */
	snprintf(dir, sizeof(dir), "%s", new_dir());
	CHECK_INT(shown_after_kill(dir, full_script, 1,
				   "a=a0\nb=b0\nd/\nd/x=x0\n"),
		  0);
	rm_rf(dir);
}

/* The crash-point script with commit number k failing (arg = 2k), or
 * every commit from k on (2k + 1) until it ends; then there is room
 * again and one more change is made. */
static int cp_full(struct cache *c, const char *dir, int arg)
{
	int64_t from;
	int fd = open("/dev/null", O_WRONLY);

	pthread_mutex_lock(&c->lock);
	from = c->full_from = c->commits + arg / 2;
	c->full_to = arg % 2 ? INT64_MAX : from;
	pthread_mutex_unlock(&c->lock);
	cp_script(c, dir, fd);
	close(fd);
	pthread_mutex_lock(&c->lock);
	c->full_from = 0;
	pthread_mutex_unlock(&c->lock);
	if (cache_mkdir(c, "z", 0755) < 0)
		return 5;
	return c->commits < from ? 77 : 0;
}

static void test_a_failed_commit_anywhere_keeps_what_the_mount_shows(void)
{
	char dir[64];
	int k, mode, rc = 0;

	for (mode = 0; mode < 2; mode++) {
		for (k = 1; k < 500; k++) {
			snprintf(dir, sizeof(dir), "%s", new_dir());
			rc = shown_after_kill(dir, cp_full, 2 * k + mode, NULL);
			rm_rf(dir);
			CHECK(rc >= 0);
			if (rc != 0)
				break;
		}
		CHECK(rc == 77 && k > 10); /* the script ran out of commits */
	}
}

/* A real SQLITE_FULL rather than the hook: meta.db may not grow
 * (max_page_count), so writes fail where SQLite finds no room, inside
 * transactions too, and SQLite decides what it rolls back. */
static int meta_db_full(struct cache *c, const char *dir, int arg)
{
	char name[32], other[32];
	int i, full = 0;

	(void)dir;
	(void)arg;
	pthread_mutex_lock(&c->lock);
	/* Never below its size: it may not grow from now on. */
	sqlite3_exec(c->db, "PRAGMA max_page_count=1", NULL, NULL, NULL);
	pthread_mutex_unlock(&c->lock);
	for (i = 0; i < 400 && full < 20; i++) {
		snprintf(name, sizeof(name), "f%03d", i);
		if (put(c, name, name, 0) == -ENOSPC)
			full++;
		if (i % 3 == 2 && full) {
			snprintf(other, sizeof(other), "f%03d", i - 2);
			cache_rename(c, name, other, 0);
			cache_unlink(c, other);
		}
	}
	if (!full)
		return 6;
	pthread_mutex_lock(&c->lock);
	sqlite3_exec(c->db, "PRAGMA max_page_count=1073741823", NULL, NULL,
		     NULL);
	pthread_mutex_unlock(&c->lock);
	return put(c, "after", "room again", 0) < 0 ? 7 : 0;
}

static void test_a_full_meta_db_keeps_what_the_mount_shows(void)
{
	char dir[64];

	snprintf(dir, sizeof(dir), "%s", new_dir());
	CHECK_INT(shown_after_kill(dir, meta_db_full, 0, NULL), 0);
	rm_rf(dir);
}

/* The synchronous level each commit was made at (a WAL hook runs right
 * after it): 2 is FULL, on disk when the commit returns. */
static int commit_level(void *arg, sqlite3 *db, const char *name, int pages)
{
	sqlite3_stmt *st;

	(void)name;
	(void)pages;
	if (sqlite3_prepare_v2(db, "PRAGMA synchronous", -1, &st, NULL) ==
		    SQLITE_OK &&
	    sqlite3_step(st) == SQLITE_ROW)
		*(int *)arg = sqlite3_column_int(st, 0);
	sqlite3_finalize(st);
	return SQLITE_OK;
}

/* Commits number `from` to `to` from now (1: the next) fail. */
static void fail_commits(struct cache *c, int64_t from, int64_t to)
{
	pthread_mutex_lock(&c->lock);
	c->full_from = c->commits + from;
	c->full_to = c->commits + to;
	pthread_mutex_unlock(&c->lock);
}

/* An import with its note, and a note, are durable commits: fs/ removes
 * the local file once they return. When the commit failed (or the store
 * was behind already) and the resync right after saved it, that resync
 * was made at synchronous=NORMAL: the call returned 0 with the rows only
 * in the page cache, and a power loss after the local unlink lost the
 * content. A note saved so was also reported as not saved. */
static void test_a_durable_commit_saved_by_a_resync_is_durable(void)
{
	const char *dir = new_dir();
	struct cache *c = open_cache(dir, 0);
	char note[64];
	int level = 0;

	CHECK(c != NULL);
	if (!c)
		return;
	pthread_mutex_lock(&c->lock);
	sqlite3_wal_hook(c->db, commit_level, &level);
	pthread_mutex_unlock(&c->lock);
	/* Its own COMMIT fails, the resync right after succeeds. */
	fail_commits(c, 1, 1);
	CHECK_INT(import_text(c, dir, "a", "A"), 0);
	CHECK_INT(c->store_err, 0);
	CHECK_INT(level, 2);
	/* Behind before it begins: a close and its resync failed. */
	fail_commits(c, 1, 2);
	CHECK_INT(put(c, "b", "B", 0), -ENOSPC);
	CHECK_INT(c->store_err, -ENOSPC);
	level = 0;
	CHECK_INT(cache_move_note(c, "x"), 0);
	CHECK_INT(c->store_err, 0);
	CHECK_INT(level, 2);
	cache_move_pending(c, note, sizeof(note));
	CHECK_STR(note, "x");
	fail_commits(c, 1, 2);
	CHECK_INT(put(c, "b", "B2", 0), -ENOSPC);
	level = 0;
	CHECK_INT(import_text(c, dir, "a", "A2"), 0);
	CHECK_INT(c->store_err, 0);
	CHECK_INT(level, 2);
	/* A commit that is not durable is not made so. */
	CHECK_INT(put(c, "c", "C", 0), 0);
	CHECK_INT(level, 1);
	pthread_mutex_lock(&c->lock);
	sqlite3_wal_autocheckpoint(c->db, 16384); /* its own hook again */
	pthread_mutex_unlock(&c->lock);
	cache_close(c, 0);
	rm_rf(dir);
}

static void test_eviction_never_touches_dirty(void)
{
	const char *dir = new_dir();
	struct cache *c = open_cache(dir, 3000);
	char name[16], data[1001];
	struct cnode *n;
	int i, clean = 0, closed = 0;

	memset(data, 'z', 1000);
	data[1000] = 0;
	for (i = 0; i < 6; i++) {
		snprintf(name, sizeof(name), "f%d", i);
		CHECK_INT(put(c, name, data, 0), 0);
	}
	pthread_mutex_lock(&c->lock);
	for (i = 0; i < 4; i++) { /* f0..f3 "uploaded" */
		snprintf(name, sizeof(name), "f%d", i);
		n = node_child(c, c->root, name);
		n->cur->state = CV_CLEAN;
		n->cur->atime_ms = i;
		n->remote_exists = true;
	}
	evict_run(c);
	for (i = 0; i < 6; i++) {
		snprintf(name, sizeof(name), "f%d", i);
		n = node_child(c, c->root, name);
		if (n->cur && n->cur->state == CV_CLEAN)
			clean++;
		if (n->cur && n->cur->state == CV_CLOSED)
			closed++;
	}
	/* The two dirty files stay whatever the budget; the oldest clean
	 * ones go until the clean bytes fit. */
	CHECK_INT(closed, 2);
	CHECK_INT(clean, 3);
	CHECK(node_child(c, c->root, "f0")->cur == NULL);
	pthread_mutex_unlock(&c->lock);
	cache_close(c, 0);
	rm_rf(dir);
}

/* An fsynced, uploaded snapshot of a file still open for writing shares
 * the open version's file: evicting it frees nothing and would make the
 * close upload the same bytes again, so it stays. */
static void test_eviction_keeps_the_snapshot_of_an_open_file(void)
{
	const char *dir = new_dir();
	struct cache *c = open_cache(dir, 10);
	struct cache_handle *h;
	struct cver *s[4];

	CHECK_INT(cache_open_file(c, "ck", O_WRONLY | O_CREAT, 0644, &h), 0);
	CHECK_INT(cache_write(h, "0123456789abcdef", 16, 0), 16);
	CHECK_INT(cache_fsync(h), 0);
	CHECK_INT(vers_in(c, "ck", CV_CLOSED, s), 1);
	pthread_mutex_lock(&c->lock);
	s[0]->state = CV_CLEAN; /* white-box: as if uploaded */
	evict_run(c);
	pthread_mutex_unlock(&c->lock);
	CHECK_INT(count_state(c, "ck", CV_CLEAN), 1);
	cache_release(h);
	/* Closed unchanged: the open version is that snapshot, clean. */
	CHECK_INT(count_state(c, "ck", CV_CLOSED), 0);
	CHECK_STR(get(c, "ck"), "0123456789abcdef");
	cache_close(c, 0);
	rm_rf(dir);
}

static void test_status_json(void)
{
	const char *dir = new_dir();
	struct cache *c = open_cache(dir, 1000);
	char *s;

	CHECK_INT(put(c, "q", "12345", 0), 0);
	s = cache_status_json(c);
	CHECK(s != NULL);
	CHECK(strstr(s, "\"queue_files\":1") != NULL);
	CHECK(strstr(s, "\"queue_bytes\":5") != NULL);
	CHECK(strstr(s, "\"cache_max\":1000") != NULL);
	CHECK(strstr(s, "\"locks_held\":[]") != NULL);
	CHECK(strstr(s, "\"dirty_files\":1") != NULL);
	free(s);
	cache_close(c, 0);
	rm_rf(dir);
}

/* A file or folder renamed into a folder made after it has a smaller ino
 * than its new parent: the store loaded rows in ino order and dropped such
 * a row as an orphan at the next open, with its content (unlinked as no
 * row's) and everything under it. */
static void test_a_rename_into_a_newer_folder_survives_a_restart(void)
{
	const char *dir = new_dir();
	struct cache *c = open_cache(dir, 0);

	CHECK_INT(put(c, "f", "file", 0), 0);
	CHECK_INT(cache_mkdir(c, "x", 0755), 0);
	CHECK_INT(put(c, "x/g", "inner", 0), 0);
	CHECK_INT(cache_mkdir(c, "new", 0755), 0);
	CHECK_INT(cache_mkdir(c, "new/y", 0755), 0);
	CHECK_INT(cache_rename(c, "f", "new/y/f", 0), 0);
	CHECK_INT(cache_rename(c, "x", "new/y/x", 0), 0);
	cache_close(c, 0);
	c = open_cache(dir, 0);
	CHECK(c != NULL);
	if (!c)
		return;
	CHECK_STR(get(c, "new/y/f"), "file");
	CHECK_STR(get(c, "new/y/x/g"), "inner");
	CHECK_INT(count_state(c, "new/y/x/g", CV_CLOSED), 1);
	cache_close(c, 0);
	rm_rf(dir);
}

static void test_state_survives_clean_restart(void)
{
	const char *dir = new_dir();
	struct cache *c = open_cache(dir, 0);
	struct cache_attr a;

	CHECK_INT(cache_mkdir(c, "runs", 0755), 0);
	CHECK_INT(cache_mkdir(c, "runs/r1", 0700), 0);
	CHECK_INT(put(c, "runs/r1/ckpt", "weights", 0), 0);
	cache_close(c, 0);
	c = open_cache(dir, 0);
	CHECK_INT(cache_getattr(c, "runs/r1", &a), 0);
	CHECK_INT(a.mode, S_IFDIR | 0700);
	CHECK_STR(get(c, "runs/r1/ckpt"), "weights");
	cache_close(c, 0);
	rm_rf(dir);
}

/* A cache dir made by the first release (nodes and tombs without the
 * columns added since) opens, gains the columns, and keeps what it held;
 * the revision a node's md5 is of survives a restart. */
static void test_cache_dir_of_an_older_release_opens_and_keeps_revisions(void)
{
	const char *dir = new_dir();
	char path[256], *err = NULL;
	struct cnode *n = NULL;
	struct cache *c;
	sqlite3 *db;

	snprintf(path, sizeof(path), "%s/meta.db", dir);
	CHECK_INT(sqlite3_open(path, &db), SQLITE_OK);
	CHECK_INT(
		sqlite3_exec(
			db,
			"CREATE TABLE meta(k TEXT PRIMARY KEY, v TEXT);"
			"CREATE TABLE nodes(ino INTEGER PRIMARY KEY,"
			" parent INTEGER, name TEXT, is_dir INT, mode INT,"
			" mtime_ns INT, ctime_ns INT, drive_id TEXT,"
			" remote_exists INT, remote_parent TEXT,"
			" remote_name TEXT, md5 TEXT, rsize INT, rversion INT,"
			" listed INT, mtime_dirty INT, landed_seq INT);"
			"CREATE TABLE versions(vid INTEGER PRIMARY KEY,"
			" ino INT, state INT, size INT, mtime_ns INT,"
			" close_seq INT, complete INT, was_clean INT,"
			" session_url TEXT, session_off INT, atime_ms INT,"
			" unsynced INT DEFAULT 0);"
			"CREATE TABLE tombs(tid INTEGER PRIMARY KEY,"
			" drive_id TEXT, hard INT, ino INT);"
			"INSERT INTO nodes VALUES(1,0,'',1,16877,0,0,"
			"'root',1,'','','',0,0,1,0,0);"
			"INSERT INTO nodes VALUES(2,1,'old.txt',0,33188,0,0,"
			"'id-old',1,'root','old.txt',"
			"'900150983cd24fb0d6963f7d28e17f72',3,1,1,0,0);",
			NULL, NULL, &err),
		SQLITE_OK);
	sqlite3_free(err);
	sqlite3_close(db);
	c = open_cache(dir, 0);
	CHECK(c != NULL);
	if (!c)
		goto out;
	pthread_mutex_lock(&c->lock);
	CHECK_INT(node_lookup(c, "old.txt", &n), 0);
	if (n) {
		snprintf(n->rev, sizeof(n->rev), "rev-7");
		CHECK_INT(store_save_node(c, n), 0);
	}
	pthread_mutex_unlock(&c->lock);
	cache_close(c, 0);
	c = open_cache(dir, 0);
	CHECK(c != NULL);
	if (!c)
		goto out;
	n = NULL;
	pthread_mutex_lock(&c->lock);
	CHECK_INT(node_lookup(c, "old.txt", &n), 0);
	CHECK_STR(n ? n->rev : NULL, "rev-7");
	pthread_mutex_unlock(&c->lock);
	cache_close(c, 0);
out:
	rm_rf(dir);
}

/* The cache disk fills up: the writer gets ENOSPC, what was queued stays.
 * Runs in a child with its own mount namespace and a 2 MiB tmpfs; skipped
 * where that is not allowed (not root). */
static int enospc_child(const char *dir)
{
	struct cache_handle *h;
	struct cache *c;
	static char block[64 << 10];
	struct cache_attr a;
	struct stat st;
	ssize_t w = 0;
	off_t off = 0;
	int src;

	if (unshare(CLONE_NEWNS) < 0 ||
	    mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0 ||
	    mount("tmpfs", dir, "tmpfs", 0, "size=2m") < 0)
		return 77;
	c = open_cache(dir, 0);
	if (!c || put(c, "queued.txt", "keep me", 0) < 0)
		return 1;
	if (cache_open_file(c, "big", O_WRONLY | O_CREAT, 0644, &h) < 0)
		return 2;
	while (off < (8 << 20)) {
		w = cache_write(h, block, sizeof(block), off);
		if (w <= 0)
			break;
		off += w;
	}
	cache_release(h);
	if (w != -ENOSPC)
		return 3;
	if (!get(c, "queued.txt") || strcmp(get(c, "queued.txt"), "keep me"))
		return 4;
	if (count_state(c, "queued.txt", CV_CLOSED) != 1)
		return 5;
	/* A writer needing a copy of the queued version on a full disk. */
	w = cache_open_file(c, "queued.txt", O_WRONLY, 0, &h);
	if (w == 0)
		cache_release(h);
	else if (w != -ENOSPC)
		return 6;
	if (!get(c, "queued.txt") || strcmp(get(c, "queued.txt"), "keep me"))
		return 7;
	/* A rename onto the persisted tree that does not fit leaves no
	 * file (an empty one, before) where it would have landed. */
	src = memfd_create("src", MFD_CLOEXEC);
	if (src < 0 || ftruncate(src, 4 << 20) < 0 || fstat(src, &st) < 0)
		return 8;
	w = cache_import(c, "imported.bin", src, &st, 0, NULL, NULL, NULL,
			 NULL);
	close(src);
	if (w != -ENOSPC)
		return 9;
	if (cache_getattr(c, "imported.bin", &a) != -ENOENT)
		return 10;
	cache_close(c, 0);
	return 0;
}

/* Runs child(dir) in a forked child (it mounts a small tmpfs in its own
 * mount namespace); 77 = not allowed here (not root): skipped. */
static void in_child(const char *name, int (*child)(const char *))
{
	const char *dir = new_dir();
	int st = 0;
	pid_t pid = fork();

	if (pid == 0)
		_exit(child(dir));
	waitpid(pid, &st, 0);
	if (WIFEXITED(st) && WEXITSTATUS(st) == 77)
		printf("%s: skipped (no mount namespace)\n", name);
	else
		CHECK_INT(WIFEXITED(st) ? WEXITSTATUS(st) : -1, 0);
	rm_rf(dir);
}

static void test_disk_full_gives_enospc_and_keeps_the_queue(void)
{
	in_child(__func__, enospc_child);
}

/* A cache dir on a full disk: cache_open fails saying so, SQLite's reason
 * first (after the statement, it was cut off when that was the schema). */
static int full_at_open_child(const char *dir)
{
	struct cache_opts o = {0};
	struct cache *c = NULL;
	static char block[4096];
	char err[512], path[4200];
	int fd;

	if (unshare(CLONE_NEWNS) < 0 ||
	    mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0 ||
	    mount("tmpfs", dir, "tmpfs", 0, "size=256k") < 0)
		return 77;
	snprintf(path, sizeof(path), "%s/filler", dir);
	fd = open(path, O_WRONLY | O_CREAT, 0600);
	while (fd >= 0 && write(fd, block, sizeof(block)) > 0)
		;
	if (fd >= 0)
		close(fd);
	o.dir = dir;
	err[0] = 0;
	if (cache_open(&c, &o, NULL, "root", err, sizeof(err)) == 0)
		return 1;
	/* The reason first: a long statement cut the line before it. */
	if (!strstr(err, "sqlite: database or disk is full")) {
		fprintf(stderr, "cache_open said: %s\n", err);
		return 2;
	}
	return 0;
}

static void test_a_full_cache_disk_at_open_says_so(void)
{
	in_child(__func__, full_at_open_child);
}

static void test_long_open_log_is_snapshotted_a_checkpoint_is_not(void)
{
	const char *dir = new_dir();
	struct cache_opts o = {0};
	struct cache_handle *h, *h2;
	struct cache *c = NULL;
	char err[256];
	int i;

	o.dir = dir;
	o.long_open_upload_s = 1;
	CHECK_INT(cache_open(&c, &o, NULL, "root", err, sizeof(err)), 0);
	CHECK_INT(cache_open_file(c, "train.log", O_WRONLY | O_CREAT | O_APPEND,
				  0644, &h),
		  0);
	CHECK_INT(cache_open_file(c, "ckpt.pt", O_WRONLY | O_CREAT, 0644, &h2),
		  0);
	CHECK_INT(cache_write(h, "epoch 1\n", 8, 0), 8);
	CHECK_INT(cache_write(h2, "half a checkpoint", 17, 0), 17);
	/* A log never closed, yet a complete copy gets queued. */
	for (i = 0; i < 40 && count_state(c, "train.log", CV_CLOSED) == 0; i++)
		usleep(100000);
	CHECK_INT(count_state(c, "train.log", CV_CLOSED), 1);
	CHECK_INT(count_state(c, "train.log", CV_OPEN), 1);
	/* A file written without O_APPEND (a checkpoint being written for
	 * minutes) is not: half of it must never reach Drive. */
	usleep(1500 * 1000);
	CHECK_INT(count_state(c, "ckpt.pt", CV_CLOSED), 0);
	cache_release(h2);
	CHECK_INT(count_state(c, "ckpt.pt", CV_CLOSED), 1);
	cache_release(h);
	cache_close(c, 0);
	rm_rf(dir);
}

int main(void)
{
	RUN(test_write_close_read_back);
	RUN(test_otrunc_writes_a_new_version);
	RUN(test_writers_share_an_open_version);
	RUN(test_closed_version_not_modified_by_later_writer);
	RUN(test_clean_version_modified_in_place);
	RUN(test_recovery_drops_open_keeps_closed);
	RUN(test_close_is_durable_at_flush_before_release);
	RUN(test_a_close_is_one_commit_and_close_numbers_only_grow);
	RUN(test_an_import_note_is_not_fooled_by_a_close_during_the_copy);
	RUN(test_a_crash_at_any_row_write_keeps_what_returned);
	RUN(test_a_crash_during_unlink_never_brings_back_older_content);
	RUN(test_a_crash_in_recovery_loses_none_of_its_steps);
	RUN(test_a_failed_commit_keeps_what_the_mount_shows);
	RUN(test_a_failed_commit_anywhere_keeps_what_the_mount_shows);
	RUN(test_a_full_meta_db_keeps_what_the_mount_shows);
	RUN(test_a_durable_commit_saved_by_a_resync_is_durable);
	RUN(test_write_after_flush_makes_a_new_version);
	RUN(test_unsynced_close_dropped_after_a_reboot);
	RUN(test_second_open_on_same_dir_is_busy);
	RUN(test_dir_modes_are_private);
	RUN(test_tree_mkdir_rmdir_unlink);
	RUN(test_rename_over_an_existing_file);
	RUN(test_truncate_append_and_attrs);
	RUN(test_fsync_snapshot_then_close_queues_once);
	RUN(test_fsync_snapshot_shares_the_file_until_the_next_change);
	RUN(test_a_snapshot_sharing_a_file_survives_a_kill);
	RUN(test_a_write_after_flush_reopens_a_clean_version_s_file);
	RUN(test_parallel_writes_after_flush_reopen_once);
	RUN(test_a_reader_follows_this_mount_s_rewrites);
	RUN(test_a_reader_does_not_hold_every_rewrite);
	RUN(test_a_release_racing_a_move_counts_right);
	RUN(test_writing_an_unlinked_fsynced_file_leaves_no_content_file);
	RUN(test_an_import_during_a_snapshot_is_kept);
	RUN(test_import_and_export);
	RUN(test_eviction_never_touches_dirty);
	RUN(test_eviction_keeps_the_snapshot_of_an_open_file);
	RUN(test_status_json);
	RUN(test_state_survives_clean_restart);
	RUN(test_a_rename_into_a_newer_folder_survives_a_restart);
	RUN(test_cache_dir_of_an_older_release_opens_and_keeps_revisions);
	RUN(test_long_open_log_is_snapshotted_a_checkpoint_is_not);
	RUN(test_disk_full_gives_enospc_and_keeps_the_queue);
	RUN(test_a_full_cache_disk_at_open_says_so);
	return t_done();
}
