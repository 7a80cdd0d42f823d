#!/usr/bin/env python3
"""Phi2Native's CPU backend beside PyTorch on the same shapes, interleaved (ours, theirs, ours, theirs, ...).

Run from the repository root, after `dotnet build -c Release`:
    apt-get install -y python3-torch libopenblas0-openmp      # Debian's PyTorch 1.13 over OpenBLAS
    /usr/bin/python3 bench/peers/cpu/cpu_peers.py [--rounds N] [--repeat N] [--quick] [--markdown]

Ours: the built `phi2 bench ... --json` for the steps and `Phi2Native.Bench gemm` for the GEMMs, each a child process;
theirs: PyTorch in this process. OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE are removed from this process's environment
before torch loads (the script re-executes itself without them), so OpenBLAS picks its own kernel for this machine;
the caller's shell keeps them. Each round runs one side's repetitions and then the other's, so a machine that gets
busier or quieter shifts both; a case's figure is the median over all its rounds' repetitions.

The PyTorch model is tests/fixtures/make_golden.py's Phi-2 (parallel attention + MLP block, partial rotary 0.4 of
head dim 80, gelu_new, LayerNorm, biased Linears, untied lm_head), run here in float32 with random weights. It has no
residual dropout (it is the golden data's evaluation-mode model); our `train` applies the config's (Phi-2: 0.1, the
embedded model: 0), a few elementwise ops a layer. A step on both sides: forward, causal-LM loss, backward,
clipping at global norm 1.0, AdamW (lr 2e-4), zeroed gradients. LoRA as PEFT computes it: y = x W^T + b +
(alpha / r) (dropout(x) A^T) B^T, r 16, alpha 32, lora_dropout 0.05, B starting at zero, the base frozen.

Prints one row per case: our median ms, theirs, and theirs / ours (how many times faster ours is; < 1: slower).
This lives outside bench/peers/*.py on purpose: bench/gpu-check.sh runs those on a GPU machine.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
OPENBLAS_VARIABLES = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")

if any(v in os.environ for v in OPENBLAS_VARIABLES) and os.environ.get("PHI2_PEERS_REEXEC") != "1":
    env = {k: v for k, v in os.environ.items() if k not in OPENBLAS_VARIABLES}
    env["PHI2_PEERS_REEXEC"] = "1"
    os.execve(sys.executable, [sys.executable] + sys.argv, env)

try:
    import torch
    import torch.nn.functional as F
except ImportError:
    sys.exit("error: PyTorch is missing: apt-get install -y python3-torch libopenblas0-openmp, then run with /usr/bin/python3")

sys.path.insert(0, os.path.join(REPO, "tests", "fixtures"))
import make_golden as golden  # noqa: E402  (the torch Phi-2 of the golden data)

PHI2 = os.path.join(REPO, "src", "Phi2Native.Cli", "bin", "Release", "net10.0", "phi2.dll")
BENCH = os.path.join(REPO, "bench", "Phi2Native.Bench", "bin", "Release", "net10.0", "Phi2Native.Bench.dll")
EMBEDDED_CONFIG = os.path.join(REPO, "src", "Phi2Native", "Embedded", "config.json")
PRESETS = {"update-knowledge": ["q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2"],
           "attention-refinement": ["q_proj", "k_proj", "v_proj"]}
LORA_R, LORA_ALPHA, LORA_DROPOUT = 16, 32, 0.05


def config(name, layers=None):
    """make_golden's normalized architecture of the embedded config or Phi-2's, cut to `layers`."""
    if name == "embedded":
        with open(EMBEDDED_CONFIG) as f:
            c = json.load(f)
    else:
        c = golden.hf_config(vocab_size=51200, hidden_size=2560, intermediate_size=10240, num_hidden_layers=32,
                             num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=2048)
    if layers is not None:
        c["num_hidden_layers"] = layers
    return golden.arch(c)


def random_params(a, seed=0):
    """float32 weights, HF's initialization (normal 0.02, LayerNorm 1, biases 0): timings do not depend on values."""
    g = torch.Generator().manual_seed(seed)
    p = {}
    for name, shape in golden.param_shapes(a):
        if "layernorm" in name and name.endswith("weight"):
            p[name] = torch.ones(shape)
        elif name.endswith(".weight"):
            p[name] = torch.randn(*shape, generator=g) * 0.02
        else:
            p[name] = torch.zeros(shape)
    return p


