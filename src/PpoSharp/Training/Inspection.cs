using System.Text.Json;
using System.Text.Json.Nodes;
using PpoSharp.Data;
using PpoSharp.Models;
using PpoSharp.Text;
using TorchSharp;
using static TorchSharp.torch;

namespace PpoSharp.Training;

/// <summary>One completion: the prompt's ids, the new ids (up to and including an EOS), their text, and log p of each new id at temperature 1.</summary>
public sealed record Completion(IReadOnlyList<int> PromptIds, IReadOnlyList<int> Ids, string Text, IReadOnlyList<double> Logprobs);

/// <summary>What a model sees for one record: the rendered text, its ids, and per id whether the loss (or the response) covers it.</summary>
public sealed record RecordView(string Text, IReadOnlyList<int> Ids, IReadOnlyList<bool> LossMask, Source Source, DetectedFormat Format);

/// <summary>Looking at what a model does and sees: one completion with its log-probabilities, and records as the model receives them.</summary>
public static class Inspection
{
    /// <summary>Generates from prompt ids as they are (no template added) and scores the new ids under the model.</summary>
    public static Completion Complete(Decoder model, ITokenizer tokenizer, IReadOnlyList<int> promptIds, SamplingOptions options, Generator? generator = null)
    {
        if (promptIds.Count == 0) throw new PpoSharpException("the prompt is empty");
        if (promptIds.FirstOrDefault(id => id < 0 || id >= model.Config.VocabSize, -1) is var bad and >= 0)
            throw new PpoSharpException($"prompt id {bad} is outside the vocabulary (0 .. {model.Config.VocabSize - 1})");
        if (promptIds.Count >= model.Config.ContextLength)
            throw new PpoSharpException($"the prompt is {promptIds.Count} tokens, leaving no room to respond within context_length {model.Config.ContextLength}");
        model.eval();
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var (prompt, mask) = Sampling.LeftPad([promptIds], tokenizer.Special.Pad, Devices.DeviceOf(model));                  // (1, P)
        var g = Sampling.Generate(model, prompt, mask, options, tokenizer.Special, generator);
        var n = (int)g.Mask.sum().item<long>();
        var responses = g.Responses.narrow(1, 0, n);                                              // (1, n)
        var logprobs = ResponseScoring.LogProbs(model, cat([prompt, responses], 1), cat([mask, g.Mask.narrow(1, 0, n)], 1), prompt.shape[1], 1.0);   // (1, n)
        var ids = responses.data<long>().Select(i => (int)i).ToList();
        return new Completion(promptIds, ids, tokenizer.Decode(ids), logprobs.data<float>().Select(x => (double)x).ToList());
    }

    /// <summary>
    /// Records of a data file as the model sees them, in the file's format (<see cref="DatasetFormat"/>, from its first
    /// record): language modelling and prompt-completion as SFT trains them (the mask marks the loss), preference pairs with
    /// the chosen answer appended (the mask marks it), prompts rendered with the generation prompt (nothing is trained).
    /// A format no command takes is an error naming it.
    /// </summary>
    public static List<RecordView> Records(ITokenizer tokenizer, string path, int limit, DataOptions? options = null)
    {
        var o = (options ?? new DataOptions()) with { Command = "inspect" };
        var (found, first) = FirstFormat(path, o);
        if (found is DetectedFormat f && DatasetFormats.Sft.Contains(f.Format))
            return Jsonl.ReadChat(path, false, o).Records.Take(limit).Select(r => Chat(tokenizer, r, f)).ToList();
        if (found is DetectedFormat p && DatasetFormats.Pairs.Contains(p.Format))
            return Jsonl.ReadPreferences(path, false, o).Records.Take(limit).Select(r => Chat(tokenizer, new ChatRecord([.. r.Messages, new(Role.Assistant, r.Chosen)], r.Source), p)).ToList();
        if (first is not null) DatasetFormats.Require(found, first, path, "inspect", [.. DatasetFormats.Sft, .. DatasetFormats.Pairs, .. DatasetFormats.Prompts]);
        return Jsonl.ReadPrompts(path, false, o).Records.Take(limit).Select(r => Prompt(tokenizer, r.Messages, r.Source, found ?? new(DatasetFormat.PromptOnly, true))).ToList();
    }

    /// <summary>The format of the first record, and the record; nulls when it cannot be read (the reader then reports it).</summary>
    private static (DetectedFormat? Format, JsonObject? Record) FirstFormat(string path, DataOptions o)
    {
        var first = DataRows.Read(path, o.Split).FirstOrDefault();
        try
        {
            if (first.Json is null || JsonNode.Parse(first.Json) is not JsonObject record) return (null, null);
            o.Map(record);
            return (DatasetFormats.Detect(record), record);
        }
        catch (Exception e) when (e is JsonException or FormatException or ArgumentException) { return (null, null); }
    }

    private static RecordView Chat(ITokenizer tokenizer, ChatRecord r, DetectedFormat format)
    {
        var (ids, trained) = r.Source.Apply(() => SftTrainer.Encode(r, tokenizer));
        return new RecordView(r.Raw ? tokenizer.Decode(ids, skipSpecial: false) : tokenizer.Chat.Render(r.Messages, false), ids, trained, r.Source, format);
    }

    private static RecordView Prompt(ITokenizer tokenizer, IReadOnlyList<ChatMessage> messages, Source source, DetectedFormat format)
    {
        var ids = source.Apply(() => tokenizer.Chat.EncodePrompt(messages));
        return new RecordView(tokenizer.Chat.Render(messages, true), ids, ids.Select(_ => false).ToList(), source, format);
    }

    /// <summary>The text of a record with the trained runs of tokens between « and ».</summary>
    public static string Marked(ITokenizer tokenizer, RecordView view)
    {
        var sb = new System.Text.StringBuilder();
        for (int i = 0; i < view.Ids.Count;)
        {
            int j = i;
            while (j < view.Ids.Count && view.LossMask[j] == view.LossMask[i]) j++;
            var text = tokenizer.Decode(view.Ids.Skip(i).Take(j - i), skipSpecial: false);
            sb.Append(view.LossMask[i] ? $"«{text}»" : text);
            i = j;
        }
        return sb.ToString();
    }
}
