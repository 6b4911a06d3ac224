/* test_sched_lock.c — the scheduler's lock files on a plain directory:
 * exactly one O_EXCL winner, a dead holder's lock is broken (kill -9
 * included), a live or foreign holder's lock never is, and a release never
 * removes a lock that is no longer ours.
 *
 * The Makefile links unit tests with libvectur.a only, so the scheduler
 * sources under test are included here. */
#include "t.h"

#include <signal.h>
#include <sys/wait.h>
#include <utime.h>

#include "../../scheduler/graph.c"
#include "../../scheduler/validate.c"
#include "../../scheduler/lock.c"

static char dir[] = "/tmp/test_sched_lockXXXXXX";
static char path[256];
static struct sched_self me;

static void fresh(void)
{
	unlink(path);
}

static void test_second_create_gets_eexist(void)
{
	struct sched_lock a = SCHED_LOCK_INIT, b = SCHED_LOCK_INIT;

	fresh();
	CHECK_INT(lock_try(path, &me, NULL, &a), 0);
	CHECK_INT(lock_try(path, &me, NULL, &b), -EEXIST);
	CHECK_INT(lock_is_live(path, &me, 30, true), 1);
	CHECK_INT(lock_release(&a, &me), 0);
	CHECK(access(path, F_OK) != 0);
}

/* A child takes the lock and waits for `go`, then exits or is killed. */
static pid_t holder_child(int *go)
{
	int p[2];
	pid_t pid;

	if (pipe(p) < 0)
		return -1;
	pid = fork();
	if (pid == 0) {
		struct sched_self child;
		struct sched_lock l = SCHED_LOCK_INIT;
		char c;

		close(p[1]);
		self_init(&child);
		if (lock_try(path, &child, NULL, &l) != 0)
			_exit(1);
		if (read(p[0], &c, 1) < 0) {
		}
		_exit(0); /* dies holding it: never released */
	}
	close(p[0]);
	*go = p[1];
	return pid;
}

static void test_live_holder_is_not_stale(void)
{
	int go, st;
	pid_t pid;

	fresh();
	pid = holder_child(&go);
	while (access(path, F_OK) != 0)
		usleep(1000);
	usleep(20000);
	CHECK_INT(lock_break_if_stale(path, &me, 0), 0);
	CHECK(access(path, F_OK) == 0);
	close(go);
	waitpid(pid, &st, 0);
}

static void test_kill9_holder_is_stale(void)
{
	int go, st;
	pid_t pid;

	fresh();
	pid = holder_child(&go);
	while (access(path, F_OK) != 0)
		usleep(1000);
	usleep(20000);
	kill(pid, SIGKILL);
	waitpid(pid, &st, 0);
	CHECK_INT(lock_is_live(path, &me, 30, true), 0);
	CHECK(access(path, F_OK) != 0);
	close(go);
}

static void write_file(const char *text)
{
	FILE *f = fopen(path, "w");

	fputs(text, f);
	fclose(f);
}

static void test_other_host_is_never_stale_here(void)
{
	fresh();
	write_file("{\"host\": \"elsewhere\", \"pid\": 1, \"boot_id\": \"x\"}");
	CHECK_INT(lock_break_if_stale(path, &me, 0), 0);
	CHECK(access(path, F_OK) == 0);
}

static void test_same_host_other_boot_is_stale(void)
{
	char buf[512];

	fresh();
	snprintf(buf, sizeof(buf),
		 "{\"host\": \"%s\", \"pid\": 1, \"boot_id\": \"old-boot\"}",
		 me.host);
	write_file(buf);
	CHECK_INT(lock_break_if_stale(path, &me, 30), 1);
	CHECK(access(path, F_OK) != 0);
}

static void test_empty_lock_judged_only_after_ttl(void)
{
	struct utimbuf old = {.actime = time(NULL) - 100,
			      .modtime = time(NULL) - 100};

	fresh();
	write_file("");
	CHECK_INT(lock_break_if_stale(path, &me, 30), 0);
	utime(path, &old);
	CHECK_INT(lock_break_if_stale(path, &me, 30), 1);
	CHECK(access(path, F_OK) != 0);
}

/* A holder seen through another mount of this host (another st_dev): its
 * flock is invisible, so the pid, its start time and the stage's process
 * group decide. */
static void write_holder(pid_t pid, long long start, pid_t pgid)
{
	char buf[512];

	snprintf(buf, sizeof(buf),
		 "{\"host\": \"%s\", \"boot_id\": \"%s\", \"pid\": %d, "
		 "\"pid_start\": %lld, \"dev\": 1, \"pgid\": %d}",
		 me.host, me.boot_id, (int)pid, start, (int)pgid);
	write_file(buf);
}

