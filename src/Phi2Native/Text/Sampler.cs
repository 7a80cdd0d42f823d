namespace Phi2Native.Text;

/// <summary>
/// Chooses tokens from logits rows under one <see cref="SamplingOptions"/>, drawing from its own seeded generator:
/// a sequence of <see cref="Next"/> calls is reproducible from the seed. The math is in the static, pure functions
/// (<see cref="ArgMax"/>, <see cref="Distribution"/>, <see cref="Choose"/>), which tests check case by case.
/// </summary>
internal sealed class Sampler
{
    private ulong _state;

    /// <summary>A sampler for <paramref name="options"/>, seeded from <see cref="SamplingOptions.Seed"/> (or a fresh seed when null).</summary>
    /// <exception cref="Phi2Exception">The options are invalid (see <see cref="SamplingOptions.Validate"/>).</exception>
    public Sampler(SamplingOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        Options = options;
        _state = options.Seed ?? (ulong)Random.Shared.NextInt64();
    }

    /// <summary>The options every draw uses.</summary>
    public SamplingOptions Options { get; }

    /// <summary>The next token for a logits row [V].</summary>
    public int Next(ReadOnlySpan<float> logits) =>
        Options.IsGreedy ? ArgMax(logits) : Choose(Distribution(logits, Options), NextUniform());

    /// <summary>The next uniform draw in [0, 1): SplitMix64, so a seed gives the same draws on every runtime and machine
    /// (System.Random's seeded sequence is an implementation detail).</summary>
    public double NextUniform()
    {
        ulong z = _state += 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        z ^= z >> 31;
        return (z >> 11) * (1.0 / (1UL << 53));
    }

    /// <summary>The id of the largest logit; the lowest such id on ties.</summary>
    /// <exception cref="Phi2Exception">The row is empty or holds a NaN.</exception>
    public static int ArgMax(ReadOnlySpan<float> logits)
    {
        CheckRow(logits);
        int best = 0;
        for (int i = 1; i < logits.Length; i++)
            if (logits[i] > logits[best]) best = i;   // strictly greater: an equal later logit never wins
        return best;
    }

    /// <summary>
    /// The probabilities [V] the options sample from: softmax(logits / temperature) restricted to the top-k tokens,
    /// renormalized, then restricted to the nucleus (the smallest set of most likely tokens whose probabilities sum to
    /// at least top-p), renormalized again; every other token gets 0. Temperature 0 gives the argmax probability 1.
    /// Computed in double; ties in rank go to the lower id.
    /// </summary>
    /// <exception cref="Phi2Exception">The options are invalid, or the row is empty or holds a NaN.</exception>
    public static double[] Distribution(ReadOnlySpan<float> logits, SamplingOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        CheckRow(logits);
        var probabilities = new double[logits.Length];
        if (options.IsGreedy)
        {
            probabilities[ArgMax(logits)] = 1;
            return probabilities;
        }
        // Ranks: ids by descending logit, the lower id first among equals (the order top-k and top-p cut in).
        var order = new int[logits.Length];
        for (int i = 0; i < order.Length; i++) order[i] = i;
        float[] values = logits.ToArray();
        Array.Sort(order, (a, b) => values[a] != values[b] ? values[b].CompareTo(values[a]) : a.CompareTo(b));

        int kept = options.TopK > 0 ? Math.Min(options.TopK, order.Length) : order.Length;
        // Softmax of logits / T over the kept ranks; subtracting the top logit keeps every exp in (0, 1].
        double top = values[order[0]], sum = 0;
        if (double.IsInfinity(top)) throw new Phi2Exception($"cannot sample: the largest logit is {top}");
        for (int r = 0; r < kept; r++)
        {
            double p = Math.Exp((values[order[r]] - top) / options.Temperature);
            probabilities[order[r]] = p;
            sum += p;
        }
        // Nucleus: the first n ranks whose cumulative probability reaches p (n >= 1; rounding never cuts below it).
        if (options.TopP < 1)
        {
            double cumulative = 0, target = options.TopP * sum;
            int nucleus = kept;
            for (int r = 0; r < kept; r++)
            {
                cumulative += probabilities[order[r]];
                if (cumulative >= target) { nucleus = r + 1; break; }
            }
            for (int r = nucleus; r < kept; r++) probabilities[order[r]] = 0;
            kept = nucleus;
            sum = 0;
            for (int r = 0; r < kept; r++) sum += probabilities[order[r]];
        }
        for (int r = 0; r < kept; r++) probabilities[order[r]] /= sum;
        return probabilities;
    }

    /// <summary>
    /// Inverse-CDF draw: the first id (in id order) at which the running sum of <paramref name="probabilities"/>
    /// exceeds <paramref name="uniform"/> in [0, 1); ids of probability 0 are never chosen (rounding that leaves the
    /// total just under the draw picks the last id with a non-zero probability).
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">The draw is outside [0, 1).</exception>
    /// <exception cref="Phi2Exception">No id has a positive probability.</exception>
    public static int Choose(ReadOnlySpan<double> probabilities, double uniform)
    {
        if (!(uniform >= 0 && uniform < 1)) throw new ArgumentOutOfRangeException(nameof(uniform), uniform, "a uniform draw must be in [0, 1)");
        double cumulative = 0;
        int last = -1;
        for (int i = 0; i < probabilities.Length; i++)
        {
            if (!(probabilities[i] > 0)) continue;
            last = i;
            cumulative += probabilities[i];
            if (uniform < cumulative) return i;
        }
        return last >= 0 ? last : throw new Phi2Exception("cannot sample: no token has a positive probability");
    }

    private static void CheckRow(ReadOnlySpan<float> logits)
    {
        if (logits.IsEmpty) throw new Phi2Exception("cannot sample from an empty logits row");
        foreach (float value in logits)
            if (float.IsNaN(value)) throw new Phi2Exception("the logits hold a NaN: the model's output is broken (check the weights and dtype)");
    }
}
