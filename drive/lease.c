/* lease.c — the Drive calls of the lock protocol (see lease.h): create a
 * candidate with its lease TTL in appProperties, list a lock folder by
 * parent with those TTLs, and touch a lock so Drive moves its modifiedTime.
 *
 * Written like api.c, on http.c's retrying request; nothing here keeps
 * state. The lock logic itself (who wins, what expired) is cache/lock.c.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "http.h"
#include "lease.h"

#define LEASE_FIELDS DRIVE_FILE_FIELDS ",appProperties"

/* drive_call() for a malloc'd url, which it frees. */
static int lease_call(struct drive_client *c, const char *method, char *url,
		      const char *body, const char *ctype,
		      struct json_object **out, int64_t *date_ms,
		      struct drive_err *err)
{
	int rc = drive_call(c, method, url, body, ctype, out, date_ms, err);

	free(url);
	return rc;
}

static int lease_ttl_of(struct json_object *o)
{
	struct json_object *props, *v;

	if (!json_object_object_get_ex(o, "appProperties", &props) ||
	    !json_object_object_get_ex(props, DRIVE_LEASE_TTL_KEY, &v) ||
	    !json_object_is_type(v, json_type_string))
		return 0;
	return atoi(json_object_get_string(v));
}

static const char *json_plain(struct json_object *o)
{
	return json_object_to_json_string_ext(
		o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
}

/* ---- create ------------------------------------------------------------ */

static struct json_object *lease_metadata(const char *parent, const char *name,
					  const char *id, bool folder,
					  const char *note, int ttl_s)
{
	struct json_object *o = json_object_new_object(), *parents, *props;
	char ttl[32];

	parents = json_object_new_array();
	json_object_array_add(parents, json_object_new_string(parent));
	props = json_object_new_object();
	snprintf(ttl, sizeof(ttl), "%d", ttl_s);
	json_object_object_add(props, DRIVE_LEASE_TTL_KEY,
			       json_object_new_string(ttl));
	json_object_object_add(o, "id", json_object_new_string(id));
	json_object_object_add(o, "name", json_object_new_string(name));
	json_object_object_add(o, "parents", parents);
	json_object_object_add(o, "appProperties", props);
	json_object_object_add(
		o, "mimeType",
		json_object_new_string(folder ? DRIVE_FOLDER_MIME
					      : "application/json"));
	if (note)
		json_object_object_add(o, "description",
				       json_object_new_string(note));
	return o;
}

static char *lease_multipart(const char *meta, const char *content, size_t len,
			     char *ctype, size_t ctype_len)
{
	char boundary[48], *body = NULL;
	int n;

	snprintf(boundary, sizeof(boundary), "vectur_lease_%08lx%08lx",
		 (unsigned long)random(), (unsigned long)time(NULL));
	snprintf(ctype, ctype_len, "multipart/related; boundary=%s", boundary);
	n = asprintf(&body,
		     "--%s\r\nContent-Type: application/json; charset=UTF-8"
		     "\r\n\r\n%s\r\n--%s\r\nContent-Type: application/json"
		     "\r\n\r\n%.*s\r\n--%s--\r\n",
		     boundary, meta, boundary, (int)len, content, boundary);
	return n < 0 ? NULL : body;
}

int drive_lease_create(struct drive_client *c, const char *parent,
		       const char *name, const char *new_id,
		       const char *content, size_t content_len,
		       const char *note, int ttl_s, struct drive_file *out,
		       int64_t *date_ms, struct drive_err *err)
{
	bool folder = content == NULL;
	struct json_object *meta, *o = NULL;
	char ctype[128], *body = NULL, *url;
	int rc = -1;

	drive_err_clear(err);
	if (!new_id || !new_id[0]) {
		drive_err_set(err, 0, "badRequest", "lease create: no id");
		return -1;
	}
	meta = lease_metadata(parent, name, new_id, folder, note, ttl_s);
	if (folder) {
		url = drive_urlf(c, "/drive/v3/files?fields=" LEASE_FIELDS
				    "&supportsAllDrives=true");
		body = strdup(json_plain(meta));
		snprintf(ctype, sizeof(ctype),
			 "application/json; "
			 "charset=UTF-8");
	} else {
		url = drive_urlf(c, "/upload/drive/v3/files?uploadType="
				    "multipart&fields=" LEASE_FIELDS
				    "&supportsAllDrives=true");
		body = lease_multipart(json_plain(meta), content, content_len,
				       ctype, sizeof(ctype));
	}
	json_object_put(meta);
	if (!body) {
		free(url);
		drive_err_local(err, ENOMEM, "lease create");
		return -1;
	}
	rc = lease_call(c, "POST", url, body, ctype, &o, date_ms, err);
	free(body);
	/* Our id is taken: an attempt whose answer was lost created it. The
	 * id was generated for us alone, so that file is our candidate. */
	if (rc < 0 && err->status == 409 &&
	    strcmp(err->reason, "fileIdInUse") == 0)
		return drive_get(c, new_id, out, err);
	if (rc < 0)
		return -1;
	drive_file_from_json(o, out);
	json_object_put(o);
	return 0;
}

/* ---- list -------------------------------------------------------------- */

static char *lease_query(const char *parent)
{
	size_t pl = strlen(parent) * 2 + 1;
	char *ep = malloc(pl), *q = NULL, *esc = NULL;

	if (!ep)
		return NULL;
	drive_query_escape(parent, ep, pl);
	if (asprintf(&q, "'%s' in parents and trashed = false", ep) < 0)
		q = NULL;
	if (q)
		esc = drive_url_escape(q);
	free(ep);
	free(q);
	return esc;
}

/* Hands one page's entries to cb; returns non-zero when cb asked to stop. */
static int lease_page(struct json_object *o, const char *name,
		      drive_lease_cb cb, void *ud)
{
	struct json_object *files, *e;
	struct drive_lease_entry le;
	size_t i, n;

	if (!json_object_object_get_ex(o, "files", &files) ||
	    !json_object_is_type(files, json_type_array))
		return 0; /* an empty page is legal mid-listing */
	n = json_object_array_length(files);
	for (i = 0; i < n; i++) {
		e = json_object_array_get_idx(files, i);
		drive_file_from_json(e, &le.f);
		if (le.f.trashed || (name && strcmp(le.f.name, name) != 0))
			continue;
		le.ttl_s = lease_ttl_of(e);
		if (cb(&le, ud))
			return 1;
	}
	return 0;
}

int drive_lease_list(struct drive_client *c, const char *parent,
		     const char *name, drive_lease_cb cb, void *ud,
		     int64_t *server_ms, struct drive_err *err)
{
	struct json_object *o = NULL;
	char params[512], *q, *tok = NULL;
	const char *next;
	int rc = 0, stop = 0;

	drive_err_clear(err);
	q = lease_query(parent);
	if (!q) {
		drive_err_local(err, ENOMEM, "lease list");
		return -1;
	}
	drive_list_params(c, params, sizeof(params));
	do {
		rc = lease_call(
			c, "GET",
			drive_urlf(c,
				   "/drive/v3/files?q=%s&pageSize=1000"
				   "&fields=nextPageToken,files(" LEASE_FIELDS
				   ")%s%s%s",
				   q, params, tok ? "&pageToken=" : "",
				   tok ? tok : ""),
			NULL, NULL, &o, server_ms, err);
		free(tok);
		tok = NULL;
		if (rc < 0)
			break;
		stop = lease_page(o, name, cb, ud);
		/* Pages may be short or empty before the end: only a missing
		 * nextPageToken ends the listing. */
		if (json_object_object_get_ex(o, "nextPageToken", NULL) &&
		    !stop) {
			struct json_object *t;

			json_object_object_get_ex(o, "nextPageToken", &t);
			next = json_object_get_string(t);
			if (next && *next) {
				tok = drive_url_escape(next);
				if (!tok) {
					drive_err_local(err, ENOMEM,
							"lease list");
					rc = -1;
				}
			}
		}
		json_object_put(o);
		o = NULL;
	} while (tok);
	free(q);
	return rc;
}

/* ---- touch ------------------------------------------------------------- */

int drive_touch(struct drive_client *c, const char *id, struct drive_file *out,
		int64_t *date_ms, struct drive_err *err)
{
	struct json_object *body = json_object_new_object(), *props, *o = NULL;
	char *eid = drive_url_escape(id), *url = NULL, stamp[48];
	struct timespec ts;
	int rc;

	drive_err_clear(err);
	/* Drive records a metadata change (and moves modifiedTime to its
	 * clock) only when a value differs: a nanosecond stamp always does. */
	clock_gettime(CLOCK_REALTIME, &ts);
	snprintf(stamp, sizeof(stamp), "%lld.%09ld", (long long)ts.tv_sec,
		 ts.tv_nsec);
	props = json_object_new_object();
	json_object_object_add(props, DRIVE_LEASE_TOUCH_KEY,
			       json_object_new_string(stamp));
	json_object_object_add(body, "appProperties", props);
	if (eid)
		url = drive_urlf(c,
				 "/drive/v3/files/%s?fields=" LEASE_FIELDS
				 "&supportsAllDrives=true",
				 eid);
	free(eid);
	rc = lease_call(c, "PATCH", url, json_plain(body),
			"application/json; charset=UTF-8", &o, date_ms, err);
	json_object_put(body);
	if (rc < 0)
		return -1;
	if (out)
		drive_file_from_json(o, out);
	json_object_put(o);
	return 0;
}
