/* config.c — rclone's configuration as vectur reads it: finding the file,
 * parsing rclone's INI dialect, RCLONE_CONFIG_<NAME>_<KEY> overrides, the
 * checks that turn a broken remote into a message naming the file and key,
 * and writing a refreshed token back the way rclone does. Owns no network
 * code and no token lifetime logic (auth.c). */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <json-c/json.h>
#include <openssl/crypto.h>

#include "internal.h"
#include "jwt.h"

extern char **environ;

#define CONFIG_MAX	(16 << 20) /* a real rclone.conf is a few KB */
#define ENCRYPTED_LINE	"# Encrypted rclone configuration File"
#define ENCRYPTED_MAGIC "RCLONE_ENCRYPT_V0:"

/* The keys vectur honours (DESIGN.md §3); everything else in a section is
 * rclone's business and ignored. */
enum cfg_key {
	K_TYPE,
	K_TOKEN,
	K_CLIENT_ID,
	K_CLIENT_SECRET,
	K_TOKEN_URL,
	K_ROOT_FOLDER_ID,
	K_TEAM_DRIVE,
	K_SA_FILE,
	K_SA_CREDS,
	K_SCOPE,
	K_NKEYS
};

static const char *const cfg_key_names[K_NKEYS] = {
	[K_TYPE] = "type",
	[K_TOKEN] = "token",
	[K_CLIENT_ID] = "client_id",
	[K_CLIENT_SECRET] = "client_secret",
	[K_TOKEN_URL] = "token_url",
	[K_ROOT_FOLDER_ID] = "root_folder_id",
	[K_TEAM_DRIVE] = "team_drive",
	[K_SA_FILE] = "service_account_file",
	[K_SA_CREDS] = "service_account_credentials",
	[K_SCOPE] = "scope",
};

/* One remote being loaded: where each value came from, for messages. */
struct cfg_load {
	const char *name;
	const char *path; /* the file, "" when none or ignored */
	char *buf;	  /* the file's bytes (holds secrets: cleansed) */
	size_t size;
	bool in_file;	    /* [name] exists in the file */
	char *val[K_NKEYS]; /* final values, malloc'd; NULL = unset */
	bool env[K_NKEYS];  /* value came from RCLONE_CONFIG_<NAME>_<KEY> */
};

/* ---- a growable string ------------------------------------------------ */

struct sbuf {
	char *p;
	size_t len, cap;
	bool oom;
};

