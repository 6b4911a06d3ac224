/* store.c — the persistent side of the cache: the single-mount lock file,
 * the SQLite schema (meta.db) and the row-level save/delete/load calls the
 * other files use. Owns no policy: what a row means is decided elsewhere.
 *
 * Durability. meta.db runs in WAL mode with synchronous=NORMAL: a commit is
 * appended to the WAL with write(2) and only fsynced at checkpoints. After
 * kill -9 of the mount (the case we are built for: preemption) everything
 * committed is in the OS page cache and survives. On power loss the last
 * commits may roll back; since version.c fdatasync()s a content file
 * BEFORE committing its CLOSED state, a surviving CLOSED row always has its
 * bytes on disk, and a lost one falls back to the previous (OPEN → dropped)
 * state: the newest closes may be lost, a torn version is never uploaded.
 *
 * Falling behind. A write that fails (SQLITE_FULL on a full cache disk,
 * SQLITE_IOERR) is rolled back by SQLite, row or whole transaction, but
 * the caller has made its change in memory already: meta.db is now behind
 * (c->store_err). From then on no row is written alone, which could put
 * half of a change on disk (a version whose node row never went in, a
 * superseded version deleted while its successor's row is missing).
 * Instead the next row write, or the commit of the transaction under way,
 * or the housekeeping thread every second, rewrites every row from memory
 * in one transaction and deletes the rows memory no longer has
 * (store_resync): disk is then memory again, all at once. Until a resync
 * commits, content files of dropped versions are kept (their rows may
 * still be on disk) and the row writes return c->store_err.
 * All calls here are made with c->lock held.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cache_int.h"

enum {
	ST_SAVE_NODE,
	ST_DEL_NODE,
	ST_SAVE_VER,
	ST_DEL_VER,
	ST_SESSION,
	ST_SAVE_TOMB,
	ST_DEL_TOMB,
	ST_SET_META,
	ST_GET_META,
	ST_N
};

static const char *const stmt_sql[ST_N] = {
	[ST_SAVE_NODE] =
		"INSERT OR REPLACE INTO nodes(ino,parent,name,is_dir,mode,"
		"mtime_ns,ctime_ns,drive_id,remote_exists,remote_parent,"
		"remote_name,md5,rsize,rversion,listed,mtime_dirty,landed_seq,"
		"created_here,settle,rival_id,rev)"
		" VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
	[ST_DEL_NODE] = "DELETE FROM nodes WHERE ino=?",
	[ST_SAVE_VER] =
		"INSERT OR REPLACE INTO versions(vid,ino,state,size,mtime_ns,"
		"close_seq,complete,was_clean,session_url,session_off,atime_ms,"
		"unsynced) VALUES(?,?,?,?,?,?,?,?,?,?,?,?)",
	[ST_DEL_VER] = "DELETE FROM versions WHERE vid=?",
	[ST_SESSION] =
		"UPDATE versions SET session_url=?, session_off=? WHERE vid=?",
	[ST_SAVE_TOMB] = "INSERT OR REPLACE INTO tombs(tid,drive_id,hard,ino,"
			 "after_seq) VALUES(?,?,?,?,?)",
	[ST_DEL_TOMB] = "DELETE FROM tombs WHERE tid=?",
	[ST_SET_META] = "INSERT OR REPLACE INTO meta(k,v) VALUES(?,?)",
	[ST_GET_META] = "SELECT v FROM meta WHERE k=?",
};

static const char schema[] =
	"CREATE TABLE IF NOT EXISTS meta(k TEXT PRIMARY KEY, v TEXT);"
	"CREATE TABLE IF NOT EXISTS nodes(ino INTEGER PRIMARY KEY,"
	" parent INTEGER, name TEXT, is_dir INT, mode INT, mtime_ns INT,"
	" ctime_ns INT, drive_id TEXT, remote_exists INT, remote_parent TEXT,"
	" remote_name TEXT, md5 TEXT, rsize INT, rversion INT, listed INT,"
	" mtime_dirty INT, landed_seq INT, created_here INT DEFAULT 0,"
	" settle INT DEFAULT 0, rival_id TEXT DEFAULT '', rev TEXT DEFAULT '');"
	"CREATE TABLE IF NOT EXISTS versions(vid INTEGER PRIMARY KEY,"
	" ino INT, state INT, size INT, mtime_ns INT, close_seq INT,"
	" complete INT, was_clean INT, session_url TEXT, session_off INT,"
	" atime_ms INT, unsynced INT DEFAULT 0);"
	"CREATE TABLE IF NOT EXISTS tombs(tid INTEGER PRIMARY KEY,"
	" drive_id TEXT, hard INT, ino INT, after_seq INT DEFAULT 0);";

/* Columns added since the first schema: a cache dir made by an older
 * version gets them (with their defaults) when it is opened. */
