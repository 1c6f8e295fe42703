using TorchSharp;
using static TorchSharp.torch;

namespace PpoSharp.Models;

/// <summary>Where models and batches live: the CPU, or a CUDA GPU when TorchSharp's CUDA package is referenced.</summary>
public enum ComputeDevice { Cpu, Cuda }

public static class Devices
{
    /// <summary>The torch device, or a one-line error when CUDA is asked for and not available.</summary>
    public static Device Resolve(this ComputeDevice device)
    {
        if (device == ComputeDevice.Cpu) return CPU;
        if (!cuda.is_available())
            throw new PpoSharpException("device 'cuda' is not available: this build references TorchSharp-cpu (replace it with TorchSharp-cuda-linux, on a machine with an NVIDIA driver), or use device cpu");
        return CUDA;
    }

    /// <summary>The device a model's weights are on (batches for it are built there).</summary>
    public static Device DeviceOf(Decoder model) => model.Embeddings.device;
}