static void sbuf_add(struct sbuf *b, const char *s, size_t n)
{
	char *np;
	size_t cap;

	if (b->oom)
		return;
	if (b->len + n + 1 > b->cap) {
		cap = (b->len + n + 1) * 2;
		np = malloc(cap);
		if (!np) {
			b->oom = true;
			return;
		}
		if (b->p) {
			memcpy(np, b->p, b->len);
			/* The old copy may hold tokens. */
			OPENSSL_cleanse(b->p, b->cap);
			free(b->p);
		}
		b->p = np;
		b->cap = cap;
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
}

static void sbuf_str(struct sbuf *b, const char *s)
{
	sbuf_add(b, s, strlen(s));
}

static void sbuf_free(struct sbuf *b)
{
	if (b->p)
		OPENSSL_cleanse(b->p, b->cap);
	free(b->p);
	memset(b, 0, sizeof(*b));
}

/* ---- rclone's INI dialect (goconfig) ---------------------------------- */

enum ini_kind { INI_BLANK, INI_COMMENT, INI_SECTION, INI_KEY, INI_OTHER };

struct ini_line {
	const char *start; /* first byte of the raw line */
	size_t len;	   /* without the line ending */
	size_t full;	   /* with it */
	enum ini_kind kind;
	const char *name; /* section name or key, trimmed */
	size_t name_len;
	const char *val; /* value, trimmed and unquoted */
	size_t val_len;
};

static bool ini_space(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f';
}

static void ini_trim(const char **p, const char **e)
{
	while (*p < *e && ini_space(**p))
		(*p)++;
	while (*e > *p && ini_space((*e)[-1]))
		(*e)--;
}

/* goconfig strips one pair of ", """, ' or ` quotes around a value. */
static void ini_unquote(const char **p, const char **e)
{
	size_t n = *e - *p, q = 0;

	if (n >= 6 && strncmp(*p, "\"\"\"", 3) == 0 &&
	    strncmp(*e - 3, "\"\"\"", 3) == 0)
		q = 3;
	else if (n >= 2 && (**p == '"' || **p == '\'' || **p == '`') &&
		 (*e)[-1] == **p)
		q = 1;
	*p += q;
	*e -= q;
}

static void ini_parse_key(const char *p, const char *e, struct ini_line *l)
{
	const char *sep = p, *k_end, *v;

	/* goconfig splits at the first '=' or ':'. */
	while (sep < e && *sep != '=' && *sep != ':')
		sep++;
	if (sep == e || sep == p) {
		l->kind = INI_OTHER;
		return;
	}
	k_end = sep;
	ini_trim(&p, &k_end);
	v = sep + 1;
	ini_trim(&v, &e);
	ini_unquote(&v, &e);
	l->kind = INI_KEY;
	l->name = p;
	l->name_len = k_end - p;
	l->val = v;
	l->val_len = e - v;
}

/* Reads the line at *pos and classifies it. */
static bool ini_next(const char *buf, size_t size, size_t *pos,
		     struct ini_line *l)
{
	const char *nl, *p, *e;

	if (*pos >= size)
		return false;
	memset(l, 0, sizeof(*l));
	l->start = buf + *pos;
	nl = memchr(l->start, '\n', size - *pos);
	l->full = nl ? (size_t)(nl - l->start) + 1 : size - *pos;
	l->len = nl ? (size_t)(nl - l->start) : l->full;
	if (l->len && l->start[l->len - 1] == '\r')
		l->len--;
	*pos += l->full;

	p = l->start;
	e = p + l->len;
	ini_trim(&p, &e);
	if (p == e) {
		l->kind = INI_BLANK;
	} else if (*p == '#' || *p == ';') {
		l->kind = INI_COMMENT;
	} else if (*p == '[' && e[-1] == ']' && e - p >= 2) {
		p++;
		e--;
		ini_trim(&p, &e);
		l->kind = INI_SECTION;
		l->name = p;
		l->name_len = e - p;
	} else {
		ini_parse_key(p, e, l);
	}
	return true;
}

static bool ini_is(const char *s, size_t n, const char *want)
{
	return strlen(want) == n && memcmp(s, want, n) == 0;
}

/* A UTF-8 byte order mark (editors on Windows add one) is not content. */
static size_t ini_begin(const char *buf, size_t size)
{
	return size >= 3 && memcmp(buf, "\xef\xbb\xbf", 3) == 0 ? 3 : 0;
}

/* ---- remote specs ----------------------------------------------------- */

int drive_parse_remote(const char *spec, char *name, size_t name_len,
		       char *path, size_t path_len, struct drive_err *err)
{
	const char *colon = strchr(spec, ':'), *p, *e;
	size_t n;

	if (!colon) {
		drive_err_set(err, 0, "config",
			      "\"%s\" is not a remote: expected REMOTE:[PATH] "
			      "naming an rclone remote, e.g. gdrive:runs",
			      spec);
		return -1;
	}
	n = colon - spec;
	/* rclone reads "dir/x:y" as a local path; so do we, and refuse. */
	if (n == 0 || n >= name_len || memchr(spec, '/', n) ||
	    memchr(spec, '\\', n)) {
		drive_err_set(err, 0, "config",
			      "\"%s\": \"%.*s\" is not a valid rclone remote "
			      "name",
			      spec, (int)n, spec);
		return -1;
	}
	p = colon + 1;
	e = p + strlen(p);
	while (*p == '/')
		p++;
	while (e > p && e[-1] == '/')
		e--;
	if ((size_t)(e - p) >= path_len) {
		drive_err_set(err, 0, "config", "\"%s\": path too long", spec);
		return -1;
	}
	memcpy(name, spec, n);
	name[n] = '\0';
	memcpy(path, p, e - p);
	path[e - p] = '\0';
	return 0;
}

/* ---- files ------------------------------------------------------------ */

/* Reads a whole file; returns -1 with *errnum set. */
static int config_read_file(const char *path, char **out, size_t *size,
			    int *errnum)
{
	struct stat st;
	char *buf = NULL;
	size_t got = 0;
	ssize_t n;
	int fd, rc = -1;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		*errnum = errno;
		return -1;
	}
	if (fstat(fd, &st) < 0) {
		*errnum = errno;
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		*errnum = S_ISDIR(st.st_mode) ? EISDIR : EINVAL;
		goto out;
	}
	if (st.st_size > CONFIG_MAX) {
		*errnum = EFBIG;
		goto out;
	}
	buf = malloc(st.st_size + 1);
	if (!buf) {
		*errnum = ENOMEM;
		goto out;
	}
	while (got < (size_t)st.st_size) {
		n = read(fd, buf + got, st.st_size - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			*errnum = errno;
			goto out;
		}
		if (n == 0)
			break;
		got += n;
	}
	buf[got] = '\0';
	*out = buf;
	*size = got;
	buf = NULL;
	rc = 0;
out:
	free(buf);
	close(fd);
	return rc;
}

