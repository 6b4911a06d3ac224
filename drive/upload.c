/* upload.c — sending file content to Drive: one multipart request for small
 * files, a resumable session in chunks for larger ones, and the md5 check
 * of what Drive stored against what we sent. Bodies are streamed from the
 * caller's fd with pread: a 1 GiB upload never holds 1 GiB in memory.
 *
 * The resumable protocol, top to bottom:
 *   upload_start_session   POST/PATCH ...?uploadType=resumable -> Location
 *   upload_send_chunk      PUT Content-Range: bytes a-b/TOTAL -> 308 | 200/201
 *   upload_query_offset    PUT Content-Range: bytes * /TOTAL (empty body)
 * A 308's "Range: bytes=0-N" means resume at N+1; a 308 without Range means
 * Drive kept nothing (resume at 0). After a 5xx or a broken connection we
 * ask Drive where it is and resume there; a 404 on the session means it
 * expired and we start a new one.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/rand.h>

#include "http.h"

#define MiB		      (1024 * 1024)
#define CHUNK_ALIGN	      (256 * 1024) /* Drive: chunks are multiples of this */
#define DEFAULT_CHUNK	      (8 * MiB)
#define DEFAULT_MULTIPART_MAX (8 * MiB)
#define MAX_SESSION_RESTARTS  3

/* ---- md5 of what Drive acknowledged ---------------------------------- */

/* The md5 covers bytes [0, upto) in order. Bytes are hashed as curl reads
 * them for sending; a snapshot at the start of each chunk lets us step
 * back when Drive acknowledges less than we sent. Gaps (a resumed session)
 * are filled by reading the file. */
struct upload_md5 {
	EVP_MD_CTX *ctx, *snap;
	int64_t upto, snap_off;
	int fd;
	int err; /* errno of a failed gap read */
};

static int md5_init(struct upload_md5 *m, int fd)
{
	memset(m, 0, sizeof(*m));
	m->fd = fd;
	m->ctx = EVP_MD_CTX_new();
	m->snap = EVP_MD_CTX_new();
	if (!m->ctx || !m->snap ||
	    !EVP_DigestInit_ex(m->ctx, EVP_md5(), NULL) ||
	    !EVP_MD_CTX_copy_ex(m->snap, m->ctx))
		return -1;
	return 0;
}

static void md5_free(struct upload_md5 *m)
{
	EVP_MD_CTX_free(m->ctx);
	EVP_MD_CTX_free(m->snap);
}

static void md5_on_bytes(const void *p, size_t n, int64_t off, void *ud)
{
	struct upload_md5 *m = ud;
	int64_t end = off + (int64_t)n;

	if (off > m->upto || end <= m->upto)
		return; /* a gap (filled later) or bytes already hashed */
	EVP_DigestUpdate(m->ctx, (const char *)p + (m->upto - off),
			 (size_t)(end - m->upto));
	m->upto = end;
}

static int md5_fill(struct upload_md5 *m, int64_t to)
{
	char buf[256 * 1024];
	ssize_t r;
	size_t k;

	while (m->upto < to) {
		k = to - m->upto < (int64_t)sizeof(buf) ? (size_t)(to - m->upto)
							: sizeof(buf);
		r = pread(m->fd, buf, k, m->upto);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			m->err = r < 0 ? errno : EIO;
			return -1;
		}
		EVP_DigestUpdate(m->ctx, buf, (size_t)r);
		m->upto += r;
	}
	return 0;
}

/* Makes the hash cover exactly [0, off) and snapshots it there. */
static int md5_seek(struct upload_md5 *m, int64_t off)
{
	if (off < m->upto) {
		if (off >= m->snap_off) {
			EVP_MD_CTX_copy_ex(m->ctx, m->snap);
			m->upto = m->snap_off;
		} else {
			EVP_DigestInit_ex(m->ctx, EVP_md5(), NULL);
			m->upto = 0;
		}
	}
	if (md5_fill(m, off) < 0)
		return -1;
	EVP_MD_CTX_copy_ex(m->snap, m->ctx);
	m->snap_off = off;
	return 0;
}

static void md5_hex(struct upload_md5 *m, char out[33])
{
	unsigned char d[EVP_MAX_MD_SIZE];
	unsigned int n = 0, i;
	EVP_MD_CTX *tmp = EVP_MD_CTX_new();

	out[0] = '\0';
	if (!tmp)
		return;
	EVP_MD_CTX_copy_ex(tmp, m->ctx);
	EVP_DigestFinal_ex(tmp, d, &n);
	EVP_MD_CTX_free(tmp);
	for (i = 0; i < n && i < 16; i++)
		sprintf(out + 2 * i, "%02x", d[i]);
}

