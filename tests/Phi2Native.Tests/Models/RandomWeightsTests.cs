using NUnit.Framework;
using Phi2Native.FineTuning.Lora;
using Phi2Native.Models.Phi2;
using Phi2Native.Tensors;
using Phi2Native.Tests.Support;

namespace Phi2Native.Tests.Models;

/// <summary>
/// A seed names the same random model and the same fresh adapter: FNV-1a hashes of every parameter's fp32 bits, in
/// checkpoint order, recorded from the engine before random initialization moved out of Phi2Model. The draws use
/// System.Random's seeded sequence and the C runtime's log and cos (Box-Muller), so these pin the x64 Linux build
/// the project runs on.
/// </summary>
[TestFixture]
public class RandomWeightsTests
{
    private static readonly Phi2Config Small = Phi2Config.Tiny with
    {
        VocabSize = 40, HiddenSize = 24, IntermediateSize = 48, NumHiddenLayers = 2, NumAttentionHeads = 2, RotaryDim = 6,
    };

    private static ulong Hash(IEnumerable<Tensor> tensors)
    {
        ulong hash = 14695981039346656037UL;
        foreach (var tensor in tensors)
            foreach (float value in tensor.ToSingleArray())
            {
                hash ^= BitConverter.SingleToUInt32Bits(value);
                hash *= 1099511628211UL;
            }
        return hash;
    }

    [Test]
    public void ASeedGivesTheWeightsItAlwaysGave()
    {
        using var model = Phi2Model.CreateRandom(Small, GradientCheck.Backend, seed: 9);
        var byName = model.Parameters().ToDictionary(p => p.Name!, p => Hash([p]));
        Assert.That(byName["model.embed_tokens.weight"], Is.EqualTo(0x1F9B6C4723361A66UL));
        Assert.That(byName["model.layers.0.self_attn.q_proj.weight"], Is.EqualTo(0x2506606CC15C6C54UL));
        Assert.That(byName["model.layers.1.mlp.fc2.weight"], Is.EqualTo(0xE7BE72A5A39DC1B0UL));
        Assert.That(byName["lm_head.weight"], Is.EqualTo(0x4677EF5144B9A3CAUL));
        Assert.That(byName["model.final_layernorm.weight"], Is.EqualTo(0x379A2338003C2305UL), "ones");
        Assert.That(byName["lm_head.bias"], Is.EqualTo(0x40D69E0CF0F65C45UL), "zeros");
        Assert.That(Hash(model.Parameters()), Is.EqualTo(0x2F3FF61836BDA8DCUL), "every parameter, in checkpoint order");
    }

    [Test]
    public void ASeedGivesTheFreshAdapterItAlwaysGave()
    {
        using var model = Phi2Model.CreateRandom(Small, GradientCheck.Backend, seed: 9);
        using var lora = LoraModel.Create(model, new LoraConfig { R = 4, Alpha = 8, Dropout = 0.1, TargetModules = ["q_proj", "v_proj", "fc1", "embed_tokens"] }, seed: 5);
        Assert.That(Hash(lora.TrainableParameters()), Is.EqualTo(0x4CF911B9077762A5UL), "PEFT's initialization, drawn in model order");
        Assert.That(lora.LinearAdapters.Select(a => a.DropoutSeed), Is.EqualTo(new[]
        {
            0x627FDEA9149CCB04UL, 0x3BFFF31F56EDEAA6UL, 0x48DDD1B865141CE3UL, 0x0A184A68BDEBA3E8UL, 0x544CD1A87620B8FFUL, 0x425E5DE2596FC31DUL,
        }), "each adapter's dropout seed is drawn after its A");
    }
}
