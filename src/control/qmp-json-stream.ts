/**
 * QMP's wire framing, for the server and the client alike. QMP is a stream of JSON values; most clients
 * end each with a newline, some do not, so values are cut out by bracket depth (respecting strings and
 * escapes), not by line.
 */

/** The largest value accepted: far above any QMP command, far below what would strain the heap. */
const MAX_VALUE_CHARS = 1024 * 1024;
/** QEMU's json-streamer limit (MAX_NESTING); deeper input is hostile, not a command. */
const MAX_NESTING = 1024;

export type JsonFrame = { ok: true; value: unknown } | { ok: false; error: string };

/** A value over the limits: the stream cannot be resynchronised, so the connection should end. */
export class JsonFramingError extends Error {
  override name = 'JsonFramingError';
}

/** Cuts a character stream into top-level JSON values; a malformed one becomes an error frame. */
export class JsonStreamSplitter {
  private pending = ''; // the unfinished value's text from earlier chunks
  private active = false; // inside a value
  private depth = 0;
  private inString = false;
  private escaped = false;
  private bare = false; // a top-level scalar or garbage token: ends at whitespace or a bracket

  /** Returns the values completed by `text`, in order; throws JsonFramingError past the limits. */
  push(text: string): JsonFrame[] {
    const frames: JsonFrame[] = [];
    let start = 0;
    const finish = (end: number) => {
      frames.push(parse(this.pending + text.slice(start, end)));
      this.pending = '';
      this.active = this.bare = this.inString = this.escaped = false;
      this.depth = 0;
    };
    for (let i = 0; i < text.length; i++) {
      const c = text[i]!;
      if (this.inString) {
        if (this.escaped) this.escaped = false;
        else if (c === '\\') this.escaped = true;
        else if (c === '"') {
          this.inString = false;
          if (this.depth === 0) finish(i + 1);
        } else if (c === '\n') {
          // A raw newline is invalid inside a JSON string: the value is broken. Ending it here lets
          // the next line parse, instead of the rest of the stream being swallowed as string text.
          finish(i);
        }
      } else if (this.bare) {
        if (/[\s{}[\]"]/.test(c)) {
          finish(i);
          i--; // the delimiter may begin the next value
        }
      } else if (!this.active) {
        if (/\s/.test(c)) continue;
        start = i;
        this.active = true;
        if (c === '{' || c === '[') this.depth = 1;
        else if (c === '"') this.inString = true;
        else if (c === '}' || c === ']') finish(i + 1); // a stray closer: reported as a parse error
        else this.bare = true;
      } else if (c === '"') {
        this.inString = true;
      } else if (c === '{' || c === '[') {
        if (++this.depth > MAX_NESTING) throw new JsonFramingError(`JSON parse error, nesting deeper than ${MAX_NESTING}`);
      } else if ((c === '}' || c === ']') && --this.depth === 0) {
        finish(i + 1);
      }
    }
    if (this.active) {
      this.pending += text.slice(start);
      if (this.pending.length > MAX_VALUE_CHARS) throw new JsonFramingError(`JSON parse error, value longer than ${MAX_VALUE_CHARS} characters`);
    }
    return frames;
  }
}

function parse(text: string): JsonFrame {
  try {
    return { ok: true, value: JSON.parse(text) as unknown };
  } catch (e) {
    return { ok: false, error: `JSON parse error, ${(e as Error).message}` };
  }
}
