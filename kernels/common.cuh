// common.cuh - everything a kernel needs, with no CUDA toolkit header, so NVRTC needs no include
// path and g++ (the emulator, kernels/emu) compiles the very same kernel text.
//
// This is the only file with two-way code (#ifdef __CUDACC_RTC__): kernel files hold no #if on the
// build, so what CI runs on the emulator is what the GPU runs.
#pragma once

#ifdef __CUDACC_RTC__
// NVRTC supplies threadIdx, __syncthreads, __shfl_xor_sync, atomics and the math functions itself.
// Dynamic shared memory is declared through this macro so the emulator can hand out its own buffer.
#define PHI2_DYNAMIC_SHARED(T, name) \
    extern __shared__ __align__(16) unsigned char phi2_dynamic_shared_[]; \
    T* name = reinterpret_cast<T*>(phi2_dynamic_shared_)
// The 32-bit shared-window address of a generic pointer into shared memory, as ldmatrix's .shared form
// takes it. Plain PTX (cvta.to.shared), so it depends on no toolkit header or NVRTC built-in.
__device__ __forceinline__ unsigned phi2_shared_window_address(const void* p)
{
    unsigned address;
    asm("{ .reg .u64 phi2_p;\n\t"
        "cvta.to.shared.u64 phi2_p, %1;\n\t"
        "cvt.u32.u64 %0, phi2_p; }\n"
        : "=r"(address) : "l"((unsigned long long)p));
    return address;
}
#else
#include "emu/emu.h"
#include "emu/mma.h"
#define PHI2_DYNAMIC_SHARED(T, name) T* name = reinterpret_cast<T*>(phi2_emu::dynamic_shared())
#endif

// An entry point: unmangled so NVRTC's cuModuleGetFunction and the emulator's table find it by name.
#define PHI2_KERNEL extern "C" __global__
#define PHI2_DEVICE __device__ __forceinline__

// 16-bit floats are plain storage types: cuda_bf16.h / cuda_fp16.h are toolkit headers, and one
// software conversion, identical on both sides, keeps the emulator bit-exact with the GPU.
typedef unsigned short bf16_t;
typedef unsigned short f16_t;

PHI2_DEVICE float bf16_to_f32(bf16_t h) { return __uint_as_float(((unsigned)h) << 16); }

