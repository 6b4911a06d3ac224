/* lock.c — lock files: locks/work_graph.lock and locks/stages/<id>.lock.
 *
 * A lock is a file created with open(O_CREAT|O_EXCL). On vectur-mount that
 * create is decided on Drive and the file is a lease the mount refreshes
 * while it exists, so a dead machine's locks expire by themselves (DESIGN
 * §3). On a plain directory nothing expires, so a holder that died must be
 * recognised here, and only holders on this host are ever judged.
 *
 * The holder keeps its lock file open with flock(LOCK_EX): the kernel drops
 * that flock when the last process holding the file dies (kill -9
 * included), which answers "is the holder alive?" exactly. A flock is only
 * visible through the same device, so the holder writes its st_dev into
 * the lock; a checker on another device (another FUSE mount of the same
 * folder on this host) asks the holder's pid instead, with its start time
 * against pid reuse, and the stage's process group against orphans. Locks
 * whose holder never got to write its JSON are judged only after
 * --lock-ttl, and on a mount only when the mount we are on holds the
 * lease (it renews it for as long as it lives; any other mount's lease
 * expires by itself).
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <time.h>
#include <unistd.h>

#include "scheduler.h"

/* statfs f_type of a FUSE filesystem (vectur-mount). */
#define LOCK_FUSE_MAGIC 0x65735546

/* Start time of pid in clock ticks since boot (field 22 of
 * /proc/PID/stat), 0 if unknown. */
long long self_pid_start(pid_t pid)
{
	char path[64], buf[1024], *p;
	long long start = 0;
	ssize_t n;
	int fd, field;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return 0;
	buf[n] = 0;
	/* The command name (field 2) may hold spaces and parentheses:
	 * count fields from the last ')'. */
	p = strrchr(buf, ')');
	if (!p)
		return 0;
	for (field = 2; *p && field < 22; p++)
		if (*p == ' ')
			field++;
	if (field == 22)
		start = strtoll(p, NULL, 10);
	return start;
}

void self_init(struct sched_self *me)
{
	unsigned char rnd[8];
	int fd, i;
	ssize_t n = 0;

	memset(me, 0, sizeof(*me));
	if (gethostname(me->host, sizeof(me->host) - 1) < 0 || !me->host[0])
		strcpy(me->host, "localhost");
	/* ':' separates the fields of an owner string; '/' would make tmp
	 * file names into paths. */
	for (i = 0; me->host[i]; i++)
		if (me->host[i] == ':' || me->host[i] == '/')
			me->host[i] = '_';
	me->pid = getpid();
	fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
	if (fd >= 0) {
		n = read(fd, rnd, sizeof(rnd));
		close(fd);
	}
	if (n != (ssize_t)sizeof(rnd)) {
		unsigned long long x = (unsigned long long)time(NULL) ^
				       ((unsigned long long)me->pid << 32);

		memcpy(rnd, &x, sizeof(rnd));
	}
	for (i = 0; i < 8; i++)
		sprintf(me->instance + 2 * i, "%02x", rnd[i]);
	fd = open("/proc/sys/kernel/random/boot_id", O_RDONLY | O_CLOEXEC);
	if (fd >= 0) {
		n = read(fd, me->boot_id, sizeof(me->boot_id) - 1);
		close(fd);
		while (n > 0 && (me->boot_id[n - 1] == '\n'))
			me->boot_id[--n] = 0;
	}
	me->pid_start = self_pid_start(me->pid);
	snprintf(me->owner, sizeof(me->owner), "%s:%d:%s", me->host,
		 (int)me->pid, me->instance);
}

/* The holder JSON: who we are, and what a checker needs to judge us. dev
 * is the lock file's st_dev as we see it: a flock only means something to
 * a checker that sees the same device (the same local filesystem or the
 * same FUSE mount); pgid is the stage's process group once it runs. */
