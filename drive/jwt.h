/* jwt.h — service-account keys and the RS256 JWT assertion they sign for
 * Google's jwt-bearer grant. Used by auth.c (to obtain tokens) and config.c
 * (to reject a broken key file at load time, before mounting). */
#ifndef VECTUR_DRIVE_JWT_H
#define VECTUR_DRIVE_JWT_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

#include "drive.h"

#define DRIVE_JWT_GRANT_TYPE "urn:ietf:params:oauth:grant-type:jwt-bearer"
#define DRIVE_JWT_LIFETIME   3600 /* Google refuses exp > iat + 3600 */

/* A parsed service-account key: what the assertion needs, nothing more. */
struct drive_sa_key {
	char client_email[256];
	EVP_PKEY *pkey; /* RSA private key; owned */
};

/* Parses the key JSON (type, client_email, private_key). `where` names the
 * key's origin for error messages ("service_account_file /x.json"); the
 * key material never appears in them. */
int drive_sa_key_parse(const char *json, const char *where,
		       struct drive_sa_key *key, struct drive_err *err);
/* Reads and parses the key file at path. */
int drive_sa_key_load_file(const char *path, const char *where,
			   struct drive_sa_key *key, struct drive_err *err);
void drive_sa_key_free(struct drive_sa_key *key);

/* Maps rclone's scope option ("drive", "drive.readonly,drive.file", or
 * full URLs) to the space-separated URL list OAuth wants. -1 if it does not
 * fit or names no scope. */
int drive_jwt_scope(const char *rclone_scope, char *out, size_t out_len);

/* base64url without padding (RFC 7515 §2). Returns the length written, or
 * -1 if out (which also gets a NUL) is too small. */
long drive_base64url(const void *in, size_t len, char *out, size_t out_len);

/* Builds header.claims.signature for iss = key->client_email, the given
 * scope URLs, aud = token_url, iat, exp = iat + DRIVE_JWT_LIFETIME. *out is
 * malloc'd. */
int drive_jwt_build(const struct drive_sa_key *key, const char *scope_urls,
		    const char *token_url, int64_t iat, char **out,
		    struct drive_err *err);

#endif
