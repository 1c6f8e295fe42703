using PpoSharp.Data;
using PpoSharp.Models;
using PpoSharp.Models.Hf;
using PpoSharp.Training;
using static TorchSharp.torch;

namespace PpoSharp.Tests;

/// <summary>Saving back: the same tensor names, bits and dtype as the files Hugging Face wrote; tied heads stay one parameter.</summary>
public class HfRoundTripTests
{
    [Theory]
    [InlineData("tiny-llama3")]        // bf16, tied, q/k/v split back out of the fused projection
    [InlineData("tiny-gpt2")]          // fp32, Conv1D weights transposed back
    public void SavePolicy_LoadedHfModel_WritesIdenticalTensorsAndNames(string name)
    {
        var source = TestSupport.HfModel(name);
        var (model, tokenizer) = RunDirectory.LoadPolicy(source);
        var dir = TestSupport.TempDir();
        RunDirectory.SavePolicy(dir, model, tokenizer, new SftConfig());
        var original = Safetensors.Load(Path.Combine(source, "model.safetensors"));
        var saved = Safetensors.Load(Path.Combine(dir, "model.safetensors"));
        Assert.Equal(original.Keys.Where(k => !k.EndsWith(".attn.bias", StringComparison.Ordinal)).Order(), saved.Keys.Order());
        foreach (var (key, tensor) in saved)
        {
            Assert.Equal(original[key].dtype, tensor.dtype);
            Assert.True(original[key].equal(tensor).all().item<bool>(), key);
        }
        var (again, _) = RunDirectory.LoadPolicy(dir);
        var ids = tensor(new long[] { 1, 2, 3, 100 }, [1, 4]);
        Assert.True(model.forward(ids).equal(again.forward(ids)).all().item<bool>());
    }

    [Fact]
    public void TiedHead_IsOneParameter_AfterLoadingAndAfterTraining()
    {
        var source = TestSupport.HfModel("tiny-llama3");
        var (model, tokenizer) = RunDirectory.LoadPolicy(source);
        Assert.DoesNotContain(model.named_parameters(), p => p.name.Contains("lm_head", StringComparison.Ordinal));
        using (no_grad()) model.Embeddings[5].fill_(0.25f);                               // the LM head row of id 5 moves with it
        var logits = model.Logits(ones(1, model.Config.DModel));
        Assert.Equal(0.25f * model.Config.DModel, logits[0, 5].item<float>(), 1e-3);

        var records = new[] { new ChatRecord([new(Role.User, "hi"), new(Role.Assistant, "hello there")], new Source("t", 1)) };
        var dir = TestSupport.TempDir();
        new SftTrainer(new SftConfig { Steps = 2, BatchSize = 1, EvalFraction = 0, Lr = 1e-2 }, TextWriter.Null)
            .Train(model, tokenizer, SftTrainer.Tokenize(records, tokenizer, model.Config.ContextLength), dir);
        Assert.DoesNotContain(model.named_parameters(), p => p.name.Contains("lm_head", StringComparison.Ordinal));
        Assert.DoesNotContain(Safetensors.ReadHeader(Path.Combine(dir, "model.safetensors")), e => e.Name == "lm_head.weight");
        Assert.False(model.Embeddings.equal(RunDirectory.LoadPolicy(source).Model.Embeddings).all().item<bool>());   // training moved the shared table
    }
}
