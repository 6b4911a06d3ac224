/* names.c — mapping between Drive names and local path components, and
 * escaping for the `q` query language. Pure string work: no I/O, no state.
 *
 * Drive names may contain '/' and may be "." or "..", which no POSIX path
 * component can. We map them the way rclone presents Drive names (its
 * "Standard" encoding, lib/encoder: EncodeZero|Slash|Ctl|Del|Dot), so a
 * tree looks the same through vectur and through `rclone mount`:
 *
 *   '/'         <-> U+FF0F '／'  (FULLWIDTH SOLIDUS)
 *   0x01..0x1F  <-> U+2401..U+241F (SYMBOL FOR ...)
 *   0x7F        <-> U+2421 '␡'
 *   "." / ".."  <-> "．" / "．．" (U+FF0E FULLWIDTH FULL STOP, whole name)
 *
 * To keep the mapping reversible, a character that is itself the image of
 * a mapping ('／', '␀'..'␟', '␡', and the quote U+201B '‛') is prefixed
 * with the quote rune U+201B when it appears literally in a Drive name:
 * Drive "a／b" is local "a‛／b", Drive "a‛b" is local "a‛‛b", Drive "．"
 * is local "‛．". Decoding drops a quote before such a character; a quote
 * before anything else is kept as is (rclone does the same).
 *
 * Bytes that are not valid UTF-8 pass through unchanged in both directions.
 */
#include <stdint.h>
#include <string.h>

#include "drive.h"

#define QUOTE_RUNE    0x201B /* SINGLE HIGH-REVERSED-9 QUOTATION MARK */
#define FULL_SOLIDUS  0xFF0F /* '／' */
#define FULL_STOP     0xFF0E /* '．' */
#define SYMBOL_NULL   0x2400 /* '␀'; 0x2401..0x241F mirror 0x01..0x1F */
#define SYMBOL_DELETE 0x2421 /* '␡' */

/* A growing output string that remembers overflow instead of failing at
 * every call site. */
struct sbuf {
	char *p;
	size_t len, cap;
	bool overflow;
};

static void sb_put(struct sbuf *sb, const char *s, size_t n)
{
	if (sb->overflow || sb->len + n + 1 > sb->cap) {
		sb->overflow = true;
		return;
	}
	memcpy(sb->p + sb->len, s, n);
	sb->len += n;
	sb->p[sb->len] = '\0';
}

static void sb_rune(struct sbuf *sb, uint32_t r)
{
	char u[4];
	size_t n;

	if (r < 0x80) {
		u[0] = (char)r;
		n = 1;
	} else if (r < 0x800) {
		u[0] = (char)(0xC0 | (r >> 6));
		u[1] = (char)(0x80 | (r & 0x3F));
		n = 2;
	} else if (r < 0x10000) {
		u[0] = (char)(0xE0 | (r >> 12));
		u[1] = (char)(0x80 | ((r >> 6) & 0x3F));
		u[2] = (char)(0x80 | (r & 0x3F));
		n = 3;
	} else {
		u[0] = (char)(0xF0 | (r >> 18));
		u[1] = (char)(0x80 | ((r >> 12) & 0x3F));
		u[2] = (char)(0x80 | ((r >> 6) & 0x3F));
		u[3] = (char)(0x80 | (r & 0x3F));
		n = 4;
	}
	sb_put(sb, u, n);
}

static int sb_finish(struct sbuf *sb)
{
	return sb->overflow ? -1 : 0;
}

/* Decodes one UTF-8 sequence at s; returns its length (>= 1) and the rune,
 * or sets *r = UINT32_MAX for an invalid byte (length 1). */
static size_t utf8_next(const unsigned char *s, uint32_t *r)
{
	uint32_t c = s[0];
	size_t n, i;
	uint32_t min;

	if (c < 0x80) {
		*r = c;
		return 1;
	}
	if ((c & 0xE0) == 0xC0) {
		n = 2;
		c &= 0x1F;
		min = 0x80;
	} else if ((c & 0xF0) == 0xE0) {
		n = 3;
		c &= 0x0F;
		min = 0x800;
	} else if ((c & 0xF8) == 0xF0) {
		n = 4;
		c &= 0x07;
		min = 0x10000;
	} else {
		*r = UINT32_MAX;
		return 1;
	}
	for (i = 1; i < n; i++) {
		if ((s[i] & 0xC0) != 0x80) {
			*r = UINT32_MAX;
			return 1;
		}
		c = (c << 6) | (s[i] & 0x3F);
	}
	if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF)) {
		*r = UINT32_MAX;
		return 1;
	}
	*r = c;
	return n;
}

