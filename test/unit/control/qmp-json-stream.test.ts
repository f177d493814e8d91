// QMP's JSON framing on its own: values cut out of a character stream however it is chunked.
import { describe, expect, it } from 'vitest';
import { JsonFramingError, JsonStreamSplitter } from '../../../src/control/qmp-json-stream.js';

describe('JsonStreamSplitter', () => {
  it('cuts values with or without newlines, split anywhere, strings with brackets and escapes included', () => {
    const text = '{"execute": "a"}{"execute":"b}{\\"", "arguments": {"x": [1, {"y": "]"}]}}\n"str" 42 [] ';
    const expected = [{ execute: 'a' }, { execute: 'b}{"', arguments: { x: [1, { y: ']' }] } }, 'str', 42, []];
    for (const piece of [1, 2, 5, text.length]) {
      const splitter = new JsonStreamSplitter();
      const values: unknown[] = [];
      for (let at = 0; at < text.length; at += piece) {
        for (const f of splitter.push(text.slice(at, at + piece))) {
          expect(f.ok).toBe(true);
          if (f.ok) values.push(f.value);
        }
      }
      expect(values, `pieces of ${piece}`).toEqual(expected);
    }
  });

  it('makes a malformed value an error frame and goes on with the next', () => {
    const frames = new JsonStreamSplitter().push('{"a": tru} ] {"ok": 1}');
    expect(frames.map((f) => f.ok)).toEqual([false, false, true]);
    expect(frames[0]).toMatchObject({ error: expect.stringMatching(/^JSON parse error, /) });
  });

  it('ends a string broken by a raw newline there, so the next line parses', () => {
    const frames = new JsonStreamSplitter().push('{"execute": "x\n{"execute": "y"}');
    expect(frames.map((f) => f.ok)).toEqual([false, true]);
  });

  it('refuses nesting deeper than QEMU allows, and a value longer than 1 MiB, as framing errors', () => {
    expect(() => new JsonStreamSplitter().push('['.repeat(1025))).toThrow(JsonFramingError);
    const splitter = new JsonStreamSplitter();
    splitter.push('{"a": "');
    expect(() => splitter.push('x'.repeat(1024 * 1024))).toThrow(/longer than/);
  });
});
