/* main.c — vectur-sched's command line: one table of options (with their
 * defaults and help lines; --help is made from it), the subcommand, and the
 * exit codes. Everything else is in sched.c and cmd.c.
 */
#include <errno.h>
#include <stddef.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "scheduler.h"

#ifndef VECTUR_VERSION
#define VECTUR_VERSION "0.1"
#endif

enum opt_kind { OPT_STR, OPT_INT, OPT_SECS, OPT_FLAG };

struct opt_def {
	const char *name;
	enum opt_kind kind;
	size_t off;
	const char *arg;
	const char *help;
	double min; /* OPT_INT, OPT_SECS: smallest value taken */
};

#define O(f) offsetof(struct sched_opts, f)

static const struct opt_def opt_table[] = {
	{"--graph", OPT_STR, O(graph), "PATH",
	 "the work graph (default experiments/work_graph.json)", 0},
	{"--lock-dir", OPT_STR, O(lock_dir), "DIR",
	 "where work_graph.lock and stages/<id>.lock live (default locks)", 0},
	{"--max-stages", OPT_INT, O(max_stages), "N",
	 "stop after running N stage attempts, N >= 1 (default: no limit)", 1},
	{"--wait", OPT_FLAG, O(wait), NULL,
	 "keep going until the graph is complete or blocked by failures, "
	 "polling while other owners' stages run",
	 0},
	{"--dry-run", OPT_FLAG, O(dry_run), NULL,
	 "show what would run; take no lock, write nothing", 0},
	{"--poll", OPT_SECS, O(poll), "S",
	 "with --wait, seconds between looks at a busy graph; also how often "
	 "a running stage's lock is checked (clamped to 0.5-10); at least 0.1 "
	 "(default 10)",
	 0.1},
	{"--grace", OPT_SECS, O(grace), "S",
	 "SIGTERM to SIGKILL delay for a stage on timeout or interrupt "
	 "(default 10)",
	 0},
	{"--lock-timeout", OPT_SECS, O(lock_timeout), "S",
	 "give up waiting for the graph lock after S seconds (default 600)", 0},
	{"--lock-ttl", OPT_SECS, O(lock_ttl), "S",
	 "a lock file with no readable holder is judged after S seconds "
	 "(default 30)",
	 0},
	{"--force", OPT_FLAG, O(force), NULL,
	 "reset: also reset a stage whose owner is alive", 0},
};

/* Prints text from column `indent`, wrapped at word boundaries before
 * column `width`. */
static void usage_wrap(FILE *f, const char *text, int indent, int width)
{
	const char *p = text;
	int col = indent;

	while (*p) {
		const char *sp = strchr(p, ' ');
		int len = sp ? (int)(sp - p) : (int)strlen(p);

		if (col > indent && col + 1 + len > width) {
			fprintf(f, "\n%*s", indent, "");
			col = indent;
		} else if (col > indent) {
			fputc(' ', f);
			col++;
		}
		fprintf(f, "%.*s", len, p);
		col += len;
		p += len;
		while (*p == ' ')
			p++;
	}
	fputc('\n', f);
}

static void usage(FILE *f)
{
	size_t i;

	fputs("usage: vectur-sched [run] [options]        claim and run ready "
	      "stages\n"
	      "       vectur-sched status [options]       table of the stages\n"
	      "       vectur-sched validate [options]     report every "
	      "problem\n"
	      "       vectur-sched reset STAGE [options]  back to pending, "
	      "attempt 0\n\noptions:\n",
	      f);
	for (i = 0; i < sizeof(opt_table) / sizeof(opt_table[0]); i++) {
		char left[40];

		snprintf(left, sizeof(left), "%s%s%s", opt_table[i].name,
			 opt_table[i].arg ? " " : "",
			 opt_table[i].arg ? opt_table[i].arg : "");
		fprintf(f, "  %-20s ", left);
		usage_wrap(f, opt_table[i].help, 23, 80);
	}
	/* Handled before the table in parse_args(), listed after it. */
	fputs("  -h, --help           print this help and exit\n"
	      "  --version            print the version and exit\n",
	      f);
	fprintf(f,
		"\nexit codes (run):\n"
		"  0  ran fine: every attempt it ran was recorded and none "
		"ended `failed`\n"
		"     (with --wait: the graph is complete)\n"
		"  1  error: malformed graph (left untouched), I/O, lock "
		"timeout\n"
		"  2  usage\n"
		"  3  nothing runnable now: ran nothing, other owners' stages "
		"are running\n"
		"  4  graph complete: ran nothing, every stage is done\n"
		"  5  a stage failed for good (attempts used up), or the rest "
		"of the graph\n"
		"     is blocked by failed stages\n"
		"  6  interrupted by SIGTERM/SIGINT: its stage went back to "
		"pending\n"
		"validate, status, reset: 0 ok, 1 error or malformed graph, 2 "
		"usage.\n");
}

static const struct opt_def *opt_find(const char *name)
{
	size_t i;

	for (i = 0; i < sizeof(opt_table) / sizeof(opt_table[0]); i++)
		if (strcmp(opt_table[i].name, name) == 0)
			return &opt_table[i];
	return NULL;
}

