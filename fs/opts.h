/* opts.h — vectur-mount's command line: the one table of `-o` options
 * (name, type, where it is stored, default, help) that both parses the
 * options and prints --help, plus the non-option arguments and modes. */
#ifndef VECTUR_FS_OPTS_H
#define VECTUR_FS_OPTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <fuse.h>

enum vopt_type {
	VOPT_STR,  /* char *, strdup'd */
	VOPT_BOOL, /* int 0/1: "name", "name=yes|no|1|0|true|false|on|off" */
	VOPT_INT,  /* int */
	VOPT_SIZE, /* int64_t bytes: 1024, 512K, 500M, 10G, 1T (powers of 2) */
	VOPT_SECS, /* double seconds: 15, 0.5, 2m, 1h */
	VOPT_LIST, /* repeatable: appended to a char ** list */
};

/* Everything the user can set. Filled with the table's defaults first. */
struct mount_opts {
	char *cache_dir;
	int64_t cache_max_size;
	char **persist; /* NULL-terminated; NULL = vectur.persist or default */
	int npersist;
	double poll_interval;
	double lock_ttl;
	double write_back;
	int transfers;
	int64_t chunk_size;
	char *endpoint;
	char *token_url;
	char *config;
	int allow_other;
	double drain_timeout;
	double read_timeout;
	int use_trash;
	int debug;

	/* modes and plain flags (not -o options) */
	int foreground;
	int single_thread;
	int show_help;
	int show_version;
	int check;
	int sync;
	char *args[2]; /* REMOTE:[PATH] MOUNTPOINT, or MOUNTPOINT for --sync */
	int nargs;
};

struct vopt {
	const char *name;
	enum vopt_type type;
	size_t offset;
	const char *def; /* parsed like user input; NULL = none/computed */
	const char *help;
	bool pass; /* also handed on to libfuse (allow_other, debug) */
};

extern const struct vopt vopt_table[];

/* Parses argv into *o, leaving in *fuse_args what libfuse should see
 * (argv[0], -d, -s and the mount options it understands). Returns 0, or
 * -EINVAL after printing the problem to stderr. */
int opts_parse(int argc, char **argv, struct mount_opts *o,
	       struct fuse_args *fuse_args);
void opts_free(struct mount_opts *o);
void opts_print_help(FILE *f, const char *prog);

/* Parsers shared with tests: 0 or -EINVAL. */
int opts_parse_size(const char *s, int64_t *out);
int opts_parse_secs(const char *s, double *out);
int opts_parse_bool(const char *s, int *out);

#endif
