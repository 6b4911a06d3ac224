/* http.c — every HTTP request vectur sends to Drive goes through here: the
 * pool of curl easy handles (kept for their open connections), one attempt
 * of a request (pace, authorize, perform, parse Drive's error JSON), and
 * the retry policy (exponential backoff with jitter, one re-auth on 401).
 * Knows nothing about which Drive call it is sending.
 *
 * Tokens are only ever put in the Authorization header; nothing here logs
 * headers, and CURLOPT_VERBOSE is never set.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "http.h"

#define ERR_BODY_MAX	(64 * 1024) /* error bodies beyond this are cut */
#define JSON_BODY_MAX	(256 * 1024 * 1024) /* a 1000-entry page is ~0.5 MB */
#define DOWNLOAD_BUFFER (512 * 1024)	    /* fewer, larger pwrite()s */
#define UPLOAD_BUFFER	(1024 * 1024)

/* ---- easy handles ---------------------------------------------------- */

void drive_curl_common(CURL *h, int connect_timeout_s, int stall_timeout_s)
{
	const char *ca;

	/* HTTP/2 gave rclone stream errors against Drive; 1.1 it is. */
	curl_easy_setopt(h, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(
		h, CURLOPT_CONNECTTIMEOUT,
		(long)(connect_timeout_s > 0 ? connect_timeout_s : 15));
	/* A transfer that moves less than 1 byte/s for the stall time is
	 * dead; whole-transfer timeouts would kill big healthy uploads. */
	curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1L);
	curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME,
			 (long)(stall_timeout_s > 0 ? stall_timeout_s : 60));
	curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
	curl_easy_setopt(h, CURLOPT_TCP_KEEPIDLE, 30L);
	curl_easy_setopt(h, CURLOPT_TCP_KEEPINTVL, 15L);
	curl_easy_setopt(h, CURLOPT_TCP_NODELAY, 1L);
	/* Downloads arrive in pieces of this size, and each piece is one
	 * pwrite into a cache file that other fetch threads write too (the
	 * file's lock): 16 KiB pieces made that lock the cost of a cold read.
	 */
	curl_easy_setopt(h, CURLOPT_BUFFERSIZE, 512L * 1024);
	curl_easy_setopt(h, CURLOPT_USERAGENT, "vectur/" VECTUR_VERSION);
	/* libcurl ignores these variables (the curl tool reads them); the
	 * tests' CA for the emulator's TLS mode comes this way. */
	ca = getenv("SSL_CERT_FILE");
	if (!ca || !*ca)
		ca = getenv("CURL_CA_BUNDLE");
	if (ca && *ca)
		curl_easy_setopt(h, CURLOPT_CAINFO, ca);
}

static CURL *pool_get(struct drive_client *c)
{
	CURL *h = NULL;

	pthread_mutex_lock(&c->pool_lock);
	if (c->pool_len > 0)
		h = c->pool[--c->pool_len];
	pthread_mutex_unlock(&c->pool_lock);
	if (h)
		curl_easy_reset(h); /* keeps its live connections */
	else
		h = curl_easy_init();
	if (h)
		drive_curl_common(h, c->connect_timeout_s, c->timeout_s);
	return h;
}

static void pool_put(struct drive_client *c, CURL *h)
{
	CURL **grown;

	pthread_mutex_lock(&c->pool_lock);
	if (c->pool_len == c->pool_cap) {
		size_t cap = c->pool_cap ? c->pool_cap * 2 : 8;

		grown = realloc(c->pool, cap * sizeof(*grown));
		if (!grown) {
			pthread_mutex_unlock(&c->pool_lock);
			curl_easy_cleanup(h);
			return;
		}
		c->pool = grown;
		c->pool_cap = cap;
	}
	c->pool[c->pool_len++] = h;
	pthread_mutex_unlock(&c->pool_lock);
}

/* ---- small helpers --------------------------------------------------- */

void drive_err_local(struct drive_err *err, int errnum, const char *what)
{
	const char *reason = "localError";

	if (errnum == ENOSPC || errnum == EDQUOT)
		reason = "localNoSpace";
	drive_err_set(err, 0, reason, "%s: %s", what, strerror(errnum));
	if (err)
		err->curl_code = 0;
}

