/* sched.c — the protocol of one stage run, and the loop around it:
 *
 *   take the graph lock -> read + validate -> pick a ready (or lost) stage
 *   -> create its stage lock -> record the claim -> write -> release
 *   -> run it (run.c) -> take the graph lock -> if the graph still names
 *   this attempt and owner (fencing): release the stage lock (on
 *   vectur-mount: the stage's outputs are on Drive) -> record the result
 *   -> write -> release the graph lock.
 *
 * Every write of the graph happens under locks/work_graph.lock; the stage
 * lock (a lease on vectur-mount) is what says its owner is alive while the
 * stage runs. A malformed graph is never written.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "scheduler.h"

/* What one pass of the protocol came to. */
enum sched_step {
	STEP_RAN,	  /* ran an attempt and recorded it */
	STEP_INTERRUPTED, /* SIGTERM/SIGINT: stage put back */
	STEP_IDLE,	  /* nothing runnable now */
	STEP_COMPLETE,
	STEP_BLOCKED,
	STEP_ERROR,
};

int sched_init(struct sched *s, const struct sched_opts *o)
{
	const char *base, *dot;
	size_t blen;

	memset(s, 0, sizeof(*s));
	s->o = *o;
	self_init(&s->me);
	/* experiments/work_graph.json -> <lock-dir>/work_graph.lock */
	base = strrchr(o->graph, '/');
	base = base ? base + 1 : o->graph;
	dot = strrchr(base, '.');
	blen = dot && dot != base ? (size_t)(dot - base) : strlen(base);
	if (asprintf(&s->graph_lock, "%s/%.*s.lock", o->lock_dir, (int)blen,
		     base) < 0 ||
	    asprintf(&s->stage_locks, "%s/stages", o->lock_dir) < 0)
		return -ENOMEM;
	srandom(s->me.pid ^ (unsigned)time(NULL));
	return 0;
}

void sched_fini(struct sched *s)
{
	free(s->graph_lock);
	free(s->stage_locks);
}

static char *sched_stage_lock_path(struct sched *s, const char *id)
{
	char *p;

	if (asprintf(&p, "%s/%s.lock", s->stage_locks, id) < 0)
		return NULL;
	return p;
}

/* ---- the graph lock ----------------------------------------------------- */

/* O_EXCL with exponential backoff and jitter (so that schedulers started
 * together do not retry in lockstep), breaking a provably stale lock.
 * interruptible: give up with -EINTR on SIGTERM/SIGINT (before a claim;
 * after one we must get the lock to put the stage back). */
int sched_take_graph_lock(struct sched *s, struct sched_lock *l,
			  bool interruptible)
{
	double deadline = sched_now() + s->o.lock_timeout;
	double delay = 0.02;
	bool said = false;
	int rc;

	rc = sched_mkdirs(s->stage_locks, 0755);
	if (rc < 0) {
		sched_log("cannot create %s: %s", s->stage_locks,
			  strerror(-rc));
		return rc;
	}
	for (;;) {
		rc = lock_try(s->graph_lock, &s->me, "graph", l);
		if (rc == 0)
			return 0;
		if (rc != -EEXIST) {
			sched_log("cannot create %s: %s", s->graph_lock,
				  strerror(-rc));
			return rc;
		}
		if (lock_break_if_stale(s->graph_lock, &s->me, s->o.lock_ttl) >
		    0) {
			continue;
		}
		if (interruptible && sched_signal_pending())
			return -EINTR;
		if (sched_now() > deadline) {
			sched_log("gave up on %s after %gs (see `cat %s`)",
				  s->graph_lock, s->o.lock_timeout,
				  s->graph_lock);
			return -ETIMEDOUT;
		}
		if (!said && delay >= 1.0) {
			sched_log("waiting for %s", s->graph_lock);
			said = true;
		}
		if (sched_sleep(delay * (0.5 + random() / (double)RAND_MAX)) <
			    0 &&
		    !interruptible)
			usleep(delay * 1e6);
		delay = delay * 2 > 1.0 ? 1.0 : delay * 2;
	}
}

