// Criterion tests for the generator's C host (gen/host.c): Markdown rendering,
// atomic writes, mkdir -p, the embedded Lua state, and loom_main's exit codes.
// Run from the repository root (tests/run_all.sh does), so specs/ is reachable.
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "host.h"

/* ---- helpers -------------------------------------------------------------- */

static char made_dirs[4][64];
static int n_made_dirs;

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st; (void)flag; (void)ftw;
    return remove(path);
}

// Removed when the test's process exits (Criterion forks one per test).
static void remove_temp_dirs(void) {
    for (int i = 0; i < n_made_dirs; i++) nftw(made_dirs[i], remove_entry, 8, FTW_DEPTH | FTW_PHYS);
}

// A fresh empty directory under /tmp.
static char *temp_dir(void) {
    cr_assert(n_made_dirs < 4);
    char *dir = made_dirs[n_made_dirs++];
    strcpy(dir, "/tmp/loom_test_host.XXXXXX");
    cr_assert_not_null(mkdtemp(dir), "mkdtemp: %s", strerror(errno));
    if (n_made_dirs == 1) atexit(remove_temp_dirs);
    return dir;
}

static char *read_file(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    static char buf[1 << 16];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = 0;
    fclose(f);
    char *s = malloc(n + 1);
    memcpy(s, buf, n + 1);
    return s;
}

static int count_entries(const char *dir) {
    DIR *d = opendir(dir);
    cr_assert_not_null(d);
    int n = 0;
    for (struct dirent *e; (e = readdir(d));)
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) n++;
    closedir(d);
    return n;
}

