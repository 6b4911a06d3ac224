/* cache_int.h — what cache/'s files share with each other and with nobody
 * else: the in-memory node tree, the version structs, the queue, and the
 * one struct cache that holds them. Not included outside cache/ (tests
 * excepted).
 *
 * Locks, in the order they are taken (never the other way round):
 *
 *   c->poll_lock   one changes-feed poll at a time (feed.c)
 *   c->id_lock     one files.generateIds refill at a time (queue.c)
 *   v->rw          a version's content: writers hold it shared around
 *                  pwrite/ftruncate, a snapshot holds it exclusive while it
 *                  copies, so a snapshot is never torn by a concurrent write
 *   c->lock        everything else in memory and the SQLite connection
 *   v->fetch_wmu   a leaf, taken with no other lock: download workers hold
 *                  it around each pwrite into a version being fetched
 *
 * c->lock is never held across a Drive call, a wait for the network, or a
 * content read/write: only while looking at or changing the structs below
 * and their SQLite rows (a few microseconds). Data I/O uses the version's
 * fd, which stays valid while the caller holds a reference (v->refs).
 *
 * Conditions (all with c->lock): c->work wakes upload workers, c->fetch_cv
 * wakes download workers, c->changed wakes everyone waiting for a state
 * change (a version landed, a chunk arrived, a listing finished, a node is
 * no longer busy).
 */
#ifndef VECTUR_CACHE_INT_H
#define VECTUR_CACHE_INT_H

#include <pthread.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "cache.h"

/* Version states, as stored in versions.state. */
enum cv_state {
	CV_OPEN = 0,	  /* some fd writes it; never uploaded */
	CV_CLOSED = 1,	  /* complete at a close/fsync; queued */
	CV_UPLOADING = 2, /* being sent (session url/offset in the row) */
	CV_CLEAN = 3,	  /* identical to Drive: the read cache */
};

struct cfetch;
struct cmeta;

struct cver {
	int64_t vid;
	struct cnode *node;
	int state;
	int fd;	      /* -1 while nobody uses it */
	int64_t size; /* authoritative in memory; persisted at close */
	struct timespec mtime;
	int64_t close_seq; /* order of closes; 0 while OPEN */
	bool complete;	   /* every byte present (fetches fill it later) */
	bool was_clean;	   /* OPEN from a CLEAN one modified in place */
	/* CLOSED at a close() without fdatasync (close must stay at
	 * local-disk speed): the uploader syncs it first. Recovery in another
	 * boot (power loss) cannot trust its bytes and drops it. */
	bool unsynced;
	bool dropped; /* no longer part of its node; file unlinked */
	/* Recovery made it CLOSED but left its row UPLOADING until it is
	 * saved again (recover.c): a resync writes it so too. */
	bool row_uploading;
	bool preparing; /* being filled by a copy: wait */
	/* Its content file may have a second name, another version's: an
	 * fsync snapshot takes the bytes as a hard link instead of a copy
	 * (ver_snapshot). Before its bytes change, this version copies them
	 * into a file of its own (ver_lock_change). Set and cleared with rw
	 * held exclusive, read with rw held. */
	bool linked;
	/* Written through an O_APPEND handle: a log, every prefix of which
	 * is whole. Only such an OPEN version is snapshotted while it stays
	 * open (cache.c, long_open_upload_s): a checkpoint written for
	 * minutes must not reach Drive half-written. */
	bool appending;
	int refs;     /* handles, workers, fetches using the struct */
	int writers;  /* handles open for writing */
	int handles;  /* open handles reading or writing it */
	uint64_t gen; /* bumped by every write or truncate */
	/* Identity with another version, to avoid uploading the same bytes
	 * twice: this is a copy of copy_of untouched while gen == 0, or a
	 * snapshot of snap_of taken at its gen snap_gen. */
	int64_t copy_of;
	int64_t snap_of;
	uint64_t snap_gen;
	int64_t same_as;   /* CLOSED, identical to this UPLOADING vid */
	int64_t opened_ms; /* OPEN: when, or the last long-open snapshot */
	int64_t atime_ms;  /* LRU */
	char *session_url; /* resumable session, "" = none */
	int64_t session_off;
	struct cfetch *fetch; /* non-NULL while bytes are missing */
	pthread_rwlock_t rw;
	/* Fetchers write their ranges into fd in turn: concurrent pwrites to
	 * one file spin on its inode lock, burning the CPU a cold read needs.
	 */
	pthread_mutex_t fetch_wmu;
	struct cver *nnext;	    /* node's list */
	struct cver *gprev, *gnext; /* c->vers, every version */
};