static char *lock_holder_json(const struct sched_self *me,
			      const struct sched_lock *l, pid_t pgid)
{
	struct json_object *o = json_object_new_object();
	char now[32];
	char *s;

	sched_rfc3339(now, sizeof(now));
	json_object_object_add(o, "host", json_object_new_string(me->host));
	json_object_object_add(o, "pid", json_object_new_int(me->pid));
	json_object_object_add(o, "pid_start",
			       json_object_new_int64(me->pid_start));
	json_object_object_add(o, "instance",
			       json_object_new_string(me->instance));
	json_object_object_add(o, "boot_id",
			       json_object_new_string(me->boot_id));
	json_object_object_add(o, "owner", json_object_new_string(me->owner));
	json_object_object_add(o, "dev",
			       json_object_new_int64((int64_t)l->dev));
	json_object_object_add(o, "time", json_object_new_string(now));
	if (l->what)
		json_object_object_add(o, "for",
				       json_object_new_string(l->what));
	if (pgid > 0)
		json_object_object_add(o, "pgid", json_object_new_int(pgid));
	s = strdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
	json_object_put(o);
	return s;
}

static int lock_write_holder(struct sched_lock *l, const struct sched_self *me,
			     pid_t pgid)
{
	char *holder = lock_holder_json(me, l, pgid);
	size_t n;
	int rc = 0;

	if (!holder)
		return -ENOMEM;
	n = strlen(holder);
	/* No fsync: on the mount that would wait for Drive, and the create
	 * itself is what decides; the content only says who holds it. */
	if (pwrite(l->fd, holder, n, 0) != (ssize_t)n)
		rc = errno ? -errno : -EIO;
	else if (ftruncate(l->fd, n) < 0)
		rc = -errno;
	free(holder);
	return rc;
}

int lock_try(const char *path, const struct sched_self *me, const char *what,
	     struct sched_lock *l)
{
	struct stat st;
	int fd, rc;

	fd = open(path, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0644);
	if (fd < 0)
		return -errno;
	/* Before the holder JSON is written: a reader that finds our JSON
	 * also finds our flock. Nobody else can have it yet (they only try
	 * on files with JSON, or older than the TTL). */
	if (flock(fd, LOCK_EX | LOCK_NB) < 0 && errno != EINVAL &&
	    errno != EOPNOTSUPP && errno != ENOLCK && errno != ENOSYS) {
		rc = -errno;
		goto fail;
	}
	if (fstat(fd, &st) < 0) {
		rc = -errno;
		goto fail;
	}
	l->fd = fd;
	l->dev = st.st_dev;
	l->ino = st.st_ino;
	l->path = strdup(path);
	l->what = what ? strdup(what) : NULL;
	rc = lock_write_holder(l, me, 0);
	if (rc < 0 || !l->path) {
		rc = rc < 0 ? rc : -ENOMEM;
		lock_forget(l);
		unlink(path);
		return rc;
	}
	return 0;
fail:
	unlink(path);
	close(fd);
	return rc;
}

int lock_note_pgid(struct sched_lock *l, const struct sched_self *me,
		   pid_t pgid)
{
	if (l->fd < 0)
		return 0;
	return lock_write_holder(l, me, pgid);
}

struct lock_holder {
	char host[256];
	char boot_id[40];
	char instance[17];
	long pid;
	long long pid_start; /* 0: unknown */
	long long dev;	     /* -1: unknown */
	long pgid;
	bool parsed; /* a scheduler's holder JSON */
	/* vectur-mount's own holder JSON ({"host","pid","mount_id","path",
	 * "acquired_at","ttl_s"}): what a lock on the mount holds until its
	 * creator writes into it. Its pid is the mount's, not a holder's. */
	bool mount_json;
	time_t acquired; /* its acquired_at, 0 if unknown */
};

/* "2026-12-04T16:02:34.123Z" -> seconds since the epoch, 0 if malformed. */
static time_t lock_parse_time(const char *s)
{
	struct tm tm;
	const char *end;

	memset(&tm, 0, sizeof(tm));
	end = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
	return end ? timegm(&tm) : 0;
}

