/* lease.h — the Drive calls behind vectur's lock files (cache/lock.c): a
 * lock candidate created in one request with its lease TTL attached, a
 * listing by parent that returns each entry's TTL, and a "touch" that makes
 * Drive move a file's modifiedTime to Drive's own clock.
 *
 * Kept apart from drive.h so the core client stays the contract everyone
 * else uses; these calls exist only for the lock protocol. Same conventions:
 * 0 on success, -1 with struct drive_err filled.
 */
#ifndef VECTUR_DRIVE_LEASE_H
#define VECTUR_DRIVE_LEASE_H

#include <stdint.h>

#include "drive.h"

/* appProperties keys. The TTL travels with the lock so that a contender
 * judges a holder's lease by the holder's TTL, not its own. */
#define DRIVE_LEASE_TTL_KEY   "vectur_lease_ttl"
#define DRIVE_LEASE_TOUCH_KEY "vectur_lease_touch"

/* One entry of a lock folder. ttl_s is 0 when the file carries no lease
 * (created by something other than the lock protocol). */
struct drive_lease_entry {
	struct drive_file f;
	int ttl_s;
};

/* Creates a lock candidate in `parent` named `name` with id `new_id` (from
 * drive_generate_ids; required, so a create retried after a lost answer is
 * recognised by 409 fileIdInUse rather than leaving a second candidate).
 * `content` non-NULL: a file holding those bytes, sent as one multipart
 * request. `content` NULL: a folder (the mkdir-lock idiom) whose
 * description is `note` (may be NULL). Either way appProperties carry the
 * TTL. *date_ms (may be NULL) gets the response's Date. */
int drive_lease_create(struct drive_client *c, const char *parent,
		       const char *name, const char *new_id,
		       const char *content, size_t content_len,
		       const char *note, int ttl_s, struct drive_file *out,
		       int64_t *date_ms, struct drive_err *err);

typedef int (*drive_lease_cb)(const struct drive_lease_entry *e, void *ud);

/* Lists the non-trashed children of `parent` (by parent only: name-filtered
 * lists lag behind creates) with their lease TTLs. If `name` is non-NULL,
 * only entries with exactly that name reach cb (filtered here, not in q).
 * *server_ms gets the Date of the last page, the server's clock. */
int drive_lease_list(struct drive_client *c, const char *parent,
		     const char *name, drive_lease_cb cb, void *ud,
		     int64_t *server_ms, struct drive_err *err);

/* PATCH appProperties with a value that differs from the last one (the
 * local time in ms), so Drive records a change and sets modifiedTime to
 * its clock: the lease refresh. A 404 means the lock is gone. */
int drive_touch(struct drive_client *c, const char *id, struct drive_file *out,
		int64_t *date_ms, struct drive_err *err);

#endif
