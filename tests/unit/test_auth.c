/* test_auth.c — access tokens (drive/auth.c) and service-account JWTs
 * (drive/jwt.c): expiry parsing, when a token is refreshed, the refresh
 * form, write-back to rclone.conf, one refresh for many threads, error
 * messages that help and never leak a secret, RS256 signatures checked with
 * libcrypto. A tiny token endpoint runs in a thread of this process; the
 * tests at the end talk to the Drive emulator when VECTUR_TEST_ENDPOINT
 * names one (tests/integration/test_drive_auth.py starts it). */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <json-c/json.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "internal.h"
#include "jwt.h"
#include "t.h"

#define RT	 "1//SECRET-REFRESH+/="
#define AT	 "ya29.SECRET-ACCESS"
#define CSECRET	 "SECRET-CLIENT&=+ %"
#define NTHREADS 8

static char dir[256];	  /* temp dir: keys, configs */
static char key_pem[512]; /* RSA private key (PKCS#8 PEM) */
static char pub_pem[512]; /* its public key */
static char sa_json[512]; /* a service account key file around key_pem */

/* ---- a token endpoint in a thread ------------------------------------- */

struct fake {
	int lfd;
	char url[128];
	pthread_t th;
	pthread_mutex_t mu;
	/* behaviour, set before use */
	int delay_ms;	/* think this long before answering */
	int fail_first; /* answer this many requests with 503 first */
	int status;	/* != 0: always answer this with `body` */
	char body[1024];
	char valid_rt[128]; /* "" = any refresh token is fine */
	int expires_in;
	bool rotate; /* hand out a new refresh token */
	/* what it saw */
	int requests;
	char last[8192];
};

static void fake_answer(int fd, int status, const char *body)
{
	char head[256];
	int n;

	n = snprintf(head, sizeof(head),
		     "HTTP/1.1 %d X\r\nContent-Type: application/json\r\n"
		     "Content-Length: %zu\r\nConnection: close\r\n\r\n",
		     status, strlen(body));
	/* MSG_NOSIGNAL: a client that gave up has closed its end. */
	if (send(fd, head, n, MSG_NOSIGNAL) < 0 ||
	    send(fd, body, strlen(body), MSG_NOSIGNAL) < 0)
		return;
}

/* Reads one request; returns its body (in buf) or NULL. */
static char *fake_read(int fd, char *buf, size_t size)
{
	size_t got = 0, need;
	char *end, *cl;
	ssize_t n;

	for (;;) {
		n = read(fd, buf + got, size - 1 - got);
		if (n <= 0)
			return NULL;
		got += n;
		buf[got] = '\0';
		end = strstr(buf, "\r\n\r\n");
		if (!end)
			continue;
		cl = strcasestr(buf, "Content-Length:");
		need = (end - buf) + 4 + (cl ? strtoul(cl + 15, NULL, 10) : 0);
		if (got >= need || got >= size - 1)
			return end + 4;
	}
}

static void fake_serve(struct fake *f, int fd)
{
	char req[16384], out[512], rot[64] = "", *body, *p;
	int n, fail, status;

	body = fake_read(fd, req, sizeof(req));
	if (!body)
		return;
	pthread_mutex_lock(&f->mu);
	n = ++f->requests;
	snprintf(f->last, sizeof(f->last), "%s", body);
	fail = f->fail_first > 0 ? f->fail_first-- : 0;
	status = f->status;
	pthread_mutex_unlock(&f->mu);
	if (f->delay_ms)
		usleep(f->delay_ms * 1000);
	if (fail) {
		fake_answer(fd, 503, "{\"error\":\"backendError\"}");
		return;
	}
	if (status) {
		fake_answer(fd, status, f->body);
		return;
	}
	p = strstr(body, "refresh_token=");
	if (f->valid_rt[0] && p &&
	    strncmp(p + 14, f->valid_rt, strlen(f->valid_rt)) != 0) {
		fake_answer(
			fd, 400,
			"{\"error\":\"invalid_grant\",\"error_description\":"
			"\"Token has been expired or revoked.\"}");
		return;
	}
	if (f->rotate)
		snprintf(rot, sizeof(rot), ",\"refresh_token\":\"fake-rt-%d\"",
			 n);
	snprintf(out, sizeof(out),
		 "{\"access_token\":\"fake-at-%d\",\"expires_in\":%d,"
		 "\"token_type\":\"Bearer\",\"scope\":\"x\"%s}",
		 n, f->expires_in ? f->expires_in : 3599, rot);
	fake_answer(fd, 200, out);
}

static void *fake_main(void *ud)
{
	struct fake *f = ud;
	int fd;

	while ((fd = accept(f->lfd, NULL, NULL)) >= 0) {
		fake_serve(f, fd);
		close(fd);
	}
	return NULL;
}

static struct fake *fake_start(void)
{
	struct fake *f = calloc(1, sizeof(*f));
	struct sockaddr_in sa = {.sin_family = AF_INET};
	socklen_t len = sizeof(sa);

	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	f->lfd = socket(AF_INET, SOCK_STREAM, 0);
	if (bind(f->lfd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    listen(f->lfd, 64) < 0 ||
	    getsockname(f->lfd, (struct sockaddr *)&sa, &len) < 0)
		abort();
	snprintf(f->url, sizeof(f->url), "http://127.0.0.1:%d/token",
		 ntohs(sa.sin_port));
	pthread_mutex_init(&f->mu, NULL);
	pthread_create(&f->th, NULL, fake_main, f);
	return f;
}

static int fake_requests(struct fake *f)
{
	int n;

	pthread_mutex_lock(&f->mu);
	n = f->requests;
	pthread_mutex_unlock(&f->mu);
	return n;
}

static void fake_stop(struct fake *f)
{
	shutdown(f->lfd, SHUT_RDWR);
	pthread_join(f->th, NULL);
	close(f->lfd);
	pthread_mutex_destroy(&f->mu);
	free(f);
}

/* The decoded value of `key` in an x-www-form-urlencoded body. */
static char *form_get(const char *body, const char *key)
{
	static char out[8192];
	char pat[64], *v, *dec;
	const char *p = body;
	size_t n;
	int len;

	snprintf(pat, sizeof(pat), "%s=", key);
	for (;;) {
		p = strstr(p, pat);
		if (!p)
			return NULL;
		if (p == body || p[-1] == '&')
			break;
		p++;
	}
	p += strlen(pat);
	n = strcspn(p, "&");
	v = strndup(p, n);
	dec = curl_easy_unescape(NULL, v, 0, &len);
	snprintf(out, sizeof(out), "%s", dec);
	curl_free(dec);
	free(v);
	return out;
}

/* ---- helpers ---------------------------------------------------------- */

static bool has(const char *hay, const char *needle)
{
	return hay && strstr(hay, needle) != NULL;
}

static void check_no_secret(const struct drive_err *err)
{
	CHECK(!has(err->message, "SECRET"));
	CHECK(!has(err->message, "BEGIN PRIVATE KEY"));
	CHECK(!has(err->message, "eyJ")); /* a JWT header */
}

static void expiry_in(int64_t secs, char *out, size_t len)
{
	time_t t = time(NULL) + secs;
	struct tm tm;

	gmtime_r(&t, &tm);
	strftime(out, len, "%Y-%m-%dT%H:%M:%S.123456789Z", &tm);
}

/* A config for remote "gdrive" holding a token; source "environment"
 * unless a file path is given. */
static void token_cfg(struct drive_config *cfg, const char *at,
		      const char *expiry, const char *source)
{
	char json[1024];

	memset(cfg, 0, sizeof(*cfg));
	strcpy(cfg->name, "gdrive");
	strcpy(cfg->scope, "drive");
	strcpy(cfg->client_id, "cid.apps.googleusercontent.com");
	strcpy(cfg->client_secret, CSECRET);
	snprintf(cfg->source, sizeof(cfg->source), "%s",
		 source ? source : "environment");
	cfg->token_from_env = source == NULL;
	snprintf(json, sizeof(json),
		 "{\"access_token\":\"%s\",\"token_type\":\"Bearer\","
		 "\"refresh_token\":\"" RT "\",\"expiry\":\"%s\"}",
		 at, expiry);
	cfg->token_json = strdup(json);
}

static struct drive_auth *new_auth(const struct drive_config *cfg,
				   const char *url)
{
	struct drive_auth *a = NULL;
	struct drive_err err;

	drive_err_clear(&err);
	if (drive_auth_new(&a, cfg, url, &err) < 0)
		fprintf(stderr, "drive_auth_new: %s\n", err.message);
	return a;
}

static char *slurp(const char *path)
{
	static char buf[65536];
	ssize_t n;
	int fd = open(path, O_RDONLY);

	buf[0] = '\0';
	if (fd < 0)
		return buf;
	n = read(fd, buf, sizeof(buf) - 1);
	buf[n < 0 ? 0 : n] = '\0';
	close(fd);
	return buf;
}

static void spit(const char *path, const char *text)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);

	if (fd < 0 || write(fd, text, strlen(text)) < 0)
		abort();
	close(fd);
}