static void config_buf_free(char *buf, size_t size)
{
	if (buf)
		OPENSSL_cleanse(buf, size);
	free(buf);
}

/* rclone's encrypted config: a comment line, then RCLONE_ENCRYPT_V0: and
 * base64 ciphertext. Either marker is enough to know we cannot parse it. */
static bool config_is_encrypted(const char *buf, size_t size)
{
	size_t pos = ini_begin(buf, size);
	struct ini_line l;
	const char *p, *e;

	while (ini_next(buf, size, &pos, &l)) {
		p = l.start;
		e = p + l.len;
		ini_trim(&p, &e);
		if (ini_is(p, e - p, ENCRYPTED_LINE) ||
		    ((size_t)(e - p) >= strlen(ENCRYPTED_MAGIC) &&
		     memcmp(p, ENCRYPTED_MAGIC, strlen(ENCRYPTED_MAGIC)) == 0))
			return true;
	}
	return false;
}

static const char *config_home(void)
{
	const char *home = getenv("HOME");
	struct passwd *pw;

	if (home && *home)
		return home;
	pw = getpwuid(getuid());
	return pw ? pw->pw_dir : NULL;
}

static bool config_exists(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0;
}

/* A relative path from the directory we started in: a daemon changes to
 * "/" once mounted, and writes refreshed tokens back to this file later. */
static void config_absolute(const char *path, char *out, size_t out_len)
{
	char cwd[PATH_MAX];

	if (path[0] != '/' && getcwd(cwd, sizeof(cwd)))
		snprintf(out, out_len, "%s/%s", cwd, path);
	else
		snprintf(out, out_len, "%s", path);
}

void drive_config_find(const char *explicit_path, char *out, size_t out_len)
{
	const char *env = getenv("RCLONE_CONFIG");
	const char *xdg = getenv("XDG_CONFIG_HOME");
	const char *home = config_home();
	char cand[PATH_MAX];

	out[0] = '\0';
	/* An explicit file is used whether it exists or not, as rclone does:
	 * falling back to another config would mount the wrong account. */
	if (explicit_path && *explicit_path) {
		config_absolute(explicit_path, out, out_len);
		return;
	}
	if (env && *env) {
		config_absolute(env, out, out_len);
		return;
	}
	if (xdg && *xdg) {
		snprintf(cand, sizeof(cand), "%s/rclone/rclone.conf", xdg);
		if (config_exists(cand))
			goto found;
	}
	if (!home)
		return;
	snprintf(cand, sizeof(cand), "%s/.config/rclone/rclone.conf", home);
	if (config_exists(cand))
		goto found;
	snprintf(cand, sizeof(cand), "%s/.rclone.conf", home);
	if (config_exists(cand))
		goto found;
	return;
found:
	snprintf(out, out_len, "%s", cand);
}

/* ---- the environment -------------------------------------------------- */

/* RCLONE_CONFIG_<NAME>_<KEY>: uppercased, '-' becomes '_' (rclone's
 * ConfigToEnv). */
static void config_env_name(const char *name, const char *key, char *out,
			    size_t out_len)
{
	char *p;

	snprintf(out, out_len, "RCLONE_CONFIG_%s_%s", name, key);
	for (p = out; *p; p++) {
		if (*p == '-')
			*p = '_';
		else if (*p >= 'a' && *p <= 'z')
			*p -= 'a' - 'A';
	}
}

static const char *config_getenv(const char *name, const char *key)
{
	char var[512];

	config_env_name(name, key, var, sizeof(var));
	return getenv(var);
}

/* ---- where a value came from ------------------------------------------ */

static void cfg_where(const struct cfg_load *ld, enum cfg_key k, char *out,
		      size_t out_len)
{
	if (ld->env[k])
		config_env_name(ld->name, cfg_key_names[k], out, out_len);
	else
		snprintf(out, out_len, "key \"%s\" in section [%s] of %s",
			 cfg_key_names[k], ld->name, ld->path);
}