class TorchStep:
    """One training or LoRA step of make_golden's model, as `phi2 bench train|lora` runs it."""

    def __init__(self, a, batch, seq, preset=None):
        self.a, self.batch, self.seq = a, batch, seq
        self.p = random_params(a)
        g = torch.Generator().manual_seed(1)
        self.ids = torch.randint(0, a["vocab"], (batch, seq), generator=g)
        self.lora = {}
        if preset is None:
            for t in self.p.values():
                t.requires_grad_(True)
            trainable = list(self.p.values())
        else:
            for name, shape in golden.param_shapes(a):
                module = name.rsplit(".", 2)[-2]
                if name.endswith(".weight") and module in PRESETS[preset]:
                    out_features, in_features = shape
                    A = (torch.rand(LORA_R, in_features, generator=g) * 2 - 1) / in_features ** 0.5  # kaiming-uniform-like
                    B = torch.zeros(out_features, LORA_R)
                    self.lora[name[:-len(".weight")]] = (A.requires_grad_(True), B.requires_grad_(True))
            trainable = [t for pair in self.lora.values() for t in pair]
        self.trainable = trainable
        self.optimizer = torch.optim.AdamW(trainable, lr=2e-4, weight_decay=0.01)

    def linear(self, x, p, name):
        y = golden.linear(x, p, name)
        if name in self.lora:
            A, B = self.lora[name]
            y = y + (F.dropout(x, LORA_DROPOUT, training=True) @ A.T @ B.T) * (LORA_ALPHA / LORA_R)
        return y

    def run(self):
        logits = golden.forward(self.p, self.a, self.ids, lin=self.linear)
        loss = golden.lm_loss(logits, self.ids)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.trainable, 1.0)
        self.optimizer.step()
        self.optimizer.zero_grad()


def time_torch(run, repeat, warmup):
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1000)
    return times


def ours(command):
    """Runs one of our built programs; returns its standard output."""
    done = subprocess.run(["dotnet"] + command, cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"error: {' '.join(command)} exited {done.returncode}:\n{done.stderr}")
    return done.stdout


def ours_step(what, config_name, layers, batch, seq, preset, repeat, warmup):
    args = [PHI2, "bench", what, "--config", config_name, "--batch", str(batch), "--seq", str(seq),
            "--repeat", str(repeat), "--warmup", str(warmup), "--json", "--quiet"]
    if layers is not None:
        args += ["--layers", str(layers)]
    if preset is not None:
        args += ["--preset", preset]
    return json.loads(ours(args).strip().splitlines()[-1])["times_ms"]


