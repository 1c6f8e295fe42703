using System.Text.Json.Nodes;
using PpoSharp.Data;
using PpoSharp.Text;
using PpoSharp.Training;

namespace PpoSharp.Tests;

/// <summary>JinjaChat against transformers.js' apply_chat_template, its SFT mask, errors and the fallback format.</summary>
public class JinjaChatTests
{
    private static readonly ChatMessage Sys = new(Role.System, "You are a helpful assistant.");
    private static readonly ChatMessage U1 = new(Role.User, "What is the capital of France?");
    private static readonly ChatMessage A1 = new(Role.Assistant, "The capital of France is Paris.");
    private static readonly ChatMessage U2 = new(Role.User, "And of Japan? Answer in one word.");
    private static readonly ChatMessage A2 = new(Role.Assistant, "Tokyo.");

    public static TheoryData<string> ChatCases => [.. HfTestData.Chat["cases"]!.AsArray().Select(c => c!["name"]!.GetValue<string>())];

    [Theory, MemberData(nameof(ChatCases))]
    public void RenderJson_ReferenceCase_IsByteIdenticalAndEncodesToReferenceIds(string name)
    {
        var c = HfTestData.Chat["cases"]!.AsArray().Single(x => x!["name"]!.GetValue<string>() == name)!;
        var tokenizer = HfTestData.Tokenizer(c["tokenizer"]!.GetValue<string>());
        var kwargs = c["kwargs"]!.AsObject().ToDictionary(p => p.Key, p => (object?)p.Value);
        var chat = (JinjaChat)tokenizer.Chat;
        var text = chat.RenderJson(c["messages"]!.AsArray(), c["add_generation_prompt"]!.GetValue<bool>(), c["tools"] as JsonArray, kwargs);
        Assert.Equal(c["text"]!.GetValue<string>(), text);
        Assert.Equal(HfTestData.Ints(c["ids"]), tokenizer.Encode(text));
    }

    [Fact]
    public void EncodeConversation_Llama3_TrainsExactlyEachAnswerAndItsEotId()
    {
        var llama = HfTestData.Tokenizer("llama3");
        var (ids, trained) = llama.Chat.EncodeConversation([Sys, U1, A1, U2, A2]);
        Assert.Equal(llama.Chat.Render([Sys, U1, A1, U2, A2], false), llama.Decode(ids, skipSpecial: false));
        Assert.Equal(["The capital of France is Paris.<|eot_id|>", "Tokyo.<|eot_id|>"], TrainedRuns(llama, ids, trained));
    }

    [Fact]
    public void EncodeConversation_Llama30TemplateWithUnconditionalHeader_TrainsTheLastAnswerAndEotId_NotTheHeader()
    {
        // Llama 3.0's first template writes <|start_header_id|>assistant<|end_header_id|>\n\n after every conversation,
        // add_generation_prompt or not; it must not be trained as part of the last answer.
        var llama = RunDirectory.LoadTokenizer(TestSupport.HfModel("tiny-llama3", shared: true));
        var (ids, trained) = llama.Chat.EncodeConversation([Sys, U1, A1, U2, A2]);
        Assert.EndsWith("Tokyo.<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n", llama.Decode(ids, skipSpecial: false));
        Assert.Equal(["The capital of France is Paris.<|eot_id|>", "Tokyo.<|eot_id|>"], TrainedRuns(llama, ids, trained));
    }

    [Fact]
    public void EncodeConversation_Qwen3_TrainsAnswersEndOfTurnAndTheTemplatesFinalThinkBlock()
    {
        var qwen = HfTestData.Tokenizer("qwen3");
        var thought = new ChatMessage(Role.Assistant, "<think>\nFrance. Its capital is Paris.\n</think>\n\nThe capital of France is Paris.");
        var (ids, trained) = qwen.Chat.EncodeConversation([Sys, U1, thought, U2, A2]);
        // Earlier turns lose their think block in context; the template writes an empty one into the final turn.
        Assert.Equal(["The capital of France is Paris.<|im_end|>\n", "<think>\n\n</think>\n\nTokyo.<|im_end|>\n"], TrainedRuns(qwen, ids, trained));
    }

    [Fact]
    public void EncodeConversation_Gemma3_TrainsAnswerAndEndOfTurn_NotSystemTextMergedIntoUserTurn()
    {
        var gemma = HfTestData.Tokenizer("gemma3");
        var (ids, trained) = gemma.Chat.EncodeConversation([Sys, U1, A1]);
        Assert.Equal(["The capital of France is Paris.<end_of_turn>\n"], TrainedRuns(gemma, ids, trained));
    }

