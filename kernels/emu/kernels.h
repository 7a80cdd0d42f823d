// kernels.h - the emulator's kernel table: entry point name -> a thunk that unpacks cuLaunchKernel's
// kernelParams (void** args, args[i] pointing at parameter i) into the kernel's typed parameters.
#pragma once

#include <cstddef>
#include <utility>

namespace phi2_emu
{
    typedef void (*KernelThunk)(void** args);
    // Writes up to `capacity` parameter sizes in bytes and returns the parameter count.
    typedef int (*ParameterSizes)(int* sizes, int capacity);

    struct KernelEntry
    {
        const char* name;
        KernelThunk thunk;
        ParameterSizes parameter_sizes;
    };

    // Each fiber copies the parameters out of args, as each GPU thread reads its own copy of them.
    template <typename... A, std::size_t... I>
    inline void invoke(void (*kernel)(A...), void** args, std::index_sequence<I...>)
    {
        kernel(*static_cast<A*>(args[I])...);
    }

    template <typename... A> inline void invoke(void (*kernel)(A...), void** args)
    {
        invoke(kernel, args, std::index_sequence_for<A...>{});
    }

    // What a captured launch must copy out of args (a CUDA graph keeps its own copy of each parameter's value).
    template <typename... A> inline int parameter_sizes(void (*)(A...), int* sizes, int capacity)
    {
        const int each[] = { (int)sizeof(A)..., 0 };
        const int count = (int)sizeof...(A);
        for (int i = 0; i < count && i < capacity; i++) sizes[i] = each[i];
        return count;
    }

    // The entry named `name`, or null. Defined with the table in kernels.cpp.
    const KernelEntry* find_kernel(const char* name);
    // The table itself, for the test that every PHI2_KERNEL in kernels/ is listed.
    const KernelEntry* kernel_table(int* count);
}

// One table row; the parameter types come from the function itself, so a row cannot disagree with
// the kernel's signature.
#define PHI2_EMU_ENTRY(kernel)                                                                                   \
    { #kernel, [](void** args) { phi2_emu::invoke(&kernel, args); },                                             \
      [](int* sizes, int capacity) { return phi2_emu::parameter_sizes(&kernel, sizes, capacity); } }