/* ---- expiry ----------------------------------------------------------- */

#define T_2026 1773669478 /* 2026-03-16T13:57:58Z */

static void test_expiry_parses_utc(void)
{
	int64_t sec;
	long ns;

	CHECK_INT(drive_auth_parse_expiry("2026-03-16T13:57:58Z", &sec, &ns),
		  0);
	CHECK_INT(sec, T_2026);
	CHECK_INT(ns, 0);
}

static void test_expiry_keeps_nanoseconds(void)
{
	int64_t sec;
	long ns;

	CHECK_INT(drive_auth_parse_expiry("2026-03-16T13:57:58.955387075Z",
					  &sec, &ns),
		  0);
	CHECK_INT(sec, T_2026);
	CHECK_INT(ns, 955387075);
	CHECK_INT(drive_auth_parse_expiry("2026-03-16T13:57:58.5Z", &sec, &ns),
		  0);
	CHECK_INT(ns, 500000000);
	CHECK_INT(drive_auth_parse_expiry("2026-03-16T13:57:58.1234567891z",
					  &sec, &ns),
		  0);
	CHECK_INT(ns, 123456789);
}

static void test_expiry_applies_offsets(void)
{
	int64_t sec;
	long ns;

	CHECK_INT(
		drive_auth_parse_expiry("2026-03-16T14:57:58+01:00", &sec, &ns),
		0);
	CHECK_INT(sec, T_2026);
	CHECK_INT(drive_auth_parse_expiry("2026-03-16T08:57:58.25-05:00", &sec,
					  &ns),
		  0);
	CHECK_INT(sec, T_2026);
	CHECK_INT(ns, 250000000);
	CHECK_INT(drive_auth_parse_expiry("2026-03-17T01:27:58.1+11:30", &sec,
					  &ns),
		  0);
	CHECK_INT(sec, T_2026);
}

static void test_expiry_rejects_malformed(void)
{
	const char *bad[] = {"",
			     "2026-03-16",
			     "2026-03-16T13:57:58",
			     "2026-13-16T13:57:58Z",
			     "2026-03-16T25:57:58Z",
			     "2026-03-16T13:57:58.Z",
			     "2026-03-16T13:57:58Zjunk",
			     "2026-03-16T13:57:58+1:00",
			     "26-03-16T13:57:58Z",
			     NULL};
	int64_t sec;
	long ns;
	int i;

	for (i = 0; bad[i]; i++) {
		if (drive_auth_parse_expiry(bad[i], &sec, &ns) == 0) {
			fprintf(stderr, "accepted \"%s\"\n", bad[i]);
			CHECK(0);
		}
	}
}

static void test_expiry_go_zero_time_means_never(void)
{
	int64_t sec = 5;
	long ns = 5;

	CHECK_INT(drive_auth_parse_expiry("0001-01-01T00:00:00Z", &sec, &ns),
		  0);
	CHECK_INT(sec, 0);
	CHECK_INT(ns, 0);
}

/* ---- scope, base64url, JWT -------------------------------------------- */

static void test_scope_maps_rclone_names(void)
{
	char out[512];

	CHECK_INT(drive_jwt_scope("drive", out, sizeof(out)), 0);
	CHECK_STR(out, "https://www.googleapis.com/auth/drive");
	CHECK_INT(drive_jwt_scope("drive.readonly", out, sizeof(out)), 0);
	CHECK_STR(out, "https://www.googleapis.com/auth/drive.readonly");
	CHECK_INT(drive_jwt_scope("drive.metadata.readonly", out, sizeof(out)),
		  0);
	CHECK_STR(out,
		  "https://www.googleapis.com/auth/drive.metadata.readonly");
}

static void test_scope_list_is_space_joined(void)
{
	char out[512];

	CHECK_INT(drive_jwt_scope("drive.file, drive.appfolder,", out,
				  sizeof(out)),
		  0);
	CHECK_STR(out, "https://www.googleapis.com/auth/drive.file "
		       "https://www.googleapis.com/auth/drive.appfolder");
	CHECK_INT(drive_jwt_scope("https://example.com/s,drive", out,
				  sizeof(out)),
		  0);
	CHECK_STR(out, "https://example.com/s "
		       "https://www.googleapis.com/auth/drive");
	CHECK_INT(drive_jwt_scope(" , ", out, sizeof(out)), -1);
	CHECK_INT(drive_jwt_scope("drive", out, 10), -1);
}

static void test_base64url_has_no_padding(void)
{
	char out[16];

	CHECK_INT(drive_base64url("f", 1, out, sizeof(out)), 2);
	CHECK_STR(out, "Zg");
	CHECK_INT(drive_base64url("fo", 2, out, sizeof(out)), 3);
	CHECK_STR(out, "Zm8");
	CHECK_INT(drive_base64url("foo", 3, out, sizeof(out)), 4);
	CHECK_STR(out, "Zm9v");
	CHECK_INT(drive_base64url("\xfb\xff\xbf", 3, out, sizeof(out)), 4);
	CHECK_STR(out, "-_-_");
	CHECK_INT(drive_base64url("", 0, out, sizeof(out)), 0);
	CHECK_INT(drive_base64url("foo", 3, out, 4), -1);
}

/* base64url → bytes (test side, independent of the code under test). */
static size_t b64url_decode(const char *in, size_t n, unsigned char *out)
{
	char buf[4096];
	size_t i, m = 0;
	int len;

	for (i = 0; i < n; i++)
		buf[m++] = in[i] == '-' ? '+' : in[i] == '_' ? '/' : in[i];
	while (m % 4)
		buf[m++] = '=';
	buf[m] = '\0';
	len = EVP_DecodeBlock(out, (unsigned char *)buf, m);
	if (len < 0)
		return 0;
	return len - (n % 4 == 2 ? 2 : n % 4 == 3 ? 1 : 0);
}

