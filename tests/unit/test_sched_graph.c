/* test_sched_graph.c — the scheduler's graph model: parsing with line:col,
 * the validator (every problem, with its location), cycle naming, the ready
 * set, and the round trip that must keep every unknown field in place.
 *
 * The Makefile links unit tests with libvectur.a only, so the scheduler
 * sources under test are included here. */
#include "t.h"

#include "../../scheduler/graph.c"
#include "../../scheduler/validate.c"

/* Loads text; returns the problems joined by '\n' (caller frees) or NULL if
 * the graph is valid. */
static char *problems_of(const char *text)
{
	struct sched_problems p = {0};
	struct graph g;
	char *out = NULL;
	size_t n = 0;
	int i;

	if (graph_load_text(text, strlen(text), &g, &p) == 0) {
		graph_free(&g);
		return NULL;
	}
	for (i = 0; i < p.n; i++)
		n += strlen(p.msg[i]) + 1;
	out = calloc(n + 1, 1);
	for (i = 0; i < p.n; i++) {
		strcat(out, p.msg[i]);
		strcat(out, "\n");
	}
	problems_free(&p);
	return out;
}

static int has(const char *hay, const char *needle)
{
	return hay && strstr(hay, needle) != NULL;
}

static void test_syntax_error_has_line_and_column(void)
{
	char *p = problems_of("{\n  \"stages\": [\n    {\"id\": \"a\",, }\n]}");

	CHECK(has(p, "3:16: JSON syntax error"));
	free(p);
}

static void test_truncated_file_is_error_at_end(void)
{
	char *p = problems_of("{\"stages\": [\n{\"id\": \"a\"");

	CHECK(has(p, "2:11: JSON syntax error: unexpected end of file"));
	free(p);
}

static void test_trailing_data_is_error(void)
{
	char *p = problems_of("{\"stages\": []}\n}");

	CHECK(has(p, "2:1: JSON syntax error"));
	free(p);
}

static void test_valid_graph_has_no_problems(void)
{
	char *p = problems_of(
		"{\"version\": 1, \"stages\": ["
		"{\"id\": \"prep\", \"cmd\": \"true\"},"
		"{\"id\": \"train\", \"cmd\": [\"python3\", \"t.py\"], "
		"\"deps\": [\"prep\"], \"max_attempts\": 3, \"timeout\": 1.5, "
		"\"env\": {\"SEED\": \"1\"}, \"cwd\": \"sub\", \"status\": "
		"\"done\", \"attempt\": 1, \"owner\": \"h:1:x\", "
		"\"exit_code\": "
		"0, \"started\": null, \"log\": null}]}");

	CHECK(p == NULL);
	free(p);
}

static void test_missing_id_and_cmd_are_located(void)
{
	char *p = problems_of("{\"stages\": [{\"id\": \"a\", \"cmd\": \"x\"},"
			      "{\"cmd\": \"x\"}, {\"id\": \"c\"}]}");

	CHECK(has(p, "stages[1]: missing \"id\""));
	CHECK(has(p, "stages[2]: missing \"cmd\""));
	free(p);
}

static void test_duplicate_id_names_first(void)
{
	char *p = problems_of("{\"stages\": [{\"id\": \"a\", \"cmd\": \"x\"},"
			      "{\"id\": \"a\", \"cmd\": \"y\"}]}");

	CHECK(has(p, "stages[1].id: duplicate id \"a\" (first at stages[0])"));
	free(p);
}

static void test_unknown_dep_is_located(void)
{
	char *p = problems_of(
		"{\"stages\": [{\"id\": \"a\", \"cmd\": \"x\"},"
		"{\"id\": \"b\", \"cmd\": \"y\", \"deps\": [\"a\", \"zz\"]}]}");

	CHECK(has(p, "stages[1].deps[1]: unknown stage id \"zz\""));
	free(p);
}

static void test_cycle_is_named(void)
{
	char *p = problems_of(
		"{\"stages\": [{\"id\": \"a\", \"cmd\": \"x\", \"deps\": "
		"[\"c\"]},"
		"{\"id\": \"b\", \"cmd\": \"y\", \"deps\": [\"a\"]},"
		"{\"id\": \"c\", \"cmd\": \"z\", \"deps\": [\"b\"]}]}");

	CHECK(has(p, "dependency cycle: a -> c -> b -> a"));
	CHECK(has(p, "stages[1].deps[0]"));
	free(p);
}

