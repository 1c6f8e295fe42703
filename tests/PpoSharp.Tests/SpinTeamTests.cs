using System.Runtime.InteropServices;
using PpoSharp.Models;
using static TorchSharp.torch;

namespace PpoSharp.Tests;

/// <summary>The decode step's helper threads, and the C heap that keeps freed memory.</summary>
public class SpinTeamTests
{
    [Fact]
    public void Run_RunsEveryPartOnce_FromTwoCallersAtOnce()
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
                if (call % 500 == 0) Thread.Sleep(2);                  // past the spin: the helpers sleep and must be woken
            }
        }
        Parallel.Invoke(() => Caller(1), () => Caller(2));              // the second caller finds the team busy and runs its parts itself
        Assert.Equal(0, errors);
    }

    [Fact]
    public void KeepFreedMemory_AStepsTensorsReuseTheLastStepsPages()
    {
        Assert.True(NativeHeap.KeepFreedMemory());
        long Faults()
        {
            getrusage(0, out var usage);
            return usage.MinorFaults;
        }
        long Step()                                                     // two 40 MB tensors and their sum, freed: above glibc's largest mmap threshold (32 MB)
        {
            long before = Faults();
            using (var a = ones(40L << 18))
            using (var b = ones(40L << 18))
                (a + b).Dispose();
            return Faults() - before;
        }
        for (int i = 0; i < 4; i++) Step();                             // the heap grows to the step's size
        Assert.InRange(Step() + Step(), 0, 1000);                       // glibc's defaults: 30,720 pages faulted and zeroed again each step
    }

    [StructLayout(LayoutKind.Sequential)]
    private struct RUsage
    {
        public long UserSeconds, UserMicroseconds, SystemSeconds, SystemMicroseconds, MaxRss, SharedRss, DataRss, StackRss, MinorFaults, MajorFaults;
        public long Swaps, BlockIn, BlockOut, MessagesSent, MessagesReceived, Signals, VoluntarySwitches, InvoluntarySwitches;
    }

    [DllImport("libc")]
    private static extern int getrusage(int who, out RUsage usage);
}