/* The whole-name cases of EncodeDot, in both directions. */
static const char *const dot_names[][2] = {
	/* drive name, local name */
	{".", "\xEF\xBC\x8E"},
	{"..", "\xEF\xBC\x8E\xEF\xBC\x8E"},
	{"\xEF\xBC\x8E", "\xE2\x80\x9B\xEF\xBC\x8E"},
	{"\xEF\xBC\x8E\xEF\xBC\x8E",
	 "\xE2\x80\x9B\xEF\xBC\x8E\xE2\x80\x9B\xEF\xBC\x8E"},
};

static bool is_symbol_ctl(uint32_t r)
{
	return r > SYMBOL_NULL && r <= SYMBOL_NULL + 0x1F;
}

/* Runes that are images of the mapping and so need the quote when they
 * occur literally. */
static bool needs_quote(uint32_t r)
{
	return r == QUOTE_RUNE || r == SYMBOL_NULL || r == FULL_SOLIDUS ||
	       r == SYMBOL_DELETE || is_symbol_ctl(r);
}

int drive_name_to_local(const char *drive_name, char *out, size_t out_len)
{
	struct sbuf sb = {out, 0, out_len, out_len == 0};
	const unsigned char *s = (const unsigned char *)drive_name;
	size_t i, n;
	uint32_t r;

	if (out_len)
		out[0] = '\0';
	for (i = 0; i < sizeof(dot_names) / sizeof(dot_names[0]); i++) {
		if (strcmp(drive_name, dot_names[i][0]) == 0) {
			sb_put(&sb, dot_names[i][1], strlen(dot_names[i][1]));
			return sb_finish(&sb);
		}
	}
	while (*s) {
		n = utf8_next(s, &r);
		if (r == '/')
			sb_rune(&sb, FULL_SOLIDUS);
		else if (r >= 0x01 && r <= 0x1F)
			sb_rune(&sb, SYMBOL_NULL + r);
		else if (r == 0x7F)
			sb_rune(&sb, SYMBOL_DELETE);
		else if (r != UINT32_MAX && needs_quote(r)) {
			sb_rune(&sb, QUOTE_RUNE);
			sb_rune(&sb, r);
		} else {
			sb_put(&sb, (const char *)s, n);
		}
		s += n;
	}
	return sb_finish(&sb);
}

int drive_name_from_local(const char *local_name, char *out, size_t out_len)
{
	struct sbuf sb = {out, 0, out_len, out_len == 0};
	const unsigned char *s = (const unsigned char *)local_name;
	bool quoted = false;
	size_t i, n;
	uint32_t r;

	if (out_len)
		out[0] = '\0';
	for (i = 0; i < sizeof(dot_names) / sizeof(dot_names[0]); i++) {
		if (strcmp(local_name, dot_names[i][1]) == 0) {
			sb_put(&sb, dot_names[i][0], strlen(dot_names[i][0]));
			return sb_finish(&sb);
		}
	}
	while (*s) {
		n = utf8_next(s, &r);
		if (r == QUOTE_RUNE && !quoted) {
			quoted = true;
			s += n;
			continue;
		}
		if (quoted && r != UINT32_MAX && needs_quote(r)) {
			sb_rune(&sb, r); /* a literal, quoted by to_local */
		} else {
			if (quoted)
				sb_rune(&sb, QUOTE_RUNE); /* a stray quote */
			if (r == FULL_SOLIDUS)
				sb_rune(&sb, '/');
			else if (is_symbol_ctl(r))
				sb_rune(&sb, r - SYMBOL_NULL);
			else if (r == SYMBOL_DELETE)
				sb_rune(&sb, 0x7F);
			else
				/* '␀' would decode to NUL, which no C string
				 * can carry: it stays '␀'. */
				sb_put(&sb, (const char *)s, n);
		}
		quoted = false;
		s += n;
	}
	if (quoted)
		sb_rune(&sb, QUOTE_RUNE);
	return sb_finish(&sb);
}

bool drive_name_local_ok(const char *local_name)
{
	char d[4096], back[4096];

	return drive_name_from_local(local_name, d, sizeof(d)) == 0 &&
	       drive_name_to_local(d, back, sizeof(back)) == 0 &&
	       strcmp(back, local_name) == 0;
}

int drive_query_escape(const char *in, char *out, size_t out_len)
{
	struct sbuf sb = {out, 0, out_len, out_len == 0};

	if (out_len)
		out[0] = '\0';
	for (; *in; in++) {
		/* Backslash first: Drive's q literal knows only \\ and \'. */
		if (*in == '\\')
			sb_put(&sb, "\\\\", 2);
		else if (*in == '\'')
			sb_put(&sb, "\\'", 2);
		else
			sb_put(&sb, in, 1);
	}
	return sb_finish(&sb);
}
