/* http.h — what drive/'s HTTP-speaking files share and nobody above drive/
 * sees: the client struct (client.c), one request with its retry policy
 * (http.c), the pacer and backoff (pacer.c), and the File resource parser
 * (api.c).
 *
 * Threads: struct drive_client is shared by every thread of a mount. Its
 * fields are written once in drive_client_new() and only read afterwards,
 * except the handle pool (pool_lock) and the statistics (atomics). The
 * pacer and the auth handle carry their own locks. Lock order: pool_lock
 * is never held while calling anything else.
 */
#ifndef VECTUR_DRIVE_HTTP_H
#define VECTUR_DRIVE_HTTP_H

#include <pthread.h>
#include <stdatomic.h>

#include <json-c/json.h>

#include "internal.h"

/* The fields every File we read carries: exactly what struct drive_file
 * holds, so lists stay small (Drive sends only what `fields` names). */
#define DRIVE_FILE_FIELDS                                                      \
	"id,name,mimeType,parents,md5Checksum,size,version,createdTime,"       \
	"modifiedTime,trashed,headRevisionId"

/* ---- pacer.c --------------------------------------------------------- */

struct drive_pacer;

/* A token bucket of `burst` requests refilled at `rate` per second. */
struct drive_pacer *drive_pacer_new(double rate, int burst);
void drive_pacer_free(struct drive_pacer *p);
/* Blocks until this thread may send one request. Fair: callers are served
 * in the order they arrive. */
void drive_pacer_wait(struct drive_pacer *p);
/* Blocks only while a rate-limit pause lasts, taking no token: for
 * requests that move data on an open upload session (see http.c). */
void drive_pacer_wait_pause(struct drive_pacer *p);
/* After a rate-limit answer: nobody sends for `ms`, and the bucket starts
 * empty afterwards, so waiting threads do not stampede. */
void drive_pacer_pause(struct drive_pacer *p, int64_t ms);

/* Retry delay for the n-th retry (n from 0): min(2^n * base + random(0..
 * base), 32 * base) milliseconds. base is 1000 in production. */
int64_t drive_backoff_ms(int base_ms, int n);
void drive_sleep_ms(int64_t ms);
int64_t drive_mono_ms(void);

/* ---- client.c -------------------------------------------------------- */

struct drive_client {
	char endpoint[512]; /* base URL, no trailing '/' */
	char root_folder_id[256];
	char team_drive[256];
	struct drive_auth *auth;
	struct drive_pacer *pacer;
	int max_retries;
	int timeout_s;
	int connect_timeout_s;
	int backoff_base_ms; /* $VECTUR_BACKOFF_BASE_MS, default 1000 */
	bool debug;	     /* $VECTUR_DRIVE_DEBUG: a line per request */

	pthread_mutex_t pool_lock; /* guards pool, pool_len, pool_cap */
	CURL **pool;		   /* idle easy handles, connections kept */
	size_t pool_len, pool_cap;

	atomic_uint_least64_t requests, retries, bytes_up, bytes_down;
	atomic_int_least64_t give_up_at; /* drive_mono_ms(); 0 = never */

	/* drive_trouble(): the last error a retry waited on, and since when
	 * requests fail, against the last answer that was not such an error
	 * (drive_mono_ms(); guarded by trouble_lock). */
	pthread_mutex_t trouble_lock;
	char trouble[640];
	int64_t trouble_ms, trouble_since_ms, answered_ms;
};

/* True once the time set by drive_client_give_up_in() has come. */
bool drive_gave_up(struct drive_client *c);

/* "&supportsAllDrives=true..." parameters for lists and for single-file
 * calls; they name the shared drive when the remote is a team drive. */
const char *drive_list_params(struct drive_client *c, char *buf, size_t len);

/* ---- http.c ---------------------------------------------------------- */

/* A request body streamed to curl: `pre` bytes, then bytes [fd_off,
 * fd_off + fd_len) of fd read with pread, then `post` bytes. Any part may
 * be empty (fd_len 0). The file is never buffered whole. */