// Round to nearest even, as PyTorch and .NET do; NaN stays a (quiet) NaN rather than rounding to Inf.
PHI2_DEVICE bf16_t f32_to_bf16(float f)
{
    unsigned u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (bf16_t)((u >> 16) | 0x0040u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (bf16_t)(u >> 16);
}

PHI2_DEVICE float f16_to_f32(f16_t h)
{
    unsigned sign = ((unsigned)h & 0x8000u) << 16;
    unsigned exp = ((unsigned)h >> 10) & 0x1fu;
    unsigned man = (unsigned)h & 0x3ffu;
    if (exp == 0x1fu) return __uint_as_float(sign | 0x7f800000u | (man << 13)); // Inf, NaN
    if (exp != 0) return __uint_as_float(sign | ((exp + 112u) << 23) | (man << 13));
    // Subnormal (or zero): the value is man * 2^-24, exact in fp32.
    float v = (float)man * 5.9604644775390625e-8f;
    return sign ? -v : v;
}

// Round to nearest even, with fp16 subnormals, overflow to Inf and NaN kept a NaN.
PHI2_DEVICE f16_t f32_to_f16(float f)
{
    unsigned u = __float_as_uint(f);
    unsigned sign = (u >> 16) & 0x8000u;
    unsigned a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return (f16_t)(sign | 0x7e00u);
    if (a >= 0x477ff000u) return (f16_t)(sign | 0x7c00u); // rounds to >= 65520: Inf
    if (a >= 0x38800000u)
    {
        // Normal range: rebias the exponent (127 -> 15) and round the 13 dropped mantissa bits.
        unsigned r = a - 0x38000000u;
        r += 0xfffu + ((r >> 13) & 1u);
        return (f16_t)(sign | (r >> 13));
    }
    if (a < 0x33000000u) return (f16_t)sign; // below half the smallest subnormal: +-0
    // Subnormal: shift the full significand into place, rounding the dropped bits to nearest even.
    unsigned e = a >> 23;
    unsigned m = (a & 0x7fffffu) | 0x800000u;
    unsigned shift = 126u - e; // 14..24
    unsigned half = 1u << (shift - 1);
    unsigned rest = m & ((1u << shift) - 1u);
    unsigned q = m >> shift;
    if (rest > half || (rest == half && (q & 1u))) q++;
    return (f16_t)(sign | q);
}

// Warp reductions over all 32 lanes: every lane ends with the result.
PHI2_DEVICE float warp_sum(float v)
{
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
    return v;
}

PHI2_DEVICE float warp_max(float v)
{
    for (int offset = 16; offset > 0; offset >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
    return v;
}

// ---------------------------------------------------------------------------------------------------
// Dtype tags: one kernel template serves fp32, bf16 and fp16.
//
// bf16_t and f16_t are both `unsigned short`, so neither overloading nor `a + b` can tell them apart
// (on a bf16_t, `a + b` is an integer add). A kernel template therefore takes a dtype tag D, never the
// storage type: D::type is the element type in memory, D::to_f32 widens (exactly) and D::from_f32
// rounds to nearest even, once, on the way out. load<D>/store<D> read and write element i of a D
// buffer as fp32; `D::type` in a parameter list is not deduced, so every call names its dtype.
// ---------------------------------------------------------------------------------------------------

struct dtype_f32
{
    typedef float type;
    static PHI2_DEVICE float to_f32(float v) { return v; }
    static PHI2_DEVICE float from_f32(float v) { return v; }
};

struct dtype_bf16
{
    typedef bf16_t type;
    static PHI2_DEVICE float to_f32(bf16_t v) { return bf16_to_f32(v); }
    static PHI2_DEVICE bf16_t from_f32(float v) { return f32_to_bf16(v); }
};

struct dtype_f16
{
    typedef f16_t type;
    static PHI2_DEVICE float to_f32(f16_t v) { return f16_to_f32(v); }
    static PHI2_DEVICE f16_t from_f32(float v) { return f32_to_f16(v); }
};

template <typename D> PHI2_DEVICE float load(const typename D::type* p, long long i) { return D::to_f32(p[i]); }
template <typename D> PHI2_DEVICE void store(typename D::type* p, long long i, float v) { p[i] = D::from_f32(v); }

// ---------------------------------------------------------------------------------------------------
// Dropout masks, shared by every kernel that drops out (dropout.cu, residual.cu): whether element i is kept depends
// only on (seed, i), so nothing is saved and backward recomputes the mask (the rule is in dropout.cu's header).
// ---------------------------------------------------------------------------------------------------

// The top 24 bits of the SplitMix64 hash of (seed, index): DropoutMask.Draw.
PHI2_DEVICE unsigned dropout_bits24(unsigned long long seed, long long index)
{
    unsigned long long z = seed + (unsigned long long)(index + 1) * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (unsigned)(z >> 40);
}

// ---------------------------------------------------------------------------------------------------
// Block reductions: warp shuffles, one partial per warp through shared memory, then a final warp.
//
// block_sum / block_max return the reduction of v over every thread of the block to every thread.
// Requirements: blockDim.x a multiple of 32 (full-mask shuffles need whole warps) and at most 1024,
// blockDim.y == blockDim.z == 1; `scratch` points at >= blockDim.x / 32 floats of shared memory; every
// thread of the block calls it (it holds two __syncthreads), so no thread may have returned early.
// The same scratch may serve consecutive calls: the trailing barrier keeps a fast warp's next write
// from landing before a slow warp has read this call's partials.
// ---------------------------------------------------------------------------------------------------

// The sum; identity 0.
struct reduce_sum
{
    static PHI2_DEVICE float identity() { return 0.0f; }
    static PHI2_DEVICE float combine(float a, float b) { return a + b; }
};

// The maximum; identity -Inf. A NaN wins (torch.max's rule), where fmaxf would drop it.
struct reduce_max
{
    static PHI2_DEVICE float identity() { return __uint_as_float(0xff800000u); }
    static PHI2_DEVICE float combine(float a, float b) { return (a > b || a != a) ? a : b; }
};

// Every lane of a whole warp ends with the reduction over the warp (butterfly: xor exchanges).
template <typename Op> PHI2_DEVICE float warp_reduce(float v)
{
    for (int offset = 16; offset > 0; offset >>= 1) v = Op::combine(v, __shfl_xor_sync(0xffffffffu, v, offset));
    return v;
}

template <typename Op> PHI2_DEVICE float block_reduce(float v, float* scratch)
{
    unsigned lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
    v = warp_reduce<Op>(v);
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    // Every warp reduces the partials itself, so the result reaches all threads without a broadcast.
    v = warp_reduce<Op>(lane < warps ? scratch[lane] : Op::identity());
    __syncthreads();
    return v;
}

PHI2_DEVICE float block_sum(float v, float* scratch) { return block_reduce<reduce_sum>(v, scratch); }
PHI2_DEVICE float block_max(float v, float* scratch) { return block_reduce<reduce_max>(v, scratch); }

// Tensor cores (sm_80 and later): mma.sync m16n8k16 with fp32 accumulators, and ldmatrix to feed it from
// shared memory. Fragment layouts (PTX ISA "Matrix fragments for mma.m16n8k16"; this is the one table the
// emulator, kernels/emu/mma.h, and the tests that pin it, MmaEmulationTests and the GPU's MmaChecks, follow),
// g = lane >> 2, t = lane % 4, each 32-bit register holding two 16-bit elements, the lower index low:
//   A 16x16 row-major, a[0..3] = A[g][2t..2t+1], A[g+8][2t..2t+1], A[g][2t+8..2t+9], A[g+8][2t+8..2t+9]
//   B 16x8 (k x n) column-major, b[0..1] = B[2t..2t+1][g], B[2t+8..2t+9][g]
//   C, D 16x8 fp32, c[0..3] = C[g][2t], C[g][2t+1], C[g+8][2t], C[g+8][2t+1]
// So lane 5 (g = 1, t = 1) holds A[1][2..3], A[9][2..3], A[1][10..11], A[9][10..11], B[2..3][1], B[10..11][1].
// All are warp-collective: the 32 lanes of a warp call the same wrapper together (whole warps, no
// divergence); the emulator fails a launch that breaks this.

// One fragment register from two 16-bit values: `lo` is the element with the lower column (or k) index.
PHI2_DEVICE unsigned pack_b16x2(unsigned short lo, unsigned short hi) { return (unsigned)lo | ((unsigned)hi << 16); }
PHI2_DEVICE unsigned pack_bf16x2(float lo, float hi) { return pack_b16x2(f32_to_bf16(lo), f32_to_bf16(hi)); }
PHI2_DEVICE unsigned pack_f16x2(float lo, float hi) { return pack_b16x2(f32_to_f16(lo), f32_to_f16(hi)); }

// D = A * B + C over one warp, bf16 inputs: c holds this lane's C on entry and its D on return.
PHI2_DEVICE void mma_m16n8k16_bf16(float c[4], const unsigned a[4], const unsigned b[2])
{
#ifdef __CUDACC_RTC__
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
                 "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%10, %11, %12, %13};\n"
                 : "=f"(c[0]), "=f"(c[1]), "=f"(c[2]), "=f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]),
                   "f"(c[0]), "f"(c[1]), "f"(c[2]), "f"(c[3]));
#else
    phi2_emu::mma_m16n8k16(c, a, b, bf16_to_f32, "mma_m16n8k16_bf16");
#endif
}

// D = A * B + C over one warp, fp16 inputs (fp32 accumulation), as mma_m16n8k16_bf16.
PHI2_DEVICE void mma_m16n8k16_f16(float c[4], const unsigned a[4], const unsigned b[2])
{
#ifdef __CUDACC_RTC__
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
                 "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%10, %11, %12, %13};\n"
                 : "=f"(c[0]), "=f"(c[1]), "=f"(c[2]), "=f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]),
                   "f"(c[0]), "f"(c[1]), "f"(c[2]), "f"(c[3]));
#else
    phi2_emu::mma_m16n8k16(c, a, b, f16_to_f32, "mma_m16n8k16_f16");
#endif
}