static void lock_read_holder(int fd, struct lock_holder *h)
{
	char buf[4096];
	struct json_object *o, *v;
	ssize_t n;

	memset(h, 0, sizeof(*h));
	h->dev = -1;
	n = pread(fd, buf, sizeof(buf) - 1, 0);
	if (n <= 0)
		return;
	buf[n] = 0;
	o = json_tokener_parse(buf);
	if (!o || !json_object_is_type(o, json_type_object))
		goto out;
	if (!json_object_object_get_ex(o, "host", &v) ||
	    !json_object_is_type(v, json_type_string))
		goto out;
	if (json_object_object_get_ex(o, "mount_id", NULL) &&
	    !json_object_object_get_ex(o, "instance", NULL)) {
		h->mount_json = true;
		if (json_object_object_get_ex(o, "acquired_at", &v) &&
		    json_object_is_type(v, json_type_string))
			h->acquired =
				lock_parse_time(json_object_get_string(v));
		goto out;
	}
	snprintf(h->host, sizeof(h->host), "%s", json_object_get_string(v));
	if (json_object_object_get_ex(o, "boot_id", &v) &&
	    json_object_is_type(v, json_type_string))
		snprintf(h->boot_id, sizeof(h->boot_id), "%s",
			 json_object_get_string(v));
	if (json_object_object_get_ex(o, "instance", &v) &&
	    json_object_is_type(v, json_type_string))
		snprintf(h->instance, sizeof(h->instance), "%s",
			 json_object_get_string(v));
	if (json_object_object_get_ex(o, "pid", &v))
		h->pid = json_object_get_int64(v);
	if (json_object_object_get_ex(o, "pid_start", &v))
		h->pid_start = json_object_get_int64(v);
	if (json_object_object_get_ex(o, "dev", &v) &&
	    json_object_is_type(v, json_type_int))
		h->dev = json_object_get_int64(v);
	if (json_object_object_get_ex(o, "pgid", &v))
		h->pgid = json_object_get_int64(v);
	h->parsed = true;
out:
	if (o)
		json_object_put(o);
}

/* With fd open on the lock and known dead: unlink it, but only if path
 * still names that file (someone may have broken and re-taken it since we
 * opened it). Holding the flock makes the check-then-unlink safe: nobody
 * else can be judging the same file at the same time. !remove: only say
 * whether it would. */
static int lock_unlink_same(const char *path, int fd, bool remove)
{
	struct stat a, b;

	if (fstat(fd, &a) < 0)
		return -errno;
	if (stat(path, &b) < 0)
		return errno == ENOENT ? 1 : -errno;
	if (a.st_dev != b.st_dev || a.st_ino != b.st_ino || a.st_nlink == 0)
		return 0; /* replaced since we opened it: a new holder */
	if (remove && unlink(path) < 0 && errno != ENOENT)
		return -errno;
	return 1;
}

/* Whether the holder (or the stage it started) still has a live process
 * on this host. The start time tells a reused pid from the holder. */
static bool lock_holder_alive(const struct lock_holder *h)
{
	if (h->pgid > 0 && (kill(-h->pgid, 0) == 0 || errno == EPERM))
		return true;
	if (h->pid <= 0)
		return true; /* cannot tell */
	if (kill(h->pid, 0) < 0 && errno == ESRCH)
		return false;
	return !h->pid_start || self_pid_start(h->pid) == h->pid_start;
}

/* 1 if the lock at path is provably stale (or gone), 0 if live or cannot
 * tell, -errno. remove: unlink a stale one (lock_break_if_stale); without,
 * only look (--dry-run). */
