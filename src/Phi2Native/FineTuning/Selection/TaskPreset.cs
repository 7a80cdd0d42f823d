namespace Phi2Native.FineTuning.Selection;

/// <summary>
/// Fine-tuning goals and the modules each trains with LoRA, with the reason (the README's presets). A run starts from a
/// preset and can override anything; the module names are <see cref="TrainingSelection"/>'s words.
/// </summary>
/// <param name="Name">The preset's command-line name.</param>
/// <param name="Goal">The goal.</param>
/// <param name="Modules">The LoRA targets.</param>
/// <param name="Why">Why those modules.</param>
public sealed record TaskPreset(string Name, string Goal, IReadOnlyList<string> Modules, string Why)
{
    private static readonly string[] Attention = ["q_proj", "k_proj", "v_proj"];
    private static readonly string[] AttentionAndMlp = ["q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2"];

    /// <summary>Every preset.</summary>
    public static IReadOnlyList<TaskPreset> All { get; } =
    [
        new("attention-refinement", "Attention refinement (better focus on key info)", Attention, "Controls attention mechanisms"),
        new("concept-learning", "Concept learning (linking new scientific discoveries)", AttentionAndMlp, "Enhances conceptual relationships"),
        new("new-knowledge", "New knowledge integration (teaching new topics)", [.. AttentionAndMlp, "embed_tokens"], "Embedding needed for new words"),
        new("update-knowledge", "Updating existing knowledge (fixing incorrect information)", AttentionAndMlp, "Adjusts relationships in knowledge base"),
        new("fluency", "Improving response fluency (making text more natural)", ["dense", "fc1", "fc2", "lm_head"], "Enhances language flow"),
        new("domain", "Domain specialization (finance, law, medicine)", [.. AttentionAndMlp, "embed_tokens"], "Embedding ensures domain-specific vocabulary"),
        new("reasoning", "Logical reasoning (better multi-step deductions)", ["fc1", "fc2", "dense", "q_proj", "k_proj", "v_proj"], "Strengthens structured reasoning"),
        new("structured-output", "Structured output formatting (generating JSON, tables)", ["lm_head", "dense", "fc1", "fc2"], "Controls response structure"),
        new("personas", "Handling multiple personas (AI character switching)", [.. Attention, "dense", "lm_head"], "Maintains personality consistency"),
    ];

    /// <summary>The preset named <paramref name="name"/>.</summary>
    /// <exception cref="Phi2Exception">No preset has that name; the message lists them.</exception>
    public static TaskPreset Get(string name) =>
        All.FirstOrDefault(p => p.Name == name)
        ?? throw new Phi2Exception($"unknown preset \"{name}\"; valid presets: {string.Join(", ", All.Select(p => p.Name))}");

    /// <summary>True when the preset trains embed_tokens, i.e. the task may bring new words.</summary>
    public bool TrainsEmbeddings => Modules.Contains("embed_tokens");
}
