using PpoSharp.Models;
using PpoSharp.Models.Hf;
using PpoSharp.Training;
using TorchSharp;

namespace PpoSharp.Tests;

/// <summary>vLLM's runtime LoRA routes: load a peft adapter folder by name, generate with it by "model", reload in place, unload.</summary>
public sealed class ServeLoraTests
{
    private static readonly int[] Prompt = [128000, 9906, 11, 1917];

    [Fact]
    public async Task LoadLoraAdapter_ModelNamesIt_GeneratesAsTheMergedAdapterAndUnloads()
    {
        await using var host = await ServeHost.StartAsync();
        var adapterDir = Path.Combine(host.WeightsDir, "policy-step-1");
        var (model, _) = RunDirectory.LoadPolicy(host.BaseDir);
        using (var adapter = new LoraAdapter(model, new LoraSettings(4, 8, 0, LoraSettings.AllLinear)))
        {
            using (torch.no_grad()) foreach (var p in adapter.parameters()) p.normal_(0, 0.3);   // B is zero at init: make the adapter matter
            PeftAdapter.Save(adapterDir, adapter, host.BaseDir);
        }
        string Body(string name) => $$"""{"model":"{{name}}","prompt":[{{string.Join(",", Prompt)}}],"max_tokens":6,"temperature":0,"return_token_ids":true}""";

        var (status, text) = await host.Post("/v1/load_lora_adapter", """{"lora_name":"policy","lora_path":"policy-step-1"}""");
        Assert.Equal(200, status);
        Assert.Equal("Success: LoRA adapter 'policy' added successfully.", text);
        var models = await host.Get("/v1/models");
        var card = models["data"]!.AsArray().Single(m => m!["id"]!.GetValue<string>() == "policy")!;
        Assert.Equal("tiny", card["parent"]!.GetValue<string>());

        // generate on the adapter folder merges it into its base; the server applies it as a view: same greedy ids.
        var merged = ServeHost.Ints(ServeHost.GenerateJson(adapterDir, Prompt, 6)["ids"]);
        var plain = ServeHost.Ints(ServeHost.GenerateJson(host.BaseDir, Prompt, 6)["ids"]);
        Assert.NotEqual(plain, merged);
        Assert.Equal(merged, ServeHost.Ints((await host.PostJson("/v1/completions", Body("policy")))["choices"]![0]!["token_ids"]));
        Assert.Equal(plain, ServeHost.Ints((await host.PostJson("/v1/completions", Body("tiny")))["choices"]![0]!["token_ids"]));

        Assert.Equal(400, (await host.Post("/v1/load_lora_adapter", """{"lora_name":"policy","lora_path":"policy-step-1"}""")).Status);
        Assert.Equal(200, (await host.Post("/v1/load_lora_adapter", """{"lora_name":"policy","lora_path":"policy-step-1","load_inplace":true}""")).Status);
        var (unload, said) = await host.Post("/v1/unload_lora_adapter", """{"lora_name":"policy"}""");
        Assert.Equal((200, "Success: LoRA adapter 'policy' removed successfully."), (unload, said));
        Assert.Equal(404, (await host.Post("/v1/completions", Body("policy"))).Status);
    }
}
