namespace Phi2Native;

/// <summary>Base of every error the engine raises on purpose: bad input, bad files, unsupported settings.</summary>
/// <remarks>
/// Hosts can catch this one type; the CLI turns it into one message and exit code 2, except an
/// <see cref="EngineFaultException"/> (a fault of the engine, not of the input: exit code 1 and a request for a report).
/// </remarks>
public class Phi2Exception : Exception
{
    /// <summary>Creates the exception with a message that says what was wrong and what was expected.</summary>
    public Phi2Exception(string message, Exception? inner = null) : base(message, inner) { }
}

/// <summary>A safetensors file is truncated, corrupt or inconsistent. The message names the file and, where known, the tensor.</summary>
public sealed class SafeTensorsFormatException : Phi2Exception
{
    /// <summary>The file that failed.</summary>
    public string FilePath { get; }

    /// <summary>Creates the exception for <paramref name="filePath"/>.</summary>
    public SafeTensorsFormatException(string filePath, string message, Exception? inner = null)
        : base($"{filePath}: {message}", inner) => FilePath = filePath;
}

/// <summary>A model's config.json is missing, malformed, or describes a model this engine cannot run.</summary>
public sealed class ModelConfigException : Phi2Exception
{
    /// <summary>Creates the exception.</summary>
    public ModelConfigException(string message, Exception? inner = null) : base(message, inner) { }
}

/// <summary>A checkpoint's tensors do not match the model: missing, unexpected or mis-shaped tensors, all listed.</summary>
public sealed class CheckpointException : Phi2Exception
{
    /// <summary>Creates the exception.</summary>
    public CheckpointException(string message, Exception? inner = null) : base(message, inner) { }
}

/// <summary>Input to the model is invalid: a token id outside the vocabulary, a sequence too long, a bad shape.</summary>
public sealed class ModelInputException : Phi2Exception
{
    /// <summary>Creates the exception.</summary>
    public ModelInputException(string message, Exception? inner = null) : base(message, inner) { }
}

/// <summary>
/// Training data is malformed or unusable: a JSONL line that is not the expected object, a file with no usable
/// example, a data order that does not fit the data it is applied to. The message names the file and, where
/// there is one, the 1-based line.
/// </summary>
public sealed class DataFormatException : Phi2Exception
{
    /// <summary>The file (or other named source) that failed.</summary>
    public string FilePath { get; }

    /// <summary>The 1-based line that failed, or null when the error is about the whole file.</summary>
    public int? LineNumber { get; }

    /// <summary>Creates the exception; the message reads <c>file:line: message</c>, or <c>file: message</c> without a line.</summary>
    public DataFormatException(string filePath, int? lineNumber, string message, Exception? inner = null)
        : base(lineNumber is int line ? $"{filePath}:{line}: {message}" : $"{filePath}: {message}", inner)
    {
        FilePath = filePath;
        LineNumber = lineNumber;
    }
}

/// <summary>
/// A tokenizer file (vocab.json, merges.txt, added tokens) is malformed or inconsistent, or a token cannot be added
/// or decoded. The message names the file where there is one.
/// </summary>
public sealed class TokenizerException : Phi2Exception
{
    /// <summary>The file that failed, or null when the error is not about a file.</summary>
    public string? FilePath { get; }

    /// <summary>Creates the exception; a <paramref name="filePath"/> is put in front of the message.</summary>
    public TokenizerException(string message, string? filePath = null, Exception? inner = null)
        : base(filePath is null ? message : $"{filePath}: {message}", inner) => FilePath = filePath;
}
