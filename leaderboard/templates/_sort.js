// Sort the ranking table by a clicked column header (numbers by data-value, text otherwise).
// Metrics sort descending first (higher is better); a second click reverses.
(function () {
  document.querySelectorAll("table.ranking").forEach(function (table) {
    var headers = table.querySelectorAll("th.sortable");
    headers.forEach(function (th) {
      th.setAttribute("tabindex", "0");
      function sort() {
        var col = th.getAttribute("data-col");
        var numeric = th.getAttribute("data-type") === "number";
        var next = th.getAttribute("aria-sort") === "descending" ? "ascending" : "descending";
        if (!th.hasAttribute("aria-sort") && !numeric) { next = "ascending"; }
        headers.forEach(function (h) { h.removeAttribute("aria-sort"); });
        th.setAttribute("aria-sort", next);
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows);
        rows.sort(function (a, b) {
          var x = a.querySelector('[data-col="' + col + '"]').getAttribute("data-value");
          var y = b.querySelector('[data-col="' + col + '"]').getAttribute("data-value");
          var r;
          if (numeric) {
            x = x === "" ? -Infinity : parseFloat(x);
            y = y === "" ? -Infinity : parseFloat(y);
            r = x - y;
          } else {
            r = x < y ? -1 : (x > y ? 1 : 0);
          }
          if (r === 0) { r = parseInt(a.getAttribute("data-rank"), 10) - parseInt(b.getAttribute("data-rank"), 10); return r; }
          return next === "ascending" ? r : -r;
        });
        rows.forEach(function (row) { body.appendChild(row); });
      }
      th.addEventListener("click", sort);
      th.addEventListener("keydown", function (e) { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); sort(); } });
    });
  });
})();