struct cnode {
	uint64_t ino;
	struct cnode *parent;
	char *name;
	bool is_dir;
	mode_t mode; /* permission bits only */
	struct timespec mtime, ctime;
	/* Drive's side, as last known. */
	char drive_id[128]; /* "" until assigned (from the id pool) */
	bool remote_exists;
	char remote_parent[128];
	char *remote_name; /* local form of the Drive name */
	char md5[33];
	char rev[96]; /* headRevisionId of md5's content ("" = unknown) */
	int64_t rsize;
	int64_t rversion;
	int64_t created_ms; /* Drive's createdTime of drive_id; 0 = unknown */
	bool created_here;  /* drive_id was created by this cache's uploads */
	bool mtime_dirty;   /* push mtime with a metadata update */
	/* Bumped whenever the node moves onto another Drive file
	 * (node_retarget): a request that began before answers for the old
	 * one and is ignored. */
	uint64_t id_gen;
	/* A request of a node that drive_id was taken over from may still be
	 * in flight if the mount dies: recovery waits before sending ours. */
	bool settle;
	/* Recovery cleared settle but left it in the row until n is saved
	 * again (recover.c): a resync writes it so too. */
	bool row_settle;
	/* Another live file with this name in this folder, seen in the feed
	 * or a listing: the queue decides which one keeps the name. */
	char rival_id[128];
	int64_t rival_ms; /* its createdTime, if known */
	/* Directories: listed from Drive and authoritative until the changes
	 * feed says otherwise. */
	bool listed;
	bool listing;
	bool mark; /* scratch for merge_listing */
	/* The feed passed over a change of this file on Drive while it had
	 * local changes (or a reconcile ran): should it turn clean without
	 * sending content of ours, its folder is listed again to catch up. */
	bool remote_missed;
	bool refresh; /* queued to read its Drive state again (node_caught_up)
		       */
	/* A folder Drive removed, kept only for files a reconcile held then
	 * (node_forget): it goes with the last of them. */
	bool gone_pending;
	/* Life. */
	bool unlinked; /* detached from the tree */
	int refs;      /* handles and workers holding the struct */
	bool busy;     /* a reconcile runs for it */
	/* Its metadata update (a rename, a touch) is on its way: Drive may
	 * get a name changed back since (upload_synced). */
	bool sending_meta;
	uint64_t remote_seq; /* c->remote_seq when Drive state last set */
	/* Queue. */
	bool queued;
	int64_t due_ms;
	int attempts;
	bool failed;	    /* permanent error; retried at a new close */
	int64_t landed_seq; /* close_seq of the newest version on Drive */
	/* close_seq of the oldest close not yet on Drive (pending while >
	 * landed_seq). Outlives that version when a newer close supersedes
	 * it, so cache_sync keeps waiting for the newer one. */
	int64_t pend_seq;
	struct cver *vers; /* every version, any order */
	struct cver *cur;  /* the content readers and new opens see */
	/* What the kernel caches for this file (size, mtime, pages) comes
	 * from the version last opened: kv_vid. kv points to it while it
	 * has open handles (NULL after), see cache_open_file. */
	struct cver *kv;
	int64_t kv_vid;
	struct cache_handle *readers; /* its handles only reading */
	/* The size and mtime last given to the kernel for this file (getattr,
	 * readdir, open); told_moved: other values were given since the last
	 * open (replies may reach the kernel out of order). */
	bool told, told_moved;
	int64_t told_size;
	struct timespec told_mtime;
	/* Tree and hashes. */
	struct cnode *kids, *sib_next, *sib_prev;
	struct cnode *h_ino, *h_kid, *h_id;
	struct cnode *q_next, *q_prev;
};