static void test_self_dependency(void)
{
	char *p = problems_of("{\"stages\": [{\"id\": \"a\", \"cmd\": \"x\", "
			      "\"deps\": [\"a\"]}]}");

	CHECK(has(p, "stages[0].deps[0]: \"a\" depends on itself"));
	free(p);
}

static void test_wrong_types_each_reported(void)
{
	char *p = problems_of(
		"{\"version\": \"1\", \"stages\": [{\"id\": 7, \"cmd\": 5, "
		"\"deps\": \"a\", \"env\": [1], \"max_attempts\": 0, "
		"\"timeout\": \"1h\", \"cwd\": 3, \"attempt\": 1.5}]}");

	CHECK(has(p, "version: unsupported version"));
	CHECK(has(p, "stages[0].id: must be a string, not an integer"));
	CHECK(has(p, "stages[0].cmd: must be a string or an array"));
	CHECK(has(p, "stages[0].deps: must be an array, not a string"));
	CHECK(has(p, "stages[0].env: must be an object, not an array"));
	CHECK(has(p, "stages[0].max_attempts: must be >= 1"));
	CHECK(has(p, "stages[0].timeout: must be a number, not a string"));
	CHECK(has(p, "stages[0].cwd: must be a string"));
	CHECK(has(p, "stages[0].attempt: must be an integer, not a number"));
	free(p);
}

static void test_bad_status_and_argv(void)
{
	char *p =
		problems_of("{\"stages\": [{\"id\": \"a\", \"cmd\": [\"x\", "
			    "2], \"status\": "
			    "\"finished\"}, {\"id\": \"b/c\", \"cmd\": []}]}");

	CHECK(has(p, "stages[0].status: \"finished\" is not one of"));
	CHECK(has(p, "stages[0].cmd[1]: must be a string, not an integer"));
	CHECK(has(p, "stages[1].id: \"b/c\" is not a valid stage id"));
	CHECK(has(p, "stages[1].cmd: empty argv array"));
	free(p);
}

static void test_top_level_shape(void)
{
	char *a = problems_of("[1]");
	char *b = problems_of("{\"stages\": {}}");
	char *c = problems_of("{}");

	CHECK(has(a, "(top level): must be an object, not an array"));
	CHECK(has(b, "stages: must be an array, not an object"));
	CHECK(has(c, "stages: missing"));
	free(a);
	free(b);
	free(c);
}

static void test_unknown_fields_survive_round_trip_in_order(void)
{
	const char *text =
		"{\"zeta\": {\"k\": [1, 2.50, \"a/b\"]}, \"version\": 1, "
		"\"stages\": [{\"note\": \"mine\", \"id\": \"a\", \"cmd\": "
		"\"true\", \"status\": \"pending\", \"z\": null}], \"tail\": "
		"true}";
	struct graph g, g2;
	char *out, *out2;

	CHECK(graph_load_text(text, strlen(text), &g, NULL) == 0);
	stage_set_str(graph_stage(&g, 0), "status", "done");
	stage_set_int(graph_stage(&g, 0), "attempt", 2);
	out = graph_serialise(&g);
	/* Order: unknown keys where they were, status in place, new keys
	 * appended; the double keeps its spelling, "/" is not escaped. */
	CHECK(strstr(out, "\"zeta\"") < strstr(out, "\"version\""));
	CHECK(has(out, "2.50"));
	CHECK(has(out, "\"a/b\""));
	CHECK(strstr(out, "\"note\"") < strstr(out, "\"id\""));
	CHECK(strstr(out, "\"status\"") < strstr(out, "\"z\""));
	CHECK(strstr(out, "\"z\"") < strstr(out, "\"attempt\""));
	CHECK(has(out, "\"tail\": true"));
	CHECK(graph_load_text(out, strlen(out), &g2, NULL) == 0);
	out2 = graph_serialise(&g2);
	CHECK_STR(out, out2);
	CHECK_STR(stage_str(graph_stage(&g2, 0), "status"), "done");
	free(out);
	free(out2);
	graph_free(&g);
	graph_free(&g2);
}

