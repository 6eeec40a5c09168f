// One Socket.IO connection to the /live namespace. Every event is handed to
// onEvent(name, payload) -- in app.js that is state.applySocketEvent.
// A subscription is {node, view} (a node's batches and node_status) or
// {feed} (crashes, audit, chaos, cluster: pushed as "feed" messages).

const EVENTS = ["ack", "batch", "node_status", "feed", "error"];

export function connectLive(subscriptions, onEvent) {
  if (typeof window.io !== "function") {
    onEvent("connect_error", { message: "socket.io client not loaded" });
    return { close() {} };
  }
  const socket = window.io("/live", { withCredentials: true, reconnectionDelayMax: 5000 });
  socket.on("connect", () => {
    for (const sub of subscriptions) socket.emit("subscribe", sub);
    onEvent("connect", {});
  });
  socket.on("disconnect", (reason) => onEvent("disconnect", { reason }));
  socket.on("connect_error", (err) => onEvent("connect_error", { message: err && err.message }));
  for (const name of EVENTS) socket.on(name, (payload) => onEvent(name, payload));
  return {
    socket,
    close() {
      socket.close();
    },
  };
}
