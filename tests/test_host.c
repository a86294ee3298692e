// Criterion tests for the generator's C host (gen/host.c).  (filled in below)
#include <criterion/criterion.h>
#include "host.h"

Test(host, markdown_renders_table) {
    char *html = loom_markdown_to_html("# T\n\n| a | b |\n| --- | --- |\n| 1 | 2 |\n", 36);
    cr_assert_not_null(html);
    cr_assert(strstr(html, "<h1>T</h1>") != NULL);
    cr_assert(strstr(html, "<td>1</td>") != NULL, "%s", html);
    free(html);
}