static json_object *jwt_part(const char *jwt, int idx)
{
	unsigned char raw[4096];
	const char *p = jwt, *e;
	size_t n;
	int i;

	for (i = 0; i < idx; i++)
		p = strchr(p, '.') + 1;
	e = strchr(p, '.');
	n = b64url_decode(p, e ? (size_t)(e - p) : strlen(p), raw);
	raw[n] = '\0';
	return json_tokener_parse((char *)raw);
}

/* Verifies header.claims against the signature with the public key. */
static bool jwt_verifies(const char *jwt)
{
	unsigned char sig[1024];
	const char *dot2 = strrchr(jwt, '.');
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	FILE *fp = fopen(pub_pem, "r");
	EVP_PKEY *pub = fp ? PEM_read_PUBKEY(fp, NULL, NULL, NULL) : NULL;
	size_t n;
	bool ok;

	if (fp)
		fclose(fp);
	n = b64url_decode(dot2 + 1, strlen(dot2 + 1), sig);
	ok = pub &&
	     EVP_DigestVerifyInit(ctx, NULL, EVP_sha256(), NULL, pub) == 1 &&
	     EVP_DigestVerify(ctx, sig, n, (const unsigned char *)jwt,
			      dot2 - jwt) == 1;
	EVP_MD_CTX_free(ctx);
	EVP_PKEY_free(pub);
	return ok;
}

static const char *jstr(json_object *o, const char *k)
{
	json_object *v;

	return json_object_object_get_ex(o, k, &v) ? json_object_get_string(v)
						   : NULL;
}

static int64_t jint(json_object *o, const char *k)
{
	json_object *v;

	return json_object_object_get_ex(o, k, &v) ? json_object_get_int64(v)
						   : -1;
}

static void test_jwt_signature_verifies_with_public_key(void)
{
	struct drive_sa_key key;
	struct drive_err err;
	char *jwt = NULL;
	json_object *h, *c;

	CHECK_INT(drive_sa_key_load_file(sa_json, "test key", &key, &err), 0);
	CHECK_STR(key.client_email, "sa@proj.iam.gserviceaccount.com");
	CHECK_INT(drive_jwt_build(&key, "https://www.googleapis.com/auth/drive",
				  "http://127.0.0.1:9/token", 1700000000, &jwt,
				  &err),
		  0);
	CHECK(jwt && !strchr(jwt, '='));
	CHECK(jwt && jwt_verifies(jwt));
	h = jwt_part(jwt, 0);
	c = jwt_part(jwt, 1);
	CHECK_STR(jstr(h, "alg"), "RS256");
	CHECK_STR(jstr(h, "typ"), "JWT");
	CHECK_STR(jstr(c, "iss"), "sa@proj.iam.gserviceaccount.com");
	CHECK_STR(jstr(c, "scope"), "https://www.googleapis.com/auth/drive");
	CHECK_STR(jstr(c, "aud"), "http://127.0.0.1:9/token");
	CHECK_INT(jint(c, "iat"), 1700000000);
	CHECK_INT(jint(c, "exp"), 1700000000 + 3600);
	/* A tampered claim set must not verify. */
	jwt[strchr(jwt, '.') - jwt + 5] ^= 1;
	CHECK(!jwt_verifies(jwt));
	json_object_put(h);
	json_object_put(c);
	free(jwt);
	drive_sa_key_free(&key);
}

/* ---- when a token is refreshed ---------------------------------------- */

static void test_valid_token_is_used_without_refresh(void)
{
	struct drive_config cfg;
	struct fake *f = fake_start();
	struct drive_auth *a;
	struct drive_err err;
	char exp[64], tok[256];

	expiry_in(3600, exp, sizeof(exp));
	token_cfg(&cfg, AT, exp, NULL);
	a = new_auth(&cfg, f->url);
	CHECK(a != NULL);
	CHECK_INT(drive_auth_token(a, tok, sizeof(tok), &err), 0);
	CHECK_STR(tok, AT);
	CHECK_INT(fake_requests(f), 0);
	drive_auth_free(a);
	drive_config_free(&cfg);
	fake_stop(f);
}

static void test_token_in_future_offset_is_not_refreshed(void)
{
	struct drive_config cfg;
	struct fake *f = fake_start();
	struct drive_auth *a;
	struct drive_err err;
	char exp[64], tok[256];
	time_t t = time(NULL) + 2 * 3600 - 5 * 3600; /* +2h, written at -05 */
	struct tm tm;

	gmtime_r(&t, &tm);
	strftime(exp, sizeof(exp), "%Y-%m-%dT%H:%M:%S.5-05:00", &tm);
	token_cfg(&cfg, AT, exp, NULL);
	a = new_auth(&cfg, f->url);
	CHECK_INT(drive_auth_token(a, tok, sizeof(tok), &err), 0);
	CHECK_STR(tok, AT);
	CHECK_INT(fake_requests(f), 0);
	drive_auth_free(a);
	drive_config_free(&cfg);

	/* The same wall-clock string read as +05:00 is 8 hours earlier:
	 * expired, so refreshed. */
	strftime(exp, sizeof(exp), "%Y-%m-%dT%H:%M:%S+05:00", &tm);
	token_cfg(&cfg, AT, exp, NULL);
	a = new_auth(&cfg, f->url);
	CHECK_INT(drive_auth_token(a, tok, sizeof(tok), &err), 0);
	CHECK_STR(tok, "fake-at-1");
	drive_auth_free(a);
	drive_config_free(&cfg);
	fake_stop(f);
}

static void test_expired_token_is_refreshed_with_form(void)
{
	struct drive_config cfg;
	struct fake *f = fake_start();
	struct drive_auth *a;
	struct drive_err err;
	char exp[64], tok[256];

	expiry_in(-10, exp, sizeof(exp));
	token_cfg(&cfg, AT, exp, NULL);
	a = new_auth(&cfg, f->url);
	CHECK_INT(drive_auth_token(a, tok, sizeof(tok), &err), 0);
	CHECK_STR(tok, "fake-at-1");
	CHECK_INT(fake_requests(f), 1);
	CHECK_STR(form_get(f->last, "grant_type"), "refresh_token");
	CHECK_STR(form_get(f->last, "refresh_token"), RT);
	CHECK_STR(form_get(f->last, "client_id"),
		  "cid.apps.googleusercontent.com");
	CHECK_STR(form_get(f->last, "client_secret"), CSECRET);
	/* Reused afterwards. */
	CHECK_INT(drive_auth_token(a, tok, sizeof(tok), &err), 0);
	CHECK_STR(tok, "fake-at-1");
	CHECK_INT(fake_requests(f), 1);
	drive_auth_free(a);
	drive_config_free(&cfg);
	fake_stop(f);
}

static void test_token_within_a_minute_of_expiry_is_refreshed(void)
{
	struct drive_config cfg;
	struct fake *f = fake_start();
	struct drive_auth *a;
	struct drive_err err;
	char exp[64], tok[256];

	expiry_in(45, exp, sizeof(exp));
	token_cfg(&cfg, AT, exp, NULL);
	a = new_auth(&cfg, f->url);
	CHECK_INT(drive_auth_token(a, tok, sizeof(tok), &err), 0);
	CHECK_STR(tok, "fake-at-1");
	drive_auth_free(a);
	drive_config_free(&cfg);
	fake_stop(f);
}

