/* t.h — the minimal test harness for vectur's C unit tests.
 *
 *   static void test_name_maps_slash(void) { CHECK(x == 1); CHECK_STR(a, b); }
 *   int main(void) { RUN(test_name_maps_slash); return t_done(); }
 *
 * Each binary prints one line per failed check and ends with
 * "N passed, N failed" (tests, not checks); exit status 1 on any failure. */
#ifndef VECTUR_T_H
#define VECTUR_T_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int t_passed, t_failed, t_cur_failed;

#define CHECK(cond)                                                            \
	do {                                                                   \
		if (!(cond)) {                                                 \
			fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, \
				__LINE__, #cond);                              \
			t_cur_failed = 1;                                      \
		}                                                              \
	} while (0)

#define CHECK_STR(a, b)                                                        \
	do {                                                                   \
		const char *t_a = (a), *t_b = (b);                             \
		if (!t_a || !t_b || strcmp(t_a, t_b) != 0) {                   \
			fprintf(stderr, "%s:%d: \"%s\" != \"%s\"\n", __FILE__, \
				__LINE__, t_a ? t_a : "(null)",                \
				t_b ? t_b : "(null)");                         \
			t_cur_failed = 1;                                      \
		}                                                              \
	} while (0)

#define CHECK_INT(a, b)                                                        \
	do {                                                                   \
		long long t_a = (long long)(a), t_b = (long long)(b);          \
		if (t_a != t_b) {                                              \
			fprintf(stderr, "%s:%d: %s == %lld, expected %lld\n",  \
				__FILE__, __LINE__, #a, t_a, t_b);             \
			t_cur_failed = 1;                                      \
		}                                                              \
	} while (0)

#define RUN(fn)                                                                \
	do {                                                                   \
		t_cur_failed = 0;                                              \
		fn();                                                          \
		if (t_cur_failed) {                                            \
			t_failed++;                                            \
			fprintf(stderr, "FAIL %s\n", #fn);                     \
		} else {                                                       \
			t_passed++;                                            \
		}                                                              \
	} while (0)

/* The last int a child wrote into pipe end fd before it exited or was
 * killed (`dflt` if none), for tests that kill a child at some point and
 * need how far it got. Closes fd. */
static inline int t_last_int(int fd, int dflt)
{
	int k;

	while (read(fd, &k, sizeof(k)) == sizeof(k))
		dflt = k;
	close(fd);
	return dflt;
}

static inline int t_done(void)
{
	printf("%d passed, %d failed\n", t_passed, t_failed);
	return t_failed ? 1 : 0;
}

#endif