void sched_release_graph_lock(struct sched *s, struct sched_lock *l)
{
	int rc = lock_release(l, &s->me);

	if (rc < 0)
		sched_log("cannot remove %s: %s", s->graph_lock, strerror(-rc));
}

/* ---- reading the graph -------------------------------------------------- */

static int sched_read_graph(struct sched *s, struct graph *g)
{
	struct sched_problems p = {0};
	int rc;

	rc = graph_load(s->o.graph, g, &p);
	if (rc == -EINVAL) {
		sched_log("%s is malformed; not touching it (run `vectur-sched "
			  "validate`):",
			  s->o.graph);
		problems_print(&p, s->o.graph);
	} else if (rc < 0) {
		sched_log("cannot read %s: %s", s->o.graph, strerror(-rc));
	}
	problems_free(&p);
	return rc;
}

static int sched_probe_stage_lock(void *arg, const char *id)
{
	struct sched *s = arg;
	char *path = sched_stage_lock_path(s, id);
	int live;

	if (!path)
		return 1; /* cannot tell: assume its owner is alive */
	/* --dry-run writes nothing: it judges a stale lock, leaves it. */
	live = lock_is_live(path, &s->me, s->o.lock_ttl, !s->o.dry_run);
	free(path);
	return live;
}

/* ---- picking and claiming ----------------------------------------------- */

/* Tries to take the stage lock of stage i: 0 ours, -EEXIST held by a live
 * owner (a stale one is broken and retried once). */
static int sched_take_stage_lock(struct sched *s, const char *id, int attempt,
				 struct sched_lock *l)
{
	char *path = sched_stage_lock_path(s, id), extra[256];
	int rc, tries;

	if (!path)
		return -ENOMEM;
	snprintf(extra, sizeof(extra), "stage %s attempt %d", id, attempt);
	for (tries = 0; tries < 2; tries++) {
		rc = lock_try(path, &s->me, extra, l);
		/* locks/stages gone meanwhile: on vectur-mount a folder under
		 * locks/ is a lock too, which another instance may break
		 * once its lease ran out and it held nothing. */
		if (rc == -ENOENT && sched_mkdirs(s->stage_locks, 0755) == 0)
			continue;
		if (rc != -EEXIST)
			break;
		if (lock_break_if_stale(path, &s->me, s->o.lock_ttl) <= 0)
			break;
	}
	if (rc < 0 && rc != -EEXIST)
		sched_log("stage %s: cannot create %s: %s", id, path,
			  strerror(-rc));
	free(path);
	return rc;
}

/* A scheduler killed between recording a result and unlinking its stage
 * lock leaves the lock of a finished stage behind; nothing would ever look
 * at it again, so the pick sweeps those whose holder is provably dead. */
static void sched_sweep_locks(struct sched *s, struct graph *g,
			      const enum stage_class *cls)
{
	struct stat st;
	int i, n = graph_nstages(g);
	char *path;

	for (i = 0; i < n; i++) {
		if (cls[i] != CLASS_DONE && cls[i] != CLASS_FAILED)
			continue;
		path = sched_stage_lock_path(s, stage_id(graph_stage(g, i)));
		if (path && stat(path, &st) == 0)
			lock_break_if_stale(path, &s->me, s->o.lock_ttl);
		free(path);
	}
}

/* Whether the stage's next attempt number would not fit in an int (only
 * reclaims, which count, and hand edits get it there); says so. */
static bool sched_attempt_at_limit(struct json_object *st)
{
	if (stage_attempt(st) < INT_MAX)
		return false;
	sched_log("stage %s: its attempt counter is at its limit (%d); "
		  "`vectur-sched reset %s` to run it again",
		  stage_id(st), INT_MAX, stage_id(st));
	return true;
}