struct ctomb {
	int64_t tid;
	char drive_id[128];
	bool hard; /* delete, not trash (under locks/, or use_trash off) */
	uint64_t ino;
	struct cnode *n; /* referenced: wait while it is busy */
	int64_t due_ms;
	int attempts;
	bool busy;
	bool failed; /* Drive refused it for good (403): retried rarely */
	/* Wait until n has this close_seq on Drive: the file goes only once
	 * n's content has landed in the Drive file n moved onto (0 = now). */
	int64_t after_seq;
	struct ctomb *next;
};

/* A small set of Drive ids (c->lock). */
struct cidset {
	char (*ids)[128];
	int n, cap;
};

/* The kernel's view of n is a version this mount's handles still read,
 * and not the one a new open would get (version.c). */
bool node_kv_busy(const struct cnode *n);

struct cache_handle {
	struct cache *c;
	struct cnode *n;
	struct cver *v;
	int flags;
	bool writer;
	bool closed;	/* its version was closed at flush(): writes reopen */
	bool reopening; /* one write reopens; the others wait (c->changed) */
	/* Handles only reading, on n->readers. A version written on this
	 * mount takes them over from the one they read (readers_follow).
	 * held[0] is the version read before the first move: a splice of it
	 * (cache_read_fd) may still be under way in libfuse, so it is kept
	 * until the release. Moved handles read through cache_read, counted
	 * in pins, and the versions they leave after it go once no read is
	 * under way. */
	struct cache_handle *rnext, *rprev;
	struct cver **held;
	int nheld;
	bool moved;
	int pins;
	bool kernel_stale; /* the kernel's cache holds another version */
};

#define CACHE_HASH	4096
#define CLOSE_SEQ_BATCH 4096 /* close_seq numbers reserved per meta write */

struct cache {
	struct cache_opts o;
	char *dir;
	char *root_id;
	struct drive_client *dc;
	int lock_fd;
	sqlite3 *db;
	sqlite3_stmt *stmts[16]; /* prepared once, see store.c */

	pthread_mutex_t lock;
	pthread_mutex_t poll_lock;
	pthread_mutex_t id_lock;
	pthread_cond_t work, changed, fetch_cv, hk_cv;

	/* Tree (c->lock). */
	struct cnode *root;
	struct cnode *by_ino[CACHE_HASH];
	struct cnode *by_kid[CACHE_HASH];
	struct cnode *by_id[CACHE_HASH];
	uint64_t next_ino;
	int64_t next_vid;
	int64_t close_seq;
	/* meta's "close_seq": no close_seq above it was given out. Saved
	 * CLOSE_SEQ_BATCH ahead, so most closes write no meta row. */
	int64_t close_seq_saved;
	uint64_t remote_seq;
	/* Crash-point tests (test_cache.c): the process _exits instead of
	 * running its row write number crash_at (counted in steps). */
	int64_t steps, crash_at;
	/* Inside store_begin..store_commit, or while meta.db is behind:
	 * content files of versions dropped meanwhile, deleted once a
	 * commit that forgets their rows is done (a kill before it rolls
	 * the rows back). */
	int tx_depth;
	bool tx_durable; /* store_begin_durably: FULL until the commit */
	int64_t *tx_gone;
	int ntx_gone, tx_gone_cap;
	/* meta.db is behind memory since a write failed: 0, or its -errno
	 * (-ENOSPC: the cache disk is full). Cleared by the resync that
	 * writes every row from memory again (store.c). */
	int store_err;
	bool resyncing;
	struct cmeta *meta; /* every meta key set, as last set */
	/* Tests (test_cache.c): commits number full_from to full_to,
	 * counted from cache_open (a row written alone is one), fail as
	 * on a full disk. 0: never. */
	int64_t commits, full_from, full_to;
	struct cver *vers;   /* every version */
	struct cnode *queue; /* dirty nodes */
	struct ctomb *tombs;
	struct cver **fetching; /* versions with bytes to fetch */
	int nfetching, fetching_cap;

