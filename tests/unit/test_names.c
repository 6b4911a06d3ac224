/* test_names.c — Drive name <-> local name mapping and q-literal escaping.
 * The expected strings follow rclone's Standard encoding (lib/encoder), so
 * trees look the same through vectur and `rclone mount`. */
#include "drive.h"
#include "t.h"

#define FW_SOLIDUS "\xEF\xBC\x8F" /* U+FF0F '／' */
#define FW_STOP	   "\xEF\xBC\x8E" /* U+FF0E '．' */
#define QUOTE	   "\xE2\x80\x9B" /* U+201B '‛' */
#define SYM_NUL	   "\xE2\x90\x80" /* U+2400 '␀' */
#define SYM_LF	   "\xE2\x90\x8A" /* U+240A '␊' */
#define SYM_DEL	   "\xE2\x90\xA1" /* U+2421 '␡' */

static char buf[1024], back[1024];

/* Maps a Drive name to local, checks it, and checks it maps back. */
static void check_pair(const char *drive, const char *local)
{
	CHECK_INT(drive_name_to_local(drive, buf, sizeof(buf)), 0);
	CHECK_STR(buf, local);
	CHECK_INT(drive_name_from_local(buf, back, sizeof(back)), 0);
	CHECK_STR(back, drive);
}

static void test_plain_names_are_unchanged(void)
{
	check_pair("model.pt", "model.pt");
	check_pair("checkpoint-0001", "checkpoint-0001");
	check_pair(".hidden", ".hidden");
	check_pair("...", "...");
	check_pair("a.", "a.");
	check_pair(" spaced name ", " spaced name ");
}

static void test_slash_maps_to_fullwidth_solidus(void)
{
	check_pair("a/b", "a" FW_SOLIDUS "b");
	check_pair("/", FW_SOLIDUS);
	check_pair("//x//", FW_SOLIDUS FW_SOLIDUS "x" FW_SOLIDUS FW_SOLIDUS);
}

static void test_literal_fullwidth_solidus_is_quoted(void)
{
	/* A Drive name that really contains '／' must not come back as '/'. */
	check_pair("a" FW_SOLIDUS "b", "a" QUOTE FW_SOLIDUS "b");
	check_pair("a/" FW_SOLIDUS, "a" FW_SOLIDUS QUOTE FW_SOLIDUS);
	CHECK_INT(drive_name_from_local("a" FW_SOLIDUS "b", back, sizeof(back)),
		  0);
	CHECK_STR(back, "a/b");
}

static void test_dot_and_dotdot_names(void)
{
	check_pair(".", FW_STOP);
	check_pair("..", FW_STOP FW_STOP);
	/* The fullwidth forms themselves are quoted, per rune. */
	check_pair(FW_STOP, QUOTE FW_STOP);
	check_pair(FW_STOP FW_STOP, QUOTE FW_STOP QUOTE FW_STOP);
	/* Only whole names: a fullwidth stop inside a name is left alone. */
	check_pair("a" FW_STOP, "a" FW_STOP);
	check_pair(FW_STOP "x", FW_STOP "x");
}

static void test_quote_rune_is_doubled(void)
{
	check_pair("it" QUOTE "s", "it" QUOTE QUOTE "s");
	check_pair(QUOTE, QUOTE QUOTE);
	check_pair(QUOTE "/", QUOTE QUOTE FW_SOLIDUS);
	check_pair(QUOTE FW_SOLIDUS, QUOTE QUOTE QUOTE FW_SOLIDUS);
}

static void test_stray_local_quote_is_kept(void)
{
	/* A quote in front of an ordinary character, or at the end, is not
	 * an escape: it reaches Drive as typed. */
	CHECK_INT(drive_name_from_local("a" QUOTE "b", back, sizeof(back)), 0);
	CHECK_STR(back, "a" QUOTE "b");
	CHECK_INT(drive_name_from_local("end" QUOTE, back, sizeof(back)), 0);
	CHECK_STR(back, "end" QUOTE);
}

static void test_control_characters_map_to_symbols(void)
{
	check_pair("line\nbreak", "line" SYM_LF "break");
	check_pair("del\x7f", "del" SYM_DEL);
	check_pair("sym" SYM_LF, "sym" QUOTE SYM_LF);
	check_pair("sym" SYM_DEL, "sym" QUOTE SYM_DEL);
	check_pair("nul" SYM_NUL, "nul" QUOTE SYM_NUL);
}

