/* drive.h — the public interface of vectur's Google Drive v3 client.
 *
 * Everything above drive/ (cache/, fs/, scheduler/) talks to Drive only
 * through these calls. Calls return 0 on success or -1 on failure and fill a
 * struct drive_err; drive_err_errno() maps it to an errno in one place.
 *
 * Threads: a struct drive_client is shared by all threads of a mount. Every
 * call may be made from any thread at the same time; the client serialises
 * token refreshes and paces requests client-wide.
 */
#ifndef VECTUR_DRIVE_H
#define VECTUR_DRIVE_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#define DRIVE_FOLDER_MIME "application/vnd.google-apps.folder"

/* ---- errors ------------------------------------------------------------ */

/* What went wrong. status is the HTTP status (0 for a transport or local
 * error); reason is Drive's errors[0].reason or OAuth's "error" field;
 * curl_code is the CURLcode of a transport error (0 otherwise). */
struct drive_err {
	long status;
	int curl_code;
	char reason[64];
	char message[512];
};

void drive_err_clear(struct drive_err *err);
/* printf-style; sets status and reason too (reason may be NULL). */
void drive_err_set(struct drive_err *err, long status, const char *reason,
		   const char *fmt, ...) __attribute__((format(printf, 4, 5)));
/* The errno for an error: ENOENT for 404, EACCES/EPERM for permission,
 * EDQUOT/ENOSPC for storage quota, EAGAIN for rate limits after retries,
 * EIO for transport and server errors, EINVAL for bad requests, ... */
int drive_err_errno(const struct drive_err *err);
/* True for the errors worth retrying (5xx, 429, 403 rate-limit reasons,
 * transport errors). */
bool drive_err_retryable(const struct drive_err *err);

/* ---- configuration (drive/config.c) ---------------------------------- */

/* One remote from rclone's configuration, after env-over-file precedence. */
struct drive_config {
	char name[128];	   /* remote name, without ':' */
	char source[1024]; /* config file path it came from, or "environment" */
	char client_id[256];
	char client_secret[256];
	char token_url[512]; /* "" = default (or endpoint + "/token") */
	char scope[256];     /* default "drive" */
	char root_folder_id[256];
	char team_drive[256];
	char service_account_file[1024];
	char *service_account_credentials; /* JSON text or NULL; owned */
	char *token_json;    /* rclone's token JSON or NULL; owned */
	char endpoint[512];  /* base URL; default https://www.googleapis.com */
	bool token_from_env; /* token came from RCLONE_CONFIG_*_TOKEN: no
				write-back */
};

/* Splits "REMOTE:path/in/remote" into the remote name and the path (without
 * leading/trailing '/'). Returns -1 with err set if there is no ':'. */
int drive_parse_remote(const char *spec, char *name, size_t name_len,
		       char *path, size_t path_len, struct drive_err *err);

/* Finds the rclone config file the way rclone does: explicit path (--config)
 * if given, else $RCLONE_CONFIG, $XDG_CONFIG_HOME/rclone/rclone.conf,
 * ~/.config/rclone/rclone.conf, ~/.rclone.conf. Writes "" if none exists. */
void drive_config_find(const char *explicit_path, char *out, size_t out_len);

/* Loads remote `name` from the file at `path` (may be "" = none) and the
 * RCLONE_CONFIG_<NAME>_* environment. Errors name the file and key: unknown
 * remote, type not "drive", no credentials, malformed token JSON, encrypted
 * config, unreadable file. */
int drive_config_load(const char *path, const char *name,
		      struct drive_config *cfg, struct drive_err *err);
void drive_config_free(struct drive_config *cfg);

/* ---- the client ------------------------------------------------------ */

struct drive_client;

struct drive_client_opts {
	const char *endpoint;  /* overrides cfg->endpoint when non-NULL */
	double pacer_rate;     /* sustained requests/s; 0 = default (10) */
	int pacer_burst;       /* 0 = default (100) */
	int max_retries;       /* 0 = default (10) */
	int timeout_s;	       /* stall timeout for transfers; 0 = default 60 */
	int connect_timeout_s; /* 0 = default 15 */
};

/* Takes ownership of nothing; copies what it needs from cfg. */
int drive_client_new(struct drive_client **out, const struct drive_config *cfg,
		     const struct drive_client_opts *opts,
		     struct drive_err *err);
void drive_client_free(struct drive_client *c);
/* Gives up `ms` from now (0: at once): from then on retries stop, a
 * transfer under way is cut and new calls fail at once (reason
 * "aborted"). For shutdown, so that an unreachable Drive cannot hold an
 * unmount for the minutes its retries would take. ms < 0 undoes it (the
 * client works again). */
void drive_client_give_up_in(struct drive_client *c, int64_t ms);

