/* test_config.c — rclone configuration as vectur reads it (drive/config.c):
 * remote specs, where the config file is found, the INI dialect, env over
 * file, the errors a user sees for a broken remote, and the token
 * write-back (byte-for-byte, mode 0600, atomic). */
#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdarg.h>
#include <sys/stat.h>
#include <unistd.h>

#include <json-c/json.h>

#include "internal.h"
#include "t.h"

extern char **environ;

#define TOKEN_OK                                                               \
	"{\"access_token\":\"ya29.SECRET-ACCESS\",\"token_type\":\"Bearer\","  \
	"\"refresh_token\":\"1//SECRET-REFRESH\","                             \
	"\"expiry\":\"2026-03-16T13:57:58.955387075Z\"}"

static char dir[256];

/* ---- helpers ---------------------------------------------------------- */

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *f)
{
	return remove(p);
}

/* Every test starts from an empty directory and no rclone variables. */
static void setup(void)
{
	char **e, name[256];
	int again = 1;

	while (again) {
		again = 0;
		for (e = environ; *e; e++) {
			if (strncmp(*e, "RCLONE_", 7) != 0 &&
			    strncmp(*e, "XDG_CONFIG_HOME=", 16) != 0)
				continue;
			snprintf(name, sizeof(name), "%.*s",
				 (int)(strchr(*e, '=') - *e), *e);
			unsetenv(name);
			again = 1;
			break;
		}
	}
	if (dir[0])
		nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	strcpy(dir, "/tmp/vectur-test-config-XXXXXX");
	if (!mkdtemp(dir))
		abort();
	setenv("HOME", dir, 1);
}

static const char *path_in(const char *fmt, ...)
{
	static char bufs[4][512];
	static int n;
	char rel[256], *out = bufs[n++ % 4];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(rel, sizeof(rel), fmt, ap);
	va_end(ap);
	snprintf(out, 512, "%s/%s", dir, rel);
	return out;
}

static void write_file(const char *path, const char *text, mode_t mode)
{
	char parent[512], *slash;
	int fd;

	snprintf(parent, sizeof(parent), "%s", path);
	for (slash = parent + strlen(dir) + 1; (slash = strchr(slash, '/'));
	     slash++) {
		*slash = '\0';
		mkdir(parent, 0700);
		*slash = '/';
	}
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);
	if (fd < 0 || write(fd, text, strlen(text)) != (ssize_t)strlen(text))
		abort();
	fchmod(fd, mode);
	close(fd);
}

static char *read_file(const char *path)
{
	static char buf[65536];
	ssize_t n;
	int fd = open(path, O_RDONLY);

	if (fd < 0)
		return NULL;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	buf[n < 0 ? 0 : n] = '\0';
	return buf;
}

/* Writes rclone.conf; the path stays valid until the next setup(). */
static const char *conf(const char *text)
{
	static char p[512];

	snprintf(p, sizeof(p), "%s", path_in("rclone.conf"));
	write_file(p, text, 0600);
	return p;
}

static int load(const char *path, const char *name, struct drive_config *cfg,
		struct drive_err *err)
{
	drive_err_clear(err);
	return drive_config_load(path, name, cfg, err);
}

static bool has(const char *hay, const char *needle)
{
	return hay && strstr(hay, needle) != NULL;
}

/* Fails the test if the message shows any of the secrets. */
static void check_no_secret(const char *msg)
{
	CHECK(!has(msg, "SECRET"));
	CHECK(!has(msg, "BEGIN PRIVATE KEY"));
}

/* ---- remote specs ----------------------------------------------------- */

static void test_parse_remote_splits_name_and_path(void)
{
	char name[64], path[256];
	struct drive_err err;

	CHECK_INT(drive_parse_remote("gdrive:runs/exp1", name, sizeof(name),
				     path, sizeof(path), &err),
		  0);
	CHECK_STR(name, "gdrive");
	CHECK_STR(path, "runs/exp1");
}

static void test_parse_remote_strips_slashes_from_path(void)
{
	char name[64], path[256];
	struct drive_err err;

	CHECK_INT(drive_parse_remote("g-d.2:/a/b//", name, sizeof(name), path,
				     sizeof(path), &err),
		  0);
	CHECK_STR(name, "g-d.2");
	CHECK_STR(path, "a/b");
	CHECK_INT(drive_parse_remote("gdrive:", name, sizeof(name), path,
				     sizeof(path), &err),
		  0);
	CHECK_STR(path, "");
	CHECK_INT(drive_parse_remote("gdrive:/", name, sizeof(name), path,
				     sizeof(path), &err),
		  0);
	CHECK_STR(path, "");
}

static void test_parse_remote_keeps_colons_in_path(void)
{
	char name[64], path[256];
	struct drive_err err;

	CHECK_INT(drive_parse_remote("gdrive:a:b", name, sizeof(name), path,
				     sizeof(path), &err),
		  0);
	CHECK_STR(name, "gdrive");
	CHECK_STR(path, "a:b");
}

