using Phi2Native.FineTuning.Data;
using Phi2Native.Text;

namespace Phi2Native.Embedded;

/// <summary>
/// One book of the shipped text, with the split <see cref="EmbeddedDefault"/> makes of the whole: its training
/// chapters and its held-out validation chapters. The pretrained base (<see cref="EmbeddedBase"/>) learns
/// <see cref="Genesis"/>'s training chapters only; <c>phi2 demo</c> fine-tunes it on <see cref="Exodus"/>, a text it
/// has never seen.
/// </summary>
public sealed class EmbeddedBook
{
    private EmbeddedBook(string name)
    {
        Name = name;
        var training = new List<string>();
        var validation = new List<string>();
        var paragraphs = EmbeddedDefault.Paragraphs(EmbeddedDefault.FullText);
        for (int i = 0; i < paragraphs.Length; i++)
        {
            // Each chapter opens with its heading, "Genesis 1"; the split is the whole text's, so a book's held-out
            // chapters are exactly the ones `phi2 finetune` validates on.
            if (!paragraphs[i].StartsWith(name + " ", StringComparison.Ordinal)) continue;
            (EmbeddedDefault.IsValidation(i) ? validation : training).Add(paragraphs[i]);
        }
        TrainingParagraphs = training.AsReadOnly();
        ValidationParagraphs = validation.AsReadOnly();
    }

    /// <summary>Genesis: 48 training chapters, 2 held out (Genesis 20 and 40). The base's training text.</summary>
    public static EmbeddedBook Genesis { get; } = new("Genesis");

    /// <summary>Exodus: 38 training chapters, 2 held out (Exodus 10 and 30). The demo's fine-tuning text.</summary>
    public static EmbeddedBook Exodus { get; } = new("Exodus");

    /// <summary>The book's name, as its chapter headings spell it.</summary>
    public string Name { get; }

    /// <summary>The training chapters, in order; each opens with its heading, then one verse per line.</summary>
    public IReadOnlyList<string> TrainingParagraphs { get; }

    /// <summary>The held-out chapters, in order.</summary>
    public IReadOnlyList<string> ValidationParagraphs { get; }

    /// <summary>
    /// The book as packed rows of <paramref name="maxLength"/> tokens, an &lt;|endoftext|&gt; after each chapter, as
    /// <see cref="EmbeddedDefault.PackedRows"/> packs the whole text.
    /// </summary>
    public (TrainingRows Training, TrainingRows Validation) PackedRows(TextTokenizer tokenizer, int maxLength) =>
        (EmbeddedDefault.Pack(tokenizer, TrainingParagraphs, maxLength, $"{Name} training chapters"),
         EmbeddedDefault.Pack(tokenizer, ValidationParagraphs, maxLength, $"{Name} held-out chapters"));
}
