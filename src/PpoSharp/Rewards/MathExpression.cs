using System.Globalization;

namespace PpoSharp.Rewards;

/// <summary>
/// The value of a small LaTeX expression, for <see cref="MathAnswer"/>: numbers, <c>+ - * / ^</c>, <c>\cdot</c>,
/// <c>\times</c>, <c>\div</c>, implicit products (<c>2\sqrt3</c>, <c>3x</c>), <c>\frac{a}{b}</c> (and <c>\frac12</c>),
/// <c>\sqrt{x}</c>, <c>\sqrt[n]{x}</c>, <c>\pi</c>, groups in <c>()</c> and <c>{}</c>, and single-letter variables.
/// Two expressions have the same value when they name the same variables and agree within a relative 1e-6
/// (|a - b| &lt;= 1e-6 max(1, |a|, |b|)) at two fixed assignments of those variables: a cheap check that
/// <c>2-2p</c> = <c>-2p+2</c>. Anything else (an unknown command, depth over 100, a non-finite value) has no value.
/// </summary>
public sealed class MathExpression
{
    private const int MaxDepth = 100;
    private const double Tolerance = 1e-6;
    private readonly string _s;
    private readonly int _assignment;
    private readonly SortedSet<char> _variables = [];
    private int _pos, _depth;
    private bool _failed;

    private MathExpression(string s, int assignment) => (_s, _assignment) = (s, assignment);

    /// <summary>Whether <paramref name="a"/> and <paramref name="b"/> (normalised, no spaces) have the same value; false when either has none.</summary>
    public static bool SameValue(string a, string b)
    {
        for (int assignment = 0; assignment < 2; assignment++)
        {
            var (x, vx) = Evaluate(a, assignment);
            var (y, vy) = Evaluate(b, assignment);
            if (x is null || y is null || !vx.SetEquals(vy)) return false;
            if (Math.Abs(x.Value - y.Value) > Tolerance * Math.Max(1, Math.Max(Math.Abs(x.Value), Math.Abs(y.Value)))) return false;
        }
        return true;
    }

    /// <summary>The value of <paramref name="s"/> under variable assignment 0 or 1 and the variables it names; null when it has none.</summary>
    public static (double? Value, SortedSet<char> Variables) Evaluate(string s, int assignment = 0)
    {
        var e = new MathExpression(s, assignment);
        if (s.Length == 0 || s.Length > MathAnswer.MaxParsedLength) return (null, e._variables);
        double v = e.Sum();
        bool ok = !e._failed && e._pos == s.Length && double.IsFinite(v);
        return (ok ? v : null, e._variables);
    }

    private double Fail()
    {
        _failed = true;
        _pos = _s.Length;
        return double.NaN;
    }

    private bool At(string token) => !_failed && string.CompareOrdinal(_s, _pos, token, 0, token.Length) == 0;

    private bool Eat(string token)
    {
        if (!At(token)) return false;
        _pos += token.Length;
        return true;
    }

    // sum := product (('+'|'-') product)*
    private double Sum()
    {
        if (++_depth > MaxDepth) return Fail();
        double v = Product();
        while (!_failed)
        {
            if (Eat("+")) v += Product();
            else if (Eat("-")) v -= Product();
            else break;
        }
        _depth--;
        return v;
    }

    // product := unary (('*'|'\cdot'|'\times'|'/'|'\div'|implicit) unary)*
    private double Product()
    {
        double v = Unary();
        while (!_failed)
        {
            if (Eat("*") || Eat("\\cdot") || Eat("\\times")) v *= Unary();
            else if (Eat("/") || Eat("\\div")) v /= Unary();
            else if (StartsAtom()) v *= Power();
            else break;
        }
        return v;
    }

    // unary := ('-'|'+') unary | power
    private double Unary()
    {
        if (++_depth > MaxDepth) return Fail();
        double v = Eat("-") ? -Unary() : Eat("+") ? Unary() : Power();
        _depth--;
        return v;
    }

    // power := atom ('^' exponent)?   (right-associative through the exponent's own power)
    private double Power()
    {
        double b = Atom();
        if (!Eat("^")) return b;
        double e = At("{") ? Group() : Eat("-") ? -Atom() : Atom();
        return Math.Pow(b, e);
    }

    private bool StartsAtom() => !_failed && _pos < _s.Length && (char.IsAsciiDigit(_s[_pos]) || _s[_pos] is '(' or '{' or '.' || char.IsAsciiLetter(_s[_pos])
        || At("\\frac") || At("\\sqrt") || At("\\pi"));

    private double Atom()
    {
        if (_failed || _pos >= _s.Length) return Fail();
        char c = _s[_pos];
        if (char.IsAsciiDigit(c) || c == '.') return NumberLiteral();
        if (c == '(' || c == '{') return Bracketed(c, c == '(' ? ')' : '}');
        if (Eat("\\frac")) return Argument() / Argument();
        if (Eat("\\sqrt"))
        {
            double root = 2;
            if (Eat("[")) { root = Sum(); if (!Eat("]")) return Fail(); }
            return Math.Pow(Argument(), 1 / root);
        }
        if (Eat("\\pi")) return Math.PI;
        if (char.IsAsciiLetter(c))
        {
            _pos++;
            _variables.Add(c);
            return Variable(c);
        }
        return Fail();
    }

    /// <summary>A <c>\frac</c> or <c>\sqrt</c> argument: a braced group, or a single digit or letter (<c>\frac12</c>).</summary>
    private double Argument()
    {
        if (At("{")) return Group();
        if (_pos < _s.Length && char.IsAsciiDigit(_s[_pos])) return _s[_pos++] - '0';
        return Atom();
    }

    private double Group() => Bracketed('{', '}');

    private double Bracketed(char open, char close)
    {
        if (!Eat(open.ToString())) return Fail();
        double v = Sum();
        return Eat(close.ToString()) ? v : Fail();
    }

    private double NumberLiteral()
    {
        int start = _pos;
        while (_pos < _s.Length && (char.IsAsciiDigit(_s[_pos]) || _s[_pos] == '.')) _pos++;
        if (_pos - start > 40) return Fail();
        return double.TryParse(_s.AsSpan(start, _pos - start), NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture, out var v) ? v : Fail();
    }

    /// <summary>A fixed, irrational-looking value per letter and assignment, so that different polynomials rarely agree by chance.</summary>
    private double Variable(char c) => 0.5 + (c * 0.6180339887 + _assignment * 0.4142135623) % 1.7;
}
