/* api.c — Drive's metadata calls: about, root, get, list, path walks,
 * mkdir, rename/move, trash, delete; and the File resource (JSON to struct
 * drive_file, RFC 3339 times). Content moves in download.c and upload.c,
 * the changes feed in changes.c.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "http.h"

/* ---- the File resource ----------------------------------------------- */

static int64_t days_from_civil(int64_t y, int m, int d)
{
	int64_t era, yoe, doy, doe;

	y -= m <= 2;
	era = (y >= 0 ? y : y - 399) / 400;
	yoe = y - era * 400;
	doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + doe - 719468;
}

int64_t drive_time_parse(const char *s)
{
	int y, mo, d, h, mi, sec, n = 0, oh, om;
	int64_t ms = 0, scale = 100, t;
	const char *p;

	if (!s ||
	    sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d%n", &y, &mo, &d, &h, &mi, &sec,
		   &n) != 6 ||
	    n == 0)
		return -1;
	if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 ||
	    sec > 60)
		return -1;
	p = s + n;
	if (*p == '.') {
		/* Milliseconds from Drive; rclone writes nanoseconds. */
		for (p++; *p >= '0' && *p <= '9'; p++) {
			ms += (*p - '0') * scale;
			scale /= 10;
		}
	}
	t = (days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec) *
		    1000 +
	    ms;
	if (*p == 'Z' || *p == 'z')
		return t;
	if ((*p == '+' || *p == '-') &&
	    sscanf(p + 1, "%2d:%2d", &oh, &om) == 2) {
		int64_t off = ((int64_t)oh * 60 + om) * 60000;

		return *p == '+' ? t - off : t + off;
	}
	return -1;
}

void drive_time_format(int64_t ms, char *out, size_t len)
{
	time_t secs = (time_t)(ms >= 0 ? ms / 1000 : (ms - 999) / 1000);
	int frac = (int)(ms - (int64_t)secs * 1000);
	struct tm tm;

	gmtime_r(&secs, &tm);
	snprintf(out, len, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ",
		 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
		 tm.tm_min, tm.tm_sec, frac);
}

static const char *jstr(struct json_object *o, const char *key)
{
	struct json_object *v;

	if (!json_object_object_get_ex(o, key, &v) ||
	    !json_object_is_type(v, json_type_string))
		return NULL;
	return json_object_get_string(v);
}

static void jcopy(char *dst, size_t len, struct json_object *o, const char *key)
{
	const char *v = jstr(o, key);

	snprintf(dst, len, "%s", v ? v : "");
}

/* Drive sends int64 fields (size, version, quota) as JSON strings. */
static int64_t jint64(struct json_object *o, const char *key, int64_t def)
{
	struct json_object *v;

	if (!json_object_object_get_ex(o, key, &v) || !v)
		return def;
	if (json_object_is_type(v, json_type_string))
		return strtoll(json_object_get_string(v), NULL, 10);
	if (json_object_is_type(v, json_type_int))
		return json_object_get_int64(v);
	return def;
}

void drive_file_from_json(struct json_object *o, struct drive_file *f)
{
	struct json_object *v;

	memset(f, 0, sizeof(*f));
	jcopy(f->id, sizeof(f->id), o, "id");
	jcopy(f->name, sizeof(f->name), o, "name");
	jcopy(f->mime_type, sizeof(f->mime_type), o, "mimeType");
	jcopy(f->md5, sizeof(f->md5), o, "md5Checksum");
	jcopy(f->rev, sizeof(f->rev), o, "headRevisionId");
	if (json_object_object_get_ex(o, "parents", &v) &&
	    json_object_is_type(v, json_type_array) &&
	    json_object_array_length(v) > 0)
		snprintf(f->parent, sizeof(f->parent), "%s",
			 json_object_get_string(
				 json_object_array_get_idx(v, 0)));
	f->size = jint64(o, "size", 0);
	f->version = jint64(o, "version", 0);
	f->created_ms = drive_time_parse(jstr(o, "createdTime"));
	f->modified_ms = drive_time_parse(jstr(o, "modifiedTime"));
	if (f->created_ms < 0)
		f->created_ms = 0;
	if (f->modified_ms < 0)
		f->modified_ms = 0;
	if (json_object_object_get_ex(o, "trashed", &v))
		f->trashed = json_object_get_boolean(v);
	f->is_folder = strcmp(f->mime_type, DRIVE_FOLDER_MIME) == 0;
}

