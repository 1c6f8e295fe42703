using PpoSharp.Training;

namespace PpoSharp.Tests;

/// <summary>A run's checkpoints (RUN/checkpoints/step-N) load as model folders, as HF's checkpoint-N do: the run's config and tokenizer with the checkpoint's weights.</summary>
public class CheckpointLoadTests
{
    private static string Run => Path.Combine(TestSupport.TrainedSortModel, "model");                  // 400 steps, checkpoints at 200 and 400
    private static string Step200 => Path.Combine(Run, Checkpoints.Folder, "step-000200");

    [Fact]
    public void LoadPolicy_Checkpoint_HasTheCheckpointsWeights_NotTheFinalOnes()
    {
        var (model, tokenizer) = RunDirectory.LoadPolicy(Step200);
        var (final, _) = RunDirectory.LoadPolicy(Run);
        var saved = Models.Hf.Safetensors.Load(Path.Combine(Step200, RunDirectory.ModelFile));
        var finalWeights = final.state_dict();
        Assert.All(model.state_dict(), p => Assert.True(p.Value.eq(saved[p.Key]).all().item<bool>(), p.Key));
        Assert.Contains(model.state_dict(), p => !p.Value.eq(finalWeights[p.Key]).all().item<bool>());               // step 200 is not step 400
        Assert.Equal(RunDirectory.LoadTokenizer(Run).VocabSize, tokenizer.VocabSize);
    }

    [Fact]
    public void GenerateAndSft_CheckpointFolder_LoadAsModels()
    {
        var generated = TestSupport.RunCli("generate", "--model", Step200, "--prompt", "sort: dcba", "--greedy", "--max-new-tokens", "6");
        Assert.True(generated.Code == 0, generated.Err);
        Assert.False(string.IsNullOrWhiteSpace(generated.Out));
        var data = Path.Combine(TestSupport.TrainedSortModel, "data", Data.TaskData.SftFile);
        var dir = Path.Combine(TestSupport.TempDir(), "from-checkpoint");
        var (code, output, errors) = TestSupport.RunCli("sft", "--init", Step200, "--data", data, "--out", dir, "--set", "steps=1", "--set", "batch_size=2", "--set", "eval_fraction=0");
        Assert.True(code == 0, errors);
        Assert.True(File.Exists(Path.Combine(dir, RunDirectory.ModelFile)), output);
    }
}
