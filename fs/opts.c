/* opts.c — parses vectur-mount's command line from one table (vopt_table)
 * that also prints --help, the way sshfs builds its fuse_opt table with
 * offsetof. A second table (xopt_table) names every other option it takes:
 * FUSE's (ro, nosuid, fsname=, ...) are handed on, the ones only
 * mount(8)/fstab care about (_netdev, noauto, user, ...) are accepted and
 * dropped so that a `fuse.vectur-mount` fstab line works. Anything else is
 * refused here, before the config, Drive or the cache dir are touched. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "opts.h"

#define O(field) offsetof(struct mount_opts, field)
#define DAY_S	 86400.0

const struct vopt vopt_table[] = {
	{"cache_dir", VOPT_STR, O(cache_dir), NULL,
	 "where cached content and the queue live (default "
	 "$XDG_CACHE_HOME/vectur/<remote>-<hash>, mode 0700)",
	 false, "DIR", 0, 0, NULL},
	{"cache_max_size", VOPT_SIZE, O(cache_max_size), "10G",
	 "clean content kept before LRU eviction (K/M/G/T suffixes)", false,
	 NULL, 0, 0, NULL},
	{"persist", VOPT_LIST, O(persist), NULL,
	 "gitignore-like pattern of paths kept on Drive; repeatable; replaces "
	 "vectur.persist and the default runs/**, "
	 "experiments/work_graph.json, locks/**; persist=** = everything",
	 false, NULL, 0, 0, NULL},
	{"poll_interval", VOPT_SECS, O(poll_interval), "15",
	 "seconds between reads of Drive's changes feed (0 = never)", false,
	 NULL, 0, DAY_S, "0 to 1 day"},
	{"lock_ttl", VOPT_SECS, O(lock_ttl), "60",
	 "lease of files under locks/**, refreshed every ttl/3", false, NULL, 3,
	 DAY_S, "3 s to 1 day"},
	{"write_back", VOPT_SECS, O(write_back), "5",
	 "seconds after the last close before an upload starts (0.5 ok)", false,
	 NULL, 0, DAY_S, "0 to 1 day"},
	{"transfers", VOPT_INT, O(transfers), "4", "parallel uploads/downloads",
	 false, NULL, 1, 64, "1 to 64"},
	{"tpslimit", VOPT_INT, O(tpslimit), "10",
	 "Drive API requests per second, bursts of 100 (rclone's default; "
	 "raise it for many small files if your quota allows)",
	 false, NULL, 1, 100000, "1 to 100000"},
	{"chunk_size", VOPT_SIZE, O(chunk_size), "8M",
	 "resumable upload chunk size (multiple of 256K)", false, NULL,
	 256 << 10, 1 << 30, "256K to 1G, a multiple of 256K"},
	{"endpoint", VOPT_STR, O(endpoint), NULL,
	 "base URL replacing https://www.googleapis.com (token URL becomes "
	 "ENDPOINT/token unless token_url is set)",
	 false, "URL", 0, 0, NULL},
	{"token_url", VOPT_STR, O(token_url), NULL,
	 "OAuth token URL (default from the config or the endpoint)", false,
	 "URL", 0, 0, NULL},
	{"config", VOPT_STR, O(config), NULL,
	 "rclone config file (same as --config FILE)", false, "FILE", 0, 0,
	 NULL},
	{"allow_other", VOPT_BOOL, O(allow_other), "0",
	 "let other users in (implies default_permissions; needs "
	 "user_allow_other in /etc/fuse.conf for non-root)",
	 true, NULL, 0, 0, NULL},
	{"drain_timeout", VOPT_SECS, O(drain_timeout), "60",
	 "at unmount, wait this long for queued uploads; the rest stays "
	 "queued for the next mount",
	 false, NULL, 0, DAY_S, "0 to 1 day"},
	{"read_timeout", VOPT_SECS, O(read_timeout), "30",
	 "an uncached read that gets nothing from Drive for this long fails "
	 "with EIO",
	 false, NULL, 0.001, DAY_S, "more than 0, up to 1 day"},
	{"use_trash", VOPT_BOOL, O(use_trash), "1",
	 "deleting a persisted file moves it to Drive's trash (0 = delete)",
	 false, NULL, 0, 0, NULL},
	{"debug", VOPT_BOOL, O(debug), "0",
	 "log every FUSE request (implies -f)", true, NULL, 0, 0, NULL},
	{NULL, 0, 0, NULL, NULL, false, NULL, 0, 0, NULL},
};

#define WHY_CACHE                                                              \
	"vectur-mount sets the kernel's caching itself (files on Drive "       \
	"change under it)"

const struct xopt xopt_table[] = {
	/* The kernel's mount flags, as mount(8) and mount.fuse3 pass them. */
	{"ro", XOPT_FUSE, NULL},
	{"rw", XOPT_FUSE, NULL},
	{"suid", XOPT_FUSE, NULL},
	{"nosuid", XOPT_FUSE, NULL},
	{"dev", XOPT_FUSE, NULL},
	{"nodev", XOPT_FUSE, NULL},
	{"exec", XOPT_FUSE, NULL},
	{"noexec", XOPT_FUSE, NULL},
	{"async", XOPT_FUSE, NULL},
	{"sync", XOPT_FUSE, NULL},
	{"dirsync", XOPT_FUSE, NULL},
	{"atime", XOPT_FUSE, NULL},
	{"noatime", XOPT_FUSE, NULL},
	/* libfuse's mount options. */
	{"default_permissions", XOPT_FUSE, NULL},
	{"allow_root", XOPT_FUSE, NULL},
	{"auto_unmount", XOPT_FUSE, NULL},
	{"fsname=NAME", XOPT_FUSE, NULL},
	{"subtype=TYPE", XOPT_FUSE, NULL},
	{"umask=MASK", XOPT_FUSE, NULL},
	{"uid=N", XOPT_FUSE, NULL},
	{"gid=N", XOPT_FUSE, NULL},
	/* Only mount(8), fstab and systemd care about these (user= is what
	 * mount(8) records for a `user` mount; fusermount3 refuses it). */
	{"_netdev", XOPT_FSTAB, NULL},
	{"noauto", XOPT_FSTAB, NULL},
	{"auto", XOPT_FSTAB, NULL},
	{"user", XOPT_FSTAB, NULL},
	{"users", XOPT_FSTAB, NULL},
	{"nouser", XOPT_FSTAB, NULL},
	{"user=NAME", XOPT_FSTAB, NULL},
	{"nofail", XOPT_FSTAB, NULL},
	{"defaults", XOPT_FSTAB, NULL},
	{"owner", XOPT_FSTAB, NULL},
	{"group", XOPT_FSTAB, NULL},
	{"nobootwait", XOPT_FSTAB, NULL},
	{"comment=TEXT", XOPT_FSTAB, NULL},
	{"x-*", XOPT_FSTAB, NULL},
	/* libfuse's, but vfs_init() sets them or libfuse's high-level API
	 * cannot take them: a user's value would be silently overridden, or
	 * the mount would fail once up. */
	{"kernel_cache", XOPT_REFUSED, WHY_CACHE},
	{"auto_cache", XOPT_REFUSED, WHY_CACHE},
	{"noauto_cache", XOPT_REFUSED, WHY_CACHE},
	{"entry_timeout=SECS", XOPT_REFUSED, WHY_CACHE},
	{"attr_timeout=SECS", XOPT_REFUSED, WHY_CACHE},
	{"negative_timeout=SECS", XOPT_REFUSED, WHY_CACHE},
	{"max_read=N", XOPT_REFUSED,
	 "libfuse's high-level API fails on it once mounted"},
	{NULL, 0, NULL},
};

