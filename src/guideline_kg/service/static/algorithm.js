// The algorithm page: the chart fits the window; "Actual size" toggles the natural size.
"use strict";
(function () {
  const fig = document.getElementById("chart"), button = document.getElementById("zoom");
  const select = document.getElementById("overlay-case");
  button.addEventListener("click", () => {
    fig.classList.toggle("fit");
    button.textContent = fig.classList.contains("fit") ? "Actual size" : "Fit to window";
  });
  select.addEventListener("change", () => select.form.submit());
  document.getElementById("overlay-view").addEventListener("change", () => select.form.submit());
})();
