/* drivectl.c — a small command line over vectur's Drive client, for the
 * integration tests and the benchmarks:
 *
 *   drivectl [--config F] [--endpoint URL] REMOTE:[PATH] CMD ARGS...
 *     about | ls PATH | stat PATH | mkdir PATH | put LOCAL PATH
 *     | get PATH LOCAL | mv SRC DST | rm PATH | trash PATH | changes [TOKEN]
 *     | parallel N CMD ARGS   (N threads run CMD on one shared client)
 *
 * Options may stand anywhere: --chunk-size N, --multipart-max N,
 * --session-file F (put: persist the resumable session there and resume
 * from it), --offset N --length N (get), --pacer-rate R, --pacer-burst N,
 * --max-retries N, --timeout S (stall timeout), --stats (print request
 * counters to stderr at exit).
 * Sizes take K/M/G suffixes. Results are JSON, one object per line.
 * Exit status: 0 ok, 1 Drive or local error (message on stderr), 2 usage.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <json-c/json.h>

#include "drive.h"

struct opts {
	const char *config;
	const char *endpoint;
	const char *session_file;
	const char *new_id; /* put: create with this generated id */
	int64_t chunk_size;
	int64_t multipart_max;
	int64_t offset;
	int64_t length;
	double pacer_rate;
	int pacer_burst;
	int max_retries;
	int timeout_s;
	bool stats;
	const char *pos[8]; /* REMOTE, CMD, ARGS */
	int npos;
};

struct ctl {
	struct opts o;
	struct drive_client *c;
	struct drive_file root;
	struct drive_err err;
};

static void usage(void)
{
	fprintf(stderr,
		"usage: drivectl [--config F] [--endpoint URL] REMOTE:[PATH] "
		"CMD ARGS\n"
		"  about | ls PATH | stat PATH | mkdir PATH | put LOCAL PATH\n"
		"  | get PATH LOCAL [--offset N --length N] | mv SRC DST\n"
		"  | rm PATH | trash PATH | changes [TOKEN] | parallel N CMD "
		"ARGS\n"
		"options: --chunk-size N --multipart-max N --session-file F "
		"--new-id ID\n"
		"  --pacer-rate R --pacer-burst N --max-retries N --timeout S\n"
		"  --stats\n");
	exit(2);
}

static int64_t parse_size(const char *s)
{
	char *end;
	double v = strtod(s, &end);

	switch (*end) {
	case 'k':
	case 'K':
		v *= 1024;
		break;
	case 'm':
	case 'M':
		v *= 1024 * 1024;
		break;
	case 'g':
	case 'G':
		v *= 1024.0 * 1024 * 1024;
		break;
	case '\0':
		break;
	default:
		fprintf(stderr, "drivectl: bad size %s\n", s);
		exit(2);
	}
	return (int64_t)v;
}

static void parse_args(int argc, char **argv, struct opts *o)
{
	bool dashdash = false;
	const char *a, *v;
	int i;

	memset(o, 0, sizeof(*o));
	o->length = -1;
	for (i = 1; i < argc; i++) {
		a = argv[i];
		if (dashdash || strncmp(a, "--", 2) != 0) {
			if (o->npos ==
			    (int)(sizeof(o->pos) / sizeof(o->pos[0])))
				usage();
			o->pos[o->npos++] = a;
			continue;
		}
		if (strcmp(a, "--") == 0) {
			dashdash = true;
			continue;
		}
		if (strcmp(a, "--stats") == 0) {
			o->stats = true;
			continue;
		}
		if (i + 1 >= argc)
			usage();
		v = argv[++i];
		if (strcmp(a, "--config") == 0)
			o->config = v;
		else if (strcmp(a, "--endpoint") == 0)
			o->endpoint = v;
		else if (strcmp(a, "--session-file") == 0)
			o->session_file = v;
		else if (strcmp(a, "--new-id") == 0)
			o->new_id = v;
		else if (strcmp(a, "--chunk-size") == 0)
			o->chunk_size = parse_size(v);
		else if (strcmp(a, "--multipart-max") == 0)
			o->multipart_max = parse_size(v);
		else if (strcmp(a, "--offset") == 0)
			o->offset = parse_size(v);
		else if (strcmp(a, "--length") == 0)
			o->length = parse_size(v);
		else if (strcmp(a, "--pacer-rate") == 0)
			o->pacer_rate = strtod(v, NULL);
		else if (strcmp(a, "--pacer-burst") == 0)
			o->pacer_burst = atoi(v);
		else if (strcmp(a, "--max-retries") == 0)
			o->max_retries = atoi(v);
		else if (strcmp(a, "--timeout") == 0)
			o->timeout_s = atoi(v);
		else
			usage();
	}
	if (o->npos < 2)
		usage();
}

