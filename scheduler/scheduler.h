/* scheduler.h — vectur-sched's internal interface: the graph model (graph.c),
 * its validator (validate.c), the lock files (lock.c), running one stage
 * (run.c), the claim/run/record protocol (sched.c) and the small commands
 * (cmd.c). main.c only parses the command line.
 *
 * The scheduler needs nothing but a filesystem. On a plain directory it
 * coordinates the processes of one machine; on vectur-mount, where an
 * O_CREAT|O_EXCL under locks/ is decided on Drive and lock files are leases,
 * the same code coordinates machines.
 *
 * Error idiom: functions return 0 (or a count) on success and -errno on
 * failure; what a user must read is printed where it is detected, on stderr,
 * prefixed "vectur-sched: ".
 */
#ifndef VECTUR_SCHEDULER_H
#define VECTUR_SCHEDULER_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>
#include <json-c/json.h>

/* Exit codes: the documented interface of `vectur-sched` (see --help and
 * scheduler/README.md). */
enum sched_exit {
	SCHED_EXIT_OK = 0,	 /* ran what it claimed; or --wait: complete */
	SCHED_EXIT_ERROR = 1,	 /* I/O, lock timeout, malformed graph */
	SCHED_EXIT_USAGE = 2,	 /* bad command line */
	SCHED_EXIT_IDLE = 3,	 /* nothing runnable now: others are busy */
	SCHED_EXIT_COMPLETE = 4, /* nothing to do: every stage is done */
	SCHED_EXIT_FAILED = 5,	 /* a stage failed for good / graph blocked */
	SCHED_EXIT_INTERRUPTED = 6, /* SIGTERM/SIGINT: stage put back */
};

/* ---- problems: what validate and load report ---------------------------- */

/* A list of "location: message" lines, in the order found. */
struct sched_problems {
	char **msg;
	int n, cap;
};