static const char *const added_columns[][2] = {
	{"nodes", "created_here INT DEFAULT 0"},
	{"nodes", "settle INT DEFAULT 0"},
	{"nodes", "rival_id TEXT DEFAULT ''"},
	{"tombs", "after_seq INT DEFAULT 0"},
	{"nodes", "rev TEXT DEFAULT ''"},
};

/* A meta key as last set: what a resync writes (and a read sees). */
struct cmeta {
	char *k, *v;
	struct cmeta *next;
};

static int store_resync(struct cache *c);

static int64_t ts_ns(struct timespec t)
{
	return (int64_t)t.tv_sec * 1000000000LL + t.tv_nsec;
}

static struct timespec ns_ts(int64_t ns)
{
	struct timespec t = {ns / 1000000000LL, ns % 1000000000LL};
	return t;
}

void store_data_path(struct cache *c, int64_t vid, char *out, size_t len)
{
	snprintf(out, len, "%s/data/%" PRId64, c->dir, vid);
}

int store_lock_dir(struct cache *c, char *errbuf, size_t errlen)
{
	char path[4096], buf[32];
	int fd, rc = 0;
	ssize_t n;

	if (mkdir(c->dir, 0700) < 0 && errno != EEXIST) {
		rc = -errno;
		snprintf(errbuf, errlen, "cannot create cache dir %s: %s",
			 c->dir, strerror(errno));
		return rc;
	}
	/* Experiment data lives here: private, whoever created the dir. */
	if (chmod(c->dir, 0700) < 0 && errno != EPERM) {
		rc = -errno;
		snprintf(errbuf, errlen, "cannot chmod cache dir %s: %s",
			 c->dir, strerror(errno));
		return rc;
	}
	snprintf(path, sizeof(path), "%s/data", c->dir);
	if (mkdir(path, 0700) < 0 && errno != EEXIST) {
		rc = -errno;
		snprintf(errbuf, errlen, "cannot create %s: %s", path,
			 strerror(errno));
		return rc;
	}
	snprintf(path, sizeof(path), "%s/lock", c->dir);
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0) {
		rc = -errno;
		snprintf(errbuf, errlen, "cannot open %s: %s", path,
			 strerror(errno));
		return rc;
	}
	if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
		rc = errno == EWOULDBLOCK ? -EBUSY : -errno;
		n = pread(fd, buf, sizeof(buf) - 1, 0);
		buf[n > 0 ? n : 0] = 0;
		buf[strcspn(buf, "\n")] = 0;
		snprintf(errbuf, errlen,
			 "cache dir %s is in use by another vectur-mount "
			 "(pid %s)",
			 c->dir, buf[0] ? buf : "?");
		close(fd);
		return rc;
	}
	/* The pid is only for the message above; the flock is the lock. */
	if (ftruncate(fd, 0) == 0) {
		n = snprintf(buf, sizeof(buf), "%d\n", (int)getpid());
		if (pwrite(fd, buf, n, 0) != n)
			rc = 0; /* cosmetic */
	}
	c->lock_fd = fd;
	return 0;
}

static int sqlite_errno(int rc)
{
	return (rc & 0xff) == SQLITE_FULL ? -ENOSPC : -EIO;
}

static int exec(struct cache *c, const char *sql)
{
	char *msg = NULL;
	int rc = sqlite3_exec(c->db, sql, NULL, NULL, &msg);

	if (rc != SQLITE_OK) {
		/* The reason first: a statement may be longer than the
		 * error line ("database or disk is full" was cut off). */
		cache_set_error(c, "sqlite: %s (in: %.60s%s)", msg ? msg : "?",
				sql, strlen(sql) > 60 ? "..." : "");
		sqlite3_free(msg);
		return sqlite_errno(rc);
	}
	return 0;
}

static int add_columns(struct cache *c)
{
	char sql[256];
	sqlite3_stmt *st;
	size_t i;
	int rc;

	for (i = 0; i < sizeof(added_columns) / sizeof(added_columns[0]); i++) {
		/* "SELECT col" fails to prepare when the column is missing. */
		snprintf(sql, sizeof(sql), "SELECT %.*s FROM %s LIMIT 0",
			 (int)strcspn(added_columns[i][1], " "),
			 added_columns[i][1], added_columns[i][0]);
		rc = sqlite3_prepare_v2(c->db, sql, -1, &st, NULL);
		sqlite3_finalize(st);
		if (rc == SQLITE_OK)
			continue;
		snprintf(sql, sizeof(sql), "ALTER TABLE %s ADD COLUMN %s",
			 added_columns[i][0], added_columns[i][1]);
		if (exec(c, sql))
			return -EIO;
	}
	return 0;
}