/* The first stage in priority (array) order that is ready or lost and
 * whose stage lock we get: *pick is its index, or -1 with *state saying
 * why nothing was picked. A stage lock that cannot be created for another
 * reason than a holder (EACCES, ENOSPC) is an error, -errno: taking it for
 * "others are busy" would have --wait wait for nobody forever. */
static int sched_pick_stage(struct sched *s, struct graph *g,
			    struct sched_lock *l, enum graph_state *state,
			    int *pick)
{
	int i, n = graph_nstages(g), rc = 0;
	enum stage_class *cls = calloc(n ? n : 1, sizeof(*cls));

	*pick = -1;
	if (!cls)
		return -ENOMEM;
	graph_classify(g, sched_probe_stage_lock, s, cls);
	*state = graph_state_of(g, cls);
	sched_sweep_locks(s, g, cls);
	for (i = 0; i < n && *state == GRAPH_RUNNABLE; i++) {
		struct json_object *st = graph_stage(g, i);

		if (cls[i] != CLASS_READY && cls[i] != CLASS_LOST)
			continue;
		if (sched_attempt_at_limit(st)) {
			rc = -EOVERFLOW;
			break;
		}
		rc = sched_take_stage_lock(s, stage_id(st),
					   stage_attempt(st) + 1, l);
		/* ENOENT even after making the folder again: on vectur-mount
		 * its view of a locks/stages that another instance broke can
		 * lag behind Drive for a moment. Busy for now, not an error
		 * (the next pick looks again). */
		if (rc == -EEXIST || rc == -ENOENT) {
			rc = 0;
			continue;
		}
		if (rc < 0)
			break;
		if (cls[i] == CLASS_LOST)
			sched_log("stage %s: owner %s lost its lease; "
				  "reclaiming it",
				  stage_id(st), stage_str(st, "owner"));
		*pick = i;
		break;
	}
	/* Everything runnable was held by someone: busy, not done. */
	if (*pick < 0 && *state == GRAPH_RUNNABLE)
		*state = GRAPH_IDLE;
	free(cls);
	return rc;
}

static int sched_job_from_stage(struct stage_job *job, struct json_object *st,
				int attempt)
{
	struct json_object *v;
	const char *id = stage_id(st);

	job->id = strdup(id);
	job->attempt = attempt;
	json_object_object_get_ex(st, "cmd", &v);
	job->cmd = json_object_get(v);
	if (json_object_object_get_ex(st, "env", &v) &&
	    json_object_is_type(v, json_type_object))
		job->env = json_object_get(v);
	if (stage_str(st, "cwd"))
		job->cwd = strdup(stage_str(st, "cwd"));
	job->timeout = stage_timeout(st);
	if (asprintf(&job->run_dir, "runs/%s", id) < 0)
		job->run_dir = NULL;
	if (asprintf(&job->log, "runs/%s/attempt-%d.log", id, attempt) < 0)
		job->log = NULL;
	return job->id && job->run_dir && job->log ? 0 : -ENOMEM;
}

/* Marks stage i ours: running, attempt+1, owner, started; and fills job. */
static int sched_claim_stage(struct sched *s, struct graph *g, int i,
			     struct stage_job *job)
{
	struct json_object *st = graph_stage(g, i);
	int attempt = stage_attempt(st) + 1, rc;
	char now[32];

	rc = sched_job_from_stage(job, st, attempt);
	if (rc < 0)
		return rc;
	sched_rfc3339(now, sizeof(now));
	stage_set_str(st, "status", "running");
	stage_set_int(st, "attempt", attempt);
	stage_set_str(st, "owner", s->me.owner);
	stage_set_str(st, "started", now);
	stage_set_null(st, "finished");
	stage_set_null(st, "exit_code");
	stage_set_str(st, "log", job->log);
	rc = graph_save(g, s->o.graph, s->me.host);
	if (rc < 0)
		sched_log("cannot write %s: %s", s->o.graph, strerror(-rc));
	return rc;
}

/* ---- recording the result ----------------------------------------------- */

/* Fencing: the graph still says this attempt of this stage is ours. If not
 * (our lease expired and someone reclaimed it, or a user reset it), our
 * result is stale and must not overwrite theirs. */