char *drive_urlf(struct drive_client *c, const char *fmt, ...)
{
	char *path = NULL, *url = NULL;
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vasprintf(&path, fmt, ap);
	va_end(ap);
	if (n < 0)
		return NULL;
	if (asprintf(&url, "%s%s", c->endpoint, path) < 0)
		url = NULL;
	free(path);
	return url;
}

char *drive_url_escape(const char *s)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t n = strlen(s);
	char *out = malloc(3 * n + 1), *o = out;

	if (!out)
		return NULL;
	for (; *s; s++) {
		unsigned char ch = (unsigned char)*s;

		if ((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ||
		    (ch >= '0' && ch <= '9') || ch == '-' || ch == '.' ||
		    ch == '_' || ch == '~') {
			*o++ = (char)ch;
		} else {
			*o++ = '%';
			*o++ = hex[ch >> 4];
			*o++ = hex[ch & 15];
		}
	}
	*o = '\0';
	return out;
}

void drive_resp_reset(struct drive_resp *rs)
{
	free(rs->body);
	memset(rs, 0, sizeof(*rs));
}

static int body_append(struct drive_resp *rs, const char *p, size_t n,
		       size_t max)
{
	char *grown;
	size_t cap;

	if (rs->body_len + n > max)
		n = max > rs->body_len ? max - rs->body_len : 0;
	if (rs->body_len + n + 1 > rs->body_cap) {
		cap = rs->body_cap ? rs->body_cap : 4096;
		while (cap < rs->body_len + n + 1)
			cap *= 2;
		grown = realloc(rs->body, cap);
		if (!grown)
			return ENOMEM;
		rs->body = grown;
		rs->body_cap = cap;
	}
	memcpy(rs->body + rs->body_len, p, n);
	rs->body_len += n;
	rs->body[rs->body_len] = '\0';
	return 0;
}

/* ---- one transfer ---------------------------------------------------- */

struct xfer {
	const struct drive_req *rq;
	struct drive_resp *rs;
	int sink_errno; /* set when the sink refused bytes */
};

static void copy_header_value(char *dst, size_t len, const char *v, size_t n)
{
	while (n > 0 && (*v == ' ' || *v == '\t')) {
		v++;
		n--;
	}
	while (n > 0 && (v[n - 1] == '\r' || v[n - 1] == '\n' ||
			 v[n - 1] == ' ' || v[n - 1] == '\t'))
		n--;
	if (n >= len)
		n = len - 1;
	memcpy(dst, v, n);
	dst[n] = '\0';
}

static bool header_is(const char *line, size_t n, const char *name,
		      const char **val, size_t *val_n)
{
	size_t k = strlen(name);

	if (n <= k || line[k] != ':' || strncasecmp(line, name, k) != 0)
		return false;
	*val = line + k + 1;
	*val_n = n - k - 1;
	return true;
}

static size_t on_header(char *line, size_t sz, size_t nmemb, void *ud)
{
	struct xfer *x = ud;
	struct drive_resp *rs = x->rs;
	size_t n = sz * nmemb, vn;
	const char *v;
	char date[128];

	if (n > 5 && strncmp(line, "HTTP/", 5) == 0) {
		/* A new status line (after a 100 Continue, say): the headers
		 * we keep are those of the final response. */
		const char *sp = memchr(line, ' ', n);

		rs->status = sp ? strtol(sp + 1, NULL, 10) : 0;
		rs->location[0] = rs->range[0] = rs->content_range[0] = '\0';
		return n;
	}
	if (header_is(line, n, "Location", &v, &vn))
		copy_header_value(rs->location, sizeof(rs->location), v, vn);
	else if (header_is(line, n, "Range", &v, &vn))
		copy_header_value(rs->range, sizeof(rs->range), v, vn);
	else if (header_is(line, n, "Content-Range", &v, &vn))
		copy_header_value(rs->content_range, sizeof(rs->content_range),
				  v, vn);
	else if (header_is(line, n, "Date", &v, &vn)) {
		time_t t;

		copy_header_value(date, sizeof(date), v, vn);
		t = curl_getdate(date, NULL);
		if (t > 0)
			rs->date_ms = (int64_t)t * 1000;
	}
	return n;
}

