/* inval.c — turns cache/'s "this path changed on Drive" callbacks into
 * fuse_invalidate_path() calls. The callback comes from a cache/ thread
 * that may hold cache locks, and fuse_invalidate_path() may wait on the
 * kernel, which may wait on a FUSE request that needs those locks: so the
 * callback only queues the path, and a thread of our own makes the call
 * with no lock held. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

#include "vfs.h"

/* Bound on queued paths: past it, dropping is safe (entries expire after
 * entry_timeout anyway) and better than unbounded memory. */
#define INVAL_MAX_QUEUE 100000

struct inval_item {
	struct inval_item *next;
	char path[]; /* "/runs/a", as libfuse names it */
};

void vfs_inval_cb(const char *path, void *ud)
{
	struct vfs *v = ud;
	size_t n = strlen(path);
	struct inval_item *it;

	pthread_mutex_lock(&v->inval_lock);
	if (v->inval_stop || !v->inval_running ||
	    v->inval_len >= INVAL_MAX_QUEUE) {
		pthread_mutex_unlock(&v->inval_lock);
		return;
	}
	pthread_mutex_unlock(&v->inval_lock);

	it = malloc(sizeof(*it) + n + 2);
	if (!it)
		return;
	it->next = NULL;
	it->path[0] = '/';
	memcpy(it->path + 1, path[0] == '/' ? path + 1 : path,
	       path[0] == '/' ? n : n + 1);

	pthread_mutex_lock(&v->inval_lock);
	if (v->inval_tail)
		v->inval_tail->next = it;
	else
		v->inval_head = it;
	v->inval_tail = it;
	v->inval_len++;
	pthread_cond_signal(&v->inval_cond);
	pthread_mutex_unlock(&v->inval_lock);
}

static void *inval_thread(void *arg)
{
	struct vfs *v = arg;

	pthread_mutex_lock(&v->inval_lock);
	for (;;) {
		struct inval_item *it;
		int rc;

		while (!v->inval_head && !v->inval_stop)
			pthread_cond_wait(&v->inval_cond, &v->inval_lock);
		if (v->inval_stop)
			break;
		it = v->inval_head;
		v->inval_head = it->next;
		if (!v->inval_head)
			v->inval_tail = NULL;
		v->inval_len--;
		pthread_mutex_unlock(&v->inval_lock);

		/* Tests make this thread late on purpose (what a loaded machine
		 * does now and then): nothing may depend on it being quick. */
		if (v->inval_delay_us)
			usleep(v->inval_delay_us);
		/* -ENOENT: the kernel never looked it up; nothing cached. */
		rc = fuse_invalidate_path(v->fuse, it->path);
		if (rc < 0 && rc != -ENOENT && v->o->debug)
			vfs_log(LOG_DEBUG, "invalidate %s: %s", it->path,
				strerror(-rc));
		free(it);
		pthread_mutex_lock(&v->inval_lock);
	}
	pthread_mutex_unlock(&v->inval_lock);
	return NULL;
}

int vfs_inval_start(struct vfs *v)
{
	const char *delay = getenv("VECTUR_TEST_INVAL_DELAY_MS");
	int rc;

	if (delay)
		v->inval_delay_us = (useconds_t)(atof(delay) * 1000);
	pthread_mutex_lock(&v->inval_lock);
	v->inval_stop = false;
	v->inval_running = true;
	pthread_mutex_unlock(&v->inval_lock);
	rc = pthread_create(&v->inval_thread, NULL, inval_thread, v);
	if (rc) {
		pthread_mutex_lock(&v->inval_lock);
		v->inval_running = false;
		pthread_mutex_unlock(&v->inval_lock);
		return -rc;
	}
	return 0;
}

/* Stops the thread and drops what is queued: called before the struct
 * fuse goes away (later callbacks are ignored). */
void vfs_inval_stop(struct vfs *v)
{
	struct inval_item *it;
	bool running;

	pthread_mutex_lock(&v->inval_lock);
	running = v->inval_running;
	v->inval_stop = true;
	pthread_cond_signal(&v->inval_cond);
	pthread_mutex_unlock(&v->inval_lock);
	if (running)
		pthread_join(v->inval_thread, NULL);
	pthread_mutex_lock(&v->inval_lock);
	v->inval_running = false;
	while ((it = v->inval_head)) {
		v->inval_head = it->next;
		free(it);
	}
	v->inval_tail = NULL;
	v->inval_len = 0;
	pthread_mutex_unlock(&v->inval_lock);
}