static void test_parse_remote_without_colon_fails(void)
{
	char name[64], path[256];
	struct drive_err err;

	drive_err_clear(&err);
	CHECK_INT(drive_parse_remote("gdrive", name, sizeof(name), path,
				     sizeof(path), &err),
		  -1);
	CHECK(has(err.message, "gdrive"));
	CHECK(has(err.message, ":"));
}

static void test_parse_remote_empty_or_long_name_fails(void)
{
	char name[8], path[256];
	struct drive_err err;

	CHECK_INT(drive_parse_remote(":path", name, sizeof(name), path,
				     sizeof(path), &err),
		  -1);
	CHECK_INT(drive_parse_remote("averyveryverylongname:x", name,
				     sizeof(name), path, sizeof(path), &err),
		  -1);
	CHECK_INT(drive_parse_remote("bad/name:x", name, sizeof(name), path,
				     sizeof(path), &err),
		  -1);
}

/* ---- finding the file ------------------------------------------------- */

static void test_find_uses_explicit_path_even_if_missing(void)
{
	char out[512];

	setup();
	write_file(path_in(".config/rclone/rclone.conf"), "", 0600);
	setenv("RCLONE_CONFIG", path_in("env.conf"), 1);
	drive_config_find(path_in("nope.conf"), out, sizeof(out));
	CHECK_STR(out, path_in("nope.conf"));
}

/* --config rclone.conf from the directory the mount was started in: the
 * daemon changes to "/" and then wrote refreshed tokens to /rclone.conf
 * (ENOENT at every refresh), and could not re-read the file either. */
static void test_find_makes_a_relative_path_absolute(void)
{
	char out[512], cwd[512], want[1100];

	setup();
	CHECK(getcwd(cwd, sizeof(cwd)) != NULL);
	drive_config_find("rclone.conf", out, sizeof(out));
	snprintf(want, sizeof(want), "%s/rclone.conf", cwd);
	CHECK_STR(out, want);
	setenv("RCLONE_CONFIG", "sub/env.conf", 1);
	drive_config_find(NULL, out, sizeof(out));
	snprintf(want, sizeof(want), "%s/sub/env.conf", cwd);
	CHECK_STR(out, want);
}

static void test_find_uses_rclone_config_env_before_defaults(void)
{
	char out[512];

	setup();
	write_file(path_in(".config/rclone/rclone.conf"), "", 0600);
	setenv("RCLONE_CONFIG", path_in("env.conf"), 1);
	drive_config_find(NULL, out, sizeof(out));
	CHECK_STR(out, path_in("env.conf"));
	drive_config_find("", out, sizeof(out));
	CHECK_STR(out, path_in("env.conf"));
}

static void test_find_prefers_xdg_config_home(void)
{
	char out[512];

	setup();
	write_file(path_in("xdg/rclone/rclone.conf"), "", 0600);
	write_file(path_in(".config/rclone/rclone.conf"), "", 0600);
	write_file(path_in(".rclone.conf"), "", 0600);
	setenv("XDG_CONFIG_HOME", path_in("xdg"), 1);
	drive_config_find(NULL, out, sizeof(out));
	CHECK_STR(out, path_in("xdg/rclone/rclone.conf"));
}

static void test_find_uses_dot_config_when_xdg_has_none(void)
{
	char out[512];

	setup();
	write_file(path_in(".config/rclone/rclone.conf"), "", 0600);
	write_file(path_in(".rclone.conf"), "", 0600);
	setenv("XDG_CONFIG_HOME", path_in("xdg"), 1);
	drive_config_find(NULL, out, sizeof(out));
	CHECK_STR(out, path_in(".config/rclone/rclone.conf"));
}

static void test_find_falls_back_to_hidden_rclone_conf(void)
{
	char out[512];

	setup();
	write_file(path_in(".rclone.conf"), "", 0600);
	drive_config_find(NULL, out, sizeof(out));
	CHECK_STR(out, path_in(".rclone.conf"));
}

static void test_find_gives_empty_when_no_file_exists(void)
{
	char out[512] = "junk";

	setup();
	drive_config_find(NULL, out, sizeof(out));
	CHECK_STR(out, "");
}

/* ---- loading ---------------------------------------------------------- */

static void test_load_reads_every_honoured_key(void)
{
	struct drive_config cfg;
	struct drive_err err;
	const char *p;

	setup();
	p = conf("# my remotes\n"
		 "[other]\n"
		 "type = drive\n"
		 "client_id = wrong\n"
		 "\n"
		 "[gdrive]\n"
		 "  type = drive  \n"
		 "; a comment\n"
		 "client_id = 123.apps.googleusercontent.com\n"
		 "client_secret=SECRET-CLIENT\n"
		 "scope = drive.file\n"
		 "root_folder_id = 1AbC\n"
		 "team_drive = 0TD\n"
		 "token_url = http://127.0.0.1:1/token\n"
		 "chunk_size = 64M\n"
		 "token = " TOKEN_OK "\n");
	CHECK_INT(load(p, "gdrive", &cfg, &err), 0);
	CHECK_STR(cfg.name, "gdrive");
	CHECK_STR(cfg.source, p);
	CHECK_STR(cfg.client_id, "123.apps.googleusercontent.com");
	CHECK_STR(cfg.client_secret, "SECRET-CLIENT");
	CHECK_STR(cfg.scope, "drive.file");
	CHECK_STR(cfg.root_folder_id, "1AbC");
	CHECK_STR(cfg.team_drive, "0TD");
	CHECK_STR(cfg.token_url, "http://127.0.0.1:1/token");
	CHECK_STR(cfg.token_json, TOKEN_OK);
	CHECK_STR(cfg.endpoint, "https://www.googleapis.com");
	CHECK(!cfg.token_from_env);
	CHECK(cfg.service_account_credentials == NULL);
	drive_config_free(&cfg);
}

