#!/usr/bin/env python3
"""PyTorch, HF transformers and PEFT on the same GPU as our benchmarks, printed as ratio rows against ours.

bench/gpu-check.sh's runner runs this in its peers stage, after its benchmark stage, with the GPU image's Python
(/opt/torch/.venv/bin/python3: torch, transformers, peft; no network) and `--ours FILE`: the benchmark stage's
results of the same run as JSON (`{"device", "sizes", "cases": [{"name", "status", "ms", "rate", "unit", ...}]}`).
By hand:
    /opt/torch/.venv/bin/python3 bench/peers/gpu_peers.py [--ours FILE]
    /usr/bin/python3 bench/peers/gpu_peers.py --dry-run [--ours FILE]     # CPU, Debian's torch, tiny sizes (CI)

The cases, each wrapped so that its failure loses only itself (it prints FAILED with the reason; the exit status is 1
when any failed):
  sdpa    torch's scaled_dot_product_attention forward + backward, B 1, T 2048, H 32, D 80, causal, bf16, its backend
          pinned to flash; the backend that ran is printed (from the profiler's op names)
  decode  HF PhiForCausalLM (bf16, attn_implementation "sdpa", random weights of microsoft/phi-2's config written
          here: never a download), greedy decoding at batch 1 after a 2,000-token prompt: tokens/s
  lora    the same model under PEFT LoRA (r 16, alpha 32, dropout 0.05 on q_proj, k_proj, v_proj, dense, fc1, fc2;
          PEFT keeps the adapters fp32 over the bf16 base, as ours are), one step at B 4, T 2048: forward with labels,
          backward, clipping at 1.0, AdamW, zeroed gradients: tokens/s and peak memory
Ours / theirs is a speed ratio: their time over ours (> 1: ours is faster).

--dry-run runs the torch-only parts (sdpa, the timing, the ratio rows) on the CPU at tiny sizes and skips the
transformers and PEFT cases, saying so. Without a GPU and without --dry-run, or without torch, it exits 2 with one
line saying which.
"""
import argparse
import json
import math
import statistics
import sys
import time
import traceback

try:
    import torch
    import torch.nn.functional as F
except ImportError as error:
    print(f"error: torch is not importable by {sys.executable} ({error}); the GPU image has it in /opt/torch/.venv/bin/python3, "
          "Debian in python3-torch (for --dry-run)", file=sys.stderr)
    sys.exit(2)

# microsoft/phi-2's config.json, the fields PhiConfig reads (the weights are random: nothing is downloaded).
PHI2_CONFIG = dict(vocab_size=51200, hidden_size=2560, intermediate_size=10240, num_hidden_layers=32, num_attention_heads=32,
                   num_key_value_heads=32, max_position_embeddings=2048, partial_rotary_factor=0.4, rope_theta=10000.0,
                   layer_norm_eps=1e-5, hidden_act="gelu_new", resid_pdrop=0.1, embd_pdrop=0.0, attention_dropout=0.0,
                   qk_layernorm=False, tie_word_embeddings=False, bos_token_id=50256, eos_token_id=50256)
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2"]

# Which of our benchmark cases (bench/Phi2Native.GpuCheck/Benchmarks.cs) each peer case is compared with.
OURS_SDPA = ("attention forward (causal)", "attention backward (causal)")
OURS_DECODE = "model decode, greedy (Generator, CUDA graph)"  # timed as decode_case times HF's: generate less prefill
OURS_DECODE_EAGER = "model decode, greedy (Generator, eager)"
OURS_LORA = "LoRA step (phi2 bench lora)"


class Sizes:
    def __init__(self, dry_run):
        if dry_run:
            self.attention = dict(B=1, T=32, H=2, D=80)  # the runner's tiny sizes (BenchSizes.Tiny)
            self.prompt, self.new_tokens, self.batch, self.seq, self.reps = 24, 4, 1, 32, 2
        else:
            self.attention = dict(B=1, T=2048, H=32, D=80)
            self.prompt, self.new_tokens, self.batch, self.seq, self.reps = 2000, 32, 4, 2048, 3


class Clock:
    """Milliseconds of `run()`: CUDA events on a GPU, the wall clock on the CPU."""

    def __init__(self, device):
        self.device = device

    def time(self, run, reps, warmup=1):
        for _ in range(warmup):
            run()
        times = []
        for _ in range(reps):
            if self.device.type == "cuda":
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                run()
                end.record()
                end.synchronize()
                times.append(start.elapsed_time(end))
            else:
                start = time.perf_counter()
                run()
                times.append((time.perf_counter() - start) * 1000)
        return statistics.median(times)


