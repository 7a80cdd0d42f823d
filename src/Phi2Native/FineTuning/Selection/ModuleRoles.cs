namespace Phi2Native.FineTuning.Selection;

/// <summary>
/// What each Phi-2 module does, with a memory aid, as <c>phi2 layers</c> shows them. Keyed by the last part of a module's
/// name, so one entry serves every layer; a test checks the keys against the module tree (every module that holds
/// parameters has a role, and every role names such a module).
/// </summary>
/// <param name="Role">The module's role.</param>
/// <param name="Mnemonic">A memory aid.</param>
public sealed record ModuleRole(string Role, string Mnemonic)
{
    private static readonly Dictionary<string, ModuleRole> Roles = new(StringComparer.Ordinal)
    {
        ["q_proj"] = new("Projects input embeddings into query vectors (\"What information do I need?\")", "a search engine query: \"What do I need?\""),
        ["k_proj"] = new("Projects embeddings into key vectors (\"What information is available?\")", "keywords in a database: \"What's available?\""),
        ["v_proj"] = new("Projects embeddings into value vectors (\"What do I retrieve?\")", "retrieving document content: \"What do I get?\""),
        ["dense"] = new("Linear transformation after attention", "a refinery: \"Processing the raw attention output\""),
        ["fc1"] = new("Processes features before final output", "step 1 in a factory: \"Transforming features\""),
        ["fc2"] = new("Further processes features for next token prediction", "step 2 in a factory: \"Final processing before next step\""),
        ["embed_tokens"] = new("Converts words into numerical vectors", "a dictionary: \"Turning words into numbers\""),
        ["lm_head"] = new("Generates final text output", "a speaker: \"Final word selection\""),
        // The LayerNorms, which only full training reaches.
        ["input_layernorm"] = new("Normalizes the residual stream; its one output feeds attention and the MLP in parallel", "a shared inbox for both departments"),
        ["final_layernorm"] = new("Normalizes the residual stream before lm_head", "a last proofread"),
    };

    /// <summary>The last name parts that have a role ("q_proj", "input_layernorm", ...).</summary>
    internal static IReadOnlyCollection<string> Described => Roles.Keys;

    /// <summary>The role of the module with this full name (by its last name part), or null.</summary>
    public static ModuleRole? Of(string moduleName) => Roles.GetValueOrDefault(moduleName[(moduleName.LastIndexOf('.') + 1)..]);
}
