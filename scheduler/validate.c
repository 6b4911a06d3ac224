/* validate.c — checks a parsed work graph against the format of DESIGN §4
 * and reports every fault with its JSON location (`stages[3].deps[1]`), so a
 * user fixes a graph in one pass. Knows nothing about files or locks.
 *
 * Keys the scheduler does not know are allowed everywhere: users annotate
 * their stages, and those annotations must survive (graph.c).
 */
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "scheduler.h"

/* Room for a JSON path in a message: "stages[12].env.NAME". */
#define V_PATH_MAX 1024

static const char *type_name(struct json_object *v)
{
	switch (json_object_get_type(v)) {
	case json_type_null:
		return "null";
	case json_type_boolean:
		return "a boolean";
	case json_type_double:
		return "a number";
	case json_type_int:
		return "an integer";
	case json_type_object:
		return "an object";
	case json_type_array:
		return "an array";
	case json_type_string:
		return "a string";
	}
	return "?";
}

bool stage_id_ok(const char *id)
{
	const char *c;

	/* The id names files (locks/stages/<id>.lock, runs/<id>/): no
	 * separators, no dot files, nothing a shell would trip on. */
	if (!id[0] || id[0] == '.' || strlen(id) > 200)
		return false;
	for (c = id; *c; c++) {
		if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') ||
		      (*c >= '0' && *c <= '9') || *c == '_' || *c == '-' ||
		      *c == '.'))
			return false;
	}
	return true;
}

/* key is present and of one of the listed types (null always allowed for
 * the state keys the scheduler itself clears). */
static struct json_object *v_get(struct json_object *st, const char *key)
{
	struct json_object *v;

	return json_object_object_get_ex(st, key, &v) ? v : NULL;
}

static void v_cmd(struct json_object *st, int i, struct sched_problems *p)
{
	struct json_object *cmd = v_get(st, "cmd");
	int j, n;

	if (!cmd) {
		problems_add(p, "stages[%d]: missing \"cmd\"", i);
		return;
	}
	if (json_object_is_type(cmd, json_type_string)) {
		if (!json_object_get_string_len(cmd))
			problems_add(p, "stages[%d].cmd: empty command", i);
		return;
	}
	if (!json_object_is_type(cmd, json_type_array)) {
		problems_add(p,
			     "stages[%d].cmd: must be a string or an array of "
			     "strings, not %s",
			     i, type_name(cmd));
		return;
	}
	n = json_object_array_length(cmd);
	if (n == 0)
		problems_add(p, "stages[%d].cmd: empty argv array", i);
	for (j = 0; j < n; j++) {
		struct json_object *a = json_object_array_get_idx(cmd, j);

		if (!json_object_is_type(a, json_type_string))
			problems_add(p,
				     "stages[%d].cmd[%d]: must be a string, "
				     "not %s",
				     i, j, type_name(a));
		else if (j == 0 && !json_object_get_string_len(a))
			problems_add(p, "stages[%d].cmd[0]: empty program", i);
	}
}

static void v_env(struct json_object *st, int i, struct sched_problems *p)
{
	struct json_object *env = v_get(st, "env");

	if (!env || json_object_is_type(env, json_type_null))
		return;
	if (!json_object_is_type(env, json_type_object)) {
		problems_add(p, "stages[%d].env: must be an object, not %s", i,
			     type_name(env));
		return;
	}
	json_object_object_foreach(env, k, v)
	{
		if (!k[0] || strchr(k, '='))
			problems_add(p,
				     "stages[%d].env: bad variable name "
				     "\"%s\"",
				     i, k);
		if (!json_object_is_type(v, json_type_string))
			problems_add(p,
				     "stages[%d].env.%s: must be a string, "
				     "not %s",
				     i, k, type_name(v));
	}
}

/* key, if present, is a number (an integer if integer) in [min, max]. The
 * integer fields are bounded by the int the scheduler keeps them in: json-c
 * reads 4294967296 fine, and a cast would make it 0. */
static void v_number(struct json_object *st, int i, const char *key,
		     bool integer, double min, double max, bool nullable,
		     struct sched_problems *p)
{
	struct json_object *v = v_get(st, key);
	bool is_int, is_num;

