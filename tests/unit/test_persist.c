/* test_persist.c — the persist set's gitignore-like rules: which paths go
 * to Drive, which directories are merged, which stay local. */
#include <errno.h>

/* The Makefile links unit tests with libvectur.a only (drive/ + cache/);
 * the matcher is pure and small, so it is compiled in here. */
#include "../../fs/persist.c"
#include "t.h"

static struct persist_set *set_of(const char *const *pats)
{
	struct persist_set *ps = persist_new();
	char err[256];

	for (; *pats; pats++)
		if (persist_add(ps, *pats, err, sizeof(err)) < 0)
			fprintf(stderr, "unexpected: %s\n", err);
	return ps;
}

#define SET(...) set_of((const char *const[]){__VA_ARGS__, NULL})

static void test_default_set_persists_runs_and_graph(void)
{
	struct persist_set *ps = set_of(persist_default_patterns);

	CHECK(persist_is_persisted(ps, "runs"));
	CHECK(persist_is_persisted(ps, "runs/a/ckpt.pt"));
	CHECK(persist_is_persisted(ps, "experiments/work_graph.json"));
	CHECK(persist_is_persisted(ps, "locks/stages/a.lock"));
	CHECK(!persist_is_persisted(ps, "train.py"));
	CHECK(!persist_is_persisted(ps, "experiments/work_graph.json.tmp"));
	CHECK(!persist_is_persisted(ps, "experiments"));
	CHECK(!persist_is_persisted(ps, "runsx"));
	CHECK(!persist_is_persisted(ps, "src/runs/x"));
	persist_free(ps);
}

static void test_globstar_suffix_covers_the_directory_itself(void)
{
	struct persist_set *ps = SET("runs/**");

	CHECK(persist_is_persisted(ps, "runs"));
	CHECK(persist_is_persisted(ps, "runs/x"));
	CHECK(persist_is_persisted(ps, "/runs/x/y/z"));
	CHECK_INT(persist_classify(ps, "runs"), PERSIST_PERSISTED);
	persist_free(ps);
}

static void test_merged_dirs_are_strict_prefixes(void)
{
	struct persist_set *ps = set_of(persist_default_patterns);

	CHECK_INT(persist_classify(ps, ""), PERSIST_MERGED);
	CHECK_INT(persist_classify(ps, "/"), PERSIST_MERGED);
	CHECK_INT(persist_classify(ps, "experiments"), PERSIST_MERGED);
	CHECK_INT(persist_classify(ps, "experiments/other.json"),
		  PERSIST_LOCAL);
	CHECK_INT(persist_classify(ps, "src"), PERSIST_LOCAL);
	CHECK_INT(persist_classify(ps, "runs/a"), PERSIST_PERSISTED);
	CHECK_INT(persist_classify(ps, "experiments/work_graph.json"),
		  PERSIST_PERSISTED);
	persist_free(ps);
}

static void test_star_matches_within_one_component(void)
{
	struct persist_set *ps = SET("runs/*/ckpt");

	CHECK(persist_is_persisted(ps, "runs/a/ckpt"));
	CHECK(persist_is_persisted(ps, "runs/a/ckpt/inner"));
	CHECK(!persist_is_persisted(ps, "runs/a/b/ckpt"));
	CHECK(!persist_is_persisted(ps, "runs/a/other"));
	CHECK_INT(persist_classify(ps, "runs"), PERSIST_MERGED);
	CHECK_INT(persist_classify(ps, "runs/anything"), PERSIST_MERGED);
	CHECK_INT(persist_classify(ps, "runs/a/b"), PERSIST_LOCAL);
	persist_free(ps);
}

static void test_question_mark_and_brackets(void)
{
	struct persist_set *ps = SET("ckpt-?.pt", "/log[0-9]");

	CHECK(persist_is_persisted(ps, "ckpt-1.pt"));
	CHECK(persist_is_persisted(ps, "a/b/ckpt-x.pt"));
	CHECK(!persist_is_persisted(ps, "ckpt-10.pt"));
	CHECK(persist_is_persisted(ps, "log3"));
	CHECK(!persist_is_persisted(ps, "sub/log3"));
	CHECK(!persist_is_persisted(ps, "logx"));
	persist_free(ps);
}

static void test_unanchored_pattern_matches_at_any_depth(void)
{
	struct persist_set *ps = SET("*.ckpt");

	CHECK(persist_is_persisted(ps, "a.ckpt"));
	CHECK(persist_is_persisted(ps, "deep/er/b.ckpt"));
	CHECK(persist_is_persisted(ps, ".hidden.ckpt"));
	CHECK(!persist_is_persisted(ps, "a.ckpt.tmp"));
	/* Any directory may hold a match: every directory is merged. */
	CHECK_INT(persist_classify(ps, "src"), PERSIST_MERGED);
	CHECK_INT(persist_classify(ps, "src/x.py"), PERSIST_MERGED);
	persist_free(ps);
}

static void test_trailing_slash_is_unanchored_directory(void)
{
	struct persist_set *ps = SET("outputs/");

	CHECK(persist_is_persisted(ps, "outputs"));
	CHECK(persist_is_persisted(ps, "outputs/x"));
	CHECK(persist_is_persisted(ps, "proj/outputs/x"));
	CHECK(!persist_is_persisted(ps, "outputs2"));
	persist_free(ps);
}

static void test_leading_slash_and_middle_slash_anchor(void)
{
	struct persist_set *ps = SET("/state", "a/b");

	CHECK(persist_is_persisted(ps, "state"));
	CHECK(persist_is_persisted(ps, "state/x"));
	CHECK(!persist_is_persisted(ps, "x/state"));
	CHECK(persist_is_persisted(ps, "a/b"));
	CHECK(!persist_is_persisted(ps, "x/a/b"));
	persist_free(ps);
}

