/* test_cache_drive.c — cache/ against the Drive emulator: uploads after
 * close, fsync, superseding, resumed uploads after a kill, faults without
 * duplicates, cold reads, the changes feed.
 *
 * Needs VECTUR_TEST_ENDPOINT (the emulator's base URL); without it every
 * test prints "skipped" and passes, so `make unit` works anywhere.
 * tests/integration/test_cache_emulator.py runs it with the emulator.
 * VECTUR_TEST_RCLONE_CONFIG may name an rclone config with a remote "emu";
 * else one is written to a temp dir.
 */
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <openssl/evp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "cache.h"
#include "cache_int.h"
#include "drive.h"
#include "t.h"

static const char *endpoint;
static char conf_path[256];
static struct drive_client *dc;
static char top_id[128]; /* this run's folder on the emulator */

/* ---- helpers ------------------------------------------------------------ */

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void md5_hex(const void *buf, size_t len, char out[33])
{
	unsigned char d[16];
	unsigned int dl = 0;
	int i;

	EVP_Digest(buf, len, d, &dl, EVP_md5(), NULL);
	for (i = 0; i < 16; i++)
		sprintf(out + 2 * i, "%02x", d[i]);
}

static void fill(char *buf, size_t len, unsigned seed)
{
	size_t i;
	uint32_t x = seed * 2654435761u + 1;

	for (i = 0; i < len; i++) {
		x ^= x << 13;
		x ^= x >> 17;
		x ^= x << 5;
		buf[i] = (char)x;
	}
}

struct membuf {
	char *p;
	size_t n;
};

static size_t mem_cb(char *d, size_t s, size_t n, void *ud)
{
	struct membuf *m = ud;
	char *np = realloc(m->p, m->n + s * n + 1);

	if (!np)
		return 0;
	m->p = np;
	memcpy(m->p + m->n, d, s * n);
	m->n += s * n;
	m->p[m->n] = 0;
	return s * n;
}

/* GET/POST on the emulator's /_emu control endpoints. */
static char *emu(const char *method, const char *path, const char *body)
{
	struct membuf m = {0};
	struct curl_slist *h = NULL;
	char url[512];
	CURL *cu = curl_easy_init();

	snprintf(url, sizeof(url), "%s%s", endpoint, path);
	curl_easy_setopt(cu, CURLOPT_URL, url);
	curl_easy_setopt(cu, CURLOPT_CUSTOMREQUEST, method);
	curl_easy_setopt(cu, CURLOPT_WRITEFUNCTION, mem_cb);
	curl_easy_setopt(cu, CURLOPT_WRITEDATA, &m);
	if (body) {
		h = curl_slist_append(h, "Content-Type: application/json");
		curl_easy_setopt(cu, CURLOPT_HTTPHEADER, h);
		curl_easy_setopt(cu, CURLOPT_POSTFIELDS, body);
	}
	curl_easy_perform(cu);
	curl_slist_free_all(h);
	curl_easy_cleanup(cu);
	return m.p;
}

static void set_faults(const char *json)
{
	free(emu("POST", "/_emu/faults", json));
}

static int64_t stat_count(const char *kind)
{
	char *s = emu("GET", "/_emu/stats", NULL);
	struct json_object *o = json_tokener_parse(s ? s : "{}"), *r, *k;
	int64_t n = 0;

	if (o && json_object_object_get_ex(o, "requests", &r) &&
	    json_object_object_get_ex(r, kind, &k)) {
		if (json_object_is_type(k, json_type_object)) {
			struct json_object *c;

			if (json_object_object_get_ex(k, "count", &c))
				n = json_object_get_int64(c);
		} else {
			n = json_object_get_int64(k);
		}
	}
	json_object_put(o);
	free(s);
	return n;
}

/* Every md5 Drive ever stored for file id, via /_emu/versions. */
static int drive_versions(const char *id, char md5s[][33], int max)
{
	char *s = emu("GET", "/_emu/versions", NULL);
	struct json_object *o = json_tokener_parse(s ? s : "{}"), *files;
	int i, j, n = 0;

	if (o && json_object_object_get_ex(o, "files", &files)) {
		for (i = 0; i < (int)json_object_array_length(files); i++) {
			struct json_object *f =
				json_object_array_get_idx(files, i);
			struct json_object *fid, *vs;

			if (!json_object_object_get_ex(f, "id", &fid) ||
			    strcmp(json_object_get_string(fid), id) != 0 ||
			    !json_object_object_get_ex(f, "versions", &vs))
				continue;
			for (j = 0;
			     j < (int)json_object_array_length(vs) && n < max;
			     j++) {
				struct json_object *m;

				if (json_object_object_get_ex(
					    json_object_array_get_idx(vs, j),
					    "md5", &m))
					snprintf(md5s[n++], 33, "%s",
						 json_object_get_string(m));
			}
		}
	}
	json_object_put(o);
	free(s);
	return n;
}

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
	co.max_retries = 10;
	rc = drive_client_new(out, &cfg, &co, &err);
	if (rc < 0)
		fprintf(stderr, "client: %s\n", err.message);
	drive_config_free(&cfg);
	return rc;
}

/* A forked child must not share the parent's client: its connections
 * (sockets) would carry both processes' requests. */
static void child_client(void)
{
	if (new_client(&dc) < 0)
		_exit(5);
}

static int setup(void)
{
	struct drive_file root, f;
	struct drive_err err;
	char name[64];
	const char *given = getenv("VECTUR_TEST_RCLONE_CONFIG");
	FILE *fp;

	if (given) {
		snprintf(conf_path, sizeof(conf_path), "%s", given);
	} else {
		char d[] = "/tmp/vectur-conf-XXXXXX";

		if (!mkdtemp(d))
			return -1;
		snprintf(conf_path, sizeof(conf_path), "%s/rclone.conf", d);
		fp = fopen(conf_path, "w");
		if (!fp)
			return -1;
		fprintf(fp,
			"[emu]\ntype = drive\nscope = drive\n"
			"token = {\"access_token\":\"x\",\"token_type\":"
			"\"Bearer\",\"refresh_token\":\"test-refresh-token\","
			"\"expiry\":\"2000-01-01T00:00:00Z\"}\n");
		fclose(fp);
	}
	if (new_client(&dc) < 0)
		return -1;
	if (drive_root(dc, &root, &err) < 0) {
		fprintf(stderr, "root: %s\n", err.message);
		return -1;
	}
	snprintf(name, sizeof(name), "cache-test-%d-%ld", (int)getpid(),
		 (long)time(NULL));
	if (drive_mkdir(dc, root.id, name, &f, &err) < 0) {
		fprintf(stderr, "mkdir: %s\n", err.message);
		return -1;
	}
	snprintf(top_id, sizeof(top_id), "%s", f.id);
	return 0;
}

/* A fresh Drive folder and cache dir for one test. */
static int env_settle_ms; /* 0: the default 10 s */

struct env {
	char root_id[128];
	char dir[64];
	struct cache *c;
};

static int env_open(struct env *e, int write_back_ms, bool fresh)
{
	struct cache_opts o = {0};
	struct drive_file f;
	struct drive_err err;
	char name[64], ebuf[256];
	static int k;
	int rc;

	if (fresh) {
		snprintf(name, sizeof(name), "t%d", ++k);
		if (drive_mkdir(dc, top_id, name, &f, &err) < 0)
			return -1;
		snprintf(e->root_id, sizeof(e->root_id), "%s", f.id);
		snprintf(e->dir, sizeof(e->dir), "/tmp/vectur-cd-XXXXXX");
		if (!mkdtemp(e->dir))
			return -1;
	}
	o.dir = e->dir;
	o.write_back_ms = write_back_ms;
	o.transfers = 4;
	o.chunk_size = 1 << 20;
	o.poll_interval_s = 0;
	o.read_timeout_s = 30;
	o.use_trash = false;
	o.settle_ms = env_settle_ms;
	rc = cache_open(&e->c, &o, dc, e->root_id, ebuf, sizeof(ebuf));
	if (rc < 0)
		fprintf(stderr, "cache_open: %s\n", ebuf);
	return rc;
}

static void env_close(struct env *e, bool rm)
{
	char cmd[128];

	if (e->c)
		cache_close(e->c, 30);
	e->c = NULL;
	if (rm) {
		snprintf(cmd, sizeof(cmd), "rm -rf %s", e->dir);
		if (system(cmd) != 0)
			fprintf(stderr, "rm failed\n");
	}
}

static int put(struct cache *c, const char *path, const void *data, size_t len)
{
	struct cache_handle *h;
	size_t off = 0;
	ssize_t w;
	int rc;

	rc = cache_open_file(c, path, O_WRONLY | O_CREAT | O_TRUNC, 0644, &h);
	if (rc < 0)
		return rc;
	while (off < len) {
		size_t n = len - off > (1 << 20) ? (1 << 20) : len - off;

		w = cache_write(h, (const char *)data + off, n, off);
		if (w <= 0) {
			rc = w < 0 ? (int)w : -EIO;
			break;
		}
		off += w;
	}
	cache_release(h);
	return rc;
}

/* The content of path (at most len - 1 bytes), or "" on error. */
static const char *get_str(struct cache *c, const char *path, char *buf,
			   size_t len)
{
	struct cache_handle *h;
	ssize_t n = -1;

	if (cache_open_file(c, path, O_RDONLY, 0, &h) == 0) {
		n = cache_read(h, buf, len - 1, 0);
		cache_release(h);
	}
	buf[n > 0 ? n : 0] = 0;
	return buf;
}

/* The md5 Drive has for path under root, or "" if missing. */
static void remote_md5(const char *root, const char *path, char out[33])
{
	struct drive_file f;
	struct drive_err err;

	out[0] = 0;
	if (drive_resolve_path(dc, root, path, &f, &err) == 0)
		snprintf(out, 33, "%s", f.md5);
}

struct count_ud {
	const char *name;
	int n;
};

static int count_cb(const struct drive_file *x, void *ud)
{
	struct count_ud *u = ud;

	if (!u->name || strcmp(x->name, u->name) == 0)
		u->n++;
	return 0;
}

/* How many live entries named `name` (NULL = any) `parent` holds. */
static int count_named(const char *parent, const char *name)
{
	struct count_ud u = {name, 0};
	struct drive_err err;

	if (drive_list(dc, parent, NULL, count_cb, &u, NULL, &err) < 0)
		return -1;
	return u.n;
}

/* ---- tests -------------------------------------------------------------- */

static void test_upload_after_close_lands_with_right_md5(void)
{
	struct env e = {0};
	size_t len = 3 << 20;
	char *buf = malloc(len), want[33], got[33];

	CHECK_INT(env_open(&e, 200, true), 0);
	fill(buf, len, 1);
	md5_hex(buf, len, want);
	CHECK_INT(cache_mkdir(e.c, "runs", 0755), 0);
	CHECK_INT(cache_mkdir(e.c, "runs/a", 0755), 0);
	CHECK_INT(put(e.c, "runs/a/ckpt.bin", buf, len), 0);
	CHECK_INT(put(e.c, "runs/a/small.txt", "hi\n", 3), 0);
	CHECK_INT(cache_sync(e.c, NULL, NULL), 0);
	remote_md5(e.root_id, "runs/a/ckpt.bin", got);
	CHECK_STR(got, want);
	md5_hex("hi\n", 3, want);
	remote_md5(e.root_id, "runs/a/small.txt", got);
	CHECK_STR(got, want);
	env_close(&e, true);
	free(buf);
}

static void test_fsync_means_on_drive(void)
{
	struct env e = {0};
	struct cache_handle *h;
	char want[33], got[33];

	/* A write_back far away: only fsync can have sent it. */
	CHECK_INT(env_open(&e, 600000, true), 0);
	CHECK_INT(cache_mkdir(e.c, "runs", 0755), 0);
	CHECK_INT(cache_open_file(e.c, "runs/log.txt", O_WRONLY | O_CREAT, 0644,
				  &h),
		  0);
	CHECK_INT(cache_write(h, "step 1\n", 7, 0), 7);
	CHECK_INT(cache_fsync(h), 0);
	md5_hex("step 1\n", 7, want);
	remote_md5(e.root_id, "runs/log.txt", got);
	CHECK_STR(got, want);
	CHECK_INT(cache_write(h, "step 2\n", 7, 7), 7);
	CHECK_INT(cache_fsync(h), 0);
	md5_hex("step 1\nstep 2\n", 14, want);
	remote_md5(e.root_id, "runs/log.txt", got);
	CHECK_STR(got, want);
	cache_release(h);
	/* Closed unchanged after the fsync: nothing more to send. */
	{
		char *s = cache_status_json(e.c);

		CHECK(strstr(s, "\"queue_files\":0") != NULL);
		free(s);
	}
	env_close(&e, true);
}

