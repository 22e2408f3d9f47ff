// The page's height follows the visual viewport: on a phone the on-screen
// keyboard shrinks it, and the composer (Send, Stop) and the last answer's
// controls must stay above the keyboard instead of behind it. Chromium
// resizes the layout itself (the viewport meta's
// interactive-widget=resizes-content); browsers that only shrink the
// visual viewport (Safari) get the height set here.

export function fitToViewport(app, messages) {
  const vv = window.visualViewport;
  if (!vv) return;
  let atBottom = true;
  messages.addEventListener("scroll", () => {
    atBottom = messages.scrollHeight - messages.scrollTop - messages.clientHeight < 40;
  }, { passive: true });
  const fit = () => {
    document.documentElement.style.setProperty("--app-height", `${Math.round(vv.height)}px`);
    // The page itself never scrolls: what the keyboard pushed up comes back.
    if (window.scrollY !== 0 && vv.offsetTop === 0) window.scrollTo(0, 0);
    // A reader at the end of the conversation stays there as it shrinks.
    if (atBottom) messages.scrollTop = messages.scrollHeight;
  };
  vv.addEventListener("resize", fit);
  vv.addEventListener("scroll", fit);
  new ResizeObserver(() => { if (atBottom) messages.scrollTop = messages.scrollHeight; }).observe(app);
  fit();
}
