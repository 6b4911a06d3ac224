/* vfs.h — the state of one vectur mount, shared by the FUSE operations
 * (ops.c), the control files (ctl.c), the kernel-cache invalidation queue
 * (inval.c) and the program's lifecycle (main.c). Like libfuse's
 * passthrough `struct lo_data`, everything lives in one struct reached
 * from fuse_get_context()->private_data; nothing is global.
 *
 * Threads:
 *   - libfuse's worker threads run the operations (multi-threaded loop);
 *   - cache/'s workers call vfs_inval_cb() when Drive changed a path;
 *   - the invalidation thread (inval.c) turns that queue into
 *     fuse_invalidate_path() calls, outside of any FUSE operation;
 *   - one detached thread per open `.vectur/sync` runs cache_sync().
 *
 * Locks, in the order they may be taken:
 *   rename_lock   serialises renames that cross the local/persisted
 *                 boundary (import/export + unlink is not atomic by
 *                 itself); held across cache_* calls.
 *   shadow_lock   the list of shadowed local paths (leaf).
 *   inval_lock    the invalidation queue (leaf; never held while calling
 *                 into libfuse or cache/).
 *   sync_lock     the count of running sync threads (leaf).
 */
#ifndef VECTUR_FS_VFS_H
#define VECTUR_FS_VFS_H

#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <sys/types.h>

#include <fuse.h>

#include "cache.h"
#include "drive.h"
#include "opts.h"
#include "persist.h"

#ifndef VECTUR_VERSION
#define VECTUR_VERSION "0.1"
#endif

/* The virtual control directory at the mount root. */
#define VFS_CTL_DIR ".vectur"
/* Its inode number (use_ino): clear of local and cache numbers. A zero
 * d_ino would make readdir(3) skip the entry. */
#define VFS_CTL_INO (1ULL << 61)

struct inval_item;
struct fh;
struct opening;

struct vfs {
	/* ---- set before mounting, read-only afterwards ---- */
	struct mount_opts *o;
	char remote[128];	   /* rclone remote name */
	char rpath[1024];	   /* path inside the remote, "" = its root */
	char mountpoint[PATH_MAX]; /* absolute */
	char cache_dir[PATH_MAX];  /* absolute */
	int dirfd;		   /* the directory under the mount point */
	struct persist_set *ps;
	/* where the set came from: "default", "-o persist", vectur.persist */
	const char *persist_source;
	struct drive_client *dc;
	struct cache *cache;  /* NULL once closed */
	bool cache_abandoned; /* left open at exit: a sync still used it */
	struct fuse *fuse;
	char mount_id[17];
	uid_t uid;
	gid_t gid;
	time_t started;

	/* ---- cross-boundary renames ---- */
	pthread_mutex_t rename_lock;
	/* Open handles writing a local or persisted file (ops.c), so that a
	 * rename across the boundary can move them with the file. */
	pthread_mutex_t fh_lock;
	pthread_cond_t fh_cond;
	struct fh *writers;
	const char *moving;	 /* the source of a move under way */
	struct opening *opening; /* writable opens under way */

	/* ---- shadowed local paths, reported once each ---- */
	pthread_mutex_t shadow_lock;
	char **shadowed;
	int nshadowed;

	/* ---- kernel cache invalidation (inval.c) ---- */
	pthread_mutex_t inval_lock;
	pthread_cond_t inval_cond;
	struct inval_item *inval_head, *inval_tail;
	int inval_len;
	bool inval_stop;
	bool inval_running;
	useconds_t inval_delay_us; /* VECTUR_TEST_INVAL_DELAY_MS */
	pthread_t inval_thread;

	/* `.vectur/sync` threads still inside cache_sync(); destroy waits
	 * for them before cache_close() frees what they use. */
	pthread_mutex_t sync_lock;
	pthread_cond_t sync_cond;
	int syncs_active;

	/* FUSE RELEASE is asynchronous to close(2), FLUSH is not: a `--sync`
	 * started right after a close(2) may arrive before the RELEASE that
	 * closes the version. Writable persisted handles that were flushed
	 * (some close(2) happened) but not yet released are counted here, so
	 * sync can wait for those releases. */
	atomic_int closing;
};

/* main.c: logs to stderr (the log file in cache_dir once daemonized) and,
 * for warnings and worse, to syslog. */
void vfs_log(int prio, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* ops.c */
extern const struct fuse_operations vfs_ops;
/* Reports (once per path) a local path hidden by a persisted one. */
void vfs_report_shadow(struct vfs *v, const char *path, const char *why);
/* Walks the merged directories once at mount time to report shadowing. */
void vfs_scan_shadows(struct vfs *v);
/* At mount, before serving: finishes or undoes the rename across the
 * local/persisted boundary a crash cut short (cache_move_note). */
void vfs_finish_move(struct vfs *v);

/* inval.c */
void vfs_inval_cb(const char *path, void *ud); /* cache_opts.invalidate */
int vfs_inval_start(struct vfs *v);
void vfs_inval_stop(struct vfs *v);

/* ctl.c — the .vectur/ directory. Paths are relative to the root. */
bool ctl_is_ctl_path(const char *rel);
int ctl_getattr(struct vfs *v, const char *rel, struct stat *st);
int ctl_readdir(struct vfs *v, const char *rel, void *buf,
		fuse_fill_dir_t filler);
int ctl_open(struct vfs *v, const char *rel, struct fuse_file_info *fi,
	     void **handle);
int ctl_read(struct vfs *v, void *handle, char *buf, size_t size, off_t off);
void ctl_release(struct vfs *v, void *handle);
/* The client side of --sync: 0 when everything is on Drive. */
int ctl_sync_client(const char *mountpoint);
/* Waits up to timeout_s for running syncs; false if some still run. */
bool ctl_syncs_wait(struct vfs *v, int timeout_s);

#endif