static void test_rewrite_while_uploading_ends_with_latest(void)
{
	struct env e = {0};
	size_t len = 12 << 20;
	char *v1 = malloc(len), *v2 = malloc(len), m1[33], m2[33], got[33];
	char md5s[16][33];
	struct drive_file f;
	struct drive_err err;
	double t0;
	int i, n, up = 0;

	fill(v1, len, 11);
	fill(v2, len, 22);
	md5_hex(v1, len, m1);
	md5_hex(v2, len, m2);
	CHECK_INT(env_open(&e, 0, true), 0);
	set_faults("{\"bandwidth\": 8000000}");
	CHECK_INT(put(e.c, "big.bin", v1, len), 0);
	for (t0 = now_s(); now_s() - t0 < 10 && !up;) {
		pthread_mutex_lock(&e.c->lock);
		up = e.c->uploading;
		pthread_mutex_unlock(&e.c->lock);
		usleep(20000);
	}
	CHECK(up > 0);
	/* v1 is on its way: this writes a new version, never into v1. */
	CHECK_INT(put(e.c, "big.bin", v2, len), 0);
	CHECK_INT(cache_sync(e.c, NULL, NULL), 0);
	set_faults("{}");
	remote_md5(e.root_id, "big.bin", got);
	CHECK_STR(got, m2);
	CHECK_INT(drive_resolve_path(dc, e.root_id, "big.bin", &f, &err), 0);
	n = drive_versions(f.id, md5s, 16);
	CHECK(n >= 1);
	for (i = 0; i < n; i++)
		CHECK(strcmp(md5s[i], m1) == 0 || strcmp(md5s[i], m2) == 0);
	env_close(&e, true);
	free(v1);
	free(v2);
}

/* The mount dies mid-upload (a child process SIGKILLed): the next
 * cache_open resumes the same resumable session. */
/* A file another instance made: `len` bytes of buf as `name` in parent,
 * uploaded by the Drive client itself. */
static int upload_bytes(const char *parent, const char *name, const char *buf,
			size_t len, struct drive_file *out)
{
	char tmp[] = "/tmp/vc-XXXXXX";
	struct drive_upload up;
	struct drive_err err;
	int fd = mkstemp(tmp), rc = -1;

	if (fd < 0)
		return -1;
	unlink(tmp);
	if (write(fd, buf, len) == (ssize_t)len) {
		memset(&up, 0, sizeof(up));
		up.parent = parent;
		up.name = name;
		up.fd = fd;
		up.size = len;
		rc = drive_upload(dc, &up, out, &err);
	}
	close(fd);
	return rc;
}

/* What recovery sees after a power loss: another kernel boot id. */
static void new_boot(const char *cache_dir)
{
	char db[128];
	sqlite3 *d;

	snprintf(db, sizeof(db), "%s/meta.db", cache_dir);
	CHECK_INT(sqlite3_open(db, &d), SQLITE_OK);
	CHECK_INT(sqlite3_exec(d,
			       "UPDATE meta SET v='another-boot' "
			       "WHERE k='boot_id'",
			       NULL, NULL, NULL),
		  SQLITE_OK);
	sqlite3_close(d);
}

/* Bytes the emulator has received so far. */
static int64_t bytes_in(void)
{
	char *s = emu("GET", "/_emu/stats", NULL);
	struct json_object *o = json_tokener_parse(s ? s : "{}"), *b;
	int64_t n = 0;

	if (o && json_object_object_get_ex(o, "bytes_in", &b))
		n = json_object_get_int64(b);
	json_object_put(o);
	free(s);
	return n;
}

/* A version closed without fdatasync (close(2) = flush) is synced by
 * the uploader before it sends a byte. A machine that goes down after
 * that, mid-upload, comes back in a new boot: the synced version must
 * survive and land. It used to be dropped as "never synced" (the row
 * said so until the upload ended), and the older version it superseded
 * was uploaded instead. */
static void test_a_synced_version_survives_a_reboot_mid_upload(void)
{
	struct env e = {0};
	size_t len = 16 << 20; /* a resumable upload, 1 MiB chunks */
	char *buf = malloc(len), want[33], got[33];
	int64_t starts;
	pid_t pid;
	int st;

	fill(buf, len, 34);
	md5_hex(buf, len, want);
	CHECK_INT(env_open(&e, 0, true), 0);
	env_close(&e, false); /* only to create the folder and dir */
	set_faults("{\"bandwidth\": 4000000}");
	starts = bytes_in();
	pid = fork();
	if (pid == 0) {
		struct cache_handle *h;

		child_client();
		if (env_open(&e, 600000, false) < 0)
			_exit(2);
		/* OLD: released (synced), its upload far away (write_back). */
		put(e.c, "ck.bin", "OLD", 3);
		/* NEW: closed by flush alone, then sent at once. */
		if (cache_open_file(e.c, "ck.bin", O_WRONLY | O_TRUNC, 0, &h) <
		    0)
			_exit(3);
		cache_write(h, buf, len, 0);
		cache_flush(h);
		cache_fsync(h); /* starts the upload; killed during it */
		_exit(4);
	}
	/* Killed once the upload's bytes are on their way. */
	{
		double t0 = now_s();

		while (now_s() - t0 < 20 && bytes_in() - starts < (3 << 20))
			usleep(20000);
	}
	kill(pid, SIGKILL);
	waitpid(pid, &st, 0);
	if (!WIFSIGNALED(st))
		fprintf(stderr, "child exited %d\n", WEXITSTATUS(st));
	CHECK(WIFSIGNALED(st));
	set_faults("{}");
	new_boot(e.dir);
	CHECK_INT(env_open(&e, 0, false), 0);
	CHECK_INT(cache_sync(e.c, NULL, NULL), 0);
	remote_md5(e.root_id, "ck.bin", got);
	CHECK_STR(got, want);
	env_close(&e, true);
	free(buf);
}

static void test_killed_upload_resumes_at_next_open(void)
{
	struct env e = {0};
	size_t len = 16 << 20;
	char *buf = malloc(len), want[33], got[33];
	int64_t starts_before, starts_after;
	pid_t pid;
	int st;

	fill(buf, len, 33);
	md5_hex(buf, len, want);
	CHECK_INT(env_open(&e, 0, true), 0);
	env_close(&e, false); /* only to create the folder and dir */
	set_faults("{\"bandwidth\": 4000000}");
	starts_before = stat_count("upload_start");
	pid = fork();
	if (pid == 0) {
		double t0 = now_s();
		int64_t off = 0;

		child_client();
		if (env_open(&e, 0, false) < 0)
			_exit(2);
		put(e.c, "resume.bin", buf, len);
		while (now_s() - t0 < 20 && off < (3 << 20)) {
			struct cver *v;

			pthread_mutex_lock(&e.c->lock);
			for (v = e.c->vers; v; v = v->gnext)
				if (v->session_off > off)
					off = v->session_off;
			pthread_mutex_unlock(&e.c->lock);
			usleep(20000);
		}
		kill(getpid(), SIGKILL);
		_exit(3);
	}
	waitpid(pid, &st, 0);
	CHECK(WIFSIGNALED(st));
	set_faults("{}");
	CHECK_INT(env_open(&e, 0, false), 0);
	CHECK_INT(cache_sync(e.c, NULL, NULL), 0);
	remote_md5(e.root_id, "resume.bin", got);
	CHECK_STR(got, want);
	starts_after = stat_count("upload_start");
	/* One session for the whole file: the second mount resumed it. */
	CHECK_INT(starts_after - starts_before, 1);
	CHECK_INT(count_named(e.root_id, "resume.bin"), 1);
	env_close(&e, true);
	free(buf);
}

static void test_faults_200_files_no_duplicates(void)
{
	struct env e = {0};
	char path[64], data[64], want[33], got[33];
	struct drive_file d;
	struct drive_err err;
	int i, bad = 0;

	CHECK_INT(env_open(&e, 0, true), 0);
	CHECK_INT(cache_mkdir(e.c, "runs", 0755), 0);
	CHECK_INT(cache_mkdir(e.c, "runs/many", 0755), 0);
	set_faults("{\"fail_rate\": 0.1, \"reset_rate\": 0.05}");
	for (i = 0; i < 200; i++) {
		snprintf(path, sizeof(path), "runs/many/f%03d", i);
		snprintf(data, sizeof(data), "file %d\n", i);
		CHECK_INT(put(e.c, path, data, strlen(data)), 0);
	}
	CHECK_INT(cache_sync(e.c, NULL, NULL), 0);
	set_faults("{}");
	CHECK_INT(drive_resolve_path(dc, e.root_id, "runs/many", &d, &err), 0);
	CHECK_INT(count_named(d.id, NULL), 200);
	CHECK_INT(count_named(e.root_id, "runs"), 1);
	for (i = 0; i < 200; i++) {
		snprintf(path, sizeof(path), "f%03d", i);
		snprintf(data, sizeof(data), "file %d\n", i);
		md5_hex(data, strlen(data), want);
		remote_md5(d.id, path, got);
		if (strcmp(got, want) != 0 || count_named(d.id, path) != 1)
			bad++;
	}
	CHECK_INT(bad, 0);
	env_close(&e, true);
}

/* A reader of a partial download whose version is dropped under it (the
 * feed saw the file replaced on Drive; an O_TRUNC open here) reads that
 * version whole: the download goes on, by revision, until it closes. It
 * used to read zeros wherever nothing had arrived yet. */
static void test_a_partial_download_dropped_under_a_reader_reads_whole(void)
{
	struct env e = {0};
	size_t len = 12 << 20;
	char *buf = malloc(len), *back = malloc(1 << 20);
	struct drive_file f, sub;
	struct drive_err err;
	struct cache_handle *h;

	fill(buf, len, 45);
	CHECK_INT(env_open(&e, 0, true), 0);
	CHECK_INT(drive_mkdir(dc, e.root_id, "runs", &sub, &err), 0);
	CHECK_INT(upload_bytes(sub.id, "p.bin", buf, len, &f), 0);
	set_faults("{\"bandwidth\": 3000000}"); /* 12 MiB take 4 s */
	CHECK_INT(cache_open_file(e.c, "runs/p.bin", O_RDONLY, 0, &h), 0);
	CHECK_INT(cache_read(h, back, 4096, 0), 4096);
	CHECK(memcmp(back, buf, 4096) == 0);
	pthread_mutex_lock(&e.c->lock);
	CHECK(!h->v->complete);
	ver_drop(e.c, h->v); /* what the feed does to a replaced file */
	pthread_mutex_unlock(&e.c->lock);
	CHECK_INT(cache_read(h, back, 1 << 20, 11 << 20), 1 << 20);
	CHECK(memcmp(back, buf + (11 << 20), 1 << 20) == 0);
	set_faults("{}");
	cache_release(h);
	env_close(&e, true);
	free(buf);
	free(back);
}

/* A downloaded file is never fdatasynced: after a power loss (a new
 * boot id) its cached bytes may be holes, yet a clean copy is trusted as
 * Drive's. Recovery drops it; the next read fetches it again. */
static void test_a_download_is_fetched_again_after_a_reboot(void)
{
	struct env e = {0};
	size_t len = 1 << 20;
	char *buf = malloc(len), *back = malloc(len);
	struct drive_file f;
	struct cache_handle *h;
	struct cnode *n;

	fill(buf, len, 46);
	CHECK_INT(env_open(&e, 0, true), 0);
	CHECK_INT(upload_bytes(e.root_id, "dl.bin", buf, len, &f), 0);
	CHECK_INT(cache_open_file(e.c, "dl.bin", O_RDONLY, 0, &h), 0);
	CHECK_INT(cache_read(h, back, len, 0), (ssize_t)len);
	cache_release(h);
	env_close(&e, false);
	new_boot(e.dir);
	CHECK_INT(env_open(&e, 0, false), 0);
	pthread_mutex_lock(&e.c->lock);
	CHECK_INT(node_lookup(e.c, "dl.bin", &n), 0);
	CHECK(n == NULL || n->cur == NULL);
	pthread_mutex_unlock(&e.c->lock);
	memset(back, 0, len);
	CHECK_INT(cache_open_file(e.c, "dl.bin", O_RDONLY, 0, &h), 0);
	CHECK_INT(cache_read(h, back, len, 0), (ssize_t)len);
	CHECK(memcmp(back, buf, len) == 0);
	cache_release(h);
	env_close(&e, true);
	free(buf);
	free(back);
}

/* Reads path whole, checks it is want, and says how many downloads that
 * took. */
static int64_t read_downloads(struct cache *c, const char *path,
			      const char *want, size_t len)
{
	char *back = malloc(len);
	struct cache_handle *h;
	int64_t before = stat_count("download");

	CHECK_INT(cache_open_file(c, path, O_RDONLY, 0, &h), 0);
	CHECK_INT(cache_read(h, back, len, 0), (ssize_t)len);
	CHECK(memcmp(back, want, len) == 0);
	cache_release(h);
	free(back);
	return stat_count("download") - before;
}

/* Writes path (closed by a flush, as close(2) does) with Drive slowed
 * down, and opens it for writing again while its upload runs: that open
 * writes to a copy of the uploading version. */
static void open_again_while_uploading(struct cache *c, const char *path,
				       const char *buf, size_t len,
				       struct cache_handle **out)
{
	struct cache_handle *h;
	struct cnode *n = NULL;
	double t0 = now_s();
	bool up = false;