	if (!v || (nullable && json_object_is_type(v, json_type_null)))
		return;
	is_int = json_object_is_type(v, json_type_int);
	is_num = is_int || json_object_is_type(v, json_type_double);
	if (integer ? !is_int : !is_num) {
		problems_add(p, "stages[%d].%s: must be %s, not %s", i, key,
			     integer ? "an integer" : "a number", type_name(v));
		return;
	}
	if (json_object_get_double(v) < min)
		problems_add(p, "stages[%d].%s: must be >= %.15g", i, key, min);
	else if (json_object_get_double(v) > max)
		problems_add(p, "stages[%d].%s: must be <= %.15g", i, key, max);
}

static void v_string(struct json_object *st, int i, const char *key,
		     bool nullable, struct sched_problems *p)
{
	struct json_object *v = v_get(st, key);

	if (!v || (nullable && json_object_is_type(v, json_type_null)))
		return;
	if (!json_object_is_type(v, json_type_string))
		problems_add(p, "stages[%d].%s: must be a string%s, not %s", i,
			     key, nullable ? " or null" : "", type_name(v));
}

static void v_status(struct json_object *st, int i, struct sched_problems *p)
{
	struct json_object *v = v_get(st, "status");

	if (!v || json_object_is_type(v, json_type_null))
		return;
	if (!json_object_is_type(v, json_type_string))
		problems_add(p, "stages[%d].status: must be a string, not %s",
			     i, type_name(v));
	else if (stage_status(st) == STAGE_BAD)
		problems_add(p,
			     "stages[%d].status: \"%s\" is not one of pending, "
			     "running, done, failed",
			     i, json_object_get_string(v));
}

/* Every string in the document, known key or not: a NUL (\u0000) would cut
 * an id, a command or an env value short where the scheduler hands it to
 * the system as a C string. path is where v is; n its length. */
static void v_no_nul(struct json_object *v, char *path, size_t n,
		     struct sched_problems *p)
{
	size_t cap = V_PATH_MAX, k;
	int i;

	switch (json_object_get_type(v)) {
	case json_type_string:
		if (strlen(json_object_get_string(v)) !=
		    (size_t)json_object_get_string_len(v))
			problems_add(p,
				     "%s: NUL character (\\u0000) in a "
				     "string",
				     n ? path : "(top level)");
		return;
	case json_type_array:
		for (i = 0; i < (int)json_object_array_length(v); i++) {
			k = n + snprintf(path + n, cap - n, "[%d]", i);
			v_no_nul(json_object_array_get_idx(v, i), path,
				 k < cap ? k : cap - 1, p);
		}
		break;
	case json_type_object:
		json_object_object_foreach(v, key, child)
		{
			k = n + snprintf(path + n, cap - n, "%s%s",
					 n ? "." : "", key);
			v_no_nul(child, path, k < cap ? k : cap - 1, p);
		}
		break;
	default:
		return;
	}
	path[n] = 0;
}

/* The fields of one stage, its id checked against ids seen so far. */
static void v_stage(struct json_object *st, int i, struct json_object *seen,
		    struct sched_problems *p)
{
	struct json_object *id = v_get(st, "id"), *prev;

	if (!json_object_is_type(st, json_type_object)) {
		problems_add(p, "stages[%d]: must be an object, not %s", i,
			     type_name(st));
		return;
	}
	if (!id) {
		problems_add(p, "stages[%d]: missing \"id\"", i);
	} else if (!json_object_is_type(id, json_type_string)) {
		problems_add(p, "stages[%d].id: must be a string, not %s", i,
			     type_name(id));
	} else if (!stage_id_ok(json_object_get_string(id))) {
		problems_add(p,
			     "stages[%d].id: \"%s\" is not a valid stage id "
			     "(letters, digits, '_', '-', '.'; not starting "
			     "with '.')",
			     i, json_object_get_string(id));
	} else if (json_object_object_get_ex(seen, json_object_get_string(id),
					     &prev)) {
		problems_add(p,
			     "stages[%d].id: duplicate id \"%s\" (first at "
			     "stages[%d])",
			     i, json_object_get_string(id),
			     json_object_get_int(prev));
	} else {
		json_object_object_add(seen, json_object_get_string(id),
				       json_object_new_int(i));
	}
	v_cmd(st, i, p);
	v_env(st, i, p);
	v_string(st, i, "cwd", false, p);
	v_number(st, i, "max_attempts", true, 1, INT_MAX, false, p);
	v_number(st, i, "timeout", false, 0, HUGE_VAL, true, p);
	v_status(st, i, p);
	v_number(st, i, "attempt", true, 0, INT_MAX, true, p);
	v_number(st, i, "exit_code", true, INT_MIN, INT_MAX, true, p);
	v_string(st, i, "owner", true, p);
	v_string(st, i, "started", true, p);
	v_string(st, i, "finished", true, p);
	v_string(st, i, "log", true, p);
	if (stage_status(st) == STAGE_RUNNING && !stage_str(st, "owner"))
		problems_add(p,
			     "stages[%d].owner: a running stage needs an "
			     "owner",
			     i);
}