/* "section [x] of FILE" or "RCLONE_CONFIG_X_* variables". */
static void cfg_section_where(const struct cfg_load *ld, char *out,
			      size_t out_len)
{
	char var[512];

	if (ld->in_file) {
		snprintf(out, out_len, "section [%s] of %s", ld->name,
			 ld->path);
		return;
	}
	config_env_name(ld->name, "*", var, sizeof(var));
	snprintf(out, out_len, "environment variables %s", var);
}

/* ---- loading ---------------------------------------------------------- */

static int cfg_set(struct cfg_load *ld, enum cfg_key k, const char *v, size_t n,
		   bool env)
{
	char *copy = strndup(v, n);

	if (!copy)
		return -1;
	if (ld->val[k]) {
		OPENSSL_cleanse(ld->val[k], strlen(ld->val[k]));
		free(ld->val[k]);
	}
	ld->val[k] = copy;
	ld->env[k] = env;
	return 0;
}

/* Collects our keys from every [name] section (goconfig merges repeated
 * sections; a later key wins). */
static int config_scan_section(struct cfg_load *ld)
{
	size_t pos = ini_begin(ld->buf, ld->size);
	bool in = false;
	struct ini_line l;
	int k;

	while (ini_next(ld->buf, ld->size, &pos, &l)) {
		if (l.kind == INI_SECTION) {
			in = ini_is(l.name, l.name_len, ld->name);
			ld->in_file |= in;
			continue;
		}
		if (!in || l.kind != INI_KEY)
			continue;
		for (k = 0; k < K_NKEYS; k++) {
			if (!ini_is(l.name, l.name_len, cfg_key_names[k]))
				continue;
			if (cfg_set(ld, k, l.val, l.val_len, false) < 0)
				return -1;
		}
	}
	return 0;
}

static int config_apply_env(struct cfg_load *ld)
{
	const char *v;
	int k;

	for (k = 0; k < K_NKEYS; k++) {
		v = config_getenv(ld->name, cfg_key_names[k]);
		if (v && cfg_set(ld, k, v, strlen(v), true) < 0)
			return -1;
	}
	return 0;
}

/* The remotes a user could have meant: sections of the file, then those
 * defined by RCLONE_CONFIG_<NAME>_TYPE. */
static void config_known_remotes(const struct cfg_load *ld, struct sbuf *b)
{
	static const char pre[] = "RCLONE_CONFIG_", suf[] = "_TYPE";
	size_t pos, n, i;
	struct ini_line l;
	char **e;

	if (ld->buf) {
		pos = ini_begin(ld->buf, ld->size);
		while (ini_next(ld->buf, ld->size, &pos, &l)) {
			if (l.kind != INI_SECTION)
				continue;
			sbuf_str(b, b->len ? ", " : "");
			sbuf_add(b, l.name, l.name_len);
		}
	}
	for (e = environ; e && *e; e++) {
		const char *eq = strchr(*e, '=');

		if (strncmp(*e, pre, strlen(pre)) != 0 || !eq)
			continue;
		n = eq - *e;
		if (n <= strlen(pre) + strlen(suf) ||
		    memcmp(eq - strlen(suf), suf, strlen(suf)) != 0)
			continue;
		sbuf_str(b, b->len ? ", " : "");
		for (i = strlen(pre); i < n - strlen(suf); i++) {
			char c = (*e)[i];

			c = c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c;
			sbuf_add(b, &c, 1);
		}
		sbuf_str(b, " (environment)");
	}
}

static void config_err_unknown(const struct cfg_load *ld, struct drive_err *err)
{
	struct sbuf known = {0};
	char var[512];

	config_env_name(ld->name, "type", var, sizeof(var));
	config_known_remotes(ld, &known);
	if (*ld->path)
		drive_err_set(err, 0, "config",
			      "remote \"%s\" not found: no section [%s] in %s "
			      "and no %s in the environment (known remotes: "
			      "%s)",
			      ld->name, ld->name, ld->path, var,
			      known.len ? known.p : "none");
	else
		drive_err_set(err, 0, "config",
			      "remote \"%s\" not found: no rclone config file "
			      "(looked for --config, $RCLONE_CONFIG, "
			      "$XDG_CONFIG_HOME/rclone/rclone.conf, "
			      "~/.config/rclone/rclone.conf, ~/.rclone.conf) "
			      "and no %s in the environment (known remotes: "
			      "%s)",
			      ld->name, var, known.len ? known.p : "none");
	sbuf_free(&known);
}

/* Reads the file unless it is absent or encrypted while the environment
 * defines the remote by itself (what rclone's own docs suggest doing). */
