/* cache.h — the contract between fs/ (FUSE, overlay, routing) and cache/
 * (the SQLite-backed write-back store of the persisted tree and its sync
 * with Drive).
 *
 * fs/ decides WHICH paths are persisted; cache/ owns everything about them:
 * the node tree, content versions, dirty state, the upload queue and its
 * workers, downloads, the changes feed, eviction and crash recovery.
 *
 * Paths given to cache/ are relative to the mount root, without leading or
 * trailing '/': "runs/a/ckpt.pt"; "" is the root. Every function returns 0
 * (or a count) on success and -errno on failure, like FUSE. All functions
 * are thread-safe: FUSE calls them from many threads at once.
 *
 * ---------------------------------------------------------------------
 * The model (read this before changing anything in cache/)
 *
 * Nodes. One row per persisted file or directory: ino, parent ino, local
 * name, mode, mtime, size, and the remote side as last known: drive_id,
 * remote parent id and name, whether it exists on Drive, md5, version.
 * Drive ids are generated ahead (files.generateIds) and given to a node
 * when it is created locally, so a create that is retried after a lost
 * response can never make a duplicate on Drive (409 fileIdInUse = it is
 * already there).
 *
 * Versions. Content lives in files cache_dir/data/<vid>, never in SQLite.
 * A version is OPEN while some fd writes it, CLOSED (complete, queued)
 * after the last writer's close or an fsync snapshot, UPLOADING, then
 * CLEAN (identical to Drive: it is the read cache) or dropped when a newer
 * version superseded it. Opening a file for writing writes a NEW version
 * (an empty one with O_TRUNC, else a copy — reflinked when the filesystem
 * can) unless the current version is OPEN (writers share it) or CLEAN
 * (modified in place: Drive still holds the clean content, so a crash
 * mid-write only costs a re-download). Hence Drive only ever receives a
 * version that was complete at a close() or fsync(), and a version that
 * is OPEN when the mount dies is never uploaded.
 *
 * Reconcile. A background queue brings Drive in line with each dirty node:
 * delete (tombstones), ensure the parent folder exists, create or
 * media-update the content of the newest CLOSED version, rename/move when
 * the local name or parent differ from the remote ones. `write_back` ms
 * after the last close; `transfers` workers; resumable session URLs and
 * offsets are stored in the version row so an upload resumes after a
 * restart. fsync() runs the reconcile of its node synchronously and returns
 * when Drive has that version with a matching md5.
 *
 * One Drive file per path. A rename over a file keeps the target's Drive
 * file: the source's content goes into it as a new revision, and the
 * source's own Drive file (if any) is trashed only after that landed, so
 * Drive never shows the path empty or doubled. A file name another
 * instance created too (both creates landed: Drive allows duplicates) is
 * settled in the queue: the older file keeps the name and the instance
 * that made the newer one moves its content into the older one.
 *
 * Recovery. At cache_open: OPEN versions are dropped (and a CLEAN version
 * modified in place is forgotten, to be fetched again); CLOSED and
 * UPLOADING versions are queued again (resuming their sessions).
 *
 * Freshness. The changes feed is polled every poll_interval; a change to a
 * node that is not dirty drops its cached metadata/content and calls the
 * invalidate callback with its path so fs/ can drop kernel caches. An open
 * for reading revalidates when the feed was last read > 1 s ago.
 * ---------------------------------------------------------------------
 */
#ifndef VECTUR_CACHE_H
#define VECTUR_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "drive.h"

struct cache;
struct cache_handle;

struct cache_opts {
	const char *dir;	/* cache_dir; created 0700 */
	int64_t max_size;	/* bytes of clean content kept; LRU beyond */
	int write_back_ms;	/* delay after last close before upload */
	int transfers;		/* parallel upload/download workers */
	size_t chunk_size;	/* resumable chunk size */
	int poll_interval_s;	/* changes feed period; 0 = never */
	int long_open_upload_s; /* snapshot files open for writing this long */
	int read_timeout_s;	/* an uncached read gives EIO after this */
	bool use_trash;		/* unlink trashes instead of deleting */
	/* After a crash, how long a file whose upload the dead mount had
	 * under way waits for that request (0: 10 s; tests shorten it). */
	int settle_ms;
	/* Tests only (test_cache.c; fs/main.c's VECTUR_TEST_CRASH_AT): the
	 * process _exit(99)s instead of running its row write number
	 * crash_at, counted from cache_open, recovery's included. 0: never
	 * (store.c). */
	int64_t crash_at;
	/* Called (from a cache thread) with the path of every node whose
	 * content or attributes changed on Drive, so fs/ can invalidate the
	 * kernel's caches. May be NULL. */
	void (*invalidate)(const char *path, void *ud);
	void *ud;
};