enum {
	KEY_HELP,
	KEY_VERSION,
	KEY_FOREGROUND,
	KEY_DEBUG,
	KEY_SINGLE,
	KEY_CHECK,
	KEY_SYNC,
};

static const struct fuse_opt cli_spec[] = {
	FUSE_OPT_KEY("-h", KEY_HELP),
	FUSE_OPT_KEY("--help", KEY_HELP),
	FUSE_OPT_KEY("-V", KEY_VERSION),
	FUSE_OPT_KEY("--version", KEY_VERSION),
	FUSE_OPT_KEY("-f", KEY_FOREGROUND),
	FUSE_OPT_KEY("-d", KEY_DEBUG),
	FUSE_OPT_KEY("-s", KEY_SINGLE),
	FUSE_OPT_KEY("--check", KEY_CHECK),
	FUSE_OPT_KEY("--sync", KEY_SYNC),
	{"--config=%s", O(config), 0},
	{"--config %s", O(config), 0},
	FUSE_OPT_END,
};

int opts_parse_bool(const char *s, int *out)
{
	static const char *const yes[] = {"1", "yes", "true", "on", NULL};
	static const char *const no[] = {"0", "no", "false", "off", NULL};

	for (int i = 0; yes[i]; i++)
		if (strcasecmp(s, yes[i]) == 0) {
			*out = 1;
			return 0;
		}
	for (int i = 0; no[i]; i++)
		if (strcasecmp(s, no[i]) == 0) {
			*out = 0;
			return 0;
		}
	return -EINVAL;
}

