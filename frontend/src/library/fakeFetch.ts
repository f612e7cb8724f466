// Tests only: a stand-in for `fetch` that answers from a handler and records every request.
// Installed before the API client is created (the client keeps the `fetch` it was made with).
export type Handler = (request: Request, url: URL) => Response | undefined | Promise<Response | undefined>;

export const requests: Request[] = [];
let handler: Handler = () => undefined;

export function answer(next: Handler): void {
  handler = next;
  requests.length = 0;
}

export function json(status: number, body?: unknown): Response {
  return new Response(status === 204 ? null : JSON.stringify(body), {
    status,
    headers: { "Content-Type": "application/json" },
  });
}

export const paged = (items: unknown[]) => json(200, { items, count: items.length });

export async function fakeFetch(input: RequestInfo | URL, init?: RequestInit): Promise<Response> {
  const request = input instanceof Request ? input : new Request(input, init);
  requests.push(request);
  const response = await handler(request, new URL(request.url));
  return response ?? json(404, { detail: "Not found." });
}
