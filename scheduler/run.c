/* run.c — running one stage attempt: fork/exec in its own process group,
 * its output tee'd to runs/<id>/attempt-<n>.log and to our stdout, the
 * timeout (SIGTERM, then SIGKILL after the grace period), and SIGTERM/SIGINT
 * to the scheduler forwarded to the stage. Decides nothing about the graph:
 * it fills the job's results and sched.c records them.
 *
 * Also owns the signal plumbing (a self-pipe), since the only place a
 * signal has to interrupt something long is here and in sleeps.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "scheduler.h"

extern char **environ;

/* ---- signals ------------------------------------------------------------ */

/* Process-wide by nature: the handler can reach nothing else. */
static int sig_pipe[2] = {-1, -1};
static volatile sig_atomic_t sig_pending;

static void sched_on_signal(int sig)
{
	int saved = errno;
	char c = (char)sig;

	if (sig == SIGTERM || sig == SIGINT)
		sig_pending = sig;
	if (write(sig_pipe[1], &c, 1) < 0) {
		/* pipe full: the loop wakes anyway */
	}
	errno = saved;
}

int sched_signals_install(void)
{
	struct sigaction sa;

	if (pipe2(sig_pipe, O_CLOEXEC | O_NONBLOCK) < 0)
		return -errno;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = sched_on_signal;
	sigemptyset(&sa.sa_mask);
	sa.sa_flags = SA_RESTART;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGCHLD, &sa, NULL);
	/* A closed stdout (the terminal went away) must not kill a stage's
	 * bookkeeping; writes just fail. */
	signal(SIGPIPE, SIG_IGN);
	return 0;
}

int sched_signal_fd(void)
{
	return sig_pipe[0];
}

static void sched_signal_drain(void)
{
	char buf[64];

	while (sig_pipe[0] >= 0 && read(sig_pipe[0], buf, sizeof(buf)) > 0)
		;
}

bool sched_signal_pending(void)
{
	return sig_pending != 0;
}

int sched_signal_take(void)
{
	int s = sig_pending;

	sig_pending = 0;
	return s;
}

int sched_sleep(double s)
{
	double end = sched_now() + s;
	struct pollfd pfd = {.fd = sig_pipe[0], .events = POLLIN};

	while (!sig_pending) {
		double left = end - sched_now();

		if (left <= 0)
			return 0;
		if (sig_pipe[0] < 0) {
			usleep(left * 1e6);
			return 0;
		}
		if (poll(&pfd, 1, (int)(left * 1000) + 1) > 0)
			sched_signal_drain();
	}
	return -EINTR;
}

/* ---- the child ---------------------------------------------------------- */

/* NAME=VALUE strings: our environment, minus what the stage overrides, plus
 * the stage's env and the VECTUR_* variables. Built before fork. */
static char **run_build_env(struct stage_job *job, const char *run_dir)
{
	struct json_object *extra = json_object_new_object();
	char attempt[16], **env;
	size_t n = 0, k = 0, i;

	snprintf(attempt, sizeof(attempt), "%d", job->attempt);
	if (job->env) {
		json_object_object_foreach(job->env, ek, ev)
		{
			json_object_object_add(
				extra, ek,
				json_object_new_string(
					json_object_get_string(ev)));
		}
	}
	json_object_object_add(extra, "VECTUR_STAGE",
			       json_object_new_string(job->id));
	json_object_object_add(extra, "VECTUR_ATTEMPT",
			       json_object_new_string(attempt));
	json_object_object_add(extra, "VECTUR_RUN_DIR",
			       json_object_new_string(run_dir));
	while (environ[n])
		n++;
	env = calloc(n + json_object_object_length(extra) + 1, sizeof(*env));
	if (!env)
		goto out;
	for (i = 0; i < n; i++) {
		const char *eq = strchr(environ[i], '=');
		char *name;
		bool overridden;

		if (!eq)
			continue;
		/* Names have no length limit: a long one is still passed. */
		name = strndup(environ[i], eq - environ[i]);
		if (!name)
			continue;
		overridden = json_object_object_get_ex(extra, name, NULL);
		free(name);
		if (!overridden)
			env[k++] = strdup(environ[i]);
	}
	json_object_object_foreach(extra, xk, xv)
	{
		if (asprintf(&env[k], "%s=%s", xk,
			     json_object_get_string(xv)) >= 0)
			k++;
	}
out:
	json_object_put(extra);
	return env;
}

