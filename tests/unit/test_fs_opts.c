/* test_fs_opts.c — vectur-mount's command line: sizes and durations, the
 * one options table, fstab lines, and what is handed on to libfuse. */
#include <errno.h>

/* Unit tests link libvectur.a only (drive/ + cache/): compile it in. */
#include "../../fs/opts.c"
#include "t.h"

static int parse(struct mount_opts *o, struct fuse_args *fa, char **argv)
{
	int argc = 0;

	while (argv[argc])
		argc++;
	return opts_parse(argc, argv, o, fa);
}

static bool has_arg(const struct fuse_args *fa, const char *s)
{
	for (int i = 0; i < fa->argc; i++)
		if (strstr(fa->argv[i], s))
			return true;
	return false;
}

static void test_sizes_accept_suffixes(void)
{
	int64_t v = 0;

	CHECK_INT(opts_parse_size("10G", &v), 0);
	CHECK_INT(v, 10LL << 30);
	CHECK_INT(opts_parse_size("500M", &v), 0);
	CHECK_INT(v, 500LL << 20);
	CHECK_INT(opts_parse_size("8MiB", &v), 0);
	CHECK_INT(v, 8LL << 20);
	CHECK_INT(opts_parse_size("1.5k", &v), 0);
	CHECK_INT(v, 1536);
	CHECK_INT(opts_parse_size("4096", &v), 0);
	CHECK_INT(v, 4096);
	CHECK_INT(opts_parse_size("10X", &v), -EINVAL);
	CHECK_INT(opts_parse_size("", &v), -EINVAL);
	CHECK_INT(opts_parse_size("-1G", &v), -EINVAL);
}

/* 2^63 bytes is one past INT64_MAX: it was taken, and converted to a
 * negative size (cache_max_size has no range of its own to catch it). */
static void test_a_size_past_int64_is_refused_not_wrapped(void)
{
	int64_t v = 0;

	CHECK_INT(opts_parse_size("8388608T", &v), -EINVAL);
	CHECK_INT(opts_parse_size("9223372036854775808", &v), -EINVAL);
	CHECK_INT(opts_parse_size("8388607T", &v), 0);
	CHECK_INT(v, 8388607LL << 40);
}

static void test_durations_accept_fractions_and_units(void)
{
	double d = 0;

	CHECK_INT(opts_parse_secs("0.5", &d), 0);
	CHECK(d == 0.5);
	CHECK_INT(opts_parse_secs("2m", &d), 0);
	CHECK(d == 120);
	CHECK_INT(opts_parse_secs("250ms", &d), 0);
	CHECK(d == 0.25);
	CHECK_INT(opts_parse_secs("soon", &d), -EINVAL);
}

static void test_defaults_come_from_the_table(void)
{
	struct mount_opts o;
	struct fuse_args fa;
	char *argv[] = {"vectur-mount", "gdrive:x", "/mnt", NULL};

	CHECK_INT(parse(&o, &fa, argv), 0);
	CHECK_INT(o.cache_max_size, 10LL << 30);
	CHECK(o.poll_interval == 15);
	CHECK(o.lock_ttl == 60);
	CHECK(o.write_back == 5);
	CHECK_INT(o.transfers, 4);
	CHECK_INT(o.tpslimit, 10);
	CHECK_INT(o.chunk_size, 8 << 20);
	CHECK(o.drain_timeout == 60);
	CHECK(o.read_timeout == 30);
	CHECK_INT(o.use_trash, 1);
	CHECK_INT(o.nargs, 2);
	CHECK_STR(o.args[0], "gdrive:x");
	CHECK_STR(o.args[1], "/mnt");
	CHECK(o.persist == NULL);
	fuse_opt_free_args(&fa);
	opts_free(&o);
}

