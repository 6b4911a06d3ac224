/* lock.h — lock files that hold across machines (DESIGN.md §3 "Locks").
 *
 * Two layers:
 *
 * 1. The protocol, on Drive only (drive.h + lease.h), usable without a
 *    cache: lock_acquire() creates a candidate, lists the folder by parent,
 *    deletes expired leases and lets the oldest live entry win;
 *    lock_refresh() renews a lease, lock_delete() deletes it. The decision
 *    itself (lock_expired, lock_pick_winner, lock_is_mine) is pure so the
 *    unit tests can drive it with made-up listings.
 *
 * 2. The mount's side (cache_lock_*): exclusive creates and mkdirs under
 *    locks/ arbitrated on Drive, unlink/rmdir of a lock as a release
 *    barrier, and one lease thread per mount that refreshes every lock this
 *    mount holds every ttl/3, drops a lock from view when it finds it gone
 *    or lapsed, and reaps expired locks of other mounts from its view.
 *
 * Threads and locks: lock.c's registry mutex and the lease table's mutex
 * come after c->lock (cache_int.h's order: ... → c->lock → registry →
 * lt->mu) and neither is held across a Drive call. The lease thread never
 * holds lt->mu while taking c->lock.
 */
#ifndef VECTUR_CACHE_LOCK_H
#define VECTUR_CACHE_LOCK_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "drive.h"

struct cache;
struct cnode;

/* ---- the protocol ------------------------------------------------------- */

/* One entry with the lock's name in its folder, as listed. ttl_s 0 = the
 * entry carries no lease (not made by this protocol): never expired. */
struct lock_entry {
	char id[128];
	int64_t created_ms;
	int64_t modified_ms;
	int ttl_s;
	bool is_folder;
};

/* Expired on the server's clock: server_ms (a response's Date) is more than
 * the entry's TTL past its modifiedTime. */
bool lock_expired(const struct lock_entry *e, int64_t server_ms);

/* Index of the live entry with the smallest (createdTime, id), or -1. */
int lock_pick_winner(const struct lock_entry *e, int n, int64_t server_ms);

/* True when `id` holds the lock per this listing: it is the winner and no
 * other live entry shares its createdTime. A tie is yielded: the other
 * entry's owner may have listed before ours existed and believe it won, so
 * only a strictly older entry is safe to claim. */
bool lock_is_mine(const struct lock_entry *e, int n, int64_t server_ms,
		  const char *id);

/* Pre-generated Drive ids (files.generateIds), so a candidate create can be
 * retried without leaving a duplicate; refilled 100 at a time. */
struct lock_ids;
struct lock_ids *lock_ids_new(void);
void lock_ids_free(struct lock_ids *p);

struct lock_result {
	bool won;
	struct drive_file file; /* our candidate as Drive stored it */
	char holder_id[128];	/* the winner when lost ("" if none live) */
	int64_t server_ms;	/* Date of the deciding listing */
	int contenders;		/* entries with the name, live or not */
	int expired;		/* expired entries deleted */
};

/* The whole protocol. holder_json NULL makes a folder candidate (mkdir
 * lock) with `note` as its description. ids may be NULL (one generateIds
 * request per call). A loser's candidate is deleted before returning; if
 * that delete fails, *orphan_id (if non-NULL) gets its id to retry later.
 * Returns 0 (won or lost in res) or -1 with err. */
int lock_acquire(struct drive_client *dc, struct lock_ids *ids,
		 const char *parent_id, const char *name,
		 const char *holder_json, const char *note, int ttl_s,
		 struct lock_result *res, char *orphan_id,
		 struct drive_err *err);

/* Renews the lease: a touch, on which Drive sets modifiedTime to its
 * clock. *back_ms (0..1000) says how long before the touch was sent the
 * lease may have started, judged from the response's Date (1 s
 * resolution). A touch whose modifiedTime is older than the response's
 * second was not stamped (a Drive that does not count appProperties as a
 * change): modifiedTime is then set to that Date, and 1 is returned
 * instead of 0. -1 with err on failure (404 = gone). */
int lock_refresh(struct drive_client *dc, const char *id,
		 struct drive_file *out, int64_t *back_ms,
		 struct drive_err *err);

/* Deletes the lock; a 404 (already gone) is reported as -1, status 404. */
int lock_delete(struct drive_client *dc, const char *id, struct drive_err *err);

/* Lists the folder and says whether `id` still holds `name` there. */
int lock_still_ours(struct drive_client *dc, const char *parent_id,
		    const char *name, const char *id, bool *ours,
		    struct drive_err *err);

/* ---- the mount's side ------------------------------------------------- */

/* True for paths strictly under locks/ ("locks/x", "locks/a/b"), which are
 * leases; "locks" itself is a plain folder. */
bool cache_lock_path(const char *path);

/* Starts the lease thread of mount c with its TTL and the mount id shown in
 * holder files. Optional: the first lock creates it with TTL 60. */
int cache_locks_start(struct cache *c, int ttl_s, const char *mount_id);
/* Stops the lease thread (the held locks are left to expire). Before
 * cache_close. */
void cache_locks_stop(struct cache *c);

/* c->lock held. An O_CREAT of a missing file under locks/: arbitrated on
 * Drive. 0 with *out = the new node (remote, holding its holder JSON as a
 * clean version), or -EEXIST when another holder has it. Drops c->lock
 * while talking to Drive and while reading the changes feed (the acquire
 * barrier). */
int cache_lock_create(struct cache *c, const char *path, struct cnode *dir,
		      const char *name, mode_t mode, struct cnode **out);
/* c->lock held. mkdir of a missing directory under locks/. */
int cache_lock_mkdir(struct cache *c, const char *path, struct cnode *dir,
		     const char *name, mode_t mode);
/* c->lock NOT held. unlink/rmdir of a lock: every write this mount made
 * before is pushed to Drive first (cache_sync), then the lock is deleted
 * on Drive, synchronously. -ENOENT if it was already taken from us. */
int cache_lock_unlink(struct cache *c, const char *path, bool dir);

/* Locks held by this mount (for the status document): the count, and
 * the paths (malloc'd array of malloc'd strings, *paths NULL when none). */
int cache_locks_held(struct cache *c);
int cache_locks_list(struct cache *c, char ***paths);

#endif
