// The evaluation page: the submitted source, highlighted by the submit page's editor in
// read-only mode. Without the script the escaped source stays as plain text.
"use strict";

(function highlightSource() {
  if (!window.CodeMirror) return;
  for (const pre of document.querySelectorAll("pre.source")) {
    const holder = document.createElement("div");
    holder.className = "source-view";
    pre.replaceWith(holder);
    // The value is the pre's text, which the browser has already unescaped; CodeMirror puts
    // it in text nodes, so nothing in it is ever parsed as HTML.
    window.CodeMirror(holder, {
      value: pre.textContent,
      mode: pre.dataset.language,
      readOnly: true,
      lineNumbers: true,
      indentUnit: 4,
    });
  }
})();
