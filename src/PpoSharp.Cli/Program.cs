using PpoSharp.Cli;

return Cli.Run(args);