static int lock_judge(const char *path, const struct sched_self *me, double ttl,
		      bool remove)
{
	struct lock_holder h;
	struct statfs sfs;
	struct stat st;
	bool fuse, same_dev;
	int fd, rc = 0;
	double age;

	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return errno == ENOENT ? 1 : -errno;
	if (fstat(fd, &st) < 0) {
		rc = -errno;
		goto out;
	}
	fuse = fstatfs(fd, &sfs) == 0 && sfs.f_type == LOCK_FUSE_MAGIC;
	age = difftime(time(NULL), st.st_mtime);
	lock_read_holder(fd, &h);
	if (!h.parsed) {
		/* Created but not yet written, or its holder died in between:
		 * only time tells these apart, and on a mount the lease. But a
		 * lease of the mount we are on is renewed for as long as that
		 * mount lives: one still showing the mount's own holder JSON
		 * long after it was taken is judged by its flock (taken right
		 * after the create) like a local one. Another mount's lease
		 * only its mount may release (unlink gives EPERM). */
		if (fuse && !h.mount_json)
			goto out;
		if (fuse)
			age = h.acquired ? difftime(time(NULL), h.acquired) : 0;
		if (age < ttl)
			goto out;
		same_dev = true;
	} else {
		/* Another machine's holder: its lease is the mount's job. */
		if (strcmp(h.host, me->host) != 0)
			goto out;
		/* Our host name with another boot. On a local disk: a
		 * previous life of this machine, dead. On a mount it may be
		 * another machine with our name: leave it to the lease. */
		if (h.boot_id[0] && me->boot_id[0] &&
		    strcmp(h.boot_id, me->boot_id) != 0) {
			if (!fuse)
				rc = lock_unlink_same(path, fd, remove);
			goto out;
		}
		same_dev = h.dev == (long long)st.st_dev;
	}
	/* A flock is only seen through the same device: two FUSE mounts of
	 * one Drive folder on this host do not see each other's. */
	if (same_dev) {
		if (flock(fd, LOCK_EX | LOCK_NB) == 0) {
			rc = lock_unlink_same(path, fd, remove);
			goto out;
		}
		if (errno == EWOULDBLOCK || errno == EINTR)
			goto out;
	}
	/* No flock to ask: the holder's pid (and its stage's process
	 * group) on this host; without a start time to rule out pid reuse,
	 * only once the lock is older than the TTL. */
	if (!h.parsed || lock_holder_alive(&h))
		goto out;
	if (!h.pid_start && age < ttl)
		goto out;
	/* Without a shared flock two breakers are not serialised; the
	 * same-file check narrows the race to a stat..unlink window in which
	 * the other breaker would have to remove and re-create the lock. */
	rc = lock_unlink_same(path, fd, remove);
out:
	close(fd);
	return rc;
}

int lock_break_if_stale(const char *path, const struct sched_self *me,
			double ttl)
{
	return lock_judge(path, me, ttl, true);
}

int lock_is_live(const char *path, const struct sched_self *me, double ttl,
		 bool may_break)
{
	struct stat st;

	if (stat(path, &st) < 0)
		return 0;
	return lock_judge(path, me, ttl, may_break) > 0 ? 0 : 1;
}

/* Whether path still names the lock l we created. The holder JSON decides
 * when it can be read (an inode number on a FUSE mount may change when the
 * mount refreshes its view); the inode when it cannot. */
bool lock_held(struct sched_lock *l, const struct sched_self *me)
{
	struct lock_holder h;
	struct stat st;
	int fd;

	fd = open(l->path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return false;
	lock_read_holder(fd, &h);
	if (h.parsed) {
		close(fd);
		return strcmp(h.instance, me->instance) == 0 &&
		       strcmp(h.host, me->host) == 0;
	}
	if (fstat(fd, &st) < 0) {
		close(fd);
		return false;
	}
	close(fd);
	return st.st_dev == l->dev && st.st_ino == l->ino;
}

int lock_release(struct sched_lock *l, const struct sched_self *me)
{
	int rc = 0;

	if (l->fd < 0)
		return 0;
	/* Unlink only our own file: if it was judged stale (we were paused
	 * past the lease) and re-taken, the path now belongs to someone
	 * else. */
	if (lock_held(l, me)) {
		if (unlink(l->path) < 0 && errno != ENOENT)
			rc = -errno;
	} else if (access(l->path, F_OK) == 0) {
		sched_log("lock %s is no longer ours; leaving it", l->path);
	}
	lock_forget(l);
	return rc;
}

void lock_forget(struct sched_lock *l)
{
	if (l->fd >= 0)
		close(l->fd);
	l->fd = -1;
	free(l->path);
	l->path = NULL;
	free(l->what);
	l->what = NULL;
}
