// Prints a generated program's initial parameters (model_init with the seed given),
// one tensor a line: "name v0 v1 ...", for tests/torch/init.py.  Links with the
// program's model.c.
#include "model.h"

#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    if (argc != 2) { fprintf(stderr, "usage: init SEED\n"); return 2; }
    Model m;
    if (model_alloc(&m)) { fprintf(stderr, "init: out of memory\n"); return 1; }
    model_init(&m, (uint64_t)strtoull(argv[1], NULL, 10));
    for (int t = 0; t < NUM_PARAM_TENSORS; t++) {
        const tensor_info *ti = &model_param_info[t];
        printf("%s", ti->name);
        for (size_t i = 0; i < ti->numel; i++) printf(" %.9g", (double)m.params[ti->offset + i]);
        printf("\n");
    }
    model_free(&m);
    return 0;
}
