/* cmd.c — the small subcommands: `validate` (every problem, with its
 * location), `status` (a table a person reads) and `reset STAGE` (back to
 * pending, attempt 0, under the graph lock). `run` lives in sched.c.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "scheduler.h"

int cmd_validate(struct sched *s)
{
	struct sched_problems p = {0};
	struct graph g = {0};
	int rc;

	rc = graph_load(s->o.graph, &g, &p);
	if (rc == -EINVAL) {
		problems_print(&p, s->o.graph);
		fprintf(stderr, "%s: %d problem%s\n", s->o.graph, p.n,
			p.n == 1 ? "" : "s");
	} else if (rc < 0) {
		fprintf(stderr, "%s: cannot read: %s\n", s->o.graph,
			strerror(-rc));
	} else {
		printf("%s: ok (%d stages)\n", s->o.graph, graph_nstages(&g));
	}
	problems_free(&p);
	graph_free(&g);
	return rc < 0 ? SCHED_EXIT_ERROR : SCHED_EXIT_OK;
}

/* RFC 3339 UTC as we write it -> seconds, -1 if not ours. */
static time_t cmd_parse_time(const char *s)
{
	struct tm tm;
	const char *end;

	if (!s)
		return -1;
	memset(&tm, 0, sizeof(tm));
	end = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
	if (!end)
		return -1;
	return timegm(&tm);
}

static void cmd_duration(struct json_object *st, char *buf, size_t n)
{
	time_t a = cmd_parse_time(stage_str(st, "started"));
	time_t b = stage_status(st) == STAGE_RUNNING
			   ? time(NULL)
			   : cmd_parse_time(stage_str(st, "finished"));
	long d;

	if (a < 0 || b < 0 || b < a ||
	    (stage_status(st) != STAGE_RUNNING &&
	     stage_status(st) != STAGE_DONE &&
	     stage_status(st) != STAGE_FAILED)) {
		snprintf(buf, n, "-");
		return;
	}
	d = (long)(b - a);
	if (d >= 3600)
		snprintf(buf, n, "%ldh%02ldm%02lds", d / 3600, d / 60 % 60,
			 d % 60);
	else if (d >= 60)
		snprintf(buf, n, "%ldm%02lds", d / 60, d % 60);
	else
		snprintf(buf, n, "%lds", d);
}

static const char *cmd_state_text(enum stage_class c)
{
	switch (c) {
	case CLASS_DONE:
		return "done";
	case CLASS_FAILED:
		return "failed";
	case CLASS_READY:
		return "pending (ready)";
	case CLASS_WAITING:
		return "pending";
	case CLASS_BLOCKED:
		return "pending (blocked)";
	case CLASS_RUNNING:
		return "running";
	case CLASS_LOST:
		return "running (lost)";
	}
	return "?";
}

/* Read-only: the lock probe judges a stage lock as a run would (a dead
 * holder's lock: `running (lost)`), and breaks nothing from `status`. */
static int cmd_probe(void *arg, const char *id)
{
	struct sched *s = arg;
	char path[4096];

	snprintf(path, sizeof(path), "%s/%s.lock", s->stage_locks, id);
	return lock_is_live(path, &s->me, s->o.lock_ttl, false);
}