static size_t on_write(char *p, size_t sz, size_t nmemb, void *ud)
{
	struct xfer *x = ud;
	struct drive_resp *rs = x->rs;
	size_t n = sz * nmemb;
	bool ok = rs->status >= 200 && rs->status < 300;
	int e;

	if (ok && x->rq->sink) {
		e = x->rq->sink(p, n, rs, x->rq->sink_ud);
		if (e) {
			x->sink_errno = e;
			return 0; /* aborts the transfer */
		}
		rs->sunk += (int64_t)n;
		return n;
	}
	e = body_append(rs, p, n, ok ? JSON_BODY_MAX : ERR_BODY_MAX);
	if (e) {
		x->sink_errno = e;
		return 0;
	}
	return n;
}

static size_t on_read(char *buf, size_t sz, size_t nmemb, void *ud)
{
	struct drive_body *b = ud;
	size_t want = sz * nmemb, got = 0, k;
	int64_t file_end = (int64_t)b->pre_len + b->fd_len;
	ssize_t r;

	while (got < want) {
		if (b->pos < (int64_t)b->pre_len) {
			k = b->pre_len - (size_t)b->pos;
			if (k > want - got)
				k = want - got;
			memcpy(buf + got, b->pre + b->pos, k);
		} else if (b->pos < file_end) {
			int64_t off =
				b->fd_off + (b->pos - (int64_t)b->pre_len);

			k = (size_t)(file_end - b->pos);
			if (k > want - got)
				k = want - got;
			r = pread(b->fd, buf + got, k, off);
			if (r < 0 && errno == EINTR)
				continue;
			if (r <= 0) {
				/* The file shrank under us or the disk
				 * failed: never send a short body. */
				b->read_errno = r < 0 ? errno : EIO;
				return CURL_READFUNC_ABORT;
			}
			k = (size_t)r;
			if (b->on_file_bytes)
				b->on_file_bytes(buf + got, k, off, b->ud);
		} else if (b->pos < file_end + (int64_t)b->post_len) {
			size_t at = (size_t)(b->pos - file_end);

			k = b->post_len - at;
			if (k > want - got)
				k = want - got;
			memcpy(buf + got, b->post + at, k);
		} else {
			break;
		}
		b->pos += (int64_t)k;
		got += k;
	}
	return got;
}

static int on_seek(void *ud, curl_off_t offset, int origin)
{
	struct drive_body *b = ud;

	if (origin != SEEK_SET)
		return CURL_SEEKFUNC_CANTSEEK;
	b->pos = offset;
	return CURL_SEEKFUNC_OK;
}

static int64_t body_total(const struct drive_body *b)
{
	return (int64_t)b->pre_len + b->fd_len + (int64_t)b->post_len;
}

/* Drive's error body: {"error":{"code","message","errors":[{"reason"}]}};
 * the token endpoint's: {"error":"invalid_grant","error_description"}. */
static void parse_error_body(const struct drive_resp *rs, struct drive_err *err)
{
	struct json_object *o = NULL, *e, *v, *list;
	const char *reason = "", *msg = NULL;
	char snippet[200];

	if (rs->body)
		o = json_tokener_parse(rs->body);
	if (o && json_object_object_get_ex(o, "error", &e)) {
		if (json_object_is_type(e, json_type_object)) {
			if (json_object_object_get_ex(e, "message", &v))
				msg = json_object_get_string(v);
			if (json_object_object_get_ex(e, "errors", &list) &&
			    json_object_is_type(list, json_type_array) &&
			    json_object_array_length(list) > 0) {
				v = json_object_array_get_idx(list, 0);
				if (json_object_object_get_ex(v, "reason", &v))
					reason = json_object_get_string(v);
			}
		} else if (json_object_is_type(e, json_type_string)) {
			reason = json_object_get_string(e);
			if (json_object_object_get_ex(o, "error_description",
						      &v))
				msg = json_object_get_string(v);
		}
	}
	if (!msg) {
		snprintf(snippet, sizeof(snippet), "%s",
			 rs->body ? rs->body : "");
		msg = snippet;
	}
	drive_err_set(err, rs->status, reason, "HTTP %ld%s%s%s%s", rs->status,
		      *reason ? " " : "", reason, *msg ? ": " : "", msg);
	json_object_put(o);
}