static void test_load_defaults_scope_and_endpoint(void)
{
	struct drive_config cfg;
	struct drive_err err;

	setup();
	CHECK_INT(load(conf("[g]\ntype = drive\ntoken = " TOKEN_OK "\n"), "g",
		       &cfg, &err),
		  0);
	CHECK_STR(cfg.scope, "drive");
	CHECK_STR(cfg.endpoint, DRIVE_DEFAULT_ENDPOINT);
	CHECK_STR(cfg.client_id, "");
	CHECK_STR(cfg.token_url, "");
	drive_config_free(&cfg);
}

static void test_load_accepts_crlf_bom_and_quotes(void)
{
	struct drive_config cfg;
	struct drive_err err;

	setup();
	CHECK_INT(load(conf("\xef\xbb\xbf[g]\r\ntype = drive\r\n"
			    "client_id = \"quoted id\"\r\n"
			    "root_folder_id = 'x'\r\n"
			    "token = " TOKEN_OK "\r\n"),
		       "g", &cfg, &err),
		  0);
	CHECK_STR(cfg.client_id, "quoted id");
	CHECK_STR(cfg.root_folder_id, "x");
	CHECK_STR(cfg.token_json, TOKEN_OK);
	drive_config_free(&cfg);
}

static void test_load_later_duplicate_key_wins(void)
{
	struct drive_config cfg;
	struct drive_err err;

	setup();
	CHECK_INT(load(conf("[g]\ntype = drive\nclient_id = a\n"
			    "token = " TOKEN_OK "\n[h]\nclient_id = h\n"
			    "[g]\nclient_id = b\n"),
		       "g", &cfg, &err),
		  0);
	CHECK_STR(cfg.client_id, "b");
	drive_config_free(&cfg);
}

static void test_env_overrides_file_key(void)
{
	struct drive_config cfg;
	struct drive_err err;
	const char *p;

	setup();
	p = conf("[gdrive]\ntype = drive\nclient_id = from-file\n"
		 "root_folder_id = file-root\ntoken = " TOKEN_OK "\n");
	setenv("RCLONE_CONFIG_GDRIVE_CLIENT_ID", "from-env", 1);
	CHECK_INT(load(p, "gdrive", &cfg, &err), 0);
	CHECK_STR(cfg.client_id, "from-env");
	CHECK_STR(cfg.root_folder_id, "file-root");
	CHECK_STR(cfg.source, p);
	CHECK(!cfg.token_from_env);
	drive_config_free(&cfg);
}

static void test_env_token_is_marked_from_env(void)
{
	struct drive_config cfg;
	struct drive_err err;
	const char *p;

	setup();
	p = conf("[gdrive]\ntype = drive\ntoken = {\"bad\"\n");
	setenv("RCLONE_CONFIG_GDRIVE_TOKEN", TOKEN_OK, 1);
	CHECK_INT(load(p, "gdrive", &cfg, &err), 0);
	CHECK_STR(cfg.token_json, TOKEN_OK);
	CHECK(cfg.token_from_env);
	drive_config_free(&cfg);
}

static void test_env_only_remote_needs_type(void)
{
	struct drive_config cfg;
	struct drive_err err;

	setup();
	setenv("RCLONE_CONFIG_MY_DRIVE_TOKEN", TOKEN_OK, 1);
	CHECK_INT(load("", "my-drive", &cfg, &err), -1);
	CHECK(has(err.message, "RCLONE_CONFIG_MY_DRIVE_TYPE"));
	CHECK_STR(err.reason, "config");

	setenv("RCLONE_CONFIG_MY_DRIVE_TYPE", "drive", 1);
	CHECK_INT(load("", "my-drive", &cfg, &err), 0);
	CHECK_STR(cfg.source, "environment");
	CHECK(cfg.token_from_env);
	CHECK_STR(cfg.scope, "drive");
	drive_config_free(&cfg);
}

static void test_env_only_remote_ignores_other_file(void)
{
	struct drive_config cfg;
	struct drive_err err;

	setup();
	setenv("RCLONE_CONFIG_E_TYPE", "drive", 1);
	setenv("RCLONE_CONFIG_E_TOKEN", TOKEN_OK, 1);
	CHECK_INT(load(conf("[other]\ntype = drive\n"), "e", &cfg, &err), 0);
	CHECK_STR(cfg.source, "environment");
	drive_config_free(&cfg);
	/* A --config that does not exist is fine when env has it all. */
	CHECK_INT(load(path_in("missing.conf"), "e", &cfg, &err), 0);
	drive_config_free(&cfg);
}

/* ---- errors a user sees ----------------------------------------------- */

