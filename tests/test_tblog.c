// Criterion tests of runtime/tblog: CRC-32C's check values and TFRecord's framing.
// (tests/suite_logging.sh reads whole event files with an independent reader.)
#include <criterion/criterion.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../runtime/tblog.h"

Test(tblog, crc32c_check_values) {
    cr_expect_eq(tblog_crc32c("123456789", 9), 0xE3069283u);   // the CRC-32C catalogue's check
    cr_expect_eq(tblog_crc32c("", 0), 0u);
    unsigned char zeros[32] = {0}, ones[32];
    memset(ones, 0xFF, sizeof ones);
    cr_expect_eq(tblog_crc32c(zeros, 32), 0x8A9136AAu);   // RFC 3720 B.4's test vectors
    cr_expect_eq(tblog_crc32c(ones, 32), 0x62A8AB43u);
    uint32_t c = tblog_crc32c("123456789", 9);
    cr_expect_eq(tblog_masked_crc("123456789", 9), ((c >> 15) | (c << 17)) + 0xA282EAD8u);
}

static unsigned char *slurp(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f);
    static unsigned char buf[65536];
    *n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    return buf;
}

Test(tblog, records_are_framed_and_flushed_on_request) {
    char dir[] = "/tmp/loom_test_tblog_XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    tblog t;
    cr_assert_eq(tblog_open(&t, dir, 1700000000.5), 0, "%s", t.err);
    char path[512];
    snprintf(path, sizeof path, "%s", t.path);
    size_t n;
    unsigned char *b = slurp(path, &n);
    // the file_version event: wall_time (field 1, 64-bit) and "brain.Event:2" (field 3)
    uint64_t len = 0;
    for (int i = 0; i < 8; i++) len |= (uint64_t)b[i] << (8 * i);
    cr_expect_eq(len, 9 + 2 + 13);
    cr_expect_eq(n, 16 + len);
    uint32_t crc;
    memcpy(&crc, b + 8, 4);
    cr_expect_eq(crc, tblog_masked_crc(b, 8));
    memcpy(&crc, b + 12 + len, 4);
    cr_expect_eq(crc, tblog_masked_crc(b + 12, len));
    cr_expect_eq(memcmp(b + 12 + 11, "brain.Event:2", 13), 0);
    // a scalar event stays in memory until flushed
    const char *tag = "train/loss";
    double v = 0.25;
    cr_assert_eq(tblog_scalars(&t, 7, 1700000001.0, &tag, &v, 1), 0);
    size_t before = n;
    slurp(path, &n);
    cr_expect_eq(n, before);
    cr_assert_eq(tblog_close(&t), 0, "%s", t.err);
    slurp(path, &n);
    cr_expect_gt(n, before);
    unlink(path);
    rmdir(dir);
}