static struct curl_slist *build_headers(const struct drive_req *rq,
					const char *token)
{
	struct curl_slist *hl = NULL, *t;
	char line[4200]; /* fits "Authorization: Bearer " + a 4 KB token */
	const char *const *h;

	/* No "Expect: 100-continue": it costs a round trip per chunk, and a
	 * server that ignores it stalls us for a second. */
	hl = curl_slist_append(hl, "Expect:");
	if (rq->body) {
		/* "Content-Type:" alone stops curl adding its form type. */
		snprintf(line, sizeof(line), "Content-Type:%s%s",
			 rq->content_type ? " " : "",
			 rq->content_type ? rq->content_type : "");
		if ((t = curl_slist_append(hl, line)))
			hl = t;
	}
	if (token) {
		snprintf(line, sizeof(line), "Authorization: Bearer %s", token);
		if ((t = curl_slist_append(hl, line)))
			hl = t;
		explicit_bzero(line, sizeof(line));
	}
	for (h = rq->headers; h && *h; h++)
		if ((t = curl_slist_append(hl, *h)))
			hl = t;
	return hl;
}

static void set_method_and_body(CURL *h, const struct drive_req *rq)
{
	struct drive_body *b = rq->body;

	if (b) {
		b->pos = 0;
		b->read_errno = 0;
		/* POST mechanics with any verb: a known Content-Length and
		 * our read callback, for PUT and PATCH too. */
		curl_easy_setopt(h, CURLOPT_POST, 1L);
		curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE,
				 (curl_off_t)body_total(b));
		curl_easy_setopt(h, CURLOPT_READFUNCTION, on_read);
		curl_easy_setopt(h, CURLOPT_READDATA, b);
		curl_easy_setopt(h, CURLOPT_SEEKFUNCTION, on_seek);
		curl_easy_setopt(h, CURLOPT_SEEKDATA, b);
		curl_easy_setopt(h, CURLOPT_UPLOAD_BUFFERSIZE,
				 (long)UPLOAD_BUFFER);
		if (strcmp(rq->method, "POST") != 0)
			curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, rq->method);
	} else if (strcmp(rq->method, "GET") != 0) {
		curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, rq->method);
		if (strcmp(rq->method, "DELETE") != 0) {
			/* Bodyless POST/PUT/PATCH still need a length. */
			curl_easy_setopt(h, CURLOPT_POSTFIELDS, "");
			curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, 0L);
		}
	}
}

static void transport_error(struct drive_err *err, CURLcode res,
			    const char *errbuf)
{
	drive_err_set(err, 0, "transport", "%s%s%s", curl_easy_strerror(res),
		      *errbuf ? ": " : "", errbuf);
	if (err)
		err->curl_code = (int)res;
}

static void count_transfer(struct drive_client *c, CURL *h)
{
	curl_off_t up = 0, down = 0;

	curl_easy_getinfo(h, CURLINFO_SIZE_UPLOAD_T, &up);
	curl_easy_getinfo(h, CURLINFO_SIZE_DOWNLOAD_T, &down);
	atomic_fetch_add(&c->requests, 1);
	if (up > 0)
		atomic_fetch_add(&c->bytes_up, (uint64_t)up);
	if (down > 0)
		atomic_fetch_add(&c->bytes_down, (uint64_t)down);
}

/* $VECTUR_DRIVE_DEBUG=1: one line per request on stderr — verb, URL,
 * status, curl code, time. Never headers: they carry the token. */
static void debug_line(struct drive_client *c, const struct drive_req *rq,
		       const struct drive_resp *rs, CURLcode res, int64_t t0)
{
	if (c->debug)
		fprintf(stderr,
			"drive: %s %.200s -> %ld (curl %d) %" PRId64 " ms\n",
			rq->method, rq->url, rs->status, (int)res,
			drive_mono_ms() - t0);
}

bool drive_gave_up(struct drive_client *c)
{
	int64_t at = atomic_load(&c->give_up_at);

	return at != 0 && drive_mono_ms() >= at;
}

void drive_client_give_up_in(struct drive_client *c, int64_t ms)
{
	int64_t at;

	if (!c)
		return;
	if (ms < 0) {
		atomic_store(&c->give_up_at, 0);
		return;
	}
	at = drive_mono_ms() + ms;
	atomic_store(&c->give_up_at, at > 0 ? at : 1);
}