static void run_free_strv(char **v)
{
	size_t i;

	for (i = 0; v && v[i]; i++)
		free(v[i]);
	free(v);
}

static char **run_build_argv(struct json_object *cmd)
{
	char **argv;
	size_t i, n;

	if (json_object_is_type(cmd, json_type_string)) {
		argv = calloc(4, sizeof(*argv));
		if (!argv)
			return NULL;
		argv[0] = strdup("sh");
		argv[1] = strdup("-c");
		argv[2] = strdup(json_object_get_string(cmd));
		return argv;
	}
	n = json_object_array_length(cmd);
	argv = calloc(n + 1, sizeof(*argv));
	for (i = 0; argv && i < n; i++)
		argv[i] = strdup(json_object_get_string(
			json_object_array_get_idx(cmd, i)));
	return argv;
}

static void run_child_fail(const char *what, const char *arg)
{
	char buf[512];
	int n = snprintf(buf, sizeof(buf), "vectur-sched: %s %s: %s\n", what,
			 arg, strerror(errno));

	if (write(STDERR_FILENO, buf, n) < 0) {
		/* the log is the only place it could go */
	}
}

/* In the child, after fork: become the leader of a new process group (so a
 * timeout or SIGTERM reaches every process of the stage), restore what the
 * scheduler changed, keep the stage lock open (see below), exec. */
static void run_child(struct stage_job *job, int out, char **argv, char **env)
{
	struct sigaction sa;
	sigset_t none;
	int devnull;

	setpgid(0, 0);
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = SIG_DFL;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGCHLD, &sa, NULL);
	sigaction(SIGPIPE, &sa, NULL);
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	devnull = open("/dev/null", O_RDONLY);
	if (devnull >= 0 && devnull != STDIN_FILENO) {
		dup2(devnull, STDIN_FILENO);
		close(devnull);
	}
	dup2(out, STDOUT_FILENO);
	dup2(out, STDERR_FILENO);
	if (out > STDERR_FILENO)
		close(out);
	/* The stage inherits its lock (and the lock's flock): if the
	 * scheduler is killed but the stage keeps running, the stage is
	 * still held, so nobody starts a second copy next to it. */
	if (job->stage_lock.fd >= 0)
		fcntl(job->stage_lock.fd, F_SETFD, 0);
	if (job->cwd && chdir(job->cwd) < 0) {
		run_child_fail("cannot chdir to", job->cwd);
		_exit(126);
	}
	environ = env;
	execvp(argv[0], argv);
	run_child_fail("cannot run", argv[0]);
	_exit(127);
}

/* ---- the parent: tee, timeout, signals ---------------------------------- */

struct run_state {
	struct stage_job *job;
	pid_t pid;
	int out;	 /* read end of the stage's stdout+stderr */
	int log;	 /* runs/<id>/attempt-<n>.log */
	double deadline; /* timeout, 0 = none */
	double kill_at;	 /* SIGKILL the group then, 0 = not yet */
	double grace;
	double lease_check; /* next look at our stage lock */
	double lease_every;
	int lease_misses;
	struct sched *s;
	bool exited;
	int status;
	/* Our stdout (see run_show): what it has not taken yet, since when
	 * it takes nothing, and what it missed while dropping. */
	char pend[65536];
	size_t pend_n;
	double stuck_since; /* 0 = taking data */
	bool dropping;
	bool gone;	/* closed, or its reader went away */
	bool mid_line;	/* the last byte dropped was not a newline */
	bool shown_nl;	/* the last byte shown was a newline */
	size_t unshown; /* bytes our stdout did not take */
};

/* A stdout that takes nothing this long (a paused pager, a stalled ssh)
 * stops holding the stage back: what it misses is dropped from then on. */
