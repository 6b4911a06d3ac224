/* recover.c — crash recovery at cache_open, after store_load: whatever
 * the previous mount was doing when it died (kill -9, preemption), bring
 * the store back to the model's invariants and queue everything closed.
 *
 *  - OPEN versions were never complete: dropped. A CLEAN one modified in
 *    place is forgotten too; Drive still has its bytes.
 *  - UPLOADING versions go back to CLOSED with their session URL, so the
 *    upload resumes where Drive says it stopped.
 *  - Of several closed versions of one file only the newest is kept (the
 *    older ones would only be superseded).
 *  - Partial downloads are dropped; content files no row knows are
 *    deleted.
 *  - A file that never had a complete version and is not on Drive goes.
 *  - A file that took over the Drive file of a file it replaced while an
 *    upload to it was under way waits like an interrupted upload; one that
 *    lost the content it was to send there keeps its old Drive file.
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cache_int.h"

/* A request the dead mount had fully written into its socket may still
 * be applied by Drive after we start (the kernel delivers it after a kill
 * -9; only a dead machine takes it along). If we uploaded the newer
 * version first, Drive would end with the older one. So a file whose
 * upload was in flight waits c->o.settle_ms (10 s) before its next upload
 * (fsync, sync and drain respect it like an error backoff). */

/* True when the previous mount ran in this same boot, so the page cache
 * it wrote into survived (kill -9, preemption of the process). Records
 * this boot for the next mount. */
static bool recover_same_boot(struct cache *c)
{
	char now[64] = "", was[64] = "";
	FILE *f = fopen("/proc/sys/kernel/random/boot_id", "r");
	bool same;

	if (f) {
		if (!fgets(now, sizeof(now), f))
			now[0] = '\0';
		fclose(f);
		now[strcspn(now, "\n")] = '\0';
	}
	same = store_get_meta(c, "boot_id", was, sizeof(was)) < 0 ||
	       strcmp(was, now) == 0;
	store_set_meta(c, "boot_id", now);
	return same;
}

static void fix_versions(struct cache *c)
{
	bool same_boot = recover_same_boot(c);
	struct cver *v, *next;
	int lost = 0;

	for (v = c->vers; v; v = next) {
		next = v->gnext;
		/* Closed without fdatasync and the machine went down since:
		 * its bytes may be torn. Drop it rather than upload it. */
		if (!same_boot && v->unsynced &&
		    (v->state == CV_CLOSED || v->state == CV_UPLOADING)) {
			ver_drop(c, v);
			lost++;
			continue;
		}
		if (v->state == CV_OPEN ||
		    (v->state == CV_CLEAN && !v->complete)) {
			ver_drop(c, v);
			continue;
		}
		/* A download (never fdatasynced) after a power loss: its bytes
		 * may be holes or torn, and a clean copy is trusted as Drive's.
		 * Drive has it: fetched again when next read. */
		if (!same_boot && v->unsynced && v->state == CV_CLEAN) {
			ver_drop(c, v);
			continue;
		}
		/* Not saved: the row stays UPLOADING until the version is
		 * saved again (its upload starts, it lands, a newer close
		 * drops it), so a mount killed before that waits again. */
		if (v->state == CV_UPLOADING) {
			v->state = CV_CLOSED;
			v->row_uploading = true;
			v->node->attempts = -1; /* marks: settle first */
		}
	}
	if (lost)
		fprintf(stderr,
			"vectur: %d version(s) closed just before the machine "
			"went down were never synced to disk and are dropped; "
			"the previous versions stay\n",
			lost);
}

/* Under locks/, what the last life wrote or renamed is not sent: its
 * locks died with it (a lock is a lease of a mount, not of a cache dir),
 * and the upload would put a file without a lease back at a lock's path
 * (its Drive file gone, the update becomes a create): a lock nobody could
 * take or remove. */
static void drop_lock_writes(struct cache *c, struct cnode *n)
{
	struct cver *v, *next;
	char *path;
	int dropped = 0;

	if (!node_under_locks(n))
		return;
	for (v = n->vers; v; v = next) {
		next = v->nnext;
		if (v->state != CV_CLEAN) {
			ver_drop(c, v);
			dropped++;
		}
	}
	if (n->mtime_dirty) {
		n->mtime_dirty = false;
		store_save_node(c, n);
	}
	if (!dropped)
		return;
	path = node_path(n);
	fprintf(stderr,
		"vectur: %s: not uploading what the last mount wrote into this "
		"lock (its lease ended with that mount)\n",
		path ? path : n->name);
	free(path);
}

/* Picks n->cur among what survived and drops what it supersedes. */
static void fix_node(struct cache *c, struct cnode *n)
{
	struct cver *v, *next, *best = NULL;

	for (v = n->vers; v; v = v->nnext) {
		if (!best)
			best = v;
		else if (v->state == CV_CLOSED && best->state != CV_CLOSED)
			best = v;
		else if (v->state == best->state &&
			 v->close_seq > best->close_seq)
			best = v;
	}
	for (v = n->vers; v; v = next) {
		next = v->nnext;
		if (v != best)
			ver_drop(c, v);
	}
	n->cur = best;
}

