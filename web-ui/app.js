// Sluice dashboard: polls the public REST API with the admin token kept in this browser.
(function () {
  "use strict";
  const tokenInput = document.getElementById("token");
  const statusLine = document.getElementById("status");
  // A link may carry the token in its fragment (`/#token=…`): the fragment never
  // reaches the server; it is kept in this browser and removed from the address bar.
  const fromLink = new URLSearchParams(location.hash.slice(1)).get("token");
  if (fromLink) {
    localStorage.setItem("sluice.token", fromLink);
    history.replaceState(null, "", location.pathname + location.search);
  }
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
      await refreshBackends();
      fill(document.querySelector("#history tbody"), history.body.map((s) => [
        cell("v" + s.version), cell(s.created, "muted"), cell(s.summary),
      ]));
      statusLine.textContent = nodes.body.length + " node(s); refreshed " + new Date().toLocaleTimeString();
    } catch (err) {
      statusLine.textContent = err.message;
    }
  }

  // Every server of every backend, as each connected node sees it: health from that
  // node's checks, open connections and tunnels (e.g. to watch a drain finish).
  async function refreshBackends() {
    const list = await api("/backends");
    const details = await Promise.all(
      list.body.map((b) => api("/backends/" + encodeURIComponent(b.name))),
    );
    const rows = [];
    for (const { body: b } of details) {
      for (const server of b.servers) {
        const live = (b.live.find((l) => l.server === server.name) || { nodes: [] }).nodes;
        const state = server.state || "ready";
        const base = [cell(b.name), cell(server.name), cell(server.address, "muted"),
          cell(state, state === "ready" ? "" : "lag")];
        if (live.length === 0) {
          rows.push([...base, cell("–", "muted"), cell(""), cell(""), cell("")]);
        }
        for (const n of live) {
          const healthClass = n.health === "down" ? "bad" : n.health === "up" ? "ok" : "muted";
          rows.push([...base, cell(n.node), cell(n.health, healthClass),
            cell(n.current_connections), cell(n.current_tunnels)]);
        }
      }
    }
    fill(document.querySelector("#servers tbody"), rows);
  }

  refresh();
  setInterval(refresh, 2000);
})();
