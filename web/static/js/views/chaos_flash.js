// Kills of running chaos experiments, for the tree to flash: taken from the
// "chaos" feed's pushes (docs/chaos.md), no polling.

/** The kills on `node` that a delta carries (none unless it is a "chaos" feed push). */
export function chaosKills(delta, node) {
  if (delta.kind !== "feed" || delta.feed !== "chaos" || !node) return [];
  return delta.items.filter((i) => i.node === node && Array.isArray(i.kills)).flatMap((i) => i.kills);
}
