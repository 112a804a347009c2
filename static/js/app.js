// Progressive enhancement shared by every page. Everything works without it.
"use strict";

// The evaluation page follows a run without reloading: while the latest attempt is queued or
// running, fetch its server-rendered (and so escaped) section once a second and swap it in.
(function followRun() {
  const section = document.getElementById("latest");
  if (!section || !section.dataset.liveUrl) return;
  const active = () => {
    const execution = section.querySelector("[data-active]");
    return execution && execution.dataset.active === "true";
  };
  async function poll() {
    if (!active()) return;
    try {
      const response = await fetch(section.dataset.liveUrl, { credentials: "same-origin" });
      if (response.ok) section.innerHTML = await response.text();
    } catch (error) {
      // A dropped connection is retried on the next tick.
    }
    setTimeout(poll, 1000);
  }
  setTimeout(poll, 1000);
})();