static void test_options_parse_and_persist_repeats(void)
{
	struct mount_opts o;
	struct fuse_args fa;
	char *argv[] = {
		"vectur-mount",
		"-o",
		"cache_dir=/c,write_back=0.2,persist=runs/**",
		"-o",
		"persist=*.ckpt,use_trash=no,endpoint=http://127.0.0.1:9",
		"--config",
		"/etc/r.conf",
		"-f",
		"gdrive:",
		"/mnt",
		NULL};

	CHECK_INT(parse(&o, &fa, argv), 0);
	CHECK_STR(o.cache_dir, "/c");
	CHECK(o.write_back == 0.2);
	CHECK_INT(o.npersist, 2);
	CHECK_STR(o.persist[0], "runs/**");
	CHECK_STR(o.persist[1], "*.ckpt");
	CHECK_INT(o.use_trash, 0);
	CHECK_STR(o.endpoint, "http://127.0.0.1:9");
	CHECK_STR(o.config, "/etc/r.conf");
	CHECK_INT(o.foreground, 1);
	CHECK(!has_arg(&fa, "cache_dir"));
	CHECK(!has_arg(&fa, "persist"));
	fuse_opt_free_args(&fa);
	opts_free(&o);
}

static void test_fstab_options_are_accepted_and_dropped(void)
{
	struct mount_opts o;
	struct fuse_args fa;
	char *argv[] = {"vectur-mount",
			"gdrive:proj",
			"/work",
			"-o",
			"rw,nodev,nosuid,_netdev,noauto,user,nofail,x-systemd."
			"automount,allow_other,cache_max_size=500M",
			NULL};

	CHECK_INT(parse(&o, &fa, argv), 0);
	CHECK_INT(o.cache_max_size, 500LL << 20);
	CHECK_INT(o.allow_other, 1);
	CHECK(has_arg(&fa, "allow_other")); /* libfuse needs it too */
	CHECK(has_arg(&fa, "nodev"));
	CHECK(has_arg(&fa, "nosuid"));
	CHECK(!has_arg(&fa, "_netdev"));
	CHECK(!has_arg(&fa, "noauto"));
	CHECK(!has_arg(&fa, "user"));
	CHECK(!has_arg(&fa, "x-systemd"));
	fuse_opt_free_args(&fa);
	opts_free(&o);
}

/* allow_other[=BOOL] and debug[=BOOL] as --help and the man page give
 * them: libfuse knows only the bare names, and refused "allow_other=1". */
static void test_fuse_bools_take_a_value(void)
{
	struct mount_opts o;
	struct fuse_args fa;
	char *on[] = {"vectur-mount", "gdrive:p",      "/w",
		      "-o",	      "allow_other=1", NULL};
	char *off[] = {"vectur-mount",		 "gdrive:p", "/w", "-o",
		       "allow_other=0,debug=no", NULL};

	CHECK_INT(parse(&o, &fa, on), 0);
	CHECK_INT(o.allow_other, 1);
	CHECK(has_arg(&fa, "allow_other"));
	CHECK(!has_arg(&fa, "allow_other=1"));
	fuse_opt_free_args(&fa);
	opts_free(&o);
	CHECK_INT(parse(&o, &fa, off), 0);
	CHECK_INT(o.allow_other, 0);
	CHECK_INT(o.debug, 0);
	CHECK(!has_arg(&fa, "allow_other"));
	CHECK(!has_arg(&fa, "debug"));
	fuse_opt_free_args(&fa);
	opts_free(&o);
}

/* Every option is judged here, before anything touches the network or the
 * disk: our own, the FUSE ones we hand on, the fstab ones we drop. */
static void test_unknown_options_are_refused(void)
{
	static const char *const bad[] = {
		"nosuchopt",	"no_such_option=1", "nodev=1", "fsname",
		"kernel_cache", "attr_timeout=5",   "blkdev",  NULL};
	struct mount_opts o;
	struct fuse_args fa;

	for (int i = 0; bad[i]; i++) {
		char *argv[] = {"vectur-mount", "-o", (char *)bad[i],
				"r:",		"/m", NULL};

		CHECK(parse(&o, &fa, argv) < 0);
		opts_free(&o);
	}
	{
		char *argv[] = {"vectur-mount", "--foo", "r:", "/m", NULL};

		CHECK(parse(&o, &fa, argv) < 0);
		opts_free(&o);
	}
}