static void test_unknown_remote_lists_known_ones(void)
{
	struct drive_config cfg;
	struct drive_err err;
	const char *p;

	setup();
	p = conf("[alpha]\ntype = drive\n[beta]\ntype = s3\n");
	setenv("RCLONE_CONFIG_GAMMA_TYPE", "drive", 1);
	CHECK_INT(load(p, "gdrive", &cfg, &err), -1);
	CHECK_STR(err.reason, "config");
	CHECK(has(err.message, "\"gdrive\""));
	CHECK(has(err.message, p));
	CHECK(has(err.message, "[gdrive]"));
	CHECK(has(err.message, "alpha, beta, gamma"));
}

static void test_unknown_remote_without_any_file(void)
{
	struct drive_config cfg;
	struct drive_err err;

	setup();
	CHECK_INT(load("", "gdrive", &cfg, &err), -1);
	CHECK(has(err.message, "no rclone config file"));
	CHECK(has(err.message, "RCLONE_CONFIG_GDRIVE_TYPE"));
}

static void test_wrong_type_names_file_and_key(void)
{
	struct drive_config cfg;
	struct drive_err err;
	const char *p;

	setup();
	p = conf("[gdrive]\ntype = s3\ntoken = " TOKEN_OK "\n");
	CHECK_INT(load(p, "gdrive", &cfg, &err), -1);
	CHECK(has(err.message, "type = s3"));
	CHECK(has(err.message, p));
	CHECK(has(err.message, "key \"type\" in section [gdrive]"));
	CHECK(has(err.message, "drive"));

	setenv("RCLONE_CONFIG_GDRIVE_TYPE", "crypt", 1);
	CHECK_INT(load(p, "gdrive", &cfg, &err), -1);
	CHECK(has(err.message, "type = crypt"));
	CHECK(has(err.message, "RCLONE_CONFIG_GDRIVE_TYPE"));
}

static void test_missing_type_names_section(void)
{
	struct drive_config cfg;
	struct drive_err err;
	const char *p;

	setup();
	p = conf("[gdrive]\ntoken = " TOKEN_OK "\n");
	CHECK_INT(load(p, "gdrive", &cfg, &err), -1);
	CHECK(has(err.message, "section [gdrive]"));
	CHECK(has(err.message, p));
	CHECK(has(err.message, "\"type\""));
}

static void test_no_credentials_names_section_and_keys(void)
{
	struct drive_config cfg;
	struct drive_err err;
	const char *p;

	setup();
	p = conf("[gdrive]\ntype = drive\nclient_id = x\ntoken =\n");
	CHECK_INT(load(p, "gdrive", &cfg, &err), -1);
	CHECK(has(err.message, "no credentials"));
	CHECK(has(err.message, "section [gdrive]"));
	CHECK(has(err.message, p));
	CHECK(has(err.message, "\"token\""));
	CHECK(has(err.message, "service_account_file"));
	CHECK(has(err.message, "rclone config reconnect gdrive:"));
}

static void test_malformed_token_json_names_key_not_value(void)
{
	struct drive_config cfg;
	struct drive_err err;
	const char *p;

	setup();
	p = conf("[gdrive]\ntype = drive\n"
		 "token = {\"access_token\":\"SECRET-AT\",\"refresh_tok\n");
	CHECK_INT(load(p, "gdrive", &cfg, &err), -1);
	CHECK_STR(err.reason, "config");
	CHECK(has(err.message, "key \"token\" in section [gdrive]"));
	CHECK(has(err.message, p));
	CHECK(has(err.message, "rclone config reconnect gdrive:"));
	check_no_secret(err.message);

	p = conf("[gdrive]\ntype = drive\ntoken = [1,2]\n");
	CHECK_INT(load(p, "gdrive", &cfg, &err), -1);
	CHECK(has(err.message, "key \"token\""));
}

static void test_token_without_refresh_token_is_rejected(void)
{
	struct drive_config cfg;
	struct drive_err err;
	const char *p;

	setup();
	p = conf("[gdrive]\ntype = drive\n"
		 "token = {\"access_token\":\"SECRET-AT\",\"expiry\":\"x\"}\n");
	CHECK_INT(load(p, "gdrive", &cfg, &err), -1);
	CHECK(has(err.message, "\"refresh_token\""));
	CHECK(has(err.message, "key \"token\" in section [gdrive]"));
	CHECK(has(err.message, p));
	check_no_secret(err.message);

	p = conf("[gdrive]\ntype = drive\n"
		 "token = {\"refresh_token\":\"SECRET-RT\"}\n");
	CHECK_INT(load(p, "gdrive", &cfg, &err), -1);
	CHECK(has(err.message, "\"access_token\""));
	check_no_secret(err.message);
}

static void test_malformed_env_token_names_variable(void)
{
	struct drive_config cfg;
	struct drive_err err;

	setup();
	setenv("RCLONE_CONFIG_G_TYPE", "drive", 1);
	setenv("RCLONE_CONFIG_G_TOKEN", "SECRET-not-json", 1);
	CHECK_INT(load("", "g", &cfg, &err), -1);
	CHECK(has(err.message, "RCLONE_CONFIG_G_TOKEN"));
	check_no_secret(err.message);
}

