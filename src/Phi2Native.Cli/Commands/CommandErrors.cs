namespace Phi2Native.Cli.Commands;

/// <summary>
/// Turns failures into one clear line and an exit code (<see cref="ExitCodes"/>), so no stack trace reaches a user for
/// bad input, and an engine fault is never passed off as the user's mistake.
/// </summary>
internal static class CommandErrors
{
    /// <summary>
    /// Runs <paramref name="action"/>: 2 for bad input (the library's Phi2Exception, file-system errors), 1 with a
    /// "please report" line and the details for an engine fault (<see cref="EngineFaultException"/>) or anything unexpected.
    /// </summary>
    public static int Guard(TextWriter error, Func<int> action)
    {
        try
        {
            return action();
        }
        catch (EngineFaultException e)
        {
            return Fault(error, e);
        }
        catch (Phi2Exception e)
        {
            error.WriteLine($"error: {e.Message}");
            return ExitCodes.BadInput;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            error.WriteLine($"error: {e.Message}");
            return ExitCodes.BadInput;
        }
        catch (Exception e)
        {
            return Fault(error, e);
        }
    }

    private static int Fault(TextWriter error, Exception e)
    {
        error.WriteLine($"engine fault (not a problem with your input; please report it with the lines below): {e.GetType().Name}: {e.Message}");
        error.WriteLine(e.ToString());
        return ExitCodes.EngineFault;
    }
}
