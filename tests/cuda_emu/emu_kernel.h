// cuda_emu: a host-compiled kernel, registered by name so that the emulated
// cuModuleGetFunction can find it.  A launch copies the arguments (as cuLaunchKernel
// copies kernel parameters) into a bound call, typed by the kernel's own signature.
#ifndef CUDA_EMU_KERNEL_H
#define CUDA_EMU_KERNEL_H
#include <stddef.h>
#include <tuple>
#include <type_traits>
#include <utility>

struct emu_bound_call {
    virtual ~emu_bound_call() {}
    virtual void call() = 0;
};

// checks that a pointer argument of a kernel points into device (or pinned) memory
extern "C" void emu_check_kernel_pointer(const char *kernel, int index, const void *p);

template <typename... A> struct emu_bound : emu_bound_call {
    void (*fn)(A...);
    std::tuple<typename std::decay<A>::type...> args;
    template <size_t... I> emu_bound(const char *name, void (*f)(A...), void **a, std::index_sequence<I...>)
        : fn(f), args(*(typename std::decay<A>::type *)a[I]...) {
        (check<I>(name), ...);
    }
    template <size_t I> void check(const char *name) {
        auto v = std::get<I>(args);
        if constexpr (std::is_pointer<decltype(v)>::value) emu_check_kernel_pointer(name, (int)I, (const void *)v);
        (void)name;
    }
    void call() override { std::apply(fn, args); }
};

// the modes of emu_shfl (emu_device.h)
enum { EMU_SHFL_IDX = 0, EMU_SHFL_XOR = 1, EMU_SHFL_DOWN = 2, EMU_SHFL_UP = 3 };

typedef emu_bound_call *(*emu_binder)(void **args);
extern "C" void emu_register_kernel(const char *name, emu_binder bind);

template <typename... A> emu_bound_call *emu_bind(const char *name, void (*f)(A...), void **args) {
    return new emu_bound<A...>(name, f, args, std::index_sequence_for<A...>{});
}

// EMU_KERNEL(name): at the end of a kernel's translation unit
#define EMU_KERNEL(NAME)                                                        \
    static emu_bound_call *emu_bind_##NAME(void **a) { return emu_bind(#NAME, &NAME, a); } \
    __attribute__((constructor)) static void emu_reg_##NAME(void) { emu_register_kernel(#NAME, emu_bind_##NAME); }

#endif
