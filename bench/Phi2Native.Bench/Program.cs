// Phi2Native benchmark harness.
//
//   dotnet run -c Release --project bench/Phi2Native.Bench -- <gemm|gemm-kernel|step|attention|embedded|embedded-base|embedded-demo|emulator|prefill|generate> [options]
//
// Each mode validates what it times against a reference first, warms up, then reports the median
// of repeated runs against the machine's ceiling (see Machine.cs). Arguments are parsed by hand:
// the harness takes no dependencies beyond the library.
using Phi2Native.Bench;

return BenchMain.Run(args);

namespace Phi2Native.Bench
{
    internal static class BenchMain
    {
        public static int Run(string[] args)
        {
            if (args.Length == 0 || args[0] is "-h" or "--help" or "help")
            {
                Console.WriteLine(Usage);
                return args.Length == 0 ? 1 : 0;
            }
            try
            {
                var options = new ArgReader(args[1..]);
                switch (args[0])
                {
                    case "gemm": return GemmBench.Run(options);
                    case "gemm-kernel": return GemmKernelBench.Run(options);
                    case "step": return StepBench.Run(options);
                    case "embedded": return EmbeddedBench.Run(options);
                    case "embedded-base": return EmbeddedBaseBench.Run(options);
                    case "embedded-demo": return EmbeddedDemoBench.Run(options);
                    case "attention": return AttentionBench.Run(options);
                    case "emulator": return EmulatorBench.Run(options);
                    case "prefill": return PrefillBench.Run(options);
                    case "generate": return GenerateBench.Run(options);
                    default:
                        Console.Error.WriteLine($"unknown mode '{args[0]}'\n\n{Usage}");
                        return 1;
                }
            }
            catch (ArgumentException e)
            {
                Console.Error.WriteLine($"error: {e.Message}\n\n{Usage}");
                return 1;
            }
        }

        private const string Usage = """
            usage: Phi2Native.Bench <mode> [options]

            modes:
              gemm   CPU matrix multiply (CpuGemm): validate, warm up, time, report GFLOP/s and % of peak
                     --shapes [B*]MxNxK[:TT],...  shapes; the optional suffix gives transposes of A and B
                                               (N = as stored, T = transposed), default NT (x . W^T);
                                               B* makes it a strided batch of B products
                     --reps N                  timed runs per shape, median reported (default 7)
                     --warmup N                untimed runs per shape (default 2)
                     --threads N               cap on threads (default: all cores)
                     --kernel auto|v512|v256|portable
                     --double                  time the double-precision path instead of float
                     --markdown                print the table as Markdown
                     --peak GFLOPS             fp32 ceiling to report against, instead of probing the machine
              gemm-kernel   each fp32 microkernel alone on L1-resident panels, one core: the ceiling for gemm
                     --kc N                    depth of the panels (default 256)
                     --peak GFLOPS, --markdown as for gemm
              step   end-to-end training steps (forward + backward) on the CPU backend: the tiny model and Phi-2's
                     dimensions cut to 2 layers, all parameters trainable, then LoRA on all layers and on the top one;
                     tokens/s, GFLOP/s, % of peak, backward ops
                     --reps N, --warmup N, --peak GFLOPS, --markdown
              embedded   the embedded default model's training curve: full-parameter AdamW on the shipped text,
                     validation loss at fixed steps, seconds of training; does it halve in about a minute?
                     --steps N --batch B --length T --lr LR --warmup N --weight-decay W --eval-every N --seed S
                     --hidden C --heads H --layers L --inner I --dropout P --tokenizer DIR   (overrides, for tuning)
                     --prompt TEXT (continued greedily at the end), --markdown
              embedded-base   the pretrained base: runs its recipe (the embedded model trained on Genesis) and checks
                     that it reproduces the shipped src/Phi2Native/Embedded/base.safetensors (SHA-256; exit code 1 if not;
                     with AVX-512, the recorded 512-bit result unless DOTNET_PreferredVectorBitWidth=256);
                     prints the Genesis validation curve and the base's loss on Genesis and on Exodus (held out)
                     --first N                 stop after the first N steps of the recipe (prints their hash, checks none)
                     --out PATH                keep the weights made
                     --steps N --lr LR --batch B --warmup N --weight-decay W --dropout P   a sweep instead of the recipe (no check)
                     --markdown
              embedded-demo   phi2 demo's run without the console: LoRA of a task preset on a layer range of the
                     pretrained base, fine-tuned on Exodus; trainable/frozen parameters, backward ops, held-out losses
                     on Exodus and Genesis before and after, both continuations, the Exodus curve
                     --preset NAME --layers RANGE --r R --alpha A --steps N --lr LR --batch B --warmup N --validations N
                     --base PATH               a base not yet shipped (from embedded-base --out)
                     --markdown
              attention   causal attention (CpuAttention), fp32: B=1, H=32, D=80 for each T, and the demo's
                     B=4, T=64, H=4, D=32; validated on one head against fp64, then forward and backward timed
                     --time T,...              sequence lengths of the H=32 shapes (default 128,512,2048)
                     --no-tiny                 skip the demo shape
                     --reps N                  timed runs per shape, median reported (default 5)
                     --warmup N                untimed runs per shape (default 1, and at least 1 s of them: JIT tiering)
                     --peak GFLOPS, --markdown
              emulator   the kernel emulator (libphi2emu through EmulatedDevice): add_f32 over 1M and 1000 elements,
                     the block-sum test kernel in one big block and in 1024 small ones; ms per launch, us per block,
                     ns per emulated thread, each result checked against the host first
                     --reps N, --warmup N, --markdown
              prefill   a long prompt's prefill through the KV cache, logits of every position against the last
                     position only (what generation needs): ms, lm_head rows, logits copied to the host, transient peak
                     --time T                  prompt length on the embedded model (default 255)
                     --phi2-time T             prompt length on Phi-2's dimensions cut to 2 layers (default 512)
                     --no-phi2                 skip the Phi-2-dimensions case (1.7 GB of weights)
                     --reps N, --warmup N, --markdown
              generate   greedy generation for prompts of different lengths, row after row against one batch
                     (checked to give the same tokens): ms and new tokens/s
                     --batch B                 prompts on the embedded model, lengths spread over [8, 128) (default 8)
                     --tokens N                new tokens per prompt (default 32; at most 16 on the Phi-2 case, B = 4)
                     --no-phi2                 skip the Phi-2-dimensions case
                     --reps N, --warmup N, --markdown
            """;
    }
}
