/* auth.c — access tokens for the Drive client. An rclone OAuth token is
 * refreshed with the refresh_token grant, a service account with the
 * jwt-bearer grant (jwt.c signs). A token is reused until shortly before it
 * expires; one thread at a time talks to the token endpoint while the
 * others wait for its answer; a refreshed OAuth token is written back to
 * rclone's config (config.c). Owns the token endpoint only: every Drive API
 * request is http.c's.
 *
 * No token, refresh token, client secret, assertion or key ever enters a
 * struct drive_err or stderr: messages name the remote, the file and the
 * endpoint instead. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>
#include <json-c/json.h>
#include <openssl/crypto.h>

#include "internal.h"
#include "jwt.h"

#define AUTH_MARGIN	60 /* refresh this many seconds before expiry */
#define AUTH_TRIES	4  /* token endpoint attempts on 5xx/transport */
#define AUTH_RESP_MAX	(64 * 1024)
#define AUTH_CONNECT_S	15
#define AUTH_TIMEOUT_S	60
#define AUTH_BACKOFF_MS 1000
#define AUTH_MIN_TRY_MS 1000 /* an attempt's least time under a deadline */
#define AUTH_DESC_MAX	160

#ifndef VECTUR_VERSION
#define VECTUR_VERSION "0"
#endif

/* What one answer of the token endpoint gave us. */
struct auth_grant {
	char *access_token;
	char *refresh_token; /* NULL: the endpoint kept the old one */
	char token_type[32];
	int64_t expires_in; /* seconds; 0 = not said */
};

/* The fields under "set once" are written by drive_auth_new only. mu
 * guards the token state; save_mu serialises config write-backs and is
 * never taken with mu held (write-back does file I/O and must not stall
 * threads that only want the current token). */
struct drive_auth {
	/* set once */
	char name[128];
	char config_path[1024]; /* "" = never write back */
	char token_url[512];
	char client_id[256];
	char client_secret[256];
	bool service_account;
	struct drive_sa_key sa;
	char scope_urls[1024];
	char sa_where[1400];

	pthread_mutex_t mu;  /* guards the fields down to save_mu */
	pthread_cond_t done; /* broadcast when a refresh ends */
	bool refreshing;     /* a thread is at the token endpoint */
	uint64_t gen;	     /* refreshes finished */
	int last_rc;	     /* and how the last one went */
	struct drive_err last_err;
	char *access_token; /* NULL = none yet */
	char *refresh_token;
	char token_type[32];
	int64_t expiry;	    /* seconds since the epoch; 0 = never */
	int margin;	    /* seconds before expiry we stop using it */
	bool rejected;	    /* the API answered 401 to access_token */
	bool grant_revoked; /* last refresh got invalid_grant */

	pthread_mutex_t save_mu; /* one config write-back at a time */
	uint64_t saved_gen;
};

/* ---- small things ----------------------------------------------------- */

static void secret_free(char *s)
{
	if (s)
		OPENSSL_cleanse(s, strlen(s));
	free(s);
}

static void auth_grant_clear(struct auth_grant *g)
{
	secret_free(g->access_token);
	secret_free(g->refresh_token);
	memset(g, 0, sizeof(*g));
}

static int64_t auth_now(void)
{
	return (int64_t)time(NULL);
}

static const char *json_str(json_object *o, const char *k)
{
	json_object *v;

	if (!json_object_object_get_ex(o, k, &v) ||
	    !json_object_is_type(v, json_type_string))
		return NULL;
	return json_object_get_string(v);
}

/* ---- RFC 3339 --------------------------------------------------------- */

static int take_digits(const char **p, int n, int *out)
{
	int v = 0;

	while (n--) {
		if (**p < '0' || **p > '9')
			return -1;
		v = v * 10 + (*(*p)++ - '0');
	}
	*out = v;
	return 0;
}

static int take_char(const char **p, const char *set)
{
	if (!**p || !strchr(set, **p))
		return -1;
	(*p)++;
	return 0;
}