static void test_missing_access_token_is_fetched(void)
{
	struct drive_config cfg;
	struct fake *f = fake_start();
	struct drive_auth *a;
	struct drive_err err;
	char tok[256];

	token_cfg(&cfg, "", "0001-01-01T00:00:00Z", NULL);
	a = new_auth(&cfg, f->url);
	CHECK_INT(drive_auth_token(a, tok, sizeof(tok), &err), 0);
	CHECK_STR(tok, "fake-at-1");
	drive_auth_free(a);
	drive_config_free(&cfg);
	fake_stop(f);
}

static void test_empty_client_fields_are_left_out(void)
{
	struct drive_config cfg;
	struct fake *f = fake_start();
	struct drive_auth *a;
	struct drive_err err;
	char tok[256];

	token_cfg(&cfg, "", "0001-01-01T00:00:00Z", NULL);
	cfg.client_id[0] = cfg.client_secret[0] = '\0';
	a = new_auth(&cfg, f->url);
	CHECK_INT(drive_auth_token(a, tok, sizeof(tok), &err), 0);
	CHECK(form_get(f->last, "client_id") == NULL);
	CHECK(form_get(f->last, "client_secret") == NULL);
	CHECK_STR(form_get(f->last, "refresh_token"), RT);
	drive_auth_free(a);
	drive_config_free(&cfg);
	fake_stop(f);
}

static void test_short_lived_tokens_are_reused(void)
{
	struct drive_config cfg;
	struct fake *f = fake_start();
	struct drive_auth *a;
	struct drive_err err;
	char tok[256];

	f->expires_in = 8;
	token_cfg(&cfg, "", "0001-01-01T00:00:00Z", NULL);
	a = new_auth(&cfg, f->url);
	CHECK_INT(drive_auth_token(a, tok, sizeof(tok), &err), 0);
	CHECK_INT(drive_auth_token(a, tok, sizeof(tok), &err), 0);
	CHECK_STR(tok, "fake-at-1");
	CHECK_INT(fake_requests(f), 1);
	drive_auth_free(a);
	drive_config_free(&cfg);
	fake_stop(f);
}

/* ---- write-back ------------------------------------------------------- */

static void test_refresh_writes_token_back_in_rclone_shape(void)
{
	struct drive_config cfg;
	struct fake *f = fake_start();
	struct drive_auth *a;
	struct drive_err err;
	char path[512], tok[256], exp[64];
	json_object *o;
	const char *text, *line;
	struct stat st;
	int64_t sec;
	long ns;

	snprintf(path, sizeof(path), "%s/wb.conf", dir);
	spit(path,
	     "# keep me\n[gdrive]\ntype = drive\n"
	     "token = {\"access_token\":\"old\"}\n\n[other]\ntype = s3\n");
	expiry_in(-100, exp, sizeof(exp));
	token_cfg(&cfg, AT, exp, path);
	a = new_auth(&cfg, f->url);
	CHECK_INT(drive_auth_token(a, tok, sizeof(tok), &err), 0);
	text = slurp(path);
	CHECK(strncmp(text, "# keep me\n[gdrive]\ntype = drive\ntoken = {",
		      41) == 0);
	CHECK(has(text, "}\n\n[other]\ntype = s3\n"));
	line = strstr(text, "token = ");
	o = line ? json_tokener_parse(line + 8) : NULL;
	CHECK_STR(jstr(o, "access_token"), "fake-at-1");
	CHECK_STR(jstr(o, "token_type"), "Bearer");
	CHECK_STR(jstr(o, "refresh_token"), RT);
	CHECK(jstr(o, "expiry") && jstr(o, "expiry")[19] != '\0');
	CHECK(has(jstr(o, "expiry"), "Z"));
	CHECK_INT(drive_auth_parse_expiry(jstr(o, "expiry"), &sec, &ns), 0);
	CHECK(sec >= time(NULL) + 3590 && sec <= time(NULL) + 3600);
	CHECK(has(line, "{\"access_token\":\"fake-at-1\",\"token_type\":"
			"\"Bearer\",\"refresh_token\":"));
	CHECK_INT(stat(path, &st), 0);
	CHECK_INT(st.st_mode & 07777, 0600);
	json_object_put(o);
	drive_auth_free(a);
	drive_config_free(&cfg);
	fake_stop(f);
}

static void test_env_token_is_not_written_back(void)
{
	struct drive_config cfg;
	struct fake *f = fake_start();
	struct drive_auth *a;
	struct drive_err err;
	char path[512], tok[256];

	snprintf(path, sizeof(path), "%s/env.conf", dir);
	spit(path, "[gdrive]\ntype = drive\n");
	token_cfg(&cfg, AT, "2000-01-01T00:00:00Z", path);
	cfg.token_from_env = true;
	a = new_auth(&cfg, f->url);
	CHECK_INT(drive_auth_token(a, tok, sizeof(tok), &err), 0);
	CHECK_STR(slurp(path), "[gdrive]\ntype = drive\n");
	drive_auth_free(a);
	drive_config_free(&cfg);
	fake_stop(f);
}

static void test_rotated_refresh_token_is_kept(void)
{
	struct drive_config cfg;
	struct fake *f = fake_start();
	struct drive_auth *a;
	struct drive_err err;
	char path[512], tok[256];

	f->rotate = true;
	snprintf(path, sizeof(path), "%s/rot.conf", dir);
	spit(path, "[gdrive]\ntype = drive\n");
	token_cfg(&cfg, AT, "2000-01-01T00:00:00Z", path);
	a = new_auth(&cfg, f->url);
	CHECK_INT(drive_auth_token(a, tok, sizeof(tok), &err), 0);
	CHECK(has(slurp(path), "\"refresh_token\":\"fake-rt-1\""));
	drive_auth_invalidate(a, tok);
	CHECK_INT(drive_auth_token(a, tok, sizeof(tok), &err), 0);
	CHECK_STR(form_get(f->last, "refresh_token"), "fake-rt-1");
	drive_auth_free(a);
	drive_config_free(&cfg);
	fake_stop(f);
}

/* ---- failures --------------------------------------------------------- */

static void test_invalid_grant_says_reconnect(void)
{
	struct drive_config cfg;
	struct fake *f = fake_start();
	struct drive_auth *a;
	struct drive_err err;
	char tok[256];

	strcpy(f->valid_rt, "something-else");
	token_cfg(&cfg, AT, "2000-01-01T00:00:00Z", NULL);
	a = new_auth(&cfg, f->url);
	drive_err_clear(&err);
	CHECK_INT(drive_auth_token(a, tok, sizeof(tok), &err), -1);
	CHECK_STR(err.reason, "invalid_grant");
	CHECK_INT(err.status, 400);
	CHECK(has(err.message, "revoked or has expired"));
	CHECK(has(err.message, "rclone config reconnect gdrive:"));
	CHECK(has(err.message, f->url));
	CHECK_INT(fake_requests(f), 1); /* 4xx is final: no retries */
	check_no_secret(&err);
	drive_auth_free(a);
	drive_config_free(&cfg);
	fake_stop(f);
}

