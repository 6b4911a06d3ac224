/* main.c — vectur-mount's program: the command line modes (--help,
 * --version, --check, --sync, mount) and the life of a mount.
 *
 * A mount checks everything that can fail while stderr is still the
 * user's terminal: the mount point, the rclone config, the credentials,
 * the Drive path, the cache dir and its lock, the options libfuse parses,
 * the mount itself. In daemon mode the process forks first (before any
 * thread or curl handle exists) and the parent waits on a pipe until the
 * child says the mount is up, or exits with the child's status and the
 * child's error already printed; so `vectur-mount ... && cd MOUNTPOINT`
 * works and errors are never lost in the background. Once up, the
 * daemon's stderr goes to cache_dir/vectur-mount.log and warnings to
 * syslog too.
 *
 * Unmount (fusermount3 -u, SIGTERM, SIGINT) ends the loop; FUSE's destroy
 * then drains the upload queue for up to drain_timeout (cache_close). */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "lock.h"
#include "vfs.h"

/* Files held open for writing (logs) get a snapshot uploaded this often. */
#define VFS_LONG_OPEN_UPLOAD_S 60
#define VFS_PERSIST_FILE       "vectur.persist"
#define VFS_LOG_FILE	       "vectur-mount.log"

static bool log_daemonized;
static bool log_debug;

void vfs_log(int prio, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	if (prio >= LOG_DEBUG && !log_debug)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (log_daemonized) {
		char ts[32];
		time_t now = time(NULL);
		struct tm tm;

		strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%SZ",
			 gmtime_r(&now, &tm));
		fprintf(stderr, "%s vectur-mount[%d]: %s\n", ts, getpid(), msg);
		if (prio <= LOG_WARNING)
			syslog(prio, "%s", msg);
	} else {
		fprintf(stderr, "vectur-mount: %s\n", msg);
	}
}

static void die_msg(const char *what, const struct drive_err *err)
{
	fprintf(stderr, "vectur-mount: %s: %s\n", what,
		err->message[0] ? err->message : "unknown error");
}

/* ---- Drive: config, credentials, root --------------------------------- */

struct drive_session {
	struct drive_config cfg;
	bool cfg_loaded;
	struct drive_client *dc;
	char remote[128];
	char rpath[1024];
	char root_id[128]; /* folder the mount root maps to, or "" */
	char top_id[128];  /* the remote's root */
	bool path_missing; /* rpath does not exist (yet) */
	char config_file[PATH_MAX];
};

static void drive_session_free(struct drive_session *s)
{
	if (s->dc)
		drive_client_free(s->dc);
	if (s->cfg_loaded)
		drive_config_free(&s->cfg);
	memset(s, 0, sizeof(*s));
}

/* Walks rpath from the remote's root, creating missing folders when
 * `create` (rclone creates a remote path on first write; a mount makes it
 * up front so the root has an id). */
static int resolve_rpath(struct drive_session *s, bool create,
			 struct drive_err *err)
{
	char comp[1024], dname[1024];
	const char *p = s->rpath;
	struct drive_file f;

	snprintf(s->root_id, sizeof(s->root_id), "%s", s->top_id);
	if (!*p)
		return 0;
	if (drive_resolve_path(s->dc, s->top_id, s->rpath, &f, err) == 0) {
		if (!f.is_folder) {
			drive_err_set(err, 0, "notAFolder",
				      "%s:%s is a file, not a folder",
				      s->remote, s->rpath);
			return -1;
		}
		snprintf(s->root_id, sizeof(s->root_id), "%s", f.id);
		return 0;
	}
	if (err->status != 404)
		return -1;
	s->path_missing = true;
	if (!create)
		return 0;
	drive_err_clear(err);
	while (*p) {
		size_t n = strcspn(p, "/");
		struct drive_file child;

		snprintf(comp, sizeof(comp), "%.*s", (int)n, p);
		p += n;
		while (*p == '/')
			p++;
		if (drive_resolve_path(s->dc, s->root_id, comp, &child, err) <
		    0) {
			if (err->status != 404)
				return -1;
			if (drive_name_from_local(comp, dname, sizeof(dname)) <
			    0)
				snprintf(dname, sizeof(dname), "%s", comp);
			drive_err_clear(err);
			if (drive_mkdir(s->dc, s->root_id, dname, &child, err) <
			    0)
				return -1;
		} else if (!child.is_folder) {
			drive_err_set(err, 0, "notAFolder",
				      "%s:%s: '%s' is a file, not a folder",
				      s->remote, s->rpath, comp);
			return -1;
		}
		snprintf(s->root_id, sizeof(s->root_id), "%s", child.id);
	}
	s->path_missing = false;
	return 0;
}

