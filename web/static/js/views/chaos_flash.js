// Kills of a running chaos experiment, for the tree to flash (polls /api/chaos/active; docs/chaos.md).

/**
 * Call `onKills(kills)` with the kills made on `ctx.node` since the last call, about once a
 * second, while destructive actions are on (no experiment can run otherwise). Returns a stop function.
 */
export function watchKills(ctx, onKills, everyMs = 1000) {
  if (!ctx.config.allow_destructive || !ctx.node) return () => {};
  let since = null; // the server's clock: the first answer sets it, older kills are not flashed
  let busy = false;
  const timer = setInterval(async () => {
    if (busy) return;
    busy = true;
    try {
      const data = await ctx.api.request("GET", "/api/chaos/active", { params: { node: ctx.node, since: since ?? 0 } });
      const fresh = [];
      for (const e of data.experiments || []) for (const k of e.kills || []) fresh.push(k);
      const newest = fresh.reduce((t, k) => Math.max(t, k.time), since ?? 0);
      if (since !== null && fresh.length) onKills(fresh);
      since = since === null ? newest || Date.now() / 1000 : newest;
    } catch {
      // the tree works without it
    } finally {
      busy = false;
    }
  }, everyMs);
  return () => clearInterval(timer);
}