/* "+hh:mm" / "-hh:mm" (Go writes the colon; tolerate "+hhmm") or Z. */
static int take_offset(const char **p, int64_t *off)
{
	int sign, hh, mm;

	if (**p == 'Z' || **p == 'z') {
		(*p)++;
		*off = 0;
		return 0;
	}
	if (**p != '+' && **p != '-')
		return -1;
	sign = *(*p)++ == '-' ? -1 : 1;
	if (take_digits(p, 2, &hh) < 0)
		return -1;
	if (**p == ':')
		(*p)++;
	if (take_digits(p, 2, &mm) < 0 || hh > 23 || mm > 59)
		return -1;
	*off = sign * (int64_t)(hh * 3600 + mm * 60);
	return 0;
}

int drive_auth_parse_expiry(const char *s, int64_t *sec, long *nsec)
{
	int y, mo, d, h, mi, se, digits = 0;
	const char *p = s;
	struct tm tm = {0};
	int64_t off;
	long ns = 0;

	if (!s || take_digits(&p, 4, &y) < 0 || take_char(&p, "-") < 0 ||
	    take_digits(&p, 2, &mo) < 0 || take_char(&p, "-") < 0 ||
	    take_digits(&p, 2, &d) < 0 || take_char(&p, "Tt ") < 0 ||
	    take_digits(&p, 2, &h) < 0 || take_char(&p, ":") < 0 ||
	    take_digits(&p, 2, &mi) < 0 || take_char(&p, ":") < 0 ||
	    take_digits(&p, 2, &se) < 0)
		return -1;
	if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 ||
	    se > 60)
		return -1;
	if (*p == '.') {
		p++;
		/* Go writes up to 9 digits; keep nanoseconds, drop finer. */
		while (*p >= '0' && *p <= '9') {
			if (digits++ < 9)
				ns = ns * 10 + (*p - '0');
			p++;
		}
		if (!digits)
			return -1;
		for (; digits < 9; digits++)
			ns *= 10;
	}
	if (take_offset(&p, &off) < 0 || *p)
		return -1;
	if (y <= 1) {
		/* Go's zero time.Time: rclone's "no expiry". */
		*sec = 0;
		*nsec = 0;
		return 0;
	}
	tm.tm_year = y - 1900;
	tm.tm_mon = mo - 1;
	tm.tm_mday = d;
	tm.tm_hour = h;
	tm.tm_min = mi;
	tm.tm_sec = se;
	*sec = (int64_t)timegm(&tm) - off;
	*nsec = ns;
	return 0;
}

/* Go's RFC3339Nano in UTC, as rclone writes it ("...:58.955387075Z"). */
static void auth_format_expiry(int64_t sec, long nsec, char *out, size_t len)
{
	time_t t = (time_t)sec;
	char frac[16] = "";
	struct tm tm;
	int i;

	if (sec == 0) {
		snprintf(out, len, "0001-01-01T00:00:00Z");
		return;
	}
	gmtime_r(&t, &tm);
	if (nsec) {
		snprintf(frac, sizeof(frac), ".%09ld", nsec);
		for (i = strlen(frac) - 1; frac[i] == '0'; i--)
			frac[i] = '\0';
	}
	snprintf(out, len, "%04d-%02d-%02dT%02d:%02d:%02d%sZ",
		 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
		 tm.tm_min, tm.tm_sec, frac);
}

/* ---- setting up ------------------------------------------------------- */

static int auth_init_token(struct drive_auth *a, const struct drive_config *cfg,
			   struct drive_err *err)
{
	const char *at, *rt, *tt, *exp;
	json_object *o;
	int64_t sec;
	long nsec;
	int rc = -1;

	o = json_tokener_parse(cfg->token_json);
	if (!o || !json_object_is_type(o, json_type_object)) {
		drive_err_set(err, 0, "config",
			      "remote \"%s\": the token in %s is not rclone's "
			      "token JSON; re-authorize with: rclone config "
			      "reconnect %s:",
			      a->name, cfg->source, a->name);
		goto out;
	}
	at = json_str(o, "access_token");
	rt = json_str(o, "refresh_token");
	tt = json_str(o, "token_type");
	exp = json_str(o, "expiry");
	if ((at && *at && !(a->access_token = strdup(at))) ||
	    (rt && *rt && !(a->refresh_token = strdup(rt)))) {
		drive_err_set(err, 0, "auth", "out of memory");
		goto out;
	}
	snprintf(a->token_type, sizeof(a->token_type), "%s",
		 tt && *tt ? tt : "Bearer");
	/* An expiry we cannot read costs one early refresh, nothing more. */
	if (exp && drive_auth_parse_expiry(exp, &sec, &nsec) == 0)
		a->expiry = sec;
	else if (exp)
		a->expiry = 1;
	rc = 0;
out:
	json_object_put(o);
	return rc;
}