/* ---- request helpers ------------------------------------------------- */

/* Sends a request with an optional JSON body and parses a JSON answer
 * into *out (NULL = ignore the answer). */
int drive_call(struct drive_client *c, const char *method, const char *url,
	       const char *body, const char *ctype, struct json_object **out,
	       int64_t *date_ms, struct drive_err *err)
{
	struct drive_resp rs = {0};
	struct drive_body b = {0};
	struct drive_req rq = {0};
	int rc = -1;

	if (out)
		*out = NULL;
	if (!url) {
		drive_err_local(err, ENOMEM, method);
		return -1;
	}
	rq.method = method;
	rq.url = url;
	if (body) {
		b.pre = body;
		b.pre_len = strlen(body);
		b.fd = -1;
		rq.body = &b;
		rq.content_type = ctype;
	}
	if (drive_http_do(c, &rq, &rs, err) < 0)
		goto out;
	if (date_ms)
		*date_ms = rs.date_ms;
	if (out) {
		*out = drive_resp_json(&rs, err);
		if (!*out)
			goto out;
	}
	rc = 0;
out:
	drive_resp_reset(&rs);
	return rc;
}

static int api_call(struct drive_client *c, const char *method, const char *url,
		    struct json_object *body, struct json_object **out,
		    int64_t *date_ms, struct drive_err *err)
{
	const char *text = NULL;

	if (body)
		text = json_object_to_json_string_ext(
			body, JSON_C_TO_STRING_PLAIN |
				      JSON_C_TO_STRING_NOSLASHESCAPE);
	return drive_call(c, method, url, text,
			  "application/json; charset=UTF-8", out, date_ms, err);
}

static int api_get_file(struct drive_client *c, char *url,
			struct drive_file *out, struct drive_err *err)
{
	struct json_object *o;
	int rc;

	rc = api_call(c, "GET", url, NULL, &o, NULL, err);
	free(url);
	if (rc < 0)
		return -1;
	drive_file_from_json(o, out);
	json_object_put(o);
	return 0;
}

/* ---- calls ----------------------------------------------------------- */

int drive_about(struct drive_client *c, struct drive_about *out,
		struct drive_err *err)
{
	struct json_object *o, *user, *quota;
	char *url;
	int rc;

	memset(out, 0, sizeof(*out));
	url = drive_urlf(c, "/drive/v3/about?fields=user(displayName,"
			    "emailAddress),storageQuota(limit,usage)");
	rc = api_call(c, "GET", url, NULL, &o, NULL, err);
	free(url);
	if (rc < 0)
		return -1;
	if (json_object_object_get_ex(o, "user", &user)) {
		jcopy(out->user_email, sizeof(out->user_email), user,
		      "emailAddress");
		jcopy(out->user_name, sizeof(out->user_name), user,
		      "displayName");
	}
	out->quota_limit = -1; /* no limit field: unlimited */
	if (json_object_object_get_ex(o, "storageQuota", &quota)) {
		out->quota_limit = jint64(quota, "limit", -1);
		out->quota_usage = jint64(quota, "usage", 0);
	}
	json_object_put(o);
	return 0;
}

int drive_get(struct drive_client *c, const char *id, struct drive_file *out,
	      struct drive_err *err)
{
	char *eid = drive_url_escape(id);
	char *url =
		eid ? drive_urlf(c,
				 "/drive/v3/files/%s?fields=" DRIVE_FILE_FIELDS
				 "&supportsAllDrives=true",
				 eid)
		    : NULL;

	free(eid);
	drive_err_clear(err);
	return api_get_file(c, url, out, err);
}