/* Config → client → token → root → path. Prints what went wrong. */
static int drive_session_open(struct drive_session *s, struct mount_opts *o,
			      const char *spec, bool create_path)
{
	struct drive_client_opts copts = {0};
	struct drive_err err;
	struct drive_file root;

	memset(s, 0, sizeof(*s));
	drive_err_clear(&err);
	if (drive_parse_remote(spec, s->remote, sizeof(s->remote), s->rpath,
			       sizeof(s->rpath), &err) < 0) {
		die_msg("bad remote", &err);
		fprintf(stderr, "  expected REMOTE:[PATH], e.g. gdrive:"
				"experiments/proj\n");
		return -1;
	}
	drive_config_find(o->config, s->config_file, sizeof(s->config_file));
	if (drive_config_load(s->config_file, s->remote, &s->cfg, &err) < 0) {
		die_msg("config", &err);
		return -1;
	}
	s->cfg_loaded = true;
	if (o->token_url)
		snprintf(s->cfg.token_url, sizeof(s->cfg.token_url), "%s",
			 o->token_url);
	copts.endpoint = o->endpoint;
	copts.pacer_rate = o->tpslimit;
	/* Tests against the local emulator outrun Drive's 10 requests/s. */
	if (getenv("VECTUR_PACER_RATE"))
		copts.pacer_rate = atof(getenv("VECTUR_PACER_RATE"));
	if (drive_client_new(&s->dc, &s->cfg, &copts, &err) < 0) {
		die_msg("drive client", &err);
		return -1;
	}
	if (drive_auth_check(s->dc, &err) < 0) {
		die_msg("credentials", &err);
		return -1;
	}
	if (drive_root(s->dc, &root, &err) < 0) {
		die_msg("root folder", &err);
		return -1;
	}
	snprintf(s->top_id, sizeof(s->top_id), "%s", root.id);
	if (resolve_rpath(s, create_path, &err) < 0) {
		die_msg("remote path", &err);
		return -1;
	}
	return 0;
}

