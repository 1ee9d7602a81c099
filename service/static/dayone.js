// dayone: progressive enhancement only; every page works without this file.
// 1. Filters apply as you choose them (the form still works by submitting).
// 2. The architecture map's filters work in a static export too (no server to ask).
// 3. Opening a matrix cell shows its latest failure and log excerpt in a dialog, fetched from
//    the cell's JSON twin; text is inserted with textContent (logs are untrusted).
// 4. The header's search box lists matches as you type (links, reached with the down arrow;
//    Escape closes); a static export narrows its search page's list instead.
(function () {
  "use strict";
  var form = document.getElementById("filters");
  var isStatic = document.body.getAttribute("data-static") === "1";

  // A static export has no server to filter: hide rows and columns in the page instead.
  function filterHere() {
    var want = {};
    form.querySelectorAll("select[data-filter]").forEach(function (s) { want[s.name] = s.value; });
    var table = document.getElementById("matrix");
    if (!table) return;
    table.querySelectorAll("[data-engine]").forEach(function (node) {
      node.classList.toggle("hidden", !!want.engine && node.getAttribute("data-engine") !== want.engine);
    });
    table.querySelectorAll("tbody").forEach(function (group) {
      var familyOk = !want.family || group.getAttribute("data-family") === want.family;
      var shown = 0;
      group.querySelectorAll("tr[data-model]").forEach(function (row) {
        var ok = familyOk && Array.prototype.some.call(row.querySelectorAll("td.cell"), function (td) {
          if (td.classList.contains("hidden") || td.getAttribute("data-status") === "") return false;
          if (want.status && td.getAttribute("data-status") !== want.status) return false;
          if (want.tier && (td.getAttribute("data-tier") || "").split("+").indexOf(want.tier) < 0) return false;
          if (want.hardware && (td.getAttribute("data-hardware") || "").split(" ").indexOf(want.hardware) < 0) return false;
          return true;
        });
        row.classList.toggle("hidden", !ok);
        if (ok) shown += 1;
      });
      group.classList.toggle("hidden", shown === 0);
    });
  }

  if (form) {
    form.addEventListener("change", function () {
      if (isStatic) filterHere();
      else if (form.requestSubmit) form.requestSubmit();
      else form.submit();
    });
    form.addEventListener("submit", function (ev) {
      if (isStatic) { ev.preventDefault(); filterHere(); }
    });
  }
  // The architecture map in a static export: the same filters, applied to the rows here.
  var mapForm = document.getElementById("map-filters");
  function filterMap() {
    var want = {};
    mapForm.querySelectorAll("[data-filter]").forEach(function (s) { want[s.name] = s.value.trim(); });
    var needle = (want.q || "").toLowerCase();
    document.querySelectorAll("table.map").forEach(function (table) {
      table.querySelectorAll("[data-engine]").forEach(function (node) {
        node.classList.toggle("hidden", !!want.engine && node.getAttribute("data-engine") !== want.engine);
      });
      table.querySelectorAll("tr[data-arch]").forEach(function (row) {
        var name = (row.getAttribute("data-arch") + " " + row.getAttribute("data-repo")).toLowerCase();
        // hardware and tier: rows with a cell that ran there (the statuses stay the whole
        // map's; the server computes them over that hardware or tier alone)
        function has(td, key) {
          return !want[key] || (td.getAttribute("data-" + key) || "").split("|").indexOf(want[key]) >= 0;
        }
        var ok = (!needle || name.indexOf(needle) >= 0) &&
          (!want.lineage || row.getAttribute("data-lineage") === want.lineage) &&
          (!(want.status || want.hardware || want.tier) ||
           Array.prototype.some.call(row.querySelectorAll("td.cell"), function (td) {
            return !td.classList.contains("hidden") && td.getAttribute("data-status") !== "" &&
              (!want.status || td.getAttribute("data-status") === want.status) &&
              has(td, "hardware") && has(td, "tier");
          }));
        row.classList.toggle("hidden", !ok);
      });
    });
  }
  if (mapForm && isStatic) {
    mapForm.addEventListener("submit", function (ev) { ev.preventDefault(); filterMap(); });
    mapForm.addEventListener("change", filterMap);
  } else if (mapForm) {
    // Live: a chosen value asks the server at once (the text box waits for Enter).
    mapForm.addEventListener("change", function (ev) {
      if (ev.target.tagName !== "SELECT") return;
      if (mapForm.requestSubmit) mapForm.requestSubmit(); else mapForm.submit();
    });
  }
  searchBox();
  function searchBox() {
    var box = document.getElementById("site-search");
    if (!box) return;
    var input = box.querySelector("input[name=q]");
    var panel = document.getElementById("site-search-results");
    var list = panel.querySelector("ul");
    var said = panel.querySelector(".search-status");
    var api = box.getAttribute("data-api");
    // A static export: its search page holds every name; narrow it to the query in the URL.
    var index = document.getElementById("search-list");
    if (isStatic && index) {
      var q0 = new URLSearchParams(window.location.search).get("q") || "";
      input.value = q0;
      var narrow = function (q) {
        var needle = q.trim().toLowerCase();
        var shown = 0;
        index.querySelectorAll("li").forEach(function (li) {
          var hay = (li.getAttribute("data-name") + " " + li.getAttribute("data-detail")).toLowerCase();
          var ok = !needle || hay.indexOf(needle) >= 0;
          li.classList.toggle("hidden", !ok);
          if (ok) shown += 1;
        });
        var count = document.getElementById("search-count");
        if (count) count.textContent = shown + (shown === 1 ? " result" : " results") + (needle ? " for \u201c" + q.trim() + "\u201d" : "");
      };
      narrow(q0);
      input.addEventListener("input", function () { narrow(input.value); });
      box.addEventListener("submit", function (ev) { ev.preventDefault(); narrow(input.value); });
      return;
    }
    // No server to ask (a static export), or no fetch: the form opens the search page.
    if (isStatic || !api || !window.fetch) return;
    var timer = null, asked = 0;
    function close() { panel.hidden = true; input.setAttribute("aria-expanded", "false"); }
    function links() { return Array.prototype.slice.call(list.querySelectorAll("a")); }
    function render(data, q) {
      list.replaceChildren();
      data.results.forEach(function (hit) {
        var li = el("li"), a = el("a", hit.name);
        a.href = hit.href;
        li.appendChild(a);
        li.appendChild(document.createTextNode(" "));
        li.appendChild(el("span", hit.kind, "kind"));
        if (hit.detail) { li.appendChild(document.createTextNode(" ")); li.appendChild(el("small", hit.detail)); }
        list.appendChild(li);
      });
      said.textContent = data.results.length ? data.results.length + (data.results.length === 1 ? " match" : " matches") + " for \u201c" + q + "\u201d"
        : "No model or architecture matches \u201c" + q + "\u201d";
      panel.hidden = false;
      input.setAttribute("aria-expanded", "true");
    }
    function ask() {
      var q = input.value.trim();
      if (!q) { close(); return; }
      var mine = ++asked;
      fetch(api + "?q=" + encodeURIComponent(q), { headers: { "Accept": "application/json" } })
        .then(function (r) { if (!r.ok) throw new Error(r.status); return r.json(); })
        .then(function (data) { if (mine === asked) render(data, q); })
        .catch(function () { close(); });
    }
    input.setAttribute("aria-controls", "site-search-results");
    input.setAttribute("aria-expanded", "false");
    input.addEventListener("input", function () { clearTimeout(timer); timer = setTimeout(ask, 150); });
    box.addEventListener("keydown", function (ev) {
      var all = links(), at = all.indexOf(document.activeElement);
      if (ev.key === "Escape") { close(); input.focus(); ev.preventDefault(); }
      else if (ev.key === "ArrowDown" && !panel.hidden && all.length) {
        all[Math.min(at + 1, all.length - 1)].focus(); ev.preventDefault();
      } else if (ev.key === "ArrowUp" && at >= 0) {
        if (at === 0) input.focus(); else all[at - 1].focus();
        ev.preventDefault();
      }
    });
    document.addEventListener("click", function (ev) { if (!box.contains(ev.target)) close(); });
  }

  var dialog = document.getElementById("cell-dialog");
  if (!dialog || typeof dialog.showModal !== "function") return;
  var body = dialog.querySelector(".body");

  function el(tag, text, cls) {
    var node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (cls) node.className = cls;
    return node;
  }

  function show(data, href) {
    body.replaceChildren();
    var cell = data.cell || {};
    var title = el("h2", data.model + " in " + data.engine + " " + (cell.engine_version || ""));
    body.appendChild(title);
    var status = el("p");
    status.appendChild(el("span", cell.status || "no data", "st st-" + (cell.status || "none")));
    if (data.summary && data.summary.days_to_green !== null && data.summary.days_to_green !== undefined) {
      status.appendChild(document.createTextNode(" · " + data.summary.days_to_green + " days to green"));
    }
    body.appendChild(status);
    var f = data.latest_failure;
    if (f) {
      body.appendChild(el("p", "Latest problem: " + f.stage + " " + f.status + " (" + (f.failure_class || "no class") + ") on " + f.started_at));
      if (f.message) body.appendChild(el("pre", f.message));
      if (f.log_excerpt) { body.appendChild(el("h3", "Log excerpt")); body.appendChild(el("pre", f.log_excerpt)); }
      if (f.reproduce) { body.appendChild(el("h3", "Reproduce")); body.appendChild(el("pre", f.reproduce)); }
    }
    var more = el("a", "Full history →");
    more.href = href;
    body.appendChild(more);
    dialog.showModal();
  }

  document.addEventListener("click", function (ev) {
    var link = ev.target.closest && ev.target.closest("td.cell a.open");
    if (!link || ev.ctrlKey || ev.metaKey || ev.shiftKey || ev.button !== 0) return;
    ev.preventDefault();
    fetch(link.getAttribute("data-json"), { headers: { "Accept": "application/json" } })
      .then(function (r) { if (!r.ok) throw new Error(r.status); return r.json(); })
      .then(function (data) { show(data, link.href); })
      .catch(function () { window.location.href = link.href; });
  });
})();
