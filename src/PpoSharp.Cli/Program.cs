using PpoSharp;
using PpoSharp.Cli;

CpuThreads.PrepareOpenMp(); // before the first torch call loads libtorch
return Cli.Run(args);