static void test_save_is_atomic_rename(void)
{
	char dir[] = "/tmp/test_sched_graphXXXXXX", path[256], tmp[300];
	const char *text = "{\"stages\": [{\"id\": \"a\", \"cmd\": \"x\"}]}";
	struct graph g, g2;

	CHECK(mkdtemp(dir) != NULL);
	snprintf(path, sizeof(path), "%s/g.json", dir);
	CHECK(graph_load_text(text, strlen(text), &g, NULL) == 0);
	CHECK(graph_save(&g, path, "h") == 0);
	snprintf(tmp, sizeof(tmp), "%s.tmp.h.%d", path, (int)getpid());
	CHECK(access(tmp, F_OK) != 0);
	CHECK(graph_load(path, &g2, NULL) == 0);
	CHECK_STR(stage_id(graph_stage(&g2, 0)), "a");
	graph_free(&g);
	graph_free(&g2);
	unlink(path);
	rmdir(dir);
}

/* The lock probe the tests use: stage ids starting with 'L' are live. */
static int probe_live_L(void *arg, const char *id)
{
	return id[0] == 'L';
}

static struct graph load(const char *text)
{
	struct graph g;

	if (graph_load_text(text, strlen(text), &g, NULL) != 0)
		memset(&g, 0, sizeof(g));
	return g;
}

static void test_diamond_ready_set_follows_deps(void)
{
	struct graph g = load(
		"{\"stages\": [{\"id\": \"a\", \"cmd\": \"x\", \"status\": "
		"\"done\"},{\"id\": \"b\", \"cmd\": \"x\", \"deps\": [\"a\"]},"
		"{\"id\": \"c\", \"cmd\": \"x\", \"deps\": [\"a\"]},"
		"{\"id\": \"d\", \"cmd\": \"x\", \"deps\": [\"b\", \"c\"]}]}");
	enum stage_class cls[4];

	CHECK(g.root != NULL);
	graph_classify(&g, probe_live_L, NULL, cls);
	CHECK_INT(cls[0], CLASS_DONE);
	CHECK_INT(cls[1], CLASS_READY);
	CHECK_INT(cls[2], CLASS_READY);
	CHECK_INT(cls[3], CLASS_WAITING);
	CHECK_INT(graph_state_of(&g, cls), GRAPH_RUNNABLE);
	graph_free(&g);
}

static void test_failed_dep_blocks_transitively(void)
{
	struct graph g = load(
		"{\"stages\": [{\"id\": \"a\", \"cmd\": \"x\", \"status\": "
		"\"failed\"},{\"id\": \"b\", \"cmd\": \"x\", \"deps\": "
		"[\"a\"]},"
		"{\"id\": \"c\", \"cmd\": \"x\", \"deps\": [\"b\"]}]}");
	enum stage_class cls[3];

	graph_classify(&g, probe_live_L, NULL, cls);
	CHECK_INT(cls[1], CLASS_BLOCKED);
	CHECK_INT(cls[2], CLASS_BLOCKED);
	CHECK_INT(graph_state_of(&g, cls), GRAPH_BLOCKED);
	graph_free(&g);
}

static void test_running_stage_without_lock_is_lost(void)
{
	struct graph g = load(
		"{\"stages\": [{\"id\": \"Lx\", \"cmd\": \"x\", \"status\": "
		"\"running\", \"owner\": \"h:1:a\"},{\"id\": \"y\", \"cmd\": "
		"\"x\", \"status\": \"running\", \"owner\": \"h:2:b\"},"
		"{\"id\": \"z\", \"cmd\": \"x\", \"deps\": [\"Lx\"]}]}");
	enum stage_class cls[3];

	graph_classify(&g, probe_live_L, NULL, cls);
	CHECK_INT(cls[0], CLASS_RUNNING);
	CHECK_INT(cls[1], CLASS_LOST);
	CHECK_INT(cls[2], CLASS_WAITING);
	CHECK_INT(graph_state_of(&g, cls), GRAPH_RUNNABLE);
	graph_free(&g);
}

/* A chain of n stages, s0 <- s1 <- ... (each depends on the next), the last
 * one `failed`, or depending on s0 (a cycle). */