static void human(char *buf, size_t len, double b)
{
	const char *u[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
	int i = 0;

	while (b >= 1024 && i < 5) {
		b /= 1024;
		i++;
	}
	snprintf(buf, len, i ? "%.1f %s" : "%.0f %s", b, u[i]);
}

/* vectur-mount --check REMOTE:[PATH] */
static int do_check(struct mount_opts *o)
{
	struct drive_session s;
	struct drive_about ab;
	struct drive_err err;
	char used[32], limit[32];
	int rc = 1;

	if (o->nargs != 1) {
		fprintf(stderr, "usage: vectur-mount --check [-o endpoint=URL] "
				"[--config FILE] REMOTE:[PATH]\n");
		return 2;
	}
	if (drive_session_open(&s, o, o->args[0], false) < 0)
		goto out;
	drive_err_clear(&err);
	if (drive_about(s.dc, &ab, &err) < 0) {
		die_msg("about", &err);
		goto out;
	}
	human(used, sizeof(used), (double)ab.quota_usage);
	if (ab.quota_limit < 0)
		snprintf(limit, sizeof(limit), "unlimited");
	else
		human(limit, sizeof(limit), (double)ab.quota_limit);
	printf("remote:  %s (from %s)\n", s.remote, s.cfg.source);
	printf("account: %s%s%s%s\n", ab.user_email,
	       ab.user_name[0] ? " (" : "", ab.user_name,
	       ab.user_name[0] ? ")" : "");
	printf("quota:   %s used of %s\n", used, limit);
	printf("root:    %s\n", s.top_id);
	if (s.rpath[0])
		printf("path:    %s%s%s\n", s.rpath,
		       s.path_missing ? " (does not exist yet; a mount "
					"creates it)"
				      : " -> ",
		       s.path_missing ? "" : s.root_id);
	printf("ok\n");
	rc = 0;
out:
	drive_session_free(&s);
	return rc;
}

/* ---- the mount --------------------------------------------------------- */

static int mkdir_p(const char *path, mode_t mode)
{
	char buf[PATH_MAX];

	if (strlen(path) >= sizeof(buf))
		return -ENAMETOOLONG;
	strcpy(buf, path);
	for (char *p = buf + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(buf, mode) < 0 && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	if (mkdir(buf, mode) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

static uint64_t fnv1a64(const char *s, uint64_t h)
{
	for (; *s; s++) {
		h ^= (unsigned char)*s;
		h *= 0x100000001b3ULL;
	}
	return h;
}

/* The default cache dir: $XDG_CACHE_HOME/vectur (or ~/.cache/vectur), then
 * one directory per (remote:path, mount point), so two mounts of one
 * remote on two directories never share a queue. */
static int default_cache_dir(struct vfs *v, char *out, size_t len)
{
	const char *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
	char base[PATH_MAX];
	uint64_t h = 0xcbf29ce484222325ULL;

	if (xdg && *xdg == '/') {
		snprintf(base, sizeof(base), "%s/vectur", xdg);
	} else {
		if (!home || !*home) {
			struct passwd *pw = getpwuid(getuid());

			home = pw ? pw->pw_dir : "/tmp";
		}
		snprintf(base, sizeof(base), "%s/.cache/vectur", home);
	}
	h = fnv1a64(v->remote, h);
	h = fnv1a64(":", h);
	h = fnv1a64(v->rpath, h);
	h = fnv1a64("\n", h);
	h = fnv1a64(v->mountpoint, h);
	if (snprintf(out, len, "%s/%s-%012llx", base, v->remote,
		     (unsigned long long)(h & 0xffffffffffffULL)) >= (int)len)
		return -ENAMETOOLONG;
	return 0;
}

static int setup_cache_dir(struct vfs *v, struct mount_opts *o)
{
	char dir[PATH_MAX];
	size_t n = strlen(v->mountpoint);
	int rc;

	if (o->cache_dir)
		snprintf(dir, sizeof(dir), "%s", o->cache_dir);
	else if (default_cache_dir(v, dir, sizeof(dir)) < 0)
		return -ENAMETOOLONG;
	rc = mkdir_p(dir, 0700);
	if (rc < 0) {
		fprintf(stderr,
			"vectur-mount: cannot create cache dir %s: %s\n", dir,
			strerror(-rc));
		return rc;
	}
	if (!realpath(dir, v->cache_dir)) {
		fprintf(stderr, "vectur-mount: cache dir %s: %s\n", dir,
			strerror(errno));
		return -errno;
	}
	chmod(v->cache_dir, 0700);
	/* Under the mount point it would be served by ourselves: deadlock. */
	if (strncmp(v->cache_dir, v->mountpoint, n) == 0 &&
	    (v->cache_dir[n] == '/' || v->cache_dir[n] == '\0' ||
	     strcmp(v->mountpoint, "/") == 0)) {
		fprintf(stderr,
			"vectur-mount: cache dir %s must not be inside the "
			"mount point %s\n",
			v->cache_dir, v->mountpoint);
		return -EINVAL;
	}
	if (access(v->cache_dir, W_OK) < 0) {
		fprintf(stderr, "vectur-mount: cache dir %s is not writable\n",
			v->cache_dir);
		return -EACCES;
	}
	return 0;
}

/* -o persist=… wins, else vectur.persist in the directory, else the
 * default set. */
/* Reads the mount point's vectur.persist into *text (NUL-terminated).
 * Returns 0, -ENOENT when there is none, or -errno with err said. */
static int read_persist_file(struct vfs *v, char **text, char *err,
			     size_t errlen)
{
	size_t len = 0, cap = 0;
	ssize_t n = 0;
	int fd;

	*text = NULL;
	fd = openat(v->dirfd, VFS_PERSIST_FILE, O_RDONLY | O_CLOEXEC);
	if (fd < 0 && errno == ENOENT)
		return -ENOENT;
	for (; fd >= 0;) {
		if (len + 4096 + 1 > cap) {
			char *t = realloc(*text, cap = len + 65536);

			if (!t) {
				errno = ENOMEM;
				n = -1;
				break;
			}
			*text = t;
		}
		n = read(fd, *text + len, cap - len - 1);
		if (n <= 0)
			break;
		len += n;
	}
	if (fd < 0 || n < 0) {
		/* A directory, no permission, a dangling link: not "no
		 * file", which would mount with the defaults unasked. */
		snprintf(err, errlen, "cannot read it: %s", strerror(errno));
		if (fd >= 0)
			close(fd);
		return -EINVAL;
	}
	close(fd);
	if (!*text && !(*text = calloc(1, 1)))
		return -ENOMEM;
	(*text)[len] = '\0';
	if (strlen(*text) != len) {
		snprintf(err, errlen,
			 "contains a NUL byte at offset %zu: save it as UTF-8 "
			 "text (UTF-16 looks like this)",
			 strlen(*text));
		return -EINVAL;
	}
	return 0;
}

static int setup_persist(struct vfs *v, struct mount_opts *o)
{
	char err[512], *text = NULL;
	int rc = 0;

	v->ps = persist_new();
	if (!v->ps)
		return -ENOMEM;
	err[0] = '\0';
	if (o->npersist) {
		v->persist_source = "-o persist";
		for (int i = 0; i < o->npersist && rc == 0; i++)
			rc = persist_add(v->ps, o->persist[i], err,
					 sizeof(err));
	} else if ((rc = read_persist_file(v, &text, err, sizeof(err))) !=
		   -ENOENT) {
		v->persist_source = VFS_PERSIST_FILE;
		if (rc == 0)
			rc = persist_add_text(v->ps, text, err, sizeof(err));
		free(text);
		if (rc == 0 && persist_count(v->ps) == 0) {
			snprintf(err, sizeof(err),
				 "no pattern in it: nothing would be kept on "
				 "Drive (remove the file for the defaults)");
			rc = -EINVAL;
		}
		if (rc < 0) {
			fprintf(stderr, "vectur-mount: %s/%s: %s\n",
				v->mountpoint, VFS_PERSIST_FILE,
				err[0] ? err : strerror(-rc));
			return rc;
		}
	} else {
		rc = 0;
		v->persist_source = "default";
		for (int i = 0; persist_default_patterns[i] && rc == 0; i++)
			rc = persist_add(v->ps, persist_default_patterns[i],
					 err, sizeof(err));
	}
	if (rc == 0 && persist_count(v->ps) == 0) {
		snprintf(err, sizeof(err),
			 "-o persist= gives no pattern: nothing would be kept "
			 "on Drive");
		rc = -EINVAL;
	}
	if (rc < 0)
		fprintf(stderr, "vectur-mount: %s\n", err);
	return rc;
}

/* Undoes mountinfo's octal escapes (\040 for a space...) in place. */
static void mountinfo_unescape(char *s)
{
	char *o = s;

	for (; *s; s++) {
		if (s[0] == '\\' && s[1] >= '0' && s[1] <= '3' && s[2] >= '0' &&
		    s[2] <= '7' && s[3] >= '0' && s[3] <= '7') {
			*o++ = (char)((s[1] - '0') * 64 + (s[2] - '0') * 8 +
				      (s[3] - '0'));
			s += 3;
		} else {
			*o++ = *s;
		}
	}
	*o = '\0';
}

/* The mount that `path` (a real path) lives on: the topmost (last listed)
 * entry of /proc/self/mountinfo with the longest mount point that is path
 * or one of its parents. Fills its mount point, type and source; 0 if
 * found. */
static int mount_of(const char *path, char *mp, size_t mplen, char *type,
		    size_t tlen, char *src, size_t slen)
{
	char line[8192], *f[6], *save, *p, *dash;
	size_t best = 0, len;
	FILE *in = fopen("/proc/self/mountinfo", "r");
	int i;

	if (!in)
		return -1;
	while (fgets(line, sizeof(line), in)) {
		/* ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [OPTIONAL...] -
		 * TYPE SOURCE SUPEROPTS */
		dash = strstr(line, " - ");
		if (!dash)
			continue;
		*dash = '\0';
		p = line;
		for (i = 0; i < 5 && (f[i] = strtok_r(p, " ", &save)); i++)
			p = NULL;
		if (i < 5)
			continue;
		mountinfo_unescape(f[4]);
		len = strlen(f[4]);
		if (!(strcmp(f[4], "/") == 0 ||
		      (strncmp(path, f[4], len) == 0 &&
		       (path[len] == '/' || path[len] == '\0'))))
			continue;
		if (len < best)
			continue;
		best = len;
		p = dash + 3;
		f[0] = strtok_r(p, " ", &save);
		f[1] = strtok_r(NULL, " ", &save);
		snprintf(mp, mplen, "%s", f[4]);
		snprintf(type, tlen, "%s", f[0] ? f[0] : "");
		snprintf(src, slen, "%s", f[1] ? f[1] : "");
		if (f[1])
			mountinfo_unescape(src);
	}
	fclose(in);
	return best ? 0 : -1;
}

/* A vectur mount over (or under) a live one would serve its "local" files
 * through the other mount: refused, before anything else happens. */
static int check_not_on_vectur(const char *arg, const char *path)
{
	char mp[PATH_MAX], type[128], src[1024];

	if (mount_of(path, mp, sizeof(mp), type, sizeof(type), src,
		     sizeof(src)) < 0 ||
	    strncmp(type, "fuse.vectur", 11) != 0)
		return 0;
	if (strcmp(mp, path) == 0)
		fprintf(stderr,
			"vectur-mount: %s is already a vectur mount (of %s); "
			"unmount it first: fusermount3 -u %s\n",
			arg, src, arg);
	else
		fprintf(stderr,
			"vectur-mount: mount point %s is inside the vectur "
			"mount %s (of %s); mount on a directory outside it\n",
			arg, mp, src);
	return -1;
}

/* `cd /workspace/code && vectur-mount gdrive: . && python3 train.py`: the
 * shell stays in the directory under the mount, and train.py's checkpoints
 * land there, shadowed, never on Drive. Said before mounting. */
static void warn_if_cwd_under(const char *mp)
{
	char cwd[PATH_MAX];
	size_t n = strlen(mp);

	if (!getcwd(cwd, sizeof(cwd)) || n < 2 || strncmp(cwd, mp, n) != 0 ||
	    (cwd[n] != '\0' && cwd[n] != '/'))
		return;
	fprintf(stderr,
		"vectur-mount: warning: the current directory %s is under "
		"the mount point: a shell or program already in it stays in "
		"the directory underneath, and what it writes to persisted "
		"paths never reaches Drive; run cd \"$PWD\" once mounted\n",
		cwd);
}

static int check_mountpoint(struct vfs *v, const char *arg)
{
	struct stat st;

	if (!realpath(arg, v->mountpoint)) {
		if (errno == ENOTCONN)
			fprintf(stderr,
				"vectur-mount: mount point %s: a dead mount is "
				"still there; run `fusermount3 -u %s`\n",
				arg, arg);
		else if (errno == ENOENT)
			fprintf(stderr,
				"vectur-mount: mount point %s does not exist\n",
				arg);
		else
			fprintf(stderr, "vectur-mount: mount point %s: %s\n",
				arg, strerror(errno));
		return -1;
	}
	if (stat(v->mountpoint, &st) < 0) {
		fprintf(stderr, "vectur-mount: mount point %s: %s\n", arg,
			strerror(errno));
		return -1;
	}
	if (check_not_on_vectur(arg, v->mountpoint) < 0)
		return -1;
	warn_if_cwd_under(v->mountpoint);
	if (!S_ISDIR(st.st_mode)) {
		fprintf(stderr,
			"vectur-mount: mount point %s is not a directory\n",
			arg);
		return -1;
	}
	if (access(v->mountpoint, W_OK | X_OK) < 0) {
		fprintf(stderr,
			"vectur-mount: mount point %s is not writable: %s\n",
			arg, strerror(errno));
		return -1;
	}
	/* Opened before mounting: afterwards the path leads to ourselves. */
	v->dirfd = open(v->mountpoint, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (v->dirfd < 0) {
		fprintf(stderr, "vectur-mount: mount point %s: %s\n", arg,
			strerror(errno));
		return -1;
	}
	return 0;
}

/* Forks; the parent waits for a byte on the pipe (mount is up: exit 0)
 * or for EOF (the child failed and said why: exit with its status). */
static int daemon_fork(int *notify_fd)
{
	int p[2];
	pid_t pid;
	char c;
	int status;

	if (pipe2(p, O_CLOEXEC) < 0) {
		perror("vectur-mount: pipe");
		return -1;
	}
	fflush(NULL);
	pid = fork();
	if (pid < 0) {
		perror("vectur-mount: fork");
		return -1;
	}
	if (pid == 0) {
		close(p[0]);
		*notify_fd = p[1];
		return 0;
	}
	close(p[1]);
	if (read(p[0], &c, 1) == 1)
		_exit(0);
	if (waitpid(pid, &status, 0) < 0)
		_exit(1);
	_exit(WIFEXITED(status) ? WEXITSTATUS(status) : 1);
}

/* The mount is up: release the waiting parent and detach from the
 * terminal. */
static void daemon_ready(struct vfs *v, int notify_fd)
{
	char path[PATH_MAX + 32];
	int fd;

	if (setsid() < 0)
		vfs_log(LOG_WARNING, "setsid: %s", strerror(errno));
	fd = open("/dev/null", O_RDWR);
	if (fd >= 0) {
		dup2(fd, 0);
		dup2(fd, 1);
		close(fd);
	}
	snprintf(path, sizeof(path), "%s/" VFS_LOG_FILE, v->cache_dir);
	fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	if (fd >= 0) {
		dup2(fd, 2);
		close(fd);
	}
	log_daemonized = true;
	openlog("vectur-mount", LOG_PID, LOG_DAEMON);
	if (write(notify_fd, "1", 1) != 1)
		vfs_log(LOG_WARNING, "cannot notify the parent: %s",
			strerror(errno));
	close(notify_fd);
}

static int add_fuse_opt(struct fuse_args *args, const char *fmt, ...)
{
	char buf[2048], esc[4096], *q = esc;
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	/* fuse_opt splits -o on ',': escape them (fsname=a,b). */
	for (const char *p = buf; *p; p++) {
		if (*p == ',' || *p == '\\')
			*q++ = '\\';
		*q++ = *p;
	}
	*q = '\0';
	if (fuse_opt_add_arg(args, "-o") || fuse_opt_add_arg(args, esc))
		return -ENOMEM;
	return 0;
}

static int do_mount(struct mount_opts *o, struct fuse_args *args)
{
	struct vfs *vp = calloc(1, sizeof(*vp)), *v = vp;
	struct drive_session ds = {0};
	struct cache_opts copts = {0};
	struct drive_err derr;
	struct fuse *f = NULL;
	struct fuse_loop_config lcfg = {.clone_fd = 0, .max_idle_threads = 10};
	char errbuf[512] = "";
	sigset_t stop_sigs;
	uint8_t rnd[8];
	int notify_fd = -1, rc = 1;
	bool mounted = false, signals_set = false;

	if (!v) {
		fprintf(stderr, "vectur-mount: out of memory\n");
		return 1;
	}
	v->o = o;
	v->dirfd = -1;
	v->uid = getuid();
	v->gid = getgid();
	v->started = time(NULL);
	pthread_mutex_init(&v->rename_lock, NULL);
	pthread_mutex_init(&v->fh_lock, NULL);
	pthread_cond_init(&v->fh_cond, NULL);
	pthread_mutex_init(&v->shadow_lock, NULL);
	pthread_mutex_init(&v->inval_lock, NULL);
	pthread_cond_init(&v->inval_cond, NULL);
	pthread_mutex_init(&v->sync_lock, NULL);
	pthread_cond_init(&v->sync_cond, NULL);
	if (getrandom(rnd, sizeof(rnd), 0) != sizeof(rnd))
		for (size_t i = 0; i < sizeof(rnd); i++)
			rnd[i] = (uint8_t)(rand() ^ getpid() ^ time(NULL));
	for (size_t i = 0; i < sizeof(rnd); i++)
		sprintf(v->mount_id + 2 * i, "%02x", rnd[i]);

	if (o->nargs != 2) {
		fprintf(stderr, "usage: vectur-mount [options] REMOTE:[PATH] "
				"MOUNTPOINT\n(see vectur-mount --help)\n");
		rc = 2;
		goto out;
	}
	drive_err_clear(&derr);
	if (drive_parse_remote(o->args[0], v->remote, sizeof(v->remote),
			       v->rpath, sizeof(v->rpath), &derr) < 0) {
		fprintf(stderr,
			"vectur-mount: %s\n  expected REMOTE:[PATH], e.g. "
			"gdrive:experiments/proj\n",
			derr.message);
		rc = 2;
		goto out;
	}
	if (check_mountpoint(v, o->args[1]) < 0)
		goto out;
	/* The persist set is judged before Drive or the cache dir are
	 * touched: a bad -o persist= is a usage error (2), a vectur.persist
	 * that cannot be used a failure (1). */
	if (setup_persist(v, o) < 0) {
		rc = o->npersist ? 2 : 1;
		goto out;
	}
	if (!o->foreground && daemon_fork(&notify_fd) < 0)
		goto out;
	/* Threads started from here on (cache/ workers, curl resolvers, our
	 * own) inherit a mask without the stop signals, so SIGTERM reaches
	 * the main thread, which is the one libfuse's loop wakes up on. */
	sigemptyset(&stop_sigs);
	sigaddset(&stop_sigs, SIGTERM);
	sigaddset(&stop_sigs, SIGINT);
	sigaddset(&stop_sigs, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &stop_sigs, NULL);

	/* libfuse judges the values of the options it takes (umask=, ...)
	 * here, before Drive or the cache dir are touched; fuse_new() opens
	 * nothing and starts no thread. */
	if ((!o->fsname_set &&
	     add_fuse_opt(args, "fsname=%s:%s", v->remote, v->rpath) < 0) ||
	    (!o->subtype_set && add_fuse_opt(args, "subtype=vectur") < 0) ||
	    (o->allow_other && add_fuse_opt(args, "default_permissions") < 0))
		goto out;
	f = fuse_new(args, &vfs_ops, sizeof(vfs_ops), v);
	if (!f) {
		fprintf(stderr, "vectur-mount: bad FUSE options (see above)\n");
		rc = 2;
		goto out;
	}
	v->fuse = f;

	if (drive_session_open(&ds, o, o->args[0], true) < 0)
		goto out;
	v->dc = ds.dc;
	if (setup_cache_dir(v, o) < 0)
		goto out;

	copts.dir = v->cache_dir;
	copts.max_size = o->cache_max_size;
	copts.write_back_ms = (int)lround(o->write_back * 1000);
	copts.transfers = o->transfers > 0 ? o->transfers : 1;
	copts.chunk_size = (size_t)o->chunk_size;
	copts.poll_interval_s =
		o->poll_interval > 0 ? (int)ceil(o->poll_interval) : 0;
	copts.long_open_upload_s = VFS_LONG_OPEN_UPLOAD_S;
	copts.read_timeout_s = (int)ceil(o->read_timeout);
	copts.use_trash = o->use_trash;
	/* Tests only (test_mount_crashpoints.py, fs/README.md):
	 * VECTUR_TEST_CRASH_AT=N has the mount _exit(99) instead of running
	 * its cache's row write N, a kill at an exact point between two
	 * SQLite writes; VECTUR_TEST_SETTLE_MS shortens the 10 s a restarted
	 * mount waits for the dead one's requests (the emulator is on
	 * loopback, they have landed long before). */
	if (getenv("VECTUR_TEST_CRASH_AT"))
		copts.crash_at = atoll(getenv("VECTUR_TEST_CRASH_AT"));
	if (getenv("VECTUR_TEST_SETTLE_MS"))
		copts.settle_ms = atoi(getenv("VECTUR_TEST_SETTLE_MS"));
	copts.invalidate = vfs_inval_cb;
	copts.ud = v;
	rc = cache_open(&v->cache, &copts, v->dc, ds.root_id, errbuf,
			sizeof(errbuf));
	if (rc < 0) {
		fprintf(stderr, "vectur-mount: cache %s: %s\n", v->cache_dir,
			errbuf[0] ? errbuf : strerror(-rc));
		rc = 1;
		goto out;
	}
	cache_locks_start(v->cache, (int)ceil(o->lock_ttl), v->mount_id);
	rc = 1;
	vfs_finish_move(v);
	vfs_scan_shadows(v);

	if (fuse_mount(f, v->mountpoint) < 0) {
		fprintf(stderr, "vectur-mount: cannot mount on %s\n",
			v->mountpoint);
		goto out;
	}
	mounted = true;
	if (fuse_set_signal_handlers(fuse_get_session(f)) < 0) {
		fprintf(stderr, "vectur-mount: cannot set signal handlers\n");
		goto out;
	}
	signals_set = true;
	if (vfs_inval_start(v) < 0) {
		fprintf(stderr, "vectur-mount: cannot start\n");
		goto out;
	}
	log_debug = o->debug;
	if (chdir("/") < 0)
		vfs_log(LOG_WARNING, "chdir /: %s", strerror(errno));
	vfs_log(LOG_INFO, "mounted %s:%s on %s (cache %s, persist: %s)",
		v->remote, v->rpath, v->mountpoint, v->cache_dir,
		v->persist_source);
	if (notify_fd >= 0) {
		daemon_ready(v, notify_fd);
		notify_fd = -1;
	}

	pthread_sigmask(SIG_UNBLOCK, &stop_sigs, NULL);
	rc = o->single_thread ? fuse_loop(f) : fuse_loop_mt(f, &lcfg);
	rc = rc < 0 ? 1 : 0;
	vfs_log(LOG_INFO, "unmounting %s", v->mountpoint);

out:
	vfs_inval_stop(v);
	if (f) {
		if (signals_set)
			fuse_remove_signal_handlers(fuse_get_session(f));
		if (mounted)
			fuse_unmount(f);
		/* Runs vfs_destroy (drain + cache_close) if init ran. */
		fuse_destroy(f);
	}
	if (v->cache_abandoned) {
		/* A sync thread still uses the cache and v: exit without
		 * freeing them under it (the queue is durable). */
		fflush(NULL);
		_exit(rc);
	}
	if (v->cache) {
		cache_close(v->cache, (int)(o->drain_timeout + 0.5));
		v->cache = NULL;
	}
	v->dc = NULL;
	drive_session_free(&ds);
	if (v->dirfd >= 0)
		close(v->dirfd);
	persist_free(v->ps);
	for (int i = 0; i < v->nshadowed; i++)
		free(v->shadowed[i]);
	free(v->shadowed);
	free(vp);
	return rc;
}

int main(int argc, char **argv)
{
	struct mount_opts o;
	struct fuse_args args = FUSE_ARGS_INIT(0, NULL);
	int rc;

	if (opts_parse(argc, argv, &o, &args) < 0) {
		fprintf(stderr, "(see vectur-mount --help)\n");
		return 2;
	}
	log_debug = o.debug;
	if (o.show_help) {
		opts_print_help(stdout, "vectur-mount");
		rc = 0;
	} else if (o.show_version) {
		printf("vectur-mount %s\nFUSE library version %s\n",
		       VECTUR_VERSION, fuse_pkgversion());
		rc = 0;
	} else if (o.sync) {
		if (o.nargs != 1) {
			fprintf(stderr,
				"usage: vectur-mount --sync MOUNTPOINT\n");
			rc = 2;
		} else {
			rc = ctl_sync_client(o.args[0]);
		}
	} else if (o.check) {
		rc = do_check(&o);
	} else {
		rc = do_mount(&o, &args);
	}
	fuse_opt_free_args(&args);
	opts_free(&o);
	return rc;
}
