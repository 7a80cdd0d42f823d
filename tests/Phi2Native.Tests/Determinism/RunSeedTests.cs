using System.Reflection;
using NUnit.Framework;
using Phi2Native.Autograd;
using Phi2Native.Autograd.Ops;
using Phi2Native.Backends.Ops.Dropout;
using Phi2Native.Backends.Ops.Lora;
using Phi2Native.Backends.Ops.Qkv;
using Phi2Native.Backends.Ops.Residual;
using Phi2Native.FineTuning.Data;
using Phi2Native.FineTuning.Lora;
using Phi2Native.FineTuning.Training;
using Phi2Native.Models.Phi2;
using Phi2Native.Tensors;
using Phi2Native.Tests.Support;

namespace Phi2Native.Tests.Determinism;

/// <summary>
/// A run's seed names the same run: the dropout seeds a Trainer gives the model and its adapters, and the seed of every
/// dropout in the first two training forwards (embedding, each adapter's input, each layer's two residual branches),
/// equal the ones the engine used before its seed rules moved into Seeds.Derive. The numbers were recorded from the
/// earlier code (a forward under a tape, each DropoutOp's seed read back); they pin which rule each site uses, where
/// SeedsTests pins the rules themselves.
/// </summary>
[TestFixture]
public class RunSeedTests : TemporaryDirectoryTest
{
    private static readonly Phi2Config Small = Phi2Config.Tiny with
    {
        VocabSize = 40, HiddenSize = 24, IntermediateSize = 48, NumHiddenLayers = 2, NumAttentionHeads = 2, RotaryDim = 6, ResidPdrop = 0.1, EmbdPdrop = 0.1,
    };

    [TestCase(0, 0x0000000000000001UL,
        new[] { 0x0000000100000001UL, 0x0000000200000001UL, 0x0000000300000001UL, 0x0000000400000001UL, 0x0000000500000001UL, 0x0000000600000001UL },
        new[]
        {
            0xC3A2101DB5CE4769UL, 0x9E3779BA7F4A7C16UL, 0x9E3779BB7F4A7C16UL, 0x9E3779BC7F4A7C16UL, 0x2B5C30DB037C5DFCUL, 0x2B5C30DEDD90BB91UL,
            0x9E3779BD7F4A7C16UL, 0x9E3779BE7F4A7C16UL, 0x9E3779BF7F4A7C16UL, 0x0B74650C7D47F6DDUL, 0x0B746509A3AB10B0UL,
        },
        new[]
        {
            0xA2B8B8757C2082D6UL, 0x3C6EF373FE94F82BUL, 0x3C6EF374FE94F82BUL, 0x3C6EF375FE94F82BUL, 0x60F810FDB9B61A8EUL, 0x60F810F8675AFCE3UL,
            0x3C6EF376FE94F82BUL, 0x3C6EF377FE94F82BUL, 0x3C6EF378FE94F82BUL, 0xDEEAC5D01AB6CFA2UL, 0xDEEAC5D5C45A29CFUL,
        })]
    [TestCase(42, 0xF519F86EE2385B73UL,
        new[] { 0xF519F86FE2385B73UL, 0xF519F86CE2385B73UL, 0xF519F86DE2385B73UL, 0xF519F86AE2385B73UL, 0xF519F86BE2385B73UL, 0xF519F868E2385B73UL },
        new[]
        {
            0xB89AE0301E95E1A9UL, 0x935172296182D788UL, 0x935172266182D788UL, 0x935172276182D788UL, 0x7E97845BA59D0BC5UL, 0x7E97845E7B71EDA8UL,
            0x935172246182D788UL, 0x935172256182D788UL, 0x935172226182D788UL, 0x12E991745C5FB53CUL, 0x12E9917182B35351UL,
        },
        new[]
        {
            0xE9A992504017FB02UL, 0x3188EBE2E0CD539DUL, 0x3188EBDFE0CD539DUL, 0x3188EBE0E0CD539DUL, 0x5CCDC943D549230EUL, 0x5CCDC9460BA5C563UL,
            0x3188EBDDE0CD539DUL, 0x3188EBDEE0CD539DUL, 0x3188EBDBE0CD539DUL, 0x5F05909EC761C883UL, 0x5F05909B198D2EEEUL,
        })]
    public void EveryDropoutSiteGetsTheSeedItAlwaysGot(int runSeed, ulong modelSeed, ulong[] adapterSeeds, ulong[] firstForward, ulong[] secondForward)
    {
        using var model = Phi2Model.CreateRandom(Small, GradientCheck.Backend, seed: 9);
        // embed_tokens trains in full so that every dropout, the embedding's included, is recorded on the tape.
        var config = new LoraConfig { R = 4, Alpha = 8, Dropout = 0.1, TargetModules = ["q_proj", "v_proj", "fc1"], ModulesToSave = ["embed_tokens"] };
        using var lora = LoraModel.Create(model, config, seed: 5);
        int[] ids = Enumerable.Range(0, 12).ToArray();
        var rows = TrainingRows.Create(Enumerable.Range(0, 8).Select(_ => new TokenizedExample(ids, ids)).ToList(), 8, BatchingMode.Packing);
        using var trainer = new Trainer(lora, new BatchLoader(rows, new DataOrder(rows.Count, 2, 3)), null, new TrainingOptions { Seed = runSeed }, Temp);

        Assert.That(model.DropoutSeed, Is.EqualTo(modelSeed), "the model's dropout seed");
        Assert.That(lora.LinearAdapters.Select(a => a.DropoutSeed), Is.EqualTo(adapterSeeds), "the adapters' dropout seeds, in model order");
        model.Training = true;
        // In execution order: embedding; layer 0's q_proj, v_proj and fc1 adapters, its attention and MLP branches; then layer 1's.
        Assert.That(DropoutSeedsOfOneForward(model), Is.EqualTo(firstForward), "the first training forward");
        Assert.That(DropoutSeedsOfOneForward(model), Is.EqualTo(secondForward), "the second training forward");
    }

