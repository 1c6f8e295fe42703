// JSON as the reference scripts write it: indented two spaces, arrays of numbers on one line.
export function toJson(value, indent = '') {
    const inner = indent + '  ';
    if (Array.isArray(value)) {
        if (value.length === 0) return '[]';
        if (value.every((v) => typeof v === 'number')) return '[' + value.join(', ') + ']';
        return '[\n' + value.map((v) => inner + toJson(v, inner)).join(',\n') + '\n' + indent + ']';
    }
    if (value !== null && typeof value === 'object') {
        const keys = Object.keys(value);
        if (keys.length === 0) return '{}';
        return (
            '{\n' +
            keys.map((k) => inner + JSON.stringify(k) + ': ' + toJson(value[k], inner)).join(',\n') +
            '\n' +
            indent +
            '}'
        );
    }
    return JSON.stringify(value);
}