    [Fact]
    public void EncodePromptAndWithResponse_Llama3_AreTheRenderedTextsEncoded()
    {
        var llama = HfTestData.Tokenizer("llama3");
        var prompt = llama.Chat.EncodePrompt([U1]);
        Assert.Equal(llama.Encode(llama.Chat.Render([U1], true)), prompt);
        Assert.Equal(128000, prompt[0]);                                            // the template writes <|begin_of_text|> once
        Assert.Equal(llama.Chat.EncodeConversation([U1, A1]).Ids, llama.Chat.EncodeWithResponse([U1], A1.Content));
    }

    [Fact]
    public void Load_ChatKwargs_ReachTheTemplate()
    {
        using var qwen = HfTokenizer.Load(HfTestData.Folder("qwen3"), new Dictionary<string, object?> { ["enable_thinking"] = false });
        Assert.EndsWith("<|im_start|>assistant\n<think>\n\n</think>\n\n", qwen.Chat.Render([U1], true));
    }

    [Fact]
    public void Render_TemplateRaisesException_GivesPpoSharpExceptionWithItsMessage()
    {
        var chat = new JinjaChat("{% if messages[0]['role'] != 'user' %}{{ raise_exception('Conversations must start with a user message.') }}{% endif %}",
            HfTestData.Tokenizer("gpt2"), new Dictionary<string, string>());
        var e = Assert.Throws<PpoSharpException>(() => chat.Render([Sys], false));
        Assert.Equal("chat template: Conversations must start with a user message.", e.Message);
        Assert.Equal("", chat.Render([U1], false));
    }

    [Fact]
    public void Render_TemplateSyntaxError_GivesOneLinePpoSharpException()
    {
        var chat = new JinjaChat("{% for m in messages %}{{ m.content }}", HfTestData.Tokenizer("gpt2"), new Dictionary<string, string>());
        var e = Assert.Throws<PpoSharpException>(() => chat.Render([U1], false));
        Assert.StartsWith("chat template: ", e.Message);
        Assert.DoesNotContain('\n', e.Message);
    }

    [Fact]
    public void Chat_FolderWithoutTemplate_UsesTheRoleFormatWithEosString()
    {
        var gpt2 = HfTestData.Tokenizer("gpt2");
        Assert.Equal("<|system|>You are a helpful assistant.<|endoftext|><|user|>What is the capital of France?<|endoftext|><|assistant|>",
            gpt2.Chat.Render([Sys, U1], true));
        var (ids, trained) = gpt2.Chat.EncodeConversation([U1, A1]);
        Assert.Equal(["The capital of France is Paris.<|endoftext|>"], TrainedRuns(gpt2, ids, trained));
    }

    [Fact]
    public void Chat_TemplateFileAndNamedList_FileWinsAndListGivesDefault()
    {
        var listed = HfTestData.EditedConfig("gpt2", c => c["chat_template"] = new JsonArray(
            new JsonObject { ["name"] = "tool_use", ["template"] = "tools" },
            new JsonObject { ["name"] = "default", ["template"] = "{{ messages[0].content | upper }}" }));
        using var fromList = HfTokenizer.Load(HfTestData.Folder("gpt2", ("tokenizer_config.json", listed)));
        Assert.Equal("HELLO", fromList.Chat.Render([new(Role.User, "hello")], false));
        using var fromFile = HfTokenizer.Load(HfTestData.Folder("gpt2", ("tokenizer_config.json", listed), ("chat_template.jinja", "[{{ messages[0].content }}]")));
        Assert.Equal("[hello]", fromFile.Chat.Render([new(Role.User, "hello")], false));
    }

    /// <summary>The trained ids as runs of consecutive positions, each decoded with its special tokens.</summary>
    private static List<string> TrainedRuns(ITokenizer tokenizer, List<int> ids, List<bool> trained)
    {
        Assert.Equal(ids.Count, trained.Count);
        var runs = new List<string>();
        for (int i = 0; i < ids.Count; i++)
        {
            if (!trained[i]) continue;
            int j = i;
            while (j < ids.Count && trained[j]) j++;
            runs.Add(tokenizer.Decode(ids[i..j], skipSpecial: false));
            i = j;
        }
        return runs;
    }
}
