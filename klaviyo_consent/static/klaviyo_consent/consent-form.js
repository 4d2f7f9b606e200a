/* The drop-in consent form: the hint follows the country; focus goes to what needs reading. */
(function () {
  document.querySelectorAll(".kc-form").forEach(function (root) {
    var country = root.querySelector("select[name=country]");
    var hint = root.querySelector("#kc-phone_number-hint");
    if (country && hint) {
      country.addEventListener("change", function () {
        var example = country.selectedOptions[0] && country.selectedOptions[0].dataset.example;
        if (example) {
          hint.textContent = "For example " + example + ", or start with + and your country code.";
        }
      });
    }
    var target = root.querySelector("#kc-confirmation") ||
      root.querySelector("[aria-invalid=true]") || root.querySelector("#kc-form-error");
    if (target) { target.focus(); }
  });
})();
