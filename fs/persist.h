/* persist.h — the persist set: which paths of the mount live on Drive.
 *
 * Patterns follow .gitignore, restricted to what an overlay can honour:
 *   - one pattern per line; blank lines and lines starting with '#' are
 *     ignored; a leading '\' escapes a literal '#' (or '!');
 *   - '*' and '?' and [...] match within one path component, '**' as a
 *     whole component matches any number of components (zero included);
 *   - a pattern with a '/' at its start or middle is anchored at the mount
 *     root; one without (e.g. "*.ckpt", "runs/") matches at any depth;
 *   - a trailing '/' and a trailing '/ **' both mean "this and everything
 *     below" (a directory that matches takes its whole subtree with it,
 *     exactly as git ignores everything inside an ignored directory);
 *   - '!' negation is refused: a local path inside a persisted directory
 *     could not be shown without merging every persisted directory.
 *
 * Classification of a path (relative, no leading '/', "" = mount root):
 *   PERSISTED  the path or one of its ancestors matches a pattern;
 *   MERGED     not persisted, but a strict prefix of something a pattern
 *              could match ("experiments" for "experiments/work_graph.json";
 *              the root always): listed as the union of local and persisted
 *              entries;
 *   LOCAL      neither: passed through to the underlying directory.
 * Pure functions, no I/O except persist_load_file(); thread-safe once built.
 */
#ifndef VECTUR_FS_PERSIST_H
#define VECTUR_FS_PERSIST_H

#include <stdbool.h>
#include <stddef.h>

struct persist_set;

enum persist_class { PERSIST_LOCAL, PERSIST_MERGED, PERSIST_PERSISTED };

/* The default set, from how ML projects lay out their state. */
extern const char *const persist_default_patterns[];

struct persist_set *persist_new(void);
void persist_free(struct persist_set *ps);

/* Adds one pattern line (comments and blank lines are accepted and
 * ignored). Returns 0, or -EINVAL with a reason in errbuf. */
int persist_add(struct persist_set *ps, const char *line, char *errbuf,
		size_t errlen);
/* Adds every line of a text buffer; errors name the line number. */
int persist_add_text(struct persist_set *ps, const char *text, char *errbuf,
		     size_t errlen);

/* Number of patterns and the i-th one as written (for status/--help). */
int persist_count(const struct persist_set *ps);
const char *persist_pattern(const struct persist_set *ps, int i);

bool persist_is_persisted(const struct persist_set *ps, const char *path);
/* True when something strictly below directory `dir` may be persisted. */
bool persist_may_contain(const struct persist_set *ps, const char *dir);
enum persist_class persist_classify(const struct persist_set *ps,
				    const char *path);

#endif