	set_faults("{\"bandwidth\": 8000000}");
	CHECK_INT(cache_open_file(c, path, O_WRONLY | O_CREAT | O_TRUNC, 0644,
				  &h),
		  0);
	CHECK_INT(cache_write(h, buf, len, 0), (ssize_t)len);
	cache_flush(h);
	cache_release(h);
	while (!up && now_s() - t0 < 10) {
		usleep(20000);
		pthread_mutex_lock(&c->lock);
		up = node_lookup(c, path, &n) == 0 && n->cur &&
		     n->cur->state == CV_UPLOADING;
		pthread_mutex_unlock(&c->lock);
	}
	CHECK(up);
	CHECK_INT(cache_open_file(c, path, O_RDWR, 0, out), 0);
}

/* Opened for writing while its upload ran and closed unwritten: the copy
 * it wrote to is identical to what landed and becomes the clean copy. It
 * was closed by a flush, so never synced, and a new boot dropped it: the
 * next read downloaded the file again. The uploader now syncs it. */
static void test_a_twin_of_an_upload_stays_cached_after_a_reboot(void)
{
	struct env e = {0};
	size_t len = 16 << 20;
	char *buf = malloc(len);
	struct cache_handle *h;

	fill(buf, len, 81);
	CHECK_INT(env_open(&e, 0, true), 0);
	open_again_while_uploading(e.c, "ck.bin", buf, len, &h);
	cache_flush(h);
	cache_release(h);
	CHECK_INT(cache_sync(e.c, NULL, NULL), 0);
	set_faults("{}");
	CHECK_INT(read_downloads(e.c, "ck.bin", buf, len), 0);
	env_close(&e, false);
	new_boot(e.dir);
	CHECK_INT(env_open(&e, 0, false), 0);
	CHECK_INT(read_downloads(e.c, "ck.bin", buf, len), 0);
	env_close(&e, true);
	free(buf);
}

/* A log downloaded here, appended to in place and fsynced, then closed:
 * the fsync snapshot shares the log's file and synced it, but the log
 * kept the download's "never synced" mark when it became the clean copy,
 * and a new boot dropped it (downloaded again at the next read). */
static void test_a_downloaded_log_fsynced_here_stays_cached_after_a_reboot(void)
{
	struct env e = {0};
	size_t len = 1 << 20;
	char *buf = malloc(len + 10);
	struct cache_handle *h;
	struct drive_file f;

	fill(buf, len + 10, 82);
	CHECK_INT(env_open(&e, 0, true), 0);
	CHECK_INT(upload_bytes(e.root_id, "log.bin", buf, len, &f), 0);
	CHECK(read_downloads(e.c, "log.bin", buf, len) > 0);
	CHECK_INT(cache_open_file(e.c, "log.bin", O_WRONLY | O_APPEND, 0, &h),
		  0);
	CHECK_INT(cache_write(h, buf + len, 10, len), 10);
	CHECK_INT(cache_fsync(h), 0);
	cache_flush(h);
	cache_release(h);
	CHECK_INT(cache_sync(e.c, NULL, NULL), 0);
	env_close(&e, false);
	new_boot(e.dir);
	CHECK_INT(env_open(&e, 0, false), 0);
	CHECK_INT(read_downloads(e.c, "log.bin", buf, len + 10), 0);
	env_close(&e, true);
	free(buf);
}

/* Opened for writing while its upload ran, and closed unwritten once that
 * landed: the copy it wrote to becomes the clean copy in place of the
 * upload's synced file. Its bytes were never synced, yet after a power
 * loss (a new boot) it was trusted and read as the disk had it. */
static void test_an_unsynced_copy_is_fetched_again_after_a_reboot(void)
{
	struct env e = {0};
	size_t len = 16 << 20;
	char *buf = malloc(len), path[256];
	struct cache_handle *h;
	int64_t vid;
	int fd;

	fill(buf, len, 83);
	CHECK_INT(env_open(&e, 0, true), 0);
	open_again_while_uploading(e.c, "ck.bin", buf, len, &h);
	CHECK_INT(cache_sync(e.c, NULL, NULL), 0);
	set_faults("{}");
	cache_flush(h);
	pthread_mutex_lock(&e.c->lock);
	vid = h->v->vid;
	CHECK(h->v->state == CV_CLEAN && h->v->copy_of != 0);
	pthread_mutex_unlock(&e.c->lock);
	cache_release(h);
	env_close(&e, false);
	/* The power loss: the copy's bytes never reached the disk. */
	snprintf(path, sizeof(path), "%s/data/%lld", e.dir, (long long)vid);
	fd = open(path, O_WRONLY);
	CHECK(fd >= 0 && ftruncate(fd, 0) == 0 && ftruncate(fd, len) == 0);
	close(fd);
	new_boot(e.dir);
	CHECK_INT(env_open(&e, 0, false), 0);
	CHECK(read_downloads(e.c, "ck.bin", buf, len) > 0);
	env_close(&e, true);
	free(buf);
}

/* A file made on Drive by someone else, read through a cold cache. */
static void test_cold_read_of_file_created_on_drive(void)
{
	struct env e = {0};
	size_t len = 200 << 20;
	char *buf = malloc(len), *back = malloc(len), tmp[] = "/tmp/vc-XXXXXX";
	char want[33], got[33], cmd[4096];
	struct drive_upload up;
	struct drive_file f, sub;
	struct drive_err err;
	struct cache_handle *h;
	struct cache_attr a;
	double t0, t_cache, t_curl;
	static char small[128 << 10];
	int fd;
	ssize_t r;
	size_t off;

	fill(buf, len, 44);
	md5_hex(buf, len, want);
	CHECK_INT(env_open(&e, 0, true), 0);
	fd = mkstemp(tmp);
	CHECK_INT(write(fd, buf, len), (ssize_t)len);
	CHECK_INT(drive_mkdir(dc, e.root_id, "runs", &sub, &err), 0);
	memset(&up, 0, sizeof(up));
	up.parent = sub.id;
	up.name = "remote.bin";
	up.fd = fd;
	up.size = len;
	CHECK_INT(drive_upload(dc, &up, &f, &err), 0);
	close(fd);
	unlink(tmp);

	CHECK_INT(cache_getattr(e.c, "runs/remote.bin", &a), 0);
	CHECK_INT(a.size, (int64_t)len);
	CHECK(!a.dirty);
	/* A reader in the middle first: it waits only for its range. */
	CHECK_INT(cache_open_file(e.c, "runs/remote.bin", O_RDONLY, 0, &h), 0);
	r = cache_read(h, back, 4096, 30 << 20);
	CHECK_INT(r, 4096);
	CHECK(memcmp(back, buf + (30 << 20), 4096) == 0);
	cache_release(h);

	/* A second cache dir, for a cold sequential read timed against
	 * curl from the same emulator. */
	env_close(&e, true);
	CHECK_INT(env_open(&e, 0, true), 0);
	snprintf(e.root_id, sizeof(e.root_id), "%s", sub.id);
	env_close(&e, true);
	snprintf(e.dir, sizeof(e.dir), "/tmp/vectur-cd-XXXXXX");
	CHECK(mkdtemp(e.dir) != NULL);
	CHECK_INT(env_open(&e, 0, false), 0);
	t0 = now_s();
	CHECK_INT(cache_open_file(e.c, "remote.bin", O_RDONLY, 0, &h), 0);
	/* 128 KiB reads like FUSE's, into one buffer like a consumer that
	 * hashes or parses as it goes. */
	for (off = 0; off < len; off += r) {
		r = cache_read(h, small, sizeof(small), off);
		if (r <= 0)
			break;
	}
	t_cache = now_s() - t0;
	CHECK_INT(off, (int64_t)len);
	for (off = 0; off < len; off += r) {
		r = cache_read(h, back + off, 1 << 20, off);
		if (r <= 0)
			break;
	}
	cache_release(h);
	md5_hex(back, len, got);
	CHECK_STR(got, want);
	{
		char tok[1024] = "";
		FILE *p;

		/* The emulator's access tokens come from the token endpoint. */
		snprintf(cmd, sizeof(cmd),
			 "curl -s -d grant_type=refresh_token -d "
			 "refresh_token=test-refresh-token %s/token | "
			 "sed 's/.*\"access_token\": *\"\\([^\"]*\\)\".*/\\1/'",
			 endpoint);
		p = popen(cmd, "r");
		if (p && fgets(tok, sizeof(tok), p))
			tok[strcspn(tok, "\n")] = 0;
		if (p)
			pclose(p);
		snprintf(cmd, sizeof(cmd),
			 "curl -s -o /dev/null -H 'Authorization: Bearer %s' "
			 "'%s/drive/v3/files/%s?alt=media'",
			 tok, endpoint, f.id);
		t0 = now_s();
		if (system(cmd) != 0)
			fprintf(stderr, "curl failed\n");
		t_curl = now_s() - t0;
		printf("cold read of %zu MiB: cache %.2f s, curl %.2f s, "
		       "ratio %.2f\n",
		       len >> 20, t_cache, t_curl, t_curl / t_cache);
	}
	env_close(&e, true);
	free(buf);
	free(back);
}

static void test_changes_feed_brings_remote_edit(void)
{
	struct env e = {0};
	char tmp[] = "/tmp/vc-XXXXXX", buf[32] = {0}, id[128];
	struct drive_upload up;
	struct drive_file f;
	struct drive_err err;
	struct cache_handle *h;
	int fd;

	CHECK_INT(env_open(&e, 0, true), 0);
	CHECK_INT(put(e.c, "g.json", "{\"v\":1}", 7), 0);
	CHECK_INT(cache_sync(e.c, NULL, NULL), 0);
	CHECK_INT(drive_resolve_path(dc, e.root_id, "g.json", &f, &err), 0);
	/* Another instance replaces the content on Drive. */
	fd = mkstemp(tmp);
	CHECK_INT(write(fd, "{\"v\":2}", 7), 7);
	memset(&up, 0, sizeof(up));
	snprintf(id, sizeof(id), "%s", f.id); /* out is zeroed first */
	up.id = id;
	up.fd = fd;
	up.size = 7;
	CHECK_INT(drive_upload(dc, &up, &f, &err), 0);
	if (err.message[0])
		fprintf(stderr, "upload: %ld %s %s\n", err.status, err.reason,
			err.message);
	close(fd);
	unlink(tmp);
	usleep(1100000); /* open revalidates when the feed is > 1 s old */
	CHECK_INT(cache_open_file(e.c, "g.json", O_RDONLY, 0, &h), 0);
	CHECK_INT(cache_read(h, buf, sizeof(buf) - 1, 0), 7);
	CHECK_STR(buf, "{\"v\":2}");
	cache_release(h);
	env_close(&e, true);
}

static char inval_seen[256];

static void note_inval(const char *path, void *ud)
{
	if (strlen(inval_seen) + strlen(path) + 2 < sizeof(inval_seen)) {
		strcat(inval_seen, path);
		strcat(inval_seen, " ");
	}
}

static void test_remote_delete_disappears_and_invalidates(void)
{
	struct env e = {0};
	struct cache_opts o = {0};
	struct drive_file f;
	struct drive_err err;
	struct cache_attr a;
	char ebuf[256];

	CHECK_INT(env_open(&e, 0, true), 0);
	CHECK_INT(put(e.c, "gone.txt", "x", 1), 0);
	CHECK_INT(cache_sync(e.c, NULL, NULL), 0);
	env_close(&e, false);
	o.dir = e.dir;
	o.poll_interval_s = 1;
	o.invalidate = note_inval;
	inval_seen[0] = 0;
	CHECK_INT(cache_open(&e.c, &o, dc, e.root_id, ebuf, sizeof(ebuf)), 0);
	CHECK_INT(cache_getattr(e.c, "gone.txt", &a), 0);
	CHECK_INT(drive_resolve_path(dc, e.root_id, "gone.txt", &f, &err), 0);
	CHECK_INT(drive_delete(dc, f.id, &err), 0);
	usleep(2500000); /* a poll_interval or two */
	CHECK_INT(cache_getattr(e.c, "gone.txt", &a), -ENOENT);
	CHECK(strstr(inval_seen, "gone.txt") != NULL);
	env_close(&e, true);
}

/* A fresh env (write_back_ms) with runs/d/a.txt ("a") on Drive; runs/d's
 * Drive file in *f. */
static int synced_folder(struct env *e, int write_back_ms, struct drive_file *f)
{
	struct drive_err err;

	if (env_open(e, write_back_ms, true) < 0 ||
	    cache_mkdir(e->c, "runs", 0755) < 0 ||
	    cache_mkdir(e->c, "runs/d", 0755) < 0 ||
	    put(e->c, "runs/d/a.txt", "a", 1) < 0 ||
	    cache_sync(e->c, NULL, NULL) < 0)
		return -1;
	return drive_resolve_path(dc, e->root_id, "runs/d", f, &err);
}