/* An xopt_table option as a user writes it: "ro", "fsname=1", "x-1". */
static void sample_option(char *buf, size_t len, const char *name)
{
	size_t n = strcspn(name, "=*");

	snprintf(buf, len, "%.*s%s", (int)(n + (name[n] == '=')), name,
		 name[n] ? "1" : "");
}

/* The FUSE options the table hands on are ones libfuse's parser takes
 * (test_mount_basic.py mounts with all of them: some fail only then). */
static void test_every_passed_option_is_one_libfuse_accepts(void)
{
	static const struct fuse_operations ops;
	int n = 0;

	for (const struct xopt *x = xopt_table; x->name; x++) {
		char opt[128];
		char *argv[] = {"vectur-mount", "-o", opt, NULL};
		struct fuse_args fa = FUSE_ARGS_INIT(3, argv);
		struct fuse *f;

		if (x->kind != XOPT_FUSE)
			continue;
		sample_option(opt, sizeof(opt), x->name);
		f = fuse_new(&fa, &ops, sizeof(ops), NULL);
		if (!f)
			fprintf(stderr, "libfuse refuses %s\n", opt);
		CHECK(f != NULL);
		if (f)
			fuse_destroy(f);
		fuse_opt_free_args(&fa);
		n++;
	}
	CHECK(n >= 10);
}

static void test_every_fstab_option_is_dropped(void)
{
	for (const struct xopt *x = xopt_table; x->name; x++) {
		struct mount_opts o;
		struct fuse_args fa;
		char opt[128];
		char *argv[] = {"vectur-mount", "-o", opt, "r:", "/m", NULL};

		if (x->kind != XOPT_FSTAB)
			continue;
		sample_option(opt, sizeof(opt), x->name);
		CHECK_INT(parse(&o, &fa, argv), 0);
		CHECK_INT(fa.argc, 1); /* argv[0] only */
		fuse_opt_free_args(&fa);
		opts_free(&o);
	}
}

static void test_debug_implies_foreground_and_reaches_fuse(void)
{
	struct mount_opts o;
	struct fuse_args fa;
	char *argv[] = {"vectur-mount", "-d", "gdrive:", "/m", NULL};

	CHECK_INT(parse(&o, &fa, argv), 0);
	CHECK_INT(o.debug, 1);
	CHECK_INT(o.foreground, 1);
	CHECK(has_arg(&fa, "-d"));
	fuse_opt_free_args(&fa);
	opts_free(&o);
}

static void test_bad_values_and_extra_arguments_fail(void)
{
	struct mount_opts o;
	struct fuse_args fa;
	char *bad[] = {"vectur-mount", "-o", "cache_max_size=lots",
		       "r:",	       "/m", NULL};
	char *extra[] = {"vectur-mount", "r:", "/m", "/x", NULL};

	CHECK(parse(&o, &fa, bad) < 0);
	opts_free(&o);
	CHECK(parse(&o, &fa, extra) < 0);
	opts_free(&o);
}

/* poll_interval=0 means "never"; a read cannot wait forever, so
 * read_timeout=0 is refused instead of being quietly taken as 60 s. */
static void test_zero_read_timeout_is_refused(void)
{
	struct mount_opts o;
	struct fuse_args fa;
	char *zero[] = {"vectur-mount", "-o", "read_timeout=0",
			"r:",		"/m", NULL};
	char *half[] = {
		"vectur-mount", "-o", "read_timeout=0.5,poll_interval=0",
		"r:",		"/m", NULL};

	CHECK(parse(&o, &fa, zero) < 0);
	opts_free(&o);
	CHECK_INT(parse(&o, &fa, half), 0);
	CHECK(o.read_timeout == 0.5);
	CHECK(o.poll_interval == 0);
	fuse_opt_free_args(&fa);
	opts_free(&o);
}

/* Numbers vectur cannot use are refused naming the option, where they were
 * replaced quietly (transfers=0 ran 1, lock_ttl=0 was 60 s, write_back of a
 * month overflowed an int of milliseconds, chunk_size=300K was 256K); the
 * ends of each range are taken. */
