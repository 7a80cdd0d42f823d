namespace Phi2Native.Cli.Commands;

/// <summary>Turns failures into one clear line and an exit code, so no stack trace reaches a user for bad input.</summary>
internal static class CommandErrors
{
    /// <summary>Runs <paramref name="action"/>: 2 for bad input (the library's Phi2Exception, IO errors), 1 for anything else.</summary>
    public static int Guard(TextWriter error, Func<int> action)
    {
        try
        {
            return action();
        }
        catch (Phi2Exception e)
        {
            error.WriteLine($"error: {e.Message}");
            return 2;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            error.WriteLine($"error: {e.Message}");
            return 2;
        }
        catch (Exception e)
        {
            error.WriteLine($"internal error (please report it): {e}");
            return 1;
        }
    }
}
