// emu.h - the CUDA built-ins for g++, so kernels/*.cu compile unchanged into libphi2emu.
//
// Model: a launch walks the grid block by block on the calling OS thread; the threads of a block are
// fibers (launch.cpp). A fiber runs until it reaches a barrier (__syncthreads, or the warp-scoped
// exchange behind shuffles and votes), then the next fiber runs. The emulator is strict: anything the
// GPU leaves undefined (a barrier some threads never reach, a shuffle naming a lane outside its mask,
// a mask naming an exited lane) fails the launch with the kernel's name instead of picking an answer.
//
// Shared memory: __shared__ variables are thread_local statics. Fibers of a block share the OS
// thread, so they share the storage; before each block the runtime fills this library's whole TLS
// block with 0xFF bytes (NaN in fp32, bf16 and fp16), so a read before any write shows as NaN and
// nothing leaks from the previous block. Kernels therefore must not use thread_local themselves.
#pragma once

#include <math.h>
#include <stdint.h>
#include <string.h>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __restrict__ __restrict
#define __shared__ static thread_local
#define __align__(n) __attribute__((aligned(n)))
// Occupancy hints for the GPU's register allocator; nothing to do on the CPU.
#define __launch_bounds__(...)
#define __noinline__ __attribute__((noinline))

struct uint3 { unsigned x, y, z; };
struct dim3
{
    unsigned x, y, z;
    constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

// Set by the scheduler before every switch into a fiber (threadIdx) or block (the others).
extern thread_local uint3 threadIdx;
extern thread_local uint3 blockIdx;
extern thread_local dim3 blockDim;
extern thread_local dim3 gridDim;
constexpr int warpSize = 32;

namespace phi2_emu
{
    // Implemented in launch.cpp; each may switch fibers or fail the launch (never returning then).
    void sync_block();
    [[noreturn]] void fail(const char* what);
    // Every lane of `mask` deposits `value`; once all have, each reads lane `src_lane`'s deposit.
    uint64_t warp_exchange(unsigned mask, uint64_t value, int src_lane, const char* op);
    // Every lane of `mask` deposits a predicate; returns the ballot of the lanes in `mask`.
    unsigned warp_ballot(unsigned mask, bool predicate, const char* op);
    // The wide exchange behind the warp-collective matrix operations (mma, ldmatrix; see mma.h): every
    // lane of `mask` deposits `bytes` bytes from `mine`; once all have, each copies the 32 deposits into
    // `all32` (32 * bytes; lane i's at i * bytes, 0xFF bytes for lanes outside the mask). Lanes of the
    // mask that do not exist (a block size that is not a multiple of 32) fail the launch, naming `op`.
    void warp_gather(unsigned mask, const void* mine, size_t bytes, void* all32, const char* op);
    unsigned lane_id();
    void* dynamic_shared();
    // cp.async (common.cuh's cp_async_* wrappers), per thread: a copy reads its source when issued and poisons its
    // destination (0xFF bytes) until the cp_async_wait_group that completes it writes the data, so a thread that reads
    // the destination without that wait (or another thread without the barrier after it) sees NaN. `bytes` of 16
    // are read (0 reads nothing: the destination gets zeros); both addresses must be 16-byte aligned.
    void async_copy_16(void* shared_dst, const void* global_src, int bytes, const char* op);
    // Closes this thread's open group of copies (cp.async.commit_group; an empty group is a group).
    void async_commit_group();
    // Completes every committed group but the newest `pending` (cp.async.wait_group); uncommitted copies stay pending.
    void async_wait_group(int pending);

    template <typename T> inline uint64_t to_bits(T v)
    {
        static_assert(sizeof(T) <= 8, "shuffles move at most 64 bits");
        uint64_t b = 0;
        memcpy(&b, &v, sizeof(T));
        return b;
    }
    template <typename T> inline T from_bits(uint64_t b)
    {
        T v;
        memcpy(&v, &b, sizeof(T));
        return v;
    }
    // Width must be a power of two in 1..32, as the PTX ISA requires of shfl's clamp.
    inline void check_width(int width, const char* op)
    {
        if (width < 1 || width > 32 || (width & (width - 1)) != 0) fail(op);
    }
}

inline void __syncthreads() { phi2_emu::sync_block(); }
[[noreturn]] inline void __trap() { phi2_emu::fail("__trap() called"); }
// A memory fence orders one thread's stores before its later ones as other blocks see them. Here blocks run one after
// another, each to completion, on one OS thread: every store of an earlier block is seen by every later one, and a
// block's own threads switch only at barriers. So the fence has nothing to order and is a no-op.
inline void __threadfence() {}

template <typename T> inline T __shfl_sync(unsigned mask, T var, int src_lane, int width = 32)
{
    phi2_emu::check_width(width, "__shfl_sync: width must be a power of two in 1..32");
    int lane = (int)phi2_emu::lane_id();
    int src = (lane & ~(width - 1)) + (src_lane & (width - 1));
    return phi2_emu::from_bits<T>(phi2_emu::warp_exchange(mask, phi2_emu::to_bits(var), src, "__shfl_sync"));
}

// Lanes whose source falls past their width-segment get their own value back, as on the GPU.
template <typename T> inline T __shfl_xor_sync(unsigned mask, T var, int lane_mask, int width = 32)
{
    phi2_emu::check_width(width, "__shfl_xor_sync: width must be a power of two in 1..32");
    int lane = (int)phi2_emu::lane_id();
    int src = lane ^ lane_mask;
    if (src >= ((lane / width) + 1) * width) src = lane;
    return phi2_emu::from_bits<T>(phi2_emu::warp_exchange(mask, phi2_emu::to_bits(var), src & 31, "__shfl_xor_sync"));
}

template <typename T> inline T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = 32)
{
    phi2_emu::check_width(width, "__shfl_down_sync: width must be a power of two in 1..32");
    int lane = (int)phi2_emu::lane_id();
    int src = lane + (int)delta;
    if (src >= ((lane / width) + 1) * width) src = lane;
    return phi2_emu::from_bits<T>(phi2_emu::warp_exchange(mask, phi2_emu::to_bits(var), src, "__shfl_down_sync"));
}

