using PpoSharp.Models;
using static TorchSharp.torch;

namespace PpoSharp.Tests;

/// <summary>The decode step's helper threads.</summary>
public class SpinTeamTests
{
    [Fact]
    public async Task Run_RunsEveryPartOnce_FromTwoCallersAtOnce()
    {
        var team = new SpinTeam();
        var errors = 0;
        void Caller(int seed)
        {
            var random = new Random(seed);
            for (int call = 0; call < 2000; call++)
            {
                int parts = random.Next(1, 4);
                var runs = new int[parts];
                team.Run(parts, i => Interlocked.Increment(ref runs[i]));
                if (runs.Any(r => r != 1)) Interlocked.Increment(ref errors);
                if (call % 10 == 0) Thread.Sleep(1);                   // past the spin: the helpers sleep and must be woken
            }
        }
        var both = Task.Run(() => Parallel.Invoke(() => Caller(1), () => Caller(2)));   // the second caller finds the team busy and runs its parts itself
        Assert.True(await Task.WhenAny(both, Task.Delay(TimeSpan.FromSeconds(60))) == both, "a call never returned (a helper missed its wake-up)");
        Assert.Equal(0, errors);
    }
}