static int auth_init_service_account(struct drive_auth *a,
				     const struct drive_config *cfg,
				     struct drive_err *err)
{
	a->service_account = true;
	if (drive_jwt_scope(cfg->scope[0] ? cfg->scope : "drive", a->scope_urls,
			    sizeof(a->scope_urls)) < 0) {
		drive_err_set(err, 0, "config",
			      "remote \"%s\": scope \"%.128s\" in %s names no "
			      "usable OAuth scope",
			      a->name, cfg->scope, cfg->source);
		return -1;
	}
	if (cfg->service_account_credentials) {
		snprintf(a->sa_where, sizeof(a->sa_where),
			 "service_account_credentials of remote \"%s\" (%s)",
			 a->name, cfg->source);
		return drive_sa_key_parse(cfg->service_account_credentials,
					  a->sa_where, &a->sa, err);
	}
	snprintf(a->sa_where, sizeof(a->sa_where), "service_account_file %s",
		 cfg->service_account_file);
	return drive_sa_key_load_file(cfg->service_account_file, a->sa_where,
				      &a->sa, err);
}

/* On drive_mono_ms()'s clock, which auth_wait's deadline is on. */
static void auth_cond_init(pthread_cond_t *cv)
{
	pthread_condattr_t ca;

	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(cv, &ca);
	pthread_condattr_destroy(&ca);
}

int drive_auth_new(struct drive_auth **out, const struct drive_config *cfg,
		   const char *token_url, struct drive_err *err)
{
	struct drive_auth *a;
	int rc;

	*out = NULL;
	a = calloc(1, sizeof(*a));
	if (!a) {
		drive_err_set(err, 0, "auth", "out of memory");
		return -1;
	}
	snprintf(a->name, sizeof(a->name), "%s", cfg->name);
	snprintf(a->client_id, sizeof(a->client_id), "%s", cfg->client_id);
	snprintf(a->client_secret, sizeof(a->client_secret), "%s",
		 cfg->client_secret);
	if (!token_url || !*token_url)
		token_url = cfg->token_url[0] ? cfg->token_url
					      : DRIVE_DEFAULT_TOKEN_URL;
	snprintf(a->token_url, sizeof(a->token_url), "%s", token_url);
	a->margin = AUTH_MARGIN;
	pthread_mutex_init(&a->mu, NULL);
	pthread_mutex_init(&a->save_mu, NULL);
	auth_cond_init(&a->done);

	if (cfg->service_account_credentials || cfg->service_account_file[0]) {
		rc = auth_init_service_account(a, cfg, err);
	} else if (cfg->token_json) {
		rc = auth_init_token(a, cfg, err);
		/* rclone writes refreshed tokens back to the file they came
		 * from; a token from the environment has no such home. */
		if (!cfg->token_from_env && cfg->source[0] &&
		    strcmp(cfg->source, "environment") != 0)
			snprintf(a->config_path, sizeof(a->config_path), "%s",
				 cfg->source);
	} else {
		drive_err_set(err, 0, "config",
			      "remote \"%s\" has no credentials in %s: no "
			      "token and no service account",
			      a->name, cfg->source);
		rc = -1;
	}
	if (rc < 0) {
		drive_auth_free(a);
		return -1;
	}
	*out = a;
	return 0;
}

void drive_auth_free(struct drive_auth *a)
{
	if (!a)
		return;
	secret_free(a->access_token);
	secret_free(a->refresh_token);
	drive_sa_key_free(&a->sa);
	pthread_cond_destroy(&a->done);
	pthread_mutex_destroy(&a->save_mu);
	pthread_mutex_destroy(&a->mu);
	OPENSSL_cleanse(a, sizeof(*a));
	free(a);
}

/* ---- talking to the token endpoint ------------------------------------ */

struct auth_resp {
	char *p;
	size_t len;
	bool too_big;
};

