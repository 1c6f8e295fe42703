using PpoSharp.Models;
using static TorchSharp.torch;

namespace PpoSharp.Tests;

public class TorchTests
{
    [Fact]
    public void Torch_Initialises_MatmulGivesKnownProduct()
    {
        var a = tensor(new float[] { 1, 2, 3, 4 }, [2, 2]);
        var b = tensor(new float[] { 5, 6, 7, 8 }, [2, 2]);
        Assert.Equal(new float[] { 19, 22, 43, 50 }, a.matmul(b).data<float>().ToArray());
    }

    [Fact]
    public void TinyModel_OneAdamWStep_LowersLossOnItsBatch()
    {
        var model = TestSupport.TinyModel();
        model.train();
        var ids = randint(0, 20, [4, 12], generator: new Generator(1));
        var targets = ids.roll(-1, 1);
        var optimizer = optim.AdamW(model.parameters(), lr: 1e-2);
        float Loss() => nn.functional.cross_entropy(model.forward(ids).flatten(0, 1), targets.flatten()).item<float>();
        float before = Loss();
        optimizer.zero_grad();
        nn.functional.cross_entropy(model.forward(ids).flatten(0, 1), targets.flatten()).backward();
        optimizer.step();
        Assert.True(Loss() < before - 0.01, $"loss {before} did not fall after one step");
    }
}