static int fail(struct ctl *x, const char *what)
{
	fprintf(stderr, "drivectl: %s: %s (status %ld%s%s)\n", what,
		x->err.message, x->err.status, x->err.reason[0] ? ", " : "",
		x->err.reason);
	return 1;
}

/* ---- output ---------------------------------------------------------- */

static void print_json(struct json_object *o)
{
	printf("%s\n", json_object_to_json_string_ext(
			       o, JSON_C_TO_STRING_PLAIN |
					  JSON_C_TO_STRING_NOSLASHESCAPE));
	json_object_put(o);
}

static struct json_object *file_json(const struct drive_file *f)
{
	struct json_object *o = json_object_new_object();
	char local[4096];

	if (drive_name_to_local(f->name, local, sizeof(local)) < 0)
		snprintf(local, sizeof(local), "%s", f->name);
	json_object_object_add(o, "id", json_object_new_string(f->id));
	json_object_object_add(o, "name", json_object_new_string(local));
	json_object_object_add(o, "drive_name",
			       json_object_new_string(f->name));
	json_object_object_add(o, "mime_type",
			       json_object_new_string(f->mime_type));
	json_object_object_add(o, "parent", json_object_new_string(f->parent));
	json_object_object_add(o, "md5", json_object_new_string(f->md5));
	json_object_object_add(o, "size", json_object_new_int64(f->size));
	json_object_object_add(o, "version", json_object_new_int64(f->version));
	json_object_object_add(o, "created_ms",
			       json_object_new_int64(f->created_ms));
	json_object_object_add(o, "modified_ms",
			       json_object_new_int64(f->modified_ms));
	json_object_object_add(o, "is_folder",
			       json_object_new_boolean(f->is_folder));
	json_object_object_add(o, "trashed",
			       json_object_new_boolean(f->trashed));
	return o;
}

/* ---- paths ----------------------------------------------------------- */

/* Splits "a/b/c" into "a/b" and "c" (trailing slashes ignored). */
static void split_path(const char *path, char *dir, size_t dlen, char *base,
		       size_t blen)
{
	char tmp[4096], *slash;
	size_t n;

	snprintf(tmp, sizeof(tmp), "%s", path);
	n = strlen(tmp);
	while (n > 0 && tmp[n - 1] == '/')
		tmp[--n] = '\0';
	slash = strrchr(tmp, '/');
	if (slash) {
		*slash = '\0';
		snprintf(dir, dlen, "%s", tmp);
		snprintf(base, blen, "%s", slash + 1);
	} else {
		snprintf(dir, dlen, "%s", "");
		snprintf(base, blen, "%s", tmp);
	}
}

static int resolve(struct ctl *x, const char *path, struct drive_file *out)
{
	return drive_resolve_path(x->c, x->root.id, path, out, &x->err);
}

/* mkdir -p: every missing component is created. */
static int make_dirs(struct ctl *x, const char *path, struct drive_file *out)
{
	char comp[1024], name[1024];
	struct drive_file cur = x->root;
	const char *p = path;
	size_t n;

	while (*p) {
		while (*p == '/')
			p++;
		if (!*p)
			break;
		n = strcspn(p, "/");
		snprintf(comp, sizeof(comp), "%.*s", (int)n, p);
		p += n;
		if (drive_resolve_path(x->c, cur.id, comp, &cur, &x->err) ==
		    0) {
			if (!cur.is_folder) {
				drive_err_set(&x->err, 0, "notAFolder",
					      "%s is a file", comp);
				return -1;
			}
			continue;
		}
		if (x->err.status != 404)
			return -1;
		if (drive_name_from_local(comp, name, sizeof(name)) < 0 ||
		    drive_mkdir(x->c, cur.id, name, &cur, &x->err) < 0)
			return -1;
	}
	*out = cur;
	return 0;
}

/* ---- commands -------------------------------------------------------- */

static int cmd_about(struct ctl *x)
{
	struct drive_about a;
	struct json_object *o, *u, *q;

	if (drive_about(x->c, &a, &x->err) < 0)
		return fail(x, "about");
	o = json_object_new_object();
	u = json_object_new_object();
	q = json_object_new_object();
	json_object_object_add(u, "email",
			       json_object_new_string(a.user_email));
	json_object_object_add(u, "name", json_object_new_string(a.user_name));
	json_object_object_add(q, "limit",
			       json_object_new_int64(a.quota_limit));
	json_object_object_add(q, "usage",
			       json_object_new_int64(a.quota_usage));
	json_object_object_add(o, "user", u);
	json_object_object_add(o, "quota", q);
	json_object_object_add(o, "root", json_object_new_string(x->root.id));
	print_json(o);
	return 0;
}

