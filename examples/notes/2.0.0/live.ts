// Live updates: every open tab keeps a WebSocket; a change is announced to all of them and
// each tab fetches the list again (so what it shows always comes from the server's rules).

const sockets = new Set<WebSocket>();

export function openLiveSocket(request: Request): Response {
  const { socket, response } = Deno.upgradeWebSocket(request);
  socket.onopen = () => sockets.add(socket);
  socket.onclose = () => sockets.delete(socket);
  socket.onerror = () => sockets.delete(socket);
  return response;
}

export function announce(change: Record<string, unknown>): void {
  const message = JSON.stringify(change);
  for (const socket of sockets) {
    if (socket.readyState === WebSocket.OPEN) socket.send(message);
  }
}
