/* graph.c — the work graph as a file: reading it (with line:column for
 * syntax errors), writing it back atomically without losing a byte of what
 * the user wrote, the accessors for a stage's fields, and the ready set.
 *
 * The document stays a json-c tree from read to write: the scheduler sets
 * only its own keys (status, attempt, owner, ...), so unknown keys, their
 * order and their values survive. Does no locking; sched.c does.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <time.h>
#include <unistd.h>

#include "scheduler.h"

/* A graph this big is a mistake, not an experiment. */
#define GRAPH_MAX_BYTES (64 << 20)

/* ---- small helpers ------------------------------------------------------ */

double sched_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

void sched_rfc3339(char *buf, size_t n)
{
	time_t t = time(NULL);
	struct tm tm;

	gmtime_r(&t, &tm);
	strftime(buf, n, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* Waits this long for a stderr that takes nothing (a paused pager on
 * `2>&1 | less`, a stalled ssh) before a message is dropped; while it stays
 * stuck, later ones do not wait. The loop that runs a stage must go on. */
#define LOG_STALL_MS 3000

void sched_log(const char *fmt, ...)
{
	static int dropped;
	static bool stuck;
	struct pollfd pfd = {.fd = STDERR_FILENO, .events = POLLOUT};
	char line[1024];
	va_list ap;
	int n = 0;

	/* One write per message (three schedulers may share a terminal),
	 * short enough for a pipe to take whole once it has room. */
	if (dropped)
		n = snprintf(line, sizeof(line),
			     "vectur-sched[%d]: (%d messages not shown: stderr "
			     "took nothing)\n",
			     (int)getpid(), dropped);
	n += snprintf(line + n, sizeof(line) - n,
		      "vectur-sched[%d]: ", (int)getpid());
	va_start(ap, fmt);
	vsnprintf(line + n, sizeof(line) - n - 1, fmt, ap);
	va_end(ap);
	n = strlen(line);
	line[n++] = '\n';
	if (poll(&pfd, 1, stuck ? 0 : LOG_STALL_MS) == 1 &&
	    !(pfd.revents & POLLOUT)) {
		return; /* closed: nowhere to say it */
	}
	if (!(pfd.revents & POLLOUT)) {
		stuck = true;
		dropped++;
		return;
	}
	stuck = false;
	if (write(STDERR_FILENO, line, n) == n)
		dropped = 0;
}

int sched_mkdirs(const char *path, mode_t mode)
{
	char buf[PATH_MAX];
	size_t n = strlen(path);
	char *p;

	if (n == 0 || n >= sizeof(buf))
		return -ENAMETOOLONG;
	memcpy(buf, path, n + 1);
	for (p = buf + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = 0;
		if (mkdir(buf, mode) < 0 && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	if (mkdir(buf, mode) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

/* ---- problems ----------------------------------------------------------- */

void problems_add(struct sched_problems *p, const char *fmt, ...)
{
	va_list ap;
	char *m = NULL;

	if (!p)
		return;
	va_start(ap, fmt);
	if (vasprintf(&m, fmt, ap) < 0)
		m = NULL;
	va_end(ap);
	if (!m)
		return;
	if (p->n == p->cap) {
		int cap = p->cap ? p->cap * 2 : 8;
		char **nm = realloc(p->msg, cap * sizeof(*nm));

		if (!nm) {
			free(m);
			return;
		}
		p->msg = nm;
		p->cap = cap;
	}
	p->msg[p->n++] = m;
}

void problems_print(const struct sched_problems *p, const char *file)
{
	int i;

	for (i = 0; i < p->n; i++) {
		/* "file:12:5: ..." for syntax errors, "file: stages[1]..." */
		const char *m = p->msg[i];
		int sep = (m[0] >= '0' && m[0] <= '9') ? ':' : ' ';

		if (sep == ':')
			fprintf(stderr, "%s:%s\n", file, m);
		else
			fprintf(stderr, "%s: %s\n", file, m);
	}
}

void problems_free(struct sched_problems *p)
{
	int i;

	for (i = 0; i < p->n; i++)
		free(p->msg[i]);
	free(p->msg);
	memset(p, 0, sizeof(*p));
}

/* ---- reading ------------------------------------------------------------ */

/* 1-based line and column (in bytes) of offset off in text. */
static void graph_line_col(const char *text, size_t off, int *line, int *col)
{
	size_t i, bol = 0;

	*line = 1;
	for (i = 0; i < off; i++) {
		if (text[i] == '\n') {
			(*line)++;
			bol = i + 1;
		}
	}
	*col = (int)(off - bol) + 1;
}

/* The deepest nesting json-c accepts (JSON_TOKENER_DEFAULT_DEPTH). */
#define GRAPH_MAX_DEPTH 32

/* The key whose quoted text is q (n bytes, quotes included), decoded: json-c
 * compares keys decoded, so "\u0061" and "a" are one key. */
static char *graph_key(const char *q, size_t n, bool escaped)
{
	struct json_object *o;
	char *lit, *key = NULL;

	if (!escaped)
		return strndup(q + 1, n - 2);
	lit = strndup(q, n);
	o = lit ? json_tokener_parse(lit) : NULL;
	if (o && json_object_is_type(o, json_type_string))
		key = strdup(json_object_get_string(o));
	json_object_put(o);
	free(lit);
	return key;
}

/* What json-c reads without a word, the text shows: a key given twice in
 * one object (json-c keeps the last value, so the first is lost on the
 * next write, and `"stages"` twice runs the second list), and a \u0000 in
 * a key (json-c keeps keys as C strings: "cmd\u0000x" would read as
 * "cmd"). Called on text json-c parsed: strings are closed, nesting is
 * balanced and at most GRAPH_MAX_DEPTH deep. Returns the number found. */
static int graph_check_keys(const char *text, size_t len,
			    struct sched_problems *p)
{
	struct json_object *seen[GRAPH_MAX_DEPTH + 1], *first;
	size_t i, j, start, nul;
	int depth = 0, found = 0, line, col, fline, fcol;
	bool escaped;
	char *key;

	for (i = 0; i < len; i++) {
		if (text[i] == '{' || text[i] == '[') {
			if (depth <= GRAPH_MAX_DEPTH)
				seen[depth] = text[i] == '{'
						      ? json_object_new_object()
						      : NULL;
			depth++;
			continue;
		}
		if (text[i] == '}' || text[i] == ']') {
			if (--depth <= GRAPH_MAX_DEPTH && depth >= 0)
				json_object_put(seen[depth]);
			continue;
		}
		if (text[i] != '"')
			continue;
		start = i;
		nul = 0;
		escaped = false;
		for (i++; i < len && text[i] != '"'; i++) {
			if (text[i] != '\\')
				continue;
			if (!nul && strncmp(text + i + 1, "u0000", 5) == 0)
				nul = i;
			escaped = true;
			i++;
		}
		for (j = i + 1;
		     j < len && text[j] && strchr(" \t\r\n", text[j]); j++)
			;
		if (j >= len || text[j] != ':' || depth < 1 ||
		    depth > GRAPH_MAX_DEPTH + 1 || !seen[depth - 1])
			continue; /* a value, not a key */
		if (nul) {
			graph_line_col(text, nul, &line, &col);
			problems_add(p,
				     "%d:%d: NUL character (\\u0000) in an "
				     "object key",
				     line, col);
			found++;
			continue;
		}
		key = graph_key(text + start, i - start + 1, escaped);
		if (!key)
			continue;
		if (json_object_object_get_ex(seen[depth - 1], key, &first)) {
			graph_line_col(text, start, &line, &col);
			graph_line_col(text, json_object_get_int64(first),
				       &fline, &fcol);
			problems_add(p,
				     "%d:%d: duplicate key \"%s\" (first at "
				     "%d:%d); only one value can be kept",
				     line, col, key, fline, fcol);
			found++;
		} else {
			json_object_object_add(seen[depth - 1], key,
					       json_object_new_int64(start));
		}
		free(key);
	}
	while (depth-- > 0)
		if (depth <= GRAPH_MAX_DEPTH)
			json_object_put(seen[depth]);
	return found;
}

int graph_parse(const char *text, size_t len, struct json_object **out,
		struct sched_problems *p)
{
	struct json_tokener *tok;
	struct json_object *root;
	enum json_tokener_error jerr;
	size_t end, nul;
	int line, col, rc = 0;

	*out = NULL;
	/* json-c stops at a NUL; a NUL inside a graph is corruption. */
	nul = strnlen(text, len);
	tok = json_tokener_new();
	if (!tok)
		return -ENOMEM;
	/* Strict: reject what other JSON readers (Python's json) reject. */
	json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
	root = json_tokener_parse_ex(tok, text, (int)nul);
	jerr = json_tokener_get_error(tok);
	end = json_tokener_get_parse_end(tok);
	/* A bare number or literal (`7`, `true`) ends only where the input
	 * does: tell json-c there is no more, so that it is read and then
	 * refused by validate, not called an unexpected end of file. */
	if (!root && jerr == json_tokener_continue && nul == len) {
		root = json_tokener_parse_ex(tok, "", 1);
		if (json_tokener_get_error(tok) == json_tokener_success)
			jerr = json_tokener_success;
		end = len;
	}
	/* The document `null`: no object, and no error either. */
	if (!root && jerr == json_tokener_success) {
		problems_add(p, "(top level): must be an object, not null");
		rc = -EINVAL;
		goto out;
	}
	if (!root) {
		const char *why = jerr == json_tokener_continue
					  ? "unexpected end of file"
					  : json_tokener_error_desc(jerr);

		if (jerr == json_tokener_continue && nul < len)
			why = "NUL byte in file";
		if (jerr == json_tokener_continue)
			end = nul;
		graph_line_col(text, end, &line, &col);
		problems_add(p, "%d:%d: JSON syntax error: %s", line, col, why);
		rc = -EINVAL;
		goto out;
	}
	/* One document per file: anything but whitespace after it is an
	 * error (a concatenation of two graphs, a stray brace). */
	while (end < len && strchr(" \t\r\n", text[end]) && text[end])
		end++;
	if (end < len) {
		graph_line_col(text, end, &line, &col);
		problems_add(p, "%d:%d: JSON syntax error: %s", line, col,
			     text[end] ? "unexpected data after the document"
				       : "NUL byte in file");
		json_object_put(root);
		rc = -EINVAL;
		goto out;
	}
	if (graph_check_keys(text, len, p)) {
		json_object_put(root);
		rc = -EINVAL;
		goto out;
	}
	*out = root;
out:
	json_tokener_free(tok);
	return rc;
}

int graph_load_text(const char *text, size_t len, struct graph *g,
		    struct sched_problems *p)
{
	struct json_object *root;
	int rc;

	memset(g, 0, sizeof(*g));
	rc = graph_parse(text, len, &root, p);
	if (rc < 0)
		return rc;
	if (graph_validate(root, p) > 0) {
		json_object_put(root);
		return -EINVAL;
	}
	g->root = root;
	json_object_object_get_ex(root, "stages", &g->stages);
	return 0;
}

static int graph_read_file(const char *path, char **text, size_t *len)
{
	struct stat st;
	char *buf = NULL;
	size_t n = 0;
	ssize_t r;
	int fd, rc = 0;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0) {
		rc = -errno;
		goto out;
	}
	if (st.st_size > GRAPH_MAX_BYTES) {
		rc = -EFBIG;
		goto out;
	}
	buf = malloc(st.st_size + 1);
	if (!buf) {
		rc = -ENOMEM;
		goto out;
	}
	/* Read to EOF, not to st_size: the size can be stale on a mount. */
	for (;;) {
		if (n == (size_t)st.st_size) {
			char *nb;

			st.st_size = st.st_size * 2 + 4096;
			if (st.st_size > GRAPH_MAX_BYTES) {
				rc = -EFBIG;
				goto out;
			}
			nb = realloc(buf, st.st_size + 1);
			if (!nb) {
				rc = -ENOMEM;
				goto out;
			}
			buf = nb;
		}
		r = read(fd, buf + n, st.st_size - n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			rc = -errno;
			goto out;
		}
		if (r == 0)
			break;
		n += r;
	}
	buf[n] = 0;
	*text = buf;
	*len = n;
	buf = NULL;
out:
	free(buf);
	close(fd);
	return rc;
}

int graph_load(const char *path, struct graph *g, struct sched_problems *p)
{
	char *text = NULL;
	size_t len = 0;
	int rc;

	memset(g, 0, sizeof(*g));
	rc = graph_read_file(path, &text, &len);
	if (rc < 0)
		return rc;
	rc = graph_load_text(text, len, g, p);
	if (rc < 0) {
		free(text);
		return rc;
	}
	g->text = text;
	g->len = len;
	return 0;
}

void graph_free(struct graph *g)
{
	if (g->root)
		json_object_put(g->root);
	free(g->text);
	memset(g, 0, sizeof(*g));
}

/* ---- writing ------------------------------------------------------------ */

char *graph_serialise(const struct graph *g)
{
	const char *s;
	char *out;
	size_t n;

	/* Pretty, with "/" left alone: the file is read by people and diffed
	 * in git. */
	s = json_object_to_json_string_ext(
		g->root, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED |
				 JSON_C_TO_STRING_NOSLASHESCAPE);
	if (!s)
		return NULL;
	n = strlen(s);
	out = malloc(n + 2);
	if (!out)
		return NULL;
	memcpy(out, s, n);
	out[n] = '\n';
	out[n + 1] = 0;
	return out;
}

static int graph_write_all(int fd, const char *buf, size_t n)
{
	ssize_t w;

	while (n > 0) {
		w = write(fd, buf, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return -errno;
		buf += w;
		n -= w;
	}
	return 0;
}

/* FUSE's statfs magic: vectur-mount (or another FUSE filesystem). */
#define GRAPH_FUSE_MAGIC 0x65735546

/* fsync the directory holding path, so the rename itself is durable. Not on
 * a FUSE mount: vectur-mount makes the rename atomic on Drive and pushes it
 * when the graph lock is unlinked, and an fsyncdir there could wait on
 * unrelated uploads. */
static void graph_sync_dir(const char *path)
{
	char dir[PATH_MAX];
	struct statfs sfs;
	char *slash;
	int fd;

	snprintf(dir, sizeof(dir), "%s", path);
	slash = strrchr(dir, '/');
	if (slash == dir)
		slash[1] = 0;
	else if (slash)
		*slash = 0;
	else
		strcpy(dir, ".");
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return;
	if (fstatfs(fd, &sfs) == 0 && sfs.f_type == GRAPH_FUSE_MAGIC) {
		close(fd);
		return;
	}
	fsync(fd); /* best effort: some filesystems refuse it on dirs */
	close(fd);
}

int graph_save(const struct graph *g, const char *path, const char *host)
{
	char tmp[PATH_MAX], target[PATH_MAX];
	struct stat st;
	mode_t mode = 0644;
	char *text;
	int fd = -1, rc;

	/* A graph that is a link (to a file shared by several experiment
	 * dirs) stays one: the new version replaces the file it points to,
	 * its temp file beside it, so that the rename stays in one dir. */
	if (lstat(path, &st) == 0 && S_ISLNK(st.st_mode)) {
		if (!realpath(path, target))
			return -errno;
		path = target;
	}
	text = graph_serialise(g);
	if (!text)
		return -ENOMEM;
	if (stat(path, &st) == 0)
		mode = st.st_mode & 07777;
	/* Host and pid in the name: two machines on one mount never write
	 * the same tmp file. */
	if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp.%s.%d", path, host,
			     (int)getpid()) >= sizeof(tmp)) {
		rc = -ENAMETOOLONG;
		goto out;
	}
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
	if (fd < 0) {
		rc = -errno;
		sched_log("cannot create %s (the new graph goes there, then "
			  "replaces %s): %s",
			  tmp, path, strerror(-rc));
		goto out;
	}
	rc = graph_write_all(fd, text, strlen(text));
	if (rc < 0)
		goto out_unlink;
	/* The rename must never publish a file whose bytes are not down. */
	if (fsync(fd) < 0) {
		rc = -errno;
		goto out_unlink;
	}
	if (close(fd) < 0) {
		fd = -1;
		rc = -errno;
		goto out_unlink;
	}
	fd = -1;
	if (rename(tmp, path) < 0) {
		rc = -errno;
		goto out_unlink;
	}
	graph_sync_dir(path);
	rc = 0;
	goto out;
out_unlink:
	unlink(tmp);
out:
	if (fd >= 0)
		close(fd);
	free(text);
	return rc;
}

/* ---- accessors ---------------------------------------------------------- */

int graph_nstages(const struct graph *g)
{
	return g->stages ? (int)json_object_array_length(g->stages) : 0;
}

struct json_object *graph_stage(const struct graph *g, int i)
{
	return json_object_array_get_idx(g->stages, i);
}

int graph_find(const struct graph *g, const char *id)
{
	int i, n = graph_nstages(g);

	for (i = 0; i < n; i++) {
		const char *sid = stage_id(graph_stage(g, i));

		if (sid && strcmp(sid, id) == 0)
			return i;
	}
	return -1;
}

const char *stage_str(struct json_object *st, const char *key)
{
	struct json_object *v;

	if (!json_object_object_get_ex(st, key, &v) ||
	    !json_object_is_type(v, json_type_string))
		return NULL;
	return json_object_get_string(v);
}

const char *stage_id(struct json_object *st)
{
	return stage_str(st, "id");
}

static const char *const status_names[] = {
	[STAGE_PENDING] = "pending", [STAGE_RUNNING] = "running",
	[STAGE_DONE] = "done",	     [STAGE_FAILED] = "failed",
	[STAGE_BAD] = "?",
};

const char *stage_status_name(enum stage_status s)
{
	return status_names[s];
}

enum stage_status stage_status(struct json_object *st)
{
	struct json_object *v;
	const char *s;
	int i;

	/* A stage the user just wrote has no status yet: it is pending. */
	if (!json_object_object_get_ex(st, "status", &v) ||
	    json_object_is_type(v, json_type_null))
		return STAGE_PENDING;
	if (!json_object_is_type(v, json_type_string))
		return STAGE_BAD;
	s = json_object_get_string(v);
	for (i = STAGE_PENDING; i < STAGE_BAD; i++)
		if (strcmp(s, status_names[i]) == 0)
			return i;
	return STAGE_BAD;
}

static long long stage_int(struct json_object *st, const char *key,
			   long long def)
{
	struct json_object *v;

	if (!json_object_object_get_ex(st, key, &v) ||
	    !json_object_is_type(v, json_type_int))
		return def;
	return json_object_get_int64(v);
}

int stage_attempt(struct json_object *st)
{
	return (int)stage_int(st, "attempt", 0);
}

int stage_max_attempts(struct json_object *st)
{
	return (int)stage_int(st, "max_attempts", SCHED_DEFAULT_MAX_ATTEMPTS);
}

double stage_timeout(struct json_object *st)
{
	struct json_object *v;

	if (!json_object_object_get_ex(st, "timeout", &v))
		return 0;
	if (json_object_is_type(v, json_type_int) ||
	    json_object_is_type(v, json_type_double))
		return json_object_get_double(v);
	return 0;
}

void stage_set_str(struct json_object *st, const char *key, const char *v)
{
	json_object_object_add(st, key, json_object_new_string(v));
}

void stage_set_int(struct json_object *st, const char *key, long long v)
{
	json_object_object_add(st, key, json_object_new_int64(v));
}

void stage_set_null(struct json_object *st, const char *key)
{
	json_object_object_add(st, key, NULL);
}

/* ---- the ready set ------------------------------------------------------ */

/* id -> stage index for one pass over the graph (a json-c object is a
 * hash table): a lookup per dependency must not walk every stage, or a
 * 20,000-stage sweep takes seconds under the graph lock. NULL when out of
 * memory (graph_find then). */
static struct json_object *graph_index(const struct graph *g)
{
	struct json_object *idx = json_object_new_object();
	int i, n = graph_nstages(g);

	for (i = 0; idx && i < n; i++) {
		const char *id = stage_id(graph_stage(g, i));

		if (id && !json_object_object_get_ex(idx, id, NULL))
			json_object_object_add(idx, id, json_object_new_int(i));
	}
	return idx;
}

static int index_find(const struct graph *g, struct json_object *idx,
		      const char *id)
{
	struct json_object *v;

	if (!idx)
		return id ? graph_find(g, id) : -1;
	return id && json_object_object_get_ex(idx, id, &v)
		       ? json_object_get_int(v)
		       : -1;
}

static int dep_index(const struct graph *g, struct json_object *idx,
		     struct json_object *deps, int k)
{
	return index_find(
		g, idx,
		json_object_get_string(json_object_array_get_idx(deps, k)));
}

/* Whether stage root can never run because a dependency failed, directly
 * or through a chain. memo: 0 unknown, 1 blocked, 2 not blocked, 3 on the
 * way (cannot loop on a validated graph, but never does either). Depth
 * first with its own stack (stk, pos: n entries each): a chain of 100,000
 * stages must not overflow the C stack. A stage waits at its dependency
 * pos[top] until that one is decided. */
static int graph_blocked(const struct graph *g, struct json_object *idx,
			 int root, char *memo, int *stk, int *pos)
{
	int top = 0;

	if (memo[root])
		return memo[root] == 1;
	memo[root] = 3;
	stk[0] = root;
	pos[0] = 0;
	while (top >= 0) {
		struct json_object *st = graph_stage(g, stk[top]), *deps = NULL;
		int r = 0, n = 0, d = -1;

		if (stage_status(st) == STAGE_FAILED)
			r = 1;
		else if (stage_status(st) == STAGE_DONE)
			r = 2;
		else if (json_object_object_get_ex(st, "deps", &deps))
			n = json_object_array_length(deps);
		for (; !r && pos[top] < n; pos[top]++) {
			d = dep_index(g, idx, deps, pos[top]);
			if (d < 0 || memo[d] >= 2)
				continue; /* fine, or on the way: no loop */
			if (memo[d] == 1)
				r = 1;
			break;
		}
		if (!r && pos[top] < n) {
			memo[d] = 3; /* its turn first */
			stk[++top] = d;
			pos[top] = 0;
			continue;
		}
		memo[stk[top--]] = r ? r : 2;
	}
	return memo[root] == 1;
}

void graph_classify(const struct graph *g, stage_lock_probe probe, void *arg,
		    enum stage_class *cls)
{
	int i, j, n = graph_nstages(g);
	size_t sz = n ? (size_t)n : 1;
	struct json_object *idx = graph_index(g);
	char *memo = calloc(sz, 1);
	int *stk = calloc(sz, sizeof(int)), *pos = calloc(sz, sizeof(int));

	for (i = 0; i < n; i++) {
		struct json_object *st = graph_stage(g, i), *deps = NULL;
		bool all_done = true;

		switch (stage_status(st)) {
		case STAGE_DONE:
			cls[i] = CLASS_DONE;
			continue;
		case STAGE_FAILED:
		case STAGE_BAD:
			cls[i] = CLASS_FAILED;
			continue;
		case STAGE_RUNNING:
			cls[i] = probe(arg, stage_id(st)) ? CLASS_RUNNING
							  : CLASS_LOST;
			continue;
		case STAGE_PENDING:
			break;
		}
		json_object_object_get_ex(st, "deps", &deps);
		for (j = 0; deps && j < (int)json_object_array_length(deps);
		     j++) {
			int d = dep_index(g, idx, deps, j);

			if (d < 0 ||
			    stage_status(graph_stage(g, d)) != STAGE_DONE)
				all_done = false;
		}
		if (all_done)
			cls[i] = CLASS_READY;
		else if (memo && stk && pos &&
			 graph_blocked(g, idx, i, memo, stk, pos))
			cls[i] = CLASS_BLOCKED;
		else
			cls[i] = CLASS_WAITING;
	}
	free(memo);
	free(stk);
	free(pos);
	json_object_put(idx);
}

enum graph_state graph_state_of(const struct graph *g,
				const enum stage_class *cls)
{
	int i, n = graph_nstages(g), done = 0, busy = 0, runnable = 0;

	for (i = 0; i < n; i++) {
		switch (cls[i]) {
		case CLASS_DONE:
			done++;
			break;
		case CLASS_READY:
		case CLASS_LOST:
			runnable++;
			break;
		case CLASS_RUNNING:
			busy++;
			break;
		default:
			break;
		}
	}
	if (done == n)
		return GRAPH_COMPLETE;
	if (runnable)
		return GRAPH_RUNNABLE;
	/* Waiting stages wait on running ones; with nothing running they
	 * can only be waiting on failures. */
	if (busy)
		return GRAPH_IDLE;
	return GRAPH_BLOCKED;
}
