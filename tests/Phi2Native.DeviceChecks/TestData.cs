namespace Phi2Native.DeviceChecks;

/// <summary>Seeded inputs, so a check's data is the same on every device and every run.</summary>
public static class TestData
{
    /// <summary><paramref name="count"/> values uniform in [-scale, scale).</summary>
    public static float[] Uniform(int count, int seed, float scale = 1f)
    {
        var random = new Random(seed);
        var values = new float[count];
        for (int i = 0; i < count; i++) values[i] = (float)(random.NextDouble() * 2 - 1) * scale;
        return values;
    }
}
