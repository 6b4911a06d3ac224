/* err.c — struct drive_err: filling it, and the one place where Drive and
 * transport errors become errno values. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "drive.h"

void drive_err_clear(struct drive_err *err)
{
	if (!err)
		return;
	memset(err, 0, sizeof(*err));
}

void drive_err_set(struct drive_err *err, long status, const char *reason,
		   const char *fmt, ...)
{
	va_list ap;

	if (!err)
		return;
	err->status = status;
	snprintf(err->reason, sizeof(err->reason), "%s", reason ? reason : "");
	va_start(ap, fmt);
	vsnprintf(err->message, sizeof(err->message), fmt, ap);
	va_end(ap);
}

static bool reason_is(const struct drive_err *err, const char *r)
{
	return strcmp(err->reason, r) == 0;
}

static bool is_rate_limit(const struct drive_err *err)
{
	return reason_is(err, "userRateLimitExceeded") ||
	       reason_is(err, "rateLimitExceeded") ||
	       reason_is(err, "sharingRateLimitExceeded");
}

bool drive_err_retryable(const struct drive_err *err)
{
	if (err->curl_code != 0 || err->status == 0)
		return err->curl_code != 0;
	if (err->status >= 500 || err->status == 429 || err->status == 408)
		return true;
	return err->status == 403 && is_rate_limit(err);
}

int drive_err_errno(const struct drive_err *err)
{
	if (err->curl_code != 0)
		return EIO;
	switch (err->status) {
	case 0:
		/* Local failures from http.c/upload.c (status 0, no curl
		 * code): a full disk and a caller's abort keep their
		 * meaning; the rest is I/O. */
		if (reason_is(err, "localNoSpace"))
			return ENOSPC;
		if (reason_is(err, "aborted"))
			return ECANCELED;
		return EIO;
	case 400:
		/* OAuth's invalid_grant: the credentials are no good. */
		if (reason_is(err, "invalid_grant"))
			return EACCES;
		return EINVAL;
	case 401:
		return EACCES;
	case 403:
		if (is_rate_limit(err))
			return EAGAIN;
		if (reason_is(err, "storageQuotaExceeded") ||
		    reason_is(err, "quotaExceeded"))
			return EDQUOT;
		if (reason_is(err, "fieldNotWritable"))
			return EPERM;
		return EACCES;
	case 404:
		return ENOENT;
	case 409:
		return EEXIST;
	case 412:
		return EAGAIN;
	case 416:
		return EINVAL;
	case 429:
		return EAGAIN;
	default:
		return EIO;
	}
}
