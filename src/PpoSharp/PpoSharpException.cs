namespace PpoSharp;

/// <summary>
/// A mistake in user input (data, config, paths, checkpoints). Its message is one line that names the file, line or
/// key and the problem; the command-line tool prints it without a stack trace and exits with code 2.
/// </summary>
public class PpoSharpException(string message, Exception? inner = null) : Exception(message, inner);
