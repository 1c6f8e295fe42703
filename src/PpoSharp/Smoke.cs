namespace PpoSharp;
public static class Smoke { public static string Run() { var t = TorchSharp.torch.ones(2, 3); return t.sum().item<float>().ToString(); } }
