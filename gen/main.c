// loom: model + training spec → standalone C/CUDA training program.
#include "host.h"

int main(int argc, char **argv) { return loom_main(argc, argv); }
