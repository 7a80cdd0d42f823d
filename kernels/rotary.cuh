// rotary.cuh - one head's rotated pair or passed-through dim, and a row's cos/sin table, the one definition that
// rotary.cu's kernels and qkv.cu's qkv_split_rotary (the fused q/k/v split) share, so both rotate operation for
// operation alike (the formulas, and why the angles are computed in double, are in rotary.cu's header).
#pragma once
#include "common.cuh"

// Cos and sin of at most this many half angles per row: rd <= 256.
#define PHI2_ROTARY_MAX_HALF 128

// Position p's cos and sin of the half angles j < half (sin negated for the inverse rotation), by the block's threads
// into shared memory: inv_freq, the angle, cos and sin in double, each rounded once to fp32.
PHI2_DEVICE void rotary_angles(float* cos_s, float* sin_s, long long p, int half, int rd, double theta, bool inverse)
{
    for (int j = (int)threadIdx.x; j < half; j += (int)blockDim.x)
    {
        double inv_freq = 1.0 / pow(theta, 2.0 * j / rd);
        double angle = (double)p * inv_freq;
        float s = (float)sin(angle);
        cos_s[j] = (float)cos(angle);
        sin_s[j] = inverse ? -s : s;
    }
}

// Work item k of one head at element base of x and y: k < half is the rotated pair (k, k + half), else dim k + half
// in [rd, D) copied. bad (a negative position) writes NaN and reads nothing. y may be x (each element is read before
// the same thread writes it).
template <typename D>
PHI2_DEVICE void rotary_item(const typename D::type* x, typename D::type* y, long long base, int k, int half, const float* cos_s,
                             const float* sin_s, bool bad)
{
    if (bad)
    {
        float nan = __uint_as_float(0x7fc00000u);
        if (k < half)
        {
            store<D>(y, base + k, nan);
            store<D>(y, base + k + half, nan);
        }
        else store<D>(y, base + k + half, nan);
    }
    else if (k < half)
    {
        float x1 = load<D>(x, base + k), x2 = load<D>(x, base + k + half);
        float c = cos_s[k], s = sin_s[k];
        store<D>(y, base + k, x1 * c - x2 * s);
        store<D>(y, base + k + half, x2 * c + x1 * s);
    }
    else store<D>(y, base + k + half, load<D>(x, base + k + half));
}
