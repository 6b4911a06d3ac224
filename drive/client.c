/* client.c — the life of a struct drive_client: choosing the endpoint and
 * the token URL, creating the auth handle and the pacer, tearing down the
 * handle pool, and the statistics. Sends no requests itself.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http.h"

#define DEFAULT_RATE		10.0
#define DEFAULT_BURST		100
#define DEFAULT_RETRIES		10
#define DEFAULT_STALL_S		60
#define DEFAULT_CONNECT_S	15
#define DEFAULT_BACKOFF_BASE_MS 1000

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_res;

/* curl_global_init is not safe to race with other threads' first use. */
static void curl_init(void)
{
	curl_init_res = curl_global_init(CURL_GLOBAL_DEFAULT);
}

static void copy_endpoint(char *dst, size_t len, const char *src)
{
	size_t n;

	snprintf(dst, len, "%s", src);
	n = strlen(dst);
	while (n > 0 && dst[n - 1] == '/')
		dst[--n] = '\0';
}

/* cfg->token_url if set; else <endpoint>/token when the endpoint is not
 * Google's (tests point both at the emulator); else Google's. */
static void choose_token_url(const struct drive_config *cfg,
			     const struct drive_client_opts *opts,
			     const char *endpoint, char *out, size_t len)
{
	bool custom = (opts && opts->endpoint && *opts->endpoint) ||
		      (cfg->endpoint[0] &&
		       strcmp(endpoint, DRIVE_DEFAULT_ENDPOINT) != 0);

	if (cfg->token_url[0])
		snprintf(out, len, "%s", cfg->token_url);
	else if (custom)
		snprintf(out, len, "%s/token", endpoint);
	else
		snprintf(out, len, "%s", DRIVE_DEFAULT_TOKEN_URL);
}

static int env_int(const char *name, int def)
{
	const char *v = getenv(name);
	char *end;
	long n;

	if (!v || !*v)
		return def;
	n = strtol(v, &end, 10);
	if (*end || n < 0 || n > 3600 * 1000)
		return def;
	return (int)n;
}

int drive_client_new(struct drive_client **out, const struct drive_config *cfg,
		     const struct drive_client_opts *opts,
		     struct drive_err *err)
{
	struct drive_client_opts none = {0};
	struct drive_client *c;
	char token_url[1024];
	int rc = -1;

	*out = NULL;
	drive_err_clear(err);
	if (!opts)
		opts = &none;
	pthread_once(&curl_once, curl_init);
	if (curl_init_res != CURLE_OK) {
		drive_err_set(err, 0, "localError", "curl_global_init: %s",
			      curl_easy_strerror(curl_init_res));
		return -1;
	}
	c = calloc(1, sizeof(*c));
	if (!c) {
		drive_err_local(err, ENOMEM, "drive_client_new");
		return -1;
	}
	pthread_mutex_init(&c->pool_lock, NULL);
	pthread_mutex_init(&c->trouble_lock, NULL);
	if (opts->endpoint && *opts->endpoint)
		copy_endpoint(c->endpoint, sizeof(c->endpoint), opts->endpoint);
	else if (cfg->endpoint[0])
		copy_endpoint(c->endpoint, sizeof(c->endpoint), cfg->endpoint);
	else
		copy_endpoint(c->endpoint, sizeof(c->endpoint),
			      DRIVE_DEFAULT_ENDPOINT);
	snprintf(c->root_folder_id, sizeof(c->root_folder_id), "%s",
		 cfg->root_folder_id);
	snprintf(c->team_drive, sizeof(c->team_drive), "%s", cfg->team_drive);
	c->max_retries =
		opts->max_retries > 0 ? opts->max_retries : DEFAULT_RETRIES;
	c->timeout_s = opts->timeout_s > 0 ? opts->timeout_s : DEFAULT_STALL_S;
	c->connect_timeout_s = opts->connect_timeout_s > 0
				       ? opts->connect_timeout_s
				       : DEFAULT_CONNECT_S;
	c->backoff_base_ms =
		env_int("VECTUR_BACKOFF_BASE_MS", DEFAULT_BACKOFF_BASE_MS);
	c->debug = env_int("VECTUR_DRIVE_DEBUG", 0) > 0;
	c->pacer = drive_pacer_new(
		opts->pacer_rate > 0 ? opts->pacer_rate : DEFAULT_RATE,
		opts->pacer_burst > 0 ? opts->pacer_burst : DEFAULT_BURST);
	if (!c->pacer) {
		drive_err_local(err, ENOMEM, "drive_client_new");
		goto out;
	}
	choose_token_url(cfg, opts, c->endpoint, token_url, sizeof(token_url));
	if (drive_auth_new(&c->auth, cfg, token_url, err) < 0)
		goto out;
	rc = 0;
out:
	if (rc < 0)
		drive_client_free(c);
	else
		*out = c;
	return rc;
}

void drive_client_free(struct drive_client *c)
{
	size_t i;

	if (!c)
		return;
	for (i = 0; i < c->pool_len; i++)
		curl_easy_cleanup(c->pool[i]);
	free(c->pool);
	pthread_mutex_destroy(&c->pool_lock);
	pthread_mutex_destroy(&c->trouble_lock);
	drive_auth_free(c->auth);
	drive_pacer_free(c->pacer);
	free(c);
}

int drive_auth_check(struct drive_client *c, struct drive_err *err)
{
	char token[4096];
	int rc;

	drive_err_clear(err);
	rc = drive_auth_token(c->auth, token, sizeof(token), err);
	explicit_bzero(token, sizeof(token));
	return rc < 0 ? -1 : 0;
}

void drive_stats_get(struct drive_client *c, struct drive_stats *out)
{
	out->requests = atomic_load(&c->requests);
	out->retries = atomic_load(&c->retries);
	out->bytes_up = atomic_load(&c->bytes_up);
	out->bytes_down = atomic_load(&c->bytes_down);
}

const char *drive_list_params(struct drive_client *c, char *buf, size_t len)
{
	/* Without these Drive hides shared-drive items; with a team drive,
	 * lists must also name the drive and the corpus. */
	if (c->team_drive[0])
		snprintf(buf, len,
			 "&supportsAllDrives=true&includeItemsFromAllDrives="
			 "true&corpora=drive&driveId=%s",
			 c->team_drive);
	else
		snprintf(buf, len,
			 "&supportsAllDrives=true&"
			 "includeItemsFromAllDrives=true");
	return buf;
}