/* Cuts a transfer under way once the client gives up. */
static int on_xferinfo(void *ud, curl_off_t dltotal, curl_off_t dlnow,
		       curl_off_t ultotal, curl_off_t ulnow)
{
	(void)dltotal;
	(void)dlnow;
	(void)ultotal;
	(void)ulnow;
	return drive_gave_up(ud) ? 1 : 0;
}

static void set_gave_up(struct drive_err *err)
{
	drive_err_set(err, 0, "aborted",
		      "gave up on Drive (shutting down before it answered)");
}

int drive_http_once(struct drive_client *c, const struct drive_req *rq,
		    struct drive_resp *rs, struct drive_err *err)
{
	char token[4096], errbuf[CURL_ERROR_SIZE] = "";
	struct curl_slist *hl = NULL;
	struct xfer x = {rq, rs, 0};
	CURL *h = NULL;
	CURLcode res;
	int64_t t0, left;
	int rc = -1;

	drive_resp_reset(rs);
	drive_err_clear(err);
	if (drive_gave_up(c)) {
		set_gave_up(err);
		return -1;
	}
	if (drive_auth_token(c->auth, token, sizeof(token), err) < 0)
		return -1;
	h = pool_get(c);
	if (!h) {
		drive_err_local(err, ENOMEM, "curl_easy_init");
		goto out;
	}
	/* Under a deadline a connect may not outlast it (1 s at least):
	 * nothing has come from Drive yet. */
	left = drive_deadline_left_ms();
	if (left >= 0 && left < c->connect_timeout_s * 1000LL)
		curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS,
				 left < 1000 ? 1000L : (long)left);
	hl = build_headers(rq, token);
	curl_easy_setopt(h, CURLOPT_URL, rq->url);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, hl);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
	curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(h, CURLOPT_HEADERDATA, &x);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_write);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, &x);
	curl_easy_setopt(h, CURLOPT_BUFFERSIZE, (long)DOWNLOAD_BUFFER);
	curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_xferinfo);
	curl_easy_setopt(h, CURLOPT_XFERINFODATA, c);
	curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
	set_method_and_body(h, rq);

	/* Chunks of a resumable session move data, they do not query: at
	 * 10/s they would cap one upload at 80 MiB/s (8 MiB chunks). They
	 * still hold off during a rate-limit pause. */
	if (rq->data_plane)
		drive_pacer_wait_pause(c->pacer);
	else
		drive_pacer_wait(c->pacer);
	t0 = drive_mono_ms();
	res = curl_easy_perform(h);
	count_transfer(c, h);
	debug_line(c, rq, rs, res, t0);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, NULL);

	if (x.sink_errno) {
		drive_err_local(err, x.sink_errno, "writing the download");
		goto out;
	}
	if (rq->body && rq->body->read_errno) {
		drive_err_local(err, rq->body->read_errno,
				"reading the upload");
		goto out;
	}
	if (res == CURLE_ABORTED_BY_CALLBACK && drive_gave_up(c)) {
		set_gave_up(err);
		goto out;
	}
	if (res != CURLE_OK) {
		transport_error(err, res, errbuf);
		goto out;
	}
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &rs->status);
	if ((rs->status >= 200 && rs->status < 300) ||
	    (rq->accept_308 && rs->status == 308)) {
		rc = 0;
		goto out;
	}
	parse_error_body(rs, err);
	if (rs->status == 401)
		drive_auth_invalidate(c->auth, token);
	if (!drive_err_retryable(err))
		rc = -2; /* an answer all the same (see below) */
out:
	if (rc == 0 || rc == -2) {
		pthread_mutex_lock(&c->trouble_lock);
		c->answered_ms = drive_mono_ms();
		pthread_mutex_unlock(&c->trouble_lock);
		rc = rc == -2 ? -1 : 0;
	}
	explicit_bzero(token, sizeof(token));
	if (h) {
		curl_easy_setopt(h, CURLOPT_HTTPHEADER, NULL);
		pool_put(c, h);
	}
	curl_slist_free_all(hl);
	return rc;
}

static bool is_rate_limit(const struct drive_err *err)
{
	return err->status == 429 ||
	       (err->status == 403 &&
		(strcmp(err->reason, "userRateLimitExceeded") == 0 ||
		 strcmp(err->reason, "rateLimitExceeded") == 0));
}

/* A retryable error a retry is about to wait on: what drive_trouble()
 * says until Drive answers again. */