static void test_reconnect_while_mounted_is_picked_up(void)
{
	struct drive_config cfg;
	struct fake *f = fake_start();
	struct drive_auth *a;
	struct drive_err err;
	char path[512], text[1024], tok[256];

	strcpy(f->valid_rt, "fresh-rt");
	snprintf(path, sizeof(path), "%s/reconnect.conf", dir);
	spit(path, "[gdrive]\ntype = drive\n");
	token_cfg(&cfg, AT, "2000-01-01T00:00:00Z", path);
	a = new_auth(&cfg, f->url);
	CHECK_INT(drive_auth_token(a, tok, sizeof(tok), &err), -1);
	CHECK_STR(err.reason, "invalid_grant");
	/* `rclone config reconnect gdrive:` rewrites the file. */
	snprintf(text, sizeof(text),
		 "[gdrive]\ntype = drive\ntoken = {\"access_token\":\"x\","
		 "\"token_type\":\"Bearer\",\"refresh_token\":\"fresh-rt\","
		 "\"expiry\":\"2000-01-01T00:00:00Z\"}\n");
	spit(path, text);
	CHECK_INT(drive_auth_token(a, tok, sizeof(tok), &err), 0);
	CHECK_STR(form_get(f->last, "refresh_token"), "fresh-rt");
	drive_auth_free(a);
	drive_config_free(&cfg);
	fake_stop(f);
}

static void test_server_errors_are_retried(void)
{
	struct drive_config cfg;
	struct fake *f = fake_start();
	struct drive_auth *a;
	struct drive_err err;
	char tok[256];

	f->fail_first = 2;
	token_cfg(&cfg, AT, "2000-01-01T00:00:00Z", NULL);
	a = new_auth(&cfg, f->url);
	CHECK_INT(drive_auth_token(a, tok, sizeof(tok), &err), 0);
	CHECK_STR(tok, "fake-at-3");
	CHECK_INT(fake_requests(f), 3);
	drive_auth_free(a);
	drive_config_free(&cfg);
	fake_stop(f);
}

static void test_persistent_server_error_gives_up(void)
{
	struct drive_config cfg;
	struct fake *f = fake_start();
	struct drive_auth *a;
	struct drive_err err;
	char tok[256];

	f->status = 500;
	snprintf(f->body, sizeof(f->body),
		 "{\"error\":\"internal\",\"error_description\":\"echo %s\"}",
		 CSECRET);
	token_cfg(&cfg, AT, "2000-01-01T00:00:00Z", NULL);
	a = new_auth(&cfg, f->url);
	CHECK_INT(drive_auth_token(a, tok, sizeof(tok), &err), -1);
	CHECK_INT(err.status, 500);
	CHECK_INT(fake_requests(f), 4);
	CHECK(has(err.message, "HTTP 500"));
	check_no_secret(&err);
	drive_auth_free(a);
	drive_config_free(&cfg);
	fake_stop(f);
}

static void test_rejected_client_names_the_keys(void)
{
	struct drive_config cfg;
	struct fake *f = fake_start();
	struct drive_auth *a;
	struct drive_err err;
	char tok[256];

	f->status = 401;
	snprintf(f->body, sizeof(f->body),
		 "{\"error\":\"invalid_client\",\"error_description\":"
		 "\"The OAuth client was not found.\"}");
	token_cfg(&cfg, AT, "2000-01-01T00:00:00Z", NULL);
	a = new_auth(&cfg, f->url);
	CHECK_INT(drive_auth_token(a, tok, sizeof(tok), &err), -1);
	CHECK_STR(err.reason, "invalid_client");
	CHECK(has(err.message, "client_id"));
	CHECK(has(err.message, "OAuth client was not found"));
	CHECK_INT(fake_requests(f), 1);
	check_no_secret(&err);
	drive_auth_free(a);
	drive_config_free(&cfg);
	fake_stop(f);
}

static void test_echoed_secrets_are_kept_out_of_messages(void)
{
	struct drive_config cfg;
	struct fake *f = fake_start();
	struct drive_auth *a;
	struct drive_err err;
	char tok[256];

	f->status = 400;
	snprintf(f->body, sizeof(f->body),
		 "{\"error\":\"invalid_grant\",\"error_description\":"
		 "\"bad token %s\"}",
		 RT);
	token_cfg(&cfg, AT, "2000-01-01T00:00:00Z", NULL);
	a = new_auth(&cfg, f->url);
	CHECK_INT(drive_auth_token(a, tok, sizeof(tok), &err), -1);
	CHECK_STR(err.reason, "invalid_grant");
	check_no_secret(&err);
	drive_auth_free(a);
	drive_config_free(&cfg);
	fake_stop(f);
}

static void test_unreachable_endpoint_is_a_transport_error(void)
{
	struct sockaddr_in sa = {.sin_family = AF_INET};
	socklen_t len = sizeof(sa);
	struct drive_config cfg;
	struct drive_auth *a;
	struct drive_err err;
	char url[128], tok[256];
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	/* A port that was just free: nobody listens there. */
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	bind(fd, (struct sockaddr *)&sa, sizeof(sa));
	getsockname(fd, (struct sockaddr *)&sa, &len);
	close(fd);
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/token",
		 ntohs(sa.sin_port));
	token_cfg(&cfg, AT, "2000-01-01T00:00:00Z", NULL);
	a = new_auth(&cfg, url);
	CHECK_INT(drive_auth_token(a, tok, sizeof(tok), &err), -1);
	CHECK(err.curl_code != 0);
	CHECK_INT(err.status, 0);
	CHECK(has(err.message, url));
	check_no_secret(&err);
	drive_auth_free(a);
	drive_config_free(&cfg);
}

static void test_small_buffer_is_an_error(void)
{
	struct drive_config cfg;
	struct drive_auth *a;
	struct drive_err err;
	char exp[64], tok[4];

	expiry_in(3600, exp, sizeof(exp));
	token_cfg(&cfg, AT, exp, NULL);
	a = new_auth(&cfg, "http://127.0.0.1:9/token");
	CHECK_INT(drive_auth_token(a, tok, sizeof(tok), &err), -1);
	check_no_secret(&err);
	drive_auth_free(a);
	drive_config_free(&cfg);
}

/* ---- many threads ----------------------------------------------------- */

struct worker {
	struct drive_auth *a;
	const char *report; /* drive_auth_invalidate this first, if set */
	int rc;
	char tok[256];
	struct drive_err err;
};

static void *worker_main(void *ud)
{
	struct worker *w = ud;

	if (w->report)
		drive_auth_invalidate(w->a, w->report);
	w->rc = drive_auth_token(w->a, w->tok, sizeof(w->tok), &w->err);
	return NULL;
}

static void run_workers(struct drive_auth *a, const char *report,
			struct worker *w)
{
	pthread_t th[NTHREADS];
	int i;

	for (i = 0; i < NTHREADS; i++) {
		memset(&w[i], 0, sizeof(w[i]));
		w[i].a = a;
		w[i].report = report;
		pthread_create(&th[i], NULL, worker_main, &w[i]);
	}
	for (i = 0; i < NTHREADS; i++)
		pthread_join(th[i], NULL);
}

static void test_many_threads_share_one_refresh(void)
{
	struct worker w[NTHREADS];
	struct drive_config cfg;
	struct fake *f = fake_start();
	struct drive_auth *a;
	int i;

	f->delay_ms = 300;
	token_cfg(&cfg, AT, "2000-01-01T00:00:00Z", NULL);
	a = new_auth(&cfg, f->url);
	run_workers(a, NULL, w);
	CHECK_INT(fake_requests(f), 1);
	for (i = 0; i < NTHREADS; i++) {
		CHECK_INT(w[i].rc, 0);
		CHECK_STR(w[i].tok, "fake-at-1");
	}
	drive_auth_free(a);
	drive_config_free(&cfg);
	fake_stop(f);
}