static void test_other_mount_holder_judged_by_pid(void)
{
	pid_t pid;
	int st;

	/* Alive: us. */
	fresh();
	write_holder(getpid(), me.pid_start, 0);
	CHECK_INT(lock_break_if_stale(path, &me, 30), 0);
	/* Our pid but another start time: the pid was reused. */
	write_holder(getpid(), me.pid_start + 1, 0);
	CHECK_INT(lock_break_if_stale(path, &me, 30), 1);
	CHECK(access(path, F_OK) != 0);
	/* Dead pid, but its stage (process group) still runs. */
	pid = fork();
	if (pid == 0) {
		setpgid(0, 0);
		pause();
		_exit(0);
	}
	setpgid(pid, pid);
	write_holder(999999, 5, pid);
	CHECK_INT(lock_break_if_stale(path, &me, 30), 0);
	kill(pid, SIGKILL);
	waitpid(pid, &st, 0);
	CHECK_INT(lock_break_if_stale(path, &me, 30), 1);
	CHECK(access(path, F_OK) != 0);
}

/* On vectur-mount a lock holds the mount's own holder JSON until its
 * creator writes into it; a creator killed in between leaves it so. Its
 * pid is the mount's (alive): it must not pass for a live holder, only
 * for a lock without one, judged after the TTL by its flock. */
static void test_mount_holder_json_is_no_holder(void)
{
	struct utimbuf old = {.actime = time(NULL) - 100,
			      .modtime = time(NULL) - 100};
	char buf[512];

	fresh();
	snprintf(
		buf, sizeof(buf),
		"{\"host\":\"%s\",\"pid\":%d,\"mount_id\":\"6bdfba494f63d2da\","
		"\"path\":\"locks/work_graph.lock\",\"acquired_at\":"
		"\"2026-12-04T19:23:55.837Z\",\"ttl_s\":60}",
		me.host, (int)getpid());
	write_file(buf);
	CHECK_INT(lock_break_if_stale(path, &me, 30), 0);
	utime(path, &old);
	CHECK_INT(lock_break_if_stale(path, &me, 30), 1);
	CHECK(access(path, F_OK) != 0);
}

static void test_pid_start_is_read(void)
{
	CHECK(me.pid_start > 0);
	CHECK(self_pid_start(getpid()) == me.pid_start);
}

static void test_release_leaves_a_lock_taken_over(void)
{
	struct sched_lock a = SCHED_LOCK_INIT, b = SCHED_LOCK_INIT;
	struct sched_self other;

	self_init(&other);
	fresh();
	CHECK_INT(lock_try(path, &me, NULL, &a), 0);
	/* Someone judged it stale and took it: a's release must not remove
	 * the other owner's lock. */
	unlink(path);
	CHECK_INT(lock_try(path, &other, NULL, &b), 0);
	lock_release(&a, &me);
	CHECK(access(path, F_OK) == 0);
	lock_release(&b, &other);
	CHECK(access(path, F_OK) != 0);
}

static void test_holder_json_names_owner(void)
{
	struct sched_lock a = SCHED_LOCK_INIT;
	char buf[1024] = {0};
	FILE *f;

	fresh();
	CHECK_INT(lock_try(path, &me, "stage x", &a), 0);
	f = fopen(path, "r");
	CHECK(fread(buf, 1, sizeof(buf) - 1, f) > 0);
	fclose(f);
	CHECK(strstr(buf, me.owner) != NULL);
	CHECK(strstr(buf, "\"for\":\"stage x\"") != NULL);
	lock_release(&a, &me);
}

int main(void)
{
	if (!mkdtemp(dir))
		return 1;
	snprintf(path, sizeof(path), "%s/work_graph.lock", dir);
	self_init(&me);
	RUN(test_second_create_gets_eexist);
	RUN(test_live_holder_is_not_stale);
	RUN(test_kill9_holder_is_stale);
	RUN(test_other_host_is_never_stale_here);
	RUN(test_same_host_other_boot_is_stale);
	RUN(test_empty_lock_judged_only_after_ttl);
	RUN(test_other_mount_holder_judged_by_pid);
	RUN(test_mount_holder_json_is_no_holder);
	RUN(test_pid_start_is_read);
	RUN(test_release_leaves_a_lock_taken_over);
	RUN(test_holder_json_names_owner);
	unlink(path);
	rmdir(dir);
	return t_done();
}
