// The evaluation page: the submitted source, highlighted in its runtime's editor mode by a
// read-only editor. Without the script the escaped source stays as plain text.
"use strict";

(function highlightSource() {
  if (!window.CodeMirror) return;
  for (const pre of document.querySelectorAll("pre.source")) {
    const holder = document.createElement("div");
    holder.className = "source-view";
    pre.replaceWith(holder);
    // The value is the pre's text, which the browser has already unescaped; CodeMirror puts
    // it in text nodes, so nothing in it is ever parsed as HTML.
    const view = window.CodeMirror(holder, {
      value: pre.textContent,
      mode: "text/plain",
      readOnly: true,
      lineNumbers: true,
      indentUnit: 4,
    });
    if (window.editorModes) window.editorModes.use(view, pre.dataset.mode);
  }
})();