static void test_many_threads_share_one_failure(void)
{
	struct worker w[NTHREADS];
	struct drive_config cfg;
	struct fake *f = fake_start();
	struct drive_auth *a;
	int i;

	f->delay_ms = 300;
	strcpy(f->valid_rt, "other");
	token_cfg(&cfg, AT, "2000-01-01T00:00:00Z", NULL);
	a = new_auth(&cfg, f->url);
	run_workers(a, NULL, w);
	CHECK_INT(fake_requests(f), 1);
	for (i = 0; i < NTHREADS; i++) {
		CHECK_INT(w[i].rc, -1);
		CHECK_STR(w[i].err.reason, "invalid_grant");
	}
	drive_auth_free(a);
	drive_config_free(&cfg);
	fake_stop(f);
}

static void test_invalidate_same_token_refreshes_once(void)
{
	struct worker w[NTHREADS];
	struct drive_config cfg;
	struct fake *f = fake_start();
	struct drive_auth *a;
	struct drive_err err;
	char exp[64], tok[256];
	int i;

	f->delay_ms = 200;
	expiry_in(3600, exp, sizeof(exp));
	token_cfg(&cfg, AT, exp, NULL);
	a = new_auth(&cfg, f->url);
	/* Every thread got 401 for AT and says so. */
	run_workers(a, AT, w);
	CHECK_INT(fake_requests(f), 1);
	for (i = 0; i < NTHREADS; i++)
		CHECK_STR(w[i].tok, "fake-at-1");
	/* A late report about AT does not throw away fake-at-1. */
	drive_auth_invalidate(a, AT);
	CHECK_INT(drive_auth_token(a, tok, sizeof(tok), &err), 0);
	CHECK_STR(tok, "fake-at-1");
	CHECK_INT(fake_requests(f), 1);
	/* A report about the current token does. */
	drive_auth_invalidate(a, "fake-at-1");
	CHECK_INT(drive_auth_token(a, tok, sizeof(tok), &err), 0);
	CHECK_STR(tok, "fake-at-2");
	drive_auth_free(a);
	drive_config_free(&cfg);
	fake_stop(f);
}

/* ---- deadlines -------------------------------------------------------- */

static void test_deadlines_nest_and_restore(void)
{
	int64_t now = drive_mono_ms(), outer, inner;

	outer = drive_deadline(now + 1000);
	CHECK_INT(outer, 0);
	/* A later inner deadline does not stretch the outer one. */
	inner = drive_deadline(now + 60000);
	CHECK_INT(inner, now + 1000);
	CHECK(drive_deadline_left_ms() <= 1000);
	drive_deadline_restore(inner);
	inner = drive_deadline(now + 200);
	CHECK(drive_deadline_left_ms() <= 200);
	drive_deadline_restore(inner);
	CHECK(drive_deadline_left_ms() > 200);
	CHECK(drive_deadline_left_ms() <= 1000);
	drive_deadline_restore(outer);
	CHECK_INT(drive_deadline_left_ms(), -1);
}

/* A listing under open(2) is bounded by read_timeout (cache/node.c); the
 * token refresh it needed was not: against a token endpoint that takes
 * seconds to say 503, its four tries held the listing ~4x as long. */
static void test_a_bounded_listing_gives_up_in_a_stalling_token_refresh(void)
{
	struct drive_client_opts o = {.endpoint = "http://127.0.0.1:9"};
	struct drive_config cfg;
	struct drive_client *dc = NULL;
	struct fake *f = fake_start();
	struct drive_err err;
	int64_t t0, saved;
	int rc;

	f->delay_ms = 2000;
	f->status = 503;
	strcpy(f->body, "{\"error\":\"backendError\"}");
	token_cfg(&cfg, AT, "2000-01-01T00:00:00Z", NULL);
	snprintf(cfg.token_url, sizeof(cfg.token_url), "%s", f->url);
	CHECK_INT(drive_client_new(&dc, &cfg, &o, &err), 0);
	t0 = drive_mono_ms();
	saved = drive_deadline(t0 + 500);
	rc = dc ? drive_list(dc, "root", NULL, NULL, NULL, NULL, &err) : 0;
	drive_deadline_restore(saved);
	CHECK_INT(rc, -1);
	CHECK(drive_mono_ms() - t0 < 1800); /* one try, cut at 1 s */
	CHECK_INT(drive_err_errno(&err), EIO);
	CHECK_INT(fake_requests(f), 1);
	check_no_secret(&err);
	drive_client_free(dc);
	drive_config_free(&cfg);
	fake_stop(f);
}

static void *refresh_main(void *ud)
{
	struct worker *w = ud;

	w->rc = drive_auth_token(w->a, w->tok, sizeof(w->tok), &w->err);
	return NULL;
}

/* A bounded call that finds another thread (an upload, no deadline) at
 * the token endpoint waited for that refresh however long it took. */
static void test_a_deadline_bounds_the_wait_for_another_refresh(void)
{
	struct drive_config cfg;
	struct fake *f = fake_start();
	struct drive_auth *a;
	struct drive_err err;
	struct worker w = {0};
	pthread_t th;
	int64_t t0, saved;
	char tok[256];

	f->delay_ms = 2000;
	token_cfg(&cfg, AT, "2000-01-01T00:00:00Z", NULL);
	a = new_auth(&cfg, f->url);
	w.a = a;
	pthread_create(&th, NULL, refresh_main, &w);
	while (fake_requests(f) == 0)
		usleep(10 * 1000);
	t0 = drive_mono_ms();
	saved = drive_deadline(t0 + 300);
	CHECK_INT(drive_auth_token(a, tok, sizeof(tok), &err), -1);
	drive_deadline_restore(saved);
	CHECK(drive_mono_ms() - t0 < 1000);
	CHECK(drive_err_retryable(&err));
	CHECK(has(err.message, f->url));
	pthread_join(th, NULL);
	CHECK_INT(w.rc, 0); /* the refresh itself was not cut short */
	CHECK_STR(w.tok, "fake-at-1");
	drive_auth_free(a);
	drive_config_free(&cfg);
	fake_stop(f);
}

/* ---- service accounts ------------------------------------------------- */

static void sa_cfg(struct drive_config *cfg, const char *scope)
{
	memset(cfg, 0, sizeof(*cfg));
	strcpy(cfg->name, "sa");
	strcpy(cfg->source, "environment");
	snprintf(cfg->scope, sizeof(cfg->scope), "%s", scope);
	snprintf(cfg->service_account_file, sizeof(cfg->service_account_file),
		 "%s", sa_json);
}

static void test_service_account_posts_signed_jwt(void)
{
	struct drive_config cfg;
	struct fake *f = fake_start();
	struct drive_auth *a;
	struct drive_err err;
	char tok[256], jwt[4096];
	json_object *c;
	int64_t now = time(NULL);

	sa_cfg(&cfg, "drive,drive.readonly");
	a = new_auth(&cfg, f->url);
	CHECK(a != NULL);
	CHECK_INT(drive_auth_token(a, tok, sizeof(tok), &err), 0);
	CHECK_STR(tok, "fake-at-1");
	CHECK_STR(form_get(f->last, "grant_type"),
		  "urn:ietf:params:oauth:grant-type:jwt-bearer");
	snprintf(jwt, sizeof(jwt), "%s", form_get(f->last, "assertion"));
	CHECK(jwt_verifies(jwt));
	c = jwt_part(jwt, 1);
	CHECK_STR(jstr(c, "aud"), f->url);
	CHECK_STR(jstr(c, "iss"), "sa@proj.iam.gserviceaccount.com");
	CHECK_STR(jstr(c, "scope"),
		  "https://www.googleapis.com/auth/drive "
		  "https://www.googleapis.com/auth/drive.readonly");
	CHECK(jint(c, "iat") >= now - 5 && jint(c, "iat") <= now + 5);
	CHECK_INT(jint(c, "exp") - jint(c, "iat"), 3600);
	json_object_put(c);
	drive_auth_free(a);
	drive_config_free(&cfg);
	fake_stop(f);
}

