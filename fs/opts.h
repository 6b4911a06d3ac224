/* opts.h — vectur-mount's command line: the one table of `-o` options
 * (name, type, where it is stored, default, help) that both parses the
 * options and prints --help, the table of the other mount options it
 * knows (handed on to FUSE, or dropped for fstab), plus the non-option
 * arguments and modes. */
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
	int tpslimit;
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
	bool fsname_set;  /* -o fsname= given: it names the mount, not ours */
	bool subtype_set; /* -o subtype= given */
	char *args[2]; /* REMOTE:[PATH] MOUNTPOINT, or MOUNTPOINT for --sync */
	int nargs;
};

struct vopt {
	const char *name;
	enum vopt_type type;
	size_t offset;
	const char *def; /* parsed like user input; NULL = none/computed */
	const char *help;
	bool pass;	  /* also handed on to libfuse (allow_other, debug) */
	const char *meta; /* --help's name for the value; NULL: the type's */
	/* Numbers: the values taken (both 0: any the type takes), and how
	 * --help and the error say it. */
	double min, max;
	const char *range;
};

extern const struct vopt vopt_table[];

/* Mount options that are not vectur's own. Any option in neither table is
 * refused by opts_parse(), before anything touches the network or the
 * disk. */
enum xopt_kind {
	XOPT_FUSE,    /* handed on to libfuse and the kernel */
	XOPT_FSTAB,   /* only mount(8) and fstab care: accepted and dropped */
	XOPT_REFUSED, /* libfuse's, but not usable here: refused with `why` */
};

struct xopt {
	/* "ro" matches itself only; "fsname=NAME" any fsname=VALUE (NAME is
	 * what --help shows); "x-*" any option that starts with "x-". */
	const char *name;
	enum xopt_kind kind;
	const char *why; /* XOPT_REFUSED: the reason given */
};

extern const struct xopt xopt_table[];

/* Parses argv into *o, leaving in *fuse_args what libfuse should see
 * (argv[0], -d and the XOPT_FUSE options). Returns 0, or -EINVAL after
 * printing the problem (an unknown option by name) to stderr. */
int opts_parse(int argc, char **argv, struct mount_opts *o,
	       struct fuse_args *fuse_args);
void opts_free(struct mount_opts *o);
void opts_print_help(FILE *f, const char *prog);

/* Parsers shared with tests: 0 or -EINVAL. */
int opts_parse_size(const char *s, int64_t *out);
int opts_parse_secs(const char *s, double *out);
int opts_parse_bool(const char *s, int *out);

#endif
