/* changes.c — Drive's changes feed: the start token, and reading every
 * change since a token. What the changes mean for cached state is cache/'s
 * business; this file only turns pages into struct drive_change.
 *
 * Feed quirks: tokens never expire; a page ends with either nextPageToken
 * (more now) or newStartPageToken (the token for next time); `removed`
 * means deleted or access lost, while trashing shows as file.trashed.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http.h"

static int changes_get(struct drive_client *c, char *url,
		       struct json_object **out, struct drive_err *err)
{
	struct drive_resp rs = {0};
	struct drive_req rq = {0};
	int rc = -1;

	*out = NULL;
	if (!url) {
		drive_err_local(err, ENOMEM, "changes");
		return -1;
	}
	rq.method = "GET";
	rq.url = url;
	if (drive_http_do(c, &rq, &rs, err) == 0) {
		*out = drive_resp_json(&rs, err);
		rc = *out ? 0 : -1;
	}
	drive_resp_reset(&rs);
	free(url);
	return rc;
}

static const char *jstr(struct json_object *o, const char *key)
{
	struct json_object *v;

	if (!json_object_object_get_ex(o, key, &v) ||
	    !json_object_is_type(v, json_type_string))
		return NULL;
	return json_object_get_string(v);
}

int drive_changes_start(struct drive_client *c, char *token, size_t token_len,
			struct drive_err *err)
{
	struct json_object *o;
	const char *t;
	char *url;
	int rc = -1;

	drive_err_clear(err);
	if (c->team_drive[0])
		url = drive_urlf(c,
				 "/drive/v3/changes/startPageToken?"
				 "supportsAllDrives=true&driveId=%s",
				 c->team_drive);
	else
		url = drive_urlf(c, "/drive/v3/changes/startPageToken?"
				    "supportsAllDrives=true");
	if (changes_get(c, url, &o, err) < 0)
		return -1;
	t = jstr(o, "startPageToken");
	if (!t || (size_t)snprintf(token, token_len, "%s", t) >= token_len) {
		drive_err_set(err, 200, "badResponse",
			      "changes/startPageToken: no usable token");
		goto out;
	}
	rc = 0;
out:
	json_object_put(o);
	return rc;
}

static void change_from_json(struct json_object *o, struct drive_change *ch)
{
	struct json_object *v;
	const char *s;

	memset(ch, 0, sizeof(*ch));
	s = jstr(o, "fileId");
	snprintf(ch->file_id, sizeof(ch->file_id), "%s", s ? s : "");
	if (json_object_object_get_ex(o, "removed", &v))
		ch->removed = json_object_get_boolean(v);
	ch->time_ms = drive_time_parse(jstr(o, "time"));
	if (ch->time_ms < 0)
		ch->time_ms = 0;
	if (json_object_object_get_ex(o, "file", &v) &&
	    json_object_is_type(v, json_type_object)) {
		drive_file_from_json(v, &ch->file);
		ch->has_file = true;
		if (!ch->file_id[0])
			snprintf(ch->file_id, sizeof(ch->file_id), "%s",
				 ch->file.id);
	}
}

/* Hands one page's changes to cb; returns 1 if cb asked to stop. */
static int changes_page(struct json_object *o, drive_change_cb cb, void *ud)
{
	struct json_object *list, *e;
	struct drive_change *ch;
	size_t i, n;
	int stop = 0;

	if (!json_object_object_get_ex(o, "changes", &list) ||
	    !json_object_is_type(list, json_type_array))
		return 0;
	ch = malloc(sizeof(*ch)); /* ~3 KB: not on small thread stacks */
	if (!ch)
		return -1;
	n = json_object_array_length(list);
	for (i = 0; i < n && !stop; i++) {
		e = json_object_array_get_idx(list, i);
		/* Shared-drive changes (changeType "drive") carry no file. */
		if (jstr(e, "changeType") &&
		    strcmp(jstr(e, "changeType"), "file") != 0)
			continue;
		change_from_json(e, ch);
		if (cb(ch, ud))
			stop = 1;
	}
	free(ch);
	return stop;
}

/* Ends the listing by handing out `t` as the token for next time. */
static int changes_token_out(const char *t, char *out, size_t len,
			     struct drive_err *err)
{
	if ((size_t)snprintf(out, len, "%s", t) < len)
		return 0;
	drive_err_set(err, 0, "localError", "change token too long");
	return -1;
}

int drive_changes_list(struct drive_client *c, const char *token,
		       drive_change_cb cb, void *ud, char *new_token,
		       size_t new_token_len, struct drive_err *err)
{
	char params[512], *cur, *tok, *url;
	struct json_object *o;
	const char *next, *fresh;
	int rc = -1, stop;

	drive_err_clear(err);
	if (new_token_len)
		new_token[0] = '\0';
	cur = strdup(token);
	if (!cur) {
		drive_err_local(err, ENOMEM, "changes");
		return -1;
	}
	/* Like lists, but changes.list knows no `corpora`: the shared drive is
	 * named by driveId alone. */
	if (c->team_drive[0])
		snprintf(params, sizeof(params),
			 "&supportsAllDrives=true&includeItemsFromAllDrives="
			 "true&driveId=%s",
			 c->team_drive);
	else
		snprintf(params, sizeof(params),
			 "&supportsAllDrives=true&includeItemsFromAllDrives="
			 "true");
	while (cur) {
		tok = drive_url_escape(cur);
		url = tok ? drive_urlf(
				    c,
				    "/drive/v3/changes?pageToken=%s&pageSize="
				    "1000&includeRemoved=true&fields="
				    "nextPageToken,newStartPageToken,changes("
				    "changeType,time,removed,fileId,"
				    "file(" DRIVE_FILE_FIELDS "))%s",
				    tok, params)
			  : NULL;
		free(tok);
		if (changes_get(c, url, &o, err) < 0)
			break;
		stop = changes_page(o, cb, ud);
		next = jstr(o, "nextPageToken");
		fresh = jstr(o, "newStartPageToken");
		if (stop < 0) {
			drive_err_local(err, ENOMEM, "changes");
		} else if (stop) {
			/* The callback stopped mid-page: next time starts at
			 * this page again, so no change is skipped. */
			rc = changes_token_out(cur, new_token, new_token_len,
					       err);
		} else if (next) {
			free(cur);
			cur = strdup(next);
			json_object_put(o);
			if (!cur)
				drive_err_local(err, ENOMEM, "changes");
			continue;
		} else if (fresh) {
			rc = changes_token_out(fresh, new_token, new_token_len,
					       err);
		} else {
			drive_err_set(err, 200, "badResponse",
				      "changes: a page with neither "
				      "nextPageToken nor newStartPageToken");
		}
		json_object_put(o);
		break;
	}
	free(cur);
	return rc;
}