static void test_service_account_refusal_says_check_key(void)
{
	struct drive_config cfg;
	struct fake *f = fake_start();
	struct drive_auth *a;
	struct drive_err err;
	char tok[256];

	f->status = 400;
	strcpy(f->body, "{\"error\":\"invalid_grant\",\"error_description\":"
			"\"Invalid JWT Signature.\"}");
	sa_cfg(&cfg, "drive");
	a = new_auth(&cfg, f->url);
	CHECK_INT(drive_auth_token(a, tok, sizeof(tok), &err), -1);
	CHECK_STR(err.reason, "invalid_grant");
	CHECK(has(err.message, sa_json));
	CHECK(has(err.message, "key"));
	CHECK(has(err.message, "Invalid JWT Signature"));
	check_no_secret(&err);
	drive_auth_free(a);
	drive_config_free(&cfg);
	fake_stop(f);
}

static void test_service_account_bad_file_fails_at_new(void)
{
	struct drive_config cfg;
	struct drive_auth *a = NULL;
	struct drive_err err;

	sa_cfg(&cfg, "drive");
	strcpy(cfg.service_account_file, "/nonexistent/key.json");
	drive_err_clear(&err);
	CHECK_INT(drive_auth_new(&a, &cfg, "http://127.0.0.1:9/token", &err),
		  -1);
	CHECK(a == NULL);
	CHECK(has(err.message, "/nonexistent/key.json"));
}

/* ---- against the Drive emulator --------------------------------------- */

static const char *emu(void)
{
	const char *e = getenv("VECTUR_TEST_ENDPOINT");

	return e && *e ? e : NULL;
}

static void emu_token_cfg(struct drive_config *cfg, const char *rt,
			  const char *expiry, const char *source)
{
	token_cfg(cfg, "stale-access-token", expiry, source);
	free(cfg->token_json);
	cfg->token_json = NULL;
	if (asprintf(&cfg->token_json,
		     "{\"access_token\":\"stale-access-token\",\"token_type\":"
		     "\"Bearer\",\"refresh_token\":\"%s\",\"expiry\":\"%s\"}",
		     rt, expiry) < 0)
		abort();
}

static char emu_url[512];

static const char *emu_token_url(void)
{
	snprintf(emu_url, sizeof(emu_url), "%s/token", emu());
	return emu_url;
}

/* One request to the emulator; returns the status, body into out. */
static long emu_call(const char *method, const char *path, const char *tok,
		     char *out, size_t out_len)
{
	char url[600], auth[512];
	struct curl_slist *h = NULL;
	long status = 0;
	CURL *c = curl_easy_init();
	FILE *mem = fmemopen(out, out_len, "w");

	snprintf(url, sizeof(url), "%s%s", emu(), path);
	if (tok) {
		snprintf(auth, sizeof(auth), "Authorization: Bearer %s", tok);
		h = curl_slist_append(h, auth);
	}
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
	if (strcmp(method, "POST") == 0)
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, "");
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, mem);
	if (curl_easy_perform(c) == CURLE_OK)
		curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
	fclose(mem);
	curl_slist_free_all(h);
	curl_easy_cleanup(c);
	return status;
}

/* GET /drive/v3/about with the token: the emulator must accept it. */
static long emu_api_status(const char *tok)
{
	char body[4096] = "";

	return emu_call("GET", "/drive/v3/about?fields=user", tok, body,
			sizeof(body));
}

/* How many token endpoint requests the emulator has seen. */
static int emu_token_requests(void)
{
	char body[4096] = "";
	json_object *o, *req, *n;
	int count = -1;

	emu_call("GET", "/_emu/stats", NULL, body, sizeof(body));
	o = json_tokener_parse(body);
	if (json_object_object_get_ex(o, "requests", &req))
		count = json_object_object_get_ex(req, "token", &n)
				? json_object_get_int(n)
				: 0;
	json_object_put(o);
	return count;
}

static void test_emulator_refreshes_and_writes_back(void)
{
	struct drive_config cfg;
	struct drive_auth *a;
	struct drive_err err;
	char path[512], tok[512];

	if (!emu()) {
		printf("skipped test_emulator_refreshes_and_writes_back "
		       "(VECTUR_TEST_ENDPOINT unset)\n");
		return;
	}
	snprintf(path, sizeof(path), "%s/emu.conf", dir);
	spit(path, "[gdrive]\ntype = drive\n");
	emu_token_cfg(&cfg, "test-refresh-token", "2000-01-01T00:00:00Z", path);
	a = new_auth(&cfg, emu_token_url());
	CHECK(a != NULL);
	drive_err_clear(&err);
	CHECK_INT(drive_auth_token(a, tok, sizeof(tok), &err), 0);
	if (err.message[0])
		fprintf(stderr, "emulator: %s\n", err.message);
	CHECK(strcmp(tok, "stale-access-token") != 0);
	CHECK_INT(emu_api_status(tok), 200);
	CHECK(has(slurp(path), tok));
	drive_auth_free(a);
	drive_config_free(&cfg);
}

static void test_emulator_expired_token_is_refreshed(void)
{
	const char *life = getenv("VECTUR_TEST_TOKEN_LIFETIME");
	struct drive_config cfg;
	struct drive_auth *a;
	struct drive_err err;
	char first[512], tok[512];

	if (!emu() || !life) {
		printf("skipped test_emulator_expired_token_is_refreshed "
		       "(needs VECTUR_TEST_ENDPOINT, "
		       "VECTUR_TEST_TOKEN_LIFETIME)\n");
		return;
	}
	emu_token_cfg(&cfg, "test-refresh-token", "2000-01-01T00:00:00Z", NULL);
	a = new_auth(&cfg, emu_token_url());
	CHECK_INT(drive_auth_token(a, first, sizeof(first), &err), 0);
	CHECK_INT(emu_api_status(first), 200);
	sleep(atoi(life) + 1);
	/* The emulator now refuses the old token... */
	CHECK_INT(emu_api_status(first), 401);
	/* ...and we do not hand it out any more. */
	CHECK_INT(drive_auth_token(a, tok, sizeof(tok), &err), 0);
	CHECK(strcmp(tok, first) != 0);
	CHECK_INT(emu_api_status(tok), 200);
	drive_auth_free(a);
	drive_config_free(&cfg);
}

static void test_emulator_unknown_refresh_token_is_invalid_grant(void)
{
	struct drive_config cfg;
	struct drive_auth *a;
	struct drive_err err;
	char tok[512];

	if (!emu()) {
		printf("skipped test_emulator_unknown_refresh_token_is_invalid_"
		       "grant (VECTUR_TEST_ENDPOINT unset)\n");
		return;
	}
	emu_token_cfg(&cfg, "1//SECRET-revoked", "2000-01-01T00:00:00Z", NULL);
	a = new_auth(&cfg, emu_token_url());
	CHECK_INT(drive_auth_token(a, tok, sizeof(tok), &err), -1);
	CHECK_STR(err.reason, "invalid_grant");
	CHECK_INT(err.status, 400);
	CHECK(has(err.message, "rclone config reconnect gdrive:"));
	check_no_secret(&err);
	drive_auth_free(a);
	drive_config_free(&cfg);
}