static size_t auth_on_data(char *data, size_t size, size_t n, void *ud)
{
	struct auth_resp *r = ud;
	size_t add = size * n;
	char *np;

	if (r->len + add > AUTH_RESP_MAX) {
		r->too_big = true;
		return 0;
	}
	np = realloc(r->p, r->len + add + 1);
	if (!np)
		return 0;
	r->p = np;
	memcpy(r->p + r->len, data, add);
	r->len += add;
	r->p[r->len] = '\0';
	return add;
}

/* What drive_curl_common() does for API handles, kept here so auth.c does
 * not depend on http.c: HTTP/1.1, timeouts, and the CA bundle from the
 * environment (libcurl ignores SSL_CERT_FILE; tests rely on it). Under a
 * drive_deadline() an attempt ends with it (given AUTH_MIN_TRY_MS at
 * least): a token endpoint that accepts and never answers would
 * otherwise hold a bounded listing for AUTH_TIMEOUT_S. */
static void auth_curl_setup(CURL *h)
{
	const char *ca = getenv("SSL_CERT_FILE");
	int64_t left = drive_deadline_left_ms();

	if (!ca || !*ca)
		ca = getenv("CURL_CA_BUNDLE");
	if (ca && *ca)
		curl_easy_setopt(h, CURLOPT_CAINFO, ca);
	curl_easy_setopt(h, CURLOPT_HTTP_VERSION, CURL_HTTP_VERSION_1_1);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, (long)AUTH_CONNECT_S);
	curl_easy_setopt(h, CURLOPT_TIMEOUT, (long)AUTH_TIMEOUT_S);
	if (left >= 0) {
		if (left < AUTH_MIN_TRY_MS)
			left = AUTH_MIN_TRY_MS;
		if (left < AUTH_CONNECT_S * 1000L)
			curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS,
					 (long)left);
		if (left < AUTH_TIMEOUT_S * 1000L)
			curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)left);
	}
	curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
	curl_easy_setopt(h, CURLOPT_USERAGENT, "vectur/" VECTUR_VERSION);
#if LIBCURL_VERSION_NUM >= 0x075500
	curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
#endif
}

/* application/x-www-form-urlencoded from name/value pairs; empty values
 * are left out, as Go's oauth2 does for client_id/client_secret. */
static char *auth_form(CURL *h, const char *const kv[], int npairs)
{
	struct {
		char *p;
		size_t len;
	} b = {0};
	char *esc, *np;
	size_t need;
	int i;

	for (i = 0; i < npairs; i++) {
		if (!kv[2 * i + 1] || !*kv[2 * i + 1])
			continue;
		esc = curl_easy_escape(h, kv[2 * i + 1], 0);
		if (!esc)
			goto fail;
		need = b.len + strlen(kv[2 * i]) + strlen(esc) + 3;
		np = malloc(need);
		if (!np) {
			OPENSSL_cleanse(esc, strlen(esc));
			curl_free(esc);
			goto fail;
		}
		snprintf(np, need, "%s%s%s=%s", b.p ? b.p : "",
			 b.len ? "&" : "", kv[2 * i], esc);
		OPENSSL_cleanse(esc, strlen(esc));
		curl_free(esc);
		secret_free(b.p);
		b.p = np;
		b.len = strlen(np);
	}
	return b.p ? b.p : strdup("");
fail:
	secret_free(b.p);
	return NULL;
}

/* Endpoint text goes into messages only if it is printable and echoes
 * none of what we sent. */
static void auth_safe_text(const char *in, const char *const secrets[],
			   char *out, size_t len)
{
	size_t i, n = 0;

	out[0] = '\0';
	if (!in)
		return;
	for (i = 0; secrets[i]; i++)
		if (*secrets[i] && strstr(in, secrets[i]))
			return;
	for (i = 0; in[i] && n + 1 < len && n < AUTH_DESC_MAX; i++)
		out[n++] = in[i] >= 0x20 && in[i] < 0x7f ? in[i] : ' ';
	out[n] = '\0';
}