static void test_encrypted_config_is_explained(void)
{
	struct drive_config cfg;
	struct drive_err err;
	const char *p;

	setup();
	p = conf("# Encrypted rclone configuration File\n\n"
		 "RCLONE_ENCRYPT_V0:\nQmFzZTY0U0VDUkVU\n");
	CHECK_INT(load(p, "gdrive", &cfg, &err), -1);
	CHECK_STR(err.reason, "config");
	CHECK(has(err.message, p));
	CHECK(has(err.message, "encrypted"));
	CHECK(has(err.message, "cannot read encrypted rclone configs"));
	CHECK(has(err.message, "rclone config show"));
	CHECK(has(err.message, "RCLONE_CONFIG_GDRIVE_"));

	/* The marker alone is enough. */
	p = conf("RCLONE_ENCRYPT_V0:\nabc\n");
	CHECK_INT(load(p, "gdrive", &cfg, &err), -1);
	CHECK(has(err.message, "encrypted"));
}

static void test_encrypted_config_skipped_for_env_remote(void)
{
	struct drive_config cfg;
	struct drive_err err;
	const char *p;

	setup();
	p = conf("# Encrypted rclone configuration File\n\n"
		 "RCLONE_ENCRYPT_V0:\nabc\n");
	setenv("RCLONE_CONFIG_GDRIVE_TYPE", "drive", 1);
	setenv("RCLONE_CONFIG_GDRIVE_TOKEN", TOKEN_OK, 1);
	CHECK_INT(load(p, "gdrive", &cfg, &err), 0);
	CHECK_STR(cfg.source, "environment");
	drive_config_free(&cfg);
}

static void test_unreadable_config_gives_errno_text(void)
{
	struct drive_config cfg;
	struct drive_err err;

	setup();
	CHECK_INT(load(path_in("missing.conf"), "gdrive", &cfg, &err), -1);
	CHECK(has(err.message, path_in("missing.conf")));
	CHECK(has(err.message, "No such file or directory"));

	mkdir(path_in("adir"), 0700);
	CHECK_INT(load(path_in("adir"), "gdrive", &cfg, &err), -1);
	CHECK(has(err.message, path_in("adir")));
	CHECK(has(err.message, "Is a directory"));
}

static void make_key(const char *pem_path)
{
	char cmd[1024];

	snprintf(cmd, sizeof(cmd),
		 "openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 "
		 "-out '%s' 2>/dev/null",
		 pem_path);
	if (system(cmd) != 0)
		abort();
}

/* A service account key JSON around the PEM at pem_path. */
static void write_sa_json(const char *json_path, const char *pem_path,
			  const char *type)
{
	char *pem = strdup(read_file(pem_path)), out[8192], *o = out, *p;

	o += sprintf(o,
		     "{\"type\":\"%s\",\"client_email\":\"sa@p.iam."
		     "gserviceaccount.com\",\"private_key_id\":\"k1\","
		     "\"private_key\":\"",
		     type);
	for (p = pem; *p; p++) {
		if (*p == '\n') {
			*o++ = '\\';
			*o++ = 'n';
		} else {
			*o++ = *p;
		}
	}
	sprintf(o, "\",\"token_uri\":\"https://oauth2.googleapis.com/"
		   "token\"}");
	write_file(json_path, out, 0600);
	free(pem);
}

static void test_service_account_file_is_accepted(void)
{
	struct drive_config cfg;
	struct drive_err err;
	const char *p;

	setup();
	make_key(path_in("key.pem"));
	write_sa_json(path_in("sa.json"), path_in("key.pem"),
		      "service_account");
	p = conf("[sa]\ntype = drive\nservice_account_file = ~/sa.json\n");
	CHECK_INT(load(p, "sa", &cfg, &err), 0);
	CHECK_STR(cfg.service_account_file, path_in("sa.json"));
	CHECK(cfg.token_json == NULL);
	drive_config_free(&cfg);

	setenv("VECTUR_TEST_DIR", dir, 1);
	p = conf("[sa]\ntype = drive\n"
		 "service_account_file = ${VECTUR_TEST_DIR}/sa.json\n");
	CHECK_INT(load(p, "sa", &cfg, &err), 0);
	CHECK_STR(cfg.service_account_file, path_in("sa.json"));
	drive_config_free(&cfg);
	unsetenv("VECTUR_TEST_DIR");
}

static void test_service_account_credentials_inline(void)
{
	struct drive_config cfg;
	struct drive_err err;
	char line[9000];

	setup();
	make_key(path_in("key.pem"));
	write_sa_json(path_in("sa.json"), path_in("key.pem"),
		      "service_account");
	snprintf(line, sizeof(line), "%s", read_file(path_in("sa.json")));
	setenv("RCLONE_CONFIG_SA_TYPE", "drive", 1);
	setenv("RCLONE_CONFIG_SA_SERVICE_ACCOUNT_CREDENTIALS", line, 1);
	CHECK_INT(load("", "sa", &cfg, &err), 0);
	CHECK(cfg.service_account_credentials != NULL);
	CHECK(has(cfg.service_account_credentials, "client_email"));
	drive_config_free(&cfg);

	setenv("RCLONE_CONFIG_SA_SERVICE_ACCOUNT_CREDENTIALS", "{\"type\":1}",
	       1);
	CHECK_INT(load("", "sa", &cfg, &err), -1);
	CHECK(has(err.message, "RCLONE_CONFIG_SA_SERVICE_ACCOUNT_CREDENTIALS"));
}

