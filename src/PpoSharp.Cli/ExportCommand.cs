using System.CommandLine;
using PpoSharp.Training;

namespace PpoSharp.Cli;

/// <summary><c>export</c>: a LoRA run out as a peft adapter folder, or merged into a full Hugging Face folder.</summary>
internal static partial class Commands
{
    private static Command ExportCommand(TextWriter output)
    {
        var model = Required("--model", "a LoRA run directory (policy or reward model)");
        var outDir = Required("--out", "folder to write");
        var merge = new Option<bool>("--merge") { Description = "merge the adapter into the base weights and write a full Hugging Face folder (default: the peft adapter folder)" };
        var force = new Option<bool>("--force") { Description = "write into a non-empty --out directory" };
        var c = new Command("export", "a LoRA run as a peft adapter folder, or with --merge as a full Hugging Face model folder") { model, outDir, merge, force };
        c.SetAction(r =>
        {
            output.WriteLine(Export.Run(r.GetValue(model)!, r.GetValue(outDir)!, r.GetValue(merge), r.GetValue(force)));
            return 0;
        });
        return c;
    }
}