static void test_out_of_range_values_are_refused(void)
{
	static const char *const bad[] = {
		"transfers=0",	     "transfers=65",
		"lock_ttl=0",	     "lock_ttl=2.9",
		"lock_ttl=25h",	     "write_back=720h",
		"poll_interval=25h", "drain_timeout=25h",
		"tpslimit=0",	     "chunk_size=128K",
		"chunk_size=300K",   "chunk_size=2G",
		"read_timeout=0",    NULL};
	static const char *const good[] = {"transfers=1",
					   "transfers=64",
					   "lock_ttl=3",
					   "lock_ttl=24h",
					   "write_back=0",
					   "write_back=24h",
					   "poll_interval=0",
					   "chunk_size=256K",
					   "chunk_size=1G",
					   "tpslimit=100000",
					   NULL};
	struct mount_opts o;
	struct fuse_args fa;
	char *argv[] = {"vectur-mount", "-o", NULL, "r:", "/m", NULL};
	int i;

	for (i = 0; bad[i]; i++) {
		argv[2] = (char *)bad[i];
		if (parse(&o, &fa, argv) == 0) {
			fprintf(stderr, "taken: %s\n", bad[i]);
			CHECK(false);
			fuse_opt_free_args(&fa);
			opts_free(&o);
		}
	}
	for (i = 0; good[i]; i++) {
		argv[2] = (char *)good[i];
		CHECK_INT(parse(&o, &fa, argv), 0);
		fuse_opt_free_args(&fa);
		opts_free(&o);
	}
}

static void test_modes(void)
{
	struct mount_opts o;
	struct fuse_args fa;
	char *check[] = {"vectur-mount", "--check", "gdrive:", NULL};
	char *sync[] = {"vectur-mount", "--sync", "/m", NULL};

	CHECK_INT(parse(&o, &fa, check), 0);
	CHECK_INT(o.check, 1);
	CHECK_INT(o.nargs, 1);
	fuse_opt_free_args(&fa);
	opts_free(&o);
	CHECK_INT(parse(&o, &fa, sync), 0);
	CHECK_INT(o.sync, 1);
	CHECK_STR(o.args[0], "/m");
	fuse_opt_free_args(&fa);
	opts_free(&o);
}

static void test_help_shows_every_option_with_its_default(void)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);

	opts_print_help(f, "vectur-mount");
	fclose(f);
	for (const struct vopt *v = vopt_table; v->name; v++)
		CHECK(strstr(buf, v->name) != NULL);
	/* The FUSE options handed on and the fstab ones dropped, all. */
	for (const struct xopt *x = xopt_table; x->name; x++)
		if (x->kind != XOPT_REFUSED)
			CHECK(strstr(buf, x->name) != NULL);
	/* String options say what they take. */
	CHECK(strstr(buf, "-o cache_dir=DIR ") != NULL);
	CHECK(strstr(buf, "-o endpoint=URL ") != NULL);
	CHECK(strstr(buf, "-o token_url=URL ") != NULL);
	CHECK(strstr(buf, "-o config=FILE ") != NULL);
	CHECK(strstr(buf, "=STR") == NULL);
	CHECK(strstr(buf, "(default: 10G)") != NULL);
	CHECK(strstr(buf, "(default: 15; 0 to 1 day)") != NULL);
	free(buf);
}

int main(void)
{
	RUN(test_sizes_accept_suffixes);
	RUN(test_a_size_past_int64_is_refused_not_wrapped);
	RUN(test_durations_accept_fractions_and_units);
	RUN(test_defaults_come_from_the_table);
	RUN(test_options_parse_and_persist_repeats);
	RUN(test_fstab_options_are_accepted_and_dropped);
	RUN(test_fuse_bools_take_a_value);
	RUN(test_unknown_options_are_refused);
	RUN(test_every_passed_option_is_one_libfuse_accepts);
	RUN(test_every_fstab_option_is_dropped);
	RUN(test_debug_implies_foreground_and_reaches_fuse);
	RUN(test_bad_values_and_extra_arguments_fail);
	RUN(test_zero_read_timeout_is_refused);
	RUN(test_out_of_range_values_are_refused);
	RUN(test_modes);
	RUN(test_help_shows_every_option_with_its_default);
	return t_done();
}