static void test_service_account_file_unreadable_names_it(void)
{
	struct drive_config cfg;
	struct drive_err err;
	const char *p;

	setup();
	p = conf("[sa]\ntype = drive\nservice_account_file = /nonexistent/"
		 "sa.json\n");
	CHECK_INT(load(p, "sa", &cfg, &err), -1);
	CHECK_STR(err.reason, "config");
	CHECK(has(err.message, "/nonexistent/sa.json"));
	CHECK(has(err.message, "No such file or directory"));
	CHECK(has(err.message, "key \"service_account_file\" in section [sa]"));
	CHECK(has(err.message, p));
}

static void test_service_account_file_malformed_names_it(void)
{
	struct drive_config cfg;
	struct drive_err err;
	const char *p;

	setup();
	p = conf("[sa]\ntype = drive\nservice_account_file = ~/sa.json\n");
	write_file(path_in("sa.json"), "{not json", 0600);
	CHECK_INT(load(p, "sa", &cfg, &err), -1);
	CHECK(has(err.message, path_in("sa.json")));
	CHECK(has(err.message, "not a service account key"));

	write_file(path_in("sa.json"),
		   "{\"type\":\"service_account\",\"client_email\":\"a@b\"}",
		   0600);
	CHECK_INT(load(p, "sa", &cfg, &err), -1);
	CHECK(has(err.message, "\"private_key\""));
	CHECK(has(err.message, path_in("sa.json")));

	write_file(path_in("sa.json"),
		   "{\"type\":\"service_account\",\"client_email\":\"a@b\","
		   "\"private_key\":\"-----BEGIN PRIVATE KEY-----\\nSECRET\\n"
		   "-----END PRIVATE KEY-----\\n\"}",
		   0600);
	CHECK_INT(load(p, "sa", &cfg, &err), -1);
	CHECK(has(err.message, "PEM"));
	CHECK(has(err.message, path_in("sa.json")));
	check_no_secret(err.message);

	make_key(path_in("key.pem"));
	write_sa_json(path_in("sa.json"), path_in("key.pem"),
		      "authorized_user");
	CHECK_INT(load(p, "sa", &cfg, &err), -1);
	CHECK(has(err.message, "authorized_user"));
}

static void test_service_account_must_be_rsa(void)
{
	struct drive_config cfg;
	struct drive_err err;
	const char *p;

	char cmd[1024];

	setup();
	snprintf(cmd, sizeof(cmd),
		 "openssl genpkey -algorithm EC -pkeyopt "
		 "ec_paramgen_curve:P-256 -out '%s' 2>/dev/null",
		 path_in("ec.pem"));
	CHECK_INT(system(cmd), 0);
	write_sa_json(path_in("sa.json"), path_in("ec.pem"), "service_account");
	p = conf("[sa]\ntype = drive\nservice_account_file = ~/sa.json\n");
	CHECK_INT(load(p, "sa", &cfg, &err), -1);
	CHECK(has(err.message, "RSA"));
}

static void test_value_too_long_names_key(void)
{
	static char text[4096];
	struct drive_config cfg;
	struct drive_err err;
	char big[400];

	setup();
	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	snprintf(text, sizeof(text),
		 "[g]\ntype = drive\nclient_id = %s\ntoken = " TOKEN_OK "\n",
		 big);
	CHECK_INT(load(conf(text), "g", &cfg, &err), -1);
	CHECK(has(err.message, "key \"client_id\" in section [g]"));
	CHECK(has(err.message, "too long"));
}

/* ---- writing the token back ------------------------------------------- */

#define NEW_TOKEN                                                              \
	"{\"access_token\":\"new\",\"token_type\":\"Bearer\","                 \
	"\"refresh_token\":\"r\",\"expiry\":\"2026-03-16T14:57:58Z\"}"

static void test_save_token_replaces_only_token_line(void)
{
	struct drive_err err;
	const char *p;

	setup();
	p = conf("# top comment\n"
		 "[a]\n"
		 "type = drive\n"
		 "token = {\"access_token\":\"a-old\"}\n"
		 "\n"
		 "; comment in gdrive\n"
		 "[gdrive]\n"
		 "type = drive\n"
		 "client_id   =   keep  spacing  \n"
		 "token = {\"access_token\":\"old\"}\n"
		 "scope = drive\n"
		 "\n"
		 "[z]\n"
		 "type = s3\n");
	CHECK_INT(drive_config_save_token(p, "gdrive", NEW_TOKEN, &err), 0);
	CHECK_STR(read_file(p), "# top comment\n"
				"[a]\n"
				"type = drive\n"
				"token = {\"access_token\":\"a-old\"}\n"
				"\n"
				"; comment in gdrive\n"
				"[gdrive]\n"
				"type = drive\n"
				"client_id   =   keep  spacing  \n"
				"token = " NEW_TOKEN "\n"
				"scope = drive\n"
				"\n"
				"[z]\n"
				"type = s3\n");
}