int cmd_status(struct sched *s)
{
	struct sched_problems p = {0};
	struct graph g = {0};
	enum stage_class *cls = NULL;
	int i, n, rc = SCHED_EXIT_ERROR, count[CLASS_LOST + 1] = {0};
	int idw = 5;

	rc = graph_load(s->o.graph, &g, &p);
	if (rc < 0) {
		if (rc == -EINVAL)
			problems_print(&p, s->o.graph);
		else
			fprintf(stderr, "%s: cannot read: %s\n", s->o.graph,
				strerror(-rc));
		rc = SCHED_EXIT_ERROR;
		goto out;
	}
	n = graph_nstages(&g);
	cls = calloc(n + 1, sizeof(*cls));
	if (!cls)
		goto out;
	graph_classify(&g, cmd_probe, s, cls);
	for (i = 0; i < n; i++) {
		int l = strlen(stage_id(graph_stage(&g, i)));

		if (l > idw)
			idw = l;
	}
	printf("%-*s  %-17s  %7s  %-30s  %9s  %s\n", idw, "STAGE", "STATE",
	       "ATTEMPT", "OWNER", "DURATION", "EXIT");
	for (i = 0; i < n; i++) {
		struct json_object *st = graph_stage(&g, i), *ec;
		char att[32], dur[32], exitc[32] = "-";
		const char *owner = stage_str(st, "owner");

		count[cls[i]]++;
		snprintf(att, sizeof(att), "%d/%d", stage_attempt(st),
			 stage_max_attempts(st));
		cmd_duration(st, dur, sizeof(dur));
		if (json_object_object_get_ex(st, "exit_code", &ec) &&
		    json_object_is_type(ec, json_type_int))
			snprintf(exitc, sizeof(exitc), "%d",
				 json_object_get_int(ec));
		printf("%-*s  %-17s  %7s  %-30s  %9s  %s\n", idw, stage_id(st),
		       cmd_state_text(cls[i]), att, owner ? owner : "-", dur,
		       exitc);
	}
	printf("%d stages: %d done, %d running, %d pending, %d failed\n", n,
	       count[CLASS_DONE], count[CLASS_RUNNING] + count[CLASS_LOST],
	       count[CLASS_READY] + count[CLASS_WAITING] + count[CLASS_BLOCKED],
	       count[CLASS_FAILED]);
	rc = SCHED_EXIT_OK;
out:
	free(cls);
	problems_free(&p);
	graph_free(&g);
	return rc;
}

int cmd_reset(struct sched *s)
{
	struct sched_problems p = {0};
	struct sched_lock l = SCHED_LOCK_INIT;
	struct graph g = {0};
	struct json_object *st;
	char path[4096];
	int i, rc, ret = SCHED_EXIT_ERROR;

	rc = sched_take_graph_lock(s, &l, true);
	if (rc < 0) {
		fprintf(stderr, "vectur-sched: cannot take %s: %s\n",
			s->graph_lock, strerror(-rc));
		return SCHED_EXIT_ERROR;
	}
	rc = graph_load(s->o.graph, &g, &p);
	if (rc < 0) {
		if (rc == -EINVAL)
			problems_print(&p, s->o.graph);
		else
			fprintf(stderr, "%s: cannot read: %s\n", s->o.graph,
				strerror(-rc));
		goto out;
	}
	i = graph_find(&g, s->o.stage);
	if (i < 0) {
		fprintf(stderr, "vectur-sched: no stage \"%s\" in %s\n",
			s->o.stage, s->o.graph);
		goto out;
	}
	st = graph_stage(&g, i);
	snprintf(path, sizeof(path), "%s/%s.lock", s->stage_locks, s->o.stage);
	/* A live owner would record its result over ours; with --force its
	 * result is dropped by fencing, and its stage lock (still there)
	 * keeps anyone from starting a second copy until it ends. */
	if (stage_status(st) == STAGE_RUNNING &&
	    lock_is_live(path, &s->me, s->o.lock_ttl, true) && !s->o.force) {
		fprintf(stderr,
			"vectur-sched: stage %s is running (owner %s); use "
			"--force to reset it anyway\n",
			s->o.stage, stage_str(st, "owner"));
		goto out;
	}
	stage_set_str(st, "status", "pending");
	stage_set_int(st, "attempt", 0);
	stage_set_null(st, "owner");
	stage_set_null(st, "started");
	stage_set_null(st, "finished");
	stage_set_null(st, "exit_code");
	rc = graph_save(&g, s->o.graph, s->me.host);
	if (rc < 0) {
		fprintf(stderr, "vectur-sched: cannot write %s: %s\n",
			s->o.graph, strerror(-rc));
		goto out;
	}
	printf("stage %s reset to pending\n", s->o.stage);
	ret = SCHED_EXIT_OK;
out:
	problems_free(&p);
	graph_free(&g);
	sched_release_graph_lock(s, &l);
	return ret;
}
