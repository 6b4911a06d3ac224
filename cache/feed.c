/* feed.c — seeing other instances' writes: reads Drive's changes feed
 * (token persisted in meta.db, so no change is missed across restarts),
 * drops cached metadata and content of nodes that are not dirty, marks
 * directories for a new listing when something new appears in them, and
 * reports every affected path to fs/ through opts->invalidate.
 *
 * Our own uploads come back through the feed too; they carry a Drive
 * version we already recorded (rversion) and are ignored.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache_int.h"

struct chlist {
	struct drive_change *ch;
	int n, cap;
};

static int collect(const struct drive_change *ch, void *ud)
{
	struct chlist *l = ud;

	if (l->n == l->cap) {
		int cap = l->cap ? l->cap * 2 : 64;
		struct drive_change *nc = realloc(l->ch, cap * sizeof(*nc));

		if (!nc)
			return 1;
		l->ch = nc;
		l->cap = cap;
	}
	l->ch[l->n++] = *ch;
	return 0;
}

int feed_init(struct cache *c)
{
	struct drive_err err;
	char tok[256];

	if (!c->dc || c->token[0])
		return 0;
	drive_err_clear(&err);
	if (drive_changes_start(c->dc, tok, sizeof(tok), &err) < 0) {
		pthread_mutex_lock(&c->lock);
		cache_set_error(c, "changes.getStartPageToken: %s",
				err.message);
		pthread_mutex_unlock(&c->lock);
		return -drive_err_errno(&err);
	}
	pthread_mutex_lock(&c->lock);
	snprintf(c->token, sizeof(c->token), "%s", tok);
	store_set_meta(c, "changes_token", tok);
	c->last_poll_mono = cache_now_ms();
	c->last_poll_ms = cache_wall_ms();
	pthread_mutex_unlock(&c->lock);
	return 0;
}

/* Something we do not know appeared (or moved) into `parent`: list that
 * folder again the next time it is looked at. */
static void parent_stale(struct cache *c, const struct drive_file *f)
{
	struct cnode *p = node_by_id(c, f->parent);

	if (p && p->is_dir && p->listed && !p->listing) {
		p->listed = false;
		store_save_node(c, p);
		cache_note_inval(c, p);
	}
}

/* A live file we do not know: new in a folder we show, or a file of a
 * name we have there too (node_note_rival). Not one we are trashing. */
static void apply_unknown(struct cache *c, const struct drive_file *f)
{
	struct cnode *p = node_by_id(c, f->parent), *n = NULL;
	char local[1024];

	if (upload_tombed(c, f->id))
		return;
	if (p && p->is_dir &&
	    drive_name_to_local(f->name, local, sizeof(local)) == 0)
		n = node_child(c, p, local);
	if (!n || !node_note_rival(c, n, f))
		parent_stale(c, f);
}

void feed_apply(struct cache *c, const struct drive_change *ch)
{
	const struct drive_file *f = &ch->file;
	struct cnode *n = node_by_id(c, ch->file_id), *np;
	char local[1024];

	if (!n) {
		if (ch->has_file && !ch->removed && !f->trashed)
			apply_unknown(c, f);
		return;
	}
	if (!n->parent)
		return; /* the root itself */
	if (ch->removed || (ch->has_file && f->trashed)) {
		if (!n->busy)
			node_forget(c, n);
		else
			n->remote_missed = true;
		return;
	}
	if (!ch->has_file || f->version <= n->rversion)
		return;
	if (node_dirty(n) || n->busy) {
		/* Local changes win; they are on their way. If none turn out
		 * to be content (node_caught_up), this change is fetched. */
		n->remote_missed = true;
		return;
	}
	if (drive_name_to_local(f->name, local, sizeof(local)) < 0)
		return;
	np = node_by_id(c, f->parent);
	if (!np || !np->is_dir) {
		node_forget(c, n); /* moved out of our view */
		return;
	}
	if (np != n->parent || !node_named(n, local)) {
		struct cnode *clash = node_child(c, np, local),
			     *was = n->parent;
		char *nn;

		if (clash) {
			node_forget(c, n); /* a duplicate name: keep ours */
			parent_stale(c, f);
			return;
		}
		nn = strdup(local);
		if (!nn)
			return;
		cache_note_inval(c, n);
		node_unparent(c, n);
		free(n->name);
		n->name = nn;
		node_attach(c, np, n);
		if (was != np)
			node_left(c, was);
	}
	if (!n->is_dir && strcmp(f->md5, n->md5) != 0 && n->cur &&
	    n->cur->state == CV_CLEAN)
		ver_drop(c, n->cur);
	node_apply_remote(c, n, f);
	if (f->modified_ms > 0) {
		n->mtime = cache_ts_of_ms(f->modified_ms);
	}
	store_save_node(c, n);
	cache_note_inval(c, n);
}

int feed_poll(struct cache *c)
{
	struct chlist l = {0};
	struct drive_err err;
	char tok[256], next[256];
	int64_t started;
	int rc = 0, i;

	if (!c->dc)
		return 0;
	pthread_mutex_lock(&c->poll_lock);
	started = cache_now_ms();
	if (!c->token[0]) {
		rc = feed_init(c);
		goto out;
	}
	pthread_mutex_lock(&c->lock);
	snprintf(tok, sizeof(tok), "%s", c->token);
	pthread_mutex_unlock(&c->lock);
	drive_err_clear(&err);
	next[0] = 0;
	if (drive_changes_list(c->dc, tok, collect, &l, next, sizeof(next),
			       &err) < 0) {
		pthread_mutex_lock(&c->lock);
		cache_set_error(c, "changes.list: %s", err.message);
		pthread_mutex_unlock(&c->lock);
		rc = -drive_err_errno(&err);
		goto out;
	}
	pthread_mutex_lock(&c->lock);
	for (i = 0; i < l.n; i++)
		feed_apply(c, &l.ch[i]);
	if (next[0]) {
		snprintf(c->token, sizeof(c->token), "%s", next);
		store_set_meta(c, "changes_token", next);
	}
	c->last_poll_mono = cache_now_ms();
	c->poll_started_mono = started;
	c->last_poll_ms = cache_wall_ms();
	pthread_cond_broadcast(&c->changed);
	pthread_mutex_unlock(&c->lock);
	cache_run_inval(c);
out:
	pthread_mutex_unlock(&c->poll_lock);
	free(l.ch);
	return rc;
}

/* Close-to-open: what another instance had on Drive when this open began
 * must be seen, so the open needs a poll that BEGAN after it (a poll that
 * merely ended recently may have read the feed just before the other
 * instance's fsync returned). The housekeeping thread runs the poll, so
 * concurrent opens share one request; an open waits for it at most a few
 * seconds (Drive down or slow: it goes on with what the cache knows, and
 * an uncached read then fails after read_timeout). */
int feed_revalidate(struct cache *c)
{
	int64_t t0, bound;

	if (!c->dc)
		return 0;
	t0 = cache_now_ms();
	bound = c->o.read_timeout_s > 0 ? c->o.read_timeout_s * 500LL : 5000;
	if (bound > 5000)
		bound = 5000;
	if (bound < 1000)
		bound = 1000;
	pthread_mutex_lock(&c->lock);
	while (c->poll_started_mono < t0 && !c->stopping) {
		if (cache_now_ms() - t0 >= bound)
			break;
		c->poll_wanted = true;
		pthread_cond_broadcast(&c->hk_cv);
		cache_wait(c, 100);
	}
	pthread_mutex_unlock(&c->lock);
	return 0;
}