/* Another instance deletes a folder for good while this one writes new
 * files into it (one in a new subfolder), before any feed says so: the
 * folders are made again and the files land (the create's 404 left them
 * failed for the session before). */
static void test_new_files_in_a_folder_deleted_on_drive_land(void)
{
	struct env e = {0};
	struct drive_file f;
	struct drive_err err;
	char want[33], got[33];

	CHECK_INT(synced_folder(&e, 0, &f), 0);
	CHECK_INT(drive_delete(dc, f.id, &err), 0);
	CHECK_INT(put(e.c, "runs/d/b.txt", "bee", 3), 0);
	CHECK_INT(cache_mkdir(e.c, "runs/d/sub", 0755), 0);
	CHECK_INT(put(e.c, "runs/d/sub/c.txt", "sea", 3), 0);
	CHECK_INT(cache_sync(e.c, NULL, NULL), 0);
	md5_hex("bee", 3, want);
	remote_md5(e.root_id, "runs/d/b.txt", got);
	CHECK_STR(got, want);
	md5_hex("sea", 3, want);
	remote_md5(e.root_id, "runs/d/sub/c.txt", got);
	CHECK_STR(got, want);
	env_close(&e, true);
}

/* Requests that create a file or folder on Drive, counted by the emulator. */
static int64_t creates(void)
{
	return stat_count("upload_multipart") + stat_count("upload_media") +
	       stat_count("upload_start") + stat_count("create");
}

/* A folder trashed (not deleted) by another instance while this one writes
 * into it: a create there lands in the trash. The folder is made again
 * and the file lands in it, in a few requests (before: the file was sent
 * again into the trashed folder every backoff, until the feed said). */
static void test_a_new_file_in_a_folder_trashed_on_drive_lands(void)
{
	struct env e = {0};
	struct drive_file f;
	struct drive_err err;
	char want[33], got[33];
	int64_t before;

	CHECK_INT(synced_folder(&e, 0, &f), 0);
	CHECK_INT(drive_trash(dc, f.id, &err), 0);
	before = creates();
	CHECK_INT(put(e.c, "runs/d/b.txt", "bee", 3), 0);
	CHECK_INT(cache_sync(e.c, NULL, NULL), 0);
	md5_hex("bee", 3, want);
	remote_md5(e.root_id, "runs/d/b.txt", got);
	CHECK_STR(got, want);
	CHECK(creates() - before <= 4);
	env_close(&e, true);
}

/* The mount's own folder trashed: nothing can land, and that is a failure
 * (--sync: EIO), not a loop of creates into the trash. */
static void test_a_trashed_root_fails_uploads_instead_of_looping(void)
{
	struct env e = {0};
	struct drive_err err;
	int64_t before;
	char *s = NULL;
	int i;

	CHECK_INT(env_open(&e, 0, true), 0);
	CHECK_INT(cache_mkdir(e.c, "runs", 0755), 0);
	CHECK_INT(put(e.c, "runs/a.txt", "a", 1), 0);
	CHECK_INT(cache_sync(e.c, NULL, NULL), 0);
	CHECK_INT(drive_trash(dc, e.root_id, &err), 0);
	before = creates();
	CHECK_INT(put(e.c, "runs/b.txt", "bee", 3), 0);
	for (i = 0; i < 100; i++) {
		free(s);
		s = cache_status_json(e.c);
		if (strstr(s, "\"failed\":true"))
			break;
		usleep(100000);
	}
	CHECK(s && strstr(s, "\"failed\":true") != NULL);
	free(s);
	CHECK_INT(cache_sync(e.c, NULL, NULL), -EIO);
	CHECK(creates() - before <= 4); /* the file, its folder, once each */
	env_close(&e, true);
}

/* A file renamed here (its content clean) in a folder another instance
 * deleted: the folder's forgetting kept the file as dirty but with
 * nothing left to send, so it never reached Drive and sync said done. */
static void test_a_renamed_file_in_a_folder_deleted_on_drive_lands(void)
{
	struct env e = {0};
	struct drive_file f;
	struct drive_err err;
	char want[33], got[33];

	CHECK_INT(synced_folder(&e, 1000, &f), 0);
	CHECK_INT(drive_delete(dc, f.id, &err), 0);
	CHECK_INT(put(e.c, "runs/d/b.txt", "bee", 3), 0);
	usleep(300000);
	CHECK_INT(cache_rename(e.c, "runs/d/a.txt", "runs/d/a2.txt", 0), 0);
	/* b.txt goes first (write_back) and finds the folder gone. */
	usleep(2500000);
	CHECK_INT(cache_sync(e.c, NULL, NULL), 0);
	md5_hex("bee", 3, want);
	remote_md5(e.root_id, "runs/d/b.txt", got);
	CHECK_STR(got, want);
	md5_hex("a", 1, want);
	remote_md5(e.root_id, "runs/d/a2.txt", got);
	CHECK_STR(got, want);
	env_close(&e, true);
}

/* runs/d/a.txt synced, then runs/d deleted on Drive while a reconcile
 * holds a.txt (busy, as run_one sets it) and the feed reads that. Returns
 * a.txt's node, still held: the caller ends the reconcile. */
static struct cnode *folder_gone_while_held(struct env *e, struct drive_file *f)
{
	struct drive_err err;
	struct cnode *d, *n = NULL;

	if (synced_folder(e, 0, f) < 0 || drive_delete(dc, f->id, &err) < 0)
		return NULL;
	pthread_mutex_lock(&e->c->lock);
	d = node_by_id(e->c, f->id);
	if (d)
		n = node_child(e->c, d, "a.txt");
	if (n)
		n->busy = true;
	pthread_mutex_unlock(&e->c->lock);
	if (n && feed_poll(e->c) < 0)
		return NULL;
	return n;
}

/* After folder_gone_while_held: runs/d and its file went here too, and
 * runs/d was not made again on Drive. */
static bool folder_let_go(struct env *e, struct drive_file *f)
{
	struct cache_attr a;
	int i;

	if (cache_sync(e->c, NULL, NULL) < 0)
		return false;
	for (i = 0; i < 50 && cache_getattr(e->c, "runs/d", &a) == 0; i++)
		usleep(100000); /* the refresh is queued: not a write */
	return cache_getattr(e->c, "runs/d/a.txt", &a) == -ENOENT &&
	       cache_getattr(e->c, "runs/d", &a) == -ENOENT &&
	       count_named(f->parent, NULL) == 0; /* not made again */
}

/* Another instance deletes a folder while a reconcile of ours holds a
 * clean file in it (a refresh under way): the file was kept as if it had
 * local changes, with nothing to send, and its folder was made again on
 * Drive, empty; the file stayed listed here, on Drive nowhere. Now both
 * wait for the reconcile to end, and Drive's answer then lets them go. */
static void test_a_clean_file_held_when_its_folder_goes_is_let_go(void)
{
	struct env e = {0};
	struct drive_file f;
	struct cache_attr a;
	struct cnode *n = folder_gone_while_held(&e, &f);

	CHECK(n != NULL);
	CHECK_INT(cache_getattr(e.c, "runs/d/a.txt", &a), 0); /* still held */
	pthread_mutex_lock(&e.c->lock);
	if (n) { /* the reconcile ends, as run_one ends it */
		n->busy = false;
		node_caught_up(e.c, n);
	}
	pthread_mutex_unlock(&e.c->lock);
	CHECK(folder_let_go(&e, &f));
	env_close(&e, true);
}

/* The same, but the held file is written here before the reconcile ends:
 * local changes win, the folder is made again and the file lands. */
static void test_a_held_file_written_after_its_folder_went_lands(void)
{
	struct env e = {0};
	struct drive_file f;
	struct cnode *n = folder_gone_while_held(&e, &f);
	char want[33], got[33];

	CHECK(n != NULL);
	CHECK_INT(put(e.c, "runs/d/a.txt", "new", 3), 0);
	pthread_mutex_lock(&e.c->lock);
	if (n) {
		n->busy = false;
		upload_queue(e.c, n, cache_now_ms()); /* run_one requeues */
	}
	pthread_mutex_unlock(&e.c->lock);
	CHECK_INT(cache_sync(e.c, NULL, NULL), 0);
	md5_hex("new", 3, want);
	remote_md5(e.root_id, "runs/d/a.txt", got);
	CHECK_STR(got, want);
	env_close(&e, true);
}

/* A file open here while another instance deletes its folder: the feed
 * lets both go, and the handle still answers fstat (it read the freed
 * folder's node: a use after free under ASan). */
static void test_fstat_of_a_file_whose_folder_went_meanwhile(void)
{
	struct env e = {0};
	struct drive_file f;
	struct drive_err err;
	struct cache_handle *h = NULL;
	struct cache_attr a;

	CHECK_INT(synced_folder(&e, 0, &f), 0);
	CHECK_INT(cache_open_file(e.c, "runs/d/a.txt", O_RDONLY, 0, &h), 0);
	CHECK_INT(drive_delete(dc, f.id, &err), 0);
	CHECK_INT(feed_poll(e.c), 0);
	CHECK_INT(cache_getattr(e.c, "runs/d", &a), -ENOENT);
	if (h) {
		CHECK_INT(cache_fgetattr(h, &a), 0);
		CHECK_INT((int)a.size, 1);
		CHECK_INT(cache_release(h), 0);
	}
	env_close(&e, true);
}

/* The reader of a partial download that a rewrite here took over does not
 * read the old version any more: its download stops (it went on, into a
 * file nobody would read, until the reader closed). */
static void test_a_rewrite_here_stops_the_old_download_of_its_reader(void)
{
	struct env e = {0};
	size_t len = 48 << 20;
	char *buf = malloc(len), back[64];
	struct drive_file f, sub;
	struct drive_err err;
	struct cache_handle *h = NULL;
	struct cver *old;
	struct stat st0, st1;
	int i;

	fill(buf, len, 77);
	CHECK_INT(env_open(&e, 60000, true), 0);
	CHECK_INT(drive_mkdir(dc, e.root_id, "runs", &sub, &err), 0);
	CHECK_INT(upload_bytes(sub.id, "old.bin", buf, len, &f), 0);
	set_faults("{\"bandwidth\": 8000000}"); /* 48 MiB take ~6 s */
	CHECK_INT(cache_open_file(e.c, "runs/old.bin", O_RDONLY, 0, &h), 0);
	if (h) {
		CHECK_INT(cache_read(h, back, 16, 0), 16);
		old = h->v;
		CHECK_INT(put(e.c, "runs/old.bin", "new", 3), 0); /* O_TRUNC */
		CHECK(h->v != old);
		CHECK_INT(cache_read(h, back, sizeof(back), 0), 3);
		CHECK(memcmp(back, "new", 3) == 0);
		/* The chunks under way at the move (28 MiB at most) land,
		 * then no more are fetched: the old file stops growing short
		 * of the whole (it used to be fetched to the end). */
		fstat(old->fd, &st1);
		for (i = 0; i < 60; i++) {
			st0 = st1;
			sleep(1);
			fstat(old->fd, &st1);
			if (st1.st_blocks == st0.st_blocks)
				break;
		}
		CHECK((size_t)st1.st_blocks * 512 < len);
		cache_release(h);
	}
	set_faults("{}");
	env_close(&e, true);
	free(buf);
}

/* rmdir of a folder whose create is under way: the reconcile read the
 * detached folder's parent (NULL since 'A detached node forgets its
 * parent') and the mount crashed. */
static void test_rmdir_while_its_create_is_under_way(void)
{
	struct env e = {0};
	struct cache_attr a;

	CHECK_INT(env_open(&e, 0, true), 0);
	CHECK_INT(put(e.c, "warm", "x", 1), 0); /* fills the id pool */
	CHECK_INT(cache_sync(e.c, NULL, NULL), 0);
	set_faults("{\"latency_ms\": 800}");
	CHECK_INT(cache_mkdir(e.c, "d", 0755), 0); /* queued at once */
	usleep(300000);				   /* its create is under way */
	CHECK_INT(cache_rmdir(e.c, "d"), 0);
	sleep(2);
	set_faults("{}");
	CHECK_INT(cache_sync(e.c, NULL, NULL), 0);
	CHECK_INT(cache_getattr(e.c, "d", &a), -ENOENT);
	env_close(&e, true);
}

/* The held file of a folder deleted on Drive removed here before its
 * reconcile ends: the folder goes too (it stayed, on a deleted id). */
static void test_a_gone_folder_goes_when_its_held_file_is_removed(void)
{
	struct env e = {0};
	struct drive_file f;
	struct cnode *n = folder_gone_while_held(&e, &f);

	CHECK(n != NULL);
	pthread_mutex_lock(&e.c->lock);
	if (n)
		n->refs++; /* as run_one holds it */
	pthread_mutex_unlock(&e.c->lock);
	CHECK_INT(cache_unlink(e.c, "runs/d/a.txt"), 0);
	pthread_mutex_lock(&e.c->lock);
	if (n) { /* the reconcile ends, as run_one ends it */
		n->busy = false;
		node_put(e.c, n);
	}
	pthread_mutex_unlock(&e.c->lock);
	CHECK(folder_let_go(&e, &f));
	env_close(&e, true);
}