static int config_load_file(struct cfg_load *ld, bool env_defines,
			    struct drive_err *err)
{
	char var[512];
	int errnum = 0;

	if (!*ld->path)
		return 0;
	if (config_read_file(ld->path, &ld->buf, &ld->size, &errnum) < 0) {
		if (errnum == ENOENT && env_defines) {
			ld->path = "";
			return 0;
		}
		drive_err_set(err, 0, "config",
			      "cannot read rclone config %s: %s", ld->path,
			      strerror(errnum));
		return -1;
	}
	if (!config_is_encrypted(ld->buf, ld->size))
		return config_scan_section(ld);
	if (env_defines) {
		config_buf_free(ld->buf, ld->size);
		ld->buf = NULL;
		ld->path = "";
		return 0;
	}
	config_env_name(ld->name, "*", var, sizeof(var));
	drive_err_set(err, 0, "config",
		      "%s is an encrypted rclone config; vectur cannot read "
		      "encrypted rclone configs. Write a decrypted copy with "
		      "`rclone config show > FILE` (mode 0600) and pass "
		      "--config FILE, or define the remote with %s "
		      "environment variables",
		      ld->path, var);
	return -1;
}

static int config_check_type(const struct cfg_load *ld, struct drive_err *err)
{
	char where[1200];

	if (ld->val[K_TYPE] && strcmp(ld->val[K_TYPE], "drive") == 0)
		return 0;
	if (!ld->val[K_TYPE] || !*ld->val[K_TYPE]) {
		cfg_section_where(ld, where, sizeof(where));
		drive_err_set(err, 0, "config",
			      "remote \"%s\": %s has no \"type\" key; vectur "
			      "needs type = drive",
			      ld->name, where);
		return -1;
	}
	cfg_where(ld, K_TYPE, where, sizeof(where));
	drive_err_set(err, 0, "config",
		      "remote \"%s\" has type = %.64s (%s), but vectur only "
		      "mounts remotes of type drive (for crypt or union "
		      "remotes, name the underlying drive remote)",
		      ld->name, ld->val[K_TYPE], where);
	return -1;
}

/* rclone expands ~ and $VAR in service_account_file (env.ShellExpand). */
static int config_expand(const char *in, char *out, size_t out_len)
{
	struct sbuf b = {0};
	const char *p = in, *home = config_home();
	int rc = -1;

	if (p[0] == '~' && (p[1] == '/' || p[1] == '\0') && home) {
		sbuf_str(&b, home);
		p++;
	}
	while (*p) {
		const char *s = p + 1, *e;
		char var[256];
		bool brace = *s == '{';
		const char *v;

		if (*p != '$') {
			sbuf_add(&b, p++, 1);
			continue;
		}
		s += brace;
		e = s;
		while ((*e >= 'A' && *e <= 'Z') || (*e >= 'a' && *e <= 'z') ||
		       (*e >= '0' && *e <= '9') || *e == '_')
			e++;
		if (e == s || (brace && *e != '}') ||
		    (size_t)(e - s) >= sizeof(var)) {
			sbuf_add(&b, p++, 1);
			continue;
		}
		snprintf(var, sizeof(var), "%.*s", (int)(e - s), s);
		v = getenv(var);
		sbuf_str(&b, v ? v : "");
		p = e + brace;
	}
	if (!b.oom && b.len < out_len) {
		snprintf(out, out_len, "%s", b.p ? b.p : "");
		rc = 0;
	}
	sbuf_free(&b);
	return rc;
}

static int config_copy(const struct cfg_load *ld, enum cfg_key k, char *dst,
		       size_t dst_len, struct drive_err *err)
{
	char where[1200];

	if (!ld->val[k])
		return 0;
	if (strlen(ld->val[k]) < dst_len) {
		strcpy(dst, ld->val[k]);
		return 0;
	}
	cfg_where(ld, k, where, sizeof(where));
	drive_err_set(err, 0, "config",
		      "remote \"%s\": the value of %s is too long (%zu bytes, "
		      "at most %zu)",
		      ld->name, where, strlen(ld->val[k]), dst_len - 1);
	return -1;
}

static int config_fill(struct cfg_load *ld, struct drive_config *cfg,
		       struct drive_err *err)
{
	char where[1200];

