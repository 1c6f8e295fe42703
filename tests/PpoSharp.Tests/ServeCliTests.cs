namespace PpoSharp.Tests;

/// <summary>The <c>serve</c> command's checks that run before any model is loaded.</summary>
public sealed class ServeCliTests
{
    [Theory]
    [InlineData("--host", "0.0.0.0", "give --api-key KEY too")]
    [InlineData("--host", "example.com", "not an IP address")]
    [InlineData("--port", "70000", "--port must be 0 to 65535")]
    [InlineData("--max-batch", "0", "--max-batch must be at least 1")]
    [InlineData("--weights-dir", "/no/such/folder", "--weights-dir /no/such/folder: no such folder")]
    public void Serve_UnsafeOrBadOption_ExitsWithOneLine(string option, string value, string message)
    {
        var (stdout, stderr) = (new StringWriter(), new StringWriter());
        int code = Cli.Cli.Run(["serve", "--model", "/no/model/needed", option, value], stdout, stderr);
        Assert.Equal(Cli.Cli.UserError, code);
        Assert.Contains(message, stderr.ToString());
        Assert.Single(stderr.ToString().TrimEnd('\n').Split('\n'));
    }
}