// ldmatrix (8x8 matrices of 16-bit elements, from shared memory): lanes 8j..8j+7 pass the addresses of
// rows 0..7 of matrix j (16 bytes each, 16-byte aligned; rows need not be contiguous); each lane gets in
// r[j] the elements of matrix j at row lane / 4, columns 2 * (lane % 4) and +1. With _trans each lane
// gets the transposed matrix's: elements (2 * (lane % 4), lane / 4) and (2 * (lane % 4) + 1, lane / 4).
// For a 16x16 row-major A tile at `a` (row stride s elements), ldmatrix_x4(frag, a + (lane % 16) * s +
// (lane / 16) * 8) yields the A fragment above; a k x n row-major B tile yields the B fragment through
// ldmatrix_x2_trans(frag, b + (lane % 16) * s), an n x k one through ldmatrix_x2(frag, b + (lane % 8) * s
// + (lane / 8 % 2) * 8).
// x2 reads only lanes 0..15's addresses, but every lane must still pass a valid one (sm_75 needs it).
PHI2_DEVICE void ldmatrix_x4(unsigned r[4], const void* shared_row_address)
{
#ifdef __CUDACC_RTC__
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(phi2_shared_window_address(shared_row_address)) : "memory");
#else
    phi2_emu::ldmatrix(r, 4, false, shared_row_address, "ldmatrix_x4");
