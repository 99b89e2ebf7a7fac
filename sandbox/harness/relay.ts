// Appspace hosts of this instance, reached through the platform's gateway (the relay).
//
// For the hosts the owner allowlisted that are appspaces of this instance, `fetch` goes
// through a proxy client on the relay socket the supervisor serves (sandbox/relay.py): Deno
// checks the name against --allow-net, then sends the request in absolute form down the socket
// without resolving the name. `https://` URLs of those hosts are sent as `http://` with their
// port: the relay hands the request to the gateway over loopback (TLS would add nothing
// there), and the gateway serves it as it serves an https visitor. Not a security layer: the
// relay checks the host itself, and a direct connection to the name meets --deny-net.

export interface RelayConfig {
  socket: string;
  hosts: string[];
}

type Fetch = typeof globalThis.fetch;

export function installRelay(config: RelayConfig | undefined): void {
  if (!config || config.hosts.length === 0) return;
  const hosts = new Set(config.hosts.map((h) => h.toLowerCase()));
  const client = Deno.createHttpClient({
    proxy: { transport: "unix", path: config.socket },
    poolMaxIdlePerHost: 0, // the relay serves one request per connection
  });
  const original: Fetch = globalThis.fetch.bind(globalThis);

  const relayed = async (input: RequestInfo | URL, init?: RequestInit): Promise<Response> => {
    let url: URL;
    try {
      url = new URL(input instanceof Request ? input.url : String(input));
    } catch {
      return original(input, init);
    }
    if (!hosts.has(url.hostname) || (url.protocol !== "http:" && url.protocol !== "https:")) {
      return original(input, init);
    }
    if (url.protocol === "https:") {
      const port = url.port || "443";
      url.protocol = "http:";
      url.port = port;
    }
    const options: RequestInit & { client: Deno.HttpClient } = { ...(init ?? {}), client };
    if (input instanceof Request) {
      // The relay takes bodies of known length: read a Request's body into memory.
      const body = input.body && init?.body === undefined ? await input.arrayBuffer() : undefined;
      return original(url, {
        method: input.method,
        headers: input.headers,
        redirect: input.redirect,
        signal: input.signal,
        ...(body !== undefined ? { body } : {}),
        ...options,
      });
    }
    return original(url, options);
  };
  globalThis.fetch = relayed as Fetch;
}
