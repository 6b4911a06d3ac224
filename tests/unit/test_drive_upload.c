/* test_drive_upload.c — drive_upload() edge cases that need a Drive: the
 * emulator's base URL comes from VECTUR_TEST_ENDPOINT (set by
 * tests/integration/test_drive_upload_c.py); without it every test prints
 * "skipped" and passes, so `make unit` works anywhere. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "drive.h"
#include "t.h"

static struct drive_client *dc;
static struct drive_file root;

static int setup(const char *endpoint)
{
	char dir[] = "/tmp/vectur-upload-test.XXXXXX", conf[256];
	struct drive_config cfg;
	struct drive_client_opts o = {0};
	struct drive_err err;
	FILE *f;

	if (!mkdtemp(dir))
		return -1;
	snprintf(conf, sizeof(conf), "%s/rclone.conf", dir);
	f = fopen(conf, "w");
	if (!f)
		return -1;
	fprintf(f, "[emu]\ntype = drive\ntoken = {\"access_token\":\"x\","
		   "\"token_type\":\"Bearer\",\"refresh_token\":"
		   "\"test-refresh-token\",\"expiry\":\"2000-01-01T00:00:00Z\"}"
		   "\n");
	fclose(f);
	o.endpoint = endpoint;
	if (drive_config_load(conf, "emu", &cfg, &err) < 0 ||
	    drive_client_new(&dc, &cfg, &o, &err) < 0 ||
	    drive_root(dc, &root, &err) < 0) {
		fprintf(stderr, "setup: %s\n", err.message);
		return -1;
	}
	drive_config_free(&cfg);
	unlink(conf);
	rmdir(dir);
	return 0;
}

static int temp_file_with(const char *text)
{
	char path[] = "/tmp/vectur-upload-src.XXXXXX";
	int fd = mkstemp(path);

	if (fd < 0)
		return -1;
	unlink(path);
	if (write(fd, text, strlen(text)) != (ssize_t)strlen(text)) {
		close(fd);
		return -1;
	}
	return fd;
}

/* A caller that updates a file with the id from its last answer passes an
 * id living inside `out`; drive_upload clears `out` first and used to lose
 * the id ("need fd, size and either id or parent and name"). */
static void test_update_with_the_id_held_in_out(void)
{
	struct drive_upload up = {0};
	struct drive_file out;
	struct drive_err err;
	int fd = temp_file_with("first version");

	CHECK(fd >= 0);
	up.fd = fd;
	up.size = 13;
	up.parent = root.id;
	up.name = "id-in-out.txt";
	CHECK(drive_upload(dc, &up, &out, &err) == 0);
	close(fd);

	fd = temp_file_with("second, longer version");
	memset(&up, 0, sizeof(up));
	up.fd = fd;
	up.size = 22;
	up.id = out.id;
	if (drive_upload(dc, &up, &out, &err) < 0)
		fprintf(stderr, "update: %s\n", err.message);
	CHECK_INT(out.size, 22);
	CHECK(out.id[0] != '\0');
	CHECK(up.id == out.id); /* the caller's struct is left as it was */
	close(fd);
}

int main(void)
{
	const char *endpoint = getenv("VECTUR_TEST_ENDPOINT");

	if (!endpoint || !*endpoint) {
		printf("skipped (VECTUR_TEST_ENDPOINT not set)\n");
		return t_done();
	}
	if (setup(endpoint) < 0)
		return 1;
	RUN(test_update_with_the_id_held_in_out);
	drive_client_free(dc);
	return t_done();
}