int store_open(struct cache *c, char *errbuf, size_t errlen)
{
	char path[4096];
	int rc, i, fd;

	snprintf(path, sizeof(path), "%s/meta.db", c->dir);
	/* Create it 0600 ourselves: SQLite would use the umask. */
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd >= 0)
		close(fd);
	rc = sqlite3_open_v2(path, &c->db,
			     SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
				     SQLITE_OPEN_FULLMUTEX,
			     NULL);
	if (rc != SQLITE_OK) {
		snprintf(errbuf, errlen, "cannot open %s: %s", path,
			 c->db ? sqlite3_errmsg(c->db) : "out of memory");
		return -EIO;
	}
	sqlite3_busy_timeout(c->db, 5000);
	/* One connection in one process (the cache dir lock keeps other
	 * mounts out): exclusive locking keeps the WAL index in memory and
	 * skips the shared-memory file and its fcntl locks, ~27 system
	 * calls per created file. Must come before journal_mode=WAL.
	 * Checkpoints run in the committing call, under c->lock, with two
	 * fsyncs (~6 ms here): every 16384 WAL pages instead of SQLite's 1000
	 * (a close commits ~4), and each copies only the distinct pages. */
	if (exec(c, "PRAGMA locking_mode=EXCLUSIVE") ||
	    exec(c, "PRAGMA journal_mode=WAL") ||
	    exec(c, "PRAGMA synchronous=NORMAL") ||
	    exec(c, "PRAGMA wal_autocheckpoint=16384") || exec(c, schema) ||
	    add_columns(c)) {
		snprintf(errbuf, errlen, "cannot set up %s: %s", path,
			 c->last_error);
		return -EIO;
	}
	for (i = 0; i < ST_N; i++) {
		if (sqlite3_prepare_v2(c->db, stmt_sql[i], -1, &c->stmts[i],
				       NULL) != SQLITE_OK) {
			snprintf(errbuf, errlen, "sqlite prepare: %s",
				 sqlite3_errmsg(c->db));
			return -EIO;
		}
	}
	/* WAL and SHM files get the umask too: tighten them. */
	snprintf(path, sizeof(path), "%s/meta.db-wal", c->dir);
	chmod(path, 0600);
	snprintf(path, sizeof(path), "%s/meta.db-shm", c->dir);
	chmod(path, 0600);
	return 0;
}

void store_close(struct cache *c)
{
	int i;

	for (i = 0; i < ST_N; i++)
		sqlite3_finalize(c->stmts[i]);
	if (c->db)
		sqlite3_close(c->db);
	c->db = NULL;
	free(c->tx_gone);
	c->tx_gone = NULL;
	while (c->meta) {
		struct cmeta *m = c->meta;

		c->meta = m->next;
		free(m->k);
		free(m->v);
		free(m);
	}
	if (c->lock_fd >= 0)
		close(c->lock_fd);
	c->lock_fd = -1;
}

/* Tests: whether this commit fails as on a full disk (c->full_from). */
static bool commit_fails(struct cache *c)
{
	++c->commits;
	return c->full_from && c->commits >= c->full_from &&
	       c->commits <= c->full_to;
}

/* A write failed with rc (-ENOSPC, -EIO): meta.db is behind memory. */
static void fall_behind(struct cache *c, int rc)
{
	if (!c->store_err && !c->resyncing)
		fprintf(stderr,
			"vectur: cache metadata not saved (%s): kept in "
			"memory, saved again as soon as the disk allows\n",
			c->last_error);
	c->store_err = rc;
}

/* Runs a prepared statement to completion and resets it. Outside a
 * transaction that is a commit of its own. */
static int step(struct cache *c, sqlite3_stmt *st)
{
	bool fake = c->tx_depth == 0 && commit_fails(c);
	int rc;

	if (c->crash_at && ++c->steps == c->crash_at)
		_exit(99);
	/* A full disk fails the statement, and SQLite rolls it back. */
	rc = fake ? SQLITE_FULL : sqlite3_step(st);

	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	if (rc != SQLITE_DONE && rc != SQLITE_ROW) {
		cache_set_error(c, "sqlite: %s",
				fake ? sqlite3_errstr(rc)
				     : sqlite3_errmsg(c->db));
		fall_behind(c, sqlite_errno(rc));
		return c->store_err;
	}
	return 0;
}

/* Called by a row write before it binds its statement: true if the row
 * is not to be written alone (meta.db is behind), *rc then says how it
 * went. Inside a transaction its commit resyncs; outside one the resync,
 * which writes memory as it is now, the caller's change included, is the
 * write. */
static bool behind(struct cache *c, int *rc)
{
	if (!c->store_err)
		return false;
	*rc = c->tx_depth > 0 ? c->store_err : store_resync(c);
	return true;
}

/* Transactions nest: only the outermost pair talks to SQLite. Behind, no
 * BEGIN: the commit resyncs. */