/* Eight threads start with an expired token: one refresh. The emulator
 * then forgets every token; all eight get 401, report it, and again share
 * one refresh — what http.c does on 401. */
static void test_emulator_many_threads_one_refresh(void)
{
	struct worker w[NTHREADS];
	struct drive_config cfg;
	struct drive_auth *a;
	char body[256], old[512];
	int i;

	if (!emu()) {
		printf("skipped test_emulator_many_threads_one_refresh "
		       "(VECTUR_TEST_ENDPOINT unset)\n");
		return;
	}
	emu_token_cfg(&cfg, "test-refresh-token", "2000-01-01T00:00:00Z", NULL);
	a = new_auth(&cfg, emu_token_url());
	emu_call("POST", "/_emu/stats/reset", NULL, body, sizeof(body));
	run_workers(a, NULL, w);
	CHECK_INT(emu_token_requests(), 1);
	for (i = 0; i < NTHREADS; i++) {
		CHECK_INT(w[i].rc, 0);
		CHECK_STR(w[i].tok, w[0].tok);
	}
	CHECK_INT(emu_api_status(w[0].tok), 200);

	snprintf(old, sizeof(old), "%s", w[0].tok);
	CHECK_INT(emu_call("POST", "/_emu/expire-tokens", NULL, body,
			   sizeof(body)),
		  200);
	CHECK_INT(emu_api_status(old), 401);
	run_workers(a, old, w);
	CHECK_INT(emu_token_requests(), 2);
	for (i = 0; i < NTHREADS; i++)
		CHECK_STR(w[i].tok, w[0].tok);
	CHECK(strcmp(w[0].tok, old) != 0);
	CHECK_INT(emu_api_status(w[0].tok), 200);
	drive_auth_free(a);
	drive_config_free(&cfg);
}

static void test_emulator_service_account_jwt_grant(void)
{
	const char *key = getenv("VECTUR_TEST_SA_FILE");
	struct drive_config cfg;
	struct drive_auth *a;
	struct drive_err err;
	char tok[512];

	if (!emu() || !key) {
		printf("skipped test_emulator_service_account_jwt_grant "
		       "(needs VECTUR_TEST_ENDPOINT, VECTUR_TEST_SA_FILE)\n");
		return;
	}
	sa_cfg(&cfg, "drive");
	snprintf(cfg.service_account_file, sizeof(cfg.service_account_file),
		 "%s", key);
	a = new_auth(&cfg, emu_token_url());
	CHECK(a != NULL);
	drive_err_clear(&err);
	CHECK_INT(drive_auth_token(a, tok, sizeof(tok), &err), 0);
	if (err.message[0])
		fprintf(stderr, "emulator: %s\n", err.message);
	CHECK_INT(emu_api_status(tok), 200);
	drive_auth_free(a);
	drive_config_free(&cfg);

	/* This run's own key is not one the emulator trusts. */
	sa_cfg(&cfg, "drive");
	a = new_auth(&cfg, emu_token_url());
	CHECK_INT(drive_auth_token(a, tok, sizeof(tok), &err), -1);
	CHECK_STR(err.reason, "invalid_grant");
	CHECK(has(err.message, "Invalid JWT Signature"));
	CHECK(has(err.message, sa_json));
	check_no_secret(&err);
	drive_auth_free(a);
	drive_config_free(&cfg);
}

/* ---- setup ------------------------------------------------------------ */

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *f)
{
	return remove(p);
}

/* One RSA key for the whole run, and a service account file around it. */
static void make_keys(void)
{
	char cmd[2048], *pem, *p, *o, json[8192];

	strcpy(dir, "/tmp/vectur-test-auth-XXXXXX");
	if (!mkdtemp(dir))
		abort();
	snprintf(key_pem, sizeof(key_pem), "%s/key.pem", dir);
	snprintf(pub_pem, sizeof(pub_pem), "%s/pub.pem", dir);
	snprintf(sa_json, sizeof(sa_json), "%s/sa.json", dir);
	snprintf(cmd, sizeof(cmd),
		 "openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 "
		 "-out %s 2>/dev/null && openssl pkey -in %s -pubout -out %s",
		 key_pem, key_pem, pub_pem);
	if (system(cmd) != 0)
		abort();
	pem = strdup(slurp(key_pem));
	o = json;
	o += sprintf(o, "{\"type\":\"service_account\",\"project_id\":\"proj\","
			"\"private_key_id\":\"k1\",\"private_key\":\"");
	for (p = pem; *p; p++)
		o += *p == '\n' ? sprintf(o, "\\n") : sprintf(o, "%c", *p);
	sprintf(o, "\",\"client_email\":\"sa@proj.iam.gserviceaccount.com\","
		   "\"token_uri\":\"https://oauth2.googleapis.com/token\"}");
	spit(sa_json, json);
	free(pem);
}

int main(void)
{
	curl_global_init(CURL_GLOBAL_DEFAULT);
	/* Retries still happen, just without seconds of backoff. */
	setenv("VECTUR_BACKOFF_BASE_MS", "10", 0);
	make_keys();
	RUN(test_expiry_parses_utc);
	RUN(test_expiry_keeps_nanoseconds);
	RUN(test_expiry_applies_offsets);
	RUN(test_expiry_rejects_malformed);
	RUN(test_expiry_go_zero_time_means_never);
	RUN(test_scope_maps_rclone_names);
	RUN(test_scope_list_is_space_joined);
	RUN(test_base64url_has_no_padding);
	RUN(test_jwt_signature_verifies_with_public_key);
	RUN(test_valid_token_is_used_without_refresh);
	RUN(test_token_in_future_offset_is_not_refreshed);
	RUN(test_expired_token_is_refreshed_with_form);
	RUN(test_token_within_a_minute_of_expiry_is_refreshed);
	RUN(test_missing_access_token_is_fetched);
	RUN(test_empty_client_fields_are_left_out);
	RUN(test_short_lived_tokens_are_reused);
	RUN(test_refresh_writes_token_back_in_rclone_shape);
	RUN(test_env_token_is_not_written_back);
	RUN(test_rotated_refresh_token_is_kept);
	RUN(test_invalid_grant_says_reconnect);
	RUN(test_reconnect_while_mounted_is_picked_up);
	RUN(test_server_errors_are_retried);
	RUN(test_persistent_server_error_gives_up);
	RUN(test_rejected_client_names_the_keys);
	RUN(test_echoed_secrets_are_kept_out_of_messages);
	RUN(test_unreachable_endpoint_is_a_transport_error);
	RUN(test_small_buffer_is_an_error);
	RUN(test_many_threads_share_one_refresh);
	RUN(test_many_threads_share_one_failure);
	RUN(test_invalidate_same_token_refreshes_once);
	RUN(test_deadlines_nest_and_restore);
	RUN(test_a_bounded_listing_gives_up_in_a_stalling_token_refresh);
	RUN(test_a_deadline_bounds_the_wait_for_another_refresh);
	RUN(test_service_account_posts_signed_jwt);
	RUN(test_service_account_refusal_says_check_key);
	RUN(test_service_account_bad_file_fails_at_new);
	RUN(test_emulator_refreshes_and_writes_back);
	RUN(test_emulator_expired_token_is_refreshed);
	RUN(test_emulator_unknown_refresh_token_is_invalid_grant);
	RUN(test_emulator_many_threads_one_refresh);
	RUN(test_emulator_service_account_jwt_grant);
	nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	curl_global_cleanup();
	return t_done();
}
