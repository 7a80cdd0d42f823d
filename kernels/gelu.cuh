// gelu.cuh - gelu_new and its derivative at one fp32 value, the one definition that gelu.cu's kernels and lora.cu's
// lora_up_gelu (fc1 with a LoRA adapter: the branch added before the activation) share, so both compute gelu_new
// operation for operation as the CPU backend does (src/Phi2Native.Backends/Ops/Activation/CpuGelu.cs; the formulas are
// in gelu.cu's header).
#pragma once
#include "common.cuh"

// The constants are CpuGelu's doubles rounded to fp32 (written with the 9 digits that name exactly that float):
// c = sqrt(2/pi) (0x3f4c422a), c a (0x3d122279), 3 c a (0x3ddb33b6).

PHI2_DEVICE float gelu_new_f(float x)
{
    const float c = 0.797884583f, ca = 0.0356774069f;
    float u = (x * ca * x + c) * x;
    float t = tanhf(u);
    float h = 0.5f * x;
    return t * h + h;
}

// d gelu_new / dx at x.
PHI2_DEVICE float gelu_new_grad_f(float x)
{
    const float c = 0.797884583f, ca = 0.0356774069f, ca3 = 0.107032225f;
    float t = tanhf((x * ca * x + c) * x);
    float w = (x * ca3 * x + c) * x;
    float g = (1.0f - t) * w + 1.0f;
    g = t * g + g;
    return 0.5f * g;
}