int store_begin(struct cache *c)
{
	int rc;

	if (c->tx_depth++ > 0 || c->store_err)
		return c->store_err;
	rc = exec(c, "BEGIN");
	if (rc < 0)
		fall_behind(c, rc);
	return rc;
}

/* FULL until store_commit is done, also when the store is behind or the
 * BEGIN fails: then the resync at the commit is what puts the change on
 * disk, and it must be as durable as the commit it stands for. */
int store_begin_durably(struct cache *c)
{
	if (c->tx_depth == 0 && exec(c, "PRAGMA synchronous=FULL") == 0)
		c->tx_durable = true;
	return store_begin(c);
}

/* COMMITs the outermost transaction; if a write in it failed, or the
 * COMMIT does, ROLLs BACK what is left of it. SQLite may have rolled it
 * back already (a full disk, an I/O error; see "Response To Errors Within
 * A Transaction", lang_transaction.html): then ROLLBACK would fail, and
 * another statement would run on its own, outside any transaction. */
static int end_tx(struct cache *c)
{
	int rc = c->store_err;

	if (rc == 0 && commit_fails(c)) {
		/* As SQLite does when a COMMIT fails (vdbe's halt): the
		 * whole transaction is rolled back. */
		exec(c, "ROLLBACK");
		cache_set_error(c, "sqlite: %s", sqlite3_errstr(SQLITE_FULL));
		rc = -ENOSPC;
	} else if (rc == 0) {
		rc = exec(c, "COMMIT");
	}
	if (rc < 0) {
		fall_behind(c, rc);
		if (!sqlite3_get_autocommit(c->db))
			exec(c, "ROLLBACK");
	}
	return rc;
}

/* Deletes the content files of versions whose rows a commit on disk no
 * longer has. */
static void drop_gone(struct cache *c)
{
	char path[4096];
	int i;

	for (i = 0; i < c->ntx_gone; i++) {
		store_data_path(c, c->tx_gone[i], path, sizeof(path));
		unlink(path);
	}
	c->ntx_gone = 0;
}

int store_commit(struct cache *c)
{
	int rc;

	if (c->tx_depth == 0)
		return -EIO; /* unbalanced */
	if (--c->tx_depth > 0)
		return c->store_err; /* the outermost one decides */
	rc = end_tx(c);
	/* Rolled back (or begun behind): memory has the whole change, and
	 * a resync writes it with everything else, or nothing (durably if
	 * the transaction was to be: synchronous is still FULL). Not
	 * committed, the rows may still name the files, which stay. */
	if (rc < 0)
		rc = store_resync(c);
	else
		drop_gone(c);
	if (c->tx_durable) {
		exec(c, "PRAGMA synchronous=NORMAL");
		c->tx_durable = false;
	}
	return rc;
}

/* Deletes the content file of a version whose row is gone, or, inside a
 * transaction or while meta.db is behind, once that is committed. */
void store_drop_data(struct cache *c, int64_t vid)
{
	char path[4096];
	int64_t *grown;
	int cap;

	if (c->tx_depth > 0 || c->store_err) {
		if (c->ntx_gone == c->tx_gone_cap) {
			cap = c->tx_gone_cap ? 2 * c->tx_gone_cap : 8;
			grown = realloc(c->tx_gone, cap * sizeof(*grown));
			if (!grown)
				return; /* left for the next recovery */
			c->tx_gone = grown;
			c->tx_gone_cap = cap;
		}
		c->tx_gone[c->ntx_gone++] = vid;
		return;
	}
	store_data_path(c, vid, path, sizeof(path));
	unlink(path);
}

static struct cmeta *meta_find(struct cache *c, const char *k)
{
	struct cmeta *m;

	for (m = c->meta; m; m = m->next)
		if (strcmp(m->k, k) == 0)
			return m;
	return NULL;
}

int store_get_meta(struct cache *c, const char *k, char *out, size_t len)
{
	sqlite3_stmt *st = c->stmts[ST_GET_META];
	struct cmeta *m = meta_find(c, k);
	int rc = -ENOENT;

	if (m) { /* set here: the row may be behind */
		snprintf(out, len, "%s", m->v);
		return 0;
	}
	sqlite3_bind_text(st, 1, k, -1, SQLITE_STATIC);
	if (sqlite3_step(st) == SQLITE_ROW) {
		const unsigned char *v = sqlite3_column_text(st, 0);

		snprintf(out, len, "%s", v ? (const char *)v : "");
		rc = 0;
	}
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	return rc;
}

