/* jwt.c — service-account keys and the JWT assertion of Google's
 * jwt-bearer grant: header {"alg":"RS256","typ":"JWT"}, claims iss, scope,
 * aud, iat, exp, signed with the key's RSA private key (SHA-256). Owns no
 * network code: auth.c posts the assertion. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <json-c/json.h>
#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/pem.h>

#include "jwt.h"

#define SA_KEY_MAX	 (1 << 20) /* real key files are ~2.3 KB */
#define DRIVE_SCOPE_BASE "https://www.googleapis.com/auth/"

/* ---- the key ---------------------------------------------------------- */

/* An encrypted PEM would make OpenSSL prompt on the terminal; refuse. */
static int sa_no_passphrase(char *buf, int size, int rwflag, void *u)
{
	return 0;
}

static const char *sa_json_str(json_object *o, const char *k)
{
	json_object *v;

	if (!json_object_object_get_ex(o, k, &v) ||
	    !json_object_is_type(v, json_type_string))
		return NULL;
	return json_object_get_string(v);
}

static int sa_read_pem(const char *pem, const char *where,
		       struct drive_sa_key *key, struct drive_err *err)
{
	BIO *bio;
	int rc = -1;

	bio = BIO_new_mem_buf(pem, -1);
	if (!bio) {
		drive_err_set(err, 0, "config", "%s: out of memory", where);
		return -1;
	}
	key->pkey = PEM_read_bio_PrivateKey(bio, NULL, sa_no_passphrase, NULL);
	if (!key->pkey) {
		drive_err_set(err, 0, "config",
			      "%s: \"private_key\" is not a PEM private key "
			      "(unencrypted PKCS#8, as Google issues them)",
			      where);
		goto out;
	}
	if (!EVP_PKEY_is_a(key->pkey, "RSA")) {
		drive_err_set(err, 0, "config",
			      "%s: \"private_key\" is not an RSA key; service "
			      "account assertions are signed with RS256",
			      where);
		EVP_PKEY_free(key->pkey);
		key->pkey = NULL;
		goto out;
	}
	rc = 0;
out:
	/* The error queue is per thread; do not leave our failures for the
	 * next unrelated OpenSSL caller to trip over. */
	ERR_clear_error();
	BIO_free(bio);
	return rc;
}

int drive_sa_key_parse(const char *json, const char *where,
		       struct drive_sa_key *key, struct drive_err *err)
{
	enum json_tokener_error jerr = json_tokener_success;
	const char *type, *email, *pem;
	json_object *o;
	int rc = -1;

	memset(key, 0, sizeof(*key));
	o = json_tokener_parse_verbose(json, &jerr);
	if (!o || !json_object_is_type(o, json_type_object)) {
		drive_err_set(err, 0, "config",
			      "%s is not a service account key: not a JSON "
			      "object (%s)",
			      where,
			      o ? "wrong type" : json_tokener_error_desc(jerr));
		goto out;
	}
	type = sa_json_str(o, "type");
	if (type && strcmp(type, "service_account") != 0) {
		drive_err_set(err, 0, "config",
			      "%s is not a service account key: \"type\" is "
			      "\"%.64s\", expected \"service_account\"",
			      where, type);
		goto out;
	}
	email = sa_json_str(o, "client_email");
	pem = sa_json_str(o, "private_key");
	if (!email || !*email || !pem || !*pem) {
		drive_err_set(err, 0, "config",
			      "%s is not a service account key: \"%s\" is "
			      "missing",
			      where,
			      !email || !*email ? "client_email"
						: "private_key");
		goto out;
	}
	if (strlen(email) >= sizeof(key->client_email)) {
		drive_err_set(err, 0, "config", "%s: \"client_email\" too long",
			      where);
		goto out;
	}
	strcpy(key->client_email, email);
	rc = sa_read_pem(pem, where, key, err);
out:
	json_object_put(o);
	return rc;
}

