// unsupported.h - CUDA names a kernel might reach for that are outside the emulated subset (kernels/README.md).
// Without this file such a kernel would fail to build with g++'s "not declared in this scope", which reads like
// a typo; with it, the build stops at the use with a message that says what the name is and what to use instead.
// Functions fail through a static_assert in a template (it fires only where a kernel calls them), types
// through a class template whose instantiation fails the same way.
#pragma once

namespace phi2_emu
{
    template <typename...> inline constexpr bool outside_subset = false;

    template <typename T = void> struct unsupported_16bit_type
    {
        static_assert(outside_subset<T>, "CUDA's __half / __nv_bfloat16 types are outside the kernel subset: "
                                         "store bf16_t / f16_t and convert with common.cuh (kernels/README.md)");
    };
}

#define PHI2_EMU_UNSUPPORTED(name, instead)                                                                     \
    template <typename... A> inline int name(A...)                                                             \
    {                                                                                                         \
        static_assert(phi2_emu::outside_subset<A...>, #name " is outside the emulated CUDA subset: " instead); \
        return 0;                                                                                             \
    }

PHI2_EMU_UNSUPPORTED(__threadfence_block, "kernels/README.md lists what kernels may use")
PHI2_EMU_UNSUPPORTED(__syncwarp, "whole-warp code needs no warp barrier here; use __syncthreads or a *_sync shuffle")
PHI2_EMU_UNSUPPORTED(__syncthreads_count, "use __syncthreads and a block reduction (common.cuh block_sum)")
PHI2_EMU_UNSUPPORTED(__syncthreads_and, "use __syncthreads and a block reduction")
PHI2_EMU_UNSUPPORTED(__syncthreads_or, "use __syncthreads and a block reduction")
PHI2_EMU_UNSUPPORTED(__activemask, "name the mask explicitly (full warps: 0xffffffff)")
PHI2_EMU_UNSUPPORTED(__match_any_sync, "kernels/README.md lists the warp operations")
PHI2_EMU_UNSUPPORTED(__reduce_add_sync, "use warp_sum from common.cuh")
PHI2_EMU_UNSUPPORTED(__shfl, "use __shfl_sync with an explicit mask")
PHI2_EMU_UNSUPPORTED(__shfl_xor, "use __shfl_xor_sync with an explicit mask")
PHI2_EMU_UNSUPPORTED(__ballot, "use __ballot_sync with an explicit mask")
PHI2_EMU_UNSUPPORTED(atomicAdd_block, "use atomicAdd")
PHI2_EMU_UNSUPPORTED(__ldcg, "use a plain load or __ldg")
PHI2_EMU_UNSUPPORTED(__stcg, "use a plain store")
PHI2_EMU_UNSUPPORTED(__nanosleep, "kernels must not wait on time")
PHI2_EMU_UNSUPPORTED(clock64, "kernels must not read clocks; time launches with events")
PHI2_EMU_UNSUPPORTED(__cvta_generic_to_shared, "ldmatrix_x4 and kin in common.cuh convert shared addresses themselves")
PHI2_EMU_UNSUPPORTED(__half2float, "use f16_to_f32 from common.cuh")
PHI2_EMU_UNSUPPORTED(__float2half, "use f32_to_f16 from common.cuh")
PHI2_EMU_UNSUPPORTED(__bfloat162float, "use bf16_to_f32 from common.cuh")
PHI2_EMU_UNSUPPORTED(__float2bfloat16, "use f32_to_bf16 from common.cuh")
PHI2_EMU_UNSUPPORTED(cudaMalloc, "kernels do not allocate; the host does, through IDeviceApi")

#undef PHI2_EMU_UNSUPPORTED

typedef phi2_emu::unsupported_16bit_type<> __half;
typedef phi2_emu::unsupported_16bit_type<> __half2;
typedef phi2_emu::unsupported_16bit_type<> __nv_bfloat16;
typedef phi2_emu::unsupported_16bit_type<> __nv_bfloat162;
