// dayone: progressive enhancement only; every page works without this file.
// 1. Filters apply as you choose them (the form still works by submitting).
// 2. The architecture map's filters work in a static export too (no server to ask).
// 3. Opening a matrix cell shows its latest failure and log excerpt in a dialog, fetched from
//    the cell's JSON twin; text is inserted with textContent (logs are untrusted).
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
        var ok = (!needle || name.indexOf(needle) >= 0) &&
          (!want.lineage || row.getAttribute("data-lineage") === want.lineage) &&
          (!want.status || Array.prototype.some.call(row.querySelectorAll("td.cell"), function (td) {
            return !td.classList.contains("hidden") && td.getAttribute("data-status") === want.status;
          }));
        row.classList.toggle("hidden", !ok);
      });
    });
  }
  if (mapForm && isStatic) {
    mapForm.addEventListener("submit", function (ev) { ev.preventDefault(); filterMap(); });
    mapForm.addEventListener("change", filterMap);
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
