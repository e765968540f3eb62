// The page's one door to the server: same-origin fetch with the sign-in cookie, the CSRF
// header on every request that changes something, and errors turned into sentences.

export const CSRF_HEADER = "X-Tutti-CSRF";

/** The CSRF token the server set in a cookie this page (and only this origin) can read. */
export function csrfToken() {
  for (const part of document.cookie.split(";")) {
    const [name, ...rest] = part.trim().split("=");
    if (name === "tutti_csrf") return decodeURIComponent(rest.join("="));
  }
  return "";
}

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function failure(resp) {
  let code = "http_" + resp.status;
  let message = `The server answered ${resp.status} ${resp.statusText}.`;
  try {
    const body = await resp.json();
    if (body && body.error) {
      code = body.error.code || code;
      message = body.error.message || message;
    }
  } catch {
    // not JSON: keep the status line
  }
  return new ApiError(resp.status, code, message);
}

/** Call the API: `method` on `path` with an optional JSON `body`; resolves to the JSON reply. */
export async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  if (method !== "GET") headers[CSRF_HEADER] = csrfToken();
  const init = { method, headers, credentials: "same-origin" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let resp;
  try {
    resp = await fetch(path, init);
  } catch {
    throw new ApiError(0, "offline",
      "The server cannot be reached. Check the network connection, then try again.");
  }
  if (!resp.ok) throw await failure(resp);
  return resp.status === 204 ? null : resp.json();
}
