namespace PpoSharp.Models;

/// <summary>
/// Shape of the GPT decoder. Immutable; <see cref="Validate"/> names the first bad field.
/// Defaults are sized for the built-in tasks on a 2-core CPU (~0.8M parameters with a character vocabulary).
/// </summary>
/// <param name="VocabSize">Number of token ids, special tokens included.</param>
/// <param name="ContextLength">Longest sequence (prompt + response) the position table covers.</param>
/// <param name="NLayer">Transformer blocks.</param>
/// <param name="NHead">Attention heads; must divide <paramref name="DModel"/>.</param>
/// <param name="DModel">Width of the residual stream.</param>
public sealed record GptConfig(int VocabSize, int ContextLength = 64, int NLayer = 4, int NHead = 4, int DModel = 128)
{
    public int HeadDim => DModel / NHead;

    public GptConfig Validate()
    {
        if (VocabSize < 2) throw new PpoSharpException($"vocab_size must be at least 2 (got {VocabSize})");
        if (ContextLength < 2) throw new PpoSharpException($"context_length must be at least 2 (got {ContextLength})");
        if (NLayer < 1) throw new PpoSharpException($"n_layer must be at least 1 (got {NLayer})");
        if (NHead < 1 || DModel < 1 || DModel % NHead != 0)
            throw new PpoSharpException($"d_model ({DModel}) must be a positive multiple of n_head ({NHead})");
        return this;
    }
}