static int print_entry(const struct drive_file *f, void *ud)
{
	(void)ud;
	print_json(file_json(f));
	return 0;
}

static int cmd_ls(struct ctl *x, const char *path)
{
	struct drive_file dir;

	if (resolve(x, path, &dir) < 0)
		return fail(x, path);
	if (!dir.is_folder) {
		print_entry(&dir, NULL);
		return 0;
	}
	if (drive_list(x->c, dir.id, NULL, print_entry, NULL, NULL, &x->err) <
	    0)
		return fail(x, "list");
	return 0;
}

static int cmd_stat(struct ctl *x, const char *path)
{
	struct drive_file f;

	if (resolve(x, path, &f) < 0)
		return fail(x, path);
	print_json(file_json(&f));
	return 0;
}

static int cmd_mkdir(struct ctl *x, const char *path)
{
	struct drive_file f;

	if (make_dirs(x, path, &f) < 0)
		return fail(x, path);
	print_json(file_json(&f));
	return 0;
}

/* Persists the session URL atomically, so a killed put can resume. */
static void save_session(const char *url, void *ud)
{
	const char *path = ((struct ctl *)ud)->o.session_file;
	char tmp[4200];
	FILE *f;

	if (!path)
		return;
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	f = fopen(tmp, "w");
	if (!f)
		return;
	fprintf(f, "%s\n", url);
	fflush(f);
	fsync(fileno(f));
	fclose(f);
	rename(tmp, path);
}

static void load_session(const char *path, char *url, size_t len)
{
	FILE *f = path ? fopen(path, "r") : NULL;

	url[0] = '\0';
	if (!f)
		return;
	if (fgets(url, (int)len, f))
		url[strcspn(url, "\r\n")] = '\0';
	fclose(f);
}

static int cmd_put(struct ctl *x, const char *local, const char *path)
{
	char dir_path[4096], base[1024], name[1024];
	struct drive_upload up = {0};
	struct drive_file dir, existing, out;
	struct stat st;
	int fd, rc = 1;

	fd = open(local, O_RDONLY);
	if (fd < 0 || fstat(fd, &st) < 0) {
		fprintf(stderr, "drivectl: %s: %s\n", local, strerror(errno));
		return 1;
	}
	split_path(path, dir_path, sizeof(dir_path), base, sizeof(base));
	if (!base[0] || drive_name_from_local(base, name, sizeof(name)) < 0) {
		fprintf(stderr, "drivectl: %s: bad destination\n", path);
		goto out;
	}
	if (make_dirs(x, dir_path, &dir) < 0) {
		rc = fail(x, dir_path);
		goto out;
	}
	up.fd = fd;
	up.size = st.st_size;
	up.modified_ms = (int64_t)st.st_mtim.tv_sec * 1000 +
			 st.st_mtim.tv_nsec / 1000000;
	up.chunk_size = (size_t)x->o.chunk_size;
	up.multipart_max = (size_t)x->o.multipart_max;
	up.on_session = save_session;
	up.ud = x;
	load_session(x->o.session_file, up.session_url, sizeof(up.session_url));
	/* Replace the content of an existing file of that name (the oldest
	 * of duplicates), else create. */
	if (drive_resolve_path(x->c, dir.id, base, &existing, &x->err) == 0) {
		if (existing.is_folder) {
			fprintf(stderr, "drivectl: %s is a folder\n", path);
			goto out;
		}
		up.id = existing.id;
	} else if (x->err.status != 404) {
		rc = fail(x, path);
		goto out;
	} else {
		up.parent = dir.id;
		up.name = name;
		up.new_id = x->o.new_id;
	}
	if (drive_upload(x->c, &up, &out, &x->err) < 0) {
		rc = fail(x, "upload");
		goto out;
	}
	if (x->o.session_file)
		unlink(x->o.session_file);
	print_json(file_json(&out));
	rc = 0;
out:
	close(fd);
	return rc;
}

static int cmd_get(struct ctl *x, const char *path, const char *local)
{
	struct drive_file f;
	struct json_object *o;
	int64_t got = 0;
	int fd;

	if (resolve(x, path, &f) < 0)
		return fail(x, path);
	fd = open(local, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd < 0) {
		fprintf(stderr, "drivectl: %s: %s\n", local, strerror(errno));
		return 1;
	}
	if (drive_download_fd(x->c, f.id, x->o.offset, x->o.length, fd, 0, &got,
			      &x->err) < 0) {
		close(fd);
		return fail(x, "download");
	}
	if (close(fd) < 0) {
		fprintf(stderr, "drivectl: %s: %s\n", local, strerror(errno));
		return 1;
	}
	o = json_object_new_object();
	json_object_object_add(o, "id", json_object_new_string(f.id));
	json_object_object_add(o, "bytes", json_object_new_int64(got));
	json_object_object_add(o, "md5", json_object_new_string(f.md5));
	print_json(o);
	return 0;
}