/* Remembers k = v for a resync. */
static int meta_keep(struct cache *c, const char *k, const char *v)
{
	struct cmeta *m = meta_find(c, k);
	char *dup = strdup(v);

	if (!dup)
		return -ENOMEM;
	if (!m) {
		m = calloc(1, sizeof(*m));
		if (!m || !(m->k = strdup(k))) {
			free(m);
			free(dup);
			return -ENOMEM;
		}
		m->next = c->meta;
		c->meta = m;
	}
	free(m->v);
	m->v = dup;
	return 0;
}

static int meta_row(struct cache *c, const struct cmeta *m)
{
	sqlite3_stmt *st = c->stmts[ST_SET_META];

	sqlite3_bind_text(st, 1, m->k, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, m->v, -1, SQLITE_STATIC);
	return step(c, st);
}

int store_set_meta(struct cache *c, const char *k, const char *v)
{
	int rc = meta_keep(c, k, v);

	if (rc < 0 || behind(c, &rc))
		return rc;
	return meta_row(c, meta_find(c, k));
}

static int node_row(struct cache *c, const struct cnode *n, bool settle)
{
	sqlite3_stmt *st = c->stmts[ST_SAVE_NODE];

	sqlite3_bind_int64(st, 1, (int64_t)n->ino);
	sqlite3_bind_int64(st, 2, n->parent ? (int64_t)n->parent->ino : 0);
	sqlite3_bind_text(st, 3, n->name, -1, SQLITE_STATIC);
	sqlite3_bind_int(st, 4, n->is_dir);
	sqlite3_bind_int(st, 5, n->mode);
	sqlite3_bind_int64(st, 6, ts_ns(n->mtime));
	sqlite3_bind_int64(st, 7, ts_ns(n->ctime));
	sqlite3_bind_text(st, 8, n->drive_id, -1, SQLITE_STATIC);
	sqlite3_bind_int(st, 9, n->remote_exists);
	sqlite3_bind_text(st, 10, n->remote_parent, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 11, n->remote_name ? n->remote_name : "", -1,
			  SQLITE_STATIC);
	sqlite3_bind_text(st, 12, n->md5, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 13, n->rsize);
	sqlite3_bind_int64(st, 14, n->rversion);
	sqlite3_bind_int(st, 15, n->listed);
	sqlite3_bind_int(st, 16, n->mtime_dirty);
	sqlite3_bind_int64(st, 17, n->landed_seq);
	sqlite3_bind_int(st, 18, n->created_here);
	sqlite3_bind_int(st, 19, settle);
	sqlite3_bind_text(st, 20, n->rival_id, -1, SQLITE_STATIC);
	/* The revision the cached size and md5 are of: a download after a
	 * restart asks for it even before the feed has caught up. */
	sqlite3_bind_text(st, 21, n->rev, -1, SQLITE_STATIC);
	return step(c, st);
}

int store_save_node(struct cache *c, struct cnode *n)
{
	int rc = 0;

	n->row_settle = false; /* the row is memory's from now on */
	if (n->unlinked || behind(c, &rc))
		return rc;
	return node_row(c, n, n->settle);
}

int store_delete_node(struct cache *c, uint64_t ino)
{
	sqlite3_stmt *st = c->stmts[ST_DEL_NODE];
	int rc;

	if (behind(c, &rc))
		return rc;
	sqlite3_bind_int64(st, 1, (int64_t)ino);
	return step(c, st);
}

static int version_row(struct cache *c, const struct cver *v, int state)
{
	sqlite3_stmt *st = c->stmts[ST_SAVE_VER];

	sqlite3_bind_int64(st, 1, v->vid);
	sqlite3_bind_int64(st, 2, (int64_t)v->node->ino);
	sqlite3_bind_int(st, 3, state);
	sqlite3_bind_int64(st, 4, v->size);
	sqlite3_bind_int64(st, 5, ts_ns(v->mtime));
	sqlite3_bind_int64(st, 6, v->close_seq);
	sqlite3_bind_int(st, 7, v->complete);
	sqlite3_bind_int(st, 8, v->was_clean);
	sqlite3_bind_text(st, 9, v->session_url ? v->session_url : "", -1,
			  SQLITE_STATIC);
	sqlite3_bind_int64(st, 10, v->session_off);
	sqlite3_bind_int64(st, 11, v->atime_ms);
	sqlite3_bind_int(st, 12, v->unsynced);
	return step(c, st);
}

int store_save_version(struct cache *c, struct cver *v)
{
	int rc = 0;

	v->row_uploading = false; /* the row is memory's from now on */
	if (v->dropped || behind(c, &rc))
		return rc;
	return version_row(c, v, v->state);
}

/* store_save_version, and every commit before it, on disk when it
 * returns (synchronous=FULL syncs the WAL at this commit). */
int store_save_version_durably(struct cache *c, struct cver *v)
{
	int rc;

	exec(c, "PRAGMA synchronous=FULL");
	rc = store_save_version(c, v);
	exec(c, "PRAGMA synchronous=NORMAL");
	return rc;
}