/* Opens or creates the store in opts->dir, refusing with -EBUSY (and a
 * message in errbuf naming the holder's pid) when another mount holds it,
 * runs crash recovery, and starts the workers. `root_id` is the Drive folder
 * that the mount root maps to. */
int cache_open(struct cache **out, const struct cache_opts *opts,
	       struct drive_client *dc, const char *root_id, char *errbuf,
	       size_t errlen);

/* Stops the workers after draining the queue for up to drain_timeout_s,
 * printing progress to stderr; says how many versions stay queued for the
 * next mount. Frees everything. */
void cache_close(struct cache *c, int drain_timeout_s);

/* ---- attributes and the tree ---------------------------------------- */

struct cache_attr {
	uint64_t ino;
	bool is_dir;
	mode_t mode; /* type bits + permissions */
	int64_t size;
	struct timespec mtime;
	struct timespec ctime;
	bool dirty; /* not yet on Drive as shown */
};

/* Looks a path up, listing its parent directory on Drive first if that
 * directory has not been listed yet (or its listing went stale). */
int cache_getattr(struct cache *c, const char *path, struct cache_attr *out);

typedef int (*cache_dir_cb)(const char *name, const struct cache_attr *a,
			    void *ud);
int cache_readdir(struct cache *c, const char *path, cache_dir_cb cb, void *ud);

/* mkdir -p semantics are NOT implied: the parent must exist (-ENOENT). The
 * root "" always exists. */
int cache_mkdir(struct cache *c, const char *path, mode_t mode);
int cache_rmdir(struct cache *c, const char *path); /* -ENOTEMPTY */
int cache_unlink(struct cache *c, const char *path);
/* POSIX rename within the persisted tree, replacing an existing file (or
 * empty directory). flags: RENAME_NOREPLACE / RENAME_EXCHANGE(-EINVAL). */
int cache_rename(struct cache *c, const char *from, const char *to,
		 unsigned int flags);
int cache_chmod(struct cache *c, const char *path, mode_t mode);
int cache_utimens(struct cache *c, const char *path,
		  const struct timespec tv[2]);
int cache_truncate(struct cache *c, const char *path, off_t size);

/* ---- open files ----------------------------------------------------- */

/* flags as open(2): O_CREAT, O_EXCL, O_TRUNC, O_APPEND, access mode.
 *
 * A handle reads one version, whole, from open to close: what another
 * instance writes meanwhile shows at the next open. The kernel caches one
 * size and one set of pages per file, so a read-only open that would see
 * a newer version from Drive while this mount still has the previous one
 * open waits (up to CACHE_KV_WAIT_MS) for those handles to close, and
 * cache_kernel_stale() then says the kernel's cache for the path must be
 * dropped before the open returns. */
int cache_open_file(struct cache *c, const char *path, int flags, mode_t mode,
		    struct cache_handle **out);
#define CACHE_KV_WAIT_MS 2000
bool cache_kernel_stale(const struct cache_handle *h);
/* The inode number (cache_attr.ino) of the file a handle has open. */
uint64_t cache_handle_ino(const struct cache_handle *h);
ssize_t cache_read(struct cache_handle *h, void *buf, size_t size, off_t off);
/* Waits, as cache_read does, until [off, off + size) of the handle's
 * version is in the cache, and gives the descriptor holding it, for a
 * read that moves the bytes without copying them here (splice). The
 * descriptor stays valid while the handle is open. Returns 1 (no
 * descriptor) for a handle a version written on this mount took over:
 * read it with cache_read, whose reads let the versions it left go. */
int cache_read_fd(struct cache_handle *h, size_t size, off_t off, int *fd);
ssize_t cache_write(struct cache_handle *h, const void *buf, size_t size,
		    off_t off);