static int cmd_mv(struct ctl *x, const char *src, const char *dst)
{
	char dir_path[4096], base[1024], name[1024];
	struct drive_file f, target, dir, out;
	const char *new_name = NULL, *add = NULL, *remove = NULL;

	if (resolve(x, src, &f) < 0)
		return fail(x, src);
	if (resolve(x, dst, &target) == 0) {
		if (!target.is_folder) {
			fprintf(stderr, "drivectl: %s exists\n", dst);
			return 1;
		}
		dir = target; /* into the folder, same name */
	} else if (x->err.status != 404) {
		return fail(x, dst);
	} else {
		split_path(dst, dir_path, sizeof(dir_path), base, sizeof(base));
		if (resolve(x, dir_path, &dir) < 0)
			return fail(x, dir_path);
		if (drive_name_from_local(base, name, sizeof(name)) < 0)
			return 1;
		if (strcmp(name, f.name) != 0)
			new_name = name;
	}
	if (strcmp(dir.id, f.parent) != 0) {
		add = dir.id;
		remove = f.parent[0] ? f.parent : NULL;
	}
	if (drive_update_meta(x->c, f.id, new_name, add, remove, 0, &out,
			      &x->err) < 0)
		return fail(x, "move");
	print_json(file_json(&out));
	return 0;
}

static int cmd_rm(struct ctl *x, const char *path, bool trash)
{
	struct drive_file f;

	if (resolve(x, path, &f) < 0)
		return fail(x, path);
	if ((trash ? drive_trash(x->c, f.id, &x->err)
		   : drive_delete(x->c, f.id, &x->err)) < 0)
		return fail(x, trash ? "trash" : "delete");
	return 0;
}

static int print_change(const struct drive_change *ch, void *ud)
{
	struct json_object *o = json_object_new_object();

	(void)ud;
	json_object_object_add(o, "file_id",
			       json_object_new_string(ch->file_id));
	json_object_object_add(o, "removed",
			       json_object_new_boolean(ch->removed));
	json_object_object_add(o, "time_ms",
			       json_object_new_int64(ch->time_ms));
	if (ch->has_file)
		json_object_object_add(o, "file", file_json(&ch->file));
	print_json(o);
	return 0;
}

static int cmd_changes(struct ctl *x, const char *token)
{
	struct json_object *o = json_object_new_object();
	char next[1024];

	if (!token) {
		if (drive_changes_start(x->c, next, sizeof(next), &x->err) <
		    0) {
			json_object_put(o);
			return fail(x, "changes");
		}
		json_object_object_add(o, "startPageToken",
				       json_object_new_string(next));
	} else {
		if (drive_changes_list(x->c, token, print_change, NULL, next,
				       sizeof(next), &x->err) < 0) {
			json_object_put(o);
			return fail(x, "changes");
		}
		json_object_object_add(o, "newStartPageToken",
				       json_object_new_string(next));
	}
	print_json(o);
	return 0;
}

/* ---- main ------------------------------------------------------------ */

static int open_client(struct ctl *x, const char *spec, char *rpath,
		       size_t rlen)
{
	struct drive_client_opts co = {0};
	struct drive_config cfg;
	char name[128], file[1024];
	int rc;

	if (drive_parse_remote(spec, name, sizeof(name), rpath, rlen, &x->err) <
	    0)
		return fail(x, spec);
	drive_config_find(x->o.config, file, sizeof(file));
	memset(&cfg, 0, sizeof(cfg));
	if (drive_config_load(file, name, &cfg, &x->err) < 0)
		return fail(x, "config");
	co.endpoint = x->o.endpoint;
	co.pacer_rate = x->o.pacer_rate;
	co.pacer_burst = x->o.pacer_burst;
	co.max_retries = x->o.max_retries;
	co.timeout_s = x->o.timeout_s;
	rc = drive_client_new(&x->c, &cfg, &co, &x->err);
	drive_config_free(&cfg);
	if (rc < 0)
		return fail(x, "client");
	return 0;
}