/* A rename pending here while another instance writes the file: the feed
 * passes over their change, and the rename must not stamp their content
 * with our older time. */
static void test_a_rename_keeps_another_instance_s_newer_time(void)
{
	struct env e = {0};
	struct timespec tv[2] = {{1600000000, 0}, {1600000000, 0}};
	struct drive_file f, g;
	struct drive_err err;
	struct drive_upload up;
	char tmp[] = "/tmp/vc-XXXXXX";
	int fd;

	CHECK_INT(env_open(&e, 1500, true), 0);
	CHECK_INT(put(e.c, "ckpt.pt", "ours", 4), 0);
	CHECK_INT(cache_utimens(e.c, "ckpt.pt", tv), 0);
	CHECK_INT(cache_sync(e.c, NULL, NULL), 0);
	CHECK_INT(drive_resolve_path(dc, e.root_id, "ckpt.pt", &f, &err), 0);
	CHECK_INT(cache_rename(e.c, "ckpt.pt", "best.pt", 0), 0); /* in 1.5 s */
	fd = mkstemp(tmp);
	unlink(tmp);
	CHECK_INT((int)write(fd, "theirs!", 7), 7);
	memset(&up, 0, sizeof(up));
	up.id = f.id;
	up.fd = fd;
	up.size = 7;
	up.modified_ms = 1700000000000LL;
	CHECK_INT(drive_upload(dc, &up, &g, &err), 0);
	close(fd);
	CHECK_INT(feed_poll(e.c), 0); /* passed over: the rename is pending */
	CHECK_INT(cache_sync(e.c, NULL, NULL), 0);
	CHECK_INT(drive_get(dc, f.id, &g, &err), 0);
	CHECK_STR(g.name, "best.pt");
	CHECK(g.modified_ms >= 1700000000000LL);
	env_close(&e, true);
}

/* A lock another instance broke (deleted on Drive) while its holder here
 * still wrote it: the upload of the holder's write found it gone and
 * created it again through the queue, as a plain file without a lease,
 * which no mount can take or remove. A lock is made only with its lease. */
/* A lock folder broken on Drive (another instance removed it once its
 * lease ran out) while this mount still lists it: a lock create in it got
 * ENOENT from Drive, and the folder stayed here, so making it again said
 * EEXIST and every create failed until the feed caught up (vectur-sched
 * called it busy). The create now forgets the folder, like an upload whose
 * folder went: mkdir makes it again and the create works. */
static void test_a_lock_folder_gone_on_drive_can_be_made_again(void)
{
	struct env e = {0};
	struct cache_handle *h = NULL;
	struct drive_file f;
	struct drive_err err;

	CHECK_INT(env_open(&e, 0, true), 0);
	CHECK_INT(cache_mkdir(e.c, "locks", 0755), 0);
	CHECK_INT(cache_sync(e.c, NULL, NULL), 0);
	CHECK_INT(cache_mkdir(e.c, "locks/stages", 0755), 0);
	CHECK_INT(drive_resolve_path(dc, e.root_id, "locks/stages", &f, &err),
		  0);
	CHECK_INT(drive_delete(dc, f.id, &err), 0); /* broken elsewhere */
	CHECK_INT(cache_open_file(e.c, "locks/stages/s1.lock",
				  O_WRONLY | O_CREAT | O_EXCL, 0644, &h),
		  -ENOENT);
	CHECK_INT(cache_mkdir(e.c, "locks/stages", 0755), 0);
	h = NULL;
	CHECK_INT(cache_open_file(e.c, "locks/stages/s1.lock",
				  O_WRONLY | O_CREAT | O_EXCL, 0644, &h),
		  0);
	if (h)
		cache_release(h);
	CHECK_INT(drive_resolve_path(dc, e.root_id, "locks/stages/s1.lock", &f,
				     &err),
		  0);
	env_close(&e, true);
}

static void test_a_lock_gone_on_drive_is_not_made_again_from_a_copy(void)
{
	struct env e = {0};
	struct cache_handle *h = NULL;
	struct drive_file f, locks;
	struct drive_err err;

	CHECK_INT(env_open(&e, 0, true), 0);
	CHECK_INT(cache_mkdir(e.c, "locks", 0755), 0);
	CHECK_INT(cache_sync(e.c, NULL, NULL), 0);
	CHECK_INT(cache_open_file(e.c, "locks/a.lock",
				  O_WRONLY | O_CREAT | O_EXCL, 0644, &h),
		  0);
	CHECK_INT(drive_resolve_path(dc, e.root_id, "locks/a.lock", &f, &err),
		  0);
	CHECK_INT(drive_resolve_path(dc, e.root_id, "locks", &locks, &err), 0);
	CHECK_INT(drive_delete(dc, f.id, &err), 0); /* broken elsewhere */
	if (h) {
		CHECK_INT((int)cache_write(h, "{\"pid\":1}\n", 10, 0), 10);
		cache_flush(h);
		cache_release(h);
	}
	usleep(500000);
	CHECK_INT(cache_sync(e.c, NULL, NULL), 0);
	CHECK_INT(count_named(locks.id, "a.lock"), 0);
	env_close(&e, true);
}

/* mv runs/exp runs/exp.old; mkdir runs/exp before the rename reached
 * Drive: the new folder adopted the old one (same name, still there), so
 * its files went into the folder then renamed away: runs/exp was gone and
 * runs/exp.old/b held two files named f. */
static void test_a_folder_made_again_after_a_rename_is_a_new_one(void)
{
	struct env e = {0};
	struct drive_file b;
	struct drive_err err;
	char want[33], got[33];

	CHECK_INT(env_open(&e, 1000, true), 0);
	CHECK_INT(cache_mkdir(e.c, "runs", 0755), 0);
	CHECK_INT(cache_mkdir(e.c, "runs/exp", 0755), 0);
	CHECK_INT(cache_mkdir(e.c, "runs/exp/b", 0755), 0);
	CHECK_INT(put(e.c, "runs/exp/b/f", "OLD", 3), 0);
	CHECK_INT(cache_sync(e.c, NULL, NULL), 0);
	CHECK_INT(cache_rename(e.c, "runs/exp", "runs/exp.old", 0), 0);
	CHECK_INT(cache_mkdir(e.c, "runs/exp", 0755), 0); /* made at once */
	CHECK_INT(cache_mkdir(e.c, "runs/exp/b", 0755), 0);
	CHECK_INT(put(e.c, "runs/exp/b/f", "NEW", 3), 0);
	CHECK_INT(cache_sync(e.c, NULL, NULL), 0);
	md5_hex("NEW", 3, want);
	remote_md5(e.root_id, "runs/exp/b/f", got);
	CHECK_STR(got, want);
	md5_hex("OLD", 3, want);
	remote_md5(e.root_id, "runs/exp.old/b/f", got);
	CHECK_STR(got, want);
	CHECK_INT(drive_resolve_path(dc, e.root_id, "runs/exp.old/b", &b, &err),
		  0);
	CHECK_INT(count_named(b.id, "f"), 1);
	env_close(&e, true);
}

/* Another instance touches a file (cp -p, os.utime, the same bytes
 * written again): the feed brought the new time, but a copy cached here
 * kept showing the old one (stat reads the version's time). */
static void test_a_touch_elsewhere_shows_on_a_cached_file(void)
{
	struct env e = {0};
	struct drive_file f, out;
	struct drive_err err;
	struct cache_attr a;
	char buf[8];

	CHECK_INT(env_open(&e, 0, true), 0);
	CHECK_INT(put(e.c, "t.txt", "same", 4), 0);
	CHECK_INT(cache_sync(e.c, NULL, NULL), 0);
	CHECK_STR(get_str(e.c, "t.txt", buf, sizeof(buf)), "same");
	CHECK_INT(drive_resolve_path(dc, e.root_id, "t.txt", &f, &err), 0);
	CHECK_INT(drive_update_meta(dc, f.id, NULL, NULL, NULL, 1600000000000LL,
				    &out, &err),
		  0);
	CHECK_INT(feed_poll(e.c), 0);
	CHECK_INT(cache_getattr(e.c, "t.txt", &a), 0);
	CHECK(a.mtime.tv_sec == 1600000000);
	CHECK_STR(get_str(e.c, "t.txt", buf, sizeof(buf)), "same");
	env_close(&e, true);
}

struct names_ud {
	char s[4096];
};

static int names_cb(const struct drive_file *f, void *ud)
{
	struct names_ud *u = ud;
	size_t n = strlen(u->s);

	snprintf(u->s + n, sizeof(u->s) - n, "%s,", f->name);
	return 0;
}

/* A create under way into a folder trashed on Drive, its file moved here
 * meanwhile into a live folder: the create lands in the trash with the
 * file's id, the retry into the live folder reused that id and found the
 * trashed file, and the live folder was forgotten (a rename pending in it
 * became a copy on Drive). Now the trashed id is dropped and only the
 * folder the create went to counts as gone. */
static void test_a_trashed_create_forgets_only_the_folder_it_went_to(void)
{
	struct env e = {0};
	struct drive_file f, ef;
	struct drive_err err;
	struct names_ud names = {""};
	int64_t before;
	size_t len = 1 << 20;
	char *big = malloc(len), got[33];
	int i;

	fill(big, len, 7);
	CHECK_INT(synced_folder(&e, 4000, &f), 0);
	CHECK_INT(cache_mkdir(e.c, "runs/e", 0755), 0);
	CHECK_INT(put(e.c, "runs/e/s.txt", "s", 1), 0);
	CHECK_INT(cache_sync(e.c, NULL, NULL), 0);
	CHECK_INT(drive_resolve_path(dc, e.root_id, "runs/e", &ef, &err), 0);
	CHECK_INT(drive_trash(dc, f.id, &err), 0);
	set_faults("{\"bandwidth\": 1000000}");
	before = creates();
	CHECK_INT(put(e.c, "runs/d/b.bin", big, len), 0);
	/* write_back: under way at 4 s for 1 s; the renames wait 4 s */
	usleep(4300000);
	CHECK_INT(cache_rename(e.c, "runs/d/b.bin", "runs/e/b.bin", 0), 0);
	CHECK_INT(cache_rename(e.c, "runs/e/s.txt", "runs/e/s2.txt", 0), 0);
	for (i = 0; i < 300; i++) {
		remote_md5(e.root_id, "runs/e/b.bin", got);
		if (got[0])
			break;
		usleep(100000);
	}
	set_faults("{}");
	CHECK_INT(cache_sync(e.c, NULL, NULL), 0);
	CHECK_INT(drive_list(dc, ef.id, NULL, names_cb, &names, NULL, &err), 0);
	CHECK(strstr(names.s, "s2.txt,") != NULL);
	CHECK(strstr(names.s, "s.txt,") == NULL);
	CHECK(strstr(names.s, "b.bin,") != NULL);
	/* b.bin into the trash, then where it is: s2.txt is a rename on
	 * Drive, not a new file (3 when runs/e was taken for gone) */
	CHECK(creates() - before <= 2);
	free(big);
	env_close(&e, true);
}

/* A touch to the time the file already has (cp -p, rsync -t) sends
 * nothing: before, the file became "dirty" and, had another instance
 * deleted it meanwhile, it was made again. */
static void test_a_touch_to_the_same_time_sends_nothing(void)
{
	struct env e = {0};
	struct cache_attr a;
	struct timespec tv[2];
	char *s;

	CHECK_INT(env_open(&e, 600000, true), 0);
	CHECK_INT(put(e.c, "same.txt", "x", 1), 0);
	CHECK_INT(cache_sync(e.c, NULL, NULL), 0);
	CHECK_INT(cache_getattr(e.c, "same.txt", &a), 0);
	tv[0] = tv[1] = a.mtime;
	CHECK_INT(cache_utimens(e.c, "same.txt", tv), 0);
	s = cache_status_json(e.c);
	CHECK(strstr(s, "\"queue_files\":0") != NULL);
	free(s);
	tv[1].tv_sec -= 60; /* a real change is sent */
	CHECK_INT(cache_utimens(e.c, "same.txt", tv), 0);
	s = cache_status_json(e.c);
	CHECK(strstr(s, "\"queue_files\":1") != NULL);
	free(s);
	env_close(&e, true);
}

/* A file on Drive renamed (and moved) here keeps its modification time,
 * as on a local disk and with rclone: Drive stamps a renamed file with the
 * time of the rename unless the request gives modifiedTime. */
