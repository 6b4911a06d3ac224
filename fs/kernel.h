/* kernel.h — how vectur-mount sets up the kernel's side of FUSE: caching,
 * timeouts, READDIRPLUS, splice. Shared with tests/tools/fuse_floor.c, the
 * bare passthrough the benchmarks measure FUSE itself with, so that the
 * floor is set up as the mount is by construction.
 */
#ifndef VECTUR_FS_KERNEL_H
#define VECTUR_FS_KERNEL_H

#include <fuse.h>

static inline void vfs_kernel_settings(struct fuse_conn_info *conn,
				       struct fuse_config *cfg)
{
	/* Persisted files can change on Drive: short kernel caches. Each
	 * open decides itself whether the kernel keeps the file's pages
	 * (open_common: the version it caches is the one opened). No
	 * negative caching: another instance may create a lock any moment. */
	cfg->use_ino = 1;
	cfg->entry_timeout = 1.0;
	cfg->attr_timeout = 1.0;
	cfg->negative_timeout = 0;
	cfg->kernel_cache = 0;
	cfg->auto_cache = 0;
	/* Unlinking an open file must not leave .fuse_hidden* files, which
	 * would be uploaded; our handles stay valid without a path. */
	cfg->hard_remove = 1;
	cfg->nullpath_ok = 1;
	/* Writes must reach us at write(2) time so close() sees the whole
	 * version: no kernel write-back cache. */
	conn->want &= ~FUSE_CAP_WRITEBACK_CACHE;
	/* READDIRPLUS on every call, not only the first of a listing:
	 * `ls -l` reads all names before it stats any. */
	conn->want &= ~FUSE_CAP_READDIRPLUS_AUTO;
	/* read_buf's descriptors go to the kernel by splice where it can. */
	if (conn->capable & FUSE_CAP_SPLICE_WRITE)
		conn->want |= FUSE_CAP_SPLICE_WRITE;
}

#endif