static void note_trouble(struct drive_client *c, const struct drive_err *err)
{
	int64_t now = drive_mono_ms();

	pthread_mutex_lock(&c->trouble_lock);
	if (c->trouble_ms <= c->answered_ms)
		c->trouble_since_ms = now;
	c->trouble_ms = now;
	/* Drive's own errors (parse_error_body) say "HTTP 503 reason: ..."
	 * already; others set here with a status do not. */
	if (err->status && strncmp(err->message, "HTTP ", 5) != 0)
		snprintf(c->trouble, sizeof(c->trouble), "HTTP %ld %s%s%s",
			 err->status, err->message, err->reason[0] ? " " : "",
			 err->reason);
	else
		snprintf(c->trouble, sizeof(c->trouble), "%s", err->message);
	pthread_mutex_unlock(&c->trouble_lock);
}

bool drive_trouble(struct drive_client *c, char *out, size_t len,
		   int64_t *for_ms)
{
	bool yes;

	pthread_mutex_lock(&c->trouble_lock);
	yes = c->trouble_ms > c->answered_ms;
	if (yes) {
		snprintf(out, len, "%s", c->trouble);
		*for_ms = drive_mono_ms() - c->trouble_since_ms;
	}
	pthread_mutex_unlock(&c->trouble_lock);
	return yes;
}

static __thread int64_t deadline_ms;

int64_t drive_deadline(int64_t mono_ms)
{
	int64_t was = deadline_ms;

	if (mono_ms && (!was || mono_ms < was))
		deadline_ms = mono_ms;
	return was;
}

void drive_deadline_restore(int64_t saved)
{
	deadline_ms = saved;
}

int64_t drive_deadline_left_ms(void)
{
	int64_t left;

	if (!deadline_ms)
		return -1;
	left = deadline_ms - drive_mono_ms();
	return left > 0 ? left : 0;
}

bool drive_http_retry(struct drive_client *c, struct drive_retry *st,
		      const struct drive_err *err)
{
	int64_t delay, end;

	if (drive_gave_up(c))
		return false;
	if (err->status == 401 && !st->reauthed) {
		/* drive_http_once() invalidated the token: the next attempt
		 * refreshes it. Once only — a second 401 is real. */
		st->reauthed = true;
		atomic_fetch_add(&c->retries, 1);
		return true;
	}
	if (!drive_err_retryable(err) || st->attempt >= c->max_retries)
		return false;
	note_trouble(c, err);
	delay = drive_backoff_ms(c->backoff_base_ms, st->attempt);
	if (deadline_ms && drive_mono_ms() + delay > deadline_ms)
		return false;
	st->attempt++;
	atomic_fetch_add(&c->retries, 1);
	if (is_rate_limit(err)) {
		/* Everybody holds off briefly, not only this thread. */
		int64_t pause = 2 * (int64_t)c->backoff_base_ms;

		drive_pacer_pause(c->pacer, delay < pause ? delay : pause);
	}
	/* In steps, so that giving up does not wait for a long backoff. */
	end = drive_mono_ms() + delay;
	while (drive_mono_ms() < end) {
		if (drive_gave_up(c))
			return false;
		drive_sleep_ms(end - drive_mono_ms() < 100
				       ? end - drive_mono_ms()
				       : 100);
	}
	return !drive_gave_up(c);
}

int drive_http_do(struct drive_client *c, const struct drive_req *rq,
		  struct drive_resp *rs, struct drive_err *err)
{
	struct drive_retry st = {0, false};

	for (;;) {
		if (drive_http_once(c, rq, rs, err) == 0)
			return 0;
		if (!drive_http_retry(c, &st, err))
			return -1;
	}
}

struct json_object *drive_resp_json(const struct drive_resp *rs,
				    struct drive_err *err)
{
	struct json_object *o = NULL;
	enum json_tokener_error jerr = json_tokener_success;

	if (rs->body)
		o = json_tokener_parse_verbose(rs->body, &jerr);
	if (!o || !json_object_is_type(o, json_type_object)) {
		drive_err_set(err, rs->status, "badResponse",
			      "HTTP %ld: response is not a JSON object (%s)",
			      rs->status,
			      rs->body ? json_tokener_error_desc(jerr)
				       : "empty body");
		json_object_put(o);
		return NULL;
	}
	return o;
}
