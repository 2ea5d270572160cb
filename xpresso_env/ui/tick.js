// A view's background refresh: fn every `ms` while the view is open, never two at once.
export const REFRESH_MS = 4000;

export function repeat(fn, ms = REFRESH_MS) {
  let timer = null;
  let stopped = false;
  const run = async () => {
    if (stopped) return;
    try { await fn(); } catch (err) { /* the next round tries again; errors are shown by fn */ }
    if (!stopped) timer = setTimeout(run, ms);
  };
  timer = setTimeout(run, ms);
  return () => { stopped = true; clearTimeout(timer); };
}
