// A C++ program using an exported library (loom export) through its header, for
// tests/suite_export.sh.  Compiled with -DNAME=<the library's name> against
// DIR/NAME.h and DIR/libNAME.a:
//
//   g++ -std=c++17 -DNAME=fashion_cnn -DNAME_UPPER=FASHION_CNN -IDIR tests/harness/export_use.cpp DIR/libfashion_cnn.a ...
//   ./export_use WEIGHTS THREADS FUZZ_RUNS [OTHER_WEIGHTS]
//
// Linked with -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc,--wrap=posix_memalign,--wrap=mmap
// (WRAPPED defined): the library's allocations go through this file, which can make
// the n-th of them fail.
//
// Prints TAP lines:
//   threads: THREADS threads call forward concurrently on one opened model, 20 times
//     each, on batches of 1..MAX_BATCH samples; every output equals, bit for bit, the
//     single-threaded forward of the same batch;
//   errors: bad arguments (NULL model, arrays, batch 0, -1, MAX_BATCH + 1, an index
//     input out of range) return EARG with a message, never crash;
//   fuzz: FUZZ_RUNS calls with random batch sizes (in range and not), random bytes as
//     float inputs (NaN, Inf included) and random int64 values: each returns OK or EARG;
//   checkpoints (OTHER_WEIGHTS given): another model's checkpoint, a truncated one and a
//     corrupt header return EFORMAT/EIO with a message naming the file;
//   out of memory (WRAPPED): open + forward at MAX_BATCH + close, in a fresh thread (its
//     kernels' thread-local buffers empty), with the n-th allocation failing, for every n
//     up to the count such a run makes: each returns OK or ENOMEM with a message, and
//     the process goes on.
// The library maps its weights read-only once loaded: a forward that wrote one (a
// running statistic, say) would fault here.
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstdio>
#include <cstring>
#include <atomic>
#include <fstream>
#include <random>
#include <string>
#include <sys/mman.h>
#include <thread>
#include <vector>

#define CAT2(a, b) a##b
#define CAT(a, b) CAT2(a, b)
#define STR2(a) #a
#define STR(a) STR2(a)
#define FN(x) CAT(NAME, x)
#include STR(NAME.h)

typedef FN(_model) model_t;
typedef FN(_tensor_desc) desc_t;
#define UP_(x) CAT(NAME_UPPER, x)

#ifdef WRAPPED
// allocation failure injection: when fail_at > 0, the fail_at-th allocation from then on
// returns NULL (counted in `allocations` either way)
static std::atomic<long> allocations{0}, fail_at{0};
static bool fail_now() {
    long n = ++allocations;
    if (fail_at > 0 && n == fail_at) { errno = ENOMEM; return true; }
    return false;
}
extern "C" {
void *__real_malloc(size_t);
void *__real_calloc(size_t, size_t);
void *__real_realloc(void *, size_t);
int __real_posix_memalign(void **, size_t, size_t);
void *__real_mmap(void *, size_t, int, int, int, off_t);
void *__wrap_malloc(size_t n) { return fail_now() ? nullptr : __real_malloc(n); }
void *__wrap_calloc(size_t n, size_t k) { return fail_now() ? nullptr : __real_calloc(n, k); }
void *__wrap_realloc(void *p, size_t n) { return fail_now() ? nullptr : __real_realloc(p, n); }
int __wrap_posix_memalign(void **p, size_t a, size_t n) { return fail_now() ? ENOMEM : __real_posix_memalign(p, a, n); }
void *__wrap_mmap(void *a, size_t n, int prot, int flags, int fd, off_t off) {
    return fail_now() ? MAP_FAILED : __real_mmap(a, n, prot, flags, fd, off);
}
}
#endif

static size_t esize(int dt) { return dt == 0 ? 4 : 8; }

struct Batch {
    std::vector<std::vector<unsigned char>> in, out;
    std::vector<const void *> inp;
    std::vector<void *> outp;
    Batch(int B, int nin, int nout) {
        for (int i = 0; i < nin; i++) in.emplace_back((size_t)B * FN(_input)(i)->per_sample * esize(FN(_input)(i)->dtype));
        for (int i = 0; i < nout; i++) out.emplace_back((size_t)B * FN(_output)(i)->per_sample * esize(FN(_output)(i)->dtype));
        for (auto &v : in) inp.push_back(v.data());
        for (auto &v : out) outp.push_back(v.data());
    }
};