void problems_add(struct sched_problems *p, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
void problems_print(const struct sched_problems *p, const char *file);
void problems_free(struct sched_problems *p);

/* ---- the graph (graph.c) ------------------------------------------------ */

enum stage_status {
	STAGE_PENDING,
	STAGE_RUNNING,
	STAGE_DONE,
	STAGE_FAILED,
	STAGE_BAD, /* not one of the four: only a malformed graph has it */
};

/* A graph file as read. root is the whole document as json-c parsed it, so
 * keys the scheduler does not know keep their values and their order; the
 * scheduler only ever sets its own keys on it. */
struct graph {
	struct json_object *root;
	struct json_object *stages; /* borrowed from root */
	char *text;		    /* the bytes read, NUL-terminated */
	size_t len;
};

/* Parses text as one JSON document. On a syntax error returns -EINVAL and
 * adds "LINE:COL: message" to p. */
int graph_parse(const char *text, size_t len, struct json_object **out,
		struct sched_problems *p);
/* Reads, parses and validates path. -EINVAL: malformed (p says why), other
 * -errno: could not read. */
int graph_load(const char *path, struct graph *g, struct sched_problems *p);
int graph_load_text(const char *text, size_t len, struct graph *g,
		    struct sched_problems *p);
void graph_free(struct graph *g);
/* Writes g atomically: PATH.tmp.HOST.PID, fsync, rename over PATH. */
int graph_save(const struct graph *g, const char *path, const char *host);
/* The serialised form graph_save writes (caller frees). */
char *graph_serialise(const struct graph *g);

int graph_nstages(const struct graph *g);
struct json_object *graph_stage(const struct graph *g, int i);
int graph_find(const struct graph *g, const char *id);

const char *stage_id(struct json_object *st);
enum stage_status stage_status(struct json_object *st);
const char *stage_status_name(enum stage_status s);
int stage_attempt(struct json_object *st);
int stage_max_attempts(struct json_object *st);
double stage_timeout(struct json_object *st);
const char *stage_str(struct json_object *st, const char *key);
/* Sets one scheduler-owned key; an existing key keeps its place. */
void stage_set_str(struct json_object *st, const char *key, const char *v);
void stage_set_int(struct json_object *st, const char *key, long long v);
void stage_set_null(struct json_object *st, const char *key);

#define SCHED_DEFAULT_MAX_ATTEMPTS 1

/* ---- validation (validate.c) -------------------------------------------- */

/* Checks the document against the graph format; adds one problem per fault
 * found (all of them, not just the first). Returns the number added. */
int graph_validate(struct json_object *root, struct sched_problems *p);
/* true if id is usable as a file name under locks/stages/ and runs/. */
bool stage_id_ok(const char *id);

/* ---- the ready set (graph.c) -------------------------------------------- */

/* What a stage is, seen from a scheduler about to pick one. */
enum stage_class {
	CLASS_DONE,
	CLASS_FAILED,
	CLASS_READY,   /* pending, every dep done */
	CLASS_WAITING, /* pending, some dep not done yet (none failed) */
	CLASS_BLOCKED, /* pending, some dep (transitively) failed */
	CLASS_RUNNING, /* running and its owner's stage lock is live */
	CLASS_LOST,    /* running but the owner's stage lock is gone: reclaim */
};

/* Answers "is the stage lock of this stage live?" (1 yes, 0 no). */
typedef int (*stage_lock_probe)(void *arg, const char *id);

/* Fills cls[i] for every stage of a valid graph. */
void graph_classify(const struct graph *g, stage_lock_probe probe, void *arg,
		    enum stage_class *cls);

enum graph_state {
	GRAPH_RUNNABLE, /* some stage is READY or LOST */
	GRAPH_IDLE,	/* nothing runnable now, others' stages are running */
	GRAPH_COMPLETE, /* every stage done */
	GRAPH_BLOCKED,	/* not complete, nothing running, failures block */
};

enum graph_state graph_state_of(const struct graph *g,
				const enum stage_class *cls);

/* ---- lock files (lock.c) ------------------------------------------------ */

/* Who we are, written into every lock we create and into `owner`. */
struct sched_self {
	char host[256];
	pid_t pid;
	char instance[17]; /* random per process: pids repeat */
	char boot_id[40];  /* a holder on this host with another boot is dead */
	long long pid_start; /* tells our pid from a reused one */
	char owner[320];     /* "host:pid:instance" */
};

void self_init(struct sched_self *me);

/* A lock we hold: the file we created with O_EXCL, kept open (and flock()ed
 * so that the kernel tells others when we die). */
struct sched_lock {
	int fd;
	char *path;
	char *what; /* "graph", "stage X attempt N": in the holder JSON */
	dev_t dev;
	ino_t ino;
};

#define SCHED_LOCK_INIT                                                        \
	{                                                                      \
		.fd = -1                                                       \
	}

/* One O_EXCL attempt. 0: ours; -EEXIST: someone holds it; other -errno. */
int lock_try(const char *path, const struct sched_self *me, const char *what,
	     struct sched_lock *l);
/* Adds the stage's process group to the holder JSON, so that a checker on
 * another mount of this host sees an orphaned stage as a live holder. */
int lock_note_pgid(struct sched_lock *l, const struct sched_self *me,
		   pid_t pgid);
long long self_pid_start(pid_t pid);
/* Removes path if its holder is provably dead (see lock.c). 1: removed (or
 * already gone), 0: live or cannot tell, -errno on error. */
int lock_break_if_stale(const char *path, const struct sched_self *me,
			double ttl);
/* 1 if path exists and is not provably stale, 0 if free (stale ones are
 * removed on the way if may_break; --dry-run only looks). */
int lock_is_live(const char *path, const struct sched_self *me, double ttl,
		 bool may_break);
/* Whether the path still names the lock we created (a lease taken over on
 * vectur-mount disappears from our view). */
bool lock_held(struct sched_lock *l, const struct sched_self *me);
/* Unlinks the lock if the path still names the file we created; closes. */
int lock_release(struct sched_lock *l, const struct sched_self *me);
/* Closes without unlinking (used by forked children). */
void lock_forget(struct sched_lock *l);

/* ---- the scheduler (sched.c, run.c, cmd.c) ------------------------------ */

struct sched_opts {
	const char *graph;    /* --graph */
	const char *lock_dir; /* --lock-dir */
	const char *stage;    /* reset STAGE */
	int max_stages;	      /* --max-stages, 0 = no limit */
	bool wait;	      /* --wait */
	bool dry_run;	      /* --dry-run */
	bool force;	      /* reset --force */
	double poll;	      /* --poll: seconds between looks when idle */
	double grace;	      /* --grace: SIGTERM..SIGKILL for a stage */
	double lock_timeout;  /* --lock-timeout: give up taking a lock */
	double lock_ttl;      /* --lock-ttl: age after which a holder-less lock
				 file may be judged */
};

struct sched {
	struct sched_opts o;
	struct sched_self me;
	char *graph_lock;  /* <lock-dir>/work_graph.lock */
	char *stage_locks; /* <lock-dir>/stages */
	int ran;	   /* attempts run by this process */
	int failed;	   /* of them, ended `failed` for good */
	int retried;	   /* of them, failed and went back to pending */
};

/* One stage attempt being run (run.c). */
struct stage_job {
	char *id;
	int attempt;
	struct json_object *cmd; /* string or argv array (own ref) */
	struct json_object *env; /* object or NULL (own ref) */
	char *cwd;
	double timeout;
	char *log;     /* runs/<id>/attempt-<n>.log */
	char *run_dir; /* runs/<id> */
	struct sched_lock stage_lock;
	/* results */
	int exit_code;	  /* 0..255, 128+sig for a signal death */
	bool timed_out;	  /* killed for exceeding timeout (exit_code 124) */
	bool interrupted; /* we got SIGTERM/SIGINT and forwarded it */
	int sig;	  /* which */
	bool lease_lost;  /* our stage lock vanished: stopped, put back */
	bool spawn_failed;
};

#define SCHED_EXIT_TIMEOUT_CODE 124 /* exit_code recorded for a timeout */

int sched_init(struct sched *s, const struct sched_opts *o);
void sched_fini(struct sched *s);
int sched_run(struct sched *s); /* returns an enum sched_exit */

/* The graph lock: O_EXCL with backoff, breaking provably stale locks.
 * interruptible: -EINTR on SIGTERM/SIGINT. */
int sched_take_graph_lock(struct sched *s, struct sched_lock *l,
			  bool interruptible);
void sched_release_graph_lock(struct sched *s, struct sched_lock *l);

int run_stage(struct sched *s, struct stage_job *job);
void run_job_free(struct stage_job *job);

/* Signals: the handler records them and writes to a self-pipe so that poll()
 * loops wake. Process-wide by nature, hence the only globals. */
int sched_signals_install(void);
int sched_signal_fd(void);
int sched_signal_take(void); /* the pending SIGTERM/SIGINT, 0 if none */
bool sched_signal_pending(void);
/* Sleeps up to s seconds; returns early (-EINTR) on SIGTERM/SIGINT. */
int sched_sleep(double s);

int cmd_validate(struct sched *s);
int cmd_status(struct sched *s);
int cmd_reset(struct sched *s);

/* helpers (graph.c) */
double sched_now(void);			 /* CLOCK_MONOTONIC seconds */
void sched_rfc3339(char *buf, size_t n); /* now, UTC */
int sched_mkdirs(const char *path, mode_t mode);
void sched_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