static int auth_parse_grant(const char *body, struct auth_grant *g)
{
	const char *at, *rt, *tt;
	json_object *o, *v;
	int rc = -1;

	o = json_tokener_parse(body ? body : "");
	if (!o || !json_object_is_type(o, json_type_object))
		goto out;
	at = json_str(o, "access_token");
	rt = json_str(o, "refresh_token");
	tt = json_str(o, "token_type");
	if (!at || !*at)
		goto out;
	g->access_token = strdup(at);
	g->refresh_token = rt && *rt ? strdup(rt) : NULL;
	if (!g->access_token || (rt && *rt && !g->refresh_token))
		goto out;
	snprintf(g->token_type, sizeof(g->token_type), "%s",
		 tt && *tt ? tt : "Bearer");
	if (json_object_object_get_ex(o, "expires_in", &v))
		g->expires_in = json_object_get_int64(v);
	rc = 0;
out:
	if (rc < 0)
		auth_grant_clear(g);
	json_object_put(o);
	return rc;
}

/* Turns a token endpoint refusal into the message a user can act on. */
static void auth_err_refused(const struct drive_auth *a, long status,
			     const char *body, const char *const secrets[],
			     struct drive_err *err)
{
	char reason[64] = "", desc[AUTH_DESC_MAX + 1] = "";
	json_object *o = json_tokener_parse(body ? body : "");
	const char *r = NULL;

	if (o && json_object_is_type(o, json_type_object)) {
		r = json_str(o, "error");
		auth_safe_text(json_str(o, "error_description"), secrets, desc,
			       sizeof(desc));
	}
	auth_safe_text(r, secrets, reason, sizeof(reason));
	json_object_put(o);

	if (strcmp(reason, "invalid_grant") == 0 && a->service_account)
		drive_err_set(err, status, reason,
			      "remote \"%s\": the token endpoint %s refused "
			      "the service account key (invalid_grant%s%s): "
			      "check that the key in %s is valid and not "
			      "deleted, that the account is enabled, and that "
			      "this machine's clock is right",
			      a->name, a->token_url, *desc ? ": " : "", desc,
			      a->sa_where);
	else if (strcmp(reason, "invalid_grant") == 0)
		drive_err_set(err, status, reason,
			      "remote \"%s\": the refresh token was revoked "
			      "or has expired (invalid_grant from %s%s%s); "
			      "re-authorize with: rclone config reconnect %s:",
			      a->name, a->token_url, *desc ? ": " : "", desc,
			      a->name);
	else if (strcmp(reason, "invalid_client") == 0 ||
		 strcmp(reason, "unauthorized_client") == 0)
		drive_err_set(err, status, reason,
			      "remote \"%s\": the token endpoint %s rejected "
			      "the OAuth client (%s%s%s): check client_id and "
			      "client_secret, then run: rclone config "
			      "reconnect %s:",
			      a->name, a->token_url, reason, *desc ? ": " : "",
			      desc, a->name);
	else
		drive_err_set(err, status, *reason ? reason : "auth",
			      "remote \"%s\": the token endpoint %s answered "
			      "HTTP %ld%s%s%s%s",
			      a->name, a->token_url, status, *reason ? " " : "",
			      reason, *desc ? ": " : "", desc);
}

/* One POST of `form` to the token endpoint; fills g on 200. */
static int auth_exchange(const struct drive_auth *a, CURL *h, const char *form,
			 const char *const secrets[], struct auth_grant *g,
			 struct drive_err *err)
{
	char curl_msg[CURL_ERROR_SIZE] = "";
	struct auth_resp r = {0};
	long status = 0;
	CURLcode cc;
	int rc = -1;

	auth_curl_setup(h);
	curl_easy_setopt(h, CURLOPT_URL, a->token_url);
	curl_easy_setopt(h, CURLOPT_POSTFIELDS, form);
	curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)strlen(form));
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, auth_on_data);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, &r);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, curl_msg);
	cc = curl_easy_perform(h);
	if (cc != CURLE_OK && !r.too_big) {
		drive_err_set(err, 0, "transport",
			      "remote \"%s\": cannot reach the token endpoint "
			      "%s: %s",
			      a->name, a->token_url,
			      *curl_msg ? curl_msg : curl_easy_strerror(cc));
		err->curl_code = cc;
		goto out;
	}
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
	if (r.too_big) {
		drive_err_set(err, status, "auth",
			      "remote \"%s\": the token endpoint %s sent an "
			      "answer larger than %d bytes",
			      a->name, a->token_url, AUTH_RESP_MAX);
		goto out;
	}
	if (status != 200) {
		auth_err_refused(a, status, r.p, secrets, err);
		goto out;
	}
	if (auth_parse_grant(r.p, g) < 0) {
		drive_err_set(err, status, "auth",
			      "remote \"%s\": the token endpoint %s answered "
			      "200 without an access_token",
			      a->name, a->token_url);
		goto out;
	}
	rc = 0;
