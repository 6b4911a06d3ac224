/* persist.c — the gitignore-like matcher behind the persist set (see
 * persist.h for the rules). Patterns are split into path components once,
 * at load; matching walks components with fnmatch(3) per component and a
 * backtracking step for '**'. No I/O, no locks: the set is immutable once
 * the mount starts. */
#include <errno.h>
#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "persist.h"

#define PERSIST_MAX_DEPTH 128

const char *const persist_default_patterns[] = {
	"runs/**",
	"experiments/work_graph.json",
	"locks/**",
	NULL,
};

struct pattern {
	char *text;  /* as written, for status and messages */
	char **comp; /* components; "**" = any number of components */
	int ncomp;
};

struct persist_set {
	struct pattern *pat;
	int npat;
};

struct persist_set *persist_new(void)
{
	return calloc(1, sizeof(struct persist_set));
}

void persist_free(struct persist_set *ps)
{
	if (!ps)
		return;
	for (int i = 0; i < ps->npat; i++) {
		for (int j = 0; j < ps->pat[i].ncomp; j++)
			free(ps->pat[i].comp[j]);
		free(ps->pat[i].comp);
		free(ps->pat[i].text);
	}
	free(ps->pat);
	free(ps);
}

static bool is_globstar(const char *c)
{
	return strcmp(c, "**") == 0;
}

/* Splits `s` (modified) on '/' into comp[], dropping empty components and
 * collapsing runs of "**" (which would only make matching exponential). */
static int split_components(char *s, char **comp, int max)
{
	int n = 0;
	char *save = NULL;

	for (char *tok = strtok_r(s, "/", &save); tok;
	     tok = strtok_r(NULL, "/", &save)) {
		if (n > 0 && is_globstar(tok) && is_globstar(comp[n - 1]))
			continue;
		if (n == max)
			return -1;
		comp[n++] = tok;
	}
	return n;
}

/* What is wrong with one component's glob syntax, or NULL: fnmatch()
 * would take a '[' without its ']' or a trailing '\\' as a literal
 * character, a pattern that silently matches nothing meant. */
static const char *glob_problem(const char *c)
{
	for (; *c; c++) {
		if (*c == '\\') {
			if (!*++c)
				return "it ends with a lone '\\'";
		} else if (*c == '[') {
			const char *e = c + 1;

			if (*e == '!' || *e == '^')
				e++;
			if (*e == ']')
				e++; /* a ']' first is one of the set */
			while (*e && *e != ']')
				e++;
			if (!*e)
				return "a '[' has no closing ']'";
			c = e;
		}
	}
	return NULL;
}

int persist_add(struct persist_set *ps, const char *line, char *errbuf,
		size_t errlen)
{
	char buf[4096], *p, *end;
	char *comp[PERSIST_MAX_DEPTH + 1];
	bool anchored;
	int n, rc = 0;
	struct pattern pat = {0};

	if (strlen(line) >= sizeof(buf)) {
		snprintf(errbuf, errlen, "persist pattern too long");
		return -EINVAL;
	}
	strcpy(buf, line);
	/* Trailing blanks are not part of a pattern (gitignore), unless
	 * escaped with a backslash. */
	end = buf + strlen(buf);
	while (end > buf && (end[-1] == '\n' || end[-1] == '\r' ||
			     ((end[-1] == ' ' || end[-1] == '\t') &&
			      !(end - 1 > buf && end[-2] == '\\'))))
		*--end = '\0';
	p = buf;
	while (*p == ' ' || *p == '\t')
		p++;
	if (*p == '\0' || *p == '#')
		return 0;
	if (*p == '!') {
		snprintf(
			errbuf, errlen,
			"persist pattern '%s': negation ('!') is not supported",
			line);
		return -EINVAL;
	}
	if (p[0] == '\\' && (p[1] == '#' || p[1] == '!'))
		p++;

	anchored = false;
	if (*p == '/') {
		anchored = true;
		while (*p == '/')
			p++;
	}
	/* A trailing '/' marks a directory; the directory takes its subtree
	 * with it, so it means the same as "X/ **" here. */
	end = p + strlen(p);
	while (end > p && end[-1] == '/')
		*--end = '\0';
	/* gitignore: a separator at the start or in the middle anchors. */
	if (strchr(p, '/'))
		anchored = true;
	/* "X/ **" covers X itself too: matching X already takes its
	 * subtree, so the trailing globstar adds nothing. */
	while (end - p > 3 && strcmp(end - 3, "/**") == 0) {
		end -= 3;
		*end = '\0';
		while (end > p && end[-1] == '/')
			*--end = '\0';
	}
	if (*p == '\0') {
		snprintf(errbuf, errlen, "persist pattern '%s' is empty", line);
		return -EINVAL;
	}

	n = 0;
	if (!anchored)
		comp[n++] = "**";
	{
		int m = split_components(p, comp + n, PERSIST_MAX_DEPTH - n);

		if (m < 0) {
			snprintf(errbuf, errlen,
				 "persist pattern '%s' is too deep", line);
			return -EINVAL;
		}
		if (n == 1 && m > 0 && is_globstar(comp[1])) {
			/* "**" unanchored is just "**" */
			memmove(comp, comp + 1, m * sizeof(*comp));
			m--;
			n = 1;
			comp[0] = "**";
		}
		n += m;
	}
	for (int i = 0; i < n; i++) {
		const char *why = glob_problem(comp[i]);

		if (why) {
			snprintf(errbuf, errlen, "persist pattern '%s': %s",
				 line, why);
			return -EINVAL;
		}
		if (strcmp(comp[i], "..") == 0 || strcmp(comp[i], ".") == 0) {
			snprintf(errbuf, errlen,
				 "persist pattern '%s': '.' and '..' are not "
				 "allowed",
				 line);
			return -EINVAL;
		}
	}

	pat.text = strdup(line);
	pat.comp = calloc(n, sizeof(char *));
	if (!pat.text || !pat.comp) {
		rc = -ENOMEM;
		goto out;
	}
	for (int i = 0; i < n; i++) {
		pat.comp[i] = strdup(comp[i]);
		if (!pat.comp[i]) {
			rc = -ENOMEM;
			goto out;
		}
		pat.ncomp++;
	}
	/* Strip the trailing newline from the stored text too. */
	pat.text[strcspn(pat.text, "\r\n")] = '\0';
	{
		struct pattern *np =
			realloc(ps->pat, (ps->npat + 1) * sizeof(*np));

		if (!np) {
			rc = -ENOMEM;
			goto out;
		}
		ps->pat = np;
		ps->pat[ps->npat++] = pat;
		return 0;
	}
out:
	for (int i = 0; i < pat.ncomp; i++)
		free(pat.comp[i]);
	free(pat.comp);
	free(pat.text);
	snprintf(errbuf, errlen, "out of memory");
	return rc;
}