#endif
}

PHI2_DEVICE void ldmatrix_x2(unsigned r[2], const void* shared_row_address)
{
#ifdef __CUDACC_RTC__
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0, %1}, [%2];\n"
                 : "=r"(r[0]), "=r"(r[1])
                 : "r"(phi2_shared_window_address(shared_row_address)) : "memory");
#else
    phi2_emu::ldmatrix(r, 2, false, shared_row_address, "ldmatrix_x2");
#endif
}

PHI2_DEVICE void ldmatrix_x4_trans(unsigned r[4], const void* shared_row_address)
{
#ifdef __CUDACC_RTC__
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(phi2_shared_window_address(shared_row_address)) : "memory");
#else
    phi2_emu::ldmatrix(r, 4, true, shared_row_address, "ldmatrix_x4_trans");
#endif
}

PHI2_DEVICE void ldmatrix_x2_trans(unsigned r[2], const void* shared_row_address)
{
#ifdef __CUDACC_RTC__
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0, %1}, [%2];\n"
                 : "=r"(r[0]), "=r"(r[1])
                 : "r"(phi2_shared_window_address(shared_row_address)) : "memory");
#else
    phi2_emu::ldmatrix(r, 2, true, shared_row_address, "ldmatrix_x2_trans");
#endif
}