/* Until drive_deadline_restore(): requests made by this thread stop
 * retrying when the next try would start after `mono_ms` (drive_mono_ms()
 * clock), failing with the last error, and a token refresh they need
 * (its own retries, or waiting for another thread's) gives up at
 * `mono_ms` too. For calls a user waits on (a listing under an open(2)),
 * bounded like an uncached read. Bounds nest: a sooner deadline already
 * set stays (0 sets none). Returns the deadline it replaced (0: none),
 * for drive_deadline_restore() once the bounded call is done. */
int64_t drive_deadline(int64_t mono_ms);
void drive_deadline_restore(int64_t saved);
int64_t drive_mono_ms(void);
/* *ts = `ms` from now on CLOCK_MONOTONIC (drive_mono_ms()'s clock): the
 * deadline of a pthread_cond_timedwait on a condition made with that
 * clock. */
void drive_mono_ts_in(struct timespec *ts, int64_t ms);

/* Whether requests are failing and being retried now (Drive unreachable,
 * 5xx, rate limits): the last such error in `out` and for how long, in ms,
 * requests have failed. False once Drive answers again. */
bool drive_trouble(struct drive_client *c, char *out, size_t len,
		   int64_t *for_ms);

/* Obtains a valid access token now (refreshing if needed): used by --check
 * to prove the credentials before mounting. */
int drive_auth_check(struct drive_client *c, struct drive_err *err);

/* ---- the File resource ----------------------------------------------- */

struct drive_file {
	char id[128];
	char name[1024]; /* Drive's name, not mapped */
	char mime_type[128];
	char parent[128]; /* first parent or "" */
	char md5[33];	  /* "" for folders and Google docs */
	char rev[96]; /* headRevisionId: names this content ("" = unknown) */
	int64_t size;
	int64_t version;
	int64_t created_ms; /* ms since the epoch */
	int64_t modified_ms;
	bool trashed;
	bool is_folder;
};

/* ---- calls ----------------------------------------------------------- */

struct drive_about {
	char user_email[256];
	char user_name[256];
	int64_t quota_limit; /* -1 = unlimited */
	int64_t quota_usage;
};
int drive_about(struct drive_client *c, struct drive_about *out,
		struct drive_err *err);

/* Resolves the root folder of the remote: root_folder_id, team_drive, or
 * My Drive's "root" (resolved to its real id). */
int drive_root(struct drive_client *c, struct drive_file *out,
	       struct drive_err *err);

int drive_get(struct drive_client *c, const char *id, struct drive_file *out,
	      struct drive_err *err);

/* Called once per entry; return non-zero to stop listing early (the call
 * then returns 0). */
typedef int (*drive_list_cb)(const struct drive_file *f, void *ud);

/* Lists the non-trashed children of `parent` with paging (pageSize 1000).
 * If `name` is non-NULL only entries with exactly that name (compared
 * case-sensitively on the client: Drive's `name =` is case-insensitive) are
 * returned — note name-filtered queries lag behind creates on Drive; callers
 * that need read-after-write list by parent only (name == NULL) and filter.
 * *server_ms (if non-NULL) gets the Date of the last response, in ms. */
int drive_list(struct drive_client *c, const char *parent, const char *name,
	       drive_list_cb cb, void *ud, int64_t *server_ms,
	       struct drive_err *err);

/* Walks a '/'-separated path of local names from `from_id` (mapping each
 * component with drive_name_from_local). Returns -1 with status 404 if a
 * component is missing. */
int drive_resolve_path(struct drive_client *c, const char *from_id,
		       const char *path, struct drive_file *out,
		       struct drive_err *err);

int drive_mkdir(struct drive_client *c, const char *parent, const char *name,
		struct drive_file *out, struct drive_err *err);
/* mkdir with a pre-generated id (new_id may be NULL); a 409 fileIdInUse on
 * a retry means an earlier attempt succeeded: it returns that folder. */
int drive_mkdir_id(struct drive_client *c, const char *parent, const char *name,
		   const char *new_id, struct drive_file *out,
		   struct drive_err *err);

/* files.generateIds: fills ids[0..count) (count <= 1000). */
int drive_generate_ids(struct drive_client *c, int count, char (*ids)[128],
		       struct drive_err *err);

/* Ranged download of [offset, offset+len) into buf; *got = bytes read (short
 * only at end of file). len 0 = nothing. */
int drive_download_buf(struct drive_client *c, const char *id, int64_t offset,
		       size_t len, void *buf, size_t *got,
		       struct drive_err *err);
/* Download [offset, offset+len) (len < 0 = to the end) into fd at fd_offset
 * with pwrite. *got (if non-NULL) = bytes written. */
int drive_download_fd(struct drive_client *c, const char *id, int64_t offset,
		      int64_t len, int fd, int64_t fd_offset, int64_t *got,
		      struct drive_err *err);