int persist_add_text(struct persist_set *ps, const char *text, char *errbuf,
		     size_t errlen)
{
	const char *p = text;
	int lineno = 0, rc = 0;

	if (strncmp(p, "\xEF\xBB\xBF", 3) == 0)
		p += 3; /* a UTF-8 byte order mark (Windows editors) */
	while (*p) {
		size_t len = strcspn(p, "\n");
		char *line = strndup(p, len);
		char msg[512];

		lineno++;
		if (!line)
			return -ENOMEM;
		rc = persist_add(ps, line, msg, sizeof(msg));
		free(line);
		if (rc < 0) {
			snprintf(errbuf, errlen, "line %d: %s", lineno, msg);
			return rc;
		}
		p += len;
		if (*p == '\n')
			p++;
	}
	return 0;
}

int persist_count(const struct persist_set *ps)
{
	return ps->npat;
}

const char *persist_pattern(const struct persist_set *ps, int i)
{
	return i >= 0 && i < ps->npat ? ps->pat[i].text : NULL;
}

/* Does the whole component list x[0..nx) match pattern p[0..np)? */
static bool match_full(char *const *p, int np, char *const *x, int nx)
{
	if (np == 0)
		return nx == 0;
	if (is_globstar(p[0])) {
		for (int k = 0; k <= nx; k++)
			if (match_full(p + 1, np - 1, x + k, nx - k))
				return true;
		return false;
	}
	if (nx == 0 || fnmatch(p[0], x[0], 0) != 0)
		return false;
	return match_full(p + 1, np - 1, x + 1, nx - 1);
}

/* Can directory d[0..nd) be followed by at least one more component so
 * that the result matches p[0..np)? */
static bool match_prefix(char *const *p, int np, char *const *d, int nd)
{
	if (nd == 0)
		return np > 0;
	if (np == 0)
		return false;
	if (is_globstar(p[0]))
		return true;
	if (fnmatch(p[0], d[0], 0) != 0)
		return false;
	return match_prefix(p + 1, np - 1, d + 1, nd - 1);
}

/* Splits a relative path into components in buf; -1 if too deep/long. */
static int path_split(const char *path, char *buf, size_t buflen, char **comp)
{
	while (*path == '/')
		path++;
	if (strlen(path) >= buflen)
		return -1;
	strcpy(buf, path);
	return split_components(buf, comp, PERSIST_MAX_DEPTH);
}

bool persist_is_persisted(const struct persist_set *ps, const char *path)
{
	char buf[4096];
	char *comp[PERSIST_MAX_DEPTH];
	int n = path_split(path, buf, sizeof(buf), comp);

	if (n <= 0)
		return false;
	/* The path or any ancestor matching puts the path on Drive. */
	for (int j = 1; j <= n; j++)
		for (int i = 0; i < ps->npat; i++)
			if (match_full(ps->pat[i].comp, ps->pat[i].ncomp, comp,
				       j))
				return true;
	return false;
}

bool persist_may_contain(const struct persist_set *ps, const char *dir)
{
	char buf[4096];
	char *comp[PERSIST_MAX_DEPTH];
	int n = path_split(dir, buf, sizeof(buf), comp);

	if (n < 0)
		return false;
	for (int i = 0; i < ps->npat; i++)
		if (match_prefix(ps->pat[i].comp, ps->pat[i].ncomp, comp, n))
			return true;
	return false;
}

enum persist_class persist_classify(const struct persist_set *ps,
				    const char *path)
{
	while (*path == '/')
		path++;
	if (*path == '\0')
		return PERSIST_MERGED;
	if (persist_is_persisted(ps, path))
		return PERSIST_PERSISTED;
	if (persist_may_contain(ps, path))
		return PERSIST_MERGED;
	return PERSIST_LOCAL;
}
