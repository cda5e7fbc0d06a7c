// wallet-worker console: refreshes the live panel every 5 s while the page is visible,
// and asks before the actions that say so (data-confirm). The pages work without it.
"use strict";
(function () {
  const live = document.getElementById("live");
  if (live && live.dataset.refresh) {
    let busy = false;
    const refresh = async function () {
      if (busy || document.hidden) {
        return;
      }
      busy = true;
      try {
        const response = await fetch(live.dataset.refresh, {
          credentials: "same-origin",
          cache: "no-store",
        });
        if (response.ok) {
          live.innerHTML = await response.text();
          live.dataset.refreshedAt = new Date().toISOString();
        }
      } catch (_) {
        // The worker may be restarting: keep the last figures and try again.
      } finally {
        busy = false;
      }
    };
    setInterval(refresh, 5000);
  }
  document.addEventListener("submit", function (event) {
    const question = event.target.dataset.confirm;
    if (question && !window.confirm(question)) {
      event.preventDefault();
    }
  });
})();