    private static ulong[] DropoutSeedsOfOneForward(Phi2Model model)
    {
        // Residual dropout lives in ParallelResidualOp (its two seeds, attention's then mlp's), LoRA's input dropout in
        // LoraOp (its branch's seed; fc1's in LoraLinearGeluOp; q_proj's, k_proj's and v_proj's, in that order, in the
        // QkvProjectionOp's adapters), the rest in DropoutOp.
        const BindingFlags instance = BindingFlags.NonPublic | BindingFlags.Instance;
        FieldInfo Field(Type type, string name) => type.GetField(name, instance)
            ?? throw new InvalidOperationException($"{type.Name} no longer keeps {name}: update this test's reader, not its numbers");
        var (seed, dropout) = (Field(typeof(DropoutOp), "_seed"), Field(typeof(ParallelResidualOp), "_dropout"));
        var (attentionSeed, mlpSeed) = (Field(typeof(ParallelResidualOp), "_attentionSeed"), Field(typeof(ParallelResidualOp), "_mlpSeed"));
        var (branch, fc1Branch) = (Field(typeof(LoraOp), "_branch"), Field(typeof(LoraLinearGeluOp), "_branch"));
        var qkv = Field(typeof(QkvProjectionOp), "_parameters");
        using var scope = TensorScope.Begin();
        using var tape = GradientTape.Begin();
        model.Forward(model.CreateInputIds([1, 2, 3, 4, 5, 6], batch: 2));
        return tape.Ops.SelectMany(op => op switch
        {
            DropoutOp => [(ulong)seed.GetValue(op)!],
            ParallelResidualOp when (double)dropout.GetValue(op)! > 0 => [(ulong)attentionSeed.GetValue(op)!, (ulong)mlpSeed.GetValue(op)!],
            LoraOp when ((LoraBranch)branch.GetValue(op)!).Dropout > 0 => [((LoraBranch)branch.GetValue(op)!).Seed],
            QkvProjectionOp => [.. (((QkvParameters)qkv.GetValue(op)!).Adapters ?? []).Where(m => m is { Branch.Dropout: > 0 }).Select(m => m!.Value.Branch.Seed)],
            LoraLinearGeluOp when ((LoraBranch)fc1Branch.GetValue(op)!).Dropout > 0 => [((LoraBranch)fc1Branch.GetValue(op)!).Seed],
            _ => Array.Empty<ulong>(),
        }).ToArray();
    }
}
