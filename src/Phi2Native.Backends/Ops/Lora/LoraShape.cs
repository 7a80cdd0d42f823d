namespace Phi2Native.Backends.Ops.Lora;

/// <summary>The branch's sizes: N rows of x, in, out and the rank r.</summary>
internal readonly record struct LoraShape(int Rows, int In, int Out, int Rank);
