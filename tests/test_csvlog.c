// Criterion tests of runtime/csvlog: the files Lightning's CSVLogger would write.
#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../runtime/csvlog.h"

static char dir[64];
static void make_dir(void) {
    strcpy(dir, "/tmp/loom_test_csvlog_XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
}
static void remove_dir(void) {
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    cr_expect_eq(system(cmd), 0);
}
TestSuite(csvlog, .init = make_dir, .fini = remove_dir);

static char *slurp(const char *path) {
    static char buf[8192];
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = 0;
    fclose(f);
    return buf;
}

static char *file_in(const csvlog *log, const char *name) {
    static char p[512];
    snprintf(p, sizeof p, "%s/%s", log->dir, name);
    return p;
}

Test(csvlog, python_float_repr) {
    struct { double v; const char *s; } cases[] = {
        {0.1, "0.1"}, {1.0, "1.0"}, {0.0, "0.0"}, {-0.0, "-0.0"}, {1e-05, "1e-05"}, {0.0001, "0.0001"},
        {1e16, "1e+16"}, {1e15, "1000000000000000.0"}, {123.456, "123.456"}, {1.5e-7, "1.5e-07"},
        {2.5e100, "2.5e+100"}, {1.0 / 3, "0.3333333333333333"}, {(double)0.1f, "0.10000000149011612"},
        {-2.75, "-2.75"}, {5e-324, "5e-324"}, {1.7976931348623157e308, "1.7976931348623157e+308"},
        {12345678901234567890.0, "1.2345678901234567e+19"},
    };
    char buf[32];
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
        cr_expect_str_eq(csvlog_format_float(buf, cases[i].v), cases[i].s);
    cr_expect_str_eq(csvlog_format_float(buf, 0.0 / 0.0), "nan");
    cr_expect_str_eq(csvlog_format_float(buf, -1.0 / 0.0), "-inf");
}

Test(csvlog, writes_lightning_layout) {
    csvlog log;
    cr_assert_eq(csvlog_open(&log, dir, "lightning_logs", -1, 0), 0, "%s", log.err);
    cr_expect_eq(log.version, 0);
    char want_dir[256];
    snprintf(want_dir, sizeof want_dir, "%s/lightning_logs/version_0", dir);
    cr_expect_str_eq(log.dir, want_dir);
    cr_assert_eq(csvlog_log1(&log, 0, 0, "train/loss", 2.5), 0);
    cr_assert_eq(csvlog_log1(&log, 1, 0, "train/loss", 0.125), 0);
    const char *keys[] = {"val/loss", "val/acc"};
    double vals[] = {0.5, 0.75};
    cr_assert_eq(csvlog_log(&log, 1, 0, keys, vals, 2), 0);
    cr_assert_eq(csvlog_hparam_f64(&log, "lr", 1e-05), 0);
    cr_assert_eq(csvlog_hparam_i64(&log, "batch_size", 64), 0);
    cr_assert_eq(csvlog_hparam_str(&log, "model", "PawModel"), 0);
    cr_assert_eq(csvlog_hparam_str(&log, "precision", "bf16-mixed"), 0);
    cr_assert_eq(csvlog_hparam_str(&log, "note", "it's yes"), 0);
    cr_assert_eq(csvlog_hparam_bool(&log, "compile", 0), 0);
    cr_assert_eq(csvlog_close(&log), 0, "%s", log.err);
    char p[512];
    snprintf(p, sizeof p, "%s/metrics.csv", want_dir);
    cr_expect_str_eq(slurp(p), "epoch,step,train/loss,val/acc,val/loss\r\n"
                               "0,0,2.5,,\r\n"
                               "0,1,0.125,,\r\n"
                               "0,1,,0.75,0.5\r\n");
    snprintf(p, sizeof p, "%s/hparams.yaml", want_dir);
    cr_expect_str_eq(slurp(p), "batch_size: 64\n"
                               "compile: false\n"
                               "lr: 1.0e-05\n"
                               "model: PawModel\n"
                               "note: 'it''s yes'\n"
                               "precision: bf16-mixed\n");
}

Test(csvlog, new_key_rewrites_header) {
    csvlog log;
    cr_assert_eq(csvlog_open(&log, dir, "run", -1, 2), 0, "%s", log.err);   // flush every 2 steps
    cr_assert_eq(csvlog_log1(&log, 0, 0, "loss", 1.0), 0);
    cr_assert_eq(csvlog_log1(&log, 1, 0, "loss", 0.5), 0);   // (1+1) % 2 == 0: saved
    cr_expect_str_eq(slurp(file_in(&log, "metrics.csv")), "epoch,loss,step\r\n0,1.0,0\r\n0,0.5,1\r\n");
    cr_assert_eq(csvlog_log1(&log, 2, 1, "loss", 0.25), 0);   // not saved yet
    cr_expect_str_eq(slurp(file_in(&log, "metrics.csv")), "epoch,loss,step\r\n0,1.0,0\r\n0,0.5,1\r\n");
    cr_assert_eq(csvlog_log1(&log, 3, 1, "acc,top1", 0.9), 0);   // a new key (which needs quoting): rewrite
    cr_expect_str_eq(slurp(file_in(&log, "metrics.csv")),
                     "\"acc,top1\",epoch,loss,step\r\n,0,1.0,0\r\n,0,0.5,1\r\n,1,0.25,2\r\n0.9,1,,3\r\n");
    cr_assert_eq(csvlog_log1(&log, 4, -1, "loss", 0.125), 0);   // no epoch cell
    cr_assert_eq(csvlog_close(&log), 0, "%s", log.err);
    char p[512];
    snprintf(p, sizeof p, "%s/run/version_0/metrics.csv", dir);
    cr_expect_str_eq(slurp(p), "\"acc,top1\",epoch,loss,step\r\n,0,1.0,0\r\n,0,0.5,1\r\n,1,0.25,2\r\n0.9,1,,3\r\n,,0.125,4\r\n");
    snprintf(p, sizeof p, "%s/run/version_0/hparams.yaml", dir);
    cr_expect_str_eq(slurp(p), "{}\n");
}

Test(csvlog, versions_increment) {
    char p[256];
    for (int i = 0; i < 3; i++) {
        csvlog log;
        cr_assert_eq(csvlog_open(&log, dir, "exp", -1, 0), 0, "%s", log.err);
        cr_expect_eq(log.version, i);
        csvlog_close(&log);
    }
    // Lightning takes one past the largest, not the first gap; files and odd names do not count
    snprintf(p, sizeof p, "%s/exp/version_7", dir);
    cr_assert_eq(mkdir(p, 0777), 0);
    snprintf(p, sizeof p, "%s/exp/version_99", dir);
    fclose(fopen(p, "w"));
    snprintf(p, sizeof p, "%s/exp/version_x", dir);
    cr_assert_eq(mkdir(p, 0777), 0);
    csvlog log;
    cr_assert_eq(csvlog_open(&log, dir, "exp", -1, 0), 0, "%s", log.err);
    cr_expect_eq(log.version, 8);
    csvlog_close(&log);
    cr_assert_eq(csvlog_open(&log, dir, "exp", 3, 0), 0, "%s", log.err);   // explicit version
    cr_expect_eq(log.version, 3);
    csvlog_close(&log);
}

// Python's csv module (what pandas.read_csv agrees with here) reads the file back.
Test(csvlog, python_reads_it, .timeout = 60) {
    if (system("python3 -c 'import csv' >/dev/null 2>&1") != 0) cr_skip_test("no python3");
    csvlog log;
    cr_assert_eq(csvlog_open(&log, dir, "py", -1, 0), 0, "%s", log.err);
    csvlog_log1(&log, 0, 0, "train/loss", 0.1);
    csvlog_log1(&log, 1, 0, "val/acc", 1e-05);
    csvlog_close(&log);
    char cmd[512], out[512] = {0};
    snprintf(cmd, sizeof cmd, "python3 -c \"import csv,sys; r=list(csv.DictReader(open(sys.argv[1], newline='')));"
                              "print([(k, float(v)) for row in r for k, v in sorted(row.items()) if v])\" '%s/py/version_0/metrics.csv'", dir);
    FILE *p = popen(cmd, "r");
    cr_assert_not_null(p);
    size_t n = fread(out, 1, sizeof out - 1, p);
    out[n] = 0;
    cr_assert_eq(pclose(p), 0);
    cr_expect_str_eq(out, "[('epoch', 0.0), ('step', 0.0), ('train/loss', 0.1), ('epoch', 0.0), ('step', 1.0), ('val/acc', 1e-05)]\n");
}