static void test_save_token_adds_missing_key_to_section(void)
{
	struct drive_err err;
	const char *p;

	setup();
	p = conf("[gdrive]\n"
		 "type = drive\n"
		 "client_id = x\n"
		 "\n"
		 "# about z\n"
		 "[z]\n"
		 "type = s3\n");
	CHECK_INT(drive_config_save_token(p, "gdrive", NEW_TOKEN, &err), 0);
	CHECK_STR(read_file(p), "[gdrive]\n"
				"type = drive\n"
				"client_id = x\n"
				"token = " NEW_TOKEN "\n"
				"\n"
				"# about z\n"
				"[z]\n"
				"type = s3\n");

	p = conf("[gdrive]\ntype = drive");
	CHECK_INT(drive_config_save_token(p, "gdrive", NEW_TOKEN, &err), 0);
	CHECK_STR(read_file(p),
		  "[gdrive]\ntype = drive\ntoken = " NEW_TOKEN "\n");
}

static void test_save_token_appends_missing_section(void)
{
	struct drive_err err;
	const char *p;

	setup();
	p = conf("[z]\ntype = s3\n");
	CHECK_INT(drive_config_save_token(p, "gdrive", NEW_TOKEN, &err), 0);
	CHECK_STR(read_file(p),
		  "[z]\ntype = s3\n\n[gdrive]\ntoken = " NEW_TOKEN "\n");
}

static void test_save_token_keeps_crlf(void)
{
	struct drive_err err;
	const char *p;

	setup();
	p = conf("[gdrive]\r\ntype = drive\r\ntoken = {}\r\n[b]\r\nx = 1\r\n");
	CHECK_INT(drive_config_save_token(p, "gdrive", NEW_TOKEN, &err), 0);
	CHECK_STR(read_file(p), "[gdrive]\r\ntype = drive\r\ntoken = " NEW_TOKEN
				"\r\n[b]\r\nx = 1\r\n");
}

static void test_save_token_sets_mode_0600(void)
{
	struct drive_err err;
	struct stat st;
	const char *p;

	setup();
	p = path_in("rclone.conf");
	write_file(p, "[gdrive]\ntype = drive\ntoken = {}\n", 0644);
	CHECK_INT(drive_config_save_token(p, "gdrive", NEW_TOKEN, &err), 0);
	CHECK_INT(stat(p, &st), 0);
	CHECK_INT(st.st_mode & 07777, 0600);
}