def ours_gemms(shapes, repeat, warmup):
    """{shape: [median ms]} from Phi2Native.Bench gemm's Markdown table (it validates each product first)."""
    text = ours([BENCH, "gemm", "--shapes", ",".join(f"{m}x{n}x{k}" for m, n, k in shapes), "--reps", str(repeat),
                 "--warmup", str(warmup), "--markdown"])
    rows = [line.split("|")[1:-1] for line in text.splitlines() if line.startswith("|")]
    header = [h.strip() for h in rows[0]]
    column = header.index("median ms")
    medians = {}
    for row in rows[2:]:
        m, n, k = (int(v) for v in row[0].strip().split("x"))
        medians[(m, n, k)] = [float(row[column])]
    return medians


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds per case (default 2)")
    parser.add_argument("--repeat", type=int, default=3, help="timed repetitions per side per round (default 3)")
    parser.add_argument("--quick", action="store_true", help="the embedded model and the 128-token GEMMs only")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    args = parser.parse_args()
    if args.rounds < 1 or args.repeat < 1:
        sys.exit("error: --rounds and --repeat must be at least 1")
    for path in (PHI2, BENCH):
        if not os.path.exists(path):
            sys.exit(f"error: {os.path.relpath(path, REPO)} is missing: run `dotnet build -c Release` first")
    threads = len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    removed = ", ".join(v for v in OPENBLAS_VARIABLES if os.environ.get("PHI2_PEERS_REEXEC") == "1") or "none were set"
    print(f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC; torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE removed for torch ({removed}); {args.rounds} rounds x {args.repeat} repetitions a side; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores",
          file=sys.stderr)

    rows = []

    def report(name, ours_times, theirs_times):
        o, t = statistics.median(ours_times), statistics.median(theirs_times)
        rows.append((name, o, t, t / o))
        print(f"  {name}: ours {o:.1f} ms, torch {t:.1f} ms, {t / o:.2f}x", file=sys.stderr, flush=True)

    # GEMMs of Phi-2's projections, x [N, K] . W^T [K, out]: q/k/v/dense 2560 -> 2560, fc1 2560 -> 10240, fc2 10240 -> 2560.
    tokens = [128] if args.quick else [128, 512]
    shapes = [(n, out, k) for n in tokens for (k, out) in ((2560, 2560), (2560, 10240), (10240, 2560))]
    names = {(2560, 2560): "q/k/v/dense", (2560, 10240): "fc1", (10240, 2560): "fc2"}
    ours_times = {s: [] for s in shapes}
    theirs_times = {s: [] for s in shapes}
    g = torch.Generator().manual_seed(3)
    operands = {s: (torch.rand(s[0], s[2], generator=g) * 2 - 1, torch.rand(s[1], s[2], generator=g) * 2 - 1) for s in shapes}
    for _ in range(args.rounds):
        for s, times in ours_gemms(shapes, args.repeat, 1).items():
            ours_times[s] += times
        for s in shapes:
            x, w = operands[s]
            theirs_times[s] += time_torch(lambda: F.linear(x, w), args.repeat, 1)
    for s in shapes:
        # Ours reports one median per round; theirs every repetition: the median of either is the figure.
        report(f"GEMM {names[(s[2], s[1])]} {s[0]}x{s[2]} . {s[2]}x{s[1]}", ours_times[s], theirs_times[s])

    steps = [("train", "embedded", None, 4, 64, None, "embedded model, full step, B 4, T 64")]
    if not args.quick:
        steps += [("train", "phi2", 2, 1, 128, None, "Phi-2 widths 2 layers, full step, B 1, T 128"),
                  ("lora", "phi2", 2, 1, 128, "update-knowledge", "Phi-2 widths 2 layers, LoRA q,k,v,dense,fc1,fc2, B 1, T 128"),
                  ("lora", "phi2", 2, 1, 128, "attention-refinement", "Phi-2 widths 2 layers, LoRA q,k,v, B 1, T 128")]
    for what, config_name, layers, batch, seq, preset, name in steps:
        step = TorchStep(config(config_name, layers), batch, seq, preset)
        mine, theirs = [], []
        for round_index in range(args.rounds):
            mine += ours_step(what, config_name, layers, batch, seq, preset, args.repeat, 1)
            theirs += time_torch(step.run, args.repeat, 1 if round_index == 0 else 0)
        report(name, mine, theirs)
        del step

    print(f"load average at the end: {os.getloadavg()[0]:.1f} (1 min), {os.getloadavg()[2]:.1f} (15 min) on {os.cpu_count()} cores", file=sys.stderr)
    print()
    header = ("case", "ours ms", "PyTorch ms", "theirs / ours")
    body = [(n, f"{o:.1f}", f"{t:.1f}", f"{r:.2f}x") for n, o, t, r in rows]
    if args.markdown:
        widths = [max(len(r[i]) for r in [header] + body) for i in range(4)]
        print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |")
        print("|" + "|".join("-" * (w + 2) if i == 0 else "-" * (w + 1) + ":" for i, w in enumerate(widths)) + "|")
        for r in body:
            print("| " + " | ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(r, widths))) + " |")
    else:
        widths = [max(len(r[i]) for r in [header] + body) for i in range(4)]
        for r in [header] + body:
            print("  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(r, widths))))
    print("theirs / ours: PyTorch's median time over ours, how many times faster ours is (< 1: slower)")


if __name__ == "__main__":
    main()
