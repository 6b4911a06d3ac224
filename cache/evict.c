/* evict.c — keeps clean content under cache_max_size by dropping the
 * least recently used CLEAN versions that nobody has open. Dirty data
 * (OPEN, CLOSED, UPLOADING) is never a candidate: it exists nowhere else.
 * A dropped clean file is fetched again from Drive when next opened.
 */
#include "cache_int.h"

/* A CLEAN fsync snapshot of a version still open for writing shares its
 * file (ver_link_into): dropping it frees nothing, and the close would
 * then send the same bytes to Drive again. */
static bool snapshot_of_open(const struct cver *v)
{
	const struct cver *o;

	for (o = v->node->vers; o && v->snap_of; o = o->nnext)
		if (o->state == CV_OPEN && o->vid == v->snap_of)
			return true;
	return false;
}

void evict_run(struct cache *c)
{
	struct cver *v, *lru;
	int64_t clean = 0;

	if (c->o.max_size <= 0)
		return;
	for (v = c->vers; v; v = v->gnext)
		if (v->state == CV_CLEAN)
			clean += v->size;
	while (clean > c->o.max_size) {
		lru = NULL;
		for (v = c->vers; v; v = v->gnext) {
			if (v->state != CV_CLEAN || v->refs > 0 || v->fetch ||
			    v->preparing || snapshot_of_open(v))
				continue;
			if (!lru || v->atime_ms < lru->atime_ms)
				lru = v;
		}
		if (!lru)
			break; /* everything left is in use */
		clean -= lru->size;
		ver_drop(c, lru);
	}
}