/* ---- metadata and the result ----------------------------------------- */

static bool is_update(const struct drive_upload *up)
{
	return up->id && up->id[0];
}

static const char *upload_mime(const struct drive_upload *up)
{
	return up->mime_type ? up->mime_type : "application/octet-stream";
}

/* The File metadata sent with the content: name, parent and type for a
 * new file; for a media update only what the caller asked to change
 * (parents cannot change here: that needs addParents/removeParents). */
static char *upload_metadata(const struct drive_upload *up)
{
	struct json_object *o = json_object_new_object(), *parents;
	char when[40], *s;

	if (up->name)
		json_object_object_add(o, "name",
				       json_object_new_string(up->name));
	if (!is_update(up) && up->new_id && up->new_id[0])
		json_object_object_add(o, "id",
				       json_object_new_string(up->new_id));
	if (!is_update(up)) {
		parents = json_object_new_array();
		if (up->parent)
			json_object_array_add(
				parents, json_object_new_string(up->parent));
		json_object_object_add(o, "parents", parents);
	}
	if (!is_update(up) || up->mime_type)
		json_object_object_add(o, "mimeType",
				       json_object_new_string(upload_mime(up)));
	if (up->modified_ms) {
		drive_time_format(up->modified_ms, when, sizeof(when));
		json_object_object_add(o, "modifiedTime",
				       json_object_new_string(when));
	}
	s = strdup(json_object_to_json_string_ext(
		o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
	json_object_put(o);
	return s;
}

/* "/upload/drive/v3/files[/ID]?uploadType=T&fields=...": and its verb. */
static char *upload_url(struct drive_client *c, const struct drive_upload *up,
			const char *type, const char **method)
{
	char *eid, *url;

	*method = is_update(up) ? "PATCH" : "POST";
	if (!is_update(up))
		return drive_urlf(
			c,
			"/upload/drive/v3/"
			"files?uploadType=%s&fields=" DRIVE_FILE_FIELDS
			"&supportsAllDrives=true",
			type);
	eid = drive_url_escape(up->id);
	url = eid ? drive_urlf(c,
			       "/upload/drive/v3/files/"
			       "%s?uploadType=%s&fields=" DRIVE_FILE_FIELDS
			       "&supportsAllDrives=true",
			       eid, type)
		  : NULL;
	free(eid);
	return url;
}

/* The final answer of an upload: the File. If it lacks fields we need
 * (a server that ignored `fields`), ask for them. */
static int upload_parse_result(struct drive_client *c,
			       const struct drive_resp *rs,
			       struct drive_file *out, struct drive_err *err)
{
	struct json_object *o = drive_resp_json(rs, err), *v;
	bool complete;

	if (!o)
		return -1;
	drive_file_from_json(o, out);
	complete = json_object_object_get_ex(o, "md5Checksum", &v) &&
		   json_object_object_get_ex(o, "version", &v);
	json_object_put(o);
	if (!complete && out->id[0])
		return drive_get(c, out->id, out, err);
	return 0;
}

static int upload_verify_md5(struct upload_md5 *m, int64_t size,
			     const struct drive_file *out,
			     struct drive_err *err)
{
	char hex[33];

	if (md5_seek(m, size) < 0) {
		drive_err_local(err, m->err, "reading the upload for its md5");
		return -1;
	}
	md5_hex(m, hex);
	if (strcmp(hex, out->md5) != 0) {
		drive_err_set(err, 0, "md5Mismatch",
			      "upload of %s: Drive stored md5 %s, we sent %s",
			      out->id, out->md5[0] ? out->md5 : "(none)", hex);
		return -1;
	}
	return 0;
}

/* ---- multipart ------------------------------------------------------- */

static void random_boundary(char *out, size_t len)
{
	unsigned char r[16];
	size_t i;

	if (RAND_bytes(r, sizeof(r)) != 1)
		memset(r, 0x5a, sizeof(r));
	snprintf(out, len, "vectur_");
	for (i = 0; i < sizeof(r) && strlen(out) + 3 < len; i++)
		sprintf(out + strlen(out), "%02x", r[i]);
}

/* One request: metadata JSON part, then the media part, CRLF framed. */
static int upload_multipart(struct drive_client *c, struct drive_upload *up,
			    struct upload_md5 *m, struct drive_file *out,
			    struct drive_err *err)
{
	struct drive_retry st = {0, false};
	struct drive_resp rs = {0};
	struct drive_body b = {0};
	struct drive_req rq = {0};
	char boundary[64], ctype[128], *meta = NULL, *pre = NULL, *post = NULL;
	char *url = NULL;
	int rc = -1;

	random_boundary(boundary, sizeof(boundary));
	meta = upload_metadata(up);
	url = upload_url(c, up, "multipart", &rq.method);
	if (!meta || !url)
		goto oom;
	if (asprintf(&pre,
		     "--%s\r\nContent-Type: application/json; charset=UTF-8"
		     "\r\n\r\n%s\r\n--%s\r\nContent-Type: %s\r\n\r\n",
		     boundary, meta, boundary, upload_mime(up)) < 0) {
		pre = NULL;
		goto oom;
	}
	if (asprintf(&post, "\r\n--%s--\r\n", boundary) < 0) {
		post = NULL;
		goto oom;
	}
	snprintf(ctype, sizeof(ctype), "multipart/related; boundary=%s",
		 boundary);
	b.pre = pre;
	b.pre_len = strlen(pre);
	b.fd = up->fd;
	b.fd_len = up->size;
	b.post = post;
	b.post_len = strlen(post);
	b.on_file_bytes = md5_on_bytes;
	b.ud = m;
	rq.url = url;
	rq.content_type = ctype;
	rq.body = &b;
	for (;;) {
		md5_seek(m, 0); /* every attempt sends it all again */
		if (drive_http_once(c, &rq, &rs, err) == 0)
			break;
		if (!drive_http_retry(c, &st, err))
			goto out;
	}
	if (upload_parse_result(c, &rs, out, err) < 0)
		goto out;
	if (up->on_progress)
		up->on_progress(up->size, up->size, up->ud);
	rc = upload_verify_md5(m, up->size, out, err);
	goto out;
oom:
	drive_err_local(err, ENOMEM, "multipart upload");
out:
	drive_resp_reset(&rs);
	free(meta);
	free(pre);
	free(post);
	free(url);
	return rc;
}

/* ---- resumable ------------------------------------------------------- */

static int upload_start_session(struct drive_client *c, struct drive_upload *up,
				struct drive_err *err)
{
	char ctype_hdr[256], len_hdr[64], *meta, *url;
	const char *hdr[3] = {ctype_hdr, len_hdr, NULL};
	struct drive_resp rs = {0};
	struct drive_body b = {0};
	struct drive_req rq = {0};
	int rc = -1;

	meta = upload_metadata(up);
	url = upload_url(c, up, "resumable", &rq.method);
	if (!meta || !url) {
		drive_err_local(err, ENOMEM, "resumable upload");
		goto out;
	}
	snprintf(ctype_hdr, sizeof(ctype_hdr), "X-Upload-Content-Type: %s",
		 upload_mime(up));
	snprintf(len_hdr, sizeof(len_hdr), "X-Upload-Content-Length: %" PRId64,
		 up->size);
	b.pre = meta;
	b.pre_len = strlen(meta);
	b.fd = -1;
	rq.url = url;
	rq.content_type = "application/json; charset=UTF-8";
	rq.headers = hdr;
	rq.body = &b;
	if (drive_http_do(c, &rq, &rs, err) < 0)
		goto out;
	if (!rs.location[0]) {
		drive_err_set(err, rs.status, "badResponse",
			      "resumable upload: no Location in the answer");
		goto out;
	}
	snprintf(up->session_url, sizeof(up->session_url), "%s", rs.location);
	if (up->on_session)
		up->on_session(up->session_url, up->ud);
	rc = 0;
out:
	drive_resp_reset(&rs);
	free(meta);
	free(url);
	return rc;
}

/* Reads a 308: "Range: bytes=0-N" -> N+1; no Range header -> 0. */
static int64_t upload_next_offset(const struct drive_resp *rs)
{
	long long a, b;

	if (sscanf(rs->range, "bytes=%lld-%lld", &a, &b) == 2 && a == 0)
		return b + 1;
	return 0;
}

/* The outcome of a chunk or of a status query. */
struct upload_pos {
	int64_t next; /* where Drive wants the next byte */
	bool done;    /* Drive has the whole file: out is filled */
};

static int upload_answer(struct drive_client *c, const struct drive_resp *rs,
			 struct upload_pos *pos, struct drive_file *out,
			 struct drive_err *err)
{
	if (rs->status == 308) {
		pos->next = upload_next_offset(rs);
		pos->done = false;
		return 0;
	}
	pos->done = true;
	return upload_parse_result(c, rs, out, err);
}

/* PUT bytes [off, off+len) with Content-Range: bytes a-b/TOTAL. */
static int upload_send_chunk(struct drive_client *c, struct drive_upload *up,
			     struct upload_md5 *m, int64_t off, int64_t len,
			     struct upload_pos *pos, struct drive_file *out,
			     struct drive_err *err)
{
	char cr[128];
	const char *hdr[2] = {cr, NULL};
	struct drive_resp rs = {0};
	struct drive_body b = {0};
	struct drive_req rq = {0};
	int rc = -1;

	if (len > 0)
		snprintf(cr, sizeof(cr),
			 "Content-Range: bytes %" PRId64 "-%" PRId64
			 "/%" PRId64,
			 off, off + len - 1, up->size);
	else /* an empty file: nothing to range over */
		snprintf(cr, sizeof(cr), "Content-Range: bytes */%" PRId64,
			 up->size);
	b.fd = up->fd;
	b.fd_off = off;
	b.fd_len = len;
	b.on_file_bytes = md5_on_bytes;
	b.ud = m;
	rq.method = "PUT";
	rq.url = up->session_url;
	rq.content_type = upload_mime(up);
	rq.headers = hdr;
	rq.body = &b;
	rq.accept_308 = true;
	rq.data_plane = true;
	if (drive_http_once(c, &rq, &rs, err) == 0)
		rc = upload_answer(c, &rs, pos, out, err);
	drive_resp_reset(&rs);
	return rc;
}

/* Empty PUT with Content-Range: bytes * /TOTAL: where is the session? */
static int upload_query_offset(struct drive_client *c, struct drive_upload *up,
			       struct upload_pos *pos, struct drive_file *out,
			       struct drive_err *err)
{
	char cr[96];
	const char *hdr[2] = {cr, NULL};
	struct drive_resp rs = {0};
	struct drive_body b = {.fd = -1};
	struct drive_req rq = {0};
	int rc = -1;

	snprintf(cr, sizeof(cr), "Content-Range: bytes */%" PRId64, up->size);
	rq.method = "PUT";
	rq.url = up->session_url;
	rq.headers = hdr;
	rq.body = &b;
	rq.accept_308 = true;
	if (drive_http_do(c, &rq, &rs, err) == 0)
		rc = upload_answer(c, &rs, pos, out, err);
	drive_resp_reset(&rs);
	return rc;
}

static bool session_gone(const struct drive_err *err)
{
	/* 404: the session expired (about a week) or never existed; 410 is
	 * what some Google frontends send for the same. */
	return err->status == 404 || err->status == 410;
}

static int upload_resumable(struct drive_client *c, struct drive_upload *up,
			    int64_t chunk, struct upload_md5 *m,
			    struct drive_file *out, struct drive_err *err)
{
	struct drive_retry st = {0, false};
	struct upload_pos pos = {0, false};
	int restarts = 0;
	int64_t len, was;

	if (up->session_url[0] &&
	    upload_query_offset(c, up, &pos, out, err) < 0) {
		if (!session_gone(err))
			return -1;
		up->session_url[0] = '\0';
	}
	while (!pos.done) {
		if (!up->session_url[0]) {
			if (restarts++ > MAX_SESSION_RESTARTS) {
				drive_err_set(err, 0, "sessionLost",
					      "resumable session lost %d times",
					      MAX_SESSION_RESTARTS);
				return -1;
			}
			if (upload_start_session(c, up, err) < 0)
				return -1;
			pos.next = 0;
		}
		if (up->should_abort && up->should_abort(up->ud)) {
			drive_err_set(err, 0, "aborted",
				      "upload aborted at byte %" PRId64
				      " (session kept)",
				      pos.next);
			return -1;
		}
		if (pos.next < 0 || pos.next > up->size) {
			drive_err_set(err, 0, "badResponse",
				      "Drive wants byte %" PRId64
				      " of %" PRId64,
				      pos.next, up->size);
			return -1;
		}
		if (md5_seek(m, pos.next) < 0) {
			drive_err_local(err, m->err, "reading the upload");
			return -1;
		}
		len = up->size - pos.next < chunk ? up->size - pos.next : chunk;
		was = pos.next;
		if (upload_send_chunk(c, up, m, was, len, &pos, out, err) ==
		    0) {
			if (pos.done)
				break;
			if (pos.next > was) {
				st.attempt = 0;
				if (up->on_progress)
					up->on_progress(pos.next, up->size,
							up->ud);
				continue;
			}
			/* Drive kept none of the chunk: a failed attempt,
			 * so this cannot loop for ever. pos.next is already
			 * Drive's own answer: no need to ask again. */
			drive_err_set(err, 503, "noProgress",
				      "Drive kept nothing of the chunk at "
				      "%" PRId64,
				      was);
			if (!drive_http_retry(c, &st, err))
				return -1;
			continue;
		}
		if (session_gone(err)) {
			up->session_url[0] = '\0';
			continue;
		}
		if (!drive_http_retry(c, &st, err))
			return -1;
		if (upload_query_offset(c, up, &pos, out, err) < 0) {
			if (!session_gone(err))
				return -1;
			up->session_url[0] = '\0';
		}
	}
	if (up->on_progress)
		up->on_progress(up->size, up->size, up->ud);
	return upload_verify_md5(m, up->size, out, err);
}

/* ---- creates with a pre-generated id ---------------------------------- */

/* 409 fileIdInUse on a create with our own id: an earlier attempt whose
 * answer was lost (a reset, a killed process) already created the file.
 * Drive allows duplicate names, so retrying a create blindly would leave
 * two files; with an id we can tell. */
static bool upload_id_taken(const struct drive_upload *up,
			    const struct drive_err *err)
{
	return !is_update(up) && up->new_id && up->new_id[0] &&
	       err->status == 409 && strcmp(err->reason, "fileIdInUse") == 0;
}

/* The file with our id exists: if it holds what we are sending, the upload
 * is done; otherwise (an earlier, different content) replace its content. */
static int upload_settle_taken_id(struct drive_client *c,
				  struct drive_upload *up, struct upload_md5 *m,
				  struct drive_file *out, struct drive_err *err)
{
	struct drive_upload again = *up;
	char hex[33];

	if (drive_get(c, up->new_id, out, err) < 0)
		return -1;
	if (md5_seek(m, 0) < 0 || md5_seek(m, up->size) < 0) {
		drive_err_local(err, m->err, "reading the upload for its md5");
		return -1;
	}
	md5_hex(m, hex);
	if (strcmp(hex, out->md5) == 0 && out->size == up->size)
		return 0;
	again.id = up->new_id;
	again.new_id = NULL;
	again.parent = NULL;
	again.session_url[0] = '\0';
	return drive_upload(c, &again, out, err);
}

/* The upload proper, once the arguments are safe to use. */
static int upload_checked(struct drive_client *c, struct drive_upload *up,
			  size_t mp_max, int64_t chunk, struct drive_file *out,
			  struct drive_err *err)
{
	struct upload_md5 m;
	int rc;

	if (up->fd < 0 || up->size < 0 ||
	    (!is_update(up) && (!up->name || !up->parent))) {
		drive_err_set(err, 0, "badRequest",
			      "drive_upload: need fd, size and either id or "
			      "parent and name");
		return -1;
	}
	/* Every chunk but the last must be a multiple of 256 KiB. */
	chunk -= chunk % CHUNK_ALIGN;
	if (chunk < CHUNK_ALIGN)
		chunk = CHUNK_ALIGN;
	if (md5_init(&m, up->fd) < 0) {
		md5_free(&m);
		drive_err_local(err, ENOMEM, "md5");
		return -1;
	}
	if (!up->session_url[0] && up->size <= (int64_t)mp_max)
		rc = upload_multipart(c, up, &m, out, err);
	else
		rc = upload_resumable(c, up, chunk, &m, out, err);
	if (rc < 0 && upload_id_taken(up, err))
		rc = upload_settle_taken_id(c, up, &m, out, err);
	md5_free(&m);
	return rc;
}

int drive_upload(struct drive_client *c, struct drive_upload *up,
		 struct drive_file *out, struct drive_err *err)
{
	size_t mp_max =
		up->multipart_max ? up->multipart_max : DEFAULT_MULTIPART_MAX;
	int64_t chunk =
		up->chunk_size ? (int64_t)up->chunk_size : DEFAULT_CHUNK;
	char id[sizeof(out->id)];
	const char *caller_id = up->id;
	int rc;

	/* The caller may pass an id that lives in *out (its last answer):
	 * keep a copy before clearing out. */
	if (up->id) {
		snprintf(id, sizeof(id), "%s", up->id);
		up->id = id;
	}
	drive_err_clear(err);
	memset(out, 0, sizeof(*out));
	rc = upload_checked(c, up, mp_max, chunk, out, err);
	up->id = caller_id;
	return rc;
}