	snprintf(cfg->source, sizeof(cfg->source), "%s",
		 ld->in_file ? ld->path : "environment");
	if (config_copy(ld, K_CLIENT_ID, cfg->client_id, sizeof(cfg->client_id),
			err) < 0 ||
	    config_copy(ld, K_CLIENT_SECRET, cfg->client_secret,
			sizeof(cfg->client_secret), err) < 0 ||
	    config_copy(ld, K_TOKEN_URL, cfg->token_url, sizeof(cfg->token_url),
			err) < 0 ||
	    config_copy(ld, K_SCOPE, cfg->scope, sizeof(cfg->scope), err) < 0 ||
	    config_copy(ld, K_ROOT_FOLDER_ID, cfg->root_folder_id,
			sizeof(cfg->root_folder_id), err) < 0 ||
	    config_copy(ld, K_TEAM_DRIVE, cfg->team_drive,
			sizeof(cfg->team_drive), err) < 0)
		return -1;
	if (!cfg->scope[0])
		strcpy(cfg->scope, "drive");
	strcpy(cfg->endpoint, DRIVE_DEFAULT_ENDPOINT);
	if (ld->val[K_SA_FILE] && *ld->val[K_SA_FILE] &&
	    config_expand(ld->val[K_SA_FILE], cfg->service_account_file,
			  sizeof(cfg->service_account_file)) < 0) {
		cfg_where(ld, K_SA_FILE, where, sizeof(where));
		drive_err_set(err, 0, "config",
			      "remote \"%s\": the path in %s is too long",
			      ld->name, where);
		return -1;
	}
	if (ld->val[K_SA_CREDS] && *ld->val[K_SA_CREDS]) {
		cfg->service_account_credentials = ld->val[K_SA_CREDS];
		ld->val[K_SA_CREDS] = NULL;
	}
	if (ld->val[K_TOKEN] && *ld->val[K_TOKEN]) {
		cfg->token_json = ld->val[K_TOKEN];
		ld->val[K_TOKEN] = NULL;
		cfg->token_from_env = ld->env[K_TOKEN];
	}
	return 0;
}

static bool json_has_string(json_object *o, const char *k, bool nonempty)
{
	json_object *v;

	if (!json_object_object_get_ex(o, k, &v) ||
	    !json_object_is_type(v, json_type_string))
		return false;
	return !nonempty || json_object_get_string_len(v) > 0;
}

/* The token must be rclone's JSON with a refresh token: without one the
 * mount would die an hour in. The value itself never enters a message. */
static int config_check_token(const struct cfg_load *ld,
			      const struct drive_config *cfg,
			      struct drive_err *err)
{
	enum json_tokener_error jerr = json_tokener_success;
	const char *missing = NULL;
	char where[1200];
	json_object *o;
	int rc = -1;

	cfg_where(ld, K_TOKEN, where, sizeof(where));
	o = json_tokener_parse_verbose(cfg->token_json, &jerr);
	if (!o || !json_object_is_type(o, json_type_object)) {
		drive_err_set(err, 0, "config",
			      "remote \"%s\": %s is not rclone's token JSON "
			      "(%s); re-authorize with: rclone config "
			      "reconnect %s:",
			      ld->name, where,
			      o ? "not an object"
				: json_tokener_error_desc(jerr),
			      ld->name);
		goto out;
	}
	if (!json_has_string(o, "access_token", false))
		missing = "access_token";
	else if (!json_has_string(o, "refresh_token", true))
		missing = "refresh_token";
	if (missing) {
		drive_err_set(err, 0, "config",
			      "remote \"%s\": the token in %s has no \"%s\"; "
			      "re-authorize with: rclone config reconnect %s:",
			      ld->name, where, missing, ld->name);
		goto out;
	}
	rc = 0;
out:
	json_object_put(o);
	return rc;
}

/* A broken key file should stop the mount before it starts, with the
 * file named, not an hour later in a refresh. */
static int config_check_service_account(const struct cfg_load *ld,
					const struct drive_config *cfg,
					struct drive_err *err)
{
	struct drive_sa_key key;
	char where[2400], src[1200];
	int rc;

	if (cfg->service_account_credentials) {
		cfg_where(ld, K_SA_CREDS, where, sizeof(where));
		rc = drive_sa_key_parse(cfg->service_account_credentials, where,
					&key, err);
	} else {
		cfg_where(ld, K_SA_FILE, src, sizeof(src));
		snprintf(where, sizeof(where), "service_account_file %s (%s)",
			 cfg->service_account_file, src);
		rc = drive_sa_key_load_file(cfg->service_account_file, where,
					    &key, err);
	}
	if (rc == 0)
		drive_sa_key_free(&key);
	return rc;
}