int store_delete_version(struct cache *c, int64_t vid)
{
	sqlite3_stmt *st = c->stmts[ST_DEL_VER];
	int rc;

	if (behind(c, &rc))
		return rc;
	sqlite3_bind_int64(st, 1, vid);
	return step(c, st);
}

int store_save_session(struct cache *c, int64_t vid, const char *url,
		       int64_t off)
{
	sqlite3_stmt *st = c->stmts[ST_SESSION];
	int rc;

	if (behind(c, &rc))
		return rc;
	sqlite3_bind_text(st, 1, url, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, off);
	sqlite3_bind_int64(st, 3, vid);
	return step(c, st);
}

/* A tomb without a tid gets one (the row's). */
static int tomb_row(struct cache *c, struct ctomb *t)
{
	sqlite3_stmt *st = c->stmts[ST_SAVE_TOMB];
	int rc;

	if (t->tid)
		sqlite3_bind_int64(st, 1, t->tid);
	else
		sqlite3_bind_null(st, 1);
	sqlite3_bind_text(st, 2, t->drive_id, -1, SQLITE_STATIC);
	sqlite3_bind_int(st, 3, t->hard);
	sqlite3_bind_int64(st, 4, (int64_t)t->ino);
	sqlite3_bind_int64(st, 5, t->after_seq);
	rc = step(c, st);
	if (rc == 0 && !t->tid)
		t->tid = sqlite3_last_insert_rowid(c->db);
	return rc;
}

/* t must be on c->tombs already: a resync instead writes those. */
int store_save_tomb(struct cache *c, struct ctomb *t)
{
	int rc;

	if (behind(c, &rc))
		return rc;
	return tomb_row(c, t);
}

int store_delete_tomb(struct cache *c, int64_t tid)
{
	sqlite3_stmt *st = c->stmts[ST_DEL_TOMB];
	int rc;

	if (behind(c, &rc))
		return rc;
	sqlite3_bind_int64(st, 1, tid);
	return step(c, st);
}

/* Writes every row from memory in one transaction, after deleting them
 * all: what memory no longer has goes (a row of a rolled-back change
 * memory undid, a version dropped while behind). Tombs that have a tid
 * first, so that one getting a new tid does not take an old one's. */
static int store_resync(struct cache *c)
{
	struct cnode *n;
	struct cver *v;
	struct ctomb *t;
	struct cmeta *m;
	int i, pass, rc;

	c->store_err = 0;
	c->resyncing = true;
	c->tx_depth = 1; /* its rows are one commit, end_tx's */
	rc = exec(c, "BEGIN");
	if (rc == 0)
		rc = exec(c, "DELETE FROM nodes; DELETE FROM versions;"
			     " DELETE FROM tombs");
	if (rc < 0)
		fall_behind(c, rc);
	for (i = 0; i < CACHE_HASH && !c->store_err; i++)
		for (n = c->by_ino[i]; n && !c->store_err; n = n->h_ino)
			if (!n->unlinked)
				node_row(c, n, n->settle || n->row_settle);
	for (v = c->vers; v && !c->store_err; v = v->gnext)
		if (!v->dropped && !v->node->unlinked)
			version_row(c, v,
				    v->row_uploading ? CV_UPLOADING : v->state);
	for (pass = 0; pass < 2; pass++)
		for (t = c->tombs; t && !c->store_err; t = t->next)
			if ((t->tid != 0) == (pass == 0))
				tomb_row(c, t);
	for (m = c->meta; m && !c->store_err; m = m->next)
		meta_row(c, m);
	c->tx_depth = 0;
	rc = end_tx(c);
	c->resyncing = false;
	if (rc == 0) {
		fprintf(stderr, "vectur: cache metadata saved again (it was "
				"behind after a failed write)\n");
		drop_gone(c);
	}
	return rc;
}

int store_catch_up(struct cache *c)
{
	if (c->store_err && c->tx_depth == 0)
		store_resync(c);
	return c->store_err;
}

static const char *col_text(sqlite3_stmt *st, int i)
{
	const unsigned char *t = sqlite3_column_text(st, i);

	return t ? (const char *)t : "";
}

/* A row read by load_nodes, attached once its parent is. */
struct loaded {
	struct cnode *n;
	uint64_t ino, pino;
	int state; /* 0 waiting, 1 in the tree, 2 orphan, 3 being placed */
};

static struct loaded *loaded_find(struct loaded *l, int nl, uint64_t ino)
{
	int lo = 0, hi = nl - 1, mid;

	while (lo <= hi) { /* l is in ino order */
		mid = lo + (hi - lo) / 2;
		if (l[mid].ino == ino)
			return &l[mid];
		if (l[mid].ino < ino)
			lo = mid + 1;
		else
			hi = mid - 1;
	}
	return NULL;
}