static bool sched_still_ours(struct sched *s, struct json_object *st,
			     const struct stage_job *job)
{
	const char *owner = stage_str(st, "owner");

	return stage_status(st) == STAGE_RUNNING &&
	       stage_attempt(st) == job->attempt && owner &&
	       strcmp(owner, s->me.owner) == 0;
}

/* The new state of a stage after the attempt. Returns the step result. */
static void sched_apply_result(struct sched *s, struct json_object *st,
			       struct stage_job *job)
{
	char now[32];

	sched_rfc3339(now, sizeof(now));
	stage_set_str(st, "finished", now);
	if (job->interrupted) {
		/* Not the stage's fault (preemption sends SIGTERM): the
		 * attempt does not count against max_attempts. */
		stage_set_str(st, "status", "pending");
		stage_set_int(st, "attempt", job->attempt - 1);
		stage_set_null(st, "owner");
		stage_set_null(st, "exit_code");
		sched_log("stage %s: interrupted; back to pending", job->id);
		return;
	}
	if (job->lease_lost) {
		/* The attempt counts (it ran, like a lost stage's), but it
		 * neither failed nor finished: let it be claimed again. */
		stage_set_str(st, "status", "pending");
		stage_set_null(st, "owner");
		stage_set_null(st, "exit_code");
		sched_log("stage %s: lost its stage lock; back to pending",
			  job->id);
		return;
	}
	stage_set_int(st, "exit_code", job->exit_code);
	if (job->exit_code == 0) {
		stage_set_str(st, "status", "done");
		sched_log("stage %s: done (attempt %d)", job->id, job->attempt);
	} else if (job->attempt < stage_max_attempts(st)) {
		stage_set_str(st, "status", "pending");
		stage_set_null(st, "owner");
		s->retried++;
		sched_log("stage %s: attempt %d/%d failed with exit code %d%s; "
			  "will retry",
			  job->id, job->attempt, stage_max_attempts(st),
			  job->exit_code, job->timed_out ? " (timeout)" : "");
	} else {
		stage_set_str(st, "status", "failed");
		s->failed++;
		sched_log("stage %s: failed with exit code %d%s after %d "
			  "attempt(s)",
			  job->id, job->exit_code,
			  job->timed_out ? " (timeout)" : "", job->attempt);
	}
}

static int sched_record_result(struct sched *s, struct stage_job *job)
{
	struct sched_lock gl = SCHED_LOCK_INIT;
	struct graph g = {0};
	struct json_object *st;
	int i, rc;

	/* Not interruptible: a stage claimed must be recorded or put back. */
	rc = sched_take_graph_lock(s, &gl, false);
	if (rc < 0)
		goto out_stage;
	rc = sched_read_graph(s, &g);
	if (rc < 0)
		goto out;
	i = graph_find(&g, job->id);
	st = i >= 0 ? graph_stage(&g, i) : NULL;
	if (!st || !sched_still_ours(s, st, job)) {
		sched_log("stage %s attempt %d was taken over (graph now says "
			  "%s, attempt %d, owner %s); dropping this result "
			  "(exit code %d)",
			  job->id, job->attempt,
			  st ? stage_status_name(stage_status(st)) : "no stage",
			  st ? stage_attempt(st) : 0,
			  st && stage_str(st, "owner") ? stage_str(st, "owner")
						       : "none",
			  job->exit_code);
		goto out;
	}
	/* The stage lock goes before the result is written: on vectur-mount
	 * its release returns once every write of this mount (the stage's
	 * outputs, its log) is on Drive. Uploads are not ordered across
	 * files, so a result written first could reach Drive without them,
	 * and a machine lost then would leave a `done` stage with no outputs.
	 * Nobody can claim the stage in between: that takes the graph lock. */
	rc = lock_release(&job->stage_lock, &s->me);
	if (rc < 0)
		sched_log("stage %s: cannot release its stage lock: %s (its "
			  "outputs may not be on Drive yet)",
			  job->id, strerror(-rc));
	sched_apply_result(s, st, job);
	rc = graph_save(&g, s->o.graph, s->me.host);
	if (rc < 0)
		sched_log("cannot write %s: %s", s->o.graph, strerror(-rc));
out:
	graph_free(&g);
	/* Stage lock before the graph lock: once the graph is released a
	 * retry may be picked, and it must find the stage lock gone. (Done
	 * already above unless the result was not ours to record.) */
	lock_release(&job->stage_lock, &s->me);
	sched_release_graph_lock(s, &gl);
	return rc;
out_stage:
	/* Without the graph lock the graph cannot be fixed; dropping the
	 * stage lock makes the stage `lost`, and the next pick reclaims it. */
	lock_release(&job->stage_lock, &s->me);
	return rc;
}