// Runs loom_main with `args` (NULL-terminated, without argv[0]); captures what
// it writes to stdout and stderr (malloc'd, caller frees).
static int run_loom(const char **args, char **out, char **err) {
    char *dir = temp_dir();
    char out_path[128], err_path[128];
    snprintf(out_path, sizeof out_path, "%s/stdout", dir);
    snprintf(err_path, sizeof err_path, "%s/stderr", dir);
    char *argv[16] = {"loom"};
    int argc = 1;
    for (; args[argc - 1]; argc++) argv[argc] = (char *)args[argc - 1];
    argv[argc] = NULL;

    fflush(stdout);
    fflush(stderr);
    int saved_out = dup(1), saved_err = dup(2);
    int fo = open(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    int fe = open(err_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    cr_assert(fo >= 0 && fe >= 0);
    dup2(fo, 1);
    dup2(fe, 2);
    int code = loom_main(argc, argv);
    fflush(stdout);
    fflush(stderr);
    dup2(saved_out, 1);
    dup2(saved_err, 2);
    close(fo); close(fe); close(saved_out); close(saved_err);
    *out = read_file(out_path);
    *err = read_file(err_path);
    cr_assert(*out && *err);
    return code;
}

/* ---- Markdown → HTML ------------------------------------------------------- */

Test(markdown, renders_table) {
    char *html = loom_markdown_to_html("# T\n\n| a | b |\n| --- | --- |\n| 1 | 2 |\n", 36);
    cr_assert_not_null(html);
    cr_assert(strstr(html, "<h1>T</h1>") != NULL);
    cr_assert(strstr(html, "<td>1</td>") != NULL, "%s", html);
    free(html);
}

Test(markdown, table_header_alignment_and_inline_markup) {
    const char *md =
        "| layer | params |\n"
        "| :--- | ---: |\n"
        "| `net.0` | 200,960 |\n"
        "| a < b & c | **2** |\n";
    char *html = loom_markdown_to_html(md, strlen(md));
    cr_assert_not_null(html);
    cr_assert(strstr(html, "<table>") != NULL, "%s", html);
    cr_assert(strstr(html, "<th align=\"left\">layer</th>") != NULL, "%s", html);
    cr_assert(strstr(html, "<th align=\"right\">params</th>") != NULL, "%s", html);
    cr_assert(strstr(html, "<code>net.0</code>") != NULL, "%s", html);
    cr_assert(strstr(html, "<td align=\"right\">200,960</td>") != NULL, "%s", html);
    cr_assert(strstr(html, "a &lt; b &amp; c") != NULL, "text is escaped: %s", html);
    cr_assert(strstr(html, "<strong>2</strong>") != NULL, "%s", html);
    free(html);
}

Test(markdown, plain_text_without_table_stays_paragraph) {
    const char *md = "a | b\n";
    char *html = loom_markdown_to_html(md, strlen(md));
    cr_assert_not_null(html);
    cr_assert_str_eq(html, "<p>a | b</p>\n");
    free(html);
}

/* ---- loom_write_file_atomic ------------------------------------------------ */

Test(write_file_atomic, writes_the_bytes) {
    char *dir = temp_dir();
    char path[128], err[256] = "";
    snprintf(path, sizeof path, "%s/REPORT.md", dir);
    const char data[] = "hello\0world";   // binary-safe: the NUL is written too
    cr_assert_eq(loom_write_file_atomic(path, data, sizeof data - 1, err, sizeof err), 0, "%s", err);
    struct stat st;
    cr_assert_eq(stat(path, &st), 0);
    cr_assert_eq(st.st_size, (off_t)(sizeof data - 1));
    char *got = read_file(path);
    cr_assert(memcmp(got, data, sizeof data - 1) == 0);
    free(got);
}

Test(write_file_atomic, replaces_and_leaves_no_temp_file) {
    char *dir = temp_dir();
    char path[128], err[256] = "";
    snprintf(path, sizeof path, "%s/out.txt", dir);
    cr_assert_eq(loom_write_file_atomic(path, "first version, long\n", 20, err, sizeof err), 0, "%s", err);
    cr_assert_eq(loom_write_file_atomic(path, "second\n", 7, err, sizeof err), 0, "%s", err);
    char *got = read_file(path);
    cr_assert_str_eq(got, "second\n");
    free(got);
    cr_assert_eq(count_entries(dir), 1, "only out.txt is left in %s", dir);
}

Test(write_file_atomic, empty_file) {
    char *dir = temp_dir();
    char path[128], err[256] = "";
    snprintf(path, sizeof path, "%s/empty", dir);
    cr_assert_eq(loom_write_file_atomic(path, "", 0, err, sizeof err), 0, "%s", err);
    struct stat st;
    cr_assert_eq(stat(path, &st), 0);
    cr_assert_eq(st.st_size, 0);
}

Test(write_file_atomic, missing_directory_fails_naming_the_path) {
    char *dir = temp_dir();
    char path[160], err[256] = "";
    snprintf(path, sizeof path, "%s/no/such/dir/REPORT.md", dir);
    cr_assert_eq(loom_write_file_atomic(path, "x", 1, err, sizeof err), -1);
    cr_assert(strstr(err, path) != NULL, "message names the path: '%s'", err);
    cr_assert(strstr(err, "No such file or directory") != NULL, "message says why: '%s'", err);
    cr_assert_eq(count_entries(dir), 0, "nothing is left behind");
}

Test(write_file_atomic, onto_a_directory_fails_and_cleans_up) {
    char *dir = temp_dir();
    char path[128], err[256] = "";
    snprintf(path, sizeof path, "%s/sub", dir);
    cr_assert_eq(mkdir(path, 0777), 0);
    cr_assert_eq(loom_write_file_atomic(path, "x", 1, err, sizeof err), -1);
    cr_assert(strstr(err, path) != NULL, "'%s'", err);
    cr_assert_eq(count_entries(dir), 1, "no temporary file is left next to %s", path);
}

/* ---- loom_mkdir_p ----------------------------------------------------------- */

Test(mkdir_p, creates_nested_directories) {
    char *dir = temp_dir();
    char path[160];
    snprintf(path, sizeof path, "%s/a/b/c", dir);
    cr_assert_eq(loom_mkdir_p(path), 0, "%s", strerror(errno));
    struct stat st;
    cr_assert_eq(stat(path, &st), 0);
    cr_assert(S_ISDIR(st.st_mode));
}

Test(mkdir_p, existing_directory_and_trailing_slash_are_fine) {
    char *dir = temp_dir();
    char path[160];
    cr_assert_eq(loom_mkdir_p(dir), 0);
    snprintf(path, sizeof path, "%s/x/", dir);
    cr_assert_eq(loom_mkdir_p(path), 0, "%s", strerror(errno));
    cr_assert_eq(loom_mkdir_p(path), 0, "%s", strerror(errno));
    struct stat st;
    cr_assert_eq(stat(path, &st), 0);
    cr_assert(S_ISDIR(st.st_mode));
}

Test(mkdir_p, relative_path) {
    char *dir = temp_dir();
    char cwd[4096];
    cr_assert_not_null(getcwd(cwd, sizeof cwd));
    cr_assert_eq(chdir(dir), 0);
    int rc = loom_mkdir_p("rel/one");
    int e = errno;
    struct stat st;
    int st_rc = stat("rel/one", &st);
    cr_assert_eq(chdir(cwd), 0);
    cr_assert_eq(rc, 0, "%s", strerror(e));
    cr_assert_eq(st_rc, 0);
}

Test(mkdir_p, fails_when_a_component_is_a_file) {
    char *dir = temp_dir();
    char file[128], path[160], err[256];
    snprintf(file, sizeof file, "%s/file", dir);
    cr_assert_eq(loom_write_file_atomic(file, "x", 1, err, sizeof err), 0, "%s", err);
    snprintf(path, sizeof path, "%s/file/sub", dir);
    errno = 0;
    cr_assert_eq(loom_mkdir_p(path), -1);
    cr_assert_eq(errno, ENOTDIR, "errno %d (%s)", errno, strerror(errno));
}

Test(mkdir_p, empty_path_fails) {
    cr_assert_eq(loom_mkdir_p(""), -1);
}

/* ---- the Lua state ------------------------------------------------------------ */

Test(state, has_generator_modules_and_loomc) {
    lua_State *L = loom_new_state();
    cr_assert_not_null(L);
    const char *code =
        "local loomc = require 'loomc'\n"
        "local util = require 'util'\n"
        "return loomc.markdown_to_html('*a*') .. util.commas(1234567)";
    cr_assert_eq(luaL_dostring(L, code), LUA_OK, "%s", lua_tostring(L, -1));
    cr_assert_str_eq(lua_tostring(L, -1), "<p><em>a</em></p>\n1,234,567");
    lua_close(L);
}

/* ---- loom_main ----------------------------------------------------------------- */

Test(loom_main, help_exits_0_and_prints_usage) {
    char *out, *err;
    int code = run_loom((const char *[]){"--help", NULL}, &out, &err);
    cr_assert_eq(code, 0, "stderr: %s", err);
    cr_assert(strstr(out, "usage: loom") != NULL, "%s", out);
    cr_assert_str_eq(err, "");
}

Test(loom_main, no_arguments_exits_2_with_usage) {
    char *out, *err;
    int code = run_loom((const char *[]){NULL}, &out, &err);
    cr_assert_eq(code, 2);
    cr_assert(strstr(err, "usage: loom") != NULL, "%s", err);
}

Test(loom_main, unknown_command_exits_2) {
    char *out, *err;
    int code = run_loom((const char *[]){"inpsect", "specs/fashion_mlp.lua", NULL}, &out, &err);
    cr_assert_eq(code, 2, "stderr: %s", err);
    cr_assert(strstr(err, "unknown command 'inpsect'") != NULL, "%s", err);
    cr_assert(strstr(err, "did you mean 'inspect'") != NULL, "%s", err);
    cr_assert(strstr(err, "traceback") == NULL, "%s", err);
}

Test(loom_main, unknown_option_exits_2) {
    char *out, *err;
    int code = run_loom((const char *[]){"inspect", "--frobnicate", "specs/fashion_mlp.lua", NULL}, &out, &err);
    cr_assert_eq(code, 2, "stderr: %s", err);
    cr_assert(strstr(err, "unknown option '--frobnicate'") != NULL, "%s", err);
}

Test(loom_main, missing_spec_file_exits_2_naming_it) {
    char *out, *err;
    int code = run_loom((const char *[]){"inspect", "specs/no_such_spec.lua", NULL}, &out, &err);
    cr_assert_eq(code, 2, "stderr: %s", err);
    cr_assert(strstr(err, "specs/no_such_spec.lua") != NULL, "%s", err);
    cr_assert(strstr(err, "No such file or directory") != NULL, "%s", err);
    cr_assert(strstr(err, "internal error") == NULL && strstr(err, "traceback") == NULL, "%s", err);
    cr_assert_str_eq(out, "");
}

Test(loom_main, broken_spec_exits_2_with_file_and_line) {
    char *out, *err;
    int code = run_loom((const char *[]){"inspect", "tests/spec_fail/linear_features.lua", NULL}, &out, &err);
    cr_assert_eq(code, 2, "stderr: %s", err);
    const char *want = "tests/spec_fail/linear_features.lua:6: "
                       "Linear(8000, 128) expects 8000 input features, gets 8192 (128×8×8)\n";
    cr_assert(strncmp(err, want, strlen(want)) == 0, "%s", err);
    cr_assert(strstr(err, "traceback") == NULL, "%s", err);
}

Test(loom_main, inspect_fashion_mlp_exits_0) {
    char *out, *err;
    int code = run_loom((const char *[]){"inspect", "specs/fashion_mlp.lua", NULL}, &out, &err);
    cr_assert_eq(code, 0, "stderr: %s", err);
    cr_assert(strstr(out, "FashionMLP(") != NULL, "%s", out);
    cr_assert(strstr(out, "(1): Linear(in_features=784, out_features=256, bias=True)") != NULL, "%s", out);
    cr_assert_str_eq(err, "");
}

Test(loom_main, explain_writes_the_report) {
    char *dir = temp_dir();
    char *out, *err;
    char md[128], html[128];
    int code = run_loom((const char *[]){"explain", "specs/fashion_mlp.lua", "-o", dir, NULL}, &out, &err);
    cr_assert_eq(code, 0, "stderr: %s", err);
    snprintf(md, sizeof md, "%s/REPORT.md", dir);
    snprintf(html, sizeof html, "%s/REPORT.html", dir);
    char *m = read_file(md), *h = read_file(html);
    cr_assert(m && h);
    cr_assert(strstr(h, "<table>") != NULL);
    free(m); free(h);
}
