// Tap or click a figure to see it at its full resolution (advbook-figures.css). No network, no
// library: an overlay holds a copy of the image at its natural size; a click, a tap or Escape closes
// it. Keyboard: the images are focusable and open with Enter or Space.
(function () {
  "use strict";
  function close(overlay) {
    overlay.remove();
    document.body.classList.remove("advbook-zoom-open");
  }
  function open(img) {
    var overlay = document.createElement("div");
    overlay.className = "advbook-zoom";
    overlay.setAttribute("role", "dialog");
    overlay.setAttribute("aria-label", "Figure at full size (click or press Escape to close)");
    var label = document.createElement("span");
    label.className = "advbook-zoom-close";
    label.textContent = "close \u2715";
    var big = document.createElement("img");
    big.src = img.currentSrc || img.src;
    big.alt = img.alt || "";
    overlay.appendChild(label);
    overlay.appendChild(big);
    overlay.addEventListener("click", function () { close(overlay); });
    document.addEventListener("keydown", function onKey(e) {
      if (e.key === "Escape") {
        close(overlay);
        document.removeEventListener("keydown", onKey);
      }
    });
    document.body.appendChild(overlay);
    document.body.classList.add("advbook-zoom-open");
  }
  function setup() {
    var images = document.querySelectorAll("main figure img, main .cell_output img");
    images.forEach(function (img) {
      if (img.closest("a")) return;  // an image that already links somewhere keeps its link
      img.classList.add("advbook-zoomable");
      img.setAttribute("tabindex", "0");
      img.setAttribute("role", "button");
      img.setAttribute("title", "Click to enlarge");
      img.addEventListener("click", function () { open(img); });
      img.addEventListener("keydown", function (e) {
        if (e.key === "Enter" || e.key === " ") {
          e.preventDefault();
          open(img);
        }
      });
    });
  }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", setup);
  } else {
    setup();
  }
})();
