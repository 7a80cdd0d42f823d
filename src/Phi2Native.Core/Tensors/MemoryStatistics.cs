namespace Phi2Native.Tensors;

/// <summary>A backend's memory accounting, in bytes.</summary>
/// <param name="BytesInUse">Held by live tensors (capacity of their blocks, rounding included).</param>
/// <param name="PeakBytesInUse">The most <paramref name="BytesInUse"/> has been since the backend was created or the peak was reset.</param>
/// <param name="BytesCached">Freed by tensors but kept for reuse, not yet returned to the system.</param>
public readonly record struct MemoryStatistics(long BytesInUse, long PeakBytesInUse, long BytesCached);