int drive_root(struct drive_client *c, struct drive_file *out,
	       struct drive_err *err)
{
	/* A shared drive's root folder has the drive's id; My Drive's
	 * "root" alias resolves to the real id, which lists need. */
	if (c->root_folder_id[0])
		return drive_get(c, c->root_folder_id, out, err);
	if (c->team_drive[0])
		return drive_get(c, c->team_drive, out, err);
	return drive_get(c, "root", out, err);
}

struct list_page {
	drive_list_cb cb;
	void *ud;
	const char *name; /* exact-name filter or NULL */
	bool stopped;
};

static int list_page_entries(struct json_object *o, struct list_page *lp)
{
	struct json_object *files, *e;
	struct drive_file f;
	size_t i, n;

	if (!json_object_object_get_ex(o, "files", &files) ||
	    !json_object_is_type(files, json_type_array))
		return 0; /* an empty page is legal mid-listing */
	n = json_object_array_length(files);
	for (i = 0; i < n && !lp->stopped; i++) {
		e = json_object_array_get_idx(files, i);
		drive_file_from_json(e, &f);
		/* `name =` is case-insensitive on Drive: recheck exactly. */
		if (lp->name && strcmp(f.name, lp->name) != 0)
			continue;
		if (f.trashed)
			continue;
		if (lp->cb(&f, lp->ud))
			lp->stopped = true;
	}
	return 0;
}

static char *list_query(const char *parent, const char *name)
{
	char *ep = NULL, *en = NULL, *q = NULL, *esc = NULL;
	size_t pl = strlen(parent) * 2 + 1,
	       nl = name ? strlen(name) * 2 + 1 : 1;
	int n;

	ep = malloc(pl);
	en = malloc(nl);
	if (!ep || !en)
		goto out;
	drive_query_escape(parent, ep, pl);
	en[0] = '\0';
	if (name)
		drive_query_escape(name, en, nl);
	if (name)
		n = asprintf(&q,
			     "'%s' in parents and name = '%s' and "
			     "trashed = false",
			     ep, en);
	else
		n = asprintf(&q, "'%s' in parents and trashed = false", ep);
	if (n < 0)
		q = NULL;
	if (q)
		esc = drive_url_escape(q);
out:
	free(ep);
	free(en);
	free(q);
	return esc;
}

int drive_list(struct drive_client *c, const char *parent, const char *name,
	       drive_list_cb cb, void *ud, int64_t *server_ms,
	       struct drive_err *err)
{
	struct list_page lp = {cb, ud, name, false};
	struct json_object *o = NULL;
	char params[512], *q, *url, *tok = NULL;
	const char *next;
	int rc = -1;

	drive_err_clear(err);
	q = list_query(parent, name);
	if (!q) {
		drive_err_local(err, ENOMEM, "drive_list");
		return -1;
	}
	drive_list_params(c, params, sizeof(params));
	do {
		url = drive_urlf(
			c,
			"/drive/v3/files?q=%s&pageSize=1000&fields="
			"nextPageToken,files(" DRIVE_FILE_FIELDS ")%s%s%s",
			q, params, tok ? "&pageToken=" : "", tok ? tok : "");
		rc = api_call(c, "GET", url, NULL, &o, server_ms, err);
		free(url);
		free(tok);
		tok = NULL;
		if (rc < 0)
			break;
		list_page_entries(o, &lp);
		/* Pages may be short or empty before the end: only a missing
		 * nextPageToken ends the listing. */
		next = jstr(o, "nextPageToken");
		if (next && *next && !lp.stopped) {
			tok = drive_url_escape(next);
			if (!tok) {
				drive_err_local(err, ENOMEM, "drive_list");
				rc = -1;
			}
		}
		json_object_put(o);
		o = NULL;
	} while (tok);
	free(q);
	return rc;
}

/* ---- path walks ------------------------------------------------------ */

struct pick {
	const char *name; /* exact name wanted */
	bool folders_only;
	bool found;
	struct drive_file best;
};

/* Among duplicates (normal on Drive) the oldest wins, by (createdTime,
 * id): the same rule the lock protocol uses, so every reader agrees. */
