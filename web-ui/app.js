// Sluice dashboard: polls the public REST API with the admin token kept in this browser.
(function () {
  "use strict";
  const tokenInput = document.getElementById("token");
  const statusLine = document.getElementById("status");
  let token = localStorage.getItem("sluice.token") || "";
  tokenInput.value = token;

  document.getElementById("login").addEventListener("submit", (e) => {
    e.preventDefault();
    token = tokenInput.value.trim();
    localStorage.setItem("sluice.token", token);
    refresh();
  });

  async function api(path) {
    const r = await fetch("/api/v1" + path, { headers: { Authorization: "Bearer " + token } });
    if (r.status === 401) throw new Error("The admin token was refused.");
    if (!r.ok) throw new Error(path + ": HTTP " + r.status);
    return { body: await r.json(), etag: r.headers.get("ETag") };
  }

  function cell(text, cls) {
    const td = document.createElement("td");
    td.textContent = text;
    if (cls) td.className = cls;
    return td;
  }

  function fill(tbody, rows) {
    tbody.replaceChildren(...rows.map((cells) => {
      const tr = document.createElement("tr");
      cells.forEach((c) => tr.appendChild(c));
      return tr;
    }));
  }

  async function refresh() {
    if (!token) return;
    try {
      const [nodes, history] = await Promise.all([api("/nodes"), api("/snapshots?limit=20")]);
      const current = history.body.length ? history.body[0].version : 0;
      document.getElementById("version").textContent = "configuration v" + current;
      fill(document.querySelector("#nodes tbody"), nodes.body.map((n) => {
        const t = n.traffic || {};
        const labels = Object.entries(n.labels).map(([k, v]) => k + "=" + v).join(", ");
        return [
          cell(n.id),
          cell(labels, "muted"),
          cell(n.connected ? "online" : "offline", n.connected ? "ok" : "bad"),
          cell("v" + n.applied_version, n.applied_version === current ? "" : "lag"),
          cell(t.current_connections ?? "–"),
          cell(t.current_tunnels ?? "–"),
          cell(t.total_upgrades ?? "–"),
          cell(n.last_nack ? "v" + n.last_nack.version + ": " + n.last_nack.reason : "", "bad"),
        ];
      }));
      fill(document.querySelector("#history tbody"), history.body.map((s) => [
        cell("v" + s.version), cell(s.created, "muted"), cell(s.summary),
      ]));
      statusLine.textContent = nodes.body.length + " node(s); refreshed " + new Date().toLocaleTimeString();
    } catch (err) {
      statusLine.textContent = err.message;
    }
  }

  refresh();
  setInterval(refresh, 2000);
})();