static int count_entries(const char *d)
{
	DIR *dh = opendir(d);
	struct dirent *de;
	int n = 0;

	while (dh && (de = readdir(dh)))
		n += de->d_name[0] != '.' ||
		     (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."));
	if (dh)
		closedir(dh);
	return n;
}

/* A reader holding the old file keeps seeing the old bytes: the new file
 * arrived by rename, not by rewriting in place, and no temp file is left. */
static void test_save_token_replaces_file_atomically(void)
{
	struct drive_err err;
	struct stat before, after;
	char old[256];
	const char *p;
	ssize_t n;
	int fd;

	setup();
	p = conf("[gdrive]\ntype = drive\ntoken = {}\n");
	fd = open(p, O_RDONLY);
	stat(p, &before);
	CHECK_INT(drive_config_save_token(p, "gdrive", NEW_TOKEN, &err), 0);
	stat(p, &after);
	CHECK(before.st_ino != after.st_ino);
	n = pread(fd, old, sizeof(old) - 1, 0);
	old[n < 0 ? 0 : n] = '\0';
	close(fd);
	CHECK_STR(old, "[gdrive]\ntype = drive\ntoken = {}\n");
	CHECK_INT(count_entries(dir), 1);
}

static void test_save_token_writes_through_symlink(void)
{
	struct drive_err err;
	struct stat st;

	setup();
	write_file(path_in("real/rclone.conf"), "[g]\ntype = drive\n", 0600);
	CHECK_INT(symlink(path_in("real/rclone.conf"), path_in("link.conf")),
		  0);
	CHECK_INT(drive_config_save_token(path_in("link.conf"), "g", NEW_TOKEN,
					  &err),
		  0);
	CHECK_INT(lstat(path_in("link.conf"), &st), 0);
	CHECK(S_ISLNK(st.st_mode));
	CHECK(has(read_file(path_in("real/rclone.conf")), NEW_TOKEN));
}

static void test_save_token_missing_file_names_it(void)
{
	struct drive_err err;

	setup();
	drive_err_clear(&err);
	CHECK_INT(drive_config_save_token(path_in("gone.conf"), "gdrive",
					  "{\"access_token\":\"SECRET\"}",
					  &err),
		  -1);
	CHECK(has(err.message, path_in("gone.conf")));
	CHECK(has(err.message, "No such file or directory"));
	check_no_secret(err.message);
}

static void test_save_token_refuses_encrypted_config(void)
{
	struct drive_err err;
	const char *p;

	setup();
	p = conf("# Encrypted rclone configuration File\n\n"
		 "RCLONE_ENCRYPT_V0:\nabc\n");
	CHECK_INT(drive_config_save_token(p, "g", NEW_TOKEN, &err), -1);
	CHECK(has(err.message, "encrypted"));
	CHECK_STR(read_file(p), "# Encrypted rclone configuration File\n\n"
				"RCLONE_ENCRYPT_V0:\nabc\n");
}

static void test_saved_token_loads_back(void)
{
	struct drive_config cfg;
	struct drive_err err;
	const char *p;

	setup();
	p = conf("[g]\ntype = drive\nclient_id = c\n");
	CHECK_INT(drive_config_save_token(p, "g", TOKEN_OK, &err), 0);
	CHECK_INT(load(p, "g", &cfg, &err), 0);
	CHECK_STR(cfg.token_json, TOKEN_OK);
	CHECK_STR(cfg.client_id, "c");
	drive_config_free(&cfg);
}

/* rclone itself must read what we wrote: same sections, same token. */
static void test_saved_token_is_read_back_by_rclone(void)
{
	static char out[65536];
	json_object *o = NULL, *sec = NULL, *v = NULL;
	struct drive_err err;
	char cmd[1024];
	const char *p;
	size_t n = 0;
	FILE *fp;

	setup();
	if (system("rclone version >/dev/null 2>&1") != 0) {
		printf("skipped test_saved_token_is_read_back_by_rclone (no "
		       "rclone)\n");
		return;
	}
	p = conf("# mine\n[a]\ntype = s3\n\n[gdrive]\ntype = drive\n"
		 "scope = drive\ntoken = {}\n; trailing comment\n");
	CHECK_INT(drive_config_save_token(p, "gdrive", TOKEN_OK, &err), 0);
	snprintf(cmd, sizeof(cmd), "rclone config dump --config '%s' 2>&1", p);
	fp = popen(cmd, "r");
	if (fp) {
		n = fread(out, 1, sizeof(out) - 1, fp);
		pclose(fp);
	}
	out[n] = '\0';
	o = json_tokener_parse(out);
	CHECK(o != NULL);
	CHECK(json_object_object_get_ex(o, "gdrive", &sec));
	CHECK(json_object_object_get_ex(sec, "token", &v));
	CHECK_STR(json_object_get_string(v), TOKEN_OK);
	CHECK(json_object_object_get_ex(o, "a", &sec));
	json_object_put(o);
}

int main(void)
{
	RUN(test_parse_remote_splits_name_and_path);
	RUN(test_parse_remote_strips_slashes_from_path);
	RUN(test_parse_remote_keeps_colons_in_path);
	RUN(test_parse_remote_without_colon_fails);
	RUN(test_parse_remote_empty_or_long_name_fails);
	RUN(test_find_uses_explicit_path_even_if_missing);
	RUN(test_find_makes_a_relative_path_absolute);
	RUN(test_find_uses_rclone_config_env_before_defaults);
	RUN(test_find_prefers_xdg_config_home);
	RUN(test_find_uses_dot_config_when_xdg_has_none);
	RUN(test_find_falls_back_to_hidden_rclone_conf);
	RUN(test_find_gives_empty_when_no_file_exists);
	RUN(test_load_reads_every_honoured_key);
	RUN(test_load_defaults_scope_and_endpoint);
	RUN(test_load_accepts_crlf_bom_and_quotes);
	RUN(test_load_later_duplicate_key_wins);
	RUN(test_env_overrides_file_key);
	RUN(test_env_token_is_marked_from_env);
	RUN(test_env_only_remote_needs_type);
	RUN(test_env_only_remote_ignores_other_file);
	RUN(test_unknown_remote_lists_known_ones);
	RUN(test_unknown_remote_without_any_file);
	RUN(test_wrong_type_names_file_and_key);
	RUN(test_missing_type_names_section);
	RUN(test_no_credentials_names_section_and_keys);
	RUN(test_malformed_token_json_names_key_not_value);
	RUN(test_token_without_refresh_token_is_rejected);
	RUN(test_malformed_env_token_names_variable);
	RUN(test_encrypted_config_is_explained);
	RUN(test_encrypted_config_skipped_for_env_remote);
	RUN(test_unreadable_config_gives_errno_text);
	RUN(test_service_account_file_is_accepted);
	RUN(test_service_account_credentials_inline);
	RUN(test_service_account_file_unreadable_names_it);
	RUN(test_service_account_file_malformed_names_it);
	RUN(test_service_account_must_be_rsa);
	RUN(test_value_too_long_names_key);
	RUN(test_save_token_replaces_only_token_line);
	RUN(test_save_token_adds_missing_key_to_section);
	RUN(test_save_token_appends_missing_section);
	RUN(test_save_token_keeps_crlf);
	RUN(test_save_token_sets_mode_0600);
	RUN(test_save_token_replaces_file_atomically);
	RUN(test_save_token_writes_through_symlink);
	RUN(test_save_token_missing_file_names_it);
	RUN(test_save_token_refuses_encrypted_config);
	RUN(test_saved_token_loads_back);
	RUN(test_saved_token_is_read_back_by_rclone);
	if (dir[0])
		nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	return t_done();
}
