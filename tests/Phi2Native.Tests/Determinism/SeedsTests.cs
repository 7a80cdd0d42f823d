using NUnit.Framework;
using Phi2Native.Determinism;

namespace Phi2Native.Tests.Determinism;

/// <summary>
/// Seeds.Derive gives, bit for bit, the seeds the engine derived before the rules moved into it: every value below was
/// computed with the earlier code (Phi2Model.Mix, DataOrder.Mix, Trainer's and LoraLinear's formulas) and written here by
/// hand. If one of these fails, existing checkpoints would resume with other dropout masks and a run's seed would name
/// a different run: change the code back, never the numbers.
/// </summary>
[TestFixture]
public class SeedsTests
{
    private const ulong Golden = 0x9E3779B97F4A7C15UL;

    // Phi2Model.Mix(seed, value), the mix behind the training-forward, embedding and per-layer dropout seeds.
    [TestCase(0UL, 0UL, 0xE220A8397B1DCDAFUL)]
    [TestCase(0UL, 1UL, 0x910A2DEC89025CC1UL)]
    [TestCase(0UL, 31UL, 0xD7599677879FEAEAUL)]
    [TestCase(1UL, 1UL, 0x2C1C719D2C17B759UL)]
    [TestCase(1UL, 2UL, 0x3706970B052F16B1UL)]
    [TestCase(42UL, 0UL, 0x521123AC6702D2E6UL)]
    [TestCase(42UL, 2UL, 0x2E82A6580A7407FDUL)]
    [TestCase(Golden, 1UL, 0xA5C91E07585AC29EUL)]
    [TestCase(ulong.MaxValue, 0UL, 0xCFEFC532F1D7EB6BUL)]
    [TestCase(ulong.MaxValue, 31UL, 0x34CF936E94E1C024UL)]
    public void TrainingForwardAndAttentionResidualSeedsAreTheEarlierMix(ulong seed, ulong value, ulong expected)
    {
        Assert.That(Seeds.Derive(seed, SeedPurpose.TrainingForward, (long)value), Is.EqualTo(expected));
        Assert.That(Seeds.Derive(seed, SeedPurpose.AttentionResidualDropout, (long)value), Is.EqualTo(expected));
        Assert.That(Seeds.Derive(seed, SeedPurpose.MlpResidualDropout, (long)value), Is.EqualTo(expected ^ 0x5DEECE66DUL));
    }

    // Phi2Model.Mix(forwardSeed, ulong.MaxValue): the embedding dropout.
    [TestCase(0UL, 0xE4D971771B652C20UL)]
    [TestCase(1UL, 0xD6967248FBE68CC3UL)]
    [TestCase(42UL, 0xAEC5E07D29E990B0UL)]
    [TestCase(Golden, 0x0C12D1D1DC24EF77UL)]
    [TestCase(ulong.MaxValue, 0xA1A1D1D1EA43430CUL)]
    public void EmbeddingDropoutSeedIsTheEarlierMixWithAllOnes(ulong seed, ulong expected) =>
        Assert.That(Seeds.Derive(seed, SeedPurpose.EmbeddingDropout, 0), Is.EqualTo(expected));

    // DataOrder.Mix(seed, epoch): the shuffle of each epoch.
    [TestCase(0UL, 0, 0x6DB6CA64564DAEAAUL)]
    [TestCase(0UL, 100, 0xD64EE78E38096FE6UL)]
    [TestCase(1UL, 2, 0xFA427CF8B0E7A1C0UL)]
    [TestCase(42UL, 0, 0x3EC9A28B86AAE298UL)]
    [TestCase(42UL, 1, 0x417E481C9297D437UL)]
    [TestCase(Golden, 2, 0x7A6BCFA9711FE28AUL)]
    [TestCase(ulong.MaxValue, 1, 0x0B8375F15EFFC157UL)]
    public void EpochShuffleSeedIsTheEarlierDataOrderMix(ulong seed, int epoch, ulong expected) =>
        Assert.That(Seeds.Derive(seed, SeedPurpose.EpochShuffle, epoch), Is.EqualTo(expected));

    // The Trainer's model dropout seed for run seeds 0, 7 and 42 (read from Phi2Model.DropoutSeed after the earlier Trainer ran).
    [TestCase(0UL, 0x0000000000000001UL)]
    [TestCase(7UL, 0x538454127B096494UL)]
    [TestCase(42UL, 0xF519F86EE2385B73UL)]
    public void ModelDropoutSeedIsTheEarlierTrainersFormula(ulong runSeed, ulong expected) =>
        Assert.That(Seeds.Derive(runSeed, SeedPurpose.ModelDropout, 0), Is.EqualTo(expected));

    [Test]
    public void AdapterAndLoraInputSeedsAreTheEarlierFormulas()
    {
        // Run seed 7's six Linear adapters, as the earlier Trainer set them.
        ulong[] adapters = [0x538454137B096494UL, 0x538454107B096494UL, 0x538454117B096494UL, 0x538454167B096494UL, 0x538454177B096494UL, 0x538454147B096494UL];
        for (int i = 0; i < adapters.Length; i++)
            Assert.That(Seeds.Derive(0x538454127B096494UL, SeedPurpose.AdapterDropout, i), Is.EqualTo(adapters[i]), $"adapter {i}");
        // The earlier LoraLinear's first and second training forwards of run seed 0's first adapter (0x100000001).
        Assert.That(Seeds.Derive(0x0000000100000001UL, SeedPurpose.LoraInputDropout, 1), Is.EqualTo(0x9E3779BA7F4A7C16UL));
        Assert.That(Seeds.Derive(0x0000000100000001UL, SeedPurpose.LoraInputDropout, 2), Is.EqualTo(0x3C6EF373FE94F82BUL));
        Assert.That(Seeds.Derive(ulong.MaxValue, SeedPurpose.SamplingRow, 2), Is.EqualTo(1UL), "seed + row, modulo 2^64");
    }

    [Test]
    public void AnIndexWhereNoneBelongsOrANegativeOneIsRefused()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => Seeds.Derive(1, SeedPurpose.ModelDropout, 1));
        Assert.Throws<ArgumentOutOfRangeException>(() => Seeds.Derive(1, SeedPurpose.EmbeddingDropout, 3));
        Assert.Throws<ArgumentOutOfRangeException>(() => Seeds.Derive(1, SeedPurpose.LoraInputDropout, -1));
        Assert.Throws<ArgumentOutOfRangeException>(() => Seeds.Derive(1, (SeedPurpose)999, 0));
    }
}