int cache_fgetattr(struct cache_handle *h, struct cache_attr *out);
int cache_ftruncate(struct cache_handle *h, off_t size);
/* Returns when the content as of this call is on Drive, md5 checked. */
int cache_fsync(struct cache_handle *h);
/* flush(2) at close(): the last writer's version is CLOSED and committed.
 * Returns -ENOSPC (the cache disk full) or -EIO when that could not be
 * recorded: the version is kept and queued all the same, and recorded as
 * soon as the disk allows. cache_release likewise, when it closes. */
int cache_flush(struct cache_handle *h);
int cache_release(struct cache_handle *h);

/* ---- moving content across the overlay boundary ---------------------- */

/* fs/'s note for an import (see cache_move_note), made once the content is
 * copied: `seq` is the cache's close number at the import's commit, so
 * a close after it is the import's own version's (or a later one's), never
 * one another handle of the file made during the copy. Called with the
 * cache's lock held: it must not call into the cache. Returns text to free,
 * or NULL (out of memory: the import fails). */
typedef char *(*cache_note_fn)(int64_t seq, void *arg);

/* rename(local → persisted): the content of src_fd (read from offset 0 to
 * EOF) becomes a new CLOSED version of `path` (created if absent, replacing
 * a file there), with `st`'s mode and mtime, in one commit with the note
 * note_fn makes (if not NULL). The caller then unlinks the local file; the
 * result is atomic from the application's view because the caller holds
 * fs/'s rename lock.
 *
 * With nw > 0 the file is still open for writing there: the version stays
 * OPEN, with nw writers whose handles (opened with flags[i]: the access
 * mode, O_APPEND) are returned in out[]; it closes when they do, like any
 * file written here. */
int cache_import(struct cache *c, const char *path, int src_fd,
		 const struct stat *st, int nw, const int *flags,
		 struct cache_handle **out, cache_note_fn note_fn,
		 void *note_arg);
/* Whether h still writes the file at its path: not a version another
 * replaced or a file unlinked since. */
bool cache_handle_current(struct cache_handle *h);
/* rename(persisted → local): writes the current content of `path` into
 * dst_fd (fetching it if needed). The caller then calls cache_unlink. */
int cache_export(struct cache *c, const char *path, int dst_fd);
/* A rename across the boundary changes two stores, this cache and the
 * directory underneath, and a kill between the two halves left both names
 * (or a stray temp file). So fs/ keeps a note of the rename under way (one
 * at a time: its rename lock) in the cache's meta table, and the next
 * mount finishes or undoes it before serving. The note is fs/'s, opaque
 * here. cache_move_note sets it in a commit of its own ("" clears it);
 * cache_import commits its note together with the new version;
 * cache_move_pending reads it ("" if none). Setting a note, and an
 * import with one, are durable commits (synchronous=FULL): on disk when
 * they return, before fs/ changes the local side, also against a power
 * loss. */
int cache_move_note(struct cache *c, const char *note);
int cache_move_pending(struct cache *c, char *out, size_t len);
/* Whether `path` has content closed after close number `seq` (as given to
 * a cache_note_fn; kept here or already on Drive). */
bool cache_closed_since(struct cache *c, const char *path, int64_t seq);

/* ---- control ---------------------------------------------------------- */

/* The last error met (Drive's message, the path), "" if none. */
void cache_last_error(struct cache *c, char *out, size_t len);
/* Whether Drive requests are failing and retried right now (see
 * drive_trouble): the error and for how many ms. False offline. */
bool cache_drive_trouble(struct cache *c, char *out, size_t len,
			 int64_t *for_ms);

/* Blocks until every version CLOSED before the call is on Drive (or
 * failed permanently: -EIO; so does a delete Drive refuses for good, tried
 * once more first). progress (may be NULL) is called about twice a second
 * with what remains. */
int cache_sync(struct cache *c,
	       void (*progress)(int64_t files_left, int64_t bytes_left,
				void *ud),
	       void *ud);
/* cache_sync for what a lock release waits for: every write; a delete
 * Drive refused for good (someone else's file) is not a failure there. */
int cache_sync_writes(struct cache *c);

/* The status document of .vectur/status: queue length and bytes, upload
 * rate, last error, last poll, cache use, counts. malloc'd JSON text. */
char *cache_status_json(struct cache *c);

#endif
