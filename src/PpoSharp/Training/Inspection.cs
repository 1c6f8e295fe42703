using PpoSharp.Data;
using PpoSharp.Models;
using PpoSharp.Text;
using TorchSharp;
using static TorchSharp.torch;

namespace PpoSharp.Training;

/// <summary>One completion: the prompt's ids, the new ids (up to and including an EOS), their text, and log p of each new id at temperature 1.</summary>
public sealed record Completion(IReadOnlyList<int> PromptIds, IReadOnlyList<int> Ids, string Text, IReadOnlyList<double> Logprobs);

/// <summary>What a model sees for one record: the rendered text, its ids, and per id whether the loss (or the response) covers it.</summary>
public sealed record RecordView(string Text, IReadOnlyList<int> Ids, IReadOnlyList<bool> LossMask, Source Source);

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
    /// Records of a JSON Lines file as the model sees them. The kind comes from the first record: preference pairs (the
    /// chosen answer appended; the mask marks it), chat records (the mask marks the SFT loss: assistant tokens only), or
    /// prompts (rendered with the generation prompt; nothing is trained).
    /// </summary>
    public static List<RecordView> Records(ITokenizer tokenizer, string path, int limit) => FirstRecordKind(path) switch
    {
        "pairs" => Jsonl.ReadPreferences(path).Records.Take(limit).Select(r => Conversation(tokenizer, [.. r.Messages, new(Role.Assistant, r.Chosen)], r.Source)).ToList(),
        "chat" => Jsonl.ReadChat(path).Records.Take(limit).Select(r => Conversation(tokenizer, r.Messages, r.Source)).ToList(),
        _ => Jsonl.ReadPrompts(path).Records.Take(limit).Select(r => Prompt(tokenizer, r.Messages, r.Source)).ToList(),
    };

    /// <summary>"pairs", "chat" or "prompts" from the first non-blank line (the readers then check every line).</summary>
    private static string FirstRecordKind(string path)
    {
        var first = File.Exists(path) ? File.ReadLines(path).FirstOrDefault(l => !string.IsNullOrWhiteSpace(l)) : null;
        try
        {
            using var doc = System.Text.Json.JsonDocument.Parse(first ?? "{}");
            var root = doc.RootElement;
            if (root.ValueKind != System.Text.Json.JsonValueKind.Object) return "prompts";
            if (root.TryGetProperty("chosen", out _)) return "pairs";
            return root.TryGetProperty("messages", out var m) && m.ValueKind == System.Text.Json.JsonValueKind.Array && m.GetArrayLength() > 0
                && m[m.GetArrayLength() - 1] is { ValueKind: System.Text.Json.JsonValueKind.Object } last
                && last.TryGetProperty("role", out var role) && role.ValueKind == System.Text.Json.JsonValueKind.String && role.GetString() == "assistant" ? "chat" : "prompts";
        }
        catch (System.Text.Json.JsonException) { return "prompts"; }          // the reader reports the line
    }

    private static RecordView Conversation(ITokenizer tokenizer, IReadOnlyList<ChatMessage> messages, Source source)
    {
        var (ids, trained) = source.Apply(() => tokenizer.Chat.EncodeConversation(messages));
        return new RecordView(tokenizer.Chat.Render(messages, false), ids, trained, source);
    }

    private static RecordView Prompt(ITokenizer tokenizer, IReadOnlyList<ChatMessage> messages, Source source)
    {
        var ids = source.Apply(() => tokenizer.Chat.EncodePrompt(messages));
        return new RecordView(tokenizer.Chat.Render(messages, true), ids, ids.Select(_ => false).ToList(), source);
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
