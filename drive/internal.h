/* internal.h — what drive/'s files share with each other and with nobody
 * else: the auth handle (auth.c), config write-back (config.c) and the HTTP
 * plumbing (http.c). Not installed, not included above drive/. */
#ifndef VECTUR_DRIVE_INTERNAL_H
#define VECTUR_DRIVE_INTERNAL_H

#include <curl/curl.h>

#include "drive.h"

#define DRIVE_DEFAULT_ENDPOINT	"https://www.googleapis.com"
#define DRIVE_DEFAULT_TOKEN_URL "https://oauth2.googleapis.com/token"

/* ---- http.c ---------------------------------------------------------- */

/* Options every easy handle gets: HTTP/1.1 only (HTTP/2 gave Drive clients
 * stream errors), timeouts, TCP keepalive, and a CA bundle from
 * $SSL_CERT_FILE or $CURL_CA_BUNDLE when set (libcurl itself ignores them,
 * the curl tool does not; tests rely on them). */
void drive_curl_common(CURL *h, int connect_timeout_s, int stall_timeout_s);

/* The time left before this thread's drive_deadline(), in ms (0 once it
 * has passed), or -1 when none is set. */
int64_t drive_deadline_left_ms(void);

/* ---- auth.c ---------------------------------------------------------- */

struct drive_auth;

/* token_url: where to refresh; the caller has already applied the rule
 * "cfg->token_url, else endpoint + /token when an endpoint is given, else
 * Google's". config_path: the file to write refreshed tokens back to ("" or
 * cfg->token_from_env = never). */
int drive_auth_new(struct drive_auth **out, const struct drive_config *cfg,
		   const char *token_url, struct drive_err *err);
void drive_auth_free(struct drive_auth *a);

/* Copies a valid access token into buf, refreshing it first when it is
 * missing or expires within 60 s. One refresh at a time across threads:
 * the others wait and use its result. An invalid_grant error says to
 * re-authorize with `rclone config reconnect REMOTE:`. */
int drive_auth_token(struct drive_auth *a, char *buf, size_t len,
		     struct drive_err *err);

/* A request with `rejected` got 401: the next drive_auth_token() refreshes,
 * once, however many threads report the same token. */
void drive_auth_invalidate(struct drive_auth *a, const char *rejected);

/* Parses an RFC 3339 time as rclone writes a token's "expiry": fractional
 * seconds up to nanoseconds, then Z or a +hh:mm/-hh:mm offset. Go's zero
 * time (year 1, "never expires") gives *sec = 0. -1 if malformed. */
int drive_auth_parse_expiry(const char *s, int64_t *sec, long *nsec);

/* ---- config.c -------------------------------------------------------- */

/* Writes token_json as the `token` key of [name] in the rclone config file
 * at path, the way rclone does: other sections, keys and comments kept,
 * written to a temp file in the same directory with mode 0600, fsynced,
 * then renamed over the original. */
int drive_config_save_token(const char *path, const char *name,
			    const char *token_json, struct drive_err *err);

#endif