out:
	secret_free(r.p);
	return rc;
}

static int auth_grant_refresh(const struct drive_auth *a, const char *rt,
			      struct auth_grant *g, struct drive_err *err)
{
	const char *secrets[] = {rt, a->client_secret, NULL};
	const char *kv[] = {"grant_type",    "refresh_token",
			    "client_id",     a->client_id,
			    "client_secret", a->client_secret,
			    "refresh_token", rt};
	char *form = NULL;
	CURL *h;
	int rc = -1;

	if (!rt || !*rt) {
		drive_err_set(err, 0, "invalid_grant",
			      "remote \"%s\": the token has no refresh_token, "
			      "so it cannot be renewed; re-authorize with: "
			      "rclone config reconnect %s:",
			      a->name, a->name);
		return -1;
	}
	h = curl_easy_init();
	if (h)
		form = auth_form(h, kv, 4);
	if (!h || !form)
		drive_err_set(err, 0, "auth", "out of memory");
	else
		rc = auth_exchange(a, h, form, secrets, g, err);
	secret_free(form);
	curl_easy_cleanup(h);
	return rc;
}

static int auth_post_assertion(const struct drive_auth *a, const char *jwt,
			       struct auth_grant *g, struct drive_err *err)
{
	const char *secrets[] = {jwt, NULL};
	const char *kv[] = {"grant_type", DRIVE_JWT_GRANT_TYPE, "assertion",
			    jwt};
	char *form = NULL;
	CURL *h;
	int rc = -1;

	h = curl_easy_init();
	if (h)
		form = auth_form(h, kv, 2);
	if (!h || !form)
		drive_err_set(err, 0, "auth", "out of memory");
	else
		rc = auth_exchange(a, h, form, secrets, g, err);
	secret_free(form);
	curl_easy_cleanup(h);
	return rc;
}

/* A fresh assertion per attempt: its iat must be close to now. */
static int auth_grant_jwt(const struct drive_auth *a, struct auth_grant *g,
			  struct drive_err *err)
{
	char *jwt = NULL;
	int rc;

	if (drive_jwt_build(&a->sa, a->scope_urls, a->token_url, auth_now(),
			    &jwt, err) < 0)
		return -1;
	rc = auth_post_assertion(a, jwt, g, err);
	secret_free(jwt);
	/* A service account has no refresh token to keep. */
	if (rc == 0 && g->refresh_token) {
		secret_free(g->refresh_token);
		g->refresh_token = NULL;
	}
	return rc;
}

/* The same knob http.c honours, so tests can make every wait short. */
static long auth_backoff_base_ms(void)
{
	const char *v = getenv("VECTUR_BACKOFF_BASE_MS");
	char *end;
	long n;

	if (!v || !*v)
		return AUTH_BACKOFF_MS;
	n = strtol(v, &end, 10);
	return *end || n < 0 || n > 3600 * 1000 ? AUTH_BACKOFF_MS : n;
}

static long auth_backoff_ms(int attempt)
{
	long base = auth_backoff_base_ms();
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (base << attempt) +
	       (base ? now.tv_nsec / 1000000 % base : 0); /* jitter */
}

static void auth_sleep(long ms)
{
	struct timespec ts;

	ts.tv_sec = ms / 1000;
	ts.tv_nsec = ms % 1000 * 1000000L;
	while (nanosleep(&ts, &ts) < 0)
		;
}

/* The grant, retried with backoff on 5xx and transport errors; a refusal
 * (4xx) is final, and so is the last error once the next try would start
 * after this thread's drive_deadline(). */
static int auth_fetch(const struct drive_auth *a, const char *rt,
		      struct auth_grant *g, struct drive_err *err)
{
	int64_t left;
	long ms;
	int attempt, rc;

	for (attempt = 0;; attempt++) {
		drive_err_clear(err);
		rc = a->service_account ? auth_grant_jwt(a, g, err)
					: auth_grant_refresh(a, rt, g, err);
		if (rc == 0 || attempt + 1 >= AUTH_TRIES ||
		    !drive_err_retryable(err))
			return rc;
		ms = auth_backoff_ms(attempt);
		left = drive_deadline_left_ms();
		if (left >= 0 && ms >= left)
			return rc;
		auth_sleep(ms);
	}
}