static void test_a_rename_keeps_the_file_s_time_on_drive(void)
{
	struct env e = {0};
	struct timespec tv[2] = {{1600000000, 0}, {1600000000, 0}};
	struct drive_file f;
	struct drive_err err;

	CHECK_INT(env_open(&e, 0, true), 0);
	CHECK_INT(cache_mkdir(e.c, "runs", 0755), 0);
	CHECK_INT(cache_mkdir(e.c, "runs/b", 0755), 0);
	CHECK_INT(put(e.c, "runs/ckpt.pt", "weights", 7), 0);
	CHECK_INT(cache_utimens(e.c, "runs/ckpt.pt", tv), 0);
	CHECK_INT(cache_sync(e.c, NULL, NULL), 0);
	CHECK_INT(cache_rename(e.c, "runs/ckpt.pt", "runs/best.pt", 0), 0);
	CHECK_INT(cache_sync(e.c, NULL, NULL), 0);
	CHECK_INT(drive_resolve_path(dc, e.root_id, "runs/best.pt", &f, &err),
		  0);
	CHECK(f.modified_ms == 1600000000000LL);
	CHECK_INT(cache_rename(e.c, "runs/best.pt", "runs/b/kept.pt", 0), 0);
	CHECK_INT(cache_sync(e.c, NULL, NULL), 0);
	CHECK_INT(drive_resolve_path(dc, e.root_id, "runs/b/kept.pt", &f, &err),
		  0);
	CHECK(f.modified_ms == 1600000000000LL);
	env_close(&e, true);
}

/* Another instance renames a file: we follow, and never rename it back. */
static void test_remote_rename_is_followed(void)
{
	struct env e = {0};
	struct drive_file f, out;
	struct drive_err err;
	struct cache_attr a;
	char id[128];
	int i;

	CHECK_INT(env_open(&e, 0, true), 0);
	CHECK_INT(put(e.c, "old.txt", "o", 1), 0);
	CHECK_INT(cache_sync(e.c, NULL, NULL), 0);
	CHECK_INT(drive_resolve_path(dc, e.root_id, "old.txt", &f, &err), 0);
	snprintf(id, sizeof(id), "%s", f.id);
	CHECK_INT(
		drive_update_meta(dc, id, "new.txt", NULL, NULL, 0, &out, &err),
		0);
	usleep(1100000);
	CHECK_INT(feed_revalidate(e.c), 0);
	CHECK_INT(cache_getattr(e.c, "new.txt", &a), 0);
	CHECK_INT(cache_getattr(e.c, "old.txt", &a), -ENOENT);
	for (i = 0; i < 10; i++) {
		CHECK_INT(cache_sync(e.c, NULL, NULL), 0);
		usleep(50000);
	}
	CHECK_INT(count_named(e.root_id, "new.txt"), 1);
	CHECK_INT(count_named(e.root_id, "old.txt"), 0);
	env_close(&e, true);
}

/* The atomic-write recipe with the replace inside the `with` block:
 * write a tmp file, fsync it (it lands on Drive as its own file), rename
 * it over the checkpoint while still open, then close. The checkpoint's
 * Drive file must get the new bytes; the close used to find them
 * "identical to a version Drive has" (the tmp file's) and send nothing:
 * Drive kept the old checkpoint and the tmp file for good. */
static void test_rename_over_a_file_while_open_after_fsync_lands_there(void)
{
	struct env e = {0};
	struct cache_handle *h;
	char got[33], want[33];

	CHECK_INT(env_open(&e, 0, true), 0);
	CHECK_INT(put(e.c, "ckpt.pt", "OLD", 3), 0);
	CHECK_INT(cache_sync(e.c, NULL, NULL), 0);
	CHECK_INT(cache_open_file(e.c, "ckpt.pt.tmp", O_WRONLY | O_CREAT, 0644,
				  &h),
		  0);
	CHECK_INT(cache_write(h, "NEW", 3, 0), 3);
	CHECK_INT(cache_fsync(h), 0);
	CHECK_INT(count_named(e.root_id, "ckpt.pt.tmp"), 1);
	CHECK_INT(cache_rename(e.c, "ckpt.pt.tmp", "ckpt.pt", 0), 0);
	CHECK_INT(cache_flush(h), 0);
	cache_release(h);
	CHECK_INT(cache_sync(e.c, NULL, NULL), 0);
	md5_hex("NEW", 3, want);
	remote_md5(e.root_id, "ckpt.pt", got);
	CHECK_STR(got, want);
	CHECK_INT(count_named(e.root_id, "ckpt.pt.tmp"), 0);
	CHECK_INT(count_named(e.root_id, "ckpt.pt"), 1);
	env_close(&e, true);
}

static void test_rename_and_unlink_reach_drive(void)
{
	struct env e = {0};
	char got[33], want[33];

	CHECK_INT(env_open(&e, 0, true), 0);
	CHECK_INT(put(e.c, "a.txt", "A", 1), 0);
	CHECK_INT(put(e.c, "b.txt", "B", 1), 0);
	CHECK_INT(cache_sync(e.c, NULL, NULL), 0);
	CHECK_INT(cache_mkdir(e.c, "sub", 0755), 0);
	CHECK_INT(cache_rename(e.c, "a.txt", "sub/b.txt", 0), 0);
	CHECK_INT(cache_unlink(e.c, "b.txt"), 0);
	CHECK_INT(cache_sync(e.c, NULL, NULL), 0);
	md5_hex("A", 1, want);
	remote_md5(e.root_id, "sub/b.txt", got);
	CHECK_STR(got, want);
	CHECK_INT(count_named(e.root_id, "a.txt"), 0);
	CHECK_INT(count_named(e.root_id, "b.txt"), 0);
	/* tmp + rename over an existing file, as json.dump + os.replace. */
	CHECK_INT(put(e.c, "sub/b.txt.tmp", "C", 1), 0);
	CHECK_INT(cache_rename(e.c, "sub/b.txt.tmp", "sub/b.txt", 0), 0);
	CHECK_INT(cache_sync(e.c, NULL, NULL), 0);
	md5_hex("C", 1, want);
	remote_md5(e.root_id, "sub/b.txt", got);
	CHECK_STR(got, want);
	{
		struct drive_file d;
		struct drive_err err;

		CHECK_INT(drive_resolve_path(dc, e.root_id, "sub", &d, &err),
			  0);
		CHECK_INT(count_named(d.id, NULL), 1);
	}
	env_close(&e, true);
}

/* Forks a child that opens e's cache dir again with its own client: 0 in
 * the child, which writes to p[1]; its pid in the parent, which reads
 * p[0]. */
static pid_t fork_reopened(struct env *e, int p[2])
{
	pid_t pid = fork();

	if (pid == 0) {
		close(p[0]);
		child_client();
		if (env_open(e, 0, false) < 0)
			_exit(2);
	} else {
		close(p[1]);
	}
	return pid;
}

/* Whether a request of n's reconcile is on its way (c->lock not held). */
static bool busy(struct cache *c, const char *path)
{
	struct cnode *n = NULL;
	bool yes;

	pthread_mutex_lock(&c->lock);
	yes = node_lookup(c, path, &n) == 0 && n->busy;
	pthread_mutex_unlock(&c->lock);
	return yes;
}

static void *put_f2_later(void *arg)
{
	usleep(200000);
	put(arg, "f", "F2", 2);
	return NULL;
}

/* A rename renamed back while its request is on its way: the local name
 * is the one Drive had when the request left, but not the one Drive gets.
 * sync returned at once (nothing differed from what Drive was last seen
 * to hold), and a mount killed right after left Drive with the name in
 * between. Sync waits for requests on their way. With `write_again` the
 * file is written again while sync waits: that content, closed after the
 * sync began, is not what sync waits for, but the name given before is. */
static void rename_back_on_its_way(bool write_again)
{
	struct env e = {0};
	pthread_t th;
	int p[2], st, k = 0, i;
	pid_t pid;

	CHECK_INT(env_open(&e, 0, true), 0);
	CHECK_INT(put(e.c, "f", "F", 1), 0);
	CHECK_INT(cache_sync(e.c, NULL, NULL), 0);
	env_close(&e, false);
	CHECK_INT(pipe(p), 0);
	pid = fork_reopened(&e, p);
	if (pid == 0) {
		set_faults("{\"latency_ms\": 800}");
		if (cache_rename(e.c, "f", "g", 0) < 0)
			_exit(3);
		for (i = 0; i < 300 && !busy(e.c, "g"); i++)
			usleep(10000);
		if (cache_rename(e.c, "g", "f", 0) < 0)
			_exit(4);
		if (write_again)
			pthread_create(&th, NULL, put_f2_later, e.c);
		if (cache_sync(e.c, NULL, NULL) < 0)
			_exit(6);
		k = 1;
		if (write(p[1], &k, sizeof(k)) != sizeof(k))
			_exit(7);
		_exit(0); /* killed: nothing more leaves */
	}
	k = t_last_int(p[0], 0);
	waitpid(pid, &st, 0);
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	CHECK_INT(k, 1);
	sleep(2); /* a request the child left on its way lands */
	set_faults("{}");
	CHECK_INT(count_named(e.root_id, "f"), 1);
	CHECK_INT(count_named(e.root_id, "g"), 0);
	env_close(&e, true);
}

static void test_sync_waits_for_a_rename_on_its_way(void)
{
	rename_back_on_its_way(false);
}

static void test_sync_waits_for_a_rename_when_newer_content_follows(void)
{
	rename_back_on_its_way(true);
}

struct release_run {
	struct cache *c;
	int rc;
	int64_t ms;
};

static void *release_lock(void *arg)
{
	struct release_run *r = arg;
	int64_t t0 = cache_now_ms();

	r->rc = cache_unlink(r->c, "locks/a.lock");
	r->ms = cache_now_ms() - t0;
	return NULL;
}

/* A lock's release waits until Drive has every version closed before it,
 * or a newer one: not for a close that came after. Since upload_synced
 * said no while the file's reconcile ran, a newer close whose upload
 * followed the awaited one at once (the worker picks it up without
 * letting c->lock go) held the release for that whole upload too, and
 * for 120 s of it gave EIO: the lock not released. */
static void test_a_lock_release_does_not_wait_for_a_later_close(void)
{
	struct release_run r = {0};
	struct env e = {0};
	struct cache_handle *h = NULL;
	size_t small = 1 << 20, big = 12 << 20;
	char *data = calloc(1, big);
	pthread_t th;
	int i;

	CHECK_INT(env_open(&e, 0, true), 0);
	r.c = e.c;
	CHECK_INT(cache_mkdir(r.c, "locks", 0755), 0);
	CHECK_INT(cache_open_file(r.c, "locks/a.lock",
				  O_WRONLY | O_CREAT | O_EXCL, 0644, &h),
		  0);
	if (h)
		cache_release(h);
	CHECK_INT(cache_sync(r.c, NULL, NULL), 0);
	set_faults("{\"bandwidth\": 1000000}"); /* 1 MiB: 1 s; 12 MiB: 12 s */
	CHECK_INT(put(r.c, "f", data, small), 0);
	for (i = 0; i < 300 && !busy(r.c, "f"); i++)
		usleep(10000);
	CHECK_INT(pthread_create(&th, NULL, release_lock, &r), 0);
	usleep(200000); /* its barrier waits for f's first version */
	memset(data, 'b', big);
	CHECK_INT(put(r.c, "f", data, big), 0);
	pthread_join(th, NULL);
	CHECK_INT(r.rc, 0);
	CHECK(r.ms < 6000);
	set_faults("{}");
	CHECK_INT(cache_sync(r.c, NULL, NULL), 0);
	free(data);
	env_close(&e, true);
}

static void test_negative_lookups_do_not_ask_drive(void)
{
	struct env e = {0};
	struct cache_attr a;
	int64_t before;
	int i;

	CHECK_INT(env_open(&e, 0, true), 0);
	CHECK_INT(cache_getattr(e.c, "missing", &a), -ENOENT);
	before = stat_count("list");
	for (i = 0; i < 50; i++)
		CHECK_INT(cache_getattr(e.c, "missing", &a), -ENOENT);
	CHECK_INT(stat_count("list") - before, 0);
	env_close(&e, true);
}

/* Clean content is evicted above max_size and fetched again on demand. */
static void test_evicted_file_is_fetched_again(void)
{
	struct env e = {0};
	size_t len = 1 << 20;
	char *buf = malloc(len), *back = malloc(len);
	struct cache_handle *h;
	struct cnode *n;
	int i;

	fill(buf, len, 55);
	CHECK_INT(env_open(&e, 0, true), 0);
	e.c->o.max_size = len; /* room for one clean file */
	CHECK_INT(put(e.c, "a.bin", buf, len), 0);
	CHECK_INT(put(e.c, "b.bin", buf, len), 0);
	CHECK_INT(cache_sync(e.c, NULL, NULL), 0);
	pthread_mutex_lock(&e.c->lock);
	evict_run(e.c);
	i = 0;
	for (n = e.c->root->kids; n; n = n->sib_next)
		i += n->cur != NULL;
	pthread_mutex_unlock(&e.c->lock);
	CHECK_INT(i, 1);
	for (i = 0; i < 2; i++) {
		CHECK_INT(cache_open_file(e.c, i ? "b.bin" : "a.bin", O_RDONLY,
					  0, &h),
			  0);
		CHECK_INT(cache_read(h, back, len, 0), (ssize_t)len);
		CHECK(memcmp(back, buf, len) == 0);
		cache_release(h);
	}
	env_close(&e, true);
	free(buf);
	free(back);
}