static void loaded_attach(struct cache *c, struct cnode *p, struct cnode *n)
{
	char id[sizeof(n->drive_id)];

	node_hash_add(c, n);
	node_attach(c, p, n);
	snprintf(id, sizeof(id), "%s", n->drive_id);
	n->drive_id[0] = '\0';
	node_set_drive_id(c, n, id);
}

/* Puts l[i] in the tree, its waiting ancestors first; a row whose parent
 * is missing, not a folder, or its own descendant is an orphan, and so is
 * everything under it. `up` has room for nl entries. */
static void loaded_place(struct cache *c, struct loaded *l, int nl, int i,
			 struct loaded **up)
{
	struct loaded *x = &l[i], *p;
	struct cnode *pn;
	int k = 0, state;

	for (;;) {
		up[k++] = x;
		x->state = 3; /* on the way up: met again, a cycle */
		if (x->pino == 1) {
			pn = c->root;
			state = 1;
			break;
		}
		p = loaded_find(l, nl, x->pino);
		if (!p || p->state >= 2 || !p->n->is_dir || k >= nl) {
			pn = NULL;
			state = 2;
			break;
		}
		if (p->state == 1) {
			pn = p->n;
			state = 1;
			break;
		}
		x = p;
	}
	while (k-- > 0) {
		up[k]->state = state;
		if (state == 1) {
			loaded_attach(c, pn, up[k]->n);
			pn = up[k]->n;
		} else {
			node_free(up[k]->n);
			up[k]->n = NULL;
		}
	}
}

/* Two passes: a file renamed into a folder made after it has a smaller
 * ino than its parent, so rows cannot be attached in ino order. */
static int load_nodes(struct cache *c)
{
	sqlite3_stmt *st = NULL;
	struct loaded *l = NULL, *grown, **up = NULL;
	struct cnode *n;
	int rc = 0, nl = 0, cap = 0, i;

	if (sqlite3_prepare_v2(c->db,
			       "SELECT ino,parent,name,is_dir,mode,mtime_ns,"
			       "ctime_ns,drive_id,remote_exists,remote_parent,"
			       "remote_name,md5,rsize,rversion,listed,"
			       "mtime_dirty,landed_seq,created_here,settle,"
			       "rival_id,rev FROM nodes ORDER BY ino",
			       -1, &st, NULL) != SQLITE_OK)
		return -EIO;
	while (sqlite3_step(st) == SQLITE_ROW) {
		uint64_t ino = sqlite3_column_int64(st, 0);

		if (ino == 1) {
			n = c->root;
		} else {
			if (nl == cap) {
				cap = cap ? 2 * cap : 256;
				grown = realloc(l, cap * sizeof(*l));
				if (!grown) {
					rc = -ENOMEM;
					goto out;
				}
				l = grown;
			}
			n = calloc(1, sizeof(*n));
			if (!n) {
				rc = -ENOMEM;
				goto out;
			}
			l[nl].n = n;
			l[nl].ino = ino;
			l[nl].pino = sqlite3_column_int64(st, 1);
			l[nl].state = 0;
			nl++;
			n->ino = ino;
			n->name = strdup(col_text(st, 2));
			n->is_dir = sqlite3_column_int(st, 3);
			/* hashed when attached (loaded_attach) */
			snprintf(n->drive_id, sizeof(n->drive_id), "%s",
				 col_text(st, 7));
		}
		n->mode = sqlite3_column_int(st, 4);
		n->mtime = ns_ts(sqlite3_column_int64(st, 5));
		n->ctime = ns_ts(sqlite3_column_int64(st, 6));
		n->remote_exists = sqlite3_column_int(st, 8);
		snprintf(n->remote_parent, sizeof(n->remote_parent), "%s",
			 col_text(st, 9));
		free(n->remote_name);
		n->remote_name = strdup(col_text(st, 10));
		snprintf(n->md5, sizeof(n->md5), "%s", col_text(st, 11));
		n->rsize = sqlite3_column_int64(st, 12);
		n->rversion = sqlite3_column_int64(st, 13);
		n->listed = sqlite3_column_int(st, 14);
		n->mtime_dirty = sqlite3_column_int(st, 15);
		n->landed_seq = sqlite3_column_int64(st, 16);
		if (n->landed_seq > c->close_seq)
			c->close_seq = n->landed_seq;
		n->created_here = sqlite3_column_int(st, 17);
		n->settle = sqlite3_column_int(st, 18);
		snprintf(n->rival_id, sizeof(n->rival_id), "%s",
			 col_text(st, 19));
		snprintf(n->rev, sizeof(n->rev), "%s", col_text(st, 20));
		if (ino >= c->next_ino)
			c->next_ino = ino + 1;
	}
	up = calloc(nl ? nl : 1, sizeof(*up));
	if (!up) {
		rc = -ENOMEM;
		goto out;
	}
	for (i = 0; i < nl; i++)
		if (l[i].state == 0)
			loaded_place(c, l, nl, i, up);
out:
	/* On an error, what was not placed yet goes. */
	for (i = 0; i < nl; i++) {
		if (l[i].state == 0)
			node_free(l[i].n);
	}
	free(up);
	free(l);
	sqlite3_finalize(st);
	return rc;
}

