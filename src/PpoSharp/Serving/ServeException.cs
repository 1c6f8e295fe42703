namespace PpoSharp.Serving;

/// <summary>
/// A request the server refuses: an HTTP status (4xx), one message naming the field and the problem, and OpenAI's
/// error <c>type</c>, <c>param</c> and <c>code</c>. The server answers it in OpenAI's <c>{"error": {...}}</c> shape.
/// </summary>
public sealed class ServeException(int status, string message, string? param = null) : PpoSharpException(message)
{
    public int Status { get; } = status;
    public string? Param { get; } = param;

    /// <summary>OpenAI's error type for a status: BadRequestError (400), AuthenticationError (401), ... as vLLM names them.</summary>
    public static string TypeOf(int status) => status switch
    {
        400 => "BadRequestError",
        401 => "AuthenticationError",
        403 => "PermissionDeniedError",
        404 => "NotFoundError",
        413 => "RequestTooLargeError",
        503 => "ServiceUnavailableError",
        _ => status >= 500 ? "InternalServerError" : "BadRequestError",
    };

    public static ServeException Bad(string message, string? param = null) => new(400, message, param);
}