/* kill -9 at random moments, mid-write and mid-upload, several times:
 * Drive must end with the last closed version and must never have stored
 * a version that was not complete at a close. */
#define TORTURE_N 400

static size_t torture_len(int i)
{
	return (256 << 10) + (size_t)i * 4099;
}

static void torture_child(struct env *e, int first, int fd)
{
	size_t max = torture_len(TORTURE_N);
	char *buf = malloc(max);
	struct cache_handle *h;
	int i;

	child_client();
	if (!buf || env_open(e, 0, false) < 0)
		_exit(2);
	for (i = first; i < TORTURE_N; i++) {
		size_t len = torture_len(i), off;

		fill(buf, len, 1000 + i);
		if (cache_open_file(e->c, "ckpt.pt",
				    O_WRONLY | O_CREAT | O_TRUNC, 0644, &h) < 0)
			_exit(3);
		for (off = 0; off < len; off += 65536)
			cache_write(h, buf + off,
				    len - off < 65536 ? len - off : 65536, off);
		cache_release(h);
		if (write(fd, &i, sizeof(i)) != sizeof(i))
			_exit(4);
		usleep(20000);
	}
	_exit(0);
}

static void test_kill9_torture_no_torn_version(void)
{
	static char md5s[TORTURE_N][33], stored[256][33];
	struct env e = {0};
	char *buf = malloc(torture_len(TORTURE_N)), got[33];
	struct drive_file f;
	struct drive_err err;
	int round, i, j, n, last = -1, next = 0, p[2], st;
	bool known;
	pid_t pid;

	for (i = 0; i < TORTURE_N; i++) {
		fill(buf, torture_len(i), 1000 + i);
		md5_hex(buf, torture_len(i), md5s[i]);
	}
	CHECK_INT(env_open(&e, 0, true), 0);
	env_close(&e, false);
	set_faults("{\"bandwidth\": 3000000}");
	srand(getpid());
	for (round = 0; round < 4; round++) {
		if (pipe(p) < 0)
			break;
		pid = fork();
		if (pid == 0) {
			close(p[0]);
			torture_child(&e, next, p[1]);
		}
		close(p[1]);
		usleep(300000 + rand() % 700000);
		kill(pid, SIGKILL);
		waitpid(pid, &st, 0);
		last = t_last_int(p[0], last);
		if (getenv("VECTUR_TEST_VERBOSE"))
			fprintf(stderr, "round %d: last %d\n", round, last);
		next = last + 2; /* last+1 may have closed unreported */
	}
	set_faults("{}");
	CHECK(last >= 0);
	CHECK_INT(env_open(&e, 0, false), 0);
	CHECK_INT(cache_sync(e.c, NULL, NULL), 0);
	remote_md5(e.root_id, "ckpt.pt", got);
	for (i = 0; i < TORTURE_N; i++)
		if (strcmp(got, md5s[i]) == 0)
			fprintf(stderr,
				"torture: last reported %d, Drive has %d\n",
				last, i);
	CHECK(strcmp(got, md5s[last]) == 0 ||
	      (last + 1 < TORTURE_N && strcmp(got, md5s[last + 1]) == 0));
	CHECK_INT(drive_resolve_path(dc, e.root_id, "ckpt.pt", &f, &err), 0);
	n = drive_versions(f.id, stored, 256);
	CHECK(n >= 1);
	for (j = 0; j < n; j++) {
		known = false;
		for (i = 0; i < TORTURE_N && !known; i++)
			known = strcmp(stored[j], md5s[i]) == 0;
		if (getenv("VECTUR_TEST_VERBOSE"))
			fprintf(stderr, "stored %d: %d\n", j,
				known ? i - 1 : -1);
		CHECK(known);
	}
	CHECK_INT(count_named(e.root_id, "ckpt.pt"), 1);
	env_close(&e, true);
	free(buf);
}

/* Crash points against Drive: the mount dies before each row write of a
 * script of writes, rewrites, renames (also over a file and into a new
 * folder), an unlink and syncs, in turn. After the next mount's sync,
 * Drive must hold what the last step that returned left, or what the one
 * under way would have: no closed version lost, nothing left behind, no
 * duplicate. */
#define DCP_PATHS 6

/* op: 'w' writes x with y, 's' syncs, 'r' renames x to y, 'u' unlinks x,
 * 'm' makes folder x, 'd' removes folder x, 'a' appends y to x (an
 * O_APPEND open of its own), 'T' truncates x to one byte, 'c' chmods x,
 * 't' touches x; a handle kept open across steps: 'o' opens x (O_CREAT,
 * O_TRUNC, O_APPEND), 'W' writes y through it, 'F' fsyncs it, 'C' closes
 * it; 'i' waits until x has a Drive id (its create is under way or done). want:
 * what each path holds after a crash once the step returned (what is written
 * through a handle still open is lost then). */
struct dcp_step {
	char op;
	const char *x, *y;
	const char *want[DCP_PATHS];
};

struct dcp_script {
	const struct dcp_step *steps;
	int nsteps;
	const char *path[DCP_PATHS]; /* NULL: not checked */
	const char *dirs[4];	     /* folders checked for duplicates */
};

static const struct dcp_step dcp_steps[] = {
	{'w', "a", "a0", {"a0", NULL, NULL}},
	{'s', NULL, NULL, {"a0", NULL, NULL}},
	{'w', "a", "a1", {"a1", NULL, NULL}},
	{'s', NULL, NULL, {"a1", NULL, NULL}},
	{'w', "b", "b0", {"a1", "b0", NULL}},
	{'r', "b", "a", {"b0", NULL, NULL}},
	{'s', NULL, NULL, {"b0", NULL, NULL}},
	{'u', "a", NULL, {NULL, NULL, NULL}},
	{'w', "b", "b1", {NULL, "b1", NULL}},
	{'s', NULL, NULL, {NULL, "b1", NULL}},
	{'m', "d", NULL, {NULL, "b1", NULL}},
	{'r', "b", "d/b", {NULL, NULL, "b1"}},
	{'s', NULL, NULL, {NULL, NULL, "b1"}},
	{'w', "a", "a2", {"a2", NULL, "b1"}},
	{'w', "a", "a3", {"a3", NULL, "b1"}},
	{'s', NULL, NULL, {"a3", NULL, "b1"}},
};

static const struct dcp_script dcp_first = {
	dcp_steps,
	sizeof(dcp_steps) / sizeof(dcp_steps[0]),
	{"a", "b", "d/b"},
	{"", "d"},
};

/* Folders renamed and removed, a log appended to across opens, a file
 * unlinked once uploaded. */
static const struct dcp_step dcp_dirs_steps[] = {
	/* d/x, e/x, log, a */
	{'m', "d", NULL, {NULL}},
	{'w', "d/x", "x0", {"x0"}},
	{'s', NULL, NULL, {"x0"}},
	{'r', "d", "e", {NULL, "x0"}},
	{'w', "e/x", "x1", {NULL, "x1"}},
	{'s', NULL, NULL, {NULL, "x1"}},
	{'a', "log", "l1", {NULL, "x1", "l1"}},
	{'a', "log", "l2", {NULL, "x1", "l1l2"}},
	{'s', NULL, NULL, {NULL, "x1", "l1l2"}},
	{'a', "log", "l3", {NULL, "x1", "l1l2l3"}},
	{'w', "a", "a0", {NULL, "x1", "l1l2l3", "a0"}},
	{'s', NULL, NULL, {NULL, "x1", "l1l2l3", "a0"}},
	{'u', "a", NULL, {NULL, "x1", "l1l2l3"}},
	{'u', "e/x", NULL, {NULL, NULL, "l1l2l3"}},
	{'d', "e", NULL, {NULL, NULL, "l1l2l3"}},
	{'s', NULL, NULL, {NULL, NULL, "l1l2l3"}},
};

static const struct dcp_script dcp_dirs = {
	dcp_dirs_steps,
	sizeof(dcp_dirs_steps) / sizeof(dcp_dirs_steps[0]),
	{"d/x", "e/x", "log", "a"},
	{"", "d", "e"},
};

/* A file truncated once uploaded, renamed there and back, rewritten while
 * its previous version uploads, chmod and touch, a file held open across
 * fsyncs, and one unlinked while its upload may be under way. */
static const struct dcp_step dcp_rewrites_steps[] = {
	/* a, b, ck */
	{'w', "b", "b0", {NULL, "b0"}},
	{'s', NULL, NULL, {NULL, "b0"}},
	{'T', "b", NULL, {NULL, "b"}},
	{'r', "b", "a", {"b", NULL}},
	{'r', "a", "b", {NULL, "b"}},
	{'s', NULL, NULL, {NULL, "b"}},
	{'w', "b", "b1", {NULL, "b1"}},
	{'w', "b", "b2", {NULL, "b2"}},
	{'c', "b", NULL, {NULL, "b2"}},
	{'t', "b", NULL, {NULL, "b2"}},
	{'o', "ck", NULL, {NULL, "b2"}},
	{'W', NULL, "c1", {NULL, "b2"}},
	{'F', NULL, NULL, {NULL, "b2", "c1"}},
	{'W', NULL, "c2", {NULL, "b2", "c1"}},
	{'F', NULL, NULL, {NULL, "b2", "c1c2"}},
	{'C', NULL, NULL, {NULL, "b2", "c1c2"}},
	{'w', "a", "a0", {"a0", "b2", "c1c2"}},
	{'i', "a", NULL, {"a0", "b2", "c1c2"}},
	{'u', "a", NULL, {NULL, "b2", "c1c2"}},
	{'s', NULL, NULL, {NULL, "b2", "c1c2"}},
};

static const struct dcp_script dcp_rewrites = {
	dcp_rewrites_steps,
	sizeof(dcp_rewrites_steps) / sizeof(dcp_rewrites_steps[0]),
	{"a", "b", "ck"},
	{""},
};

static void dcp_wait_id(struct cache *c, const char *path)
{
	struct cnode *n;
	int i;

	for (i = 0; i < 500; i++) {
		pthread_mutex_lock(&c->lock);
		n = NULL;
		node_lookup(c, path, &n);
		if (n && n->drive_id[0])
			i = 500;
		pthread_mutex_unlock(&c->lock);
		if (i < 500)
			usleep(10000);
	}
}

static void dcp_append(struct cache *c, const char *path, const char *s)
{
	struct cache_handle *h;

	if (cache_open_file(c, path, O_WRONLY | O_CREAT | O_APPEND, 0644, &h) <
	    0)
		_exit(6);
	cache_write(h, s, strlen(s), 0);
	cache_release(h);
}

/* Runs the steps, writing each one's number to fd once it returned. */
static void dcp_run(struct cache *c, const struct dcp_script *sc, int fd)
{
	const struct dcp_step *s;
	struct cache_handle *h = NULL;
	struct timespec now[2] = {{0, UTIME_NOW}, {0, UTIME_NOW}};
	int k;

	for (k = 0; k < sc->nsteps; k++) {
		s = &sc->steps[k];
		if (s->op == 'w')
			put(c, s->x, s->y, strlen(s->y));
		else if (s->op == 's')
			cache_sync(c, NULL, NULL);
		else if (s->op == 'r')
			cache_rename(c, s->x, s->y, 0);
		else if (s->op == 'u')
			cache_unlink(c, s->x);
		else if (s->op == 'm')
			cache_mkdir(c, s->x, 0755);
		else if (s->op == 'd')
			cache_rmdir(c, s->x);
		else if (s->op == 'a')
			dcp_append(c, s->x, s->y);
		else if (s->op == 'T')
			cache_truncate(c, s->x, 1);
		else if (s->op == 'c')
			cache_chmod(c, s->x, 0600);
		else if (s->op == 't')
			cache_utimens(c, s->x, now);
		else if (s->op == 'o')
			cache_open_file(c, s->x,
					O_WRONLY | O_CREAT | O_TRUNC | O_APPEND,
					0644, &h);
		else if (s->op == 'W')
			cache_write(h, s->y, strlen(s->y), 0);
		else if (s->op == 'F')
			cache_fsync(h);
		else if (s->op == 'C')
			cache_release(h);
		else if (s->op == 'i')
			dcp_wait_id(c, s->x);
		if (write(fd, &k, sizeof(k)) != sizeof(k))
			_exit(4);
	}
}

/* Whether Drive (and the mount) hold step k's files. */
static bool dcp_is(struct env *e, const struct dcp_script *sc, int k)
{
	char got[33], want[33], buf[16];
	const char *w;
	int p;

	if (k < 0 || k >= sc->nsteps)
		return false;
	for (p = 0; p < DCP_PATHS && sc->path[p]; p++) {
		w = sc->steps[k].want[p];
		remote_md5(e->root_id, sc->path[p], got);
		if (w)
			md5_hex(w, strlen(w), want);
		if (strcmp(got, w ? want : "") != 0 ||
		    strcmp(get_str(e->c, sc->path[p], buf, sizeof(buf)),
			   w ? w : "") != 0)
			return false;
	}
	return true;
}