static int opt_set(struct sched_opts *o, const struct opt_def *d,
		   const char *val)
{
	char *p = (char *)o + d->off, *end;
	long n;
	double x;

	switch (d->kind) {
	case OPT_FLAG:
		*(bool *)p = true;
		return 0;
	case OPT_STR:
		if (!*val)
			return -EINVAL;
		*(const char **)p = val;
		return 0;
	case OPT_INT:
		errno = 0;
		n = strtol(val, &end, 10);
		if (errno || *end || end == val || n > 1000000000)
			return -EINVAL;
		if (n < d->min)
			return -ERANGE;
		*(int *)p = (int)n;
		return 0;
	case OPT_SECS:
		errno = 0;
		x = strtod(val, &end);
		if (errno || *end || end == val || !(x >= 0) || x > 1e7)
			return -EINVAL;
		if (x < d->min)
			return -ERANGE;
		*(double *)p = x;
		return 0;
	}
	return -EINVAL;
}

/* Fills o and *cmd from argv; options may come before or after the
 * subcommand, and --opt=value works as well as --opt value. */
static int parse_args(int argc, char **argv, struct sched_opts *o,
		      const char **cmd)
{
	int i, rc;

	for (i = 1; i < argc; i++) {
		char *a = argv[i], *eq;
		const struct opt_def *d;
		const char *val = NULL;
		char name[64];

		if (a[0] != '-' || a[1] == 0) {
			if (!*cmd) {
				*cmd = a;
			} else if (strcmp(*cmd, "reset") == 0 && !o->stage) {
				o->stage = a;
			} else {
				fprintf(stderr,
					"vectur-sched: unexpected argument "
					"\"%s\"\n",
					a);
				return -1;
			}
			continue;
		}
		if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
			usage(stdout);
			exit(SCHED_EXIT_OK);
		}
		if (strcmp(a, "--version") == 0) {
			printf("vectur-sched %s\n", VECTUR_VERSION);
			exit(SCHED_EXIT_OK);
		}
		snprintf(name, sizeof(name), "%s", a);
		eq = strchr(name, '=');
		if (eq)
			*eq = 0;
		d = opt_find(name);
		if (!d) {
			fprintf(stderr, "vectur-sched: unknown option %s\n", a);
			return -1;
		}
		if (d->kind != OPT_FLAG) {
			if (eq)
				val = strchr(a, '=') + 1;
			else if (i + 1 < argc)
				val = argv[++i];
			if (!val) {
				fprintf(stderr, "vectur-sched: %s needs %s\n",
					d->name, d->arg);
				return -1;
			}
		} else if (eq) {
			fprintf(stderr, "vectur-sched: %s takes no value\n",
				d->name);
			return -1;
		}
		rc = opt_set(o, d, val);
		if (rc == -ERANGE) {
			fprintf(stderr,
				"vectur-sched: bad value for %s: %s (at least "
				"%g)\n",
				d->name, val, d->min);
			return -1;
		}
		if (rc < 0) {
			fprintf(stderr, "vectur-sched: bad value for %s: %s\n",
				d->name, val);
			return -1;
		}
	}
	return 0;
}

int main(int argc, char **argv)
{
	struct sched_opts o = {
		.graph = "experiments/work_graph.json",
		.lock_dir = "locks",
		.poll = 10,
		.grace = 10,
		.lock_timeout = 600,
		.lock_ttl = 30,
	};
	const char *cmd = NULL;
	struct sched s;
	int rc, fd;

	/* Started with stdin, stdout or stderr closed, the first file we open
	 * (the graph's lock, a stage's pipe) would take its number, and our
	 * messages and the stage's output would go there: /dev/null takes it
	 * instead. */
	for (fd = 0; fd <= 2; fd++)
		if (fcntl(fd, F_GETFD) < 0 && errno == EBADF &&
		    open("/dev/null", O_RDWR) != fd)
			return 1;
	if (parse_args(argc, argv, &o, &cmd) < 0)
		goto usage;
	if (!cmd)
		cmd = "run";
	if (strcmp(cmd, "reset") == 0 && !o.stage) {
		fprintf(stderr, "vectur-sched: reset needs a STAGE\n");
		goto usage;
	}
	if (strcmp(cmd, "run") && strcmp(cmd, "status") &&
	    strcmp(cmd, "validate") && strcmp(cmd, "reset")) {
		fprintf(stderr, "vectur-sched: unknown command \"%s\"\n", cmd);
		goto usage;
	}
	if (sched_init(&s, &o) < 0) {
		fprintf(stderr, "vectur-sched: out of memory\n");
		return SCHED_EXIT_ERROR;
	}
	if (sched_signals_install() < 0) {
		fprintf(stderr, "vectur-sched: cannot set up signals\n");
		return SCHED_EXIT_ERROR;
	}
	if (strcmp(cmd, "validate") == 0)
		rc = cmd_validate(&s);
	else if (strcmp(cmd, "status") == 0)
		rc = cmd_status(&s);
	else if (strcmp(cmd, "reset") == 0)
		rc = cmd_reset(&s);
	else
		rc = sched_run(&s);
	sched_fini(&s);
	return rc;
usage:
	fprintf(stderr, "try `vectur-sched --help`\n");
	return SCHED_EXIT_USAGE;
}