/* ---- the shared token ------------------------------------------------- */

static bool auth_usable(const struct drive_auth *a, int margin)
{
	if (!a->access_token || a->rejected)
		return false;
	return a->expiry == 0 || auth_now() < a->expiry - margin;
}

static int auth_copy(const struct drive_auth *a, char *buf, size_t len,
		     struct drive_err *err)
{
	if (strlen(a->access_token) >= len) {
		drive_err_set(err, 0, "auth",
			      "access token of remote \"%s\" is longer than "
			      "%zu bytes",
			      a->name, len - 1);
		return -1;
	}
	strcpy(buf, a->access_token);
	return 0;
}

/* After `rclone config reconnect` the file holds a new refresh token; a
 * mount that hit invalid_grant picks it up instead of failing forever. */
static void auth_reload_refresh_token(struct drive_auth *a)
{
	struct drive_config cfg;
	struct drive_err err;
	json_object *o = NULL;
	const char *rt;
	char *copy;

	if (!a->config_path[0] ||
	    drive_config_load(a->config_path, a->name, &cfg, &err) < 0)
		return;
	if (cfg.token_json && !cfg.token_from_env)
		o = json_tokener_parse(cfg.token_json);
	rt = o ? json_str(o, "refresh_token") : NULL;
	if (rt && *rt && (!a->refresh_token || strcmp(rt, a->refresh_token))) {
		copy = strdup(rt);
		if (copy) {
			pthread_mutex_lock(&a->mu);
			secret_free(a->refresh_token);
			a->refresh_token = copy;
			a->grant_revoked = false;
			pthread_mutex_unlock(&a->mu);
		}
	}
	json_object_put(o);
	drive_config_free(&cfg);
}

/* Called with mu held after a refresh: installs its result. */
static void auth_publish(struct drive_auth *a, int rc, struct auth_grant *g,
			 const struct drive_err *err)
{
	a->last_rc = rc;
	a->last_err = *err;
	a->grant_revoked = rc < 0 && strcmp(err->reason, "invalid_grant") == 0;
	if (rc == 0) {
		secret_free(a->access_token);
		a->access_token = g->access_token;
		g->access_token = NULL;
		if (g->refresh_token) {
			secret_free(a->refresh_token);
			a->refresh_token = g->refresh_token;
			g->refresh_token = NULL;
		}
		snprintf(a->token_type, sizeof(a->token_type), "%s",
			 g->token_type);
		a->expiry = g->expires_in > 0 ? auth_now() + g->expires_in : 0;
		/* Short-lived tokens (tests, some proxies) would otherwise be
		 * "about to expire" the moment they arrive. */
		a->margin = g->expires_in > 0 && g->expires_in / 4 < AUTH_MARGIN
				    ? (int)(g->expires_in / 4)
				    : AUTH_MARGIN;
		a->rejected = false;
	}
	a->gen++;
	a->refreshing = false;
	pthread_cond_broadcast(&a->done);
}