template <typename T> inline T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = 32)
{
    phi2_emu::check_width(width, "__shfl_up_sync: width must be a power of two in 1..32");
    int lane = (int)phi2_emu::lane_id();
    int src = lane - (int)delta;
    if (src < (lane / width) * width) src = lane;
    return phi2_emu::from_bits<T>(phi2_emu::warp_exchange(mask, phi2_emu::to_bits(var), src, "__shfl_up_sync"));
}

inline unsigned __ballot_sync(unsigned mask, int predicate) { return phi2_emu::warp_ballot(mask, predicate != 0, "__ballot_sync"); }
inline int __all_sync(unsigned mask, int predicate) { return phi2_emu::warp_ballot(mask, predicate != 0, "__all_sync") == mask; }
inline int __any_sync(unsigned mask, int predicate) { return phi2_emu::warp_ballot(mask, predicate != 0, "__any_sync") != 0; }

// Atomics: fibers of a launch share one OS thread and switch only at barriers, so a plain
// read-modify-write is atomic here; launches themselves are serialized by launch.cpp.
inline float atomicAdd(float* p, float v) { float old = *p; *p = old + v; return old; }
inline int atomicAdd(int* p, int v) { int old = *p; *p = old + v; return old; }
inline unsigned atomicAdd(unsigned* p, unsigned v) { unsigned old = *p; *p = old + v; return old; }
inline int atomicMax(int* p, int v) { int old = *p; if (v > old) *p = v; return old; }
inline int atomicMin(int* p, int v) { int old = *p; if (v < old) *p = v; return old; }
inline int atomicExch(int* p, int v) { int old = *p; *p = v; return old; }
inline int atomicCAS(int* p, int compare, int v) { int old = *p; if (old == compare) *p = v; return old; }

// Reinterpretation and the math intrinsics CUDA has but C does not. The fast-math forms (__expf)
// use the precise libm functions: kernels are checked against the CPU backend with a tolerance,
// and the GPU's approximations are within it.
inline float __uint_as_float(unsigned u) { float f; memcpy(&f, &u, 4); return f; }
inline unsigned __float_as_uint(float f) { unsigned u; memcpy(&u, &f, 4); return u; }
inline float __int_as_float(int i) { float f; memcpy(&f, &i, 4); return f; }
inline int __float_as_int(float f) { int i; memcpy(&i, &f, 4); return i; }
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline float __expf(float x) { return expf(x); }
inline float __logf(float x) { return logf(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __saturatef(float x) { return x != x ? 0.0f : fminf(fmaxf(x, 0.0f), 1.0f); }
inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
// One operation rounded to nearest even, never contracted with a neighbour into an FMA: the GPU contracts a * b + c
// by default and these intrinsics are how a kernel forbids it. Out of line, so that g++ cannot contract them either
// where the target has FMA and -ffp-contract=fast (GNU C's default) applies, e.g. on aarch64.
#define PHI2_EMU_ROUNDED inline __attribute__((noinline))
PHI2_EMU_ROUNDED float __fadd_rn(float a, float b) { return a + b; }
PHI2_EMU_ROUNDED float __fsub_rn(float a, float b) { return a - b; }
PHI2_EMU_ROUNDED float __fmul_rn(float a, float b) { return a * b; }
PHI2_EMU_ROUNDED float __fdiv_rn(float a, float b) { return a / b; }
PHI2_EMU_ROUNDED float __fsqrt_rn(float x) { return sqrtf(x); }
#undef PHI2_EMU_ROUNDED
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz((unsigned)x); }
template <typename T> inline T __ldg(const T* p) { return *p; }

// Last: names outside the subset, so a kernel using one fails to build with a message that says so.
#include "unsupported.h"