/* deps of stage i: array of known ids, none repeated, not itself. Fills
 * its row of the dependency graph (indices, -1 terminated) for the cycle
 * search; NULL when out of memory. */
static int *v_deps(struct json_object *st, int i, struct json_object *seen,
		   struct sched_problems *p)
{
	struct json_object *deps = v_get(st, "deps"), *idx;
	const char *me = stage_id(st);
	int j, m, k = 0, *adj;

	m = deps && json_object_is_type(deps, json_type_array)
		    ? (int)json_object_array_length(deps)
		    : 0;
	adj = malloc(sizeof(int) * (m + 1));
	if (!adj)
		return NULL;
	adj[0] = -1;
	if (!deps || !json_object_is_type(st, json_type_object))
		return adj;
	if (!json_object_is_type(deps, json_type_array)) {
		problems_add(p, "stages[%d].deps: must be an array, not %s", i,
			     type_name(deps));
		return adj;
	}
	for (j = 0; j < m; j++) {
		struct json_object *d = json_object_array_get_idx(deps, j);
		const char *ds;
		int l, dup = 0;

		if (!json_object_is_type(d, json_type_string)) {
			problems_add(p,
				     "stages[%d].deps[%d]: must be a stage id "
				     "string, not %s",
				     i, j, type_name(d));
			continue;
		}
		ds = json_object_get_string(d);
		if (me && strcmp(ds, me) == 0) {
			problems_add(p,
				     "stages[%d].deps[%d]: \"%s\" depends on "
				     "itself",
				     i, j, ds);
			continue;
		}
		if (!json_object_object_get_ex(seen, ds, &idx)) {
			problems_add(p,
				     "stages[%d].deps[%d]: unknown stage id "
				     "\"%s\"",
				     i, j, ds);
			continue;
		}
		for (l = 0; l < k; l++)
			dup |= adj[l] == json_object_get_int(idx);
		if (dup) {
			problems_add(p,
				     "stages[%d].deps[%d]: \"%s\" listed twice",
				     i, j, ds);
			continue;
		}
		adj[k++] = json_object_get_int(idx);
		adj[k] = -1;
	}
	return adj;
}

struct cycle_search {
	struct json_object *stages;
	int n;
	int **adj;  /* per stage: dep indices, -1 terminated */
	char *mark; /* 0 new, 1 on stack, 2 finished */
	int *stack; /* the path being walked */
	int *pos;   /* per depth: the next dep of stack[depth] to look at */
	int depth;
	struct sched_problems *p;
};

/* Reports the cycle closed by the edge from the top of the stack to `to`:
 * "a -> b -> c -> a", located at the dep entry that closes it. */
static const char *cycle_name(struct cycle_search *c, int i)
{
	const char *id = stage_id(json_object_array_get_idx(c->stages, i));

	return id ? id : "?";
}

static void cycle_report(struct cycle_search *c, int from, int to, int depj)
{
	char buf[2048];
	size_t off = 0;
	int k, start = 0;

	for (k = 0; k < c->depth; k++)
		if (c->stack[k] == to)
			start = k;
	for (k = start; k < c->depth && off < sizeof(buf) - 1; k++)
		off += snprintf(buf + off, sizeof(buf) - off, "%s -> ",
				cycle_name(c, c->stack[k]));
	if (off < sizeof(buf) - 1)
		snprintf(buf + off, sizeof(buf) - off, "%s", cycle_name(c, to));
	problems_add(c->p, "stages[%d].deps[%d]: dependency cycle: %s", from,
		     depj, buf);
}

