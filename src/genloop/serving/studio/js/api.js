/* The HTTP API (docs/api.md) as the studio calls it: JSON requests, errors as ApiError, server-sent
 * events, and seeds beyond 2^53 kept exact.
 *
 * The key is never handled here. The browser's HTTP Basic auth (the key as password) covers every
 * fetch of the page; every URL is relative to the page, so the API is found beside it.
 */

export class ApiError extends Error {
  constructor(message, status) {
    super(message);
    this.status = status;
  }
}

/** The API's `error.message`, or the HTTP status when the body is not the error object. */
async function errorFrom(res) {
  let message = `${res.status} ${res.statusText || "error"}`;
  try {
    const body = await res.json();
    if (body && body.error && body.error.message) message = body.error.message;
  } catch (_) { /* not JSON: keep the status line */ }
  if (res.status === 401) message += " — reload the page to enter the API key again.";
  return new ApiError(message, res.status);
}

// Seeds go up to 2^63 − 1, beyond the integers a JS number holds exactly (2^53). They travel
// as digit strings inside the page and as JSON numbers on the wire, so a restored seed
// reproduces its output exactly.
const parseJson = (text) => JSON.parse(text.replace(/("seed"\s*:\s*)(\d{16,})/g, '$1"$2"'));

function toJson(body) {
  if (typeof body.seed !== "string") return JSON.stringify(body);
  if (!/^\d+$/.test(body.seed)) throw new ApiError(`Seed: "${body.seed}" is not a whole number.`, 0);
  // the top-level key is the only unescaped `"seed":0` in the text (quotes in strings are escaped)
  return JSON.stringify({ ...body, seed: 0 }).replace('"seed":0', `"seed":${body.seed}`);
}

/** fetch() a path relative to the page; throws ApiError unless the response is 2xx. */
export async function request(path, { method = "GET", body, signal } = {}) {
  const init = { method, signal, credentials: "same-origin", headers: {} };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = toJson(body);
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ApiError(`Cannot reach the server (${err.message}). Is \`genloop serve\` running?`, 0);
  }
  if (!res.ok) throw await errorFrom(res);
  return res;
}

export const api = async (path, opts) => parseJson(await (await request(path, opts)).text());

/** Server-sent events of a fetch() body: yields the data of each event ("[DONE]" included),
 * skips comments such as ": keep-alive". */
export async function* sseData(body) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  let data = [];
  try {
    for (;;) {
      const { value, done } = await reader.read();
      // at the end a blank line dispatches an event the server left unterminated
      buffer += done ? decoder.decode() + "\n\n" : decoder.decode(value, { stream: true });
      for (;;) {
        const cut = buffer.search(/[\r\n]/);
        if (cut < 0 || (!done && cut === buffer.length - 1 && buffer[cut] === "\r")) break;
        const line = buffer.slice(0, cut);
        buffer = buffer.slice(buffer.startsWith("\r\n", cut) ? cut + 2 : cut + 1);
        if (line === "") {
          if (data.length) yield data.join("\n");
          data = [];
        } else if (!line.startsWith(":")) {
          const colon = line.indexOf(":");
          const field = colon < 0 ? line : line.slice(0, colon);
          let val = colon < 0 ? "" : line.slice(colon + 1);
          if (val.startsWith(" ")) val = val.slice(1);
          if (field === "data") data.push(val);
        }
      }
      if (done) break;
    }
    if (data.length) yield data.join("\n");
  } finally {
    reader.cancel().catch(() => {});
  }
}
