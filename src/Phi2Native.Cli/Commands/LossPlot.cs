using Phi2Native.FineTuning;
using Phi2Native.FineTuning.Training;

namespace Phi2Native.Cli.Commands;

/// <summary>loss.png: training loss per step and validation loss at each evaluation, the picture a person looks at first.</summary>
internal static class LossPlot
{
    public static void Save(string path, IReadOnlyList<StepMetrics> steps, IReadOnlyList<EvaluationMetrics> evaluations, string title)
    {
        var plot = new ScottPlot.Plot();
        if (steps.Count > 0)
        {
            var training = plot.Add.Scatter(steps.Select(s => (double)s.Step).ToArray(), steps.Select(s => s.Loss).ToArray());
            training.LegendText = "training loss";
            training.MarkerSize = steps.Count > 50 ? 0 : 4;
        }
        var finite = evaluations.Where(e => double.IsFinite(e.Loss)).ToList();
        if (finite.Count > 0)
        {
            var validation = plot.Add.Scatter(finite.Select(e => (double)e.Step).ToArray(), finite.Select(e => e.Loss).ToArray());
            validation.LegendText = "validation loss";
            validation.MarkerSize = 7;
            validation.LineWidth = 2;
        }
        plot.Title(title);
        plot.XLabel("optimizer step");
        plot.YLabel("cross-entropy (nats per token)");
        plot.ShowLegend();
        string temporary = path + ".tmp.png";
        plot.SavePng(temporary, 900, 520);
        File.Move(temporary, path, overwrite: true);
    }
}