/* ---- one pass ----------------------------------------------------------- */

static const char *sched_cmd_text(struct json_object *cmd)
{
	if (json_object_is_type(cmd, json_type_string))
		return json_object_get_string(cmd);
	return json_object_to_json_string_ext(cmd, JSON_C_TO_STRING_PLAIN);
}

static enum sched_step sched_step_of(enum graph_state st)
{
	switch (st) {
	case GRAPH_COMPLETE:
		return STEP_COMPLETE;
	case GRAPH_BLOCKED:
		return STEP_BLOCKED;
	default:
		return STEP_IDLE;
	}
}

static enum sched_step sched_run_one(struct sched *s)
{
	struct sched_lock gl = SCHED_LOCK_INIT;
	struct stage_job job = {.stage_lock = SCHED_LOCK_INIT};
	enum graph_state state = GRAPH_IDLE;
	struct graph g = {0};
	enum sched_step step = STEP_ERROR;
	int i, rc;

	rc = sched_take_graph_lock(s, &gl, true);
	if (rc == -EINTR)
		return STEP_INTERRUPTED;
	if (rc < 0)
		return STEP_ERROR;
	if (sched_read_graph(s, &g) < 0)
		goto out_unlock;
	if (sched_pick_stage(s, &g, &job.stage_lock, &state, &i) < 0)
		goto out_unlock;
	if (i < 0) {
		step = sched_step_of(state);
		goto out_unlock;
	}
	if (sched_claim_stage(s, &g, i, &job) < 0) {
		lock_release(&job.stage_lock, &s->me);
		goto out_unlock;
	}
	graph_free(&g);
	sched_release_graph_lock(s, &gl);

	sched_log("stage %s: attempt %d: %s", job.id, job.attempt,
		  sched_cmd_text(job.cmd));
	rc = run_stage(s, &job);
	if (rc < 0)
		sched_log("stage %s: cannot start: %s", job.id, strerror(-rc));
	s->ran++;
	rc = sched_record_result(s, &job);
	if (rc < 0 && !job.interrupted)
		sched_log("stage %s: its result (attempt %d, exit code %d) is "
			  "not recorded: the graph still says running, and the "
			  "stage will be claimed again once its lock is seen "
			  "gone; its log is %s",
			  job.id, job.attempt, job.exit_code, job.log);
	if (job.interrupted)
		step = STEP_INTERRUPTED;
	else
		step = rc < 0 ? STEP_ERROR : STEP_RAN;
	run_job_free(&job);
	return step;
out_unlock:
	graph_free(&g);
	sched_release_graph_lock(s, &gl);
	run_job_free(&job);
	return step;
}

/* Without the graph lock: is there anything to pick? The file is always a
 * whole version (writes are renames), so a reader needs no lock; this
 * keeps idle --wait loops from hammering the graph lock. */
static enum graph_state sched_peek(struct sched *s)
{
	struct graph g = {0};
	enum stage_class *cls;
	enum graph_state state = GRAPH_RUNNABLE;
	struct sched_problems p = {0};