/* Prints N ids from files.generateIds, one a line. */
static int cmd_gen_ids(struct ctl *x, int n)
{
	char(*ids)[128] = calloc(n > 0 ? (size_t)n : 1, sizeof(*ids));
	int i;

	if (!ids || drive_generate_ids(x->c, n, ids, &x->err) < 0) {
		free(ids);
		return fail(x, "gen-ids");
	}
	for (i = 0; i < n; i++)
		printf("%s\n", ids[i]);
	free(ids);
	return 0;
}

static int run(struct ctl *x)
{
	const char *cmd = x->o.pos[1], *a1 = x->o.pos[2], *a2 = x->o.pos[3];
	int n = x->o.npos - 2;

	if (!strcmp(cmd, "about") && n == 0)
		return cmd_about(x);
	if (!strcmp(cmd, "ls") && n <= 1)
		return cmd_ls(x, n ? a1 : "");
	if (!strcmp(cmd, "stat") && n == 1)
		return cmd_stat(x, a1);
	if (!strcmp(cmd, "mkdir") && n == 1)
		return cmd_mkdir(x, a1);
	if (!strcmp(cmd, "put") && n == 2)
		return cmd_put(x, a1, a2);
	if (!strcmp(cmd, "get") && n == 2)
		return cmd_get(x, a1, a2);
	if (!strcmp(cmd, "mv") && n == 2)
		return cmd_mv(x, a1, a2);
	if (!strcmp(cmd, "rm") && n == 1)
		return cmd_rm(x, a1, false);
	if (!strcmp(cmd, "trash") && n == 1)
		return cmd_rm(x, a1, true);
	if (!strcmp(cmd, "changes") && n <= 1)
		return cmd_changes(x, n ? a1 : NULL);
	if (!strcmp(cmd, "gen-ids") && n == 1)
		return cmd_gen_ids(x, atoi(a1));
	usage();
	return 2;
}

/* Finds the root every PATH argument is relative to: REMOTE:sub/dir makes
 * sub/dir the root. */
static int find_root(struct ctl *x, const char *rpath)
{
	if (drive_root(x->c, &x->root, &x->err) < 0)
		return fail(x, "root");
	if (rpath[0] &&
	    drive_resolve_path(x->c, x->root.id, rpath, &x->root, &x->err) < 0)
		return fail(x, rpath);
	return 0;
}

struct par {
	struct ctl x;
	const char *rpath;
	pthread_t tid;
	int rc;
};

static void *par_run(void *arg)
{
	struct par *p = arg;

	p->rc = find_root(&p->x, p->rpath);
	if (!p->rc)
		p->rc = run(&p->x);
	return NULL;
}

/* "parallel N CMD ARGS": N threads run CMD at once on one shared client,
 * each from the very first request (root lookup, token refresh): proves
 * the client is safe to share. */
static int run_parallel(struct ctl *x, const char *rpath)
{
	int n = x->o.npos > 3 ? atoi(x->o.pos[2]) : 0, i, rc = 0;
	struct par *ps;

	if (n < 1 || n > 64)
		usage();
	ps = calloc((size_t)n, sizeof(*ps));
	if (!ps)
		return 1;
	for (i = 0; i < n; i++) {
		ps[i].x = *x;
		ps[i].rpath = rpath;
		/* Drop "parallel N": CMD becomes pos[1]. */
		memmove(&ps[i].x.o.pos[1], &ps[i].x.o.pos[3],
			(size_t)(x->o.npos - 3) * sizeof(x->o.pos[0]));
		ps[i].x.o.npos -= 2;
		pthread_create(&ps[i].tid, NULL, par_run, &ps[i]);
	}
	for (i = 0; i < n; i++) {
		pthread_join(ps[i].tid, NULL);
		if (ps[i].rc)
			rc = ps[i].rc;
	}
	free(ps);
	return rc;
}

int main(int argc, char **argv)
{
	static struct ctl x; /* big: keep it off the stack */
	char rpath[2048];
	int rc;

	parse_args(argc, argv, &x.o);
	if (open_client(&x, x.o.pos[0], rpath, sizeof(rpath)))
		return 1;
	if (!strcmp(x.o.pos[1], "parallel"))
		rc = run_parallel(&x, rpath);
	else
		rc = find_root(&x, rpath) ? 1 : run(&x);
	if (x.o.stats) {
		struct drive_stats s;

		drive_stats_get(x.c, &s);
		fprintf(stderr,
			"{\"requests\":%" PRIu64 ",\"retries\":%" PRIu64
			",\"bytes_up\":%" PRIu64 ",\"bytes_down\":%" PRIu64
			"}\n",
			s.requests, s.retries, s.bytes_up, s.bytes_down);
	}
	drive_client_free(x.c);
	return rc;
}