// cp.async (sm_80 and later): 16-byte copies from global to shared memory that run behind the thread's work.
// Per thread, as in PTX: copies issued since the last cp_async_commit_group() form one group when it is called;
// cp_async_wait_group<N>() returns once every committed group but the newest N has landed in shared memory (N = 0:
// all). Only this thread's copies are waited for: the other threads of the block see them after a __syncthreads()
// that follows the wait. Both addresses 16-byte aligned. .ca caches the source in L1 as well, .cg in L2 only.
// The emulator reads the source at the issue and poisons the destination (0xFF bytes: NaN in every float format)
// until the wait that completes it, so a missing wait or barrier reads NaN (kernels/emu/launch.cpp).
PHI2_DEVICE void cp_async_ca_16(void* shared_dst, const void* global_src)
{
#ifdef __CUDACC_RTC__
    asm volatile("cp.async.ca.shared.global [%0], [%1], 16;\n"
                 :: "r"(phi2_shared_window_address(shared_dst)), "l"(global_src) : "memory");
#else
    phi2_emu::async_copy_16(shared_dst, global_src, 16, "cp_async_ca_16");
#endif
}

PHI2_DEVICE void cp_async_cg_16(void* shared_dst, const void* global_src)
{
#ifdef __CUDACC_RTC__
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n"
                 :: "r"(phi2_shared_window_address(shared_dst)), "l"(global_src) : "memory");
#else
    phi2_emu::async_copy_16(shared_dst, global_src, 16, "cp_async_cg_16");
#endif
}

// cp_async_cg_16 when `read`, otherwise 16 zero bytes into shared_dst and nothing read (PTX's src-size of 0):
// the rows past a tensor's end. global_src must still be a valid-looking address (pass the row's own or row 0's).
PHI2_DEVICE void cp_async_cg_16_or_zero(void* shared_dst, const void* global_src, bool read)
{
#ifdef __CUDACC_RTC__
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n"
                 :: "r"(phi2_shared_window_address(shared_dst)), "l"(global_src), "r"(read ? 16 : 0) : "memory");
#else
    phi2_emu::async_copy_16(shared_dst, global_src, read ? 16 : 0, "cp_async_cg_16_or_zero");
#endif
}

PHI2_DEVICE void cp_async_commit_group()
{
#ifdef __CUDACC_RTC__
    asm volatile("cp.async.commit_group;\n" ::: "memory");
#else
    phi2_emu::async_commit_group();
#endif
}

template <int Pending> PHI2_DEVICE void cp_async_wait_group()
{
#ifdef __CUDACC_RTC__
    asm volatile("cp.async.wait_group %0;\n" :: "n"(Pending) : "memory");
#else
    phi2_emu::async_wait_group(Pending);
#endif
}

// ---------------------------------------------------------------------------------------------------
// 16-byte vectors (gelu.cu's MLP epilogues): one vec16 is 4 fp32 or 8 bf16/fp16 elements, moved by one 128-bit load or
// store (ld.global.v4.u32) when its address is 16-byte aligned, which the caller must ensure (aligned16). The union
// reinterprets the words as elements in registers; load16/store16 widen and round exactly as load<D>/store<D> do.
// ---------------------------------------------------------------------------------------------------

struct __align__(16) vec16 { unsigned w[4]; };

template <typename D> struct vec16_of
{
    static const int count = (int)(16 / sizeof(typename D::type));
    union bits { vec16 v; typename D::type e[16 / sizeof(typename D::type)]; };
};

PHI2_DEVICE bool aligned16(const void* p) { return ((unsigned long long)p & 15ull) == 0; }

// out[e] = element e of the 16 bytes at p, widened to fp32.
template <typename D> PHI2_DEVICE void load16(const typename D::type* p, float* out)
{
    typename vec16_of<D>::bits b;
    b.v = *reinterpret_cast<const vec16*>(p);
    for (int e = 0; e < vec16_of<D>::count; e++) out[e] = D::to_f32(b.e[e]);
}

// The 16 bytes at p = the elements e[], already of the dtype.
template <typename D> PHI2_DEVICE void store16(typename D::type* p, const typename D::type* e)
{
    typename vec16_of<D>::bits b;
    for (int i = 0; i < vec16_of<D>::count; i++) b.e[i] = e[i];
    *reinterpret_cast<vec16*>(p) = b.v;
}