	if (graph_load(s->o.graph, &g, &p) < 0)
		goto out; /* let the locked pass report it */
	cls = calloc(graph_nstages(&g) + 1, sizeof(*cls));
	if (cls) {
		graph_classify(&g, sched_probe_stage_lock, s, cls);
		state = graph_state_of(&g, cls);
		free(cls);
	}
out:
	problems_free(&p);
	graph_free(&g);
	return state;
}

/* --dry-run: what a pass would pick, and the exit code it would end with
 * if it ran nothing. Takes no lock, writes nothing. */
static int sched_dry_run(struct sched *s)
{
	struct graph g = {0};
	enum stage_class *cls = NULL;
	enum graph_state state;
	int i, n, shown = 0, rc = SCHED_EXIT_ERROR;

	if (sched_read_graph(s, &g) < 0)
		goto out;
	n = graph_nstages(&g);
	cls = calloc(n + 1, sizeof(*cls));
	if (!cls)
		goto out;
	graph_classify(&g, sched_probe_stage_lock, s, cls);
	state = graph_state_of(&g, cls);
	for (i = 0; i < n; i++) {
		struct json_object *st = graph_stage(&g, i);

		if (cls[i] != CLASS_READY && cls[i] != CLASS_LOST)
			continue;
		if (s->o.max_stages && shown >= s->o.max_stages)
			break;
		if (sched_attempt_at_limit(st))
			goto out; /* where run stops too */
		printf("would run %s (attempt %d%s): %s\n", stage_id(st),
		       stage_attempt(st) + 1,
		       cls[i] == CLASS_LOST ? ", reclaimed" : "",
		       sched_cmd_text(json_object_object_get(st, "cmd")));
		shown++;
	}
	switch (state) {
	case GRAPH_RUNNABLE:
		rc = SCHED_EXIT_OK;
		break;
	case GRAPH_IDLE:
		printf("nothing runnable now (stages running elsewhere)\n");
		rc = SCHED_EXIT_IDLE;
		break;
	case GRAPH_COMPLETE:
		printf("graph complete\n");
		rc = SCHED_EXIT_COMPLETE;
		break;
	case GRAPH_BLOCKED:
		printf("blocked by failed stages\n");
		rc = SCHED_EXIT_FAILED;
		break;
	}
out:
	free(cls);
	graph_free(&g);
	return rc;
}

/* The exit code of a run that stopped at `last`. */
static int sched_exit_code(struct sched *s, enum sched_step last)
{
	switch (last) {
	case STEP_ERROR:
		return SCHED_EXIT_ERROR;
	case STEP_INTERRUPTED:
		return SCHED_EXIT_INTERRUPTED;
	default:
		break;
	}
	if (s->failed || last == STEP_BLOCKED)
		return SCHED_EXIT_FAILED;
	if (s->o.wait && last == STEP_COMPLETE)
		return SCHED_EXIT_OK;
	if (s->ran)
		return SCHED_EXIT_OK;
	if (last == STEP_COMPLETE)
		return SCHED_EXIT_COMPLETE;
	return SCHED_EXIT_IDLE;
}

int sched_run(struct sched *s)
{
	enum sched_step step = STEP_IDLE;

	if (s->o.dry_run)
		return sched_dry_run(s);
	for (;;) {
		if (s->o.max_stages && s->ran >= s->o.max_stages)
			break;
		if (sched_signal_pending()) {
			step = STEP_INTERRUPTED;
			break;
		}
		step = sched_run_one(s);
		if (step == STEP_RAN)
			continue;
		if (step != STEP_IDLE || !s->o.wait)
			break;
		/* --wait: others hold the runnable stages; look again. */
		do {
			if (sched_sleep(s->o.poll) < 0) {
				step = STEP_INTERRUPTED;
				goto out;
			}
		} while (sched_peek(s) == GRAPH_IDLE);
	}
out:
	if (step == STEP_INTERRUPTED && sched_signal_pending())
		sched_signal_take();
	if (step == STEP_INTERRUPTED)
		sched_log("interrupted; exiting");
	return sched_exit_code(s, step);
}