static int config_check_credentials(const struct cfg_load *ld,
				    const struct drive_config *cfg,
				    struct drive_err *err)
{
	char where[1200];

	/* As in rclone's drive backend, a service account wins over a
	 * token. */
	if (cfg->service_account_credentials || cfg->service_account_file[0])
		return config_check_service_account(ld, cfg, err);
	if (cfg->token_json)
		return config_check_token(ld, cfg, err);
	cfg_section_where(ld, where, sizeof(where));
	drive_err_set(err, 0, "config",
		      "remote \"%s\" has no credentials: %s has no \"token\", "
		      "\"service_account_file\" or "
		      "\"service_account_credentials\"; authorize with: rclone "
		      "config reconnect %s:",
		      ld->name, where, ld->name);
	return -1;
}

static void cfg_load_free(struct cfg_load *ld)
{
	int k;

	config_buf_free(ld->buf, ld->size);
	for (k = 0; k < K_NKEYS; k++) {
		if (ld->val[k])
			OPENSSL_cleanse(ld->val[k], strlen(ld->val[k]));
		free(ld->val[k]);
	}
}

int drive_config_load(const char *path, const char *name,
		      struct drive_config *cfg, struct drive_err *err)
{
	struct cfg_load ld = {.name = name, .path = path ? path : ""};
	const char *env_type;
	int rc = -1;

	memset(cfg, 0, sizeof(*cfg));
	if (!name || !*name || strlen(name) >= sizeof(cfg->name) ||
	    strlen(ld.path) >= sizeof(cfg->source)) {
		drive_err_set(err, 0, "config", "invalid remote name or path");
		return -1;
	}
	strcpy(cfg->name, name);
	env_type = config_getenv(name, "type");
	if (config_load_file(&ld, env_type != NULL, err) < 0)
		goto out;
	if (!ld.in_file && !env_type) {
		config_err_unknown(&ld, err);
		goto out;
	}
	if (config_apply_env(&ld) < 0) {
		drive_err_set(err, 0, "config", "out of memory");
		goto out;
	}
	if (config_check_type(&ld, err) < 0 || config_fill(&ld, cfg, err) < 0 ||
	    config_check_credentials(&ld, cfg, err) < 0)
		goto out;
	rc = 0;
out:
	cfg_load_free(&ld);
	if (rc < 0) {
		drive_config_free(cfg);
		snprintf(cfg->name, sizeof(cfg->name), "%s", name ? name : "");
	}
	return rc;
}

void drive_config_free(struct drive_config *cfg)
{
	if (!cfg)
		return;
	if (cfg->token_json) {
		OPENSSL_cleanse(cfg->token_json, strlen(cfg->token_json));
		free(cfg->token_json);
	}
	if (cfg->service_account_credentials) {
		OPENSSL_cleanse(cfg->service_account_credentials,
				strlen(cfg->service_account_credentials));
		free(cfg->service_account_credentials);
	}
	OPENSSL_cleanse(cfg, sizeof(*cfg));
}

/* ---- writing a refreshed token back ----------------------------------- */

/* The new file: every byte as it was, except the `token` line(s) of [name]
 * (replaced, keeping their line ending) or, when absent, a new one after
 * the section's last key. A missing section is appended. */
static void config_with_token(const char *buf, size_t size, const char *name,
			      const char *token, struct sbuf *out)
{
	size_t pos = ini_begin(buf, size), ins = (size_t)-1, end;
	bool in = false, first = false, seen = false, has_token = false;
	const char *eol = "\n";
	struct ini_line l;

	/* Pass 1: is there a token line, and where would a new one go. */
	while (ini_next(buf, size, &pos, &l)) {
		if (l.kind == INI_SECTION) {
			in = ini_is(l.name, l.name_len, name);
			first = in && !seen;
			if (first) {
				seen = true;
				ins = pos;
				if (l.full > l.len + 1)
					eol = "\r\n";
			}
		} else if (in && l.kind == INI_KEY) {
			has_token |= ini_is(l.name, l.name_len, "token");
			if (first)
				ins = pos;
		}
	}

	/* Pass 2: copy, replacing token lines of [name]. */
	sbuf_add(out, buf, ini_begin(buf, size));
	pos = ini_begin(buf, size);
	in = false;
	while (ini_next(buf, size, &pos, &l)) {
		if (l.kind == INI_SECTION)
			in = ini_is(l.name, l.name_len, name);
		if (in && l.kind == INI_KEY &&
		    ini_is(l.name, l.name_len, "token")) {
			sbuf_str(out, "token = ");
			sbuf_str(out, token);
			sbuf_add(out, l.start + l.len, l.full - l.len);
		} else {
			sbuf_add(out, l.start, l.full);
		}
		if (pos == ins && !has_token) {
			if (l.full == l.len)
				sbuf_str(out, eol);
			sbuf_str(out, "token = ");
			sbuf_str(out, token);
			sbuf_str(out, eol);
		}
	}
	if (seen)
		return;
	end = out->len;
	if (end && out->p[end - 1] != '\n')
		sbuf_str(out, eol);
	if (end)
		sbuf_str(out, eol);
	sbuf_str(out, "[");
	sbuf_str(out, name);
	sbuf_str(out, "]");
	sbuf_str(out, eol);
	sbuf_str(out, "token = ");
	sbuf_str(out, token);
	sbuf_str(out, eol);
}