int opts_parse_size(const char *s, int64_t *out)
{
	char *end;
	double v;
	int shift = 0;

	errno = 0;
	v = strtod(s, &end);
	if (end == s || errno || v < 0 || !isfinite(v))
		return -EINVAL;
	switch (*end) {
	case 'k':
	case 'K':
		shift = 10;
		break;
	case 'm':
	case 'M':
		shift = 20;
		break;
	case 'g':
	case 'G':
		shift = 30;
		break;
	case 't':
	case 'T':
		shift = 40;
		break;
	case 'b':
	case 'B':
	case '\0':
		break;
	default:
		return -EINVAL;
	}
	if (shift) {
		end++;
		if (*end == 'i')
			end++;
	}
	if (*end == 'B' || *end == 'b')
		end++;
	if (*end != '\0')
		return -EINVAL;
	v = ldexp(v, shift);
	/* (double)INT64_MAX rounds up to 2^63, itself one past the range. */
	if (v >= (double)INT64_MAX)
		return -EINVAL;
	*out = (int64_t)v;
	return 0;
}

int opts_parse_secs(const char *s, double *out)
{
	char *end;
	double v;

	errno = 0;
	v = strtod(s, &end);
	if (end == s || errno || v < 0 || !isfinite(v))
		return -EINVAL;
	if (strcmp(end, "") == 0 || strcmp(end, "s") == 0)
		;
	else if (strcmp(end, "ms") == 0)
		v /= 1000;
	else if (strcmp(end, "m") == 0)
		v *= 60;
	else if (strcmp(end, "h") == 0)
		v *= 3600;
	else
		return -EINVAL;
	*out = v;
	return 0;
}

static int set_option(struct mount_opts *o, const struct vopt *v,
		      const char *val)
{
	void *p = (char *)o + v->offset;
	char *end;
	long l;

	if (!val && v->type != VOPT_BOOL)
		return -EINVAL;
	switch (v->type) {
	case VOPT_STR:
		free(*(char **)p);
		*(char **)p = strdup(val);
		return *(char **)p ? 0 : -ENOMEM;
	case VOPT_BOOL:
		if (!val) {
			*(int *)p = 1;
			return 0;
		}
		return opts_parse_bool(val, (int *)p);
	case VOPT_INT:
		errno = 0;
		l = strtol(val, &end, 10);
		if (end == val || *end || errno || l < 0 || l > 1000000)
			return -EINVAL;
		*(int *)p = (int)l;
		return 0;
	case VOPT_SIZE:
		return opts_parse_size(val, (int64_t *)p);
	case VOPT_SECS:
		return opts_parse_secs(val, (double *)p);
	case VOPT_LIST: {
		char ***list = (char ***)p;
		char **nl = realloc(*list, (o->npersist + 2) * sizeof(char *));

		if (!nl)
			return -ENOMEM;
		*list = nl;
		nl[o->npersist] = strdup(val);
		if (!nl[o->npersist])
			return -ENOMEM;
		nl[++o->npersist] = NULL;
		return 0;
	}
	}
	return -EINVAL;
}

/* Whether the value just set for v is one vectur can use. */
static bool in_range(const struct mount_opts *o, const struct vopt *v)
{
	const void *p = (const char *)o + v->offset;
	double x;

	if (v->min == 0 && v->max == 0)
		return true;
	if (v->type == VOPT_INT)
		x = *(const int *)p;
	else if (v->type == VOPT_SIZE)
		x = (double)*(const int64_t *)p;
	else if (v->type == VOPT_SECS)
		x = *(const double *)p;
	else
		return true;
	if (v->offset == O(chunk_size) &&
	    *(const int64_t *)p % (256 << 10) != 0)
		return false; /* Drive takes chunks of 256K multiples */
	return x >= v->min && x <= v->max;
}

static const struct vopt *find_option(const char *name, size_t len)
{
	for (const struct vopt *v = vopt_table; v->name; v++)
		if (strlen(v->name) == len && strncmp(v->name, name, len) == 0)
			return v;
	return NULL;
}

static const struct xopt *find_xopt(const char *arg)
{
	for (const struct xopt *x = xopt_table; x->name; x++) {
		size_t n = strcspn(x->name, "=*");

		if (x->name[n] == '\0' ? strcmp(arg, x->name) == 0
				       : strncmp(arg, x->name,
						 n + (x->name[n] == '=')) == 0)
			return x;
	}
	return NULL;
}

