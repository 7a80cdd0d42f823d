// kernels.cpp - compiles every kernels/*.cu (and the emulator's own test kernels) into one
// translation unit and lists their entry points. The table is maintained by hand: a row is one line,
// its types are deduced from the kernel, and EmulatorTests checks that every PHI2_KERNEL in
// kernels/*.cu and kernels/emu/*.cu has a row, so a forgotten row fails CI rather than a launch.
#include "../elementwise.cu"
#include "../cast.cu"
#include "../reduce.cu"
#include "../layernorm.cu"
#include "../cross_entropy.cu"
#include "../optimizer.cu"
#include "../mma_check.cu"
#include "../embedding.cu"
#include "../rotary.cu"
#include "../cache.cu"
#include "../qkv.cu"
#include "../transpose.cu"
#include "../gelu.cu"
#include "../dropout.cu"
#include "../residual.cu"
#include "../lora.cu"
#include "../lora_qkv.cu"
#include "../attention.cu"
#include "../attention_mma.cu"
#include "../attention_decode.cu"
#include "../attention_mma_backward.cu"
#include "../decode.cu"
#include "test_kernels.cu"
#include "test_reduce.cu"
#include "test_mma.cu"
#include "test_async.cu"
#include "kernels.h"

#include <string.h>

namespace phi2_emu
{
namespace
{
    const KernelEntry table[] = {
        // elementwise.cu
        PHI2_EMU_ENTRY(add_f32),
        PHI2_EMU_ENTRY(add_bf16),
        PHI2_EMU_ENTRY(add_f16),
        PHI2_EMU_ENTRY(scale_f32),
        PHI2_EMU_ENTRY(scale_bf16),
        PHI2_EMU_ENTRY(scale_f16),
        PHI2_EMU_ENTRY(accumulate_f32),
        PHI2_EMU_ENTRY(scale_by_f32),
        PHI2_EMU_ENTRY(scale_by_bf16),
        PHI2_EMU_ENTRY(accumulate_scaled_f32),
        // cast.cu
        PHI2_EMU_ENTRY(cast_f32_bf16),
        PHI2_EMU_ENTRY(cast_f32_f16),
        PHI2_EMU_ENTRY(cast_bf16_f32),
        PHI2_EMU_ENTRY(cast_bf16_f16),
        PHI2_EMU_ENTRY(cast_f16_f32),
        PHI2_EMU_ENTRY(cast_f16_bf16),
        // reduce.cu
        PHI2_EMU_ENTRY(row_sum_f32),
        PHI2_EMU_ENTRY(row_sum_bf16),
        PHI2_EMU_ENTRY(row_sum_f16),
        PHI2_EMU_ENTRY(row_max_f32),
        PHI2_EMU_ENTRY(row_max_bf16),
        PHI2_EMU_ENTRY(row_max_f16),
        // decode.cu
        PHI2_EMU_ENTRY(decode_next_f32),
        PHI2_EMU_ENTRY(decode_next_bf16),
        PHI2_EMU_ENTRY(decode_next_f16),
        // layernorm.cu
        PHI2_EMU_ENTRY(layernorm_f32),
        PHI2_EMU_ENTRY(layernorm_bf16),
        PHI2_EMU_ENTRY(layernorm_backward_f32),
        PHI2_EMU_ENTRY(layernorm_backward_bf16),
        // embedding.cu
        PHI2_EMU_ENTRY(embedding_f32),
        PHI2_EMU_ENTRY(embedding_bf16),
        PHI2_EMU_ENTRY(embedding_f32_bf16),
        PHI2_EMU_ENTRY(embedding_bf16_f32),
        PHI2_EMU_ENTRY(embedding_backward_f32),
        PHI2_EMU_ENTRY(embedding_backward_bf16),
        // rotary.cu
        PHI2_EMU_ENTRY(rotary_f32),
        PHI2_EMU_ENTRY(rotary_bf16),
        PHI2_EMU_ENTRY(rotary_backward_f32),
        PHI2_EMU_ENTRY(rotary_backward_bf16),
        // cache.cu
        PHI2_EMU_ENTRY(cache_write_f32),
        PHI2_EMU_ENTRY(cache_write_bf16),
        // qkv.cu
        PHI2_EMU_ENTRY(qkv_split_rotary_f32),
        PHI2_EMU_ENTRY(qkv_split_rotary_bf16),
        PHI2_EMU_ENTRY(qkv_split_rotary_f16),
        PHI2_EMU_ENTRY(qkv_split_rotary_backward_f32),
        PHI2_EMU_ENTRY(qkv_split_rotary_backward_bf16),
        PHI2_EMU_ENTRY(qkv_split_rotary_backward_f16),
        // transpose.cu
        PHI2_EMU_ENTRY(transpose_f32),
        PHI2_EMU_ENTRY(transpose_bf16),
        // cross_entropy.cu
        PHI2_EMU_ENTRY(cross_entropy_f32),
        PHI2_EMU_ENTRY(cross_entropy_bf16),
        PHI2_EMU_ENTRY(cross_entropy_sum_f32),
        PHI2_EMU_ENTRY(cross_entropy_sum_bf16),
        PHI2_EMU_ENTRY(cross_entropy_backward_f32),
        PHI2_EMU_ENTRY(cross_entropy_backward_bf16),
        PHI2_EMU_ENTRY(cross_entropy_chunk_f32),
        PHI2_EMU_ENTRY(cross_entropy_chunk_bf16),
        PHI2_EMU_ENTRY(cross_entropy_picked_sum),
        // optimizer.cu
        PHI2_EMU_ENTRY(chunk_sum_of_squares_f32),
        PHI2_EMU_ENTRY(chunk_sum_of_squares_bf16),
        PHI2_EMU_ENTRY(chunk_sum_of_squares_f16),
        PHI2_EMU_ENTRY(step_status),
        PHI2_EMU_ENTRY(adamw_chunks_f32),
        // gelu.cu
        PHI2_EMU_ENTRY(gelu_new_f32),
        PHI2_EMU_ENTRY(gelu_new_bf16),
        PHI2_EMU_ENTRY(gelu_new_f16),
        PHI2_EMU_ENTRY(gelu_new_backward_f32),
        PHI2_EMU_ENTRY(gelu_new_backward_bf16),
        PHI2_EMU_ENTRY(gelu_new_backward_f16),
        PHI2_EMU_ENTRY(bias_gelu_new_f32),
        PHI2_EMU_ENTRY(bias_gelu_new_bf16),
        PHI2_EMU_ENTRY(bias_gelu_new_f16),
        PHI2_EMU_ENTRY(bias_gelu_new_backward_f32),
        PHI2_EMU_ENTRY(bias_gelu_new_backward_bf16),
        PHI2_EMU_ENTRY(bias_gelu_new_backward_f16),
        // dropout.cu
        PHI2_EMU_ENTRY(dropout_f32),
        PHI2_EMU_ENTRY(dropout_bf16),
        PHI2_EMU_ENTRY(dropout_f16),
        PHI2_EMU_ENTRY(dropout_backward_f32),
        PHI2_EMU_ENTRY(dropout_backward_bf16),
        PHI2_EMU_ENTRY(dropout_backward_f16),
        // residual.cu
        PHI2_EMU_ENTRY(parallel_residual_f32),
        PHI2_EMU_ENTRY(parallel_residual_bf16),
        PHI2_EMU_ENTRY(parallel_residual_f16),
        PHI2_EMU_ENTRY(parallel_residual_backward_f32),
        PHI2_EMU_ENTRY(parallel_residual_backward_bf16),
        PHI2_EMU_ENTRY(parallel_residual_backward_f16),
        // lora.cu (the LoRA branch: down, up, their backward, the adapter's gradients)
        PHI2_EMU_ENTRY(lora_down_f32),
        PHI2_EMU_ENTRY(lora_down_bf16),
        PHI2_EMU_ENTRY(lora_down_f16),
        PHI2_EMU_ENTRY(lora_up_f32),
        PHI2_EMU_ENTRY(lora_up_bf16),
        PHI2_EMU_ENTRY(lora_up_f16),
        PHI2_EMU_ENTRY(lora_up_gelu_f32),
        PHI2_EMU_ENTRY(lora_up_gelu_bf16),
        PHI2_EMU_ENTRY(lora_up_gelu_f16),
        PHI2_EMU_ENTRY(lora_up_backward_f32),
        PHI2_EMU_ENTRY(lora_up_backward_bf16),
        PHI2_EMU_ENTRY(lora_up_backward_f16),
        PHI2_EMU_ENTRY(lora_down_backward_f32),
        PHI2_EMU_ENTRY(lora_down_backward_bf16),
        PHI2_EMU_ENTRY(lora_down_backward_f16),
        PHI2_EMU_ENTRY(lora_weight_grad_f32),
        PHI2_EMU_ENTRY(lora_weight_grad_bf16),
        PHI2_EMU_ENTRY(lora_weight_grad_f16),
        PHI2_EMU_ENTRY(lora_qkv_down_f32),
        PHI2_EMU_ENTRY(lora_qkv_down_bf16),
        PHI2_EMU_ENTRY(lora_qkv_down_f16),
        PHI2_EMU_ENTRY(lora_qkv_up_f32),
        PHI2_EMU_ENTRY(lora_qkv_up_bf16),
        PHI2_EMU_ENTRY(lora_qkv_up_f16),
        PHI2_EMU_ENTRY(lora_qkv_up_backward_f32),
        PHI2_EMU_ENTRY(lora_qkv_up_backward_bf16),
        PHI2_EMU_ENTRY(lora_qkv_up_backward_f16),
        PHI2_EMU_ENTRY(lora_qkv_weight_grad_f32),
        PHI2_EMU_ENTRY(lora_qkv_weight_grad_bf16),
        PHI2_EMU_ENTRY(lora_qkv_weight_grad_f16),
        PHI2_EMU_ENTRY(lora_qkv_down_backward_f32),
        PHI2_EMU_ENTRY(lora_qkv_down_backward_bf16),
        PHI2_EMU_ENTRY(lora_qkv_down_backward_f16),
        // attention.cu (causal flash-style attention: forward, through the KV cache, backward)
        PHI2_EMU_ENTRY(attention_f32),
        PHI2_EMU_ENTRY(attention_bf16),
        PHI2_EMU_ENTRY(cached_attention_f32),
        PHI2_EMU_ENTRY(cached_attention_bf16),
        PHI2_EMU_ENTRY(attention_backward_delta_f32),
        PHI2_EMU_ENTRY(attention_backward_delta_bf16),
        PHI2_EMU_ENTRY(attention_backward_delta_f16),
        PHI2_EMU_ENTRY(attention_backward_f32),
        PHI2_EMU_ENTRY(attention_backward_bf16),
        // attention_mma.cu (the attention forward on tensor cores, plain and through a KV cache, per head-dim bound)
        PHI2_EMU_ENTRY(attention_mma_bf16_d32),
        PHI2_EMU_ENTRY(attention_mma_bf16_d64),
        PHI2_EMU_ENTRY(attention_mma_bf16_d80),
        PHI2_EMU_ENTRY(attention_mma_bf16_d128),
        PHI2_EMU_ENTRY(attention_mma_f16_d32),
        PHI2_EMU_ENTRY(attention_mma_f16_d64),
        PHI2_EMU_ENTRY(attention_mma_f16_d80),
        PHI2_EMU_ENTRY(attention_mma_f16_d128),
        PHI2_EMU_ENTRY(cached_attention_mma_bf16_d32),
        PHI2_EMU_ENTRY(cached_attention_mma_bf16_d64),
        PHI2_EMU_ENTRY(cached_attention_mma_bf16_d80),
        PHI2_EMU_ENTRY(cached_attention_mma_bf16_d128),
        PHI2_EMU_ENTRY(cached_attention_mma_f16_d32),
        PHI2_EMU_ENTRY(cached_attention_mma_f16_d64),
        PHI2_EMU_ENTRY(cached_attention_mma_f16_d80),
        PHI2_EMU_ENTRY(cached_attention_mma_f16_d128),
        // attention_decode.cu (split-K decoding through the KV cache on tensor cores, the combine folded in)
        PHI2_EMU_ENTRY(attention_decode_bf16_d32),
        PHI2_EMU_ENTRY(attention_decode_bf16_d64),
        PHI2_EMU_ENTRY(attention_decode_bf16_d80),
        PHI2_EMU_ENTRY(attention_decode_bf16_d128),
        PHI2_EMU_ENTRY(attention_decode_f16_d32),
        PHI2_EMU_ENTRY(attention_decode_f16_d64),
        PHI2_EMU_ENTRY(attention_decode_f16_d80),
        PHI2_EMU_ENTRY(attention_decode_f16_d128),
        // attention_mma_backward.cu (the attention backward on tensor cores, one kernel per head-dim bound)
        PHI2_EMU_ENTRY(attention_mma_backward_bf16_d32),
        PHI2_EMU_ENTRY(attention_mma_backward_bf16_d64),
        PHI2_EMU_ENTRY(attention_mma_backward_bf16_d80),
        PHI2_EMU_ENTRY(attention_mma_backward_bf16_d128),
        PHI2_EMU_ENTRY(attention_mma_backward_f16_d32),
        PHI2_EMU_ENTRY(attention_mma_backward_f16_d64),
        PHI2_EMU_ENTRY(attention_mma_backward_f16_d80),
        PHI2_EMU_ENTRY(attention_mma_backward_f16_d128),
        // test_kernels.cu (planted bugs; never embedded for NVRTC)
        PHI2_EMU_ENTRY(emu_test_rotate_synced),
        PHI2_EMU_ENTRY(emu_test_rotate_unsynced),
        PHI2_EMU_ENTRY(emu_test_early_return),
        PHI2_EMU_ENTRY(emu_test_warp_sum),
        PHI2_EMU_ENTRY(emu_test_trap),
        PHI2_EMU_ENTRY(emu_test_shfl_outside_mask),
        PHI2_EMU_ENTRY(emu_test_block_sum),
        PHI2_EMU_ENTRY(emu_test_convert),
        PHI2_EMU_ENTRY(emu_test_write_past_end),
        PHI2_EMU_ENTRY(emu_test_read_shifted),
        PHI2_EMU_ENTRY(emu_test_dynamic_shared_neighbour),
        PHI2_EMU_ENTRY(emu_test_stack_overflow),
        // test_reduce.cu (planted bugs in the row reduction; never embedded for NVRTC)
        PHI2_EMU_ENTRY(emu_test_row_sum_unsynced),
        PHI2_EMU_ENTRY(emu_test_row_sum_wrong_lane),
        // test_mma.cu (the tensor-core wrappers: products by hand and over k, planted bugs; never embedded for NVRTC)
        PHI2_EMU_ENTRY(emu_test_mma_by_hand_bf16),
        PHI2_EMU_ENTRY(emu_test_mma_by_hand_swapped_bf16),
        PHI2_EMU_ENTRY(emu_test_mma_gemm_bf16),
        PHI2_EMU_ENTRY(emu_test_mma_lane_exits),
        PHI2_EMU_ENTRY(emu_test_ldmatrix_misaligned),
        // test_async.cu (the cp.async wrappers: group semantics, planted bugs; never embedded for NVRTC)
        PHI2_EMU_ENTRY(emu_test_cp_async_groups),
        PHI2_EMU_ENTRY(emu_test_cp_async_missing_wait),
        PHI2_EMU_ENTRY(emu_test_cp_async_missing_barrier),
        PHI2_EMU_ENTRY(emu_test_cp_async_misaligned),
        // mma_check.cu (the tensor-core wrappers on one tile, for the device checks; a real kernel file, for NVRTC too)
        PHI2_EMU_ENTRY(mma_tile_bf16),
        PHI2_EMU_ENTRY(mma_tile_f16),
        PHI2_EMU_ENTRY(ldmatrix_fragments_b16),
    };
}

const KernelEntry* find_kernel(const char* name)
{
    if (!name) return nullptr;
    for (const KernelEntry& e : table)
        if (strcmp(e.name, name) == 0) return &e;
    return nullptr;
}

const KernelEntry* kernel_table(int* count)
{
    *count = (int)(sizeof table / sizeof table[0]);
    return table;
}
}

// The names in the table, for the completeness test: writes up to `capacity` pointers and returns the count.
extern "C" __attribute__((visibility("default"))) int emu_kernel_names(const char** names, int capacity)
{
    int count = 0;
    const phi2_emu::KernelEntry* table = phi2_emu::kernel_table(&count);
    for (int i = 0; i < count && i < capacity; i++) names[i] = table[i].name;
    return count;
}

// The parameter sizes of kernel `name` (up to `capacity` of them) for graph capture; returns the parameter count, or
// -1 when there is no such kernel.
extern "C" __attribute__((visibility("default"))) int emu_kernel_parameters(const char* name, int* sizes, int capacity)
{
    const phi2_emu::KernelEntry* entry = phi2_emu::find_kernel(name);
    return entry ? entry->parameter_sizes(sizes, capacity) : -1;
}
