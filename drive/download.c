/* download.c — reading file content from Drive: ranged GETs with
 * alt=media, streamed into a caller's buffer or straight into a file with
 * pwrite (never the whole file in memory). A transfer that breaks half way
 * is resumed from the byte where it stopped, not restarted.
 */
#include <errno.h>
#include <pthread.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "http.h"

/* Where the bytes of one download go, across all its attempts. */
struct dl_target {
	int fd; /* >= 0: pwrite at fd_off + done */
	int64_t fd_off;
	pthread_mutex_t *wlock; /* held around each pwrite, if set */
	char *buf;		/* else: memcpy at buf + done */
	size_t buf_len;
	int64_t want;  /* bytes wanted, -1 = to the end */
	int64_t start; /* file offset of this attempt's first byte */
	int64_t done;  /* bytes delivered so far */
	int64_t skip;  /* body bytes to drop (server ignored Range) */
	bool checked;  /* this attempt's response start is known */
};

/* Drive answers 206 with Content-Range: bytes a-b/total. A 200 means the
 * Range was ignored and the body starts at byte 0. */
static int dl_check_start(struct dl_target *t, struct drive_resp *rs)
{
	long long a;

	t->checked = true;
	t->skip = 0;
	if (rs->status == 206 &&
	    sscanf(rs->content_range, "bytes %lld-", &a) == 1) {
		if (a > t->start)
			return EIO; /* a gap we cannot fill */
		t->skip = t->start - a;
	} else if (rs->status == 200) {
		t->skip = t->start;
	}
	return 0;
}

static int dl_write_fd(struct dl_target *t, const char *p, size_t n)
{
	ssize_t w;
	int rc = 0;

	if (t->wlock)
		pthread_mutex_lock(t->wlock);
	while (n > 0) {
		w = pwrite(t->fd, p, n, t->fd_off + t->done);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0) {
			rc = errno;
			break;
		}
		p += w;
		n -= (size_t)w;
		t->done += w;
	}
	if (t->wlock)
		pthread_mutex_unlock(t->wlock);
	return rc;
}

static int dl_sink(const char *p, size_t n, struct drive_resp *rs, void *ud)
{
	struct dl_target *t = ud;
	size_t k;
	int e;

	if (!t->checked && (e = dl_check_start(t, rs)))
		return e;
	if (t->skip > 0) {
		k = (int64_t)n < t->skip ? n : (size_t)t->skip;
		t->skip -= (int64_t)k;
		p += k;
		n -= k;
	}
	/* Bytes past what was asked for (a server sending too much) are
	 * dropped, never written past the caller's range. */
	if (t->want >= 0 && (int64_t)n > t->want - t->done)
		n = (size_t)(t->want - t->done);
	if (n == 0)
		return 0;
	if (t->fd >= 0)
		return dl_write_fd(t, p, n);
	memcpy(t->buf + t->done, p, n);
	t->done += (int64_t)n;
	return 0;
}

/* GETs [offset + done, offset + want) until all of it arrived or the end
 * of the file was reached, resuming after broken transfers. */
static int download_range(struct drive_client *c, const char *id,
			  const char *rev, int64_t offset, struct dl_target *t,
			  struct drive_err *err)
{
	struct drive_retry st = {0, false};
	struct drive_resp rs = {0};
	struct drive_req rq = {0};
	char range[96], *eid, *erev = NULL, *url = NULL;
	const char *hdr[2] = {range, NULL};
	int64_t before;
	int rc = -1;

	eid = drive_url_escape(id);
	if (rev && *rev)
		erev = drive_url_escape(rev);
	if (eid && erev)
		url = drive_urlf(c,
				 "/drive/v3/files/%s/revisions/%s?alt=media&"
				 "supportsAllDrives=true",
				 eid, erev);
	else if (eid && !(rev && *rev))
		url = drive_urlf(c,
				 "/drive/v3/files/%s?alt=media&"
				 "supportsAllDrives=true",
				 eid);
	free(eid);
	free(erev);
	if (!url) {
		drive_err_local(err, ENOMEM, "download");
		return -1;
	}
	rq.method = "GET";
	rq.url = url;
	rq.headers = hdr;
	rq.sink = dl_sink;
	rq.sink_ud = t;
	/* Content ranges move data, like upload chunks: the pacer's 10/s
	 * would cap a cold read of 8 MiB ranges near 80 MB/s once its burst
	 * is spent. A rate-limit pause still holds them. */
	rq.data_plane = true;
	for (;;) {
		if (t->want >= 0 && t->done >= t->want) {
			rc = 0;
			break;
		}
		t->start = offset + t->done;
		t->checked = false;
		if (t->want >= 0)
			snprintf(range, sizeof(range),
				 "Range: bytes=%" PRId64 "-%" PRId64, t->start,
				 offset + t->want - 1);
		else
			snprintf(range, sizeof(range),
				 "Range: bytes=%" PRId64 "-", t->start);
		before = t->done;
		if (drive_http_once(c, &rq, &rs, err) == 0) {
			rc = 0; /* a complete body: short only at EOF */
			break;
		}
		if (err->status == 416) {
			/* Range starts at or past the end: nothing left. */
			drive_err_clear(err);
			rc = 0;
			break;
		}
		if (t->done > before)
			st.attempt = 0; /* progress: a fresh set of retries */
		if (!drive_http_retry(c, &st, err))
			break;
	}
	drive_resp_reset(&rs);
	free(url);
	return rc;
}

int drive_download_buf(struct drive_client *c, const char *id, int64_t offset,
		       size_t len, void *buf, size_t *got,
		       struct drive_err *err)
{
	struct dl_target t = {.fd = -1, .buf = buf, .buf_len = len};
	int rc;

	drive_err_clear(err);
	*got = 0;
	if (len == 0)
		return 0;
	if (offset < 0) {
		drive_err_set(err, 0, "badRequest", "negative offset");
		return -1;
	}
	t.want = (int64_t)len;
	rc = download_range(c, id, NULL, offset, &t, err);
	*got = (size_t)t.done;
	return rc;
}

int drive_download_fd(struct drive_client *c, const char *id, int64_t offset,
		      int64_t len, int fd, int64_t fd_offset, int64_t *got,
		      struct drive_err *err)
{
	return drive_download_rev_fd(c, id, NULL, offset, len, fd, fd_offset,
				     NULL, got, err);
}

int drive_download_rev_fd(struct drive_client *c, const char *id,
			  const char *rev, int64_t offset, int64_t len, int fd,
			  int64_t fd_offset, pthread_mutex_t *wlock,
			  int64_t *got, struct drive_err *err)
{
	struct dl_target t = {.fd = fd, .fd_off = fd_offset, .wlock = wlock};
	int rc;

	drive_err_clear(err);
	if (got)
		*got = 0;
	if (len == 0)
		return 0;
	if (offset < 0 || fd < 0) {
		drive_err_set(err, 0, "badRequest", "bad offset or fd");
		return -1;
	}
	t.want = len < 0 ? -1 : len;
	rc = download_range(c, id, rev, offset, &t, err);
	if (got)
		*got = t.done;
	return rc;
}