/* An option that is not ours: 1 hands it on to libfuse, 0 drops it, -1
 * refuses it (said on stderr). */
static int other_option(struct mount_opts *o, const char *arg)
{
	const struct xopt *x = find_xopt(arg);

	if (!x) {
		fprintf(stderr, "vectur-mount: unknown option '%s'\n", arg);
		return -1;
	}
	switch (x->kind) {
	case XOPT_FUSE:
		if (strncmp(arg, "fsname=", 7) == 0)
			o->fsname_set = true;
		if (strncmp(arg, "subtype=", 8) == 0)
			o->subtype_set = true;
		return 1;
	case XOPT_FSTAB:
		return 0;
	case XOPT_REFUSED:
		break;
	}
	fprintf(stderr, "vectur-mount: option '%s' is not supported: %s\n", arg,
		x->why);
	return -1;
}

static int opt_proc(void *data, const char *arg, int key,
		    struct fuse_args *outargs)
{
	struct mount_opts *o = data;

	switch (key) {
	case FUSE_OPT_KEY_OPT: {
		const char *eq = strchr(arg, '=');
		size_t len = eq ? (size_t)(eq - arg) : strlen(arg);
		const struct vopt *v = find_option(arg, len);

		if (!*arg)
			return 0; /* "-o ro,,rw" */
		if (!v)
			return other_option(o, arg);
		if (set_option(o, v, eq ? eq + 1 : NULL) < 0) {
			fprintf(stderr,
				"vectur-mount: bad value for option '%s'\n",
				arg);
			return -1;
		}
		if (!in_range(o, v)) {
			/* A stand-in value (0 transfers ran 1) would
			 * surprise; a huge one overflowed an int. */
			fprintf(stderr,
				"vectur-mount: option '%s' is out of range: "
				"%s\n",
				arg, v->range);
			return -1;
		}
		if (v->type == VOPT_BOOL && v->offset == O(debug) && o->debug)
			o->foreground = 1;
		if (v->pass && eq) {
			/* libfuse knows allow_other and debug only bare:
			 * "name=1" becomes "name", "name=0" nothing. */
			char bare[64];

			if (!*(int *)((char *)o + v->offset))
				return 0;
			snprintf(bare, sizeof(bare), "-o%.*s", (int)len, arg);
			return fuse_opt_add_arg(outargs, bare) < 0 ? -1 : 0;
		}
		return v->pass ? 1 : 0;
	}
	case FUSE_OPT_KEY_NONOPT:
		if (o->nargs >= 2) {
			fprintf(stderr,
				"vectur-mount: unexpected argument '%s'\n",
				arg);
			return -1;
		}
		o->args[o->nargs] = strdup(arg);
		if (!o->args[o->nargs])
			return -1;
		o->nargs++;
		return 0;
	case KEY_HELP:
		o->show_help = 1;
		return 0;
	case KEY_VERSION:
		o->show_version = 1;
		return 0;
	case KEY_FOREGROUND:
		o->foreground = 1;
		return 0;
	case KEY_DEBUG:
		o->foreground = 1;
		o->debug = 1;
		return 1;
	case KEY_SINGLE:
		o->single_thread = 1;
		return 0;
	case KEY_CHECK:
		o->check = 1;
		return 0;
	case KEY_SYNC:
		o->sync = 1;
		return 0;
	}
	return 1;
}

int opts_parse(int argc, char **argv, struct mount_opts *o,
	       struct fuse_args *fuse_args)
{
	struct fuse_args tmp = FUSE_ARGS_INIT(argc, argv);
	int rc;

	memset(o, 0, sizeof(*o));
	for (const struct vopt *v = vopt_table; v->name; v++) {
		if (v->def && set_option(o, v, v->def) < 0) {
			fprintf(stderr, "vectur-mount: bad default for %s\n",
				v->name);
			opts_free(o);
			return -EINVAL;
		}
	}
	rc = fuse_opt_parse(&tmp, o, cli_spec, opt_proc);
	if (rc < 0) {
		/* Nothing is left for the caller to free. */
		fuse_opt_free_args(&tmp);
		opts_free(o);
		return -EINVAL;
	}
	*fuse_args = tmp;
	return 0;
}

