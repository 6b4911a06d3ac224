/* fuse_floor.c — the cost of FUSE itself, for bench/: a bare passthrough of
 * a local directory through libfuse's high-level API, set up the way
 * vectur-mount sets up the kernel (use_ino, 1 s entry and attribute
 * timeouts, no negative caching, no write-back cache, READDIRPLUS on every
 * call, reads spliced from the file). No cache, no SQLite, no Drive: what
 * a figure of vectur-mount costs beyond this one is vectur's own.
 *
 * usage: fuse_floor ROOT MOUNTPOINT [libfuse options, e.g. -f]
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fuse.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "kernel.h"

static char floor_root[PATH_MAX];

/* ROOT + path, or -ENAMETOOLONG. */
static int floor_path(char *out, const char *path)
{
	int n = snprintf(out, PATH_MAX, "%s%s", floor_root, path);

	return n < 0 || n >= PATH_MAX ? -ENAMETOOLONG : 0;
}

#define FLOOR_PATH(buf, path)                                                  \
	char buf[PATH_MAX];                                                    \
	if (floor_path(buf, path) < 0)                                         \
	return -ENAMETOOLONG

static int floor_rc(int r)
{
	return r < 0 ? -errno : r;
}

static int floor_getattr(const char *path, struct stat *st,
			 struct fuse_file_info *fi)
{
	if (fi)
		return floor_rc(fstat((int)fi->fh, st));
	FLOOR_PATH(p, path);
	return floor_rc(lstat(p, st));
}

/* With nullpath_ok (as vectur-mount) readdir may get no path: the
 * directory's own is kept in its handle. */
static int floor_opendir(const char *path, struct fuse_file_info *fi)
{
	char *dup;

	FLOOR_PATH(p, path);
	dup = strdup(p);
	if (!dup)
		return -ENOMEM;
	fi->fh = (uint64_t)(uintptr_t)dup;
	return 0;
}

static int floor_releasedir(const char *path, struct fuse_file_info *fi)
{
	free((char *)(uintptr_t)fi->fh);
	return 0;
}

/* Entries carry offsets (index + 1), as vectur-mount's do. */
static int floor_readdir(const char *path, void *buf, fuse_fill_dir_t fill,
			 off_t off, struct fuse_file_info *fi,
			 enum fuse_readdir_flags flags)
{
	struct dirent *e;
	struct stat st;
	off_t i = 0;
	DIR *d;

	d = opendir((const char *)(uintptr_t)fi->fh);
	if (!d)
		return -errno;
	while ((e = readdir(d))) {
		if (i++ < off)
			continue;
		if (fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
			memset(&st, 0, sizeof(st));
		if (fill(buf, e->d_name, &st, i, FUSE_FILL_DIR_PLUS))
			break;
	}
	closedir(d);
	return 0;
}

static int floor_mkdir(const char *path, mode_t mode)
{
	FLOOR_PATH(p, path);
	return floor_rc(mkdir(p, mode));
}

static int floor_unlink(const char *path)
{
	FLOOR_PATH(p, path);
	return floor_rc(unlink(p));
}

static int floor_rmdir(const char *path)
{
	FLOOR_PATH(p, path);
	return floor_rc(rmdir(p));
}

static int floor_rename(const char *from, const char *to, unsigned int flags)
{
	char q[PATH_MAX];

	if (flags)
		return -EINVAL;
	FLOOR_PATH(p, from);
	if (floor_path(q, to) < 0)
		return -ENAMETOOLONG;
	return floor_rc(rename(p, q));
}

static int floor_truncate(const char *path, off_t size,
			  struct fuse_file_info *fi)
{
	if (fi)
		return floor_rc(ftruncate((int)fi->fh, size));
	FLOOR_PATH(p, path);
	return floor_rc(truncate(p, size));
}

static int floor_utimens(const char *path, const struct timespec tv[2],
			 struct fuse_file_info *fi)
{
	if (fi)
		return floor_rc(futimens((int)fi->fh, tv));
	FLOOR_PATH(p, path);
	return floor_rc(utimensat(AT_FDCWD, p, tv, AT_SYMLINK_NOFOLLOW));
}

static int floor_create(const char *path, mode_t mode,
			struct fuse_file_info *fi)
{
	int fd;

	FLOOR_PATH(p, path);
	fd = open(p, fi->flags | O_CLOEXEC, mode);
	if (fd < 0)
		return -errno;
	fi->fh = (uint64_t)fd;
	return 0;
}

static int floor_open(const char *path, struct fuse_file_info *fi)
{
	return floor_create(path, 0, fi);
}

static int floor_read_buf(const char *path, struct fuse_bufvec **bufp,
			  size_t size, off_t off, struct fuse_file_info *fi)
{
	struct fuse_bufvec *bv = malloc(sizeof(*bv));

	if (!bv)
		return -ENOMEM;
	*bv = FUSE_BUFVEC_INIT(size);
	bv->buf[0].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK;
	bv->buf[0].fd = (int)fi->fh;
	bv->buf[0].pos = off;
	*bufp = bv;
	return 0;
}

static int floor_write(const char *path, const char *buf, size_t size,
		       off_t off, struct fuse_file_info *fi)
{
	return floor_rc((int)pwrite((int)fi->fh, buf, size, off));
}

static int floor_flush(const char *path, struct fuse_file_info *fi)
{
	return 0;
}

static int floor_release(const char *path, struct fuse_file_info *fi)
{
	close((int)fi->fh);
	return 0;
}

static int floor_fsync(const char *path, int datasync,
		       struct fuse_file_info *fi)
{
	return floor_rc(datasync ? fdatasync((int)fi->fh) : fsync((int)fi->fh));
}

static int floor_statfs(const char *path, struct statvfs *st)
{
	return floor_rc(statvfs(floor_root, st));
}

static void *floor_init(struct fuse_conn_info *conn, struct fuse_config *cfg)
{
	vfs_kernel_settings(conn, cfg);
	return NULL;
}

static const struct fuse_operations floor_ops = {
	.getattr = floor_getattr,
	.opendir = floor_opendir,
	.readdir = floor_readdir,
	.releasedir = floor_releasedir,
	.mkdir = floor_mkdir,
	.unlink = floor_unlink,
	.rmdir = floor_rmdir,
	.rename = floor_rename,
	.truncate = floor_truncate,
	.utimens = floor_utimens,
	.create = floor_create,
	.open = floor_open,
	.read_buf = floor_read_buf,
	.write = floor_write,
	.flush = floor_flush,
	.release = floor_release,
	.fsync = floor_fsync,
	.statfs = floor_statfs,
	.init = floor_init,
};

int main(int argc, char **argv)
{
	if (argc < 3 || argv[1][0] == '-') {
		fprintf(stderr,
			"usage: fuse_floor ROOT MOUNTPOINT [options]\n");
		return 2;
	}
	if (!realpath(argv[1], floor_root)) {
		fprintf(stderr, "fuse_floor: %s: %s\n", argv[1],
			strerror(errno));
		return 1;
	}
	/* libfuse parses the rest: drop ROOT. */
	argv[1] = argv[0];
	return fuse_main(argc - 1, argv + 1, &floor_ops, NULL);
}
