using Phi2Native.FineTuning.Lora;
using Phi2Native.FineTuning.Selection;

namespace Phi2Native.Embedded;

/// <summary>What <c>phi2 demo</c> trains, worked out from its settings before anything loads.</summary>
/// <param name="Preset">The task preset whose modules get adapters.</param>
/// <param name="Layers">The decoder layers that get them, ascending.</param>
/// <param name="Selection">The PEFT configuration: the preset's targets, <c>layers_to_transform</c>, r and alpha.</param>
/// <param name="LowestTrainedLayer">The lowest layer with an adapter: backward stops there.</param>
public sealed record LoraDemoPlan(TaskPreset Preset, IReadOnlyList<int> Layers, LoraConfig Selection, int LowestTrainedLayer);