/* The same, of one revision (headRevisionId when it was current): the bytes
 * of that content even if the file has changed since; a revision Drive no
 * longer has is 404 notFound. wlock (if non-NULL) is held around each
 * write to fd: downloads of several ranges into one file then take turns
 * here instead of spinning on the file's inode lock in the kernel. */
int drive_download_rev_fd(struct drive_client *c, const char *id,
			  const char *rev, int64_t offset, int64_t len, int fd,
			  int64_t fd_offset, pthread_mutex_t *wlock,
			  int64_t *got, struct drive_err *err);

/* An upload of the content of `fd` (size bytes from offset 0). Creates a new
 * file (id == NULL or "": in `parent` named `name`) or replaces the content
 * of file `id` (media update; name/parent ignored unless non-NULL). Files up
 * to `multipart_max` bytes (0 = default 8 MiB) go as one multipart request;
 * larger ones use a resumable session in `chunk_size` pieces (0 = default 8
 * MiB, rounded to 256 KiB). */
struct drive_upload {
	const char *parent;
	const char *name;
	const char *id;
	/* For a create: the id to give the new file (from
	 * drive_generate_ids), so a create retried after a lost response is
	 * recognised (409 fileIdInUse → fetch it and compare md5) instead of
	 * making a duplicate. NULL = Drive picks. */
	const char *new_id;
	const char *mime_type; /* NULL = application/octet-stream */
	int64_t modified_ms;   /* 0 = let Drive set it */
	int fd;
	int64_t size;
	size_t chunk_size;
	size_t multipart_max;
	/* Resumable sessions: if session_url is non-empty on entry, the upload
	 * first asks Drive for the session's offset and resumes there (a 404
	 * session starts over). on_session is called with the new session URL
	 * as soon as it exists, and on_progress after every acknowledged chunk,
	 * so the caller can persist them and resume after a restart. */
	char session_url[2048];
	void (*on_session)(const char *url, void *ud);
	void (*on_progress)(int64_t done, int64_t total, void *ud);
	void *ud;
	/* Set when not NULL and returns non-zero: abort the upload between
	 * chunks (the session stays resumable). */
	int (*should_abort)(void *ud);
};
/* On success `out` is the File Drive stored; its md5 has been compared with
 * the md5 of what was sent (mismatch → -1, reason "md5Mismatch"). */
int drive_upload(struct drive_client *c, struct drive_upload *up,
		 struct drive_file *out, struct drive_err *err);

/* Rename and/or move: new_name NULL keeps the name; add_parent/remove_parent
 * NULL keep the parents. modified_ms 0 = unchanged. */
int drive_update_meta(struct drive_client *c, const char *id,
		      const char *new_name, const char *add_parent,
		      const char *remove_parent, int64_t modified_ms,
		      struct drive_file *out, struct drive_err *err);

int drive_trash(struct drive_client *c, const char *id, struct drive_err *err);
/* Permanent delete. 404 counts as failure (status 404): callers decide. */
int drive_delete(struct drive_client *c, const char *id, struct drive_err *err);

/* ---- changes feed ---------------------------------------------------- */

struct drive_change {
	char file_id[128];
	bool removed;		/* deleted or access lost */
	bool has_file;		/* `file` below is valid */
	struct drive_file file; /* trashed files show file.trashed */
	int64_t time_ms;
};
typedef int (*drive_change_cb)(const struct drive_change *ch, void *ud);

int drive_changes_start(struct drive_client *c, char *token, size_t token_len,
			struct drive_err *err);
/* Reads every change since `token` (following nextPageToken) and writes the
 * token to use next time into new_token. */
int drive_changes_list(struct drive_client *c, const char *token,
		       drive_change_cb cb, void *ud, char *new_token,
		       size_t new_token_len, struct drive_err *err);

/* ---- names ----------------------------------------------------------- */

/* Drive names that cannot be path components are mapped reversibly the way
 * rclone's drive backend does: '/' <-> U+FF0F FULLWIDTH SOLIDUS, and the
 * names "." and ".." <-> U+FF0E variants. Return -1 if out is too small. */
int drive_name_to_local(const char *drive_name, char *out, size_t out_len);
int drive_name_from_local(const char *local_name, char *out, size_t out_len);
/* Whether a new file may take this local name: one Drive gives back as it
 * is. Not a raw control character (a tab, a newline: Drive keeps it, and
 * it lists as its symbol rune, which is also how "x␉y" is stored, so two
 * names would become one), nor a quote rune U+201B or a '␀' that the
 * mapping did not put there. */
bool drive_name_local_ok(const char *local_name);

/* Escapes ' and \ for a q string literal (backslash first). */
int drive_query_escape(const char *in, char *out, size_t out_len);

/* ---- statistics (for .vectur/status and benchmarks) ------------------ */

struct drive_stats {
	uint64_t requests;
	uint64_t retries;
	uint64_t bytes_up;
	uint64_t bytes_down;
};
void drive_stats_get(struct drive_client *c, struct drive_stats *out);

#endif