// valid random inputs (floats normal, ints in range)
static void fill(Batch &b, int B, std::mt19937_64 &rng, int nin) {
    std::normal_distribution<double> nd;
    for (int i = 0; i < nin; i++) {
        const desc_t *d = FN(_input)(i);
        size_t n = (size_t)B * d->per_sample;
        for (size_t j = 0; j < n; j++) {
            if (d->dtype == 2) ((int64_t *)b.in[i].data())[j] = d->high > 0 ? (int64_t)(rng() % (uint64_t)d->high) : 0;
            else if (d->dtype == 0) ((float *)b.in[i].data())[j] = (float)nd(rng);
            else ((double *)b.in[i].data())[j] = nd(rng);
        }
    }
}

int main(int argc, char **argv) {
    if (argc != 4 && argc != 5) { std::fprintf(stderr, "usage: export_use WEIGHTS THREADS FUZZ_RUNS [OTHER_WEIGHTS]\n"); return 2; }
    int threads = std::atoi(argv[2]), fuzz = std::atoi(argv[3]);
    const int maxb = UP_(_MAX_BATCH), nin = UP_(_NUM_INPUTS), nout = UP_(_NUM_OUTPUTS);
    char err[UP_(_ERR_LEN)];
    model_t *m = nullptr;
    if (FN(_open)(&m, argv[1], err, sizeof err)) { std::printf("not ok open: %s\n", err); return 1; }

    // threads: the reference first, one thread
    std::mt19937_64 rng(1);
    const int per_thread = 20;
    std::vector<Batch> batches, refs;
    std::vector<int> sizes;
    for (int t = 0; t < threads * per_thread; t++) {
        int B = 1 + (int)(rng() % (uint64_t)maxb);
        sizes.push_back(B);
        batches.emplace_back(B, nin, nout);
        fill(batches.back(), B, rng, nin);
        refs.emplace_back(B, nin, nout);
        refs.back().inp = batches.back().inp;
        if (FN(_forward_arrays)(m, B, refs.back().inp.data(), refs.back().outp.data(), err, sizeof err)) {
            std::printf("not ok threads: %s\n", err);
            return 1;
        }
    }
    std::vector<int> bad(threads, 0);
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; t++)
        pool.emplace_back([&, t] {
            char e[UP_(_ERR_LEN)];
            for (int k = 0; k < per_thread; k++) {
                int i = t * per_thread + k;
                Batch &b = batches[i];
                if (FN(_forward_arrays)(m, sizes[i], b.inp.data(), b.outp.data(), e, sizeof e)) { bad[t]++; continue; }
                for (int o = 0; o < nout; o++)
                    if (std::memcmp(b.out[o].data(), refs[i].out[o].data(), b.out[o].size())) bad[t]++;
            }
        });
    for (auto &th : pool) th.join();
    int nbad = 0;
    for (int x : bad) nbad += x;
    if (nbad) std::printf("not ok threads: %d of %d concurrent calls differ from the single-threaded ones\n", nbad, threads * per_thread);
    else std::printf("ok threads: %d threads x %d calls, outputs equal to one thread's bit for bit\n", threads, per_thread);

    // errors
    Batch one(1, nin, nout);
    fill(one, 1, rng, nin);
    int errors_ok = 1;
    auto expect_earg = [&](int rc, const char *what) {
        if (rc != UP_(_EARG) || !err[0]) { std::printf("# %s: returned %d (%s)\n", what, rc, err); errors_ok = 0; }
        err[0] = 0;
    };
    err[0] = 0;
    expect_earg(FN(_forward_arrays)(nullptr, 1, one.inp.data(), one.outp.data(), err, sizeof err), "NULL model");
    expect_earg(FN(_forward_arrays)(m, 0, one.inp.data(), one.outp.data(), err, sizeof err), "batch 0");
    expect_earg(FN(_forward_arrays)(m, -1, one.inp.data(), one.outp.data(), err, sizeof err), "batch -1");
    expect_earg(FN(_forward_arrays)(m, maxb + 1, one.inp.data(), one.outp.data(), err, sizeof err), "batch MAX + 1");
    expect_earg(FN(_forward_arrays)(m, 1, nullptr, one.outp.data(), err, sizeof err), "NULL inputs");
    expect_earg(FN(_forward_arrays)(m, 1, one.inp.data(), nullptr, err, sizeof err), "NULL outputs");
    std::vector<const void *> nulls(nin, nullptr);
    expect_earg(FN(_forward_arrays)(m, 1, nulls.data(), one.outp.data(), err, sizeof err), "a NULL input");
    model_t *none = nullptr;
    int rc = FN(_open)(&none, "/nonexistent/weights.safetensors", err, sizeof err);
    if (rc != UP_(_EIO) || none) { std::printf("# open of a missing file: %d\n", rc); errors_ok = 0; }
    FN(_close)(nullptr);
    std::printf("%s errors: bad arguments return an error value with a message\n", errors_ok ? "ok" : "not ok");

    // fuzz: random batch sizes and random bits
    int ran = 0, ok_calls = 0, refused = 0, wrong = 0;
    Batch big(maxb, nin, nout);
    for (int r = 0; r < fuzz; r++) {
        int B = (int)(rng() % (uint64_t)(maxb + 3)) - 1;
        for (int i = 0; i < nin; i++) {
            const desc_t *d = FN(_input)(i);
            size_t n = big.in[i].size() / 8;
            uint64_t *p = (uint64_t *)big.in[i].data();
            for (size_t j = 0; j < n; j++) {
                uint64_t v = rng();
                // int inputs: mostly in range, sometimes anything
                if (d->dtype == 2 && d->high > 0 && (r % 4)) v %= (uint64_t)d->high;
                p[j] = v;
            }
        }
        rc = FN(_forward_arrays)(m, B, big.inp.data(), big.outp.data(), err, sizeof err);
        ran++;
        if (rc == 0) ok_calls++;
        else if (rc == UP_(_EARG)) refused++;
        else wrong++;
    }
    if (wrong) std::printf("not ok fuzz: %d of %d calls returned something else than OK or EARG\n", wrong, ran);
    else std::printf("ok fuzz: %d calls with random batch sizes and bits (%d ran, %d refused), no crash\n", ran, ok_calls, refused);
    FN(_close)(m);

    if (argc == 5) {
        // checkpoints: another model's, truncated, a corrupt header
        int cks_ok = 1;
        auto refused_with = [&](const char *path, const char *what) {
            model_t *x = nullptr;
            err[0] = 0;
            int r = FN(_open)(&x, path, err, sizeof err);
            if ((r != UP_(_EFORMAT) && r != UP_(_EIO)) || x || !std::strstr(err, path)) {
                std::printf("# %s: returned %d, '%s'\n", what, r, err);
                cks_ok = 0;
            }
            if (x) FN(_close)(x);
        };
        refused_with(argv[4], "another model's checkpoint");
        std::ifstream in(argv[1], std::ios::binary);
        std::string blob((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
        std::string cut = std::string(argv[1]) + ".cut.safetensors", bad = std::string(argv[1]) + ".bad.safetensors";
        std::ofstream(cut, std::ios::binary) << blob.substr(0, blob.size() - 100);
        std::string corrupt = blob;
        for (size_t i = 12; i < 40 && i < corrupt.size(); i++) corrupt[i] = '#';
        std::ofstream(bad, std::ios::binary) << corrupt;
        refused_with(cut.c_str(), "a truncated checkpoint");
        refused_with(bad.c_str(), "a corrupt header");
        std::remove(cut.c_str());
        std::remove(bad.c_str());
        std::printf("%s checkpoints: another model's, a truncated and a corrupt checkpoint return an error naming the file\n",
                    cks_ok ? "ok" : "not ok");
    }

#ifdef WRAPPED
    // out of memory at the n-th allocation, each run in a fresh thread
    auto run_once = [&](long n, int *rc_open, int *rc_fwd, std::string *msg) {
        std::thread th([&] {
            char e[UP_(_ERR_LEN)] = "";
            Batch b(maxb, nin, nout);
            std::mt19937_64 r(3);
            fill(b, maxb, r, nin);
            model_t *x = nullptr;
            allocations = 0;
            fail_at = n;
            *rc_open = FN(_open)(&x, argv[1], e, sizeof e);
            *rc_fwd = 1;
            if (*rc_open == 0) *rc_fwd = FN(_forward_arrays)(x, maxb, b.inp.data(), b.outp.data(), e, sizeof e);
            fail_at = 0;
            FN(_close)(x);
            *msg = e;
        });
        th.join();
    };
    int ro, rf;
    std::string msg;
    run_once(0, &ro, &rf, &msg);
    long total = allocations;
    int oom_ok = ro == 0 && rf == 0, in_open = 0, in_forward = 0, in_kernels = 0;
    if (!oom_ok) std::printf("# without a failure: open %d, forward %d: %s\n", ro, rf, msg.c_str());
    for (long n = 1; n <= total && oom_ok; n++) {
        run_once(n, &ro, &rf, &msg);
        if (ro == UP_(_ENOMEM) && !msg.empty()) in_open++;
        else if (ro == 0 && rf == UP_(_ENOMEM) && !msg.empty()) {
            in_forward++;
            if (msg.find("GEMM") != std::string::npos) in_kernels++;
        } else if (!(ro == 0 && rf == 0)) {
            std::printf("# allocation %ld failing: open %d, forward %d: '%s'\n", n, ro, rf, msg.c_str());
            oom_ok = 0;
        }
    }
    std::printf("%s out of memory: each of %ld allocations failing in turn returns ENOMEM with a message (%d in open, %d in forward, "
                "%d of them in a kernel), the process goes on\n", oom_ok ? "ok" : "not ok", total, in_open, in_forward, in_kernels);
#endif
    return 0;
}