static char *sa_read_file(const char *path, int *errnum)
{
	char *buf = NULL;
	struct stat st;
	ssize_t n;
	int fd;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		*errnum = errno;
		return NULL;
	}
	if (fstat(fd, &st) < 0) {
		*errnum = errno;
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		*errnum = S_ISDIR(st.st_mode) ? EISDIR : EINVAL;
		goto out;
	}
	if (st.st_size > SA_KEY_MAX) {
		*errnum = EFBIG;
		goto out;
	}
	buf = malloc(st.st_size + 1);
	if (!buf) {
		*errnum = ENOMEM;
		goto out;
	}
	n = read(fd, buf, st.st_size);
	if (n < 0) {
		*errnum = errno;
		free(buf);
		buf = NULL;
		goto out;
	}
	buf[n] = '\0';
out:
	close(fd);
	return buf;
}

int drive_sa_key_load_file(const char *path, const char *where,
			   struct drive_sa_key *key, struct drive_err *err)
{
	int errnum = 0, rc;
	char *json;

	memset(key, 0, sizeof(*key));
	json = sa_read_file(path, &errnum);
	if (!json) {
		drive_err_set(err, 0, "config", "cannot read %s: %s", where,
			      strerror(errnum));
		return -1;
	}
	rc = drive_sa_key_parse(json, where, key, err);
	OPENSSL_cleanse(json, strlen(json));
	free(json);
	return rc;
}

void drive_sa_key_free(struct drive_sa_key *key)
{
	EVP_PKEY_free(key->pkey);
	memset(key, 0, sizeof(*key));
}

/* ---- scope ------------------------------------------------------------ */

/* rclone's scope option is a comma-separated list of short names that it
 * prefixes with the auth URL; full URLs pass through. */
int drive_jwt_scope(const char *rclone_scope, char *out, size_t out_len)
{
	const char *p = rclone_scope, *end;
	size_t used = 0;
	int n;

	if (!out_len)
		return -1;
	out[0] = '\0';
	while (*p) {
		while (*p == ' ' || *p == ',')
			p++;
		end = p + strcspn(p, ",");
		while (end > p && end[-1] == ' ')
			end--;
		if (end > p) {
			bool url = strncmp(p, "https://", 8) == 0;

			n = snprintf(out + used, out_len - used, "%s%s%.*s",
				     used ? " " : "",
				     url ? "" : DRIVE_SCOPE_BASE,
				     (int)(end - p), p);
			if (n < 0 || (size_t)n >= out_len - used)
				return -1;
			used += n;
		}
		p = end;
		while (*p && *p != ',')
			p++;
	}
	return used ? 0 : -1;
}

/* ---- encoding --------------------------------------------------------- */

long drive_base64url(const void *in, size_t len, char *out, size_t out_len)
{
	static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
				  "abcdefghijklmnopqrstuvwxyz0123456789-_";
	const unsigned char *s = in;
	size_t need = len / 3 * 4 + (len % 3 ? len % 3 + 1 : 0);
	size_t i, o = 0;
	uint32_t v;

	if (need + 1 > out_len)
		return -1;
	for (i = 0; i + 2 < len; i += 3) {
		v = (uint32_t)s[i] << 16 | (uint32_t)s[i + 1] << 8 | s[i + 2];
		out[o++] = tbl[v >> 18 & 63];
		out[o++] = tbl[v >> 12 & 63];
		out[o++] = tbl[v >> 6 & 63];
		out[o++] = tbl[v & 63];
	}
	if (len - i == 1) {
		v = (uint32_t)s[i] << 16;
		out[o++] = tbl[v >> 18 & 63];
		out[o++] = tbl[v >> 12 & 63];
	} else if (len - i == 2) {
		v = (uint32_t)s[i] << 16 | (uint32_t)s[i + 1] << 8;
		out[o++] = tbl[v >> 18 & 63];
		out[o++] = tbl[v >> 12 & 63];
		out[o++] = tbl[v >> 6 & 63];
	}
	out[o] = '\0';
	return (long)o;
}