/* rclone's token JSON for the config file (called with mu held). */
static char *auth_token_json(const struct drive_auth *a)
{
	json_object *o = json_object_new_object();
	struct timespec ts;
	char expiry[64];
	char *s = NULL;
	long nsec = 0;

	if (!o)
		return NULL;
	if (a->expiry) {
		clock_gettime(CLOCK_REALTIME, &ts);
		nsec = ts.tv_nsec;
	}
	auth_format_expiry(a->expiry, nsec, expiry, sizeof(expiry));
	json_object_object_add(o, "access_token",
			       json_object_new_string(a->access_token));
	json_object_object_add(o, "token_type",
			       json_object_new_string(a->token_type));
	json_object_object_add(o, "refresh_token",
			       json_object_new_string(a->refresh_token
							      ? a->refresh_token
							      : ""));
	json_object_object_add(o, "expiry", json_object_new_string(expiry));
	s = strdup(json_object_to_json_string_ext(
		o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
	json_object_put(o);
	return s;
}

/* Writes the token of refresh `gen` back unless a later one was written
 * already. A failure costs nothing now (the token is in memory) but would
 * make the next start refresh again: say so on stderr, as rclone does. */
static void auth_save(struct drive_auth *a, uint64_t gen, const char *json)
{
	struct drive_err err;

	pthread_mutex_lock(&a->save_mu);
	if (gen > a->saved_gen) {
		if (drive_config_save_token(a->config_path, a->name, json,
					    &err) < 0)
			fprintf(stderr, "vectur: warning: %s\n", err.message);
		else
			a->saved_gen = gen;
	}
	pthread_mutex_unlock(&a->save_mu);
}

/* Waits for the refresh in progress, until this thread's drive_deadline()
 * if one is set (a refresh another thread began without one may take
 * minutes against a stalling endpoint). Returns 1 with the token copied if
 * it produced one, -1 with its error if it failed or the deadline came
 * first, 0 to look again. */
static int auth_wait(struct drive_auth *a, char *buf, size_t len,
		     struct drive_err *err)
{
	uint64_t gen = a->gen;
	int64_t left = drive_deadline_left_ms();
	struct timespec until;

	drive_mono_ts_in(&until, left);
	while (a->refreshing) {
		if (left < 0) {
			pthread_cond_wait(&a->done, &a->mu);
		} else if (pthread_cond_timedwait(&a->done, &a->mu, &until) ==
			   ETIMEDOUT) {
			drive_err_set(err, 0, "transport",
				      "remote \"%s\": no answer from the token "
				      "endpoint %s in time",
				      a->name, a->token_url);
			err->curl_code = CURLE_OPERATION_TIMEDOUT;
			return -1;
		}
	}
	if (a->gen == gen)
		return 0;
	if (a->last_rc < 0) {
		*err = a->last_err;
		return -1;
	}
	if (!auth_usable(a, 0))
		return 0;
	return auth_copy(a, buf, len, err) < 0 ? -1 : 1;
}

/* This thread refreshes: called and returns with mu held, drops it for
 * the network and the file. */
static int auth_refresh(struct drive_auth *a, char *buf, size_t len,
			struct drive_err *err)
{
	struct auth_grant g = {0};
	bool revoked = a->grant_revoked;
	char *rt = NULL, *json = NULL;
	uint64_t gen;
	int rc;

	a->refreshing = true;
	pthread_mutex_unlock(&a->mu);

	if (revoked && !a->service_account)
		auth_reload_refresh_token(a);
	pthread_mutex_lock(&a->mu);
	rt = a->refresh_token ? strdup(a->refresh_token) : NULL;
	pthread_mutex_unlock(&a->mu);

	rc = auth_fetch(a, rt, &g, err);

	pthread_mutex_lock(&a->mu);
	auth_publish(a, rc, &g, err);
	gen = a->gen;
	if (rc == 0) {
		rc = auth_copy(a, buf, len, err);
		if (a->config_path[0])
			json = auth_token_json(a);
	}
	if (json) {
		pthread_mutex_unlock(&a->mu);
		auth_save(a, gen, json);
		pthread_mutex_lock(&a->mu);
	}
	secret_free(json);
	secret_free(rt);
	auth_grant_clear(&g);
	return rc;
}

int drive_auth_token(struct drive_auth *a, char *buf, size_t len,
		     struct drive_err *err)
{
	struct drive_err scratch;
	int rc;

	if (!err)
		err = &scratch;
	pthread_mutex_lock(&a->mu);
	for (;;) {
		if (auth_usable(a, a->margin)) {
			rc = auth_copy(a, buf, len, err);
			break;
		}
		if (!a->refreshing) {
			rc = auth_refresh(a, buf, len, err);
			break;
		}
		rc = auth_wait(a, buf, len, err);
		if (rc != 0) {
			rc = rc < 0 ? -1 : 0;
			break;
		}
	}
	pthread_mutex_unlock(&a->mu);
	return rc;
}

void drive_auth_invalidate(struct drive_auth *a, const char *rejected)
{
	pthread_mutex_lock(&a->mu);
	/* Only the token that was refused: a thread reporting a 401 for a
	 * token already replaced must not throw the new one away. */
	if (rejected && a->access_token &&
	    strcmp(rejected, a->access_token) == 0)
		a->rejected = true;
	pthread_mutex_unlock(&a->mu);
}