struct drive_body {
	const char *pre;
	size_t pre_len;
	int fd;
	int64_t fd_off;
	int64_t fd_len;
	const char *post;
	size_t post_len;
	/* Sees every run of file bytes as it is read, with its file offset
	 * (runs may repeat when curl rewinds). Optional. */
	void (*on_file_bytes)(const void *p, size_t n, int64_t off, void *ud);
	void *ud;
	/* private to http.c */
	int64_t pos;
	int read_errno;
};

struct drive_resp;

struct drive_req {
	const char *method; /* "GET", "POST", "PATCH", "PUT", "DELETE" */
	const char *url;    /* absolute */
	const char *content_type;
	const char *const *headers; /* extra "Name: value", NULL-terminated */
	struct drive_body *body;    /* NULL = no body */
	bool accept_308;	    /* resumable uploads: 308 is not an error */
	bool data_plane; /* moves content (upload chunk, download range): not
			    paced */
	/* Where 2xx body bytes go; NULL = collected into resp->body. Return
	 * 0, or an errno to abort (reported as a local, non-retried error). */
	int (*sink)(const char *p, size_t n, struct drive_resp *rs, void *ud);
	void *sink_ud;
};

struct drive_resp {
	long status;
	char *body; /* collected body, NUL-terminated (or NULL) */
	size_t body_len, body_cap;
	char location[2048];
	char range[128];
	char content_range[128];
	int64_t date_ms; /* Date header, ms since the epoch; 0 if none */
	int64_t sunk;	 /* body bytes handed to the sink, this attempt */
};

void drive_resp_reset(struct drive_resp *rs);

/* One attempt: waits for the pacer, gets a token, performs, and turns a
 * non-2xx answer into err (status, errors[0].reason, message). A 401
 * invalidates the token it was sent with. Returns 0 or -1. */
int drive_http_once(struct drive_client *c, const struct drive_req *rq,
		    struct drive_resp *rs, struct drive_err *err);

/* Retry bookkeeping of one logical call. */
struct drive_retry {
	int attempt;   /* backoff retries so far */
	bool reauthed; /* the one 401 retry was used */
};

/* After a failed attempt: returns true when the call should be tried
 * again — after sleeping the backoff (5xx, 429, 408, 403 rate limits,
 * transport errors; at most max_retries times) or at once after a 401
 * (once). Returns false to give up; err is left as it is. */
bool drive_http_retry(struct drive_client *c, struct drive_retry *st,
		      const struct drive_err *err);

/* drive_http_once() in a retry loop, for requests whose body can be sent
 * again as is. */
int drive_http_do(struct drive_client *c, const struct drive_req *rq,
		  struct drive_resp *rs, struct drive_err *err);

/* The collected 2xx body as JSON (caller puts it); NULL with err set. */
struct json_object *drive_resp_json(const struct drive_resp *rs,
				    struct drive_err *err);

/* One request whose body (NULL = none, else `ctype`) can be sent again as
 * is, in the retry loop; the 2xx JSON answer into *out (NULL = ignored;
 * caller puts it) and the Date header into *date_ms. url NULL = ENOMEM. */
int drive_call(struct drive_client *c, const char *method, const char *url,
	       const char *body, const char *ctype, struct json_object **out,
	       int64_t *date_ms, struct drive_err *err);

/* malloc'd endpoint + printf(fmt); NULL only on out of memory. */
char *drive_urlf(struct drive_client *c, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/* malloc'd percent-encoding of s for a query parameter. */
char *drive_url_escape(const char *s);

/* Sets a local (non-HTTP, non-retried) error from an errno value. */
void drive_err_local(struct drive_err *err, int errnum, const char *what);

/* ---- api.c: the File resource ---------------------------------------- */

/* RFC 3339 ("2026-03-16T13:57:58.955Z", offsets allowed) to ms since the
 * epoch; -1 if malformed. */
int64_t drive_time_parse(const char *s);
void drive_time_format(int64_t ms, char *out, size_t len);
/* Fills f from a File JSON object. */
void drive_file_from_json(struct json_object *o, struct drive_file *f);

#endif