static char *chain_text(int n, bool cycle)
{
	size_t cap = (size_t)n * 80 + 64, off = 0;
	char *t = malloc(cap);
	int i;

	off += snprintf(t + off, cap - off, "{\"stages\": [");
	for (i = 0; i < n; i++) {
		off += snprintf(t + off, cap - off,
				"%s{\"id\": \"s%d\", "
				"\"cmd\": \"x\"",
				i ? "," : "", i);
		if (i + 1 < n)
			off += snprintf(t + off, cap - off,
					", \"deps\": [\"s%d\"]}", i + 1);
		else if (cycle)
			off += snprintf(t + off, cap - off,
					", \"deps\": [\"s0\"]}");
		else
			off += snprintf(t + off, cap - off,
					", \"status\": \"failed\"}");
	}
	snprintf(t + off, cap - off, "]}");
	return t;
}

/* A dependency chain of 200,000 stages: validate and classify walked it
 * by recursion and died of a stack overflow (SIGSEGV at 100,000). */
static void test_a_very_long_chain_is_walked_without_recursion(void)
{
	int n = 200000;
	char *t = chain_text(n, false), *probs;
	enum stage_class *cls = calloc(n, sizeof(*cls));
	struct graph g = load(t);

	CHECK(g.root != NULL);
	graph_classify(&g, probe_live_L, NULL, cls);
	CHECK_INT(cls[0], CLASS_BLOCKED);
	CHECK_INT(cls[n - 2], CLASS_BLOCKED);
	CHECK_INT(cls[n - 1], CLASS_FAILED);
	graph_free(&g);
	free(t);
	t = chain_text(n, true);
	probs = problems_of(t);
	CHECK(has(probs, "dependency cycle: s0 -> s1 -> s2 -> "));
	free(probs);
	free(t);
	free(cls);
}

static void test_graph_states(void)
{
	struct graph done = load("{\"stages\": [{\"id\": \"a\", \"cmd\": "
				 "\"x\", \"status\": \"done\"}]}");
	struct graph idle = load(
		"{\"stages\": [{\"id\": \"La\", \"cmd\": \"x\", \"status\": "
		"\"running\", \"owner\": \"o\"}, {\"id\": \"b\", \"cmd\": "
		"\"x\", \"deps\": [\"La\"]}]}");
	struct graph empty = load("{\"stages\": []}");
	enum stage_class cls[2];

	graph_classify(&done, probe_live_L, NULL, cls);
	CHECK_INT(graph_state_of(&done, cls), GRAPH_COMPLETE);
	graph_classify(&idle, probe_live_L, NULL, cls);
	CHECK_INT(graph_state_of(&idle, cls), GRAPH_IDLE);
	graph_classify(&empty, probe_live_L, NULL, cls);
	CHECK_INT(graph_state_of(&empty, cls), GRAPH_COMPLETE);
	graph_free(&done);
	graph_free(&idle);
	graph_free(&empty);
}

static void test_defaults(void)
{
	struct graph g =
		load("{\"stages\": [{\"id\": \"a\", \"cmd\": \"x\"}]}");
	struct json_object *st = graph_stage(&g, 0);

	CHECK_INT(stage_status(st), STAGE_PENDING);
	CHECK_INT(stage_attempt(st), 0);
	CHECK_INT(stage_max_attempts(st), SCHED_DEFAULT_MAX_ATTEMPTS);
	CHECK(stage_timeout(st) == 0);
	graph_free(&g);
}

int main(void)
{
	RUN(test_syntax_error_has_line_and_column);
	RUN(test_truncated_file_is_error_at_end);
	RUN(test_trailing_data_is_error);
	RUN(test_valid_graph_has_no_problems);
	RUN(test_missing_id_and_cmd_are_located);
	RUN(test_duplicate_id_names_first);
	RUN(test_unknown_dep_is_located);
	RUN(test_cycle_is_named);
	RUN(test_self_dependency);
	RUN(test_wrong_types_each_reported);
	RUN(test_bad_status_and_argv);
	RUN(test_top_level_shape);
	RUN(test_unknown_fields_survive_round_trip_in_order);
	RUN(test_save_is_atomic_rename);
	RUN(test_diamond_ready_set_follows_deps);
	RUN(test_failed_dep_blocks_transitively);
	RUN(test_running_stage_without_lock_is_lost);
	RUN(test_graph_states);
	RUN(test_a_very_long_chain_is_walked_without_recursion);
	RUN(test_defaults);
	return t_done();
}