static void test_globstar_in_the_middle_and_front(void)
{
	struct persist_set *ps = SET("data/**/final.pt", "**/wandb");

	CHECK(persist_is_persisted(ps, "data/final.pt"));
	CHECK(persist_is_persisted(ps, "data/a/b/c/final.pt"));
	CHECK(!persist_is_persisted(ps, "data/a/b/c/other.pt"));
	CHECK(persist_is_persisted(ps, "wandb"));
	CHECK(persist_is_persisted(ps, "x/y/wandb/run-1"));
	CHECK_INT(persist_classify(ps, "data/a/b"), PERSIST_MERGED);
	persist_free(ps);
}

static void test_everything_pattern(void)
{
	struct persist_set *ps = SET("**");

	CHECK(persist_is_persisted(ps, "train.py"));
	CHECK(persist_is_persisted(ps, "a/b/c"));
	CHECK_INT(persist_classify(ps, ""), PERSIST_MERGED);
	persist_free(ps);
}

static void test_comments_blank_lines_and_escapes(void)
{
	struct persist_set *ps = persist_new();
	char err[256];
	int rc = persist_add_text(ps,
				  "# state that must survive preemption\n"
				  "\n"
				  "runs/**   \n"
				  "   \n"
				  "\\#weird\n"
				  "experiments/work_graph.json\r\n",
				  err, sizeof(err));

	CHECK_INT(rc, 0);
	CHECK_INT(persist_count(ps), 3);
	CHECK(persist_is_persisted(ps, "runs/x"));
	CHECK(persist_is_persisted(ps, "#weird"));
	CHECK(persist_is_persisted(ps, "experiments/work_graph.json"));
	CHECK(!persist_is_persisted(ps, "# state that must survive"));
	persist_free(ps);
}

/* Windows editors save UTF-8 with a byte order mark: it is not part of the
 * first pattern. */
static void test_a_byte_order_mark_is_not_part_of_the_first_pattern(void)
{
	struct persist_set *ps = persist_new();
	char err[256];

	CHECK_INT(persist_add_text(ps, "\xEF\xBB\xBFruns/**\r\nckpt/\r\n", err,
				   sizeof(err)),
		  0);
	CHECK_INT(persist_count(ps), 2);
	CHECK(persist_is_persisted(ps, "runs/x"));
	CHECK(persist_is_persisted(ps, "a/ckpt/b"));
	persist_free(ps);
}

static void test_negation_and_dotdot_are_refused_with_the_line(void)
{
	struct persist_set *ps = persist_new();
	char err[256] = "";

	CHECK_INT(
		persist_add_text(ps, "runs/**\n!runs/tmp\n", err, sizeof(err)),
		-EINVAL);
	CHECK(strstr(err, "line 2") != NULL);
	CHECK(strstr(err, "negation") != NULL);
	CHECK_INT(persist_add(ps, "../x", err, sizeof(err)), -EINVAL);
	CHECK_INT(persist_add(ps, "/", err, sizeof(err)), -EINVAL);
	persist_free(ps);
}

/* fnmatch() takes a '[' without ']' (or a trailing '\\') literally: the
 * pattern was accepted and kept nothing the user meant. Refused, naming
 * the line; real sets and escapes still work. */
static void test_a_bracket_without_its_end_is_refused(void)
{
	struct persist_set *ps = persist_new();
	char err[256] = "";

	CHECK_INT(persist_add_text(ps, "runs/**\nckpt/[ab\n", err, sizeof(err)),
		  -EINVAL);
	CHECK(strstr(err, "line 2") != NULL);
	CHECK(strstr(err, "no closing ']'") != NULL);
	CHECK_INT(persist_add(ps, "runs/x\\", err, sizeof(err)), -EINVAL);
	CHECK(strstr(err, "lone") != NULL);
	CHECK_INT(persist_add(ps, "data/[ab]*", err, sizeof(err)), 0);
	CHECK_INT(persist_add(ps, "sets/[]x]", err, sizeof(err)), 0);
	CHECK_INT(persist_add(ps, "lit/\\[x", err, sizeof(err)), 0);
	CHECK(persist_is_persisted(ps, "data/b1"));
	CHECK(persist_is_persisted(ps, "sets/]"));
	CHECK(persist_is_persisted(ps, "lit/[x"));
	CHECK(!persist_is_persisted(ps, "data/c1"));
	persist_free(ps);
}

static void test_empty_set_persists_nothing(void)
{
	struct persist_set *ps = persist_new();

	CHECK(!persist_is_persisted(ps, "runs/x"));
	CHECK_INT(persist_classify(ps, "runs"), PERSIST_LOCAL);
	CHECK_INT(persist_classify(ps, ""), PERSIST_MERGED);
	persist_free(ps);
}

int main(void)
{
	RUN(test_default_set_persists_runs_and_graph);
	RUN(test_globstar_suffix_covers_the_directory_itself);
	RUN(test_merged_dirs_are_strict_prefixes);
	RUN(test_star_matches_within_one_component);
	RUN(test_question_mark_and_brackets);
	RUN(test_unanchored_pattern_matches_at_any_depth);
	RUN(test_trailing_slash_is_unanchored_directory);
	RUN(test_leading_slash_and_middle_slash_anchor);
	RUN(test_globstar_in_the_middle_and_front);
	RUN(test_everything_pattern);
	RUN(test_comments_blank_lines_and_escapes);
	RUN(test_a_byte_order_mark_is_not_part_of_the_first_pattern);
	RUN(test_negation_and_dotdot_are_refused_with_the_line);
	RUN(test_a_bracket_without_its_end_is_refused);
	RUN(test_empty_set_persists_nothing);
	return t_done();
}