static int write_all(int fd, const char *p, size_t n)
{
	ssize_t w;

	while (n) {
		w = write(fd, p, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return -1;
		p += w;
		n -= w;
	}
	return 0;
}

/* Temp file in the same directory (so rename is atomic), mode 0600 from
 * the start, the original owner kept when we may (a root mount refreshing
 * a user's config must not take it over), fsync, rename, fsync the dir. */
static int config_write_atomic(const char *path, const char *data, size_t len,
			       const struct stat *orig)
{
	char tmp[PATH_MAX + 32], dir[PATH_MAX];
	const char *slash = strrchr(path, '/');
	int fd, dfd, saved, n;

	if (slash)
		snprintf(dir, sizeof(dir), "%.*s",
			 (int)(slash == path ? 1 : slash - path), path);
	else
		strcpy(dir, ".");
	n = snprintf(tmp, sizeof(tmp), "%s/.%s.vectur-XXXXXX", dir,
		     slash ? slash + 1 : path);
	if (n < 0 || (size_t)n >= sizeof(tmp)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	fd = mkostemp(tmp, O_CLOEXEC);
	if (fd < 0)
		return -1;
	if (fchmod(fd, 0600) < 0)
		goto fail;
	if (fchown(fd, orig->st_uid, orig->st_gid) < 0) {
		/* Not permitted unless root; the file is ours then anyway. */
	}
	if (write_all(fd, data, len) < 0 || fsync(fd) < 0)
		goto fail;
	if (close(fd) < 0) {
		fd = -1;
		goto fail;
	}
	fd = -1;
	if (rename(tmp, path) < 0)
		goto fail;
	dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd >= 0) {
		fsync(dfd);
		close(dfd);
	}
	return 0;
fail:
	saved = errno;
	if (fd >= 0)
		close(fd);
	unlink(tmp);
	errno = saved;
	return -1;
}

int drive_config_save_token(const char *path, const char *name,
			    const char *token_json, struct drive_err *err)
{
	struct sbuf out = {0};
	char real[PATH_MAX];
	char *buf = NULL;
	struct stat st;
	size_t size = 0;
	int errnum = 0, rc = -1;

	if (!path || !*path || !name || !*name || !token_json ||
	    strpbrk(token_json, "\r\n")) {
		drive_err_set(err, 0, "config",
			      "cannot save token of remote \"%s\": bad "
			      "arguments",
			      name ? name : "");
		return -1;
	}
	/* rclone writes through a symlinked config to its target. */
	if (!realpath(path, real) || stat(real, &st) < 0 ||
	    config_read_file(real, &buf, &size, &errnum) < 0) {
		drive_err_set(err, 0, "config",
			      "cannot save the refreshed token of remote "
			      "\"%s\" to %s: %s",
			      name, path, strerror(errnum ? errnum : errno));
		goto out;
	}
	if (config_is_encrypted(buf, size)) {
		drive_err_set(err, 0, "config",
			      "cannot save the refreshed token of remote "
			      "\"%s\": %s is an encrypted rclone config",
			      name, path);
		goto out;
	}
	config_with_token(buf, size, name, token_json, &out);
	if (out.oom || config_write_atomic(real, out.p, out.len, &st) < 0) {
		drive_err_set(err, 0, "config",
			      "cannot save the refreshed token of remote "
			      "\"%s\" to %s: %s",
			      name, path, strerror(out.oom ? ENOMEM : errno));
		goto out;
	}
	rc = 0;
out:
	sbuf_free(&out);
	config_buf_free(buf, size);
	return rc;
}
