System.Console.WriteLine(PpoSharp.Smoke.Run());