/* Appends base64url(data) to buf at *used (buf sized by the caller). */
static void jwt_append_b64(char *buf, size_t *used, size_t size,
			   const void *data, size_t len)
{
	long n = drive_base64url(data, len, buf + *used, size - *used);

	if (n > 0)
		*used += n;
}

/* ---- the assertion ---------------------------------------------------- */

static char *jwt_claims(const struct drive_sa_key *key, const char *scope_urls,
			const char *token_url, int64_t iat)
{
	json_object *o = json_object_new_object();
	char *s = NULL;

	if (!o)
		return NULL;
	json_object_object_add(o, "iss",
			       json_object_new_string(key->client_email));
	json_object_object_add(o, "scope", json_object_new_string(scope_urls));
	json_object_object_add(o, "aud", json_object_new_string(token_url));
	json_object_object_add(o, "iat", json_object_new_int64(iat));
	json_object_object_add(o, "exp",
			       json_object_new_int64(iat + DRIVE_JWT_LIFETIME));
	s = strdup(json_object_to_json_string_ext(
		o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
	json_object_put(o);
	return s;
}

static int jwt_sign(EVP_PKEY *pkey, const char *data, unsigned char **sig,
		    size_t *sig_len)
{
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	int rc = -1;

	*sig = NULL;
	if (!ctx)
		return -1;
	if (EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, pkey) != 1)
		goto out;
	if (EVP_DigestSign(ctx, NULL, sig_len, (const unsigned char *)data,
			   strlen(data)) != 1)
		goto out;
	*sig = malloc(*sig_len);
	if (!*sig)
		goto out;
	if (EVP_DigestSign(ctx, *sig, sig_len, (const unsigned char *)data,
			   strlen(data)) != 1)
		goto out;
	rc = 0;
out:
	if (rc < 0) {
		free(*sig);
		*sig = NULL;
		ERR_clear_error();
	}
	EVP_MD_CTX_free(ctx);
	return rc;
}

int drive_jwt_build(const struct drive_sa_key *key, const char *scope_urls,
		    const char *token_url, int64_t iat, char **out,
		    struct drive_err *err)
{
	static const char header[] = "{\"alg\":\"RS256\",\"typ\":\"JWT\"}";
	unsigned char *sig = NULL;
	char *claims, *buf = NULL;
	size_t size, used = 0, sig_len = 0;
	int rc = -1;

	*out = NULL;
	claims = jwt_claims(key, scope_urls, token_url, iat);
	if (!claims) {
		drive_err_set(err, 0, "auth", "out of memory building JWT");
		return -1;
	}
	/* header.claims, then .signature; 4/3 growth plus the RSA-4096
	 * signature's 683 characters fit in this generously. */
	size = (sizeof(header) + strlen(claims)) * 2 + 1024;
	buf = malloc(size);
	if (!buf) {
		drive_err_set(err, 0, "auth", "out of memory building JWT");
		goto out;
	}
	jwt_append_b64(buf, &used, size, header, strlen(header));
	buf[used++] = '.';
	jwt_append_b64(buf, &used, size, claims, strlen(claims));
	buf[used] = '\0';
	if (jwt_sign(key->pkey, buf, &sig, &sig_len) < 0 ||
	    used + 2 + (sig_len + 2) / 3 * 4 > size) {
		drive_err_set(err, 0, "auth",
			      "cannot sign the service account assertion for "
			      "%s with RS256",
			      key->client_email);
		goto out;
	}
	buf[used++] = '.';
	jwt_append_b64(buf, &used, size, sig, sig_len);
	*out = buf;
	buf = NULL;
	rc = 0;
out:
	free(sig);
	free(buf);
	free(claims);
	return rc;
}