	/* Drive ids with a request of ours in flight, and (until
	 * settle_until) ids a killed previous mount may still have had a
	 * request to in its socket (c->lock). */
	struct cidset inflight, settling;
	int64_t settle_until;

	/* Id pool (c->id_lock for refills, c->lock for the array). */
	char (*ids)[128];
	int nids;

	/* Threads. */
	pthread_t *workers, *fetchers, hk;
	int nworkers, nfetchers;
	/* Per upload worker (c->lock): when it wakes by itself, 0 while it
	 * works; upload_queue wakes them only for something due sooner. */
	int64_t *sleep_until;
	int worker_seq;
	bool hk_started;
	bool stopping;	    /* workers exit */
	bool abort_uploads; /* abort in-flight uploads between chunks */
	bool draining;	    /* ignore write_back delays */

	/* Freshness. */
	char token[256];
	int64_t last_poll_ms; /* wall clock of the last feed read */
	int64_t last_poll_mono;
	/* When the last completed poll began: an open waits for one that
	 * began after it (close-to-open). */
	int64_t poll_started_mono;
	bool poll_wanted; /* an open waits for a poll (hk_main runs it) */
	/* When hk_main last asked Drive whether its trouble is over. */
	int64_t probe_mono;

	/* Paths to pass to opts->invalidate once c->lock is dropped. */
	char **inval;
	int ninval, inval_cap;

	/* Status. */
	int uploading;
	uint64_t uploaded_files;
	int64_t up_bytes_window, up_window_start;
	double up_rate;
	char last_error[512];
};

