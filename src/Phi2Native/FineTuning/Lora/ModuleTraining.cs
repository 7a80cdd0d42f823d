namespace Phi2Native.FineTuning.Lora;

/// <summary>How one module that holds parameters trains under a <see cref="LoraConfig"/>.</summary>
internal enum ModuleTraining
{
    /// <summary>No gradient; its weights stay as loaded.</summary>
    Frozen,

    /// <summary>A LoRA adapter trains beside the frozen weights (target_modules).</summary>
    Lora,

    /// <summary>Every parameter of the module trains (modules_to_save).</summary>
    Full,
}