void opts_free(struct mount_opts *o)
{
	for (const struct vopt *v = vopt_table; v->name; v++) {
		void *p = (char *)o + v->offset;

		if (v->type == VOPT_STR) {
			free(*(char **)p);
			*(char **)p = NULL;
		}
	}
	for (int i = 0; i < o->npersist; i++)
		free(o->persist[i]);
	free(o->persist);
	o->persist = NULL;
	o->npersist = 0;
	for (int i = 0; i < o->nargs; i++)
		free(o->args[i]);
	o->nargs = 0;
}

/* How --help shows an option's value: the table's metavariable (DIR,
 * URL, FILE), else one from its type. */
static const char *type_meta(const struct vopt *v, char *buf, size_t len)
{
	if (v->meta) {
		snprintf(buf, len, "=%s", v->meta);
		return buf;
	}
	switch (v->type) {
	case VOPT_STR:
		return "=STR";
	case VOPT_BOOL:
		return "[=BOOL]";
	case VOPT_INT:
		return "=N";
	case VOPT_SIZE:
		return "=SIZE";
	case VOPT_SECS:
		return "=SECS";
	case VOPT_LIST:
		return "=PATTERN";
	}
	return "";
}

/* Wraps `text` at ~78 columns with a hanging indent of `indent`. */
static void print_wrapped(FILE *f, const char *text, int col, int indent)
{
	const char *p = text;
	bool first = true;

	while (*p) {
		size_t w = strcspn(p, " ");

		if (!first && col + 1 + (int)w > 79) {
			fprintf(f, "\n%*s", indent, "");
			col = indent;
		} else if (!first) {
			fputc(' ', f);
			col++;
		}
		fprintf(f, "%.*s", (int)w, p);
		col += w;
		p += w;
		while (*p == ' ')
			p++;
		first = false;
	}
	fputc('\n', f);
}

/* One line of --help naming every xopt_table option of one kind. */
static void print_xopts(FILE *f, const char *label, enum xopt_kind kind)
{
	char list[1024] = "";
	size_t n = 0;

	for (const struct xopt *x = xopt_table; x->name; x++) {
		if (x->kind != kind || n >= sizeof(list))
			continue;
		n += snprintf(list + n, sizeof(list) - n, "%s%s", n ? ", " : "",
			      x->name);
	}
	print_wrapped(f, list, fprintf(f, "    %-24s", label), 28);
}

void opts_print_help(FILE *f, const char *prog)
{
	fprintf(f,
		"usage: %s [options] REMOTE:[PATH] MOUNTPOINT\n"
		"       %s --check [-o endpoint=URL] [--config FILE] "
		"REMOTE:[PATH]\n"
		"       %s --sync MOUNTPOINT\n"
		"\n"
		"Mounts the Drive folder REMOTE:PATH (an rclone `drive` "
		"remote) "
		"over\nMOUNTPOINT, keeping the directory's own files visible: "
		"paths in the\npersist set live on Drive, everything else "
		"stays "
		"local.\nUnmount with `fusermount3 -u MOUNTPOINT`.\n"
		"\n"
		"general options:\n"
		"    -h, --help             print this help\n"
		"    -V, --version          print the version\n"
		"    -f                     stay in the foreground\n"
		"    -d, -o debug           debug output (implies -f)\n"
		"    -s                     single-threaded\n"
		"    --config FILE          rclone config file\n"
		"    --check                check config, credentials and "
		"path, then exit\n"
		"    --sync                 wait until everything written "
		"under MOUNTPOINT\n"
		"                           is on Drive\n"
		"\n"
		"vectur options (-o name=value,...):\n",
		prog, prog, prog);
	for (const struct vopt *v = vopt_table; v->name; v++) {
		char head[64], meta[32];
		char help[512];
		int col;

		snprintf(head, sizeof(head), "    -o %s%s", v->name,
			 type_meta(v, meta, sizeof(meta)));
		col = fprintf(f, "%-28s", head);
		if (col > 28) {
			fprintf(f, "\n%28s", "");
			col = 28;
		}
		if (v->def)
			snprintf(help, sizeof(help), "%s (default: %s%s%s)",
				 v->help, v->def, v->range ? "; " : "",
				 v->range ? v->range : "");
		else
			snprintf(help, sizeof(help), "%s", v->help);
		print_wrapped(f, help, col, 28);
	}
	fprintf(f, "\nother mount options (-o, or from an /etc/fstab line):\n");
	print_xopts(f, "passed to FUSE:", XOPT_FUSE);
	print_xopts(f, "ignored (fstab only):", XOPT_FSTAB);
	fprintf(f, "Any other option is refused (exit status 2) before Drive "
		   "or the disk are\ntouched.\n");
}