static void test_quotes_and_backslashes_pass_through(void)
{
	check_pair("it's", "it's");
	check_pair("a\\b", "a\\b");
	check_pair("\"quoted\"", "\"quoted\"");
	check_pair("50% off?*", "50% off?*");
}

static void test_unicode_passes_through(void)
{
	check_pair("caf\xC3\xA9", "caf\xC3\xA9");
	check_pair("\xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E", /* 日本語 */
		   "\xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E");
	check_pair("\xF0\x9F\x98\x80 smile", "\xF0\x9F\x98\x80 smile");
	/* Other fullwidth characters are not part of the Drive mapping. */
	check_pair("\xEF\xBC\xBC", "\xEF\xBC\xBC"); /* '＼' */
}

static void test_invalid_utf8_passes_through(void)
{
	check_pair("bad\xFF", "bad\xFF");
	check_pair("\xC3", "\xC3");
}

static void test_empty_name(void)
{
	check_pair("", "");
}

static void test_small_buffer_fails(void)
{
	char small[4];

	CHECK_INT(drive_name_to_local("abcd", small, sizeof(small)), -1);
	CHECK_INT(drive_name_to_local("abc", small, sizeof(small)), 0);
	CHECK_STR(small, "abc");
	CHECK_INT(drive_name_to_local("a/", small, sizeof(small)), -1);
	CHECK_INT(drive_name_from_local("abcd", small, sizeof(small)), -1);
	CHECK_INT(drive_query_escape("a'b", small, sizeof(small)), -1);
	CHECK_INT(drive_name_to_local("", small, 0), -1);
}

/* A new local name is taken only if Drive gives it back as it is: raw
 * control characters and quote runes the mapping did not put there would
 * come back spelt otherwise (after a remount), and two names as one. */
static void test_only_names_drive_gives_back_are_ok(void)
{
	CHECK(drive_name_local_ok("model.pt"));
	CHECK(drive_name_local_ok("x" SYM_LF "y"));
	CHECK(drive_name_local_ok("a" FW_SOLIDUS "b"));
	CHECK(drive_name_local_ok(FW_STOP));
	CHECK(drive_name_local_ok(QUOTE QUOTE "a"));
	CHECK(drive_name_local_ok(QUOTE SYM_NUL));
	CHECK(drive_name_local_ok("caf\xc3\xa9 \"q\" 'x' \\"));
	CHECK(!drive_name_local_ok("x\ty"));
	CHECK(!drive_name_local_ok("run1\n"));
	CHECK(!drive_name_local_ok("del\x7f"));
	CHECK(!drive_name_local_ok(QUOTE "a"));
	CHECK(!drive_name_local_ok("a" QUOTE));
	CHECK(!drive_name_local_ok(SYM_NUL "nul"));
}

static void test_query_escape_backslash_first(void)
{
	CHECK_INT(drive_query_escape("plain", buf, sizeof(buf)), 0);
	CHECK_STR(buf, "plain");
	CHECK_INT(drive_query_escape("it's", buf, sizeof(buf)), 0);
	CHECK_STR(buf, "it\\'s");
	CHECK_INT(drive_query_escape("a\\b", buf, sizeof(buf)), 0);
	CHECK_STR(buf, "a\\\\b");
	/* \' in the input must become \\\' — not \\' (which would end the
	 * literal after an escaped backslash). */
	CHECK_INT(drive_query_escape("\\'", buf, sizeof(buf)), 0);
	CHECK_STR(buf, "\\\\\\'");
	CHECK_INT(drive_query_escape("a/b \"c\"", buf, sizeof(buf)), 0);
	CHECK_STR(buf, "a/b \"c\"");
}

int main(void)
{
	RUN(test_plain_names_are_unchanged);
	RUN(test_slash_maps_to_fullwidth_solidus);
	RUN(test_literal_fullwidth_solidus_is_quoted);
	RUN(test_dot_and_dotdot_names);
	RUN(test_quote_rune_is_doubled);
	RUN(test_stray_local_quote_is_kept);
	RUN(test_control_characters_map_to_symbols);
	RUN(test_quotes_and_backslashes_pass_through);
	RUN(test_unicode_passes_through);
	RUN(test_invalid_utf8_passes_through);
	RUN(test_empty_name);
	RUN(test_small_buffer_fails);
	RUN(test_query_escape_backslash_first);
	RUN(test_only_names_drive_gives_back_are_ok);
	return t_done();
}