/* No folder of the script holds two entries of one name on Drive. */
static bool dcp_no_dups(struct env *e, const struct dcp_script *sc)
{
	struct drive_file f;
	struct drive_err err;
	const char *id;
	int i, p;

	for (i = 0; i < 4 && sc->dirs[i]; i++) {
		id = e->root_id;
		if (sc->dirs[i][0]) {
			if (count_named(e->root_id, sc->dirs[i]) > 1)
				return false;
			if (drive_resolve_path(dc, e->root_id, sc->dirs[i], &f,
					       &err) < 0)
				continue;
			id = f.id;
		}
		for (p = 0; p < DCP_PATHS && sc->path[p]; p++) {
			const char *base = strrchr(sc->path[p], '/');

			if (count_named(id, base ? base + 1 : sc->path[p]) > 1)
				return false;
		}
	}
	return true;
}

/* Says what Drive and the mount hold, for a failure's message. */
static void dcp_show(struct env *e, const struct dcp_script *sc)
{
	char got[33], want[33], buf[256];
	const char *is, *w;
	struct cnode *n;
	size_t i;
	int p, k, q;

	for (p = 0; p < DCP_PATHS && sc->path[p]; p++) {
		remote_md5(e->root_id, sc->path[p], got);
		is = got[0] ? "?" : "(absent)";
		for (k = 0; k < sc->nsteps; k++) {
			for (q = 0; q < DCP_PATHS; q++) {
				w = sc->steps[k].want[q];
				if (!w)
					continue;
				md5_hex(w, strlen(w), want);
				if (strcmp(got, want) == 0)
					is = w;
			}
		}
		fprintf(stderr, "  %s: Drive %s, mount '%s'\n", sc->path[p], is,
			get_str(e->c, sc->path[p], buf, sizeof(buf)));
	}
	pthread_mutex_lock(&e->c->lock);
	for (i = 0; i < CACHE_HASH; i++)
		for (n = e->c->by_ino[i]; n; n = n->h_ino)
			fprintf(stderr,
				"  node %llu in %llu '%s' id %s%s, Drive's "
				"parent %s\n",
				(unsigned long long)n->ino,
				n->parent ? (unsigned long long)n->parent->ino
					  : 0ULL,
				n->name, n->drive_id,
				n->remote_exists ? "" : " (not on Drive)",
				n->remote_parent);
	pthread_mutex_unlock(&e->c->lock);
	cache_last_error(e->c, buf, sizeof(buf));
	fprintf(stderr, "  %d entries in the root on Drive; last error: %s\n",
		count_named(e->root_id, NULL), buf);
}

/* Kills the mount before row write 1, 2, ... of the script in turn;
 * checks after the next mount's sync. */
static void dcp_test(const struct dcp_script *sc)
{
	struct env e = {0};
	int64_t at;
	int p[2], last, st, bad = 0;
	bool ok;
	pid_t pid;

	env_settle_ms = 300;
	for (at = 1; at < 2000; at++) {
		if (env_open(&e, 0, true) < 0 || pipe(p) < 0) {
			CHECK(false);
			break;
		}
		env_close(&e, false);
		pid = fork_reopened(&e, p);
		if (pid == 0) {
			e.c->crash_at = at;
			dcp_run(e.c, sc, p[1]);
			_exit(0);
		}
		last = t_last_int(p[0], -1);
		waitpid(pid, &st, 0);
		if (WIFEXITED(st) && WEXITSTATUS(st) == 0) {
			CHECK_INT(last, sc->nsteps - 1);
			break;
		}
		CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 99);
		CHECK_INT(env_open(&e, 0, false), 0);
		CHECK_INT(cache_sync(e.c, NULL, NULL), 0);
		ok = (last < 0 && count_named(e.root_id, NULL) == 0) ||
		     dcp_is(&e, sc, last) || dcp_is(&e, sc, last + 1);
		ok = ok && dcp_no_dups(&e, sc);
		if (!ok && bad++ < 5) {
			fprintf(stderr,
				"crash at row write %lld after step %d\n",
				(long long)at, last);
			dcp_show(&e, sc);
		}
		CHECK(ok);
		env_close(&e, true);
	}
	env_settle_ms = 0;
	CHECK(at > 20 && at < 2000); /* the script ran out of row writes */
	env_close(&e, true);
}

/* Whether a live file named `name` in `parent` holds `data`. */
struct holds_ud {
	const char *name;
	char md5[33];
	bool found;
};

static int holds_cb(const struct drive_file *x, void *ud)
{
	struct holds_ud *u = ud;

	if (strcmp(x->name, u->name) == 0 && strcmp(x->md5, u->md5) == 0)
		u->found = true;
	return 0;
}

static bool drive_holds(const char *parent, const char *name, const char *data)
{
	struct holds_ud u = {name, "", false};
	struct drive_err err;

	md5_hex(data, strlen(data), u.md5);
	if (drive_list(dc, parent, NULL, holds_cb, &u, NULL, &err) < 0)
		return false;
	return u.found;
}

/* Another instance made "a" first; ours, made after it, gives way: our
 * content goes into its file, ours is trashed once that landed
 * (node_retarget). A kill at any row write of that must not lose our
 * content: the tomb of our file saved before the node moved onto the
 * other one trashed the file the node still named, with our content. */
static void test_a_crash_while_giving_way_to_a_rival_keeps_our_content(void)
{
	struct env e = {0};
	struct drive_file f;
	char buf[16];
	int64_t at;
	int st, bad = 0;
	bool ok;
	pid_t pid;

	env_settle_ms = 300;
	for (at = 1; at < 200; at++) {
		if (env_open(&e, 0, true) < 0) {
			CHECK(false);
			break;
		}
		env_close(&e, false);
		pid = fork();
		if (pid == 0) {
			child_client();
			if (env_open(&e, 0, false) < 0)
				_exit(2);
			get_str(e.c, "x", buf,
				sizeof(buf)); /* lists the root */
			if (upload_bytes(e.root_id, "a", "theirs", 6, &f) < 0)
				_exit(3);
			sleep(1); /* a later createdTime for ours */
			if (put(e.c, "a", "mine", 4) < 0 ||
			    cache_sync(e.c, NULL, NULL) < 0)
				_exit(4);
			e.c->crash_at = e.c->steps + at;
			feed_poll(e.c); /* notes the rival */
			cache_sync(e.c, NULL, NULL);
			_exit(0);
		}
		waitpid(pid, &st, 0);
		CHECK(WIFEXITED(st) &&
		      (WEXITSTATUS(st) == 0 || WEXITSTATUS(st) == 99));
		if (WIFEXITED(st) && WEXITSTATUS(st) == 0) {
			CHECK(drive_holds(e.root_id, "a", "mine"));
			CHECK_INT(count_named(e.root_id, "a"), 1);
			env_close(&e, true);
			break;
		}
		CHECK_INT(env_open(&e, 0, false), 0);
		CHECK_INT(cache_sync(e.c, NULL, NULL), 0);
		feed_poll(e.c);
		CHECK_INT(cache_sync(e.c, NULL, NULL), 0);
		ok = drive_holds(e.root_id, "a", "mine");
		if (!ok && bad++ < 5)
			fprintf(stderr,
				"crash at row write %lld of giving way: ours "
				"is gone from Drive (a x%d, mount '%s')\n",
				(long long)at, count_named(e.root_id, "a"),
				get_str(e.c, "a", buf, sizeof(buf)));
		CHECK(ok);
		env_close(&e, true);
	}
	env_settle_ms = 0;
	CHECK(at > 1 && at < 200);
}

static void test_a_crash_at_any_row_write_lands_what_returned(void)
{
	dcp_test(&dcp_first);
}

static void test_a_crash_at_any_row_write_of_folders_and_logs_lands(void)
{
	dcp_test(&dcp_dirs);
}

static void test_a_crash_at_any_row_write_of_rewrites_lands(void)
{
	dcp_test(&dcp_rewrites);
}

/* VECTUR_TEST_ONLY=substring runs the matching tests only;
 * VECTUR_TEST_SHARD=k/n runs every n-th test from the k-th (0-based), so
 * that pytest can run the suite in n parallel processes. A test taking
 * more than 5 s says how long. */
static int shard_k, shard_n, shard_i;

#define TRY(fn)                                                                \
	do {                                                                   \
		double t_t0 = now_s();                                         \
		if ((!only || strstr(#fn, only)) &&                            \
		    (shard_n <= 0 || shard_i++ % shard_n == shard_k)) {        \
			RUN(fn);                                               \
			if (now_s() - t_t0 > 5)                                \
				fprintf(stderr, "%s took %.1f s\n", #fn,       \
					now_s() - t_t0);                       \
		}                                                              \
	} while (0)

int main(void)
{
	const char *only = getenv("VECTUR_TEST_ONLY");
	const char *shard = getenv("VECTUR_TEST_SHARD");

	if (shard && (sscanf(shard, "%d/%d", &shard_k, &shard_n) != 2 ||
		      shard_n < 1 || shard_k < 0 || shard_k >= shard_n)) {
		fprintf(stderr, "VECTUR_TEST_SHARD=%s: want k/n, 0 <= k < n\n",
			shard);
		return 2;
	}

	endpoint = getenv("VECTUR_TEST_ENDPOINT");
	if (!endpoint || !*endpoint) {
		printf("skipped (VECTUR_TEST_ENDPOINT not set)\n");
		return t_done();
	}
	curl_global_init(CURL_GLOBAL_DEFAULT);
	if (setup() < 0) {
		fprintf(stderr, "setup against %s failed\n", endpoint);
		return 1;
	}
	TRY(test_upload_after_close_lands_with_right_md5);
	TRY(test_fsync_means_on_drive);
	TRY(test_rename_and_unlink_reach_drive);
	TRY(test_sync_waits_for_a_rename_on_its_way);
	TRY(test_sync_waits_for_a_rename_when_newer_content_follows);
	TRY(test_a_lock_release_does_not_wait_for_a_later_close);
	TRY(test_rename_over_a_file_while_open_after_fsync_lands_there);
	TRY(test_remote_rename_is_followed);
	TRY(test_negative_lookups_do_not_ask_drive);
	TRY(test_remote_delete_disappears_and_invalidates);
	TRY(test_new_files_in_a_folder_deleted_on_drive_land);
	TRY(test_a_new_file_in_a_folder_trashed_on_drive_lands);
	TRY(test_a_trashed_root_fails_uploads_instead_of_looping);
	TRY(test_a_renamed_file_in_a_folder_deleted_on_drive_lands);
	TRY(test_a_clean_file_held_when_its_folder_goes_is_let_go);
	TRY(test_a_held_file_written_after_its_folder_went_lands);
	TRY(test_fstat_of_a_file_whose_folder_went_meanwhile);
	TRY(test_a_rename_keeps_the_file_s_time_on_drive);
	TRY(test_a_rewrite_here_stops_the_old_download_of_its_reader);
	TRY(test_rmdir_while_its_create_is_under_way);
	TRY(test_a_gone_folder_goes_when_its_held_file_is_removed);
	TRY(test_a_rename_keeps_another_instance_s_newer_time);
	TRY(test_a_lock_gone_on_drive_is_not_made_again_from_a_copy);
	TRY(test_a_lock_folder_gone_on_drive_can_be_made_again);
	TRY(test_a_folder_made_again_after_a_rename_is_a_new_one);
	TRY(test_a_touch_elsewhere_shows_on_a_cached_file);
	TRY(test_a_trashed_create_forgets_only_the_folder_it_went_to);
	TRY(test_a_touch_to_the_same_time_sends_nothing);
	TRY(test_evicted_file_is_fetched_again);
	TRY(test_changes_feed_brings_remote_edit);
	TRY(test_rewrite_while_uploading_ends_with_latest);
	TRY(test_killed_upload_resumes_at_next_open);
	TRY(test_a_synced_version_survives_a_reboot_mid_upload);
	TRY(test_kill9_torture_no_torn_version);
	TRY(test_a_crash_at_any_row_write_lands_what_returned);
	TRY(test_a_crash_while_giving_way_to_a_rival_keeps_our_content);
	TRY(test_a_crash_at_any_row_write_of_folders_and_logs_lands);
	TRY(test_a_crash_at_any_row_write_of_rewrites_lands);
	TRY(test_faults_200_files_no_duplicates);
	TRY(test_cold_read_of_file_created_on_drive);
	TRY(test_a_partial_download_dropped_under_a_reader_reads_whole);
	TRY(test_a_download_is_fetched_again_after_a_reboot);
	TRY(test_a_twin_of_an_upload_stays_cached_after_a_reboot);
	TRY(test_a_downloaded_log_fsynced_here_stays_cached_after_a_reboot);
	TRY(test_an_unsynced_copy_is_fetched_again_after_a_reboot);
	drive_client_free(dc);
	if (!getenv("VECTUR_TEST_RCLONE_CONFIG")) {
		unlink(conf_path);
		*strrchr(conf_path, '/') = 0;
		rmdir(conf_path);
	}
	return t_done();
}