static int pick_oldest(const struct drive_file *f, void *ud)
{
	struct pick *p = ud;

	if (strcmp(f->name, p->name) != 0)
		return 0;
	if (p->folders_only && !f->is_folder)
		return 0;
	if (!p->found || f->created_ms < p->best.created_ms ||
	    (f->created_ms == p->best.created_ms &&
	     strcmp(f->id, p->best.id) < 0)) {
		p->best = *f;
		p->found = true;
	}
	return 0;
}

static int resolve_child(struct drive_client *c, const char *parent,
			 const char *name, bool folders_only,
			 struct drive_file *out, struct drive_err *err)
{
	struct pick p = {.name = name, .folders_only = folders_only};

	if (drive_list(c, parent, name, pick_oldest, &p, NULL, err) < 0)
		return -1;
	/* Name queries lag behind creates (Drive's search index); a listing
	 * by parent does not. Pay for that only on a miss. */
	if (!p.found &&
	    drive_list(c, parent, NULL, pick_oldest, &p, NULL, err) < 0)
		return -1;
	if (!p.found) {
		drive_err_set(err, 404, "notFound", "%s: not found", name);
		return -1;
	}
	*out = p.best;
	return 0;
}

int drive_resolve_path(struct drive_client *c, const char *from_id,
		       const char *path, struct drive_file *out,
		       struct drive_err *err)
{
	char comp[1024], name[1024];
	struct drive_file cur;
	const char *p = path, *slash;
	size_t n;

	drive_err_clear(err);
	if (drive_get(c, from_id, &cur, err) < 0)
		return -1;
	while (*p) {
		while (*p == '/')
			p++;
		if (!*p)
			break;
		slash = strchr(p, '/');
		n = slash ? (size_t)(slash - p) : strlen(p);
		if (n >= sizeof(comp)) {
			drive_err_set(err, 400, "nameTooLong", "%.*s: too long",
				      (int)n, p);
			return -1;
		}
		memcpy(comp, p, n);
		comp[n] = '\0';
		p += n;
		if (!cur.is_folder) {
			drive_err_set(err, 404, "notFound",
				      "%s: not a folder on the way to %s",
				      cur.name, path);
			return -1;
		}
		if (drive_name_from_local(comp, name, sizeof(name)) < 0) {
			drive_err_set(err, 400, "nameTooLong", "%s: too long",
				      comp);
			return -1;
		}
		while (*p == '/')
			p++;
		if (resolve_child(c, cur.id, name, *p != '\0', &cur, err) < 0)
			return -1;
	}
	*out = cur;
	return 0;
}

/* ---- changes to metadata --------------------------------------------- */

int drive_mkdir(struct drive_client *c, const char *parent, const char *name,
		struct drive_file *out, struct drive_err *err)
{
	return drive_mkdir_id(c, parent, name, NULL, out, err);
}

int drive_mkdir_id(struct drive_client *c, const char *parent, const char *name,
		   const char *new_id, struct drive_file *out,
		   struct drive_err *err)
{
	struct json_object *body = json_object_new_object(), *parents, *o;
	char *url;
	int rc;

	drive_err_clear(err);
	parents = json_object_new_array();
	json_object_array_add(parents, json_object_new_string(parent));
	json_object_object_add(body, "name", json_object_new_string(name));
	json_object_object_add(body, "mimeType",
			       json_object_new_string(DRIVE_FOLDER_MIME));
	json_object_object_add(body, "parents", parents);
	if (new_id && new_id[0])
		json_object_object_add(body, "id",
				       json_object_new_string(new_id));
	url = drive_urlf(c, "/drive/v3/files?fields=" DRIVE_FILE_FIELDS
			    "&supportsAllDrives=true");
	rc = api_call(c, "POST", url, body, &o, NULL, err);
	free(url);
	json_object_put(body);
	/* Our id is taken: an earlier attempt whose answer was lost made the
	 * folder. Take it rather than make a duplicate. */
	if (rc < 0 && new_id && new_id[0] && err->status == 409 &&
	    strcmp(err->reason, "fileIdInUse") == 0)
		return drive_get(c, new_id, out, err);
	if (rc < 0)
		return -1;
	drive_file_from_json(o, out);
	json_object_put(o);
	return 0;
}