#define RUN_STDOUT_STALL 3.0

/* Writes it all (a log: a full disk must not stop the stage). Returns
 * false when fd fails. */
static bool run_write(int fd, const char *buf, size_t n)
{
	ssize_t w;

	while (fd >= 0 && n > 0) {
		w = write(fd, buf, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return false;
		buf += w;
		n -= w;
	}
	return fd >= 0;
}

/* Whether fd takes PIPE_BUF bytes now without blocking (a pipe: one free
 * page). O_NONBLOCK is not an option: the file description is shared with
 * our parent and whoever else writes to the same terminal or pipe. */
static bool run_writable(int fd)
{
	struct pollfd pfd = {.fd = fd, .events = POLLOUT};

	return poll(&pfd, 1, 0) == 1 && (pfd.revents & POLLOUT);
}

/* Whether our stdout is closed, or a pipe whose reader went away. */
static bool run_stdout_gone(void)
{
	struct pollfd pfd = {.fd = STDOUT_FILENO, .events = POLLOUT};

	return poll(&pfd, 1, 0) == 1 && (pfd.revents & (POLLNVAL | POLLERR));
}

static size_t run_unshown_note(struct run_state *r, char *buf, size_t n)
{
	int k = snprintf(buf, n,
			 "stage %s: %zu bytes of its output not shown (stdout "
			 "%s); all in %s",
			 r->job->id, r->unshown, r->gone ? "closed" : "blocked",
			 r->job->log);

	return k < 0 ? 0 : (size_t)k < n ? (size_t)k : n - 1;
}

/* Writes what stdout takes now without blocking; false if it failed. */
static bool run_flush_some(struct run_state *r)
{
	size_t k, done = 0;

	while (done < r->pend_n && run_writable(STDOUT_FILENO)) {
		k = r->pend_n - done < PIPE_BUF ? r->pend_n - done : PIPE_BUF;
		if (!run_write(STDOUT_FILENO, r->pend + done, k)) {
			r->gone = true;
			break;
		}
		r->shown_nl = r->pend[done + k - 1] == '\n';
		done += k;
	}
	memmove(r->pend, r->pend + done, r->pend_n - done);
	r->pend_n -= done;
	return !r->gone;
}

/* Bytes stdout will not get: counted, and the line they end. */
static void run_drop(struct run_state *r, const char *buf, size_t n)
{
	if (n == 0)
		return;
	r->unshown += n;
	r->mid_line = buf[n - 1] != '\n';
}

/* Our stdout is a courtesy, the log is the record. A slow reader slows
 * the stage as a pipe would (run_loop reads no more while stdout has not
 * taken what it has); one that takes nothing for RUN_STDOUT_STALL seconds
 * must not stop the stage, the timeout, the signals and the lease checks:
 * from then on what it misses is dropped and counted, and once it takes
 * data again a line says how many bytes, and showing resumes at the start
 * of a line of the stage's. buf = NULL: stdout had room (or the stall
 * time ran out) with nothing new. */
static void run_show(struct run_state *r, const char *buf, size_t n, double now)
{
	char note[512];
	const char *nl;
	size_t k;

	if (!r->gone && run_stdout_gone())
		r->gone = true;
	if (r->gone) {
		run_drop(r, r->pend, r->pend_n);
		r->pend_n = 0;
		run_drop(r, buf, n);
		return;
	}
	if (r->dropping && run_writable(STDOUT_FILENO)) {
		if (r->mid_line && buf) {
			nl = memchr(buf, '\n', n);
			k = nl ? (size_t)(nl - buf) + 1 : n;
			run_drop(r, buf, k);
			buf += k;
			n -= k;
		}
		if (!r->mid_line) {
			k = snprintf(note, sizeof(note), "%svectur-sched: ",
				     r->shown_nl ? "" : "\n");
			k += run_unshown_note(r, note + k,
					      sizeof(note) - k - 1);
			note[k++] = '\n';
			if (!run_write(STDOUT_FILENO, note, k))
				r->gone = true;
			r->shown_nl = true;
			r->unshown = 0;
			r->dropping = false;
			r->stuck_since = 0;
		}
	}
	if (r->dropping || r->gone) {
		run_drop(r, buf, n);
		return;
	}
	if (buf && n) { /* read only when pend is empty: it fits */
		memcpy(r->pend + r->pend_n, buf, n);
		r->pend_n += n;
	}
	if (!run_flush_some(r)) {
		run_drop(r, r->pend, r->pend_n);
		r->pend_n = 0;
		return;
	}
	if (r->pend_n == 0) {
		r->stuck_since = 0;
	} else if (!r->stuck_since) {
		r->stuck_since = now;
	} else if (now - r->stuck_since >= RUN_STDOUT_STALL) {
		run_drop(r, r->pend, r->pend_n);
		r->pend_n = 0;
		r->dropping = true;
	}
}

/* Copies what the stage wrote to the log and to our stdout, as far as
 * stdout keeps up (run_show). Returns 0 at EOF, 1 otherwise. */
static int run_tee(struct run_state *r)
{
	char buf[sizeof(r->pend)];
	ssize_t n;

	while (r->pend_n == 0) {
		n = read(r->out, buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return 1; /* EAGAIN */
		if (n == 0)
			return 0;
		run_write(r->log, buf, n);
		run_show(r, buf, n, sched_now());
	}
	return 1;
}

static void run_kill_group(struct run_state *r, int sig)
{
	if (kill(-r->pid, sig) < 0 && errno == ESRCH)
		kill(r->pid, sig);
}

/* Our SIGTERM/SIGINT: pass it on, give the stage the grace period, and a
 * second one means "now". */
static void run_forward_signal(struct run_state *r, int sig)
{
	if (!r->job->interrupted) {
		r->job->interrupted = true;
		r->job->sig = sig;
		sched_log("stage %s: got %s, forwarding it (SIGKILL in %gs)",
			  r->job->id, strsignal(sig), r->grace);
		run_kill_group(r, sig);
		if (!r->kill_at)
			r->kill_at = sched_now() + r->grace;
	} else {
		sched_log("stage %s: second signal, killing it", r->job->id);
		run_kill_group(r, SIGKILL);
	}
}

static void run_check_timeout(struct run_state *r, double now)
{
	if (r->deadline && now >= r->deadline && !r->job->timed_out &&
	    !r->job->interrupted) {
		r->job->timed_out = true;
		sched_log("stage %s: timeout after %gs, sending SIGTERM",
			  r->job->id, r->job->timeout);
		run_kill_group(r, SIGTERM);
		r->kill_at = now + r->grace;
	}
	if (r->kill_at && now >= r->kill_at) {
		run_kill_group(r, SIGKILL);
		r->kill_at = now + 3600; /* once is enough */
	}
}

/* Our stage lock is our lease. If it is gone or someone else's (we were
 * paused past the TTL and the stage was reclaimed), a second copy may be
 * starting elsewhere: stop ours rather than run two. Two misses in a row,
 * so that one odd look at a mount does not kill a healthy stage. */
static void run_check_lease(struct run_state *r, double now)
{
	struct stage_job *job = r->job;

	if (job->stage_lock.fd < 0 || now < r->lease_check || job->lease_lost ||
	    job->interrupted)
		return;
	r->lease_check = now + r->lease_every;
	if (lock_held(&job->stage_lock, &r->s->me)) {
		r->lease_misses = 0;
		return;
	}
	if (++r->lease_misses < 2)
		return;
	job->lease_lost = true;
	sched_log("stage %s: our stage lock %s is gone or taken over; "
		  "stopping the stage (SIGKILL in %gs)",
		  job->id, job->stage_lock.path, r->grace);
	run_kill_group(r, SIGTERM);
	if (!r->kill_at)
		r->kill_at = now + r->grace;
}

static int run_poll_timeout(struct run_state *r, double now)
{
	double t = 1.0;

	if (r->stuck_since && r->stuck_since + RUN_STDOUT_STALL - now < t)
		t = r->stuck_since + RUN_STDOUT_STALL - now;
	if (r->deadline && !r->job->timed_out && r->deadline - now < t)
		t = r->deadline - now;
	if (r->kill_at && r->kill_at - now < t)
		t = r->kill_at - now;
	if (r->lease_check - now < t)
		t = r->lease_check - now;
	return t < 0 ? 0 : (int)(t * 1000) + 1;
}

static void run_loop(struct run_state *r)
{
	bool out_open = true;
	pid_t w;

	for (;;) {
		/* While stdout has not taken what it has, the stage's pipe
		 * waits (and fills: the stage waits) and stdout is watched. */
		bool held = r->pend_n > 0;
		struct pollfd pfd[3] = {
			{.fd = sched_signal_fd(), .events = POLLIN},
			{.fd = out_open && !held ? r->out : -1,
			 .events = POLLIN},
			{.fd = held ? STDOUT_FILENO : -1, .events = POLLOUT},
		};
		double now = sched_now();
		int sig;

		poll(pfd, 3, run_poll_timeout(r, now));
		sched_signal_drain();
		if (held)
			run_show(r, NULL, 0, sched_now());
		if (out_open && r->pend_n == 0)
			out_open = run_tee(r);
		sig = sched_signal_take();
		if (sig)
			run_forward_signal(r, sig);
		w = waitpid(r->pid, &r->status, WNOHANG);
		if (w == r->pid) {
			r->exited = true;
			break;
		}
		run_check_timeout(r, sched_now());
		run_check_lease(r, sched_now());
	}
	/* What the stage wrote just before exiting; not what a background
	 * process it left behind keeps writing. */
	while (out_open && run_tee(r) && r->pend_n > 0) {
		/* stdout's turn, for at most the stall time */
		struct pollfd o = {.fd = STDOUT_FILENO, .events = POLLOUT};

		poll(&o, 1, 100);
		run_show(r, NULL, 0, sched_now());
	}
	if (r->job->timed_out || r->job->interrupted || r->job->lease_lost)
		kill(-r->pid, SIGKILL); /* stragglers of a killed stage */
	while (r->pend_n > 0) {
		struct pollfd o = {.fd = STDOUT_FILENO, .events = POLLOUT};

		poll(&o, 1, 100);
		run_show(r, NULL, 0, sched_now());
	}
	if (r->unshown) {
		char note[512];

		run_unshown_note(r, note, sizeof(note));
		sched_log("%s", note);
	}
}

static int run_open_log(struct stage_job *job, struct sched *s)
{
	char head[1024], now[32];
	int fd, n;

	if (sched_mkdirs(job->run_dir, 0755) < 0)
		return -1;
	fd = open(job->log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
	if (fd < 0)
		return -1;
	sched_rfc3339(now, sizeof(now));
	n = snprintf(head, sizeof(head),
		     "# vectur-sched: stage %s attempt %d by %s at %s: %s\n",
		     job->id, job->attempt, s->me.owner, now,
		     json_object_to_json_string_ext(job->cmd,
						    JSON_C_TO_STRING_PLAIN));
	run_write(fd, head, n < (int)sizeof(head) ? n : (int)sizeof(head) - 1);
	return fd;
}

static void run_close_log(struct run_state *r, double secs)
{
	char tail[256];
	int n;

	if (r->log < 0)
		return;
	n = snprintf(tail, sizeof(tail),
		     "# vectur-sched: exit code %d after %.1fs%s%s%s\n",
		     r->job->exit_code, secs,
		     r->job->timed_out ? " (timeout)" : "",
		     r->job->interrupted ? " (interrupted)" : "",
		     r->job->lease_lost ? " (lease lost)" : "");
	run_write(r->log, tail, n);
	close(r->log);
}

int run_stage(struct sched *s, struct stage_job *job)
{
	struct run_state r = {.job = job,
			      .out = -1,
			      .log = -1,
			      .grace = s->o.grace,
			      .s = s,
			      .shown_nl = true};
	char **argv = NULL, **env = NULL, *run_dir = NULL;
	int pfd[2] = {-1, -1}, rc = 0;
	double start = sched_now();
	sigset_t handled, old_mask;

	/* SIGTERM while we were claiming it: the stage goes straight back. */
	if (sched_signal_pending()) {
		job->interrupted = true;
		job->sig = sched_signal_take();
		sched_log("stage %s: got %s before it started; not starting it",
			  job->id, strsignal(job->sig));
		return 0;
	}
	sigemptyset(&handled);
	sigaddset(&handled, SIGTERM);
	sigaddset(&handled, SIGINT);
	sigaddset(&handled, SIGCHLD);

	/* A stage with its own cwd gets an absolute run dir: relative to
	 * where the scheduler runs, which is not where the stage runs. */
	if (job->cwd && job->run_dir[0] != '/') {
		char *here = getcwd(NULL, 0);

		if (asprintf(&run_dir, "%s/%s", here ? here : ".",
			     job->run_dir) < 0)
			run_dir = NULL;
		free(here);
	} else {
		run_dir = strdup(job->run_dir);
	}
	argv = run_build_argv(job->cmd);
	env = run_dir ? run_build_env(job, run_dir) : NULL;
	if (!argv || !env) {
		rc = -ENOMEM;
		goto out;
	}
	r.log = run_open_log(job, s);
	if (r.log < 0)
		sched_log("stage %s: cannot open log %s: %s (running anyway)",
			  job->id, job->log, strerror(errno));
	if (pipe2(pfd, O_CLOEXEC) < 0) {
		rc = -errno;
		goto out;
	}
	/* Until the child has put the default handlers back, a signal for
	 * the stage would run our handler in the child and be lost there:
	 * held back across the fork, it reaches the parent after it, which
	 * forwards it (below) to the stage's group. */
	sigprocmask(SIG_BLOCK, &handled, &old_mask);
	r.pid = fork();
	if (r.pid == 0)
		run_child(job, pfd[1], argv, env);
	if (r.pid < 0)
		rc = -errno;
	sigprocmask(SIG_SETMASK, &old_mask, NULL);
	if (rc < 0)
		goto out;
	/* Also here, so that a kill(-pid) right away cannot miss. */
	setpgid(r.pid, r.pid);
	lock_note_pgid(&job->stage_lock, &s->me, r.pid);
	close(pfd[1]);
	pfd[1] = -1;
	r.out = pfd[0];
	fcntl(r.out, F_SETFL, O_NONBLOCK);
	if (job->timeout > 0)
		r.deadline = start + job->timeout;
	/* As often as an idle --wait looks at the graph, within reason. */
	r.lease_every = s->o.poll < 0.5 ? 0.5 : s->o.poll > 10 ? 10 : s->o.poll;
	r.lease_check = start + r.lease_every;
	/* A signal that came while we were claiming the stage. */
	if (sched_signal_pending())
		run_forward_signal(&r, sched_signal_take());
	run_loop(&r);
	if (WIFEXITED(r.status))
		job->exit_code = WEXITSTATUS(r.status);
	else if (WIFSIGNALED(r.status))
		job->exit_code = 128 + WTERMSIG(r.status);
	if (job->timed_out)
		job->exit_code = SCHED_EXIT_TIMEOUT_CODE;
out:
	if (rc < 0) {
		job->spawn_failed = true;
		job->exit_code = 127;
	}
	run_close_log(&r, sched_now() - start);
	if (pfd[0] >= 0)
		close(pfd[0]);
	if (pfd[1] >= 0)
		close(pfd[1]);
	run_free_strv(argv);
	run_free_strv(env);
	free(run_dir);
	return rc;
}

void run_job_free(struct stage_job *job)
{
	free(job->id);
	free(job->cwd);
	free(job->log);
	free(job->run_dir);
	if (job->cmd)
		json_object_put(job->cmd);
	if (job->env)
		json_object_put(job->env);
	lock_forget(&job->stage_lock);
	memset(job, 0, sizeof(*job));
	job->stage_lock.fd = -1;
}