/* ---- util (cache.c) ---------------------------------------------------- */
int64_t cache_now_ms(void); /* monotonic */
int64_t cache_wall_ms(void);
void cache_set_error(struct cache *c, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/* Waits on c->changed (c->lock held) for at most ms. */
void cache_wait(struct cache *c, int ms);
/* Notes n's path for the invalidate callback (c->lock held); the callback
 * runs from cache_run_inval() without c->lock, since fs/ may wait on the
 * kernel, which may wait on a FUSE request that needs c->lock. */
void cache_note_inval(struct cache *c, struct cnode *n);
void cache_run_inval(struct cache *c);

/* ---- store.c: SQLite and the lock file -------------------------------- */
int store_lock_dir(struct cache *c, char *errbuf, size_t errlen);
int store_open(struct cache *c, char *errbuf, size_t errlen);
void store_close(struct cache *c);
int store_get_meta(struct cache *c, const char *k, char *out, size_t len);
int store_set_meta(struct cache *c, const char *k, const char *v);
int store_save_node(struct cache *c, struct cnode *n);
int store_delete_node(struct cache *c, uint64_t ino);
int store_save_version(struct cache *c, struct cver *v);
int store_save_version_durably(struct cache *c, struct cver *v);
int store_delete_version(struct cache *c, int64_t vid);
int store_save_session(struct cache *c, int64_t vid, const char *url,
		       int64_t off);
int store_save_tomb(struct cache *c, struct ctomb *t);
int store_delete_tomb(struct cache *c, int64_t tid);
int store_begin(struct cache *c);
/* store_begin, with the transaction on disk once its store_commit
 * returns (synchronous=FULL syncs the WAL at that commit). SQLite cannot
 * change the safety level inside a transaction, so only an outermost one
 * is made durable: nested, the outer transaction decides. */
int store_begin_durably(struct cache *c);
/* 0 once the outermost transaction is on disk (with whatever the store
 * was behind on); else -ENOSPC or -EIO, and c->store_err says so. */
int store_commit(struct cache *c);
void store_drop_data(struct cache *c, int64_t vid);
/* While meta.db is behind (c->store_err), tries again to write every row
 * from memory. Returns c->store_err. */
int store_catch_up(struct cache *c);
/* Loads everything into memory (recover.c fixes it up afterwards). */
int store_load(struct cache *c);
void store_data_path(struct cache *c, int64_t vid, char *out, size_t len);

/* ---- node.c: the tree -------------------------------------------------- */
struct cnode *node_new(struct cache *c, struct cnode *parent, const char *name,
		       bool is_dir, mode_t mode);
void node_hash_add(struct cache *c, struct cnode *n);
void node_attach(struct cache *c, struct cnode *parent, struct cnode *n);
void node_detach(struct cache *c, struct cnode *n);
/* Takes n out of its parent only (to move it). */
void node_unparent(struct cache *c, struct cnode *n);
void node_set_drive_id(struct cache *c, struct cnode *n, const char *id);
struct cnode *node_by_ino(struct cache *c, uint64_t ino);
struct cnode *node_by_id(struct cache *c, const char *drive_id);
struct cnode *node_child(struct cache *c, struct cnode *dir, const char *name);
void node_put(struct cache *c, struct cnode *n);
/* Frees a node no table or tree holds (store_load's orphans). */
void node_free(struct cnode *n);
/* Resolves a path (c->lock held), listing directories from Drive on the
 * way when needed (drops and retakes the lock). */
int node_lookup(struct cache *c, const char *path, struct cnode **out);
/* Resolves the parent of path and returns the last component. */
int node_lookup_parent(struct cache *c, const char *path, struct cnode **dir,
		       const char **name);
int node_ensure_listed(struct cache *c, struct cnode *dir);
char *node_path(struct cnode *n);
/* Drive keeps times to the millisecond. */
static inline int64_t cache_ms_of(struct timespec t)
{
	return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

static inline struct timespec cache_ts_of_ms(int64_t ms)
{
	struct timespec t = {ms / 1000, (ms % 1000) * 1000000};

	return t;
}

bool node_dirty(struct cnode *n);
void node_left(struct cache *c, struct cnode *dir);
void lock_view_drop_node(struct cache *c, struct cnode *n);
bool node_under_locks(struct cnode *n);
void node_fill_attr(struct cnode *n, struct cache_attr *a);
/* node_fill_attr as the kernel must be told it (getattr, readdir): while
 * this mount's handles read a version other than the newest from Drive,
 * that version's size and mtime. */
void node_kernel_attr(struct cnode *n, struct cache_attr *a);
/* Notes that the kernel is given these attributes of n. */
void node_told(struct cnode *n, int64_t size, struct timespec mtime);
/* The kernel was told other attributes of n than these. */
bool node_told_other(const struct cnode *n, int64_t size,
		     struct timespec mtime);
/* Drops a node and its subtree from view after Drive removed it. */
void node_forget(struct cache *c, struct cnode *n);
/* n has no local changes left and none of its content was sent: if the
 * feed passed over a change of it meanwhile (remote_missed), the queue
 * reads its Drive state again and applies it as the feed would. */
void node_caught_up(struct cache *c, struct cnode *n);
/* Whether n's name and `local` are one name on Drive. Local names are
 * compared as the Drive names they become: "x<TAB>y" goes to Drive as it
 * is and comes back spelt "x␉y" (drive/names.c); both are n's name. */
bool node_named(const struct cnode *n, const char *local);
/* One change from the feed (or a re-read of one file) applied. */
void feed_apply(struct cache *c, const struct drive_change *ch);
void node_apply_remote(struct cache *c, struct cnode *n,
		       const struct drive_file *f);
/* Records a tombstone for n's Drive object (if any) before n goes. */
void node_tomb(struct cache *c, struct cnode *n);
/* n takes over Drive file f, which holds n's path on Drive already; n's
 * own Drive file (if any) is trashed once n's content has landed in f.
 * `exists`: f is on Drive (false: its create may still be under way). */
void node_retarget(struct cache *c, struct cnode *n, const struct drive_file *f,
		   bool exists);
/* f, a live file this mount does not know, has n's name in n's folder.
 * Returns true if the queue will settle which of the two keeps it. */
bool node_note_rival(struct cache *c, struct cnode *n,
		     const struct drive_file *f);

/* ---- version.c: content versions -------------------------------------- */
struct cver *ver_new(struct cache *c, struct cnode *n, int state);
int ver_fd(struct cache *c, struct cver *v);
void ver_get(struct cver *v);
void ver_put(struct cache *c, struct cver *v);
/* Removes v from its node and deletes its row and file (c->lock held). */
void ver_drop(struct cache *c, struct cver *v);
/* v became CLOSED: persist, supersede older closed ones, queue. */
void ver_drop_superseded(struct cache *c, struct cver *v);
void ver_mark_closed(struct cache *c, struct cver *v);
struct cver *ver_newest_closed(struct cnode *n);
int64_t ver_bytes(struct cache *c, bool clean_only);
/* The close_seq of n's newest complete content to send to Drive, making a
 * CLEAN one CLOSED again (node_retarget); c->close_seq + 1 (its next
 * close) while n is open for writing without one; 0 if none is here. */
int64_t ver_reclose(struct cache *c, struct cnode *n);
/* v's resumable session was for a Drive file its node has left. */
void ver_forget_session(struct cache *c, struct cver *v);
/* Makes n's content on Drive fully present here as a CLEAN version, as for
 * an open for writing (c->lock dropped while fetching). */
int ver_fetch_all(struct cache *c, struct cnode *n);
/* Copies v's bytes as they are now into a new CLOSED version (c->lock
 * held; dropped while copying). Returns its close_seq or -errno. */
int64_t ver_snapshot(struct cache *c, struct cver *v);
/* Copies len bytes (-1 = to EOF) of src into dst: reflink when the
 * filesystem can, else copy_file_range, else read/write. */
int ver_copy_fd(int src, int dst, int64_t len, int64_t *copied);

/* ---- queue.c: reconcile queue and workers ----------------------------- */
void upload_queue(struct cache *c, struct cnode *n, int64_t due_ms);
int upload_start(struct cache *c);
void upload_stop(struct cache *c);
/* Brings n in line with Drive now (the caller's thread). */
int upload_reconcile_now(struct cache *c, struct cnode *n);
void upload_add_tomb(struct cache *c, const char *drive_id, bool hard,
		     struct cnode *n, int64_t after_seq);
/* A tombstone waits for drive_id: listings and the feed ignore it. */
bool upload_tombed(struct cache *c, const char *drive_id);
/* A request of ours to drive_id is under way. */
bool upload_inflight(struct cache *c, const char *drive_id);
/* The previous mount, killed, may still have a request to drive_id on
 * its way (for ms after recovery, upload_settle): deletes of it, and a
 * node that took it over, wait. */
void upload_settle(struct cache *c, const char *drive_id, int64_t ms);
bool upload_settling(struct cache *c, const char *drive_id);
/* Whether a create's error says folder `parent` is gone from Drive. */
bool upload_parent_404(const struct drive_err *err, const char *parent);
bool upload_needs_work(struct cnode *n);
/* Drive has n's version close_seq `seq` (or newer) under its name. */
bool upload_synced(struct cnode *n, int64_t seq);
/* Deletes Drive refused for good (403), not counted by upload_pending. */
int tombs_failed(struct cache *c);
int64_t upload_pending(struct cache *c, int64_t upto_seq, int64_t *bytes,
		       bool *failed);

/* ---- fetch.c: downloads ---------------------------------------------- */
int fetch_start(struct cache *c);
void fetch_stop(struct cache *c);
/* Gives n a (possibly partial) CLEAN version fetched from Drive. */
int fetch_begin(struct cache *c, struct cnode *n, struct cver **out);
/* Waits (c->lock held) until [off, off+len) of v is present. */
int fetch_wait(struct cache *c, struct cver *v, int64_t off, int64_t len);
void fetch_free(struct cache *c, struct cver *v);

/* ---- feed.c: the feed --------------------------------------------- */
int feed_init(struct cache *c);
int feed_poll(struct cache *c);
int feed_revalidate(struct cache *c);

/* ---- evict.c --------------------------------------------------------- */
void evict_run(struct cache *c);

/* ---- recover.c ------------------------------------------------------- */
int recover_run(struct cache *c);

/* ---- housekeeping (cache.c) ------------------------------------------ */
int hk_start(struct cache *c);
void hk_stop(struct cache *c);

#endif