int drive_generate_ids(struct drive_client *c, int count, char (*ids)[128],
		       struct drive_err *err)
{
	struct json_object *o, *arr;
	char *url;
	int i, n;

	drive_err_clear(err);
	if (count < 1 || count > 1000) {
		drive_err_set(err, 0, "badRequest",
			      "generateIds: count %d out of 1..1000", count);
		return -1;
	}
	url = drive_urlf(c,
			 "/drive/v3/files/generateIds?count=%d&space=drive"
			 "&type=files",
			 count);
	if (api_call(c, "GET", url, NULL, &o, NULL, err) < 0) {
		free(url);
		return -1;
	}
	free(url);
	n = json_object_object_get_ex(o, "ids", &arr) &&
			    json_object_is_type(arr, json_type_array)
		    ? (int)json_object_array_length(arr)
		    : 0;
	if (n < count) {
		json_object_put(o);
		drive_err_set(err, 0, "badResponse",
			      "generateIds returned %d ids, asked for %d", n,
			      count);
		return -1;
	}
	for (i = 0; i < count; i++)
		snprintf(ids[i], 128, "%s",
			 json_object_get_string(
				 json_object_array_get_idx(arr, i)));
	json_object_put(o);
	return 0;
}

/* PATCH files/ID with a JSON body and optional parent changes. Parents
 * move only through addParents/removeParents: `parents` in the body is
 * 403 fieldNotWritable. */
static int api_patch(struct drive_client *c, const char *id,
		     struct json_object *body, const char *add_parent,
		     const char *remove_parent, struct drive_file *out,
		     struct drive_err *err)
{
	char *eid = drive_url_escape(id), *ea = NULL, *er = NULL, *url = NULL;
	struct json_object *o = NULL;
	int rc = -1;

	if (add_parent)
		ea = drive_url_escape(add_parent);
	if (remove_parent)
		er = drive_url_escape(remove_parent);
	if (eid && (!add_parent || ea) && (!remove_parent || er))
		url = drive_urlf(c,
				 "/drive/v3/files/%s?fields=" DRIVE_FILE_FIELDS
				 "&supportsAllDrives=true%s%s%s%s",
				 eid, ea ? "&addParents=" : "", ea ? ea : "",
				 er ? "&removeParents=" : "", er ? er : "");
	rc = api_call(c, "PATCH", url, body, out ? &o : NULL, NULL, err);
	if (rc == 0 && out)
		drive_file_from_json(o, out);
	json_object_put(o);
	free(url);
	free(eid);
	free(ea);
	free(er);
	return rc;
}

int drive_update_meta(struct drive_client *c, const char *id,
		      const char *new_name, const char *add_parent,
		      const char *remove_parent, int64_t modified_ms,
		      struct drive_file *out, struct drive_err *err)
{
	struct json_object *body = json_object_new_object();
	struct drive_file ignored;
	char when[40];
	int rc;

	drive_err_clear(err);
	if (new_name)
		json_object_object_add(body, "name",
				       json_object_new_string(new_name));
	if (modified_ms) {
		drive_time_format(modified_ms, when, sizeof(when));
		json_object_object_add(body, "modifiedTime",
				       json_object_new_string(when));
	}
	rc = api_patch(c, id, body, add_parent, remove_parent,
		       out ? out : &ignored, err);
	json_object_put(body);
	return rc;
}

int drive_trash(struct drive_client *c, const char *id, struct drive_err *err)
{
	struct json_object *body = json_object_new_object();
	int rc;

	drive_err_clear(err);
	json_object_object_add(body, "trashed", json_object_new_boolean(1));
	rc = api_patch(c, id, body, NULL, NULL, NULL, err);
	json_object_put(body);
	return rc;
}

int drive_delete(struct drive_client *c, const char *id, struct drive_err *err)
{
	char *eid = drive_url_escape(id);
	char *url =
		eid ? drive_urlf(c, "/drive/v3/files/%s?supportsAllDrives=true",
				 eid)
		    : NULL;
	int rc;

	drive_err_clear(err);
	rc = api_call(c, "DELETE", url, NULL, NULL, NULL, err);
	free(url);
	free(eid);
	return rc;
}