/* The index in the stage's deps array of its k-th resolved dep. */
static int dep_position(struct json_object *st, int target,
			struct json_object *stages)
{
	struct json_object *deps;
	const char *tid = stage_id(json_object_array_get_idx(stages, target));
	int j;

	json_object_object_get_ex(st, "deps", &deps);
	for (j = 0; j < (int)json_object_array_length(deps); j++) {
		const char *s = json_object_get_string(
			json_object_array_get_idx(deps, j));

		if (s && tid && strcmp(s, tid) == 0)
			return j;
	}
	return 0;
}

/* Depth first from root with its own stack: a chain of 100,000 stages
 * must not overflow the C stack. */
static void cycle_dfs(struct cycle_search *c, int root)
{
	c->mark[root] = 1;
	c->stack[0] = root;
	c->pos[0] = 0;
	c->depth = 1;
	while (c->depth > 0) {
		int top = c->depth - 1, i = c->stack[top];
		int d = c->adj[i][c->pos[top]];

		if (d < 0) {
			c->mark[i] = 2;
			c->depth--;
			continue;
		}
		c->pos[top]++;
		if (c->mark[d] == 1) {
			cycle_report(c, i, d,
				     dep_position(json_object_array_get_idx(
							  c->stages, i),
						  d, c->stages));
		} else if (c->mark[d] == 0) {
			c->mark[d] = 1;
			c->stack[c->depth] = d;
			c->pos[c->depth++] = 0;
		}
	}
}

static void v_cycles(struct json_object *stages, int n, int **adj,
		     struct sched_problems *p)
{
	struct cycle_search c = {.stages = stages, .n = n, .adj = adj, .p = p};
	size_t sz = n > 0 ? (size_t)n : 1;
	int i;

	c.mark = calloc(sz, 1);
	c.stack = calloc(sz, sizeof(int));
	c.pos = calloc(sz, sizeof(int));
	if (!c.mark || !c.stack || !c.pos) {
		problems_add(p, "stages: out of memory checking for cycles");
		goto out;
	}
	for (i = 0; i < n; i++)
		if (!c.mark[i])
			cycle_dfs(&c, i);
out:
	free(c.mark);
	free(c.stack);
	free(c.pos);
}

int graph_validate(struct json_object *root, struct sched_problems *p)
{
	struct json_object *v, *stages, *seen = NULL;
	int before = p ? p->n : 0, i, n;
	char path[V_PATH_MAX] = "";
	int **adj = NULL;
	struct sched_problems local = {0};

	if (!p)
		p = &local;
	if (!json_object_is_type(root, json_type_object)) {
		problems_add(p, "(top level): must be an object, not %s",
			     type_name(root));
		goto out;
	}
	v_no_nul(root, path, 0, p);
	if (json_object_object_get_ex(root, "version", &v) &&
	    (!json_object_is_type(v, json_type_int) ||
	     json_object_get_int64(v) != 1))
		problems_add(p,
			     "version: unsupported version %s (this "
			     "scheduler reads version 1)",
			     json_object_to_json_string(v));
	if (!json_object_object_get_ex(root, "stages", &stages)) {
		problems_add(p, "stages: missing (the list of stages)");
		goto out;
	}
	if (!json_object_is_type(stages, json_type_array)) {
		problems_add(p, "stages: must be an array, not %s",
			     type_name(stages));
		goto out;
	}
	n = json_object_array_length(stages);
	seen = json_object_new_object();
	adj = calloc(n + 1, sizeof(*adj));
	if (!seen || !adj) {
		problems_add(p, "stages: out of memory");
		goto out;
	}
	for (i = 0; i < n; i++)
		v_stage(json_object_array_get_idx(stages, i), i, seen, p);
	for (i = 0; i < n; i++) {
		adj[i] = v_deps(json_object_array_get_idx(stages, i), i, seen,
				p);
		if (!adj[i]) {
			problems_add(p, "stages: out of memory");
			goto out;
		}
	}
	v_cycles(stages, n, adj, p);
out:
	for (i = 0; adj && i < n; i++)
		free(adj[i]);
	free(adj);
	if (seen)
		json_object_put(seen);
	i = p->n - before;
	problems_free(&local);
	return i;
}
