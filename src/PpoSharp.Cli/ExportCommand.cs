using System.CommandLine;
using PpoSharp.Algorithms;
using PpoSharp.Export;

namespace PpoSharp.Cli;

/// <summary>
/// <c>export</c>: a LoRA run out as a peft adapter folder, or merged into a full Hugging Face folder; with
/// <c>--format gguf</c> any model folder as one GGUF file for llama.cpp.
/// </summary>
internal static partial class Commands
{
    private static Command ExportCommand(TextWriter output)
    {
        var model = Required("--model", "a LoRA run directory (policy or reward model); with --format gguf any model folder that generate takes");
        var outDir = Required("--out", "folder to write (with --format gguf: the .gguf file)");
        var merge = new Option<bool>("--merge") { Description = "merge the adapter into the base weights and write a full Hugging Face folder (default: the peft adapter folder)" };
        var force = new Option<bool>("--force") { Description = "write into a non-empty --out directory (with --format gguf: replace the file)" };
        var format = new Option<string>("--format") { Description = "hf (a Hugging Face / peft folder) or gguf (one file for llama.cpp, LLamaSharp, Ollama)", DefaultValueFactory = _ => "hf" };
        var outType = new Option<string>("--outtype") { Description = $"with --format gguf, the weights' type: {string.Join(", ", OptionNames.All<GgufOutType>())}", DefaultValueFactory = _ => "f32" };
        var c = new Command("export", "a LoRA run as a peft adapter folder, or with --merge as a full Hugging Face model folder; with --format gguf a GGUF file for llama.cpp") { model, outDir, merge, force, format, outType };
        c.SetAction(r =>
        {
            var line = r.GetValue(format) switch
            {
                "hf" => Training.Export.Run(r.GetValue(model)!, r.GetValue(outDir)!, r.GetValue(merge), r.GetValue(force)),
                "gguf" => GgufExport.Run(r.GetValue(model)!, r.GetValue(outDir)!, OptionNames.Parse<GgufOutType>("--outtype", r.GetValue(outType)!), r.GetValue(force)),
                var f => throw new PpoSharpException($"--format: '{f}' is not supported (allowed: hf, gguf)"),
            };
            output.WriteLine(line);
            return 0;
        });
        return c;
    }
}