def sdpa_case(device, dtype, sizes, clock):
    """scaled_dot_product_attention forward + backward, causal, flash pinned on a GPU; returns (ms, note)."""
    B, T, H, D = (sizes.attention[k] for k in "BTHD")
    g = torch.Generator(device=device).manual_seed(0)
    q, k, v = (torch.randn(B, H, T, D, device=device, dtype=dtype, generator=g).requires_grad_(True) for _ in range(3))
    dy = torch.randn(B, H, T, D, device=device, dtype=dtype, generator=g)
    sdpa = getattr(F, "scaled_dot_product_attention", None)

    def attention():
        if sdpa is not None:
            return sdpa(q, k, v, is_causal=True)
        # torch 1.13 (Debian's, the dry run) has no scaled_dot_product_attention: the same math, written out.
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(D)
        future = torch.ones(T, T, dtype=torch.bool, device=device).triu(1)
        return scores.masked_fill(future, float("-inf")).softmax(-1) @ v

    def step():
        q.grad = k.grad = v.grad = None
        attention().backward(dy)

    pinned = pin_flash(device)
    with pinned:
        ms = clock.time(step, sizes.reps * 3)
        backend = ran_backend(step) if sdpa is not None else "math (written out: torch 1.13 has no scaled_dot_product_attention)"
    pin = "flash pinned" if device.type == "cuda" else "no pin on the CPU"
    return ms, f"B {B}, T {T}, H {H}, D {D}, causal, {str(dtype).replace('torch.', '')}, {pin}; backend that ran: {backend}"


def pin_flash(device):
    """The context that allows only the flash backend (torch >= 2.3: torch.nn.attention.sdpa_kernel); nothing on the CPU."""
    import contextlib
    if device.type != "cuda":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel
    return sdpa_kernel([SDPBackend.FLASH_ATTENTION])


def ran_backend(step):
    """The aten op that computed attention, from the profiler's records (e.g. _scaled_dot_product_flash_attention)."""
    with torch.profiler.profile() as profiler:
        step()
    names = sorted({e.name for e in profiler.events() if e.name.startswith("aten::_scaled_dot_product_") or e.name.startswith("aten::_flash_attention")})
    return ", ".join(n.replace("aten::", "") for n in names) or "unknown (no _scaled_dot_product_* op recorded)"


def phi2_model(device):
    """HF PhiForCausalLM with random weights of Phi-2's config, bf16, SDPA attention, built on the GPU."""
    from transformers import PhiConfig, PhiForCausalLM
    config = PhiConfig(**PHI2_CONFIG)
    with torch.device(device):
        model = PhiForCausalLM._from_config(config, dtype=torch.bfloat16, attn_implementation="sdpa")
    # The partial rotary factor is easy to lose across transformers versions (a kwarg since 5): check its effect.
    rotaries = [m for n, m in model.named_modules() if n.endswith("rotary_emb") and hasattr(m, "inv_freq")]
    rotary = rotaries[0].inv_freq.numel() * 2 if rotaries else 32  # where a version keeps no inv_freq, unchecked
    if rotary != 32:
        raise RuntimeError(f"the model rotates {rotary} of each head's 80 dims, not Phi-2's 32: PhiConfig did not take partial_rotary_factor")
    implementation = model.config._attn_implementation
    if implementation != "sdpa":
        raise RuntimeError(f"attention implementation is {implementation!r}, not 'sdpa'")
    return model


def decode_case(model, device, sizes, clock):
    """Greedy decoding at batch 1 after a prompt; returns (tokens/s, note)."""
    model.eval()
    g = torch.Generator(device=device).manual_seed(1)
    prompt = torch.randint(0, PHI2_CONFIG["vocab_size"], (1, sizes.prompt), device=device, generator=g)

    @torch.no_grad()
    def generate():
        out = model(input_ids=prompt, use_cache=True, logits_to_keep=1)
        cache, token = out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)
        for _ in range(sizes.new_tokens):
            out = model(input_ids=token, past_key_values=cache, use_cache=True)
            cache, token = out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)

    @torch.no_grad()
    def prefill():
        model(input_ids=prompt, use_cache=True, logits_to_keep=1)

    total, first = clock.time(generate, sizes.reps), clock.time(prefill, sizes.reps)
    ms_per_token = (total - first) / sizes.new_tokens
    return 1000 / ms_per_token, ms_per_token, f"{sizes.new_tokens} tokens after a {sizes.prompt}-token prompt, B 1; prefill {first:.1f} ms"