static int load_versions(struct cache *c)
{
	sqlite3_stmt *st = NULL;
	struct cnode *n;
	struct cver *v;
	struct stat sb;
	char path[4096];

	if (sqlite3_prepare_v2(c->db,
			       "SELECT vid,ino,state,size,mtime_ns,close_seq,"
			       "complete,was_clean,session_url,session_off,"
			       "atime_ms, unsynced FROM versions ORDER BY vid",
			       -1, &st, NULL) != SQLITE_OK)
		return -EIO;
	while (sqlite3_step(st) == SQLITE_ROW) {
		int64_t vid = sqlite3_column_int64(st, 0);

		if (vid >= c->next_vid)
			c->next_vid = vid + 1;
		n = node_by_ino(c, sqlite3_column_int64(st, 1));
		if (!n || n->is_dir) {
			store_drop_data(c, vid);
			continue;
		}
		v = calloc(1, sizeof(*v));
		if (!v)
			break;
		v->vid = vid;
		v->node = n;
		v->fd = -1;
		v->state = sqlite3_column_int(st, 2);
		v->size = sqlite3_column_int64(st, 3);
		v->mtime = ns_ts(sqlite3_column_int64(st, 4));
		v->close_seq = sqlite3_column_int64(st, 5);
		v->complete = sqlite3_column_int(st, 6);
		v->was_clean = sqlite3_column_int(st, 7);
		v->session_url = strdup(col_text(st, 8));
		v->session_off = sqlite3_column_int64(st, 9);
		v->atime_ms = sqlite3_column_int64(st, 10);
		v->unsynced = sqlite3_column_int(st, 11);
		/* A snapshot's second name (ver_link_into) outlives a restart:
		 * whichever of the two is written next copies first. */
		store_data_path(c, vid, path, sizeof(path));
		v->linked = stat(path, &sb) == 0 && sb.st_nlink > 1;
		pthread_rwlock_init(&v->rw, NULL);
		pthread_mutex_init(&v->fetch_wmu, NULL);
		v->nnext = n->vers;
		n->vers = v;
		v->gnext = c->vers;
		if (c->vers)
			c->vers->gprev = v;
		c->vers = v;
		if (v->close_seq > c->close_seq)
			c->close_seq = v->close_seq;
	}
	sqlite3_finalize(st);
	return 0;
}

static int load_tombs(struct cache *c)
{
	sqlite3_stmt *st = NULL;
	struct ctomb *t;

	if (sqlite3_prepare_v2(
		    c->db, "SELECT tid,drive_id,hard,ino,after_seq FROM tombs",
		    -1, &st, NULL) != SQLITE_OK)
		return -EIO;
	while (sqlite3_step(st) == SQLITE_ROW) {
		t = calloc(1, sizeof(*t));
		if (!t)
			break;
		t->tid = sqlite3_column_int64(st, 0);
		snprintf(t->drive_id, sizeof(t->drive_id), "%s",
			 col_text(st, 1));
		t->hard = sqlite3_column_int(st, 2);
		t->ino = sqlite3_column_int64(st, 3);
		t->after_seq = sqlite3_column_int64(st, 4);
		if (t->after_seq > c->close_seq)
			c->close_seq = t->after_seq;
		/* The node it waits for (nodes are loaded first). */
		t->n = t->after_seq ? node_by_ino(c, t->ino) : NULL;
		if (t->n)
			t->n->refs++;
		t->next = c->tombs;
		c->tombs = t;
	}
	sqlite3_finalize(st);
	return 0;
}

int store_load(struct cache *c)
{
	char buf[64];
	int rc;

	if (store_get_meta(c, "close_seq", buf, sizeof(buf)) == 0)
		c->close_seq = strtoll(buf, NULL, 10);
	if (store_get_meta(c, "next_vid", buf, sizeof(buf)) == 0)
		c->next_vid = strtoll(buf, NULL, 10);
	if (store_get_meta(c, "next_ino", buf, sizeof(buf)) == 0)
		c->next_ino = strtoull(buf, NULL, 10);
	store_get_meta(c, "changes_token", c->token, sizeof(c->token));
	rc = load_nodes(c);
	if (rc == 0)
		rc = load_versions(c);
	if (rc == 0)
		rc = load_tombs(c);
	c->close_seq_saved = c->close_seq;
	return rc;
}
