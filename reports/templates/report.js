// Full-size viewer: a click on a thumbnail shows the full image in a dialog. Without
// JavaScript the thumbnail's link opens the image itself. Reads only href/data attributes.
(function () {
  var viewer = document.getElementById("viewer");
  if (!viewer || typeof viewer.showModal !== "function") { return; }
  var img = viewer.querySelector("img");
  var caption = viewer.querySelector("p");
  document.addEventListener("click", function (event) {
    var link = event.target.closest ? event.target.closest("a.thumb") : null;
    if (!link) { return; }
    if (event.ctrlKey || event.metaKey || event.shiftKey || event.button !== 0) { return; }
    event.preventDefault();
    img.src = link.getAttribute("href");
    img.alt = link.getAttribute("data-caption") || "";
    caption.textContent = link.getAttribute("data-caption") || "";
    viewer.showModal();
  });
  viewer.addEventListener("click", function () { viewer.close(); });
  viewer.addEventListener("close", function () { img.removeAttribute("src"); });
})();