def lora_case(model, device, sizes, clock):
    """One PEFT LoRA training step; returns (tokens/s, ms, peak bytes, note)."""
    from peft import LoraConfig, get_peft_model
    peft_model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules=LORA_TARGETS, task_type="CAUSAL_LM"))
    peft_model.train()
    trainable = [p for p in peft_model.parameters() if p.requires_grad]
    dtypes = sorted({str(p.dtype).replace("torch.", "") for p in trainable})
    optimizer = torch.optim.AdamW(trainable, lr=2e-4, weight_decay=0.01)
    g = torch.Generator(device=device).manual_seed(2)
    ids = torch.randint(0, PHI2_CONFIG["vocab_size"], (sizes.batch, sizes.seq), device=device, generator=g)

    def step():
        loss = peft_model(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        optimizer.zero_grad()

    step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    ms = clock.time(step, sizes.reps, warmup=0)
    peak = torch.cuda.max_memory_allocated()
    count = sum(p.numel() for p in trainable)
    return sizes.batch * sizes.seq / (ms / 1000), ms, peak, f"B {sizes.batch}, T {sizes.seq}, r 16 on {','.join(LORA_TARGETS)}; {count:,} trainable ({'/'.join(dtypes)})"


def read_ours(path):
    """Our benchmark stage's cases by name, or {} (said) when there is no file."""
    if path is None:
        return {}
    try:
        with open(path) as f:
            document = json.load(f)
        return {c["name"]: c for c in document["cases"] if c.get("status") == "Ran"}
    except (OSError, ValueError, KeyError, TypeError) as error:
        print(f"ours: not read from {path} ({error}); the ratio rows are left out", file=sys.stderr)
        return {}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="torch-only parts on the CPU at tiny sizes; transformers and peft skipped")
    parser.add_argument("--ours", help="our benchmark stage's JSON of the same run, for the ratio rows")
    args = parser.parse_args()
    if args.dry_run:
        device, dtype = torch.device("cpu"), torch.float32
    elif not torch.cuda.is_available():
        print(f"error: no GPU: torch {torch.__version__} sees no CUDA device (torch.cuda.is_available() is False); "
              "--dry-run runs the torch-only parts on the CPU", file=sys.stderr)
        return 2
    else:
        device, dtype = torch.device("cuda"), torch.bfloat16
    sizes, clock, ours = Sizes(args.dry_run), Clock(device), read_ours(args.ours)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (dry run: tiny sizes)"
    print(f"peers on {where}: torch {torch.__version__}", flush=True)

    results, failed = [], []

    def case(name, run):
        started = time.perf_counter()
        try:
            run()
        except Exception as error:  # noqa: BLE001 - a case's failure, whatever it is, loses only that case
            failed.append(name)
            print(f"{name}: FAILED after {time.perf_counter() - started:.1f} s: {type(error).__name__}: {error}", flush=True)
            traceback.print_exc(limit=3, file=sys.stdout)

    def row(name, theirs_ms, theirs_rate, unit, ours_names, note):
        ours_cases = [ours.get(n) for n in ours_names]
        ours_ms = sum(c["ms"] for c in ours_cases) if ours_cases and all(c and c.get("ms") for c in ours_cases) else None
        results.append((name, ours_ms, theirs_ms, theirs_rate, unit))
        ratio = f"{theirs_ms / ours_ms:.2f}x" if ours_ms else "no figure of ours"
        print(f"{name}: theirs {theirs_ms:.3f} ms" + (f", {theirs_rate:.1f} {unit}" if theirs_rate else "")
              + (f"; ours {ours_ms:.3f} ms" if ours_ms else "") + f"; ours / theirs speed {ratio}; {note}", flush=True)

    def sdpa():
        ms, note = sdpa_case(device, dtype, sizes, clock)
        row("sdpa forward+backward", ms, None, "", OURS_SDPA, note)

    case("sdpa", sdpa)
    model = []
    if args.dry_run:
        for name in ("decode", "lora"):
            print(f"{name}: skipped: --dry-run runs the torch-only parts (HF PhiForCausalLM and PEFT are not run)", flush=True)
    else:
        def build():
            started = time.perf_counter()
            model.append(phi2_model(device))
            print(f"model: PhiForCausalLM, random weights of Phi-2's config, bf16, sdpa; built in {time.perf_counter() - started:.1f} s", flush=True)

        def decode():
            rate, ms, note = decode_case(model[0], device, sizes, clock)
            row("decode (greedy, B 1)", ms, rate, "tokens/s", [OURS_DECODE], note + "; ours from the CUDA graph")
            row("decode, ours eager", ms, rate, "tokens/s", [OURS_DECODE_EAGER], "the same HF figure; ours launching every kernel")

        def lora():
            rate, ms, peak, note = lora_case(model[0], device, sizes, clock)
            row("LoRA step (PEFT)", ms, rate, "tokens/s", [OURS_LORA], f"{note}; peak {peak / 2**30:.2f} GiB allocated")

        case("model", build)
        if model:
            case("decode", decode)
            case("lora", lora)
        else:
            print("decode, lora: not run: the model was not built", flush=True)
            failed += ["decode", "lora"]

    print()
    print(f"{'case':<24} {'ours ms':>10} {'theirs ms':>10} {'ours / theirs':>14}")
    for name, ours_ms, theirs_ms, _, _ in results:
        print(f"{name:<24} {(f'{ours_ms:.3f}' if ours_ms else '-'):>10} {theirs_ms:>10.3f} {(f'{theirs_ms / ours_ms:.2f}x' if ours_ms else '-'):>14}")
    print("ours / theirs: their time over ours, how many times faster ours is (< 1: slower)")
    print(f"peers: {len(results)} case(s) measured" + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