static void clean_data_dir(struct cache *c)
{
	char path[4096];
	struct cver *v;
	struct dirent *de;
	DIR *d;

	snprintf(path, sizeof(path), "%s/data", c->dir);
	d = opendir(path);
	if (!d)
		return;
	while ((de = readdir(d)) != NULL) {
		char *end;
		long long vid = strtoll(de->d_name, &end, 10);
		bool known = false;

		if (de->d_name[0] == '.' || end == de->d_name)
			continue;
		if (*end && strcmp(end, ".cow") != 0)
			continue;
		/* N.cow: a copy or link cut short (version.c) */
		for (v = c->vers; v && !known && !*end; v = v->gnext)
			known = v->vid == vid;
		if (!known) {
			snprintf(path, sizeof(path), "%s/data/%s", c->dir,
				 de->d_name);
			unlink(path);
		}
	}
	closedir(d);
}

/* A file that moved onto another's Drive file (a rename over it) and then
 * lost the content it was to send there — still open for writing when the
 * mount died, or dropped after a power loss: its own old Drive file still
 * holds the content it had, so that file stays (and shows again under its
 * name at the next listing) instead of waiting for good to be trashed. */
static void recover_untomb(struct cache *c)
{
	struct ctomb **pp = &c->tombs, *t;
	struct cnode *n;

	while ((t = *pp) != NULL) {
		n = t->n;
		if (!t->after_seq || !n || n->unlinked ||
		    n->landed_seq >= t->after_seq || ver_newest_closed(n)) {
			pp = &t->next;
			continue;
		}
		*pp = t->next;
		store_delete_tomb(c, t->tid);
		if (n->parent && n->parent->listed) {
			n->parent->listed = false;
			store_save_node(c, n->parent);
		}
		node_put(c, n);
		free(t);
	}
}

/* n's upload was under way when the mount died (n->attempts < 0): its
 * request may still reach Drive. Whatever goes to its Drive file next —
 * a node taking it over, a delete — waits as long as n's own next upload;
 * so do the deletes the dead mount left, one of which may be of the file
 * that request is creating. */
static void recover_settle(struct cache *c, struct cnode *n)
{
	struct ctomb *t;

	upload_settle(c, n->drive_id, c->o.settle_ms);
	for (t = c->tombs; t; t = t->next)
		upload_settle(c, t->drive_id, c->o.settle_ms);
}

int recover_run(struct cache *c)
{
	struct cnode *n, *next, *files = NULL;
	int64_t now = cache_now_ms();
	struct ctomb *t;
	int i, queued = 0;

	/* One transaction: recovery is not idempotent. A kill halfway
	 * (this mount dies too) must leave the store as the dead mount left
	 * it, not half recovered: the new boot id saved before the unsynced
	 * versions it condemns were dropped, an UPLOADING version saved
	 * CLOSED (nothing then says to wait for the dead mount's request),
	 * a tombstone lifted without its folder set to be listed again. */
	store_begin(c);
	fix_versions(c);
	for (i = 0; i < CACHE_HASH; i++)
		for (n = c->by_ino[i]; n; n = n->h_ino)
			if (!n->is_dir) {
				drop_lock_writes(c, n);
				fix_node(c, n);
			}
	/* Collect first: detaching while walking a hash chain is unsafe. */
	for (i = 0; i < CACHE_HASH; i++) {
		for (n = c->by_ino[i]; n; n = n->h_ino) {
			if (!n->is_dir && !n->vers && !n->remote_exists) {
				n->q_next = files;
				files = n;
			}
		}
	}
	for (n = files; n; n = next) {
		next = n->q_next;
		n->q_next = NULL;
		node_detach(c, n);
	}
	for (i = 0; i < CACHE_HASH; i++) {
		for (n = c->by_ino[i]; n; n = n->h_ino) {
			if (n->settle) {
				/* It took over a Drive file an upload of the
				 * dead mount was sending to. The row keeps
				 * settle until n is saved again (as its upload
				 * lands): killed before, the next mount waits
				 * too. */
				n->settle = false;
				n->row_settle = true;
				n->attempts = -1;
			}
			if (n->attempts < 0) {
				recover_settle(c, n);
				n->attempts = 1;
				upload_queue(c, n, now + c->o.settle_ms);
				queued++;
			} else if (upload_needs_work(n)) {
				upload_queue(c, n, now);
				queued++;
			}
		}
	}
	recover_untomb(c);
	/* Then the files no row knows: those of versions dropped above only
	 * once the rows are gone. Not committed (a full disk), the mount goes
	 * on from memory, as it did with each write on its own, and the next
	 * start recovers again. */
	if (store_commit(c) == 0)
		clean_data_dir(c);
	else
		fprintf(stderr, "vectur: recovery not saved: %s\n",
			c->last_error);
	for (t = c->tombs; t; t = t->next)
		t->due_ms = now;
	if (queued)
		fprintf(stderr,
			"vectur: %d file(s) from the last mount queued "
			"for upload\n",
			queued);
	return 0;
}
